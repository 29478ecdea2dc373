"""The recession flow: Ks from daily discharge, and its climate attribution."""

from __future__ import annotations

from prefect import flow

from talik.config import LocalSource, StudyConfig
from talik.flows.common import step_options
from talik.tasks.ingest.world import world_as_local
from talik.tasks.recession import recession_analysis
from talik.tasks.records import InputSet, RecessionSteps
from talik.tasks.stage import stage_climate

__all__ = ["recession_flow"]


@flow(name="recession")
def recession_flow(cfg: StudyConfig, inputs: InputSet, refresh: bool = False
                   ) -> RecessionSteps | None:
    """Ks windows (1/3/5 years) and the climate-only model, when discharge is available."""
    source = cfg.source if isinstance(cfg.source, LocalSource) else world_as_local(
        cfg.source.raw_dir)
    if source.discharge is None:
        return None
    work = str(cfg.stores.work_dir)
    climate = step_options(stage_climate, work, refresh)(inputs, cfg.aoi, work)
    step = step_options(recession_analysis, work, refresh)(
        inputs, source.discharge, climate, cfg.recession, cfg.attribution, work)
    return RecessionSteps(climate=climate, analysis=step)
