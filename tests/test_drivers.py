"""Environmental drivers (method.md §4, Fig. 12–13): gap filling, thawing index, aggregation,
the MODIS reader's band check, and the demo world's built-in dependences.

Sign convention of R: the deformation is used as published, positive up, so subsidence is
negative. A factor that goes with *more* subsidence (ground ice, NDVI) has a *negative* R; one
that goes with less subsidence (slope, SWIR albedo) a positive R. The paper's albedo
R = 0.65 is positive in this convention too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer

from talik.errors import InputError
from talik.science import drivers as drv
from talik.tasks.readers.modis import find_modis_stacks, read_modis_stack
from talik.tasks.records import StepOutput
from talik.world.geotiff import write_geotiff

UTM = "EPSG:32647"


def _series(values: np.ndarray, start: str) -> xr.DataArray:
    t = pd.date_range(start, periods=len(values), freq="D")
    return xr.DataArray(np.asarray(values, float)[:, None, None], dims=("time", "y", "x"),
                        coords={"time": t, "y": [0.0], "x": [0.0]}, attrs={"units": "degC"})


def _analysis_axes(nx: int = 80, ny: int = 64, pixel: float = 80.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    x = 552480.0 + pixel * (np.arange(nx) + 0.5)
    y = 4213000.0 - pixel * (np.arange(ny) + 0.5)
    return x, y


# ----------------------------------------------------------------------------- time
def test_gap_filling_recovers_a_linear_series_exactly_and_holds_the_edges():
    true = -6.0 + 0.25 * np.arange(60)
    gappy = true.copy()
    gaps = [0, 1, 2, 10, 11, 12, 13, 30, 57, 58, 59]
    gappy[gaps] = np.nan
    filled = drv.fill_gaps_linear(_series(gappy, "2020-05-01")).values[:, 0, 0]
    inner = slice(3, 57)
    np.testing.assert_allclose(filled[inner], true[inner], rtol=0, atol=1e-12)
    # Edges: the nearest observation is held (no extrapolation).
    np.testing.assert_array_equal(filled[:3], true[3])
    np.testing.assert_array_equal(filled[57:], true[56])
    # A pixel never observed stays missing.
    empty = drv.fill_gaps_linear(_series(np.full(10, np.nan), "2020-05-01"))
    assert np.isnan(empty.values).all()


def test_gap_filling_interpolates_in_days_on_uneven_dates():
    t = pd.DatetimeIndex(["2020-05-01", "2020-05-02", "2020-05-10", "2020-05-31"])
    da = xr.DataArray(np.array([1.0, np.nan, np.nan, 31.0]), dims="time", coords={"time": t})
    np.testing.assert_allclose(drv.fill_gaps_linear(da).values, [1.0, 2.0, 10.0, 31.0])


def test_thawing_index_of_a_known_series():
    # Daily LST from 1 May to 31 Oct: −5.5 °C rising by 0.1 °C/day; thaw season 1 May → 1 Oct
    # (153 days, the last on 30 Sep). Degree-days above 0: Σ max(T, 0) over those days.
    days = pd.date_range("2021-05-01", "2021-10-31", freq="D")
    true = -5.5 + 0.1 * np.arange(len(days))
    season = (days >= "2021-05-01") & (days < "2021-10-01")
    expected = np.clip(true[season], 0, None).sum()
    gappy = true.copy()
    gappy[[5, 6, 7, 60, 61, 100, 152, 153, 154]] = np.nan  # a gap across the season's end
    ti = drv.thawing_index(_series(gappy, "2021-05-01"), ("05-01", "10-01"), 0.2)
    assert ti.dims == ("year", "y", "x") and list(ti["year"].values) == [2021]
    assert ti.attrs["units"] == "degC d"
    np.testing.assert_allclose(float(ti.values[0, 0, 0]), expected, rtol=1e-12)
    # Too few observed days in the season: no value.
    sparse = np.full_like(true, np.nan)
    sparse[::10] = true[::10]
    assert np.isnan(drv.thawing_index(_series(sparse, "2021-05-01"), ("05-01", "10-01"),
                                      0.2).values).all()


def test_season_means_respect_the_season_bounds():
    days = pd.date_range("2020-05-01", "2020-10-31", freq="D")
    da = _series(np.arange(len(days), dtype=float), "2020-05-01")
    ndvi = drv.season_mean(da, ("06-01", "08-31"), include_end=True)
    inside = np.arange(len(days))[(days >= "2020-06-01") & (days <= "2020-08-31")]
    assert float(ndvi.values[0, 0, 0]) == pytest.approx(inside.mean())
    thaw = drv.season_mean(da, ("05-01", "10-01"), include_end=False)
    assert float(thaw.values[0, 0, 0]) == pytest.approx(np.arange(153).mean())


# ----------------------------------------------------------------------------- space
def test_aggregation_to_cells_conserves_the_area_mean():
    """Exact overlap areas: Σ cell mean × cell area = Σ pixel value × pixel area (1e-9 relative)."""
    x, y = _analysis_axes()  # 6.4 km × 5.12 km: the last cell column and row are clipped
    rng = np.random.default_rng(3)
    values = rng.normal(size=(y.size, x.size))
    values[rng.random(values.shape) < 0.2] = np.nan
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": y, "x": x}, name="v")
    cells = drv.cell_grid(x, y, 1000.0, UTM)
    assert cells.shape == (6, 7)
    agg = drv.aggregate_to_cells(da, cells)
    valid_area = drv.valid_fraction(da, cells).values * 1000.0**2
    total = np.nansum(agg.values.astype(np.float64) * valid_area)
    assert total / valid_area.sum() == pytest.approx(np.nanmean(values), rel=1e-6)
    # A field linear in x and y averages to its value at each clipped cell's centre, up to the
    # pixels a cell edge cuts through (a pixel is one value over its area): |∇| × pixel / 2.
    lin = xr.DataArray(0.01 * x[None, :] - 0.003 * y[:, None], dims=("y", "x"),
                       coords={"y": y, "x": x}, name="lin")
    cx = (cells.x_edges[:-1] + cells.x_edges[1:]) / 2
    cy = (cells.y_edges[:-1] + cells.y_edges[1:]) / 2
    expected = 0.01 * cx[None, :] - 0.003 * cy[:, None]
    np.testing.assert_allclose(drv.aggregate_to_cells(lin, cells).values, expected, rtol=0,
                               atol=(0.01 + 0.003) * 80.0 / 2)


def test_lonlat_layers_are_area_weighted_onto_the_cells():
    """A MODIS-like lon/lat grid onto UTM cells: constant fields stay exact; white noise (the
    worst case) agrees with a 4 m brute-force sampling within 0.12 σ per cell and 0.01 σ on
    the area mean (the default sub-grid is 1/8 of a source cell)."""
    x, y = _analysis_axes()
    cells = drv.cell_grid(x, y, 1000.0, UTM)
    to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon0, lat0 = to_ll.transform(x[0] - 2000, y[0] + 2000)
    lon1, lat1 = to_ll.transform(x[-1] + 2000, y[-1] - 2000)
    step = 0.005
    lons = np.arange(lon0, lon1, step) + step / 2
    lats = np.arange(lat0, lat1, -step) - step / 2
    rng = np.random.default_rng(5)
    src = xr.DataArray(rng.normal(size=(lats.size, lons.size)), dims=("y", "x"),
                       coords={"y": lats, "x": lons}, name="v")
    agg = drv.resample_to_cells(src, "EPSG:4326", cells)
    ref = drv.resample_to_cells(src, "EPSG:4326", cells, spacing_m=4.0)
    assert float(np.abs(agg - ref).max()) < 0.12
    area = cells.area_m2()
    assert abs(float((agg.values * area).sum() - (ref.values * area).sum()) / area.sum()) < 0.01
    const = drv.resample_to_cells(src * 0 + 0.17, "EPSG:4326", cells)
    np.testing.assert_allclose(const.values, 0.17, rtol=1e-6)
    # The sub-grid is projected once per pair of grids: another layer on the same source grid
    # (another year) reuses it, a shifted source grid does not, and both are still right.
    misses = drv._sub_grid_sampling.cache_info().misses
    np.testing.assert_array_equal(drv.resample_to_cells(src * 2, "EPSG:4326", cells).values,
                                  2 * agg.values)
    assert drv._sub_grid_sampling.cache_info().misses == misses
    shifted = drv.resample_to_cells(src.assign_coords(x=src["x"] + 10 * step), "EPSG:4326", cells)
    assert drv._sub_grid_sampling.cache_info().misses == misses + 1
    assert not np.allclose(shifted.values, agg.values, equal_nan=True)


def test_correlation_and_binned_means():
    rng = np.random.default_rng(0)
    f = rng.uniform(0, 1, 400)
    d = -40 * f + rng.normal(0, 2, 400)
    stat = drv.correlate(f, d)
    assert stat["n"] == 400 and stat["r"] < -0.95 and stat["p"] < 1e-10
    for method in ("equal_count", "equal_width"):
        table = drv.binned_means(f, d, 8, method)
        assert len(table) == 8 and table["n"].sum() == 400
        assert (np.diff(table["deformation_mean"]) < 0).all()
    counts = drv.binned_means(f, d, 8, "equal_count")["n"]
    assert counts.max() - counts.min() <= 1


# ----------------------------------------------------------------------------- reader
def _copy_with_band_tag(src: Path, dst: Path, band: str | None) -> Path:
    with rasterio.open(src) as r:
        data, transform, crs = r.read(), r.transform, r.crs.to_string()
        names = list(r.descriptions)
        tags = r.tags()
        nodata = r.nodata
    if band is None:
        tags.pop("band")
    else:
        tags["band"] = band
    write_geotiff(dst, data, transform, crs, nodata=nodata, descriptions=names, tags=tags)
    return dst


def test_a_modis_stack_without_its_band_is_refused_by_file_and_band(science_world, tmp_path):
    _, staged = science_world
    lst = sorted((staged["raw"] / "modis").glob("MOD11A1_LST_Day_1km_*.tif"))[0]
    folder = tmp_path / "modis"
    folder.mkdir()
    bad = _copy_with_band_tag(lst, folder / lst.name, "LST_Night")
    with pytest.raises(InputError) as err:
        find_modis_stacks(folder)
    assert str(bad) in str(err.value) and "LST_Day_1km" in str(err.value)
    bad.unlink()
    untagged = _copy_with_band_tag(lst, folder / lst.name, None)
    with pytest.raises(InputError, match="LST_Day_1km"):
        find_modis_stacks(folder)
    with pytest.raises(InputError) as err:
        read_modis_stack(untagged, "LST_Day_1km")
    assert err.value.path == untagged and "LST_Day_1km" in err.value.expected
    ndvi = sorted((staged["raw"] / "modis").glob("MOD13Q1_NDVI_*.tif"))[0]
    with pytest.raises(InputError, match="LST_Day_1km"):
        read_modis_stack(ndvi, "LST_Day_1km")
    assert find_modis_stacks(tmp_path / "absent") == {}


# ----------------------------------------------------------------------------- the step
@pytest.fixture(scope="module")
def drivers_run(science_world, tmp_path_factory):
    """The drivers step on the demo-sized world, its deformation taken from the world's truth.

    The truth's mean thaw-season LOS change (and its vertical, LOS / cos incidence) is written
    as a Sentinel-1 product, so the step is judged on the factors, not on the InSAR chain.
    """
    from talik.tasks.drivers import drivers_assessment, modis_factors
    from talik.tasks.ingest.world import ingest_world
    from talik.tasks.stage import stage_rasters, stage_sentinel1

    cfg, staged = science_world
    work = str(cfg.stores.work_dir)
    inputs = ingest_world.fn(cfg.source, work)  # cached step folders: instant
    s1_staged = stage_sentinel1.fn(inputs, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    rasters = stage_rasters.fn(inputs, s1_staged, work)
    truth = xr.open_dataset(staged["raw"] / "truth" / "sentinel1_truth.nc").load()
    los = truth["thaw_season_deformation_mean"]
    product = xr.Dataset(
        {"thaw_season_deformation_mean": los.assign_attrs(units="mm"),
         "thaw_season_deformation_mean_vertical":
             (los / np.cos(np.radians(truth["incidence_deg"]))).assign_attrs(units="mm")},
        coords={"year": truth["year"]}).rio.write_crs(UTM)
    folder = tmp_path_factory.mktemp("truth-s1")
    product.to_netcdf(folder / "sentinel1.nc")
    s1 = StepOutput(step="sentinel1-timeseries", path=str(folder), digest="truth-of-the-world")
    out = drivers_assessment.fn(cfg, s1, rasters, modis_factors.fn(cfg, inputs, s1, work), work)
    return cfg, inputs, s1, rasters, out, truth


def test_demo_world_dependences_are_recovered_with_their_signs(drivers_run, science_report):
    _, _, _, _, out, _ = drivers_run
    table = pd.read_csv(Path(out.path) / "drivers.csv").set_index("factor")
    assert (table["status"] == "ok").all(), table["status"].to_dict()
    for factor, row in table.iterrows():
        science_report.append(f"drivers (1 km, truth deformation): {factor:13s} R = {row.r:+.2f} "
                              f"(p = {row.p:.1g}, n = {row.n})")
    # Ice-rich, wet (low albedo, greener) and flat ground subsides more (negative = down).
    expected_sign = {"ground_ice": -1, "ndvi": -1, "slope": +1, "swir_albedo": +1}
    for factor, sign in expected_sign.items():
        assert np.sign(table.loc[factor, "r"]) == sign, factor
        assert abs(table.loc[factor, "r"]) > 0.5 and table.loc[factor, "p"] < 0.01, factor
    # The world builds no thawing-index dependence: its LST is warmer on the low valley floor
    # (lapse rate) and cooler where wet, two opposing effects; only its presence is checked.
    assert np.isfinite(table.loc["thawing_index", "r"]) and table.loc["thawing_index", "n"] >= 20
    assert table["n"].min() >= 20


def test_step_outputs_are_cf_and_complete(drivers_run):
    cfg, *_, out, truth = drivers_run
    folder = Path(out.path)
    ds = xr.open_dataset(folder / "drivers_1km.nc", decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.rio.crs.to_epsg() == 32647
    for name in ["thaw_season_deformation", "deformation_coverage", *cfg.drivers.factors]:
        assert name in ds and "units" in ds[name].attrs and "long_name" in ds[name].attrs, name
    assert float(ds["x"][1] - ds["x"][0]) == cfg.drivers.aggregate_m
    # Masked cells are the clipped edge cells covering less than min_cell_coverage.
    keep = ds["deformation_coverage"] >= cfg.drivers.min_cell_coverage
    assert bool((np.isfinite(ds["thaw_season_deformation"]) == keep).all())
    # Area mean of the 1 km deformation ≈ mean of the pixels inside the kept cells.
    vertical = truth["thaw_season_deformation_mean"] / np.cos(np.radians(truth["incidence_deg"]))
    assert float(ds["thaw_season_deformation"].min()) >= float(vertical.min()) - 1e-3
    binned = pd.read_csv(folder / "binned.csv")
    assert set(binned["factor"]) == set(cfg.drivers.factors)
    assert binned.groupby("factor")["bin"].count().max() <= cfg.drivers.n_bins
    for figure in ("drivers_binned.png", "drivers_maps.png"):
        assert (folder / "figures" / figure).stat().st_size > 10_000
    assert set(out.summary["factors"]) == set(cfg.drivers.factors)
    assert out.summary["not_computed"] == {}


def test_missing_modis_inputs_leave_those_factors_not_computed(drivers_run, tmp_path):
    from talik.tasks.drivers import drivers_assessment, modis_factors

    cfg, inputs, s1, rasters, _, _ = drivers_run
    modis = inputs.location("modis")
    missing = tmp_path / "no-modis"
    inputs = inputs.model_copy(update={"locations": {**inputs.locations, "modis": str(missing)},
                                       "digest": inputs.digest + "-no-modis"})
    work = str(tmp_path / "work")
    out = drivers_assessment.fn(cfg, s1, rasters, modis_factors.fn(cfg, inputs, s1, work), work)
    assert set(out.summary["not_computed"]) == {"thawing_index", "ndvi", "swir_albedo"}
    assert all("no MODIS folder" in why for why in out.summary["not_computed"].values())
    assert set(out.summary["factors"]) == {"slope", "ground_ice"}
    table = pd.read_csv(Path(out.path) / "drivers.csv").set_index("factor")
    assert table.loc["ndvi", "status"].startswith("not computed")
    # One stack missing from an otherwise complete folder: only its factor is missing.
    partial = tmp_path / "partial"
    shutil.copytree(modis, partial)
    for path in partial.glob("MOD13Q1_NDVI_*.tif"):
        path.unlink()
    inputs = inputs.model_copy(update={"locations": {**inputs.locations, "modis": str(partial)},
                                       "digest": inputs.digest + "-partial"})
    work = str(tmp_path / "work")
    out = drivers_assessment.fn(cfg, s1, rasters, modis_factors.fn(cfg, inputs, s1, work), work)
    assert list(out.summary["not_computed"]) == ["ndvi"]
    assert "NDVI" in out.summary["not_computed"]["ndvi"]


def test_pipeline_product_recovers_the_same_signs(drivers_run, science_report):
    """The drivers step on the Sentinel-1 chain's own product (not the truth), end to end."""
    from talik.tasks.drivers import drivers_assessment, modis_factors
    from talik.tasks.sentinel1 import sentinel1_timeseries
    from talik.tasks.stage import stage_gacos, stage_pairs, stage_sentinel1

    cfg, inputs, _, rasters, _, _ = drivers_run
    work = str(cfg.stores.work_dir)
    s1_staged = stage_sentinel1.fn(inputs, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    s1 = sentinel1_timeseries.fn(s1_staged, rasters, stage_gacos.fn(inputs, s1_staged, work),
                                 stage_pairs.fn(inputs, s1_staged, work), cfg.sentinel1,
                                 cfg.sensors["alos2"].platform, work, "drivers test")
    out = drivers_assessment.fn(cfg, s1, rasters, modis_factors.fn(cfg, inputs, s1, work), work)
    for factor, stat in out.summary["factors"].items():
        science_report.append(f"drivers (1 km, Sentinel-1 product): {factor:13s} "
                              f"R = {stat['r']:+.2f} (p = {stat['p']:.1g}, n = {stat['n']})")
    factors = out.summary["factors"]
    for factor, sign in {"ground_ice": -1, "ndvi": -1, "slope": +1, "swir_albedo": +1}.items():
        assert np.sign(factors[factor]["r"]) == sign and factors[factor]["p"] < 0.01, factor
