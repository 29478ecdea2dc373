"""The demo world's daily climate: air temperature, precipitation, snow, soil water, radiation.

A continental alpine climate like the Qilian Mountains: mean annual air temperature near
−3.5 °C warming by about 0.04 °C per year, 500–700 mm of precipitation falling mostly in
summer, snow in the cold season.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_climate", "thaw_seasons"]


def simulate_climate(rng: np.random.Generator, start_year: int, end_year: int) -> pd.DataFrame:
    """Daily basin climate from 1 January ``start_year`` to 31 December ``end_year``.

    Returns
    -------
    DataFrame indexed by day with columns ``t_air_c`` (°C), ``precip_mm`` (mm/d),
    ``snow_depth_m`` (m), ``soil_moisture`` (m³/m³, 0–7 cm), ``ssr_mj`` and ``str_mj``
    (net solar and net thermal radiation, MJ m⁻² d⁻¹, downward positive), ``et_mm``
    (evapotranspiration, mm/d, positive = water leaving the ground).
    """
    days = pd.date_range(f"{start_year}-01-01", f"{end_year}-12-31", freq="D")
    n = len(days)
    year = days.year.to_numpy()
    frac = (days.day_of_year.to_numpy() - 1) / 365.25
    years = np.arange(start_year, end_year + 1)

    # Interannual anomalies (AR(1) in years) of temperature, precipitation and snow.
    def yearly_ar1(sigma: float, phi: float = 0.5) -> np.ndarray:
        out = np.zeros(len(years))
        for i in range(1, len(years)):
            out[i] = phi * out[i - 1] + sigma * np.sqrt(1 - phi**2) * rng.standard_normal()
        return out

    t_anom = dict(zip(years, yearly_ar1(0.45), strict=True))
    p_factor = dict(zip(years, np.exp(yearly_ar1(0.12)), strict=True))
    s_factor = dict(zip(years, np.exp(yearly_ar1(0.25)), strict=True))

    trend = 0.04 * (year - 1973)
    seasonal = -13.5 * np.cos(2 * np.pi * (frac - 0.045))
    weather = np.zeros(n)
    noise = rng.standard_normal(n)
    for i in range(1, n):
        weather[i] = 0.75 * weather[i - 1] + 2.4 * np.sqrt(1 - 0.75**2) * noise[i]
    t_air = -3.6 + trend + seasonal + weather + np.vectorize(t_anom.get)(year)

    # Precipitation: wet-day occurrence and amounts peak in July; slow upward trend.
    wet_prob = 0.08 + 0.55 * np.exp(-(((frac - 0.55) / 0.13) ** 2))
    amount = 1.0 + 6.5 * np.exp(-(((frac - 0.55) / 0.16) ** 2))
    factor = np.vectorize(p_factor.get)(year) * (1 + 0.003 * (year - 1973))
    wet = rng.random(n) < wet_prob * np.clip(factor, 0.5, 1.6)
    precip = np.where(wet, rng.exponential(1.0, n) * amount * factor, 0.0)

    # Snow: accumulates from solid precipitation, melts with positive degree-days.
    snow_we = np.zeros(n)
    sf = np.vectorize(s_factor.get)(year)
    for i in range(1, n):
        solid = precip[i] * sf[i] if t_air[i] < 0.5 else 0.0
        melt = 3.0 * max(t_air[i], 0.0)
        snow_we[i] = max(snow_we[i - 1] + solid - melt, 0.0)
    snow_depth = snow_we / 1000.0 * 6.0  # fresh-ish snow density ~170 kg/m³

    # Radiation (MJ m-2 d-1, downward positive).
    cloud = np.clip(0.35 + 0.5 * wet + 0.1 * rng.standard_normal(n), 0, 1)
    ssr = (9.0 + 12.0 * np.sin(np.pi * np.clip(frac - 0.0, 0, 1))) * (1 - 0.45 * cloud)
    ssr *= np.where(snow_depth > 0.02, 0.45, 1.0)  # snow reflects
    str_ = -(5.5 + 0.08 * (t_air + 10) - 2.5 * cloud)
    net_rad = ssr + str_

    # Soil water of the top layer responds to rain and thaw; frozen soil holds little liquid water.
    soil = np.zeros(n)
    soil[0] = 0.2
    et = np.zeros(n)
    for i in range(1, n):
        thawed = t_air[i] > 0
        et[i] = (0.2 + 0.12 * max(net_rad[i], 0.0)) * (soil[i - 1] / 0.35) if thawed else 0.05
        gain = 0.004 * precip[i] + (0.002 * min(3.0 * max(t_air[i], 0), snow_we[i - 1]) if thawed else 0)
        loss = 0.0025 * et[i] + (0.01 * (soil[i - 1] - 0.1) if thawed else 0.002 * (soil[i - 1] - 0.12))
        soil[i] = np.clip(soil[i - 1] + gain - loss, 0.08, 0.45)

    return pd.DataFrame(
        {
            "t_air_c": t_air,
            "precip_mm": precip,
            "snow_depth_m": snow_depth,
            "soil_moisture": soil,
            "ssr_mj": ssr,
            "str_mj": str_,
            "et_mm": et,
        },
        index=pd.DatetimeIndex(days, name="date"),
    )


def thaw_seasons(t_air: pd.Series, smooth_days: int = 15) -> pd.DataFrame:
    """Thaw onset and end of each year from daily air temperature.

    Onset is the first spring day the ``smooth_days`` running mean rises above 0 °C, end the
    first autumn day it falls below. Returns a frame indexed by year with ``onset``, ``end``
    (timestamps) and ``tdd_total`` (thawing degree-days between them, °C·d).
    """
    smooth = t_air.rolling(smooth_days, center=True, min_periods=1).mean()
    rows = {}
    for year, s in smooth.groupby(smooth.index.year):
        spring = s[(s.index.month >= 3) & (s.index.month <= 7)]
        autumn = s[(s.index.month >= 8) & (s.index.month <= 12)]
        on = spring.index[spring > 0]
        off = autumn.index[autumn < 0]
        onset = on[0] if len(on) else pd.Timestamp(f"{year}-05-01")
        end = off[0] if len(off) else pd.Timestamp(f"{year}-10-05")
        t = t_air[onset:end]
        rows[year] = {"onset": onset, "end": end, "tdd_total": float(t.clip(lower=0).sum())}
    return pd.DataFrame.from_dict(rows, orient="index")
