"""Forward update of NSBAS series by new epochs, the earlier epochs kept (extending in time).

When a study is extended by new acquisitions, the operational practice (OPERA DISP-S1's
ministacks) is not to invert the whole stack again but to solve only the new epochs against
what was published. :func:`solve_forward` does that for the NSBAS problem of
:mod:`talik.science.inversion`: for one pixel with kept series ``u`` (mm, relative to the
reference date) at the earlier dates, constraint parameters ``p`` and, velocity-referenced,
rate ``v_ref``, the new epochs ``x_k`` solve in the least-squares sense::

    d_m          = x(b_m) − u(a_m)  or  x(b_m) − x(a_m)     every valid new interferogram m
    γ·x_k        = γ·(P(t_k)·p + v_ref·t_k + u(t_0))         every new date k

(``none``: ``γ·(x_k − x_{k−1}) = 0`` with ``x_0`` the last kept epoch). These are exactly the
rows of the whole problem that hold a new unknown, with the earlier unknowns and the
parameters fixed at their published values: the past is not revised, and each new date costs
a ``K × K`` solve per pixel (``K`` new dates), vectorised across pixels.

What is carried over rather than recomputed, and how (stated in the product's attributes):
``n_valid_ifg``, ``residual_rms`` and ``bridged_fraction`` are updated exactly from the kept
values and the new rows; ``temporal_coherence`` combines the kept modulus with the new
residuals' phasors taking the kept sum's phase as zero (least-squares residuals are centred;
the error is at most 2·n_new/n of the value); ``n_parts`` adds the new dates' parts not joined
to the earlier network (two earlier parts joined by new pairs are not merged: an upper bound);
``condition`` is the larger of the kept value and the new system's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talik.science.inversion import ConstraintSpec, constraint_basis
from talik.science.temporal import decimal_years

__all__ = ["ForwardNetwork", "solve_forward"]


@dataclass(frozen=True)
class ForwardNetwork:
    """The new pairs of an extension and how they join the kept dates.

    Attributes
    ----------
    kept_dates
        The earlier series' dates (``datetime64[D]``, sorted; the first is the series' origin).
    new_dates
        The dates after ``kept_dates[-1]`` that new pairs reach (sorted).
    incidence
        ``(M, K)``: +1 at a pair's new secondary date, −1 at its new reference date.
    kept_reference
        ``(M,)``: for a pair whose reference date is a kept date, its index in
        ``kept_dates``; −1 when the reference date is new.
    """

    kept_dates: np.ndarray
    new_dates: np.ndarray
    incidence: np.ndarray
    kept_reference: np.ndarray

    @staticmethod
    def of(kept_dates: np.ndarray, reference: np.ndarray, secondary: np.ndarray
           ) -> ForwardNetwork:
        """From the kept dates and the new pairs' reference and secondary dates.

        Refused (``ValueError``) when a pair's secondary date is not after the last kept date
        or its reference date is neither a kept date nor a new one: such a pair would revise
        the past, which the forward update does not do.
        """
        kept = np.asarray(kept_dates, dtype="datetime64[D]")
        ref = np.asarray(reference, dtype="datetime64[D]")
        sec = np.asarray(secondary, dtype="datetime64[D]")
        if sec.size == 0:
            raise ValueError("no new pairs")
        if (sec <= kept[-1]).any():
            raise ValueError(f"pairs ending on or before the last kept date {kept[-1]} revise "
                             "the past")
        new = np.unique(sec)
        m, k = sec.size, new.size
        incidence = np.zeros((m, k))
        incidence[np.arange(m), np.searchsorted(new, sec)] = 1.0
        from_new = ref > kept[-1]
        if (from_new & ~np.isin(ref, new)).any():
            raise ValueError("a new pair's reference date is after the kept dates but no pair "
                             "ends there")
        incidence[np.flatnonzero(from_new), np.searchsorted(new, ref[from_new])] = -1.0
        kept_ref = np.full(m, -1, dtype=np.int64)
        idx = np.searchsorted(kept, ref[~from_new])
        if (idx >= kept.size).any() or (kept[np.minimum(idx, kept.size - 1)] != ref[~from_new]).any():
            raise ValueError("a new pair's reference date is not one of the kept dates")
        kept_ref[~from_new] = idx
        return ForwardNetwork(kept, new, incidence, kept_ref)

    @property
    def kept_needed(self) -> np.ndarray:
        """Indices (in ``kept_dates``) of the kept epochs the new pairs start from."""
        return np.unique(self.kept_reference[self.kept_reference >= 0])

    def new_years(self) -> np.ndarray:
        """The new dates in years (365.25 d) since the first kept date."""
        return decimal_years(np.concatenate([self.kept_dates[:1], self.new_dates]))[1:]


def _parts_not_joined(valid: np.ndarray, net: ForwardNetwork) -> np.ndarray:
    """``(P,)`` count of connected parts of new dates that no valid pair joins to a kept date."""
    k = net.new_dates.size
    sec = net.incidence.argmax(axis=1)
    ref_new = np.where(net.kept_reference < 0, net.incidence.argmin(axis=1), -1)
    n_pix = valid.shape[1]
    joined = np.zeros((k, n_pix), bool)
    touched = np.zeros((k, n_pix), bool)
    label = np.repeat(np.arange(k)[:, None], n_pix, axis=1)
    for m in range(sec.size):
        touched[sec[m]] |= valid[m]
        if ref_new[m] >= 0:
            touched[ref_new[m]] |= valid[m]
    for _ in range(k):  # joins and labels travel at most k steps
        for m in range(sec.size):
            v = valid[m]
            if ref_new[m] < 0:
                joined[sec[m]] |= v
                continue
            a, b = ref_new[m], sec[m]
            either = v & (joined[a] | joined[b])
            joined[a] |= either
            joined[b] |= either
            low = np.where(v, np.minimum(label[a], label[b]), label[a])
            label[a] = low
            label[b] = np.where(v, np.minimum(low, label[b]), label[b])
    roots = touched & ~joined & (label == np.arange(k)[:, None])
    return roots.sum(axis=0)


def solve_forward(
    data: np.ndarray,
    net: ForwardNetwork,
    spec: ConstraintSpec,
    kept_at: np.ndarray,
    kept_first: np.ndarray,
    kept_last: np.ndarray,
    params: np.ndarray | None,
    v_ref: np.ndarray | None,
    kept_quality: dict[str, np.ndarray],
    n_pairs_total: int,
    min_valid_fraction: float,
    wavelength_m: float,
) -> dict[str, np.ndarray]:
    """Solve the new epochs of many pixels at once, the kept epochs fixed.

    Parameters
    ----------
    data
        ``(M, P)`` new interferograms (mm, corrected and referenced like the kept ones); NaN =
        not valid.
    net
        The new pairs (:class:`ForwardNetwork`).
    spec
        The constraint of the kept series.
    kept_at
        ``(len(net.kept_needed), P)`` kept displacement (mm) at ``net.kept_needed``.
    kept_first, kept_last
        ``(P,)`` kept displacement at the first and the last kept date (mm).
    params
        ``(k, P)`` the kept constraint parameters (:func:`constraint_basis` order, series
        relative to the first date); None for ``none``.
    v_ref
        ``(P,)`` the kept velocity reference (mm/yr) when ``spec.velocity_reference``.
    kept_quality
        ``(P,)`` kept ``n_valid_ifg``, ``residual_rms``, ``temporal_coherence``, ``n_parts``,
        ``bridged_fraction``, ``condition``.
    n_pairs_total
        Pairs of the extended network (kept + new), for the ``min_valid`` rule.
    min_valid_fraction
        A pixel needs at least this fraction of ``n_pairs_total`` valid pairs to be solved.
    wavelength_m
        Radar wavelength (m), for the temporal coherence.

    Returns
    -------
    dict with ``displacement`` ``(K, P)`` (float32, mm), ``bridged`` ``(K, P)`` (uint8), the
    updated quality layers (``(P,)`` each) and ``solved`` ``(P,)`` (bool: the pixel keeps a
    series; its kept epochs must be set to NaN where it does not).
    """
    m, n_pix = data.shape
    k = net.new_dates.size
    a = net.incidence
    base = np.zeros((m, n_pix))
    has_kept = net.kept_reference >= 0
    if has_kept.any():
        where = np.searchsorted(net.kept_needed, net.kept_reference[has_kept])
        base[has_kept] = kept_at[where]
    rhs = data.astype(np.float64) + base
    valid = np.isfinite(rhs)
    w = valid.astype(np.float64)
    rhs = np.where(valid, rhs, 0.0)
    g2 = spec.gamma ** 2
    # Normal matrices: Σ_m w_mp a_m a_mᵀ + γ² C, built as one product over all pixels.
    outer = (a[:, :, None] * a[:, None, :]).reshape(m, k * k)
    normal = (w.T @ outer).reshape(n_pix, k, k)
    rhs_vec = (rhs * w).T @ a  # (P, K)
    if spec.model == "none":
        diff = np.eye(k) - np.eye(k, k=-1)  # rows x_1 − x_0, x_k − x_{k−1}
        normal += g2 * (diff.T @ diff)
        rhs_vec[:, 0] += g2 * np.asarray(kept_last, np.float64)
    else:
        basis, _ = constraint_basis(net.new_years(), spec)
        model = basis @ np.asarray(params, np.float64)  # (K, P), first-date frame
        if spec.velocity_reference:
            model += net.new_years()[:, None] * np.asarray(v_ref, np.float64)[None, :]
        model += np.asarray(kept_first, np.float64)[None, :]  # to the reference-date frame
        normal += g2 * np.eye(k)
        rhs_vec += g2 * model.T
    n_valid = kept_quality["n_valid_ifg"].astype(np.int64) + valid.sum(axis=0)
    min_valid = max(1, int(np.ceil(min_valid_fraction * n_pairs_total)))
    solved = (np.isfinite(kept_first) & np.isfinite(kept_last)
              & np.isfinite(rhs_vec).all(axis=1) & (n_valid >= min_valid))
    normal[~solved] = np.eye(k)
    rhs_vec[~solved] = 0.0
    x = np.linalg.solve(normal, rhs_vec[:, :, None])[:, :, 0].T  # (K, P)
    x[:, ~solved] = np.nan
    residual = np.where(valid, a @ x - rhs, 0.0)  # (M, P) mm
    n_new = valid.sum(axis=0)
    n_old = kept_quality["n_valid_ifg"].astype(np.float64)
    total = np.maximum(n_old + n_new, 1)
    rms_old = np.nan_to_num(kept_quality["residual_rms"].astype(np.float64))
    rms = np.sqrt((rms_old ** 2 * n_old + (residual ** 2).sum(axis=0)) / total)
    to_rad = 4.0 * np.pi / (1000.0 * wavelength_m)
    phase = residual * to_rad
    re = np.nan_to_num(kept_quality["temporal_coherence"].astype(np.float64)) * n_old + (
        np.cos(phase) * w).sum(axis=0)
    im = (np.sin(phase) * w).sum(axis=0)
    tcoh = np.sqrt(re ** 2 + im ** 2) / total
    bridged = np.zeros((k, n_pix), np.uint8)
    touched = (np.abs(a).T @ w) > 0  # (K, P)
    bridged[~touched] = 1
    n_kept_dates = net.kept_dates.size
    bfrac = (kept_quality["bridged_fraction"].astype(np.float64) * n_kept_dates
             + bridged.sum(axis=0)) / (n_kept_dates + k)
    eig = np.linalg.eigvalsh(normal)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond_new = np.where(eig[:, 0] > 0, eig[:, -1] / eig[:, 0], np.inf)
    cond = np.fmax(kept_quality["condition"].astype(np.float64), cond_new)
    parts = kept_quality["n_parts"].astype(np.int64) + _parts_not_joined(valid, net)
    nan = ~solved
    out = {
        "displacement": x.astype(np.float32),
        "bridged": bridged,
        "n_valid_ifg": n_valid.astype(np.int32),
        "residual_rms": np.where(nan, np.nan, rms).astype(np.float32),
        "temporal_coherence": np.where(nan, np.nan, tcoh).astype(np.float32),
        "n_parts": parts.astype(np.int32),
        "bridged_fraction": bfrac.astype(np.float32),
        "condition": np.where(nan, np.nan, cond).astype(np.float32),
        "solved": solved,
    }
    return out
