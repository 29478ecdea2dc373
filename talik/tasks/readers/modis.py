"""Reader of MODIS stacks exported from Earth Engine (one band per date).

Band descriptions hold the dates (``YYYY-MM-DD``); values are the raw integers of the product
with its fill value as no-data, so the reader applies the product's scale:

========================  ==========  =====  ===========
product / band            scale       fill   result
========================  ==========  =====  ===========
MOD13Q1 NDVI              0.0001      -3000  NDVI (1)
MCD43A3 Albedo_BSA_Band7  0.001       32767  albedo (1)
MOD11A1 LST_Day_1km       0.02        0      LST (°C)
========================  ==========  =====  ===========
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

__all__ = ["MODIS_PRODUCTS", "read_modis_stack"]

# band → (scale, offset applied after scaling, units, variable name)
MODIS_PRODUCTS = {
    "NDVI": (0.0001, 0.0, "1", "ndvi"),
    "Albedo_BSA_Band7": (0.001, 0.0, "1", "swir_albedo"),
    "LST_Day_1km": (0.02, -273.15, "degC", "lst_day"),
}


def read_modis_stack(path: str | Path) -> xr.DataArray:
    """Read a stack as ``(time, y, x)`` in physical units (see module table)."""
    path = Path(path)
    with raster_errors(path, "open"), rasterio.open(path) as src:
        tags = src.tags()
        descriptions = src.descriptions
    band = tags.get("band")
    if band not in MODIS_PRODUCTS:
        raise InputError(path, "tag 'band'", f"one of {sorted(MODIS_PRODUCTS)}", band)
    try:
        times = pd.to_datetime(list(descriptions), format="%Y-%m-%d")
    except (ValueError, TypeError):
        raise InputError(path, "band descriptions", "dates as YYYY-MM-DD", descriptions[:3]) from None
    scale, offset, units, name = MODIS_PRODUCTS[band]
    scale = float(tags.get("scale_factor", scale))
    with raster_errors(path, "read"):  # .load() decodes: a truncated file fails here
        raw = rioxarray.open_rasterio(path, masked=True).load()
    da = (raw.astype(np.float32) * scale + offset).rename({"band": "time"})
    da = da.assign_coords(time=times)
    da.name = name
    return da.assign_attrs(units=units, product=tags.get("product", ""), source=str(path))
