"""Shared fixtures: a tiny demo world, study files pointing at it, a Prefect test server."""

from __future__ import annotations

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
