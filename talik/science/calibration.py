"""Calibrating one rate map to another by CDF matching (quantile mapping; paper Fig. S3).

The Sentinel-1 rate map has the spatial detail and full coverage, but across winter gaps its
absolute rates depend on the constraint model; the L-band rate map is trusted in value but
covers less ground. Matching the Sentinel-1 rates' cumulative distribution to the L-band
one over their overlap gives a monotone mapping, which is then applied to the whole
Sentinel-1 map: the velocity reference ``v_ref``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["QuantileMapping", "fit_cdf_matching", "rank_agreement"]


@dataclass(frozen=True)
class QuantileMapping:
    """A monotone mapping from ``source`` values to ``target`` values.

    Attributes
    ----------
    source_quantiles, target_quantiles
        Matching quantiles of the two distributions over the overlap (same probabilities).
    probabilities
        The probabilities at which the quantiles were taken.
    n_overlap
        Number of pixels the mapping was fitted on.
    """

    source_quantiles: np.ndarray
    target_quantiles: np.ndarray
    probabilities: np.ndarray
    n_overlap: int

    def __call__(self, values: xr.DataArray | np.ndarray) -> xr.DataArray | np.ndarray:
        """Map values; beyond the fitted range, extend with the slope of the outer 5 %."""
        xs, ys = self.source_quantiles, self.target_quantiles
        lo = max(1, int(0.05 * (len(xs) - 1)))
        slope_lo = (ys[lo] - ys[0]) / max(xs[lo] - xs[0], 1e-9)
        slope_hi = (ys[-1] - ys[-1 - lo]) / max(xs[-1] - xs[-1 - lo], 1e-9)

        def apply(v: np.ndarray) -> np.ndarray:
            out = np.interp(v, xs, ys)
            out = np.where(v < xs[0], ys[0] + slope_lo * (v - xs[0]), out)
            out = np.where(v > xs[-1], ys[-1] + slope_hi * (v - xs[-1]), out)
            return np.where(np.isfinite(v), out, np.nan)

        if isinstance(values, xr.DataArray):
            return xr.apply_ufunc(apply, values, dask="parallelized", output_dtypes=[np.float64])
        return apply(np.asarray(values, dtype=np.float64))


def fit_cdf_matching(source: xr.DataArray | np.ndarray, target: xr.DataArray | np.ndarray,
                     n_quantiles: int = 201, min_overlap: int = 50) -> QuantileMapping:
    """Fit the quantile mapping of ``source`` onto ``target`` over pixels where both are valid.

    Parameters
    ----------
    source, target
        Maps on the same grid (e.g. Sentinel-1 and ALOS-2 LOS rates in the same geometry,
        mm/yr); NaN marks pixels without data.
    n_quantiles
        Number of matched quantiles (evenly spaced probabilities from 0 to 1).
    min_overlap
        Fewer valid overlapping pixels than this is an error: the mapping would be noise.
    """
    s = np.asarray(source, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    both = np.isfinite(s) & np.isfinite(t)
    n = int(both.sum())
    if n < min_overlap:
        raise ValueError(f"CDF matching needs at least {min_overlap} overlapping valid pixels; "
                         f"found {n}")
    p = np.linspace(0.0, 1.0, n_quantiles)
    sq = np.quantile(s[both], p)
    tq = np.quantile(t[both], p)
    # Strictly increasing source quantiles keep the mapping a function (ties merge).
    sq, idx = np.unique(sq, return_index=True)
    return QuantileMapping(sq, tq[idx], p[idx], n)


def rank_agreement(a: xr.DataArray | np.ndarray, b: xr.DataArray | np.ndarray) -> float:
    """Spearman rank correlation of two maps over pixels valid in both (NaN if < 10)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 10:
        return float("nan")
    # Pearson's correlation of the ranks (ties take their mean rank), as scipy's spearmanr,
    # with pandas' ranking (scipy.stats alone costs half a second to import).
    rx = pd.Series(x[ok]).rank().to_numpy()
    ry = pd.Series(y[ok]).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])
