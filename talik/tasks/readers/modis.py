"""Reader of MODIS stacks exported from Earth Engine (one band per date).

Band descriptions hold the dates (``YYYY-MM-DD``); values are the raw integers of the product
with its fill value as no-data, so the reader applies the product's scale:

========================  ==========  =====  ===========
product / band            scale       fill   result
========================  ==========  =====  ===========
MOD13Q1 NDVI              0.0001      -3000  NDVI (1)
MCD43A3 Albedo_BSA_Band7  0.001       32767  albedo (1)
MOD11A1 LST_Day_1km       0.02        0      LST (°C)
MOD11A1 LST_Night_1km     0.02        0      LST (°C)
========================  ==========  =====  ===========

A file's product is its ``band`` tag; file names follow ``<product>_<band>_<year>.tif``
(:func:`find_modis_stacks`). A file whose name announces a band but whose tag says otherwise
(or nothing) is refused by name, as is a band asked for that a file does not hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray
import xarray as xr

from talik.errors import InputError
from talik.tasks.readers.raster import raster_errors

__all__ = ["MODIS_PRODUCTS", "find_modis_stacks", "read_modis_stack"]

# band → (scale, offset applied after scaling, units, variable name)
MODIS_PRODUCTS = {
    "NDVI": (0.0001, 0.0, "1", "ndvi"),
    "Albedo_BSA_Band7": (0.001, 0.0, "1", "swir_albedo"),
    "LST_Day_1km": (0.02, -273.15, "degC", "lst_day"),
    "LST_Night_1km": (0.02, -273.15, "degC", "lst_night"),
}

RASTER_SUFFIXES = (".tif", ".tiff")


def _band_in_name(path: Path) -> str | None:
    """The MODIS band a file name announces (``<product>_<band>_<year>.tif``), if any."""
    stem = path.stem
    for band in sorted(MODIS_PRODUCTS, key=len, reverse=True):
        if f"_{band}_" in f"_{stem}_":
            return band
    return None


def _band_tag(path: Path) -> str | None:
    with raster_errors(path, "open"), rasterio.open(path) as src:
        return src.tags().get("band")


def find_modis_stacks(folder: str | Path) -> dict[str, list[Path]]:
    """MODIS stacks in ``folder`` by band (the file's ``band`` tag), each list sorted by name.

    Every GeoTIFF of the folder must be a stack of a known band, and one whose name announces
    a band (``MOD11A1_LST_Day_1km_2019.tif``) must carry that band's tag: otherwise an
    :class:`~talik.errors.InputError` names the file and the band. A missing folder has no
    stacks (an empty dict).
    """
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES):
        tag, named = _band_tag(path), _band_in_name(path)
        if named is not None and tag != named:
            raise InputError(path, "tag 'band'", f"{named!r} (the band the file name announces)",
                             tag)
        if tag not in MODIS_PRODUCTS:
            raise InputError(path, "tag 'band'", f"one of {sorted(MODIS_PRODUCTS)}", tag)
        found.setdefault(tag, []).append(path)
    return found


def read_modis_stack(path: str | Path, band: str | None = None) -> xr.DataArray:
    """Read a stack as ``(time, y, x)`` in physical units (see module table).

    With ``band`` (e.g. ``"LST_Day_1km"``), a file holding another band is refused by name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "(file)", "an existing MODIS GeoTIFF stack")
    with raster_errors(path, "open"), rasterio.open(path) as src:
        tags = src.tags()
        descriptions = src.descriptions
    tag = tags.get("band")
    if band is not None and tag != band:
        raise InputError(path, "tag 'band'", f"{band!r} (the MODIS band this stack is read for)",
                         tag)
    if tag not in MODIS_PRODUCTS:
        raise InputError(path, "tag 'band'", f"one of {sorted(MODIS_PRODUCTS)}", tag)
    band = tag
    try:
        times = pd.to_datetime(list(descriptions), format="%Y-%m-%d")
    except (ValueError, TypeError):
        raise InputError(path, "band descriptions", "dates as YYYY-MM-DD", descriptions[:3]) from None
    if times.hasnans:
        raise InputError(path, "band descriptions", "a date (YYYY-MM-DD) for every band",
                         f"{int(times.isna().sum())} bands without one")
    scale, offset, units, name = MODIS_PRODUCTS[band]
    scale = float(tags.get("scale_factor", scale))
    with raster_errors(path, "read"):  # .load() decodes: a truncated file fails here
        raw = rioxarray.open_rasterio(path, masked=True).load()
    da = (raw.astype(np.float32) * scale + offset).rename({"band": "time"})
    da = da.assign_coords(time=times)
    da.name = name
    return da.assign_attrs(units=units, product=tags.get("product", ""), source=str(path))
