"""Staging: raw product files → analysis-ready stores on one analysis grid.

The analysis grid is the Sentinel-1 products' own grid (HyP3 geocodes every product of a frame
onto the same UTM pixel lattice), over the extent all products share, clipped to the study's
bounding box when one is given. Products on that lattice are pasted in place; anything else
(another CRS, pixel size or origin: DEM, ground-ice map, L-band pairs) is reprojected with
rioxarray.

Stores written (Zarr, one chunk per batch of pairs and spatial tile):

* ``sentinel1.zarr``: ``los_mm (pair, y, x)`` LOS displacement in mm (positive toward the
  satellite, each pair still referenced to its own HyP3 reference point), ``coherence
  (pair, y, x)``, ``incidence_deg (y, x)``, ``elevation (y, x)``; pair coordinates
  ``reference_date``, ``secondary_date``, ``product``.
* ``rasters.zarr``: ``elevation``, ``slope_deg``, ``ground_ice`` on the grid.
* ``pairs.zarr``: sparse-sensor pairs as ``los_mm (pair, y, x)`` + ``coherence``.
* ``gacos.zarr``: GACOS zenith delays of the Sentinel-1 and pair dates.
* ``era5_basin_monthly.nc``: ERA5-Land monthly basin means (for the climate attribution).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
import zarr
from pyproj import Transformer
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from talik.config import AreaOfInterest
from talik.errors import InputError
from talik.science.interferogram import mm_per_radian, to_los_mm
from talik.science.spatial import area_weighted_mean, bilinear_weights, slope_deg
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of
from talik.tasks.readers.era5 import read_era5_land
from talik.tasks.readers.gacos import find_gacos, gacos_transform, read_gacos_values
from talik.tasks.readers.hyp3 import HeaderGrids, Hyp3Product, find_hyp3_products, product_grid
from talik.tasks.readers.pairs import find_pairs, read_pair
from talik.tasks.readers.raster import raster_errors, read_raster
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.steps import COMPLETE, step, this_step
from talik.tasks.zarr_io import write_zarr

__all__ = [
    "COHERENCE_TOLERANCE",
    "MIN_DATES",
    "MIN_GRID_FRACTION",
    "MIN_INTERFEROGRAMS",
    "AnalysisGrid",
    "GridShrink",
    "grid_from_products",
    "grid_of_raster",
    "on_grid",
    "open_sentinel1_store",
    "open_staged",
    "sentinel1_parts",
    "pairs_on_grid",
    "require_network_size",
    "basin_mean_climate",
    "stage_climate",
    "stage_pairs",
    "stage_rasters",
    "stage_sentinel1",
    "write_sentinel1_store",
]


MIN_INTERFEROGRAMS = 3
"""Fewest usable (non-empty) interferograms a Sentinel-1 stack is staged with."""
MIN_DATES = 3
"""Fewest distinct acquisition dates those interferograms must span."""
MIN_GRID_FRACTION = 0.5
"""A common grid smaller than this fraction of the median product extent is refused."""
COHERENCE_TOLERANCE = 1e-3
"""Coherence may leave [0, 1] by this much (float rounding) before a file is refused."""
SIDES = ("west", "east", "south", "north")


@dataclass(frozen=True)
class GridShrink:
    """How far one product pulls the common grid's edges in, compared with the median extent.

    Attributes
    ----------
    product
        Product name.
    west, east, south, north
        Pixels by which the common grid ends inside the median product extent (clipped to the
        AOI box) on that side because of this product; 0 where it does not set the edge.
    """

    product: str
    west: int = 0
    east: int = 0
    south: int = 0
    north: int = 0

    def to_dict(self) -> dict[str, str | int]:
        """A JSON-ready dict (for the staged store's attributes and the step summary)."""
        return {"product": self.product, "west": self.west, "east": self.east,
                "south": self.south, "north": self.north}

    def describe(self) -> str:
        """E.g. ``S1AA_… (west 13 px, north 2 px)``."""
        sides = ", ".join(f"{side} {getattr(self, side)} px" for side in SIDES
                          if getattr(self, side))
        return f"{self.product} ({sides})"


@dataclass(frozen=True)
class AnalysisGrid:
    """A north-up raster grid: CRS, affine transform and shape.

    ``shrunk_by`` (not part of the grid's identity, nor of :meth:`to_attrs`) lists the products
    that made the common extent smaller than the median product extent, as found by
    :func:`grid_from_products`.
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    shrunk_by: tuple[GridShrink, ...] = field(default=(), compare=False, repr=False)

    @property
    def affine(self) -> Affine:
        """The transform as an :class:`affine.Affine`."""
        return Affine(*self.transform)

    @property
    def pixel_m(self) -> float:
        """Pixel size in CRS units (metres for UTM)."""
        return abs(self.transform[0])

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre ``(y, x)`` coordinates."""
        a = self.affine
        xs = a.c + a.a * (np.arange(self.width) + 0.5)
        ys = a.f + a.e * (np.arange(self.height) + 0.5)
        return ys, xs

    def template(self) -> xr.DataArray:
        """An empty float32 DataArray on the grid, with CRS, to reproject onto."""
        ys, xs = self.coords()
        da = xr.DataArray(np.full((self.height, self.width), np.nan, np.float32),
                          dims=("y", "x"), coords={"y": ys, "x": xs})
        return da.rio.write_crs(self.crs).rio.write_transform(self.affine)

    def to_attrs(self) -> dict:
        """Attributes to store the grid with a dataset."""
        return {"grid_crs": self.crs, "grid_transform": list(self.transform),
                "grid_width": self.width, "grid_height": self.height}

    @classmethod
    def from_attrs(cls, attrs: dict) -> AnalysisGrid:
        """Inverse of :meth:`to_attrs`."""
        return cls(attrs["grid_crs"], tuple(attrs["grid_transform"]), int(attrs["grid_width"]),
                   int(attrs["grid_height"]))


def _names(shrinks: Sequence[GridShrink], limit: int = 6) -> str:
    text = ", ".join(s.describe() for s in shrinks[:limit])
    return text + (f" and {len(shrinks) - limit} more" if len(shrinks) > limit else "")


def grid_from_products(products: list[Hyp3Product], aoi: AreaOfInterest) -> AnalysisGrid:
    """The common extent of all products on their pixel lattice, clipped to the AOI box.

    Every product's layers must share one grid (:func:`~talik.tasks.readers.hyp3.product_grid`)
    and all products one CRS and pixel size. Products whose extent ends inside the median
    product extent (both clipped to the AOI box) shrink the common grid: they are logged and
    listed in the grid's ``shrunk_by`` (pixels on each side). The grid is refused when that
    common extent is empty or smaller than :data:`MIN_GRID_FRACTION` of the median extent,
    naming the products responsible.
    """
    logger = step_logger()
    folder = products[0].location.parent
    grid_of = HeaderGrids()  # most layers' grids from their TIFF tags (see HeaderGrids)
    with rasterio.Env():  # one GDAL environment for the header reads GDAL does (threads do not help)
        grids = [product_grid(p, grid_of) for p in products]
    first = grids[0]
    crs, res = first.crs, (abs(first.transform.a), abs(first.transform.e))
    origin = (first.transform.c, first.transform.f)
    for p, g in zip(products, grids, strict=True):
        if g.crs != crs or not np.allclose((abs(g.transform.a), abs(g.transform.e)), res):
            raise InputError(p.location, "grid", f"the same CRS and pixel size as the first "
                             f"product ({crs}, {res}); got {g.crs}, "
                             f"{(abs(g.transform.a), abs(g.transform.e))}")
    dx, dy = res
    bounds = np.array([g.bounds for g in grids])  # (product, left/bottom/right/top)
    common = np.array([bounds[:, 0].max(), bounds[:, 1].max(), bounds[:, 2].min(),
                       bounds[:, 3].min()])
    median = np.median(bounds, axis=0)
    box = np.array([-math.inf, -math.inf, math.inf, math.inf])
    if aoi.bbox is not None:
        to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        west, south, east, north = aoi.bbox
        xs, ys = to_grid.transform([west, east, west, east], [south, south, north, north])
        box = np.array([min(xs), min(ys), max(xs), max(ys)])

    def clip(b: np.ndarray) -> np.ndarray:
        return np.array([max(b[0], box[0]), max(b[1], box[1]), min(b[2], box[2]),
                         min(b[3], box[3])])

    ref, com = clip(median), clip(common)
    # Pixels the common grid ends inside the (clipped) median extent, side by side, and the
    # products whose own edge sets it there.
    pixel = {"west": dx, "south": dy, "east": dx, "north": dy}
    column = {"west": 0, "south": 1, "east": 2, "north": 3}
    inward = {"west": 1.0, "south": 1.0, "east": -1.0, "north": -1.0}
    per_product: dict[int, dict[str, int]] = {}
    for side in SIDES:
        j = column[side]
        inset = int(round(inward[side] * (com[j] - ref[j]) / pixel[side]))
        if inset <= 0:
            continue
        setting = np.flatnonzero(np.abs(bounds[:, j] - com[j]) < 1e-3 * pixel[side])
        for i in setting:
            per_product.setdefault(int(i), {})[side] = inset
    # Worst first (messages name the first few), then in product order.
    order = sorted(per_product, key=lambda i: (-max(per_product[i].values()), i))
    shrunk = tuple(GridShrink(products[i].name, **per_product[i]) for i in order)
    ref_w, ref_h = (ref[2] - ref[0]) / dx, (ref[3] - ref[1]) / dy
    com_w, com_h = max(0.0, (com[2] - com[0]) / dx), max(0.0, (com[3] - com[1]) / dy)
    if ref_w >= 2 and ref_h >= 2 and com_w * com_h < MIN_GRID_FRACTION * ref_w * ref_h:
        raise InputError(
            folder, "extent",
            f"products overlapping on at least {MIN_GRID_FRACTION:.0%} of the median product "
            f"extent ({ref_h:.0f}×{ref_w:.0f} px{' inside the AOI box' if aoi.bbox else ''})",
            f"a common extent of {com_h:.0f}×{com_w:.0f} px"
            f"{' (empty)' if com_w * com_h == 0 else ''}, limited by {_names(shrunk)}")
    if shrunk:
        logger.info("the common grid ends inside the median product extent (%.0f×%.0f px) "
                    "because of %d products: %s", ref_h, ref_w, len(shrunk), _names(shrunk))
    left, bottom, right, top = com
    # Snap to the products' lattice.
    left = origin[0] + math.ceil((left - origin[0]) / dx - 1e-6) * dx
    top = origin[1] - math.ceil((origin[1] - top) / dy - 1e-6) * dy
    width = int(math.floor((right - left) / dx + 1e-6))
    height = int(math.floor((top - bottom) / dy + 1e-6))
    if width < 2 or height < 2:
        raise InputError(folder, "extent",
                         "products (and the AOI box) that overlap by at least 2×2 pixels")
    return AnalysisGrid(crs.to_string(), (dx, 0.0, left, 0.0, -dy, top), width, height,
                        shrunk_by=shrunk)


def on_grid(da: xr.DataArray, grid: AnalysisGrid, resampling: Resampling) -> np.ndarray:
    """Values of a georeferenced DataArray on ``grid`` (rioxarray reprojection)."""
    out = da.rio.reproject_match(grid.template(), resampling=resampling, nodata=np.nan)
    return out.values.astype(np.float32)


def read_on_grid(path: str, grid: AnalysisGrid, resampling: Resampling,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Band 1 of a raster file on ``grid`` as float32 with no-data as NaN.

    A raster on the grid's own lattice (same CRS and pixel size, origin on a pixel corner of
    the grid) is read through a window, exactly; any other raster is warped on the fly. The
    pixels are decoded here, so a file that cannot be opened or read (truncated, not a
    GeoTIFF) or has no CRS is refused by name (:class:`~talik.errors.InputError`). ``out``, a
    float32 ``(height, width)`` array, receives the values (and is returned).
    """
    with raster_errors(path, "open"):
        src = rasterio.open(path)
    with src, raster_errors(path, "read band 1"):
        if src.crs is None:
            raise InputError(path, "CRS", "a georeferenced GeoTIFF", "no CRS")
        if out is None:
            out = np.empty((grid.height, grid.width), np.float32)
        t, g = src.transform, grid.affine
        aligned = (src.crs.to_string() == grid.crs and np.isclose(t.a, g.a)
                   and np.isclose(t.e, g.e))
        if aligned:
            col = (g.c - t.c) / t.a
            row = (g.f - t.f) / t.e
            aligned = abs(col - round(col)) < 1e-3 and abs(row - round(row)) < 1e-3
        if aligned:
            # Grid pixel (0, 0) sits at source pixel (row, col); paste the overlap.
            col, row = int(round(col)), int(round(row))
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + grid.height, src.height), min(col + grid.width, src.width)
            whole = (r1 - r0, c1 - c0) == out.shape
            if not whole:
                out.fill(np.nan)
            if r1 > r0 and c1 > c0:
                window = Window(c0, r0, c1 - c0, r1 - r0)
                target = out[r0 - row : r1 - row, c0 - col : c1 - col]
                if src.mask_flag_enums[0] == [MaskFlags.nodata] or \
                        src.mask_flag_enums[0] == [MaskFlags.all_valid]:
                    # No-data is a value (HyP3's 0): read as float32, no masked-array copies;
                    # straight into ``out`` when the window fills it.
                    if whole:
                        src.read(1, window=window, out=target, out_dtype=np.float32)
                    else:
                        target[...] = src.read(1, window=window, out_dtype=np.float32)
                    if src.nodata is not None:
                        target[target == np.float32(src.nodata)] = np.nan
                else:  # a mask band or alpha: let rasterio combine it
                    masked = src.read(1, window=window, masked=True)
                    target[...] = masked.astype(np.float32).filled(np.nan)
            return out
        with WarpedVRT(src, crs=grid.crs, transform=g, width=grid.width, height=grid.height,
                       resampling=resampling, src_nodata=src.nodata, nodata=np.nan,
                       dtype="float32") as vrt:
            out[...] = vrt.read(1)
            return out


_THREAD_GDAL = threading.local()


def _gdal_env_for_thread() -> None:
    """Thread-pool initializer: one GDAL environment for the whole life of a reader thread.

    Without one, rasterio makes and tears down an environment for every file it opens (about
    a millisecond each: a third of the time of reading a HyP3 layer).
    """
    _THREAD_GDAL.env = rasterio.Env.from_defaults()  # rasterio's defaults, as for each open
    _THREAD_GDAL.env.__enter__()


def coherence_codes(coherence: np.ndarray, encoding: dict) -> np.ndarray:
    """Coherence values (0–1, NaN missing) → the stored uint8 codes of a CF ``encoding``.

    ``round(value / scale_factor)``, ``_FillValue`` where missing: what xarray writes for
    that encoding (tests/test_readers.py checks the two agree).
    """
    with np.errstate(invalid="ignore"):
        codes = np.around(coherence / encoding["scale_factor"])
    codes[np.isnan(coherence)] = encoding["_FillValue"]
    return codes.astype(encoding["dtype"])


def _value_range(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` ignoring NaN, both NaN when nothing is finite (no copy, no warning)."""
    return float(np.fmin.reduce(values, axis=None)), float(np.fmax.reduce(values, axis=None))


def _check_coherence(coh: np.ndarray, path: str) -> str | None:
    """Refuse coherence outside [0, 1] (beyond :data:`COHERENCE_TOLERANCE`); clip the rest.

    Works in place on the values already read. Returns why the layer is unusable (nothing
    valid on the grid), or None.
    """
    low, high = _value_range(coh)
    if math.isnan(high):
        return "corr has no valid pixel on the analysis grid (all no-data)"
    if low < -COHERENCE_TOLERANCE or high > 1 + COHERENCE_TOLERANCE:
        raise InputError(path, "coherence values",
                         "values in [0, 1] (no-data aside; a 0–255 byte scale is not coherence)",
                         f"values from {low:g} to {high:g} on the analysis grid")
    if low < 0 or high > 1:
        np.clip(coh, 0.0, 1.0, out=coh)
    return None


def _empty_phase(phase: np.ndarray) -> str | None:
    """Why an unwrapped-phase layer read on the grid is unusable (all NaN or all 0), or None."""
    low, high = _value_range(phase)
    if math.isnan(high):
        return "unw_phase has no valid pixel on the analysis grid (all no-data or NaN)"
    if low == 0.0 and high == 0.0:
        return "unw_phase is 0 (HyP3 no-data) at every pixel on the analysis grid"
    return None


def _require_network(products: Sequence[Hyp3Product], folder: Path,
                     dropped: Sequence[dict[str, str]]) -> None:
    """Refuse a stack with fewer than the minimum interferograms or dates for a time series."""
    dates = {p.reference_date for p in products} | {p.secondary_date for p in products}
    detail = ""
    if dropped:
        detail = (f" after dropping {len(dropped)} empty ones ("
                  + "; ".join(f"{d['product']}: {d['reason']}" for d in dropped) + ")")
    require_network_size(len(products), len(dates), folder, "interferograms", detail)


def require_network_size(n_pairs: int, n_dates: int, where: str | Path, field: str,
                         detail: str = "") -> None:
    """Refuse a network below :data:`MIN_INTERFEROGRAMS` pairs or :data:`MIN_DATES` dates.

    The one check of a stack's size, at staging, for a date range and after loop closure;
    ``detail`` says what reduced the network.
    """
    if n_pairs >= MIN_INTERFEROGRAMS and n_dates >= MIN_DATES:
        return
    raise InputError(where, field,
                     f"at least {MIN_INTERFEROGRAMS} usable interferograms over at least "
                     f"{MIN_DATES} dates for a time series",
                     f"{n_pairs} usable interferograms over {n_dates} dates{detail}")


def _drop_pairs(out: Path, kept: Sequence[int], dropped: Sequence[dict[str, str]]) -> None:
    """Shrink a staged store to its first ``len(kept)`` pairs (the data were written compacted).

    The per-pair coordinates still hold every product in the original order: their (encoded)
    values are gathered at ``kept``, every pair-dimension array is resized, the dropped
    products are recorded in the attributes and the metadata consolidated again.
    """
    k = len(kept)
    group = zarr.open_group(str(out), mode="r+", zarr_format=2)
    for name, arr in group.arrays():
        dims = list(arr.attrs.get("_ARRAY_DIMENSIONS", []))
        if dims[:1] != ["pair"]:
            continue
        if name == "pair":
            arr[:k] = np.arange(k, dtype=arr.dtype)
        elif arr.ndim == 1:
            arr[:k] = arr[:][np.asarray(kept, dtype=np.int64)]
        arr.resize((k, *arr.shape[1:]))
    group.attrs["dropped_products"] = json.dumps(list(dropped))
    zarr.consolidate_metadata(str(out), zarr_format=2)


def write_sentinel1_store(products: list[Hyp3Product], grid: AnalysisGrid, wavelength_m: float,
                          out: Path, chunk: int = 256, batch_bytes: float = 256e6,
                          extends: Sequence[Hyp3Product] = ()) -> dict:
    """Stage HyP3 products into ``out`` (Zarr); return a summary.

    With ``extends`` (the products of an earlier staging on the same grid, which ``out`` adds
    to), the network checks count those too and the geometry may come from them.

    Refused before anything is written: fewer than :data:`MIN_INTERFEROGRAMS` products or
    :data:`MIN_DATES` dates. While reading, an interferogram whose phase (or coherence) has no
    valid pixel on the grid is dropped, logged and listed in the store's ``dropped_products``
    attribute (JSON: product and reason); coherence outside [0, 1] and unreadable files are
    refused by name. Where a product has a ``conncomp`` layer (ISCE2 products), its pixels of
    connected component 0 are NaN in ``los_mm`` (mm); the masked pixel counts per product go to
    the ``conncomp_masked`` attribute (JSON), the log and the summary (``conncomp_masked_px``),
    and a product left with no valid pixel is dropped. If the usable interferograms are then
    too few, the stack is refused. On any failure the partly written store is removed.
    """
    logger = step_logger()
    folder = products[0].location.parent
    _require_network([*extends, *products], folder, [])
    ys, xs = grid.coords()
    n = len(products)
    cy, cx = min(chunk, grid.height), min(chunk, grid.width)
    geometry = next((p for p in [*products, *extends] if "lv_theta" in p.layers), None)
    if geometry is None:
        raise InputError(folder, "_lv_theta.tif",
                         "look vectors in at least one product (HyP3 option include_look_vectors)")
    lv_theta = read_on_grid(geometry.layers["lv_theta"], grid, Resampling.bilinear)
    incidence = np.degrees(np.pi / 2 - lv_theta).astype(np.float32)
    dem_product = next((p for p in [*products, *extends] if "dem" in p.layers), None)
    elevation = (read_on_grid(dem_product.layers["dem"], grid, Resampling.bilinear)
                 if dem_product else np.full((grid.height, grid.width), np.nan, np.float32))
    # Pairs are written (and stored) in batches: one Zarr chunk holds a batch of pairs of a tile.
    batch = int(min(32, n, max(1, batch_bytes // (8 * grid.height * grid.width))))
    pair = np.arange(n)
    coords = {
        "pair": pair,
        "y": ys,
        "x": xs,
        "reference_date": ("pair", pd.to_datetime([p.reference_date for p in products])),
        "secondary_date": ("pair", pd.to_datetime([p.secondary_date for p in products])),
        "product": ("pair", np.array([p.name for p in products], dtype=str)),
        "baseline_m": ("pair", np.array([_baseline(p) for p in products], dtype=np.float64),
                       {"units": "m", "long_name": "perpendicular baseline (HyP3 'Baseline')"}),
    }
    import dask.array as dsa

    shrink = [s.to_dict() for s in grid.shrunk_by]
    template = xr.Dataset(
        {
            "los_mm": (("pair", "y", "x"),
                       dsa.full((n, grid.height, grid.width), np.nan, dtype=np.float32,
                                chunks=(batch, cy, cx)),
                       {"units": "mm", "long_name": "LOS displacement (own reference point)",
                        "sign_convention": "positive toward the satellite"}),
            "coherence": (("pair", "y", "x"),
                          dsa.full((n, grid.height, grid.width), np.nan, dtype=np.float32,
                                   chunks=(batch, cy, cx)),
                          {"units": "1", "long_name": "interferometric coherence"}),
            "incidence_deg": (("y", "x"), incidence, {"units": "degree",
                                                      "long_name": "ellipsoid incidence angle"}),
            "elevation": (("y", "x"), elevation, {"units": "m", "long_name": "HyP3 DEM height"}),
        },
        coords=coords,
        attrs={**grid.to_attrs(), "wavelength_m": wavelength_m, "sensor": "Sentinel-1",
               "source": "ASF HyP3 " + ", ".join(sorted({p.kind for p in products})),
               # JSON lists (of dicts): product → pixels it cut on each side / why it was left out
               "grid_shrunk_by": json.dumps(shrink), "dropped_products": "[]"},
    )
    # (codes of a noisy 0–1 field: lz4 saved 1 % of their bytes and cost a pass each way)
    encoding = {"coherence": {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": 255,
                              "compressors": None}}

    to_mm = mm_per_radian(wavelength_m)

    def read_batch(start: int, stop: int, pool: ThreadPoolExecutor
                   ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        los = np.empty((stop - start, grid.height, grid.width), np.float32)
        coh = np.empty_like(los)

        def read(i: int, p: Hyp3Product) -> str | None:
            phase = read_on_grid(p.layers["unw_phase"], grid, Resampling.nearest, out=los[i])
            reason = _empty_phase(phase)
            if reason is not None:
                return reason
            np.multiply(phase, to_mm, out=los[i])  # (phase_to_los_mm, in place)
            if "conncomp" in p.layers:
                reason = _mask_unconnected(los[i], p, grid, untrusted)
                if reason is not None:
                    return reason
            read_on_grid(p.layers["corr"], grid, Resampling.nearest, out=coh[i])
            return _check_coherence(coh[i], p.layers["corr"])

        reasons = list(pool.map(read, range(stop - start), products[start:stop]))
        return los, coh, reasons

    def write_batch(los: np.ndarray, coh: np.ndarray, first: int) -> None:
        """Pairs ``first …`` of the store, written into its arrays (the template's encoding)."""
        los_array[first : first + len(los)] = los
        coh_array[first : first + len(coh)] = coherence_codes(coh, encoding["coherence"])

    kept: list[int] = []  # products written, in order: pair k of the store is products[kept[k]]
    dropped: list[dict[str, str]] = []
    untrusted: dict[str, int] = {}  # product with a conncomp layer → pixels masked for component 0
    try:
        write_zarr(template, out, mode="w", compute=False, encoding=encoding)
        # The batches go straight into the arrays (as xarray would encode them, without its
        # per-batch encoding and region bookkeeping).
        los_array, coh_array = (_array_for_writing(out / name) for name in ("los_mm", "coherence"))
        # GDAL decompresses and warps outside the GIL: one reader thread per core; each batch
        # is compressed and written (its own Zarr chunks) while the next one is read. Empty
        # interferograms are left out, the rest written one after the other (compacted).
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                initializer=_gdal_env_for_thread) as readers, \
                ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                los, coh, reasons = read_batch(start, stop, readers)
                good = [i for i, r in enumerate(reasons) if r is None]
                for i, reason in enumerate(reasons):
                    if reason is not None:
                        dropped.append({"product": products[start + i].name, "reason": reason})
                        logger.warning("dropping %s: %s", products[start + i].name, reason)
                if not good:
                    continue
                if len(good) < stop - start:
                    los, coh = los[good], coh[good]
                first = len(kept)
                kept.extend(start + i for i in good)
                if pending is not None:
                    pending.result()
                pending = writer.submit(write_batch, los, coh, first)
            if pending is not None:
                pending.result()
        used = [products[i] for i in kept]
        _require_network([*extends, *used], folder, dropped)
        masked = {p.name: untrusted[p.name] for p in used if p.name in untrusted}
        if masked:
            logger.info("masked %d pixels of connected component 0 (unwrapping not trusted) in "
                        "%d of the %d products with a conncomp layer", sum(masked.values()),
                        sum(n > 0 for n in masked.values()), len(masked))
            _set_attrs(out, conncomp_masked=json.dumps(masked))
        if dropped:
            _drop_pairs(out, kept, dropped)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {"n_pairs": len(used), "height": grid.height, "width": grid.width,
            "first_date": str(min(p.reference_date for p in used)) if used else None,
            "last_date": str(max(p.secondary_date for p in used)) if used else None,
            "dropped_products": dropped, **_shrink_summary(shrink), **_conncomp_summary(masked)}


def _mask_unconnected(los: np.ndarray, product: Hyp3Product, grid: AnalysisGrid,
                      counts: dict[str, int]) -> str | None:
    """Set to NaN (in place) the LOS pixels whose SNAPHU connected component is 0.

    ``conncomp`` is read like the phase (nearest, same path); component 0, which ISCE2 also
    writes as the layer's no-data, marks pixels left unwrapped or not trusted, so a NaN
    component masks the pixel too. The number of valid LOS pixels masked is recorded in
    ``counts[product.name]``. Returns why the interferogram is unusable (no valid pixel left),
    or None.
    """
    component = read_on_grid(product.layers["conncomp"], grid, Resampling.nearest)
    bad = ~(component > 0) & np.isfinite(los)  # NaN > 0 is False: no-data is component 0
    counts[product.name] = int(bad.sum())
    los[bad] = np.nan
    if not np.isfinite(los).any():
        return "every unwrapped pixel on the analysis grid has connected component 0 (conncomp)"
    return None


def _set_attrs(out: Path, **attrs: str) -> None:
    """Add attributes to a staged store and consolidate its metadata again."""
    group = zarr.open_group(str(out), mode="r+", zarr_format=2)
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(out), zarr_format=2)


def _conncomp_summary(masked: dict[str, int]) -> dict:
    """The step summary's short form of ``conncomp_masked`` (product → pixels masked)."""
    return {"conncomp_masked_px": int(sum(masked.values())),
            "n_products_with_conncomp": len(masked)}


def _shrink_summary(shrink: Sequence[dict]) -> dict:
    """The step summary's short form of ``grid_shrunk_by`` (the store keeps the full list)."""
    return {"grid_shrunk_px": {side: max((int(s[side]) for s in shrink), default=0)
                               for side in SIDES},
            "n_products_shrinking_grid": len(shrink)}


def _baseline(product: Hyp3Product) -> float:
    try:
        return float(product.parameters.get("Baseline", "nan"))
    except ValueError:
        return float("nan")


GACOS_DATES_PER_CHUNK = 16
"""Dates per chunk of the staged GACOS delays (a 256² tile of 16 dates is 4 MB), fewer on a
grid so large that a row of 16 whole maps, resampled in memory before it is written, would
pass :data:`GACOS_ROW_MAX_MB`."""

GACOS_ROW_MAX_MB = 64
"""Largest row of whole delay maps (dates of one chunk row × grid × 4 bytes) each staging
thread holds, MB."""


def _gacos_dates_per_chunk(grid: AnalysisGrid) -> int:
    """:data:`GACOS_DATES_PER_CHUNK`, or as many as fit in :data:`GACOS_ROW_MAX_MB` (≥ 1)."""
    per_map_mb = grid.height * grid.width * 4 / 1e6
    return int(max(1, min(GACOS_DATES_PER_CHUNK, GACOS_ROW_MAX_MB // max(per_map_mb, 1e-9))))


def _array_for_writing(path: Path) -> zarr.Array:
    """An existing Zarr (v2) array opened to write every chunk, even one of the fill value.

    (zarr's check for such chunks scans each chunk written; ``open_array`` ignores a
    ``config`` for an existing array, so it is set on the opened one.)
    """
    return zarr.open_array(str(path), mode="r+", zarr_format=2).with_config(
        {"write_empty_chunks": True})


class _GacosResampler:
    """Bilinear resampling of GACOS lat/lon grids onto the analysis grid.

    The fractional GACOS row/column of every analysis pixel is computed once per GACOS grid
    geometry (all files of a request share one), so each date costs one interpolation.
    """

    def __init__(self, grid: AnalysisGrid) -> None:
        self.grid = grid
        ys, xs = grid.coords()
        xx, yy = np.meshgrid(xs, ys)
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        self.lon, self.lat = to_ll.transform(xx, yy)
        self._coords: dict = {}

    def __call__(self, path: Path) -> np.ndarray:
        ztd, corner_and_steps = read_gacos_values(path)
        key = (tuple(gacos_transform(*corner_and_steps))[:6], ztd.shape)
        if key not in self._coords:
            self._coords[key] = bilinear_weights(self.lon, self.lat, *key)
        return self._coords[key](ztd).reshape(self.grid.height, self.grid.width)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy across file systems)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _same_encoding(earlier: Path, new: Path) -> bool:
    """Whether two Zarr (v2) arrays store their chunks alike (all but the shape).

    Chunk files linked from one into the other are then read as they were written.
    """
    try:
        a, b = (json.loads((p / ".zarray").read_text()) for p in (earlier, new))
    except (OSError, ValueError):
        return False
    return {k: v for k, v in a.items() if k != "shape"} == {k: v for k, v in b.items()
                                                             if k != "shape"}


def _reuse_maps(earlier: Path, out: Path, n_rows: int) -> None:
    """The first ``n_rows`` chunk rows (of dates) of an earlier ``ztd_m``, linked into ``out``.

    Both stores have the same grid and chunking and begin with the same dates, so a chunk
    file of a whole row names the same dates and tile in both; step folders are never written
    again once complete, so sharing their files is safe (a link outlives the folder it came
    from).
    """
    for chunk in (earlier / "ztd_m").iterdir():
        head = chunk.name.split(".", 1)[0]
        if head.isdigit() and int(head) < n_rows:
            _link_or_copy(chunk, out / "ztd_m" / chunk.name)


def write_gacos_store(gacos_dir: Path, dates: list, grid: AnalysisGrid, out: Path,
                      s1_store: Path | None = None, chunk: int = 256,
                      reuse: tuple[Path, int] | None = None,
                      only: set | None = None) -> dict:
    """GACOS zenith delays on the grid, and where each Sentinel-1 pair finds its two dates.

    ``ztd_m (date, y, x)``: zenith total delay (m), bilinearly resampled, each date once,
    in chunks of :data:`GACOS_DATES_PER_CHUNK` dates on grids up to 1000² px (a tile of every
    date is then read in a few chunks, not one per date: per-chunk overhead dominated reading
    and writing).
    With ``s1_store``: ``gacos_reference_index`` and ``gacos_secondary_index (pair)``, the
    positions of a pair's two dates along ``date`` (−1 where GACOS has no map), and
    ``has_gacos (pair)``. The chain forms each pair's correction ``(ZTD_sec − ZTD_ref)/cos θ``
    tile by tile from these (``talik.tasks.sentinel1``), so there are as many delay maps to
    store and read as dates, not pairs.

    ``reuse = (earlier gacos.zarr, n)``: an earlier store on the same grid whose first ``n``
    dates are this one's first ``n`` (from the same files); the maps of its whole chunk rows
    among them are taken from it (:func:`_reuse_maps`) and only the other dates are
    resampled. ``only``: the dates whose files may be used (those of the run's inputs); the
    folder's other maps count as missing.
    """
    import dask.array as dsa

    files = {d: f for d, f in find_gacos(gacos_dir).items() if only is None or d in only}
    wanted = [pd.Timestamp(d).date() for d in dates]
    found = sorted({d for d in wanted if d in files})
    position = {pd.Timestamp(d): i for i, d in enumerate(found)}
    ys, xs = grid.coords()
    cy, cx = min(chunk, grid.height), min(chunk, grid.width)
    variables: dict = {"ztd_m": (("date", "y", "x"),
                                 dsa.zeros((len(found), grid.height, grid.width), dtype=np.float32,
                                           chunks=(_gacos_dates_per_chunk(grid), cy, cx)),
                                 {"units": "m", "long_name": "GACOS zenith total delay"})}
    summary: dict = {"n_dates": len(found),
                     "missing": sorted({str(d) for d in wanted if d not in files})}
    if s1_store is not None:
        indices = _pair_indices(position, s1_store)
        variables.update(indices)
        summary["pairs_without_gacos"] = int((~indices["has_gacos"][1]).sum())
    write_zarr(xr.Dataset(variables, coords={"date": pd.to_datetime(found), "y": ys, "x": xs},
                          attrs=grid.to_attrs()), out, mode="w", compute=False)
    resample = _GacosResampler(grid)
    # Threads each resample a row of chunks (its dates) and write it straight into the array
    # (an xarray region write per date cost more than the resampling).
    ztd_array = _array_for_writing(out / "ztd_m")
    per_row = ztd_array.chunks[0]

    def stage_row(row: int) -> None:
        i0, i1 = row * per_row, min((row + 1) * per_row, len(found))
        maps = np.empty((i1 - i0, grid.height, grid.width), np.float32)
        for i in range(i0, i1):
            maps[i - i0] = resample(files[found[i]])
        ztd_array[i0:i1] = maps

    first_row = 0
    if reuse is not None and _same_encoding(reuse[0] / "ztd_m", out / "ztd_m"):
        first_row = min(reuse[1], len(found)) // per_row
        _reuse_maps(reuse[0], out, first_row)
        summary["reused_dates"] = first_row * per_row
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(stage_row, range(first_row, -(-len(found) // per_row))))
    return summary


def _pair_indices(position: dict, s1_store: Path) -> dict:
    """Where each staged pair finds its two delay maps along ``date`` (−1: none), as variables."""
    with open_sentinel1_store(s1_store) as s1:
        ref = pd.DatetimeIndex(s1["reference_date"].values)
        sec = pd.DatetimeIndex(s1["secondary_date"].values)
    ref_i = np.array([position.get(d, -1) for d in ref], dtype=np.int32)
    sec_i = np.array([position.get(d, -1) for d in sec], dtype=np.int32)
    return {
        "gacos_reference_index": (("pair",), ref_i, {
            "long_name": "position of the pair's reference date along date (-1: no map)"}),
        "gacos_secondary_index": (("pair",), sec_i, {
            "long_name": "position of the pair's secondary date along date (-1: no map)"}),
        "has_gacos": (("pair",), (ref_i >= 0) & (sec_i >= 0)),
    }


PARTS_FILE = "parts.json"
"""Beside an extended staging's ``sentinel1.zarr``: the ordered list of the stores it is made of."""


def sentinel1_parts(store: str | Path) -> list[Path]:
    """The Zarr stores a staged ``sentinel1.zarr`` is made of, in pair order.

    A staging that extended an earlier one (new acquisitions) wrote only the new products;
    the ``parts.json`` beside it lists the earlier stores first. Without that file, the store
    alone.
    """
    store = Path(store)
    listing = store.parent / PARTS_FILE
    if not listing.exists():
        return [store]
    parts = [Path(p) for p in json.loads(listing.read_text())]
    missing = [p for p in parts if not p.exists()]
    if missing:
        raise InputError(listing, "parts", "every earlier staging this one extends to exist "
                         f"(delete {store.parent} to stage the stack again)", str(missing[0]))
    return parts


def open_sentinel1_store(store: str | Path, **open_kwargs) -> xr.Dataset:
    """Open a staged Sentinel-1 stack (lazily), its parts joined along ``pair``.

    ``open_kwargs`` go to :func:`xarray.open_zarr` for every part. The joined stack has pairs
    ``0 … n−1``; its per-product attributes (``dropped_products``, ``conncomp_masked``) are
    those of all parts; the grid and the other attributes are the first part's (every part
    is on the same grid).
    """
    parts = [xr.open_zarr(p, **open_kwargs) for p in sentinel1_parts(store)]
    if len(parts) == 1:
        return parts[0]
    joined = xr.concat(parts, dim="pair", data_vars="minimal", coords="minimal",
                       compat="override", join="override", combine_attrs="override")
    joined = joined.assign_coords(pair=np.arange(joined.sizes["pair"]))
    dropped = [d for p in parts for d in json.loads(p.attrs.get("dropped_products", "[]"))]
    masked = {k: v for p in parts for k, v in json.loads(p.attrs.get("conncomp_masked", "{}")).items()}
    joined.attrs["dropped_products"] = json.dumps(dropped)
    if masked:
        joined.attrs["conncomp_masked"] = json.dumps(masked)
    return joined


def open_staged(path: str | Path, chunks: dict | None = None) -> xr.Dataset:
    """Open a staged Zarr store (lazily, with ``chunks`` if given)."""
    return xr.open_zarr(path, chunks=chunks)


def _grid_of(staged_s1: StepOutput) -> AnalysisGrid:
    with open_sentinel1_store(Path(staged_s1.path) / "sentinel1.zarr") as ds:
        return AnalysisGrid.from_attrs(ds.attrs)


def _content_digests(manifest: InputSet, role: str, folder: Path) -> dict[str, str]:
    """Content digest of each item of a role's folder, from its files' checksums in the manifest.

    An item is what the first path part inside ``folder`` names, up to its first dot: a HyP3
    product (folder or ``.zip``), a GACOS date (``YYYYMMDD.ztd`` and its ``.rsc``).
    """
    full = manifest.load_manifest()
    root = Path(full.root)
    files: dict[str, list[tuple[str, str]]] = {}
    for record in full.files:
        if record.role != role:
            continue
        inside = (root / record.path).relative_to(folder)
        name = inside.parts[0].split(".", 1)[0]
        files.setdefault(name, []).append((inside.as_posix(), record.sha256))
    return {name: digest_of(sorted(entries)) for name, entries in files.items()}


def _earlier_staging(work_dir: str, lineage: dict, products: dict[str, str]
                     ) -> tuple[Path, dict] | None:
    """The completed staging this one can extend, with its summary; None when there is none.

    It must have been made by the same code with the same wavelength onto the same grid, from
    products that are all among ``products`` (name → content digest) with the same content; of
    several, the one with the most products.
    """
    best: tuple[Path, dict] | None = None
    for folder in sorted((Path(work_dir) / "steps" / "stage-sentinel1").glob("*")):
        try:
            if not (folder / COMPLETE).exists():
                continue
            summary = json.loads((folder / "summary.json").read_text())
            earlier = summary["lineage"]
        except (OSError, ValueError, KeyError):
            continue  # a folder staged before lineages were recorded cannot be extended
        same = all(earlier.get(k) == lineage[k] for k in ("code", "wavelength_m", "grid"))
        staged = earlier["products"]
        if not same or not isinstance(staged, dict) or any(
                products.get(name) != digest for name, digest in staged.items()):
            continue
        try:
            sentinel1_parts(folder / "sentinel1.zarr")
        except InputError:
            continue
        if best is None or len(earlier["products"]) > len(best[1]["lineage"]["products"]):
            best = (folder, summary)
    return best


def _extended_summary(earlier: dict, added: dict | None, parts: list[Path],
                      names: dict[str, str], staged_now: list[str], base: Path) -> dict:
    """The summary of a staging made of an earlier one and ``added`` (None: nothing new)."""
    summary = {k: v for k, v in earlier.items() if k not in ("lineage", "parts")}
    if added is not None:
        summary["n_pairs"] = earlier["n_pairs"] + added["n_pairs"]
        dates = [d for d in (earlier["first_date"], added["first_date"]) if d]
        summary["first_date"] = min(dates)
        summary["last_date"] = max(d for d in (earlier["last_date"], added["last_date"]) if d)
        summary["dropped_products"] = earlier["dropped_products"] + added["dropped_products"]
        for key in ("conncomp_masked_px", "n_products_with_conncomp"):
            if key in added:
                summary[key] = summary.get(key, 0) + added[key]
    summary.update(parts=[str(p) for p in parts], extends=base.name,
                   staged_now=len(staged_now), staged_now_products=staged_now)
    summary["lineage"] = {**earlier["lineage"], "products": names}
    return summary


def _grid_key(staged_s1: StepOutput) -> dict:
    """The analysis grid of a staging, for the keys of steps that only need its grid."""
    return staged_s1.summary.get("grid") or _grid_of(staged_s1).to_attrs()


@step("stage-sentinel1", key=lambda manifest, aoi, wavelength_m, work_dir: (
    manifest.digest_of_roles("hyp3"), aoi, wavelength_m))
def stage_sentinel1(manifest: InputSet, aoi: AreaOfInterest, wavelength_m: float,
                    work_dir: str) -> StepOutput:
    """HyP3 products → ``sentinel1.zarr`` on the analysis grid (LOS mm + coherence).

    Incremental: when an earlier staging in ``work_dir`` holds a subset of these products on
    the same grid (the study extended to new acquisitions), only the new products are read;
    they are written as a new part and ``parts.json`` lists the earlier parts before it
    (:func:`open_sentinel1_store` joins them). Anything else (a grid that changed, other
    code) stages every product again.
    """
    logger = step_logger()
    hyp3_dir = manifest.location("hyp3")
    if hyp3_dir is None:
        raise InputError("(study)", "source.hyp3_dir", "a folder of HyP3 INSAR_GAMMA products")
    code = code_digest(__name__)
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            products = find_hyp3_products(hyp3_dir, manifest.until)
            grid = grid_from_products(products, aoi)
            contents = _content_digests(manifest, "hyp3", hyp3_dir)
            names = {p.name: contents.get(p.name, "") for p in products}
            lineage = {"code": code, "wavelength_m": wavelength_m,
                       "grid": json.dumps(grid.to_attrs(), sort_keys=True), "products": names}
            earlier = _earlier_staging(work_dir, lineage, names)
            store = sd.work / "sentinel1.zarr"
            if earlier is None:
                logger.info("staging %d HyP3 products onto a %d×%d grid", len(products),
                            grid.height, grid.width)
                summary = write_sentinel1_store(products, grid, wavelength_m, store)
                summary.update(parts=[str(sd.final / "sentinel1.zarr")], staged_now=len(products),
                               lineage=lineage)
            else:
                base, base_summary = earlier
                done = set(base_summary["lineage"]["products"])
                new = [p for p in products if p.name not in done]
                old = [p for p in products if p.name in done]
                parts = sentinel1_parts(base / "sentinel1.zarr")
                logger.info("extending the staging at %s (%d products) by %d new HyP3 products",
                            base, len(done), len(new))
                added = None
                if new:
                    added = write_sentinel1_store(new, grid, wavelength_m, store, extends=old)
                    if added["n_pairs"]:
                        parts = [*parts, sd.final / "sentinel1.zarr"]
                    else:  # every new product was empty: nothing to add
                        shutil.rmtree(store, ignore_errors=True)
                summary = _extended_summary(base_summary, added, parts, names,
                                            [p.name for p in new], base)
                (sd.work / PARTS_FILE).write_text(json.dumps([str(p) for p in parts]))
            # Kept beside the store: a cached step then reports what the fresh one did.
            (sd.work / "summary.json").write_text(json.dumps(summary))
        elif (sd.final / "summary.json").exists():
            summary = json.loads((sd.final / "summary.json").read_text())
        else:  # a folder staged before summaries were kept: what the store itself tells
            with xr.open_zarr(sd.final / "sentinel1.zarr") as ds:
                summary = {"n_pairs": ds.sizes["pair"], "height": ds.sizes["y"],
                           "width": ds.sizes["x"],
                           "first_date": str(pd.Timestamp(ds["reference_date"].values.min()).date()),
                           "last_date": str(pd.Timestamp(ds["secondary_date"].values.max()).date()),
                           "dropped_products": json.loads(ds.attrs.get("dropped_products", "[]")),
                           **_shrink_summary(json.loads(ds.attrs.get("grid_shrunk_by", "[]"))),
                           **_conncomp_summary(json.loads(ds.attrs.get("conncomp_masked", "{}")))}
    public = {k: v for k, v in summary.items()
              if k not in ("lineage", "staged_now_products", "parts")}
    if "lineage" in summary:  # the grid, for the steps that need only it (their keys)
        public["grid"] = json.loads(summary["lineage"]["grid"])
    return run.output(sd.final, summary=public,
                      parameters={"wavelength_m": wavelength_m, "aoi": aoi.model_dump(mode="json")})


@step("stage-rasters", key=lambda manifest, staged_s1, work_dir: (
    manifest.digest_of_roles("dem", "ground_ice"), _grid_key(staged_s1)))
def stage_rasters(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """DEM and ground-ice map → ``rasters.zarr`` on the analysis grid (+ slope from the DEM)."""
    run = this_step()
    grid = _grid_of(staged_s1)
    layers = {}
    with run.folder(work_dir) as sd:
        if not sd.done:
            ys, xs = grid.coords()
            dem_path = manifest.location("dem")
            if dem_path is not None:
                dem = read_raster(dem_path, "m")
                elevation = on_grid(dem, grid, Resampling.average)
                layers["elevation"] = (elevation, {"units": "m", "long_name": "DEM height"})
                layers["slope_deg"] = (slope_deg(elevation, grid.pixel_m),
                                       {"units": "degree", "long_name": "terrain slope"})
            ice_path = manifest.location("ground_ice")
            if ice_path is not None:
                ice = read_raster(ice_path, "1")
                layers["ground_ice"] = (on_grid(ice, grid, Resampling.bilinear),
                                        {"units": "1", "long_name": "ground-ice content"})
            ds = xr.Dataset({k: (("y", "x"), v, a) for k, (v, a) in layers.items()},
                            coords={"y": ys, "x": xs}, attrs=grid.to_attrs())
            write_zarr(ds, sd.work / "rasters.zarr", mode="w")
        else:
            with xr.open_zarr(sd.final / "rasters.zarr") as ds:
                layers = dict.fromkeys(ds.data_vars)
    return run.output(sd.final, summary={"layers": sorted(layers)})


def grid_of_raster(path: str | Path) -> AnalysisGrid:
    """The grid of a GeoTIFF (its CRS, transform and shape)."""
    with raster_errors(Path(path), "open"), rasterio.open(path) as src:
        if src.crs is None:
            raise InputError(path, "CRS", "a georeferenced raster", "no CRS")
        return AnalysisGrid(src.crs.to_string(), tuple(src.transform)[:6], src.width, src.height)


def pairs_on_grid(found: list, grid: AnalysisGrid) -> xr.Dataset:
    """Sparse-sensor pairs ``(path, sidecar)`` as ``los_mm``/``coherence (pair, y, x)`` on ``grid``.

    LOS millimetres, positive toward the satellite (each pair converted from its own quantity,
    units and sign), averaged onto the grid; per-pair sensor, dates, incidence, wavelength.
    """
    ys, xs = grid.coords()
    los, coh = [], []
    for path, meta in found:
        ds = read_pair(path, meta)
        value = to_los_mm(ds["value"], meta.quantity, meta.units, meta.sign_convention,
                          meta.wavelength_m)
        los.append(on_grid(value, grid, Resampling.average))
        coh.append(on_grid(ds["coherence"], grid, Resampling.average))
    return xr.Dataset(
        {"los_mm": (("pair", "y", "x"), np.stack(los),
                    {"units": "mm", "sign_convention": "positive toward the satellite"}),
         "coherence": (("pair", "y", "x"), np.stack(coh), {"units": "1"})},
        coords={
            "y": ys, "x": xs,
            "sensor": ("pair", np.array([m.sensor for _, m in found], dtype=str)),
            "reference_date": ("pair", pd.to_datetime([m.reference_date for _, m in found])),
            "secondary_date": ("pair", pd.to_datetime([m.secondary_date for _, m in found])),
            "incidence_deg": ("pair", np.array([m.incidence_deg for _, m in found])),
            "wavelength_m": ("pair", np.array([m.wavelength_m for _, m in found])),
            "file": ("pair", np.array([p.name for p, _ in found], dtype=str)),
        },
        attrs=grid.to_attrs(),
    )


@step("stage-pairs", key=lambda manifest, staged_s1, work_dir: (
    manifest.digest_of_roles("pairs"), _grid_key(staged_s1)))
def stage_pairs(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """Sparse-sensor pairs (ERS-2 … ALOS-2) → ``pairs.zarr`` of LOS mm on the analysis grid."""
    run = this_step()
    grid = _grid_of(staged_s1)
    pairs_dir = manifest.location("pairs")
    count = 0
    with run.folder(work_dir) as sd:
        if not sd.done and pairs_dir is not None:
            found = find_pairs(pairs_dir)
            out = pairs_on_grid(found, grid)
            count = len(found)
            write_zarr(out, sd.work / "pairs.zarr", mode="w")
        elif sd.done and (sd.final / "pairs.zarr").exists():
            with xr.open_zarr(sd.final / "pairs.zarr") as ds:
                count = ds.sizes["pair"]
    return run.output(sd.final, summary={"n_pairs": count})


@step("stage-gacos", key=lambda manifest, staged_s1, work_dir: (
    manifest.digest_of_roles("gacos", "pairs"), staged_s1.digest))
def stage_gacos(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """GACOS ``.ztd`` grids of the Sentinel-1 and pair dates → ``gacos.zarr`` on the grid."""
    run = this_step()
    gacos_dir = manifest.location("gacos")
    summary: dict = {"n_dates": 0}
    with run.folder(work_dir) as sd:
        if not sd.done and gacos_dir is not None:
            with open_sentinel1_store(Path(staged_s1.path) / "sentinel1.zarr") as s1:
                dates = set(pd.DatetimeIndex(s1["reference_date"].values))
                dates |= set(pd.DatetimeIndex(s1["secondary_date"].values))
                grid = AnalysisGrid.from_attrs(s1.attrs)
            pairs_dir = manifest.location("pairs")
            if pairs_dir is not None:  # other sensors' pairs are corrected too, when possible
                for _, meta in find_pairs(pairs_dir):
                    dates |= {pd.Timestamp(meta.reference_date), pd.Timestamp(meta.secondary_date)}
            dates = sorted(dates)
            # The maps of the dates an earlier staging already holds (the study extended in
            # time) are taken from it; only the new dates are resampled.
            # Only the maps among the run's inputs (a later `until` leaves later ones out).
            contents = _content_digests(manifest, "gacos", gacos_dir)
            inputs = {d for d in find_gacos(gacos_dir) if f"{d:%Y%m%d}" in contents}
            found = sorted({pd.Timestamp(d).date() for d in dates} & inputs)
            days = [f"{d:%Y%m%d}" for d in found]
            lineage = {"code": code_digest(__name__),
                       "grid": json.dumps(grid.to_attrs(), sort_keys=True),
                       "dates": [[day, contents.get(day, "")] for day in days]}
            reuse = _earlier_gacos(work_dir, lineage)
            summary = write_gacos_store(gacos_dir, dates, grid, sd.work / "gacos.zarr",
                                        Path(staged_s1.path) / "sentinel1.zarr", reuse=reuse,
                                        only=inputs)
            (sd.work / "summary.json").write_text(json.dumps({**summary, "lineage": lineage}))
        elif sd.done and (sd.final / "summary.json").exists():
            summary = json.loads((sd.final / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k != "lineage"}
    return run.output(sd.final, summary=summary)


def _earlier_gacos(work_dir: str, lineage: dict) -> tuple[Path, int] | None:
    """An earlier completed GACOS staging whose dates begin this one's: (store, their number).

    Same code and grid, and its dates are this staging's first dates, from the same files;
    of several, the one with the most dates.
    """
    best: tuple[Path, int] | None = None
    wanted = lineage["dates"]  # [(YYYYMMDD, digest)] in date order
    for folder in sorted((Path(work_dir) / "steps" / "stage-gacos").glob("*")):
        try:
            if not (folder / COMPLETE).exists():
                continue
            earlier = json.loads((folder / "summary.json").read_text())["lineage"]
        except (OSError, ValueError, KeyError):
            continue
        if earlier.get("code") != lineage["code"] or earlier.get("grid") != lineage["grid"]:
            continue
        dates = [tuple(d) for d in earlier.get("dates", [])]
        known = all(digest for _, digest in dates)  # every map's content is on record
        if dates and known and dates == [tuple(d) for d in wanted[:len(dates)]] and (
                best is None or len(dates) > best[1]):
            best = (folder / "gacos.zarr", len(dates))
    return best


def basin_mean_climate(era5_path: Path, bbox: tuple[float, float, float, float] | None
                       ) -> xr.Dataset:
    """Monthly ERA5-Land variables averaged over the grid cells inside ``bbox`` (all if None).

    Cells are weighted by the cosine of their latitude (their area).
    """
    era5 = read_era5_land(era5_path)
    if bbox is not None:
        west, south, east, north = bbox
        inside = era5.sel(latitude=slice(north, south), longitude=slice(west, east))
        if inside.sizes["latitude"] and inside.sizes["longitude"]:
            era5 = inside
    out = area_weighted_mean(era5)
    out.attrs = {**era5.attrs, "aggregation": "monthly, area-weighted basin mean"}
    return out


@step("stage-climate", key=lambda manifest, aoi, work_dir: (
    manifest.digest_of_roles("era5"), aoi))
def stage_climate(manifest: InputSet, aoi: AreaOfInterest, work_dir: str) -> StepOutput:
    """ERA5-Land → ``era5_basin_monthly.nc`` (basin means, talik names and units)."""
    run = this_step()
    era5 = manifest.location("era5")
    with run.folder(work_dir) as sd:
        if not sd.done and era5 is not None:
            basin_mean_climate(era5, aoi.bbox).to_netcdf(sd.work / "era5_basin_monthly.nc")
    present = (sd.final / "era5_basin_monthly.nc").exists()
    return run.output(sd.final, summary={"era5": present})
