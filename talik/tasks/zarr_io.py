"""Writing Zarr stores the same way everywhere (format 2: readable by every Zarr library)."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

__all__ = ["write_zarr"]


def write_zarr(ds: xr.Dataset, path: str | Path, **kwargs) -> None:
    """Write ``ds`` to a Zarr store (format 2, consolidated metadata); kwargs go to ``to_zarr``."""
    kwargs.setdefault("consolidated", True)
    ds.to_zarr(path, zarr_format=2, **kwargs)
