"""Time axes and the temporal design basis shared by the inversion, the products and the filter.

One place defines what "t" is (years of 365.25 days since the first date) and the columns a
series is fitted with: an offset, a rate, and harmonics of a period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["decimal_years", "slope_weights", "temporal_basis"]


def decimal_years(time: xr.DataArray | np.ndarray, origin=None) -> np.ndarray:
    """Time in years of 365.25 days since ``origin`` (default: the first time)."""
    t = pd.DatetimeIndex(np.asarray(time))
    start = t[0] if origin is None else pd.Timestamp(origin)
    return ((t - start) / pd.Timedelta(days=1)).to_numpy() / 365.25


def temporal_basis(t_years: np.ndarray, offset: bool = True, rate: bool = True,
                   harmonics: int = 0, period_yr: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """Design columns at times ``t_years`` and their names.

    ``offset`` (1), ``velocity`` (t, years) and, for each harmonic h = 1 … ``harmonics``,
    ``sin``/``cos`` of 2πht/T (named ``sin``/``cos`` for h = 1, ``sin2``/``cos2`` … after).
    """
    t = np.asarray(t_years, dtype=np.float64)
    cols: list[np.ndarray] = []
    names: list[str] = []
    if offset:
        cols.append(np.ones_like(t))
        names.append("offset")
    if rate:
        cols.append(t)
        names.append("velocity")
    for h in range(1, harmonics + 1):
        omega = 2.0 * np.pi * h / period_yr
        cols += [np.sin(omega * t), np.cos(omega * t)]
        names += ["sin", "cos"] if h == 1 else [f"sin{h}", f"cos{h}"]
    return (np.stack(cols, axis=1) if cols else np.zeros((t.size, 0))), names


def slope_weights(t_years: np.ndarray) -> np.ndarray:
    """Weights ``w`` such that ``w · series`` is the least-squares rate (per year) of a series."""
    t = np.asarray(t_years, dtype=np.float64)
    centred = t - t.mean()
    return centred / (centred**2).sum()
