"""ESA / Copernicus scene discovery: one interface, two client libraries.

* ``backend = "eodag"`` (default): eodag against the Copernicus Data Space (``cop_dataspace``,
  OData catalogue) or any provider eodag knows; a provider eodag does not know (e.g. a STAC
  API publishing the ERS/Envisat heritage collections SAR_IMS_1P, ASA_IMS_1P) is added with
  ``add_provider`` as a STAC search at ``ingest.esa.search_url``.
* ``backend = "sentinelsat"``: a DHuS-compatible mirror at ``ingest.esa.search_url``
  (OpenSearch JSON search, OData product metadata, ``$value`` download with its MD5 checked).

Both give :class:`~talik.tasks.ingest.common.SceneRecord` objects; nothing else leaves this
module. eodag runs isolated for each call: its configuration folder is a temporary folder,
the external collections list is never fetched (strict collections), only the configured
provider is loaded, errors are raised rather than turned into an empty result, and its own
HTTP retries are off (ours honour Retry-After). Its settings, credentials included, are put
in the environment only while the call runs and the environment is restored afterwards.

Credentials: ``COPERNICUS_USERNAME``/``COPERNICUS_PASSWORD`` (given to the ``cop_dataspace``
provider only; searching there needs none, downloading does) and ``DHUS_USERNAME``/
``DHUS_PASSWORD`` (sentinelsat, basic auth), from the environment or Prefect Secret blocks.
The CDSE token travels in the download URL's query string: client loggers are kept at INFO
or above and ``token=`` values are masked in every eodag/urllib3 log record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

from talik.config import EsaOptions, RetryOptions, StudyConfig
from talik.tasks.ingest.common import (
    CREDENTIALS,
    TRANSIENT_STATUS,
    IngestError,
    MissingCredentialError,
    PermanentServiceError,
    SceneRecord,
    TransientServiceError,
    install_redaction,
    redact,
    require_credential,
    retry_after_seconds,
    retrying,
    scrub_url,
)
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore, sha256_of

__all__ = ["PAGE_SIZE", "discover_esa_scenes", "search_esa"]

logger = logging.getLogger("talik.ingest")

PAGE_SIZE = 100
"""Results asked for per catalogue page (eodag ``limit``, sentinelsat ``page_size``)."""

DHUS_SOURCE = "dhus"

# Providers that are given the Copernicus Data Space account (never sent anywhere else).
COPERNICUS_PROVIDERS = frozenset({"cop_dataspace"})
_COPERNICUS_KEYS = ("copernicus_username", "copernicus_password")
_DHUS_KEYS = ("dhus_username", "dhus_password")

_ENV_LOCK = threading.Lock()  # eodag is configured through os.environ: one session at a time


# ------------------------------------------------------------------------------ logging
def _clean(text: str) -> str:
    """``text`` without registered secrets or query-string tokens."""
    return redact(text)


# ------------------------------------------------------------------------------ helpers
def _utc(value: Any) -> dt.datetime | None:
    """An ISO text or datetime as an aware UTC datetime (None stays None)."""
    if value is None or value == "" or value == "Not Available":
        return None
    if isinstance(value, dt.datetime):
        when = value
    else:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _direction(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in ("ASCENDING", "DESCENDING") else None


def _polarization(value: Any) -> str | None:
    """``["VV", "VH"]``, ``"VV VH"`` or ``"VV&VH"`` as ``"VV+VH"``."""
    if not value:
        return None
    parts = value if isinstance(value, list | tuple) else re.split(r"[\s&+,]+", str(value))
    parts = [str(p).strip().upper() for p in parts if str(p).strip()]
    return "+".join(parts) or None


def _platform(raw: Any, constellation: Any = None, name: str = "") -> str:
    """A readable platform name: 'S1A' → 'Sentinel-1A', 'ers-2' → 'ERS-2', 'envisat' → 'Envisat'."""
    text = str(raw or "").strip()
    match = re.fullmatch(r"(?i)s(?:entinel)?-?([1-6])([a-d])", text)
    if match:
        return f"Sentinel-{match.group(1)}{match.group(2).upper()}"
    match = re.fullmatch(r"(?i)sentinel-?([1-6])", text) or re.fullmatch(
        r"(?i)sentinel-?([1-6])", str(constellation or "").strip())
    if match:
        unit = re.match(r"S[1-6]([A-D])_", name)  # the unit is the third letter of the name
        if unit:
            return f"Sentinel-{match.group(1)}{unit.group(1)}"
        if re.fullmatch(r"[A-Da-d]", text):
            return f"Sentinel-{match.group(1)}{text.upper()}"
        return f"Sentinel-{match.group(1)}"
    match = re.fullmatch(r"(?i)ers-?([12])", text)
    if match:
        return f"ERS-{match.group(1)}"
    if text.lower() == "envisat":
        return "Envisat"
    return text or str(constellation or "") or "unknown"


def _md5_of(value: Any) -> str | None:
    """An MD5 hex digest from a plain digest or an MD5 multihash (``d50110…``)."""
    text = str(value or "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{32}", text):
        return text
    if re.fullmatch(r"d50110[0-9a-f]{32}", text):
        return text[6:]
    return None


def _date_range(options: EsaOptions) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Start and (exclusive) end of the searched period, UTC midnights."""
    start = end = None
    if options.start is not None:
        start = dt.datetime.combine(options.start, dt.time(), tzinfo=dt.UTC)
    if options.end is not None:
        end = dt.datetime.combine(options.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return start, end


def _bbox_wkt(bbox: tuple[float, float, float, float]) -> str:
    w, s, e, n = bbox
    return f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"


def _http_error(exc: BaseException) -> tuple[int | None, Any]:
    """The HTTP status and headers behind ``exc`` (searched through its causes), if any."""
    seen: set[int] = set()
    status, headers = None, None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code), getattr(response, "headers", None)
        if isinstance(current, HTTPError):
            return int(current.code), current.headers
        code = getattr(current, "status_code", None)
        if status is None and isinstance(code, int):
            status = code
        current = current.__cause__ or current.__context__
    return status, headers


def _service_error(exc: BaseException, service: str, credential_keys: tuple[str, str] | None,
                   setting: str, auth_error: bool = False) -> IngestError | None:
    """A client's exception as a transient or permanent talik error (secrets removed)."""
    if isinstance(exc, IngestError):
        return exc
    status, headers = _http_error(exc)
    detail = _clean(" ".join(str(a) for a in getattr(exc, "args", ()) if a) or str(exc))[:400]
    kind = type(exc).__name__
    if auth_error or status in (401, 403):
        if credential_keys is None:
            return PermanentServiceError(
                f"{service}: refused (HTTP {status or '401'}); talik gives no credentials to this "
                f"provider (check ingest.esa.provider): {kind}: {detail}")
        specs = [CREDENTIALS[k] for k in credential_keys]
        return MissingCredentialError(
            f"{service}: refused (HTTP {status or 'auth error'}): check "
            f"{' and '.join(s.env for s in specs)} (or the Prefect Secret blocks "
            f"{', '.join(repr(s.block) for s in specs)}): {kind}: {detail}")
    if status in TRANSIENT_STATUS:
        return TransientServiceError(f"{service}: HTTP {status}: {kind}: {detail}",
                                     retry_after_seconds(headers))
    if status is not None and 400 <= status < 500:
        return PermanentServiceError(
            f"{service}: HTTP {status} (check the setting {setting}): {kind}: {detail}")
    if status is not None and status >= 500:
        return TransientServiceError(f"{service}: HTTP {status}: {kind}: {detail}")
    return None  # the caller decides about the rest


# ------------------------------------------------------------------------------- eodag
@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _eodag_credentials(provider: str, required: bool) -> tuple[str, str] | None:
    """The Copernicus account for ``provider`` when it is needed (downloads), else None.

    Searching the Copernicus catalogue needs no account, and with one eodag's Keycloak plugin
    would contact the identity server at once; other providers never get it.
    """
    if not required or provider not in COPERNICUS_PROVIDERS:
        return None
    return (require_credential(_COPERNICUS_KEYS[0], f"eodag {provider}"),
            require_credential(_COPERNICUS_KEYS[1], f"eodag {provider}"))


@contextlib.contextmanager
def _eodag_gateway(options: EsaOptions, need_credentials: bool = False) -> Iterator[Any]:
    """An isolated ``EODataAccessGateway`` for ``options.provider``.

    Settings go through eodag's environment variables, set only inside the block; the
    configuration folder is a temporary folder removed afterwards.
    """
    install_redaction()
    provider = options.provider
    key = re.sub(r"[^A-Za-z0-9]", "_", provider).upper()
    creds = _eodag_credentials(provider, need_credentials)
    with _ENV_LOCK, tempfile.TemporaryDirectory(prefix="talik-eodag-") as cfg_dir:
        env = {
            "EODAG_CFG_DIR": cfg_dir,
            "EODAG_STRICT_COLLECTIONS": "true",
            "EODAG_PROVIDERS_WHITELIST": json.dumps([provider]),
            f"EODAG__{key}__SEARCH__RETRY_TOTAL": "0",  # retries are ours (Retry-After honoured)
        }
        if options.search_url:
            env[f"EODAG__{key}__SEARCH__API_ENDPOINT"] = options.search_url
        if options.auth_url:
            env[f"EODAG__{key}__AUTH__OIDC_CONFIG_URL"] = options.auth_url
        if creds is not None:
            env[f"EODAG__{key}__AUTH__CREDENTIALS__USERNAME"] = creds[0]
            env[f"EODAG__{key}__AUTH__CREDENTIALS__PASSWORD"] = creds[1]
        with _environment(env):
            from eodag import EODataAccessGateway

            dag = EODataAccessGateway()
            if provider not in dag.providers.names:
                if not options.search_url:
                    raise PermanentServiceError(
                        f"eodag does not know the provider {provider!r}: set ingest.esa.search_url "
                        "to its STAC API search endpoint (or fix ingest.esa.provider)")
                dag.add_provider(provider, url=options.search_url, search={
                    "type": "StacSearch", "retry_total": 0,
                    # no collection or queryables discovery: the collection is named in the config
                    "discover_collections": {"fetch_url": None},
                    "discover_queryables": {"fetch_url": None, "collection_fetch_url": None}})
            yield dag


def _eodag_search_products(dag: Any, options: EsaOptions,
                           bbox: tuple[float, float, float, float] | None,
                           retries: RetryOptions) -> list[Any]:
    """Every product of every page (whole search retried on transient errors)."""
    provider = options.provider
    service = f"eodag search {provider} {options.collection}"
    start, end = _date_range(options)
    kwargs: dict[str, Any] = {"collection": options.collection, "provider": provider}
    if bbox is not None:
        kwargs["geom"] = list(bbox)
    if start is not None:
        kwargs["start"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    if end is not None:
        kwargs["end"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    if options.flight_direction:
        kwargs["sat:orbit_state"] = options.flight_direction.lower()
    if options.relative_orbit is not None:
        kwargs["sat:relative_orbit"] = options.relative_orbit
    keys = _COPERNICUS_KEYS if provider in COPERNICUS_PROVIDERS else None

    def attempt() -> list[Any]:
        from eodag.utils.exceptions import (
            AuthenticationError,
            EodagError,
            MisconfiguredError,
            NoMatchingCollection,
            QuotaExceededError,
            TimeOutError,
            UnsupportedCollection,
        )

        try:
            result = dag.search(limit=PAGE_SIZE, raise_errors=True, **kwargs)
            result.raise_errors = True
            for _page in result.next_page(update=True):
                pass
            return list(result)
        except (QuotaExceededError, TimeOutError) as exc:
            error = _service_error(exc, service, keys, "ingest.esa.search_url")
            if isinstance(error, TransientServiceError):
                raise error from None
            raise TransientServiceError(f"{service}: {type(exc).__name__}: {_clean(str(exc))}",
                                        retry_after_seconds(_http_error(exc)[1])) from None
        except AuthenticationError as exc:
            raise _service_error(exc, service, keys, "", auth_error=True) from None
        except (NoMatchingCollection, UnsupportedCollection, MisconfiguredError) as exc:
            raise PermanentServiceError(
                f"{service}: {type(exc).__name__} (check ingest.esa.collection, ingest.esa.provider, "
                f"ingest.esa.auth_url): "
                f"{_clean(str(exc))}") from None
        except EodagError as exc:
            error = _service_error(exc, service, keys, "ingest.esa.collection / ingest.esa.search_url")
            if error is not None:
                raise error from None
            if any(isinstance(c, URLError | OSError) for c in _causes(exc)):
                raise TransientServiceError(f"{service}: {type(exc).__name__}: {_clean(str(exc))}") \
                    from None
            raise PermanentServiceError(
                f"{service}: {type(exc).__name__} (check ingest.esa.collection / "
                f"ingest.esa.search_url): {_clean(str(exc))}") from None

    return retrying(retries, service)(attempt)()


def _causes(exc: BaseException) -> list[BaseException]:
    out, current = [], exc.__cause__ or exc.__context__
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _eodag_record(product: Any, options: EsaOptions) -> SceneRecord:
    """One eodag ``EOProduct`` as a scene record."""
    p = product.properties
    name = str(p.get("id") or p.get("title"))
    data_asset = next((a for a in (getattr(product, "assets", None) or {}).values()
                       if "data" in (a.get("roles") or [])), None)
    url = p.get("eodag:download_link") or getattr(product, "remote_location", None)
    size, md5 = p.get("file:size"), _md5_of(p.get("file:checksum"))
    if (not url or url == "Not Available") and data_asset is not None:
        url = data_asset.get("href")
        size = size or data_asset.get("file:size")
        md5 = md5 or _md5_of(data_asset.get("file:checksum"))
    start = _utc(p.get("start_datetime") or p.get("datetime"))
    if start is None:
        raise PermanentServiceError(f"eodag {options.provider}: product {name} has no acquisition time")
    return SceneRecord(
        source=options.provider, scene_id=name,
        platform=_platform(p.get("platform"), p.get("constellation"), name),
        start_time=start, stop_time=_utc(p.get("end_datetime")),
        beam_mode=p.get("sar:instrument_mode") or None,
        polarization=_polarization(p.get("sar:polarizations")),
        flight_direction=_direction(p.get("sat:orbit_state")),
        relative_orbit=_int(p.get("sat:relative_orbit")),
        product_type=p.get("product:type") or p.get("sar:product_type") or options.collection,
        footprint_wkt=product.geometry.wkt if getattr(product, "geometry", None) is not None else None,
        url=scrub_url(url) if url and url != "Not Available" else None,
        size_bytes=_int(size), md5=md5)


# -------------------------------------------------------------------------- sentinelsat
def _dhus_api(options: EsaOptions) -> Any:
    if not options.search_url:
        raise PermanentServiceError(
            "sentinelsat needs the DHuS mirror's API URL: set ingest.esa.search_url "
            "(e.g. https://<mirror>/dhus/)")
    user = require_credential(_DHUS_KEYS[0], "DHuS mirror")
    password = require_credential(_DHUS_KEYS[1], "DHuS mirror")
    install_redaction()
    from sentinelsat import SentinelAPI

    api = SentinelAPI(user, password, api_url=options.search_url, show_progressbars=False,
                      timeout=120)
    api.page_size = PAGE_SIZE
    return api


def _dhus_call(retries: RetryOptions, service: str, setting: str, func: Any, *args: Any,
               **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` with sentinelsat's errors mapped and transient ones retried."""

    def attempt() -> Any:
        from sentinelsat.exceptions import InvalidChecksumError, SentinelAPIError, UnauthorizedError

        try:
            return func(*args, **kwargs)
        except UnauthorizedError as exc:
            raise _service_error(exc, service, _DHUS_KEYS, setting, auth_error=True) from None
        except InvalidChecksumError as exc:
            raise TransientServiceError(f"{service}: MD5 mismatch: {_clean(str(exc))}") from None
        except SentinelAPIError as exc:
            error = _service_error(exc, service, _DHUS_KEYS, setting)
            if error is None:
                error = PermanentServiceError(
                    f"{service}: {type(exc).__name__} (check the setting {setting}): "
                    f"{_clean(str(exc))}")
            raise error from None

    return retrying(retries, service)(attempt)()


def _dhus_query(options: EsaOptions, bbox: tuple[float, float, float, float] | None) -> dict[str, Any]:
    query: dict[str, Any] = {}
    match = re.fullmatch(r"S([1-6])_SAR_(\w+)", options.collection)
    if match:
        query["platformname"] = f"Sentinel-{match.group(1)}"
        query["producttype"] = match.group(2)
    else:
        query["producttype"] = options.collection
    if bbox is not None:
        query["area"] = _bbox_wkt(bbox)
    start, end = _date_range(options)
    if start is not None or end is not None:
        query["date"] = (start or "*", end or "NOW")
    if options.flight_direction:
        query["orbitdirection"] = options.flight_direction
    if options.relative_orbit is not None:
        query["relativeorbitnumber"] = options.relative_orbit
    return query


def _dhus_search(api: Any, options: EsaOptions, bbox: tuple[float, float, float, float] | None,
                 retries: RetryOptions) -> list[tuple[SceneRecord, str]]:
    """Records (with OData size and MD5) and their product UUIDs."""
    service = f"DHuS search {scrub_url(options.search_url or '')}"
    products = _dhus_call(retries, service, "ingest.esa.search_url / ingest.esa.collection",
                          api.query, **_dhus_query(options, bbox))
    out = []
    for uuid, p in products.items():
        info = _dhus_call(retries, f"DHuS product {uuid}", "ingest.esa.search_url",
                          api.get_product_odata, uuid)
        name = str(p.get("title") or info.get("title"))
        start = _utc(p.get("beginposition") or info.get("date"))
        if start is None:
            raise PermanentServiceError(f"DHuS: product {name} has no acquisition time")
        record = SceneRecord(
            source=DHUS_SOURCE, scene_id=name, platform=_platform(p.get("platformname"), None, name),
            start_time=start, stop_time=_utc(p.get("endposition")),
            beam_mode=p.get("sensoroperationalmode") or None,
            polarization=_polarization(p.get("polarisationmode")),
            flight_direction=_direction(p.get("orbitdirection")),
            relative_orbit=_int(p.get("relativeorbitnumber")),
            product_type=p.get("producttype") or None,
            footprint_wkt=p.get("footprint") or None,
            url=scrub_url(info.get("url") or p.get("link") or "") or None,
            size_bytes=_int(info.get("size")), md5=_md5_of(info.get("md5")))
        out.append((record, uuid))
    return out


# ---------------------------------------------------------------------------- interface
def search_esa(options: EsaOptions, bbox: tuple[float, float, float, float] | None,
               retries: RetryOptions) -> list[SceneRecord]:
    """Scenes of ``options.collection`` over ``bbox`` (west, south, east, north; degrees).

    Dispatches on ``options.backend``; transient errors are retried per ``retries``; a refused
    account raises :class:`MissingCredentialError`, a bad request or unknown endpoint
    :class:`PermanentServiceError` naming the setting to check.
    """
    if options.backend == "sentinelsat":
        return [r for r, _ in _dhus_search(_dhus_api(options), options, bbox, retries)]
    with _eodag_gateway(options) as dag:
        return [_eodag_record(p, options) for p in _eodag_search_products(dag, options, bbox, retries)]


def _already_stored(ledger: Ledger, source: str, scene_id: str, root: Path | None = None) -> bool:
    """Whether a file of ``scene_id`` is in the manifest and still on disk as recorded.

    A recorded file that is gone or whose size differs counts as not stored (fetched again);
    its bytes are verified against the SHA-256 when the raw store is verified.
    """
    for e in ledger.files(source):
        if scene_id in Path(e.path).name or f"/{scene_id}/" in f"/{e.path}":
            path = Path(e.path) if Path(e.path).is_absolute() or root is None else root / e.path
            if not path.is_file() or path.stat().st_size != e.bytes:
                return False
            return True
    return False


def _adopt_tree(store: RawStore, path: Path, source: str, query: dict[str, Any],
                url: str | None) -> list[str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [store.adopt(f, source, query, url=url).path for f in files]


def discover_esa_scenes(cfg: StudyConfig, ledger: Ledger, store: RawStore | None = None) -> dict:
    """Search ESA/Copernicus per ``cfg.ingest.esa``, record the scenes, download them if asked.

    Every scene found goes to the ledger (:meth:`Ledger.add_scenes`); with
    ``ingest.esa.download`` each scene without a file in the manifest is downloaded by the
    client library (eodag download; sentinelsat download with MD5 check) into
    ``<work_dir>/raw/esa/<source>/`` and recorded in the manifest. Returns a JSON-able summary.
    """
    options, retries = cfg.ingest.esa, cfg.ingest.retries
    bbox = cfg.aoi.bbox
    summary: dict[str, Any] = {"source": "esa", "backend": options.backend,
                               "provider": DHUS_SOURCE if options.backend == "sentinelsat"
                               else options.provider,
                               "collection": options.collection, "enabled": options.enabled,
                               "found": 0, "new": 0, "downloaded": 0, "already_stored": 0,
                               "files": [], "failed": []}
    if not options.enabled:
        return summary
    raw = Path(cfg.stores.work_dir) / "raw"
    store = store or RawStore(raw, ledger, retries)
    dest_root = raw / "esa" / summary["provider"]
    query = {"collection": options.collection, "bbox": list(bbox) if bbox else None,
             "start": str(options.start) if options.start else None,
             "end": str(options.end) if options.end else None,
             "flight_direction": options.flight_direction, "relative_orbit": options.relative_orbit}

    def download_each(items: list[tuple[SceneRecord, Any]], fetch: Any) -> None:
        for record, handle in items:
            if _already_stored(ledger, record.source, record.scene_id, store.root):
                summary["already_stored"] += 1
                continue
            try:
                files = fetch(record, handle)
            except MissingCredentialError:
                raise
            except IngestError as exc:
                logger.warning("ESA download of %s failed: %s", record.scene_id, exc)
                summary["failed"].append({"scene_id": record.scene_id, "error": _clean(str(exc))})
                continue
            summary["downloaded"] += 1
            summary["files"].extend(files)

    if options.backend == "sentinelsat":
        api = _dhus_api(options)
        found = _dhus_search(api, options, bbox, retries)
        summary["found"], summary["new"] = len(found), len(ledger.add_scenes([r for r, _ in found]))
        if options.download:
            def fetch_dhus(record: SceneRecord, uuid: str) -> list[str]:
                dest_root.mkdir(parents=True, exist_ok=True)
                info = _dhus_call(retries, f"DHuS download {record.scene_id}", "ingest.esa.search_url",
                                  api.download, uuid, directory_path=str(dest_root), checksum=True)
                return _adopt_tree(store, Path(info["path"]), DHUS_SOURCE, query, record.url)

            download_each(found, fetch_dhus)
        return summary

    with _eodag_gateway(options, need_credentials=options.download) as dag:
        products = _eodag_search_products(dag, options, bbox, retries)
        found_e = [(_eodag_record(p, options), p) for p in products]
        summary["found"] = len(found_e)
        summary["new"] = len(ledger.add_scenes([r for r, _ in found_e]))
        if options.download:
            def fetch_eodag(record: SceneRecord, product: Any) -> list[str]:
                dest_root.mkdir(parents=True, exist_ok=True)
                path = _eodag_download(dag, product, record, dest_root, retries, options)
                return _adopt_tree(store, path, record.source, query, record.url)

            download_each(found_e, fetch_eodag)
    return summary


def _eodag_download(dag: Any, product: Any, record: SceneRecord, dest: Path, retries: RetryOptions,
                    options: EsaOptions) -> Path:
    """Download ``product`` with eodag into ``dest`` (archive kept), MD5 checked when stated."""
    service = f"eodag download {record.scene_id}"
    keys = _COPERNICUS_KEYS if options.provider in COPERNICUS_PROVIDERS else None

    def attempt() -> Path:
        from eodag.utils import ProgressCallback
        from eodag.utils.exceptions import AuthenticationError, EodagError

        # eodag remembers downloads in <dest>/.downloaded and then skips them even when the
        # file is gone; the ledger decides what is stored, so that memory is dropped.
        shutil.rmtree(dest / ".downloaded", ignore_errors=True)
        try:
            path = Path(dag.download(product, progress_callback=ProgressCallback(disable=True),
                                     output_dir=str(dest), extract=False, wait=0.001, timeout=0))
        except AuthenticationError as exc:
            raise _service_error(exc, service, keys, "", auth_error=True) from None
        except (EodagError, OSError) as exc:
            error = _service_error(exc, service, keys, "ingest.esa.collection")
            raise (error or TransientServiceError(f"{service}: {type(exc).__name__}: "
                                                  f"{_clean(str(exc))}")) from None
        if record.md5 and path.is_file() and sha256_of(path, md5=True) != record.md5:
            path.unlink()
            raise TransientServiceError(f"{service}: MD5 mismatch")
        return path

    return retrying(retries, service)(attempt)()
