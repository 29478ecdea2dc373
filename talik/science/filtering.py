"""Atmospheric filtering of a displacement time series (paper §3.1.1).

The atmospheric screen is what varies quickly in time but smoothly in space: it is estimated
as a temporal Gaussian high-pass of the series (width = a multiple of the mean acquisition
interval) followed by a spatial Gaussian low-pass (width in metres), and subtracted. Widths are
the Gaussians' standard deviations, as in LiCSBAS step 16.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

from talik.science.seasonal import detrend, linear_rate

__all__ = ["atmospheric_filter", "temporal_lowpass", "spatial_lowpass"]


def _temporal_weights(days: np.ndarray, sigma_days: float) -> np.ndarray:
    dt = days[:, None] - days[None, :]
    w = np.exp(-0.5 * (dt / sigma_days) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def temporal_lowpass(displacement: xr.DataArray, sigma_days: float) -> xr.DataArray:
    """Gaussian-weighted average over acquisitions (irregular sampling), per pixel.

    The average at each date weighs every acquisition by ``exp(−Δt²/2σ²)``; near the ends of
    the series and of winter gaps the window is one-sided.
    """
    days = ((displacement["time"] - displacement["time"][0]) / np.timedelta64(1, "D")).values
    weights_t = _temporal_weights(days.astype(np.float64), sigma_days).T.copy()

    def smooth(block: np.ndarray) -> np.ndarray:  # (..., time) @ Wᵀ, a BLAS matmul
        return block @ weights_t

    out = xr.apply_ufunc(smooth, displacement, input_core_dims=[["time"]],
                         output_core_dims=[["time"]], dask="parallelized",
                         output_dtypes=[np.float64], keep_attrs=True)
    return out.transpose(*displacement.dims)


def _nan_gaussian(block: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of the last two axes that ignores NaNs (normalised convolution)."""
    valid = np.isfinite(block)
    sig = (0,) * (block.ndim - 2) + (sigma, sigma)
    num = gaussian_filter(np.where(valid, block, 0.0), sig, mode="nearest")
    den = gaussian_filter(valid.astype(np.float64), sig, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid & (den > 1e-6), num / den, np.nan)


def spatial_lowpass(field: xr.DataArray, sigma_px: float) -> xr.DataArray:
    """NaN-aware Gaussian low-pass over ``(y, x)``; works blockwise on dask arrays."""
    if sigma_px <= 0:
        return field
    depth = int(np.ceil(4 * sigma_px))
    data = field.transpose(..., "y", "x").data
    if hasattr(data, "map_overlap"):
        axes = {data.ndim - 2: depth, data.ndim - 1: depth}
        out = data.map_overlap(_nan_gaussian, depth=axes, boundary="none", sigma=sigma_px,
                               dtype=np.float64)
    else:
        out = _nan_gaussian(np.asarray(data, dtype=np.float64), sigma_px)
    return field.transpose(..., "y", "x").copy(data=out).transpose(*field.dims)


def atmospheric_filter(
    displacement: xr.DataArray, temporal_sigma_days: float, spatial_sigma_m: float,
    pixel_m: float,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Remove the atmospheric screen: returns ``(filtered, screen)`` (mm, dims as input).

    ``screen = lowpass_space(d − lowpass_time(d))`` with ``d`` the series minus its linear
    trend: removing the trend first keeps the one-sided averages at the ends of the series from
    leaking the trend into the screen (which would change the rate).
    """
    detrended = detrend(displacement, linear_rate(displacement))
    highpass = detrended - temporal_lowpass(detrended, temporal_sigma_days)
    screen = spatial_lowpass(highpass, spatial_sigma_m / pixel_m)
    screen = screen.where(np.isfinite(displacement))
    filtered = (displacement - screen).assign_attrs(displacement.attrs,
                                                    atmospheric_filter="temporal high-pass, "
                                                    "spatial low-pass screen removed")
    return filtered, screen.assign_attrs(units="mm", long_name="estimated atmospheric screen")
