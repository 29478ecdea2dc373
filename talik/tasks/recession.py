"""Streamflow recession (Ks) and climate attribution: files in, tables and figures out.

Reads the discharge record (and, for attribution, ERA5-Land and the station temperature),
calls :mod:`talik.science.recession` and :mod:`talik.science.regression`, and writes:

* ``ks_windows.csv`` — one row per window and window length (1/3/5 years by default):
  ``window_years, window_start, window_end, center_year, a, b, ks_days, ks_ci_low, ks_ci_high,
  r2, n_points, n_events, q_median, tau_median_days, status, units``;
* ``recession_points.csv`` — every recession point (date, flow, dQ/dt, event);
* ``attribution.json`` + ``climate_predictions.csv`` — the climate-only model fitted before the
  disturbance, its predictions with 95 % intervals after it, and the observed − predicted gap;
* figures (Fig. 4b–c, S5, 14a–b).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import xarray as xr

from talik.config import AttributionOptions, DischargeFile, RecessionOptions
from talik.science.recession import fit_recession, recession_points, windowed_fits
from talik.science.regression import (
    annual_climate_predictors,
    attribution,
    fit_climate_model,
    moving_average,
    predictor_correlations,
)
from talik.tasks.log import step_logger
from talik.tasks.readers.tables import DischargeRecord, read_discharge, read_station_temperature
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.steps import step, this_step

__all__ = [
    "KS_COLUMNS",
    "analyse_recession",
    "basin_monthly_climate",
    "climate_attribution",
    "read_discharge_file",
    "recession_analysis",
]

KS_COLUMNS = ["window_start", "window_end", "center_year", "a", "b", "ks_days", "ks_ci_low",
              "ks_ci_high", "r2", "n_points", "n_events", "units"]


def read_discharge_file(spec: DischargeFile) -> DischargeRecord:
    """Read the discharge record a study (or the command line) describes."""
    return read_discharge(spec.path, spec.date_column, spec.flow_column, spec.units,
                          spec.basin_area_km2, tuple(spec.missing_values), spec.date_format,
                          spec.sep, spec.header, spec.column_names)


def analyse_recession(record: DischargeRecord, options: RecessionOptions
                      ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Recession points and moving-window fits for every configured window length.

    Returns ``(points, windows, units)``; flows are in ``options.flow_units``.
    """
    flow = record.flow(options.flow_units)
    points = recession_points(flow, options.min_recession_days, options.months,
                              options.exclude_peak, options.difference, options.select)
    years = pd.DatetimeIndex(flow.dropna().index).year
    units = options.flow_units
    tables = []
    for length in sorted(set(options.window_years) | {options.main_window_years}):
        w = windowed_fits(points, length, int(years.min()), int(years.max()),
                          options.min_points, units=units)
        tables.append(w.assign(window_years=length))
    windows = pd.concat(tables, ignore_index=True)
    return points, windows, units


def basin_monthly_climate(era5_path: Path, bbox=None) -> pd.DataFrame:
    """ERA5-Land monthly basin means as a frame by month (from raw ERA5-Land files)."""
    from talik.tasks.stage import basin_mean_climate

    return basin_mean_climate(era5_path, bbox).to_dataframe()


def climate_attribution(ks: pd.Series, predictors: pd.DataFrame, options: AttributionOptions,
                        window_years: int) -> dict:
    """Fit Ks on smoothed predictors before the disturbance; predict and test after it."""
    smooth = moving_average(predictors[options.predictors], options.moving_average_years)
    before = (options.before_start, options.before_end)
    model = fit_climate_model(ks, smooth, before)
    prediction = model.predict(smooth.dropna(), options.confidence)
    after = (options.before_end + 1, int(ks.dropna().index.max()))
    gap = attribution(ks, prediction, after, window_years)
    return {
        "model": model,
        "prediction": prediction,
        "correlations": predictor_correlations(ks, smooth, before),
        "gap": gap,
        "before": before,
        "after": after,
    }


@step("recession", key=lambda inputs, discharge, climate, options, attribution_options, work_dir: (
    inputs.digest_of_roles("discharge", "temperature"), discharge,
    climate.digest if climate else None, options, attribution_options))
def recession_analysis(inputs: InputSet, discharge: DischargeFile, climate: StepOutput | None,
                       options: RecessionOptions, attribution_options: AttributionOptions,
                       work_dir: str) -> StepOutput:
    """Discharge → Ks windows; with staged ERA5-Land (+ station record) → climate attribution."""
    logger = step_logger()
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            record = read_discharge_file(discharge)
            points, windows, units = analyse_recession(record, options)
            points.to_csv(sd.work / "recession_points.csv")
            windows.to_csv(sd.work / "ks_windows.csv", index=False)
            pooled = fit_recession(points, options.min_points)
            summary: dict = {"units": units, "counts": record.counts,
                             "pooled": pooled.as_dict()}
            staged = Path(climate.path) / "era5_basin_monthly.nc" if climate else None
            if staged is not None and staged.exists():
                station = inputs.location("temperature")
                temp = read_station_temperature(station) if station else None
                with xr.open_dataset(staged) as ds:
                    monthly = ds.load().to_dataframe()
                predictors = annual_climate_predictors(
                    monthly, temp,
                    tuple(attribution_options.thaw_season_months),
                    tuple(attribution_options.cold_season_months))
                predictors.to_csv(sd.work / "climate_predictors.csv")
                main = windows[windows["window_years"] == options.main_window_years]
                ks = main.set_index("center_year")["ks_days"]
                res = climate_attribution(ks, predictors, attribution_options,
                                          options.main_window_years)
                res["prediction"].join(ks.rename("observed")).to_csv(
                    sd.work / "climate_predictions.csv", index_label="center_year")
                model = res["model"]
                summary["attribution"] = {
                    "before": list(res["before"]), "after": list(res["after"]),
                    "r2": model.r2, "p_value": model.p_value, "fit_years": len(model.fit_years),
                    "coefficients": model.coefficients().to_dict(orient="index"),
                    "correlations_before": res["correlations"].to_dict(orient="index"),
                    "mean_observed_minus_predicted": res["gap"]["mean_residual"],
                    "gap_z": res["gap"]["z_combined"],
                    "gap_p_value": res["gap"]["p_value"],
                    "gap_windows_tested": res["gap"]["independent_windows"],
                    "fraction_above_prediction_interval": res["gap"]["fraction_above_pi"],
                }
            (sd.work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
            _recession_figures(record.flow(options.flow_units), points, windows, sd.work,
                               options, summary)
            logger.info("recession: %d points in %d events; pooled Ks %.1f d (b = %.2f)",
                        pooled.n_points, pooled.n_events, pooled.ks_days, pooled.b)
        summary = json.loads((sd.final if sd.done else sd.work).joinpath("summary.json").read_text())
    attribution = summary.get("attribution", {})
    return run.output(sd.final,
                      parameters={"recession": options.model_dump(mode="json"),
                                  "attribution": attribution_options.model_dump(mode="json")},
                      summary={"units": summary["units"],
                               "pooled_ks_days": summary["pooled"]["ks_days"],
                               "pooled_b": summary["pooled"]["b"],
                               "attribution_r2": attribution.get("r2"),
                               "gap_p_value": attribution.get("gap_p_value")})


def _recession_figures(flow: pd.Series, points: pd.DataFrame, windows: pd.DataFrame,
                       folder: Path, options: RecessionOptions, summary: dict) -> None:
    from talik.tasks.figures import attribution_figure, ks_windows_figure, recession_fit_figure

    recession_fit_figure(flow, points, options, folder / "recession_fit.png")
    ks_windows_figure(windows, folder / "ks_windows.png")
    if (folder / "climate_predictions.csv").exists():
        predictions = pd.read_csv(folder / "climate_predictions.csv", index_col="center_year")
        predictors = pd.read_csv(folder / "climate_predictors.csv", index_col="year")
        attribution_figure(predictions, predictors, summary["attribution"],
                           folder / "ks_attribution.png")

