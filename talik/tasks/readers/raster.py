"""Reader of single-band GeoTIFF rasters (DEM, ground-ice map, masks); raster errors by name.

:func:`raster_errors` is the one place that turns a GDAL/rasterio failure into an
:class:`~talik.errors.InputError` naming the file.

rasterio and rioxarray read lazily: opening a truncated GeoTIFF usually succeeds (the header is
intact) and the failure only comes when pixels are decoded. Every reader therefore decodes the
data inside :func:`raster_errors`, so a damaged file is reported by name, not by a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio.errors
import rioxarray
import xarray as xr
from rasterio._err import CPLE_BaseError

from talik.errors import InputError

__all__ = ["raster_errors", "read_raster"]

_GDAL_ERRORS = (rasterio.errors.RasterioError, CPLE_BaseError, OSError)


def _gdal_message(exc: BaseException) -> str:
    """The most specific text of a GDAL failure (rasterio often says 'see previous exception')."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and ("previous exception" in text or not text):
        text = str(cause)
    return " ".join(text.split())


@contextmanager
def raster_errors(path: str | Path, action: str) -> Iterator[None]:
    """Re-raise a rasterio/GDAL/OS failure inside the block as an :class:`InputError`.

    Parameters
    ----------
    path
        The raster being opened or read (also ``/vsizip/...`` paths).
    action
        What the block does, in words ("open", "read band 1"); it goes into the message.
    """
    try:
        yield
    except InputError:
        raise
    except _GDAL_ERRORS as exc:
        raise InputError(path, "(raster)", "a complete, readable GeoTIFF",
                         f"{action} failed: {_gdal_message(exc)}") from None


def read_raster(path: str | Path, units: str, band: int = 1) -> xr.DataArray:
    """Read ``band`` of a GeoTIFF as float32 ``(y, x)`` with its CRS; no-data becomes NaN."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "(file)", "an existing GeoTIFF")
    with raster_errors(path, "open"):
        da = rioxarray.open_rasterio(path, masked=True)
    if da.rio.crs is None:
        raise InputError(path, "CRS", "a georeferenced raster", "no CRS")
    if band > da.sizes["band"]:
        raise InputError(path, f"band {band}", f"at most {da.sizes['band']} bands")
    with raster_errors(path, f"read band {band}"):  # .load() decodes: truncation shows here
        out = da.isel(band=band - 1, drop=True).load().astype(np.float32)
    return out.assign_attrs(units=units, source=str(path))
