"""The demo world's landscape: terrain, ground ice, wetness and where the ground deforms.

A broad valley crosses the scene between two ranges, like the Datong valley in the Qilian
Mountains. Its flat, ice-rich floor subsides and heaves; the slopes are stable. Every layer is
defined on a fine master grid in UTM metres and can be sampled at any point, so each sensor's
grid (80 m Sentinel-1, 30 m L-band, MODIS in degrees) sees the same world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Transformer
from scipy.interpolate import RegularGridInterpolator

from talik.world.fields import gaussian_field, power_law_field, smoothstep

__all__ = ["Landscape", "UTM_CRS", "WORLD_CENTER_LONLAT", "lake_mask", "valley_axis"]

UTM_CRS = "EPSG:32647"
"""WGS 84 / UTM zone 47N, the zone HyP3 uses for scenes centred near 99.6° E."""

WORLD_CENTER_LONLAT = (99.6344, 38.0363)
"""Scene centre: the Fig. 3c site of the paper (38.0363° N, 99.6344° E)."""

LAKE_CENTER_U = 0.72
"""Across-scene position (0 = west edge, 1 = east edge) of the optional lake's centre."""
LAKE_SEMI_AXES = (0.10, 0.09)
"""Semi-axes of the optional lake, as fractions of the scene width and height."""


def valley_axis(u: np.ndarray) -> np.ndarray:
    """Down-scene position (0 = north edge, 1 = south edge) of the valley axis at ``u`` (0–1)."""
    return 0.52 + 0.10 * (u - 0.5) + 0.06 * np.sin(2.2 * np.pi * u)


def lake_mask(x: np.ndarray, y: np.ndarray, x0: float, y0: float, width_m: float,
              height_m: float) -> np.ndarray:
    """True on the optional lake: an ellipse on the valley axis, east of the scene centre.

    ``x``, ``y`` are UTM points (metres) and ``x0``, ``y0``, ``width_m``, ``height_m`` the
    scene's west and north edges and size (metres), as for :meth:`Landscape.build`.
    """
    v_c = float(valley_axis(np.array(LAKE_CENTER_U)))
    xc, yc = x0 + LAKE_CENTER_U * width_m, y0 - v_c * height_m
    ax, ay = LAKE_SEMI_AXES[0] * width_m, LAKE_SEMI_AXES[1] * height_m
    return ((np.asarray(x) - xc) / ax) ** 2 + ((np.asarray(y) - yc) / ay) ** 2 <= 1.0


@dataclass(frozen=True)
class Landscape:
    """Layers of the world on a master UTM grid (``x`` east, ``y`` north, metres).

    Attributes
    ----------
    x, y
        Master grid cell centres, metres (``y`` decreasing, north up).
    layers
        Name → 2-D array on the master grid: ``elevation`` (m), ``slope_deg`` (degrees),
        ``ground_ice`` (volumetric fraction), ``wetness`` (0–1), ``water`` (0/1 ponds),
        ``lowland`` (0–1), ``rate_weight`` and ``seasonal_weight`` (dimensionless factors of the
        lowland-reference rate and seasonal amplitude), ``thaw_delay_days`` (days).
    """

    x: np.ndarray
    y: np.ndarray
    layers: dict[str, np.ndarray]

    @classmethod
    def build(
        cls,
        rng: np.random.Generator,
        x0: float,
        y0: float,
        width_m: float,
        height_m: float,
        spacing_m: float,
    ) -> Landscape:
        """Generate the landscape over ``[x0, x0+width] × [y0-height, y0]`` plus a margin."""
        margin = max(0.15 * max(width_m, height_m), 2000.0) + 4 * spacing_m
        nx = int(np.ceil((width_m + 2 * margin) / spacing_m))
        ny = int(np.ceil((height_m + 2 * margin) / spacing_m))
        x = x0 - margin + spacing_m * (np.arange(nx) + 0.5)
        y = y0 + margin - spacing_m * (np.arange(ny) + 0.5)
        xx, yy = np.meshgrid(x, y)
        # Normalised coordinates over the scene (0..1 across the scene, centre 0.5).
        u = (xx - x0) / width_m
        v = (y0 - yy) / height_m
        scale = max(width_m, height_m)

        # A valley axis running WNW–ESE, slightly curved.
        axis = valley_axis(u)
        dist = np.abs(v - axis) * height_m  # metres from the axis
        half_width = 0.16 * height_m
        rise = smoothstep(dist, half_width, half_width + 0.22 * height_m)
        roughness = power_law_field(rng, (ny, nx), spacing_m, outer_scale_m=scale / 2)
        ridges = gaussian_field(rng, (ny, nx), spacing_m, correlation_m=scale / 6)
        floor = 3880.0 + 40.0 * (u - 0.5)  # the valley floor descends gently eastward
        elevation = floor + rise * (380.0 + 90.0 * ridges) + roughness * (0.4 + 8.0 * rise)

        gy, gx = np.gradient(elevation, spacing_m)
        slope_deg = np.degrees(np.arctan(np.hypot(gx, gy)))

        flat = 1.0 - smoothstep(slope_deg, 2.0, 6.0)
        low = 1.0 - smoothstep(elevation - floor, 25.0, 90.0)
        lowland = flat * low

        ice_texture = gaussian_field(rng, (ny, nx), spacing_m, correlation_m=scale / 12)
        ground_ice = np.clip(0.06 + 0.42 * lowland * (0.75 + 0.25 * ice_texture), 0.02, 0.7)

        wet_texture = gaussian_field(rng, (ny, nx), spacing_m, correlation_m=scale / 20)
        wetness = np.clip(lowland * (0.55 + 0.3 * wet_texture + 0.25 * (ground_ice - 0.3)), 0, 1)
        water = (wetness > 0.85).astype(np.float64)

        # The mine sits on the valley floor, west of centre; degradation is strongest near it.
        mine_x, mine_y = x0 + 0.32 * width_m, y0 - 0.5 * height_m
        mine = np.exp(-(((xx - mine_x) ** 2 + (yy - mine_y) ** 2) / (2 * (0.18 * scale) ** 2)))
        rate_weight = lowland * (0.45 + 0.9 * (ground_ice - 0.06) / 0.42 * 0.6 + 0.55 * mine)
        seasonal_weight = 0.12 + lowland * (0.3 + 0.75 * wetness + 0.35 * (ground_ice - 0.06) / 0.42)
        thaw_delay_days = 9.0 * wetness - 4.0 * (1 - lowland)

        layers = {
            "elevation": elevation,
            "slope_deg": slope_deg,
            "ground_ice": ground_ice,
            "wetness": wetness,
            "water": water,
            "lowland": lowland,
            "rate_weight": rate_weight,
            "seasonal_weight": seasonal_weight,
            "thaw_delay_days": thaw_delay_days,
        }
        return cls(x=x, y=y, layers=layers)

    def sample(self, name: str, x: np.ndarray, y: np.ndarray, method: str = "linear") -> np.ndarray:
        """Sample a layer at UTM points ``(x, y)`` (arrays of equal shape), metres."""
        interp = RegularGridInterpolator(
            (self.y[::-1], self.x),
            self.layers[name][::-1],
            method=method,
            bounds_error=False,
            fill_value=None,
        )
        # Beyond the master grid, hold the edge value rather than extrapolate.
        yc = np.clip(np.asarray(y, dtype=np.float64).ravel(), self.y.min(), self.y.max())
        xc = np.clip(np.asarray(x, dtype=np.float64).ravel(), self.x.min(), self.x.max())
        pts = np.stack([yc, xc], axis=-1)
        return interp(pts).reshape(np.shape(x))

    def sample_grid(self, name: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Sample a layer on the grid of cell centres ``xs`` (columns) × ``ys`` (rows)."""
        xx, yy = np.meshgrid(xs, ys)
        return self.sample(name, xx, yy)

    def block_mean(self, name: str, xs: np.ndarray, ys: np.ndarray, cell_m: float) -> np.ndarray:
        """Mean of a layer over square cells of side ``cell_m`` centred on ``xs`` × ``ys``."""
        n = max(1, int(round(cell_m / (self.x[1] - self.x[0]))))
        offsets = (np.arange(n) + 0.5) / n * cell_m - cell_m / 2
        total = np.zeros((len(ys), len(xs)))
        for dy in offsets:
            for dx in offsets:
                total += self.sample_grid(name, xs + dx, ys + dy)
        return total / n**2

    def sample_lonlat(self, name: str, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Sample a layer at geographic points (degrees)."""
        to_utm = Transformer.from_crs("EPSG:4326", UTM_CRS, always_xy=True)
        x, y = to_utm.transform(lon, lat)
        return self.sample(name, np.asarray(x), np.asarray(y))
