"""Products of a displacement time series: rate, thaw-season deformation, seasonal amplitude.

All functions take ``displacement (time, ...)`` in mm (any spatial dims, numpy or dask with
``time`` in one chunk) whose pixels are either complete series or all NaN, as NSBAS returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from talik.science.temporal import decimal_years, temporal_basis

__all__ = [
    "detrend",
    "linear_rate",
    "seasonal_fit",
    "thaw_season_deformation",
]


_SLAB = 8192
"""Pixels of a tile cast to float64 at a time by :func:`_project` (a few MB, reused)."""


def _project_block(block: np.ndarray, operator: np.ndarray) -> np.ndarray:
    """``operator (k, time) @ block (time, ...)`` → ``(k, ...)`` float64, a BLAS product per slab.

    A result is NaN where a date it weighs (non-zero weight) is not finite; dates it does not
    weigh may be anything (as for an interpolation between two acquisitions).
    """
    n = block.shape[0]
    flat = block.reshape(n, -1)
    out = np.empty((operator.shape[0], flat.shape[1]))
    weighs = operator != 0
    for lo in range(0, flat.shape[1], _SLAB):
        slab = flat[:, lo:lo + _SLAB].astype(np.float64)
        target = out[:, lo:lo + _SLAB]
        bad = ~np.isfinite(slab)
        if bad.any():  # (series from NSBAS are complete or all NaN: rarely here)
            slab[bad] = 0.0
            np.matmul(operator, slab, out=target)
            target[(weighs.astype(np.float64) @ bad) > 0] = np.nan
        else:
            np.matmul(operator, slab, out=target)
    return out.reshape(operator.shape[0], *block.shape[1:])


def _project(displacement: xr.DataArray, operator: np.ndarray, dim: str,
             labels: list | np.ndarray) -> xr.DataArray:
    """``operator · series`` for every pixel: ``(dim, ...)`` float64 (NaN where a date is NaN).

    ``operator`` is ``(k, time)``; numpy or dask series (``time`` in one chunk), one matrix
    product per tile, summed in float64.
    """
    series = displacement.transpose("time", ...)
    data = series.data
    op = np.asarray(operator, dtype=np.float64)
    if hasattr(data, "map_blocks"):
        data = data.rechunk({0: -1}).map_blocks(_project_block, operator=op, dtype=np.float64,
                                                chunks=((op.shape[0],), *data.chunks[1:]))
    else:
        data = _project_block(np.asarray(data), op)
    coords = {k: v for k, v in series.coords.items() if "time" not in v.dims}
    return xr.DataArray(data, dims=(dim, *series.dims[1:]), coords=coords).rename(
        None).assign_coords({dim: labels})  # (no name from the dask array's)


def _fit(displacement: xr.DataArray, design: np.ndarray, names: list[str]) -> xr.DataArray:
    """Least-squares coefficients of ``design`` (time, k) for every pixel → (coef, ...)."""
    return _project(displacement, np.linalg.pinv(design), "coef", names)


def _interpolation_weights(times: pd.DatetimeIndex, at: pd.DatetimeIndex) -> np.ndarray:
    """``(len(at), time)`` weights of linear interpolation in time at ``at`` (inside ``times``)."""
    t = np.asarray(times, dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    x = np.asarray(at, dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    weights = np.zeros((x.size, t.size))
    for i, value in enumerate(x):
        k = int(np.searchsorted(t, value, side="right")) - 1
        if t[k] == value:
            weights[i, k] = 1.0
        else:
            f = (value - t[k]) / (t[k + 1] - t[k])
            weights[i, k], weights[i, k + 1] = 1.0 - f, f
    return weights


def linear_rate(displacement: xr.DataArray) -> xr.DataArray:
    """Least-squares linear rate of each pixel's series, mm/yr (sign as the input)."""
    t = decimal_years(displacement["time"])
    design, names = temporal_basis(t)
    rate = _fit(displacement, design, names).sel(coef="velocity", drop=True)
    return rate.assign_attrs(units="mm/yr", long_name="linear rate (least squares)")


def detrend(displacement: xr.DataArray, rate: xr.DataArray) -> xr.DataArray:
    """Series minus ``rate · t`` (t in years since the first date)."""
    t = xr.DataArray(decimal_years(displacement["time"]), dims="time",
                     coords={"time": displacement["time"]})
    return (displacement - rate * t).assign_attrs(displacement.attrs)


def seasonal_fit(displacement: xr.DataArray, period_yr: float = 1.0) -> xr.Dataset:
    """Fit ``c + v·t + A1·sin + A2·cos``; return ``amplitude`` (mm) and ``peak_day`` (day of year).

    The amplitude is ``√(A1² + A2²)``, half the peak-to-trough seasonal range of the best
    sinusoid (a real thaw/heave cycle is not a sinusoid; this is a summary, not a model).
    """
    t = decimal_years(displacement["time"])
    w = 2 * np.pi / period_yr
    design, names = temporal_basis(t, harmonics=1, period_yr=period_yr)
    coef = _fit(displacement, design, names)
    a1, a2 = coef.sel(coef="sin", drop=True), coef.sel(coef="cos", drop=True)
    amplitude = np.hypot(a1, a2).assign_attrs(units="mm", long_name="seasonal amplitude")
    t0 = pd.Timestamp(np.asarray(displacement["time"])[0])
    phase = np.arctan2(a1, a2)  # A·cos(wt − φ): maximum at wt = φ
    peak = ((phase / w) * 365.25 + t0.day_of_year) % 365.25
    return xr.Dataset({"amplitude": amplitude,
                       "peak_day": peak.assign_attrs(units="day of year",
                                                     long_name="day of the seasonal maximum")})


def thaw_season_deformation(
    displacement: xr.DataArray,
    onset: str = "05-01",
    end: str = "10-01",
    rate: xr.DataArray | None = None,
    max_interval_days: float = 60.0,
) -> xr.DataArray:
    """Change of the detrended series from thaw onset to thaw end, per year (mm).

    Values at ``MM-DD`` dates are interpolated linearly between the acquisitions around them;
    a year is left out when either date is not bracketed by acquisitions less than
    ``max_interval_days`` apart (e.g. it falls in a winter gap or outside the series).
    Negative = subsidence over the thaw season (with positive-up or positive-toward input).

    Returns
    -------
    DataArray ``(year, ...)`` with attribute ``units = "mm"``.
    """
    if rate is None:
        rate = linear_rate(displacement)
    times = pd.DatetimeIndex(np.asarray(displacement["time"]))
    years, starts, stops = [], [], []
    for year in range(times[0].year, times[-1].year + 1):
        a = pd.Timestamp(f"{year}-{onset}")
        b = pd.Timestamp(f"{year}-{end}")
        if all(_bracketed(times, d, max_interval_days) for d in (a, b)):
            years.append(year)
            starts.append(a)
            stops.append(b)
    if not years:
        shape = {d: displacement.sizes[d] for d in displacement.dims if d != "time"}
        return xr.DataArray(np.zeros((0, *shape.values())), dims=("year", *shape),
                            coords={"year": np.array([], int)}).assign_attrs(units="mm")
    # Linear in the series: the detrended series (u − rate·t) interpolated at thaw end minus
    # at thaw onset, as one operator on u and one number per year times the rate.
    change_op = (_interpolation_weights(times, pd.DatetimeIndex(stops))
                 - _interpolation_weights(times, pd.DatetimeIndex(starts)))
    t_change = xr.DataArray(change_op @ decimal_years(displacement["time"]), dims="year")
    change = _project(displacement, change_op, "year", np.array(years)) - rate * t_change
    change = change.transpose(*("year" if d == "time" else d for d in displacement.dims))
    return change.assign_attrs(displacement.attrs).assign_attrs(
        units="mm", long_name=f"thaw-season deformation {onset} → {end} of the detrended series")


def _bracketed(times: pd.DatetimeIndex, when: pd.Timestamp, max_days: float) -> bool:
    after = times.searchsorted(when)
    if after == 0 or after >= len(times):
        return times[min(after, len(times) - 1)] == when
    gap = (times[after] - times[after - 1]) / pd.Timedelta(days=1)
    return times[after] == when or gap <= max_days
