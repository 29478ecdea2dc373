"""The hard test world has the properties it was built for (see ``HARD_WORLD`` in conftest).

It must break a naive NSBAS inversion: the stack starts in midwinter and keeps its winter
dates, snow makes pairs incoherent pixel by pixel (so the first date is tied to the data only
through the constraint model), a lake is HyP3 no-data, every product carries an unknown phase
offset, and a handful of pairs carry unwrapping errors.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from talik.tasks.readers.hyp3 import find_hyp3_products
from tests.scoring import load_truth

pytestmark = pytest.mark.slow

THRESHOLD = 0.3


@pytest.fixture(scope="module")
def stack(hard_world):
    """Staged coherence, pair date indices and the date list of the hard world."""
    _, staged = hard_world
    with xr.open_zarr(staged["sentinel1"]) as ds:
        coherence = ds["coherence"].values
        ref = pd.to_datetime(ds["reference_date"].values)
        sec = pd.to_datetime(ds["secondary_date"].values)
    dates = sorted(set(ref) | set(sec))
    index = {d: i for i, d in enumerate(dates)}
    i1 = np.array([index[d] for d in ref])
    i2 = np.array([index[d] for d in sec])
    coherent = np.nan_to_num(coherence, nan=0.0) >= THRESHOLD
    return {"coherent": coherent, "i1": i1, "i2": i2, "dates": dates}


@pytest.fixture(scope="module")
def truth(hard_world):
    return load_truth(hard_world[1])


@pytest.fixture(scope="module")
def pairs(hard_world):
    _, staged = hard_world
    return pd.read_csv(staged["raw"] / "truth" / "s1_pairs.csv")


def test_geometry_differs_from_the_demo(hard_world):
    cfg, staged = hard_world
    meta = json.loads((staged["raw"] / "world.json").read_text())
    assert (meta["s1_grid"]["ny"], meta["s1_grid"]["nx"]) == (56, 72)
    assert cfg.source.center_offset_km == (-14.0, 9.0)
    with xr.open_zarr(staged["sentinel1"]) as ds:
        assert (ds.sizes["y"], ds.sizes["x"]) == (56, 72)


def test_starts_in_winter_and_keeps_winter_dates(hard_world, stack, truth):
    _, staged = hard_world
    dates = stack["dates"]
    assert dates[0].month in (12, 1, 2)
    meta = json.loads((staged["raw"] / "world.json").read_text())
    assert meta["s1_network"]["winter_gaps"] == []
    for year in range(dates[0].year, dates[-1].year + 1):
        assert any(d.year == year and d.month in (1, 2) for d in dates), year
    # The truth covers every date, winter included, relative to the first one.
    assert len(truth["time"]) == len(dates)
    assert np.all(truth["displacement"].isel(time=0).values == 0)
    assert truth["snow_cover"].isel(time=0).values.all()
    assert {"velocity", "thaw_season_deformation", "snow_cover", "lake"} <= set(truth.data_vars)


def test_no_coherent_interferogram_touches_the_first_date(stack):
    touching = (stack["i1"] == 0) | (stack["i2"] == 0)
    assert touching.sum() >= 3
    assert not stack["coherent"][touching].any()


def test_first_eight_dates_are_incoherent_almost_everywhere(stack):
    among = (stack["i1"] < 8) & (stack["i2"] < 8)
    assert among.sum() >= 20
    none = ~stack["coherent"][among].any(axis=0)
    assert none.mean() > 0.9


def test_pixels_see_different_winter_epochs(stack, truth):
    coherent, i1, i2 = stack["coherent"], stack["i1"], stack["i2"]
    n_dates = len(stack["dates"])
    seen = np.zeros((n_dates, *coherent.shape[1:]), dtype=bool)
    for k in range(len(i1)):
        seen[i1[k]] |= coherent[k]
        seen[i2[k]] |= coherent[k]
    winter = np.array([d.month in (11, 12, 1, 2, 3, 4) for d in stack["dates"]])
    land = (truth["lake"].values == 0) & (truth["water"].values < 0.5)
    patterns = seen[winter][:, land]  # (winter date, land pixel)
    distinct = {tuple(col) for col in patterns.T}
    assert len(distinct) >= 50
    # Some winter dates are seen by some pixels but not by others.
    partly = patterns.any(axis=1) & ~patterns.all(axis=1)
    assert partly.sum() >= 10
    # Coherent winter dates follow the per-pixel snow cover of the truth.
    snow = truth["snow_cover"].values.astype(bool)
    assert not (seen & snow).any()


def test_lake_is_hyp3_nodata(hard_world, truth):
    _, staged = hard_world
    lake = truth["lake"].values.astype(bool)
    assert 50 <= lake.sum() <= 0.1 * lake.size
    x0 = float(truth["x"].values[0]) - 40.0
    y0 = float(truth["y"].values[0]) + 40.0
    products = find_hyp3_products(staged["raw"] / "hyp3")
    for product in products:
        values = {}
        for layer in ("unw_phase", "corr"):
            with rasterio.open(product.layers[layer]) as src:
                values[layer] = src.read(1)
                t = src.transform
        row0, col0 = round((y0 - t.f) / 80.0), round((t.c - x0) / 80.0)
        h, w = values["unw_phase"].shape
        sub = lake[max(row0, 0) : row0 + h, max(col0, 0) : col0 + w]
        win = (slice(max(-row0, 0), max(-row0, 0) + sub.shape[0]),
               slice(max(-col0, 0), max(-col0, 0) + sub.shape[1]))
        assert sub.sum() == lake.sum(), product.name
        assert np.all(values["unw_phase"][win][sub] == 0), product.name
        assert np.all(values["corr"][win][sub] == 0), product.name
        # Off the lake, inside the product, the phase is mostly valid.
        assert (values["unw_phase"][win][~sub] != 0).mean() > 0.99, product.name
    with xr.open_zarr(staged["sentinel1"]) as ds:
        assert np.isnan(ds["los_mm"].values[:, lake]).all()


def test_a_few_pairs_carry_unwrapping_errors(pairs):
    errors = pairs[pairs["unwrapping_error_cycles"] != 0]
    assert 3 <= len(errors) <= 15
    assert (errors["unwrapping_error_area_fraction"] > 0.1).all()
    # They sit on pairs that are coherent over most of the scene, where they matter.
    assert (errors["snow_area_fraction"] < 0.5).all()


def test_every_pair_has_its_own_phase_offset(pairs):
    offsets = pairs["reference_offset_rad"]
    assert offsets.notna().all()
    assert 1.5 < offsets.std() < 2.5
    assert offsets.abs().max() > np.pi


def test_physics_does_not_depend_on_the_start_date(truth, hard_world_may):
    _, staged = hard_world_may
    with xr.open_dataset(staged["raw"] / "truth" / "sentinel1_truth.nc") as t:
        may = t.load()
    assert pd.Timestamp(may["time"].values[0]).month == 5
    common = np.intersect1d(truth["time"].values, may["time"].values)
    assert len(common) == len(may["time"])
    diff = (truth["displacement"].sel(time=common).values.astype(np.float64)
            - may["displacement"].sel(time=common).values)
    # Equal up to a per-pixel constant (each truth is relative to its own first date).
    assert np.abs(diff - diff[0]).max() < 1e-3
    assert np.abs(diff[0]).max() > 0.1
    assert np.array_equal(truth["snow_cover"].sel(time=common).values,
                          may["snow_cover"].values)
    for name in ("elevation", "rate_weight", "seasonal_weight", "lake"):
        assert np.array_equal(truth[name].values, may[name].values), name
