"""Climate attribution of the recession time constant (paper §3.2 and Fig. 14a–b).

A multiple linear regression of the moving-window Ks on moving averages of climate
predictors is fitted on the period *before* the disturbance only, then used to predict Ks
after it: what climate alone would have given. The observed − predicted gap is the
non-climatic signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

__all__ = [
    "ClimateModel",
    "annual_climate_predictors",
    "attribution",
    "fit_climate_model",
    "moving_average",
    "predictor_correlations",
]


def moving_average(frame: pd.DataFrame | pd.Series, years: int) -> pd.DataFrame | pd.Series:
    """Centred moving average over ``years`` consecutive years (NaN where incomplete)."""
    return frame.rolling(years, center=True, min_periods=years).mean()


def annual_climate_predictors(
    monthly: pd.DataFrame,
    air_temperature_daily: pd.Series | None = None,
    thaw_months: tuple[int, ...] = (5, 6, 7, 8, 9, 10),
    cold_months: tuple[int, ...] = (11, 12, 1, 2, 3, 4),
) -> pd.DataFrame:
    """Yearly predictors from monthly basin means (method.md §5).

    ``monthly`` is indexed by month start with ``precipitation`` and ``evapotranspiration``
    (monthly totals, mm), ``net_radiation`` (MJ m⁻² d⁻¹), ``snow_depth`` (m), ``soil_moisture``
    (m³/m³) and ``air_temperature`` (°C). Precipitation and evapotranspiration are summed over
    the thaw season, net radiation and soil moisture averaged over it, snow depth averaged over
    the cold season ending in the year (November of the year before to April), and air
    temperature is the annual mean — of the station record when given, else of ``monthly``.
    """
    idx = pd.DatetimeIndex(monthly.index)
    thaw = monthly[idx.month.isin(thaw_months)]
    ty = pd.DatetimeIndex(thaw.index).year
    cold_mask = idx.month.isin(cold_months)
    cold = monthly[cold_mask]
    cold_year = np.where(idx[cold_mask].month >= 7, idx[cold_mask].year + 1, idx[cold_mask].year)
    out = pd.DataFrame({
        "precipitation": thaw["precipitation"].groupby(ty).sum(min_count=len(thaw_months)),
        "evapotranspiration": thaw["evapotranspiration"].groupby(ty).sum(
            min_count=len(thaw_months)),
        "net_radiation": thaw["net_radiation"].groupby(ty).mean(),
        "soil_moisture": thaw["soil_moisture"].groupby(ty).mean(),
        "snow_depth": cold["snow_depth"].groupby(cold_year).mean(),
    })
    if air_temperature_daily is not None:
        t = air_temperature_daily.astype(float)
        counts = t.groupby(t.index.year).count()
        annual = t.groupby(t.index.year).mean().where(counts >= 300)
    else:
        annual = monthly["air_temperature"].groupby(idx.year).mean()
    out["air_temperature"] = annual
    out.index.name = "year"
    return out.sort_index()


@dataclass(frozen=True)
class ClimateModel:
    """A fitted multiple linear regression ``Ks ~ predictors`` (statsmodels OLS)."""

    result: object
    predictors: list[str]
    fit_years: list[int]

    @property
    def r2(self) -> float:
        """Coefficient of determination on the fitting years."""
        return float(self.result.rsquared)

    @property
    def p_value(self) -> float:
        """p-value of the overall F test."""
        return float(self.result.f_pvalue)

    def coefficients(self) -> pd.DataFrame:
        """Coefficient, standard error and p-value of each term."""
        r = self.result
        return pd.DataFrame({"coefficient": r.params, "std_error": r.bse, "p_value": r.pvalues})

    def predict(self, predictors: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
        """Predicted Ks with its confidence and prediction intervals, per row of ``predictors``."""
        x = sm.add_constant(predictors[self.predictors], has_constant="add")
        frame = self.result.get_prediction(x).summary_frame(alpha=1 - confidence)
        frame.index = predictors.index
        # Standard error of a new observation: the mean's error and the residual scatter.
        frame["se_observation"] = np.sqrt(frame["mean_se"] ** 2 + float(self.result.scale))
        frame["df"] = float(self.result.df_resid)
        return frame.rename(columns={"mean": "predicted", "mean_ci_lower": "ci_low",
                                     "mean_ci_upper": "ci_high", "obs_ci_lower": "pi_low",
                                     "obs_ci_upper": "pi_high"})[
            ["predicted", "ci_low", "ci_high", "pi_low", "pi_high", "se_observation", "df"]]


def fit_climate_model(ks: pd.Series, predictors: pd.DataFrame, before: tuple[int, int]
                      ) -> ClimateModel:
    """Fit Ks (indexed by year) on predictors (same years), over the ``before`` years only."""
    names = list(predictors.columns)
    frame = pd.concat([ks.rename("ks"), predictors], axis=1).sort_index()
    frame = frame.loc[before[0] : before[1]].dropna()
    if len(frame) < len(names) + 3:
        raise ValueError(f"only {len(frame)} years with Ks and every predictor in {before}; "
                         f"need at least {len(names) + 3} for {len(names)} predictors")
    result = sm.OLS(frame["ks"], sm.add_constant(frame[names])).fit()
    return ClimateModel(result, names, [int(y) for y in frame.index])


def predictor_correlations(ks: pd.Series, predictors: pd.DataFrame, before: tuple[int, int]
                           ) -> pd.DataFrame:
    """Pearson r and p of each predictor with Ks over the ``before`` years (Fig. 14b)."""
    rows = {}
    for name in predictors:
        pair = pd.concat([ks, predictors[name]], axis=1).sort_index()
        pair = pair.loc[before[0] : before[1]].dropna()
        r, p = stats.pearsonr(pair.iloc[:, 0], pair.iloc[:, 1]) if len(pair) > 2 else (np.nan,
                                                                                        np.nan)
        rows[name] = {"r": float(r), "p_value": float(p), "n": len(pair)}
    return pd.DataFrame.from_dict(rows, orient="index")


def attribution(observed: pd.Series, prediction: pd.DataFrame, after: tuple[int, int],
                window_years: int) -> dict:
    """Observed − climate-predicted Ks after the disturbance, and whether it is significant.

    Each window's gap is standardised by the standard error of a new observation under the
    climate model, ``z = (observed − predicted) / se`` (Student t with the model's residual
    degrees of freedom). Overlapping moving windows share recession points, so the test keeps
    one window in every ``window_years`` (windows that share no year, counted back from the
    last one) and combines their one-sided p-values (observed above predicted) by Stouffer's
    method; ``p_value`` is that combined p-value. ``fraction_above_pi`` counts all the windows
    above the 95 % prediction interval.
    """
    joined = pd.concat([observed.rename("observed"), prediction], axis=1).sort_index()
    joined = joined.loc[after[0] : after[1]].dropna(subset=["observed", "predicted"])
    resid = joined["observed"] - joined["predicted"]
    n = len(resid)
    if n == 0:
        return {"residual": resid, "mean_residual": np.nan, "z_combined": np.nan,
                "p_value": np.nan, "n_windows": 0, "n_independent": 0,
                "fraction_above_pi": np.nan, "independent_windows": []}
    independent = joined.iloc[::-1].iloc[::window_years].iloc[::-1]
    t = (independent["observed"] - independent["predicted"]) / independent["se_observation"]
    p_one = stats.t.sf(t.to_numpy(), df=independent["df"].to_numpy())
    z = stats.norm.isf(np.clip(p_one, 1e-300, 1.0))
    z_combined = float(z.sum() / np.sqrt(len(z)))
    return {
        "residual": resid,
        "mean_residual": float(resid.mean()),
        "z_combined": z_combined,
        "p_value": float(stats.norm.sf(z_combined)),
        "n_windows": n,
        "n_independent": len(independent),
        "independent_windows": [int(v) for v in independent.index],
        "fraction_above_pi": float((joined["observed"] > joined["pi_high"]).mean()),
    }
