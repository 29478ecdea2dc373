"""The parent ``monitor`` flow: one whole study, from inputs to a published release."""

from __future__ import annotations

import datetime as dt

from prefect import flow

from talik.config import LocalSource, StudyOptions, WorldSource, load_study, with_options, with_until
from talik.flows.common import step_options
from talik.flows.drivers import drivers_flow
from talik.flows.ingest import ingest_flow
from talik.flows.longterm import longterm_flow
from talik.flows.recession import recession_flow
from talik.flows.sentinel1 import sentinel1_flow
from talik.tasks.artifacts import publish_run_artifact
from talik.tasks.ingest.local import ingest_local
from talik.tasks.ingest.world import ingest_world
from talik.tasks.joint import joint_assessment
from talik.tasks.publish import PublishOutcome, publish_release
from talik.tasks.report import release_contents

__all__ = ["monitor"]


@flow(name="monitor")
def monitor(study: str, refresh: bool = False, skip_sources: list[str] | None = None,
            options: StudyOptions | None = None, until: dt.date | None = None) -> PublishOutcome:
    """Run a study end to end: ingest → stage → Sentinel-1 time series, recession, joint → publish.

    Parameters
    ----------
    study
        Path of the study TOML file (e.g. ``studies/demo.toml``).
    refresh
        Recompute every step even if a cached result exists.
    skip_sources
        Services not to fetch from in this run (of ``asf``, ``esa``, ``earthengine``, ``cds``,
        ``dem``, ``nwis``); only enabled ``[ingest]`` sources are fetched at all.
    options
        The analysis options to use instead of the study file's (the Prefect UI's form; a
        deployment made by ``talik deploy`` holds the file's options at the time). Unset:
        the file's.
    until
        Last acquisition date analysed, instead of the study file's ``until``
        (:attr:`talik.config.StudyConfig.until`): a later date extends the study in time.
    """
    cfg = with_until(with_options(load_study(study), options, study), until)
    work = str(cfg.stores.work_dir)
    if isinstance(cfg.source, WorldSource):
        manifest = ingest_world(cfg.source, work, cfg.until)
    elif isinstance(cfg.source, LocalSource):
        if cfg.ingest.any_enabled:
            ingest_flow(cfg, skip_sources)  # fills the local folders from the services
        manifest = ingest_local(cfg.source, work, cfg.until)
    else:  # pragma: no cover - the config's discriminated union admits nothing else
        raise TypeError(f"unknown source kind {cfg.source!r}")
    s1 = sentinel1_flow(cfg, manifest, refresh)
    recession = recession_flow(cfg, manifest, refresh)
    ks = recession.analysis if recession is not None else None
    longterm = longterm_flow(cfg, s1, refresh) if cfg.periods else None
    joint = None
    if ks is not None and longterm is not None:
        joint = step_options(joint_assessment, work, refresh)(cfg, longterm, ks, work)
    drivers = drivers_flow(cfg, manifest, s1, refresh)
    contents = step_options(release_contents, work, refresh)(
        cfg, manifest, s1.series, ks, joint, work, drivers.assessment, longterm)
    all_steps = s1.all() + (recession.all() if recession is not None else []) + [
        s for s in (longterm, joint) if s is not None] + drivers.all()
    outcome = publish_release(cfg, manifest, all_steps, contents["files"], contents["report"])
    publish_run_artifact(cfg, outcome, all_steps)  # the results, where the UI shows the run
    return outcome
