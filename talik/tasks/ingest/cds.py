"""ERA5-Land from the Copernicus Climate Data Store, queued, resumable and provisional-aware.

:func:`fetch_era5_land` asks the CDS for ERA5-Land over the study area and leaves one NetCDF
where the ERA5 reader (:func:`talik.tasks.readers.era5.read_era5_land`) reads it,
``cfg.source.era5``.

Requests
    One request per month for the hourly dataset (``reanalysis-era5-land``: variables × days ×
    24 h fields, 7 × 31 × 24 = 5 208 fields at most), one per year for the monthly means
    (``reanalysis-era5-land-monthly-means``: variables × months fields, 7 × 12 = 84 at most,
    about two orders of magnitude under the CDS's per-request field limits). The area is the
    study box ``(W, S, E, N)`` snapped outwards to the 0.1° ERA5-Land grid and padded by one
    grid cell, sent as CDS ``area`` ``[N, W, S, E]`` (degrees). A request the CDS refuses as too
    large (HTTP 403, title ``cost limits exceeded``, detail "Your request is too large, please
    reduce your selection." — the processing API's ``verify_cost``) is split, by variables
    first, then by months (monthly means) or days (hourly), and the parts are requested instead;
    the split is recorded so a later run asks for the same parts.

Queue
    At most ``cfg.ingest.cds.max_in_flight`` requests are queued at the CDS at once. A
    request's remote id is written to the ledger (``requests`` table, source ``cds``) as soon as
    the CDS accepts it, so a run that is stopped while requests are queued is picked up by the
    next run, which polls the same remote ids instead of submitting again. Queued requests are
    polled every ``poll_interval_s`` seconds. The non-blocking calls are those of
    ``ecmwf.datastores`` (``submit`` → ``Remote``, ``get_remote(id)``, ``Remote.status``,
    ``Results.download``), reached through ``cdsapi.Client`` (``quiet``, no progress bar, jobs
    never deleted by the library). The library's own retry loop is switched off; transient
    errors (5xx, 429 with its ``Retry-After``, connection errors) are retried with
    :func:`~talik.tasks.ingest.common.retrying`, and 401/403 fail at once naming ``CDSAPI_KEY``.

Files (what the reader reads)
    Each request's result is downloaded under a temporary name into the parts folder — a
    sibling of ``cfg.source.era5`` named ``<stem>_parts`` — then renamed into place and adopted
    into the raw-store manifest with the request as its query. Once every planned request is
    downloaded the parts are merged along time into one NetCDF at ``cfg.source.era5`` (written
    under a temporary name and renamed), which is also adopted. If ``cfg.source.era5`` is a
    folder (an existing folder, or a path without a suffix) the merged file is
    ``<folder>/era5_land.nc`` and the parts go to ``<folder>_parts``. The parts cannot live
    where the reader looks: it merges a folder's files variable by variable without
    concatenating along time, so only the first month of a folder of monthly files would survive.
    Values are left as the CDS delivers them (K, m, J m⁻², m, m³ m⁻³; hourly accumulations run
    from 00 UTC): the reader converts units and de-accumulates.

Provisional data (ERA5T)
    A month within :data:`PROVISIONAL_MONTHS` months of ``today``, or whose data carry
    ``expver`` 5 (``"0005"``), is provisional: its manifest entries are marked so (and the
    ``today`` it was fetched for is kept in its query). On a later run, as soon as a month that
    was provisional then is old enough to be final, its request is made again and the part
    replaced (a year of monthly means is asked for again for each month that turns final —
    84 fields each time); the summary lists the months that went from provisional to final,
    and the merged file (hence the flow's input checksum) changes. A month whose new data
    still carry ``expver`` 5 stays provisional and is asked for again on the next run.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from talik.config import CdsOptions, LocalSource, RetryOptions, StudyConfig
from talik.tasks.ingest.common import (
    CREDENTIALS,
    IngestError,
    MissingCredentialError,
    PermanentServiceError,
    TransientServiceError,
    raise_for_status,
    redact,
    require_credential,
    retrying,
)
from talik.tasks.ingest.ledger import Ledger, RequestEntry
from talik.tasks.ingest.rawstore import RawStore, sha256_of
from talik.tasks.readers.archive import safe_extract

__all__ = [
    "GRID_DEG",
    "HOURLY",
    "MONTHLY",
    "PROVISIONAL_MONTHS",
    "Chunk",
    "CostLimitExceededError",
    "cds_area",
    "fetch_era5_land",
    "output_paths",
    "plan_chunks",
]

logger = logging.getLogger("talik.ingest")
T = TypeVar("T")

SOURCE = "cds"
SERVICE = "CDS (ERA5-Land)"
HOURLY = "reanalysis-era5-land"
MONTHLY = "reanalysis-era5-land-monthly-means"
GRID_DEG = 0.1
"""ERA5-Land grid spacing, degrees."""
PROVISIONAL_MONTHS = 3
"""A month this many calendar months before ``today``, or fewer, may still be ERA5T."""
LATENCY_DAYS = 6
"""Days after a month ends before the CDS has all of it (ERA5-Land runs ~5 days behind)."""
MERGED_NAME = "era5_land.nc"
_TOO_LARGE = ("cost limits exceeded", "request is too large", "request too large")
_LICENCE = ("licence", "license")
_CLIENT_LOGGERS = ("cdsapi", "ecmwf.datastores", "ecmwf.datastores.legacy_client",
                   "ecmwf.datastores.processing", "multiurl")

# Seconds to wait between polls; a module attribute so a test can stop a run mid-queue.
sleep: Callable[[float], None] = time.sleep


class CostLimitExceededError(PermanentServiceError):
    """The CDS refused a request as over its cost limit: ask for smaller parts."""


# ----------------------------------------------------------------------------- planning
def _month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


def months_ago(year: int, month: int, today: dt.date) -> int:
    """Calendar months from ``year-month`` to ``today``'s month (0 = this month)."""
    return _month_index(today.year, today.month) - _month_index(year, month)


def provisional_by_age(year: int, month: int, today: dt.date) -> bool:
    """Whether ``year-month`` is recent enough to still be provisional ERA5T data."""
    return months_ago(year, month, today) <= PROVISIONAL_MONTHS


def available(year: int, month: int, today: dt.date) -> bool:
    """Whether the whole month is at the CDS by ``today`` (ended :data:`LATENCY_DAYS` ago)."""
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last + dt.timedelta(days=LATENCY_DAYS) < today


def cds_area(bbox: tuple[float, float, float, float] | None) -> list[float]:
    """CDS ``area`` ``[N, W, S, E]`` (degrees) of a ``(W, S, E, N)`` box, on the 0.1° grid + 1 cell."""
    if bbox is None:
        raise PermanentServiceError(f"{SERVICE}: the study has no area; set aoi.bbox "
                                    "(west, south, east, north) in degrees")
    west, south, east, north = bbox
    cells = 1.0 / GRID_DEG

    def out(value: float, up: bool) -> float:  # snap outwards to the grid, then one more cell
        snapped = math.ceil(value * cells - 1e-6) if up else math.floor(value * cells + 1e-6)
        return round((snapped + (1 if up else -1)) / cells, 1)

    return [min(90.0, out(north, True)), max(-180.0, out(west, False)),
            max(-90.0, out(south, False)), min(180.0, out(east, True))]


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode(), usedforsecurity=False
                        ).hexdigest()[:8]


@dataclass(frozen=True)
class Chunk:
    """One CDS request: a dataset, a year, some of its months (and days), some variables.

    ``days`` is None for every day of the month (and always None for monthly means).
    """

    dataset: str
    year: int
    months: tuple[int, ...]
    variables: tuple[str, ...]
    area: tuple[float, ...]
    days: tuple[int, ...] | None = None

    @property
    def hourly(self) -> bool:
        """Whether this is the hourly dataset (else monthly means)."""
        return self.dataset != MONTHLY

    @property
    def name(self) -> str:
        """Time span and a digest of variables and area, e.g. ``2020-01_d01-15_1a2b3c4d``."""
        span = f"{self.year:04d}-{self.months[0]:02d}"
        if len(self.months) > 1:
            span += f"..{self.months[-1]:02d}"
        if self.days is not None:
            span += f"_d{self.days[0]:02d}-{self.days[-1]:02d}"
        return f"{span}_{_digest(self.variables, self.area)}"

    @property
    def key(self) -> str:
        """Ledger key of the request."""
        return f"{self.dataset}/{self.name}"

    @property
    def month_labels(self) -> list[str]:
        """``YYYY-MM`` of every month requested."""
        return [f"{self.year:04d}-{m:02d}" for m in self.months]

    def day_list(self, month: int) -> list[int]:
        """Days of ``month`` requested."""
        if self.days is not None:
            return list(self.days)
        return list(range(1, calendar.monthrange(self.year, month)[1] + 1))

    def request(self) -> dict[str, Any]:
        """The CDS request (its ``inputs``)."""
        common = {"variable": list(self.variables), "year": [f"{self.year:04d}"],
                  "month": [f"{m:02d}" for m in self.months], "area": list(self.area),
                  "data_format": "netcdf", "download_format": "unarchived"}
        if not self.hourly:
            return {"product_type": ["monthly_averaged_reanalysis"], **common, "time": ["00:00"]}
        return {**common, "day": [f"{d:02d}" for d in self.day_list(self.months[0])],
                "time": [f"{h:02d}:00" for h in range(24)]}

    def fields(self) -> int:
        """Number of 2-D fields asked for (variables × time steps), what the CDS's cost counts."""
        steps = sum(len(self.day_list(m)) * 24 for m in self.months) if self.hourly \
            else len(self.months)
        return len(self.variables) * steps

    def split(self) -> list[Chunk] | None:
        """Two smaller requests covering this one (variables, then months, then days), or None."""
        def halves(items: tuple) -> tuple[tuple, tuple]:
            mid = (len(items) + 1) // 2
            return items[:mid], items[mid:]

        if len(self.variables) > 1:
            a, b = halves(self.variables)
            return [Chunk(self.dataset, self.year, self.months, v, self.area, self.days) for v in (a, b)]
        if len(self.months) > 1:
            a, b = halves(self.months)
            return [Chunk(self.dataset, self.year, m, self.variables, self.area, self.days) for m in (a, b)]
        days = tuple(self.day_list(self.months[0])) if self.hourly else ()
        if len(days) > 1:
            a, b = halves(days)
            return [Chunk(self.dataset, self.year, self.months, self.variables, self.area, d) for d in (a, b)]
        return None


def plan_chunks(options: CdsOptions, area: list[float], today: dt.date) -> list[Chunk]:
    """The top-level requests: one per month (hourly) or per year (monthly means).

    Years ``first_year`` to ``last_year`` (unset: ``today``'s year); only months the CDS has
    in full by ``today`` (see :func:`available`).
    """
    last_year = options.last_year if options.last_year is not None else today.year
    chunks = []
    for year in range(options.first_year, last_year + 1):
        months = tuple(m for m in range(1, 13) if available(year, m, today))
        if not months:
            continue
        if options.dataset == MONTHLY:
            chunks.append(Chunk(MONTHLY, year, months, tuple(options.variables), tuple(area)))
        else:
            chunks += [Chunk(options.dataset, year, (m,), tuple(options.variables), tuple(area))
                       for m in months]
    return chunks


def output_paths(era5: Path) -> tuple[Path, Path]:
    """``(merged file, parts folder)`` for the configured ``source.era5`` (see module doc)."""
    era5 = Path(era5)
    if era5.is_dir() or (not era5.exists() and not era5.suffix):
        return era5 / MERGED_NAME, era5.with_name(f"{era5.name}_parts")
    return era5, era5.with_name(f"{era5.stem}_parts")


# ------------------------------------------------------------------------------ client
def _quiet_client_loggers() -> None:
    """Keep the client libraries' loggers at INFO or above (at DEBUG they log the key)."""
    for name in _CLIENT_LOGGERS:
        lg = logging.getLogger(name)
        if lg.level < logging.INFO:
            lg.setLevel(logging.INFO)


def _error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    body = ""
    if response is not None:
        with contextlib.suppress(Exception):
            body = response.text or ""
    return redact(f"{exc} {body}")


def _licence_hint(dataset: str, url: str) -> str:
    base = url.rsplit("/api", 1)[0] if "/api" in url else url
    return (f"; if the token is right, accept the licence of the dataset once in the web "
            f"interface ({base}/datasets/{dataset}?tab=download#manage-licences)")


class _Cds:
    """The CDS through ``cdsapi``/``ecmwf.datastores``, every call retried by our rules."""

    def __init__(self, options: CdsOptions, retries: RetryOptions, key: str) -> None:
        if ":" in key:
            spec = CREDENTIALS["cds_key"]
            raise MissingCredentialError(
                f"{SERVICE}: {spec.env} has the form UID:KEY of the retired CDS; set it to the "
                "personal access token of the new CDS (your profile page at the CDS)")
        import cdsapi

        _quiet_client_loggers()
        self.options = options
        self.retries = retries
        legacy = cdsapi.Client(url=options.url, key=key, quiet=True, debug=False, progress=False,
                               delete=False, retry_max=1, sleep_max=options.poll_interval_s,
                               wait_until_complete=False)
        self.client = legacy.client  # ecmwf.datastores.Client: submit / get_remote / results

    def _translate(self, exc: BaseException) -> BaseException:
        """Our error for a client exception (a ``requests.HTTPError`` keeps its response)."""
        import requests

        text = _error_text(exc)
        low = text.lower()
        if any(t in low for t in _TOO_LARGE):
            return CostLimitExceededError(f"{SERVICE}: request refused as too large: {text[:300]}")
        response = getattr(exc, "response", None)
        if isinstance(exc, requests.HTTPError) and response is not None and response.status_code:
            status = int(response.status_code)
            try:
                raise_for_status(response, SERVICE, credential_key="cds_key",
                                 setting="ingest.cds (dataset, variables, url)")
            except MissingCredentialError as err:
                hint = _licence_hint(self.options.dataset, self.options.url) if status == 403 else ""
                if status == 403 and any(t in low for t in _LICENCE):
                    hint = " (the dataset's licence is not accepted)" + hint
                return MissingCredentialError(f"{err}{hint}")
            except IngestError as err:
                return err
            return PermanentServiceError(f"{SERVICE}: HTTP {status}: {text[:300]}")
        return exc

    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with transient errors retried and HTTP errors translated."""
        import requests

        def attempt() -> T:
            try:
                return fn(*args)
            except requests.HTTPError as exc:
                raise self._translate(exc) from None

        return retrying(self.retries, f"{SERVICE} {what}")(attempt)()

    def submit(self, chunk: Chunk) -> Any:
        """Queue ``chunk`` at the CDS; the ``Remote`` of the job."""
        return self.call(f"submit {chunk.key}", self.client.submit, chunk.dataset, chunk.request())

    def remote(self, remote_id: str) -> Any:
        """The ``Remote`` of a job queued earlier."""
        return self.call(f"job {remote_id}", self.client.get_remote, remote_id)

    def status(self, remote: Any) -> str:
        """``accepted``, ``running``, ``successful``, ``failed``, ``rejected``, ..."""
        return self.call(f"status of {remote.request_id}", lambda: str(remote.status))

    def failure(self, remote: Any) -> str:
        """The CDS's message for a failed job (redacted)."""
        try:
            self.call(f"results of {remote.request_id}", remote.get_results)
        except Exception as exc:  # noqa: BLE001 - the message is what we want
            return _error_text(exc)[:500]
        return "job failed without a message"

    def download(self, remote: Any, target: Path) -> None:
        """Download the job's result to ``target`` (its size is checked by the client)."""
        from ecmwf.datastores.processing import DownloadError

        results = self.call(f"results of {remote.request_id}", remote.get_results)

        def fetch() -> None:
            try:
                results.download(str(target))
            except (DownloadError, OSError) as exc:  # a failed transfer leaves no or half a file
                raise TransientServiceError(f"{SERVICE}: download of {remote.request_id}: "
                                            f"{redact(str(exc))}") from None

        self.call(f"download {remote.request_id}", fetch)


# ------------------------------------------------------------------------------- files
@contextlib.contextmanager
def _datasets(path: Path) -> Iterator[list[Any]]:
    """The datasets (loaded) of a part: one NetCDF, or each NetCDF of a CDS zip."""
    import xarray as xr

    if zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
            safe_extract(zf, Path(tmp), path)
            out = []
            for member in sorted(Path(tmp).rglob("*.nc")):
                with xr.open_dataset(member, engine="netcdf4") as ds:
                    out.append(ds.load())
            yield out
        return
    with xr.open_dataset(path, engine="netcdf4") as ds:
        yield [ds.load()]


def _time_name(ds: Any) -> str:
    name = next((n for n in ("valid_time", "time", "date") if n in ds.coords), None)
    if name is None:
        raise IngestError(f"{SERVICE}: a result has no time coordinate (valid_time or time)")
    return name


def _is_era5t(value: Any) -> bool:
    text = str(value.decode() if isinstance(value, bytes) else value).strip()
    return text.lstrip("0") == "5"


def era5t_months(path: Path) -> set[str]:
    """``YYYY-MM`` of the time steps a part marks as ERA5T (``expver`` 5 / ``"0005"``)."""
    import numpy as np
    import pandas as pd

    months: set[str] = set()
    with _datasets(path) as datasets:
        for ds in datasets:
            if "expver" not in ds.variables:
                continue
            tname = _time_name(ds)
            times = pd.DatetimeIndex(np.atleast_1d(ds[tname].values))
            exp = ds["expver"]
            if tname in exp.dims:
                flags = [_is_era5t(v) for v in np.atleast_1d(exp.values)]
                months |= {t.strftime("%Y-%m") for t, f in zip(times, flags, strict=True) if f}
            elif exp.dims == ("expver",):  # older layout: an expver dimension
                if any(_is_era5t(v) for v in exp.values):
                    months |= {t.strftime("%Y-%m") for t in times}
            elif _is_era5t(exp.values.item()):
                months |= {t.strftime("%Y-%m") for t in times}
    return months


def merge_parts(parts: list[Path], dest: Path) -> None:
    """Concatenate the parts along time (and variables side by side) into one NetCDF ``dest``.

    Written as ``.<name>.partial`` beside ``dest`` and renamed. A time step present in two
    parts is taken from the later one in ``parts``. ``expver`` is kept as a coordinate along
    ``valid_time``.
    """
    import xarray as xr

    arrays: dict[str, list[Any]] = {}
    expvers: list[Any] = []
    for part in parts:
        with _datasets(part) as datasets:
            for ds in datasets:
                tname = _time_name(ds)
                if tname != "valid_time":
                    ds = ds.rename({tname: "valid_time"})
                if "expver" in ds.dims:  # older layout: ERA5 and ERA5T side by side
                    ds = ds.max("expver")
                if "expver" in ds.variables and ds["expver"].dims == ("valid_time",):
                    expvers.append(ds["expver"].astype(str).reset_coords(drop=True))
                ds = ds.drop_vars([v for v in ("expver", "number") if v in ds.variables])
                for name, da in ds.data_vars.items():
                    if "valid_time" in da.dims:
                        arrays.setdefault(str(name), []).append(da)

    def along_time(items: list[Any]) -> Any:
        da = xr.concat(items, dim="valid_time", join="outer", coords="minimal",
                       compat="override", combine_attrs="override")
        keep = ~da.indexes["valid_time"].duplicated(keep="last")
        return da.isel(valid_time=keep).sortby("valid_time")

    if not arrays:
        raise IngestError(f"{SERVICE}: the results hold no variables along time")
    merged = xr.merge([along_time(items).rename(name) for name, items in arrays.items()],
                      join="outer", compat="override", combine_attrs="drop_conflicts")
    if expvers:
        exp = along_time(expvers).reindex(valid_time=merged["valid_time"], fill_value="")
        merged = merged.assign_coords(expver=("valid_time", exp.values.astype(str)))
    merged.attrs.update({"source": "Copernicus Climate Data Store, ERA5-Land",
                         "history": "parts merged by talik.tasks.ingest.cds"})
    encoding = {v: {"zlib": True, "complevel": 4} for v in merged.data_vars}
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    merged.to_netcdf(partial, engine="netcdf4", encoding=encoding)
    partial.replace(dest)


# --------------------------------------------------------------------------------- run
@dataclass
class _Run:
    """The state of one :func:`fetch_era5_land` call."""

    cds: _Cds
    ledger: Ledger
    store: RawStore
    parts_dir: Path
    today: dt.date
    entries: dict[str, RequestEntry] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    requeued: list[str] = field(default_factory=list)

    def record(self, chunk: Chunk, state: str, remote_id: str | None = None,
               result: str | None = None, provisional: bool = False) -> None:
        entry = RequestEntry(key=chunk.key, source=SOURCE,
                             request={"dataset": chunk.dataset, "inputs": chunk.request(),
                                      "fields": chunk.fields()},
                             remote_id=remote_id, state=state, result=result,
                             provisional=provisional)
        self.ledger.upsert_request(entry)
        self.entries[chunk.key] = entry

    def leaves(self, chunk: Chunk) -> list[Chunk]:
        """``chunk``, or the parts it was split into on an earlier run."""
        entry = self.entries.get(chunk.key)
        if entry is not None and entry.state == "split":
            parts = chunk.split() or []
            return [leaf for part in parts for leaf in self.leaves(part)]
        return [chunk]

    def part_path(self, chunk: Chunk) -> Path | None:
        entry = self.entries.get(chunk.key)
        if entry is None or entry.state != "downloaded" or not entry.result:
            return None
        path = Path(entry.result)
        return path if path.is_absolute() else self.store.root / path

    def needs_request(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` must be (re)submitted: never fetched, failed, missing or now final."""
        entry = self.entries.get(chunk.key)
        if entry is None or entry.state in ("pending", "failed", "lost"):
            return True
        if entry.state != "downloaded":
            return False
        path = self.part_path(chunk)
        if path is None or not self.store.verify(path):
            logger.warning("%s: %s is missing or changed; requesting it again", SERVICE, chunk.key)
            return True
        if entry.provisional:
            now_final = sorted(self.was_provisional(chunk, path)
                               - {lab for lab in chunk.month_labels if self.age_provisional(lab)})
            if now_final:
                logger.info("%s: %s holds provisional (ERA5T) data for %s, which is now final; "
                            "requesting it again", SERVICE, chunk.key, now_final)
                self.requeued.append(chunk.key)
                return True
        return False

    def age_provisional(self, label: str) -> bool:
        year, month = (int(x) for x in label.split("-"))
        return provisional_by_age(year, month, self.today)

    def was_provisional(self, chunk: Chunk, path: Path) -> set[str]:
        """Months of a part that were provisional when fetched: by age then, or by expver."""
        entry = self.store.ledger.file(self.store.relative(path))
        fetched = self.today
        if entry is not None:
            as_of = entry.query.get("as_of")
            fetched = dt.date.fromisoformat(as_of) if as_of else entry.fetched_at.date()
        by_age = {f"{chunk.year:04d}-{m:02d}" for m in chunk.months
                  if provisional_by_age(chunk.year, m, fetched)}
        return by_age | (era5t_months(path) & set(chunk.month_labels))

    def finish(self, chunk: Chunk, remote: Any) -> None:
        """Download a successful job into the parts folder and adopt it into the manifest."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        partial = self.parts_dir / f".{chunk.dataset}_{chunk.name}.partial"
        partial.unlink(missing_ok=True)
        self.cds.download(remote, partial)
        suffix = ".zip" if zipfile.is_zipfile(partial) else ".nc"
        dest = self.parts_dir / f"{chunk.dataset}_{chunk.name}{suffix}"
        for other in (".nc", ".zip"):  # a replaced part may have come in the other packaging
            if other != suffix:
                (self.parts_dir / f"{chunk.dataset}_{chunk.name}{other}").unlink(missing_ok=True)
        partial.replace(dest)
        era5t = era5t_months(dest)
        provisional = bool(era5t) or any(provisional_by_age(chunk.year, m, self.today)
                                         for m in chunk.months)
        if era5t and not any(provisional_by_age(chunk.year, m, self.today) for m in chunk.months):
            logger.warning("%s: %s still carries ERA5T data (expver 5) for %s; it will be asked "
                           "for again on a later run", SERVICE, chunk.key, sorted(era5t))
        query = {"dataset": chunk.dataset, "request": chunk.request(), "remote_id": remote.request_id,
                 "as_of": self.today.isoformat()}
        self.store.adopt(dest, SOURCE, query=query, url=self.cds.options.url, provisional=provisional)
        self.record(chunk, "downloaded", remote.request_id, self.store.relative(dest), provisional)
        self.downloaded.append(chunk.key)

    def drive(self, queue: list[Chunk], active: dict[str, tuple[Chunk, Any]],
              max_in_flight: int, poll_s: float, deadline: float | None) -> None:
        """Submit while fewer than ``max_in_flight`` are queued; poll; download what is done."""
        while queue or active:
            while queue and len(active) < max_in_flight:
                chunk = queue.pop(0)
                try:
                    remote = self.cds.submit(chunk)
                except CostLimitExceededError:
                    parts = chunk.split()
                    if parts is None:
                        raise PermanentServiceError(
                            f"{SERVICE}: {chunk.key} ({chunk.fields()} fields, one variable, one "
                            "day) is still refused as too large; reduce aoi.bbox") from None
                    logger.info("%s: %s (%d fields) is over the CDS cost limit; asking for %d "
                                "smaller requests", SERVICE, chunk.key, chunk.fields(), len(parts))
                    self.record(chunk, "split")
                    self.split.append(chunk.key)
                    queue[:0] = parts
                    continue
                self.record(chunk, "submitted", remote.request_id)
                self.submitted.append(chunk.key)
                active[chunk.key] = (chunk, remote)
            done = False
            for key, (chunk, remote) in list(active.items()):
                status = self.cds.status(remote)
                if status == "successful":
                    self.finish(chunk, remote)
                    del active[key]
                    done = True
                elif status in ("accepted", "running"):
                    entry = self.entries.get(key)
                    if entry is not None and entry.state != status and status == "running":
                        self.record(chunk, "running", remote.request_id)
                elif status in ("failed", "rejected"):
                    message = self.cds.failure(remote)
                    del active[key]
                    done = True
                    parts = chunk.split() if any(t in message.lower() for t in _TOO_LARGE) else None
                    if parts:
                        self.record(chunk, "split")
                        self.split.append(key)
                        queue[:0] = parts
                    else:
                        logger.error("%s: %s failed at the CDS: %s", SERVICE, key, message)
                        self.record(chunk, "failed", remote.request_id)
                        self.failed[key] = message
                else:  # dismissed or deleted at the CDS: ask again
                    logger.warning("%s: job %s of %s is %s; submitting again", SERVICE,
                                   remote.request_id, key, status)
                    del active[key]
                    self.record(chunk, "lost", remote.request_id)
                    queue.insert(0, chunk)
                    done = True
            if active and not done:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                sleep(poll_s)


def _summary_months(leaves: list[Chunk]) -> list[str]:
    return sorted({label for c in leaves for label in c.month_labels})


def fetch_era5_land(cfg: StudyConfig, ledger: Ledger, store: RawStore,
                    today: dt.date | None = None, *, max_wait_s: float | None = None
                    ) -> dict[str, Any]:
    """Fetch ERA5-Land for the study area into ``cfg.source.era5`` (see the module doc).

    ``today`` (default: today, UTC) decides which months exist and which are provisional.
    ``max_wait_s`` (seconds; default: no limit) returns early, requests still queued at the
    CDS and recorded in the ledger for the next run, and the merged file left as it was.
    Returns a JSON-able summary: the merged file and its SHA-256, the requests submitted,
    resumed, downloaded and split, the months covered, those still provisional and those
    replaced by final data this run, and whether the fetch is complete.
    """
    options = cfg.ingest.cds
    if not isinstance(cfg.source, LocalSource) or cfg.source.era5 is None:
        raise PermanentServiceError(f"{SERVICE}: set [source] kind = \"local\" and source.era5 "
                                    "(the NetCDF file or folder ERA5-Land is fetched into)")
    today = today or dt.datetime.now(dt.UTC).date()
    area = cds_area(cfg.aoi.bbox)
    merged_path, parts_dir = output_paths(cfg.source.era5)
    key = require_credential("cds_key", SERVICE)
    cds = _Cds(options, cfg.ingest.retries, key)
    run = _Run(cds, ledger, store, parts_dir, today,
               entries={e.key: e for e in ledger.requests(source=SOURCE)})

    leaves = [leaf for chunk in plan_chunks(options, area, today) for leaf in run.leaves(chunk)]
    if not leaves:
        raise PermanentServiceError(
            f"{SERVICE}: no month of {options.first_year}–{options.last_year or today.year} is at "
            f"the CDS by {today} (check ingest.cds.first_year and last_year)")
    active: dict[str, tuple[Chunk, Any]] = {}
    queue: list[Chunk] = []
    for chunk in leaves:
        entry = run.entries.get(chunk.key)
        if entry is not None and entry.state in ("submitted", "running") and entry.remote_id:
            try:
                active[chunk.key] = (chunk, cds.remote(entry.remote_id))
                run.resumed.append(chunk.key)
                continue
            except PermanentServiceError as exc:
                if isinstance(exc, MissingCredentialError):
                    raise
                logger.warning("%s: queued job %s of %s is gone (%s); submitting again", SERVICE,
                               entry.remote_id, chunk.key, exc)
                run.record(chunk, "lost", entry.remote_id)
        if run.needs_request(chunk):
            queue.append(chunk)
    logger.info("%s: %d requests planned, %d queued at the CDS from an earlier run, %d to submit",
                SERVICE, len(leaves), len(active), len(queue))
    deadline = time.monotonic() + max_wait_s if max_wait_s is not None else None
    run.drive(queue, active, options.max_in_flight, options.poll_interval_s, deadline)

    # what the leaves are now (requests split during this run have new leaves)
    leaves = [leaf for chunk in plan_chunks(options, area, today) for leaf in run.leaves(chunk)]
    parts = [run.part_path(c) for c in leaves]
    complete = all(p is not None for p in parts) and not run.failed and not active
    summary: dict[str, Any] = {
        "dataset": options.dataset, "area": area, "path": str(merged_path),
        "parts_dir": str(parts_dir), "planned": [c.key for c in leaves],
        "submitted": run.submitted, "resumed": run.resumed, "downloaded": run.downloaded,
        "split": run.split, "requested_again": run.requeued, "queued": sorted(active),
        "failed": sorted(run.failed),
        "months": _summary_months(leaves), "provisional_months": [], "replaced_months": [],
        "changed": False, "sha256": None, "complete": complete,
    }
    if run.failed:
        first = next(iter(run.failed.items()))
        raise PermanentServiceError(f"{SERVICE}: {len(run.failed)} request(s) failed at the CDS "
                                    f"(first {first[0]}: {first[1][:300]}); the ledger keeps them "
                                    "for the next run")
    if not complete:
        logger.info("%s: %d request(s) still queued at the CDS; %s left as it was", SERVICE,
                    len(active), merged_path)
        return summary

    part_paths = [p for p in parts if p is not None]
    provisional: set[str] = set()
    for chunk, path in zip(leaves, part_paths, strict=True):
        provisional |= era5t_months(path) & set(chunk.month_labels)
        provisional |= {f"{chunk.year:04d}-{m:02d}" for m in chunk.months
                        if provisional_by_age(chunk.year, m, today)}
    listing = [[store.relative(p), sha256_of(p)] for p in part_paths]
    previous = ledger.file(store.relative(merged_path))
    before = set(previous.query.get("provisional_months", [])) if previous is not None else set()
    unchanged = (previous is not None and previous.query.get("parts") == listing
                 and store.verify(merged_path))
    if not unchanged:
        merge_parts(part_paths, merged_path)
        entry = store.adopt(merged_path, SOURCE, url=options.url, provisional=bool(provisional),
                            query={"dataset": options.dataset, "area": area, "parts": listing,
                                   "months": summary["months"],
                                   "provisional_months": sorted(provisional)})
        summary["changed"] = True
        summary["sha256"] = entry.sha256
        summary["replaced_months"] = sorted(
            (before - provisional) & set(summary["months"]))
        logger.info("%s: wrote %s (%d months, %d provisional%s)", SERVICE, merged_path,
                    len(summary["months"]), len(provisional),
                    f", replaced {summary['replaced_months']}" if summary["replaced_months"] else "")
    else:
        summary["sha256"] = previous.sha256
    summary["provisional_months"] = sorted(provisional)
    return summary
