"""Small GeoTIFF writer used by the demo world (rasterio, real georeferencing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

__all__ = ["write_geotiff"]


def write_geotiff(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str,
    nodata: float | int | None = None,
    descriptions: list[str] | None = None,
    tags: dict[str, str] | None = None,
    compress: str | None = None,
) -> None:
    """Write a 2-D array or a 3-D ``(band, y, x)`` stack as a GeoTIFF."""
    arr = data if data.ndim == 3 else data[None]
    profile = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if compress:
        profile.update(compress=compress, tiled=True, blockxsize=256, blockysize=256)
        if arr.shape[1] < 256 or arr.shape[2] < 256:
            profile.pop("tiled")
            profile.pop("blockxsize")
            profile.pop("blockysize")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if descriptions:
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
        if tags:
            dst.update_tags(**tags)
