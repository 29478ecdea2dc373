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

The tasks are in :mod:`talik.tasks.ingest.run`; this module only decides their order.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from prefect import flow

from talik.config import StudyConfig
from talik.tasks.ingest.ledger import LeaseHeldError
from talik.tasks.ingest.run import (
    FETCH_TASKS,
    JobsStillRunningError,
    discover_asf,
    download_hyp3,
    ledger_of,
    order_hyp3,
    poll_hyp3,
    summary_artifact,
)
from talik.tasks.log import step_logger

__all__ = ["ingest_asf", "ingest_flow"]


INGEST_LEASE = dt.timedelta(hours=6)
"""How long a fetching run holds the study's ingest lease between renewals (a killed run's
lease is taken over at once on its own host, or after this long elsewhere)."""


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


def _single_source_flow(key: str) -> Any:
    step = FETCH_TASKS[key]

    @flow(name=f"ingest-{key}")
    def run(cfg: StudyConfig) -> dict[str, Any]:
        return step(cfg)

    run.__doc__ = step.fn.__doc__
    return run


SOURCE_FLOWS = {key: _single_source_flow(key) for key in FETCH_TASKS}


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
    summary_artifact(cfg, out, sorted(skip))
    return out
