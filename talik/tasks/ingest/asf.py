"""Scene discovery at ASF with asf_search: Sentinel-1 (and ERS/ALOS-1) acquisitions as SceneRecords.

:func:`search_scenes` runs one asf_search query (the library pages through ASF's CMR-backed
search with the ``CMR-Search-After`` header) and maps every product to a
:class:`~talik.tasks.ingest.common.SceneRecord`. :func:`discover_scenes` records what it found
in the ingest ledger and says what is new.

HTTP errors are classified by *our* rules before asf_search sees them (a response hook on the
session): a 5xx, a timeout or a 429 (its ``Retry-After`` honoured) is retried with the study's
:class:`~talik.config.RetryOptions`; a 401/403 fails at once naming ``EARTHDATA_TOKEN``. asf_search's
own error reporting (a POST of the failed query to ASF) is always switched off.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from talik.config import AsfSearchOptions, RetryOptions, StudyConfig
from talik.tasks.ingest.common import (
    PermanentServiceError,
    SceneRecord,
    TransientServiceError,
    credential,
    install_redaction,
    raise_for_status,
    retrying,
)
from talik.tasks.ingest.ledger import Ledger

__all__ = ["bbox_wkt", "discover_scenes", "error_hook", "scene_from_product", "search_scenes"]

logger = logging.getLogger("talik.ingest")
SERVICE = "ASF search"


def error_hook(service: str, credential_key: str | None = "earthdata_token",
               setting: str | None = None) -> Callable[..., Any]:
    """A ``requests`` response hook raising our service errors for any HTTP error status.

    Installed on a client library's session, it classifies a response before the library does
    (libraries drop the status and the ``Retry-After`` header): transient statuses raise
    :class:`~talik.tasks.ingest.common.TransientServiceError`, 401/403 a
    :class:`~talik.tasks.ingest.common.MissingCredentialError` naming ``credential_key``.
    """

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.status_code >= 400:
            raise_for_status(response, service, credential_key, setting)
        return response

    return hook


def bbox_wkt(bbox: tuple[float, float, float, float]) -> str:
    """The WKT polygon of ``(west, south, east, north)`` in degrees (EPSG:4326), counter-clockwise."""
    west, south, east, north = bbox
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    return "POLYGON((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in ring) + "))"


def _session(token: str | None) -> Any:
    """A fresh ASFSession: bearer token set directly (no EDL round trip), our error hook installed."""
    import asf_search as asf

    session = asf.ASFSession()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    session.hooks["response"].append(error_hook(SERVICE, "earthdata_token", "ingest.asf"))
    return session


def _search_kwargs(options: AsfSearchOptions, bbox: tuple[float, float, float, float] | None
                   ) -> dict[str, Any]:
    """asf_search keyword arguments for the configured filters (unset filters are left out)."""
    kwargs: dict[str, Any] = {"platform": options.platform,
                              "processingLevel": options.processing_level,
                              "maxResults": options.max_results}
    optional = {"beamMode": options.beam_mode, "polarization": options.polarization,
                "flightDirection": options.flight_direction,
                "relativeOrbit": options.relative_orbit, "asfFrame": options.frame}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if bbox is not None:
        kwargs["intersectsWith"] = bbox_wkt(bbox)
    if options.start is not None:
        kwargs["start"] = dt.datetime.combine(options.start, dt.time(0), tzinfo=dt.UTC)
    if options.end is not None:  # the whole last day
        kwargs["end"] = dt.datetime.combine(options.end, dt.time(23, 59, 59), tzinfo=dt.UTC)
    return kwargs


def _utc(value: Any) -> dt.datetime | None:
    """An ASF timestamp (ISO text, 'Z' suffix) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        when = value
    else:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _file_value(value: Any, file_name: str | None) -> Any:
    """Size or MD5 of the product's file: products migrated to the cloud give a dict per file."""
    if isinstance(value, dict):
        entry = value.get(file_name) if file_name else None
        if entry is None and len(value) == 1:
            entry = next(iter(value.values()))
        return entry.get("bytes") if isinstance(entry, dict) else entry
    return value


def _footprint(geometry: dict[str, Any] | None) -> str | None:
    """The product footprint (GeoJSON polygon) as WKT, or None."""
    if not geometry or not geometry.get("coordinates"):
        return None
    from shapely.geometry import shape

    try:
        return shape(geometry).wkt
    except (ValueError, TypeError, AttributeError):
        return None


def scene_from_product(product: Any) -> SceneRecord:
    """Map one asf_search ``ASFProduct`` to a SceneRecord (source ``'asf'``).

    ``size_bytes`` is the file size in bytes and ``md5`` its MD5 when ASF states them.
    """
    p = product.properties
    file_name = p.get("fileName")
    size = _file_value(p.get("bytes"), file_name)
    md5 = _file_value(p.get("md5sum"), file_name)
    frame = p.get("frameNumber")
    orbit = p.get("pathNumber")
    start = _utc(p.get("startTime"))
    if start is None:
        raise PermanentServiceError(f"{SERVICE}: product {p.get('sceneName')} has no start time")
    return SceneRecord(
        source="asf", scene_id=p.get("sceneName") or p.get("fileID"),
        platform=p.get("platform") or "unknown", start_time=start, stop_time=_utc(p.get("stopTime")),
        beam_mode=p.get("beamModeType"), polarization=p.get("polarization"),
        flight_direction=(p.get("flightDirection") or None) and str(p["flightDirection"]).upper(),
        relative_orbit=int(orbit) if orbit is not None else None,
        frame=int(frame) if frame is not None else None,
        product_type=p.get("processingLevel"), footprint_wkt=_footprint(product.geometry),
        url=p.get("url"), size_bytes=int(float(size)) if size not in (None, "") else None,
        md5=str(md5).lower() if md5 else None)


def search_scenes(options: AsfSearchOptions, bbox: tuple[float, float, float, float] | None,
                  retries: RetryOptions, token: str | None) -> list[SceneRecord]:
    """Every scene at ASF matching ``options`` over ``bbox`` (degrees), sorted by start time.

    ``token`` (an Earthdata Login bearer token) is optional for searching; a refused token
    raises :class:`~talik.tasks.ingest.common.MissingCredentialError` naming ``EARTHDATA_TOKEN``.
    Transient failures repeat the whole search on a fresh session (paging restarts cleanly).
    """
    import asf_search as asf

    asf.REPORT_ERRORS = False  # never POST failed queries (and their options) to ASF
    install_redaction()  # also keeps the asf_search logger at INFO or above
    kwargs = _search_kwargs(options, bbox)

    @retrying(retries, SERVICE)
    def attempt() -> list[Any]:
        opts = asf.ASFSearchOptions(host=options.host, session=_session(token))
        results = asf.search(opts=opts, **kwargs)
        if not getattr(results, "searchComplete", True):
            raise TransientServiceError(f"{SERVICE} at {options.host}: the search stopped early")
        return list(results)

    try:
        products = attempt()
    except asf.ASFSearchError as exc:  # what our hook did not classify (e.g. a malformed answer)
        raise PermanentServiceError(f"{SERVICE} at {options.host}: {exc}") from None
    scenes: dict[str, SceneRecord] = {}
    for product in products:
        scene = scene_from_product(product)
        scenes.setdefault(scene.scene_id, scene)
    return sorted(scenes.values(), key=lambda s: (s.start_time, s.scene_id))


def discover_scenes(cfg: StudyConfig, ledger: Ledger) -> dict[str, Any]:
    """Search ASF as configured (``[ingest.asf]``, over ``aoi.bbox``) and record the scenes.

    Returns a JSON-able summary: ``n_found``, ``n_new`` and ``new`` (the new scene ids).
    """
    options = cfg.ingest.asf
    token = credential("earthdata_token")
    scenes = search_scenes(options, cfg.aoi.bbox, cfg.ingest.retries, token)
    new = ledger.add_scenes(scenes)
    logger.info("ASF: %d scenes found, %d new", len(scenes), len(new))
    return {"n_found": len(scenes), "n_new": len(new), "new": [s.scene_id for s in new]}
