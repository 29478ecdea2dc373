"""Prefect tasks of the ingest subflows (:mod:`talik.flows.ingest` decides their order).

Each opens the study's ledger and raw store and calls one source module of
:mod:`talik.tasks.ingest`.

Every task reads and writes the ledger (:class:`~talik.tasks.ingest.ledger.Ledger`), so an
interrupted run resumes: nothing already ordered is ordered again, nothing already downloaded
and verified is downloaded again. The tasks are never cached by Prefect: what is new is the
ledger's business, not an input hash's.
"""

from __future__ import annotations

import collections
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from talik.config import LocalSource, StudyConfig
from talik.tasks.ingest.common import IngestError, PermanentServiceError, install_redaction, redact
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.log import step_logger

__all__ = ["FETCH_TASKS", "JobsStillRunningError", "discover_asf", "download_hyp3",
           "ledger_of", "order_hyp3", "poll_hyp3", "raw_store_of", "summary_artifact"]


class JobsStillRunningError(IngestError):
    """Raised by the polling task while jobs are still running (so Prefect retries it)."""


def ledger_of(cfg: StudyConfig) -> Ledger:
    """The study's ledger (``[ingest] ledger``, default ``<work_dir>/ingest/ledger.sqlite``)."""
    path = cfg.ingest.ledger or Path(cfg.stores.work_dir) / "ingest" / "ledger.sqlite"
    return Ledger(path)


def raw_store_of(cfg: StudyConfig, ledger: Ledger) -> RawStore:
    """The raw store: the local source's folders, under their common root."""
    if not isinstance(cfg.source, LocalSource):
        raise PermanentServiceError("[ingest] needs [source] kind = \"local\" (its folders receive "
                                    "the downloads)")
    from talik.tasks.ingest.local import common_root, source_locations

    paths = [p.resolve() for p in source_locations(cfg.source).values()]
    root = common_root(paths) if paths else Path(cfg.stores.work_dir)
    return RawStore(root, ledger, cfg.ingest.retries)


def _store(cfg: StudyConfig) -> tuple[Ledger, RawStore]:
    install_redaction()
    ledger = ledger_of(cfg)
    return ledger, raw_store_of(cfg, ledger)


# --------------------------------------------------------------------------------- ASF/HyP3
@task(name="asf-discover-scenes", cache_policy=NO_CACHE)
def discover_asf(cfg: StudyConfig) -> dict[str, Any]:
    """Search ASF for scenes over the area; record the new ones in the ledger."""
    from talik.tasks.ingest.asf import discover_scenes

    ledger, _ = _store(cfg)
    summary = discover_scenes(cfg, ledger)
    step_logger().info("ASF: %s scenes found, %s new", summary.get("n_found"), summary.get("n_new"))
    return summary


@task(name="hyp3-plan-and-order", cache_policy=NO_CACHE)
def order_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Plan the pairs the scenes allow, and order the missing ones within the budget."""
    from talik.tasks.ingest.hyp3 import order_pairs, plan_orders

    ledger, _ = _store(cfg)
    planned = plan_orders(cfg, ledger)
    ordered = order_pairs(cfg, ledger)
    step_logger().info("HyP3: %s new pairs planned; ordered: %s", planned.get("n_new_pairs"), ordered)
    return {"planned": planned, "ordered": ordered}


@task(name="hyp3-poll-jobs", cache_policy=NO_CACHE)
def poll_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Refresh the jobs' states (failed ones resubmitted); raise while any still runs."""
    from talik.tasks.ingest.hyp3 import poll_jobs

    ledger, _ = _store(cfg)
    summary = poll_jobs(cfg, ledger)
    if summary.get("n_running", 0):
        raise JobsStillRunningError(f"{summary['n_running']} HyP3 jobs still running")
    return summary


@task(name="hyp3-download-products", cache_policy=NO_CACHE)
def download_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Download finished products (soonest to expire first) into the HyP3 folder."""
    from talik.tasks.ingest.hyp3 import download_products

    ledger, store = _store(cfg)
    summary = download_products(cfg, ledger, store)
    step_logger().info("HyP3: %s", summary)
    return summary




def _fetch_task(name: str, module: str, function: str, doc: str,
                extra: Callable[[StudyConfig], dict[str, Any]] = lambda cfg: {}) -> Any:
    """A task that calls ``talik.tasks.ingest.<module>.<function>(cfg, ledger, store, **extra)``."""

    def fetch(cfg: StudyConfig) -> dict[str, Any]:
        ledger, store = _store(cfg)
        call = getattr(importlib.import_module(f"talik.tasks.ingest.{module}"), function)
        return call(cfg, ledger, store, **extra(cfg))

    fetch.__doc__ = doc
    fetch.__name__ = fetch.__qualname__ = name.replace("-", "_")
    return task(name=name, cache_policy=NO_CACHE)(fetch)


FETCH_TASKS = {
    "esa": _fetch_task("esa-discover-scenes", "esa", "discover_esa_scenes",
                       "Search Copernicus/ESA (eodag or a DHuS mirror) for scenes; record (and "
                       "download) them."),
    "earthengine": _fetch_task("earthengine-modis", "earthengine", "fetch_modis",
                               "MODIS NDVI / albedo / LST stacks from Earth Engine into the MODIS "
                               "folder."),
    "cds": _fetch_task("cds-era5-land", "cds", "fetch_era5_land",
                       "ERA5-Land months from the CDS (queued requests resumed, provisional "
                       "months replaced).",
                       lambda cfg: {"max_wait_s": cfg.ingest.cds.max_wait_h * 3600}),
    "dem": _fetch_task("glo30-dem", "dem", "fetch_dem",
                       "Copernicus GLO-30 tiles over the area, mosaicked into the study's DEM."),
    "nwis": _fetch_task("nwis-discharge", "discharge", "fetch_nwis_discharge",
                        "Daily discharge of the configured USGS gauge into the discharge file."),
}
"""Source → its fetching task (ASF/HyP3 have their own four-step subflow)."""


def summary_artifact(cfg: StudyConfig, out: dict[str, Any], skipped: list[str]) -> None:
    """What each source did, and the ledger's totals, as a markdown artifact in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact

    ledger = ledger_of(cfg)
    pairs = collections.Counter(p.state for p in ledger.pairs())
    files = ledger.files()
    lines = [f"# Ingest of study `{cfg.name}`", "",
             f"- scenes known: {len(ledger.scenes())}",
             "- pairs: " + (", ".join(f"{k} {v}" for k, v in sorted(pairs.items())) or "none"),
             f"- raw-store files: {len(files)} ({sum(f.bytes for f in files) / 1e6:.1f} MB, "
             f"{sum(f.status == 'provisional' for f in files)} provisional)",
             f"- skipped this run: {', '.join(skipped) or 'none'}", ""]
    for source, summary in out.items():
        text = json.dumps(summary, default=str, indent=1)
        if len(text) > 4000:
            text = text[:4000] + "\n…"
        lines += [f"## {source}", "", "```json", redact(text), "```", ""]
    create_markdown_artifact(markdown="\n".join(lines), key=f"ingest-{cfg.name}",
                             description="What the ingest subflows fetched, ordered and downloaded")
