"""The products of a Sentinel-1 time series, masked where they cannot be trusted.

:func:`timeseries_products` turns an NSBAS result into the published maps (rate, thaw-season
deformation per year and mean, seasonal amplitude, vertical) with the quality layers and the
mask; :func:`select_points` and :func:`constraint_comparison` give the Fig. 3c series.
"""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from talik.science.geometry import los_to_vertical
from talik.science.inversion import ConstraintSpec, solve_nsbas
from talik.science.network import Network
from talik.science.quality import FLAG_BITS, MaskThresholds, quality_mask
from talik.science.seasonal import linear_rate, seasonal_fit, thaw_season_deformation

__all__ = ["PRODUCT_QUALITY_LAYERS", "constraint_comparison", "select_points",
           "timeseries_products"]


PRODUCT_QUALITY_LAYERS = ("n_valid_ifg", "residual_rms", "temporal_coherence", "n_parts",
                          "bridged_fraction", "condition", "velocity_std")


def timeseries_products(ts: xr.Dataset, incidence: xr.DataArray, limits: MaskThresholds,
                        thaw_onset: str, thaw_end: str, period_yr: float, seasonal_from: str,
                        ) -> tuple[xr.Dataset, dict]:
    """Rate, thaw-season and seasonal maps and the series, masked where not trusted.

    The quality layers and the mask are published unmasked; every value product (series,
    rates, thaw-season deformation, amplitude, vertical) is NaN where ``mask`` is 0. The
    unmasked inversion stays with the caller. ``ts`` is an :func:`invert_nsbas` result
    (with ``displacement_unfiltered`` beside a filtered ``displacement`` when filtered);
    ``incidence`` in degrees. Returns the products and a summary of the mask (counts of
    pixels solved, trusted, and failing each test).
    """
    mask, flags = quality_mask(ts, limits)
    disp = ts["displacement"]
    rate = linear_rate(disp)
    seasonal_src = disp
    if seasonal_from == "unfiltered" and "displacement_unfiltered" in ts:
        seasonal_src = ts["displacement_unfiltered"]
    thaw = thaw_season_deformation(seasonal_src, thaw_onset, thaw_end, rate)
    seasonal = seasonal_fit(seasonal_src, period_yr)
    # One pass over the series for all the maps (each tile is read once).
    rate, thaw, seasonal, inc, mask, flags = dask.compute(rate, thaw, seasonal, incidence, mask,
                                                          flags)
    keep = mask.astype(bool)
    rate, thaw, amplitude = rate.where(keep), thaw.where(keep), seasonal["amplitude"].where(keep)
    ref_date = ts["displacement"].attrs.get("reference_date", str(ts["time"].values[0])[:10])
    out = xr.Dataset(
        {
            "displacement": disp.where(keep).assign_attrs(
                units="mm", long_name=f"cumulative LOS displacement relative to {ref_date}",
                sign_convention="positive toward the satellite", reference_date=ref_date),
            "bridged": ts["bridged"],
            "velocity": rate.assign_attrs(units="mm/yr", long_name="LOS velocity (linear fit)",
                                          sign_convention="positive toward the satellite"),
            "thaw_season_deformation": thaw,
            "thaw_season_deformation_mean": thaw.mean("year").assign_attrs(
                units="mm", long_name="multi-year mean thaw-season deformation (LOS)"),
            "seasonal_amplitude": amplitude.assign_attrs(seasonal["amplitude"].attrs),
            "velocity_vertical": los_to_vertical(rate, inc).assign_attrs(
                units="mm/yr", long_name="vertical velocity (no horizontal motion assumed)"),
            "thaw_season_deformation_vertical": los_to_vertical(thaw, inc).assign_attrs(
                units="mm", long_name="vertical thaw-season deformation"),
            "thaw_season_deformation_mean_vertical": los_to_vertical(
                thaw.mean("year"), inc).assign_attrs(units="mm"),
            **{name: ts[name] for name in PRODUCT_QUALITY_LAYERS},
            "mask": mask,
            "quality_flags": flags,
            "incidence_deg": inc,
        }
    )
    if "velocity_reference" in ts:
        out["velocity_reference"] = ts["velocity_reference"]
    solved = (flags.values & FLAG_BITS["few_interferograms"]) == 0
    summary = {
        "thresholds": vars(limits),
        "n_pixels": int(mask.size),
        "n_solved": int(solved.sum()),
        "n_trusted": int(keep.values.sum()),
        # among solved pixels: how many fail each test (a pixel may fail several)
        "masked_by": {name: int(((flags.values & bit) != 0)[solved].sum())
                      for name, bit in FLAG_BITS.items() if name != "few_interferograms"},
    }
    return out, summary


def select_points(rate: np.ndarray, n_valid: np.ndarray) -> list[tuple[str, int, int]]:
    """The Fig. 3c points: the fastest-subsiding and the most stable pixel (row, column).

    Among pixels with at least the median number of valid interferograms and a finite rate.
    """
    good = (n_valid >= np.percentile(n_valid[n_valid > 0], 50) if (n_valid > 0).any()
            else n_valid >= 0)
    fast = np.where(good & np.isfinite(rate), rate, np.inf)
    calm = np.where(good & np.isfinite(rate), np.abs(rate), np.inf)
    iy, ix = np.unravel_index(int(np.argmin(fast)), fast.shape)
    jy, jx = np.unravel_index(int(np.argmin(calm)), calm.shape)
    return [("P1 (fastest subsidence)", int(iy), int(ix)), ("P2 (stable)", int(jy), int(jx))]


def constraint_comparison(los_points: np.ndarray, network: Network, gamma: float,
                          period_yr: float, v_ref: np.ndarray | None = None
                          ) -> dict[str, np.ndarray]:
    """Series of a few pixels under each constraint model (Fig. 3c): model → (P, N) mm."""
    out = {}
    for label, spec, ref in (
        ("none", ConstraintSpec("none", gamma), None),
        ("linear", ConstraintSpec("linear", gamma, period_yr), None),
        ("linear_periodic", ConstraintSpec("linear_periodic", gamma, period_yr),
         None),
        ("linear_periodic_vref", ConstraintSpec("linear_periodic", gamma, period_yr,
                                                velocity_reference=True), v_ref),
    ):
        if spec.velocity_reference and ref is None:
            continue
        out[label] = solve_nsbas(los_points, network, spec, ref)["displacement"]
    return out
