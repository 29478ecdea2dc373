"""Joint assessment: streamflow recession against ground motion, period by period (Fig. 14).

For every study period, the mean ± std vertical deformation rate and thaw-season deformation
over the area every sensor sees (from the long-term dataset, :mod:`talik.tasks.longterm`), and
the mean Ks of the moving windows centred in the period; then the correlation of Ks with the
subsidence rate and with the thaw-season subsidence (r, p), and the figure that puts both
records on one time axis.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from talik.config import StudyConfig
from talik.science.compare import period_correlation
from talik.tasks.figures import joint_figure
from talik.tasks.log import step_logger
from talik.tasks.records import StepOutput
from talik.tasks.steps import step, this_step

__all__ = ["joint_assessment", "period_means"]


def period_means(cfg: StudyConfig, stats: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """Per period: vertical deformation and the mean Ks of the windows centred in it.

    Rate and thaw-season deformation are the mean ± std over the common area, from the
    long-term ``period_stats`` (``thaw_season_trusted`` false where the long-term step flagged
    the scaled value as too noisy: it is shown, not correlated); Ks is the mean of the main
    windows centred in the period.
    """
    by_period = stats.set_index("period")
    main = windows[(windows["window_years"] == cfg.recession.main_window_years)
                   & (windows["status"] == "ok")]
    rows = []
    for period in cfg.periods:
        sel = main[(main["center_year"] >= period.start.year)
                   & (main["center_year"] <= period.end.year)]
        row = by_period.loc[period.name] if period.name in by_period.index else None

        def value(column: str, row=row) -> float:
            return float(row[column]) if row is not None and column in row else np.nan

        trusted = bool(row["thaw_season_reliable"]) if (
            row is not None and "thaw_season_reliable" in row) else True
        rows.append({
            "period": period.name, "label": period.label, "sensor": period.sensor,
            "start": str(period.start), "end": str(period.end),
            "rate_mm_yr_mean": value("rate_vertical_mm_yr_mean"),
            "rate_mm_yr_std": value("rate_vertical_mm_yr_std"),
            "thaw_season_mm_mean": value("thaw_season_vertical_mm_mean"),
            "thaw_season_mm_std": value("thaw_season_vertical_mm_std"),
            "thaw_season_trusted": trusted,
            "ks_days_mean": float(sel["ks_days"].mean()) if len(sel) else np.nan,
            "n_common_pixels": int(value("n_pixels")) if np.isfinite(value("n_pixels")) else 0,
        })
    return pd.DataFrame(rows)


@step("joint-assessment", key=lambda cfg, longterm, recession, work_dir: (
    cfg.periods, cfg.recession.main_window_years, longterm.digest, recession.digest))
def joint_assessment(cfg: StudyConfig, longterm: StepOutput, recession: StepOutput,
                     work_dir: str) -> StepOutput:
    """Period means of deformation and Ks, their correlations (r, p) and Fig. 14."""
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            stats = pd.read_csv(Path(longterm.path) / "period_stats.csv")
            windows = pd.read_csv(Path(recession.path) / "ks_windows.csv")
            table = period_means(cfg, stats, windows)
            table.set_index("period").to_csv(sd.work / "period_means.csv")
            # Subsidence is negative: Ks is correlated with the subsidence (−rate, −thaw), so
            # that a positive r means "more subsidence, slower recession".
            result = {
                "ks_vs_subsidence_rate": period_correlation(
                    table["ks_days_mean"], -table["rate_mm_yr_mean"]),
                "ks_vs_thaw_season_subsidence": {
                    **period_correlation(table["ks_days_mean"], -table["thaw_season_mm_mean"].where(
                        table["thaw_season_trusted"])),
                    "left_out": table.loc[~table["thaw_season_trusted"]
                                          & table["thaw_season_mm_mean"].notna(), "period"].tolist()},
            }
            (sd.work / "joint.json").write_text(json.dumps(result, indent=1))
            (sd.work / "figures").mkdir()
            joint_figure(table, windows, cfg.recession.main_window_years,
                         sd.work / "figures" / "joint_ks_deformation.png")
            for name, c in result.items():
                step_logger().info("joint assessment: %s r = %.2f (p = %.2g, %d periods)", name,
                                   c["r"], c["p_value"], c["n"])
        result = json.loads((sd.final if sd.done else sd.work).joinpath("joint.json").read_text())
    return run.output(sd.final, summary=result)
