"""The Prefect artifact of a monitoring run: its results where the UI shows the run.

One markdown artifact per run (key ``release-<study>``, so the UI keeps its history): whether a
release was made and where it is, the headline numbers of each step, the long-term period
table, and links to the release's figures and report.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from talik.config import StudyConfig
from talik.tasks.publish import PublishOutcome
from talik.tasks.records import StepOutput

__all__ = ["publish_run_artifact", "run_summary_markdown"]


def _num(value: object, fmt: str = ".3g") -> str:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return format(value, fmt)
    return "—"


def _headlines(steps: list[StepOutput]) -> list[str]:
    by_name = {s.step: s.summary for s in steps}
    rows = []
    s1 = by_name.get("sentinel1-timeseries")
    if s1:
        rows += [("Sentinel-1 dates", _num(s1.get("n_dates"), "d")),
                 ("interferograms used", _num(s1.get("n_pairs_used"), "d")),
                 ("rejected by loop closure", str(len(s1.get("rejected") or []))),
                 ("series relative to", str(s1.get("reference_date") or "—")),
                 ("velocity reference", str(s1.get("velocity_reference") or "—")),
                 ("pixels trusted / solved", f"{_num(s1.get('pixels_trusted'), 'd')} / "
                                             f"{_num(s1.get('pixels_solved'), 'd')}")]
    rec = by_name.get("recession")
    if rec:
        rows += [("pooled Ks", f"{_num(rec.get('pooled_ks_days'))} d"),
                 ("climate regression R²", _num(rec.get("attribution_r2")))]
    joint = by_name.get("joint-assessment")
    if joint:
        for key, label in (("ks_vs_subsidence_rate", "Ks vs subsidence rate"),
                           ("ks_vs_thaw_season_subsidence", "Ks vs thaw-season subsidence")):
            r = joint.get(key) or {}
            rows.append((label, f"r = {_num(r.get('r'), '+.2f')}, p = {_num(r.get('p_value'))}, "
                                f"n = {_num(r.get('n'), 'd')}"))
    if not rows:
        return []
    return ["| result | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]


def _period_table(release: Path) -> list[str]:
    path = release / "products" / "period_stats.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    lines = ["| period | sensor | rate (mm/yr, LOS) | thaw season (mm, LOS) | pixels | reliable |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        reliable = getattr(r, "thaw_season_reliable", "")
        lines.append(f"| {r.label} | {r.sensor} | {_num(r.rate_mm_yr_mean, '+.2f')} ± "
                     f"{_num(r.rate_mm_yr_std, '.2f')} | {_num(r.thaw_season_mm_mean, '+.1f')} | "
                     f"{_num(r.n_pixels, 'd')} | {reliable} |")
    return lines


def run_summary_markdown(cfg: StudyConfig, outcome: PublishOutcome,
                         steps: list[StepOutput]) -> str:
    """The run's results as markdown (see the module docstring)."""
    release = Path(outcome.release.path)
    status = ("published new release" if outcome.created
              else "no new release (inputs, options and code match)")
    lines = [f"# {cfg.title}", "",
             f"**{status} {outcome.release.id}** ({outcome.release.created}, digest "
             f"`{outcome.release.digest[:12]}`) at `{release}`", ""]
    lines += _headlines(steps)
    periods = _period_table(release)
    if periods:
        lines += ["", "## Periods (long-term record)", "", *periods]
    figures = sorted((release / "figures").glob("*.png"))
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"- [{f.stem}]({f.as_uri()})" for f in figures]
    lines += ["", f"Full report: [{release / 'report.md'}]({(release / 'report.md').as_uri()})"]
    return "\n".join(lines) + "\n"


@task(name="run-artifact", cache_policy=NO_CACHE)
def publish_run_artifact(cfg: StudyConfig, outcome: PublishOutcome,
                         steps: list[StepOutput]) -> str:
    """Create the run's markdown artifact; returns its key."""
    from prefect.artifacts import create_markdown_artifact

    key = "release-" + cfg.name.replace("_", "-")
    create_markdown_artifact(markdown=run_summary_markdown(cfg, outcome, steps), key=key,
                             description=f"{cfg.title}: release {outcome.release.id}")
    return key
