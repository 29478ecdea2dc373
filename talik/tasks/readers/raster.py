"""Reader of single-band GeoTIFF rasters (DEM, ground-ice map, masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rioxarray
import xarray as xr

from talik.errors import InputError

__all__ = ["read_raster"]


def read_raster(path: str | Path, units: str, band: int = 1) -> xr.DataArray:
    """Read ``band`` of a GeoTIFF as float32 ``(y, x)`` with its CRS; no-data becomes NaN."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "(file)", "an existing GeoTIFF")
    try:
        da = rioxarray.open_rasterio(path, masked=True)
    except Exception as exc:
        raise InputError(path, "(raster)", f"a readable GeoTIFF ({exc})") from None
    if da.rio.crs is None:
        raise InputError(path, "CRS", "a georeferenced raster (no CRS found)")
    if band > da.sizes["band"]:
        raise InputError(path, f"band {band}", f"at most {da.sizes['band']} bands")
    out = da.isel(band=band - 1, drop=True).load().astype(np.float32)
    return out.assign_attrs(units=units, source=str(path))
