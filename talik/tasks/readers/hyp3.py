"""Reader of ASF HyP3 INSAR_GAMMA products (Sentinel-1), as folders or as zips.

A product named ``S1xy_<ref>_<sec>_<pol><orbit><days>_INT<px>_G_<m>eF_<id>`` holds
``<name>_unw_phase.tif`` (radians; **positive = range increase, i.e. motion away from the
satellite**, the opposite of HyP3's displacement maps; 0 at the product's reference point and
0 as no-data), ``<name>_corr.tif`` (0–1), optionally ``_lv_theta.tif`` (look-vector elevation,
radians; incidence = π/2 − lv_theta), ``_lv_phi.tif``, ``_dem.tif``, ``_water_mask.tif``, and
``<name>.txt`` with ``Key: value`` lines. The conversion to displacement lives in
:func:`talik.science.interferogram.phase_to_los_mm`, nowhere else.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from rasterio.crs import CRS
from rasterio.transform import Affine

from talik.errors import InputError
from talik.tasks.readers.raster import raster_errors

__all__ = [
    "GRID_LAYERS",
    "HYP3_NAME",
    "Hyp3Product",
    "LayerGrid",
    "find_hyp3_products",
    "parse_parameter_file",
    "product_grid",
    "read_hyp3_layer",
]

HYP3_NAME = re.compile(
    r"^S1(?P<ref_platform>[A-D])(?P<sec_platform>[A-D])_"
    r"(?P<ref_time>\d{8}T\d{6})_(?P<sec_time>\d{8}T\d{6})_"
    r"(?P<pol>[VH]{2})(?P<orbit>[PRO])(?P<days>\d{3})_"
    r"INT(?P<pixel>\d+)_G_(?P<mask>[uw])(?P<extent>[ec])(?P<swath>[F123])_"
    r"(?P<id>[0-9A-F]{4})$"
)
LAYERS = ("unw_phase", "corr", "lv_theta", "lv_phi", "dem", "water_mask", "los_disp", "vert_disp")
REQUIRED_KEYS = ("Reference Granule", "Secondary Granule")
GRID_LAYERS = ("unw_phase", "corr", "lv_theta", "dem", "water_mask")
"""Layers that must share the product's grid (the ones staging reads, and its water mask)."""


@dataclass(frozen=True)
class Hyp3Product:
    """One HyP3 INSAR_GAMMA product found on disk.

    Attributes
    ----------
    name
        Product name (folder name without ``.zip``).
    location
        Folder or zip file holding the product.
    reference_date, secondary_date
        Acquisition dates (the reference is the earlier scene).
    pixel_m
        Pixel spacing from the name (80 or 40 m).
    layers
        Layer name → path readable by rasterio (``/vsizip/...`` inside zips).
    parameters
        The ``.txt`` parameter file as a dict of strings.
    """

    name: str
    location: Path
    reference_date: dt.date
    secondary_date: dt.date
    pixel_m: float
    layers: dict[str, str]
    parameters: dict[str, str]

    @property
    def span_days(self) -> int:
        """Temporal baseline, days."""
        return (self.secondary_date - self.reference_date).days


def parse_parameter_file(text: str, source: Path) -> dict[str, str]:
    """Parse HyP3's ``Key: value`` parameter file; refuse a file without the granule names."""
    params: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise InputError(source, f"line {lineno}", "'Key: value'", line)
        key, value = line.split(":", 1)
        params[key.strip()] = value.strip()
    for key in REQUIRED_KEYS:
        if key not in params:
            raise InputError(source, key, "a line 'Reference Granule: ...' and 'Secondary Granule: ...'")
    return params


def _parse_name(name: str, location: Path) -> re.Match[str]:
    match = HYP3_NAME.match(name)
    if match is None:
        raise InputError(
            location,
            "product name",
            "a HyP3 INSAR_GAMMA name like S1AA_20170101T000000_20170113T000000_VVP012_INT80_G_ueF_1A2B",
            name,
        )
    return match


def _product_from_folder(folder: Path) -> Hyp3Product:
    name = folder.name
    match = _parse_name(name, folder)
    layers = {
        layer: str(folder / f"{name}_{layer}.tif")
        for layer in LAYERS
        if (folder / f"{name}_{layer}.tif").exists()
    }
    txt = folder / f"{name}.txt"
    if not txt.exists():
        raise InputError(folder, f"{name}.txt", "the HyP3 parameter file in the product folder")
    params = parse_parameter_file(txt.read_text(), txt)
    return _make_product(name, folder, match, layers, params)


def _product_from_zip(path: Path) -> Hyp3Product:
    name = path.stem
    match = _parse_name(name, path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            txt_member = f"{name}/{name}.txt"
            if txt_member not in members:
                raise InputError(path, txt_member, "the HyP3 parameter file inside the zip")
            params = parse_parameter_file(zf.read(txt_member).decode(), path / txt_member)
    except zipfile.BadZipFile:
        raise InputError(path, "(file)", "a readable zip archive") from None
    layers = {
        layer: f"/vsizip/{path}/{name}/{name}_{layer}.tif"
        for layer in LAYERS
        if f"{name}/{name}_{layer}.tif" in members
    }
    return _make_product(name, path, match, layers, params)


def _make_product(name: str, location: Path, match: re.Match[str], layers: dict[str, str],
                  params: dict[str, str]) -> Hyp3Product:
    for required in ("unw_phase", "corr"):
        if required not in layers:
            raise InputError(location, f"{name}_{required}.tif", "a layer every product must have")
    ref = dt.datetime.strptime(match["ref_time"], "%Y%m%dT%H%M%S").date()
    sec = dt.datetime.strptime(match["sec_time"], "%Y%m%dT%H%M%S").date()
    if sec <= ref:
        raise InputError(location, "product name", "the secondary date after the reference date",
                         name)
    return Hyp3Product(name, location, ref, sec, float(match["pixel"]), layers, params)


def find_hyp3_products(folder: str | Path) -> list[Hyp3Product]:
    """All HyP3 INSAR_GAMMA products (folders or ``.zip``) directly inside ``folder``.

    A product present both as a folder and as a zip is read from the folder. Products are
    sorted by (reference, secondary) date; two products of the same pair are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "(folder)", "a folder of HyP3 INSAR_GAMMA products")
    found: dict[str, Hyp3Product] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and HYP3_NAME.match(entry.name):
            found[entry.name] = _product_from_folder(entry)
        elif entry.suffix == ".zip" and HYP3_NAME.match(entry.stem):
            found.setdefault(entry.stem, _product_from_zip(entry))
    products = sorted(found.values(), key=lambda p: (p.reference_date, p.secondary_date))
    seen: dict[tuple[dt.date, dt.date], str] = {}
    for p in products:
        key = (p.reference_date, p.secondary_date)
        if key in seen:
            raise InputError(folder, p.name, f"one product per pair; {seen[key]} has the same dates")
        seen[key] = p.name
    if not products:
        raise InputError(folder, "(contents)", "at least one HyP3 INSAR_GAMMA product folder or zip")
    return products


def read_hyp3_layer(product: Hyp3Product, layer: str) -> xr.DataArray:
    """Read one layer of a product as a float32 DataArray ``(y, x)`` with no-data as NaN.

    Units: ``unw_phase`` radians (positive away from the satellite), ``corr`` 0–1,
    ``lv_theta``/``lv_phi`` radians, ``dem`` metres. The CRS and transform are attached
    (``.rio``).
    """
    if layer not in product.layers:
        raise InputError(product.location, f"{product.name}_{layer}.tif", "this layer in the product")
    path = product.layers[layer]
    with raster_errors(path, "open"):
        src = rasterio.open(path)
    with src, raster_errors(path, "read band 1"):
        data = src.read(1, masked=True).astype(np.float32).filled(np.nan)
        transform, crs = src.transform, src.crs
    if crs is None:
        raise InputError(path, "CRS", "a georeferenced GeoTIFF", "no CRS")
    ny, nx = data.shape
    da = xr.DataArray(
        data,
        dims=("y", "x"),
        coords={"y": transform.f + transform.e * (np.arange(ny) + 0.5),
                "x": transform.c + transform.a * (np.arange(nx) + 0.5)},
        attrs={"units": {"unw_phase": "rad", "corr": "1", "dem": "m"}.get(layer, "rad"),
               "product": product.name, "layer": layer},
    )
    return da.rio.write_crs(crs).rio.write_transform(transform)


@dataclass(frozen=True)
class LayerGrid:
    """Where a raster's pixels are: CRS, affine transform and shape ``(height, width)``."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units (north-up rasters)."""
        t = self.transform
        left, top = t.c, t.f
        right, bottom = left + t.a * self.width, top + t.e * self.height
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)

    def same_as(self, other: LayerGrid) -> bool:
        """Same CRS and shape, and a transform equal to within a thousandth of a pixel."""
        tolerance = 1e-3 * max(abs(self.transform.a), abs(self.transform.e))
        return (self.crs == other.crs and (self.height, self.width) == (other.height, other.width)
                and self.transform.almost_equals(other.transform, precision=tolerance))

    def describe(self) -> str:
        """A short human-readable form for messages."""
        t = self.transform
        return (f"{self.crs}, origin ({t.c:.1f}, {t.f:.1f}), pixel {t.a:g}×{-t.e:g}, "
                f"{self.height}×{self.width} px")


def _layer_grid(path: str) -> LayerGrid:
    with raster_errors(path, "open"), rasterio.open(path) as src:
        if src.crs is None:
            raise InputError(path, "CRS", "a georeferenced GeoTIFF", "no CRS")
        return LayerGrid(src.crs, src.transform, src.height, src.width)


def product_grid(product: Hyp3Product) -> LayerGrid:
    """The grid of a product, after checking that its layers share it.

    Opens (headers only) every layer of :data:`GRID_LAYERS` the product has; refuses a layer
    that cannot be opened or has no CRS, and a product whose layers differ in CRS, transform
    or shape (naming the layers), since staging pastes the layers pixel for pixel.
    """
    grids = {layer: _layer_grid(product.layers[layer]) for layer in GRID_LAYERS
             if layer in product.layers}
    ref = grids["unw_phase"]
    differing = [f"{layer}: {g.describe()}" for layer, g in grids.items() if not g.same_as(ref)]
    if differing:
        raise InputError(product.location, "layer grids",
                         f"every layer on the grid of {product.name}_unw_phase.tif "
                         f"({ref.describe()})", "; ".join(differing))
    return ref
