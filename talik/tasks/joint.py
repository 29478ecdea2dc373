"""Joint assessment: streamflow recession against ground motion, period by period (Fig. 14c).

For every study period, the mean vertical deformation rate over the area every period's sensor
sees (from the sensor's long pairs, or the Sentinel-1 time series), and the mean Ks of the
moving windows centred in the period; then their correlation. The thaw-season deformation
needs the long-term multi-sensor dataset (Eq. 4 scaling of partial-season pairs), which talik
does not build yet: only the Sentinel-1 period has it, so that correlation is reported as not
available rather than computed from one point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from prefect import task

from talik.config import StudyConfig
from talik.science.compare import period_correlation
from talik.science.geometry import los_to_vertical
from talik.science.velocity_reference import lband_rate
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of
from talik.tasks.records import StepOutput
from talik.tasks.sentinel1 import stable_mask_of
from talik.tasks.steps import STEP_CACHE, step_folder

__all__ = ["joint_assessment", "period_means"]


def period_means(cfg: StudyConfig, product: xr.Dataset, pairs: xr.Dataset | None,
                 rasters: xr.Dataset | None, windows: pd.DataFrame) -> pd.DataFrame:
    """Per period: vertical rate mean ± std over the common area, S1 thaw season, mean Ks."""
    options = cfg.sentinel1
    incidence = product["incidence_deg"]
    stable = stable_mask_of(rasters, incidence.shape, options.stable_max_ground_ice)
    maps, thaw = {}, {}
    for period in cfg.periods:
        if period.sensor == options.sensor:
            maps[period.name] = product["velocity_vertical"]
            thaw[period.name] = product["thaw_season_deformation_mean_vertical"]
            continue
        if pairs is None:
            continue
        platform = cfg.sensors[period.sensor].platform
        inside = ((pairs["sensor"] == platform)
                  & (pairs["reference_date"] >= np.datetime64(period.start))
                  & (pairs["secondary_date"] <= np.datetime64(period.end)))
        if not bool(inside.any()):
            continue
        try:
            los_rate = lband_rate(pairs.isel(pair=np.flatnonzero(inside.values)),
                                             platform, options.velocity_reference_min_span_days,
                                             options.coherence_threshold, incidence, stable,
                                             options.ramp)
        except ValueError:  # no long pair in the period
            continue
        maps[period.name] = los_to_vertical(los_rate, incidence)
    common = np.ones(incidence.shape, bool)
    for m in maps.values():
        common &= np.isfinite(m.values)
    main = windows[(windows["window_years"] == cfg.recession.main_window_years)
                   & (windows["status"] == "ok")]
    rows = []
    for period in cfg.periods:
        sel = main[(main["center_year"] >= period.start.year)
                   & (main["center_year"] <= period.end.year)]
        rate = maps.get(period.name)
        t = thaw.get(period.name)
        rows.append({
            "period": period.name, "label": period.label, "sensor": period.sensor,
            "start": str(period.start), "end": str(period.end),
            "rate_mm_yr_mean": float(rate.values[common].mean()) if rate is not None else np.nan,
            "rate_mm_yr_std": float(rate.values[common].std()) if rate is not None else np.nan,
            "thaw_season_mm_mean": float(t.values[common].mean()) if t is not None else np.nan,
            "thaw_season_mm_std": float(t.values[common].std()) if t is not None else np.nan,
            "ks_days_mean": float(sel["ks_days"].mean()) if len(sel) else np.nan,
            "n_common_pixels": int(common.sum()),
        })
    return pd.DataFrame(rows)


@task(name="joint-assessment", cache_policy=STEP_CACHE, persist_result=True)
def joint_assessment(cfg: StudyConfig, s1: StepOutput, staged_pairs: StepOutput | None,
                     staged_rasters: StepOutput | None, recession: StepOutput, work_dir: str
                     ) -> StepOutput:
    """Period means of deformation and Ks, and their correlation (r, p)."""
    digest = digest_of("joint-assessment", cfg.periods, cfg.sentinel1, s1.digest,
                       staged_pairs.digest if staged_pairs else None,
                       staged_rasters.digest if staged_rasters else None, recession.digest,
                       code_digest())
    with step_folder(work_dir, "joint-assessment", digest) as sd:
        if not sd.done:
            product = xr.open_dataset(Path(s1.path) / "sentinel1.nc").load()
            pairs_path = Path(staged_pairs.path) / "pairs.zarr" if staged_pairs else None
            pairs = xr.open_zarr(pairs_path).load() if pairs_path and pairs_path.exists() else None
            rasters_path = Path(staged_rasters.path) / "rasters.zarr" if staged_rasters else None
            rasters = (xr.open_zarr(rasters_path).load()
                       if rasters_path and rasters_path.exists() else None)
            windows = pd.read_csv(Path(recession.path) / "ks_windows.csv")
            table = period_means(cfg, product, pairs, rasters, windows).set_index("period")
            table.to_csv(sd.work / "period_means.csv")
            # Subsidence is negative: correlate Ks with the subsidence *rate* (−rate), so that a
            # positive r means "more subsidence, slower recession".
            rate = period_correlation(table["ks_days_mean"], -table["rate_mm_yr_mean"])
            n_thaw = int(table["thaw_season_mm_mean"].notna().sum())
            result = {
                "ks_vs_subsidence_rate": rate,
                "ks_vs_thaw_season_subsidence": (
                    period_correlation(table["ks_days_mean"], -table["thaw_season_mm_mean"])
                    if n_thaw >= 3 else {"r": None, "p_value": None, "n": n_thaw,
                                         "note": "needs the long-term thaw-season dataset"}),
            }
            (sd.work / "joint.json").write_text(json.dumps(result, indent=1))
            step_logger().info("joint assessment: Ks vs subsidence rate r = %.2f (p = %.2g, "
                               "%d periods)", rate["r"], rate["p_value"], rate["n"])
        result = json.loads((sd.final if sd.done else sd.work).joinpath("joint.json").read_text())
    return StepOutput(step="joint-assessment", path=str(sd.final), digest=digest,
                      summary=result)
