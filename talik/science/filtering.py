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

from talik.science.temporal import slope_weights

__all__ = ["atmospheric_filter", "highpass_operator", "remove_atmosphere", "spatial_lowpass",
           "temporal_lowpass"]


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
    dtype = _float(displacement.dtype)
    weights_t = _temporal_weights(days.astype(np.float64), sigma_days).T.astype(dtype)

    def smooth(block: np.ndarray) -> np.ndarray:  # (..., time) @ Wᵀ, a BLAS matmul
        return block @ weights_t

    out = xr.apply_ufunc(smooth, displacement, input_core_dims=[["time"]],
                         output_core_dims=[["time"]], dask="parallelized",
                         output_dtypes=[dtype], keep_attrs=True)
    return out.transpose(*displacement.dims)


def _nan_gaussian(block: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of the last two axes that ignores NaNs (normalised convolution).

    Computes in the block's precision (float32 stays float32). When every layer has the same
    valid pixels (a time series: a pixel is inverted at all dates or at none), the weights are
    filtered once instead of once per layer.
    """
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    valid = np.isfinite(block)
    values = np.where(valid, block, 0).astype(dtype, copy=False)
    first = valid[(0,) * (block.ndim - 2)]
    if block.ndim > 2 and (valid == first).all():
        valid = first
    return _lowpass_in_place(values, valid, sigma)


def _lowpass_in_place(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian low-pass of the last two axes of ``values``, in place; returned.

    ``valid`` marks the pixels that count: of ``values``' shape, or of its last axes only when
    every leading layer has the same (its weights are then filtered once). The others are
    NaN in the result, as are pixels with (almost) no valid neighbour.
    """
    values[..., ~valid] = 0
    gaussian_filter(values, (0,) * (values.ndim - 2) + (sigma, sigma), mode="nearest",
                    output=values)
    den = gaussian_filter(valid.astype(values.dtype), (0,) * (valid.ndim - 2) + (sigma, sigma),
                          mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        values /= den
    values[..., ~(valid & (den > 1e-6))] = np.nan
    return values


def _float(dtype: np.dtype) -> type:
    return np.float32 if dtype == np.float32 else np.float64


def spatial_lowpass(field: xr.DataArray, sigma_px: float) -> xr.DataArray:
    """NaN-aware Gaussian low-pass over ``(y, x)``; works blockwise on dask arrays."""
    if sigma_px <= 0:
        return field
    depth = int(np.ceil(4 * sigma_px))
    data = field.transpose(..., "y", "x").data
    if hasattr(data, "map_overlap"):
        axes = {data.ndim - 2: depth, data.ndim - 1: depth}
        out = data.map_overlap(_nan_gaussian, depth=axes, boundary="none", sigma=sigma_px,
                               dtype=_float(data.dtype))
    else:
        out = _nan_gaussian(np.asarray(data, dtype=_float(data.dtype)), sigma_px)
    return field.transpose(..., "y", "x").copy(data=out).transpose(*field.dims)


def highpass_operator(days: np.ndarray, sigma_days: float) -> np.ndarray:
    """``(time, time)`` matrix taking a series to its detrended temporal high-pass.

    The high-pass of ``d − rate·t`` (``rate`` the least-squares slope of ``d``) is linear in
    ``d``: ``(I − W)(I − t sᵀ) d`` with ``W`` the Gaussian low-pass weights and ``s`` the
    slope weights (the intercept drops out because each row of ``W`` sums to one). One
    matrix product per tile replaces a rate fit, a detrend and a smoothing pass.
    """
    days = np.asarray(days, dtype=np.float64)
    t = days / 365.25
    slope = slope_weights(t)  # rate = slope · d
    eye = np.eye(days.size)
    return (eye - _temporal_weights(days, sigma_days)) @ (eye - np.outer(t, slope))


def _filtered_block(block: np.ndarray, operator: np.ndarray, sigma_px: float,
                    reference_index: int | None) -> np.ndarray:
    """``(time, ny, nx)`` series → the series with their atmospheric screen removed.

    One new array for the whole step: the high-pass is formed in it, low-passed in space in
    place (:func:`_lowpass_in_place`, with one validity mask per pixel: a NaN anywhere in a
    pixel's series makes its whole high-pass NaN), then turned into the filtered series, zero
    at ``reference_index`` when given.
    """
    n = block.shape[0]
    out = (operator @ block.reshape(n, -1)).reshape(block.shape)
    with np.errstate(invalid="ignore"):  # (inf − inf: not finite either way)
        valid = np.isfinite(out.sum(axis=0))  # (..., ny, nx): finite at every date
    if sigma_px > 0:
        _lowpass_in_place(out, valid, sigma_px)
    else:
        out[..., ~valid] = np.nan
    np.subtract(block, out, out=out)
    if reference_index is not None:
        out -= out[reference_index].copy()
    return out


def remove_atmosphere(
    displacement: xr.DataArray, temporal_sigma_days: float, spatial_sigma_m: float,
    pixel_m: float, reference_time: np.datetime64 | None = None,
) -> xr.DataArray:
    """The series (mm, dims as input) with their atmospheric screen removed.

    ``screen = lowpass_space(d − lowpass_time(d))`` with ``d`` the series minus its linear
    trend: removing the trend first keeps the one-sided averages at the ends of the series from
    leaking the trend into the screen (which would change the rate). Series must be complete or
    all NaN (as NSBAS returns them); on dask arrays, ``time`` must be one chunk and each tile
    is filtered with a margin of its neighbours' pixels (4 σ), reading them once. With
    ``reference_time`` (one of the series' times), the filtered series are zero there.
    """
    dims = displacement.dims
    series = displacement.transpose("time", ..., "y", "x")
    dtype = _float(series.dtype)
    days = ((series["time"] - series["time"][0]) / np.timedelta64(1, "D")).values
    operator = highpass_operator(days, temporal_sigma_days).astype(dtype)
    sigma_px = spatial_sigma_m / pixel_m
    ref = None
    if reference_time is not None:
        ref = int(series.indexes["time"].get_loc(reference_time))
    data = series.data
    if hasattr(data, "map_overlap"):
        depth = int(np.ceil(4 * sigma_px))
        filtered = data.astype(dtype).map_overlap(
            _filtered_block, depth={data.ndim - 2: depth, data.ndim - 1: depth},
            boundary="none", operator=operator, sigma_px=sigma_px, reference_index=ref,
            dtype=dtype)
    else:
        filtered = _filtered_block(np.asarray(data, dtype=dtype), operator, sigma_px, ref)
    return series.copy(data=filtered).transpose(*dims).assign_attrs(
        displacement.attrs, atmospheric_filter="temporal high-pass, spatial low-pass screen "
        "removed")


def atmospheric_filter(
    displacement: xr.DataArray, temporal_sigma_days: float, spatial_sigma_m: float,
    pixel_m: float,
) -> tuple[xr.DataArray, xr.DataArray]:
    """:func:`remove_atmosphere`, also returning the screen it removed: ``(filtered, screen)``."""
    filtered = remove_atmosphere(displacement, temporal_sigma_days, spatial_sigma_m, pixel_m)
    screen = (displacement - filtered).assign_attrs(units="mm",
                                                    long_name="estimated atmospheric screen")
    return filtered, screen
