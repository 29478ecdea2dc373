"""Streamflow recession analysis (Kirchner 2009; paper §3.2, Eq. 5–6).

During recessions, ``−dQ/dt = a·Q^b``; the fit ``ln(−dQ/dt) = ln a + b·ln Q`` over recession
points gives ``a``, ``b`` and the recession time constant ``Ks = 1/a``.

Conventions (the "project-like" configuration of the TOSSH reference results):

* a **recession run** is a stretch of consecutive declining *steps* ``Q(t) < Q(t−1)``; a run of
  ``min_steps`` steps spans ``min_steps + 1`` days. Missing days break runs (the series must be
  on a full calendar, so a gap is never taken for one day's change);
* runs are detected on the **whole record**, then only the points whose day ``t`` falls in the
  chosen months are kept (``select="clip"``); ``select="mask"`` instead blanks the other months
  before detecting runs;
* a point pairs ``−dQ/dt = Q(t−1) − Q(t)`` (per day) with the two-day mean
  ``(Q(t−1) + Q(t))/2`` (Brutsaert–Nieber), or with ``Q(t)`` (``difference="backward"``);
* ``exclude_peak`` drops the first step of each run (the step leaving the peak day).

``a`` carries units ``(flow unit)^(1−b)·d⁻¹`` unless ``b = 1``, so Ks is only comparable in one
flow unit; the time constant at the median flow, ``1/(a·Q_med^(b−1))`` (days), is reported too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "RecessionFit",
    "fit_recession",
    "recession_points",
    "windowed_fits",
]

Difference = Literal["brutsaert_nieber", "backward"]
Select = Literal["clip", "mask"]


def recession_points(
    flow: pd.Series,
    min_steps: int = 7,
    months: tuple[int, ...] | list[int] = (8, 9, 10),
    exclude_peak: bool = False,
    difference: Difference = "brutsaert_nieber",
    select: Select = "clip",
) -> pd.DataFrame:
    """Recession points of a daily flow series.

    Parameters
    ----------
    flow
        Daily flow on a full calendar (``DatetimeIndex`` with daily frequency), positive, NaN
        where missing. Any unit; the fit's ``a`` will carry it.

    Returns
    -------
    DataFrame indexed by the day ``t`` of each point, with ``q`` (flow paired with the
    difference), ``dqdt`` (Q(t) − Q(t−1), negative, per day) and ``event`` (run number).
    """
    q = flow.astype(float)
    idx = pd.DatetimeIndex(q.index)
    if len(idx) > 1 and not ((idx[1:] - idx[:-1]) == pd.Timedelta(days=1)).all():
        raise ValueError("flow must be on a full daily calendar (missing days as NaN)")
    if (q <= 0).any():
        raise ValueError("flow must be positive (mask zero flows as NaN first)")
    months = tuple(months)
    if select == "mask":
        q = q.where(idx.month.isin(months))
    prev = q.shift(1)
    step = q - prev  # NaN when either day is missing
    declining = (step < 0).to_numpy()
    # Number consecutive declining steps; a non-declining (or missing) step ends a run.
    run_start = declining & ~np.concatenate([[False], declining[:-1]])
    run_id = np.cumsum(run_start)
    run_id = np.where(declining, run_id, 0)
    lengths = np.bincount(run_id)
    keep = declining & (lengths[run_id] >= min_steps)
    if exclude_peak:
        keep &= ~run_start
    if difference == "brutsaert_nieber":
        paired = (q + prev) / 2.0
    elif difference == "backward":
        paired = q
    else:
        raise ValueError(f"unknown difference {difference!r}")
    in_months = idx.month.isin(months)
    keep &= in_months
    out = pd.DataFrame({"q": paired.to_numpy()[keep], "dqdt": step.to_numpy()[keep],
                        "event": run_id[keep]}, index=idx[keep])
    out.index.name = "date"
    return out


@dataclass(frozen=True)
class RecessionFit:
    """Least-squares fit of ``ln(−dQ/dt) = ln a + b ln Q``.

    ``ks_days`` is ``1/a``; its 95 % interval comes from the interval of ``ln a`` (Student t,
    n − 2 degrees of freedom). ``tau_median_days`` is ``1/(a·Q_med^(b−1))`` at the median
    recession flow ``q_median``.
    """

    a: float
    b: float
    ks_days: float
    ks_ci_low: float
    ks_ci_high: float
    b_ci_low: float
    b_ci_high: float
    r2: float
    n_points: int
    n_events: int
    q_median: float
    tau_median_days: float

    def as_dict(self) -> dict:
        """The fit as a plain dict."""
        return asdict(self)


def _empty(n_points: int, n_events: int) -> RecessionFit:
    nan = float("nan")
    return RecessionFit(nan, nan, nan, nan, nan, nan, nan, nan, n_points, n_events, nan, nan)


def fit_recession(points: pd.DataFrame, min_points: int = 10, confidence: float = 0.95
                  ) -> RecessionFit:
    """Fit the power law to recession points; NaN results with fewer than ``min_points``."""
    n = len(points)
    n_events = int(points["event"].nunique()) if n else 0
    if n < max(min_points, 3):
        return _empty(n, n_events)
    x = np.log(points["q"].to_numpy(dtype=float))
    y = np.log(-points["dqdt"].to_numpy(dtype=float))
    if np.ptp(x) == 0:
        return _empty(n, n_events)
    res = stats.linregress(x, y)
    t = stats.t.ppf(0.5 + confidence / 2, n - 2)
    ln_a, b = res.intercept, res.slope
    a = float(np.exp(ln_a))
    q_med = float(np.median(points["q"]))
    return RecessionFit(
        a=a,
        b=float(b),
        ks_days=1.0 / a,
        ks_ci_low=float(np.exp(-(ln_a + t * res.intercept_stderr))),
        ks_ci_high=float(np.exp(-(ln_a - t * res.intercept_stderr))),
        b_ci_low=float(b - t * res.stderr),
        b_ci_high=float(b + t * res.stderr),
        r2=float(res.rvalue**2),
        n_points=n,
        n_events=n_events,
        q_median=q_med,
        tau_median_days=float(1.0 / (a * q_med ** (b - 1.0))),
    )


def windowed_fits(points: pd.DataFrame, window_years: int, first_year: int, last_year: int,
                  min_points: int = 10, confidence: float = 0.95, units: str = "") -> pd.DataFrame:
    """Fits over moving windows of ``window_years`` years, pooling every point inside.

    One row per window ``[start, start + window_years − 1]`` fully inside
    ``[first_year, last_year]``: ``window_start``, ``window_end``, ``center_year`` (the middle
    year; for even lengths the later of the two), the fit's fields, ``status`` (``ok`` or
    ``insufficient`` below ``min_points``) and ``units`` of the flow used.
    """
    years = pd.DatetimeIndex(points.index).year.to_numpy() if len(points) else np.array([])
    rows = []
    for start in range(first_year, last_year - window_years + 2):
        end = start + window_years - 1
        sel = points[(years >= start) & (years <= end)]
        fit = fit_recession(sel, min_points, confidence)
        rows.append({"window_start": start, "window_end": end,
                     "center_year": start + window_years // 2, **fit.as_dict(),
                     "status": "ok" if np.isfinite(fit.a) else "insufficient", "units": units})
    return pd.DataFrame(rows)
