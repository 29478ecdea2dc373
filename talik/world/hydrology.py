"""Daily discharge at the demo basin's outlet, with a known recession time constant per year.

The basin drains through a single reservoir whose outflow recedes as
``−dQ/dt = Q / Ks`` between inputs (Kirchner's power law with ``b = 1``), so ``Ks`` (days)
is the truth a recession analysis should recover. ``Ks`` follows climate (5-year means of air
temperature, precipitation, snow depth, soil moisture, net radiation and evapotranspiration)
and, from 2003, a mining disturbance that slows recession, roughly doubling ``Ks`` by 2013
before a partial recovery that stays above the pre-mining level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from talik.config import WORLD_KS_REFERENCE_END

__all__ = ["DISTURBANCE", "annual_predictors", "simulate_discharge", "true_ks"]

BASIN_AREA_KM2 = 4576.0
KS_BASE_DAYS = 24.0
DISTURBANCE = {"start": 2003, "peak": 2013, "restoration": 2015}

# Relative effect on Ks of one standard deviation of each 5-year-mean predictor.
CLIMATE_EFFECTS = {
    "air_temperature": 0.09,
    "precipitation": 0.06,
    "snow_depth": 0.05,
    "soil_moisture": 0.03,
    "net_radiation": -0.03,
    "evapotranspiration": -0.03,
}


def annual_predictors(climate: pd.DataFrame) -> pd.DataFrame:
    """Yearly climate predictors as the study aggregates them (method.md §5).

    Air temperature: annual mean (°C); precipitation and evapotranspiration: May–October sums
    (mm); net radiation: May–October mean (MJ m⁻² d⁻¹); snow depth: mean over November of the
    previous year to April (m); soil moisture: May–October mean (m³/m³).
    """
    thaw = climate[(climate.index.month >= 5) & (climate.index.month <= 10)]
    year = climate.index.year
    cold_year = np.where(climate.index.month >= 11, year + 1, year)
    cold = climate[(climate.index.month >= 11) | (climate.index.month <= 4)]
    cold_year = cold_year[(climate.index.month >= 11) | (climate.index.month <= 4)]
    out = pd.DataFrame(
        {
            "air_temperature": climate["t_air_c"].groupby(year).mean(),
            "precipitation": thaw["precip_mm"].groupby(thaw.index.year).sum(),
            "evapotranspiration": thaw["et_mm"].groupby(thaw.index.year).sum(),
            "net_radiation": (thaw["ssr_mj"] + thaw["str_mj"]).groupby(thaw.index.year).mean(),
            "snow_depth": cold["snow_depth_m"].groupby(cold_year).mean(),
            "soil_moisture": thaw["soil_moisture"].groupby(thaw.index.year).mean(),
        }
    )
    out.index.name = "year"
    return out.loc[climate.index.year.min() : climate.index.year.max()]


def _disturbance_factor(year: np.ndarray) -> np.ndarray:
    knots_year = [1900, 2002, 2013, 2018, 2100]
    knots_factor = [1.0, 1.0, 2.05, 1.45, 1.45]
    return np.interp(year, knots_year, knots_factor)


def true_ks(
    rng: np.random.Generator, predictors: pd.DataFrame, before_end: int = WORLD_KS_REFERENCE_END
) -> pd.DataFrame:
    """Per-year truth: ``ks_climate_days`` (climate only) and ``ks_days`` (with disturbance)."""
    smooth = predictors.rolling(5, center=True, min_periods=3).mean()
    ref = smooth.loc[: before_end]
    z = (smooth - ref.mean()) / ref.std()
    relative = sum(effect * z[name] for name, effect in CLIMATE_EFFECTS.items())
    noise = 0.025 * rng.standard_normal(len(z))
    ks_climate = KS_BASE_DAYS * (1 + relative + noise)
    factor = _disturbance_factor(z.index.to_numpy())
    if not (ks_climate > 0).all():
        raise ValueError(f"recession constants must be positive; the climate reference up to "
                         f"{before_end} ({len(ref)} years) gave {ks_climate.min():.1f} days")
    return pd.DataFrame(
        {
            "ks_climate_days": ks_climate,
            "disturbance_factor": factor,
            "ks_days": ks_climate * factor,
        },
        index=z.index,
    )


def simulate_discharge(
    rng: np.random.Generator, climate: pd.DataFrame, ks: pd.Series
) -> pd.Series:
    """Daily mean discharge (m³/s) for May–October of every year in ``ks``.

    Rain on thawed ground (runoff fraction 0.35) and snowmelt enter one linear reservoir of
    time constant ``ks[year]`` days; the reported daily mean is the outflow averaged over the
    day, with a 1.5 % gauging error and yearbook rounding to 3 significant figures.
    """
    area_m2 = BASIN_AREA_KM2 * 1e6
    out = []
    storage = 0.0  # m³·(s/d)... kept as daily-flow-days: Q = storage / Ks
    melt_prev = 0.0
    for year in ks.index:
        k = float(ks.loc[year])
        days = pd.date_range(f"{year}-04-01", f"{year}-10-31", freq="D")
        c = climate.loc[days]
        decay = np.exp(-1.0 / k)
        snow = c["snow_depth_m"].to_numpy()
        melt = np.maximum(np.concatenate([[melt_prev], snow[:-1]]) - snow, 0.0) / 6.0 * 1000
        rain = np.where(c["t_air_c"].to_numpy() > 0.5, c["precip_mm"].to_numpy(), 0.0)
        recharge_mm = 0.35 * rain + 0.5 * melt + 0.02  # a small base recharge keeps Q > 0
        recharge = recharge_mm / 1000 * area_m2 / 86400  # m³/s sustained for one day
        flows = np.empty(len(days))
        for i in range(len(days)):
            storage += recharge[i]
            flows[i] = storage * (1 - decay)  # day's mean outflow over a day, m³/s
            storage *= decay
        melt_prev = snow[-1]
        keep = days.month >= 5
        q = flows[keep] * np.exp(0.015 * rng.standard_normal(int(keep.sum())))
        digits = 2 - np.floor(np.log10(np.maximum(q, 1e-6)))
        q = np.array([round(v, int(d)) for v, d in zip(q, digits, strict=True)])
        out.append(pd.Series(q, index=days[keep]))
        # Winter: the reservoir keeps draining until next April without input.
        storage *= np.exp(-151.0 / k)
    series = pd.concat(out)
    series.index.name = "date"
    series.name = "discharge_m3s"
    return series
