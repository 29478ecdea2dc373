"""Analysis-ready stacks as versions: the staged stores of a release, in its Icechunk commit.

Each release commits, beside its products, the analysis-ready stores it was made from, as
groups ``analysis_ready/<name>`` of the release store (:mod:`talik.tasks.release_store`):

* ``sentinel1``: the staged interferogram stack (``los_mm``, ``coherence`` … along ``pair``);
* ``gacos``: the GACOS zenith delays on the grid (along ``date``);
* ``rasters``, ``pairs``: DEM/slope/ground ice and the sparse-sensor pairs.

The tag of a release therefore also fixes the exact inputs of its inversion, and
``open_release(release_dir, "r0003", group="analysis_ready/sentinel1")`` reads them back.

A commit writes only what changed since the branch's head: a stack whose items (products or
dates, each with its content digest) and lineage (staging code, grid, wavelength) are the
same is left as it is; a stack that only gained items at its end (a study extended in time)
gets them appended, so the earlier chunks are shared with the earlier release and the commit
holds the new chunks only; anything else (a grid or code that changed, a product rewritten)
is written again whole.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from talik.tasks.records import StepOutput
from talik.tasks.zarr_io import regular_chunks

__all__ = ["GROUP_PREFIX", "StagedStack", "commit_stacks", "staged_stacks"]

GROUP_PREFIX = "analysis_ready"
"""Group of the release store under which the analysis-ready stacks are kept."""

_LINEAGE, _ITEMS = "talik_lineage", "talik_items"
_KEPT_ENCODING = ("dtype", "scale_factor", "add_offset", "_FillValue", "units", "calendar")
# (the rest of a staged store's encoding is Zarr v2's: its chunks and codecs)


@dataclass(frozen=True)
class StagedStack:
    """One staged store, as the release store keeps it."""

    name: str
    """Group name under :data:`GROUP_PREFIX`."""
    open: Callable[[], xr.Dataset]
    """Opens the staged store (lazily)."""
    dim: str | None
    """Its stacking dimension (items are appended along it); None: written whole."""
    lineage: str
    """What must not change for items to be appended (JSON)."""
    items: Callable[[xr.Dataset], list[str]]
    """Identity of each index along ``dim`` (name and content digest), from the dataset."""


def _summary(step: StepOutput) -> dict:
    path = Path(step.path) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def staged_stacks(steps: list[StepOutput]) -> list[StagedStack]:
    """The analysis-ready stores among a run's steps (those it staged)."""
    from talik.tasks.stage import open_sentinel1_store

    out: list[StagedStack] = []
    for step in steps:
        folder = Path(step.path)
        if step.step == "stage-sentinel1" and (folder / "sentinel1.zarr").exists():
            lineage = _summary(step).get("lineage") or {}
            digests = lineage.get("products") or {}
            base = {k: lineage.get(k) for k in ("code", "wavelength_m", "grid")}
            out.append(StagedStack(
                "sentinel1", lambda f=folder: open_sentinel1_store(f / "sentinel1.zarr"),
                "pair", json.dumps(base if lineage else {"step": step.digest}, sort_keys=True),
                lambda ds, d=digests: [f"{p}:{d.get(str(p), '')}"
                                       for p in ds["product"].values]))
        elif step.step == "stage-gacos" and (folder / "gacos.zarr").exists():
            lineage = _summary(step).get("lineage") or {}
            base = {k: lineage.get(k) for k in ("code", "grid")}
            dates = [f"{day}:{digest}" for day, digest in lineage.get("dates", [])]
            out.append(StagedStack(
                "gacos", lambda f=folder: xr.open_zarr(f / "gacos.zarr"), "date",
                json.dumps(base if lineage else {"step": step.digest}, sort_keys=True),
                lambda ds, d=dates: d))
        elif step.step in ("stage-rasters", "stage-pairs"):
            store = folder / f"{step.step.removeprefix('stage-')}.zarr"
            if store.exists():
                out.append(StagedStack(
                    store.stem, lambda s=store: xr.open_zarr(s), None,
                    json.dumps({"step": step.digest}), lambda ds: []))
    return out


def _plain(ds: xr.Dataset) -> tuple[xr.Dataset, dict]:
    """``ds`` without its Zarr-v2 storage settings, and the encoding worth keeping (codes)."""
    out = ds.copy()
    encoding = {}
    for name in out.variables:
        kept = {k: v for k, v in out[name].encoding.items() if k in _KEPT_ENCODING}
        if "compressors" in out[name].encoding and not out[name].encoding["compressors"]:
            kept["compressors"] = None  # stored raw when staged (coherence codes)
        out[name].encoding = {}
        if out[name].dtype.kind == "U":  # variable-length strings (a Zarr v3 data type)
            out[name] = out[name].astype(object)
        if kept:
            encoding[name] = kept
    return out, encoding


def _head_attrs(store, path: str) -> dict | None:
    import zarr

    try:
        group = zarr.open_group(store, path=path, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
        return None
    return dict(group.attrs)


def _aligned(part: xr.Dataset, dim: str, start: int, chunk: int) -> xr.Dataset:
    """``part``, appended at ``start``, chunked along ``dim`` to fill one stored chunk each.

    The first dask chunk fills the stored stack's last, partial chunk; the next ones a whole
    chunk each.
    """
    n = part.sizes[dim]
    first = min(n, (-start) % chunk or chunk)
    sizes = [first] + [chunk] * ((n - first) // chunk)
    if sum(sizes) < n:
        sizes.append(n - sum(sizes))
    return part.chunk({dim: tuple(sizes)})


def _write(store, stack: StagedStack) -> str:
    """Write one stack into ``store`` (a writable session's); return what was done."""
    import zarr

    path = f"{GROUP_PREFIX}/{stack.name}"
    with stack.open() as staged:
        ds, encoding = _plain(regular_chunks(staged.unify_chunks()))
        items = stack.items(staged)
        if stack.dim is not None and len(items) != ds.sizes[stack.dim]:
            items = []  # (no identity of the items on record: never appended to)
        head = _head_attrs(store, path)
        old_items = json.loads(head.get(_ITEMS, "[]")) if head else None
        same_lineage = head is not None and head.get(_LINEAGE) == stack.lineage
        attrs = {**ds.attrs, _LINEAGE: stack.lineage, _ITEMS: json.dumps(items)}
        if same_lineage and old_items == items:
            return "unchanged"
        start = len(old_items or [])
        if (same_lineage and stack.dim is not None and 0 < start < len(items)
                and items[:start] == old_items):
            group = zarr.open_group(store, path=path, mode="r+")
            stacked = [n for n in ds.variables if stack.dim in ds[n].dims]
            shared_dims = {d for n in stacked for d in ds[n].dims}
            others = [n for n in ds.variables if stack.dim not in ds[n].dims
                      and n not in shared_dims]
            chunk = group[next(n for n in stacked if n in ds.data_vars)].chunks[0]
            part = _aligned(ds[stacked].isel({stack.dim: slice(start, None)}), stack.dim,
                            start, chunk)
            part.attrs = {}
            part.to_zarr(store, group=path, append_dim=stack.dim, consolidated=False)
            for name in others:  # the rest (geometry, per-pair indices) is small: rewritten
                if name in group:
                    del group[name]
            if others:
                ds[others].to_zarr(store, group=path, mode="a", consolidated=False,
                                   encoding={n: encoding[n] for n in others if n in encoding})
            zarr.open_group(store, path=path, mode="r+").attrs.put(attrs)
            return f"appended {len(items) - start}"
        ds.attrs = attrs
        ds.to_zarr(store, group=path, mode="w", consolidated=False, zarr_format=3,
                   encoding=encoding)
        return "written"


def commit_stacks(store, stacks: list[StagedStack]) -> dict[str, str]:
    """Write ``stacks`` into a writable Icechunk session's ``store``.

    Returns what was done to each: ``unchanged``, ``appended N`` or ``written``.
    """
    done = {}
    with warnings.catch_warnings():
        # (zarr marks variable-length strings as without a settled v3 specification)
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        for stack in stacks:
            done[stack.name] = _write(store, stack)
    return done
