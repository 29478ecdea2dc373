"""The interferometric network: dates, pairs, loop closure and connected components in time."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from numba import njit

from talik.science.temporal import decimal_years

__all__ = [
    "LoopClosureResult",
    "Network",
    "choose_reference_date",
    "components",
    "date_coverage",
    "loop_closure",
    "plan_pairs",
    "reference_epoch_index",
    "revisit_days",
]


@dataclass(frozen=True)
class Network:
    """Dates and pairs of an interferogram stack.

    Attributes
    ----------
    dates
        Sorted unique acquisition dates (``datetime64[D]``) used by at least one pair.
    ref_index, sec_index
        For each pair, the index of its reference (earlier) and secondary date in ``dates``.
    """

    dates: np.ndarray
    ref_index: np.ndarray
    sec_index: np.ndarray

    @classmethod
    def from_pairs(cls, reference_dates, secondary_dates) -> Network:
        """Build from per-pair reference and secondary dates (any datetime-like arrays)."""
        ref = pd.to_datetime(np.asarray(reference_dates)).to_numpy().astype("datetime64[D]")
        sec = pd.to_datetime(np.asarray(secondary_dates)).to_numpy().astype("datetime64[D]")
        if np.any(sec <= ref):
            bad = int(np.flatnonzero(sec <= ref)[0])
            raise ValueError(f"pair {bad}: secondary date {sec[bad]} is not after {ref[bad]}")
        dates = np.unique(np.concatenate([ref, sec]))
        return cls(dates, np.searchsorted(dates, ref), np.searchsorted(dates, sec))

    @classmethod
    def from_stack(cls, stack: xr.DataArray | xr.Dataset) -> Network:
        """Build from a stack with ``reference_date`` and ``secondary_date`` coords on ``pair``."""
        return cls.from_pairs(stack["reference_date"].values, stack["secondary_date"].values)

    @property
    def n_dates(self) -> int:
        """Number of acquisition dates."""
        return len(self.dates)

    @property
    def n_pairs(self) -> int:
        """Number of interferograms."""
        return len(self.ref_index)

    def years(self) -> np.ndarray:
        """Time of each date in years (365.25 d) since the first date."""
        return decimal_years(self.dates)

    def subset(self, keep: np.ndarray) -> Network:
        """The network of the pairs where ``keep`` is true (dates re-indexed)."""
        return Network.from_pairs(self.dates[self.ref_index[keep]], self.dates[self.sec_index[keep]])

    def triplets(self) -> np.ndarray:
        """Loops ``(ij, jk, ik)`` as pair indices, for every closed triangle of the network."""
        lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(self.ref_index, self.sec_index,
                                                                     strict=True))}
        by_ref: dict[int, list[int]] = {}
        for (a, b) in lookup:
            by_ref.setdefault(a, []).append(b)
        loops = []
        for (i, j), ij in lookup.items():
            for k in by_ref.get(j, []):
                ik = lookup.get((i, k))
                if ik is not None:
                    loops.append((ij, lookup[(j, k)], ik))
        return np.array(sorted(loops), dtype=np.int64).reshape(-1, 3)


def components(network: Network, use: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Connected parts of the network in time, as ``(first, last)`` date indices.

    Dates are connected through pairs; because pairs span intervals of time, a part is a
    contiguous run of dates. ``use`` optionally restricts the pairs considered.
    """
    use = np.ones(network.n_pairs, bool) if use is None else np.asarray(use, bool)
    # An interval [ref, sec] connects every increment in between; a break is an increment
    # between consecutive dates that no used pair spans.
    spans = np.zeros(network.n_dates, dtype=np.int64)
    np.add.at(spans, network.ref_index[use], 1)
    np.add.at(spans, network.sec_index[use], -1)
    covered = np.cumsum(spans)[:-1] > 0  # increment d -> d+1 covered by some pair
    parts, start = [], 0
    for d, ok in enumerate(covered):
        if not ok:
            parts.append((start, d))
            start = d + 1
    parts.append((start, network.n_dates - 1))
    return parts


@dataclass(frozen=True)
class LoopClosureResult:
    """Outcome of the loop-closure check.

    Attributes
    ----------
    loops
        ``(n_loops, 3)`` pair indices of each triangle (ij, jk, ik).
    rms_rad
        RMS of each loop's closure phase over the area, radians.
    bad_loop
        Loops whose RMS exceeds the threshold.
    bad_pair
        Pairs rejected: every loop they belong to is bad.
    no_loop_pair
        Pairs that belong to no loop (cannot be checked; kept).
    n_loops_per_pair, n_bad_loops_per_pair
        Counts per pair.
    """

    loops: np.ndarray
    rms_rad: np.ndarray
    bad_loop: np.ndarray
    bad_pair: np.ndarray
    no_loop_pair: np.ndarray
    n_loops_per_pair: np.ndarray
    n_bad_loops_per_pair: np.ndarray


@njit(cache=True, nogil=True)
def _loop_rms(data: np.ndarray, loops: np.ndarray, to_rad: float, min_pixels: int
              ) -> np.ndarray:
    """RMS (rad) about its median of each loop's closure over the pixels valid in its 3 pairs.

    ``data`` is ``(pair, pixel)`` in mm, ``loops`` ``(n, 3)`` pair indices (ij, jk, ik); a
    loop with fewer than ``min_pixels`` common pixels gets NaN.
    """
    out = np.full(loops.shape[0], np.nan)
    closure = np.empty(data.shape[1])
    for k in range(loops.shape[0]):
        ij, jk, ik = loops[k, 0], loops[k, 1], loops[k, 2]
        n = 0
        for p in range(data.shape[1]):
            value = np.float64(data[ij, p]) + np.float64(data[jk, p]) - np.float64(data[ik, p])
            if np.isfinite(value):
                closure[n] = value * to_rad
                n += 1
        if n == 0 or n < min_pixels:
            continue
        median = np.median(closure[:n])
        total = 0.0
        for q in range(n):
            total += (closure[q] - median) ** 2
        out[k] = np.sqrt(total / n)
    return out


def loop_closure(
    los_mm: xr.DataArray,
    network: Network,
    wavelength_m: float,
    threshold_rad: float = 1.5,
    min_pixels: int = 20,
) -> LoopClosureResult:
    """Reject interferograms with unwrapping errors by triplet loop closure (LiCSBAS step 12).

    The closure of loop (ij, jk, ik) is ``φ_ij + φ_jk − φ_ik``: zero for consistent
    unwrapping, an integer number of 2π over the patch an unwrapping error affects. Its
    RMS over the pixels valid in all three pairs (after each pair was referenced to the
    common area, and with the loop's own median removed) is compared with ``threshold_rad``.
    A pair is bad when every loop it belongs to is bad.

    Parameters
    ----------
    los_mm
        ``(pair, y, x)`` LOS displacement in mm, referenced, in memory (a spatial subsample
        is enough for RMS statistics).
    """
    loops = network.triplets()
    n_pairs = network.n_pairs
    to_rad = 4.0 * np.pi / (wavelength_m * 1000.0)
    data = np.ascontiguousarray(los_mm.transpose("pair", "y", "x").values.reshape(n_pairs, -1))
    # The loops in one slice per core (the kernel releases the GIL).
    cuts = np.linspace(0, len(loops), (os.cpu_count() or 1) + 1).astype(int)
    with ThreadPoolExecutor(max_workers=len(cuts) - 1) as pool:
        parts = list(pool.map(lambda a, b: _loop_rms(data, loops[a:b], to_rad, min_pixels),
                              cuts[:-1], cuts[1:]))
    rms = np.concatenate(parts)
    bad_loop = rms > threshold_rad
    n_loops = np.zeros(n_pairs, np.int64)
    n_bad = np.zeros(n_pairs, np.int64)
    checked = np.isfinite(rms)
    for col in range(3):
        np.add.at(n_loops, loops[checked, col], 1)
        np.add.at(n_bad, loops[bad_loop, col], 1)
    bad_pair = (n_loops > 0) & (n_bad == n_loops)
    return LoopClosureResult(loops, rms, bad_loop, bad_pair, n_loops == 0, n_loops, n_bad)


def date_coverage(valid: np.ndarray, network: Network) -> np.ndarray:
    """Per date, the fraction of pixels with data at which a valid interferogram touches it.

    ``valid`` is ``(pair, pixel)`` boolean (the pixels may be a spatial subsample).
    """
    valid = np.asarray(valid, bool).reshape(network.n_pairs, -1)
    has_data = valid.any(axis=0)
    touched = np.zeros((network.n_dates, valid.shape[1]), bool)
    for i in range(network.n_pairs):  # a loop over pairs, vectorised over pixels
        touched[network.ref_index[i]] |= valid[i]
        touched[network.sec_index[i]] |= valid[i]
    return touched[:, has_data].mean(axis=1) if has_data.any() else touched.mean(axis=1)


def choose_reference_date(coverage: np.ndarray, network: Network,
                          reference_date: np.datetime64 | None,
                          min_coverage: float) -> tuple[int, dict]:
    """Index of the date every series is expressed relative to, and why it was chosen.

    A configured ``reference_date`` is taken as given (the nearest network date). Otherwise
    the first date whose ``coverage`` (:func:`date_coverage`) reaches ``min_coverage``: the
    start of the first connected part of the network that carries data, so a range that
    begins with winter dates no valid pair touches gets the same zero as one that does not.
    """
    coverage = np.asarray(coverage, dtype=float)
    if reference_date is not None:
        index = reference_epoch_index(network.dates, reference_date)
        how = "configured"
    else:
        above = np.flatnonzero(coverage >= min_coverage)
        index = int(above[0]) if above.size else int(np.argmax(coverage))
        how = f"first date covered at >= {min_coverage:.0%} of pixels"
    info = {"date": str(network.dates[index]), "index": index, "how": how,
            "epoch_coverage": [round(float(c), 4) for c in coverage],
            "coverage": round(float(coverage[index]), 4),
            "first_date": str(network.dates[0]),
            "first_date_coverage": round(float(coverage[0]), 4)}
    return index, info


def revisit_days(network: Network) -> float:
    """Mean interval between consecutive acquisitions inside the connected parts, days.

    A winter gap between parts is not an interval between acquisitions of the network.
    """
    days = network.dates.astype("datetime64[D]").astype(np.int64)
    intervals = np.concatenate([np.diff(days[a : b + 1]) for a, b in components(network)])
    return float(intervals.mean() if intervals.size else np.diff(days).mean())


def reference_epoch_index(dates: np.ndarray, reference_date: np.datetime64 | str | None) -> int:
    """Index of the date the series are expressed relative to.

    ``None`` means the first date; otherwise the network date closest to ``reference_date``.
    """
    if reference_date is None:
        return 0
    target = np.datetime64(reference_date, "D")
    days = np.asarray(dates).astype("datetime64[D]")
    return int(np.abs((days - target).astype(np.int64)).argmin())


def plan_pairs(dates: np.ndarray | list, neighbours: int, max_baseline_days: int,
               months: list[int] | None = None,
               held: set[tuple[np.datetime64, np.datetime64]] | None = None
               ) -> list[tuple[int, int]]:
    """The interferograms to order from a list of acquisition dates: ``(i, j)`` index pairs.

    Each date is paired with its next ``neighbours`` dates that lie at most
    ``max_baseline_days`` later (the count is of dates, not of a fixed revisit, so a missing
    acquisition or a new satellite changes nothing); with ``months``, both dates must fall in
    those calendar months (e.g. the snow-free season). Pairs in ``held`` (reference and
    secondary as ``datetime64[D]``) are left out. Dates must be sorted and unique; the result
    is sorted by reference, then secondary date.
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    if days.size > 1 and not (np.diff(days) > np.timedelta64(0, "D")).all():
        raise ValueError("plan_pairs: dates must be sorted and unique")
    if neighbours < 1 or max_baseline_days < 1:
        raise ValueError("plan_pairs: neighbours and max_baseline_days must be >= 1")
    allowed = np.ones(days.size, bool)
    if months:
        month = (days.astype("datetime64[M]").astype(int) % 12) + 1
        allowed = np.isin(month, months)
    candidates = np.flatnonzero(allowed)
    held = held or set()
    out = []
    for pos, i in enumerate(candidates):
        for j in candidates[pos + 1: pos + 1 + neighbours]:
            if (days[j] - days[i]).astype(int) > max_baseline_days:
                break
            if (days[i], days[j]) not in held:
                out.append((int(i), int(j)))
    return out
