"""Tropospheric delay of the demo world, and GACOS-like products of it.

Each acquisition gets a zenith total delay (metres) made of a hydrostatic part, a wet part that
decreases with height (stratified; its strength changes from date to date and season to
season), and a turbulent wet part with a power-law spectrum. GACOS reproduces the first two
well and only the long wavelengths of the turbulence, so a GACOS correction helps but does not
remove everything, as with the real service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter, zoom

from talik.world.fields import power_law_field

__all__ = ["Troposphere", "write_gacos"]


def _smooth_field(rng: np.random.Generator, ny: int, nx: int, pixel_m: float) -> np.ndarray:
    """Unit-std turbulence on an (ny, nx) grid; coarse FFT + zoom for big grids."""
    factor = max(1, int(np.ceil(max(ny, nx) / 384)))
    cy, cx = int(np.ceil(ny / factor)) + 2, int(np.ceil(nx / factor)) + 2
    coarse = power_law_field(rng, (cy, cx), pixel_m * factor, outer_scale_m=30_000.0)
    if factor == 1:
        return coarse[:ny, :nx]
    fine = zoom(coarse, factor, order=1)[:ny, :nx]
    return fine / fine.std()


@dataclass(frozen=True)
class Troposphere:
    """Per-date delay parameters (independent of any grid).

    Attributes
    ----------
    wet_scale_m
        Date → strength of the stratified wet delay at the valley floor, metres.
    turbulence_std_m
        Date → standard deviation of the turbulent wet delay, metres.
    gacos_wet_error
        Date → relative error of GACOS's stratified wet delay.
    seeds
        Date → seed of the date's turbulence, so every grid sees the same field pattern.
    """

    wet_scale_m: dict[pd.Timestamp, float]
    turbulence_std_m: dict[pd.Timestamp, float]
    gacos_wet_error: dict[pd.Timestamp, float]
    seeds: dict[pd.Timestamp, int]

    @classmethod
    def build(cls, rng: np.random.Generator, dates) -> Troposphere:
        """Draw delay parameters for each acquisition date."""
        wet, turb, err, seeds = {}, {}, {}, {}
        for d in sorted({pd.Timestamp(x) for x in dates}):
            summer = np.exp(-(((d.day_of_year - 200) / 60.0) ** 2))
            wet[d] = 0.05 + 0.09 * summer + 0.012 * rng.standard_normal()
            turb[d] = 0.0018 + 0.0035 * summer * rng.uniform(0.5, 1.3)
            err[d] = 0.12 * rng.standard_normal()
            seeds[d] = int(rng.integers(0, 2**31 - 1))
        return cls(wet, turb, err, seeds)

    def zenith_delay(
        self, date, elevation_m: np.ndarray, pixel_m: float, gacos: bool = False
    ) -> np.ndarray:
        """Zenith total delay (m) of ``date`` on a grid with the given elevations.

        With ``gacos=True`` returns what a GACOS-like model would deliver instead of the truth:
        the stratified parts with an error, and only the long-wavelength turbulence.
        """
        d = pd.Timestamp(date)
        h = np.asarray(elevation_m, dtype=np.float64)
        hydro = 2.3 * np.exp(-h / 7500.0)
        scale = self.wet_scale_m[d] * (1 + (self.gacos_wet_error[d] if gacos else 0.0))
        wet = scale * np.exp(-(h - 3800.0) / 2000.0)
        field = _smooth_field(np.random.default_rng(self.seeds[d]), *h.shape, pixel_m)
        turbulence = self.turbulence_std_m[d] * field
        if gacos:
            turbulence = 0.6 * gaussian_filter(turbulence, sigma=5000.0 / pixel_m, mode="nearest")
        return hydro + wet + turbulence


def write_gacos(path: Path, ztd: np.ndarray, west: float, north: float, step_deg: float,
                date) -> None:
    """Write a GACOS ``YYYYMMDD.ztd`` (little-endian float32, rows from the north) + ``.rsc``.

    ``X_FIRST``/``Y_FIRST`` are written as the upper-left corner of the first pixel, the
    convention MintPy uses for GACOS headers.
    """
    ny, nx = ztd.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    ztd.astype("<f4").tofile(path)
    header = {
        "WIDTH": nx,
        "FILE_LENGTH": ny,
        "XMIN": 0,
        "XMAX": nx,
        "YMIN": 0,
        "YMAX": ny,
        "X_FIRST": f"{west:.7f}",
        "Y_FIRST": f"{north:.7f}",
        "X_STEP": f"{step_deg:.15f}",
        "Y_STEP": f"{-step_deg:.15f}",
        "X_UNIT": "degres",
        "Y_UNIT": "degres",
        "Z_OFFSET": 0,
        "Z_SCALE": 1,
        "PROJECTION": "LATLON",
        "DATUM": "WGS84",
        "TIME_OF_DAY": f"{23.40:.6f}UTC",
    }
    lines = [f"{k:<14}{v}" for k, v in header.items()]
    Path(str(path) + ".rsc").write_text("\n".join(lines) + "\n")
