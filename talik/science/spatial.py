"""Spatial helpers on numpy/xarray grids: terrain slope, bilinear sampling, area-weighted means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["BilinearWeights", "area_weighted_mean", "bilinear_weights", "slope_deg"]


def slope_deg(elevation_m: np.ndarray, pixel_m: float) -> np.ndarray:
    """Terrain slope (degrees) of a north-up elevation grid (m) with square pixels of ``pixel_m``."""
    gy, gx = np.gradient(np.asarray(elevation_m, dtype=np.float64), pixel_m)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


@dataclass(frozen=True)
class BilinearWeights:
    """Where each target point falls in a source grid, and its four bilinear weights."""

    flat: np.ndarray  # index of the upper-left source cell, (n,)
    weights: np.ndarray  # (4, n): upper-left, upper-right, lower-left, lower-right
    inside: np.ndarray  # (n,) target points inside the source grid
    source_shape: tuple[int, int]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Source ``values`` (``source_shape``) at the target points; NaN outside."""
        ny, nx = self.source_shape
        v = np.asarray(values, dtype=np.float32).ravel()
        right = 1 if nx > 1 else 0
        below = nx if ny > 1 else 0
        f, w = self.flat, self.weights
        out = v[f] * w[0] + v[f + right] * w[1] + v[f + below] * w[2] + v[f + below + right] * w[3]
        return np.where(self.inside, out, np.nan).astype(np.float32)


def bilinear_weights(x: np.ndarray, y: np.ndarray, transform: tuple[float, ...],
                     shape: tuple[int, int]) -> BilinearWeights:
    """Bilinear weights of points ``(x, y)`` (the source grid's CRS units) in a north-up grid.

    ``transform`` is the source's affine ``(a, b, c, d, e, f)`` (cell-corner origin ``c, f``,
    sizes ``a`` and ``e``); values are taken at cell centres. Compute once per source
    geometry, then apply to every grid of that geometry.
    """
    a, _, c, _, e, f = transform[:6]
    ny, nx = shape
    col = (np.asarray(x) - c) / a - 0.5
    row = (np.asarray(y) - f) / e - 0.5
    inside = (row >= 0) & (row <= ny - 1) & (col >= 0) & (col <= nx - 1)
    r0 = np.clip(np.floor(row).astype(np.int64), 0, max(ny - 2, 0))
    c0 = np.clip(np.floor(col).astype(np.int64), 0, max(nx - 2, 0))
    fr, fc = row - r0, col - c0
    # float32 weights: the sampled grids are float32, and float64 would double every product.
    weights = np.stack([((1 - fr) * (1 - fc)).ravel(), ((1 - fr) * fc).ravel(),
                        (fr * (1 - fc)).ravel(), (fr * fc).ravel()]).astype(np.float32)
    return BilinearWeights((r0 * nx + c0).ravel(), weights, inside.ravel(), (ny, nx))


def area_weighted_mean(ds: xr.Dataset, lat: str = "latitude", lon: str = "longitude"
                       ) -> xr.Dataset:
    """Mean over a regular latitude/longitude grid, each cell weighted by cos(latitude)."""
    weights = np.cos(np.radians(ds[lat]))
    out = ds.weighted(weights).mean((lat, lon))
    for name in out.data_vars:
        out[name].attrs = ds[name].attrs
    return out
