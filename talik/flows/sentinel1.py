"""The Sentinel-1 flow: stage interferograms, rasters, GACOS and L-band pairs; invert."""

from __future__ import annotations

from prefect import flow

from talik.config import StudyConfig
from talik.flows.common import step_options
from talik.tasks.records import InputSet, Sentinel1Steps
from talik.tasks.sentinel1 import sentinel1_timeseries
from talik.tasks.stage import stage_gacos, stage_pairs, stage_rasters, stage_sentinel1

__all__ = ["sentinel1_flow"]


@flow(name="sentinel1")
def sentinel1_flow(cfg: StudyConfig, manifest: InputSet, refresh: bool = False
                   ) -> Sentinel1Steps:
    """Stage the inputs on one grid and invert the Sentinel-1 time series; return the steps.

    Once the interferograms have fixed the grid, the GACOS delays are staged in a task of
    their own while the rasters and then the sparse-sensor pairs are staged beside it. The
    rasters and the pairs stay one after the other: both warp with rioxarray/GDAL, and two
    such warps side by side in threads were seen to interfere (a reprojection sometimes
    warned of a missing geotransform); the GACOS maps are raw binary grids resampled by
    talik's own bilinear weights, with no GDAL warp (rasterio only names their CRS).
    """
    work = str(cfg.stores.work_dir)
    opts = cfg.sentinel1
    staged = step_options(stage_sentinel1, work, refresh)(
        manifest, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    staging_gacos = step_options(stage_gacos, work, refresh).submit(manifest, staged, work)
    rasters, pairs = (step_options(task, work, refresh)(manifest, staged, work)
                      for task in (stage_rasters, stage_pairs))
    gacos = staging_gacos.result()
    lband = cfg.sensors.get(opts.velocity_reference_sensor)
    series = step_options(sentinel1_timeseries, work, refresh)(
        staged, rasters, gacos, pairs, opts, lband.platform if lband else "ALOS-2", work,
        cfg.title)
    return Sentinel1Steps(staged=staged, rasters=rasters, gacos=gacos, pairs=pairs,
                          series=series)
