"""A time-series step's unfiltered inversion (``inversion.zarr``), whole or in parts.

A whole inversion stores every date. A forward update (:mod:`talik.tasks.sentinel1_forward`)
stores only what it made: the displacement and bridged flags of its new dates, its quality
layers (for every pixel) and ``forward_solved``, the pixels it solved. It points to the
series it extends (another step folder beside it, which a completed step never removes nor
replaces), and :func:`open_inversion` joins the parts back into the whole series: the earlier
dates, set to NaN where this update did not solve, then the new ones. So an update by a month
writes a month, not the whole cube again.

The pointer records the earlier series' length and last date; a part whose earlier series
is missing or no longer matches is refused with the file named, rather than joined wrongly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from talik.errors import MissingStepOutputError
from talik.tasks.zarr_io import write_zarr_by_tiles

__all__ = ["EXTENDS_ATTR", "SOLVED", "open_inversion", "write_inversion_part"]

STORE = "inversion.zarr"
EXTENDS_ATTR = "talik_extends"
"""Attribute of a part: JSON ``{"folder", "n_dates", "last_date"}`` of the series it extends."""
SOLVED = "forward_solved"
"""Layer of a part: 1 where the update solved the pixel (elsewhere every date is NaN)."""
SERIES = ("displacement", "bridged")
"""The variables along ``time``; a part holds only its own dates of them."""


def open_inversion(folder: str | Path) -> xr.Dataset:
    """The whole unfiltered series of a time-series step folder, lazily (dask), parts joined.

    ``time`` is one chunk when the series is in parts (as the atmospheric filter needs).
    """
    folder = Path(folder)
    path = folder / STORE
    if not path.exists():
        raise MissingStepOutputError(f"no {STORE} in {folder}")
    ds = xr.open_zarr(path)
    pointer = ds.attrs.get(EXTENDS_ATTR)
    if not pointer:
        return ds
    extends = json.loads(pointer)
    earlier_folder = (folder / extends["folder"]).resolve()
    try:
        earlier = open_inversion(earlier_folder)
    except MissingStepOutputError as exc:
        raise MissingStepOutputError(
            f"{path} extends the series in {earlier_folder}, which is gone ({exc}); rerun the "
            "study with --refresh after deleting this step folder") from None
    times = earlier["time"].values.astype("datetime64[D]")
    if times.size != extends["n_dates"] or str(times[-1]) != extends["last_date"]:
        raise MissingStepOutputError(
            f"{path} extends {extends['n_dates']} dates up to {extends['last_date']} in "
            f"{earlier_folder}, which now holds {times.size} up to {times[-1]}")
    solved = ds[SOLVED] > 0
    joined = {
        "displacement": xr.concat([earlier["displacement"].where(solved), ds["displacement"]],
                                  "time").assign_attrs(ds["displacement"].attrs),
        "bridged": xr.concat([earlier["bridged"], ds["bridged"]], "time").assign_attrs(
            ds["bridged"].attrs),
    }
    rest = ds.drop_vars([*SERIES, "time", SOLVED])
    out = rest.assign({name: v.chunk({"time": -1}) for name, v in joined.items()})
    out.attrs = {k: v for k, v in ds.attrs.items() if k != EXTENDS_ATTR}
    return out[[*SERIES, *rest.data_vars]]


def write_inversion_part(series: xr.Dataset, n_new: int, solved: xr.DataArray,
                         earlier_folder: Path, out_dir: Path) -> None:
    """Store the last ``n_new`` dates of ``series`` as a part extending ``earlier_folder``.

    ``series`` is the whole extended series (dask-backed, as :func:`open_inversion` returns
    it); only its new dates, its layers without ``time`` and ``solved`` are written, tile by
    tile, to ``out_dir/inversion.zarr``, which lies beside ``earlier_folder``.
    """
    times = series["time"].values.astype("datetime64[D]")
    n_kept = times.size - n_new
    part = series.isel(time=slice(n_kept, None)).assign(
        {SOLVED: solved.astype(np.uint8).assign_attrs(
            long_name="pixel solved by this forward update", units="1")})
    part = part.chunk({"time": -1})
    part.attrs[EXTENDS_ATTR] = json.dumps({
        "folder": str(Path("..") / earlier_folder.name),
        "n_dates": int(n_kept), "last_date": str(times[n_kept - 1])})
    write_zarr_by_tiles(part, out_dir / STORE)
