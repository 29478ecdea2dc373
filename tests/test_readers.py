"""Each reader round-trips what the demo world writes, and refuses bad input by name."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from rasterio.transform import from_origin

from talik.errors import InputError
from talik.science.interferogram import phase_to_los_mm, to_los_mm
from talik.tasks.readers.era5 import read_era5_land
from talik.tasks.readers.gacos import find_gacos, read_gacos
from talik.tasks.readers.hyp3 import find_hyp3_products, parse_parameter_file, read_hyp3_layer
from talik.tasks.readers.modis import read_modis_stack
from talik.tasks.readers.pairs import find_pairs, read_pair
from talik.tasks.readers.raster import read_raster
from talik.tasks.readers.tables import read_discharge, read_station_temperature
from talik.world.geotiff import write_geotiff
from talik.world.sentinel1 import S1_WAVELENGTH_M
from tests.conftest import gamma_parameter_text

# --- HyP3 -----------------------------------------------------------------------------------


def _hyp3_product(folder: Path, los_mm: np.ndarray, name: str | None = None) -> Path:
    """A minimal HyP3 product whose unwrapped phase encodes ``los_mm`` (positive toward)."""
    name = name or "S1AB_20200101T000000_20200113T000000_VVP012_INT80_G_ueF_1A2B"
    product = folder / name
    product.mkdir(parents=True)
    phase = -4 * np.pi / S1_WAVELENGTH_M * los_mm / 1000.0  # HyP3: positive = away
    t = from_origin(500000, 4200000, 80, 80)
    write_geotiff(product / f"{name}_unw_phase.tif", phase.astype(np.float32), t, "EPSG:32647",
                  nodata=0.0)
    write_geotiff(product / f"{name}_corr.tif", np.full_like(phase, 0.9, np.float32), t,
                  "EPSG:32647", nodata=0.0)
    (product / f"{name}.txt").write_text(gamma_parameter_text(name, 12.5))
    return product


def test_hyp3_sign_toward_satellite_is_positive(tmp_path):
    los = np.zeros((4, 5))
    los[1, 2] = 10.0  # this pixel moved 10 mm toward the satellite
    los[3, 4] = -7.0  # this one 7 mm away (subsidence)
    los[0, 0] = 0.5
    _hyp3_product(tmp_path, los)
    (product,) = find_hyp3_products(tmp_path)
    phase = read_hyp3_layer(product, "unw_phase")
    assert float(phase[1, 2]) < 0  # HyP3 phase is negative for motion toward the satellite
    out = phase_to_los_mm(phase, S1_WAVELENGTH_M)
    assert float(out[1, 2]) == pytest.approx(10.0, abs=1e-4)
    assert float(out[3, 4]) == pytest.approx(-7.0, abs=1e-4)
    assert np.isnan(float(out[0, 1]))  # exact 0 is HyP3's no-data (the reference point)
    assert product.reference_date == dt.date(2020, 1, 1)
    assert product.span_days == 12
    assert product.parameters["Baseline"] == "12.5"


def test_hyp3_world_products_agree_with_truth_in_sign_and_scale(tiny_world):
    """Chains of consecutive 12-day pairs over a thaw season sum to the season's true motion.

    Summing a chain cancels every intermediate date's atmosphere, leaving the season's
    subsidence (tens of mm) well above the noise, so sign and scale are tested, not noise.
    """
    products = find_hyp3_products(tiny_world / "hyp3")
    pairs = pd.read_csv(tiny_world / "truth" / "s1_pairs.csv")
    assert [p.name for p in products] == sorted(pairs["product"])
    bad = set(pairs.loc[pairs["unwrapping_error_cycles"] != 0, "product"])
    truth = xr.open_dataset(tiny_world / "truth" / "sentinel1_truth.nc")
    stable = (truth["lowland"] < 0.05).values
    times = pd.DatetimeIndex(truth["time"].values)
    by_start = {p.reference_date: p for p in products if p.span_days == 12 and p.name not in bad}
    found, expected = [], []
    for season in sorted({d.year for d in by_start}):
        chain = []
        day = min(d for d in by_start if d.year == season)
        while day in by_start:
            chain.append(by_start[day])
            day = by_start[day].secondary_date
        if len(chain) < 8:
            continue
        on_truth_grid = {"y": truth["y"], "x": truth["x"], "method": "nearest", "tolerance": 1.0}
        total = sum(
            phase_to_los_mm(read_hyp3_layer(p, "unw_phase"), S1_WAVELENGTH_M)
            .where(read_hyp3_layer(p, "corr") >= 0.3)  # decorrelated (pond) pixels are noise
            .reindex(**on_truth_grid).values
            for p in chain
        )
        i = times.get_loc(pd.Timestamp(chain[0].reference_date))
        j = times.get_loc(pd.Timestamp(chain[-1].secondary_date))
        true = (truth["displacement"][j] - truth["displacement"][i]).values
        est = total - np.nanmedian(total[stable])
        ref = true - np.median(true[stable])
        ok = np.isfinite(est)
        found.append(est[ok])
        expected.append(ref[ok])
    assert found, "no season with a chain of 12-day pairs"
    found, expected = np.concatenate(found), np.concatenate(expected)
    slope = np.polyfit(expected, found, 1)[0]
    r = np.corrcoef(expected, found)[0, 1]
    assert expected.min() < -15  # the seasons' subsidence is large ...
    assert r > 0.8, r  # ... and recovered with the right sign and scale:
    assert slope == pytest.approx(1.0, abs=0.2), slope  # a flipped sign would give about −1


def test_hyp3_zip_and_parameter_file(tmp_path, tiny_world):
    src = sorted((tiny_world / "hyp3").iterdir())[0]
    zdir = tmp_path / "zips"
    zdir.mkdir()
    with zipfile.ZipFile(zdir / f"{src.name}.zip", "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"{src.name}/{f.name}")
    (product,) = find_hyp3_products(zdir)
    assert product.layers["unw_phase"].startswith("/vsizip/")
    assert read_hyp3_layer(product, "corr").shape == read_hyp3_layer(
        find_hyp3_products(tiny_world / "hyp3")[0], "corr").shape
    params = product.parameters
    assert params["Reference Pass Direction"] == "DESCENDING"
    assert params["Unwrapping type"] == "mcf"
    assert float(params["Y coordinate of the reference point in the map projection"]) > 4e6


def test_hyp3_bad_inputs_are_named(tmp_path):
    (tmp_path / "S1AA_2020_bad").mkdir()
    with pytest.raises(InputError, match="at least one HyP3"):
        find_hyp3_products(tmp_path)
    product = _hyp3_product(tmp_path / "p", np.ones((3, 3)))
    (product / f"{product.name}.txt").unlink()
    with pytest.raises(InputError, match=r"\.txt: expected the HyP3 parameter file"):
        find_hyp3_products(tmp_path / "p")
    with pytest.raises(InputError, match="line 2: expected 'Key: value'"):
        parse_parameter_file("Reference Granule: a\nno colon here\n", Path("x.txt"))
    with pytest.raises(InputError, match="Secondary Granule"):
        parse_parameter_file("Reference Granule: a\n", Path("x.txt"))


# --- Sparse-sensor pairs -------------------------------------------------------------------


def test_pairs_round_trip_against_truth(tiny_world):
    found = find_pairs(tiny_world / "pairs")
    assert len(found) == 13  # Table S1
    truth = pd.read_csv(tiny_world / "truth" / "sparse_pairs.csv")
    by_file = truth.set_index("file")
    lowland = None
    for path, meta in found:
        ds = read_pair(path, meta)
        los = to_los_mm(ds["value"], meta.quantity, meta.units, meta.sign_convention,
                        meta.wavelength_m)
        if meta.sensor != "ALOS-2" or meta.span_days < 300:
            continue
        # Annual ALOS-2 pairs: valley floor subsides relative to the scene's stable margins.
        row = by_file.loc[path.name]
        if lowland is None:
            lowland = row["lowland_los_mm_mean"]
        centre = los.isel(y=slice(los.sizes["y"] // 2 - 3, los.sizes["y"] // 2 + 3)).median()
        edge = los.isel(y=slice(0, 5)).median()
        assert float(centre - edge) < 0  # subsidence is negative (away from the satellite)
    assert lowland is not None and lowland < 0
    assert found[0][1].direction in ("ascending", "descending")


def test_pair_sidecar_errors_name_the_field(tmp_path, tiny_world):
    src = sorted((tiny_world / "pairs").glob("*.tif"))[0]
    shutil.copy(src, tmp_path / src.name)
    meta = json.loads(src.with_suffix(".json").read_text())
    meta.pop("wavelength_m")
    (tmp_path / src.with_suffix(".json").name).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="wavelength_m"):
        find_pairs(tmp_path)
    meta["wavelength_m"] = 0.2419
    meta["sign_convention"] = "up"
    (tmp_path / src.with_suffix(".json").name).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="sign_convention"):
        find_pairs(tmp_path)


# --- GACOS, DEM, ground ice, MODIS -----------------------------------------------------------


def test_gacos_round_trip(tiny_world):
    files = find_gacos(tiny_world / "gacos")
    assert len(files) > 10
    ztd = read_gacos(next(iter(files.values())))
    assert ztd.attrs["units"] == "m"
    assert 1.0 < float(ztd.mean()) < 2.0  # zenith delay at ~4 km altitude
    world = json.loads((tiny_world / "world.json").read_text())
    west, south, east, north = world["lonlat_box"]  # the scene plus a 0.01° margin
    left, bottom, right, top = ztd.rio.bounds()
    assert left <= west + 1e-9 and right >= east - 1e-9
    assert bottom <= south + 1e-9 and top >= north - 1e-9
    assert ztd.rio.crs.to_epsg() == 4326


def test_gacos_size_mismatch_is_refused(tmp_path, tiny_world):
    src = next(iter(find_gacos(tiny_world / "gacos").values()))
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes()[:-8])
    shutil.copy(str(src) + ".rsc", str(dst) + ".rsc")
    with pytest.raises(InputError, match="4 × WIDTH × FILE_LENGTH"):
        read_gacos(dst)


def test_dem_and_ground_ice(tiny_world):
    dem = read_raster(tiny_world / "dem" / "glo30.tif", "m")
    assert dem.rio.crs.to_epsg() == 4326
    assert 3700 < float(dem.min()) and float(dem.max()) < 4600
    assert dem.rio.resolution()[0] == pytest.approx(1 / 3600)
    ice = read_raster(tiny_world / "ground_ice.tif", "1")
    assert 0 <= float(ice.min()) and float(ice.max()) <= 0.7


def test_modis_stacks_are_scaled(tiny_world):
    ndvi = read_modis_stack(next((tiny_world / "modis").glob("MOD13Q1_NDVI_*.tif")))
    albedo = read_modis_stack(next((tiny_world / "modis").glob("MCD43A3_*.tif")))
    lst = read_modis_stack(next((tiny_world / "modis").glob("MOD11A1_*.tif")))
    assert -0.2 <= float(ndvi.min()) and float(ndvi.max()) <= 1.0
    assert 0 <= float(albedo.min()) and float(albedo.max()) <= 1.0
    assert -40 < float(lst.min()) and float(lst.max()) < 50  # °C
    assert lst.isnull().any()  # cloud gaps (fill value 0) are missing, not 0 K
    assert pd.Timestamp(lst.time.values[0]).month == 5


# --- ERA5-Land, station and discharge tables ---------------------------------------------------


def test_era5_monthly_matches_the_worlds_climate(tiny_world):
    era5 = read_era5_land(tiny_world / "era5land_monthly.nc")
    truth = pd.read_csv(tiny_world / "truth" / "annual_predictors.csv", index_col="year")
    mean = era5.mean(("latitude", "longitude"))
    thaw = mean.where(mean.time.dt.month.isin([5, 6, 7, 8, 9, 10]), drop=True)
    precip = thaw["precipitation"].groupby("time.year").sum().to_pandas()
    ratio = precip / truth["precipitation"].loc[precip.index]
    assert ratio.between(0.9, 1.1).all()
    annual_t = mean["air_temperature"].groupby("time.year").mean().to_pandas()
    assert (annual_t - truth["air_temperature"].loc[annual_t.index]).abs().max() < 1.5
    assert (mean["evapotranspiration"] >= 0).all()  # e is negative in ERA5: flipped to positive


def test_era5_folder_of_monthly_files_reads_like_one_file(tiny_world, tmp_path):
    """A folder of per-period files (as the CDS ingest writes) keeps every month, not the first's."""
    whole = xr.open_dataset(tiny_world / "era5land_monthly.nc").load()
    time = next(n for n in ("valid_time", "time", "date") if n in whole.dims)
    half = whole.sizes[time] // 2
    whole.isel({time: slice(None, half)}).to_netcdf(tmp_path / "a.nc")
    whole.isel({time: slice(half, None)}).to_netcdf(tmp_path / "b.nc")
    from_folder = read_era5_land(tmp_path)
    from_file = read_era5_land(tiny_world / "era5land_monthly.nc")
    xr.testing.assert_allclose(from_folder, from_file)


def test_station_temperature_round_trip(tiny_world):
    t = read_station_temperature(tiny_world / "station_tmean.csv")
    raw = pd.read_csv(tiny_world / "station_tmean.csv", parse_dates=["date"]).set_index("date")
    assert t.index.freq is None or t.index.freqstr == "D"
    assert np.allclose(t.loc[raw.index].to_numpy(), raw["t_mean_c"].to_numpy())


def test_discharge_round_trip(tiny_world):
    rec = read_discharge(tiny_world / "discharge.csv", basin_area_km2=4576.0)
    raw = pd.read_csv(tiny_world / "discharge.csv", parse_dates=["date"]).set_index("date")
    q = rec.flow("m3/s")
    assert np.allclose(q.loc[raw.index].to_numpy(), raw["discharge_m3s"].to_numpy())
    # A full calendar: winter days exist and are missing, never interpolated.
    assert pd.Timestamp("1995-01-15") in q.index and np.isnan(q.loc["1995-01-15"])
    assert rec.counts["calendar_days_added"] > 0
    mmd = rec.flow("mm/d")
    assert mmd.iloc[0] == pytest.approx(q.iloc[0] * 86400 / 4576e6 * 1000)


def test_discharge_bad_rows_are_named(tmp_path):
    bad_date = tmp_path / "bad_date.csv"
    bad_date.write_text("date,discharge_m3s\n2001-05-01,3.2\n2001-05-0x,3.1\n")
    with pytest.raises(InputError, match=r"row 3, column \['date'\]: expected a date"):
        read_discharge(bad_date)
    negative = tmp_path / "negative.csv"
    negative.write_text("date,discharge_m3s\n2001-05-01,3.2\n2001-05-02,-3.1\n")
    with pytest.raises(InputError, match=r"row 3, column 'discharge_m3s': expected a flow >= 0"):
        read_discharge(negative)
    with pytest.raises(InputError, match="column 'flow'"):
        read_discharge(negative, flow_column="flow")


def test_staged_coherence_codes_are_what_xarray_writes():
    """Staging encodes coherence itself; the codes must be those of xarray's CF encoding."""
    from xarray.conventions import encode_cf_variable

    from talik.tasks.stage import coherence_codes

    rng = np.random.default_rng(3)
    values = rng.random((4, 50, 60)).astype(np.float32)
    values[0, 0, :8] = [0.0, 1.0, 0.002, 0.006, 0.998, np.nan, 0.5, 0.7]  # ties, ends, NaN
    values[rng.random(values.shape) < 0.1] = np.nan
    encoding = {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": 255}
    expected = encode_cf_variable(xr.Variable(("pair", "y", "x"), values,
                                              encoding=dict(encoding))).values
    got = coherence_codes(values, encoding)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 5] == 255 and got[0, 0, 1] == 250


def test_layer_grids_from_tiff_tags_equal_gdals(tmp_path):
    """HeaderGrids gives, file by file, exactly the grid GDAL opens (CRS, transform, shape)."""
    import rasterio
    from rasterio.transform import Affine

    from talik.tasks.readers.hyp3 import HeaderGrids, _layer_grid

    data = np.zeros((30, 40), np.float32)
    cases = {
        "first.tif": (from_origin(500000.0, 4200000.0, 80.0, 80.0), "EPSG:32647", data),
        "shifted.tif": (from_origin(501040.0, 4199760.0, 80.0, 80.0), "EPSG:32647", data),
        "smaller.tif": (from_origin(500000.0, 4200000.0, 80.0, 80.0), "EPSG:32647", data[:20]),
        "other_zone.tif": (from_origin(500000.0, 4200000.0, 80.0, 80.0), "EPSG:32648", data),
        "other_pixel.tif": (from_origin(500000.0, 4200000.0, 40.0, 40.0), "EPSG:32647", data),
        "rotated.tif": (Affine(80.0, 5.0, 500000.0, 5.0, -80.0, 4200000.0), "EPSG:32647", data),
        "no_crs.tif": (from_origin(500000.0, 4200000.0, 80.0, 80.0), None, data),
    }
    for name, (transform, crs, values) in cases.items():
        with rasterio.open(tmp_path / name, "w", driver="GTiff", height=values.shape[0],
                           width=values.shape[1], count=1, dtype="float32", crs=crs,
                           transform=transform) as dst:
            dst.write(values, 1)
    # Files of another kind than GDAL's default: pixel-is-point, big-endian, with overviews.
    extra = {"point.tif": {"AREA_OR_POINT": "Point"}, "big_endian.tif": {}, "overviews.tif": {}}
    for name, tags in extra.items():
        shifted, crs, values = cases["shifted.tif"]
        options = {"ENDIANNESS": "BIG"} if name == "big_endian.tif" else {}
        with rasterio.open(tmp_path / name, "w", driver="GTiff", height=values.shape[0],
                           width=values.shape[1], count=1, dtype="float32", crs=crs,
                           transform=shifted, **options) as dst:
            dst.update_tags(**tags)
            dst.write(values, 1)
            if name == "overviews.tif":
                dst.build_overviews([2])
    # GDAL metadata beside a file (PAM) overrides its tags: such a file is opened by GDAL.
    shutil.copy(tmp_path / "shifted.tif", tmp_path / "with_aux.tif")
    wkt = rasterio.crs.CRS.from_epsg(32646).to_wkt()
    (tmp_path / "with_aux.tif.aux.xml").write_text(
        f'<PAMDataset><SRS dataAxisToSRSAxisMapping="1,2">{wkt}</SRS></PAMDataset>')
    grids = HeaderGrids()
    for name in ["first.tif", *(n for n in cases if n not in ("first.tif", "no_crs.tif")),
                 "with_aux.tif", *extra]:
        path = str(tmp_path / name)
        fast, gdal = grids(path), _layer_grid(path)
        assert fast.crs == gdal.crs, name
        assert tuple(fast.transform) == tuple(gdal.transform), name
        assert (fast.height, fast.width) == (gdal.height, gdal.width), name
    assert grids(str(tmp_path / "other_zone.tif")).crs.to_epsg() == 32648
    assert grids(str(tmp_path / "with_aux.tif")).crs.to_epsg() == 32646
    with pytest.raises(InputError, match="no CRS"):
        grids(str(tmp_path / "no_crs.tif"))
