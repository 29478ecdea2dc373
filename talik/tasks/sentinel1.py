"""The Sentinel-1 time-series chain: staged interferograms → displacement time series + products.

Steps (method.md §2; paper §3.1.1):

1. coherence mask; optional GACOS correction (pairs lacking a delay map for either date are
   left out, as LiCSBAS does);
2. every pair re-referenced to one common window of stable, coherent ground;
3. loop closure on a spatial subsample: pairs whose loops all exceed the RMS threshold are
   rejected; the network's connected parts in time are reported;
4. ramps fitted on stable ground only and removed; re-referenced;
5. velocity reference (when an L-band rate map exists): an initial NSBAS inversion without
   reference gives a rate map, CDF-matched to the L-band rates over the overlap → ``v_ref``;
6. NSBAS inversion with the configured constraint (velocity-referenced when ``v_ref`` exists);
7. atmospheric filter (temporal high-pass, spatial low-pass screen removed);
8. products: rate, thaw-season deformation per year and mean, seasonal amplitude, vertical.

Spatial tiles go through dask, so memory does not grow with the image, and an active dask
``distributed`` client runs the same graph.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import numpy as np
import pandas as pd
import xarray as xr
from rasterio.enums import Resampling

from talik import __version__
from talik.config import Sentinel1Options
from talik.errors import InputError
from talik.science.calibration import fit_cdf_matching
from talik.science.filtering import remove_atmosphere
from talik.science.geometry import los_to_los, vertical_to_los
from talik.science.interferogram import (
    PairCorrections,
    apply_reference,
    choose_reference_window,
    coherence_statistics,
    correct_tile,
    fit_ramps,
    reference_offsets,
    remove_ramps,
    stable_ground,
)
from talik.science.inversion import (
    ConstraintSpec,
    invert_nsbas,
)
from talik.science.network import (
    Network,
    choose_reference_date,
    components,
    date_coverage,
    loop_closure,
    revisit_days,
)
from talik.science.products import constraint_comparison, select_points, timeseries_products
from talik.science.quality import MaskThresholds
from talik.science.velocity_reference import (
    INITIAL_MODELS,
    choose_initial_model,
    lband_for_matching,
    lband_rate,
)
from talik.tasks.cluster import configured_scheduler, dask_cluster
from talik.tasks.log import step_logger
from talik.tasks.netcdf_chunks import write_cubes
from talik.tasks.provenance import code_digest
from talik.tasks.readers.raster import read_raster
from talik.tasks.records import StepOutput
from talik.tasks.stage import AnalysisGrid, on_grid, open_sentinel1_store, require_network_size
from talik.tasks.steps import step, this_step
from talik.tasks.zarr_io import release_freed_memory, write_zarr, write_zarr_by_tiles

if TYPE_CHECKING:
    from talik.tasks.figure_process import FiguresInBackground

__all__ = [
    "ChainInputs",
    "ChainReport",
    "lband_rate_from_geotiff",
    "run_sentinel1_chain",
    "sentinel1_timeseries",
    "write_cf_netcdf",
]

SUBSAMPLE_TARGET = 256  # pixels per side used for loop-closure, ramp and model-choice statistics


@dataclass
class ChainInputs:
    """Everything the chain reads: the staged stack and optional companions on its grid.

    Attributes
    ----------
    stack
        ``los_mm``/``coherence (pair, y, x)``, ``incidence_deg (y, x)``; dask chunks of
        spatial tiles, along ``pair`` as stored (a tile's pairs are assembled for the
        inversion only).
    rasters
        ``ground_ice`` (stable-ground mask), ``elevation``, ``slope_deg`` (in memory).
    gacos
        The staged GACOS store: ``ztd_m (date, y, x)`` zenith delays (m), and for the stack's
        pairs ``gacos_reference_index``/``gacos_secondary_index``/``has_gacos (pair)``.
    lband_rate
        L-band annual rate already expressed in Sentinel-1 LOS (mm/yr, + toward), NaN where
        not covered.
    reference_window
        ``{"rows": [start, stop], "cols": [start, stop]}``: the common reference area to use
        instead of choosing one (an extended stack keeps the area of the stack it extends).
    """

    stack: xr.Dataset
    rasters: xr.Dataset | None = None
    gacos: xr.Dataset | None = None
    lband_rate: xr.DataArray | None = None
    reference_window: dict | None = None


@dataclass
class ChainReport:
    """What the chain decided, for the product's attributes, figures and the release manifest."""

    reference_window: dict = field(default_factory=dict)
    rejected_pairs: list[dict] = field(default_factory=list)
    no_gacos_pairs: list[str] = field(default_factory=list)
    no_loop_pairs: list[str] = field(default_factory=list)
    n_loops: int = 0
    n_bad_loops: int = 0
    loop_rms_rad: list[float] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    n_pairs_used: int = 0
    n_dates: int = 0
    constraint: dict = field(default_factory=dict)
    stable_pixels: int = 0
    gacos_applied: bool = False
    velocity_reference: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)
    date_range: dict = field(default_factory=dict)
    reference_date: dict = field(default_factory=dict)
    mask: dict = field(default_factory=dict)
    forward: dict = field(default_factory=dict)


def _within_dates(stack: xr.Dataset, gacos: xr.Dataset | None, options: Sentinel1Options
                  ) -> tuple[xr.Dataset, xr.Dataset | None]:
    """The pairs whose two dates lie in ``[first_date, last_date]`` (both optional)."""
    if options.first_date is None and options.last_date is None:
        return stack, gacos
    ref = pd.DatetimeIndex(stack["reference_date"].values)
    sec = pd.DatetimeIndex(stack["secondary_date"].values)
    keep = np.ones(stack.sizes["pair"], bool)
    if options.first_date is not None:
        keep &= ref >= pd.Timestamp(options.first_date)
    if options.last_date is not None:
        keep &= sec <= pd.Timestamp(options.last_date)
    idx = np.flatnonzero(keep)
    n_dates = np.unique(np.concatenate([ref[keep], sec[keep]])).size
    require_network_size(idx.size, n_dates, stack.attrs.get("source", "the staged stack"),
                         "[sentinel1] first_date/last_date",
                         f" of {keep.size} pairs between {options.first_date} and "
                         f"{options.last_date}")
    if gacos is not None and "pair" in gacos.dims:
        gacos = gacos.isel(pair=idx)
    return stack.isel(pair=idx), gacos


def stable_mask_of(rasters: xr.Dataset | None, shape: tuple[int, int], max_ice: float) -> np.ndarray:
    """Stable ground from the staged ground-ice map; every pixel when there is none."""
    if rasters is not None and "ground_ice" in rasters:
        return stable_ground(rasters["ground_ice"].values, max_ice)
    return np.ones(shape, dtype=bool)


def lband_rate_from_geotiff(path: str | Path, grid: AnalysisGrid, s1_incidence: xr.DataArray,
                            incidence_deg: float | None = None,
                            quantity: str | None = None) -> xr.DataArray:
    """An L-band rate GeoTIFF (mm/yr) in Sentinel-1 LOS on the grid.

    What it holds comes from ``quantity`` when given, else the raster's tag ``quantity``, else
    ``los_rate``: ``los_rate`` is the L-band sensor's own LOS, positive toward it (its
    incidence from the tag ``incidence_deg``, else the ``incidence_deg`` argument);
    ``vertical_rate`` is positive up.
    """
    import rasterio

    from talik.errors import InputError

    raster = read_raster(path, "mm/yr")  # refuses a missing or unreadable file by name
    with rasterio.open(path) as src:
        tags = src.tags()
    quantity = quantity or tags.get("quantity", "los_rate")
    values = xr.DataArray(on_grid(raster, grid, Resampling.average),
                          dims=("y", "x"), coords={"y": s1_incidence["y"], "x": s1_incidence["x"]})
    if quantity == "vertical_rate":
        return vertical_to_los(values, s1_incidence).assign_attrs(units="mm/yr")
    if quantity != "los_rate":
        raise InputError(path, "tag 'quantity'", "'los_rate' or 'vertical_rate'", quantity)
    inc = tags.get("incidence_deg", incidence_deg)
    if inc is None:
        raise InputError(path, "tag 'incidence_deg'",
                         "the L-band incidence angle (--lband-incidence DEG, the tag, or the "
                         "study's sensor incidence), or --lband-quantity vertical_rate")
    return los_to_los(values, float(inc), s1_incidence).assign_attrs(units="mm/yr")


@dataclass
class PreparedInterferograms:
    """Interferograms ready for inversion, with what is needed to invert them.

    Attributes
    ----------
    los
        ``(pair, y, x)`` LOS mm: masked, GACOS-corrected, deramped, referenced, QC-passed (lazy;
        with dask, every pair of a spatial tile in one chunk).
    subsample
        The same on a spatial subsample, in memory; ``step`` is its stride.
    network
        The network of the pairs kept.
    stable
        ``(y, x)`` stable-ground mask.
    report
        Decisions so far.
    """

    los: xr.DataArray
    subsample: xr.DataArray
    step: int
    network: Network
    stable: np.ndarray
    report: ChainReport
    min_valid: int


def prepare_interferograms(inputs: ChainInputs, options: Sentinel1Options,
                           whole_network: bool = True) -> PreparedInterferograms:
    """Steps 1–4 of the chain: mask, GACOS, common reference, loop closure, ramps.

    The spatial tiles of the stack are kept whole (one inversion per tile, regular Zarr
    chunks): selecting pairs would otherwise let dask split them to bound chunk sizes.
    ``whole_network=False`` (a forward update's new pairs) skips the check that the pairs
    kept make a network of their own.
    """
    with dask.config.set({"array.slicing.split_large_chunks": False}):
        return _prepare(inputs, options, whole_network)


def reference_window_of_bbox(stack: xr.Dataset, bbox: tuple[float, float, float, float]
                             ) -> tuple[slice, slice]:
    """The rows and columns of the grid whose pixel centres lie in ``bbox``.

    ``bbox`` is (west, south, east, north) in degrees (WGS 84); its corners are taken to the
    grid's CRS and their envelope used. Refused, naming the option, when no pixel centre is
    inside it.
    """
    from pyproj import Transformer

    crs = AnalysisGrid.from_attrs(stack.attrs).crs
    west, south, east, north = bbox
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs, ys = to_grid.transform([west, east, west, east], [south, south, north, north])
    x, y = stack["x"].values, stack["y"].values
    cols = np.flatnonzero((x >= min(xs)) & (x <= max(xs)))
    rows = np.flatnonzero((y >= min(ys)) & (y <= max(ys)))
    if cols.size == 0 or rows.size == 0:
        raise InputError("(study)", "sentinel1.reference_bbox",
                         "an area (west, south, east, north in degrees) holding at least one "
                         "pixel centre of the analysis grid", str(tuple(bbox)))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _by_tile_rows(maps: tuple[xr.DataArray, ...], sub: xr.DataArray, step: int
                  ) -> tuple[list[np.ndarray], xr.DataArray]:
    """Compute ``(y, x)`` maps and a spatial subsample together, a row of tiles at a time.

    ``sub`` holds every ``step``-th pixel of the maps' grid. Given the whole image at once,
    dask holds the inputs of several rows of tiles together, so memory grows with the image;
    a row at a time it does not, and each input tile is still read once. Values do not
    change: every output pixel comes from its own tile. Returns the maps (numpy) and the
    subsample (in memory).
    """
    if maps[0].chunks is None:
        return [np.asarray(m.values) for m in maps], sub.compute()
    edges = np.cumsum((0, *maps[0].chunksizes["y"]))
    rows = []
    for y0, y1 in zip(edges[:-1], edges[1:], strict=True):
        rows.append(dask.compute(*(m.isel(y=slice(y0, y1)).data for m in maps),
                                 sub.isel(y=slice(-(-y0 // step), -(-y1 // step)))))
        release_freed_memory()
    out = [np.concatenate([r[i] for r in rows], axis=0) for i in range(len(maps))]
    return out, xr.concat([r[-1] for r in rows], "y", coords="minimal", compat="override",
                          join="override", combine_attrs="override")


def _prepare(inputs: ChainInputs, options: Sentinel1Options, whole_network: bool = True
             ) -> PreparedInterferograms:
    logger = step_logger()
    report = ChainReport()
    stack, gacos_in = _within_dates(inputs.stack, inputs.gacos, options)
    report.date_range = {"first": str(options.first_date) if options.first_date else None,
                         "last": str(options.last_date) if options.last_date else None,
                         "n_pairs_in_range": int(stack.sizes["pair"]),
                         "n_pairs_staged": int(inputs.stack.sizes["pair"])}
    wavelength = float(stack.attrs["wavelength_m"])
    thr = options.coherence_threshold
    names = stack["product"].values if "product" in stack.coords else np.arange(stack.sizes["pair"])
    step = max(1, int(np.ceil(max(stack.sizes["y"], stack.sizes["x"]) / SUBSAMPLE_TARGET)))
    sub_sel = {"y": slice(None, None, step), "x": slice(None, None, step)}

    # Pairs without a GACOS delay for one of their dates are left out (as LiCSBAS does).
    gacos_used = gacos_in if options.gacos else None
    keep_idx = np.arange(stack.sizes["pair"])
    if gacos_used is not None:
        keep_idx = np.flatnonzero(gacos_used["has_gacos"].values.astype(bool))
        report.no_gacos_pairs = [str(n) for n in np.delete(names, keep_idx)]
        report.gacos_applied = True
    masked_only = PairCorrections(coherence_threshold=thr, pairs=keep_idx,
                                  offset_mm=np.zeros(keep_idx.size, np.float32),
                                  **_gacos_positions(gacos_used, keep_idx))

    def masked_and_corrected(at: dict) -> xr.DataArray:
        """The pairs kept at the pixels ``at``: coherence mask and GACOS (not yet referenced)."""
        return _corrected_pairs(stack.isel(**at),
                                gacos_used.isel(**at) if gacos_used is not None else None,
                                masked_only)

    # Everything is fitted on small samples of the inputs — the spatial subsample (loop
    # closure, ramps, model choice) and the reference window — masked and corrected alone
    # (the same kernel as the full-resolution pairs, :func:`_corrected_pairs`, which then
    # corrects them in one pass per tile).
    sub_los = masked_and_corrected(sub_sel)
    if report.no_gacos_pairs:
        logger.warning("%d pairs have no GACOS delay for one of their dates and are left out",
                       len(report.no_gacos_pairs))
    names = names[keep_idx]

    # One pass over the data for every statistic that needs all of it: coherence statistics
    # (reference window; exact whatever the order of the pairs: coherence_statistics) and
    # the spatial subsample.
    (valid_fraction, mean_coh), sub = _by_tile_rows(coherence_statistics(stack, thr), sub_los,
                                                    step)
    valid_fraction = np.asarray(valid_fraction, dtype=float)
    mean_coh = np.nan_to_num(np.asarray(mean_coh, dtype=float))

    # 1. Common reference area: a window of stable, most-often-coherent pixels.
    stable = stable_mask_of(inputs.rasters, valid_fraction.shape, options.stable_max_ground_ice)
    report.stable_pixels = int(stable.sum())
    if options.reference_bbox is not None:
        window, how = reference_window_of_bbox(stack, options.reference_bbox), "given: reference_bbox"
    elif inputs.reference_window is not None:
        kept = inputs.reference_window
        window = (slice(*kept["rows"]), slice(*kept["cols"]))
        how = "kept from the stack this one extends"
    else:
        window = choose_reference_window(valid_fraction, mean_coh, stable,
                                         options.reference_window_px)
        how = "chosen: stable, most often coherent pixels"
    report.reference_window = {
        "rows": [window[0].start, window[0].stop], "cols": [window[1].start, window[1].stop],
        "x": float(stack["x"][window[1]].mean()), "y": float(stack["y"][window[0]].mean()),
        "how": how,
    }
    # The window's pixels of every pair, read once: they give the offsets now and, after the
    # ramps are removed, again (no second pass over the tiles around the window). As for the
    # subsample, only the window's pixels are masked and corrected (not its tiles).
    at_window = {"y": window[0], "x": window[1]}
    window_los = masked_and_corrected(at_window).compute()
    offsets = reference_offsets(window_los, xr.DataArray(True))
    sub = apply_reference(sub, offsets)

    # 2. Loop closure on the spatial subsample held in memory.
    network = Network.from_stack(sub)
    qc = loop_closure(sub, network, wavelength, options.loop_closure_rms_rad)
    report.n_loops = int(len(qc.loops))
    report.n_bad_loops = int(qc.bad_loop.sum())
    report.loop_rms_rad = [round(float(v), 3) for v in qc.rms_rad]
    for i in np.flatnonzero(qc.bad_pair):
        in_loop = (qc.loops == i).any(axis=1)
        worst = float(np.nanmax(qc.rms_rad[in_loop]))
        report.rejected_pairs.append({
            "pair": str(names[i]),
            "reason": f"all {int(qc.n_loops_per_pair[i])} loops exceed "
                      f"{options.loop_closure_rms_rad} rad (worst {worst:.2f} rad)",
        })
    report.no_loop_pairs = [str(names[i]) for i in np.flatnonzero(qc.no_loop_pair)]
    keep = ~qc.bad_pair
    logger.info("loop closure: %d of %d loops bad, %d pairs rejected", report.n_bad_loops,
                report.n_loops, int(qc.bad_pair.sum()))
    if whole_network:
        require_network_size(int(keep.sum()), np.unique(np.concatenate(
            [network.ref_index[keep], network.sec_index[keep]])).size,
            stack.attrs.get("source", "the staged stack"), "interferograms",
            f" of {keep.size} after loop closure")
    report.network = {
        "product": [str(n) for n in names],
        "reference_date": [str(d)[:10] for d in sub["reference_date"].values],
        "secondary_date": [str(d)[:10] for d in sub["secondary_date"].values],
        "baseline_m": ([float(b) for b in sub["baseline_m"].values]
                       if "baseline_m" in sub.coords else []),
        "rejected": [bool(b) for b in qc.bad_pair],
    }

    # 3. Ramps fitted on stable ground, removed; pairs re-referenced.
    kept = np.flatnonzero(keep)
    stable_da = xr.DataArray(stable, dims=("y", "x"))
    sub = sub.isel(pair=kept)  # (the rejected pairs' subsample is not held while fitting)
    coefs = fit_ramps(sub, stable_da.isel(**sub_sel), options.ramp)
    window_los = remove_ramps(apply_reference(window_los, offsets).isel(pair=kept), coefs)
    second_offsets = reference_offsets(window_los, xr.DataArray(True))
    corrections = PairCorrections(
        coherence_threshold=thr, pairs=keep_idx[kept],
        offset_mm=(offsets.values[kept] + second_offsets.values).astype(np.float32),
        ramp_kind=coefs.attrs.get("kind", "none"), ramp_coefs=coefs.values,
        centre=(coefs.attrs.get("y_centre", 0.0), coefs.attrs.get("x_centre", 0.0)),
        **_gacos_positions(gacos_used, keep_idx[kept]))
    los = _corrected_pairs(stack, gacos_used, corrections)
    sub = remove_ramps(sub, coefs)
    sub = apply_reference(sub, sub.isel(y=slice(window[0].start // step, window[0].stop // step + 1),
                                        x=slice(window[1].start // step, window[1].stop // step + 1)
                                        ).mean(("y", "x")))

    used = network.subset(keep)
    report.n_pairs_used = used.n_pairs
    report.n_dates = used.n_dates
    for first, last in components(used):
        report.components.append({"first": str(used.dates[first]), "last": str(used.dates[last]),
                                  "n_dates": int(last - first + 1)})
    min_valid = max(1, int(np.ceil(options.min_valid_ifg_fraction * used.n_pairs)))

    return PreparedInterferograms(los, sub, step, used, stable, report, min_valid)


def _gacos_positions(gacos: xr.Dataset | None, pairs: np.ndarray) -> dict:
    """Where the chosen staged ``pairs`` find their two delay maps (for :class:`PairCorrections`)."""
    if gacos is None:
        return {}
    return {"gacos_reference": gacos["gacos_reference_index"].values[pairs],
            "gacos_secondary": gacos["gacos_secondary_index"].values[pairs]}


def _correct_blocks(corrections: PairCorrections, table: np.ndarray | None, los: list,
                    coherence: list, y: np.ndarray, x: np.ndarray, ztd: list | None = None,
                    incidence: np.ndarray | None = None) -> np.ndarray:
    """:func:`correct_tile` of one tile given as dask's lists of blocks along pairs and dates."""
    if ztd is not None:
        ztd = ztd[0] if len(ztd) == 1 else np.concatenate(ztd, axis=0)
    return correct_tile(corrections, los, coherence, y, x, ztd, incidence,
                        coherence_table=table)


def _corrected_pairs(stack: xr.Dataset, gacos: xr.Dataset | None,
                     corrections: PairCorrections) -> xr.DataArray:
    """The kept pairs at full resolution, masked and corrected tile by tile (:func:`correct_tile`).

    With dask, each output tile holds all its pairs (one inversion per tile); the stored
    chunks of pairs of a tile are assembled once, as the correction reads them.
    """
    los = stack["los_mm"].transpose("pair", "y", "x")
    # The stored codes when there are (a quarter of the bytes of float32 values).
    coherence = stack["coherence_code" if "coherence_code" in stack else "coherence"]
    table = coherence.attrs.get("table")
    coherence = coherence.transpose("pair", "y", "x")
    ys, xs = stack["y"].values, stack["x"].values
    kept = los.isel(pair=corrections.pairs)
    extra = ([gacos["ztd_m"].transpose("date", "y", "x"),
              stack["incidence_deg"].transpose("y", "x")] if gacos is not None else [])
    if los.chunks is None:
        data = correct_tile(corrections, los.values, coherence.values, ys, xs,
                            *(a.values for a in extra), coherence_table=table)
    else:
        import dask.array as dsa

        tiles = {"y": los.chunksizes["y"], "x": los.chunksizes["x"]}
        args = [los.data, "qyx", coherence.data, "qyx",
                dsa.from_array(ys, chunks=(tiles["y"],)), "y",
                dsa.from_array(xs, chunks=(tiles["x"],)), "x"]
        if extra:
            args += [extra[0].chunk({"date": -1, **tiles}).data, "dyx",
                     extra[1].chunk(tiles).data, "yx"]
        # Each tile gets its stored blocks of pairs as they are (not concatenated first).
        data = dsa.blockwise(partial(_correct_blocks, corrections, table), "pyx", *args,
                             new_axes={"p": len(corrections.pairs)}, concatenate=False,
                             dtype=np.float32)
    return kept.copy(data=data).assign_attrs(
        units="mm", long_name="LOS displacement, masked and corrected",
        sign_convention="positive toward the satellite", reference="common reference area")


def _held(ds: xr.Dataset, out_dir: Path | None, name: str, in_memory: bool,
          keep: bool = False) -> xr.Dataset:
    """An intermediate result computed once for the steps after it.

    Without ``out_dir``, as numpy arrays; ``in_memory``, as dask arrays held in memory in
    their tiles (local threads only), and also written to ``out_dir/name`` if ``keep``;
    otherwise written to ``out_dir/name`` (Zarr) a few tiles at a time and read
    back lazily.
    """
    if out_dir is None:
        return ds.compute()
    if in_memory:
        held = ds.chunk({"time": -1}).persist()
        if keep:  # written from memory for whoever wants it later; nothing reads it back
            write_zarr_by_tiles(held, out_dir / name)
        return held
    write_zarr_by_tiles(ds.chunk({"time": -1}), out_dir / name)
    return xr.open_zarr(out_dir / name)


def run_sentinel1_chain(
    inputs: ChainInputs,
    options: Sentinel1Options,
    out_dir: Path | None = None,
    on_network: Callable[[ChainReport], None] | None = None,
) -> tuple[xr.Dataset, ChainReport, xr.Dataset]:
    """Run the chain; return the products (lazy where large), a report, and the Fig. 3c points.

    ``out_dir`` receives ``inversion.zarr`` (the unmasked series and quality layers); the
    intermediate results are read back from it and from ``timeseries.zarr`` when the
    displacement cube is larger than ``options.in_memory_max_mb`` or a Dask cluster computes,
    and held in memory otherwise. Without ``out_dir`` everything is computed in numpy
    (small stacks, notebooks, tests). ``on_network`` is called with the report once the
    network, its parts and the velocity reference are known, before the inversion (e.g. to
    draw their figures meanwhile).
    """
    logger = step_logger()
    prepared = prepare_interferograms(inputs, options)
    los, sub, step, used = prepared.los, prepared.subsample, prepared.step, prepared.network
    stable, report, min_valid = prepared.stable, prepared.report, prepared.min_valid
    stack = inputs.stack
    sub_sel = {"y": slice(None, None, step), "x": slice(None, None, step)}

    # 4. Velocity reference from the L-band rates by CDF matching.
    reference = None
    if options.velocity_reference != "none" and inputs.lband_rate is not None:
        pixel = abs(float(stack["x"][1] - stack["x"][0]))
        lband, lband_offset = lband_for_matching(
            inputs.lband_rate, stable, options.velocity_reference_smoothing_m / pixel)
        lband_sub = lband.isel(**sub_sel).values
        candidates = (INITIAL_MODELS if options.velocity_reference_initial == "auto"
                      else (options.velocity_reference_initial,))
        model0, scores, initial_sub = choose_initial_model(
            sub, lband_sub, candidates, options.gamma, options.period_yr, min_valid)
        spec0 = ConstraintSpec(model0, options.gamma, options.period_yr)
        # The mapping only needs the two distributions: the subsample gives them. Each tile
        # then computes its own initial rates and v_ref in the same pass as the inversion.
        mapping = fit_cdf_matching(initial_sub, lband_sub)
        reference = (spec0, mapping)
        report.velocity_reference = {
            "lband_stable_offset_mm_yr": round(lband_offset, 3),
            "initial_constraint": model0,
            "initial_rank_agreement": {k: round(v, 4) for k, v in scores.items()},
            "n_overlap": mapping.n_overlap,
            "source_quantiles": [round(float(v), 4) for v in mapping.source_quantiles],
            "target_quantiles": [round(float(v), 4) for v in mapping.target_quantiles],
            "probabilities": [round(float(v), 4) for v in mapping.probabilities],
        }
        logger.info("velocity reference: initial '%s' rates CDF-matched to L-band rates on %d "
                    "pixels", model0, mapping.n_overlap)
    elif options.velocity_reference != "none":
        logger.warning("no L-band rate map: inverting without a velocity reference")
    referenced = reference is not None and options.constraint != "none"
    spec = ConstraintSpec(options.constraint, options.gamma, options.period_yr,
                          velocity_reference=referenced)
    report.constraint = {"model": spec.model, "gamma": spec.gamma, "period_yr": spec.period_yr,
                         "velocity_reference": "alos2-cdf-matched" if referenced else "none"}
    if on_network is not None:
        on_network(report)

    # 5. Inversion, stored before filtering: the filter's spatial window reaches into
    # neighbouring tiles, which must not be inverted again for it.
    valid = np.isfinite(np.asarray(sub.transpose("pair", "y", "x").values))
    ref_index, report.reference_date = choose_reference_date(
        date_coverage(valid, used), used, options.reference_date,
        options.reference_date_min_coverage)
    ref_date = used.dates[ref_index]
    logger.info("series are relative to %s (%s; covered at %.0f%% of pixels, the first date "
                "%s at %.0f%%)", report.reference_date["date"], report.reference_date["how"],
                100 * report.reference_date["coverage"], report.reference_date["first_date"],
                100 * report.reference_date["first_date_coverage"])
    result = invert_nsbas(los, spec, min_valid=min_valid,
                          reference_from=reference if referenced else None,
                          reference_date=ref_date, wavelength_m=float(stack.attrs["wavelength_m"]))
    in_memory = in_memory_cube(out_dir, used.n_dates, stack, options)
    # The unmasked, unfiltered series and quality layers stay in ``inversion.zarr``.
    result = _held(result, out_dir, "inversion.zarr", in_memory, keep=True)
    products, result = filtered_products(result, stack, used, ref_date, options, out_dir,
                                         in_memory, report)
    points = _comparison_points(sub, step, products, result.get("velocity_reference"), used,
                                options, stack)
    products.attrs.update(_attrs(report, options))
    return products, report, points


def in_memory_cube(out_dir: Path | None, n_dates: int, stack: xr.Dataset,
                   options: Sentinel1Options) -> bool:
    """Whether the chain's intermediate results are held in memory (else in Zarr stores).

    On a Dask cluster, results held by its workers would outlive neither the client nor the
    local-threads writers: there they always go through the work folder's stores.
    """
    cube_mb = n_dates * stack.sizes["y"] * stack.sizes["x"] * 4 / 1e6
    in_memory = out_dir is None or (cube_mb <= options.in_memory_max_mb
                                    and configured_scheduler() is None)
    step_logger().info("displacement cube %.0f MB: intermediate results %s", cube_mb,
                       "in memory" if in_memory else f"through Zarr stores in {out_dir}")
    return in_memory


def filtered_products(result: xr.Dataset, stack: xr.Dataset, network: Network,
                      ref_date: np.datetime64, options: Sentinel1Options, out_dir: Path | None,
                      in_memory: bool, report: ChainReport) -> tuple[xr.Dataset, xr.Dataset]:
    """Steps 6–7: the atmospheric filter, then the masked products of the (held) series.

    Returns the products and the series with ``displacement`` filtered (and
    ``displacement_unfiltered`` beside it) when the filter is on; sets ``report.mask``.
    """
    if options.filter_enabled:
        pixel = abs(float(stack["x"][1] - stack["x"][0]))
        sigma_t = options.filter_temporal_factor * revisit_days(network)
        filtered = remove_atmosphere(result["displacement"], sigma_t, options.filter_spatial_m,
                                     pixel, reference_time=np.datetime64(ref_date, "ns"))
        # Only the filtered series is new: the rest stays where it is.
        filtered = _held(filtered.to_dataset(name="displacement"), out_dir, "timeseries.zarr",
                         in_memory)["displacement"]
        result = result.assign(displacement_unfiltered=result["displacement"],
                               displacement=filtered)
        result.attrs["filter_temporal_sigma_days"] = sigma_t
    products, report.mask = timeseries_products(
        result, stack["incidence_deg"], mask_thresholds(options), options.thaw_onset,
        options.thaw_end, options.period_yr, options.seasonal_products_from)
    return products, result


def _point_indices(stack: xr.Dataset, products: xr.Dataset, options: Sentinel1Options,
                   step: int) -> list[tuple[str, int, int]]:
    """Grid indices of the Fig. 3c points, on the spatial subsample (every ``step`` pixels).

    Configured (lon, lat) points (the nearest subsample pixel), or else the fastest-subsiding
    and the most stable trusted pixel among those with the most valid interferograms. The
    subsample's interferograms are in memory, so the points' series need no new pass.
    """
    ys, xs = stack["y"].values[::step], stack["x"].values[::step]
    if options.timeseries_points:
        from pyproj import Transformer

        crs = stack.attrs.get("grid_crs")
        to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        out = []
        for name, lon, lat in options.timeseries_points:
            x, y = to_grid.transform(lon, lat)
            out.append((name, int(np.abs(ys - y).argmin()), int(np.abs(xs - x).argmin())))
        return out
    sub_sel = {"y": slice(None, None, step), "x": slice(None, None, step)}
    return select_points(products["velocity"].isel(**sub_sel).values,
                         products["n_valid_ifg"].isel(**sub_sel).values)


def _comparison_points(sub: xr.DataArray, step: int, products: xr.Dataset,
                       v_ref: xr.DataArray | None, network: Network,
                       options: Sentinel1Options, stack: xr.Dataset) -> xr.Dataset:
    """Series of the Fig. 3c points under each constraint model (mm)."""
    points = _point_indices(stack, products, options, step)
    sub = sub.transpose("pair", "y", "x")
    data = np.stack([np.asarray(sub.values[:, iy, ix]) for _, iy, ix in points])
    vref = (np.array([float(v_ref.isel(y=iy * step, x=ix * step).values)
                      for _, iy, ix in points]) if v_ref is not None else None)
    series = constraint_comparison(data, network, options.gamma, options.period_yr, vref)
    rows = [p[1] * step for p in points]
    cols = [p[2] * step for p in points]
    return xr.Dataset(
        {"displacement": (("model", "point", "time"), np.stack(list(series.values())),
                          {"units": "mm", "long_name": "LOS displacement under each constraint"})},
        coords={"model": list(series), "point": [p[0] for p in points],
                "row": ("point", rows), "col": ("point", cols),
                "x": ("point", [float(stack["x"][c]) for c in cols]),
                "y": ("point", [float(stack["y"][r]) for r in rows]),
                "time": network.dates.astype("datetime64[ns]")},
    )


def mask_thresholds(options: Sentinel1Options) -> MaskThresholds:
    """The product mask's limits from the study options."""
    return MaskThresholds(
        min_temporal_coherence=options.mask_min_temporal_coherence,
        max_bridged_fraction=options.mask_max_bridged_fraction,
        max_parts_per_year=options.mask_max_parts_per_year,
        max_condition=options.mask_max_condition,
        max_velocity_std=options.mask_max_velocity_std,
    )


def _attrs(report: ChainReport, options: Sentinel1Options) -> dict:
    return {
        "rejected_interferograms": json.dumps([r["pair"] for r in report.rejected_pairs]),
        "rejection_reasons": json.dumps(report.rejected_pairs),
        "interferograms_without_gacos": json.dumps(report.no_gacos_pairs),
        "n_interferograms_used": report.n_pairs_used,
        "network_components": json.dumps(report.components),
        "reference_date": report.reference_date.get("date", ""),
        "reference_date_choice": json.dumps(report.reference_date),
        "mask_summary": json.dumps(report.mask),
        "reference_window": json.dumps(report.reference_window),
        "constraint": json.dumps(report.constraint),
        "velocity_reference": json.dumps({k: v for k, v in report.velocity_reference.items()
                                          if not k.endswith("quantiles")
                                          and k != "probabilities"}),
        "gacos_applied": int(report.gacos_applied),
        "coherence_threshold": options.coherence_threshold,
        "loop_closure_rms_rad": options.loop_closure_rms_rad,
        "ramp": options.ramp,
        "atmospheric_filter": int(options.filter_enabled),
        "seasonal_products_from": options.seasonal_products_from,
        "talik_version": __version__,
    }


NETCDF_TIME_CHUNK = 16  # dates per NetCDF chunk of a (time, y, x) variable


LEAST_SIGNIFICANT_DIGIT = 3
"""Decimal digits of millimetre values kept in the NetCDF product (rounded to 2⁻¹⁰ mm)."""


def _quantised(values: np.ndarray, scale: float) -> np.ndarray:
    """``round(values · scale) / scale`` in one new array (the rounding of :func:`write_cf_netcdf`)."""
    out = np.multiply(values, scale)
    np.round(out, out=out)
    return np.divide(out, scale, out=out)


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
    for name in ds.variables:
        ds[name].encoding = {}  # drop the Zarr store's encodings
    for name in ds.data_vars:
        if {"y", "x"} <= set(ds[name].dims):
            ds[name].attrs["grid_mapping"] = "spatial_ref"
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
    encoding = {}
    for name in ds.data_vars:
        var = ds[name]
        if var.dtype.kind not in "fiu":
            continue
        # NetCDF chunks that tile the dask chunks exactly: each dask block fills whole NetCDF
        # chunks, so nothing is decompressed and rewritten while writing (which made the
        # library's default chunking ten times slower), and a map or a tile reads few chunks.
        dask_chunks = dict(zip(var.dims, var.chunks, strict=True)) if var.chunks else {}
        sizes = tuple(min(NETCDF_TIME_CHUNK, n) if dim not in ("y", "x")
                      else (dask_chunks[dim][0] if dim in dask_chunks else n)
                      for dim, n in zip(var.dims, var.shape, strict=True))
        encoding[name] = {"zlib": True, "complevel": 1, "shuffle": True,
                          "chunksizes": sizes} if var.ndim else {"zlib": False}
        if var.ndim and var.attrs.get("units") in ("mm", "mm/yr") and var.dtype.kind == "f":
            # Keep 0.001 mm (far below InSAR's millimetre noise): the noise bits that make
            # float32 incompressible are dropped. This is netCDF4's least_significant_digit
            # rounding (to 1/1024), done here tile by tile in parallel rather than by the
            # writer on one thread; the attribute says so as the writer's would.
            scale = 2.0 ** math.ceil(math.log2(10**LEAST_SIGNIFICANT_DIGIT))
            data = var.data
            data = (data.map_blocks(_quantised, scale, dtype=data.dtype)
                    if hasattr(data, "map_blocks") else _quantised(np.asarray(data), scale))
            ds[name] = var.copy(data=data).assign_attrs(
                least_significant_digit=LEAST_SIGNIFICANT_DIGIT)
    # The (time, y, x) cubes are most of the bytes: their chunks are compressed on every core
    # (talik.tasks.netcdf_chunks), and so are the maps' (ISA-L's deflate, ten times zlib's);
    # the library writes the rest (coordinates, integer layers), then defines them.
    # (a map with a dimension of no coordinate, or of no length, is left to the library:
    # the file has no such dimension yet, or no chunk to write)
    cubes = [name for name in ds.data_vars
             if {"y", "x"} <= set(ds[name].dims) and ds[name].dtype.kind in "fu"
             and ds[name].size and all(dim in ds.coords for dim in ds[name].dims)]
    variables, _ = xr.conventions.encode_dataset_coordinates(ds)
    encoded, _ = xr.conventions.cf_encoder({name: variables[name] for name in cubes}, {})
    ds.drop_vars(cubes).to_netcdf(path, encoding={k: v for k, v in encoding.items()
                                                  if k not in cubes}, engine="netcdf4")
    write_cubes(path, encoded, {name: encoding[name]["chunksizes"] for name in cubes})


def _coherence_as_float32(store: Path, decoded: xr.DataArray
                          ) -> tuple[xr.DataArray, xr.DataArray | None]:
    """The staged coherence as float32, decoded from its stored codes by a lookup table.

    Coherence is stored as uint8 codes × ``scale_factor`` (255: missing). xarray decodes them
    to float64, and a cast to float32 is then a second pass over the stack; a 256-entry table
    of the same float64 → float32 values gives each code's value in one pass (identical
    values). Returns the values and the codes themselves (attribute ``table``: the value of
    each code), or ``None`` for a store without codes (whose values are only cast).
    """
    raw = open_sentinel1_store(store, chunks={}, mask_and_scale=False)["coherence"]
    scale = raw.attrs.get("scale_factor")
    if raw.dtype != np.uint8 or scale is None:
        return decoded.astype(np.float32), None
    table = (np.arange(256, dtype=np.float64) * float(scale)).astype(np.float32)
    fill = raw.attrs.get("_FillValue")
    if fill is not None:
        table[int(fill)] = np.nan
    values = raw.data.map_blocks(lambda block: table[block], dtype=np.float32)
    codes = raw.copy(data=raw.data).assign_attrs(table=table)
    return decoded.copy(data=values), codes


def open_chain_inputs(staged_s1: Path, options: Sentinel1Options, rasters: Path | None = None,
                      gacos: Path | None = None, pairs: Path | None = None,
                      lband_geotiff: Path | None = None,
                      lband_incidence_deg: float | None = None,
                      lband_platform: str = "ALOS-2",
                      lband_quantity: str | None = None, want_lband: bool = True) -> ChainInputs:
    """Open the staged stores (lazily) and build the L-band rate map if one is available.

    ``want_lband=False`` leaves the L-band rates out (a forward update keeps the earlier ones).
    """
    stack = open_sentinel1_store(staged_s1, chunks={})  # the stores' own chunks, as they are
    stack["coherence"], codes = _coherence_as_float32(staged_s1, stack["coherence"])
    if codes is not None:
        stack["coherence_code"] = codes
    # The stored chunks of pairs are kept: masking, GACOS, re-referencing and ramps work
    # pair by pair, so a tile's pairs are only assembled for the inversion, once (assembled
    # from the start, every step of a tile held several whole (pair, y, x) tiles at once).
    stack = stack.chunk({"y": options.chunk_px, "x": options.chunk_px})
    # The per-pair coordinates are small: held in memory, they are never recomputed through
    # dask each time they are compared or read.
    small = {name: stack[name].compute() for name in stack.coords
             if stack[name].dims == ("pair",)}
    stack = stack.assign_coords(small)
    r = xr.open_zarr(rasters).compute() if rasters is not None and rasters.exists() else None
    g = None
    if gacos is not None and gacos.exists():
        g = xr.open_zarr(gacos, chunks={"date": -1})
        if "has_gacos" not in g:
            g = None
        else:
            g = g.assign({name: g[name].load() for name in g.data_vars
                          if g[name].dims == ("pair",)})
    incidence = stack["incidence_deg"].compute()
    lband = None
    if options.velocity_reference != "none" and want_lband:
        if lband_geotiff is not None:
            lband = lband_rate_from_geotiff(lband_geotiff, AnalysisGrid.from_attrs(stack.attrs),
                                            incidence, lband_incidence_deg, lband_quantity)
        elif pairs is not None and pairs.exists():
            p = xr.open_zarr(pairs).compute()
            if (p["sensor"].values == lband_platform).any():
                stable = stable_mask_of(r, incidence.shape, options.stable_max_ground_ice)
                lband = lband_rate(p, lband_platform, options.velocity_reference_min_span_days,
                                   options.coherence_threshold, incidence, stable, options.ramp,
                                   g["ztd_m"].compute() if g is not None and options.gacos
                                   else None).compute()
    return ChainInputs(stack=stack, rasters=r, gacos=g, lband_rate=lband)


INPUTS_FILE = "inputs.json"
"""In a time-series step folder: the staging it inverted (digest) and its options."""


def earlier_series(work_dir: str, staged_s1: StepOutput, options: Sentinel1Options
                   ) -> Path | None:
    """The time-series folder of the staging that ``staged_s1`` extends, made with these options.

    None when the stack extends nothing, no series of the earlier staging was made with the
    same options (layout and update options aside: :data:`LAYOUT_OPTIONS`), or the options set a
    reference date themselves (a change made on purpose).
    """
    base = staged_s1.summary.get("extends")
    if not base or options.reference_date is not None:
        return None
    wanted = _science_options(options.model_dump(mode="json"))
    for folder in sorted((Path(work_dir) / "steps" / "sentinel1-timeseries").glob("*")):
        try:
            made = json.loads((folder / INPUTS_FILE).read_text())
            # Saved options are read as options (defaults filled in for fields added since).
            saved = Sentinel1Options.model_validate(made["options"]).model_dump(mode="json")
        except (OSError, ValueError, KeyError, TypeError):  # (pydantic's errors are ValueErrors)
            continue
        if made["staged_s1"][:16] == base and _science_options(saved) == wanted:
            return folder
    return None


def kept_reference(work_dir: str, staged_s1: StepOutput, options: Sentinel1Options
                   ) -> dict | None:
    """The reference date and area an extended stack keeps from the stack it extends.

    When ``staged_s1`` extends an earlier staging and a time series of that staging was made
    with the same options (:func:`earlier_series`), its reference date and reference window
    are returned as ``{"date": date, "window": {"rows": [...], "cols": [...]}}``, so that
    successive releases share their zero. None otherwise.
    """
    folder = earlier_series(work_dir, staged_s1, options)
    if folder is None:
        return None
    try:
        qc = json.loads((folder / "qc.json").read_text())
        date = dt.date.fromisoformat(qc["reference_date"]["date"][:10])
        window = {"rows": qc["reference_window"]["rows"], "cols": qc["reference_window"]["cols"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"date": date, "window": window}


LAYOUT_OPTIONS = ("chunk_px", "in_memory_max_mb", "extension", "forward_max_dates")
"""Options not compared by :func:`earlier_series`: how the chain computes and how a stack is
updated, not what a series is."""


def _science_options(dumped: dict) -> dict:
    return {k: v for k, v in dumped.items() if k not in LAYOUT_OPTIONS}


def _timeseries_key(staged_s1: StepOutput, staged_rasters: StepOutput | None,
                    staged_gacos: StepOutput | None, staged_pairs: StepOutput | None,
                    options: Sentinel1Options, lband_platform: str, work_dir: str,
                    title: str) -> tuple:
    """What the time series depends on: its staged inputs, options, title, the series it extends."""
    staged = (staged_s1, staged_rasters, staged_gacos, staged_pairs)
    earlier = earlier_series(work_dir, staged_s1, options)
    return (*(s.digest if s else None for s in staged), options, lband_platform, title,
            kept_reference(work_dir, staged_s1, options), earlier.name if earlier else None)


def _forward_update(earlier: Path | None, inputs: ChainInputs, options: Sentinel1Options,
                    work: Path):
    """A forward update's products, report and points, or None (logged why) for a whole run."""
    from talik.tasks.sentinel1_forward import KeptSeries, NotForward, extend_sentinel1_chain

    if earlier is None or options.extension != "forward":
        return None
    logger = step_logger()
    try:
        made = json.loads((earlier / INPUTS_FILE).read_text())
        if made.get("code") != code_digest(__name__):
            raise NotForward(f"the earlier series ({earlier.name}) was made by other code")
        kept = KeptSeries(earlier, json.loads((earlier / "qc.json").read_text()))
        return extend_sentinel1_chain(inputs, options, work, kept)
    except NotForward as why:
        logger.info("extension inverted whole, not forward: %s", why)
        return None


@step("sentinel1-timeseries", key=_timeseries_key)
def sentinel1_timeseries(staged_s1: StepOutput, staged_rasters: StepOutput | None,
                         staged_gacos: StepOutput | None, staged_pairs: StepOutput | None,
                         options: Sentinel1Options, lband_platform: str, work_dir: str,
                         title: str) -> StepOutput:
    """Staged stack → ``sentinel1.nc`` (CF) with the time series and its products.

    A stack that extends an earlier one by later dates is solved forward when it can be
    (:mod:`talik.tasks.sentinel1_forward`), else inverted whole; either way it keeps the
    earlier series' reference date and area.
    """
    logger = step_logger()
    earlier = earlier_series(work_dir, staged_s1, options)
    kept = kept_reference(work_dir, staged_s1, options)
    asked = options.model_dump(mode="json")  # what a later extension compares its options to
    if kept is not None:
        options = options.model_copy(update={"reference_date": kept["date"]})
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            if kept is not None:
                logger.info("the stack extends an earlier one: keeping its reference date %s "
                            "and reference area (rows %s, columns %s)", kept["date"],
                            kept["window"]["rows"], kept["window"]["cols"])
            stores = {
                "staged_s1": Path(staged_s1.path) / "sentinel1.zarr",
                "rasters": Path(staged_rasters.path) / "rasters.zarr" if staged_rasters else None,
                "gacos": Path(staged_gacos.path) / "gacos.zarr" if staged_gacos else None,
                "pairs": Path(staged_pairs.path) / "pairs.zarr" if staged_pairs else None}
            # The L-band rates are only needed by a whole inversion: read once it is one.
            inputs = open_chain_inputs(options=options, lband_platform=lband_platform,
                                       want_lband=False, **stores)
            if kept is not None:
                inputs = replace(inputs, reference_window=kept["window"])
            forward = _forward_update(earlier, inputs, options, sd.work)
            if forward is None:
                inputs = open_chain_inputs(options=options, lband_platform=lband_platform,
                                           **stores)
                if kept is not None:
                    inputs = replace(inputs, reference_window=kept["window"])
                with dask_cluster() as address:
                    if address:
                        logger.info("computing on the Dask cluster at %s", address)
                    products, report, points = run_sentinel1_chain(inputs, options, sd.work)
                if inputs.lband_rate is not None:
                    inputs.lband_rate.to_netcdf(sd.work / "lband_rate.nc")
            else:
                products, report, points = forward
                if (earlier / "lband_rate.nc").exists():
                    shutil.copy2(earlier / "lband_rate.nc", sd.work / "lband_rate.nc")
            grid = AnalysisGrid.from_attrs(inputs.stack.attrs)
            write_cf_netcdf(products, grid, sd.work / "sentinel1.nc", title)
            points.to_netcdf(sd.work / "points.nc")
            (sd.work / "qc.json").write_text(json.dumps(asdict(report), indent=1, default=str))
            (sd.work / INPUTS_FILE).write_text(json.dumps({
                "staged_s1": staged_s1.digest, "options": asked, "code": code_digest(__name__)}))
            logger.info("Sentinel-1 time series: %d dates, %d pairs used, %d rejected%s",
                        report.n_dates, report.n_pairs_used, len(report.rejected_pairs),
                        f" ({len(report.forward['new_dates'])} dates solved forward)"
                        if report.forward else "")
        qc = json.loads((sd.final if sd.done else sd.work).joinpath("qc.json").read_text())
    summary = {"n_dates": qc["n_dates"], "n_pairs_used": qc["n_pairs_used"],
               "rejected": [r["pair"] for r in qc["rejected_pairs"]],
               "components": len(qc["components"]),
               "gacos_applied": qc["gacos_applied"],
               "velocity_reference": qc["constraint"].get("velocity_reference"),
               "reference_date": qc.get("reference_date", {}).get("date"),
               "pixels_trusted": qc.get("mask", {}).get("n_trusted"),
               "pixels_solved": qc.get("mask", {}).get("n_solved"),
               "forward_dates": len((qc.get("forward") or {}).get("new_dates", []))}
    return run.output(sd.final, parameters=options.model_dump(mode="json"), summary=summary)


def sentinel1_from_products(
    products_dir: Path,
    out_nc: Path,
    options: Sentinel1Options,
    aoi,
    wavelength_m: float,
    work_dir: Path,
    lband_geotiff: Path | None = None,
    lband_incidence_deg: float | None = None,
    gacos_dir: Path | None = None,
    ground_ice: Path | None = None,
    title: str = "Sentinel-1 time series (talik)",
    lband_quantity: str | None = None,
    drawing: FiguresInBackground | None = None,
) -> ChainReport:
    """The chain outside Prefect: a folder of HyP3 products → a CF NetCDF (``talik sentinel1``).

    Intermediate stores go to ``work_dir``; figures to ``<out stem>_figures/`` beside
    ``out_nc``, drawn by ``drawing`` (a figures' process the caller started early and stops;
    by default one started here).
    """
    from contextlib import nullcontext

    from talik.tasks.figure_process import FiguresInBackground, published_at_points
    from talik.tasks.readers.hyp3 import find_hyp3_products
    from talik.tasks.stage import grid_from_products, write_gacos_store, write_sentinel1_store

    # The figures' process starts now at the latest: its imports are done by the time there
    # is a product.
    with nullcontext(drawing) if drawing is not None else FiguresInBackground() as drawing:
        products = find_hyp3_products(products_dir)
        grid = grid_from_products(products, aoi)
        created = not work_dir.exists()
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_sentinel1_store(products, grid, wavelength_m, work_dir / "sentinel1.zarr")
        except Exception:
            if created:  # a refused stack leaves nothing behind
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        rasters = None
        if ground_ice is not None:
            ys, xs = grid.coords()
            ice = on_grid(read_raster(ground_ice, "1"), grid, Resampling.bilinear)
            write_zarr(xr.Dataset({"ground_ice": (("y", "x"), ice)}, coords={"y": ys, "x": xs}),
                       work_dir / "rasters.zarr", mode="w")
            rasters = work_dir / "rasters.zarr"
        gacos = None
        if gacos_dir is not None and options.gacos:
            dates = sorted({p.reference_date for p in products}
                           | {p.secondary_date for p in products})
            write_gacos_store(gacos_dir, dates, grid, work_dir / "gacos.zarr",
                              work_dir / "sentinel1.zarr")
            gacos = work_dir / "gacos.zarr"
        inputs = open_chain_inputs(work_dir / "sentinel1.zarr", options, rasters, gacos,
                                   lband_geotiff=lband_geotiff,
                                   lband_incidence_deg=lband_incidence_deg,
                                   lband_quantity=lband_quantity)
        figures = out_nc.with_name(out_nc.stem + "_figures")
        # The network's figures are drawn by the other process during the inversion, into the
        # work folder; they join the others beside the product only once the run succeeded
        # (a failed or interrupted run leaves the earlier figures as they were).
        drafts = work_dir / "network_figures"

        def draw_network(report: ChainReport) -> None:
            shutil.rmtree(drafts, ignore_errors=True)
            drafts.mkdir()
            drawing.draw(drafts, "network", {"network": report.network,
                                             "components": report.components,
                                             "velocity_reference": report.velocity_reference})

        products_ds, report, points = run_sentinel1_chain(inputs, options, work_dir,
                                                          on_network=draw_network)
        out_nc.parent.mkdir(parents=True, exist_ok=True)
        figures.mkdir(exist_ok=True)
        # The figures' inputs are small: read them now; the other process draws while this
        # one writes the NetCDF.
        points = points.load()
        layers = products_ds[["velocity", "thaw_season_deformation_mean"]].load()
        published = published_at_points(products_ds, points)
        logger = step_logger()
        drawing.draw(figures, "results", layers, points, published)
        logger.info("writing %s", out_nc)
        tmp_nc = out_nc.with_name(f".{out_nc.name}.tmp")
        write_cf_netcdf(products_ds, grid, tmp_nc, title)
        tmp_nc.replace(out_nc)  # a killed run never leaves a half-written product
        (work_dir / "qc.json").write_text(json.dumps(asdict(report), indent=1, default=str))
        for path in drawing.wait():
            if path.parent == drafts:
                path.replace(figures / path.name)
        shutil.rmtree(drafts, ignore_errors=True)
    return report
