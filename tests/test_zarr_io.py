"""Tile-by-tile Zarr writes: same values as a plain write, whatever the dask chunks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from talik.tasks.zarr_io import write_zarr_by_tiles


def test_irregular_chunks_are_written_whole(tmp_path) -> None:
    # Chunks as dask's slicing leaves them after selecting pairs (256 split into 43/42 pieces).
    values = np.random.default_rng(0).normal(size=(3, 100, 90)).astype(np.float32)
    arr = da.from_array(values, chunks=((3,), (43, 42, 15), (43, 43, 4)))
    ds = xr.Dataset({"d": (("time", "y", "x"), arr), "n": (("y", "x"), arr[0] * 2)},
                    coords={"y": np.arange(100.0), "x": np.arange(90.0)})
    write_zarr_by_tiles(ds, tmp_path / "t.zarr", tiles_per_step=2)
    back = xr.open_zarr(tmp_path / "t.zarr").load()
    np.testing.assert_array_equal(back["d"].values, values)
    np.testing.assert_array_equal(back["n"].values, values[0] * 2)
    np.testing.assert_array_equal(back["y"].values, np.arange(100.0))
