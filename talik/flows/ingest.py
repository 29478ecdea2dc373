"""The ``ingest`` subflows: fetch what is new from each service into the study's folders.

One subflow per source, each run by ``monitor`` only when its ``[ingest.<source>]`` section is
enabled (a study with every source off runs from local folders and needs no credentials):

``ingest-asf``          ASF scene search → network plan → HyP3 orders within the credit budget
                        → polling (its own task, retried while jobs run) → downloads
``ingest-esa``          Copernicus Data Space / DHuS / STAC scene search (and downloads)
``ingest-earthengine``  MODIS NDVI, albedo and LST stacks
``ingest-cds``          ERA5-Land months (provisional months replaced when final)
``ingest-dem``          Copernicus GLO-30 DEM tiles → one DEM on the area
``ingest-nwis``         daily discharge of a USGS gauge

Every task reads and writes the ledger (:class:`~talik.tasks.ingest.ledger.Ledger`), so an
interrupted run resumes: nothing already ordered is ordered again, nothing already downloaded
and verified is downloaded again. Tasks are not cached by Prefect: what is new is the
ledger's business, not an input hash's.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from prefect import flow, task

from talik.config import LocalSource, StudyConfig
from talik.tasks.ingest.common import IngestError, PermanentServiceError, install_redaction
from talik.tasks.ingest.ledger import LeaseHeldError, Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.log import step_logger

__all__ = ["JobsStillRunningError", "ingest_flow", "ledger_of", "raw_store_of"]


INGEST_LEASE = dt.timedelta(hours=6)
"""How long a fetching run holds the study's ingest lease between renewals (a killed run's
lease is taken over at once on its own host, or after this long elsewhere)."""


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
@task(name="asf-discover-scenes")
def discover_asf(cfg: StudyConfig) -> dict[str, Any]:
    """Search ASF for scenes over the area; record the new ones in the ledger."""
    from talik.tasks.ingest.asf import discover_scenes

    ledger, _ = _store(cfg)
    summary = discover_scenes(cfg, ledger)
    step_logger().info("ASF: %s scenes found, %s new", summary.get("n_found"), summary.get("n_new"))
    return summary


@task(name="hyp3-plan-and-order")
def order_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Plan the pairs the scenes allow, and order the missing ones within the budget."""
    from talik.tasks.ingest.hyp3 import order_pairs, plan_orders

    ledger, _ = _store(cfg)
    planned = plan_orders(cfg, ledger)
    ordered = order_pairs(cfg, ledger)
    step_logger().info("HyP3: %s new pairs planned; ordered: %s", planned.get("n_new_pairs"), ordered)
    return {"planned": planned, "ordered": ordered}


@task(name="hyp3-poll-jobs")
def poll_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Refresh the jobs' states (failed ones resubmitted); raise while any still runs."""
    from talik.tasks.ingest.hyp3 import poll_jobs

    ledger, _ = _store(cfg)
    summary = poll_jobs(cfg, ledger)
    if summary.get("n_running", 0):
        raise JobsStillRunningError(f"{summary['n_running']} HyP3 jobs still running")
    return summary


@task(name="hyp3-download-products")
def download_hyp3(cfg: StudyConfig) -> dict[str, Any]:
    """Download finished products (soonest to expire first) into the HyP3 folder."""
    from talik.tasks.ingest.hyp3 import download_products

    ledger, store = _store(cfg)
    summary = download_products(cfg, ledger, store)
    step_logger().info("HyP3: %s", summary)
    return summary


@flow(name="ingest-asf")
def ingest_asf(cfg: StudyConfig) -> dict[str, Any]:
    """ASF scenes → planned pairs → HyP3 orders → polling → downloads.

    Polling is its own task, retried every ``poll_interval_s`` for up to ``poll_timeout_h``;
    when jobs are still running after that, the run goes on with what is downloaded and the
    next scheduled run polls again (the jobs are in the ledger).
    """
    out: dict[str, Any] = {}
    if cfg.ingest.asf.enabled:
        out["discover"] = discover_asf(cfg)
    if cfg.ingest.hyp3.enabled:
        out["order"] = order_hyp3(cfg)
        opts = cfg.ingest.hyp3
        retries = max(0, math.ceil(opts.poll_timeout_h * 3600 / opts.poll_interval_s))
        state = poll_hyp3.with_options(retries=retries, retry_delay_seconds=opts.poll_interval_s,
                                       retry_condition_fn=_still_running)(cfg, return_state=True)
        if state.is_completed():
            out["poll"] = state.result()
        else:
            exc = state.result(raise_on_failure=False)
            if not isinstance(exc, JobsStillRunningError):
                raise exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
            step_logger().warning("%s after %.1f h; the next run polls them again", exc,
                                  opts.poll_timeout_h)
            out["poll"] = {"still_running": str(exc)}
        out["download"] = download_hyp3(cfg)
    return out


def _still_running(task: Any, task_run: Any, state: Any) -> bool:
    """Retry the polling task only while jobs run (a service error is not retried here)."""
    try:
        state.result()
    except JobsStillRunningError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final for this run
        return False
    return False


# ------------------------------------------------------------------------ the other sources
@task(name="esa-discover-scenes")
def discover_esa(cfg: StudyConfig) -> dict[str, Any]:
    """Search Copernicus/ESA (eodag or a DHuS mirror) for scenes; record (and download) them."""
    from talik.tasks.ingest.esa import discover_esa_scenes

    ledger, store = _store(cfg)
    return discover_esa_scenes(cfg, ledger, store)


@task(name="earthengine-modis")
def fetch_modis_stacks(cfg: StudyConfig) -> dict[str, Any]:
    """MODIS NDVI / albedo / LST stacks from Earth Engine into the MODIS folder."""
    from talik.tasks.ingest.earthengine import fetch_modis

    ledger, store = _store(cfg)
    return fetch_modis(cfg, ledger, store)


@task(name="cds-era5-land")
def fetch_era5(cfg: StudyConfig) -> dict[str, Any]:
    """ERA5-Land months from the CDS (queued requests resumed, provisional months replaced)."""
    from talik.tasks.ingest.cds import fetch_era5_land

    ledger, store = _store(cfg)
    return fetch_era5_land(cfg, ledger, store, max_wait_s=cfg.ingest.cds.max_wait_h * 3600)


@task(name="glo30-dem")
def fetch_glo30(cfg: StudyConfig) -> dict[str, Any]:
    """Copernicus GLO-30 tiles over the area, mosaicked into the study's DEM file."""
    from talik.tasks.ingest.dem import fetch_dem

    ledger, store = _store(cfg)
    return fetch_dem(cfg, ledger, store)


@task(name="nwis-discharge")
def fetch_discharge(cfg: StudyConfig) -> dict[str, Any]:
    """Daily discharge of the configured USGS gauge into the study's discharge file."""
    from talik.tasks.ingest.discharge import fetch_nwis_discharge

    ledger, store = _store(cfg)
    return fetch_nwis_discharge(cfg, ledger, store)


SOURCES = {
    "esa": ("ingest-esa", discover_esa),
    "earthengine": ("ingest-earthengine", fetch_modis_stacks),
    "cds": ("ingest-cds", fetch_era5),
    "dem": ("ingest-dem", fetch_glo30),
    "nwis": ("ingest-nwis", fetch_discharge),
}


def _single_source_flow(name: str, step: Any) -> Any:
    @flow(name=name)
    def run(cfg: StudyConfig) -> dict[str, Any]:
        return step(cfg)

    run.__doc__ = step.__doc__
    return run


SOURCE_FLOWS = {key: _single_source_flow(name, step) for key, (name, step) in SOURCES.items()}


@flow(name="ingest")
def ingest_flow(cfg: StudyConfig, skip: list[str] | None = None) -> dict[str, Any]:
    """Run every enabled source's subflow (those named in ``skip`` are left out).

    A source that fails stops the run with its error (a permanent error names the credential
    or setting to fix); the sources already fetched keep what they fetched.
    """
    skip = set(skip or [])
    out: dict[str, Any] = {}
    try:  # one fetching run per study at a time: partial files and queues are shared
        with ledger_of(cfg).lease("ingest", INGEST_LEASE) as renew:
            if (cfg.ingest.asf.enabled or cfg.ingest.hyp3.enabled) and "asf" not in skip:
                out["asf"] = ingest_asf(cfg)
            for key, sub in SOURCE_FLOWS.items():
                if getattr(cfg.ingest, key).enabled and key not in skip:
                    renew()
                    out[key] = sub(cfg)
    except LeaseHeldError as exc:
        step_logger().warning("%s: this run fetches nothing and goes on with the files already "
                              "there", exc)
        out["not_fetched"] = str(exc)
    _summary_artifact(cfg, out, sorted(skip))
    return out


def _summary_artifact(cfg: StudyConfig, out: dict[str, Any], skipped: list[str]) -> None:
    """What each source did, and the ledger's totals, as a markdown artifact in the Prefect UI."""
    import collections
    import json

    from prefect.artifacts import create_markdown_artifact

    from talik.tasks.ingest.common import redact

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
