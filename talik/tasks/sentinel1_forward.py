"""Extending a Sentinel-1 time series by later acquisitions: only the new dates are solved.

A stack staged as an extension of an earlier one (``stage-sentinel1`` reads only the new
products) whose earlier time series was made by the same code and options is updated forward
(:mod:`talik.science.forward`): the new pairs, and the earlier pairs that close loops with
them, are masked, GACOS-corrected, referenced to the kept reference area, loop-closure checked
and deramped exactly as a whole run would; the new dates are then solved against the earlier
series, which is kept as published with its constraint parameters and velocity reference. The
whole extended series is then filtered and its products made as in a whole run
(:func:`talik.tasks.sentinel1.filtered_products`), so the filter's window and the rates see
every date. The step's ``inversion.zarr`` holds only the new dates and the updated per-pixel
layers, and points at the earlier step's series for the rest
(:mod:`talik.tasks.inversion_parts`): the kept dates are not written again.

Anything that would revise the past makes it a whole inversion instead (:class:`NotForward`,
with the reason logged): a new product between earlier dates, other code or options, a date
range option, or more than ``forward_max_dates`` dates solved forward since the last whole
inversion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import xarray as xr

from talik.config import Sentinel1Options
from talik.science.forward import ForwardNetwork, solve_forward
from talik.science.inversion import QUALITY_LAYERS, ConstraintSpec
from talik.science.network import Network, components
from talik.science.temporal import slope_weights
from talik.tasks.inversion_parts import open_inversion, write_inversion_part
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest
from talik.tasks.sentinel1 import (
    ChainInputs,
    ChainReport,
    _attrs,
    filtered_products,
    in_memory_cube,
    prepare_interferograms,
)

__all__ = ["KeptSeries", "NotForward", "extend_sentinel1_chain", "forward_plan"]

FORWARD_QUALITY = ("n_valid_ifg", "residual_rms", "temporal_coherence", "n_parts",
                   "bridged_fraction", "condition")
"""Quality layers a forward update carries over (``velocity_std`` is recomputed)."""


class NotForward(Exception):
    """The extension cannot be solved forward; the message says why."""


@dataclass(frozen=True)
class KeptSeries:
    """An earlier time-series step folder that a forward update extends.

    Attributes
    ----------
    folder
        The step folder (``inversion.zarr``, ``qc.json``, ``points.nc``).
    qc
        Its report (:class:`talik.tasks.sentinel1.ChainReport` as JSON).
    """

    folder: Path
    qc: dict

    @property
    def forward_dates(self) -> int:
        """Dates solved forward since the last whole inversion, in this series."""
        return int((self.qc.get("forward") or {}).get("dates_since_whole_inversion", 0))


def chain_code() -> str:
    """Digest of the code of the chain (what a kept series must have been made by)."""
    return code_digest(__name__)


def forward_plan(stack: xr.Dataset, kept: KeptSeries, options: Sentinel1Options
                 ) -> tuple[np.ndarray, np.ndarray, ForwardNetwork]:
    """Which staged pairs a forward update reads: ``(new, loop partners, network)`` indices.

    ``new`` are the pairs the kept series did not invert (nor leave out for want of GACOS);
    ``loop partners`` are kept pairs between two kept dates that new pairs start from, read
    only to close loops with the new pairs. Raises :class:`NotForward` when the update would
    revise the past.
    """
    if options.extension != "forward":
        raise NotForward("[sentinel1] extension = 'reinvert'")
    if options.first_date is not None or options.last_date is not None:
        raise NotForward("[sentinel1] first_date/last_date are set")
    network = kept.qc.get("network") or {}
    if "product" not in network or not (kept.folder / "inversion.zarr").exists():
        raise NotForward(f"the earlier series in {kept.folder} has no record of its products")
    known = set(network["product"]) | set(kept.qc.get("no_gacos_pairs", []))
    names = np.asarray(stack["product"].values).astype(str)
    new = np.flatnonzero(~np.isin(names, list(known)))
    if new.size == 0:
        raise NotForward("no new products")
    kept_dates = open_inversion(kept.folder)["time"].values.astype("datetime64[D]")
    ref = stack["reference_date"].values.astype("datetime64[D]")
    sec = stack["secondary_date"].values.astype("datetime64[D]")
    try:
        net = ForwardNetwork.of(kept_dates, ref[new], sec[new])
    except ValueError as exc:
        late = [str(n) for n in names[new][sec[new] <= kept_dates[-1]]][:3]
        raise NotForward(f"{exc}{' (' + ', '.join(late) + ')' if late else ''}") from None
    total = kept.forward_dates + net.new_dates.size
    if total > options.forward_max_dates:
        raise NotForward(f"{total} dates solved forward since the last whole inversion would "
                         f"exceed [sentinel1] forward_max_dates = {options.forward_max_dates}")
    starts = kept_dates[net.kept_needed]
    rejected = {name for name, bad in zip(network["product"], network["rejected"], strict=True)
                if bad}
    partner = (np.isin(ref, starts) & np.isin(sec, starts) & np.isin(names, list(known))
               & ~np.isin(names, list(rejected)))
    return new, np.flatnonzero(partner), net


def _velocity_std(series: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(N, ...)`` series → standard error of their least-squares rate (mm/yr), as the kernel's."""
    n = series.shape[0]
    flat = series.reshape(n, -1).astype(np.float64)
    flat -= flat.mean(axis=0)
    rate = slope_weights(t) @ flat
    centre = t - t.mean()
    sxx = float((centre ** 2).sum())
    # Residual sum of squares of the straight-line fit, from sums (no fitted series in memory)
    ss = np.maximum(np.einsum("ij,ij->j", flat, flat) - rate ** 2 * sxx, 0.0)
    return np.sqrt(ss / max(n - 2, 1) / sxx).astype(np.float32).reshape(series.shape[1:])


def _forward_block(los: np.ndarray, kept_at: np.ndarray, params: np.ndarray | None,
                   v_ref: np.ndarray | None, quality: np.ndarray, *, net: ForwardNetwork,
                   spec: ConstraintSpec, n_pairs_total: int, min_valid_fraction: float,
                   wavelength_m: float) -> np.ndarray:
    """One tile: ``(M, ny, nx)`` new pairs → ``(2K + 7, ny, nx)`` new epochs, flags, quality.

    ``kept_at`` holds the kept displacement at ``net.kept_needed``, then at the first and the
    last kept date; ``quality`` the kept layers of :data:`FORWARD_QUALITY`.
    """
    m, ny, nx = los.shape
    flat = lambda a: a.reshape(a.shape[0], ny * nx)  # noqa: E731
    at = flat(kept_at)
    q = flat(quality)
    res = solve_forward(
        flat(los), net, spec, at[:-2], at[-2], at[-1],
        None if params is None else flat(params), None if v_ref is None else v_ref.ravel(),
        dict(zip(FORWARD_QUALITY, q, strict=True)), n_pairs_total, min_valid_fraction,
        wavelength_m)
    k = net.new_dates.size
    out = np.empty((2 * k + len(FORWARD_QUALITY) + 1, ny * nx), np.float32)
    out[:k] = res["displacement"]
    out[k:2 * k] = res["bridged"]
    for i, name in enumerate(FORWARD_QUALITY):
        out[2 * k + i] = res[name]
    out[-1] = res["solved"]
    return out.reshape(-1, ny, nx)


def _report(kept: KeptSeries, new_report: ChainReport, partners: set[str],
            net: ForwardNetwork, used: Network) -> ChainReport:
    """The extended series' report: the kept one with the new pairs' decisions added."""
    qc = kept.qc
    fields = set(ChainReport.__dataclass_fields__)
    report = ChainReport(**{k: v for k, v in qc.items() if k in fields})
    new_net = new_report.network
    is_new = [p not in partners for p in new_net["product"]]
    for key in ("reference_date", "secondary_date", "baseline_m", "rejected", "product"):
        values = new_net.get(key) or []
        if values:
            report.network.setdefault(key, [])
            report.network[key] = list(report.network[key]) + [
                v for v, keep in zip(values, is_new, strict=True) if keep]
    report.rejected_pairs = list(qc["rejected_pairs"]) + [
        r for r in new_report.rejected_pairs if r["pair"] not in partners]
    report.no_gacos_pairs = list(qc["no_gacos_pairs"]) + list(new_report.no_gacos_pairs)
    report.no_loop_pairs = list(qc["no_loop_pairs"]) + [
        p for p in new_report.no_loop_pairs if p not in partners]
    report.n_loops = qc["n_loops"] + new_report.n_loops
    report.n_bad_loops = qc["n_bad_loops"] + new_report.n_bad_loops
    report.n_pairs_used = used.n_pairs
    report.n_dates = used.n_dates
    report.components = [{"first": str(used.dates[a]), "last": str(used.dates[b]),
                          "n_dates": int(b - a + 1)} for a, b in components(used)]
    report.date_range = {**qc["date_range"],
                         "n_pairs_staged": qc["date_range"]["n_pairs_staged"]
                         + new_report.date_range["n_pairs_staged"] - len(partners)}
    kept_how = "kept from the stack this one extends"
    report.reference_window = {**qc["reference_window"], "how": kept_how}
    report.reference_date = {**qc["reference_date"], "how": kept_how}
    since = kept.forward_dates + net.new_dates.size
    report.forward = {
        "extends": str(kept.folder.name),
        "kept_dates": int(net.kept_dates.size),
        "kept_last_date": str(net.kept_dates[-1]),
        "new_dates": [str(d) for d in net.new_dates],
        "new_pairs": int(sum(is_new)),
        "dates_since_whole_inversion": since,
        "method": "new dates solved against the kept series (its epochs, constraint "
                  "parameters and velocity reference unchanged); whole series re-filtered",
    }
    return report


def extend_sentinel1_chain(inputs: ChainInputs, options: Sentinel1Options, out_dir: Path,
                           kept: KeptSeries) -> tuple[xr.Dataset, ChainReport, xr.Dataset]:
    """The chain of :func:`talik.tasks.sentinel1.run_sentinel1_chain`, forward (module doc).

    Returns the products, the report and the Fig. 3c points (those of the kept series: their
    comparison of constraint models needs every pair of the two points, which a forward update
    does not read). Raises :class:`NotForward` before writing anything when it cannot be done.
    """
    logger = step_logger()
    stack = inputs.stack
    new, partners, net = forward_plan(stack, kept, options)
    chosen = np.sort(np.concatenate([new, partners]))
    partner_names = set(np.asarray(stack["product"].values[partners]).astype(str))
    gacos = inputs.gacos
    if gacos is not None and "pair" in gacos.dims:
        gacos = gacos.isel(pair=chosen)
    small = replace(inputs, stack=stack.isel(pair=chosen), gacos=gacos, lband_rate=None,
                    reference_window=kept.qc["reference_window"])
    prepared = prepare_interferograms(small, options, whole_network=False)
    los = prepared.los
    names = np.asarray(los["product"].values).astype(str)
    fresh = np.flatnonzero(~np.isin(names, list(partner_names)))
    if fresh.size == 0:
        raise NotForward("every new pair was left out (GACOS or loop closure)")
    los = los.isel(pair=fresh)
    net = ForwardNetwork.of(net.kept_dates, los["reference_date"].values,
                            los["secondary_date"].values)
    base = open_inversion(kept.folder)
    model = kept.qc["constraint"]
    spec = ConstraintSpec(model["model"], model["gamma"], model["period_yr"],
                          velocity_reference=model.get("velocity_reference", "none") != "none")
    kept_network = Network.from_pairs(
        np.asarray(kept.qc["network"]["reference_date"], "datetime64[D]")[
            ~np.asarray(kept.qc["network"]["rejected"], bool)],
        np.asarray(kept.qc["network"]["secondary_date"], "datetime64[D]")[
            ~np.asarray(kept.qc["network"]["rejected"], bool)])
    used = Network.from_pairs(
        np.concatenate([kept_network.dates[kept_network.ref_index],
                        los["reference_date"].values.astype("datetime64[D]")]),
        np.concatenate([kept_network.dates[kept_network.sec_index],
                        los["secondary_date"].values.astype("datetime64[D]")]))
    logger.info("forward update: %d new dates (%s … %s) from %d new pairs, solved against the "
                "%d kept dates of %s", net.new_dates.size, net.new_dates[0], net.new_dates[-1],
                fresh.size, net.kept_dates.size, kept.folder.name)

    tiles = {"y": los.chunksizes["y"], "x": los.chunksizes["x"]} if los.chunks else None
    disp = base["displacement"]
    n_kept = disp.sizes["time"]
    at = disp.isel(time=[*net.kept_needed.tolist(), 0, n_kept - 1])
    quality = xr.concat([base[name].astype(np.float32) for name in FORWARD_QUALITY], "layer")
    params = base.get("constraint_params")
    v_ref = base.get("velocity_reference") if spec.velocity_reference else None
    arrays = [los, at, params, v_ref, quality]
    if tiles is not None:
        arrays = [None if a is None else a.chunk({**{d: -1 for d in a.dims if d not in tiles},
                                                  **tiles}) for a in arrays]
    import dask.array as dsa

    k = net.new_dates.size
    n_out = 2 * k + len(FORWARD_QUALITY) + 1
    kernel_args = {"net": net, "spec": spec, "n_pairs_total": used.n_pairs,
                   "min_valid_fraction": options.min_valid_ifg_fraction,
                   "wavelength_m": float(stack.attrs["wavelength_m"])}

    def block(los_b, at_b, params_b, vref_b, quality_b):  # noqa: ANN001, ANN202
        return _forward_block(los_b, at_b, params_b, vref_b, quality_b, **kernel_args)

    data = [a.transpose(..., "y", "x").data if a is not None else None for a in arrays]
    if tiles is not None:
        present = [d for d in data if d is not None]
        slots = [d is not None for d in data]

        def unpack(*blocks):  # noqa: ANN002, ANN202
            it = iter(blocks)
            return block(*(next(it) if s else None for s in slots))

        out = dsa.map_blocks(unpack, *present, dtype=np.float32,
                             chunks=((n_out,), *present[0].chunks[1:]))
    else:
        out = block(*(None if d is None else np.asarray(d) for d in data))
    full = xr.DataArray(out, dims=("out", "y", "x"), coords={"y": stack["y"], "x": stack["x"]})
    solved = full.isel(out=n_out - 1, drop=True) > 0
    new_disp = (full.isel(out=slice(0, k)).rename(out="time")
                .assign_coords(time=net.new_dates.astype("datetime64[ns]")))
    new_bridged = (full.isel(out=slice(k, 2 * k)).rename(out="time").astype(np.uint8)
                   .assign_coords(time=new_disp["time"]))
    displacement = xr.concat([disp.where(solved), new_disp], "time").assign_attrs(disp.attrs)
    bridged = xr.concat([base["bridged"], new_bridged], "time").assign_attrs(
        base["bridged"].attrs)
    # (the kept dates' index goes: assigned to it, the longer series would be cut back to it)
    result = base.drop_vars(["displacement", "bridged", "time"]).assign(
        displacement=displacement, bridged=bridged)
    for i, name in enumerate(FORWARD_QUALITY):
        layer = full.isel(out=2 * k + i, drop=True)
        if name in ("n_valid_ifg", "n_parts"):
            layer = layer.astype(np.int32)
        result[name] = layer.assign_attrs(base[name].attrs)
    t = used.years()
    vstd = displacement.chunk({"time": -1}).data.map_blocks(
        _velocity_std, t, drop_axis=0, dtype=np.float32) if displacement.chunks else \
        _velocity_std(displacement.values, t)
    result["velocity_std"] = xr.DataArray(vstd, dims=("y", "x"), coords=result["n_parts"].coords
                                          ).assign_attrs(base["velocity_std"].attrs)
    result = result[["displacement", "bridged", *QUALITY_LAYERS,
                     *[v for v in ("constraint_params", "velocity_reference", "initial_rate")
                       if v in base]]]
    result.attrs.update(base.attrs, forward_update=f"dates after {net.kept_dates[-1]} solved "
                        "against the kept series")
    report = _report(kept, prepared.report, partner_names, net, used)
    in_memory = in_memory_cube(out_dir, used.n_dates, stack, options)
    # Only the new dates are stored: the earlier ones stay in the kept series' folder.
    if in_memory:
        result = result.chunk({"time": -1}).persist()
        write_inversion_part(result, k, solved, kept.folder, out_dir)
    else:
        write_inversion_part(result, k, solved, kept.folder, out_dir)
        result = open_inversion(out_dir)
    ref_date = np.datetime64(report.reference_date["date"][:10], "D")
    products, result = filtered_products(result, stack, used, ref_date, options, out_dir,
                                         in_memory, report)
    products.attrs.update(_attrs(report, options))
    products.attrs["forward_update"] = json.dumps(report.forward)
    points_file = kept.folder / "points.nc"
    with xr.open_dataset(points_file) as points:
        points = points.load()
    return products, report, points

