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

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask.array as dsa
import numpy as np
import xarray as xr

from talik.tasks.records import StepOutput
from talik.tasks.zarr_io import irregular_chunks, put_chunks

__all__ = ["GROUP_PREFIX", "StagedStack", "commit_stacks", "staged_stacks"]

GROUP_PREFIX = "analysis_ready"
"""Group of the release store under which the analysis-ready stacks are kept."""

_LINEAGE, _ITEMS, _REST = "talik_lineage", "talik_items", "talik_rest"
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
    source: Path | None = None
    """The staged Zarr (v2) store when the stack is that one store (not joined from parts):
    its chunks can then be copied as they are, without decoding and encoding them again."""


def _summary(step: StepOutput) -> dict:
    path = Path(step.path) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def staged_stacks(steps: list[StepOutput]) -> list[StagedStack]:
    """The analysis-ready stores among a run's steps (those it staged)."""
    from talik.tasks.stage import PARTS_FILE, open_sentinel1_store, sentinel1_parts

    out: list[StagedStack] = []
    for step in steps:
        folder = Path(step.path)
        if step.step == "stage-sentinel1" and ((folder / "sentinel1.zarr").exists()
                                               or (folder / PARTS_FILE).exists()):
            lineage = _summary(step).get("lineage") or {}
            digests = lineage.get("products") or {}
            base = {k: lineage.get(k) for k in ("code", "wavelength_m", "grid")}
            parts = sentinel1_parts(folder / "sentinel1.zarr")
            out.append(StagedStack(
                "sentinel1", lambda f=folder: open_sentinel1_store(f / "sentinel1.zarr"),
                "pair", json.dumps(base if lineage else {"step": step.digest}, sort_keys=True),
                lambda ds, d=digests: [f"{p}:{d.get(str(p), '')}"
                                       for p in ds["product"].values],
                parts[0] if len(parts) == 1 else None))
        elif step.step == "stage-gacos" and (folder / "gacos.zarr").exists():
            lineage = _summary(step).get("lineage") or {}
            base = {k: lineage.get(k) for k in ("code", "grid")}
            dates = [f"{day}:{digest}" for day, digest in lineage.get("dates", [])]
            out.append(StagedStack(
                "gacos", lambda f=folder: xr.open_zarr(f / "gacos.zarr"), "date",
                json.dumps(base if lineage else {"step": step.digest}, sort_keys=True),
                lambda ds, d=dates: d, folder / "gacos.zarr"))
        elif step.step in ("stage-rasters", "stage-pairs"):
            store = folder / f"{step.step.removeprefix('stage-')}.zarr"
            if store.exists():
                out.append(StagedStack(
                    store.stem, lambda s=store: xr.open_zarr(s), None,
                    json.dumps({"step": step.digest}), lambda ds: [], store))
    return out


def _regular(var: xr.Variable) -> xr.Variable:
    """``var`` rechunked where Zarr cannot store its dask chunks (unequal but the last)."""
    if var.chunks is None:
        return var
    fix = irregular_chunks(dict(zip(var.dims, var.chunks, strict=True)))
    return var.chunk(fix) if fix else var


def _plain(ds: xr.Dataset) -> tuple[xr.Dataset, dict]:
    """``ds`` without its Zarr-v2 storage settings, and the encoding worth keeping (codes).

    Each variable keeps its own chunks, made regular (stacks joined from parts have a short
    chunk where each part ends).
    """
    out = ds.copy()
    encoding = {}
    for name in out.variables:
        if name not in out.dims:
            out[name] = _regular(out[name].variable)
        kept = {k: v for k, v in out[name].encoding.items() if k in _KEPT_ENCODING}
        if "compressors" in out[name].encoding and not out[name].encoding["compressors"]:
            kept["compressors"] = None  # stored raw when staged (coherence codes)
        out[name].encoding = {}
        if out[name].dtype.kind == "U":  # variable-length strings (a Zarr v3 data type)
            out[name] = out[name].astype(object)
        if kept:
            encoding[name] = kept
    return out, encoding


def _group(store, path: str, mode: str):
    """The Zarr group at ``path`` of ``store``, or None when there is none."""
    import zarr

    try:
        return zarr.open_group(store, path=path, mode=mode)
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
        return None


def _head_attrs(store, path: str) -> dict | None:
    group = _group(store, path, "r")
    return None if group is None else dict(group.attrs)


def _aligned(part: xr.DataArray, dim: str, start: int, chunk: int) -> xr.DataArray:
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


def _small_in_memory(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its coordinates and small variables loaded (written at once)."""
    out = ds.copy()
    for name, var in ds.variables.items():
        if var.chunks is not None and (name in ds.coords or var.nbytes < _BIG_BYTES):
            out[name] = var.load()
    return out


def _append(store, path: str, ds: xr.Dataset, dim: str, start: int,
            encoding: dict) -> None:
    """Append ``ds``'s items from ``start`` on along ``dim`` to the stored group ``path``.

    Variables along ``dim`` get the new items (the large ones chunked to fill the stored
    chunks one by one; none when ``start`` is their number); the others (geometry, per-pair
    indices of a date stack) are small and written again.
    """
    import zarr

    group = zarr.open_group(store, path=path, mode="r+")
    stacked = [n for n in ds.variables if dim in ds[n].dims]
    shared_dims = {d for n in stacked for d in ds[n].dims}
    others = [n for n in ds.variables if dim not in ds[n].dims and n not in shared_dims]
    if start < ds.sizes[dim]:
        part = _small_in_memory(ds[stacked].isel({dim: slice(start, None)}))
        for name, var in part.data_vars.items():
            if var.chunks is not None:  # each dask chunk inside one stored chunk
                stored = dict(zip(var.dims, group[name].chunks, strict=True))
                var = var.chunk({d: c for d, c in stored.items() if d != dim})
                part[name] = _aligned(var, dim, start, stored[dim])
        part.attrs = {}
        part.to_zarr(store, group=path, append_dim=dim, consolidated=False)
    for name in others:
        if name in group:
            del group[name]
    if others:
        _small_in_memory(ds[others]).to_zarr(
            store, group=path, mode="a", consolidated=False,
            encoding={n: encoding[n] for n in others if n in encoding})


def _write_whole(store, path: str, ds: xr.Dataset, encoding: dict,
                 source: Path | None) -> None:
    """Write ``ds`` as group ``path``; its large arrays' chunks copied from ``source``.

    Arrays that cannot be copied are computed and written through xarray.
    """
    copied = _copyable(source, ds, encoding) if source is not None else {}
    ds = _small_in_memory(ds)
    if not copied:
        ds.to_zarr(store, group=path, mode="w", consolidated=False, zarr_format=3,
                   encoding=encoding)
        return
    deferred = [n for n, v in ds.variables.items() if v.chunks is not None and n not in copied]
    for name, v3 in copied.items():
        # Only the metadata is written from here: an empty placeholder of the stored dtype,
        # the CF attributes as they are stored (so no pass over the data to encode it).
        var, enc = ds[name], encoding.pop(name, {})
        attrs = {**var.attrs, **{k: enc[k] for k in ("scale_factor", "add_offset") if k in enc}}
        dtype = np.dtype(enc.get("dtype", var.dtype))
        ds[name] = xr.Variable(var.dims, dsa.empty(var.shape, dtype=dtype, chunks=v3["chunks"]),
                               attrs)
        encoding[name] = {**v3, **{k: enc[k] for k in ("_FillValue",) if k in enc}}
    # Every array's metadata and the small ones' values; no large array's values.
    ds.to_zarr(store, group=path, mode="w", consolidated=False, zarr_format=3,
               encoding=encoding, compute=False)
    _copy_chunks(store, path, source, list(copied))
    if deferred:  # large arrays that could not be copied: computed into their arrays
        part = ds[deferred]
        part = part.drop_vars(list(part.coords))
        part.to_zarr(store, group=path, mode="r+", consolidated=False,
                     region={d: slice(None) for d in part.dims})


def _rest_digest(ds: xr.Dataset, dim: str | None) -> str:
    """Digest of what a stack holds besides its items, and of its attributes.

    That is its variables without ``dim`` (small: geometry, a date stack's per-pair indices).
    Empty when ``dim`` is None: such a stack is identified by its lineage alone.
    """
    if dim is None:
        return ""
    digest = hashlib.sha256(json.dumps(ds.attrs, sort_keys=True, default=str).encode())
    for name in sorted(str(n) for n in ds.variables if dim not in ds[n].dims):
        values = np.asarray(ds[name].values)
        digest.update(f"{name}:{values.dtype}:{values.shape}".encode())
        digest.update(values.tobytes() if values.dtype != object else
                      json.dumps(values.tolist(), default=str).encode())
    return digest.hexdigest()


def _write(store, stack: StagedStack) -> str:
    """Write one stack into ``store`` (a writable session's); return what was done."""
    path = f"{GROUP_PREFIX}/{stack.name}"
    with stack.open() as staged:
        ds, encoding = _plain(staged)
        items = stack.items(staged)
        if stack.dim is not None and len(items) != ds.sizes[stack.dim]:
            items = []  # (no identity of the items on record: never appended to)
        # Items of a stack are known when listed (or there are none): else it is written whole
        known = stack.dim is None or bool(items) or ds.sizes[stack.dim] == 0
        rest = _rest_digest(ds, stack.dim)
        head = _head_attrs(store, path)
        old_items = json.loads(head.get(_ITEMS, "[]")) if head else None
        same = head is not None and head.get(_LINEAGE) == stack.lineage and known
        attrs = {**ds.attrs, _LINEAGE: stack.lineage, _ITEMS: json.dumps(items), _REST: rest}
        start = len(old_items or [])
        if same and old_items == items:
            if head.get(_REST) == rest:
                return "unchanged"
            _append(store, path, ds, stack.dim, start, encoding)  # the rest only
            _put_attrs(store, path, attrs)
            return "updated"
        if (same and stack.dim is not None and 0 < start < len(items)
                and items[:start] == old_items):
            _append(store, path, ds, stack.dim, start, encoding)
            _put_attrs(store, path, attrs)
            return f"appended {len(items) - start}"
        ds.attrs = attrs
        _write_whole(store, path, ds, encoding, stack.source)
        return "written"


def _put_attrs(store, path: str, attrs: dict) -> None:
    import zarr

    zarr.open_group(store, path=path, mode="r+").attrs.put(attrs)


_V2_CHUNK = re.compile(r"^\d+(\.\d+)*$")
_BIG_BYTES = 32e6  # arrays larger than this are copied chunk by chunk, when they can be


def _copyable(source: Path, ds: xr.Dataset, encoding: dict) -> dict[str, dict]:
    """The large arrays of a Zarr v2 store whose chunks a v3 array can hold as they are.

    Returns each one's v3 encoding (the same chunks and an equivalent codec): C order, no
    filters, no compressor or Blosc/Zstd (whose frames describe themselves).
    """
    from zarr.codecs import BloscCodec, ZstdCodec

    out = {}
    for name, var in ds.data_vars.items():
        meta_file = source / name / ".zarray"
        if var.nbytes < _BIG_BYTES or var.chunks is None or not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        compressor = meta.get("compressor")
        if meta.get("order") != "C" or meta.get("filters") or meta.get(
                "dimension_separator", ".") != ".":
            continue
        if compressor is None:
            codecs = None
        elif compressor["id"] == "blosc":
            shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(compressor["shuffle"])
            if shuffle is None:  # (Blosc's automatic shuffle has no v3 equivalent)
                continue
            codecs = (BloscCodec(cname=compressor["cname"], clevel=compressor["clevel"],
                                 shuffle=shuffle,
                                 typesize=np.dtype(meta["dtype"]).itemsize,
                                 blocksize=compressor.get("blocksize", 0)),)
        elif compressor["id"] == "zstd":
            codecs = (ZstdCodec(level=compressor.get("level", 0)),)
        else:
            continue
        if tuple(meta["shape"]) != var.shape or np.dtype(meta["dtype"]) != (
                np.dtype(encoding.get(name, {}).get("dtype", var.dtype))):
            continue
        n_chunks = math.prod(math.ceil(n / c) for n, c in zip(meta["shape"], meta["chunks"],
                                                              strict=True))
        stored = sum(1 for f in (source / name).iterdir() if _V2_CHUNK.match(f.name))
        if stored != n_chunks:  # (a missing chunk reads as the fill value, which may differ)
            continue
        out[name] = {"chunks": tuple(meta["chunks"]), "compressors": codecs}
    return out


def _copy_chunks(store, path: str, source: Path, names: list[str]) -> None:
    """Copy the chunk files of arrays ``names`` of v2 store ``source`` into group ``path``.

    Bytes unchanged, under the v3 keys ``c/i/j/k``.
    """
    put_chunks(store, [(f"{path}/{name}/c/" + f.name.replace(".", "/"), f.read_bytes)
                       for name in names for f in (source / name).iterdir()
                       if _V2_CHUNK.match(f.name)])


def commit_stacks(store, stacks: list[StagedStack]) -> dict[str, str]:
    """Write ``stacks`` into a writable Icechunk session's ``store``.

    Returns what was done to each: ``unchanged``, ``updated`` (its items unchanged, what it
    holds beside them rewritten), ``appended N``, ``written`` or, for a stack of the store's
    head that is not among ``stacks``, ``removed``.
    """
    done = {}
    with warnings.catch_warnings():
        # (zarr marks variable-length strings as without a settled v3 specification)
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        for stack in stacks:
            done[stack.name] = _write(store, stack)
    # A stack the release no longer has (e.g. GACOS left out) is not carried into its commit.
    root = _group(store, GROUP_PREFIX, "r+")
    if root is None:
        return done
    for name in sorted(set(root.group_keys()) - set(done)):
        del root[name]
        done[name] = "removed"
    return done
