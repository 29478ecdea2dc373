"""The Sentinel-1 flow: stage the interferograms and rasters, then build the time series."""

from __future__ import annotations

from prefect import flow

from talik.config import StudyConfig
from talik.flows.common import step_options
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.sentinel1 import sentinel1_timeseries
from talik.tasks.stage import stage_rasters, stage_sentinel1

__all__ = ["sentinel1_flow"]


@flow(name="sentinel1")
def sentinel1_flow(cfg: StudyConfig, manifest: InputSet, refresh: bool = False
                   ) -> list[StepOutput]:
    """Stage HyP3 products and rasters, invert the Sentinel-1 time series; return the steps."""
    work = str(cfg.stores.work_dir)
    staged = step_options(stage_sentinel1, work, refresh)(
        manifest, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    rasters = step_options(stage_rasters, work, refresh)(manifest, staged, work)
    series = step_options(sentinel1_timeseries, work, refresh)(
        staged, rasters, cfg.sentinel1, work, cfg.title)
    return [staged, rasters, series]
