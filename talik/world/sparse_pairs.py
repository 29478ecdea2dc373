"""Pairs from the sparse sensors (ERS-2, Envisat, ALOS-1, ALOS-2) of Table S1.

Each pair is written as the user's own processor (GAMMA, ISCE) would leave it: one GeoTIFF
with band 1 the unwrapped phase (radians, positive = range increase) and band 2 the coherence,
on the sensor's own 30 m grid, plus a JSON sidecar with sensor, dates, wavelength, incidence,
direction, baseline and the sign convention.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter

from talik.world.deformation import DeformationModel
from talik.world.fields import gaussian_field
from talik.world.geotiff import write_geotiff
from talik.world.landscape import UTM_CRS, Landscape
from talik.world.troposphere import Troposphere

__all__ = ["SPARSE_SENSORS", "TABLE_S1", "SparseSensor", "write_sparse_pairs"]


@dataclass(frozen=True)
class SparseSensor:
    """Acquisition geometry of a sparse sensor (Table 1 of the paper)."""

    key: str
    platform: str
    wavelength_m: float
    incidence_deg: float
    direction: str
    polarization: str
    band: str
    coverage: tuple[float, float]  # fraction of the scene width covered (from west, to east)


SPARSE_SENSORS = {
    "ers2": SparseSensor("ers2", "ERS-2", 0.0566, 23.14, "descending", "VV", "C", (0.0, 1.0)),
    "envisat": SparseSensor("envisat", "Envisat", 0.0563, 22.81, "descending", "VV", "C", (0.0, 1.0)),
    "alos1": SparseSensor("alos1", "ALOS-1", 0.2362, 38.72, "ascending", "HH", "L", (0.0, 1.0)),
    "alos2": SparseSensor("alos2", "ALOS-2", 0.2419, 40.55, "descending", "HH", "L", (0.0, 0.7)),
}

# Table S1 of the supplement: (sensor, first date, second date, perpendicular baseline m).
TABLE_S1 = [
    ("ers2", "1997-04-28", "1997-06-02", 98),
    ("ers2", "1997-08-11", "1998-07-27", -239),
    ("envisat", "2003-10-18", "2005-10-22", -435),
    ("alos1", "2007-07-12", "2007-10-12", 702),
    ("alos1", "2007-07-12", "2008-07-14", -1053),
    ("alos1", "2007-08-27", "2009-09-01", -853),
    ("alos1", "2007-08-27", "2010-09-04", 1225),
    ("alos1", "2010-07-20", "2010-10-20", 481),
    ("alos2", "2019-03-24", "2020-03-22", 307),
    ("alos2", "2019-05-19", "2019-07-14", -25),
    ("alos2", "2019-07-14", "2020-03-22", 386),
    ("alos2", "2020-03-22", "2021-03-21", 46),
    ("alos2", "2021-03-21", "2022-03-20", -273),
]


def pair_stem(sensor: SparseSensor, d1: dt.date, d2: dt.date) -> str:
    """File stem of a pair: ``<PLATFORM>_<YYYYMMDD>_<YYYYMMDD>``."""
    return f"{sensor.platform.replace('-', '').upper()}_{d1:%Y%m%d}_{d2:%Y%m%d}"


def write_sparse_pairs(
    out_dir: Path,
    rng: np.random.Generator,
    x0: float,
    y0: float,
    width_m: float,
    height_m: float,
    land: Landscape,
    model: DeformationModel,
    tropo: Troposphere,
    pixel_m: float = 30.0,
) -> pd.DataFrame:
    """Write every Table S1 pair; return one truth row per pair (rates, spans, file names).

    The sensors' 30 m grids are offset from the Sentinel-1 grid (they are not aligned) and
    ALOS-2 covers only the western part of the scene, as in the study.
    """
    # Grid covering the scene with a 3-pixel margin, origin offset by a third of a pixel.
    gx0 = x0 - 3 * pixel_m + pixel_m / 3
    gy0 = y0 + 3 * pixel_m - pixel_m / 3
    nx = int(np.ceil(width_m / pixel_m)) + 6
    ny = int(np.ceil(height_m / pixel_m)) + 6
    xs = gx0 + pixel_m * (np.arange(nx) + 0.5)
    ys = gy0 - pixel_m * (np.arange(ny) + 0.5)
    elevation = land.sample_grid("elevation", xs, ys)
    rate_w = land.sample_grid("rate_weight", xs, ys)
    season_w = land.sample_grid("seasonal_weight", xs, ys)
    delay = land.sample_grid("thaw_delay_days", xs, ys)
    slope = land.sample_grid("slope_deg", xs, ys)
    water = land.sample_grid("water", xs, ys) > 0.5
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx), indexing="ij")
    transform = Affine(pixel_m, 0, gx0, 0, -pixel_m, gy0)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, first, second, baseline in TABLE_S1:
        sensor = SPARSE_SENSORS[key]
        d1, d2 = dt.date.fromisoformat(first), dt.date.fromisoformat(second)
        cos_inc = np.cos(np.radians(sensor.incidence_deg))
        v1 = model.vertical(d1, rate_w, season_w, delay)
        v2 = model.vertical(d2, rate_w, season_w, delay)
        los_mm = (v2 - v1) * cos_inc
        slant = [tropo.zenith_delay(d, elevation, pixel_m) / cos_inc * 1000 for d in (d1, d2)]
        ramp = rng.normal(0, 4.0, 2)
        apparent = los_mm - (slant[1] - slant[0]) + ramp[0] * xx + ramp[1] * yy
        span = (d2 - d1).days
        if sensor.band == "L":
            corr = 0.85 - 0.15 * np.clip(span / 1100, 0, 1) - 0.25 * (slope > 15)
        else:
            # C-band keeps coherence on the flat valley floor only, even over one to two years.
            corr = np.where(slope > 6, 0.18, 0.72 - 0.2 * np.clip(span / 700, 0, 1))
        corr = corr * (1 + 0.1 * gaussian_field(rng, (ny, nx), pixel_m, 8 * pixel_m))
        corr = np.where(water, 0.1, corr)
        corr = np.clip(corr, 0.02, 0.97)
        looks = 20
        sigma = np.sqrt((1 - corr**2) / (2 * looks * corr**2))
        noise = gaussian_filter(rng.standard_normal((ny, nx)), 0.7)
        phase = -4 * np.pi / sensor.wavelength_m * apparent / 1000 + sigma * noise / noise.std()
        # Referenced to the scene's most coherent flat area, as a processor's unwrapper would be.
        ref = np.unravel_index(int(np.argmax(gaussian_filter(corr, 3))), corr.shape)
        phase = phase - phase[ref]
        west, east = sensor.coverage
        cols = np.arange(nx) / nx
        outside = (cols < west) | (cols > east)
        phase[:, outside] = np.nan
        corr[:, outside] = np.nan
        stem = pair_stem(sensor, d1, d2)
        write_geotiff(
            out_dir / f"{stem}.tif",
            np.stack([phase, corr]).astype(np.float32),
            transform,
            UTM_CRS,
            nodata=np.nan,
            descriptions=["unwrapped_phase", "coherence"],
        )
        sidecar = {
            "sensor": sensor.platform,
            "reference_date": d1.isoformat(),
            "secondary_date": d2.isoformat(),
            "wavelength_m": sensor.wavelength_m,
            "incidence_deg": sensor.incidence_deg,
            "direction": sensor.direction,
            "polarization": sensor.polarization,
            "perpendicular_baseline_m": baseline,
            "quantity": "unwrapped_phase",
            "units": "rad",
            "sign_convention": "positive_away_from_sensor",
            "bands": {"1": "unwrapped_phase", "2": "coherence"},
            "processor": "GAMMA",
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        rows.append(
            {
                "file": f"{stem}.tif",
                "sensor": key,
                "reference_date": d1,
                "secondary_date": d2,
                "span_days": span,
                "incidence_deg": sensor.incidence_deg,
            }
        )
    grid = {"x0": gx0, "y0": gy0, "nx": nx, "ny": ny, "pixel_m": pixel_m}
    return pd.DataFrame(rows).assign(**{f"grid_{k}": v for k, v in grid.items()})
