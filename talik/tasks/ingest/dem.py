"""Copernicus GLO-30 DEM: the 1°×1° COG tiles over the study area, mosaicked into one DEM.

The public bucket (``[ingest.dem] url``, by default the AWS open-data copy) holds one object per
tile, named after the tile's south-west corner::

    Copernicus_DSM_COG_10_N27_00_E053_00_DEM/Copernicus_DSM_COG_10_N27_00_E053_00_DEM.tif

(``N``/``S`` and two latitude digits, ``E``/``W`` and three longitude digits). Each tile is a
float32 GeoTIFF of heights in metres above the EGM2008 geoid, EPSG:4326, 1 arc-second in
latitude (3600 rows) and 1 to 10 arc-seconds in longitude depending on the latitude band. The
pixel grid is offset by half a pixel from the whole degree: tile ``N27 E053`` has its pixel
*centres* on latitudes (27°, 28°] and longitudes [53°, 54°).

Tiles over the open ocean (and a few unreleased ones) do not exist: a 404 for a tile is noted,
remembered in the ledger (so the next run does not ask again) and its area left as no-data.

Every tile goes through :meth:`RawStore.fetch` (retries, resumed partial downloads, checksum
against the manifest). The mosaic keeps the tiles' own pixel grid (no resampling when the
area lies within one latitude band) and is clipped to the pixels whose centres fall inside
``[aoi] bbox`` (west ≤ lon < east, south < lat ≤ north); it is written to a temporary name
beside ``[source] dem`` and renamed into place, then recorded with :meth:`RawStore.adopt`
(query: the bbox and each tile with its SHA-256). A run whose tiles and output are unchanged
downloads nothing and rewrites nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from talik.config import LocalSource, RetryOptions, StudyConfig
from talik.tasks.ingest.common import PermanentServiceError, http_session, scrub_url
from talik.tasks.ingest.ledger import Ledger, RequestEntry
from talik.tasks.ingest.rawstore import Download, RawStore

__all__ = ["SOURCE", "TILE_DIR", "fetch_dem", "mosaic_tiles", "tile_name", "tile_url", "tiles_for_bbox"]

SOURCE = "glo30"
TILE_DIR = "glo30_tiles"
"""Folder (beside the study's DEM file) the raw tiles are kept in."""

NODATA = float("nan")
_EPS = 1e-6  # pixels: tolerance of the grid arithmetic
logger = logging.getLogger("talik.ingest")


# ------------------------------------------------------------------------------------- names
def tile_name(lat: int, lon: int) -> str:
    """Name of the GLO-30 tile whose south-west corner is (``lat``, ``lon``), whole degrees."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


def tile_url(base_url: str, name: str) -> str:
    """URL of tile ``name`` under the bucket's ``base_url`` (one folder per tile)."""
    return f"{base_url.rstrip('/')}/{name}/{name}.tif"


def tiles_for_bbox(bbox: Sequence[float]) -> list[tuple[int, int]]:
    """South-west corners (lat, lon; whole degrees) of the tiles covering ``bbox``.

    ``bbox`` is (west, south, east, north) in degrees (EPSG:4326). A tile is needed when one
    of its pixel centres — latitudes (lat, lat + 1], longitudes [lon, lon + 1) — falls in
    the box, which gives exactly the 1°×1° cells the box overlaps (a box edge on a whole
    degree pulls in no neighbouring tile).
    """
    west, south, east, north = (float(v) for v in bbox)
    lats = range(max(-90, math.floor(south)), min(90, math.ceil(north)))
    lons = range(max(-180, math.floor(west)), min(180, math.ceil(east)))
    return [(lat, lon) for lat in reversed(lats) for lon in lons]  # north to south, west to east


# ------------------------------------------------------------------------------------ tiles
def _recording_session(retries: RetryOptions) -> tuple[Any, dict[str, int]]:
    """A retrying ``requests`` session that remembers the final HTTP status of each URL."""
    session = http_session(retries, retry=False)  # RawStore.fetch retries (one retry layer)
    statuses: dict[str, int] = {}
    plain_get = session.get

    def get(url: str, *args: Any, **kwargs: Any) -> Any:
        response = plain_get(url, *args, **kwargs)
        statuses[url] = int(response.status_code)
        return response

    session.get = get
    return session, statuses


def _readable_tile(path: Path) -> str | None:
    """None when ``path`` decodes as a georeferenced single-band raster, else what is wrong."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                return "no CRS"
            src.read(1)  # decode every block: a truncated or damaged file fails here
    except (rasterio.errors.RasterioError, OSError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _fetch_tile(store: RawStore, url: str, dest: Path, name: str, session: Any,
                attempts: int) -> Download:
    """Download one tile (or find it verified in place); an interrupted body is resumed.

    :meth:`RawStore.fetch` keeps the ``.partial`` file when the connection breaks mid-body
    (``requests`` raises ``ChunkedEncodingError``) and resumes it with a ``Range`` request, up
    to ``[ingest.retries] attempts`` times; a tile that downloads but does not decode is
    fetched again, up to ``attempts`` downloads.
    """
    import requests

    query = {"tile": name}
    for attempt in range(1, attempts + 1):
        try:  # RawStore.fetch already resumes a broken-off body ``attempts`` times
            download = store.fetch(url, dest, SOURCE, query, session=session)
        except requests.exceptions.ChunkedEncodingError as exc:
            raise PermanentServiceError(
                f"GLO-30: the download of {scrub_url(url)} broke off {attempts} times; "
                f"last: {exc}") from None
        if not download.downloaded:
            return download
        problem = _readable_tile(dest)
        if problem is None:
            return download
        logger.warning("GLO-30: %s was downloaded but does not decode (%s); fetching it again",
                       name, problem)
        dest.unlink()
        if attempt == attempts:
            break
    raise PermanentServiceError(f"GLO-30: {scrub_url(url)} does not decode as a GeoTIFF after "
                                f"{attempts} downloads (check the setting ingest.dem.url)")


def _known_absent(ledger: Ledger) -> dict[str, str]:
    """Tile name → URL of the tiles recorded as absent (404) by an earlier run."""
    out = {}
    for entry in ledger.requests(source=SOURCE, states=["absent"]):
        out[entry.key.split(":", 1)[-1]] = str(entry.request.get("url", ""))
    return out


# ----------------------------------------------------------------------------------- mosaic
def _edge_index(offset_px: float) -> int:
    """First pixel index whose centre lies at or beyond ``offset_px`` (pixels from the edge)."""
    return math.ceil(offset_px - 0.5 - _EPS)


def mosaic_tiles(tiles: Sequence[Path], bbox: Sequence[float], out: Path) -> dict[str, Any]:
    """Mosaic GLO-30 ``tiles`` and clip them to ``bbox`` into the GeoTIFF ``out``.

    The output grid is the tiles' own (the finest longitude spacing among them when the box
    straddles two latitude bands, nearest-neighbour there); it holds the pixels whose centres
    satisfy west ≤ lon < east and south < lat ≤ north. Heights are float32 metres; pixels no
    tile covers are NaN (the file's no-data value). Written tile by tile, so memory stays at
    about one tile. Returns the grid: shape (rows, columns), bounds and pixel size (degrees).
    """
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window

    west, south, east, north = (float(v) for v in bbox)
    sources = [rasterio.open(p) for p in tiles]
    try:
        ref = min(sources, key=lambda s: (abs(s.res[0]), abs(s.res[1])))
        xres, yres = abs(ref.res[0]), abs(ref.res[1])
        ox, oy = ref.bounds.left, ref.bounds.top
        j0, j1 = _edge_index((west - ox) / xres), _edge_index((east - ox) / xres)
        i0, i1 = _edge_index((oy - north) / yres), _edge_index((oy - south) / yres)
        width, height = j1 - j0, i1 - i0
        if width <= 0 or height <= 0:
            raise PermanentServiceError(f"GLO-30: the bbox {tuple(bbox)} holds no DEM pixel "
                                        "(check the setting aoi.bbox)")
        left, top = ox + j0 * xres, oy - i0 * yres
        transform = Affine(xres, 0.0, left, 0.0, -yres, top)
        block = 256
        profile = {
            "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
            "crs": ref.crs, "transform": transform, "nodata": NODATA, "compress": "deflate",
            "predictor": 3, "tiled": width >= block and height >= block, "BIGTIFF": "IF_SAFER",
        }
        if profile["tiled"]:
            profile.update(blockxsize=block, blockysize=block)
        with rasterio.open(out, "w", **profile) as dst:
            step = 1024
            for r in range(0, height, step):  # every pixel starts as no-data
                rows = min(step, height - r)
                dst.write(np.full((rows, width), np.nan, np.float32), 1, window=Window(0, r, width, rows))
            for src in sources:
                b = src.bounds
                c0 = max(0, round((b.left - left) / xres))
                c1 = min(width, round((b.right - left) / xres))
                r0 = max(0, round((top - b.top) / yres))
                r1 = min(height, round((top - b.bottom) / yres))
                if c1 <= c0 or r1 <= r0:
                    continue
                window = Window(c0, r0, c1 - c0, r1 - r0)
                part = np.full((r1 - r0, c1 - c0), np.nan, np.float32)
                reproject(source=rasterio.band(src, 1), destination=part,
                          src_transform=src.transform, src_crs=src.crs, src_nodata=src.nodata,
                          dst_transform=dst.window_transform(window), dst_crs=ref.crs,
                          dst_nodata=NODATA, resampling=Resampling.nearest)
                dst.write(part, 1, window=window)
            dst.update_tags(units="m", vertical_datum="EGM2008", source="Copernicus GLO-30 DSM",
                            tiles=",".join(Path(s.name).stem for s in sources))
    finally:
        for src in sources:
            src.close()
    return {"shape": [height, width], "bounds": [left, top - height * yres, left + width * xres, top],
            "pixel_deg": [xres, yres]}


def _grid_of(path: Path) -> dict[str, Any]:
    """Shape (rows, columns), bounds and pixel size (degrees) of the GeoTIFF ``path``."""
    import rasterio

    with rasterio.open(path) as src:
        return {"shape": [src.height, src.width], "bounds": list(src.bounds),
                "pixel_deg": [abs(src.res[0]), abs(src.res[1])]}


def _same_query(a: dict[str, Any], b: dict[str, Any]) -> bool:
    canon = lambda q: json.dumps(q, sort_keys=True, default=str)  # noqa: E731
    return canon(a) == canon(b)


# ------------------------------------------------------------------------------------ entry
def fetch_dem(cfg: StudyConfig, ledger: Ledger, store: RawStore) -> dict[str, Any]:
    """Fetch the GLO-30 tiles over ``cfg.aoi.bbox`` and mosaic them into ``cfg.source.dem``.

    Returns a JSON-able summary: the tiles used, downloaded and absent (404, left as no-data),
    whether the DEM file was (re)written, its grid (rows × columns, bounds and pixel size in
    degrees) and notes. Heights are float32 metres (EGM2008); no-data is NaN.

    Raises
    ------
    PermanentServiceError
        No bbox, no ``[source] dem`` path, no tile found at all (check ``ingest.dem.url``),
        or a download that keeps failing.
    """
    source = cfg.source
    if not isinstance(source, LocalSource) or source.dem is None:
        raise PermanentServiceError("GLO-30: set [source] dem (the DEM GeoTIFF the tiles are "
                                    "mosaicked into) in a local source")
    if cfg.aoi.bbox is None:
        raise PermanentServiceError("GLO-30: set aoi.bbox (west, south, east, north, degrees) to "
                                    "choose the DEM tiles")
    bbox = [float(v) for v in cfg.aoi.bbox]
    out = Path(source.dem)
    tile_dir = out.parent / TILE_DIR
    base = cfg.ingest.dem.url
    retries = cfg.ingest.retries
    session, statuses = _recording_session(retries)
    known_absent = _known_absent(ledger)

    present: list[tuple[str, Path, str]] = []  # name, path, sha256
    downloaded, absent, newly_absent, notes = [], [], [], []
    for lat, lon in tiles_for_bbox(bbox):
        name = tile_name(lat, lon)
        url = tile_url(base, name)
        if known_absent.get(name) == scrub_url(url):
            absent.append(name)
            continue
        try:
            got = _fetch_tile(store, url, tile_dir / f"{name}.tif", name, session, retries.attempts)
        except PermanentServiceError:
            if statuses.get(url) != 404:
                raise
            absent.append(name)
            newly_absent.append((name, url))
            notes.append(f"{name}: no such tile (HTTP 404; open ocean or not released); "
                         "its area is no-data")
            logger.info("GLO-30: %s does not exist (404); its area is left as no-data", name)
            continue
        present.append((name, got.path, got.entry.sha256))
        if got.downloaded:
            downloaded.append(name)
    if not present:
        raise PermanentServiceError(f"GLO-30: none of the {len(absent)} tiles over {tuple(bbox)} "
                                    f"exists at {scrub_url(base)} (check the settings ingest.dem.url "
                                    "and aoi.bbox)")
    for name, url in newly_absent:  # remembered only once some tile was found at this URL
        ledger.upsert_request(RequestEntry(key=f"{SOURCE}:{name}", source=SOURCE,
                                           request={"tile": name, "url": scrub_url(url)},
                                           remote_id=None, state="absent", result=None,
                                           provisional=False))

    query = {"bbox": bbox, "tiles": [[n, sha] for n, _, sha in present], "absent": sorted(absent)}
    summary: dict[str, Any] = {
        "source": SOURCE, "bbox": bbox, "output": str(out), "tiles": [n for n, _, _ in present],
        "downloaded": downloaded, "absent": sorted(absent), "notes": notes,
    }
    entry = ledger.file(store.relative(out))
    if entry is not None and _same_query(entry.query, query) and store.verify(out):
        summary.update(written=False, grid=_grid_of(out))
        logger.info("GLO-30: %s is up to date (%d tiles)", out, len(present))
        return summary

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        grid = mosaic_tiles([p for _, p, _ in present], bbox, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    store.adopt(out, SOURCE, query, url=base)
    summary.update(written=True, grid=grid)
    logger.info("GLO-30: wrote %s (%d×%d pixels from %d tiles, %d absent)", out, grid["shape"][0],
                grid["shape"][1], len(present), len(absent))
    return summary
