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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from prefect import task
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from talik.config import AreaOfInterest
from talik.errors import InputError
from talik.science.interferogram import phase_to_los_mm, to_los_mm
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of
from talik.tasks.readers.era5 import read_era5_land
from talik.tasks.readers.gacos import find_gacos, read_gacos
from talik.tasks.readers.hyp3 import Hyp3Product, find_hyp3_products
from talik.tasks.readers.pairs import find_pairs, read_pair
from talik.tasks.readers.raster import read_raster
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.steps import STEP_CACHE, step_folder
from talik.tasks.zarr_io import write_zarr

__all__ = [
    "AnalysisGrid",
    "grid_from_products",
    "open_staged",
    "basin_mean_climate",
    "stage_climate",
    "stage_pairs",
    "stage_rasters",
    "stage_sentinel1",
    "write_sentinel1_store",
]


@dataclass(frozen=True)
class AnalysisGrid:
    """A north-up raster grid: CRS, affine transform and shape."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

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


def grid_from_products(products: list[Hyp3Product], aoi: AreaOfInterest) -> AnalysisGrid:
    """The common extent of all products on their pixel lattice, clipped to the AOI box."""
    crs, res, origin = None, None, None
    left, bottom, right, top = -math.inf, -math.inf, math.inf, math.inf
    for p in products:
        with rasterio.open(p.layers["unw_phase"]) as src:
            if crs is None:
                crs, res, origin = src.crs, src.res, (src.transform.c, src.transform.f)
            elif src.crs != crs or not np.allclose(src.res, res):
                raise InputError(p.location, "grid", f"the same CRS and pixel size as the first "
                                 f"product ({crs}, {res}); got {src.crs}, {src.res}")
            b = src.bounds
            left, bottom = max(left, b.left), max(bottom, b.bottom)
            right, top = min(right, b.right), min(top, b.top)
    if aoi.bbox is not None:
        to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        west, south, east, north = aoi.bbox
        xs, ys = to_grid.transform([west, east, west, east], [south, south, north, north])
        left, right = max(left, min(xs)), min(right, max(xs))
        bottom, top = max(bottom, min(ys)), min(top, max(ys))
    dx, dy = res
    # Snap to the products' lattice.
    left = origin[0] + math.ceil((left - origin[0]) / dx - 1e-6) * dx
    top = origin[1] - math.ceil((origin[1] - top) / dy - 1e-6) * dy
    width = int(math.floor((right - left) / dx + 1e-6))
    height = int(math.floor((top - bottom) / dy + 1e-6))
    if width < 2 or height < 2:
        raise InputError(products[0].location.parent, "extent",
                         "products (and the AOI box) that overlap by at least 2×2 pixels")
    return AnalysisGrid(crs.to_string(), (dx, 0.0, left, 0.0, -dy, top), width, height)


def _on_grid(da: xr.DataArray, grid: AnalysisGrid, resampling: Resampling) -> np.ndarray:
    """Values of a georeferenced DataArray on ``grid`` (rioxarray reprojection)."""
    out = da.rio.reproject_match(grid.template(), resampling=resampling, nodata=np.nan)
    return out.values.astype(np.float32)


def read_on_grid(path: str, grid: AnalysisGrid, resampling: Resampling) -> np.ndarray:
    """Band 1 of a raster file on ``grid`` as float32 with no-data as NaN.

    A raster on the grid's own lattice (same CRS and pixel size, origin on a pixel corner of
    the grid) is read through a window, exactly; any other raster is warped on the fly.
    """
    with rasterio.open(path) as src:
        t, g = src.transform, grid.affine
        aligned = (src.crs is not None and src.crs.to_string() == grid.crs
                   and np.isclose(t.a, g.a) and np.isclose(t.e, g.e))
        if aligned:
            col = (g.c - t.c) / t.a
            row = (g.f - t.f) / t.e
            aligned = abs(col - round(col)) < 1e-3 and abs(row - round(row)) < 1e-3
        if aligned:
            # Grid pixel (0, 0) sits at source pixel (row, col); paste the overlap.
            col, row = int(round(col)), int(round(row))
            out = np.full((grid.height, grid.width), np.nan, np.float32)
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + grid.height, src.height), min(col + grid.width, src.width)
            if r1 > r0 and c1 > c0:
                data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
                out[r0 - row : r1 - row, c0 - col : c1 - col] = data.astype(np.float32).filled(np.nan)
            return out
        with WarpedVRT(src, crs=grid.crs, transform=g, width=grid.width, height=grid.height,
                       resampling=resampling, src_nodata=src.nodata, nodata=np.nan,
                       dtype="float32") as vrt:
            return vrt.read(1).astype(np.float32)


def write_sentinel1_store(products: list[Hyp3Product], grid: AnalysisGrid, wavelength_m: float,
                          out: Path, chunk: int = 256, batch_bytes: float = 256e6) -> dict:
    """Stage HyP3 products into ``out`` (Zarr); return a summary."""
    ys, xs = grid.coords()
    n = len(products)
    cy, cx = min(chunk, grid.height), min(chunk, grid.width)
    geometry = next((p for p in products if "lv_theta" in p.layers), None)
    if geometry is None:
        raise InputError(products[0].location.parent, "_lv_theta.tif",
                         "look vectors in at least one product (HyP3 option include_look_vectors)")
    lv_theta = read_on_grid(geometry.layers["lv_theta"], grid, Resampling.bilinear)
    incidence = np.degrees(np.pi / 2 - lv_theta).astype(np.float32)
    dem_product = next((p for p in products if "dem" in p.layers), None)
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
               "source": "ASF HyP3 INSAR_GAMMA"},
    )
    encoding = {"coherence": {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": 255}}
    write_zarr(template, out, mode="w", compute=False, encoding=encoding)
    def read_batch(start: int, stop: int, pool: ThreadPoolExecutor) -> xr.Dataset:
        los = np.empty((stop - start, grid.height, grid.width), np.float32)
        coh = np.empty_like(los)

        def read(i: int, p: Hyp3Product) -> None:
            phase = xr.DataArray(read_on_grid(p.layers["unw_phase"], grid, Resampling.nearest))
            los[i] = phase_to_los_mm(phase, wavelength_m).values
            coh[i] = read_on_grid(p.layers["corr"], grid, Resampling.nearest)

        list(pool.map(read, range(stop - start), products[start:stop]))
        return xr.Dataset({"los_mm": (("pair", "y", "x"), los),
                           "coherence": (("pair", "y", "x"), coh)})

    # GDAL decompresses and warps outside the GIL: one reader thread per core; each batch is
    # compressed and written (its own Zarr chunks) while the next one is read.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as readers, \
            ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            part = read_batch(start, stop, readers)
            if pending is not None:
                pending.result()
            pending = writer.submit(write_zarr, part, out, region={"pair": slice(start, stop)},
                                    consolidated=False)
        if pending is not None:
            pending.result()
    return {"n_pairs": n, "height": grid.height, "width": grid.width,
            "first_date": str(products[0].reference_date),
            "last_date": str(max(p.secondary_date for p in products))}


def _baseline(product: Hyp3Product) -> float:
    try:
        return float(product.parameters.get("Baseline", "nan"))
    except ValueError:
        return float("nan")


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
        ztd = read_gacos(path)
        t = ztd.rio.transform()
        ny, nx = ztd.shape
        key = (tuple(t)[:6], ztd.shape)
        if key not in self._coords:
            col = (self.lon - t.c) / t.a - 0.5
            row = (self.lat - t.f) / t.e - 0.5
            inside = (row >= 0) & (row <= ny - 1) & (col >= 0) & (col <= nx - 1)
            r0 = np.clip(np.floor(row).astype(np.int64), 0, max(ny - 2, 0))
            c0 = np.clip(np.floor(col).astype(np.int64), 0, max(nx - 2, 0))
            fr, fc = row - r0, col - c0
            flat = (r0 * nx + c0).ravel()
            weights = np.stack([((1 - fr) * (1 - fc)).ravel(), ((1 - fr) * fc).ravel(),
                                (fr * (1 - fc)).ravel(), (fr * fc).ravel()])
            self._coords[key] = (flat, weights, inside.ravel())
        flat, w, inside = self._coords[key]
        v = ztd.values.astype(np.float32).ravel()
        nx1 = 1 if nx > 1 else 0
        out = (v[flat] * w[0] + v[flat + nx1] * w[1] + v[flat + nx] * w[2]
               + v[flat + nx + nx1] * w[3])
        out = np.where(inside, out, np.nan)
        return out.reshape(self.grid.height, self.grid.width).astype(np.float32)


def write_gacos_store(gacos_dir: Path, dates: list, grid: AnalysisGrid, out: Path,
                      s1_store: Path | None = None, chunk: int = 256) -> dict:
    """GACOS zenith delays on the grid, and where each Sentinel-1 pair finds its two dates.

    ``ztd_m (date, y, x)``: zenith total delay (m), bilinearly resampled, each date once.
    With ``s1_store``: ``gacos_reference_index`` and ``gacos_secondary_index (pair)``, the
    positions of a pair's two dates along ``date`` (−1 where GACOS has no map), and
    ``has_gacos (pair)``. The chain forms each pair's correction ``(ZTD_sec − ZTD_ref)/cos θ``
    tile by tile from these (``talik.tasks.sentinel1``), so there are as many delay maps to
    store and read as dates, not pairs.
    """
    import dask.array as dsa

    files = find_gacos(gacos_dir)
    wanted = [pd.Timestamp(d).date() for d in dates]
    found = sorted({d for d in wanted if d in files})
    position = {pd.Timestamp(d): i for i, d in enumerate(found)}
    ys, xs = grid.coords()
    cy, cx = min(chunk, grid.height), min(chunk, grid.width)
    variables: dict = {"ztd_m": (("date", "y", "x"),
                                 dsa.zeros((len(found), grid.height, grid.width), np.float32,
                                           chunks=(1, cy, cx)),
                                 {"units": "m", "long_name": "GACOS zenith total delay"})}
    summary: dict = {"n_dates": len(found),
                     "missing": sorted({str(d) for d in wanted if d not in files})}
    if s1_store is not None:
        with xr.open_zarr(s1_store) as s1:
            ref = pd.DatetimeIndex(s1["reference_date"].values)
            sec = pd.DatetimeIndex(s1["secondary_date"].values)
        ref_i = np.array([position.get(d, -1) for d in ref], dtype=np.int32)
        sec_i = np.array([position.get(d, -1) for d in sec], dtype=np.int32)
        has = (ref_i >= 0) & (sec_i >= 0)
        variables["gacos_reference_index"] = (("pair",), ref_i, {
            "long_name": "position of the pair's reference date along date (-1: no map)"})
        variables["gacos_secondary_index"] = (("pair",), sec_i, {
            "long_name": "position of the pair's secondary date along date (-1: no map)"})
        variables["has_gacos"] = (("pair",), has)
        summary["pairs_without_gacos"] = int((~has).sum())
    write_zarr(xr.Dataset(variables, coords={"date": pd.to_datetime(found), "y": ys, "x": xs},
                          attrs=grid.to_attrs()), out, mode="w", compute=False)
    resample = _GacosResampler(grid)

    def stage_date(i: int) -> None:
        delay = resample(files[found[i]])
        write_zarr(xr.Dataset({"ztd_m": (("date", "y", "x"), delay[None])}), out,
                   region={"date": slice(i, i + 1)}, consolidated=False)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(stage_date, range(len(found))))
    return summary


def open_staged(path: str | Path, chunks: dict | None = None) -> xr.Dataset:
    """Open a staged Zarr store (lazily, with ``chunks`` if given)."""
    return xr.open_zarr(path, chunks=chunks)


def _grid_of(staged_s1: StepOutput) -> AnalysisGrid:
    with xr.open_zarr(Path(staged_s1.path) / "sentinel1.zarr") as ds:
        return AnalysisGrid.from_attrs(ds.attrs)


@task(name="stage-sentinel1", cache_policy=STEP_CACHE, persist_result=True)
def stage_sentinel1(manifest: InputSet, aoi: AreaOfInterest, wavelength_m: float,
                    work_dir: str) -> StepOutput:
    """HyP3 products → ``sentinel1.zarr`` on the analysis grid (LOS mm + coherence)."""
    logger = step_logger()
    hyp3_dir = manifest.location("hyp3")
    if hyp3_dir is None:
        raise InputError("(study)", "source.hyp3_dir", "a folder of HyP3 INSAR_GAMMA products")
    digest = digest_of("stage-sentinel1", manifest.digest, aoi, wavelength_m, code_digest())
    with step_folder(work_dir, "stage-sentinel1", digest) as sd:
        if not sd.done:
            products = find_hyp3_products(hyp3_dir)
            grid = grid_from_products(products, aoi)
            logger.info("staging %d HyP3 products onto a %d×%d grid", len(products), grid.height,
                        grid.width)
            summary = write_sentinel1_store(products, grid, wavelength_m, sd.work / "sentinel1.zarr")
        else:
            with xr.open_zarr(sd.final / "sentinel1.zarr") as ds:
                summary = {"n_pairs": ds.sizes["pair"], "height": ds.sizes["y"],
                           "width": ds.sizes["x"]}
    return StepOutput(step="stage-sentinel1", path=str(sd.final), digest=digest,
                      parameters={"wavelength_m": wavelength_m, "aoi": aoi.model_dump(mode="json")},
                      summary=summary)


@task(name="stage-rasters", cache_policy=STEP_CACHE, persist_result=True)
def stage_rasters(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """DEM and ground-ice map → ``rasters.zarr`` on the analysis grid (+ slope from the DEM)."""
    digest = digest_of("stage-rasters", manifest.digest, staged_s1.digest, code_digest())
    grid = _grid_of(staged_s1)
    layers = {}
    with step_folder(work_dir, "stage-rasters", digest) as sd:
        if not sd.done:
            ys, xs = grid.coords()
            dem_path = manifest.location("dem")
            if dem_path is not None:
                dem = read_raster(dem_path, "m")
                elevation = _on_grid(dem, grid, Resampling.average)
                gy, gx = np.gradient(elevation.astype(np.float64), grid.pixel_m)
                layers["elevation"] = (elevation, {"units": "m", "long_name": "DEM height"})
                layers["slope_deg"] = (np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32),
                                       {"units": "degree", "long_name": "terrain slope"})
            ice_path = manifest.location("ground_ice")
            if ice_path is not None:
                ice = read_raster(ice_path, "1")
                layers["ground_ice"] = (_on_grid(ice, grid, Resampling.bilinear),
                                        {"units": "1", "long_name": "ground-ice content"})
            ds = xr.Dataset({k: (("y", "x"), v, a) for k, (v, a) in layers.items()},
                            coords={"y": ys, "x": xs}, attrs=grid.to_attrs())
            write_zarr(ds, sd.work / "rasters.zarr", mode="w")
        else:
            with xr.open_zarr(sd.final / "rasters.zarr") as ds:
                layers = dict.fromkeys(ds.data_vars)
    return StepOutput(step="stage-rasters", path=str(sd.final), digest=digest,
                      summary={"layers": sorted(layers)})


@task(name="stage-pairs", cache_policy=STEP_CACHE, persist_result=True)
def stage_pairs(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """Sparse-sensor pairs (ERS-2 … ALOS-2) → ``pairs.zarr`` of LOS mm on the analysis grid."""
    digest = digest_of("stage-pairs", manifest.digest, staged_s1.digest, code_digest())
    grid = _grid_of(staged_s1)
    pairs_dir = manifest.location("pairs")
    count = 0
    with step_folder(work_dir, "stage-pairs", digest) as sd:
        if not sd.done and pairs_dir is not None:
            ys, xs = grid.coords()
            found = find_pairs(pairs_dir)
            los, coh = [], []
            for path, meta in found:
                ds = read_pair(path, meta)
                value = to_los_mm(ds["value"], meta.quantity, meta.units, meta.sign_convention,
                                  meta.wavelength_m)
                los.append(_on_grid(value, grid, Resampling.average))
                coh.append(_on_grid(ds["coherence"], grid, Resampling.average))
            count = len(found)
            out = xr.Dataset(
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
            write_zarr(out, sd.work / "pairs.zarr", mode="w")
        elif sd.done and (sd.final / "pairs.zarr").exists():
            with xr.open_zarr(sd.final / "pairs.zarr") as ds:
                count = ds.sizes["pair"]
    return StepOutput(step="stage-pairs", path=str(sd.final), digest=digest,
                      summary={"n_pairs": count})


@task(name="stage-gacos", cache_policy=STEP_CACHE, persist_result=True)
def stage_gacos(manifest: InputSet, staged_s1: StepOutput, work_dir: str) -> StepOutput:
    """GACOS ``.ztd`` grids of the Sentinel-1 and pair dates → ``gacos.zarr`` on the grid."""
    digest = digest_of("stage-gacos", manifest.digest, staged_s1.digest, code_digest())
    gacos_dir = manifest.location("gacos")
    summary: dict = {"n_dates": 0}
    with step_folder(work_dir, "stage-gacos", digest) as sd:
        if not sd.done and gacos_dir is not None:
            with xr.open_zarr(Path(staged_s1.path) / "sentinel1.zarr") as s1:
                dates = set(pd.DatetimeIndex(s1["reference_date"].values))
                dates |= set(pd.DatetimeIndex(s1["secondary_date"].values))
                grid = AnalysisGrid.from_attrs(s1.attrs)
            pairs_dir = manifest.location("pairs")
            if pairs_dir is not None:  # other sensors' pairs are corrected too, when possible
                for _, meta in find_pairs(pairs_dir):
                    dates |= {pd.Timestamp(meta.reference_date), pd.Timestamp(meta.secondary_date)}
            dates = sorted(dates)
            summary = write_gacos_store(gacos_dir, dates, grid, sd.work / "gacos.zarr",
                                        Path(staged_s1.path) / "sentinel1.zarr")
            (sd.work / "summary.json").write_text(json.dumps(summary))
        elif sd.done and (sd.final / "summary.json").exists():
            summary = json.loads((sd.final / "summary.json").read_text())
    return StepOutput(step="stage-gacos", path=str(sd.final), digest=digest, summary=summary)


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
    weights = np.cos(np.radians(era5["latitude"]))
    out = era5.weighted(weights).mean(("latitude", "longitude"))
    for name in out.data_vars:
        out[name].attrs = era5[name].attrs
    out.attrs = {**era5.attrs, "aggregation": "monthly, area-weighted basin mean"}
    return out


@task(name="stage-climate", cache_policy=STEP_CACHE, persist_result=True)
def stage_climate(manifest: InputSet, aoi: AreaOfInterest, work_dir: str) -> StepOutput:
    """ERA5-Land → ``era5_basin_monthly.nc`` (basin means, talik names and units)."""
    digest = digest_of("stage-climate", manifest.digest, aoi, code_digest())
    era5 = manifest.location("era5")
    with step_folder(work_dir, "stage-climate", digest) as sd:
        if not sd.done and era5 is not None:
            basin_mean_climate(era5, aoi.bbox).to_netcdf(sd.work / "era5_basin_monthly.nc")
    present = (sd.final / "era5_basin_monthly.nc").exists()
    return StepOutput(step="stage-climate", path=str(sd.final), digest=digest,
                      summary={"era5": present})
