"""NSBAS time-series inversion with temporal constraint models (paper Eq. 1–3; Doin et al. 2011).

The problem
-----------
For one pixel with interferograms ``d_m`` (mm) between dates ``a_m < b_m``, NSBAS solves in the
least-squares sense::

    d_m            = u(b_m) − u(a_m)                  for every valid interferogram m
    γ·r(t_j)       = γ·(u(t_j) − P(t_j)·p)            for every date j = 1 … N−1

with ``u(t_0) = 0``, ``P`` the constraint basis (offset ``c``, rate ``v``, ``sin``/``cos`` of
period T) and ``r(t) = v_ref·t`` when the rate is fixed to a reference, else 0. The paper writes
the unknowns as increments ``m_k`` (``u(t_j) = Σ_{k≤j} m_k``); talik solves for the cumulative
values ``u(t_j)`` directly. That is the same least-squares problem (an invertible change of
variables), but its normal matrix is *banded* — an interferogram only couples its two dates and
a constraint row only one date — with an arrowhead of the few model parameters. Each pixel is
solved exactly with its own set of valid interferograms by a banded Cholesky factorisation plus
a Schur complement for the parameters, vectorised across pixels: no Python loop over pixels and
no need to group pixels by their pattern of valid interferograms.

Constraint models
-----------------
``none``
    Plain SBAS, minimum-norm: increments that no interferogram spans are set to zero. Realised
    as first-difference rows ``γ·(u(t_j) − u(t_{j−1})) = 0``, the Tikhonov form whose limit is
    the minimum-norm solution.
``linear``
    ``u ≈ c + v·t`` (LiCSBAS's constraint).
``linear_periodic``
    ``u ≈ c + v·t + A1·sin(2πt/T) + A2·cos(2πt/T)``.
With ``v_ref`` given, ``v`` is not a parameter but fixed per pixel (velocity-referenced).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr
from numba import njit
from numba.extending import overload

from talik.science.network import Network, reference_epoch_index
from talik.science.temporal import slope_weights, temporal_basis

__all__ = [
    "ConstraintModel",
    "ConstraintSpec",
    "constraint_basis",
    "QUALITY_LAYERS",
    "invert_nsbas",
    "reference_epoch_index",
    "solve_nsbas",
    "solve_rate",
]

ConstraintModel = Literal["none", "linear", "linear_periodic"]


@dataclass(frozen=True)
class ConstraintSpec:
    """How the NSBAS inversion is constrained.

    Attributes
    ----------
    model
        ``none``, ``linear`` or ``linear_periodic``.
    gamma
        Weight of the constraint rows relative to interferogram rows (dimensionless).
    period_yr
        Period of the periodic terms, years.
    velocity_reference
        Whether the rate is fixed to a per-pixel ``v_ref`` (mm/yr) instead of estimated.
    harmonics
        Number of harmonics of the period in the periodic term (1 = the paper's sinusoid;
        2 adds a semi-annual term for seasonal cycles that are not sinusoidal).
    """

    model: ConstraintModel = "linear_periodic"
    gamma: float = 1e-4
    period_yr: float = 1.0
    velocity_reference: bool = False
    harmonics: int = 1

    def __post_init__(self) -> None:
        if self.model not in ("none", "linear", "linear_periodic"):
            raise ValueError(f"unknown constraint model {self.model!r}")
        if self.gamma <= 0:
            raise ValueError("gamma must be > 0")
        if self.model == "none" and self.velocity_reference:
            raise ValueError("a velocity reference needs the 'linear' or 'linear_periodic' model")
        if self.harmonics < 1:
            raise ValueError("harmonics must be >= 1")


def constraint_basis(t_years: np.ndarray, spec: ConstraintSpec) -> tuple[np.ndarray, list[str]]:
    """Columns of the constraint model at times ``t_years`` and their names.

    Blocks: ``offset`` (c), ``velocity`` (v, unless fixed to ``v_ref``), and ``sin``/``cos``
    (A1, A2) for ``linear_periodic``. The ``none`` model has no columns.
    """
    if spec.model == "none":
        return np.zeros((len(np.asarray(t_years)), 0)), []
    return temporal_basis(t_years, offset=True, rate=not spec.velocity_reference,
                          harmonics=spec.harmonics if spec.model == "linear_periodic" else 0,
                          period_yr=spec.period_yr)


@dataclass(frozen=True)
class _NormalParts:
    """What the compiled solvers need of a network and a constraint model (no data).

    ``t`` (years), the constraint ``basis`` and its column ``names``, the band width ``bw``
    (the widest pair, in dates) and the constraint's border ``arrow_init`` and ``corner_init``
    of the normal matrix (:func:`_factor_lanes`).
    """

    t: np.ndarray
    basis: np.ndarray
    names: list[str]
    bw: int
    arrow_init: np.ndarray
    corner_init: np.ndarray

    @staticmethod
    def of(network: Network, spec: ConstraintSpec) -> _NormalParts:
        t = network.years()
        basis, names = constraint_basis(t, spec)
        span = network.sec_index - network.ref_index
        return _NormalParts(t, basis, names, int(max(span.max(initial=1), 1)),
                            np.ascontiguousarray(-(spec.gamma**2) * basis[1:].T),
                            spec.gamma**2 * (basis.T @ basis))


_LANES = 32
"""Pixels solved side by side: independent dependency chains the CPU can overlap (SIMD).

Wider lane groups spread the per-pair bookkeeping of the inner loops (index loads, the
compiler's run-time checks that arrays do not overlap) over more pixels: 32 measured ~20 %
faster than 16 on this machine's AVX-512 cores, 8 twice as slow."""
_BLOCK = 32 * _LANES
"""Pixels copied at a time from the pair-major input into a contiguous work buffer."""


@njit(cache=True, nogil=True, fastmath={"contract"})
def _factor_lanes(
    w: np.ndarray,
    ref: np.ndarray,
    sec: np.ndarray,
    bw: int,
    g2: float,
    none_model: bool,
    arrow_init: np.ndarray,
    corner_init: np.ndarray,
    band: np.ndarray,
    inv: np.ndarray,
    arrow: np.ndarray,
    corner: np.ndarray,
    ok: np.ndarray,
) -> None:
    """Build and factorise the normal matrices of ``L`` pixels side by side (lane = last axis).

    ``w`` is ``(M, L)``: 1/0 validity of each interferogram. The normal matrix of the unknowns
    ``[u(t_1) … u(t_{N−1}), p_1 … p_k]`` is an arrowhead: a symmetric band (``band[j, l]`` =
    entry ``(j, j−l)``) bordered by ``k`` dense rows (``arrow[c, j]``) and a ``k × k`` corner.
    It is factorised in place by Cholesky, which keeps that structure; ``inv`` holds the
    reciprocal pivots and ``ok`` flags the lanes whose factorisation succeeded. The lane loop is
    always innermost, so the CPU runs the lanes' independent arithmetic in parallel (SIMD).
    """
    n = band.shape[0]
    k = arrow.shape[0]
    lanes = w.shape[1]
    band[:, :, :] = 0.0
    ok[:] = 1.0
    for m in range(w.shape[0]):
        a = ref[m]
        b = sec[m]
        off = b - a
        for q in range(lanes):
            band[b - 1, 0, q] += w[m, q]
        if a > 0:
            for q in range(lanes):
                band[a - 1, 0, q] += w[m, q]
                band[b - 1, off, q] -= w[m, q]
    if none_model:
        for j in range(n):
            extra = 2.0 * g2 if j < n - 1 else g2
            for q in range(lanes):
                band[j, 0, q] += extra
            if j > 0:
                for q in range(lanes):
                    band[j, 1, q] -= g2
    else:
        for c in range(k):
            for j in range(n):
                for q in range(lanes):
                    arrow[c, j, q] = arrow_init[c, j]
        for c1 in range(k):
            for c2 in range(k):
                for q in range(lanes):
                    corner[c1, c2, q] = corner_init[c1, c2]
        for j in range(n):
            for q in range(lanes):
                band[j, 0, q] += g2
    # Cholesky of the band.
    for j in range(n):
        top = min(bw, j)
        for ll in range(top, 0, -1):
            c = j - ll
            for l2 in range(ll + 1, top + 1):
                for q in range(lanes):
                    band[j, ll, q] -= band[j, l2, q] * band[c, l2 - ll, q]
            for q in range(lanes):
                band[j, ll, q] *= inv[c, q]
        for l2 in range(1, top + 1):
            for q in range(lanes):
                band[j, 0, q] -= band[j, l2, q] * band[j, l2, q]
        for q in range(lanes):
            s = band[j, 0, q]
            good = s > 0.0
            ok[q] = ok[q] if good else 0.0
            root = np.sqrt(s if good else 1.0)
            band[j, 0, q] = root
            inv[j, q] = 1.0 / root
    # Cholesky of the border rows and the corner.
    for c in range(k):
        for j in range(n):
            top = min(bw, j)
            for ll in range(1, top + 1):
                for q in range(lanes):
                    arrow[c, j, q] -= arrow[c, j - ll, q] * band[j, ll, q]
            for q in range(lanes):
                arrow[c, j, q] *= inv[j, q]
    for c1 in range(k):
        for c2 in range(c1 + 1):
            for j in range(n):
                for q in range(lanes):
                    corner[c1, c2, q] -= arrow[c1, j, q] * arrow[c2, j, q]
            for c3 in range(c2):
                for q in range(lanes):
                    corner[c1, c2, q] -= corner[c1, c3, q] * corner[c2, c3, q]
            for q in range(lanes):
                s = corner[c1, c2, q]
                if c1 == c2:
                    good = s > 0.0
                    ok[q] = ok[q] if good else 0.0
                    corner[c1, c1, q] = np.sqrt(s if good else 1.0)
                else:
                    corner[c1, c2, q] = s / corner[c2, c2, q]


def _lane3(a: np.ndarray, i: int, j: int, q: int) -> float:
    """Entry ``(i, j)`` of lane ``q`` of a factor array (compiled code only).

    ``a[i, j, q]`` with one factor per lane, ``a[i, j]`` with one factor shared by every lane.
    """
    raise NotImplementedError("compiled code only")


def _lane2(a: np.ndarray, i: int, q: int) -> float:
    """Entry ``i`` of lane ``q``: ``a[i, q]`` (per lane) or ``a[i]`` (shared)."""
    raise NotImplementedError("compiled code only")


@overload(_lane3)
def _lane3_compiled(a, i, j, q):  # noqa: ANN001, ANN202 (numba types)
    if a.ndim == 3:
        return lambda a, i, j, q: a[i, j, q]
    return lambda a, i, j, q: a[i, j]


@overload(_lane2)
def _lane2_compiled(a, i, q):  # noqa: ANN001, ANN202 (numba types)
    if a.ndim == 2:
        return lambda a, i, q: a[i, q]
    return lambda a, i, q: a[i]


@njit(cache=True, nogil=True, fastmath={"contract"})
def _solve_factored(
    dz: np.ndarray,
    ref: np.ndarray,
    sec: np.ndarray,
    bw: int,
    pb: np.ndarray,
    t1: np.ndarray,
    g2: float,
    vref: np.ndarray,
    use_vref: bool,
    band: np.ndarray,
    inv: np.ndarray,
    arrow: np.ndarray,
    corner: np.ndarray,
    z: np.ndarray,
) -> None:
    """Right-hand sides of ``L`` pixels (``dz``: data, invalid values zeroed) → unknowns in ``z``.

    The factor (``band``, ``inv``, ``arrow``, ``corner``) is that of :func:`_factor_lanes`,
    one per lane, or its lane-less copy (one axis fewer) when every lane has every
    interferogram valid: the shared factor then stays in L1 cache instead of 16 copies of it.
    """
    n = band.shape[0]
    k = arrow.shape[0]
    lanes = dz.shape[1]
    z[:, :] = 0.0
    for m in range(dz.shape[0]):
        a = ref[m]
        b = sec[m]
        for q in range(lanes):
            z[b - 1, q] += dz[m, q]
        if a > 0:
            for q in range(lanes):
                z[a - 1, q] -= dz[m, q]
    if use_vref:
        for j in range(n):
            for q in range(lanes):
                z[j, q] += g2 * vref[q] * t1[j]
            for c in range(k):
                f = g2 * pb[j, c] * t1[j]
                for q in range(lanes):
                    z[n + c, q] -= f * vref[q]
    _substitute(z, bw, band, inv, arrow, corner)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _substitute(z: np.ndarray, bw: int, band: np.ndarray, inv: np.ndarray, arrow: np.ndarray,
                corner: np.ndarray) -> None:
    """Solve the factored normal equations in place: right-hand sides in, unknowns out (``z``).

    Forward then back substitution with the factor of :func:`_factor_lanes` (per lane, or
    shared: see :func:`_solve_factored`).
    """
    n = band.shape[0]
    k = arrow.shape[0]
    lanes = z.shape[1]
    # Forward substitution.
    for j in range(n):
        top = min(bw, j)
        for ll in range(1, top + 1):
            for q in range(lanes):
                z[j, q] -= _lane3(band, j, ll, q) * z[j - ll, q]
        for q in range(lanes):
            z[j, q] *= _lane2(inv, j, q)
    for c in range(k):
        for j in range(n):
            for q in range(lanes):
                z[n + c, q] -= _lane3(arrow, c, j, q) * z[j, q]
        for c3 in range(c):
            for q in range(lanes):
                z[n + c, q] -= _lane3(corner, c, c3, q) * z[n + c3, q]
        for q in range(lanes):
            z[n + c, q] /= _lane3(corner, c, c, q)
    # Back substitution.
    for c in range(k - 1, -1, -1):
        for c3 in range(c + 1, k):
            for q in range(lanes):
                z[n + c, q] -= _lane3(corner, c3, c, q) * z[n + c3, q]
        for q in range(lanes):
            z[n + c, q] /= _lane3(corner, c, c, q)
    for j in range(n - 1, -1, -1):
        top = min(bw, n - 1 - j)
        for ll in range(1, top + 1):
            for q in range(lanes):
                z[j, q] -= _lane3(band, j + ll, ll, q) * z[j + ll, q]
        for c in range(k):
            for q in range(lanes):
                z[j, q] -= _lane3(arrow, c, j, q) * z[n + c, q]
        for q in range(lanes):
            z[j, q] *= _lane2(inv, j, q)


@njit(cache=True, nogil=True, inline="always")
def _cos_sin(x: float) -> tuple[float, float]:
    """Cos and sin of ``x`` (radians) to ~4e-6, branch-free so the lane loop vectorises.

    The angle is reduced to [−π/4, π/4] around a multiple of π/2 and evaluated by Taylor
    polynomials there (to r⁶ and r⁷: the first terms left out are (π/4)⁸/8! ≈ 3.6e-6 and
    (π/4)⁹/9! ≈ 3.1e-7, far below what a temporal coherence is read to); the quadrant then
    permutes and negates the pair.
    """
    quarter = np.rint(x * (2.0 / np.pi))
    r = x - quarter * (np.pi / 2.0)
    r2 = r * r
    c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0)))
    sn = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0))))
    qm = quarter - 4.0 * np.floor(quarter * 0.25)  # quadrant 0..3
    swap = (qm == 1.0) | (qm == 3.0)
    cos_x = sn if swap else c
    sin_x = c if swap else sn
    cos_x = -cos_x if (qm == 1.0) | (qm == 2.0) else cos_x
    sin_x = -sin_x if (qm == 2.0) | (qm == 3.0) else sin_x
    return cos_x, sin_x


@njit(cache=True, nogil=True, fastmath={"contract"})
def _solve_pixels(
    data: np.ndarray,
    ref: np.ndarray,
    sec: np.ndarray,
    n_dates: int,
    bw: int,
    pb: np.ndarray,
    t1: np.ndarray,
    g2: float,
    none_model: bool,
    vref: np.ndarray,
    use_vref: bool,
    arrow_init: np.ndarray,
    corner_init: np.ndarray,
    min_valid: int,
    ref_epoch: int,
    rad_per_mm: float,
    rate_w: np.ndarray,
    sxx: float,
    out_disp: np.ndarray,
    out_valid: np.ndarray,
    out_rms: np.ndarray,
    out_params: np.ndarray,
    out_tcoh: np.ndarray,
    out_parts: np.ndarray,
    out_bridged: np.ndarray,
    out_cond: np.ndarray,
    out_rate: np.ndarray,
    out_vstd: np.ndarray,
    out_bfrac: np.ndarray,
) -> None:
    n = n_dates - 1
    k = pb.shape[1]
    n_ifg, n_pix = data.shape  # pair-major: each pair's pixels are contiguous
    lanes = _LANES
    w = np.empty((n_ifg, lanes))
    dz = np.empty((n_ifg, lanes))
    vr = np.zeros(lanes)
    band = np.empty((n, bw + 1, lanes))
    inv = np.empty((n, lanes))
    arrow = np.empty((k, n, lanes))
    corner = np.empty((k, k, lanes))
    z = np.empty((n + k, lanes))
    ok = np.empty(lanes)
    # Lanes whose interferograms are all valid share one normal matrix: factorised once here.
    w[:, :] = 1.0
    full_band = np.empty((n, bw + 1, lanes))
    full_inv = np.empty((n, lanes))
    full_arrow = np.empty((k, n, lanes))
    full_corner = np.empty((k, k, lanes))
    full_ok = np.empty(lanes)
    _factor_lanes(w, ref, sec, bw, g2, none_model, arrow_init, corner_init, full_band, full_inv,
                  full_arrow, full_corner, full_ok)
    sh_band = np.ascontiguousarray(full_band[:, :, 0])
    sh_inv = np.ascontiguousarray(full_inv[:, 0])
    sh_arrow = np.ascontiguousarray(full_arrow[:, :, 0])
    sh_corner = np.ascontiguousarray(full_corner[:, :, 0])
    sh_ok = full_ok[0] != 0.0
    # Pixels are read a block at a time into a contiguous buffer: a lane group's 16 values of
    # one pair are then neighbours of the next group's, not 1 of M rows a whole image apart.
    block = _BLOCK
    buf = np.empty((block // lanes, n_ifg, lanes), data.dtype)
    sq = np.empty(lanes)
    cnt = np.empty(lanes)
    re = np.empty(lanes)
    im = np.empty(lanes)
    touched = np.empty((n_dates, lanes))
    n_bad = np.empty(block)
    order = np.empty(block, np.int64)
    pix = np.empty(lanes, np.int64)
    position = np.empty(block, np.int64)
    disp_buf = np.empty((n_dates, block), np.float32)
    bridged_buf = np.empty((n_dates, block), np.uint8)
    free = np.empty(lanes)
    untouched = np.empty(lanes)
    lo = np.empty(lanes)
    hi = np.empty(lanes)
    solved = np.empty(lanes)
    zero = np.empty(lanes)
    s1 = np.empty(lanes)
    s2 = np.empty(lanes)
    sr = np.empty(lanes)
    n_bridged = np.empty(lanes)
    first_touched = np.empty(lanes)
    # A band pivot (squared) below this marks a direction the data leave free: an epoch no
    # valid pair touches, or a connected part of the pixel's network not tied to the first
    # date (data pivots are O(1), constraint-only ones O(γ²)).
    tiny = np.sqrt(g2)
    # The same summaries of the shared factor (every date touched, one connected part unless
    # the full network itself is split).
    sh_free = 0.0
    sh_lo = np.inf
    sh_hi = 0.0
    for j in range(n):
        d = sh_band[j, 0]
        sh_free += 1.0 if d * d < tiny else 0.0
        sh_lo = min(sh_lo, d)
        sh_hi = max(sh_hi, d)
    for c in range(k):
        sh_lo = min(sh_lo, sh_corner[c, c])
        sh_hi = max(sh_hi, sh_corner[c, c])
    for s0 in range(0, n_pix, block):
        nb = min(block, n_pix - s0)
        # Pixels with every interferogram valid first, so that lane groups of them share the
        # factor computed above; the last group is padded by repeating a pixel.
        for i in range(nb):
            n_bad[i] = 0.0
        for m in range(n_ifg):
            src = data[m, s0 : s0 + nb]
            for i in range(nb):
                n_bad[i] += 0.0 if src[i] == src[i] else 1.0
        n_full = 0
        for i in range(nb):
            if n_bad[i] == 0.0:
                order[n_full] = i
                n_full += 1
        n_next = n_full
        for i in range(nb):
            if n_bad[i] != 0.0:
                order[n_next] = i
                n_next += 1
        for i in range(nb, block):
            order[i] = order[nb - 1]
        # The block in that order, a lane group's (pair, lane) values contiguous.
        for m in range(n_ifg):
            src = data[m, s0 : s0 + nb]
            for g in range(block // lanes):
                dst = buf[g, m]
                if n_full == nb:
                    for q in range(lanes):
                        dst[q] = src[min(g * lanes + q, nb - 1)]
                else:
                    for q in range(lanes):
                        dst[q] = src[order[g * lanes + q]]
        for g0 in range(0, nb, lanes):
            width = min(lanes, nb - g0)
            for q in range(lanes):
                pix[q] = s0 + order[g0 + q]
            full_group = g0 + lanes <= n_full
            grp = buf[g0 // lanes]
            if not full_group:  # weights and zero-filled data (a full group reads buf)
                for m in range(n_ifg):
                    for q in range(lanes):
                        value = grp[m, q]
                        valid = value == value
                        w[m, q] = 1.0 if valid else 0.0
                        dz[m, q] = value if valid else 0.0
            if use_vref:
                for q in range(lanes):
                    vr[q] = vref[pix[q]]
            if full_group:
                _solve_factored(grp, ref, sec, bw, pb, t1, g2, vr, use_vref, sh_band, sh_inv,
                                sh_arrow, sh_corner, z)
            else:
                _factor_lanes(w, ref, sec, bw, g2, none_model, arrow_init, corner_init, band, inv,
                              arrow, corner, ok)
                _solve_factored(dz, ref, sec, bw, pb, t1, g2, vr, use_vref, band, inv, arrow,
                                corner, z)
            sq[:] = 0.0
            cnt[:] = 0.0
            re[:] = 0.0
            im[:] = 0.0
            if full_group:  # every pair valid: no weights, every date touched
                cnt[:] = n_ifg
                for m in range(n_ifg):
                    a = ref[m]
                    b = sec[m]
                    for q in range(lanes):
                        r = grp[m, q] - (z[b - 1, q] - (z[a - 1, q] if a > 0 else 0.0))
                        sq[q] += r * r
                        c, sn = _cos_sin(rad_per_mm * r)
                        re[q] += c
                        im[q] += sn
            else:
                touched[:, :] = 0.0
                for m in range(n_ifg):
                    a = ref[m]
                    b = sec[m]
                    for q in range(lanes):
                        r = dz[m, q] - (z[b - 1, q] - (z[a - 1, q] if a > 0 else 0.0))
                        wq = w[m, q]
                        sq[q] += wq * r * r
                        cnt[q] += wq
                        c, sn = _cos_sin(rad_per_mm * r)
                        re[q] += wq * c
                        im[q] += wq * sn
                        touched[a, q] += wq
                        touched[b, q] += wq
            # Per-lane summaries, each loop with the lane innermost (vectorised, contiguous).
            for q in range(lanes):
                zero[q] = z[ref_epoch - 1, q] if ref_epoch > 0 else 0.0
            if full_group:
                for q in range(lanes):
                    free[q] = sh_free
                    untouched[q] = 0.0
                    lo[q] = sh_lo
                    hi[q] = sh_hi
                    solved[q] = 1.0 if (cnt[q] >= min_valid and sh_ok) else 0.0
                    first_touched[q] = 1.0
            else:
                for q in range(lanes):
                    free[q] = 0.0
                    untouched[q] = 0.0
                    lo[q] = np.inf
                    hi[q] = 0.0
                    solved[q] = 1.0 if (cnt[q] >= min_valid and ok[q] != 0.0) else 0.0
                    first_touched[q] = 1.0 if touched[0, q] > 0.0 else 0.0
                for j in range(n):
                    for q in range(lanes):
                        d = band[j, 0, q]
                        # Connected parts of the pixel's own network of valid pairs, from the
                        # band's pivots: free directions = untouched epochs (after the first) +
                        # parts not holding the first date.
                        free[q] += 1.0 if d * d < tiny else 0.0
                        untouched[q] += 1.0 if touched[j + 1, q] == 0.0 else 0.0
                        lo[q] = min(lo[q], d)
                        hi[q] = max(hi[q], d)
                for c in range(k):
                    for q in range(lanes):
                        lo[q] = min(lo[q], corner[c, c, q])
                        hi[q] = max(hi[q], corner[c, c, q])
            for q in range(width):
                p = pix[q]
                out_valid[p] = int(cnt[q])
                out_parts[p] = int(free[q] - untouched[q]) + int(first_touched[q])
                if solved[q] == 0.0:
                    continue
                # Condition estimate of the normal matrix: squared ratio of the Cholesky factor's
                # largest to smallest diagonal entry (a lower bound of the 2-norm condition).
                out_cond[p] = (hi[q] / lo[q]) ** 2 if lo[q] > 0 else np.inf
                out_rms[p] = np.sqrt(sq[q] / cnt[q])
                out_tcoh[p] = np.sqrt(re[q] * re[q] + im[q] * im[q]) / cnt[q]
                for c in range(k):
                    out_params[c, p] = z[n + c, q]
            n_bridged[:] = 0.0
            if full_group:
                for j in range(n_dates):
                    bridged_buf[j, g0 : g0 + lanes] = 0
            else:
                for j in range(n_dates):
                    row_b = bridged_buf[j]
                    for q in range(lanes):
                        flag = 0 if touched[j, q] > 0.0 else 1
                        row_b[g0 + q] = flag
                        n_bridged[q] += flag
            # The series relative to the reference epoch, with its least-squares rate and the
            # rate's standard error (residual variance about the line / Sxx), from sums over dates.
            for q in range(lanes):
                s1[q] = -zero[q]
                s2[q] = zero[q] * zero[q]
                sr[q] = -rate_w[0] * zero[q]
            for q in range(lanes):
                disp_buf[0, g0 + q] = -zero[q] if solved[q] != 0.0 else np.nan
            for j in range(n):
                row_d = disp_buf[j + 1]
                wj = rate_w[j + 1]
                for q in range(lanes):
                    d = z[j, q] - zero[q]
                    s1[q] += d
                    s2[q] += d * d
                    sr[q] += wj * d
                    row_d[g0 + q] = d if solved[q] != 0.0 else np.nan
            for q in range(width):
                p = pix[q]
                out_bfrac[p] = n_bridged[q] / n_dates
                if solved[q] != 0.0:
                    mean = s1[q] / n_dates
                    ss = s2[q] - n_dates * mean * mean - sr[q] * sr[q] * sxx
                    out_rate[p] = sr[q]
                    out_vstd[p] = np.sqrt(max(ss, 0.0) / max(n_dates - 2, 1) / sxx)
        # The block's series and flags, back from the grouped order into the pixels' order.
        if n_full == nb:  # the order was the pixels' own
            for j in range(n_dates):
                out_disp[j, s0 : s0 + nb] = disp_buf[j, :nb]
                out_bridged[j, s0 : s0 + nb] = bridged_buf[j, :nb]
            continue
        for i in range(nb):
            position[order[i]] = i
        for j in range(n_dates):
            src_d = disp_buf[j]
            src_b = bridged_buf[j]
            dst_d = out_disp[j, s0 : s0 + nb]
            dst_b = out_bridged[j, s0 : s0 + nb]
            for i in range(nb):
                dst_d[i] = src_d[position[i]]
                dst_b[i] = src_b[position[i]]


def _output_buffer(given: np.ndarray | None, name: str, shape: tuple[int, int],
                   dtype: type) -> np.ndarray:
    """``given`` checked to be a C-contiguous array of ``shape`` and ``dtype``, or a new one."""
    if given is None:
        return np.empty(shape, dtype=dtype)
    if given.shape != shape or given.dtype != dtype or not given.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape "
                         f"{shape}")
    return given


def solve_nsbas(
    data: np.ndarray,
    network: Network,
    spec: ConstraintSpec,
    v_ref: np.ndarray | None = None,
    min_valid: int = 1,
    pair_major: bool = False,
    reference_epoch: int = 0,
    wavelength_m: float | None = None,
    threads: int | None = 1,
    displacement_out: np.ndarray | None = None,
    bridged_out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Invert interferograms of many pixels at once.

    Parameters
    ----------
    data
        ``(P, M)`` LOS displacement of each pixel's M interferograms, mm; NaN = not valid.
        With ``pair_major``, ``(M, P)`` instead (the layout of a ``(pair, y, x)`` stack,
        read without a copy).
    network
        The M pairs' dates (``Network.n_pairs == M``).
    spec
        Constraint model and weight.
    v_ref
        ``(P,)`` reference rates (mm/yr), required when ``spec.velocity_reference``.
    min_valid
        Pixels with fewer valid interferograms are returned as NaN.
    reference_epoch
        Index of the date whose displacement is zero in the returned series.
    wavelength_m
        Radar wavelength (m), to express residuals as phase for the temporal coherence;
        Sentinel-1's when not given.
    threads
        Threads solving pixel ranges side by side (``None``: one per core). Inside dask
        tiles, which already run in parallel, keep 1.
    displacement_out
        Optional ``(N, P)`` float32 C-contiguous buffer the series are written into (every
        element is written), to save a copy when the caller assembles a larger output.
    bridged_out
        The same for the ``(N, P)`` uint8 flags of bridged epochs.

    Returns
    -------
    dict with ``displacement`` ``(P, N)`` (mm, relative to ``reference_epoch``), ``n_valid``
    ``(P,)``, ``residual_rms`` ``(P,)`` (mm, over valid interferograms), ``params``
    ``(P, k)`` (constraint parameters in the order of :func:`constraint_basis`, for the
    series relative to the first date), ``param_names``, ``temporal_coherence`` ``(P,)``
    (``|Σ exp(i·4π/λ·residual)| / M``, 0–1), ``n_parts`` ``(P,)`` (connected parts of the
    pixel's network of valid pairs), ``bridged`` ``(P, N)`` (1 where no valid pair touches the
    date: its value comes from the constraint model alone), ``bridged_fraction`` ``(P,)``
    (share of such dates), ``condition`` ``(P,)`` (an estimate of the normal matrix's
    condition number; ~1e16 and above means singular), ``rate`` ``(P,)`` (mm/yr, the
    least-squares rate of the returned series) and ``velocity_std`` ``(P,)`` (mm/yr, that
    rate's standard error from the scatter of the series about its line, as LiCSBAS's
    ``vstd``). Arrays are transposed views of date-major buffers.
    """
    data = np.asarray(data)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    if not pair_major:
        data = data.T
    data = np.ascontiguousarray(data)
    if data.ndim != 2 or data.shape[0] != network.n_pairs:
        raise ValueError(f"data must hold {network.n_pairs} interferograms per pixel; "
                         f"got shape {data.shape}")
    if spec.velocity_reference and v_ref is None:
        raise ValueError("v_ref is required for a velocity-referenced inversion")
    n_pix = data.shape[1]
    n_dates = network.n_dates
    if not 0 <= reference_epoch < n_dates:
        raise ValueError(f"reference_epoch {reference_epoch} is not a date index (0…{n_dates - 1})")
    parts = _NormalParts.of(network, spec)
    t, basis, names, bw = parts.t, parts.basis, parts.names, parts.bw
    k = basis.shape[1]
    lam_mm = 1000.0 * (wavelength_m if wavelength_m else 0.055465763)
    # Outputs are date-major (N, P): the layout of a (time, y, x) result.
    out_disp = _output_buffer(displacement_out, "displacement_out", (n_dates, n_pix), np.float32)
    out_bridged = _output_buffer(bridged_out, "bridged_out", (n_dates, n_pix), np.uint8)
    out_valid = np.zeros(n_pix, dtype=np.int64)
    out_rms = np.full(n_pix, np.nan, dtype=np.float32)
    out_params = np.full((k, n_pix), np.nan, dtype=np.float32)
    out_tcoh = np.full(n_pix, np.nan, dtype=np.float32)
    out_parts = np.zeros(n_pix, dtype=np.int32)
    out_cond = np.full(n_pix, np.nan, dtype=np.float32)
    out_rate = np.full(n_pix, np.nan, dtype=np.float32)
    out_vstd = np.full(n_pix, np.nan, dtype=np.float32)
    out_bfrac = np.zeros(n_pix, dtype=np.float32)
    vref = (np.zeros(n_pix) if v_ref is None
            else np.ascontiguousarray(np.broadcast_to(v_ref, (n_pix,)), dtype=np.float64))
    # Constraint rows are written for every date, the first included (paper Eq. 3): there the
    # cumulative displacement is 0 by definition, so the row ties the model's offset to the
    # series. Without it, a pixel whose first date no valid pair touches has a singular normal
    # matrix (the whole series and the offset can shift together).
    fixed = (
        network.ref_index.astype(np.int64),
        network.sec_index.astype(np.int64),
        n_dates,
        bw,
        np.ascontiguousarray(basis[1:]),
        np.ascontiguousarray(t[1:]),
        spec.gamma**2,
        spec.model == "none",
    )
    model = (
        bool(spec.velocity_reference),
        parts.arrow_init,
        parts.corner_init,
        max(int(min_valid), 1),
        int(reference_epoch),
        4.0 * np.pi / lam_mm,
        slope_weights(t),
        float(((t - t.mean()) ** 2).sum()),
    )

    def run(lo: int, hi: int) -> None:
        _solve_pixels(data[:, lo:hi], *fixed, vref[lo:hi], *model, out_disp[:, lo:hi],
                      out_valid[lo:hi], out_rms[lo:hi], out_params[:, lo:hi], out_tcoh[lo:hi],
                      out_parts[lo:hi], out_bridged[:, lo:hi], out_cond[lo:hi], out_rate[lo:hi],
                      out_vstd[lo:hi], out_bfrac[lo:hi])

    workers = max(1, min(int(threads or os.cpu_count() or 1), n_pix // (64 * _LANES)))
    if workers == 1:
        run(0, n_pix)
    else:  # the kernel releases the GIL: contiguous pixel ranges solved side by side
        edges = np.linspace(0, n_pix // _LANES, workers + 1).astype(int) * _LANES
        edges[-1] = n_pix
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return {
        "displacement": out_disp.T,  # (P, N) views of the date-major arrays
        "n_valid": out_valid,
        "residual_rms": out_rms,
        "params": out_params.T,
        "param_names": np.array(names),
        "temporal_coherence": out_tcoh,
        "n_parts": out_parts,
        "bridged": out_bridged.T,
        "condition": out_cond,
        "rate": out_rate,
        "velocity_std": out_vstd,
        "bridged_fraction": out_bfrac,
    }


@njit(cache=True, nogil=True, fastmath={"contract"})
def _rate_functional(ref: np.ndarray, sec: np.ndarray, n_ifg: int, bw: int, g2: float,
                     none_model: bool, arrow_init: np.ndarray, corner_init: np.ndarray,
                     rate_w: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """``g`` with ``g · d`` = the least-squares rate of the series solved from ``d``.

    For a pixel with every interferogram valid and no velocity reference, the series is
    ``u = F⁻¹ Aᵀ d`` (``F`` the normal matrix, ``A`` the pairs' date incidence) and its rate
    ``rᵀ u`` (``r`` the slope weights), so the rate is ``(A F⁻¹ r) · d``. Also returns whether
    ``F`` could be factorised.
    """
    k = arrow_init.shape[0]
    lanes = 1
    w = np.ones((n_ifg, lanes))
    band = np.empty((n, bw + 1, lanes))
    inv = np.empty((n, lanes))
    arrow = np.empty((k, n, lanes))
    corner = np.empty((k, k, lanes))
    ok = np.empty(lanes)
    _factor_lanes(w, ref, sec, bw, g2, none_model, arrow_init, corner_init, band, inv, arrow,
                  corner, ok)
    y = np.zeros((n + k, lanes))
    for j in range(n):
        y[j, 0] = rate_w[j + 1]
    _substitute(y, bw, band, inv, arrow, corner)
    g = np.empty(n_ifg)
    for m in range(n_ifg):
        a = ref[m]
        g[m] = y[sec[m] - 1, 0] - (y[a - 1, 0] if a > 0 else 0.0)
    return g, ok[0] != 0.0


@njit(cache=True, nogil=True)
def _rate_dot(data: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """``out[p] = Σ_m g[m] · data[m, p]`` summed in float64 (NaN when any term is NaN)."""
    n_ifg, n_pix = data.shape
    block = 2048
    acc = np.empty(block)
    for p0 in range(0, n_pix, block):
        nb = min(block, n_pix - p0)
        acc[:nb] = 0.0
        for m in range(n_ifg):
            row = data[m, p0 : p0 + nb]
            gm = g[m]
            for i in range(nb):
                acc[i] += gm * row[i]
        for i in range(nb):
            out[p0 + i] = acc[i]


def solve_rate(data: np.ndarray, network: Network, spec: ConstraintSpec, min_valid: int = 1,
               threads: int | None = 1) -> np.ndarray:
    """The ``rate`` (mm/yr) that :func:`solve_nsbas` returns, without the rest of the solve.

    ``data`` is pair-major ``(M, P)`` (mm, NaN = not valid); no velocity reference. A pixel
    with every interferogram valid gets its rate as one dot product with a fixed vector
    (:func:`_rate_functional`: the same least squares, summed in float64 in another order, so
    equal to rounding); the other pixels are solved in full by :func:`solve_nsbas`.
    """
    if spec.velocity_reference:
        raise ValueError("solve_rate takes no velocity reference")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] != network.n_pairs:
        raise ValueError(f"data must be pair-major with {network.n_pairs} interferograms; "
                         f"got shape {data.shape}")
    n_pairs, n_pix = data.shape
    parts = _NormalParts.of(network, spec)
    g, ok = _rate_functional(network.ref_index.astype(np.int64),
                             network.sec_index.astype(np.int64), n_pairs, parts.bw,
                             spec.gamma**2, spec.model == "none", parts.arrow_init,
                             parts.corner_init, slope_weights(parts.t), network.n_dates - 1)
    rate = np.full(n_pix, np.nan, np.float32)
    full_solvable = ok and n_pairs >= max(int(min_valid), 1)
    if full_solvable:
        _rate_dot(data, g, rate)
        # NaN where any interferogram is NaN (±inf where one is infinite): those are solved.
        partial = np.flatnonzero(~np.isfinite(rate))
    else:
        partial = np.arange(n_pix)
    if partial.size:
        rest = solve_nsbas(np.ascontiguousarray(data[:, partial]), network, spec, None,
                           min_valid, pair_major=True, threads=threads)
        rate[partial] = rest["rate"]
    return rate


def _flag_rows(packed: np.ndarray) -> np.ndarray:
    """The ``(4·rows, pixel)`` uint8 view of a block's ``(rows, pixel)`` float32 flag rows.

    The inversion returns one float32 block per tile; the per-epoch flags ride in it as bytes,
    four epochs' rows of bytes in each float32 row (a quarter of the rows; only copied, never
    computed on). Epoch ``j``'s flags are byte row ``j`` of that view.
    """
    rows = packed.shape[0]
    return np.ascontiguousarray(packed, dtype=np.float32).view(np.uint8).reshape(rows * 4, -1)


def _unpack_flags(packed: np.ndarray, n: int) -> np.ndarray:
    """A ``(rows, ...)`` block of flag rows (:func:`_flag_rows`) → ``(n, ...)`` uint8 flags."""
    return _flag_rows(packed)[:n].reshape(n, *packed.shape[1:])


QUALITY_LAYERS = ("n_valid_ifg", "residual_rms", "temporal_coherence", "n_parts",
                  "bridged_fraction", "condition", "velocity_std")
"""Per-pixel layers :func:`invert_nsbas` returns beside the series (see its docstring)."""


def invert_nsbas(
    los: xr.DataArray,
    spec: ConstraintSpec,
    v_ref: xr.DataArray | None = None,
    min_valid: int = 1,
    reference_from: tuple[ConstraintSpec, Callable[[np.ndarray], np.ndarray]] | None = None,
    reference_date: np.datetime64 | str | None = None,
    wavelength_m: float | None = None,
) -> xr.Dataset:
    """NSBAS inversion of a ``(pair, y, x)`` stack (numpy- or dask-backed) → time series.

    ``los`` must carry ``reference_date`` and ``secondary_date`` coordinates on ``pair``; with
    dask, the ``pair`` dimension must be a single chunk (spatial chunks are processed
    independently and in parallel).

    ``reference_from = (initial_spec, mapping)`` makes the velocity reference inside the same
    pass: each tile is first inverted with ``initial_spec``, the least-squares rate of that
    series (mm/yr) goes through ``mapping`` (e.g. a CDF matching) to give ``v_ref``, and the
    tile is inverted again with ``spec`` referenced to it — the data are read once.

    ``reference_date`` is the epoch whose displacement is zero (the network date closest to
    it; default the first date).

    Returns
    -------
    Dataset with ``displacement (time, y, x)`` (mm, LOS positive toward the satellite,
    relative to ``reference_date``), ``bridged (time, y, x)`` (1 where no valid pair touches
    the date at that pixel), the quality layers ``n_valid_ifg``, ``residual_rms`` (mm),
    ``temporal_coherence`` (0–1, as MintPy defines it), ``n_parts`` (connected parts of the
    pixel's network), ``bridged_fraction`` (share of dates set by the constraint alone),
    ``condition`` (estimate of the normal matrix's condition number) and ``velocity_std``
    (mm/yr, standard error of the series' least-squares rate, as LiCSBAS's ``vstd``),
    ``constraint_params (param, y, x)`` and, with ``reference_from``, ``velocity_reference``
    and ``initial_rate`` (mm/yr).
    """
    network = Network.from_stack(los)
    _, names = constraint_basis(network.years(), spec)
    k = len(names)
    if los.chunks is not None:
        los = los.chunk({"pair": -1})

    n_dates = network.n_dates
    ref_epoch = reference_epoch_index(network.dates, reference_date)
    extra = 2 if reference_from is not None else 0
    n_q = len(QUALITY_LAYERS)
    n_packed = -(-n_dates // 4)  # bridged flags, four epochs' bytes in each float32 row
    q0 = n_dates + n_packed
    n_out = q0 + n_q + k + extra

    def kernel(block: np.ndarray, vref_block: np.ndarray | None = None,
               threads: int | None = 1) -> np.ndarray:
        """``(pair, ny, nx)`` → ``(2·time + quality + k [+ 2], ny, nx)``."""
        m, ny, nx = block.shape
        flat = block.reshape(m, ny * nx)
        vflat = None if vref_block is None else np.ascontiguousarray(vref_block).reshape(-1)
        if reference_from is not None:
            initial_spec, mapping = reference_from
            # Only the initial series' rate is needed (solve_rate: most pixels need no solve).
            initial_rate = solve_rate(flat, network, initial_spec, min_valid, threads=threads)
            vflat = np.asarray(mapping(initial_rate), dtype=np.float64)
        out = np.empty((n_out, ny * nx), np.float32)
        flag_rows = _flag_rows(out[n_dates:q0])
        flag_rows[n_dates:] = 0  # the padding bytes of the last row
        res = solve_nsbas(flat, network, spec, vflat, min_valid, pair_major=True,
                          reference_epoch=ref_epoch, wavelength_m=wavelength_m, threads=threads,
                          displacement_out=out[:n_dates], bridged_out=flag_rows[:n_dates])
        out[q0] = res["n_valid"]
        out[q0 + 1] = res["residual_rms"]
        out[q0 + 2] = res["temporal_coherence"]
        out[q0 + 3] = res["n_parts"]
        out[q0 + 4] = res["bridged_fraction"]
        out[q0 + 5] = res["condition"]
        out[q0 + 6] = res["velocity_std"]
        out[q0 + n_q : q0 + n_q + k] = res["params"].T
        if reference_from is not None:
            out[n_out - 2] = vflat
            out[n_out - 1] = initial_rate
        return out.reshape(n_out, ny, nx)

    stack = los.drop_vars(["reference_date", "secondary_date"], errors="ignore")
    stack = stack.transpose("pair", "y", "x")
    if reference_from is not None:
        if not spec.velocity_reference:
            raise ValueError("reference_from needs a velocity-referenced spec")
        v_ref = None
    elif spec.velocity_reference:
        if v_ref is None:
            raise ValueError("v_ref is required for a velocity-referenced inversion")
        v_ref = v_ref.transpose("y", "x")
    if stack.chunks is not None:
        import dask.array as dsa

        data = stack.data.rechunk({0: -1})
        blocks = [data]
        if v_ref is not None:
            blocks.append(dsa.asarray(v_ref.data).rechunk(data.chunks[1:]))
        result = dsa.map_blocks(kernel, *blocks, dtype=np.float32,
                                chunks=((n_out,), *data.chunks[1:]))
    else:
        result = kernel(np.asarray(stack.values), v_ref.values if v_ref is not None else None,
                        threads=None)
    coords = {"y": stack["y"], "x": stack["x"]} if "y" in stack.coords else {}
    full = xr.DataArray(result, dims=("out", "y", "x"), coords=coords)
    def layer(i: int) -> xr.DataArray:
        return full.isel(out=q0 + i, drop=True)

    disp = full.isel(out=slice(0, n_dates)).rename(out="time").drop_vars("out", errors="ignore")
    packed = full.isel(out=slice(n_dates, q0)).data
    if hasattr(packed, "map_blocks"):
        flags = packed.map_blocks(_unpack_flags, n_dates, dtype=np.uint8,
                                  chunks=((n_dates,), *packed.chunks[1:]))
    else:
        flags = _unpack_flags(packed, n_dates)
    bridged = xr.DataArray(flags, dims=("time", "y", "x"), coords=disp.coords)
    params = full.isel(out=slice(q0 + n_q, q0 + n_q + k)).rename(out="param")
    times = network.dates.astype("datetime64[ns]")
    ref_label = str(network.dates[ref_epoch])
    ds = xr.Dataset(
        {
            "displacement": disp.assign_attrs(
                units="mm",
                long_name=f"cumulative LOS displacement relative to {ref_label}",
                sign_convention="positive toward the satellite",
                reference_date=ref_label,
            ),
            "bridged": bridged.assign_attrs(
                units="1", long_name="epoch set by the constraint model alone (no valid "
                "interferogram touches it at this pixel)", flag_values=[0, 1],
                flag_meanings="data model_bridged"),
            "n_valid_ifg": layer(0).astype(np.int32).assign_attrs(
                units="1", long_name="valid interferograms"),
            "residual_rms": layer(1).assign_attrs(
                units="mm", long_name="RMS of interferogram residuals"),
            "temporal_coherence": layer(2).assign_attrs(
                units="1", long_name="temporal coherence |mean exp(i 4π/λ residual)| over valid "
                "interferograms"),
            "n_parts": layer(3).astype(np.int32).assign_attrs(
                units="1", long_name="connected parts of the pixel's network of valid "
                "interferograms"),
            "bridged_fraction": layer(4).assign_attrs(
                units="1", long_name="fraction of epochs set by the constraint model alone"),
            "condition": layer(5).assign_attrs(
                units="1", long_name="condition estimate of the normal matrix (squared ratio "
                "of the largest to smallest Cholesky pivot)"),
            "velocity_std": layer(6).assign_attrs(
                units="mm/yr", long_name="standard error of the least-squares rate of the "
                "series"),
        },
        coords={"time": times},
    )
    if reference_from is not None:
        ds["velocity_reference"] = full.isel(out=n_out - 2, drop=True).assign_attrs(
            units="mm/yr", long_name="velocity reference v_ref (mapped initial rate), LOS")
        ds["initial_rate"] = full.isel(out=n_out - 1, drop=True).assign_attrs(
            units="mm/yr", long_name=f"rate of the initial '{reference_from[0].model}' inversion")
    if k:  # ("none" has no parameters; a zero-size output would make dask run the kernel twice)
        ds["constraint_params"] = params.assign_coords(param=names).assign_attrs(
            long_name="constraint model parameters (mm, mm/yr) of the series relative to the "
            "first date")
    ds.attrs.update(constraint_model=spec.model, gamma=spec.gamma, period_yr=spec.period_yr,
                    velocity_reference=int(spec.velocity_reference), reference_date=ref_label)
    return ds
