"""Ingest from the demo world: generate it on first use, then inventory it like local data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import task

from talik.config import DischargeFile, LocalSource, WorldSource
from talik.tasks.ingest.local import build_manifest
from talik.tasks.log import step_logger
from talik.tasks.records import InputSet
from talik.world import generate_world, world_is_complete

__all__ = ["ingest_world", "world_as_local"]


def world_as_local(raw_dir: Path) -> LocalSource:
    """The demo world's folder described as a local source (its layout is fixed)."""
    return LocalSource(
        hyp3_dir=raw_dir / "hyp3",
        pairs_dir=raw_dir / "pairs",
        gacos_dir=raw_dir / "gacos",
        dem=raw_dir / "dem" / "glo30.tif",
        ground_ice=raw_dir / "ground_ice.tif",
        discharge=DischargeFile(path=raw_dir / "discharge.csv", basin_area_km2=4576.0),
        temperature=raw_dir / "station_tmean.csv",
        era5=raw_dir / "era5land_monthly.nc",
        modis_dir=raw_dir / "modis",
    )


@task(name="ingest-world", retries=0)
def ingest_world(source: WorldSource, work_dir: str, until: dt.date | None = None) -> InputSet:
    """Generate the demo world if needed (deterministic, resumable) and inventory its files.

    Files of acquisitions after ``until`` are left out.
    """
    logger = step_logger()
    raw = Path(source.raw_dir)
    if world_is_complete(raw, source):
        logger.info("demo world already at %s", raw)
    else:
        logger.info("generating the demo world (%d×%d pixels) into %s", source.ny, source.nx, raw)
        generate_world(source)
    manifest = build_manifest(world_as_local(raw), "world", Path(work_dir) / "checksums.json",
                              until)
    logger.info("ingested %d world files (%s)", len(manifest.files), manifest.digest[:12])
    return manifest.save(Path(work_dir) / "manifests")
