"""Ingest from a local folder of real products: inventory every input file with its checksum."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from prefect import task

from talik.config import LocalSource
from talik.errors import InputError
from talik.tasks.log import step_logger
from talik.tasks.provenance import digest_of, file_sha256
from talik.tasks.readers.hyp3 import product_dates
from talik.tasks.records import FileRecord, InputManifest, InputSet

__all__ = ["build_manifest", "common_root", "ingest_local", "source_locations"]


def source_locations(source: LocalSource) -> dict[str, Path]:
    """Role → configured file or folder (only the inputs that are set)."""
    roles = {
        "hyp3": source.hyp3_dir,
        "pairs": source.pairs_dir,
        "gacos": source.gacos_dir,
        "dem": source.dem,
        "ground_ice": source.ground_ice,
        "discharge": source.discharge.path if source.discharge else None,
        "temperature": source.temperature,
        "era5": source.era5,
        "modis": source.modis_dir,
    }
    return {role: Path(p) for role, p in roles.items() if p is not None}


def common_root(paths: list[Path]) -> Path:
    """The deepest folder holding every path (a file counts by its folder)."""
    parents = [p if p.is_dir() else p.parent for p in paths]
    root = parents[0]
    while not all(root == q or root in q.parents for q in parents):
        root = root.parent
    return root


def _after(role: str, relative: Path, until: dt.date) -> bool:
    """Whether an input file belongs to an acquisition later than ``until``.

    That is a HyP3 product (folder or zip, named by its dates) whose secondary date is later,
    or a GACOS file (``YYYYMMDD.ztd[.rsc]``) of a later date. Other files are never left out.
    """
    if role == "hyp3":
        name = relative.parts[0]
        dates = product_dates(name[:-4] if name.endswith(".zip") else name)
        return dates is not None and dates[1] > until
    if role == "gacos":
        try:
            return dt.datetime.strptime(relative.name[:8], "%Y%m%d").date() > until
        except ValueError:
            return False
    return False


def build_manifest(source: LocalSource, kind: str, checksum_cache: Path | None = None,
                   until: dt.date | None = None) -> InputManifest:
    """Checksum every input file; a checksum cache (keyed by size and mtime) avoids rehashing.

    With ``until``, the files of later acquisitions are left out (see :func:`_after`): they
    are not inputs of the run, so they change neither its digest nor its release.
    """
    locations = source_locations(source)
    for role, path in locations.items():
        if not path.exists():
            raise InputError(path, f"source.{role}", "an existing file or folder")
    cache: dict = {}
    if checksum_cache is not None and checksum_cache.exists():
        try:
            cache = json.loads(checksum_cache.read_text())
        except ValueError:
            cache = {}
    root = common_root(list(locations.values()))
    records = []
    for role, path in sorted(locations.items()):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if any(part.startswith(".") for part in f.relative_to(root).parts):
                continue
            if until is not None and path.is_dir() and _after(role, f.relative_to(path), until):
                continue
            records.append(FileRecord(path=str(f.relative_to(root)), role=role,
                                      sha256=file_sha256(f, cache), bytes=f.stat().st_size))
    if checksum_cache is not None:
        checksum_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = checksum_cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(checksum_cache)
    digest = digest_of([(r.path, r.role, r.sha256) for r in records])
    return InputManifest(root=str(root), source_kind=kind,
                         locations={k: str(v) for k, v in locations.items()},
                         files=records, digest=digest, until=until)


@task(name="ingest-local", retries=0)
def ingest_local(source: LocalSource, work_dir: str, until: dt.date | None = None) -> InputSet:
    """Inventory a local folder of products (no download): the run's input manifest.

    Files of acquisitions after ``until`` are left out.
    """
    manifest = build_manifest(source, "local", Path(work_dir) / "checksums.json", until)
    step_logger().info("ingested %d local files (%s)", len(manifest.files), manifest.digest[:12])
    return manifest.save(Path(work_dir) / "manifests")
