"""Loopback fakes of ASF search (HTTPS, trustme CA) and HyP3 (HTTP) for ingest tests.

Nothing here talks to anything but 127.0.0.1 / localhost.

Fixtures (import them into a test module to use them)::

    from tests.fakes.asf_hyp3 import (earthdata_token, fake_asf, fake_hyp3, make_study,  # noqa: F401
                                      slc_name, write_product)

    def test_run(fake_asf, fake_hyp3, tmp_path):
        dates = [dt.date(2020, 6, 1) + dt.timedelta(days=12 * k) for k in range(5)]
        fake_asf.set_dates(dates)                        # one S1 SLC scene per date (one stack)
        fake_hyp3.use_products(world / "hyp3")           # folder of HyP3 product folders
        cfg = make_study(tmp_path, fake_asf.host, fake_hyp3.url)   # a LocalSource study
        ...                                              # discover, plan, order, poll, download

``fake_asf``
    :class:`FakeAsf` on its own HTTPS server (certificate of a throwaway trustme CA; the CA
    is put in ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` for the test). It answers
    ``POST /search/granules.umm_json`` — asf_search 14.1's endpoint — in CMR's UMM JSON
    (``{"hits", "took", "items": [{"umm", "meta"}]}``), sorted by end time descending, filtered
    by ``temporal``, ``attribute[]`` (PATH_NUMBER, FRAME_NUMBER, ASCENDING_DESCENDING) and
    ``shortName``, paged by ``page_size`` with the ``CMR-Search-After`` header. ``set_dates``
    / ``set_scenes`` may be called again between runs (new acquisitions appear).
``fake_hyp3``
    :class:`FakeHyp3` on pytest-httpserver's ``httpserver`` (plain HTTP): ``GET /user``,
    ``POST /jobs`` (credits charged: INSAR_GAMMA 10 at 20x4, 15 at 10x2), ``GET /jobs`` with
    the name/status_code/job_type/start/end filters and ``next`` links (``page_size`` jobs per
    page), ``GET /jobs/{id}``. Each ``GET /jobs/{id}`` moves a job one step along
    PENDING → RUNNING → SUCCEEDED (or FAILED: ``fail_once`` dates fail their first job; a pair
    with no matching product folder always fails). A succeeded job's ``files[]`` points at
    ``/download/<job_id>/<product>.zip`` on the same server (no auth; ``Range`` honoured), a zip
    of the product folder whose reference and secondary dates match the granules' dates.
``earthdata_token``
    A random token put in ``EARTHDATA_TOKEN`` (monkeypatch). ``fake_hyp3`` requires that token
    as a bearer token (401 otherwise); without ``earthdata_token`` it makes and sets its own
    (``fake_hyp3.token``). Only ``fake_asf``/``fake_hyp3`` (and ``earthdata_token``) need importing.

``fake_hyp3.state`` holds the knobs: ``credits``, ``page_size``, ``expiry_days``, ``fail_once``
(a set of (reference date, secondary date)), ``corrupt_downloads`` (next N downloads are zeros),
``lose_post_responses`` (next N job submissions are created but answered 502).

Failure injection on both fakes: ``fail_next(status, times=1, headers=None, method=..., path=...)``
answers the next matching requests with that status (``{"detail": ...}`` / ``{"errors": [...]}``
bodies), e.g. ``fake_hyp3.fail_next(429, headers={"Retry-After": "0"}, path="/jobs",
method="POST")``. Every request is recorded in ``.requests`` (method, path, args, json, headers).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import ssl
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

__all__ = [
    "FakeAsf",
    "FakeHyp3",
    "Recorded",
    "earthdata_token",
    "fake_asf",
    "fake_hyp3",
    "make_study",
    "slc_name",
    "write_product",
]

_DATE = re.compile(r"_(\d{8})T\d{6}")


@dataclass
class Recorded:
    """One request a fake received."""

    method: str
    path: str
    args: dict[str, list[str]]
    json: Any
    headers: dict[str, str]


@dataclass
class _Injection:
    status: int
    times: int
    headers: dict[str, str]
    method: str | None
    path: str | None


class _Fake:
    """Request log and failure injection shared by both fakes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self._injections: list[_Injection] = []

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None,
                  method: str | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` requests (of ``method``, path starting with ``path``) with ``status``."""
        with self.lock:
            self._injections.append(_Injection(status, times, headers or {}, method, path))

    def _record(self, request: Request) -> None:
        body = None
        if request.is_json:
            body = request.get_json(silent=True)
        with self.lock:
            self.requests.append(Recorded(request.method, request.path, request.args.to_dict(flat=False),
                                          body, dict(request.headers)))

    def _injected(self, request: Request) -> _Injection | None:
        with self.lock:
            for inj in self._injections:
                if inj.times > 0 and (inj.method is None or inj.method == request.method) \
                        and (inj.path is None or request.path.startswith(inj.path)):
                    inj.times -= 1
                    return inj
        return None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {},
                    content_type="application/json")


# --------------------------------------------------------------------------------- ASF
def slc_name(when: dt.datetime, platform: str = "S1A", absolute_orbit: int = 12345) -> str:
    """A Sentinel-1 IW SLC scene name acquired at ``when`` (UTC; 27 s long)."""
    stop = when + dt.timedelta(seconds=27)
    crc = hashlib.sha1(f"{platform}{when.isoformat()}".encode()).hexdigest()[:4].upper()
    return (f"{platform}_IW_SLC__1SDV_{when:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
            f"{absolute_orbit:06d}_{absolute_orbit % 0xFFFFFF:06X}_{crc}")


@dataclass(frozen=True)
class FakeScene:
    """One scene the fake ASF serves."""

    start: dt.datetime
    relative_orbit: int = 41
    frame: int = 1180
    direction: str = "DESCENDING"
    platform: str = "S1A"
    size_bytes: int = 4_193_723_581
    bbox: tuple[float, float, float, float] = (99.0, 36.5, 102.5, 38.5)

    @property
    def name(self) -> str:
        orbit = 1000 + (self.start.toordinal() - 730000) * 15 % 90000
        return slc_name(self.start, self.platform, orbit)

    @property
    def md5(self) -> str:
        return hashlib.md5(self.name.encode(), usedforsecurity=False).hexdigest()

    def umm_item(self) -> dict[str, Any]:
        """The scene as CMR's UMM JSON item (the fields asf_search's S1Product reads)."""
        name = self.name
        stop = self.start + dt.timedelta(seconds=27)
        west, south, east, north = self.bbox
        iso = "%Y-%m-%dT%H:%M:%S.000Z"
        attrs = {"ASCENDING_DESCENDING": self.direction, "ASF_PLATFORM": f"Sentinel-1{self.platform[-1]}",
                 "BEAM_MODE": "IW", "BEAM_MODE_TYPE": "IW", "BYTES": str(self.size_bytes),
                 "CENTER_LAT": f"{(south + north) / 2:.4f}", "CENTER_LON": f"{(west + east) / 2:.4f}",
                 "FRAME_NUMBER": str(self.frame), "GRANULE_TYPE": f"SENTINEL_1{self.platform[-1]}_FRAME",
                 "GROUP_ID": f"{self.platform}_IWDV_{self.frame:04d}_{self.relative_orbit:03d}",
                 "MD5SUM": self.md5, "PATH_NUMBER": str(self.relative_orbit), "POLARIZATION": "VV+VH",
                 "PROCESSING_LEVEL": "L1", "PROCESSING_TYPE": "SLC"}
        ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
        url = f"https://datapool.asf.alaska.edu/SLC/S{self.platform[-1]}/{name}.zip"
        return {
            "meta": {"concept-type": "granule", "concept-id": f"G{abs(hash(name)) % 10**10}-ASF",
                     "revision-id": 1, "native-id": f"{name}-SLC", "provider-id": "ASF",
                     "format": "application/echo10+xml"},
            "umm": {
                "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": self.start.strftime(iso),
                                                     "EndingDateTime": stop.strftime(iso)}},
                "OrbitCalculatedSpatialDomains": [{"OrbitNumber": 12345}],
                "GranuleUR": f"{name}-SLC",
                "AdditionalAttributes": [{"Name": k, "Values": [v]} for k, v in attrs.items()],
                "SpatialExtent": {"HorizontalSpatialDomain": {"Geometry": {"GPolygons": [
                    {"Boundary": {"Points": [{"Longitude": x, "Latitude": y} for x, y in ring]}}]}}},
                "CollectionReference": {"ShortName": f"SENTINEL-1{self.platform[-1]}_SLC", "Version": "1"},
                "PGEVersionClass": {"PGEName": "Sentinel-1 IPF", "PGEVersion": "003.31"},
                "RelatedUrls": [{"Type": "GET DATA", "URL": url, "Format": "Not provided"}],
                "DataGranule": {"DayNightFlag": "Unspecified",
                                "Identifiers": [{"Identifier": name, "IdentifierType": "ProducerGranuleId"}],
                                "ProductionDateTime": stop.strftime(iso),
                                "ArchiveAndDistributionInformation": [
                                    {"Name": f"{name}.zip", "SizeInBytes": self.size_bytes,
                                     "Format": "ZIP"}]},
                "Platforms": [{"ShortName": f"SENTINEL-1{self.platform[-1]}",
                               "Instruments": [{"ShortName": "C-SAR"}]}],
            },
        }


class FakeAsf(_Fake):
    """ASF's search API (``POST /search/granules.umm_json``) over a list of scenes."""

    def __init__(self, server: HTTPServer, page_size: int | None = None) -> None:
        super().__init__()
        self.server = server
        self.page_size = page_size  # None: the page_size asf_search asks for (250)
        self.scenes: list[FakeScene] = []
        server.expect_request("/search/granules.umm_json", method="POST").respond_with_handler(self._handle)

    @property
    def host(self) -> str:
        """``host:port`` to put in ``[ingest.asf] host``."""
        return f"{self.server.host}:{self.server.port}"

    def set_scenes(self, scenes: list[FakeScene]) -> None:
        """Serve ``scenes`` from now on."""
        with self.lock:
            self.scenes = list(scenes)

    def set_dates(self, dates: list[dt.date], time: dt.time = dt.time(23, 24, 10), **kwargs: Any) -> None:
        """Serve one scene per date, acquired at ``time`` UTC (``kwargs`` as :class:`FakeScene`)."""
        self.set_scenes([FakeScene(dt.datetime.combine(d, time, tzinfo=dt.UTC), **kwargs) for d in dates])

    def search_bodies(self) -> list[dict[str, list[str]]]:
        """The form bodies of the searches received."""
        return [r.json for r in self.requests]

    def _record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(Recorded(request.method, request.path, {},
                                          request.form.to_dict(flat=False), dict(request.headers)))

    def _matches(self, scene: FakeScene, form: Any) -> bool:
        temporal = form.get("temporal")
        if temporal:
            start, end = (temporal.split(",") + ["", ""])[:2]
            when = scene.start
            if start and when < dt.datetime.fromisoformat(start.replace("Z", "+00:00")):
                return False
            if end and when > dt.datetime.fromisoformat(end.replace("Z", "+00:00")):
                return False
        wanted = {"PATH_NUMBER": str(scene.relative_orbit), "FRAME_NUMBER": str(scene.frame),
                  "ASCENDING_DESCENDING": scene.direction}
        for attr in form.getlist("attribute[]"):
            _, name, value = attr.split(",", 2)
            if name in wanted and value != wanted[name]:
                return False
        short = form.getlist("shortName")
        return not short or f"SENTINEL-1{scene.platform[-1]}_SLC" in short

    def _handle(self, request: Request) -> Response:
        self._record(request)
        if (inj := self._injected(request)) is not None:
            return _json({"errors": [f"injected HTTP {inj.status}"]}, inj.status, inj.headers)
        form = request.form
        with self.lock:
            found = [s for s in self.scenes if self._matches(s, form)]
        found.sort(key=lambda s: (s.start, s.name), reverse=True)
        size = self.page_size or int(form.get("page_size", 250))
        after = request.headers.get("CMR-Search-After")
        offset = int(json.loads(after)[0]) if after else 0
        page = found[offset:offset + size]
        headers = {"CMR-Hits": str(len(found))}
        if page:
            headers["CMR-Search-After"] = json.dumps([str(offset + len(page))])
        return _json({"hits": len(found), "took": 3, "items": [s.umm_item() for s in page]},
                     headers=headers)


# ------------------------------------------------------------------------------- HyP3
def write_product(folder: Path, ref: dt.date, sec: dt.date, size_px: int = 8) -> Path:
    """Write a small, readable HyP3 INSAR_GAMMA product folder for ``ref``–``sec`` into ``folder``.

    Layers ``unw_phase`` (radians), ``corr`` (0–1), ``lv_theta`` (radians), ``dem`` (m) as
    ``size_px``² float32 GeoTIFFs (UTM 47N, 80 m pixels) and the ``.txt`` parameter file.
    """
    import rasterio
    from rasterio.transform import from_origin

    tag = hashlib.sha1(f"{ref}{sec}".encode()).hexdigest()[:4].upper()
    name = f"S1AA_{ref:%Y%m%d}T232410_{sec:%Y%m%d}T232410_VVP{(sec - ref).days:03d}_INT80_G_ueF_{tag}"
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(tag, 16))
    shape = (size_px, size_px)
    layers = {"unw_phase": rng.normal(0, 1, shape), "corr": rng.uniform(0.5, 1, shape),
              "lv_theta": np.full(shape, 0.9), "dem": np.full(shape, 4000.0)}
    profile = {"driver": "GTiff", "height": size_px, "width": size_px, "count": 1, "dtype": "float32",
               "crs": "EPSG:32647", "transform": from_origin(400000, 4200000, 80, 80), "nodata": 0}
    for layer, values in layers.items():
        with rasterio.open(out / f"{name}_{layer}.tif", "w", **profile) as dst:
            dst.write(values.astype("float32"), 1)
    (out / f"{name}.txt").write_text(
        f"Reference Granule: {slc_name(dt.datetime.combine(ref, dt.time(23, 24, 10)))}\n"
        f"Secondary Granule: {slc_name(dt.datetime.combine(sec, dt.time(23, 24, 10)))}\n"
        "Baseline: 42.0\n")
    return out


@dataclass
class _Job:
    record: dict[str, Any]
    step: int = 0
    fails: bool = False
    product: Path | None = None


@dataclass
class FakeHyp3State:
    """Knobs of :class:`FakeHyp3` a test may turn."""

    credits: float | None = 10000.0
    page_size: int = 2
    expiry_days: float = 14.0
    fail_once: set[tuple[dt.date, dt.date]] = field(default_factory=set)
    corrupt_downloads: int = 0
    lose_post_responses: int = 0
    """POST /jobs requests whose jobs are created but whose answer is a 502 (a lost response)."""
    download_seconds: float = 0.0
    """Time each download takes: its bytes are sent in ten parts spread over it (a slow link)."""


class FakeHyp3(_Fake):
    """The HyP3 API and its product downloads, on one pytest-httpserver."""

    steps = ("PENDING", "RUNNING", "SUCCEEDED")

    def __init__(self, server: HTTPServer, token: str, cache_dir: Path, user_id: str = "talik_test") -> None:
        super().__init__()
        self.server, self.token, self.user_id = server, token, user_id
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.state = FakeHyp3State()
        self.jobs: dict[str, _Job] = {}
        self.products: dict[tuple[dt.date, dt.date], Path] = {}
        self._failed_once: set[tuple[dt.date, dt.date]] = set()
        server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self._handle)

    # --------------------------------------------------------------- configuration
    @property
    def url(self) -> str:
        """Base URL to put in ``[ingest.hyp3] api_url``."""
        return self.server.url_for("/").rstrip("/")

    def use_products(self, folder: Path) -> int:
        """Serve the product folders (HyP3 names) inside ``folder``; return how many."""
        for entry in sorted(Path(folder).iterdir()):
            match = re.match(r"^S1.._(\d{8})T\d{6}_(\d{8})T\d{6}_", entry.name)
            if entry.is_dir() and match:
                key = tuple(dt.datetime.strptime(m, "%Y%m%d").date() for m in match.groups())
                self.products[key] = entry  # type: ignore[index]
        return len(self.products)

    def create_job(self, job_type: str, job_parameters: dict[str, Any], name: str | None) -> dict[str, Any]:
        """A job at the server as if some earlier client had submitted it (no credits charged)."""
        return self._new_job({"job_type": job_type, "job_parameters": job_parameters, "name": name}, 0.0)

    def finish_all(self) -> None:
        """Move every job to its final state."""
        with self.lock:
            for job in self.jobs.values():
                while job.record["status_code"] not in ("SUCCEEDED", "FAILED"):
                    self._advance(job)

    def posted_jobs(self) -> list[dict[str, Any]]:
        """Every job body received by ``POST /jobs``, in order."""
        return [j for r in self.requests if r.method == "POST" and r.path == "/jobs" and r.json
                for j in r.json.get("jobs", [])]

    def download_requests(self) -> list[Recorded]:
        """Requests received for product files."""
        return [r for r in self.requests if r.path.startswith("/download/")]

    # ------------------------------------------------------------------------- jobs
    @staticmethod
    def _dates(job_parameters: dict[str, Any]) -> tuple[dt.date, dt.date] | None:
        granules = job_parameters.get("granules") or [
            (job_parameters.get("reference") or [""])[0], (job_parameters.get("secondary") or [""])[0]]
        found = [_DATE.search(g or "") for g in granules[:2]]
        if len(found) < 2 or not all(found):
            return None
        return tuple(dt.datetime.strptime(m[1], "%Y%m%d").date() for m in found)  # type: ignore[return-value]

    @staticmethod
    def cost(job: dict[str, Any]) -> float:
        """Credits the fake charges for one job."""
        params = job.get("job_parameters", {})
        if job["job_type"] == "INSAR_GAMMA":
            return 15.0 if params.get("looks") == "10x2" else 10.0
        return 1.0 if len(params.get("reference", [])) <= 4 else 5.0

    def _new_job(self, body: dict[str, Any], cost: float) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        record = {"job_id": str(uuid.uuid4()), "user_id": self.user_id, "job_type": body["job_type"],
                  "job_parameters": body.get("job_parameters", {}), "request_time": now.isoformat(),
                  "status_code": "PENDING", "execution_started": False, "credit_cost": cost,
                  "priority": 9999, "processing_times": []}
        if body.get("name"):
            record["name"] = body["name"]
        dates = self._dates(record["job_parameters"])
        job = _Job(record, product=self.products.get(dates) if dates else None)
        if dates in self.state.fail_once and dates not in self._failed_once:
            self._failed_once.add(dates)
            job.fails = True
        if job.product is None:
            job.fails = True
        self.jobs[record["job_id"]] = job
        return dict(record)

    def _advance(self, job: _Job) -> None:
        if job.record["status_code"] in ("SUCCEEDED", "FAILED"):
            return
        job.step += 1
        status = self.steps[min(job.step, len(self.steps) - 1)]
        if status == "SUCCEEDED" and job.fails:
            status = "FAILED"
        job.record["status_code"] = status
        job.record["execution_started"] = True
        if status in ("SUCCEEDED", "FAILED"):
            job.record["processing_times"] = [1234.5]
            job.record["logs"] = [f"{self.url}/logs/{job.record['job_id']}.log"]
        if status == "SUCCEEDED":
            zip_path = self._zip(job)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.state.expiry_days)
            job.record["expiration_time"] = expires.replace(microsecond=0).isoformat()
            key = f"{job.record['job_id']}/{zip_path.name}"
            job.record["files"] = [{"filename": zip_path.name, "size": zip_path.stat().st_size,
                                    "url": f"{self.url}/download/{key}",
                                    "s3": {"bucket": "fake-hyp3", "key": key}}]
            job.record["browse_images"] = []
            job.record["thumbnail_images"] = []

    def _zip(self, job: _Job) -> Path:
        assert job.product is not None
        name = job.product.name
        path = self.cache_dir / job.record["job_id"] / f"{name}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(job.product.iterdir()):
                zf.write(f, f"{name}/{f.name}")
        return path

    # ------------------------------------------------------------------------ routes
    def _handle(self, request: Request) -> Response:
        self._record(request)
        if (inj := self._injected(request)) is not None:
            return _json({"detail": f"injected HTTP {inj.status}"}, inj.status, inj.headers)
        if request.path.startswith("/download/"):
            return self._download(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"detail": "No authorization token provided"}, 401)
        path, method = request.path.rstrip("/"), request.method
        if path == "/user" and method == "GET":
            return _json({"user_id": self.user_id, "remaining_credits": self.state.credits, "job_names": []})
        if path == "/jobs" and method == "POST":
            return self._post_jobs(request)
        if path == "/jobs" and method == "GET":
            return self._list_jobs(request)
        if (m := re.fullmatch(r"/jobs/([0-9a-f-]+)", path)) and method == "GET":
            with self.lock:
                job = self.jobs.get(m[1])
                if job is None:
                    return _json({"detail": f"job {m[1]} does not exist"}, 404)
                self._advance(job)
                return _json(dict(job.record))
        return _json({"detail": f"no route {method} {path}"}, 404)

    def _post_jobs(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        jobs = body.get("jobs")
        if not isinstance(jobs, list) or not 1 <= len(jobs) <= 200:
            return _json({"detail": "jobs must be a list of 1 to 200 jobs"}, 400)
        for job in jobs:
            if job.get("job_type") not in ("INSAR_GAMMA", "INSAR_ISCE_MULTI_BURST"):
                return _json({"detail": f"unknown job_type {job.get('job_type')}"}, 400)
            if "name" in job and not 1 <= len(job["name"]) <= 100:
                return _json({"detail": "name must be 1 to 100 characters"}, 400)
            granules = job.get("job_parameters", {}).get("granules", [])
            if job["job_type"] == "INSAR_GAMMA" and len(granules) != 2:
                return _json({"detail": "INSAR_GAMMA takes 2 granules"}, 400)
        total = sum(self.cost(j) for j in jobs)
        with self.lock:
            if self.state.credits is not None and total > self.state.credits:
                return _json({"detail": f"These jobs would cost {total} credits, but you have only "
                                        f"{self.state.credits} remaining."}, 400)
            if self.state.credits is not None:
                self.state.credits -= total
            created = [self._new_job(j, self.cost(j)) for j in jobs]
            lost = self.state.lose_post_responses > 0
            if lost:
                self.state.lose_post_responses -= 1
        if lost:
            return _json({"detail": "Bad Gateway"}, 502)
        return _json({"jobs": created})

    def _list_jobs(self, request: Request) -> Response:
        args = request.args
        with self.lock:
            found = [dict(j.record) for j in self.jobs.values()]
        for key in ("name", "status_code", "job_type", "user_id"):
            if args.get(key):
                found = [j for j in found if j.get(key) == args[key]]
        for key, keep in (("start", lambda t, b: t >= b), ("end", lambda t, b: t <= b)):
            if args.get(key):
                bound = dt.datetime.fromisoformat(args[key].replace("Z", "+00:00"))
                found = [j for j in found if keep(dt.datetime.fromisoformat(j["request_time"]), bound)]
        found.sort(key=lambda j: j["request_time"], reverse=True)
        offset = int(args.get("start_token", 0))
        page = found[offset:offset + self.state.page_size]
        out: dict[str, Any] = {"jobs": page}
        if offset + len(page) < len(found):
            query = {k: v for k, v in args.items() if k != "start_token"}
            query["start_token"] = str(offset + len(page))
            out["next"] = f"{self.url}/jobs?{urlencode(query)}"
        return _json(out)

    def _download(self, request: Request) -> Response:
        parts = request.path.split("/")
        with self.lock:
            job = self.jobs.get(parts[2]) if len(parts) == 4 else None
            corrupt = self.state.corrupt_downloads > 0 and job is not None
            if corrupt:
                self.state.corrupt_downloads -= 1
        if job is None or job.record["status_code"] != "SUCCEEDED":
            return Response("not found", status=404)
        data = (self.cache_dir / parts[2] / parts[3]).read_bytes()
        if corrupt:
            data = b"\0" * len(data)
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match and int(match[1]) < len(data):
            start = int(match[1])
            return Response(data[start:], status=206, content_type="application/zip",
                            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        if match:
            return Response(b"", status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        if self.state.download_seconds > 0:
            return Response(_trickle(data, self.state.download_seconds), status=200,
                            content_type="application/zip",
                            headers={"Content-Length": str(len(data))})
        return Response(data, status=200, content_type="application/zip")


def _trickle(data: bytes, seconds: float, parts: int = 10):
    """``data`` in ``parts`` pieces, ``seconds / parts`` apart."""
    import time

    step = -(-len(data) // parts)
    for start in range(0, len(data), step):
        time.sleep(seconds / parts)
        yield data[start:start + step]


# --------------------------------------------------------------------------- fixtures
_SHARED: dict[str, Any] = {}


def _asf_server(folder: Path) -> tuple[HTTPServer, Path]:
    """The HTTPS loopback server of the process, started on first use (a werkzeug server takes
    0.5 s to stop, so one serves every test) with a throwaway trustme CA written to ``folder``."""
    if "server" not in _SHARED:
        import atexit

        import trustme

        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        folder.mkdir(parents=True, exist_ok=True)
        ca_file = folder / "fake-asf-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
        server.start()
        atexit.register(server.stop)
        _SHARED.update(server=server, ca_file=ca_file)
    return _SHARED["server"], _SHARED["ca_file"]


def _new_token(monkeypatch: pytest.MonkeyPatch) -> str:
    token = f"edl-test-{secrets.token_hex(16)}"
    monkeypatch.setenv("EARTHDATA_TOKEN", token)
    return token


@pytest.fixture()
def earthdata_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """A random Earthdata token, set as ``EARTHDATA_TOKEN`` for the test."""
    return _new_token(monkeypatch)


@pytest.fixture()
def fake_asf(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh :class:`FakeAsf` on the HTTPS loopback server (its CA trusted through the CA env vars)."""
    server, ca_file = _asf_server(tmp_path_factory.getbasetemp() / "fake-asf-ca")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca_file))
    server.clear()
    fake = FakeAsf(server)
    yield fake
    server.clear()


@pytest.fixture()
def fake_hyp3(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHyp3:
    """:class:`FakeHyp3` on pytest-httpserver's ``httpserver``.

    It requires its own random bearer token, which it puts in ``EARTHDATA_TOKEN`` (``.token``).
    """
    token = os.environ.get("EARTHDATA_TOKEN") if os.environ.get("EARTHDATA_TOKEN", "").startswith(
        "edl-test-") else _new_token(monkeypatch)
    return FakeHyp3(httpserver, token, tmp_path / "fake-hyp3")


def make_study(folder: Path, asf_host: str | None = None, hyp3_url: str | None = None,
               ingest: dict[str, Any] | None = None, bbox: tuple[float, float, float, float] | None = (
                   100.0, 37.0, 101.0, 38.0), name: str = "ingest-test") -> Any:
    """A StudyConfig with a local source (``folder/hyp3``), ASF and HyP3 enabled at the fakes.

    ``ingest`` entries are merged into ``[ingest]`` one level deep, e.g.
    ``{"hyp3": {"monthly_budget_credits": 25}, "retries": {"backoff_s": 0.01}}``.
    """
    from talik.config import StudyConfig

    folder = Path(folder)
    (folder / "hyp3").mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict[str, Any]] = {
        "retries": {"attempts": 4, "backoff_s": 0.01, "max_backoff_s": 0.5},
        "asf": {"enabled": asf_host is not None, "host": asf_host or "api.daac.asf.alaska.edu",
                "start": dt.date(2015, 1, 1)},
        "hyp3": {"enabled": hyp3_url is not None, "api_url": hyp3_url or "https://hyp3-api.asf.alaska.edu",
                 "poll_interval_s": 0.01},
    }
    for key, values in (ingest or {}).items():
        sections.setdefault(key, {}).update(values)
    raw = {
        "name": name, "title": "ingest test", "aoi": {"name": "test", "bbox": bbox},
        "sensors": {"sentinel1": {"platform": "Sentinel-1", "band": "C", "wavelength_m": 0.055465763,
                                  "incidence_deg": 39.47, "direction": "descending", "polarization": "VV"}},
        "source": {"kind": "local", "hyp3_dir": str(folder / "hyp3")},
        "stores": {"work_dir": str(folder / "work"), "release_dir": str(folder / "releases")},
        "ingest": sections,
    }
    return StudyConfig.model_validate(raw, context={"base_dir": folder})
