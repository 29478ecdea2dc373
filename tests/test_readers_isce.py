"""HyP3 ISCE2 products (INSAR_ISCE_BURST, INSAR_ISCE_MULTI_BURST): names, granules, conncomp.

The products are small synthetic ones written here: GeoTIFFs with the layer names, data types
and no-data of hyp3-isce2 (Float32 with no-data 0; conncomp as unsigned bytes, as the product
guide says, or Float32, as the packaging code writes it) and a parameter file in HyP3's
``Key: value`` format with ``", "``-separated burst granules.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import Affine, from_origin

from talik.config import AreaOfInterest
from talik.errors import InputError
from talik.tasks.readers.hyp3 import find_hyp3_products
from talik.tasks.stage import grid_from_products, write_sentinel1_store
from talik.world.sentinel1 import S1_WAVELENGTH_M
from tests.conftest import gamma_parameter_text

CRS = "EPSG:32647"
SHAPE = (6, 8)
ORIGIN = (500000.0, 4200000.0)
BURST = "S1_136231_IW2_20240101_20240113_VV_INT80_ABCD"
MULTI = "S1_064_136231s1n02-136232s2n01-000000s3n00_IW_20240101_20240113_VV_INT80_7EB5"
LEGACY = "S1A_064_E053_1_N27_3_E054_1_N27_8_20200604_20200616_VV_INT80_7EB5"
GAMMA = "S1AA_20240101T232410_20240113T232410_VVP012_INT80_G_ueF_1A2B"


def _transform(shift_px: tuple[float, float] = (0, 0), pixel: float = 80.0) -> Affine:
    return from_origin(ORIGIN[0] + shift_px[0] * pixel, ORIGIN[1] - shift_px[1] * pixel, pixel, pixel)


def _tif(path: Path, data: np.ndarray, transform: Affine, nodata: float | None = 0) -> None:
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                       dtype=data.dtype.name, crs=CRS, transform=transform, nodata=nodata) as dst:
        dst.write(data, 1)


def _burst(burst_id: str, swath: int, day: dt.date, pol: str = "VV", hexid: str = "7C85") -> str:
    return f"S1_{burst_id}_IW{swath}_{day:%Y%m%d}T022312_{pol}_{hexid}-BURST"


def _txt(reference: list[str], secondary: list[str], baseline: float = 58.4) -> str:
    """An ISCE2 parameter file: the keys hyp3-isce2 writes, granules joined by ', '."""
    lines = [
        ("Reference Granule", ", ".join(reference)),
        ("Secondary Granule", ", ".join(secondary)),
        ("Reference Pass Direction", "ASCENDING"),
        ("Reference Orbit Number", "30741"),
        ("Secondary Pass Direction", "ASCENDING"),
        ("Secondary Orbit Number", "31091"),
        ("Baseline", baseline),
        ("UTC time", "12360.691361"),
        ("Heading", "-12.29"),
        ("Spacecraft height", "693000.0"),
        ("Earth radius at nadir", "6337286.638938101"),
        ("Slant range near", "799517.4338"),
        ("Slant range center", "879794.1404"),
        ("Slant range far", "960070.8469"),
        ("Range looks", 20),
        ("Azimuth looks", 4),
        ("INSAR phase filter", "yes"),
        ("Phase filter parameter", 0.5),
        ("Range bandpass filter", "no"),
        ("Azimuth bandpass filter", "no"),
        ("DEM source", "GLO_30"),
        ("DEM resolution (m)", 30),
        ("Unwrapping type", "snaphu_mcf"),
        ("Speckle filter", "yes"),
        ("Water mask", "no"),
    ]
    return "".join(f"{k}: {v}\n" for k, v in lines)


def _dates(name: str) -> tuple[dt.date, dt.date]:
    days = [p for p in name.split("_") if len(p) == 8 and p.isdigit()]
    return dt.datetime.strptime(days[0], "%Y%m%d").date(), dt.datetime.strptime(days[1], "%Y%m%d").date()


def _default_granules(name: str) -> tuple[list[str], list[str]]:
    ref, sec = _dates(name)
    if name.startswith("S1_") and "s1n" in name:
        ids = [("136231", 1), ("136232", 1), ("136231", 2)]
    elif name.startswith("S1_"):
        ids = [(name.split("_")[1], int(name.split("_")[2][2]))]
    else:
        ids = [("136231", 2), ("136232", 2)]
    return [_burst(b, s, ref) for b, s in ids], [_burst(b, s, sec, hexid="5D11") for b, s in ids]


def _isce(folder: Path, name: str, los_mm: np.ndarray | None = None,
          conncomp: np.ndarray | None = None, conncomp_dtype: str = "uint8",
          transform: Affine | None = None, look_vectors: bool = True, water_mask: bool = False,
          txt: str | None = None) -> Path:
    """An ISCE2 product folder; ``los_mm`` positive toward the satellite, 0 → no-data phase."""
    product = folder / name
    product.mkdir(parents=True)
    t = transform or _transform()
    los = np.full(SHAPE, 5.0) if los_mm is None else los_mm
    phase = (-4 * np.pi / S1_WAVELENGTH_M * los / 1000.0).astype(np.float32)  # positive = away
    _tif(product / f"{name}_unw_phase.tif", phase, t)
    _tif(product / f"{name}_corr.tif", np.full(SHAPE, 0.8, np.float32), t)
    _tif(product / f"{name}_wrapped_phase.tif", np.angle(np.exp(1j * phase)).astype(np.float32), t)
    cc = np.ones(SHAPE) if conncomp is None else conncomp
    _tif(product / f"{name}_conncomp.tif", cc.astype(conncomp_dtype), t)
    _tif(product / f"{name}_dem.tif", np.full(SHAPE, 4300.0, np.float32), t)
    if look_vectors:
        _tif(product / f"{name}_lv_theta.tif", np.full(SHAPE, np.radians(51.0), np.float32), t)
        _tif(product / f"{name}_lv_phi.tif", np.full(SHAPE, np.radians(-170.0), np.float32), t)
    if water_mask:
        _tif(product / f"{name}_water_mask.tif", np.ones(SHAPE, np.uint8), t)
    if txt is None:
        txt = _txt(*_default_granules(name))
    (product / f"{name}.txt").write_text(txt)
    return product


def _gamma(folder: Path, name: str = GAMMA, transform: Affine | None = None) -> Path:
    product = folder / name
    product.mkdir(parents=True)
    t = transform or _transform()
    _tif(product / f"{name}_unw_phase.tif", np.full(SHAPE, -1.0, np.float32), t)
    _tif(product / f"{name}_corr.tif", np.full(SHAPE, 0.7, np.float32), t)
    _tif(product / f"{name}_lv_theta.tif", np.full(SHAPE, np.radians(51.0), np.float32), t)
    (product / f"{name}.txt").write_text(gamma_parameter_text(name))
    return product


# --- names, dates, granules, kinds ------------------------------------------------------------


def test_burst_and_multi_burst_products_parse(tmp_path):
    _isce(tmp_path / "burst", BURST, water_mask=True)
    (burst,) = find_hyp3_products(tmp_path / "burst")
    assert burst.kind == "INSAR_ISCE_BURST"
    assert (burst.reference_date, burst.secondary_date) == (dt.date(2024, 1, 1), dt.date(2024, 1, 13))
    assert burst.span_days == 12 and burst.pixel_m == 80.0
    assert burst.reference_granules == ("S1_136231_IW2_20240101T022312_VV_7C85-BURST",)
    assert burst.secondary_granules == ("S1_136231_IW2_20240113T022312_VV_5D11-BURST",)
    assert {"unw_phase", "corr", "conncomp", "wrapped_phase", "lv_theta", "lv_phi", "dem",
            "water_mask"} == set(burst.layers)
    assert burst.parameters["Baseline"] == "58.4"

    multi = tmp_path / "multi"
    _isce(multi, MULTI, look_vectors=False)  # water mask and look vectors absent
    _isce(multi, LEGACY)
    old, new = find_hyp3_products(multi)  # sorted by date: the 2020 pair first
    assert new.name == MULTI and old.name == LEGACY
    assert {new.kind, old.kind} == {"INSAR_ISCE_MULTI_BURST"}
    assert (new.reference_date, new.secondary_date) == (dt.date(2024, 1, 1), dt.date(2024, 1, 13))
    assert (old.reference_date, old.secondary_date) == (dt.date(2020, 6, 4), dt.date(2020, 6, 16))
    assert new.reference_granules == ("S1_136231_IW1_20240101T022312_VV_7C85-BURST",
                                      "S1_136232_IW1_20240101T022312_VV_7C85-BURST",
                                      "S1_136231_IW2_20240101T022312_VV_7C85-BURST")
    assert len(new.secondary_granules) == 3 and len(old.reference_granules) == 2
    assert "conncomp" in new.layers
    assert not {"water_mask", "lv_theta", "lv_phi"} & set(new.layers)


def test_isce_zip_is_read(tmp_path):
    src = _isce(tmp_path / "src", BURST)
    out = tmp_path / "zips"
    out.mkdir()
    with zipfile.ZipFile(out / f"{BURST}.zip", "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"{BURST}/{f.name}")
    (product,) = find_hyp3_products(out)
    assert product.kind == "INSAR_ISCE_BURST"
    assert product.layers["conncomp"].startswith("/vsizip/")
    assert len(product.reference_granules) == 1


# --- staging: connected component 0 is masked -------------------------------------------------


def _stack(folder: Path) -> dict[str, np.ndarray]:
    """Four burst products over four dates; returns each product's conncomp."""
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=12 * k) for k in range(4)]
    pairs = [(0, 1), (1, 2), (2, 3), (0, 2)]
    rng = np.random.default_rng(3)
    conncomps = {}
    for k, (i, j) in enumerate(pairs):
        name = f"S1_136231_IW2_{days[i]:%Y%m%d}_{days[j]:%Y%m%d}_VV_INT80_{k:04X}"
        cc = rng.integers(1, 3, SHAPE)
        if k == 0:
            cc[0, :3] = 0  # not unwrapped
            cc[4, 5] = 0
        if k == 3:
            cc[:, :] = 0  # nothing unwrapped: the product must be dropped
        los = np.full(SHAPE, 4.0)
        los[2, 2] = 0.0  # phase exactly 0: HyP3 no-data (already NaN, not counted as masked)
        cc[2, 2] = 0
        _isce(folder, name, los_mm=los, conncomp=cc,
              conncomp_dtype="float32" if k == 1 else "uint8")
        conncomps[name] = cc
    return conncomps


def test_conncomp_zero_is_masked_in_staging(tmp_path, caplog):
    conncomps = _stack(tmp_path / "hyp3")
    products = find_hyp3_products(tmp_path / "hyp3")
    grid = grid_from_products(products, AreaOfInterest(name="isce"))
    with caplog.at_level(logging.INFO, logger="talik"):
        summary = write_sentinel1_store(products, grid, S1_WAVELENGTH_M, tmp_path / "s1.zarr")
    empty = [n for n, cc in conncomps.items() if not cc.any()]
    assert [d["product"] for d in summary["dropped_products"]] == empty
    assert "connected component 0" in summary["dropped_products"][0]["reason"]
    kept = {n: cc for n, cc in conncomps.items() if n not in empty}
    expected = {n: int((cc == 0).sum()) - 1 for n, cc in kept.items()}  # minus the no-data pixel
    assert summary["conncomp_masked_px"] == sum(expected.values())
    assert summary["n_products_with_conncomp"] == 3
    assert "masked" in caplog.text and "connected component 0" in caplog.text
    with xr.open_zarr(tmp_path / "s1.zarr") as ds:
        assert list(ds["product"].values) == list(kept)
        assert ds.attrs["source"] == "ASF HyP3 INSAR_ISCE_BURST"
        assert json.loads(ds.attrs["conncomp_masked"]) == expected
        los = ds["los_mm"].values
    for k, cc in enumerate(kept.values()):
        assert np.isnan(los[k][cc == 0]).all()
        np.testing.assert_allclose(los[k][cc > 0], 4.0, atol=1e-4)  # sign and scale kept


# --- mixed kinds ------------------------------------------------------------------------------


def test_mixed_gamma_and_isce_on_different_grids_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    _gamma(folder)
    _isce(folder, "S1_136231_IW2_20240113_20240125_VV_INT80_ABCD",
          transform=_transform((0.5, 0)))  # half a pixel off the GAMMA lattice
    with pytest.raises(InputError) as err:
        find_hyp3_products(folder)
    message = str(err.value)
    assert str(folder) in message and "product kinds" in message
    assert "INSAR_GAMMA (1), INSAR_ISCE_BURST (1)" in message
    assert "S1_136231_IW2_20240113_20240125_VV_INT80_ABCD (INSAR_ISCE_BURST)" in message

    other = tmp_path / "mixed_pixel"
    _gamma(other)
    _isce(other, MULTI, transform=_transform(pixel=40.0))
    with pytest.raises(InputError, match=r"INSAR_GAMMA \(1\), INSAR_ISCE_MULTI_BURST \(1\)"):
        find_hyp3_products(other)


def test_mixed_kinds_on_one_grid_are_accepted_and_stated(tmp_path, caplog):
    folder = tmp_path / "mixed"
    _gamma(folder)
    _gamma(folder, "S1AA_20240113T232410_20240125T232410_VVP012_INT80_G_ueF_2B3C")
    cc = np.ones(SHAPE)
    cc[1, 0] = 0  # grid pixel (0, 0): see below
    _isce(folder, "S1_136231_IW2_20240101_20240125_VV_INT80_ABCD", conncomp=cc,
          transform=_transform((2, -1)))  # whole pixels away: the same lattice
    with caplog.at_level(logging.INFO, logger="talik"):
        products = find_hyp3_products(folder)
    assert [p.kind for p in products] == ["INSAR_GAMMA", "INSAR_ISCE_BURST", "INSAR_GAMMA"]
    assert "INSAR_GAMMA (2), INSAR_ISCE_BURST (1)" in caplog.text and "accepted" in caplog.text
    grid = grid_from_products(products, AreaOfInterest(name="mixed"))
    summary = write_sentinel1_store(products, grid, S1_WAVELENGTH_M, tmp_path / "s1.zarr")
    assert summary["n_pairs"] == 3 and summary["n_products_with_conncomp"] == 1
    with xr.open_zarr(tmp_path / "s1.zarr") as ds:
        assert ds.attrs["source"] == "ASF HyP3 INSAR_GAMMA, INSAR_ISCE_BURST"
        los = ds["los_mm"].values
    # The ISCE product starts 2 px east and 1 px north of the GAMMA ones: the common grid starts
    # at its column 0, row 1, on the products' shared lattice.
    assert grid.transform[2] == ORIGIN[0] + 2 * 80 and grid.transform[5] == ORIGIN[1]
    assert summary["conncomp_masked_px"] == 1
    assert np.isnan(los[1, 0, 0]) and np.isfinite(los[1, 0, 1]) and np.isfinite(los[0, 0, 0])


# --- malformed names and parameter files ------------------------------------------------------


@pytest.mark.parametrize("name, fragment", [
    ("S1_136231_IW4_20240101_20240113_VV_INT80_ABCD", "product name"),  # no sub-swath 4
    ("S1_13623_IW2_20240101_20240113_VV_INT80_ABCD", "product name"),  # 5-digit burst id
    ("S1_064_136231s1n02-136232s2n01_IW_20240101_20240113_VV_INT80_7EB5", "product name"),
    ("S1_136231_IW2_20241301_20240113_VV_INT80_ABCD", "product name (reference date)"),
    ("S1_136231_IW2_20240113_20240101_VV_INT80_ABCD", "the secondary date after"),
])
def test_a_malformed_isce_name_is_refused_by_name(tmp_path, name, fragment):
    granules = _default_granules(BURST)
    product = _isce(tmp_path, name, txt=_txt(*granules))
    with pytest.raises(InputError) as err:
        find_hyp3_products(tmp_path)
    message = str(err.value)
    assert str(product) in message and fragment in message and name in message


def _granule_case(case: str) -> tuple[str, str]:
    ref = _burst("136231", 2, dt.date(2024, 1, 1))
    sec = _burst("136231", 2, dt.date(2024, 1, 13), hexid="5D11")
    cases = {
        "bad granule": (_txt(["S1_136231_IW2_2024-01-01_VV_7C85"], [sec]), "Reference Granule"),
        "two bursts": (_txt([ref, _burst("136232", 2, dt.date(2024, 1, 1))], [sec, sec]),
                       "Reference Granule"),
        "other burst": (_txt([ref], [_burst("136299", 2, dt.date(2024, 1, 13))]), "Secondary Granule"),
        "other date": (_txt([ref], [_burst("136231", 2, dt.date(2024, 1, 25))]), "Secondary Granule"),
        "other polarisation": (_txt([_burst("136231", 2, dt.date(2024, 1, 1), pol="HH")], [sec]),
                               "Reference Granule"),
        "empty": (_txt([], [sec]), "Reference Granule"),
        "missing key": ("Reference Granule: " + ref + "\nBaseline: 3\n", "Secondary Granule"),
    }
    return cases[case]


@pytest.mark.parametrize("case", ["bad granule", "two bursts", "other burst", "other date",
                                  "other polarisation", "empty", "missing key"])
def test_a_malformed_burst_parameter_file_is_refused_naming_file_and_field(tmp_path, case):
    txt, field = _granule_case(case)
    _isce(tmp_path, BURST, txt=txt)
    with pytest.raises(InputError) as err:
        find_hyp3_products(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / BURST / (BURST + '.txt')}: {field}")


def test_a_multi_burst_parameter_file_must_list_the_bursts_its_name_counts(tmp_path):
    ref, sec = _default_granules(MULTI)
    _isce(tmp_path, MULTI, txt=_txt(ref[:2], sec[:2]))  # the name counts 2 + 1 bursts
    with pytest.raises(InputError, match=r"\.txt: Reference Granule: expected the 3 bursts"):
        find_hyp3_products(tmp_path)
    uneven = tmp_path / "uneven"
    _isce(uneven, MULTI, txt=_txt(ref, sec[:2]))
    with pytest.raises(InputError, match=r"Secondary Granule: expected as many secondary"):
        find_hyp3_products(uneven)
