"""Recession and attribution on the demo world, against its truth (issue 4's acceptance)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from talik.science.regression import annual_climate_predictors
from talik.tasks.ingest.world import world_as_local
from talik.tasks.readers.tables import read_station_temperature
from talik.tasks.recession import (
    analyse_recession,
    basin_monthly_climate,
    climate_attribution,
    read_discharge_file,
)
from talik.tasks.report import ks_truth_comparison

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysis(science_world):
    cfg, staged = science_world
    raw = staged["raw"]
    source = world_as_local(raw)
    record = read_discharge_file(source.discharge)
    points, windows, units = analyse_recession(record, cfg.recession)
    truth = pd.read_csv(raw / "truth" / "ks_truth.csv", index_col="year")
    world = json.loads((raw / "world.json").read_text())
    predictors = annual_climate_predictors(basin_monthly_climate(source.era5),
                                           read_station_temperature(source.temperature))
    main = windows[windows["window_years"] == 5].set_index("center_year")["ks_days"]
    attribution = climate_attribution(main, predictors, cfg.attribution, 5)
    return windows, truth, world, attribution, units


def test_ks_regime_change_is_recovered(analysis, science_report):
    windows, truth, world, _, units = analysis
    assert units == "mm/d"
    cmp = ks_truth_comparison(windows, truth, world["disturbance"], 5)
    science_report.append(f"recession: Ks during/before the disturbance = "
                          f"{cmp['estimated_ratio']:.2f} (truth {cmp['true_ratio']:.2f}, "
                          f"error {cmp['relative_error']:+.1%})")
    assert cmp["true_ratio"] > 1.3  # the world's recession really slows
    assert abs(cmp["relative_error"]) <= 0.15
    for length in (1, 3, 5):
        assert (windows["window_years"] == length).any()


def test_climate_only_model_fails_to_predict_the_disturbance(analysis, science_report):
    _, _, _, res, _ = analysis
    model, gap = res["model"], res["gap"]
    science_report.append(
        f"attribution: climate-only model before 2003 R² {model.r2:.2f} (p {model.p_value:.1g}); "
        f"after: observed − predicted {gap['mean_residual']:+.1f} d, p = {gap['p_value']:.1g} "
        f"(windows {gap['independent_windows']}), {gap['fraction_above_pi']:.0%} above the 95 % "
        f"prediction interval")
    assert model.r2 > 0.5 and model.p_value < 0.001  # climate explains Ks before mining
    assert gap["mean_residual"] > 0
    assert gap["p_value"] < 0.01
    corr = res["correlations"]
    assert set(corr.index) == {"air_temperature", "precipitation", "evapotranspiration",
                               "net_radiation", "snow_depth", "soil_moisture"}
