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


def _fit(displacement: xr.DataArray, design: np.ndarray, names: list[str]) -> xr.DataArray:
    """Least-squares coefficients of ``design`` (time, k) for every pixel → (coef, ...)."""
    pinv = np.linalg.pinv(design)  # (k, time)
    op = xr.DataArray(pinv, dims=("coef", "time"), coords={"coef": names})
    return xr.dot(op, displacement, dim="time")


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
    detrended = detrend(displacement, rate)
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
    at = detrended.interp(time=pd.DatetimeIndex(starts + stops))
    first = at.isel(time=slice(0, len(years)))
    second = at.isel(time=slice(len(years), None))
    change = second.drop_vars("time").rename(time="year") - first.drop_vars("time").rename(
        time="year")
    change = change.assign_coords(year=np.array(years))
    return change.assign_attrs(units="mm", long_name=f"thaw-season deformation {onset} → {end} "
                               "of the detrended series")


def _bracketed(times: pd.DatetimeIndex, when: pd.Timestamp, max_days: float) -> bool:
    after = times.searchsorted(when)
    if after == 0 or after >= len(times):
        return times[min(after, len(times) - 1)] == when
    gap = (times[after] - times[after - 1]) / pd.Timedelta(days=1)
    return times[after] == when or gap <= max_days
