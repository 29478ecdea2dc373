"""MODIS NDVI, SWIR albedo and daytime LST stacks fetched from Google Earth Engine.

:func:`fetch_modis` writes, per product and calendar year, the stack the MODIS reader
(:mod:`talik.tasks.readers.modis`) and the demo world use::

    <source.modis_dir>/MOD13Q1_NDVI_<year>.tif
    <source.modis_dir>/MCD43A3_Albedo_BSA_Band7_<year>.tif
    <source.modis_dir>/MOD11A1_LST_Day_1km_<year>.tif

(the prefix is the last part of the configured collection ID). Each file holds one band per
image date (band description ``YYYY-MM-DD``, UTC), the product's **raw integers** with its
fill value as no-data (masked pixels are filled server-side with ``unmask``), and the tags
``product``, ``band``, ``scale_factor`` (the reader's scale for the band), ``collection`` and
``source=earthengine``; the reader applies the scale.

Grid
    EPSG:4326, square pixels of ``scale_m / 111 195`` degrees (metres per degree of latitude
    on the MODIS sphere; 500 m → 0.004497°), origin snapped to whole pixels (multiples of the
    step), covering ``aoi.bbox``. EPSG:4326 because every other talik raster on disk is in it;
    the server resamples from the sinusoidal projection (nearest neighbour, EE's default).
Requests
    ``ee.data.computePixels`` (wire format NPY: a structured array, one field per band),
    tiled so that each answer, estimated as ``pixels × bands × (bytes per value + 1 mask
    byte)`` plus the NPY header, stays under ``ingest.earthengine.max_request_mib`` MiB.
    An answer "user memory limit exceeded" / "request payload size exceeds the limit" /
    "computation timed out" splits the tile in two and asks again; "too many concurrent
    aggregations", 429 and 5xx are retried with backoff (:func:`common.retrying`); at most
    ``max_concurrent`` requests are in flight. The library's own retries are switched off
    (``ee.data.setMaxRetries(0)``) so that only the configured policy applies.
Resume
    A stack is written to ``.<name>.partial`` and renamed into place, then recorded in the
    raw-store manifest with its query (collection, band, year, dates, bbox, scale, grid). A
    stack whose file matches its manifest entry and whose query is unchanged is not fetched
    again; when only new dates appeared (the current year), the old bands are copied from
    the file and only the new dates are fetched.

Earth Engine's client keeps one global state, so one :func:`fetch_modis` runs per process at
a time (a lock enforces it).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talik.config import EarthEngineOptions, LocalSource, StudyConfig
from talik.tasks.ingest.common import (
    CREDENTIALS,
    TRANSIENT_STATUS,
    IngestError,
    MissingCredentialError,
    PermanentServiceError,
    TransientServiceError,
    redact,
    register_secret,
    require_credential,
    retry_after_seconds,
    retrying,
)
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.readers.modis import MODIS_PRODUCTS

__all__ = ["M_PER_DEGREE", "PRODUCTS", "Grid", "ModisProduct", "fetch_modis", "plan_tiles",
           "request_bytes"]

logger = logging.getLogger("talik.ingest")
SERVICE = "earthengine"
CREDENTIAL_KEY = "ee_service_account"

#: Metres per degree of latitude on the MODIS sphere (radius 6 371 007.181 m).
M_PER_DEGREE = 2 * math.pi * 6371007.181 / 360.0
#: Largest number of bands asked for in one computePixels request.
MAX_BANDS_PER_REQUEST = 1024
#: Largest grid side asked for in one request, pixels.
MAX_GRID_SIDE = 32768
#: Tiles are multiples of this many pixels (the GeoTIFF block size) where the grid allows.
BLOCK = 256
#: Timeout of one Earth Engine call, seconds (interactive computations stop at about 5 min).

_SPLIT_MESSAGES = ("user memory limit exceeded", "request payload size exceeds the limit",
                   "total request size", "computation timed out", "too many pixels",
                   "response size exceeds")
_TRANSIENT_MESSAGES = ("too many concurrent aggregations", "too many requests", "rate limit",
                       "concurrency limit", "service unavailable", "backend error",
                       "internal error", "deadline exceeded", "please try again")
_AUTH_MESSAGES = ("invalid authentication credentials", "unauthenticated", "permission denied",
                  "caller does not have required permission", "not registered to use earth engine",
                  "not signed up for earth engine")

_RUN_LOCK = threading.Lock()


# ------------------------------------------------------------------------------- products
@dataclass(frozen=True)
class ModisProduct:
    """One MODIS layer fetched: where it lives in Earth Engine and how it is stored."""

    role: str            # key in the summary: 'ndvi', 'albedo', 'lst'
    collection_field: str  # field of EarthEngineOptions holding the collection ID
    band: str            # band name in the collection (and the reader's 'band' tag)
    fill: int            # raw fill value written where the server has no data
    dtype: str           # numpy dtype of the raw integers
    cast: str            # ee.Image method giving that type server-side

    def collection(self, options: EarthEngineOptions) -> str:
        """The Earth Engine collection ID configured for this product."""
        return str(getattr(options, self.collection_field))

    def file_name(self, options: EarthEngineOptions, year: int) -> str:
        """``<product>_<band>_<year>.tif``, the name the reader and demo world use."""
        return f"{self.collection(options).rstrip('/').split('/')[-1]}_{self.band}_{year}.tif"

    @property
    def scale_factor(self) -> float:
        """The reader's scale for the raw integers (physical unit per count)."""
        return MODIS_PRODUCTS[self.band][0]

    @property
    def bytes_per_value(self) -> int:
        """Bytes of one raw value."""
        return np.dtype(self.dtype).itemsize


PRODUCTS: tuple[ModisProduct, ...] = (
    ModisProduct("ndvi", "ndvi_collection", "NDVI", -3000, "int16", "toInt16"),
    ModisProduct("albedo", "albedo_collection", "Albedo_BSA_Band7", 32767, "int16", "toInt16"),
    ModisProduct("lst", "lst_collection", "LST_Day_1km", 0, "uint16", "toUint16"),
)


# ----------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """A north-up EPSG:4326 pixel grid whose origin is a whole number of steps.

    ``step`` is the pixel size in degrees; ``col0``/``row0`` are the origin (west edge,
    north edge) in steps from longitude 0 / latitude 0.
    """

    step: float
    col0: int
    row0: int
    width: int
    height: int

    @classmethod
    def covering(cls, bbox: tuple[float, float, float, float], scale_m: float) -> Grid:
        """The grid of ``scale_m`` metre pixels covering ``bbox`` (west, south, east, north, °)."""
        step = round(scale_m / M_PER_DEGREE, 10)
        west, south, east, north = bbox
        col0 = math.floor(round(west / step, 6))
        row0 = math.ceil(round(north / step, 6))
        width = max(1, math.ceil(round(east / step, 6)) - col0)
        height = max(1, row0 - math.floor(round(south / step, 6)))
        return cls(step, col0, row0, width, height)

    @property
    def west(self) -> float:
        """West edge, degrees."""
        return self.col0 * self.step

    @property
    def north(self) -> float:
        """North edge, degrees."""
        return self.row0 * self.step

    def transform(self) -> Any:
        """The rasterio affine transform of the grid."""
        from rasterio.transform import from_origin

        return from_origin(self.west, self.north, self.step, self.step)

    def ee_grid(self, row: int, col: int, rows: int, cols: int) -> dict[str, Any]:
        """The computePixels ``grid`` of the window starting at pixel (``row``, ``col``)."""
        return {"dimensions": {"width": cols, "height": rows},
                "affineTransform": {"scaleX": self.step, "shearX": 0.0,
                                    "translateX": (self.col0 + col) * self.step,
                                    "shearY": 0.0, "scaleY": -self.step,
                                    "translateY": (self.row0 - row) * self.step},
                "crsCode": "EPSG:4326"}

    def describe(self) -> dict[str, Any]:
        """JSON description (crs, step in degrees, west/north edges in degrees, size in pixels)."""
        return {"crs": "EPSG:4326", "step_deg": self.step, "west": self.west, "north": self.north,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Tile:
    """A window of the grid (pixels) and a run of bands (positions in the stack's ``fetch``)."""

    band0: int
    bands: int
    row: int
    col: int
    rows: int
    cols: int

    def split(self) -> list[Tile]:
        """Two halves (along the longer side, else the bands), or [] if one value."""
        if self.rows >= self.cols and self.rows > 1:
            half = self.rows // 2
            return [Tile(self.band0, self.bands, self.row, self.col, half, self.cols),
                    Tile(self.band0, self.bands, self.row + half, self.col, self.rows - half,
                         self.cols)]
        if self.cols > 1:
            half = self.cols // 2
            return [Tile(self.band0, self.bands, self.row, self.col, self.rows, half),
                    Tile(self.band0, self.bands, self.row, self.col + half, self.rows,
                         self.cols - half)]
        if self.bands > 1:
            half = self.bands // 2
            return [Tile(self.band0, half, self.row, self.col, 1, 1),
                    Tile(self.band0 + half, self.bands - half, self.row, self.col, 1, 1)]
        return []


def _npy_header_bytes(bands: int, name_length: int = 40) -> int:
    """Upper bound of an NPY header describing ``bands`` fields, bytes."""
    return 256 + bands * (name_length + 16)


def request_bytes(rows: int, cols: int, bands: int, bytes_per_value: int) -> int:
    """Estimated size of one computePixels answer, bytes: values, one mask byte, header."""
    return rows * cols * bands * (bytes_per_value + 1) + _npy_header_bytes(bands)


def _floor_block(size: int, limit: int) -> int:
    """A tile side: the whole ``size`` if it fits in ``limit``, else ``limit`` in whole blocks."""
    if size <= limit:
        return size
    return limit // BLOCK * BLOCK if limit >= BLOCK else max(1, limit)


def plan_tiles(grid: Grid, bands: int, bytes_per_value: int, max_bytes: float) -> list[Tile]:
    """Tiles covering the grid and band positions ``0 .. bands - 1``.

    Each tile's :func:`request_bytes` is at most ``max_bytes`` (bytes); runs of up to
    :data:`MAX_BANDS_PER_REQUEST` bands stay together unless not even a 64 × 64 window of
    them fits; windows are block-aligned where the grid is larger than one block.
    """
    per_run = min(bands, MAX_BANDS_PER_REQUEST)
    small = min(grid.width * grid.height, 64 * 64)
    while per_run > 1 and request_bytes(1, small, per_run, bytes_per_value) > max_bytes:
        per_run = max(1, per_run // 2)
    tiles = []
    for band0 in range(0, bands, per_run):
        nb = min(per_run, bands - band0)
        pixels = int((max_bytes - _npy_header_bytes(nb)) // (nb * (bytes_per_value + 1)))
        if pixels < 1:
            raise PermanentServiceError(
                f"{SERVICE}: ingest.earthengine.max_request_mib = {max_bytes / 2**20:g} MiB "
                "leaves no room for one pixel; raise it")
        cols = _floor_block(grid.width, min(math.isqrt(pixels), MAX_GRID_SIDE))
        rows = _floor_block(grid.height, min(pixels // cols, MAX_GRID_SIDE))
        if rows >= grid.height:  # the whole height fits: make the tiles wider instead
            rows = grid.height
            cols = _floor_block(grid.width, min(pixels // rows, MAX_GRID_SIDE))
        for r in range(0, grid.height, rows):
            for c in range(0, grid.width, cols):
                tiles.append(Tile(band0, nb, r, c, min(rows, grid.height - r),
                                  min(cols, grid.width - c)))
    return tiles


# ------------------------------------------------------------------------------- errors
class _TooLarge(IngestError):
    """The server refused a request as too large or too heavy: split it."""


def _http_error_in(exc: BaseException) -> Any:
    """The googleapiclient HttpError behind ``exc`` (ee raises its own error from it), or None."""
    from googleapiclient.errors import HttpError

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, HttpError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _refused(status: int | None, project: str | None, detail: str) -> MissingCredentialError:
    spec = CREDENTIALS[CREDENTIAL_KEY]
    how = f"HTTP {status}" if status else "no access token could be obtained or refreshed"
    return MissingCredentialError(
        f"{SERVICE}: the credential was refused ({how}) for project {project or '(unset)'}: "
        f"check the {spec.what} in {spec.env} (or the Prefect Secret block '{spec.block}'), "
        f"that the service account is registered for Earth Engine and may use project "
        f"{project or '(set ingest.earthengine.project)'}: {detail}")


def _translate(exc: BaseException, what: str, project: str | None) -> BaseException:
    """The talik error for an exception of the ee client (or ``exc`` itself if unknown)."""
    from google.auth import exceptions as auth_errors

    if isinstance(exc, (IngestError, ConnectionError, TimeoutError)):
        return exc
    detail = redact(str(exc)).strip()[:400]
    low = detail.lower()
    http_error = _http_error_in(exc)
    status = int(http_error.resp.status) if http_error is not None else None
    if isinstance(exc, auth_errors.RefreshError):
        if getattr(exc, "retryable", False):
            return TransientServiceError(f"{SERVICE} {what}: token refresh: {detail}")
        return _refused(status, project, detail)
    if isinstance(exc, auth_errors.TransportError):
        return TransientServiceError(f"{SERVICE} {what}: {detail}")
    if any(m in low for m in _SPLIT_MESSAGES):
        return _TooLarge(f"{SERVICE} {what}: {detail}")
    wait = retry_after_seconds(getattr(http_error, "resp", None))
    if status == 403 and "rate limit" in low:
        return TransientServiceError(f"{SERVICE} {what}: HTTP 403: {detail}", wait)
    if status in (401, 403) or (status is None and any(m in low for m in _AUTH_MESSAGES)):
        return _refused(status, project, detail)
    if status in TRANSIENT_STATUS or any(m in low for m in _TRANSIENT_MESSAGES):
        shown = f"HTTP {status}: " if status else ""
        return TransientServiceError(f"{SERVICE} {what}: {shown}{detail}", wait)
    shown = f"HTTP {status}: " if status else ""
    return PermanentServiceError(f"{SERVICE} {what}: {shown}{detail}")


def _call(what: str, project: str | None, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with the ee client's errors translated (see :func:`_translate`)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
        translated = _translate(exc, what, project)
        if translated is exc:
            raise
        raise translated from None  # the original may quote request details


# -------------------------------------------------------------------------- credentials
def _service_account(project: str | None) -> tuple[Any, str | None]:
    """Credentials from the service-account key in EE_SERVICE_ACCOUNT_KEY, and its project."""
    import ee

    key = require_credential(CREDENTIAL_KEY, SERVICE)
    spec = CREDENTIALS[CREDENTIAL_KEY]
    key_project = None
    try:
        info = json.loads(key)
    except ValueError:
        info = None
    if isinstance(info, dict):
        for name in ("private_key", "private_key_id"):  # decoded forms, for redaction
            if isinstance(info.get(name), str) and info[name]:
                register_secret(info[name])
        key_project = info.get("project_id") if isinstance(info.get("project_id"), str) else None
    try:
        creds = ee.ServiceAccountCredentials(email=None, key_data=key)
    except Exception as exc:  # noqa: BLE001 - a bad key: name the variable, never the key
        raise MissingCredentialError(
            f"{SERVICE}: {spec.env} does not hold a usable {spec.what} for project "
            f"{project or key_project or '(unset)'} ({type(exc).__name__}); paste the whole "
            "JSON key file") from None
    return creds, key_project


# --------------------------------------------------------------------------------- stacks
@dataclass
class _Stack:
    """One output file: its product, year, dates, and the work left to do."""

    product: ModisProduct
    year: int
    path: Path
    ids: list[str]                      # system:index of each image, by date
    dates: list[str]                    # YYYY-MM-DD of each image
    query: dict[str, Any]
    copy_from: dict[int, int] = field(default_factory=dict)  # new band index → old band index
    fetch: list[int] = field(default_factory=list)           # band indices to fetch
    tiles_left: int = 0
    requests: int = 0
    bytes: int = 0
    dataset: Any = None

    @property
    def partial(self) -> Path:
        """The hidden file the stack is written to before it is renamed into place."""
        return self.path.with_name(f".{self.path.name}.partial")


def _normalise(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` as it reads back from the ledger (a JSON round trip)."""
    return json.loads(json.dumps(query, sort_keys=True, default=str))


def _date_range(options: EarthEngineOptions, cfg: StudyConfig) -> tuple[dt.date, dt.date]:
    start = options.start
    if start is None and cfg.periods:
        start = min(p.start for p in cfg.periods)
    if start is None:
        raise PermanentServiceError(f"{SERVICE}: set ingest.earthengine.start (first date fetched)")
    end = options.end or dt.datetime.now(dt.UTC).date()
    if end < start:
        raise PermanentServiceError(
            f"{SERVICE}: ingest.earthengine.end {end} is before ingest.earthengine.start {start}")
    return start, end


# --------------------------------------------------------------------------------- client
class _Fetcher:
    """The requests of one run (ee is initialised before it is built)."""

    def __init__(self, cfg: StudyConfig, grid: Grid, project: str | None, aoi: Any,
                 start: dt.date, end: dt.date) -> None:
        self.options = cfg.ingest.earthengine
        self.grid = grid
        self.project = project
        self.aoi = aoi
        self.start, self.end = start, end
        self.max_bytes = self.options.max_request_mib * 2**20
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.stop = threading.Event()  # set when a request failed for good: send no more
        self.retries = cfg.ingest.retries
        self._retry = retrying(cfg.ingest.retries, f"{SERVICE} computePixels",
                               transient=(ConnectionError, TimeoutError))

    def collection(self, product: ModisProduct) -> Any:
        import ee

        end = self.end + dt.timedelta(days=1)  # filterDate's end is exclusive
        return (ee.ImageCollection(product.collection(self.options))
                .filterDate(self.start.isoformat(), end.isoformat())
                .filterBounds(self.aoi).select([product.band]))

    def list_images(self) -> dict[str, list[tuple[str, str]]]:
        """Role → (system:index, YYYY-MM-DD) of every image in the date range (one getInfo)."""
        import ee

        listing = ee.Dictionary({
            p.role: ee.Dictionary({"ids": self.collection(p).aggregate_array("system:index"),
                                   "times": self.collection(p).aggregate_array("system:time_start")})
            for p in PRODUCTS})
        retry = retrying(self.retries, f"{SERVICE} image listing", transient=(ConnectionError, TimeoutError))
        answer = retry(_call)("image listing", self.project, listing.getInfo)
        out: dict[str, list[tuple[str, str]]] = {}
        for p in PRODUCTS:
            got = (answer or {}).get(p.role) or {}
            ids, times = list(got.get("ids") or []), list(got.get("times") or [])
            if len(ids) != len(times):
                raise PermanentServiceError(f"{SERVICE}: image listing of {p.role}: "
                                            f"{len(ids)} ids but {len(times)} times")
            images: dict[str, str] = {}
            for image_id, ms in sorted(zip(ids, times, strict=True), key=lambda t: t[1]):
                day = dt.datetime.fromtimestamp(ms / 1000.0, dt.UTC).date().isoformat()
                if day in images.values():
                    logger.warning("%s: %s has two images on %s; keeping the first", SERVICE,
                                   p.collection(self.options), day)
                    continue
                images[str(image_id)] = day
            out[p.role] = list(images.items())
        return out

    def image(self, stack: _Stack, tile: Tile) -> tuple[Any, list[str]]:
        """The expression of ``tile``'s bands (raw integers, fill where masked) and band names."""
        import ee

        ids = [stack.ids[stack.fetch[k]] for k in range(tile.band0, tile.band0 + tile.bands)]
        img = (self.collection(stack.product).filter(ee.Filter.inList("system:index", ids))
               .toBands().unmask(stack.product.fill, False))
        img = getattr(img, stack.product.cast)()
        return img, [f"{i}_{stack.product.band}" for i in ids]

    def fetch_tile_or_stop(self, stack: _Stack, tile: Tile) -> np.ndarray:
        """:meth:`fetch_tile`; a failure stops the requests not yet sent by other workers."""
        try:
            return self.fetch_tile(stack, tile)
        except BaseException:
            self.stop.set()
            raise

    def fetch_tile(self, stack: _Stack, tile: Tile) -> np.ndarray:
        """``(bands, rows, cols)`` raw values of ``tile``, split while the server says too large."""
        try:
            return self._retry(self._compute_pixels)(stack, tile)
        except _TooLarge as exc:
            parts = tile.split()
            if not parts:
                raise PermanentServiceError(f"{exc} (a single value cannot be split)") from None
            logger.info("%s: %s; splitting a %d×%d×%d request", SERVICE, exc, tile.bands,
                        tile.rows, tile.cols)
            out = np.empty((tile.bands, tile.rows, tile.cols), stack.product.dtype)
            for part in parts:
                out[part.band0 - tile.band0:part.band0 - tile.band0 + part.bands,
                    part.row - tile.row:part.row - tile.row + part.rows,
                    part.col - tile.col:part.col - tile.col + part.cols] = \
                    self.fetch_tile(stack, part)
            return out

    def _compute_pixels(self, stack: _Stack, tile: Tile) -> np.ndarray:
        import ee

        if self.stop.is_set():
            raise IngestError(f"{SERVICE}: stopped (another request failed)")
        img, names = self.image(stack, tile)
        estimate = request_bytes(tile.rows, tile.cols, tile.bands, stack.product.bytes_per_value)
        with self.lock:
            self.requests.append({"path": stack.path.name, "bands": tile.bands, "rows": tile.rows,
                                  "cols": tile.cols, "estimate_bytes": estimate})
            stack.requests += 1
        params = {"expression": img, "fileFormat": "NUMPY_NDARRAY", "bandIds": names,
                  "grid": self.grid.ee_grid(tile.row, tile.col, tile.rows, tile.cols)}
        answer = _call(f"computePixels of {stack.path.name}", self.project,
                       ee.data.computePixels, params)
        data = self._decode(answer, names, stack, tile)
        with self.lock:
            stack.bytes += data.nbytes
        return data

    @staticmethod
    def _decode(answer: Any, names: list[str], stack: _Stack, tile: Tile) -> np.ndarray:
        dtype = np.dtype(stack.product.dtype)
        shape = (tile.rows, tile.cols)
        missing = [n for n in names if answer.dtype.names is None or n not in answer.dtype.names]
        if missing or answer.shape != shape:
            raise PermanentServiceError(
                f"{SERVICE}: computePixels of {stack.path.name} answered shape {answer.shape} with "
                f"fields {answer.dtype.names}; expected {shape} with {names[:3]}...")
        out = np.empty((len(names), *shape), dtype)
        info = np.iinfo(dtype)
        for k, name in enumerate(names):
            values = answer[name]
            if values.dtype != dtype and values.size and (values.min() < info.min
                                                          or values.max() > info.max):
                raise PermanentServiceError(
                    f"{SERVICE}: {name} of {stack.path.name} has values outside {dtype}")
            out[k] = values
        return out


# --------------------------------------------------------------------------------- writer
def _open_partial(stack: _Stack, grid: Grid) -> Any:
    """Create the stack's partial GeoTIFF, copying the bands kept from the old file."""
    import rasterio

    profile: dict[str, Any] = {
        "driver": "GTiff", "width": grid.width, "height": grid.height,
        "count": len(stack.dates), "dtype": stack.product.dtype, "crs": "EPSG:4326",
        "transform": grid.transform(), "nodata": stack.product.fill, "compress": "deflate",
        "interleave": "band", "BIGTIFF": "IF_SAFER"}
    if grid.width >= BLOCK and grid.height >= BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    stack.path.parent.mkdir(parents=True, exist_ok=True)
    dst = rasterio.open(stack.partial, "w", **profile)
    for i, day in enumerate(stack.dates, start=1):
        dst.set_band_description(i, day)
    dst.update_tags(product=stack.path.name.split("_")[0], band=stack.product.band,
                    scale_factor=repr(stack.product.scale_factor),
                    collection=stack.query["collection"], source=SERVICE)
    if stack.copy_from:
        with rasterio.open(stack.path) as old:
            for new, was in stack.copy_from.items():
                dst.write(old.read(was + 1), new + 1)
    return dst


def _write_tile(stack: _Stack, grid: Grid, tile: Tile, data: np.ndarray) -> None:
    from rasterio.windows import Window

    if stack.dataset is None:
        stack.dataset = _open_partial(stack, grid)
    indexes = [stack.fetch[tile.band0 + k] + 1 for k in range(tile.bands)]
    stack.dataset.write(data, indexes=indexes, window=Window(tile.col, tile.row, tile.cols, tile.rows))


def _finish(stack: _Stack, grid: Grid, store: RawStore, url: str) -> dict[str, Any]:
    """Close the partial file, rename it into place and record it in the manifest."""
    if stack.dataset is None:  # nothing was fetched (only copies)
        stack.dataset = _open_partial(stack, grid)
    stack.dataset.close()
    stack.dataset = None
    stack.partial.replace(stack.path)
    entry = store.adopt(stack.path, SERVICE, stack.query, url=url)
    logger.info("%s: wrote %s (%d dates, %d fetched in %d requests)", SERVICE, stack.path.name,
                len(stack.dates), len(stack.fetch), stack.requests)
    return {"path": entry.path, "sha256": entry.sha256, "file_bytes": entry.bytes}


def _abandon(stacks: list[_Stack]) -> None:
    for stack in stacks:
        if stack.dataset is not None:
            try:
                stack.dataset.close()
            finally:
                stack.dataset = None
        stack.partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- entry
def fetch_modis(cfg: StudyConfig, ledger: Ledger, store: RawStore, credentials: Any = None
                ) -> dict[str, Any]:
    """Fetch the MODIS NDVI, SWIR albedo and LST stacks of the study from Earth Engine.

    Dates: ``ingest.earthengine.start`` (else the first period's start) to ``end`` (else
    today, UTC). ``credentials`` (google-auth credentials) replace the service-account key
    read from ``EE_SERVICE_ACCOUNT_KEY`` (tests inject them); the project is
    ``ingest.earthengine.project``, else the key's ``project_id``. Returns a JSON-able summary: the grid,
    one entry per stack (``fetched``, ``copied`` and ``skipped`` dates, requests, bytes) and
    the total number of computePixels requests.

    Raises :class:`MissingCredentialError` (naming EE_SERVICE_ACCOUNT_KEY and the project)
    when the key is missing or refused, :class:`PermanentServiceError` for a setting to fix,
    :class:`TransientServiceError` when retries are used up.
    """
    options = cfg.ingest.earthengine
    source = cfg.source
    if not isinstance(source, LocalSource) or source.modis_dir is None:
        raise PermanentServiceError(f"{SERVICE}: set source.modis_dir (the folder MODIS stacks are "
                                    "written to) in a [source] of kind \"local\"")
    if cfg.aoi.bbox is None:
        raise PermanentServiceError(f"{SERVICE}: set aoi.bbox (west, south, east, north, degrees)")
    start, end = _date_range(options, cfg)
    grid = Grid.covering(cfg.aoi.bbox, options.scale_m)
    out_dir = Path(source.modis_dir)
    with _RUN_LOCK:
        project = options.project
        if credentials is None:
            credentials, key_project = _service_account(project)
            project = project or key_project
        _initialise(cfg, credentials, project)
        import ee

        fetcher = _Fetcher(cfg, grid, project, ee.Geometry.Rectangle(list(cfg.aoi.bbox), "EPSG:4326",
                                                                     False), start, end)
        listing = fetcher.list_images()
        stacks, summary = _plan(cfg, grid, out_dir, store, listing, start, end)
        url = f"{options.api_url.rstrip('/')}/v1/projects/{project}/image:computePixels"
        _run(fetcher, stacks, grid, store, url, options.max_concurrent, summary)
    summary_list = [summary[k] for k in sorted(summary)]
    return {"service": SERVICE, "project": project, "start": start.isoformat(),
            "end": end.isoformat(), "grid": grid.describe(), "stacks": summary_list,
            "requests": len(fetcher.requests),
            "fetched_stacks": sum(1 for s in summary_list if s["fetched"] or s["copied"]),
            "skipped_stacks": sum(1 for s in summary_list if not (s["fetched"] or s["copied"]))}


def _initialise(cfg: StudyConfig, credentials: Any, project: str | None) -> None:
    """ee.Initialize against the configured API, with the library's own retries off."""
    import ee

    ee.data.setMaxRetries(0)
    init = retrying(cfg.ingest.retries, f"{SERVICE} initialise",
                    transient=(ConnectionError, TimeoutError))(_call)
    try:
        init("initialise", project, ee.Initialize, credentials,
             url=cfg.ingest.earthengine.api_url.rstrip("/"), project=project)
    except PermanentServiceError as exc:
        if "project" in str(exc).lower() and not project:
            raise PermanentServiceError(f"{exc}; set ingest.earthengine.project") from None
        raise
    ee.data.setDeadline(int(cfg.ingest.earthengine.timeout_s * 1000))


def _plan(cfg: StudyConfig, grid: Grid, out_dir: Path, store: RawStore,
          listing: dict[str, list[tuple[str, str]]], start: dt.date, end: dt.date
          ) -> tuple[list[_Stack], dict[str, dict[str, Any]]]:
    """The stacks to write (with what to copy and fetch) and a summary entry per stack."""
    options = cfg.ingest.earthengine
    stacks, summary = [], {}
    for product in PRODUCTS:
        images = listing.get(product.role, [])
        for year in range(start.year, end.year + 1):
            chosen = [(i, d) for i, d in images if d.startswith(f"{year}-")]
            path = out_dir / product.file_name(options, year)
            if not chosen:
                logger.info("%s: no %s images in %d", SERVICE, product.band, year)
                continue
            query = _normalise({
                "service": SERVICE, "collection": product.collection(options),
                "band": product.band, "year": year, "dates": [d for _, d in chosen],
                "bbox": list(cfg.aoi.bbox or ()), "scale_m": options.scale_m,
                "grid": grid.describe(), "fill": product.fill, "dtype": product.dtype,
                "scale_factor": product.scale_factor})
            stack = _Stack(product, year, path, [i for i, _ in chosen], [d for _, d in chosen], query)
            old = store.ledger.file(store.relative(path))
            if old is not None and store.verify(path):
                same = {k: v for k, v in old.query.items() if k != "dates"} == \
                    {k: v for k, v in query.items() if k != "dates"}
                old_dates = list(old.query.get("dates") or [])
                if same and old_dates == query["dates"]:
                    summary[path.name] = _entry(stack, fetched=0, copied=0, skipped=True)
                    continue
                if same and set(old_dates) <= set(query["dates"]):
                    index = {d: k for k, d in enumerate(old_dates)}
                    stack.copy_from = {k: index[d] for k, d in enumerate(stack.dates) if d in index}
            stack.fetch = [k for k in range(len(stack.dates)) if k not in stack.copy_from]
            stacks.append(stack)
    return stacks, summary


def _entry(stack: _Stack, fetched: int, copied: int, skipped: bool) -> dict[str, Any]:
    return {"file": stack.path.name, "product": stack.product.role, "band": stack.product.band,
            "year": stack.year, "dates": len(stack.dates), "fetched": fetched, "copied": copied,
            "skipped": skipped, "requests": stack.requests, "bytes": stack.bytes}


def _run(fetcher: _Fetcher, stacks: list[_Stack], grid: Grid, store: RawStore, url: str,
         max_concurrent: int, summary: dict[str, dict[str, Any]]) -> None:
    """Fetch every stack's tiles (at most ``max_concurrent`` at once) and write them in order."""
    jobs: dict[cf.Future, tuple[_Stack, Tile]] = {}
    pending = list(stacks)
    with cf.ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="talik-ee") as pool:
        try:
            for stack in stacks:
                # Tiles are planned over the positions of the bands to fetch, then mapped back.
                tiles = plan_tiles(grid, len(stack.fetch), stack.product.bytes_per_value,
                                   fetcher.max_bytes)
                stack.tiles_left = len(tiles)
                for tile in tiles:
                    jobs[pool.submit(fetcher.fetch_tile_or_stop, stack, tile)] = (stack, tile)
                if not tiles:
                    summary[stack.path.name] = {**_entry(stack, 0, len(stack.copy_from), False),
                                                **_finish(stack, grid, store, url)}
                    pending.remove(stack)
            for future in cf.as_completed(jobs):
                stack, tile = jobs[future]
                _write_tile(stack, grid, tile, future.result())
                stack.tiles_left -= 1
                if stack.tiles_left == 0:
                    summary[stack.path.name] = {
                        **_entry(stack, len(stack.fetch), len(stack.copy_from), False),
                        **_finish(stack, grid, store, url)}
                    pending.remove(stack)
        except BaseException:
            fetcher.stop.set()
            for future in jobs:
                future.cancel()
            _abandon(pending)
            raise
