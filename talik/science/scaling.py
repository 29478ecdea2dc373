"""Rates and scalings of sparse-sensor pairs (method.md §3).

* A long pair's rate: ``D · 365.25 / Δdays``.
* LOS of one geometry to another through the vertical (no horizontal motion assumed).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["annual_rate", "mean_annual_rate"]


def annual_rate(displacement_mm: xr.DataArray, span_days: xr.DataArray | float) -> xr.DataArray:
    """Rate of a pair, mm/yr: its displacement normalised to one year (365.25 days)."""
    return (displacement_mm * 365.25 / span_days).assign_attrs(units="mm/yr")


def mean_annual_rate(pairs_los_mm: xr.DataArray, span_days: np.ndarray,
                     min_span_days: float = 300.0) -> xr.DataArray:
    """Mean annual rate (mm/yr) over the pairs spanning at least ``min_span_days``.

    Pairs of about a year (or several) span whole seasonal cycles, so their rate is the
    interannual rate; shorter pairs would alias the thaw-season signal and are left out.
    """
    span = np.asarray(span_days, dtype=np.float64)
    keep = span >= min_span_days
    if not keep.any():
        raise ValueError(f"no pair spans at least {min_span_days:g} days")
    los = pairs_los_mm.isel(pair=np.flatnonzero(keep))
    rates = annual_rate(los, xr.DataArray(span[keep], dims="pair"))
    out = rates.mean("pair", skipna=True)
    return out.assign_attrs(units="mm/yr", long_name="mean annual LOS rate of long pairs",
                            n_pairs=int(keep.sum()))
