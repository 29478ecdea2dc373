"""Versioned, immutable releases.

A release is a folder ``<release_dir>/<id>/`` holding ``manifest.json`` (study config and its
hash, talik version and code digest, git commit, every input file with its checksum, each
step's parameters and digest), the products (CF NetCDF + GeoTIFF), figures and a report.

* **Idempotent**: the release digest covers the config, the input manifest and the code; a
  publish whose digest matches an existing release creates nothing and returns that release.
* **Checked**: the staged files pass :func:`talik.tasks.validate.check_release` (products
  present and readable, plausible values, a mask that keeps pixels, no collapse of solved
  pixels since LATEST) before the release is named; a failed check publishes nothing.
* **Versioned**: the NetCDF products are committed to the Icechunk store beside the releases
  and tagged with the release id once the folder is in place; each release also holds a STAC
  catalog of its products (:mod:`talik.tasks.release_store`).
* **Atomic**: everything is written into a hidden staging folder that is renamed into place
  only when complete, and files are made read-only. A crash leaves the previous releases
  untouched; leftovers of crashed publishes are swept on the next publish.
* **Concurrent-safe**: two workers racing for the same release number cannot both win the
  rename; the loser takes the next number.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import time
import uuid
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from talik import __version__
from talik.config import StudyConfig, config_digest, to_toml
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of, file_sha256, git_commit
from talik.tasks.records import InputManifest, InputSet, StepOutput
from talik.tasks.release_store import (
    STORE_NAME,
    commit_products,
    ensure_tag,
    store_products,
    write_stac_catalog,
)
from talik.tasks.stack_store import staged_stacks
from talik.tasks.steps import owned_name, owner_alive
from talik.tasks.validate import ReleaseCheckError, check_release, expected_products

__all__ = [
    "PublishOutcome",
    "ReleaseInfo",
    "latest_release",
    "list_releases",
    "publish_release",
    "read_release",
    "release_digest",
    "write_release",
]

MANIFEST = "manifest.json"
STALE_STAGING_SECONDS = 6 * 3600


class ReleaseInfo(BaseModel):
    """Summary of one release (from its manifest)."""

    model_config = ConfigDict(frozen=True)

    id: str
    path: str
    created: str
    digest: str
    study: str
    talik_version: str
    n_inputs: int
    products: list[str]


class PublishOutcome(BaseModel):
    """Result of a publish: the release, and whether it was created now."""

    model_config = ConfigDict(frozen=True)

    release: ReleaseInfo
    created: bool


def release_digest(cfg: StudyConfig, manifest: InputManifest) -> str:
    """Identity of a release's content: study config + inputs + code."""
    # The code of the monitoring pipeline (its modules and what they import), not of the
    # whole package: a change to the CLI alone makes no new release.
    return digest_of("release", config_digest(cfg), manifest.digest,
                     code_digest("talik.flows.monitor"))


def _info(folder: Path) -> ReleaseInfo:
    m = json.loads((folder / MANIFEST).read_text())
    return ReleaseInfo(id=m["release_id"], path=str(folder), created=m["created"],
                       digest=m["release_digest"], study=m["study"]["name"],
                       talik_version=m["talik"]["version"], n_inputs=len(m["inputs"]["files"]),
                       products=[p["path"] for p in m["products"]])


def list_releases(release_dir: str | Path) -> list[ReleaseInfo]:
    """All complete releases in ``release_dir``, oldest first."""
    root = Path(release_dir)
    if not root.exists():
        return []
    out = [_info(p) for p in sorted(root.iterdir())
           if p.is_dir() and not p.name.startswith(".") and p.name != STORE_NAME
           and (p / MANIFEST).exists()]
    return sorted(out, key=lambda r: r.id)


def latest_release(release_dir: str | Path) -> ReleaseInfo | None:
    """The release LATEST points to (None when there is none)."""
    root = Path(release_dir)
    pointer = root / "LATEST"
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    return _info(folder) if (folder / MANIFEST).exists() else None


def read_release(release_dir: str | Path, release_id: str) -> dict:
    """The full manifest of release ``release_id``."""
    path = Path(release_dir) / release_id / MANIFEST
    if not path.exists():
        known = ", ".join(r.id for r in list_releases(release_dir)) or "none"
        raise FileNotFoundError(f"no release {release_id!r} in {release_dir} (releases: {known})")
    return json.loads(path.read_text())


def _ensure_store_tag(root: Path, release_id: str) -> None:
    store = read_release(root, release_id).get("store")
    if store:
        ensure_tag(root, release_id, store["snapshot"], store.get("url"))


def _sweep_staging(root: Path) -> None:
    """Remove the staging folders of killed publishers.

    At once when their process is gone (this host), otherwise once older than
    :data:`STALE_STAGING_SECONDS`.
    """
    now = time.time()
    for p in root.glob(".staging-*"):
        try:  # a live publisher may rename its folder into place meanwhile
            stale = now - p.stat().st_mtime > STALE_STAGING_SECONDS
        except FileNotFoundError:
            continue
        if stale or not owner_alive(p.name, ".staging-"):
            _make_writable(p)
            shutil.rmtree(p, ignore_errors=True)


def _make_writable(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        try:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
        except OSError:
            pass


def _freeze(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def write_release(
    cfg: StudyConfig,
    manifest: InputManifest,
    steps: list[StepOutput],
    files: dict[str, Path],
    report_md: str,
) -> PublishOutcome:
    """Publish ``files`` (release-relative name → source file) as a new release, if needed."""
    root = Path(cfg.stores.release_dir)
    root.mkdir(parents=True, exist_ok=True)
    digest = release_digest(cfg, manifest)
    for existing in list_releases(root):
        if existing.digest == digest:
            _ensure_store_tag(root, existing.id)  # a publish killed before tagging
            return PublishOutcome(release=existing, created=False)
    _sweep_staging(root)
    staging = root / owned_name(".staging-")
    staging.mkdir()
    try:
        products = []
        for name, src in sorted(files.items()):
            dst = staging / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            products.append({"path": name, "sha256": file_sha256(dst), "bytes": dst.stat().st_size})
        latest = latest_release(root)
        problems = check_release(staging, files, expected_products(s.step for s in steps),
                                 cfg.release_checks, Path(latest.path) if latest else None)
        if problems:
            raise ReleaseCheckError(root, problems)
        (staging / "report.md").write_text(report_md)
        (staging / "study.toml").write_text(to_toml(cfg))
        # (the checked bytes: the store's cubes are their chunks, copied)
        store = commit_products(root, store_products({n: staging / n for n in files}),
                                f"{cfg.name}: release digest {digest[:12]}",
                                cfg.stores.release_store, staged_stacks(steps))
        if "products/sentinel1.nc" in files:  # (after the commit: its groups are items)
            write_stac_catalog(staging, cfg, products, digest, store, root)
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "release_digest": digest,
            "created": created,
            "study": {"name": cfg.name, "title": cfg.title, "config_sha256": config_digest(cfg),
                      "config": cfg.model_dump(mode="json")},
            "talik": {"version": __version__, "code_sha256": code_digest(),
                      "pipeline_code_sha256": code_digest("talik.flows.monitor"),
                      "git_commit": git_commit()},
            "inputs": manifest.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json") for s in steps],
            "products": products,
            "store": store,
        }
        for _attempt in range(1000):
            taken = [int(r.id[1:]) for r in list_releases(root) if r.id[1:].isdigit()]
            release_id = f"r{max(taken, default=0) + 1:04d}"
            body["release_id"] = release_id
            (staging / MANIFEST).write_text(json.dumps(body, indent=2, default=str) + "\n")
            _freeze(staging)
            target = root / release_id
            try:
                staging.rename(target)  # atomic; fails if the target exists
            except OSError:
                if target.exists() and (target / MANIFEST).exists():
                    other = _info(target)
                    if other.digest == digest:  # someone else published the same content
                        _make_writable(staging)
                        shutil.rmtree(staging, ignore_errors=True)
                        return PublishOutcome(release=other, created=False)
                _make_writable(staging)
                continue
            # Each publisher writes its own temporary file: concurrent publishers sharing one
            # name could rename it from under each other.
            ensure_tag(root, release_id, store["snapshot"], store.get("url"))
            pointer = root / f".LATEST.{uuid.uuid4().hex}.tmp"
            pointer.write_text(release_id + "\n")
            pointer.replace(root / "LATEST")
            return PublishOutcome(release=_info(target), created=True)
        raise RuntimeError(f"could not allocate a release number in {root}")
    finally:
        if staging.exists():
            _make_writable(staging)
            shutil.rmtree(staging, ignore_errors=True)


@task(name="publish-release", cache_policy=NO_CACHE)
def publish_release(cfg: StudyConfig, inputs: InputSet, steps: list[StepOutput],
                    files: dict[str, str], report_md: str) -> PublishOutcome:
    """Publish a release of the study, unless one with the same content exists."""
    outcome = write_release(cfg, inputs.load_manifest(), steps,
                            {k: Path(v) for k, v in files.items()}, report_md)
    logger = step_logger()
    if outcome.created:
        logger.info("published release %s at %s", outcome.release.id, outcome.release.path)
    else:
        logger.info("no new release needed: inputs, config and code match release %s",
                    outcome.release.id)
    return outcome
