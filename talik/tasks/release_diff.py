"""What changed between two releases: options, inputs, code and every product's values.

Products are compared value by value where both releases hold them: for each numeric variable
of a NetCDF product (over the dates both hold) and each GeoTIFF, the median, 95th percentile
and maximum of |B − A| over the pixels finite in both, and how many pixels are finite in only
one of them. Units are the variables' own (mm, mm/yr, …).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from talik.tasks.publish import read_release

__all__ = ["ProductChange", "ReleaseDiff", "diff_releases", "format_diff"]


class ValueChange(BaseModel):
    """Summary of |B − A| of one variable (in its units) over pixels finite in both."""

    variable: str
    units: str = ""
    n_compared: int
    median_abs: float | None = None
    p95_abs: float | None = None
    max_abs: float | None = None
    only_in_a: int = 0
    only_in_b: int = 0


class ProductChange(BaseModel):
    """One product present in both releases."""

    path: str
    identical: bool
    values: list[ValueChange] = []
    note: str = ""


class ReleaseDiff(BaseModel):
    """Release ``a`` → release ``b`` of one study."""

    a: str
    b: str
    options: dict[str, tuple[Any, Any]]
    inputs_added: list[str]
    inputs_removed: list[str]
    inputs_changed: list[str]
    code: dict[str, tuple[Any, Any]]
    products_added: list[str]
    products_removed: list[str]
    products: list[ProductChange]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _abs_change(name: str, units: str, a: np.ndarray, b: np.ndarray) -> ValueChange:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    both = fa & fb
    out = ValueChange(variable=name, units=units, n_compared=int(both.sum()),
                      only_in_a=int((fa & ~fb).sum()), only_in_b=int((fb & ~fa).sum()))
    if both.any():
        d = np.abs(b[both] - a[both])
        out.median_abs, out.p95_abs, out.max_abs = (float(np.median(d)),
                                                    float(np.percentile(d, 95)), float(d.max()))
    return out


def _netcdf_changes(path_a: Path, path_b: Path) -> tuple[list[ValueChange], str]:
    import xarray as xr

    changes, notes = [], []
    with xr.open_dataset(path_a) as a, xr.open_dataset(path_b) as b:
        if "time" in a.dims and "time" in b.dims:
            common = np.intersect1d(a["time"].values, b["time"].values)
            notes.append(f"{common.size} common dates ({a.sizes['time']} in A, "
                         f"{b.sizes['time']} in B)")
            a, b = a.sel(time=common), b.sel(time=common)
        for name in sorted(set(a.data_vars) & set(b.data_vars)):
            va, vb = a[name], b[name]
            if va.dtype.kind not in "fiu" or va.ndim == 0:
                continue
            if va.shape != vb.shape:
                notes.append(f"{name}: shape {va.shape} in A, {vb.shape} in B (not compared)")
                continue
            changes.append(_abs_change(name, str(va.attrs.get("units", "")), va.values, vb.values))
    return changes, "; ".join(notes)


def _geotiff_changes(path_a: Path, path_b: Path) -> tuple[list[ValueChange], str]:
    import rasterio

    with rasterio.open(path_a) as a, rasterio.open(path_b) as b:
        if a.shape != b.shape or a.transform != b.transform:
            return [], f"grids differ ({a.shape} vs {b.shape}; not compared)"
        va = a.read(1, masked=True).filled(np.nan).astype(np.float64)
        vb = b.read(1, masked=True).filled(np.nan).astype(np.float64)
        units = a.tags(1).get("units", a.tags().get("units", ""))
    return [_abs_change("band 1", units, va, vb)], ""


def diff_releases(release_dir: str | Path, a: str, b: str) -> ReleaseDiff:
    """Compare release ``a`` with release ``b`` in ``release_dir``."""
    root = Path(release_dir)
    ma, mb = read_release(root, a), read_release(root, b)
    oa, ob = _flatten(ma["study"]["config"]), _flatten(mb["study"]["config"])
    options = {k: (oa.get(k), ob.get(k)) for k in sorted(set(oa) | set(ob))
               if oa.get(k) != ob.get(k)}
    fa = {f["path"]: f["sha256"] for f in ma["inputs"]["files"]}
    fb = {f["path"]: f["sha256"] for f in mb["inputs"]["files"]}
    code = {k: (ma["talik"].get(k), mb["talik"].get(k)) for k in ("version", "code_sha256",
                                                                   "git_commit")
            if ma["talik"].get(k) != mb["talik"].get(k)}
    pa = {p["path"]: p["sha256"] for p in ma["products"]}
    pb = {p["path"]: p["sha256"] for p in mb["products"]}
    products = []
    for path in sorted(set(pa) & set(pb)):
        change = ProductChange(path=path, identical=pa[path] == pb[path])
        if not change.identical:
            file_a, file_b = root / a / path, root / b / path
            if path.endswith(".nc"):
                change.values, change.note = _netcdf_changes(file_a, file_b)
            elif path.endswith(".tif"):
                change.values, change.note = _geotiff_changes(file_a, file_b)
            else:
                change.note = "content differs"
        products.append(change)
    return ReleaseDiff(
        a=a, b=b, options=options,
        inputs_added=sorted(set(fb) - set(fa)), inputs_removed=sorted(set(fa) - set(fb)),
        inputs_changed=sorted(p for p in set(fa) & set(fb) if fa[p] != fb[p]),
        code=code, products_added=sorted(set(pb) - set(pa)),
        products_removed=sorted(set(pa) - set(pb)), products=products)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def format_diff(diff: ReleaseDiff, max_list: int = 20) -> str:
    """The diff as text for a terminal."""
    lines = [f"release {diff.a} → {diff.b}"]

    def listing(title: str, items: list[str]) -> None:
        lines.append(f"{title}: {len(items)}")
        lines.extend(f"  {x}" for x in items[:max_list])
        if len(items) > max_list:
            lines.append(f"  … and {len(items) - max_list} more")

    lines.append(f"options changed: {len(diff.options)}")
    lines.extend(f"  {k}: {json.dumps(v[0], default=str)} → {json.dumps(v[1], default=str)}"
                 for k, v in diff.options.items())
    listing("inputs added", diff.inputs_added)
    listing("inputs removed", diff.inputs_removed)
    listing("inputs changed", diff.inputs_changed)
    lines.append("code: " + ("unchanged" if not diff.code else
                             "; ".join(f"{k} {v[0]} → {v[1]}" for k, v in diff.code.items())))
    listing("products added", diff.products_added)
    listing("products removed", diff.products_removed)
    same = [p.path for p in diff.products if p.identical]
    lines.append(f"products identical: {len(same)} of {len(diff.products)}")
    for p in diff.products:
        if p.identical:
            continue
        changed = [v for v in p.values if v.max_abs or v.only_in_a or v.only_in_b]
        same_values = len(p.values) - len(changed)
        note = "; ".join(x for x in (p.note, f"{same_values} variable(s) with identical values"
                                     if same_values else "") if x)
        if p.values and not changed:
            note += " — only metadata differs (e.g. the creation time)"
        lines.append(f"  {p.path}" + (f"  ({note})" if note else ""))
        for v in changed:
            lines.append(f"    {v.variable:<38} |Δ| median {_fmt(v.median_abs)}  p95 "
                         f"{_fmt(v.p95_abs)}  max {_fmt(v.max_abs)} {v.units}  over "
                         f"{v.n_compared} values; only in {diff.a}: {v.only_in_a}, only in "
                         f"{diff.b}: {v.only_in_b}")
    return "\n".join(lines)
