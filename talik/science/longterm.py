"""The long-term multi-sensor deformation dataset (method.md §3; paper §3.1.2, Fig. 9–11, S4).

Sparse-sensor pairs (ERS-2, Envisat, ALOS-1, ALOS-2) are post-processed as a Sentinel-1
interferogram is (:func:`postprocess_pairs`), then:

* long pairs (a year or more) give annual rates ``D · 365.25 / Δdays`` (mm/yr);
* partial thaw-season pairs are scaled to a full thaw season, by the Sentinel-1 ratio of
  Eq. 4 (per pixel, regional fallback) or by the thawing index (Stefan baseline);
* per period: maps of rate and thaw-season deformation in the sensor's LOS and in the vertical,
  the area seen by every sensor, and mean ± std over it;
* sensor agreement over a common period (ALOS-2 vs Sentinel-1, Fig. 9).

Conventions: LOS displacement in mm, **positive toward the satellite**; vertical positive up;
so subsidence and thaw settlement are negative. Arrays have dims ``pair``/``season``/``period``
and ``y``, ``x``; every operation is vectorised over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from talik.science.compare import agreement, masked_mean_std
from talik.science.geometry import los_to_los, los_to_vertical
from talik.science.interferogram import postprocess_pairs
from talik.science.scaling import (
    annual_rate,
    scale_partial_pair,
    sentinel1_ratio,
    thawing_index_factor,
)
from talik.science.seasonal import thaw_season_deformation

__all__ = [
    "PairRole",
    "PeriodSpec",
    "ScalingSettings",
    "classify_pairs",
    "common_area",
    "period_maps",
    "period_table",
    "postprocess_pairs",
    "s1_change",
    "s1_window_change",
    "scale_partial_pairs",
    "sensor_agreement",
]

PairRole = Literal["long", "partial_thaw", "unused"]
def classify_pairs(reference_date: np.ndarray, secondary_date: np.ndarray, min_long_days: float,
                   max_partial_days: float, thaw_onset: str, thaw_end: str) -> np.ndarray:
    """The role of each pair: ``long`` (rate), ``partial_thaw`` (scaled season) or ``unused``.

    Long pairs span at least ``min_long_days``; partial thaw-season pairs span at most
    ``max_partial_days`` within one calendar year and overlap the thaw season
    ``thaw_onset``–``thaw_end`` (``MM-DD``). Pairs in between (e.g. summer → winter) alias the
    seasonal cycle into a rate and are not used.
    """
    ref = pd.DatetimeIndex(reference_date)
    sec = pd.DatetimeIndex(secondary_date)
    span = ((sec - ref) / pd.Timedelta(days=1)).to_numpy()
    onset = pd.to_datetime([f"{y}-{thaw_onset}" for y in ref.year])
    end = pd.to_datetime([f"{y}-{thaw_end}" for y in ref.year])
    partial = ((span <= max_partial_days) & (ref.year == sec.year) & (sec > onset) & (ref < end))
    return np.where(span >= min_long_days, "long", np.where(partial, "partial_thaw", "unused"))


def s1_change(displacement: xr.DataArray, first, second, max_interval_days: float = 60.0
              ) -> xr.DataArray:
    """Sentinel-1 LOS change (mm) from ``first`` to ``second``, interpolated linearly in time.

    All NaN when either date is not bracketed by acquisitions at most ``max_interval_days``
    apart (a winter gap, or outside the series).
    """
    times = pd.DatetimeIndex(displacement["time"].values)
    for when in (pd.Timestamp(first), pd.Timestamp(second)):
        after = times.searchsorted(when)
        exact = after < len(times) and times[after] == when
        inside = 0 < after < len(times)
        if not exact and not (inside and (times[after] - times[after - 1]).days <= max_interval_days):
            return (displacement.isel(time=0, drop=True) * np.nan).assign_attrs(units="mm")
    at = displacement.interp(time=pd.DatetimeIndex([first, second]))
    out = at.isel(time=1, drop=True) - at.isel(time=0, drop=True)
    return out.assign_attrs(units="mm", long_name=f"Sentinel-1 change {first:%Y-%m-%d} → "
                            f"{second:%Y-%m-%d}")


def s1_window_change(displacement: xr.DataArray, rate: xr.DataArray, onset: str, end: str
                     ) -> tuple[xr.DataArray, list[int]]:
    """Change of the detrended Sentinel-1 series over a calendar window, averaged over years.

    The window is ``onset``–``end`` (``MM-DD``) of every year the series brackets (see
    :func:`~talik.science.seasonal.thaw_season_deformation`); mm, sign of the input. Returns the
    mean map ``(y, x)`` and the years averaged.
    """
    per_year = thaw_season_deformation(displacement, onset, end, rate)
    years = [int(y) for y in per_year["year"].values]
    return per_year.mean("year").assign_attrs(units="mm"), years


@dataclass(frozen=True)
class ScalingSettings:
    """How partial thaw-season pairs are scaled (see :class:`talik.config.LongTermOptions`)."""

    method: Literal["sentinel1", "thawing_index"] = "sentinel1"
    thaw_onset: str = "05-01"
    thaw_end: str = "10-01"
    min_s1_signal_mm: float = 3.0
    max_ratio: float = 10.0
    detrend: bool = True
    max_noise_mm: float = 15.0


def _mmdd(when) -> str:
    return f"{pd.Timestamp(when):%m-%d}"


def scaled_noise_mm(pair_mm: xr.DataArray, stable: xr.DataArray | None, factor: float) -> float:
    """The noise a scaling factor carries into a scaled thaw-season value, mm.

    The pair's own noise is its robust scatter over stable ground (1.4826 × the median
    absolute deviation, where the ground should not move), multiplied by the factor the pair
    is scaled with. NaN without stable ground.
    """
    if stable is None:
        return float("nan")
    values = np.asarray(pair_mm.where(stable.astype(bool)).values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 10 or not np.isfinite(factor):
        return float("nan")
    mad = np.median(np.abs(values - np.median(values)))
    return float(1.4826 * mad * abs(factor))


def scale_partial_pairs(los: xr.DataArray, trend_mm_yr: dict[str, xr.DataArray], s1: xr.Dataset,
                        t_air_c: pd.Series | None, settings: ScalingSettings,
                        stable: xr.DataArray | None = None) -> xr.Dataset:
    """Every partial thaw-season pair of ``los`` scaled to its year's full season (mm, LOS).

    ``los`` holds the partial pairs only (post-processed, with their per-pair coordinates);
    ``trend_mm_yr`` maps a sensor's platform to its long-pair rate map (mm/yr, its LOS), which
    is removed over the pair's span when ``settings.detrend`` (the S1 terms are detrended too).
    ``s1`` is the Sentinel-1 product (``displacement``, ``velocity``, ``mask``). Both scalings
    are computed: Eq. 4 (``thaw_sentinel1``, with ``ratio`` and ``ratio_regional`` maps) and
    the thawing index (``thaw_thawing_index``, NaN without a temperature series);
    ``thaw_season`` is the one ``settings.method`` chooses. ``thaw_noise_mm`` (per pair) is the
    noise the chosen factor carries into it (:func:`scaled_noise_mm`, on ``stable`` ground);
    ``reliable`` says whether it stays within ``settings.max_noise_mm``.
    """
    disp, rate = s1["displacement"], s1["velocity"]
    valid = s1["mask"].astype(bool) & np.isfinite(rate)
    season_s1, _ = s1_window_change(disp, rate, settings.thaw_onset, settings.thaw_end)
    pieces: dict[str, list] = {k: [] for k in ("detrended", "ratio", "regional", "s1_window",
                                               "eq4", "stefan")}
    factors, regionals, years_used, noises = [], [], [], []
    for i in range(los.sizes["pair"]):
        pair = los.isel(pair=i, drop=True)
        a = pd.Timestamp(los["reference_date"].values[i])
        b = pd.Timestamp(los["secondary_date"].values[i])
        span_yr = (b - a).days / 365.25
        trend = trend_mm_yr.get(str(los["sensor"].values[i]))
        if settings.detrend and trend is not None:
            pair = pair - trend.fillna(0.0) * span_yr
        window_s1, years = s1_window_change(disp, rate, _mmdd(a), _mmdd(b))
        ratio, fallback, regional = sentinel1_ratio(season_s1, window_s1, valid,
                                                    settings.min_s1_signal_mm, settings.max_ratio)
        factor = (thawing_index_factor(t_air_c, a, b, f"{a.year}-{settings.thaw_onset}",
                                       f"{a.year}-{settings.thaw_end}")
                  if t_air_c is not None else float("nan"))
        pieces["detrended"].append(pair)
        pieces["ratio"].append(ratio)
        pieces["regional"].append(fallback)
        pieces["s1_window"].append(window_s1)
        pieces["eq4"].append(scale_partial_pair(pair, ratio))
        pieces["stefan"].append(scale_partial_pair(pair, factor))
        factors.append(factor)
        regionals.append(regional)
        years_used.append(len(years))
        applied = regional if settings.method == "sentinel1" else factor
        noises.append(scaled_noise_mm(pair, stable, applied))
    stack = {k: xr.concat(v, dim="season") for k, v in pieces.items()}
    coords = {name: ("season", los[name].values) for name in
              ("file", "sensor", "reference_date", "secondary_date", "incidence_deg")
              if name in los.coords}
    coords["year"] = ("season", pd.DatetimeIndex(los["reference_date"].values).year.to_numpy())
    chosen = stack["eq4"] if settings.method == "sentinel1" else stack["stefan"]
    ds = xr.Dataset(
        {
            "pair_los": stack["detrended"].assign_attrs(
                units="mm", long_name="partial-season pair LOS displacement"
                + (" (detrended)" if settings.detrend else "")),
            "s1_window": stack["s1_window"].assign_attrs(
                units="mm", long_name="Sentinel-1 change over the pair's calendar window"),
            "ratio": stack["ratio"],
            "ratio_regional": stack["regional"].astype(np.uint8),
            "thaw_sentinel1": stack["eq4"].assign_attrs(
                units="mm", long_name="full thaw season by Eq. 4 (LOS)"),
            "thaw_thawing_index": stack["stefan"].assign_attrs(
                units="mm", long_name="full thaw season by the thawing index (LOS)"),
            "thaw_season": chosen.assign_attrs(
                units="mm", long_name=f"full thaw season (LOS), scaling {settings.method}"),
            "s1_season": season_s1.assign_attrs(
                units="mm", long_name="Sentinel-1 thaw-season change, mean over its years"),
        },
        coords={**coords, "thawing_index_factor": ("season", np.array(factors)),
                "regional_ratio": ("season", np.array(regionals)),
                "s1_years": ("season", np.array(years_used)),
                "thaw_noise_mm": ("season", np.array(noises)),
                "reliable": ("season", np.array([bool(n <= settings.max_noise_mm)
                                                 for n in noises]))},
    )
    return ds.assign_attrs(scaling=settings.method, thaw_onset=settings.thaw_onset,
                           thaw_end=settings.thaw_end)


@dataclass(frozen=True)
class PeriodSpec:
    """A study period as the science sees it: its sensor's platform and LOS geometry."""

    name: str
    label: str
    sensor: str
    platform: str
    start: pd.Timestamp
    end: pd.Timestamp
    sentinel1: bool = False


@dataclass
class PeriodMaps:
    """Period maps (``period, y, x``) and what was decided on the way.

    Attributes
    ----------
    maps
        ``rate_los`` (mm/yr), ``thaw_season_los`` (mm), their ``*_vertical`` forms, and
        ``incidence_deg`` per period (the sensor's LOS).
    seasons
        The scaled partial pairs (:func:`scale_partial_pairs`), when there are any.
    pairs
        One row per pair: file, sensor, dates, role, period, reason when not used.
    """

    maps: xr.Dataset
    seasons: xr.Dataset | None
    pairs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _constant(template: xr.DataArray, value: float) -> xr.DataArray:
    return xr.full_like(template, value, dtype=np.float64)


def _pair_table(los: xr.DataArray, roles: np.ndarray, periods: list[PeriodSpec]) -> pd.DataFrame:
    rows = []
    for i in range(los.sizes["pair"]):
        a = pd.Timestamp(los["reference_date"].values[i])
        b = pd.Timestamp(los["secondary_date"].values[i])
        platform = str(los["sensor"].values[i])
        period = next((p.name for p in periods if p.platform == platform and a >= p.start
                       and b <= p.end), None)
        n_valid = int(np.isfinite(los.isel(pair=i).values).sum())
        reason = ""
        if n_valid == 0:
            reason = "no valid pixel after coherence mask and stable-ground reference"
        elif period is None:
            reason = "in no study period of its sensor"
        elif roles[i] == "unused":
            reason = "neither a long pair nor a partial thaw-season pair"
        rows.append({"file": str(los["file"].values[i]) if "file" in los.coords else str(i),
                     "sensor": platform, "reference_date": f"{a:%Y-%m-%d}",
                     "secondary_date": f"{b:%Y-%m-%d}", "span_days": (b - a).days,
                     "role": str(roles[i]), "period": period, "n_valid": n_valid,
                     "used": reason == "", "reason": reason})
    return pd.DataFrame(rows)


def period_maps(los: xr.DataArray, periods: list[PeriodSpec], s1: xr.Dataset,
                t_air_c: pd.Series | None, settings: ScalingSettings, min_long_days: float,
                max_partial_days: float, stable: xr.DataArray | None = None) -> PeriodMaps:
    """Rate and thaw-season maps of every period, in the sensor's LOS and in the vertical.

    ``los`` are the post-processed sparse-sensor pairs (:func:`postprocess_pairs`). A sparse
    period's rate is the mean of its long pairs' annual rates; its thaw season the mean over
    its partial pairs (one per year) of their scaled full-season maps. The Sentinel-1 period
    takes the product's ``velocity`` and ``thaw_season_deformation_mean`` where ``mask`` is set.
    """
    roles = classify_pairs(los["reference_date"].values, los["secondary_date"].values,
                           min_long_days, max_partial_days, settings.thaw_onset, settings.thaw_end)
    table = _pair_table(los, roles, periods)
    s1_inc = s1["incidence_deg"]
    trusted = s1["mask"].astype(bool)
    nan_map = xr.full_like(s1_inc, np.nan, dtype=np.float64)
    rates, inc_maps = {}, {}
    for p in periods:
        if p.sentinel1:
            rates[p.name] = s1["velocity"].where(trusted)
            inc_maps[p.name] = s1_inc
            continue
        use = np.flatnonzero((table["period"] == p.name).to_numpy()
                             & (table["role"] == "long").to_numpy() & table["used"].to_numpy())
        if use.size:
            sub = los.isel(pair=use)
            span = xr.DataArray(table["span_days"].to_numpy()[use], dims="pair")
            rates[p.name] = annual_rate(sub, span).mean("pair", skipna=True)
            inc_maps[p.name] = _constant(s1_inc, float(sub["incidence_deg"].values[0]))
        else:
            rates[p.name] = nan_map
    trend = {p.platform: rates[p.name] for p in periods if not p.sentinel1}
    partial = np.flatnonzero((table["role"] == "partial_thaw").to_numpy() & table["used"].to_numpy())
    seasons = (scale_partial_pairs(los.isel(pair=partial), trend, s1, t_air_c, settings, stable)
               if partial.size else None)
    if seasons is not None:
        seasons = seasons.assign_coords(period=("season", table["period"].to_numpy()[partial]))
    thaw, noise = {}, {}
    for p in periods:
        noise[p.name] = float("nan")
        if p.sentinel1:
            thaw[p.name] = s1["thaw_season_deformation_mean"].where(trusted)
        elif seasons is not None and (seasons["period"] == p.name).any():
            mine = seasons["thaw_season"].isel(season=np.flatnonzero(
                (seasons["period"] == p.name).values))
            thaw[p.name] = mine.mean("season", skipna=True)
            # the mean of n scaled pairs: their noises combined as independent errors
            noise[p.name] = float(np.sqrt(np.nansum(mine["thaw_noise_mm"].values ** 2))
                                  / mine.sizes["season"])
            inc_maps.setdefault(p.name, _constant(s1_inc, float(mine["incidence_deg"].values[0])))
        else:
            thaw[p.name] = nan_map
        inc_maps.setdefault(p.name, nan_map)

    def stacked(maps: dict[str, xr.DataArray]) -> xr.DataArray:
        return xr.concat([maps[p.name].drop_vars([c for c in maps[p.name].coords
                                                  if c not in ("y", "x")])
                          for p in periods], dim="period")

    incidence = stacked(inc_maps)
    rate_los, thaw_los = stacked(rates), stacked(thaw)
    maps = xr.Dataset(
        {
            "rate_los": rate_los.assign_attrs(units="mm/yr", long_name="annual LOS rate, "
                                              "positive toward the satellite"),
            "rate_vertical": los_to_vertical(rate_los, incidence).assign_attrs(
                units="mm/yr", long_name="annual vertical rate, positive up"),
            "thaw_season_los": thaw_los.assign_attrs(
                units="mm", long_name="thaw-season LOS deformation, positive toward the satellite"),
            "thaw_season_vertical": los_to_vertical(thaw_los, incidence).assign_attrs(
                units="mm", long_name="thaw-season vertical deformation, positive up"),
            "incidence_deg": incidence.assign_attrs(units="degree",
                                                    long_name="incidence of the period's sensor"),
        },
        coords={"period": [p.name for p in periods],
                "thaw_season_noise_mm": ("period", [noise[p.name] for p in periods]),
                "label": ("period", [p.label for p in periods]),
                "sensor": ("period", [p.sensor for p in periods]),
                "platform": ("period", [p.platform for p in periods])},
    )
    return PeriodMaps(maps, seasons, table)


def common_area(maps: xr.Dataset, min_sensors: int) -> tuple[xr.DataArray, xr.DataArray, int]:
    """Pixels seen by at least ``min_sensors`` sensors (capped at the number that have data).

    A sensor sees a pixel when any of its periods has a finite rate or thaw-season value there.
    Returns the mask (bool ``(y, x)``), the count of sensors per pixel and the threshold used.
    """
    seen = np.isfinite(maps["rate_los"]) | np.isfinite(maps["thaw_season_los"])
    per_sensor = seen.groupby("sensor").any("period")
    with_data = int(per_sensor.any(("y", "x")).sum())
    needed = max(1, min(min_sensors, with_data))
    count = per_sensor.sum("sensor").astype(np.int16)
    mask = (count >= needed).assign_attrs(long_name=f"seen by at least {needed} sensors",
                                          units="1")
    return mask, count.assign_attrs(units="1", long_name="number of sensors seeing the pixel"), needed


def period_table(maps: xr.Dataset, mask: xr.DataArray, scaling: str,
                 sentinel1_sensor: str, max_noise_mm: float = float("inf")) -> pd.DataFrame:
    """Mean ± std of rate (mm/yr) and thaw-season deformation (mm) per period over ``mask``.

    LOS columns first (the study's Fig. 14c values), then the vertical ones, then the noise
    the scaling carries into a sparse period's thaw season (mm) and whether that value is
    trusted (Sentinel-1's own series always is; a scaled one when its noise is at most
    ``max_noise_mm``).
    """
    rows = []
    for p in maps["period"].values:
        m = maps.sel(period=p)
        rate, thaw = masked_mean_std(m["rate_los"], mask), masked_mean_std(m["thaw_season_los"], mask)
        rate_v = masked_mean_std(m["rate_vertical"], mask)
        thaw_v = masked_mean_std(m["thaw_season_vertical"], mask)
        sensor = str(m["sensor"].values)
        rows.append({
            "period": str(p), "label": str(m["label"].values), "sensor": sensor,
            "rate_mm_yr_mean": rate["mean"], "rate_mm_yr_std": rate["std"],
            "thaw_season_mm_mean": thaw["mean"], "thaw_season_mm_std": thaw["std"],
            "n_pixels": int(rate["n"]),
            "scaling": ("none (full series)" if sensor == sentinel1_sensor
                        else scaling if np.isfinite(thaw["mean"]) else ""),
            "rate_vertical_mm_yr_mean": rate_v["mean"], "rate_vertical_mm_yr_std": rate_v["std"],
            "thaw_season_vertical_mm_mean": thaw_v["mean"],
            "thaw_season_vertical_mm_std": thaw_v["std"],
            "thaw_season_noise_mm": (float(m["thaw_season_noise_mm"].values)
                                     if "thaw_season_noise_mm" in m.coords else np.nan),
        })
        noise = rows[-1]["thaw_season_noise_mm"]
        rows[-1]["thaw_season_reliable"] = bool(np.isfinite(thaw["mean"]) and (
            sensor == sentinel1_sensor or (np.isfinite(noise) and noise <= max_noise_mm)))
    return pd.DataFrame(rows)


def sensor_agreement(pair_los: xr.DataArray, pair_incidence_deg: float, s1: xr.Dataset,
                     first, second) -> tuple[dict[str, float], xr.DataArray, xr.DataArray]:
    """One pair against Sentinel-1 over the same dates, in Sentinel-1's LOS (Fig. 9).

    The pair's LOS displacement (mm) goes to Sentinel-1's geometry through the vertical
    (:func:`~talik.science.geometry.los_to_los`); Sentinel-1's is the change of its series
    between the pair's dates (:func:`s1_change`), on trusted pixels. Returns
    :func:`~talik.science.compare.agreement` of pair − Sentinel-1 (``n``, ``bias``, ``mae``,
    ``rmse``, ``r``) and the two maps compared.
    """
    s1_map = s1_change(s1["displacement"], first, second).where(s1["mask"].astype(bool))
    other = los_to_los(pair_los, pair_incidence_deg, s1["incidence_deg"])
    other = other.assign_attrs(units="mm", long_name="pair in Sentinel-1 LOS")
    return agreement(other, s1_map), other, s1_map
