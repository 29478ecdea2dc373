"""What every service client of talik shares: scene records, errors, credentials, retries.

* :class:`SceneRecord` — one acquisition found at a catalogue (ASF, Copernicus, a DHuS mirror):
  every source returns this type, so planning and the ledger never see a client's own objects.
* Errors — :class:`TransientServiceError` (retried: 5xx, timeouts, 429 with its Retry-After),
  :class:`PermanentServiceError` (fails fast: 400/401/403/404, budget exceeded) with the
  setting or credential to fix in the message.
* Credentials — :func:`credential` reads an environment variable, else a Prefect ``Secret``
  block; every value read is registered with :func:`register_secret`, after which it is
  replaced by ``***`` in every log record of the process (:func:`install_redaction`).
* Retries — :func:`retrying` (tenacity) for client calls, :func:`http_session` (urllib3
  ``Retry``) for plain downloads; both honour ``Retry-After``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from talik.config import RetryOptions

__all__ = [
    "CREDENTIALS",
    "TRANSIENT_STATUS",
    "BudgetExceededError",
    "CredentialSpec",
    "IngestError",
    "MissingCredentialError",
    "PermanentServiceError",
    "SceneRecord",
    "TransientServiceError",
    "credential",
    "http_session",
    "install_redaction",
    "raise_for_status",
    "redact",
    "register_secret",
    "require_credential",
    "retry_after_seconds",
    "retrying",
    "scrub_url",
]

T = TypeVar("T")


# ------------------------------------------------------------------------------ scene records
class SceneRecord(BaseModel):
    """One SAR acquisition found at a catalogue, whatever the client that found it."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="Catalogue: 'asf', 'cop_dataspace', 'dhus', ...")
    scene_id: str = Field(description="Granule / product name, e.g. S1A_IW_SLC__1SDV_2020...")
    platform: str = Field(description="Platform, e.g. 'Sentinel-1A', 'ERS-2'.")
    start_time: dt.datetime = Field(description="Acquisition start (UTC).")
    stop_time: dt.datetime | None = Field(default=None, description="Acquisition stop (UTC).")
    beam_mode: str | None = None
    polarization: str | None = None
    flight_direction: str | None = Field(default=None, description="ASCENDING or DESCENDING.")
    relative_orbit: int | None = None
    frame: int | None = None
    product_type: str | None = Field(default=None, description="e.g. SLC, IW_SLC__1S, SAR_IMS_1P.")
    footprint_wkt: str | None = Field(default=None, description="Footprint (WKT, EPSG:4326).")
    url: str | None = Field(default=None, description="Download URL (never with credentials).")
    size_bytes: int | None = None
    md5: str | None = Field(default=None, description="MD5 of the file, when the catalogue states it.")

    @property
    def date(self) -> dt.date:
        """Acquisition date (UTC)."""
        return self.start_time.date()


# ---------------------------------------------------------------------------------- errors
class IngestError(RuntimeError):
    """A service could not give what was asked; ``status`` is the HTTP status when known."""

    status: int | None = None


class TransientServiceError(IngestError):
    """Worth retrying: a 5xx, a timeout, a 429 or a queue that is not done yet."""

    def __init__(self, message: str, retry_after_s: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status


class PermanentServiceError(IngestError):
    """Not worth retrying: fix the named setting or credential first."""


class MissingCredentialError(PermanentServiceError):
    """A credential is missing or was refused (401/403)."""


class BudgetExceededError(PermanentServiceError):
    """An order would spend more than the configured budget."""


# ----------------------------------------------------------------------------- credentials
class CredentialSpec(BaseModel):
    """Where a credential is looked for: an environment variable, then a Prefect Secret block."""

    model_config = ConfigDict(frozen=True)

    env: str
    block: str
    what: str


CREDENTIALS: dict[str, CredentialSpec] = {
    "earthdata_token": CredentialSpec(
        env="EARTHDATA_TOKEN", block="talik-earthdata-token",
        what="NASA Earthdata Login bearer token (ASF search downloads and HyP3)"),
    "cds_key": CredentialSpec(
        env="CDSAPI_KEY", block="talik-cdsapi-key",
        what="Copernicus Climate Data Store personal access token"),
    "ee_service_account": CredentialSpec(
        env="EE_SERVICE_ACCOUNT_KEY", block="talik-ee-service-account",
        what="Google service-account key (JSON text) registered for Earth Engine"),
    "copernicus_username": CredentialSpec(
        env="COPERNICUS_USERNAME", block="talik-copernicus-username",
        what="Copernicus Data Space user name"),
    "copernicus_password": CredentialSpec(
        env="COPERNICUS_PASSWORD", block="talik-copernicus-password",
        what="Copernicus Data Space password"),
    "dhus_username": CredentialSpec(
        env="DHUS_USERNAME", block="talik-dhus-username", what="DHuS mirror user name"),
    "dhus_password": CredentialSpec(
        env="DHUS_PASSWORD", block="talik-dhus-password", what="DHuS mirror password"),
}


def _from_block(name: str) -> str | None:
    """The value of Prefect Secret block ``name``, or None (no server, no block)."""
    try:
        from prefect.blocks.system import Secret
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return None  # outside a run there is no API to ask (and no server to start)
        value = Secret.load(name, _sync=True).get()
    except Exception:  # noqa: BLE001 - a missing block is simply "not configured"
        return None
    return str(value) if value else None


def credential(key: str) -> str | None:
    """The credential ``key`` of :data:`CREDENTIALS` (environment first), or None.

    A value found is registered for redaction before it is returned.
    """
    spec = CREDENTIALS[key]
    value = os.environ.get(spec.env) or _from_block(spec.block)
    if value:
        register_secret(value)
    return value or None


def require_credential(key: str, service: str) -> str:
    """:func:`credential`, or a :class:`MissingCredentialError` saying how to provide it."""
    value = credential(key)
    if value is None:
        spec = CREDENTIALS[key]
        raise MissingCredentialError(
            f"{service}: no {spec.what}; set the environment variable {spec.env} or create "
            f"the Prefect Secret block '{spec.block}'")
    return value


# ------------------------------------------------------------------------------- redaction
_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_MASK = "***"
_installed = False


def register_secret(value: str) -> None:
    """Mask ``value`` (and each line of it, for multi-line keys) in every later log record."""
    parts = {value.strip()} | {line.strip() for line in value.splitlines()}
    with _LOCK:
        _SECRETS.update(p for p in parts if len(p) >= 6)  # short fragments would mask words
    install_redaction()


_SECRET_IN_QUERY = re.compile(
    r"([?&](?:token|access_token|id_token|refresh_token|apikey|api_key|password|signature|"
    r"x-amz-signature|x-amz-security-token)=)[^&\s'\"]+", re.IGNORECASE)
"""Query parameters that carry a credential: masked even when the value was never registered
(a token a client fetched itself, e.g. the Copernicus Data Space one eodag puts in URLs)."""


def redact(text: str) -> str:
    """``text`` with every registered secret, and every credential in a URL query, as ``***``."""
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return _SECRET_IN_QUERY.sub(r"\1" + _MASK, text)


_TRACEBACKS = logging.Formatter()


def _redact_traceback(record: logging.LogRecord) -> None:
    """Mask secrets in a record's traceback and stack text too.

    ``log.exception`` and Prefect's "Task run failed" records carry a traceback, and a client
    exception may quote a key or a signed URL. When anything was masked, the formatted and
    masked text replaces the exception itself (``exc_text``; ``exc_info`` cleared), so no
    handler or formatter formats the original.
    """
    try:
        if record.exc_info and record.exc_info[0] is not None:
            text = _TRACEBACKS.formatException(record.exc_info)
            clean = redact(text)
            if clean != text:
                record.exc_info, record.exc_text = None, clean
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
    except Exception:  # noqa: BLE001 - never lose a log record over its traceback
        return


def install_redaction() -> None:
    """Make every log record of the process pass through :func:`redact` (idempotent).

    A record factory, not a handler filter: it covers every logger and every handler,
    Prefect's API log handler included, whenever they were set up.
    """
    global _installed
    with _LOCK:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's business
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        _redact_traceback(record)
        return record

    logging.setLogRecordFactory(factory)
    for name in ("cdsapi", "ecmwf.datastores", "urllib3", "eodag", "asf_search", "hyp3_sdk",
                 "googleapiclient", "sentinelsat"):
        logger = logging.getLogger(name)  # clients that log keys or tokens at DEBUG
        if logger.level in (logging.NOTSET, logging.DEBUG) or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


_SECRET_QUERY = {"token", "access_token", "key", "apikey", "api_key", "password", "signature",
                 "x-amz-signature", "x-amz-credential", "x-amz-security-token", "sig"}


def scrub_url(url: str) -> str:
    """``url`` without user info and without query parameters that carry credentials."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k.lower() not in _SECRET_QUERY]
    return redact(urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), "")))


# --------------------------------------------------------------------------------- retries
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` header (seconds or an HTTP date) asks to wait, or None."""
    if headers is None:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")  # httplib2: lower case
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def raise_for_status(response: Any, service: str, credential_key: str | None = None,
                     setting: str | None = None) -> None:
    """Turn an HTTP error response into a transient or permanent service error.

    ``credential_key`` names the credential to fix on 401/403; ``setting`` the configuration
    field to check on 400/404. The message never holds the request's headers or query.
    """
    status = int(response.status_code)
    if status < 400:
        return
    url = scrub_url(str(getattr(response, "url", "")))
    detail = redact((getattr(response, "text", "") or "")[:300].strip())
    if status in TRANSIENT_STATUS:
        raise TransientServiceError(f"{service}: HTTP {status} from {url}: {detail}",
                                    retry_after_seconds(response.headers), status)
    if status in (401, 403) and credential_key is not None:
        spec = CREDENTIALS[credential_key]
        error: IngestError = MissingCredentialError(
            f"{service}: HTTP {status} (refused) from {url}: check the {spec.what} in "
            f"{spec.env} or the Prefect Secret block '{spec.block}': {detail}")
    else:
        hint = f" (check the setting {setting})" if setting else ""
        error = PermanentServiceError(f"{service}: HTTP {status} from {url}{hint}: {detail}")
    error.status = status
    raise error


def retrying(options: RetryOptions, service: str,
             transient: Iterable[type[BaseException]] = ()) -> Callable[[Callable[..., T]],
                                                                        Callable[..., T]]:
    """A tenacity decorator for client calls of ``service``.

    Retries :class:`TransientServiceError` (and ``transient`` types, e.g. a client's
    connection errors) with exponential backoff and jitter, honouring a Retry-After, and
    re-raises the last error when the attempts are used up.
    """
    import requests
    import tenacity

    kinds = (TransientServiceError, requests.ConnectionError, requests.Timeout,
             requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
             *transient)  # a body cut off mid-transfer is worth another (resumed) attempt
    backoff = tenacity.wait_exponential_jitter(multiplier=options.backoff_s, max=options.max_backoff_s,
                                               jitter=options.backoff_s)
    logger = logging.getLogger("talik.ingest")

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after_s", None)
        if after is not None:
            return min(float(after), options.max_backoff_s)
        return backoff(state)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("%s: attempt %d failed (%s); retrying in %.1f s", service,
                       state.attempt_number, redact(str(exc)), state.upcoming_sleep)

    return tenacity.retry(retry=tenacity.retry_if_exception_type(kinds),
                          stop=tenacity.stop_after_attempt(options.attempts), wait=wait,
                          before_sleep=before_sleep, reraise=True)


def http_session(options: RetryOptions, allowed_methods: Iterable[str] = ("GET", "HEAD"),
                 retry: bool = True) -> Any:
    """A ``requests.Session`` whose adapters retry transient statuses (Retry-After honoured).

    A Retry-After is waited at most ``options.max_backoff_s``. ``retry=False`` gives adapters
    that never retry: for callers that retry themselves with :func:`retrying` (one retry layer,
    so ``attempts`` means attempts, not attempts squared).
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    if not retry:
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=Retry(0, read=False, raise_on_status=False))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session
    policy: dict[str, Any] = dict(
        total=options.attempts - 1, connect=options.attempts - 1, read=options.attempts - 1,
        status=options.attempts - 1, backoff_factor=options.backoff_s / 2,
        backoff_max=options.max_backoff_s, status_forcelist=sorted(TRANSIENT_STATUS),
        allowed_methods=frozenset(allowed_methods), respect_retry_after_header=True,
        raise_on_status=False)
    try:  # urllib3 >= 2.6 caps Retry-After itself (its default cap is 6 hours)
        retry_policy = Retry(**policy, retry_after_max=max(1, math.ceil(options.max_backoff_s)))
    except TypeError:  # older urllib3: no cap to set; do not wait for Retry-After at all
        retry_policy = Retry(**{**policy, "respect_retry_after_header": False})
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
