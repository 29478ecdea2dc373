"""True ground motion of the demo world (vertical, millimetres, positive up).

Ground motion at a point is ``rate_weight · R(t) + seasonal_weight · S(t − delay)``:

* ``R(t)`` integrates the lowland-reference subsidence rate, which follows the study's regimes
  (stable before mining, about −1 mm/yr in 2003–05, −7 mm/yr in 2007–10, −8 to −10 mm/yr after
  2016);
* ``S(t)`` is the seasonal cycle of the lowland reference: thaw settlement growing like the
  square root of accumulated thawing degree-days from thaw onset, then a gradual refreeze heave
  growing like the square root of freezing degree-days after thaw end (the freezing front's
  Stefan progression) until the active layer has refrozen, usually in January. Its amplitude
  changes from year to year
  (about 19 mm in 1997, 34 mm in 2007, 46 mm in 2010, about 45 mm after 2016), so no
  sinusoid, and no single amplitude, fits it exactly;
* ``delay`` shifts thaw timing per pixel (wet ground thaws and settles later).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from talik.world.climate import thaw_seasons

__all__ = ["DeformationModel", "decimal_year"]

# Lowland-reference subsidence rate (mm/yr, vertical, negative = subsidence) at decimal years.
RATE_KNOTS = (
    (1990.0, 0.0),
    (2002.5, 0.0),
    (2003.5, -1.0),
    (2006.5, -1.0),
    (2007.5, -7.0),
    (2010.5, -7.5),
    (2013.0, -10.5),
    (2016.0, -8.0),
    (2019.0, -8.0),
    (2023.5, -10.0),
    (2030.0, -10.0),
)
# Lowland-reference thaw-season amplitude (mm) at years; interpolated between knots.
AMPLITUDE_KNOTS = (
    (1990, 18.0),
    (1998, 19.0),
    (2002, 21.0),
    (2005, 26.0),
    (2007, 34.0),
    (2010, 46.0),
    (2013, 50.0),
    (2016, 45.0),
    (2030, 45.0),
)
REFREEZE_FDD = 800.0
"""Freezing degree-days (°C·d) after thaw end by which the active layer has refrozen."""


def decimal_year(dates) -> np.ndarray:
    """Decimal years of dates (numpy datetime64, pandas or ``datetime.date`` values)."""
    ts = pd.DatetimeIndex(pd.to_datetime(np.atleast_1d(dates)))
    start = pd.to_datetime(ts.year.astype(str) + "-01-01")
    length = np.where(ts.is_leap_year, 366.0, 365.0)
    return ts.year.to_numpy() + (ts - start).days.to_numpy() / length


@dataclass(frozen=True)
class DeformationModel:
    """Time functions of the lowland reference, sampled daily.

    Attributes
    ----------
    days
        Daily timestamps covered.
    trend_mm
        ``R(t)``: cumulative trend displacement of the lowland reference since ``days[0]``, mm.
    seasonal_mm
        ``S(t)``: seasonal displacement of the lowland reference, mm (≤ 0).
    amplitude_mm
        Year → lowland thaw-season amplitude used, mm.
    seasons
        Thaw onset, end and thawing degree-days per year.
    """

    days: pd.DatetimeIndex
    trend_mm: np.ndarray
    seasonal_mm: np.ndarray
    amplitude_mm: dict[int, float]
    seasons: pd.DataFrame

    @classmethod
    def build(cls, rng: np.random.Generator, t_air: pd.Series) -> DeformationModel:
        """Build the model from daily air temperature (°C) of the whole world period."""
        days = pd.DatetimeIndex(t_air.index)
        seasons = thaw_seasons(t_air)
        years = np.array(sorted(seasons.index))
        k_years, k_amp = zip(*AMPLITUDE_KNOTS, strict=True)
        base = np.interp(years, k_years, k_amp)
        variation = np.clip(1 + 0.13 * rng.standard_normal(len(years)), 0.7, 1.3)
        amplitude = dict(zip(years.tolist(), (base * variation).tolist(), strict=True))

        t_dec = decimal_year(days)
        k_t, k_v = zip(*RATE_KNOTS, strict=True)
        rate = np.interp(t_dec, k_t, k_v)  # mm/yr
        trend = np.concatenate([[0.0], np.cumsum(rate[1:] * np.diff(t_dec))])

        seasonal = np.zeros(len(days))
        tpos = t_air.clip(lower=0).to_numpy()
        for year, row in seasons.iterrows():
            i_on = days.get_indexer([row["onset"]])[0]
            i_end = days.get_indexer([row["end"]])[0]
            if i_on < 0 or i_end <= i_on:
                continue
            tdd = np.cumsum(tpos[i_on : i_end + 1])
            g = np.zeros(len(days))
            g[i_on : i_end + 1] = np.sqrt(tdd / max(tdd[-1], 1e-6))
            fdd = np.cumsum(np.clip(-t_air.to_numpy()[i_end + 1 :], 0, None))
            g[i_end + 1 :] = 1.0 - np.sqrt(np.clip(fdd / REFREEZE_FDD, 0.0, 1.0))
            seasonal -= amplitude[int(year)] * g
        return cls(days, trend, seasonal, amplitude, seasons)

    def _interp(self, series: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Linear interpolation of a daily series at fractional day positions ``when``."""
        i0 = np.clip(np.floor(when).astype(np.int64), 0, len(series) - 2)
        frac = np.clip(when - i0, 0.0, 1.0)
        return series[i0] * (1 - frac) + series[i0 + 1] * frac

    def day_position(self, date: dt.date | np.datetime64 | pd.Timestamp) -> float:
        """Position of ``date`` in days since the first day of the model."""
        return float((pd.Timestamp(date) - self.days[0]) / pd.Timedelta(days=1))

    def vertical(
        self,
        date,
        rate_weight: np.ndarray,
        seasonal_weight: np.ndarray,
        delay_days: np.ndarray,
    ) -> np.ndarray:
        """Vertical displacement (mm, up positive) on ``date`` relative to the model start."""
        pos = self.day_position(date)
        trend = float(self._interp(self.trend_mm, np.array([pos]))[0])
        seasonal = self._interp(self.seasonal_mm, pos - np.asarray(delay_days))
        return rate_weight * trend + seasonal_weight * seasonal

    def lowland_rate(self, date) -> float:
        """Lowland-reference trend rate on ``date``, mm/yr."""
        k_t, k_v = zip(*RATE_KNOTS, strict=True)
        return float(np.interp(decimal_year([date])[0], k_t, k_v))
