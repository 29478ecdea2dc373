"""Bad HyP3 products get a clear error, or a stated decision, never a silently different result.

Each test copies a few of the tiny world's HyP3 product folders, damages them the way a real
download or a user's processing can, and stages them (``grid_from_products`` +
``write_sentinel1_store``) or runs ``talik sentinel1``; a refusal must name the file or product
and what was expected, and leave no staged store (nor output NetCDF) behind.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import Affine
from typer.testing import CliRunner

from talik.cli import app
from talik.config import AreaOfInterest
from talik.errors import InputError
from talik.tasks.readers.hyp3 import find_hyp3_products
from talik.tasks.stage import grid_from_products, write_sentinel1_store
from talik.world.sentinel1 import S1_WAVELENGTH_M

N_PRODUCTS = 8  # the first products of the tiny world: 8 interferograms over 5 dates


@pytest.fixture()
def hyp3(tmp_path: Path, tiny_world: Path) -> Path:
    """A folder holding copies of the tiny world's first HyP3 product folders."""
    out = tmp_path / "hyp3"
    out.mkdir()
    for folder in sorted((tiny_world / "hyp3").iterdir())[:N_PRODUCTS]:
        shutil.copytree(folder, out / folder.name)
    return out


def _products(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _layer(product: Path, layer: str) -> Path:
    return product / f"{product.name}_{layer}.tif"


_KEEP = object()


def _rewrite(path: Path, data: np.ndarray | None = None, shift_m: float = 0.0,
             crs: object = _KEEP, nodata: object = _KEEP) -> None:
    """Write ``path`` again with new pixels, an origin moved east, no CRS or other no-data."""
    with rasterio.open(path) as src:
        profile = src.profile
        values = src.read(1)
    values = values if data is None else data
    t = profile["transform"]
    profile.update(dtype=values.dtype.name, height=values.shape[0], width=values.shape[1],
                   transform=Affine(t.a, t.b, t.c + shift_m, t.d, t.e, t.f))
    if crs is not _KEEP:
        profile["crs"] = crs
    if nodata is not _KEEP:
        profile["nodata"] = nodata
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)


def _blank(path: Path, value: float, nodata: object = _KEEP) -> None:
    """Fill a layer with one value (0 = HyP3 no-data, or NaN)."""
    with rasterio.open(path) as src:
        shape = src.shape
    _rewrite(path, np.full(shape, value, np.float32), nodata=nodata)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _stage(folder: Path, out: Path, **kwargs) -> dict:
    products = find_hyp3_products(folder)
    grid = grid_from_products(products, AreaOfInterest(name="bad"))
    return write_sentinel1_store(products, grid, S1_WAVELENGTH_M, out, **kwargs)


def _cli(folder: Path, tmp_path: Path) -> tuple[object, Path, Path]:
    out, work = tmp_path / "out" / "s1.nc", tmp_path / "work"
    res = CliRunner().invoke(app, ["sentinel1", str(folder), "--out", str(out),
                                   "--work", str(work)])
    return res, out, work


# --- 1. coherence on a 0-255 byte scale -----------------------------------------------------


def test_coherence_outside_zero_to_one_is_refused(hyp3, tmp_path):
    product = _products(hyp3)[3]
    corr = _layer(product, "corr")
    with rasterio.open(corr) as src:
        coh = src.read(1)
    byte = np.round(coh * 255).astype(np.uint8)  # a 0–255 scale, 0 still no-data
    _rewrite(corr, byte, nodata=0)
    out = tmp_path / "sentinel1.zarr"
    with pytest.raises(InputError) as err:
        _stage(hyp3, out)
    message = str(err.value)
    assert corr.name in message
    assert "values in [0, 1]" in message
    assert f"to {int(byte.max())}" in message  # the range found (on the analysis grid)
    assert not out.exists()

    # Float rounding just above 1 is accepted, and stored as 1.
    _rewrite(corr, np.where(coh > 0, np.minimum(coh + 0.0004, 1.0004), 0).astype(np.float32),
             nodata=0.0)
    _stage(hyp3, out)
    with xr.open_zarr(out) as ds:
        assert float(ds["coherence"].max()) <= 1.0


# --- 2. layers and products on different grids ----------------------------------------------


def test_layers_off_their_product_grid_are_refused(hyp3, tmp_path):
    product = _products(hyp3)[2]
    _rewrite(_layer(product, "corr"), shift_m=1000.0)  # only the coherence moved
    out = tmp_path / "sentinel1.zarr"
    with pytest.raises(InputError) as err:
        _stage(hyp3, out)
    message = str(err.value)
    assert product.name in message and "layer grids" in message
    assert "corr: " in message and "unw_phase" in message
    assert not out.exists()


def _west_inset_px(folder: Path) -> int:
    """Pixels between the median and the easternmost west edge of the products (80 m pixels)."""
    lefts = []
    for product in _products(folder):
        with rasterio.open(_layer(product, "unw_phase")) as src:
            lefts.append(src.bounds.left)
    return round((max(lefts) - float(np.median(lefts))) / 80.0)


def test_a_shifted_product_is_reported_and_a_far_one_refused(hyp3, tmp_path, caplog):
    shifted = _products(hyp3)[4]
    for tif in shifted.glob("*.tif"):
        _rewrite(tif, shift_m=1000.0)
    expected_west = _west_inset_px(hyp3)
    assert expected_west >= 10

    out = tmp_path / "sentinel1.zarr"
    with caplog.at_level(logging.INFO, logger="talik"):
        summary = _stage(hyp3, out)
    assert shifted.name in caplog.text and f"west {expected_west} px" in caplog.text
    assert summary["grid_shrunk_px"]["west"] == expected_west
    with xr.open_zarr(out) as ds:
        shrunk = {s["product"]: s for s in json.loads(ds.attrs["grid_shrunk_by"])}
        assert shrunk[shifted.name]["west"] == expected_west
        assert ds.sizes["pair"] == N_PRODUCTS

    # 2 km in all: the products would share less than half of the median extent.
    shutil.rmtree(out)
    for tif in shifted.glob("*.tif"):
        _rewrite(tif, shift_m=1000.0)
    with pytest.raises(InputError) as err:
        _stage(hyp3, out)
    message = str(err.value)
    assert f"{shifted.name} (west {_west_inset_px(hyp3)} px" in message
    assert "at least 50% of the median product extent" in message and "(empty)" not in message
    assert not out.exists()


# --- 3. empty interferograms ----------------------------------------------------------------


def test_empty_interferograms_are_dropped_and_reported(hyp3, tmp_path, caplog):
    folders = _products(hyp3)
    reference = tmp_path / "reference.zarr"
    small_batches = {"batch_bytes": 3 * 8 * 24 * 32}  # 3 pairs a batch: drops cross batches
    _stage(hyp3, reference, **small_batches)

    empty = {folders[1].name: "no valid pixel", folders[4].name: "is 0 (HyP3 no-data)",
             folders[5].name: "no valid pixel"}
    _blank(_layer(folders[1], "unw_phase"), 0.0)  # all no-data (nodata = 0)
    _blank(_layer(folders[4], "unw_phase"), 0.0, nodata=None)  # all 0, no no-data tag
    _blank(_layer(folders[5], "unw_phase"), np.nan)

    out = tmp_path / "sentinel1.zarr"
    with caplog.at_level(logging.INFO, logger="talik"):
        summary = _stage(hyp3, out, **small_batches)
    assert summary["n_pairs"] == N_PRODUCTS - 3
    reasons = {d["product"]: d["reason"] for d in summary["dropped_products"]}
    assert set(reasons) == set(empty)
    for name, words in empty.items():
        assert words in reasons[name]
        assert f"dropping {name}" in caplog.text
    with xr.open_zarr(out) as ds, xr.open_zarr(reference) as ref:
        assert {d["product"] for d in json.loads(ds.attrs["dropped_products"])} == set(empty)
        assert ds.sizes["pair"] == N_PRODUCTS - 3
        assert list(ds["pair"].values) == list(range(N_PRODUCTS - 3))
        keep = [i for i, name in enumerate(ref["product"].values) if name not in empty]
        expected = ref.isel(pair=keep)
        assert list(ds["product"].values) == list(expected["product"].values)
        for name in ("reference_date", "secondary_date", "baseline_m"):
            np.testing.assert_array_equal(ds[name].values, expected[name].values)
        for name in ("los_mm", "coherence"):
            np.testing.assert_array_equal(ds[name].values, expected[name].values)


# --- 4. too few interferograms ------------------------------------------------------------


def test_too_small_networks_are_refused(hyp3, tmp_path):
    folders = _products(hyp3)
    for extra in folders[2:]:
        shutil.rmtree(extra)
    res, out, work = _cli(hyp3, tmp_path)
    assert res.exit_code == 2, res.output
    assert "at least 3 usable interferograms over at least 3 dates" in res.output
    assert "got '2 usable interferograms over 3 dates'" in res.output
    assert str(hyp3) in res.output
    assert not out.exists() and not work.exists()  # nothing left behind


def test_too_few_usable_interferograms_after_dropping_are_refused(hyp3, tmp_path):
    folders = _products(hyp3)
    for extra in folders[4:]:
        shutil.rmtree(extra)
    for folder in folders[1:3]:
        _blank(_layer(folder, "unw_phase"), 0.0)
    out = tmp_path / "sentinel1.zarr"
    with pytest.raises(InputError) as err:
        _stage(hyp3, out)
    message = str(err.value)
    assert "at least 3 usable interferograms over at least 3 dates" in message
    assert "2 usable interferograms" in message and "after dropping 2 empty ones" in message
    assert folders[1].name in message and folders[2].name in message
    assert not out.exists()


# --- 5. unreadable rasters ------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["unw_phase", "corr"])
def test_truncated_geotiffs_are_refused_by_name(hyp3, tmp_path, layer):
    tif = _layer(_products(hyp3)[5], layer)
    _truncate(tif)
    res, out, work = _cli(hyp3, tmp_path)
    assert res.exit_code == 2, res.output
    assert tif.name in res.output
    assert "expected a complete, readable GeoTIFF" in res.output
    assert "read band 1 failed" in res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not work.exists()  # nothing left behind


def test_a_first_product_without_crs_is_refused(hyp3, tmp_path):
    first = _products(hyp3)[0]
    for tif in first.glob("*.tif"):
        _rewrite(tif, crs=None)
    out = tmp_path / "sentinel1.zarr"
    with pytest.raises(InputError) as err:
        _stage(hyp3, out)
    message = str(err.value)
    assert _layer(first, "unw_phase").name in message
    assert "CRS" in message and "no CRS" in message
    assert not out.exists()
