"""The long-term multi-sensor dataset step (method.md §3): period maps, statistics, agreement.

Reads the Sentinel-1 product and the staged sparse-sensor pairs (with the ground-ice map for
stable ground and GACOS delays where they exist), calls :mod:`talik.science.longterm`, and
writes into its step folder:

* ``longterm.nc`` (CF-1.8): ``rate_los``, ``rate_vertical`` (mm/yr) and ``thaw_season_los``,
  ``thaw_season_vertical`` (mm) per ``period``; ``common_mask`` and ``n_sensors``; the scaled
  partial pairs per ``season`` (``thaw_sentinel1``, ``thaw_thawing_index``, ``ratio``, ...).
  LOS positive toward the satellite, vertical positive up: subsidence is negative.
* ``period_stats.csv``: mean ± std per period over the common mask.
* ``thaw_seasons.csv``: each scaled partial pair (both scalings) over the common mask.
* ``pairs.csv``: every pair's role, period, and the reason when it is not used.
* ``agreement.json``: sensor agreement (Fig. 9) and the options used.
* ``figures/``: Fig. 9, Fig. 10/11-like period maps, the period statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from talik.config import StudyConfig
from talik.science.interferogram import stable_ground
from talik.science.longterm import (
    PeriodSpec,
    ScalingSettings,
    common_area,
    period_maps,
    period_table,
    postprocess_pairs,
    sensor_agreement,
)
from talik.tasks.log import step_logger
from talik.tasks.provenance import file_sha256
from talik.tasks.readers.tables import read_station_temperature
from talik.tasks.records import StepOutput
from talik.tasks.steps import step, this_step

__all__ = ["STEP", "build_longterm", "longterm_dataset", "temperature_file"]

STEP = "longterm"


def temperature_file(cfg: StudyConfig) -> Path | None:
    """The daily air-temperature CSV of the study's source (the thawing-index baseline)."""
    if cfg.source.kind == "world":
        path = Path(cfg.source.raw_dir) / "station_tmean.csv"
        return path if path.exists() else None
    return Path(cfg.source.temperature) if cfg.source.temperature else None


def _periods(cfg: StudyConfig) -> list[PeriodSpec]:
    return [PeriodSpec(p.name, p.label, p.sensor, cfg.sensors[p.sensor].platform,
                       pd.Timestamp(p.start), pd.Timestamp(p.end),
                       sentinel1=p.sensor == cfg.sentinel1.sensor) for p in cfg.periods]


def _settings(cfg: StudyConfig) -> ScalingSettings:
    lt = cfg.longterm
    return ScalingSettings(method=lt.scaling, thaw_onset=cfg.sentinel1.thaw_onset,
                           thaw_end=cfg.sentinel1.thaw_end, min_s1_signal_mm=lt.min_s1_signal_mm,
                           max_ratio=lt.max_scaling_ratio, detrend=lt.detrend_partial_pairs,
                           max_noise_mm=lt.max_thaw_noise_mm)


def _agreement(cfg: StudyConfig, los: xr.DataArray, s1: xr.Dataset
               ) -> tuple[list[dict], xr.Dataset | None]:
    """Every pair of the agreement sensor that Sentinel-1 brackets, compared in its LOS."""
    key = cfg.longterm.agreement_sensor
    if key not in cfg.sensors:
        return [], None
    platform = cfg.sensors[key].platform
    rows, best = [], None
    for i in np.flatnonzero(los["sensor"].values == platform):
        a = pd.Timestamp(los["reference_date"].values[i])
        b = pd.Timestamp(los["secondary_date"].values[i])
        stats, other, s1_map = sensor_agreement(los.isel(pair=i, drop=True),
                                                float(los["incidence_deg"].values[i]), s1, a, b)
        if stats["n"] == 0:
            continue
        rows.append({"file": str(los["file"].values[i]), "sensor": key, "platform": platform,
                     "reference_date": f"{a:%Y-%m-%d}", "secondary_date": f"{b:%Y-%m-%d}",
                     **stats})
        if best is None or stats["n"] > best[0]:
            best = (stats["n"], xr.Dataset({"other": other, "sentinel1": s1_map},
                                           attrs={"file": rows[-1]["file"], "platform": platform,
                                                  **{k: v for k, v in stats.items()}}))
    return rows, best[1] if best else None


def build_longterm(cfg: StudyConfig, s1: xr.Dataset, pairs: xr.Dataset,
                   rasters: xr.Dataset | None, gacos: xr.DataArray | None,
                   t_air_c: pd.Series | None) -> dict:
    """The whole dataset in memory: maps, seasons, pair table, period table, agreement."""
    opts = cfg.sentinel1
    shape = s1["incidence_deg"].shape
    stable = (stable_ground(rasters["ground_ice"].values, opts.stable_max_ground_ice)
              if rasters is not None and "ground_ice" in rasters else np.ones(shape, bool))
    los = postprocess_pairs(pairs, opts.coherence_threshold, stable, opts.ramp,
                            gacos if opts.gacos else None, cfg.longterm.min_stable_pixels)
    los = los.assign_coords(y=s1["y"], x=s1["x"])
    stable_da = xr.DataArray(stable, dims=("y", "x"), coords={"y": s1["y"], "x": s1["x"]})
    result = period_maps(los, _periods(cfg), s1, t_air_c, _settings(cfg),
                         cfg.longterm.min_span_days, cfg.longterm.max_partial_span_days,
                         stable_da)
    result.pairs["gacos_applied"] = [bool(g) for g in los.attrs["gacos_applied"]]
    mask, count, needed = common_area(result.maps, cfg.longterm.common_area_min_sensors)
    table = period_table(result.maps, mask, cfg.longterm.scaling, cfg.sentinel1.sensor,
                         cfg.longterm.max_thaw_noise_mm)
    rows, fig9 = _agreement(cfg, los, s1)
    return {"maps": result.maps, "seasons": result.seasons, "pairs": result.pairs,
            "mask": mask, "n_sensors": count, "min_sensors_used": needed, "table": table,
            "agreement": rows, "fig9": fig9}


def season_table(seasons: xr.Dataset | None, mask: xr.DataArray) -> pd.DataFrame:
    """Per scaled partial pair: mean ± std over ``mask`` of the pair and both scalings (mm)."""
    if seasons is None:
        return pd.DataFrame()
    rows = []
    for i in range(seasons.sizes["season"]):
        s = seasons.isel(season=i)
        row = {"file": str(s["file"].values), "sensor": str(s["sensor"].values),
               "period": str(s["period"].values), "year": int(s["year"].values),
               "thawing_index_factor": float(s["thawing_index_factor"].values),
               "regional_ratio": float(s["regional_ratio"].values),
               "s1_years": int(s["s1_years"].values),
               "regional_share": float(s["ratio_regional"].where(mask).mean())}
        for name in ("pair_los", "thaw_sentinel1", "thaw_thawing_index"):
            v = s[name].where(mask).values
            row[f"{name}_mm_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            row[f"{name}_mm_std"] = float(np.nanstd(v)) if np.isfinite(v).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _clean(ds: xr.Dataset) -> xr.Dataset:
    """Scalar coordinates dropped and only CF attributes kept (units, long_name)."""
    ds = ds.drop_vars([c for c in ds.coords if ds[c].ndim == 0])
    for name in ds.data_vars:
        ds[name].attrs = {k: v for k, v in ds[name].attrs.items() if k in ("units", "long_name")}
    return ds


def _netcdf(out: dict, s1: xr.Dataset, path: Path, cfg: StudyConfig) -> None:
    ds = _clean(out["maps"])
    ds["common_mask"] = out["mask"].astype(np.uint8).assign_attrs(
        units="1", long_name=f"seen by at least {out['min_sensors_used']} sensors")
    ds["n_sensors"] = out["n_sensors"]
    if out["seasons"] is not None:
        seasons = _clean(out["seasons"].drop_vars("s1_season"))
        for name in seasons.coords:
            if seasons[name].dtype.kind in "UO":
                seasons[name] = seasons[name].astype(str)
        names = [n for n in (*seasons.data_vars, *seasons.coords) if n not in ("y", "x")]
        ds = ds.merge(seasons.rename({n: f"season_{n}" for n in names}))
    ds["x"].attrs.update(standard_name="projection_x_coordinate", units="m")
    ds["y"].attrs.update(standard_name="projection_y_coordinate", units="m")
    crs = s1["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in s1 else None
    if crs:
        ds = ds.rio.write_crs(crs)  # each (y, x) variable gets grid_mapping = spatial_ref
    for name in ds.coords:
        if ds[name].dtype.kind in "UO":
            ds[name] = ds[name].astype(str)
    ds.attrs.update(Conventions="CF-1.8", title=f"{cfg.title}: long-term multi-sensor dataset",
                    institution="talik", scaling=cfg.longterm.scaling,
                    sign_convention="LOS positive toward the satellite; vertical positive up",
                    common_area_min_sensors=out["min_sensors_used"])
    ds.to_netcdf(path)


def _figures(out: dict, folder: Path) -> list[str]:
    from talik.tasks.figures import agreement_figure, period_maps_figure, period_stats_figure

    folder.mkdir(exist_ok=True)
    made = [period_maps_figure(out["maps"], out["mask"], folder / "fig10_11_period_maps.png"),
            period_stats_figure(out["table"], folder / "period_stats.png")]
    if out["fig9"] is not None:
        made.append(agreement_figure(out["fig9"], folder / "fig9_agreement.png"))
    return [p.name for p in made]


def _summary(table: pd.DataFrame, agreement: list[dict], scaling: str) -> dict:
    def num(v: float) -> float | None:
        return round(float(v), 2) if np.isfinite(v) else None

    return {
        "scaling": scaling,
        "periods": {r["period"]: {"rate_mm_yr": num(r["rate_mm_yr_mean"]),
                                  "thaw_season_mm": num(r["thaw_season_mm_mean"]),
                                  "n_pixels": int(r["n_pixels"])}
                    for r in table.to_dict("records")},
        "agreement": [{k: (num(v) if isinstance(v, float) else v) for k, v in a.items()
                       if k in ("file", "n", "r", "bias", "mae", "rmse")} for a in agreement],
    }


def _longterm_key(cfg: StudyConfig, s1: StepOutput, staged_pairs: StepOutput | None,
                  staged_rasters: StepOutput | None, staged_gacos: StepOutput | None,
                  work_dir: str) -> tuple:
    """What the long-term dataset depends on.

    The sections it reads, its inputs' digests and the station temperature record's checksum.
    """
    t_file = temperature_file(cfg)
    return (cfg.periods, cfg.sensors, cfg.sentinel1, cfg.longterm, s1.digest,
            *(s.digest if s else None for s in (staged_pairs, staged_rasters, staged_gacos)),
            file_sha256(t_file) if t_file else None)


@step("longterm", key=_longterm_key)
def longterm_dataset(cfg: StudyConfig, s1: StepOutput, staged_pairs: StepOutput | None,
                     staged_rasters: StepOutput | None, staged_gacos: StepOutput | None,
                     work_dir: str) -> StepOutput:
    """Sentinel-1 product + sparse pairs → the long-term dataset (``longterm.nc`` and tables)."""
    logger = step_logger()
    t_file = temperature_file(cfg)
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            product = xr.open_dataset(Path(s1.path) / "sentinel1.nc").load()
            pairs_path = Path(staged_pairs.path) / "pairs.zarr" if staged_pairs else None
            if pairs_path is None or not pairs_path.exists():
                summary = {"status": "no sparse-sensor pairs staged", "periods": {},
                           "agreement": []}
                (sd.work / "summary.json").write_text(json.dumps(summary))
            else:
                pairs = xr.open_zarr(pairs_path).load()
                r_path = Path(staged_rasters.path) / "rasters.zarr" if staged_rasters else None
                rasters = xr.open_zarr(r_path).load() if r_path and r_path.exists() else None
                g_path = Path(staged_gacos.path) / "gacos.zarr" if staged_gacos else None
                gacos = (xr.open_zarr(g_path)["ztd_m"].load()
                         if g_path and g_path.exists() else None)
                t_air = read_station_temperature(t_file) if t_file else None
                if t_air is None:
                    logger.warning("no daily air temperature: the thawing-index scaling is NaN")
                out = build_longterm(cfg, product, pairs, rasters, gacos, t_air)
                _netcdf(out, product, sd.work / "longterm.nc", cfg)
                out["table"].to_csv(sd.work / "period_stats.csv", index=False)
                season_table(out["seasons"], out["mask"]).to_csv(sd.work / "thaw_seasons.csv",
                                                                 index=False)
                out["pairs"].to_csv(sd.work / "pairs.csv", index=False)
                figures = _figures(out, sd.work / "figures")
                (sd.work / "agreement.json").write_text(json.dumps(
                    {"pairs": out["agreement"], "geometry": "Sentinel-1 LOS",
                     "difference": "other sensor − Sentinel-1, mm"}, indent=1, default=float))
                summary = {**_summary(out["table"], out["agreement"], cfg.longterm.scaling),
                           "common_area_min_sensors": out["min_sensors_used"],
                           "n_common_pixels": int(out["mask"].sum()),
                           "pairs_not_used": out["pairs"].loc[~out["pairs"]["used"], "file"].tolist(),
                           "figures": figures}
                (sd.work / "summary.json").write_text(json.dumps(summary, indent=1))
                for r in out["table"].to_dict("records"):
                    logger.info("%s (%s): rate %.1f ± %.1f mm/yr, thaw season %.1f ± %.1f mm",
                                r["period"], r["sensor"], r["rate_mm_yr_mean"], r["rate_mm_yr_std"],
                                r["thaw_season_mm_mean"], r["thaw_season_mm_std"])
        summary = json.loads((sd.final if sd.done else sd.work).joinpath("summary.json").read_text())
    return run.output(sd.final, parameters=cfg.longterm.model_dump(mode="json"), summary=summary)
