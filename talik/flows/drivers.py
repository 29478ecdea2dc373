"""The drivers flow: environmental factors at 1 km against the mean thaw-season deformation."""

from __future__ import annotations

from prefect import flow

from talik.config import StudyConfig
from talik.flows.common import step_options
from talik.tasks.drivers import drivers_assessment, modis_factors
from talik.tasks.records import DriversSteps, InputSet, Sentinel1Steps

__all__ = ["drivers_flow"]


@flow(name="drivers")
def drivers_flow(cfg: StudyConfig, manifest: InputSet, s1_steps: Sentinel1Steps,
                 refresh: bool = False) -> DriversSteps:
    """Environmental factors on ``[drivers] aggregate_m`` cells against the deformation.

    Slope, ground ice, thawing index, NDVI and SWIR albedo against the mean thaw-season
    deformation: correlations, binned means and maps.
    """
    rasters, series = s1_steps.rasters, s1_steps.series
    work = str(cfg.stores.work_dir)
    modis = step_options(modis_factors, work, refresh)(cfg, manifest, series, work)
    assessment = step_options(drivers_assessment, work, refresh)(cfg, series, rasters, modis,
                                                                 work)
    return DriversSteps(modis=modis, assessment=assessment)
