"""Spatially correlated random fields for the demo world (FFT filtering of white noise)."""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_field", "power_law_field", "smoothstep"]


def _spectral_filter(
    rng: np.random.Generator, shape: tuple[int, ...], pixel_m: float, transfer
) -> np.ndarray:
    """Filter white noise of ``shape`` (last two axes are y, x) by ``transfer(k)``; unit std."""
    ny, nx = shape[-2:]
    # Pad so that the periodic FFT does not wrap correlated structure across the edges.
    py, px = ny * 2, nx * 2
    noise = rng.standard_normal((*shape[:-2], py, px))
    ky = np.fft.fftfreq(py, d=pixel_m)[:, None]
    kx = np.fft.rfftfreq(px, d=pixel_m)[None, :]
    k = np.hypot(ky, kx)
    spectrum = np.fft.rfft2(noise) * transfer(k)
    field = np.fft.irfft2(spectrum, s=(py, px))[..., :ny, :nx]
    std = field.std(axis=(-2, -1), keepdims=True)
    mean = field.mean(axis=(-2, -1), keepdims=True)
    return (field - mean) / np.where(std > 0, std, 1.0)


def gaussian_field(
    rng: np.random.Generator, shape: tuple[int, ...], pixel_m: float, correlation_m: float
) -> np.ndarray:
    """Zero-mean, unit-std field with a Gaussian correlation of length ``correlation_m`` metres."""
    return _spectral_filter(
        rng, shape, pixel_m, lambda k: np.exp(-((np.pi * k * correlation_m) ** 2) / 2)
    )


def power_law_field(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    pixel_m: float,
    exponent: float = 8.0 / 3.0,
    outer_scale_m: float = 20_000.0,
) -> np.ndarray:
    """Zero-mean, unit-std field with a power-law spectrum, like tropospheric turbulence.

    The power spectral density falls as ``k**-exponent`` (8/3 for Kolmogorov turbulence,
    Hanssen 2001) and flattens beyond ``outer_scale_m``.
    """
    k0 = 1.0 / outer_scale_m
    return _spectral_filter(
        rng, shape, pixel_m, lambda k: (k**2 + k0**2) ** (-exponent / 4)
    )


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smooth 0→1 transition between ``lo`` and ``hi`` (cubic Hermite)."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)
