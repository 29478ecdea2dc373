"""The long-term flow: the multi-sensor record of rate and thaw-season deformation (1997–2023)."""

from __future__ import annotations

from prefect import flow

from talik.config import StudyConfig
from talik.flows.common import step_options
from talik.tasks.longterm import longterm_dataset
from talik.tasks.records import Sentinel1Steps, StepOutput

__all__ = ["longterm_flow"]


@flow(name="longterm")
def longterm_flow(cfg: StudyConfig, s1_steps: Sentinel1Steps, refresh: bool = False
                  ) -> StepOutput:
    """Sparse-sensor pairs → period maps, sensor agreement and per-period statistics.

    Runs on the staged pairs, rasters and GACOS delays and the Sentinel-1 product of
    :func:`~talik.flows.sentinel1.sentinel1_flow` (``s1_steps``).
    """
    rasters, gacos, pairs, series = s1_steps.rasters, s1_steps.gacos, s1_steps.pairs, s1_steps.series
    work = str(cfg.stores.work_dir)
    return step_options(longterm_dataset, work, refresh)(cfg, series, pairs, rasters, gacos, work)
