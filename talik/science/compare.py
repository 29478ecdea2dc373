"""Agreement statistics between two maps or series (estimate vs truth, sensor vs sensor)."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["agreement", "masked_mean_std", "period_correlation"]


def agreement(estimate: xr.DataArray | np.ndarray, reference: xr.DataArray | np.ndarray,
              mask: xr.DataArray | np.ndarray | None = None) -> dict[str, float]:
    """Compare ``estimate`` with ``reference`` where both are finite (and ``mask`` is true).

    Returns ``n`` (pixels compared), ``bias`` (mean of estimate − reference), ``mae`` (mean
    absolute difference), ``rmse`` and ``r`` (Pearson correlation), in the inputs' units.
    """
    a = np.asarray(estimate, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    use = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        use &= np.broadcast_to(np.asarray(mask, dtype=bool), a.shape)
    n = int(use.sum())
    if n == 0:
        return {"n": 0, "bias": np.nan, "mae": np.nan, "rmse": np.nan, "r": np.nan}
    d = a[use] - b[use]
    varies = n > 2 and a[use].std() > 0 and b[use].std() > 0
    r = float(np.corrcoef(a[use], b[use])[0, 1]) if varies else np.nan
    return {"n": n, "bias": float(d.mean()), "mae": float(np.abs(d).mean()),
            "rmse": float(np.sqrt((d**2).mean())), "r": r}


def period_correlation(a, b) -> dict[str, float]:
    """Pearson r and p between two per-period series (aligned on their index, NaN dropped)."""
    import pandas as pd
    from scipy import stats

    pair = pd.concat([pd.Series(a), pd.Series(b)], axis=1).dropna()
    n = len(pair)
    if n < 3 or pair.iloc[:, 0].std() == 0 or pair.iloc[:, 1].std() == 0:
        return {"r": float("nan"), "p_value": float("nan"), "n": n}
    r, p = stats.pearsonr(pair.iloc[:, 0], pair.iloc[:, 1])
    return {"r": float(r), "p_value": float(p), "n": n}


def masked_mean_std(values: xr.DataArray | np.ndarray, mask: xr.DataArray | np.ndarray
                    ) -> dict[str, float]:
    """Mean and standard deviation of the finite ``values`` where ``mask`` is true (inputs' units).

    Returns ``mean``, ``std`` (population, ddof 0) and ``n`` (pixels used); NaN when none.
    """
    a = np.asarray(values, dtype=np.float64)
    use = np.isfinite(a) & np.broadcast_to(np.asarray(mask, dtype=bool), a.shape)
    n = int(use.sum())
    if n == 0:
        return {"mean": np.nan, "std": np.nan, "n": 0}
    return {"mean": float(a[use].mean()), "std": float(a[use].std()), "n": n}
