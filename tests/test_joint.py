"""The joint assessment: Ks against period-mean subsidence rate and thaw-season deformation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from talik.config import load_study
from talik.tasks.joint import joint_assessment
from talik.tasks.records import StepOutput

REPO = Path(__file__).resolve().parent.parent


def _inputs(tmp_path: Path, cfg, thaw: list[float], trusted: list[bool]) -> tuple[StepOutput,
                                                                                  StepOutput]:
    """A long-term table and Ks windows whose answer is known: Ks grows with subsidence."""
    periods = [p.name for p in cfg.periods]
    rates = np.array([1.0, -1.0, -7.0, -9.0, -6.0])[:len(periods)]
    lt = tmp_path / "lt"
    lt.mkdir()
    pd.DataFrame({"period": periods, "rate_vertical_mm_yr_mean": rates,
                  "rate_vertical_mm_yr_std": 1.0, "thaw_season_vertical_mm_mean": thaw,
                  "thaw_season_vertical_mm_std": 5.0, "n_pixels": 100,
                  "thaw_season_reliable": trusted}).to_csv(lt / "period_stats.csv", index=False)
    rows = []
    for p, rate in zip(cfg.periods, rates, strict=True):  # Ks = 30 − 2·rate d in each period
        for year in range(p.start.year, p.end.year + 1):
            rows.append({"window_years": cfg.recession.main_window_years, "status": "ok",
                         "center_year": year, "ks_days": 30.0 - 2.0 * rate, "ks_ci_low": 1.0,
                         "ks_ci_high": 2.0})
    rec = tmp_path / "rec"
    rec.mkdir()
    pd.DataFrame(rows).to_csv(rec / "ks_windows.csv", index=False)
    return (StepOutput(step="longterm", path=str(lt), digest="l" * 64),
            StepOutput(step="recession", path=str(rec), digest="r" * 64))


def test_ks_correlates_with_subsidence_and_untrusted_thaw_is_left_out(tmp_path):
    cfg = load_study(REPO / "studies" / "demo.toml")
    thaw = [-60.0, np.nan, -30.0, -45.0, -25.0]
    longterm, recession = _inputs(tmp_path, cfg, thaw, [False, False, True, True, True])
    out = joint_assessment.fn(cfg, longterm, recession, str(tmp_path / "work"))
    result = json.loads((Path(out.path) / "joint.json").read_text())
    rate = result["ks_vs_subsidence_rate"]
    assert rate["n"] == 5 and rate["r"] > 0.9  # more subsidence (rate < 0), larger Ks
    t = result["ks_vs_thaw_season_subsidence"]
    assert t["n"] == 3 and t["left_out"] == ["pre_mining"]  # the untrusted value is not used
    table = pd.read_csv(Path(out.path) / "period_means.csv").set_index("period")
    assert table.loc["pre_mining", "thaw_season_mm_mean"] == -60.0  # shown all the same
    assert not table.loc["pre_mining", "thaw_season_trusted"]
    assert (Path(out.path) / "figures" / "joint_ks_deformation.png").stat().st_size > 10_000
