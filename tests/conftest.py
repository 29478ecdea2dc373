"""Shared fixtures: a tiny demo world, study files pointing at it, a Prefect test server."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

TINY_WORLD = """
name = "tiny"
title = "tiny test world"

[aoi]
name = "tiny"

[source]
kind = "world"
raw_dir = "{raw}"
seed = 7
ny = 24
nx = 32
s1_start = 2019-01-01
s1_end = 2021-12-31
neighbours = 3
unwrapping_error_fraction = 0.05
hydro_start_year = 1990
hydro_end_year = 2004

[stores]
work_dir = "{work}"
release_dir = "{releases}"

[sensors.sentinel1]
platform = "Sentinel-1"
band = "C"
wavelength_m = 0.055465763
incidence_deg = 39.47
direction = "descending"
polarization = "VV"

[sentinel1]
chunk_px = 16
"""


def gamma_parameter_text(name: str, baseline_m: float = 12.5) -> str:
    """A valid HyP3 INSAR_GAMMA ``.txt`` for product ``name``: SLC granules on its two dates."""
    ref, sec = name.split("_")[1:3]

    def slc(start: str) -> str:
        return f"S1A_IW_SLC__1SDV_{start}_{start[:9]}235959_012345_0ABCDE_1A2B"

    return (f"Reference Granule: {slc(ref)}\nSecondary Granule: {slc(sec)}\n"
            f"Baseline: {baseline_m}\nUTC time: 84250.69\n")


def write_study(folder: Path, raw: Path, name: str = "tiny.toml", extra: str = "") -> Path:
    """Write a tiny-world study file into ``folder`` (work and release folders beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = TINY_WORLD.format(raw=raw, work=folder / "work", releases=folder / "releases")
    path = folder / name
    path.write_text(text + extra)
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small world generated once per test session; returns its folder."""
    from talik.config import load_study
    from talik.world import generate_world

    root = tmp_path_factory.mktemp("tiny")
    study = write_study(root / "study", root / "raw")
    cfg = load_study(study)
    return generate_world(cfg.source)


@pytest.fixture()
def tiny_study(tmp_path, tiny_world) -> Path:
    """A study file on the shared tiny world with its own work and release folders."""
    return write_study(tmp_path, tiny_world)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A Prefect test server (SQLite) for the session, with results kept in a temp folder."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


SCIENCE_REPORT: list[str] = []


@pytest.fixture(scope="session")
def science_report() -> list[str]:
    """Lines that tests add to the 'science against truth' summary printed after the run."""
    return SCIENCE_REPORT


BAD_INPUT_REPORT: list[str] = []


@pytest.fixture(scope="session")
def bad_input_report() -> list[str]:
    """Lines that the bad-input tests add: each case and the first line the user saw."""
    return BAD_INPUT_REPORT


def pytest_terminal_summary(terminalreporter):
    if SCIENCE_REPORT:
        terminalreporter.section("science against the demo world's truth")
        for line in SCIENCE_REPORT:
            terminalreporter.write_line(line)
    if BAD_INPUT_REPORT:
        terminalreporter.section("bad inputs through `talik run`: the first line the user sees")
        for line in BAD_INPUT_REPORT:
            terminalreporter.write_line(line)


STORES_AND_SENSORS = """
[stores]
work_dir = "{work}"
release_dir = "{releases}"

[sensors.sentinel1]
platform = "Sentinel-1"
band = "C"
wavelength_m = 0.055465763
incidence_deg = 39.47
direction = "descending"
polarization = "VV"

[sensors.alos2]
platform = "ALOS-2"
band = "L"
wavelength_m = 0.2419
incidence_deg = 40.55
direction = "descending"
polarization = "HH"
"""
"""Stores and the two sensors of the science worlds' study files (formatted with the paths)."""

DEMO_SIZED_WORLD = """
name = "science"
title = "demo-sized world for the science tests"

[aoi]
name = "science"

[source]
kind = "world"
raw_dir = "{raw}"

""" + STORES_AND_SENSORS


@pytest.fixture(scope="session")
def science_world(tmp_path_factory):
    """The demo-sized world (defaults of ``WorldSource``), generated and staged once.

    Returns ``(cfg, staged)`` where ``staged`` maps store names to their paths.
    """
    root = tmp_path_factory.mktemp("science")
    study = root / "science.toml"
    study.write_text(DEMO_SIZED_WORLD.format(raw=root / "raw", work=root / "work",
                                             releases=root / "releases"))
    return generate_and_stage(study)


HARD_WORLD = """
name = "hard"
title = "hard world: winter acquisitions, per-pixel snow decorrelation, lake, offsets"

[aoi]
name = "hard"

[source]
kind = "world"
raw_dir = "{raw}"
seed = 31337
ny = 56
nx = 72
center_offset_km = [-14.0, 9.0]
s1_start = {s1_start}
s1_end = 2020-12-31
neighbours = 4
unwrapping_error_fraction = 0.015
winter_acquisitions = true
snow_spread_days = 9.0
snow_ridge_days = 14.0
reference_offset_std_rad = 2.0
lake_nodata = true

""" + STORES_AND_SENSORS
"""Study of the "hard" world (format with ``raw``, ``work``, ``releases`` and ``s1_start``).

A different place (56 × 72 pixels, centre 14 km west and 9 km north of the demo's), a stack
that starts in midwinter and keeps its winter dates, coherence lost pixel by pixel under snow,
a no-data lake, a random phase offset per product and a handful of unwrapping errors.
"""

HARD_WORLD_START = dt.date(2017, 1, 5)
"""First date of the hard world: midwinter, snow everywhere."""
HARD_WORLD_MAY_START = dt.date(2017, 5, 5)
"""The same world started in May: on the same 12-day grid, so the two share their later dates."""


def make_hard_world_study(root: Path, s1_start: dt.date = HARD_WORLD_START) -> Path:
    """Write the hard-world study file into ``root`` (raw, work, releases beside it); return it.

    Only ``s1_start`` changes between calls: the world's physics (landscape, climate, ground
    motion, snow) does not depend on it, so worlds differing only in ``s1_start`` share the same
    true displacement on their common dates (up to a per-pixel constant, the truth being relative
    to each world's first date).
    """
    root.mkdir(parents=True, exist_ok=True)
    study = root / "hard.toml"
    study.write_text(HARD_WORLD.format(raw=root / "raw", work=root / "work",
                                       releases=root / "releases", s1_start=s1_start.isoformat()))
    return study


def generate_and_stage(study: Path):
    """Generate the world of ``study`` and stage it like ``science_world``; return (cfg, staged)."""
    from talik.config import load_study
    from talik.tasks.ingest.world import ingest_world
    from talik.tasks.stage import stage_gacos, stage_pairs, stage_rasters, stage_sentinel1

    cfg = load_study(study)
    work = str(cfg.stores.work_dir)
    inputs = ingest_world.fn(cfg.source, work)
    s1 = stage_sentinel1.fn(inputs, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    staged = {
        "sentinel1": Path(s1.path) / "sentinel1.zarr",
        "rasters": Path(stage_rasters.fn(inputs, s1, work).path) / "rasters.zarr",
        "gacos": Path(stage_gacos.fn(inputs, s1, work).path) / "gacos.zarr",
        "pairs": Path(stage_pairs.fn(inputs, s1, work).path) / "pairs.zarr",
        "raw": Path(cfg.source.raw_dir),
    }
    return cfg, staged


@pytest.fixture(scope="session")
def hard_world(tmp_path_factory):
    """The hard world (starting 2017-01-05, in winter), generated and staged once.

    Returns ``(cfg, staged)`` like ``science_world``.
    """
    return generate_and_stage(make_hard_world_study(tmp_path_factory.mktemp("hard")))


@pytest.fixture(scope="session")
def hard_world_may(tmp_path_factory):
    """The same hard world started on 2017-05-05 instead, generated and staged once."""
    return generate_and_stage(make_hard_world_study(tmp_path_factory.mktemp("hard-may"),
                                                    HARD_WORLD_MAY_START))
