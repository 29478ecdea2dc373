"""Conventions of the Sentinel-1 chain, each with a test that fails if it is flipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from talik.science.calibration import fit_cdf_matching, rank_agreement
from talik.science.filtering import atmospheric_filter
from talik.science.geometry import los_to_los, los_to_vertical, vertical_to_los
from talik.science.interferogram import (
    apply_reference,
    fit_ramps,
    gacos_los_correction_mm,
    reference_offsets,
    remove_ramps,
    to_los_mm,
)
from talik.science.seasonal import linear_rate, thaw_season_deformation
from talik.science.temporal import decimal_years

Y = np.arange(40) * -80.0 + 4.2e6
X = np.arange(50) * 80.0 + 5.5e5


def _grid(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(values, dims=("y", "x"), coords={"y": Y, "x": X})


def test_pair_conventions_all_give_positive_toward():
    toward = xr.DataArray([10.0])  # mm toward the satellite
    cases = [
        (-toward / (0.2419 * 1000 / (4 * np.pi)), "unwrapped_phase", "rad", "positive_away_from_sensor"),
        (toward / (0.2419 * 1000 / (4 * np.pi)), "unwrapped_phase", "rad", "positive_toward_sensor"),
        (toward / 1000, "los_displacement", "m", "positive_toward_sensor"),
        (-toward, "los_displacement", "mm", "positive_away_from_sensor"),
    ]
    for value, quantity, units, convention in cases:
        out = to_los_mm(value, quantity, units, convention, 0.2419)
        assert float(out[0]) == pytest.approx(10.0), (quantity, units, convention)


def test_vertical_is_larger_than_los_and_same_sign():
    v = los_to_vertical(_grid(np.full((40, 50), -7.6)), _grid(np.full((40, 50), 39.47)))
    assert float(v.mean()) == pytest.approx(-7.6 / np.cos(np.radians(39.47)))


def test_common_reference_makes_pairs_agree():
    """Two pairs of the same motion, each referenced to its own point (as HyP3 does)."""
    yy, xx = np.meshgrid(np.arange(40), np.arange(50), indexing="ij")
    motion = -12.0 * np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 50.0)  # a subsidence bowl
    pair_a = motion - motion[3, 4]  # own reference points
    pair_b = motion - motion[20, 30]
    stack = xr.DataArray(np.stack([pair_a, pair_b]), dims=("pair", "y", "x"),
                         coords={"y": Y, "x": X})
    window = xr.zeros_like(stack.isel(pair=0), dtype=bool)
    window[0:5, 40:45] = True  # stable corner
    out = apply_reference(stack, reference_offsets(stack, window))
    np.testing.assert_allclose(out[0], out[1], atol=1e-9)
    np.testing.assert_allclose(out[0].where(window).mean(), 0.0, atol=1e-9)
    # Relative to the stable window, the bowl centre went down 12 mm: the sign is kept.
    assert float(out[0][20, 30]) == pytest.approx(-12.0, abs=0.01)


def test_ramp_is_fitted_on_stable_ground_and_subtracted():
    yy, xx = np.meshgrid(Y - Y.mean(), X - X.mean(), indexing="ij")
    ramp = 3.0 + 2e-3 * xx - 1.5e-3 * yy  # mm
    bowl = np.zeros_like(ramp)
    bowl[10:30, 15:40] = -20.0  # deforming area
    stable = _grid(bowl == 0)
    los = xr.DataArray((ramp + bowl)[None], dims=("pair", "y", "x"), coords={"y": Y, "x": X})
    coefs = fit_ramps(los, stable, "plane")
    clean = remove_ramps(los, coefs)
    np.testing.assert_allclose(clean[0], bowl, atol=1e-6)
    # Fitting on every pixel (the deforming area included) biases the result ...
    biased = remove_ramps(los, fit_ramps(los, _grid(np.ones_like(bowl, bool)), "plane"))
    assert np.abs(biased[0] - bowl).max() > 2.0
    # ... and adding the ramp instead of subtracting it would double it.
    assert np.abs((los + (los - clean))[0] - bowl).max() > 5.0


def test_ramp_removal_on_tiles_equals_in_memory_and_keeps_the_tiles():
    yy, xx = np.meshgrid(Y - Y.mean(), X - X.mean(), indexing="ij")
    rng = np.random.default_rng(3)
    pairs = np.stack([k * (1.0 + 1e-3 * xx - 2e-3 * yy) + rng.normal(size=yy.shape)
                      for k in range(1, 6)])
    los = xr.DataArray(pairs, dims=("pair", "y", "x"),
                       coords={"pair": [f"p{k}" for k in range(5)], "y": Y, "x": X})
    coefs = fit_ramps(los, _grid(np.ones(yy.shape, bool)), "quadratic")
    whole = remove_ramps(los, coefs)
    tiled = remove_ramps(los.chunk({"pair": -1, "y": 16, "x": 16}), coefs)
    assert tiled.chunks == ((5,), (16, 16, 8), (16, 16, 16, 2))
    np.testing.assert_allclose(tiled.values, whole.values, atol=1e-9)
    # Dimension order does not matter.
    np.testing.assert_allclose(remove_ramps(los.transpose("y", "x", "pair"), coefs)
                               .transpose("pair", "y", "x").values, whole.values, atol=1e-9)
    assert float(np.abs(whole).mean()) < 1.0  # the ramps (up to ±10 mm) are gone


def test_gacos_correction_removes_a_delay_increase():
    inc = _grid(np.full((40, 50), 39.47))
    yy, _ = np.meshgrid(np.arange(40), np.arange(50), indexing="ij")
    ztd_ref = _grid(2.0 + 0.001 * yy)
    ztd_sec = _grid(2.0 + 0.004 * yy)  # more delay at the secondary date, growing with y
    apparent = -(ztd_sec - ztd_ref) / np.cos(np.radians(inc)) * 1000  # looks like moving away
    corrected = apparent + gacos_los_correction_mm(ztd_ref, ztd_sec, inc)
    np.testing.assert_allclose(corrected, 0.0, atol=1e-9)
    flipped = apparent - gacos_los_correction_mm(ztd_ref, ztd_sec, inc)
    assert float(np.abs(flipped).max()) > 100


def test_cdf_matching_recovers_a_monotone_distortion():
    rng = np.random.default_rng(0)
    truth = rng.normal(-5, 4, (40, 50))
    source = 2.5 * truth + 7.0  # a biased, stretched S1 rate map ...
    target = truth.copy()
    target[:, 35:] = np.nan  # ... and an L-band map covering 70 % of it
    mapping = fit_cdf_matching(source, target)
    np.testing.assert_allclose(mapping(source)[:, :35], truth[:, :35], atol=0.2)
    assert np.abs(mapping(source)[:, 35:] - truth[:, 35:]).max() < 0.6  # extended coverage
    assert rank_agreement(source, target) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="overlapping"):
        fit_cdf_matching(source[:2, :2], target[:2, :2])


def test_atmospheric_filter_removes_screen_and_keeps_slow_motion():
    rng = np.random.default_rng(1)
    times = pd.date_range("2020-04-01", periods=60, freq="12D")
    t = np.arange(60) * 12 / 365.25
    motion = -8.0 * t[:, None, None] * np.ones((1, 40, 50))
    from scipy.ndimage import gaussian_filter

    screen = np.stack([gaussian_filter(rng.normal(0, 1, (40, 50)), 8) for _ in t])
    screen *= 5.0 / screen.std()
    disp = xr.DataArray(motion + screen, dims=("time", "y", "x"),
                        coords={"time": times, "y": Y, "x": X})
    filtered, estimated = atmospheric_filter(disp, 36.0, 800.0, 80.0)
    before = float(np.sqrt(((disp - motion) ** 2).mean()))
    after = float(np.sqrt(((filtered - motion) ** 2).mean()))
    assert after < 0.5 * before
    # Steady motion alone passes through untouched (its trend is removed before filtering).
    steady = disp.copy(data=motion)
    np.testing.assert_allclose(atmospheric_filter(steady, 36.0, 800.0, 80.0)[0], motion, atol=1e-6)
    assert float(linear_rate(atmospheric_filter(steady, 36.0, 800.0, 80.0)[0]).mean()) == (
        pytest.approx(-8.0, abs=1e-6))


def test_rate_and_thaw_season_on_an_analytic_series():
    times = pd.date_range("2018-01-01", "2021-12-31", freq="6D")
    t = (times - times[0]).days.to_numpy() / 365.25
    doy = times.day_of_year.to_numpy()
    settle = -30.0 * np.clip((doy - 121) / (274 - 121), 0, 1)  # 1 May → 1 Oct: −30 mm
    heave = 30.0 * np.clip((doy - 274) / 60, 0, 1)  # back up by the end of November
    seasonal = settle + heave
    series = xr.DataArray((-5.0 * t + seasonal)[:, None], dims=("time", "x"),
                          coords={"time": times})
    thaw = thaw_season_deformation(series, "05-01", "10-01", xr.DataArray([-5.0], dims="x"))
    assert list(thaw["year"].values) == [2018, 2019, 2020, 2021]
    np.testing.assert_allclose(thaw.values, -30.0, atol=1.5)  # 6-day sampling of the kinks
    assert thaw.values.max() < 0  # thaw-season subsidence is negative


def test_thaw_season_as_interpolation_for_gappy_series_and_any_dims_order():
    """The operator form of the thaw-season change equals interpolating the detrended series:
    a NaN date away from the thaw dates changes nothing, the input's dims order is kept."""
    times = pd.DatetimeIndex(sorted({*pd.date_range("2019-03-01", "2020-11-30", freq="12D"),
                                     pd.Timestamp("2019-05-01")}))
    rng = np.random.default_rng(2)
    values = rng.normal(size=(len(times), 3, 4)).cumsum(axis=0)
    values[np.flatnonzero((times.year == 2019) & (times.month == 12))[0], 1, 1] = np.nan  # winter
    series = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": times})
    rate = xr.DataArray(np.full((3, 4), -2.0), dims=("y", "x"))
    thaw = thaw_season_deformation(series, "05-01", "10-01", rate)
    t = decimal_years(series["time"])
    detrended = series - rate * xr.DataArray(t, dims="time", coords={"time": times})
    expected = []
    for year in thaw["year"].values:
        at = detrended.interp(time=[pd.Timestamp(f"{year}-05-01"), pd.Timestamp(f"{year}-10-01")])
        expected.append(at.isel(time=1) - at.isel(time=0))
    np.testing.assert_allclose(thaw.values, np.stack([e.values for e in expected]), atol=1e-9)
    assert np.isfinite(thaw.values).all()  # the NaN date is not one the thaw dates weigh
    swapped = thaw_season_deformation(series.transpose("y", "time", "x"), "05-01", "10-01", rate)
    assert swapped.dims == ("y", "year", "x")
    np.testing.assert_allclose(swapped.transpose(*thaw.dims).values, thaw.values, atol=1e-12)


def test_a_product_without_any_thaw_season_is_written(tmp_path):
    """A stack with no bracketed thaw season has an empty ``year`` axis: still a product."""
    from talik.tasks.sentinel1 import write_cf_netcdf
    from talik.tasks.stage import AnalysisGrid

    grid = AnalysisGrid(crs="EPSG:32647", transform=(80.0, 0.0, 5.5e5, 0.0, -80.0, 4.2e6),
                        width=8, height=6)
    ys, xs = grid.coords()
    ds = xr.Dataset({"thaw_season_deformation": (("year", "y", "x"), np.zeros((0, 6, 8)),
                                                 {"units": "mm"}),
                     "velocity": (("y", "x"), np.ones((6, 8)), {"units": "mm/yr"})},
                    coords={"year": np.array([], int), "y": ys, "x": xs})
    write_cf_netcdf(ds, grid, tmp_path / "p.nc", "t")
    with xr.open_dataset(tmp_path / "p.nc") as back:
        assert back.sizes["year"] == 0
        np.testing.assert_array_equal(back["velocity"].values, 1.0)


def test_spatial_lowpass_layers_match_one_by_one_in_both_precisions():
    from talik.science.filtering import spatial_lowpass

    rng = np.random.default_rng(5)
    data = rng.normal(size=(4, 40, 50))
    data[:, 5:9, 10:20] = np.nan  # the same hole in every layer (a time series)
    stack = xr.DataArray(data, dims=("time", "y", "x"), coords={"y": Y, "x": X})
    together = spatial_lowpass(stack, 2.5).values
    one_by_one = np.stack([spatial_lowpass(stack[i], 2.5).values for i in range(4)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-12)
    assert np.isnan(together[:, 5:9, 10:20]).all()
    single = spatial_lowpass(stack.astype(np.float32).chunk({"y": 16, "x": 16}), 2.5)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single.values, together, atol=1e-5)
    data[2, 30, 30] = np.nan  # different holes per layer: the general path
    mixed = spatial_lowpass(stack.copy(data=data), 2.5).values
    np.testing.assert_allclose(mixed[2], spatial_lowpass(stack.copy(data=data)[2], 2.5).values,
                               atol=1e-12)


def test_fused_filter_equals_detrend_then_temporal_then_spatial_steps():
    """The one-matrix filter is the paper's recipe, step by step, also across dask tiles."""
    from talik.science.filtering import spatial_lowpass, temporal_lowpass
    from talik.science.seasonal import detrend

    rng = np.random.default_rng(7)
    times = pd.DatetimeIndex(np.sort(rng.choice(pd.date_range("2017-05-01", periods=900),
                                                70, replace=False)))
    data = rng.normal(0, 3, (70, 40, 50)).cumsum(axis=0)
    data[:, 12:15, 20:31] = np.nan  # pixels never inverted
    disp = xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times, "y": Y, "x": X})
    detrended = detrend(disp, linear_rate(disp))
    expected_screen = spatial_lowpass(detrended - temporal_lowpass(detrended, 30.0), 2.0)
    expected_screen = expected_screen.where(np.isfinite(disp))
    filtered, screen = atmospheric_filter(disp, 30.0, 160.0, 80.0)
    np.testing.assert_allclose(screen.values, expected_screen.values, atol=1e-9)
    np.testing.assert_allclose(filtered.values, (disp - expected_screen).values, atol=1e-9)
    tiled, _ = atmospheric_filter(disp.chunk({"time": -1, "y": 16, "x": 16}), 30.0, 160.0, 80.0)
    np.testing.assert_allclose(tiled.values, filtered.values, atol=1e-9)
    swapped, _ = atmospheric_filter(disp.transpose("y", "x", "time"), 30.0, 160.0, 80.0)
    assert swapped.dims == ("y", "x", "time")
    np.testing.assert_allclose(swapped.transpose(*disp.dims).values, filtered.values, atol=1e-9)


def test_gacos_applied_per_tile_equals_the_pairwise_correction():
    """Corrections formed inside dask tiles from per-date delays = the formula pair by pair."""
    from talik.science.interferogram import apply_gacos

    rng = np.random.default_rng(11)
    n_dates, ref, sec = 5, np.array([0, 0, 1, 2, 3, 1]), np.array([1, 2, 2, 3, 4, 4])
    ztd = rng.normal(2.3, 0.02, (n_dates, 40, 50)).astype(np.float32)  # as staged
    inc = _grid(np.linspace(30, 45, 50)[None, :].repeat(40, 0))
    los = xr.DataArray(rng.normal(size=(6, 40, 50)).astype(np.float32), dims=("pair", "y", "x"),
                       coords={"pair": np.arange(6), "y": Y, "x": X})
    has = np.array([True, True, True, False, True, True])  # pair 3 misses a date's map
    gacos = xr.Dataset({
        "ztd_m": (("date", "y", "x"), ztd),
        "gacos_reference_index": ("pair", np.where(has, ref, -1)),
        "gacos_secondary_index": ("pair", sec),
        "has_gacos": ("pair", has),
    })
    expected = np.stack([los.values[p] + gacos_los_correction_mm(ztd[ref[p]], ztd[sec[p]],
                                                                 inc.values)
                         for p in np.flatnonzero(has)])
    for stack in (los, los.chunk({"pair": -1, "y": 16, "x": 16})):
        out, kept = apply_gacos(stack, gacos["ztd_m"], gacos["gacos_reference_index"].values,
                                gacos["gacos_secondary_index"].values, has, inc)
        np.testing.assert_array_equal(kept, np.flatnonzero(has))
        np.testing.assert_allclose(out.values, expected, rtol=1e-6, atol=1e-4)


def test_one_pass_tile_correction_equals_the_steps_one_after_the_other():
    """correct_tile = mask → GACOS → reference offsets → ramps, on the kept pairs, either
    given coherence values or the stored uint8 codes with their table."""
    from talik.science.interferogram import (
        PairCorrections,
        apply_gacos,
        correct_tile,
        mask_incoherent,
    )

    rng = np.random.default_rng(5)
    n_pairs, n_dates = 7, 5
    ref, sec = rng.integers(0, 3, n_pairs), rng.integers(3, n_dates, n_pairs)
    ztd = rng.normal(2.3, 0.02, (n_dates, 40, 50)).astype(np.float32)
    inc = _grid(np.linspace(30, 45, 50)[None, :].repeat(40, 0).astype(np.float32))
    yy, xx = np.meshgrid(Y - Y.mean(), X - X.mean(), indexing="ij")
    pairs = np.stack([k * (1.0 + 1e-3 * xx - 2e-3 * yy) + rng.normal(size=yy.shape)
                      for k in range(n_pairs)]).astype(np.float32)
    los = xr.DataArray(pairs, dims=("pair", "y", "x"), coords={"pair": np.arange(n_pairs),
                                                                "y": Y, "x": X})
    codes = rng.integers(0, 256, (n_pairs, 40, 50)).astype(np.uint8)  # 255: missing
    table = (np.arange(256) * (1 / 250)).astype(np.float32)
    table[255] = np.nan
    coherence = los.copy(data=table[codes])
    kept = np.array([0, 2, 3, 5, 6])  # e.g. pair 1 had no GACOS, pair 4 failed loop closure
    offsets = rng.normal(size=kept.size).astype(np.float32)
    coefs = fit_ramps(los, _grid(np.ones(yy.shape, bool)), "plane").isel(pair=kept)

    masked = mask_incoherent(los, coherence, 0.3).isel(pair=kept)
    step, _ = apply_gacos(masked, xr.DataArray(ztd, dims=("date", "y", "x")), ref[kept],
                          sec[kept], np.ones(kept.size, bool), inc)
    step = apply_reference(step, xr.DataArray(offsets, dims="pair",
                                              coords={"pair": step["pair"]}))
    expected = remove_ramps(step, coefs.assign_coords(pair=step["pair"])).values

    corrections = PairCorrections(
        coherence_threshold=0.3, pairs=kept, offset_mm=offsets, ramp_kind="plane",
        ramp_coefs=coefs.values, centre=(coefs.attrs["y_centre"], coefs.attrs["x_centre"]),
        gacos_reference=ref[kept], gacos_secondary=sec[kept])
    from_values = correct_tile(corrections, pairs, coherence.values, Y, X, ztd, inc.values)
    from_codes = correct_tile(corrections, pairs, codes, Y, X, ztd, inc.values,
                              coherence_table=table)
    assert from_values.dtype == np.float32 and from_values.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(from_values), np.isnan(expected))
    np.testing.assert_allclose(from_values, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(from_codes, from_values)
    assert 0.2 < float(np.isnan(expected).mean()) < 0.4  # the mask did something


def test_geometry_round_trips_through_the_vertical():
    """LOS → vertical → LOS is the identity; uplift is positive in both; a steeper look sees more."""
    up = _grid(np.full((40, 50), 10.0))  # mm up
    los = vertical_to_los(up, 39.47)
    assert float(los.mean()) == pytest.approx(10.0 * np.cos(np.radians(39.47)))
    assert np.allclose(los_to_vertical(los, 39.47), up)
    lband = los_to_los(los, 39.47, 40.55)
    assert np.allclose(lband, vertical_to_los(up, 40.55))
    assert float(lband.mean()) < float(los.mean())  # larger incidence, smaller LOS share


def test_the_product_keeps_millimetres_as_netcdf4_least_significant_digit_would(tmp_path):
    # write_cf_netcdf rounds mm values itself, tile by tile; netCDF4 rounding them on write
    # (least_significant_digit=3) must give the very same numbers.
    from talik.tasks.sentinel1 import write_cf_netcdf
    from talik.tasks.stage import AnalysisGrid

    rng = np.random.default_rng(3)
    values = (rng.standard_normal((4, 6, 8)) * 300).astype(np.float32)
    values[0, 0, :3] = np.nan
    ds = xr.Dataset({"displacement": (("time", "y", "x"), values, {"units": "mm"})},
                    coords={"time": pd.date_range("2020-01-01", periods=4, freq="12D"),
                            "y": 4.2e6 - 80.0 * np.arange(6), "x": 5.5e5 + 80.0 * np.arange(8)})
    grid = AnalysisGrid(crs="EPSG:32647", transform=(80.0, 0.0, 5.4996e5, 0.0, -80.0, 4.20004e6),
                        width=8, height=6)
    write_cf_netcdf(ds.chunk({"y": 3, "x": 4}), grid, tmp_path / "ours.nc", "t")
    ds.to_netcdf(tmp_path / "netcdf4.nc",
                 encoding={"displacement": {"zlib": True, "least_significant_digit": 3}})
    with xr.open_dataset(tmp_path / "ours.nc") as ours, \
            xr.open_dataset(tmp_path / "netcdf4.nc") as ref:
        np.testing.assert_array_equal(ours["displacement"].values, ref["displacement"].values)
        # the file says so as netCDF4 would (xarray reads that attribute into the encoding)
        assert ours["displacement"].encoding["least_significant_digit"] == 3
        assert not np.array_equal(ours["displacement"].values, values, equal_nan=True)
