"""Snow cover that decorrelates C-band interferograms, pixel by pixel (the "hard" world).

With winter acquisitions kept in the Sentinel-1 network, a pair is coherent at a pixel only if
the ground there is snow-free on both of its dates. Each winter has a scene-wide snow season
taken from the climate (onset a few weeks after the autumn freeze-up, end of melt shortly
before the spring thaw onset of :func:`talik.world.climate.thaw_seasons`), and every pixel
shifts it by a smooth random field (a persistent part, where drifts lie every year, plus a
part that changes from winter to winter) of a few weeks. Wind-scoured ridges get snow later and
lose it earlier, so they stay coherent longer into and out of the winter. Calendar bounds make
midwinter (20 December – 5 March) snow-covered everywhere, so every pixel's own network breaks
every winter.

Nothing here depends on the acquisition dates: the seasons come from the climate, the fields
from the generator's own random stream and the scene geometry, so two worlds that differ only
in their Sentinel-1 date range share the same snow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from talik.world.fields import gaussian_field, smoothstep

__all__ = ["SnowCover"]

ONSET_AFTER_FREEZE_DAYS = 35.0
"""Days from the autumn thaw end (freeze-up) to the scene-wide snow onset."""
MELT_BEFORE_THAW_DAYS = 10.0
"""Days from the scene-wide end of snow melt to the spring thaw onset."""
LATEST_ONSET = (12, 20)
"""(month, day) by which every pixel is snow-covered."""
EARLIEST_MELT = (3, 5)
"""(month, day) before which no pixel is snow-free."""
FIELD_CORRELATION_M = 1200.0
"""Correlation length of the per-pixel timing fields, metres."""
PERSISTENT_SHARE = 0.8
"""Share (in amplitude) of the per-pixel timing shift that repeats every winter."""


@dataclass(frozen=True)
class SnowCover:
    """Per-pixel snow seasons on one grid.

    Attributes
    ----------
    onset
        Winter (the year the winter starts) → day of snow onset at each pixel, as a proleptic
        Gregorian ordinal (``datetime.date.toordinal``, days; fractional).
    melt
        Winter → day the snow has melted at each pixel (in the spring of the next year), same
        units.
    ridge
        Wind-scoured ridge weight of each pixel, 0–1.
    """

    onset: dict[int, np.ndarray]
    melt: dict[int, np.ndarray]
    ridge: np.ndarray

    @classmethod
    def build(
        cls,
        rng: np.random.Generator,
        seasons: pd.DataFrame,
        elevation_m: np.ndarray,
        pixel_m: float,
        spread_days: float,
        ridge_days: float,
    ) -> SnowCover:
        """Draw the per-pixel snow seasons of every winter the climate covers.

        Parameters
        ----------
        rng
            The snow's own random stream (used for the persistent fields and one seed).
        seasons
            :func:`talik.world.climate.thaw_seasons` of the world's climate.
        elevation_m
            Elevation of the grid, metres (rows from the north).
        pixel_m
            Grid spacing, metres.
        spread_days
            Standard deviation of the per-pixel shift of onset and melt, days.
        ridge_days
            How much later snow arrives on, and how much earlier it leaves, a full ridge, days.
        """
        shape = elevation_m.shape
        persistent = gaussian_field(rng, (2, *shape), pixel_m, FIELD_CORRELATION_M)
        year_seed = int(rng.integers(0, 2**31 - 1))
        # Ridges: high above the valley floor and higher than their surroundings.
        h = np.asarray(elevation_m, dtype=np.float64)
        prominence = h - gaussian_filter(h, 1000.0 / pixel_m, mode="nearest")
        ridge = smoothstep(prominence, 40.0, 120.0) * smoothstep(h - h.min(), 150.0, 300.0)
        p, q = PERSISTENT_SHARE, np.sqrt(1.0 - PERSISTENT_SHARE**2)
        onset, melt = {}, {}
        years = sorted(int(y) for y in seasons.index)
        for year in years:
            if year + 1 not in seasons.index:
                continue
            # Each winter's own fields come from a stream keyed by the year alone, so the snow
            # of a winter does not depend on which other winters are generated.
            yearly = gaussian_field(np.random.default_rng([year_seed, year]), (2, *shape),
                                    pixel_m, FIELD_CORRELATION_M)
            base_on = pd.Timestamp(seasons.loc[year, "end"]).date().toordinal() + ONSET_AFTER_FREEZE_DAYS
            base_off = (pd.Timestamp(seasons.loc[year + 1, "onset"]).date().toordinal()
                        - MELT_BEFORE_THAW_DAYS)
            on = base_on + spread_days * (p * persistent[0] + q * yearly[0]) + ridge_days * ridge
            off = base_off + spread_days * (p * persistent[1] + q * yearly[1]) - ridge_days * ridge
            onset[year] = np.minimum(on, dt.date(year, *LATEST_ONSET).toordinal())
            melt[year] = np.maximum(off, dt.date(year + 1, *EARLIEST_MELT).toordinal())
        return cls(onset, melt, ridge)

    def _winters(self, date: dt.date) -> list[int]:
        return [y for y in (date.year - 1, date.year) if y in self.onset]

    def covered(self, date: dt.date) -> np.ndarray:
        """Boolean grid: True where the ground is snow-covered on ``date``."""
        o = date.toordinal()
        out = np.zeros(self.ridge.shape, dtype=bool)
        for y in self._winters(date):
            out |= (self.onset[y] <= o) & (o < self.melt[y])
        return out

    def days_to_edge(self, date: dt.date) -> np.ndarray:
        """Days from ``date`` to the nearest snow onset or melt at each pixel (inf if none)."""
        o = date.toordinal()
        out = np.full(self.ridge.shape, np.inf)
        for y in self._winters(date):
            out = np.minimum(out, np.minimum(np.abs(o - self.onset[y]), np.abs(o - self.melt[y])))
        return out

    def scene_window(self, winter: int) -> tuple[dt.date, dt.date]:
        """Median (over pixels) snow onset and melt dates of ``winter``."""
        on = dt.date.fromordinal(int(round(float(np.median(self.onset[winter])))))
        off = dt.date.fromordinal(int(round(float(np.median(self.melt[winter])))))
        return on, off
