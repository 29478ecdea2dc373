"""Post-processing of unwrapped interferograms: phase to displacement, masks, reference, ramps.

Conventions used throughout talik
---------------------------------
* An interferogram ``pair`` goes from its ``reference_date`` (earlier) to its ``secondary_date``.
* **LOS displacement is in millimetres, positive toward the satellite** (uplift on flat ground),
  the convention of HyP3's displacement maps, MintPy's and LiCSBAS's time series.
* Unwrapped phase follows GAMMA/HyP3: **positive = range increase** (motion away from the
  satellite). So ``d_los = −λ/(4π)·φ``. That conversion happens in :func:`phase_to_los_mm`
  and nowhere else.

Functions take and return :class:`xarray.DataArray` with dims among ``pair``, ``y``, ``x``;
they work the same on numpy- and dask-backed arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from numba import njit
from scipy.ndimage import uniform_filter

__all__ = [
    "SignConvention",
    "apply_gacos",
    "apply_reference",
    "PairCorrections",
    "choose_reference_window",
    "coherence_statistics",
    "correct_tile",
    "fit_ramps",
    "gacos_los_correction_mm",
    "mask_incoherent",
    "mm_per_radian",
    "phase_to_los_mm",
    "postprocess_pairs",
    "ramp_design",
    "reference_offsets",
    "stable_ground",
    "remove_ramps",
    "to_los_mm",
]

SignConvention = Literal["positive_away_from_sensor", "positive_toward_sensor"]
RampKind = Literal["none", "plane", "quadratic"]


def mm_per_radian(wavelength_m: float,
                  convention: SignConvention = "positive_away_from_sensor") -> float:
    """LOS displacement (mm, positive toward the satellite) per radian of unwrapped phase.

    ``−λ/(4π)`` (λ in mm) for HyP3/GAMMA's ``positive_away_from_sensor`` phase, ``+λ/(4π)``
    for phase positive toward the satellite (:func:`phase_to_los_mm`).
    """
    if convention not in ("positive_away_from_sensor", "positive_toward_sensor"):
        raise ValueError(f"unknown phase sign convention {convention!r}")
    sign = -1.0 if convention == "positive_away_from_sensor" else 1.0
    return sign * wavelength_m * 1000.0 / (4.0 * np.pi)


def phase_to_los_mm(
    phase_rad: xr.DataArray,
    wavelength_m: float,
    convention: SignConvention = "positive_away_from_sensor",
) -> xr.DataArray:
    """Unwrapped phase (radians) → LOS displacement (mm, positive toward the satellite).

    With HyP3/GAMMA's convention (``positive_away_from_sensor``), one fringe (2π) is λ/2 of
    range change, and motion toward the satellite gives negative phase:
    ``d = −λ/(4π)·φ``. A product whose phase is positive toward the satellite gets the
    opposite sign.
    """
    out = phase_rad * mm_per_radian(wavelength_m, convention)
    return out.assign_attrs(
        units="mm",
        long_name="line-of-sight displacement",
        sign_convention="positive toward the satellite",
    )


def to_los_mm(
    value: xr.DataArray,
    quantity: Literal["unwrapped_phase", "los_displacement"],
    units: Literal["rad", "mm", "m"],
    convention: SignConvention,
    wavelength_m: float,
) -> xr.DataArray:
    """Any pair product (phase or displacement, either sign) → LOS mm positive toward."""
    if quantity == "unwrapped_phase":
        if units != "rad":
            raise ValueError("unwrapped phase must be in radians")
        return phase_to_los_mm(value, wavelength_m, convention)
    factor = {"mm": 1.0, "m": 1000.0}[units]
    sign = 1.0 if convention == "positive_toward_sensor" else -1.0
    out = value * (sign * factor)
    return out.assign_attrs(units="mm", long_name="line-of-sight displacement",
                            sign_convention="positive toward the satellite")


def mask_incoherent(los: xr.DataArray, coherence: xr.DataArray, threshold: float) -> xr.DataArray:
    """Set pixels whose coherence is below ``threshold`` (or missing) to NaN."""
    return los.where(coherence >= threshold).assign_attrs(los.attrs)


def reference_offsets(los: xr.DataArray, area: xr.DataArray) -> xr.DataArray:
    """Per-pair mean of ``los`` over the reference ``area`` (boolean ``(y, x)``), mm.

    Pairs with no valid pixel in the area get NaN (they cannot be referenced).
    """
    return los.where(area).mean(dim=("y", "x"), skipna=True)


def apply_reference(los: xr.DataArray, offsets: xr.DataArray) -> xr.DataArray:
    """Re-reference every pair to the common area: subtract its offset (mm)."""
    return (los - offsets).assign_attrs(los.attrs, reference="common reference area")


def ramp_design(y: np.ndarray, x: np.ndarray, kind: RampKind) -> np.ndarray:
    """Columns of the ramp model at coordinates ``y``, ``x`` (same shape), normalised to ±0.5.

    Coordinates are normalised by the caller-independent scale 100 km so coefficients are
    comparable between images (mm per 100 km).
    """
    yn = np.asarray(y, dtype=np.float64) / 1e5
    xn = np.asarray(x, dtype=np.float64) / 1e5
    cols = [np.ones_like(xn)]
    if kind in ("plane", "quadratic"):
        cols += [xn, yn]
    if kind == "quadratic":
        cols += [xn * xn, xn * yn, yn * yn]
    return np.stack(cols, axis=-1)


def _centre(coord: xr.DataArray) -> float:
    return float(coord.mean())


def fit_ramps(los: xr.DataArray, stable: xr.DataArray, kind: RampKind) -> xr.DataArray:
    """Least-squares ramp per pair, fitted on valid ``stable`` pixels only.

    Returns coefficients ``(pair, coef)`` in mm for the columns of :func:`ramp_design`,
    evaluated about the image centre. ``los`` should be small enough to hold in memory
    (a subsample of the grid is plenty for a polynomial).
    """
    if kind == "none":
        return xr.DataArray(np.zeros((los.sizes["pair"], 1)), dims=("pair", "coef"),
                            coords={"pair": los["pair"]})
    yc, xc = _centre(los["y"]), _centre(los["x"])
    yy, xx = np.meshgrid(los["y"].values - yc, los["x"].values - xc, indexing="ij")
    design = ramp_design(yy.ravel(), xx.ravel(), kind)  # (P, k)
    data = los.transpose("pair", "y", "x").values.reshape(los.sizes["pair"], -1)
    on_stable = np.asarray(stable.values, bool).ravel()[None, :]
    k = design.shape[1]
    coefs = np.full((data.shape[0], k), np.nan)
    # Normal equations per pair, as matrix products (BLAS, not einsum): A_p = Xᵀ W_p X,
    # A_p[k, l] = Σ_n w_pn X_nk X_nl, and b_p = Xᵀ W_p d_p. A few pairs at a time: the
    # float64 temporaries of all pairs at once (hundreds of MB) cost more than the products.
    outer = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], k * k)
    normal = np.empty((data.shape[0], k, k))
    rhs = np.empty((data.shape[0], k))
    n_used = np.empty(data.shape[0], np.int64)
    for a in range(0, data.shape[0], 32):
        part = data[a : a + 32]
        use = np.isfinite(part) & on_stable
        normal[a : a + 32] = (use.astype(np.float64) @ outer).reshape(-1, k, k)
        rhs[a : a + 32] = np.where(use, part, 0.0) @ design
        n_used[a : a + 32] = use.sum(axis=1)
    enough = n_used >= 10 * k
    if enough.any():
        coefs[enough] = np.linalg.solve(normal[enough], rhs[enough][..., None])[..., 0]
    out = xr.DataArray(coefs, dims=("pair", "coef"), coords={"pair": los["pair"]})
    return out.assign_attrs(kind=kind, y_centre=yc, x_centre=xc, units="mm")


def remove_ramps(los: xr.DataArray, coefs: xr.DataArray) -> xr.DataArray:
    """Subtract the fitted ramps (the constant term included) from every pair.

    Works tile by tile on a dask-backed ``los`` (each block evaluates its own part of the
    ramps), so the chunks of the stack are kept as they are.
    """
    kind = coefs.attrs.get("kind", "none")
    if kind == "none":
        return los
    order = ("pair", "y", "x")
    stack = los.transpose(*order)
    y = stack["y"].values - coefs.attrs["y_centre"]
    x = stack["x"].values - coefs.attrs["x_centre"]
    c = coefs.sel(pair=stack["pair"]).fillna(0.0).values  # (pair, k)

    def subtract(block: np.ndarray, location: tuple[tuple[int, int], ...]) -> np.ndarray:
        (p0, p1), (y0, y1), (x0, x1) = location
        yy, xx = np.meshgrid(y[y0:y1], x[x0:x1], indexing="ij")
        dtype = block.dtype if block.dtype.kind == "f" else np.float64
        design = ramp_design(yy.ravel(), xx.ravel(), kind).astype(dtype)  # (pixels, k)
        ramp = c[p0:p1].astype(dtype) @ design.T  # in the block's precision
        np.subtract(block, ramp.reshape(block.shape), out=ramp.reshape(block.shape))
        return ramp.reshape(block.shape)

    if stack.chunks is None:
        data = subtract(stack.values, tuple((0, n) for n in stack.shape))
    else:
        data = stack.data.map_blocks(
            lambda b, block_info=None: subtract(b, block_info[0]["array-location"]),
            dtype=stack.dtype)
    out = stack.copy(data=data).transpose(*los.dims)
    return out.assign_attrs(los.attrs)


def gacos_los_correction_mm(ztd_reference_m, ztd_secondary_m, incidence_deg):
    """Correction to **add** to LOS displacement (mm, positive toward) for tropospheric delay.

    A delay increase between the two dates lengthens the path, which looks like motion away
    from the satellite (negative displacement); adding ``(ZTD_sec − ZTD_ref)/cos θ`` undoes it.
    Only the differences matter: a constant offset disappears when the pair is referenced.
    Delays in metres; numpy arrays or DataArrays (which come back with ``units = "mm"``).
    """
    slant_mm = (ztd_secondary_m - ztd_reference_m) * (1000.0 / np.cos(np.radians(incidence_deg)))
    if isinstance(slant_mm, xr.DataArray):
        return slant_mm.assign_attrs(units="mm")
    return slant_mm


def choose_reference_window(valid_fraction: np.ndarray, mean_coherence: np.ndarray,
                            stable: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size``×``size`` window of stable pixels most often coherent (LiCSBAS-like).

    Scores each window by the mean over its pixels of (fraction of pairs valid) × (mean
    coherence); windows touching unstable pixels are not eligible (unless none is stable).
    """
    score = np.where(stable, valid_fraction * mean_coherence, 0.0)
    eligible = uniform_filter(stable.astype(float), size=size, mode="constant") > 0.999
    smooth = np.where(eligible, uniform_filter(score, size=size, mode="constant"), -1.0)
    if smooth.max() <= 0:
        smooth = uniform_filter(valid_fraction * mean_coherence, size=size, mode="constant")
    iy, ix = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    half = size // 2
    y0 = int(np.clip(iy - half, 0, max(valid_fraction.shape[0] - size, 0)))
    x0 = int(np.clip(ix - half, 0, max(valid_fraction.shape[1] - size, 0)))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def stable_ground(ground_ice: np.ndarray, max_ice: float) -> np.ndarray:
    """Pixels whose ground-ice content (fraction) is known and at most ``max_ice``."""
    ice = np.asarray(ground_ice)
    return np.isfinite(ice) & (ice <= max_ice)


def apply_gacos(los: xr.DataArray, ztd_m: xr.DataArray, reference_index: np.ndarray,
                secondary_index: np.ndarray, has_gacos: np.ndarray, incidence_deg: xr.DataArray
                ) -> tuple[xr.DataArray, np.ndarray]:
    """Add each pair's GACOS correction; leave out pairs without one (as LiCSBAS does).

    ``ztd_m (date, y, x)`` holds one zenith delay map per date (m); a pair's two maps are
    ``reference_index``/``secondary_index`` along ``date``. The correction
    ``(ZTD_sec − ZTD_ref)/cos θ`` (mm, :func:`gacos_los_correction_mm`) is formed inside each
    dask tile from the tile's delay maps, so there are as many maps to read as dates. Returns
    the corrected pairs and their indices in ``los``.
    """
    idx = np.flatnonzero(np.asarray(has_gacos, bool))
    ref_i = np.asarray(reference_index)[idx]
    sec_i = np.asarray(secondary_index)[idx]
    stack = los.isel(pair=idx).transpose("pair", "y", "x")
    ztd = ztd_m.transpose("date", "y", "x")
    # In the stack's precision: float64 here would double every temporary of the tile.
    inc = incidence_deg.transpose("y", "x").astype(stack.dtype)

    def add(block: np.ndarray, delays: np.ndarray, inc_block: np.ndarray) -> np.ndarray:
        slant_mm = gacos_los_correction_mm(delays[ref_i].astype(block.dtype, copy=False),
                                           delays[sec_i].astype(block.dtype, copy=False),
                                           inc_block)
        slant_mm += block
        return slant_mm

    if stack.chunks is not None:
        import dask.array as dsa

        tiles = {"y": stack.chunksizes["y"], "x": stack.chunksizes["x"]}
        data = dsa.blockwise(add, "pyx", stack.data, "pyx",
                             ztd.chunk({"date": -1, **tiles}).data, "dyx",
                             inc.chunk(tiles).data, "yx",
                             dtype=stack.dtype, concatenate=True)
    else:
        data = add(stack.values, ztd.values, inc.values)
    corrected = stack.copy(data=data).transpose(*los.dims)
    return corrected.assign_attrs(los.attrs, gacos="applied"), idx


@dataclass(frozen=True)
class PairCorrections:
    """Everything fitted on small samples that a full-resolution tile of pairs then needs.

    ``pairs`` selects, in order, the staged pairs kept (``(n,)`` indices); for each kept pair,
    ``offset_mm`` is the total of its reference offsets (mm) and ``ramp_coefs (n, k)`` its ramp
    (mm, columns of :func:`ramp_design` of ``ramp_kind`` about ``centre`` ``(y, x)``). With GACOS,
    ``gacos_reference``/``gacos_secondary`` are each kept pair's two dates along the delay
    maps' ``date``.
    """

    coherence_threshold: float
    pairs: np.ndarray
    offset_mm: np.ndarray
    ramp_kind: RampKind = "none"
    ramp_coefs: np.ndarray | None = None
    centre: tuple[float, float] = (0.0, 0.0)
    gacos_reference: np.ndarray | None = None
    gacos_secondary: np.ndarray | None = None


@njit(cache=True, nogil=True)
def _ramp_of(coefs: np.ndarray, design: np.ndarray, ramp: np.ndarray) -> None:
    """``ramp = coefs @ design`` (float32, terms summed in order); zeros for ``k`` = 0."""
    ramp[:] = 0.0
    if coefs.shape[0] == 0:
        return
    for i in range(ramp.shape[0]):
        ramp[i] = coefs[0] * design[0, i]
    for j in range(1, coefs.shape[0]):
        for i in range(ramp.shape[0]):
            ramp[i] = ramp[i] + coefs[j] * design[j, i]


@njit(cache=True, nogil=True)
def _correct_pair_codes(los: np.ndarray, codes: np.ndarray, passing: np.ndarray,
                        ztd_sec: np.ndarray, ztd_ref: np.ndarray, slant: np.ndarray,
                        with_gacos: bool, offset: np.float32, coefs: np.ndarray,
                        design: np.ndarray, ramp: np.ndarray, out: np.ndarray) -> None:
    """One pair of a tile in one pass, coherence as codes (``passing[code]`` says if it passes).

    Coherence mask, GACOS, offset and ramp as float32 steps in the chain's order (no fused
    multiply-add); ``ramp`` is scratch space of the pair's size.
    """
    _ramp_of(coefs, design, ramp)
    nan = np.float32(np.nan)
    if with_gacos:
        for i in range(los.shape[0]):
            v = (los[i] + (ztd_sec[i] - ztd_ref[i]) * slant[i] - offset) - ramp[i]
            out[i] = v if passing[codes[i]] else nan
    else:
        for i in range(los.shape[0]):
            v = (los[i] - offset) - ramp[i]
            out[i] = v if passing[codes[i]] else nan


def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    return np.ascontiguousarray(a, dtype).reshape(-1)


def correct_tile(corrections: PairCorrections, los_mm: np.ndarray | Sequence[np.ndarray],
                 coherence: np.ndarray | Sequence[np.ndarray],
                 y: np.ndarray, x: np.ndarray, ztd_m: np.ndarray | None = None,
                 incidence_deg: np.ndarray | None = None,
                 coherence_table: np.ndarray | None = None) -> np.ndarray:
    """One spatial tile of staged pairs → the kept pairs, masked and corrected (float32 mm).

    The same steps, in the same precision, as :func:`mask_incoherent`, :func:`apply_gacos`,
    :func:`apply_reference` and :func:`remove_ramps` applied one after the other, done in one
    pass over the tile: ``los_mm``/``coherence`` ``(staged pair, ny, nx)`` (or lists of
    consecutive blocks of pairs, as stored), the tile's coordinates ``y``/``x`` (m), GACOS
    zenith delays ``ztd_m (date, ny, nx)`` (m) and the incidence (degrees) when the pairs are
    corrected for troposphere. ``coherence`` may be stored integer codes, with
    ``coherence_table`` giving each code's value (NaN: missing). Returns ``(kept pair, ny, nx)``.
    """
    c = corrections
    los_blocks = [los_mm] if isinstance(los_mm, np.ndarray) else list(los_mm)
    coh_blocks = [coherence] if isinstance(coherence, np.ndarray) else list(coherence)
    n, ny, nx = len(c.pairs), los_blocks[0].shape[1], los_blocks[0].shape[2]
    out = np.empty((n, ny, nx), np.float32)
    # The ramp's columns (k, pixel) and coefficients (pair, k); k = 0 without a ramp.
    design, coefs = np.zeros((0, ny * nx), np.float32), np.zeros((n, 0), np.float32)
    if c.ramp_kind != "none" and c.ramp_coefs is not None:
        yy, xx = np.meshgrid(np.asarray(y) - c.centre[0], np.asarray(x) - c.centre[1],
                             indexing="ij")
        design = np.ascontiguousarray(ramp_design(yy.ravel(), xx.ravel(), c.ramp_kind)
                                      .astype(np.float32).T)
        coefs = np.ascontiguousarray(
            np.nan_to_num(np.asarray(c.ramp_coefs, np.float64)).astype(np.float32))
    dummy = np.zeros(1, np.float32)
    with_gacos = ztd_m is not None and c.gacos_reference is not None
    slant = (_flat(1000.0 / np.cos(np.radians(np.asarray(incidence_deg, np.float32))),
                   np.float32) if with_gacos else dummy)
    offsets = np.asarray(c.offset_mm, np.float32)
    starts = np.cumsum([0, *(len(b) for b in los_blocks)])
    which = np.searchsorted(starts, c.pairs, side="right") - 1
    if coherence_table is not None:  # which codes pass, from the values they stand for
        passing = np.asarray(coherence_table) >= c.coherence_threshold  # NaN (missing) fails
    else:  # coherence values: each pair's pixels coded 1 where they pass (NaN fails), else 0
        passing = np.array([False, True])
    threshold = np.float32(c.coherence_threshold)
    scratch = np.empty(ny * nx, np.float32)
    for j in range(n):  # each pair read where it is stored, in one pass
        block, row = which[j], c.pairs[j] - starts[which[j]]
        gacos = ((_flat(ztd_m[c.gacos_secondary[j]], np.float32),
                  _flat(ztd_m[c.gacos_reference[j]], np.float32)) if with_gacos
                 else (dummy, dummy))
        los = _flat(los_blocks[block][row], np.float32)
        coh = _flat(coh_blocks[block][row])
        if coherence_table is None:
            coh = (coh.astype(np.float32, copy=False) >= threshold).view(np.uint8)
        _correct_pair_codes(los, coh, passing, *gacos, slant, with_gacos, offsets[j], coefs[j],
                            design, scratch, out[j].reshape(-1))
    return out


@njit(cache=True, nogil=True)
def _count_codes(codes: np.ndarray, first_passing: int, missing: int, out: np.ndarray) -> None:
    """Add each pair's row of ``codes`` ``(pair, pixel)`` to ``out`` ``(3, pixel)`` (one pass)."""
    for m in range(codes.shape[0]):
        row = codes[m]
        for i in range(row.shape[0]):
            c = row[i]
            known = c != missing
            out[0, i] += 1 if (known and c >= first_passing) else 0
            out[1, i] += 1 if known else 0
            out[2, i] += c if known else 0


def _code_counts(codes: np.ndarray, first_passing: int, missing: int) -> np.ndarray:
    """Per pixel of a ``(pair, y, x)`` block of coherence codes: passing, known, code sum."""
    n, *space = codes.shape
    out = np.zeros((3, int(np.prod(space))), np.int64)
    _count_codes(np.ascontiguousarray(codes).reshape(n, -1), first_passing, missing, out)
    return out.reshape(3, *space)


def coherence_statistics(stack: xr.Dataset, threshold: float
                         ) -> tuple[xr.DataArray, xr.DataArray]:
    """Per pixel: the fraction of pairs coherent at ``threshold``, and the mean coherence.

    Both are exact whatever the order of the pairs or how they are stored. From stored codes
    (``coherence_code``: value = code × scale, one code for missing), they are integer counts
    and sums of codes, reduced chunk by chunk; from float values, they are taken over each
    tile's pairs held together.
    """
    if "coherence_code" not in stack:
        coh = stack["coherence"]
        coh = coh.chunk({"pair": -1}) if coh.chunks is not None else coh
        return (coh >= threshold).mean("pair"), coh.mean("pair")
    codes = stack["coherence_code"].transpose("pair", "y", "x")
    table = np.asarray(codes.attrs["table"], dtype=np.float32)  # value of each code (NaN: missing)
    scale = float(codes.attrs["scale_factor"])  # value = code × scale
    fill = int(codes.attrs.get("_FillValue", -1))
    # Values grow with the codes: the codes that pass are those from the first that does.
    passing = np.flatnonzero(table >= threshold)
    first = int(passing[0]) if passing.size else 256

    def count(block: np.ndarray) -> np.ndarray:
        return _code_counts(block, first, fill)

    if codes.chunks is None:
        totals = count(np.asarray(codes.values))
    else:
        import dask.array as dsa

        per_block = codes.data.map_blocks(lambda b: count(b)[:, None], new_axis=0,
                                          chunks=((3,), (1,) * codes.data.numblocks[0],
                                                  *codes.data.chunks[1:]), dtype=np.int64)
        totals = dsa.sum(per_block, axis=1)
    totals = xr.DataArray(totals, dims=("stat", "y", "x"),
                          coords={"y": codes["y"], "x": codes["x"]})
    n_known = totals[1]
    mean = (totals[2] * scale / n_known.where(n_known > 0)).astype(np.float32)
    return totals[0] / codes.sizes["pair"], mean


RAMP_FIT_PIXELS = 256
"""Pixels per side of the subsample that ramps are fitted on (as for the L-band rate)."""


def _stable_da(stable: np.ndarray | None, shape: tuple[int, int]) -> xr.DataArray:
    return xr.DataArray(np.ones(shape, bool) if stable is None else np.asarray(stable, bool),
                        dims=("y", "x"))


def _gacos_corrected(los: xr.DataArray, gacos: xr.DataArray) -> tuple[xr.DataArray, list[bool]]:
    """Pairs with a GACOS delay on both dates corrected by :func:`apply_gacos`; others kept."""
    dates = pd.DatetimeIndex(gacos["date"].values)
    ref = pd.DatetimeIndex(los["reference_date"].values)
    sec = pd.DatetimeIndex(los["secondary_date"].values)
    has = ref.isin(dates) & sec.isin(dates)
    if not has.any():
        return los, [False] * los.sizes["pair"]
    ref_i = np.where(has, dates.get_indexer(ref), 0)
    sec_i = np.where(has, dates.get_indexer(sec), 0)
    out = los.copy()
    # apply_gacos takes one incidence map for the stack: correct each sensor's pairs apart.
    for inc in np.unique(los["incidence_deg"].values[has]):
        group = has & (los["incidence_deg"].values == inc)
        inc_map = xr.full_like(los.isel(pair=0, drop=True), float(inc))
        corrected, idx = apply_gacos(los, gacos, ref_i, sec_i, group, inc_map)
        out[idx] = corrected.transpose(*los.dims).values
    return out, [bool(h) for h in has]


def postprocess_pairs(pairs: xr.Dataset, coherence_threshold: float, stable: np.ndarray | None,
                      ramp: str = "plane", gacos: xr.DataArray | None = None,
                      min_stable_pixels: int = 10) -> xr.DataArray:
    """Staged sparse-sensor pairs → LOS mm (positive toward), corrected as S1 interferograms are.

    ``pairs`` is the staged store (``los_mm``, ``coherence`` ``(pair, y, x)`` with per-pair
    ``sensor``, ``reference_date``, ``secondary_date``, ``incidence_deg``). Steps, with the
    Sentinel-1 chain's functions: coherence mask (:func:`mask_incoherent`), GACOS where delays
    ``(date, y, x)`` in metres exist for both dates (:func:`apply_gacos`), a ``ramp`` fitted on
    stable ground of a subsample and removed (:func:`fit_ramps`, :func:`remove_ramps`), and
    the median of stable ground put at zero (the common stable reference). A pair with fewer
    than ``min_stable_pixels`` coherent stable pixels cannot be referenced and is all NaN.
    The L-band velocity reference (:func:`talik.science.velocity_reference.lband_rate`) and
    the long-term record (:mod:`talik.science.longterm`) both use it.
    """
    los = mask_incoherent(pairs["los_mm"], pairs["coherence"], coherence_threshold)
    los = los.transpose("pair", "y", "x").astype(np.float64)
    gacos_done = [False] * los.sizes["pair"]
    if gacos is not None:
        los, gacos_done = _gacos_corrected(los, gacos)
    stable_da = _stable_da(stable, los.shape[1:])
    step = max(1, int(np.ceil(max(los.sizes["y"], los.sizes["x"]) / RAMP_FIT_PIXELS)))
    every = {"y": slice(None, None, step), "x": slice(None, None, step)}
    los = remove_ramps(los, fit_ramps(los.isel(**every), stable_da.isel(**every), ramp))
    on_stable = los.where(stable_da)
    enough = on_stable.count(("y", "x")) >= min_stable_pixels
    los = (los - on_stable.median(("y", "x"))).where(enough)
    return los.assign_attrs(units="mm", long_name="LOS displacement, post-processed",
                            sign_convention="positive toward the satellite",
                            reference="median of stable ground",
                            gacos_applied=[int(g) for g in gacos_done], ramp=ramp)
