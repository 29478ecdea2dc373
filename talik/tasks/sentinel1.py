"""The Sentinel-1 time-series chain: staged interferograms → displacement time series + products.

Steps (method.md §2): coherence mask → common reference area → loop-closure QC (on a spatial
subsample) → ramp removal fitted on stable ground → NSBAS inversion with the configured
constraint → products (rate, thaw-season deformation, seasonal amplitude, vertical versions).
Spatial tiles go through dask, so memory does not grow with the image; a dask
``distributed`` client, when one is active, runs the same graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from prefect import task
from scipy.ndimage import uniform_filter

from talik import __version__
from talik.config import Sentinel1Options
from talik.science.interferogram import (
    apply_reference,
    fit_ramps,
    los_to_vertical,
    mask_incoherent,
    reference_offsets,
    remove_ramps,
)
from talik.science.inversion import ConstraintSpec, invert_nsbas
from talik.science.network import Network, components, loop_closure
from talik.science.seasonal import linear_rate, seasonal_fit, thaw_season_deformation
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of
from talik.tasks.records import StepOutput
from talik.tasks.stage import AnalysisGrid
from talik.tasks.steps import STEP_CACHE, step_folder
from talik.tasks.zarr_io import write_zarr

__all__ = ["ChainReport", "choose_reference_window", "run_sentinel1_chain", "sentinel1_timeseries"]

SUBSAMPLE_TARGET = 256  # pixels per side used for loop-closure and ramp statistics


@dataclass
class ChainReport:
    """What the chain decided, for the product's attributes and the release manifest."""

    reference_window: dict = field(default_factory=dict)
    rejected_pairs: list[dict] = field(default_factory=list)
    no_loop_pairs: list[str] = field(default_factory=list)
    n_loops: int = 0
    n_bad_loops: int = 0
    components: list[dict] = field(default_factory=list)
    n_pairs_used: int = 0
    n_dates: int = 0
    constraint: dict = field(default_factory=dict)
    stable_pixels: int = 0


def choose_reference_window(valid_fraction: np.ndarray, mean_coherence: np.ndarray,
                            stable: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size``×``size`` window of stable pixels most often coherent (LiCSBAS-like).

    Scores each window by the mean over its pixels of (fraction of pairs valid) × (mean
    coherence); windows touching unstable or never-valid pixels are not eligible.
    """
    score = np.where(stable, valid_fraction * mean_coherence, 0.0)
    eligible = uniform_filter(stable.astype(float), size=size, mode="constant") > 0.999
    smooth = np.where(eligible, uniform_filter(score, size=size, mode="constant"), -1.0)
    if smooth.max() <= 0:
        smooth = uniform_filter(valid_fraction * mean_coherence, size=size, mode="constant")
    iy, ix = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    half = size // 2
    y0 = int(np.clip(iy - half, 0, max(valid_fraction.shape[0] - size, 0)))
    x0 = int(np.clip(ix - half, 0, max(valid_fraction.shape[1] - size, 0)))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def _window_offsets(los: xr.DataArray, window: tuple[slice, slice]) -> xr.DataArray:
    return reference_offsets(los.isel(y=window[0], x=window[1]),
                             xr.DataArray(True)).compute()


def _stable_mask(rasters: xr.Dataset | None, shape: tuple[int, int], max_ice: float) -> np.ndarray:
    if rasters is not None and "ground_ice" in rasters:
        ice = rasters["ground_ice"].values
        return np.isfinite(ice) & (ice <= max_ice)
    return np.ones(shape, dtype=bool)


def run_sentinel1_chain(
    stack: xr.Dataset,
    options: Sentinel1Options,
    rasters: xr.Dataset | None = None,
    out_dir: Path | None = None,
) -> tuple[xr.Dataset, ChainReport]:
    """Run the chain on a staged stack; return the product dataset (lazy where large) and a report.

    Parameters
    ----------
    stack
        Staged ``los_mm``/``coherence (pair, y, x)``, ``incidence_deg (y, x)``, with dask chunks
        that hold every pair of a spatial tile.
    options
        The study's Sentinel-1 options.
    rasters
        Staged ``ground_ice`` etc. on the same grid (stable-ground mask), if available.
    out_dir
        Where to write the time-series cube (``timeseries.zarr``); in memory when ``None``.
    """
    logger = step_logger()
    report = ChainReport()
    wavelength = float(stack.attrs["wavelength_m"])
    thr = options.coherence_threshold
    los = mask_incoherent(stack["los_mm"], stack["coherence"], thr)

    # Common reference area: a window of stable, most-often-coherent pixels.
    valid_fraction = (stack["coherence"] >= thr).mean("pair").values.astype(float)
    mean_coh = np.nan_to_num(stack["coherence"].mean("pair").values.astype(float))
    stable = _stable_mask(rasters, valid_fraction.shape, options.stable_max_ground_ice)
    report.stable_pixels = int(stable.sum())
    window = choose_reference_window(valid_fraction, mean_coh, stable, options.reference_window_px)
    report.reference_window = {
        "rows": [window[0].start, window[0].stop], "cols": [window[1].start, window[1].stop],
        "x": float(stack["x"][window[1]].mean()), "y": float(stack["y"][window[0]].mean()),
    }
    los = apply_reference(los, _window_offsets(los, window))

    # Loop closure and ramps on a spatial subsample held in memory.
    step = max(1, int(np.ceil(max(stack.sizes["y"], stack.sizes["x"]) / SUBSAMPLE_TARGET)))
    sub = los.isel(y=slice(None, None, step), x=slice(None, None, step)).compute()
    network = Network.from_stack(stack)
    qc = loop_closure(sub, network, wavelength, options.loop_closure_rms_rad)
    names = stack["product"].values if "product" in stack.coords else np.arange(network.n_pairs)
    report.n_loops = int(len(qc.loops))
    report.n_bad_loops = int(qc.bad_loop.sum())
    for i in np.flatnonzero(qc.bad_pair):
        loops_of = qc.loops[(qc.loops == i).any(axis=1)]
        worst = float(np.nanmax(qc.rms_rad[(qc.loops == i).any(axis=1)])) if len(loops_of) else np.nan
        report.rejected_pairs.append({
            "pair": str(names[i]),
            "reason": f"all {int(qc.n_loops_per_pair[i])} loops exceed "
                      f"{options.loop_closure_rms_rad} rad (worst {worst:.2f} rad)",
        })
    report.no_loop_pairs = [str(names[i]) for i in np.flatnonzero(qc.no_loop_pair)]
    keep = ~qc.bad_pair
    logger.info("loop closure: %d of %d loops bad, %d pairs rejected", report.n_bad_loops,
                report.n_loops, int(qc.bad_pair.sum()))

    stable_sub = stable[::step, ::step]
    coefs = fit_ramps(sub.isel(pair=np.flatnonzero(keep)), xr.DataArray(stable_sub, dims=("y", "x")),
                      options.ramp)
    los = los.isel(pair=np.flatnonzero(keep))
    los = remove_ramps(los, coefs)
    los = apply_reference(los, _window_offsets(los, window))

    used = network.subset(keep)
    report.n_pairs_used = used.n_pairs
    report.n_dates = used.n_dates
    for first, last in components(used):
        report.components.append({"first": str(used.dates[first]), "last": str(used.dates[last]),
                                  "n_dates": int(last - first + 1)})
    spec = ConstraintSpec(options.constraint, options.gamma, options.period_yr,
                          velocity_reference=False)
    report.constraint = {"model": spec.model, "gamma": spec.gamma, "period_yr": spec.period_yr,
                         "velocity_reference": "none"}
    min_valid = max(1, int(np.ceil(options.min_valid_ifg_fraction * used.n_pairs)))
    result = invert_nsbas(los, spec, min_valid=min_valid)
    if out_dir is not None:
        write_zarr(result, out_dir / "timeseries.zarr", mode="w")
        result = xr.open_zarr(out_dir / "timeseries.zarr")
    else:
        result = result.compute()
    products = _products(result, stack["incidence_deg"], options)
    products.attrs.update(_attrs(report, options))
    return products, report


def _products(ts: xr.Dataset, incidence: xr.DataArray, options: Sentinel1Options) -> xr.Dataset:
    disp = ts["displacement"]
    rate = linear_rate(disp).compute()
    thaw = thaw_season_deformation(disp, options.thaw_onset, options.thaw_end, rate).compute()
    seasonal = seasonal_fit(disp, options.period_yr).compute()
    inc = incidence.compute()
    out = xr.Dataset(
        {
            "displacement": disp,
            "velocity": rate.assign_attrs(units="mm/yr", long_name="LOS velocity (linear fit)",
                                          sign_convention="positive toward the satellite"),
            "thaw_season_deformation": thaw,
            "thaw_season_deformation_mean": thaw.mean("year").assign_attrs(
                units="mm", long_name="multi-year mean thaw-season deformation (LOS)"),
            "seasonal_amplitude": seasonal["amplitude"],
            "velocity_vertical": los_to_vertical(rate, inc).assign_attrs(units="mm/yr"),
            "thaw_season_deformation_mean_vertical": los_to_vertical(
                thaw.mean("year"), inc).assign_attrs(units="mm"),
            "n_valid_ifg": ts["n_valid_ifg"],
            "residual_rms": ts["residual_rms"],
            "incidence_deg": inc,
        }
    )
    return out


def _attrs(report: ChainReport, options: Sentinel1Options) -> dict:
    rejected = [r["pair"] for r in report.rejected_pairs]
    return {
        "rejected_interferograms": json.dumps(rejected),
        "rejection_reasons": json.dumps(report.rejected_pairs),
        "n_interferograms_used": report.n_pairs_used,
        "network_components": json.dumps(report.components),
        "reference_window": json.dumps(report.reference_window),
        "constraint": json.dumps(report.constraint),
        "coherence_threshold": options.coherence_threshold,
        "loop_closure_rms_rad": options.loop_closure_rms_rad,
        "ramp": options.ramp,
        "talik_version": __version__,
    }


def write_cf_netcdf(products: xr.Dataset, grid: AnalysisGrid, path: Path, title: str) -> None:
    """Write the products as CF-1.8 NetCDF with the grid's CRS."""
    ds = products.copy()
    ds["x"].attrs.update(standard_name="projection_x_coordinate", units="m", long_name="easting")
    ds["y"].attrs.update(standard_name="projection_y_coordinate", units="m", long_name="northing")
    if "time" in ds.coords:
        ds["time"].attrs.update(standard_name="time", long_name="acquisition date")
    if "year" in ds.coords:
        ds["year"].attrs.update(long_name="calendar year of the thaw season", units="1")
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    ds.attrs.update(
        Conventions="CF-1.8",
        title=title,
        institution="talik",
        source="Sentinel-1 HyP3 INSAR_GAMMA interferograms, NSBAS inversion (talik)",
        history=f"{pd.Timestamp.now('UTC'):%Y-%m-%dT%H:%M:%SZ} talik {__version__}",
        references="Chang et al., long-term InSAR and streamflow recession (Datong River); "
                   "Doin et al. 2011 (NSBAS)",
        sign_convention="LOS displacement positive toward the satellite; vertical positive up",
    )
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars
                if ds[name].dtype.kind == "f"}
    ds.to_netcdf(path, encoding=encoding, engine="netcdf4")


@task(name="sentinel1-timeseries", cache_policy=STEP_CACHE, persist_result=True)
def sentinel1_timeseries(staged_s1: StepOutput, staged_rasters: StepOutput | None,
                         options: Sentinel1Options, work_dir: str, title: str) -> StepOutput:
    """Staged stack → ``sentinel1.nc`` (CF) with the time series and its products."""
    logger = step_logger()
    digest = digest_of("sentinel1-timeseries", staged_s1.digest,
                       staged_rasters.digest if staged_rasters else None, options, code_digest())
    with step_folder(work_dir, "sentinel1-timeseries", digest) as sd:
        if not sd.done:
            chunk = options.chunk_px
            stack = xr.open_zarr(Path(staged_s1.path) / "sentinel1.zarr", chunks={"pair": -1})
            stack = stack.chunk({"y": chunk, "x": chunk})
            rasters = None
            if staged_rasters is not None and (Path(staged_rasters.path) / "rasters.zarr").exists():
                rasters = xr.open_zarr(Path(staged_rasters.path) / "rasters.zarr").compute()
            products, report = run_sentinel1_chain(stack, options, rasters, sd.work)
            grid = AnalysisGrid.from_attrs(stack.attrs)
            write_cf_netcdf(products, grid, sd.work / "sentinel1.nc", title)
            (sd.work / "qc.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
            logger.info("Sentinel-1 time series: %d dates, %d pairs used, %d rejected",
                        report.n_dates, report.n_pairs_used, len(report.rejected_pairs))
        qc = json.loads((sd.final if sd.done else sd.work).joinpath("qc.json").read_text())
    summary = {"n_dates": qc["n_dates"], "n_pairs_used": qc["n_pairs_used"],
               "rejected": [r["pair"] for r in qc["rejected_pairs"]],
               "components": len(qc["components"])}
    return StepOutput(step="sentinel1-timeseries", path=str(sd.final), digest=digest,
                      parameters=options.model_dump(mode="json"), summary=summary)
