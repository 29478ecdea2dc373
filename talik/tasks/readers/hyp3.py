"""Reader of ASF HyP3 Sentinel-1 interferograms (INSAR_GAMMA and ISCE2 burst products).

Three product kinds are recognised by their names (folders, or zips holding one folder):

* ``INSAR_GAMMA`` (GAMMA, whole IW scenes):
  ``S1xy_<ref>T<time>_<sec>T<time>_<pol><orbit><days>_INT<px>_G_<m>eF_<id>``;
* ``INSAR_ISCE_BURST`` (ISCE2, one burst): ``S1_<burst id>_IW<swath>_<ref>_<sec>_<pol>_INT<px>_<id>``;
* ``INSAR_ISCE_MULTI_BURST`` (ISCE2, 1–15 bursts merged), hyp3-isce2 ≥ 4.0:
  ``S1_<path>_<id>s1n<nn>-<id>s2n<nn>-<id>s3n<nn>_IW_<ref>_<sec>_<pol>_INT<px>_<id>``; earlier
  releases named it by platform, path and a lon/lat box:
  ``S1A_<path>_E053_1_N27_3_E054_1_N27_8_<ref>_<sec>_<pol>_INT<px>_<id>``.

Every kind holds ``<name>_unw_phase.tif`` (radians; **positive = range increase, i.e. motion
away from the satellite** for GAMMA and ISCE2 alike, the opposite of HyP3's displacement maps;
0 at the product's reference point and 0 as no-data), ``<name>_corr.tif`` (0–1), optionally
``_lv_theta.tif`` (look-vector elevation, radians; incidence = π/2 − lv_theta), ``_lv_phi.tif``,
``_dem.tif`` (m), ``_water_mask.tif``, and ``<name>.txt`` with ``Key: value`` lines; ISCE2
products add ``_conncomp.tif`` (SNAPHU connected components, integers; 0 = not unwrapped or
not trusted, also the file's no-data) and ``_wrapped_phase.tif`` (radians). Their
``Reference Granule`` / ``Secondary Granule`` lines list the burst granules, separated by
``", "``. A layer a product lacks is simply absent from :attr:`Hyp3Product.layers`. The
conversion to displacement lives in :func:`talik.science.interferogram.phase_to_los_mm`,
nowhere else.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from rasterio.crs import CRS
from rasterio.transform import Affine

from talik.errors import InputError
from talik.tasks.log import step_logger
from talik.tasks.readers.raster import raster_errors

__all__ = [
    "GRID_LAYERS",
    "HeaderGrids",
    "HYP3_NAME",
    "product_dates",
    "ISCE_BURST_NAME",
    "ISCE_MULTI_BURST_LEGACY_NAME",
    "ISCE_MULTI_BURST_NAME",
    "KINDS",
    "Hyp3Product",
    "LayerGrid",
    "find_hyp3_products",
    "parse_parameter_file",
    "product_grid",
    "product_kind",
    "read_hyp3_layer",
]

HYP3_NAME = re.compile(
    r"^S1(?P<ref_platform>[A-D])(?P<sec_platform>[A-D])_"
    r"(?P<ref_time>\d{8}T\d{6})_(?P<sec_time>\d{8}T\d{6})_"
    r"(?P<pol>[VH]{2})(?P<orbit>[PRO])(?P<days>\d{3})_"
    r"INT(?P<pixel>\d+)_G_(?P<mask>[uw])(?P<extent>[ec])(?P<swath>[F123])_"
    r"(?P<id>[0-9A-F]{4})$"
)
"""An INSAR_GAMMA product name (the dates carry the acquisition times)."""
ISCE_BURST_NAME = re.compile(
    r"^S1_(?P<burst_id>\d{6})_IW(?P<swath>[123])_(?P<ref_time>\d{8})_(?P<sec_time>\d{8})_"
    r"(?P<pol>[VH]{2})_INT(?P<pixel>\d+)_(?P<id>[0-9A-F]{4})$"
)
"""An INSAR_ISCE_BURST product name: relative burst id, sub-swath, dates (days only)."""
ISCE_MULTI_BURST_NAME = re.compile(
    r"^S1_(?P<path>\d{3})_"
    r"(?P<s1_first>\d{6})s1n(?P<s1_count>\d{2})-(?P<s2_first>\d{6})s2n(?P<s2_count>\d{2})-"
    r"(?P<s3_first>\d{6})s3n(?P<s3_count>\d{2})_IW_"
    r"(?P<ref_time>\d{8})_(?P<sec_time>\d{8})_(?P<pol>[VH]{2})_INT(?P<pixel>\d+)_(?P<id>[0-9A-F]{4})$"
)
"""An INSAR_ISCE_MULTI_BURST name (hyp3-isce2 ≥ 4.0): first burst id and burst count per sub-swath."""
ISCE_MULTI_BURST_LEGACY_NAME = re.compile(
    r"^S1(?P<platform>[A-D])_(?P<path>\d{3})_"
    r"(?P<west>[EW]\d{3}_\d)_(?P<south>[NS]\d{2}_\d)_(?P<east>[EW]\d{3}_\d)_(?P<north>[NS]\d{2}_\d)_"
    r"(?P<ref_time>\d{8})_(?P<sec_time>\d{8})_(?P<pol>[VH]{2})_INT(?P<pixel>\d+)_(?P<id>[0-9A-F]{4})$"
)
"""An INSAR_ISCE_MULTI_BURST name of hyp3-isce2 < 4.0: platform, path and lon/lat box (degrees)."""
KINDS = ("INSAR_GAMMA", "INSAR_ISCE_BURST", "INSAR_ISCE_MULTI_BURST")
"""The HyP3 job types whose products this reader knows."""
# (kind, pattern, format of the name's dates); the first matching pattern wins.
_SCHEMES = (
    ("INSAR_GAMMA", HYP3_NAME, "%Y%m%dT%H%M%S"),
    ("INSAR_ISCE_BURST", ISCE_BURST_NAME, "%Y%m%d"),
    ("INSAR_ISCE_MULTI_BURST", ISCE_MULTI_BURST_NAME, "%Y%m%d"),
    ("INSAR_ISCE_MULTI_BURST", ISCE_MULTI_BURST_LEGACY_NAME, "%Y%m%d"),
)
# Anything starting like an ISCE2 product (``S1_123…``, ``S1A_064_…``) is meant as one: a folder
# or zip so named that fits no scheme is refused rather than skipped.
_ISCE_LIKE = re.compile(r"^S1[A-D]?_\d{3}")
_ISCE_EXAMPLES = ("an INSAR_ISCE_BURST name like S1_136231_IW2_20240101_20240113_VV_INT80_1A2B or "
                  "an INSAR_ISCE_MULTI_BURST name like "
                  "S1_064_136231s1n02-136232s2n03-000000s3n00_IW_20240101_20240113_VV_INT80_1A2B "
                  "(or, before hyp3-isce2 4.0, "
                  "S1A_064_E053_1_N27_3_E054_1_N27_8_20200604_20200616_VV_INT80_7EB5)")
# Granules named in an ISCE2 product's parameter file: bursts, or (older multi-burst products)
# whole IW SLC scenes.
BURST_GRANULE = re.compile(
    r"^S1_(?P<burst_id>\d{6})_IW(?P<swath>[123])_(?P<time>\d{8}T\d{6})_(?P<pol>[VH]{2})_"
    r"(?P<id>[0-9A-F]{4})-BURST$"
)
SLC_GRANULE = re.compile(
    r"^S1[A-D]_IW_SLC__1S[SD](?P<pol>[VH])_(?P<time>\d{8}T\d{6})_\d{8}T\d{6}_\d{6}_[0-9A-F]{6}_[0-9A-F]{4}$"
)
LAYERS = ("unw_phase", "corr", "conncomp", "wrapped_phase", "lv_theta", "lv_phi", "dem", "water_mask",
          "los_disp", "vert_disp")
REQUIRED_KEYS = ("Reference Granule", "Secondary Granule")
GRID_LAYERS = ("unw_phase", "corr", "conncomp", "lv_theta", "dem", "water_mask")
"""Layers that must share the product's grid (the ones staging reads, and its water mask)."""


@dataclass(frozen=True)
class Hyp3Product:
    """One HyP3 interferogram product found on disk.

    Attributes
    ----------
    name
        Product name (folder name without ``.zip``).
    location
        Folder or zip file holding the product.
    reference_date, secondary_date
        Acquisition dates (the reference is the earlier scene), from the name.
    pixel_m
        Pixel spacing from the name's ``INT<px>``, metres (80, 40 or 20).
    layers
        Layer name → path readable by rasterio (``/vsizip/...`` inside zips); only the layers
        the product has (``conncomp`` in ISCE2 products only).
    parameters
        The ``.txt`` parameter file as a dict of strings.
    kind
        HyP3 job type: one of :data:`KINDS`.
    reference_granules, secondary_granules
        The granules of the ``Reference Granule`` / ``Secondary Granule`` lines (one for
        INSAR_GAMMA and INSAR_ISCE_BURST, one per burst for INSAR_ISCE_MULTI_BURST).
    """

    name: str
    location: Path
    reference_date: dt.date
    secondary_date: dt.date
    pixel_m: float
    layers: dict[str, str]
    parameters: dict[str, str]
    kind: str = "INSAR_GAMMA"
    reference_granules: tuple[str, ...] = ()
    secondary_granules: tuple[str, ...] = ()

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


def product_kind(name: str) -> tuple[str, re.Match[str]] | None:
    """The HyP3 job type a product name follows and its match, or None for no known scheme."""
    for kind, pattern, _ in _SCHEMES:
        match = pattern.match(name)
        if match is not None:
            return kind, match
    return None


def product_dates(name: str) -> tuple[dt.date, dt.date] | None:
    """The (reference, secondary) acquisition dates a product name states.

    None if the name follows no known scheme or states no valid date
    (:func:`find_hyp3_products` says why).
    """
    for _, pattern, fmt in _SCHEMES:
        match = pattern.match(name)
        if match is not None:
            try:
                return (dt.datetime.strptime(match["ref_time"], fmt).date(),
                        dt.datetime.strptime(match["sec_time"], fmt).date())
            except ValueError:
                return None
    return None


def _is_product_name(name: str) -> bool:
    """Whether a folder (or zip stem) is taken as a product: a known scheme or ISCE2-like."""
    return product_kind(name) is not None or _ISCE_LIKE.match(name) is not None


def _parse_name(name: str, location: Path) -> tuple[str, re.Match[str]]:
    found = product_kind(name)
    if found is None:
        if _ISCE_LIKE.match(name):
            raise InputError(location, "product name", _ISCE_EXAMPLES, name)
        raise InputError(
            location,
            "product name",
            "a HyP3 INSAR_GAMMA name like S1AA_20170101T000000_20170113T000000_VVP012_INT80_G_ueF_1A2B",
            name,
        )
    return found


def _product_from_folder(folder: Path) -> Hyp3Product:
    name = folder.name
    kind, match = _parse_name(name, folder)
    layers = {
        layer: str(folder / f"{name}_{layer}.tif")
        for layer in LAYERS
        if (folder / f"{name}_{layer}.tif").exists()
    }
    txt = folder / f"{name}.txt"
    if not txt.exists():
        raise InputError(folder, f"{name}.txt", "the HyP3 parameter file in the product folder")
    params = parse_parameter_file(txt.read_text(), txt)
    return _make_product(name, folder, kind, match, layers, params, txt)


def _product_from_zip(path: Path) -> Hyp3Product:
    name = path.stem
    kind, match = _parse_name(name, path)
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
    return _make_product(name, path, kind, match, layers, params, path / txt_member)


def _name_date(text: str, fmt: str, location: Path, name: str, which: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError:
        raise InputError(location, f"product name ({which} date)", "a valid calendar date",
                         name) from None


def _granule_list(value: str) -> tuple[str, ...]:
    """The granule names of one ``Reference/Secondary Granule`` value (``", "``-separated)."""
    return tuple(g.strip() for g in value.split(",") if g.strip())


def _check_isce_granules(kind: str, match: re.Match[str], ref: dt.date, sec: dt.date,
                         granules: dict[str, tuple[str, ...]], txt: Path) -> None:
    """Refuse an ISCE2 parameter file whose granules do not fit the product's name.

    Every granule must be a burst name (or, for a multi-burst product, an IW SLC name); a
    single-burst product names one burst per date, of the name's burst id and sub-swath; a
    multi-burst product as many reference as secondary bursts (as many as its name counts);
    the earliest reference and the latest secondary granule carry the name's two dates.
    """
    legacy = kind == "INSAR_ISCE_MULTI_BURST" and "platform" in match.groupdict()
    for key, names in granules.items():
        value = ", ".join(names)
        if not names:
            raise InputError(txt, key, "one or more granule names separated by ', '", value)
        if kind == "INSAR_ISCE_BURST" and len(names) != 1:
            raise InputError(txt, key, "exactly one burst granule (INSAR_ISCE_BURST)", value)
        for g in names:
            m = BURST_GRANULE.match(g) or (SLC_GRANULE.match(g) if legacy else None)
            if m is None:
                raise InputError(txt, key, "Sentinel-1 burst granule names like "
                                 "S1_136231_IW2_20200604T022312_VV_7C85-BURST", g)
            if m["pol"] not in match["pol"]:
                raise InputError(txt, key, f"granules of the product's polarisation {match['pol']}", g)
            if kind == "INSAR_ISCE_BURST" and (m["burst_id"], m["swath"]) != (match["burst_id"],
                                                                               match["swath"]):
                raise InputError(txt, key, f"the burst of the product name ({match['burst_id']}_IW"
                                 f"{match['swath']})", g)
    ref_g, sec_g = granules["Reference Granule"], granules["Secondary Granule"]
    if len(ref_g) != len(sec_g):
        raise InputError(txt, "Secondary Granule", f"as many secondary as reference granules "
                         f"({len(ref_g)})", f"{len(sec_g)} granules")
    if kind == "INSAR_ISCE_MULTI_BURST" and not legacy:
        counted = sum(int(match[f"s{i}_count"]) for i in (1, 2, 3))
        if counted != len(ref_g):
            raise InputError(txt, "Reference Granule", f"the {counted} bursts the product name counts",
                             f"{len(ref_g)} granules")

    def day(g: str) -> dt.date:
        m = BURST_GRANULE.match(g) or SLC_GRANULE.match(g)
        return dt.datetime.strptime(m["time"][:8], "%Y%m%d").date()

    for key, found, expected in (("Reference Granule", min(map(day, ref_g)), ref),
                                 ("Secondary Granule", max(map(day, sec_g)), sec)):
        if found != expected:
            raise InputError(txt, key, f"granules acquired on the product name's date {expected}",
                             f"{found} ({', '.join(granules[key])})")


def _check_gamma_parameters(ref: dt.date, sec: dt.date, granules: dict[str, tuple[str, ...]],
                            params: dict[str, str], txt: Path) -> None:
    """Refuse an INSAR_GAMMA parameter file that does not describe the named product.

    Its granules must be Sentinel-1 IW SLC names acquired on the name's dates (the earliest
    reference and latest secondary one); ``UTC time`` (seconds of the day) and ``Baseline``
    (perpendicular baseline, m) must be numbers in range when present — a garbled value would
    otherwise become NaN silently.
    """
    for key, expected in (("Reference Granule", ref), ("Secondary Granule", sec)):
        names = granules[key]
        if not names:
            raise InputError(txt, key, "a Sentinel-1 SLC granule name", params[key])
        days = []
        for g in names:
            m = SLC_GRANULE.match(g)
            if m is None:
                raise InputError(txt, key, "Sentinel-1 IW SLC granule names like "
                                 "S1A_IW_SLC__1SDV_20150413T232410_20150413T232437_005471_0316BB_1846",
                                 g)
            days.append(dt.datetime.strptime(m["time"][:8], "%Y%m%d").date())
        found = min(days) if key == "Reference Granule" else max(days)
        if found != expected:
            raise InputError(txt, key, f"a granule acquired on the product name's date {expected}",
                             f"{found} ({', '.join(names)})")
    for key, low, high, unit in (("UTC time", 0.0, 86400.0, "seconds of the day"),
                                 ("Baseline", -5000.0, 5000.0, "m")):
        if key not in params:
            continue
        try:
            value = float(params[key])
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise InputError(txt, key, f"a number from {low:g} to {high:g} ({unit})", params[key])


def _make_product(name: str, location: Path, kind: str, match: re.Match[str], layers: dict[str, str],
                  params: dict[str, str], txt: Path) -> Hyp3Product:
    for required in ("unw_phase", "corr"):
        if required not in layers:
            raise InputError(location, f"{name}_{required}.tif", "a layer every product must have")
    fmt = next(f for k, pattern, f in _SCHEMES if k == kind and pattern.match(name))
    ref = _name_date(match["ref_time"], fmt, location, name, "reference")
    sec = _name_date(match["sec_time"], fmt, location, name, "secondary")
    if sec <= ref:
        raise InputError(location, "product name", "the secondary date after the reference date",
                         name)
    granules = {key: _granule_list(params[key]) for key in REQUIRED_KEYS}
    if kind != "INSAR_GAMMA":
        _check_isce_granules(kind, match, ref, sec, granules, txt)
    else:
        _check_gamma_parameters(ref, sec, granules, params, txt)
    return Hyp3Product(name, location, ref, sec, float(match["pixel"]), layers, params, kind,
                       granules["Reference Granule"], granules["Secondary Granule"])


def _kinds_text(products: list[Hyp3Product]) -> str:
    counts = {k: sum(p.kind == k for p in products) for k in KINDS}
    return ", ".join(f"{k} ({n})" for k, n in counts.items() if n)


def _check_mixed_kinds(folder: Path, products: list[Hyp3Product]) -> None:
    """Accept products of several kinds only when they all sit on one pixel lattice.

    One lattice: the same CRS and pixel size, and origins a whole number of pixels apart (to a
    thousandth of a pixel), so that staging pastes every product in place. The extents may
    differ. Refused otherwise, naming the kinds and the first product off the first one's
    lattice; accepted with the kinds logged.
    """
    grids = [product_grid(p) for p in products]
    first, g0 = products[0], grids[0]
    ax, ay = abs(g0.transform.a), abs(g0.transform.e)
    for p, g in zip(products, grids, strict=True):
        t = g.transform
        same = (g.crs == g0.crs and np.isclose(abs(t.a), ax, rtol=1e-6)
                and np.isclose(abs(t.e), ay, rtol=1e-6))
        if same:
            cols, rows = (t.c - g0.transform.c) / ax, (t.f - g0.transform.f) / ay
            same = abs(cols - round(cols)) < 1e-3 and abs(rows - round(rows)) < 1e-3
        if not same:
            raise InputError(
                folder, "product kinds",
                "products of one HyP3 job type, or products of several types that all share one "
                "grid (same CRS, pixel size and pixel lattice)",
                f"{_kinds_text(products)}; {p.name} ({p.kind}) is on {g.describe()}, "
                f"{first.name} ({first.kind}) on {g0.describe()}")
    step_logger().info("%s mixes HyP3 job types %s; accepted: all %d products share one grid "
                       "(%s, pixel %g m)", folder, _kinds_text(products), len(products), g0.crs, ax)


def find_hyp3_products(folder: str | Path, until: dt.date | None = None) -> list[Hyp3Product]:
    """All HyP3 interferogram products (folders or ``.zip``) directly inside ``folder``.

    With ``until``, only those whose secondary (later) date is on or before it.

    INSAR_GAMMA, INSAR_ISCE_BURST and INSAR_ISCE_MULTI_BURST products are recognised by name
    (see the module docstring); a folder or zip named like an ISCE2 product but fitting no
    scheme is refused. A product present both as a folder and as a zip is read from the
    folder. Products of several job types are refused unless all share one pixel lattice
    (:func:`_check_mixed_kinds`). Products are sorted by (reference, secondary) date; two
    products of the same pair are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "(folder)", "a folder of HyP3 INSAR_GAMMA products")
    found: dict[str, Hyp3Product] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and _is_product_name(entry.name):
            found[entry.name] = _product_from_folder(entry)
        elif entry.suffix == ".zip" and _is_product_name(entry.stem):
            found.setdefault(entry.stem, _product_from_zip(entry))
    products = sorted((p for p in found.values() if until is None or p.secondary_date <= until),
                      key=lambda p: (p.reference_date, p.secondary_date))
    if len({p.kind for p in products}) > 1:  # first: a mix explains duplicate pairs best
        _check_mixed_kinds(folder, products)
    seen: dict[tuple[dt.date, dt.date], str] = {}
    for p in products:
        key = (p.reference_date, p.secondary_date)
        if key in seen:
            raise InputError(folder, p.name, f"one product per pair; {seen[key]} has the same dates")
        seen[key] = p.name
    if not products:
        raise InputError(folder, "(contents)", "at least one HyP3 INSAR_GAMMA product folder or zip "
                         "(or an INSAR_ISCE_BURST / INSAR_ISCE_MULTI_BURST one)"
                         + (f" whose later date is on or before {until} (until)" if until else ""))
    return products


def read_hyp3_layer(product: Hyp3Product, layer: str) -> xr.DataArray:
    """Read one layer of a product as a float32 DataArray ``(y, x)`` with no-data as NaN.

    Units: ``unw_phase`` radians (positive away from the satellite), ``corr`` 0–1,
    ``lv_theta``/``lv_phi`` radians, ``dem`` metres, ``conncomp`` component numbers (unitless;
    its 0, "not unwrapped", is also its no-data and so reads as NaN). The CRS and transform are attached
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
        attrs={"units": {"unw_phase": "rad", "corr": "1", "dem": "m", "conncomp": "1"}.get(layer, "rad"),
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


_SCALE, _TIEPOINT, _TRANSFORMATION, _GEOKEYS = 33550, 33922, 34264, 34735
_GEO_PARAMS = (34736, 34737)
"""TIFF tags of GeoTIFF georeferencing: ModelPixelScale, ModelTiepoint, ModelTransformation,
GeoKeyDirectory, and the keys' double and ASCII parameters."""


@dataclass(frozen=True)
class _GeoTags:
    """A GeoTIFF's georeferencing tags as stored, and its size (see :class:`HeaderGrids`)."""

    geokeys: tuple
    scale: tuple
    tiepoint: tuple
    height: int
    width: int

    @staticmethod
    def read(path: str) -> _GeoTags | None:
        """The tags of a local GeoTIFF, or None when they cannot be compared this way."""
        import tifffile

        if path.startswith("/vsi") or Path(path + ".aux.xml").exists():
            return None  # inside an archive or remote, or GDAL metadata beside the file
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                tags = page.tags
                if _TRANSFORMATION in tags or not {_SCALE, _TIEPOINT, _GEOKEYS} <= set(tags.keys()):
                    return None
                tiepoint = tuple(float(v) for v in tags[_TIEPOINT].value)
                if len(tiepoint) != 6:
                    return None
                keys = (tuple(tags[_GEOKEYS].value),
                        *(repr(tags[t].value) if t in tags else None for t in _GEO_PARAMS))
                return _GeoTags(keys, tuple(float(v) for v in tags[_SCALE].value), tiepoint,
                                int(page.imagelength), int(page.imagewidth))
        except Exception:  # noqa: BLE001 (any failure: GDAL reads the file and says why)
            return None


class HeaderGrids:
    """Layer grids of many GeoTIFFs, most without opening them with GDAL.

    GDAL's open of a GeoTIFF costs ~0.7 ms, mostly building its CRS; a grid check reads the
    headers of every layer of every product (~2,500 files for 500 products). Files whose
    GeoTIFF keys and pixel scale are byte for byte those of the first file GDAL opened have
    its CRS and the same transform but for the shift of their tiepoint, so only their TIFF
    tags are read (tifffile, ~0.15 ms). Anything else — other keys, a rotation, a tiepoint
    at another raster position than the first file's, a ``.aux.xml`` beside the file, an
    archive member, a tag that does not parse — is opened by GDAL (:func:`_layer_grid`),
    which also reports the errors. A file is not decoded here: damage past its tags (its
    pixel data, an unknown codec) is found when staging reads it; a layer staging never
    reads (the water mask; the DEM and look angles of products other than the one they are
    taken from) is therefore not checked beyond its tags.
    """

    def __init__(self) -> None:
        self._template: tuple[_GeoTags, LayerGrid] | None = None

    def __call__(self, path: str) -> LayerGrid:
        """The grid of the GeoTIFF at ``path`` (errors as :func:`_layer_grid` raises them)."""
        tags = _GeoTags.read(path)
        if self._template is not None and tags is not None:
            first, grid = self._template
            if (tags.geokeys == first.geokeys and tags.scale == first.scale
                    and tags.tiepoint[:3] == first.tiepoint[:3]):
                shift = Affine.translation(tags.tiepoint[3] - first.tiepoint[3],
                                           tags.tiepoint[4] - first.tiepoint[4])
                return LayerGrid(grid.crs, shift * grid.transform, tags.height, tags.width)
        grid = _layer_grid(path)
        if self._template is None and tags is not None:
            self._template = (tags, grid)
        return grid


def product_grid(product: Hyp3Product, grid_of: Callable[[str], LayerGrid] | None = None
                 ) -> LayerGrid:
    """The grid of a product, after checking that its layers share it.

    Opens (headers only) every layer of :data:`GRID_LAYERS` the product has; refuses a layer
    that cannot be opened or has no CRS, and a product whose layers differ in CRS, transform
    or shape (naming the layers), since staging pastes the layers pixel for pixel.
    ``grid_of`` reads one layer's grid (a :class:`HeaderGrids` shared by many products; by
    default GDAL opens each layer).
    """
    grid_of = grid_of or _layer_grid
    grids = {layer: grid_of(product.layers[layer]) for layer in GRID_LAYERS
             if layer in product.layers}
    ref = grids["unw_phase"]
    differing = [f"{layer}: {g.describe()}" for layer, g in grids.items() if not g.same_as(ref)]
    if differing:
        raise InputError(product.location, "layer grids",
                         f"every layer on the grid of {product.name}_unw_phase.tif "
                         f"({ref.describe()})", "; ".join(differing))
    return ref
