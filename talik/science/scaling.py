"""Rates and scalings of sparse-sensor pairs (method.md §3).

* A long pair's rate: ``D · 365.25 / Δdays``.
* A partial thaw-season pair scaled to the full season, by the Sentinel-1 ratio of Eq. 4
  (:func:`sentinel1_ratio`) or by the thawing index (Stefan, :func:`thawing_index_factor`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "annual_rate",
    "mean_annual_rate",
    "scale_partial_pair",
    "sentinel1_ratio",
    "thawing_degree_days",
    "thawing_index_factor",
]


def annual_rate(displacement_mm: xr.DataArray, span_days: xr.DataArray | float) -> xr.DataArray:
    """Rate of a pair, mm/yr: its displacement normalised to one year (365.25 days)."""
    return (displacement_mm * 365.25 / span_days).assign_attrs(units="mm/yr")


def mean_annual_rate(pairs_los_mm: xr.DataArray, span_days: np.ndarray,
                     min_span_days: float = 300.0) -> xr.DataArray:
    """Mean annual rate (mm/yr) over the pairs spanning at least ``min_span_days``.

    Pairs of about a year (or several) span whole seasonal cycles, so their rate is the
    interannual rate; shorter pairs would alias the thaw-season signal and are left out.
    """
    span = np.asarray(span_days, dtype=np.float64)
    keep = span >= min_span_days
    if not keep.any():
        raise ValueError(f"no pair spans at least {min_span_days:g} days")
    los = pairs_los_mm.isel(pair=np.flatnonzero(keep))
    rates = annual_rate(los, xr.DataArray(span[keep], dims="pair"))
    out = rates.mean("pair", skipna=True)
    return out.assign_attrs(units="mm/yr", long_name="mean annual LOS rate of long pairs",
                            n_pairs=int(keep.sum()))


def thawing_degree_days(t_air_c: pd.Series, start, end) -> float:
    """Thawing degree-days (°C·d): the sum of positive daily mean temperatures in ``[start, end)``.

    ``t_air_c`` is a daily series (°C) indexed by date. NaN when a day of the interval is
    missing from the series, so that a gap never passes for a cold spell.
    """
    first, stop = pd.Timestamp(start), pd.Timestamp(end)
    days = pd.date_range(first, stop - pd.Timedelta(days=1), freq="D")
    values = t_air_c.reindex(days)
    if len(days) == 0 or values.isna().any():
        return float("nan")
    return float(values.clip(lower=0.0).sum())


def thawing_index_factor(t_air_c: pd.Series, reference_date, secondary_date, season_start,
                         season_end) -> float:
    """Stefan scaling factor ``√TDD_season / √TDD_pair`` of a partial thaw-season pair (1).

    The baseline the study compares Eq. 4 against: thaw settlement taken to grow like the
    square root of the thawing index, with the thawing index of the pair's interval
    ``[reference_date, secondary_date)`` and of the full season ``[season_start, season_end)``
    from the daily air temperature (°C). NaN when either index is missing or the pair's is 0.
    """
    pair = thawing_degree_days(t_air_c, reference_date, secondary_date)
    season = thawing_degree_days(t_air_c, season_start, season_end)
    if not np.isfinite(pair) or not np.isfinite(season) or pair <= 0.0:
        return float("nan")
    return float(np.sqrt(season / pair))


def sentinel1_ratio(season_mm: xr.DataArray, window_mm: xr.DataArray, valid: xr.DataArray,
                    min_signal_mm: float, max_ratio: float) -> tuple[xr.DataArray, xr.DataArray, float]:
    """Eq. 4's ratio ``D_S1_season / D_S1_window`` per pixel, with a regional fallback.

    ``season_mm`` and ``window_mm`` ``(y, x)`` are the Sentinel-1 thaw-season change and the
    change over the pair's calendar window (mm, same sign convention, averaged over the S1
    years); ``valid`` marks trusted Sentinel-1 pixels. A pixel keeps its own ratio where
    ``|window| ≥ min_signal_mm`` and the ratio lies in ``(0, max_ratio]``; elsewhere (a window
    too small to divide by, a sign change, a masked pixel) it takes the regional ratio: the
    median of the pixels that keep their own. Returns the ratio map (1), a map of where the
    fallback was used (bool) and the regional ratio (NaN when no pixel qualifies).
    """
    ratio = season_mm / window_mm.where(window_mm != 0)
    own = (valid.astype(bool) & (np.abs(window_mm) >= min_signal_mm) & (ratio > 0)
           & (ratio <= max_ratio))
    chosen = ratio.where(own).values
    regional = float(np.nanmedian(chosen)) if np.isfinite(chosen).any() else float("nan")
    out = ratio.where(own, regional).assign_attrs(
        units="1", long_name="Eq. 4 ratio D_S1_season / D_S1_pair window",
        regional_ratio=regional)
    return out, (~own).assign_attrs(units="1", long_name="regional Eq. 4 ratio used"), regional


def scale_partial_pair(displacement_mm: xr.DataArray, factor: xr.DataArray | float
                       ) -> xr.DataArray:
    """A partial thaw-season displacement scaled to the full season: ``D · factor`` (mm).

    With ``factor`` the Eq. 4 ratio map this is ``D_scaled = D_t1t2 · D_S1_season / D_S1_t1t2``;
    with the thawing-index factor it is the Stefan baseline. Sign as the input.
    """
    out = displacement_mm * factor
    return out.assign_attrs(displacement_mm.attrs, units="mm",
                            long_name="full thaw-season displacement (scaled)")
