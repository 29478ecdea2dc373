"""Which pixels of an NSBAS time series can be trusted: the product mask and its reasons.

Each test reads one quality layer of :func:`talik.science.inversion.invert_nsbas`; a pixel is
kept when it passes every test. ``quality_flags`` records, bit by bit, which tests a pixel
failed, so a user can see why it was masked (and relax one threshold on purpose).

=====  ==========================  ====================================================
 bit    name                        fails when
=====  ==========================  ====================================================
 1      few_interferograms          no solution (fewer valid interferograms than needed,
                                    or the factorisation failed)
 2      low_temporal_coherence      temporal coherence < ``min_temporal_coherence``
 4      mostly_bridged              bridged fraction > ``max_bridged_fraction``
 8      fragmented_network          connected parts > ``max_parts_per_year`` × years
 16     ill_conditioned             condition estimate > ``max_condition``
 32     uncertain_velocity          rate standard error > ``max_velocity_std`` (mm/yr)
=====  ==========================  ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["FLAG_BITS", "MaskThresholds", "quality_mask"]

FLAG_BITS = {
    "few_interferograms": 1,
    "low_temporal_coherence": 2,
    "mostly_bridged": 4,
    "fragmented_network": 8,
    "ill_conditioned": 16,
    "uncertain_velocity": 32,
}


@dataclass(frozen=True)
class MaskThresholds:
    """Limits of the product mask (see the module's table).

    Their defaults are the study's ``[sentinel1] mask_*`` options (``talik.config``).
    """

    min_temporal_coherence: float
    max_bridged_fraction: float
    max_parts_per_year: float
    max_condition: float
    max_velocity_std: float  # mm/yr


def quality_mask(ts: xr.Dataset, limits: MaskThresholds) -> tuple[xr.DataArray, xr.DataArray]:
    """``(mask, quality_flags)`` of an inversion result: 1 = trusted, and the failed tests' bits.

    ``ts`` needs ``displacement`` (time, y, x) and the quality layers ``temporal_coherence``,
    ``bridged_fraction``, ``n_parts``, ``condition`` and ``velocity_std``.
    """
    times = ts["time"].values.astype("datetime64[D]")
    years = max(float((times[-1] - times[0]).astype(np.int64)) / 365.25, 1.0)
    solved = np.isfinite(ts["residual_rms"]) if "residual_rms" in ts else np.isfinite(
        ts["displacement"].isel(time=-1))
    tests = {
        "few_interferograms": ~solved,
        "low_temporal_coherence": ~(ts["temporal_coherence"] >= limits.min_temporal_coherence),
        "mostly_bridged": ts["bridged_fraction"] > limits.max_bridged_fraction,
        "fragmented_network": ts["n_parts"] > limits.max_parts_per_year * years,
        "ill_conditioned": ~(ts["condition"] <= limits.max_condition),
        "uncertain_velocity": ~(ts["velocity_std"] <= limits.max_velocity_std),
    }
    flags = sum(test.astype(np.uint8) * np.uint8(FLAG_BITS[name]) for name, test in tests.items())
    flags = flags.astype(np.uint8).assign_attrs(
        units="1", long_name="quality tests failed (bit field)",
        flag_masks=list(FLAG_BITS.values()), flag_meanings=" ".join(FLAG_BITS))
    mask = (flags == 0).astype(np.uint8).assign_attrs(
        units="1", long_name="1 where the series passes every quality test (products kept)",
        flag_values=[0, 1], flag_meanings="masked trusted",
        thresholds=str({k: v for k, v in vars(limits).items()}))
    return mask, flags
