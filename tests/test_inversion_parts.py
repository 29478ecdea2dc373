"""An inversion stored in parts (forward updates) reads back as the whole series."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from talik.errors import MissingStepOutputError
from talik.tasks.inversion_parts import EXTENDS_ATTR, open_inversion, write_inversion_part
from talik.tasks.zarr_io import write_zarr


def _series(dates: np.ndarray, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (dates.size, 6, 5)
    return xr.Dataset(
        {"displacement": (("time", "y", "x"), rng.normal(size=shape).astype(np.float32),
                          {"units": "mm"}),
         "bridged": (("time", "y", "x"), rng.integers(0, 2, shape).astype(np.uint8)),
         "residual_rms": (("y", "x"), rng.random(shape[1:]).astype(np.float32))},
        coords={"time": dates.astype("datetime64[ns]"), "y": np.arange(6.0), "x": np.arange(5.0)})


def _dates(first: str, n: int) -> np.ndarray:
    return np.datetime64(first, "D") + 12 * np.arange(n)


def test_parts_join_into_the_whole_series(tmp_path):
    """Two forward parts on a whole series: every date and layer as the joined series says,
    the earlier dates NaN exactly where a later part did not solve, and each part stores only
    its own dates."""
    root = tmp_path / "steps"
    whole = _series(_dates("2020-01-01", 10), 0)
    write_zarr(whole, root / "a" / "inversion.zarr")
    expected = whole
    folder = root / "a"
    for name, first, n, seed in (("b", "2020-05-29", 3, 1), ("c", "2020-07-04", 2, 2)):
        new = _series(_dates(first, n), seed)
        solved = xr.DataArray(np.random.default_rng(seed).random((6, 5)) > 0.3, dims=("y", "x"),
                              coords={"y": new["y"], "x": new["x"]})
        expected = xr.Dataset({
            "displacement": xr.concat([expected["displacement"].where(solved),
                                       new["displacement"]], "time"),
            "bridged": xr.concat([expected["bridged"], new["bridged"]], "time"),
            "residual_rms": new["residual_rms"]})
        joined = expected.chunk({"y": 3, "x": 5})
        write_inversion_part(joined, n, solved, folder, root / name)
        with xr.open_zarr(root / name / "inversion.zarr") as part:
            assert part.sizes["time"] == n
            assert json.loads(part.attrs[EXTENDS_ATTR])["folder"] == f"../{folder.name}"
        folder = root / name
        got = open_inversion(folder)
        assert got["displacement"].chunks[0] == (expected.sizes["time"],)  # one time chunk
        for var in ("displacement", "bridged", "residual_rms"):
            np.testing.assert_array_equal(got[var].values, expected[var].values, err_msg=var)
        np.testing.assert_array_equal(got["time"].values, expected["time"].values)
    assert open_inversion(root / "c").sizes["time"] == 15
    assert np.isnan(open_inversion(root / "c")["displacement"].values).any()


def test_a_part_whose_earlier_series_is_gone_or_changed_is_refused(tmp_path):
    root = tmp_path / "steps"
    write_zarr(_series(_dates("2020-01-01", 4), 0), root / "a" / "inversion.zarr")
    new = _series(_dates("2020-01-01", 5), 1).chunk({"y": 6})
    solved = xr.ones_like(new["residual_rms"], dtype=bool)
    write_inversion_part(new, 1, solved, root / "a", root / "b")
    assert open_inversion(root / "b").sizes["time"] == 5
    # The earlier series gone, then replaced by a longer one: the pointer no longer matches.
    shutil.rmtree(root / "a")
    with pytest.raises(MissingStepOutputError, match=r"b/inversion.zarr extends .*gone"):
        open_inversion(root / "b")
    write_zarr(_series(_dates("2020-01-01", 5), 0), root / "a" / "inversion.zarr")
    with pytest.raises(MissingStepOutputError,
                       match=r"extends 4 dates up to 2020-02-06 .* now holds 5 up to 2020-02-18"):
        open_inversion(root / "b")
