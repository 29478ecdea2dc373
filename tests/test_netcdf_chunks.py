"""The NetCDF product's cubes, written chunk by chunk on every core, read back as written."""

from __future__ import annotations

import warnings

import netCDF4
import numpy as np
import pytest
import xarray as xr

from talik.tasks.netcdf_chunks import write_cubes


def _cube(dtype, shape=(37, 45, 51)) -> xr.Dataset:
    rng = np.random.default_rng(3)
    values = (rng.normal(0, 30, shape) if dtype == np.float32
              else rng.integers(0, 2, shape)).astype(dtype)
    if dtype == np.float32:
        values[rng.random(shape) < 0.2] = np.nan
        values[:, :5, :7] = np.nan  # a whole corner missing
    return xr.Dataset({"cube": (("time", "y", "x"), values, {"units": "mm", "long_name": "c"})},
                      coords={"time": np.arange(shape[0]), "y": np.arange(shape[1]) * 80.0,
                              "x": np.arange(shape[2]) * 80.0})


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("dask_chunks", [None, {"time": -1, "y": 16, "x": 32},
                                         {"time": 10, "y": 20, "x": 51}])
def test_cubes_written_by_chunks_read_back_identical(tmp_path, dtype, dask_chunks):
    """Edge chunks on every side, NaNs, dask blocks that do and do not tile the NetCDF chunks
    (then regrouped): every value, the fill value and the filters are what netCDF4 itself
    writes, and the netCDF library (not only xarray) reads them."""
    ds = _cube(dtype)
    if dask_chunks:
        ds = ds.chunk(dask_chunks)
    chunks = (8, 16, 32)
    reference = tmp_path / "library.nc"
    ds.to_netcdf(reference, engine="netcdf4", encoding={"cube": {
        "zlib": True, "complevel": 1, "shuffle": True, "chunksizes": chunks}})
    ours = tmp_path / "chunks.nc"
    ds.drop_vars("cube").to_netcdf(ours, engine="netcdf4")
    variables, _ = xr.conventions.encode_dataset_coordinates(ds)
    encoded, _ = xr.conventions.cf_encoder({"cube": variables["cube"]}, {})
    write_cubes(ours, encoded, {"cube": chunks})

    with netCDF4.Dataset(reference) as a, netCDF4.Dataset(ours) as b:
        va, vb = a["cube"], b["cube"]
        assert vb.chunking() == list(chunks)
        assert vb.filters()["zlib"] and vb.filters()["shuffle"]
        assert vb.dimensions == va.dimensions and vb.dtype == va.dtype
        assert {k: str(va.getncattr(k)) for k in va.ncattrs()} == \
            {k: str(vb.getncattr(k)) for k in vb.ncattrs()}
        va.set_auto_maskandscale(False)
        vb.set_auto_maskandscale(False)
        np.testing.assert_array_equal(vb[:], va[:])
    with xr.open_dataset(reference) as a, xr.open_dataset(ours) as b:
        xr.testing.assert_identical(a, b)


@pytest.mark.parametrize("order", [">", "<", "="])
def test_a_map_in_any_byte_order_is_written_as_its_values(tmp_path, order):
    """A 2-D map whose dtype names its byte order (a GeoTIFF's ``<f4``, a big-endian ``>f8``)
    reads back as the same numbers, declared in this machine's order, without warnings."""
    values = np.random.default_rng(4).normal(0, 5, (45, 51)).astype(f"{order}f8")
    values[3, 4] = np.nan
    ds = xr.Dataset({"map": (("y", "x"), values, {"units": "mm"})},
                    coords={"y": np.arange(45) * 80.0, "x": np.arange(51) * 80.0})
    path = tmp_path / "map.nc"
    ds.drop_vars("map").to_netcdf(path, engine="netcdf4")
    variables, _ = xr.conventions.encode_dataset_coordinates(ds)
    encoded, _ = xr.conventions.cf_encoder({"map": variables["map"]}, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_cubes(path, encoded, {"map": (45, 51)})
    with xr.open_dataset(path) as back:
        np.testing.assert_array_equal(back["map"].values, values.astype(float))
        assert back["map"].dtype == np.float64


def test_a_failed_figure_process_is_reported_and_an_unused_one_is_stopped(tmp_path):
    from talik.tasks.figure_process import FiguresInBackground

    with FiguresInBackground() as drawing:
        with pytest.raises(ValueError, match="no figure set 'maps'"):
            drawing.draw(tmp_path, "maps", xr.Dataset(), None)
        drawing.draw(tmp_path, "results", xr.Dataset(), None)  # no velocity layer
        with pytest.raises(RuntimeError, match="drawing the figures failed"):
            drawing.wait()
    assert not list(tmp_path.glob(".figure_inputs*"))

    # A process that died before the inputs were handed over: the caller goes on (its
    # product is written), and wait() says what happened.
    with FiguresInBackground() as dead:
        dead._proc.kill()
        dead._proc.wait()
        dead.draw(tmp_path, "results", xr.Dataset(), None)  # does not raise
        with pytest.raises(RuntimeError, match="drawing the figures failed"):
            dead.wait()

    with pytest.raises(KeyError), FiguresInBackground() as unused:
        raise KeyError("the chain failed before there was anything to draw")
    assert unused._proc.returncode is not None  # stopped, not left waiting


def test_a_netcdf_loaded_chunk_by_chunk_is_what_xarray_loads(tmp_path):
    """load_netcdf reads the cubes raw on every core and the rest through xarray: the dataset
    is identical to xarray's, a scaled cube included (read through the library)."""
    from talik.tasks.netcdf_chunks import cubes_read_raw, load_netcdf

    ds = _cube(np.float32).chunk({"time": 8, "y": 16, "x": 32})
    ds["flags"] = (_cube(np.uint8)["cube"]).assign_attrs(units="1")
    ds["scaled"] = ds["cube"].assign_attrs(units="mm")
    ds["map"] = ds["cube"].isel(time=0, drop=True)
    path = tmp_path / "p.nc"
    enc = {"zlib": True, "complevel": 1, "shuffle": True}
    ds.to_netcdf(path, engine="netcdf4", encoding={
        "cube": {**enc, "chunksizes": (8, 16, 32)}, "flags": {**enc, "chunksizes": (8, 16, 32)},
        "scaled": {**enc, "dtype": "int16", "scale_factor": 0.01, "_FillValue": -32768}})
    with xr.open_dataset(path) as opened:
        assert cubes_read_raw(opened) == ["cube", "flags"]
        expected = opened.load()
    xr.testing.assert_identical(load_netcdf(path), expected)


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    from talik.tasks.netcdf_chunks import read_variable

    path = tmp_path / "part.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for dim, n in (("time", 20), ("y", 30), ("x", 40)):
            nc.createDimension(dim, n)
        v = nc.createVariable("cube", "f4", ("time", "y", "x"), zlib=True, shuffle=True,
                              chunksizes=(8, 16, 16), fill_value=np.float32(np.nan))
        v[0:8, 0:16, :] = 1.5  # some chunks of the first row of chunks only
    values = read_variable(path, "cube")
    with netCDF4.Dataset(path) as nc:
        nc["cube"].set_auto_maskandscale(False)
        expected = np.asarray(nc["cube"][:])
    np.testing.assert_array_equal(values, expected)
    assert np.isnan(values[8:]).all() and (values[:8, :16] == 1.5).all()


def test_a_corrupt_cube_chunk_is_named_by_the_release_file(tmp_path):
    """A damaged deflate stream in a cube is found by the release check, which names the
    release file (and the variable in the message)."""
    import h5py

    from talik.tasks.validate import _readable

    ds = _cube(np.float32)
    path = tmp_path / "product.nc"
    ds.drop_vars("cube").to_netcdf(path, engine="netcdf4")
    variables, _ = xr.conventions.encode_dataset_coordinates(ds)
    encoded, _ = xr.conventions.cf_encoder({"cube": variables["cube"]}, {})
    write_cubes(path, encoded, {"cube": (8, 16, 32)})
    assert _readable("products/sentinel1.nc", path) is None
    with h5py.File(path, "r") as h5:
        info = h5["cube"].id.get_chunk_info(3)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        f.write(b"\x00" * 64)
    reason = _readable("products/sentinel1.nc", path)
    assert reason is not None and reason.startswith("products/sentinel1.nc cannot be read")
