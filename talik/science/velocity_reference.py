"""The velocity reference of the NSBAS constraint from L-band rates (paper Fig. S3).

L-band pairs stay coherent over a year where C-band does not; their annual rate gives the
long-term rate that the Sentinel-1 network cannot tie across winter gaps. The rate map is made
with the post-processing of a Sentinel-1 interferogram (:func:`lband_rate`), put at zero on
stable ground and smoothed (:func:`lband_for_matching`); an initial Sentinel-1 inversion is
chosen (:func:`choose_initial_model`) whose rates are then CDF-matched to it.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from talik.science.calibration import rank_agreement
from talik.science.filtering import spatial_lowpass
from talik.science.geometry import los_to_los
from talik.science.interferogram import postprocess_pairs
from talik.science.inversion import ConstraintSpec, solve_rate
from talik.science.network import Network
from talik.science.scaling import mean_annual_rate

__all__ = [
    "INITIAL_MODELS",
    "INITIAL_MODEL_TIE",
    "choose_initial_model",
    "lband_for_matching",
    "lband_rate",
]

INITIAL_MODELS = ("linear_periodic", "linear", "none")
"""Candidate constraints of the initial inversion, in the order that settles ties."""
INITIAL_MODEL_TIE = 0.02
"""Rank agreements (Spearman) closer than this count as equal when choosing the initial model."""


def lband_rate(pairs: xr.Dataset, platform: str, min_span_days: float,
               coherence_threshold: float, s1_incidence: xr.DataArray | float,
               stable: np.ndarray | None = None, ramp: str = "plane",
               gacos: xr.DataArray | None = None) -> xr.DataArray:
    """Mean annual rate of a sensor's long pairs, in the LOS of incidence ``s1_incidence``.

    mm/yr, positive toward the satellite; ``s1_incidence`` (degrees) is Sentinel-1's for the
    velocity reference, or the sensor's own to keep its LOS. ``gacos`` holds zenith delays
    ``(date, y, x)`` in metres on the pairs' grid.

    Each pair gets the same post-processing as a Sentinel-1 interferogram
    (:func:`~talik.science.interferogram.postprocess_pairs`: coherence mask, GACOS correction
    when delays exist for both its dates, ramp fitted on stable ground and removed, stable
    ground put at zero; a pair with too few coherent stable pixels to be referenced is left
    out).
    """
    mine = pairs["sensor"].values == platform
    if not mine.any():
        raise ValueError(f"no staged pairs of sensor {platform!r} "
                         f"(found {sorted(set(pairs['sensor'].values))})")
    sub = pairs.isel(pair=np.flatnonzero(mine))
    los = postprocess_pairs(sub, coherence_threshold, stable, ramp, gacos)
    span = ((sub["secondary_date"] - sub["reference_date"]) / np.timedelta64(1, "D")).values
    rate = mean_annual_rate(los, span, min_span_days)
    incidence = float(sub["incidence_deg"].values[0])
    out = los_to_los(rate, incidence, s1_incidence)
    return out.assign_attrs(units="mm/yr", long_name=f"{platform} annual rate in Sentinel-1 LOS",
                            n_pairs=rate.attrs["n_pairs"], sensor_incidence_deg=incidence)



def lband_for_matching(lband: xr.DataArray, stable: np.ndarray, smoothing_px: float
                       ) -> tuple[xr.DataArray, float]:
    """The L-band rate map put at zero on stable ground and smoothed; and the offset removed.

    The L-band pairs were each referenced to their own point; the Sentinel-1 pairs are
    referenced to stable ground, so the map's stable-ground median (mm/yr, when at least 10
    stable pixels have a rate) is removed. Only the map's distribution is used by the
    matching, so a Gaussian of ``smoothing_px`` pixels removes decorrelation noise first.
    """
    values = np.asarray(lband.values)
    stable_rates = values[np.asarray(stable, bool) & np.isfinite(values)]
    offset = float(np.median(stable_rates)) if stable_rates.size >= 10 else 0.0
    return spatial_lowpass(lband - offset, smoothing_px), offset


def choose_initial_model(sub: xr.DataArray, lband_sub: np.ndarray,
                         candidates: tuple[str, ...], gamma: float, period_yr: float,
                         min_valid: int = 1) -> tuple[str, dict, np.ndarray]:
    """The initial constraint whose rates rank the overlap most like the L-band map.

    Quantile mapping keeps the rank order of the rates it maps, so the candidate (inverted on
    the spatial subsample ``sub``) whose rates rank the pixels most like ``lband_sub``
    (Spearman) gives the best ``v_ref``. Returns its name, every candidate's rank agreement
    and its rates on the subsample (mm/yr: the least-squares rate of each inverted series,
    :func:`~talik.science.inversion.solve_rate`, as the tiles compute it for the mapping).
    """
    pairs = sub.transpose("pair", "y", "x")
    network = Network.from_stack(pairs)
    data = np.ascontiguousarray(pairs.values.reshape(pairs.sizes["pair"], -1))
    scores, rates = {}, {}
    for model in candidates:
        spec = ConstraintSpec(model, gamma, period_yr)
        rates[model] = solve_rate(data, network, spec, min_valid, threads=None).reshape(
            pairs.shape[1:])
        scores[model] = rank_agreement(rates[model], lband_sub)
    finite = {m: v for m, v in scores.items() if np.isfinite(v)}
    if not finite:
        return candidates[0], scores, rates[candidates[0]]
    # Scores closer than the tolerance are a tie, settled by the fixed order of the
    # candidates: a choice that flips on a 0.01 difference would make the product depend on
    # details such as the first date of the range.
    top = max(finite.values())
    best = next(m for m in candidates if m in finite and finite[m] >= top - INITIAL_MODEL_TIE)
    return best, scores, rates[best]


