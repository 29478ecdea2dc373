"""ERA5-Land from a loopback CDS speaking the new (ecmwf.datastores) protocol.

The fake service answers as the CDS processing API does: catalogue messages, the process
description, ``POST …/execution`` → status info with a ``monitor`` link, job status
``accepted → running → successful`` (one step per poll), ``…/results`` → an asset with
``href`` and ``file:size``, and the file itself. Refusals use the service's own bodies (an
OGC exception with ``title``/``detail``; the cost limit is HTTP 403 "cost limits exceeded").
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import logging
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from werkzeug import Request, Response

from talik.config import StudyConfig
from talik.tasks.ingest import cds
from talik.tasks.ingest.common import MissingCredentialError
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.readers.era5 import read_era5_land

KEY = "f0e1d2c3-b4a5-4697-8899-aabbccddeeff"  # fake personal access token (no ':')
SHORT = {"2m_temperature": "t2m", "total_precipitation": "tp", "total_evaporation": "e",
         "surface_net_solar_radiation": "ssr", "surface_net_thermal_radiation": "str",
         "snow_depth": "sde", "volumetric_soil_water_layer_1": "swvl1"}
BBOX = (100.02, 37.01, 100.18, 37.08)  # W, S, E, N
TP_RATE = 1e-4  # m h-1 (hourly) or m d-1 (monthly means)


def t2m_celsius(month: int, provisional: bool) -> float:
    """The fake's 2 m temperature for a month, °C (provisional data 0.5 K warmer)."""
    return 10.0 * month + (0.5 if provisional else 0.0)


def payload(dataset: str, inputs: dict[str, Any], era5t: set[str]) -> bytes:
    """A CDS-like NetCDF for ``inputs``: t2m, tp, ... on valid_time × latitude × longitude."""
    north, west, south, east = inputs["area"]
    lat = np.round(np.arange(north, south - 1e-6, -0.1), 1)
    lon = np.round(np.arange(west, east + 1e-6, 0.1), 1)
    year = int(inputs["year"][0])
    months = [int(m) for m in inputs["month"]]
    if dataset == cds.MONTHLY:
        times = pd.DatetimeIndex([dt.datetime(year, m, 1) for m in months])
    else:
        times = pd.DatetimeIndex([dt.datetime(year, m, int(d), h) for m in months
                                  for d in inputs["day"] for h in range(24)])
    labels = [t.strftime("%Y-%m") for t in times]
    prov = np.array([lab in era5t for lab in labels])
    hours = np.where(times.hour == 0, 24, times.hour).astype(float)  # accumulated since 00 UTC
    shape = (len(times), len(lat), len(lon))

    def field(values: np.ndarray) -> tuple:
        return (("valid_time", "latitude", "longitude"),
                np.broadcast_to(values[:, None, None], shape).astype(np.float32))

    accum = hours if dataset != cds.MONTHLY else np.ones(len(times))
    values = {
        "t2m": np.array([273.15 + t2m_celsius(t.month, p) for t, p in zip(times, prov, strict=True)]),
        "tp": TP_RATE * accum, "e": -0.5 * TP_RATE * accum,
        "ssr": 1e6 * accum, "str": -2e5 * accum,
        "sde": np.full(len(times), 0.1), "swvl1": np.full(len(times), 0.25),
    }
    wanted = [SHORT[v] for v in inputs["variable"]]
    ds = xr.Dataset({v: field(values[v]) for v in wanted},
                    coords={"valid_time": times, "latitude": lat, "longitude": lon,
                            "number": 0,
                            "expver": ("valid_time", np.where(prov, "0005", "0001"))})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.nc"
        ds.to_netcdf(path, engine="netcdf4")
        return path.read_bytes()


def fields(dataset: str, inputs: dict[str, Any]) -> int:
    steps = len(inputs["month"]) if dataset == cds.MONTHLY else len(inputs["day"]) * 24
    return len(inputs["variable"]) * steps


def problem(status: int, title: str, detail: str, url: str) -> Response:
    body = {"type": "permission denied" if status in (401, 403) else "invalid request",
            "title": title, "status": status, "detail": detail, "instance": url,
            "trace_id": uuid.uuid4().hex}
    return Response(json.dumps(body), status, content_type="application/json")


class FakeCds:
    """The new CDS API on loopback, with faults to inject."""

    def __init__(self, httpserver: Any, key: str = KEY) -> None:
        self.server = httpserver
        self.key = key
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[float, str, str]] = []
        self.faults: list[dict[str, Any]] = []
        self.max_fields: int | None = None
        self.era5t: set[str] = set()
        self.max_queued = 0
        httpserver.expect_request(re.compile(r"^/.*")).respond_with_handler(self.handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/api")

    def fail(self, method: str, pattern: str, status: int, times: int = 1,
             headers: dict[str, str] | None = None, title: str = "error", detail: str = "") -> None:
        self.faults.append({"method": method, "pattern": re.compile(pattern), "status": status,
                            "times": times, "headers": headers or {}, "title": title,
                            "detail": detail})

    def queued(self) -> int:
        return sum(j["status"] in ("accepted", "running") for j in self.jobs.values())

    def status_info(self, job_id: str, monitor: bool = False) -> dict[str, Any]:
        job = self.jobs[job_id]
        href = self.server.url_for(f"/api/retrieve/v1/jobs/{job_id}")
        links = [{"href": href, "rel": "self", "type": "application/json"}]
        if monitor:
            links.append({"href": href, "rel": "monitor", "type": "application/json",
                          "title": "job status info"})
        if job["status"] == "successful":
            links.append({"href": f"{href}/results", "rel": "results"})
        now = dt.datetime.now(dt.UTC).isoformat()
        return {"processID": job["dataset"], "type": "process", "jobID": job_id,
                "status": job["status"], "created": now, "updated": now,
                "links": links, "metadata": {"request": {"ids": job["inputs"]}, "log": [],
                                             "datasetMetadata": {"messages": []}}}

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        self.calls.append((time.monotonic(), method, path))
        for fault in self.faults:
            if fault["times"] and fault["method"] == method and fault["pattern"].search(path):
                fault["times"] -= 1
                if fault["status"] in (401, 403):
                    return problem(fault["status"], fault["title"], fault["detail"], request.url)
                return Response("temporarily unavailable", fault["status"], headers=fault["headers"])
        if path.startswith("/download/"):
            job = self.jobs[path.rsplit("/", 1)[1].removesuffix(".nc")]
            return Response(job["data"], 200, content_type="application/netcdf")
        if path == "/api/catalogue/v1/messages":
            return Response(json.dumps({"messages": []}), 200, content_type="application/json")
        if request.headers.get("PRIVATE-TOKEN") != self.key:
            return problem(401, "permission denied", "Authentication failed", request.url)
        m = re.fullmatch(r"/api/retrieve/v1/processes/([\w-]+)(/execution)?", path)
        if m and method == "GET" and not m.group(2):
            return Response(json.dumps({
                "id": m.group(1), "title": m.group(1), "version": "1.0.0",
                "jobControlOptions": ["async-execute"], "outputTransmission": ["reference"],
                "links": [{"href": request.url, "rel": "self"}], "inputs": {}, "outputs": {}}),
                200, content_type="application/json")
        if m and method == "POST":
            dataset, inputs = m.group(1), request.get_json()["inputs"]
            if self.max_fields is not None and fields(dataset, inputs) > self.max_fields:
                return problem(403, "cost limits exceeded",
                               "Your request is too large, please reduce your selection.", request.url)
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = {"dataset": dataset, "inputs": inputs, "status": "accepted",
                                 "polls": 0, "data": b""}
            self.max_queued = max(self.max_queued, self.queued())
            return Response(json.dumps(self.status_info(job_id, monitor=True)), 201,
                            content_type="application/json")
        m = re.fullmatch(r"/api/retrieve/v1/jobs/([\w-]+)(/results)?", path)
        if m and m.group(1) in self.jobs:
            job_id = m.group(1)
            job = self.jobs[job_id]
            if m.group(2):
                if job["status"] != "successful":
                    return problem(404, "results not ready", "job is not finished", request.url)
                href = self.server.url_for(f"/download/{job_id}.nc")
                return Response(json.dumps({"asset": {"value": {
                    "type": "application/netcdf", "href": href, "file:size": len(job["data"])}}}),
                    200, content_type="application/json")
            if "log" in request.args:  # a status poll moves the job one step on
                job["polls"] += 1
                if job["status"] == "accepted":
                    job["status"] = "running"
                elif job["status"] == "running":
                    job["data"] = payload(job["dataset"], job["inputs"], self.era5t)
                    job["status"] = "successful"
            return Response(json.dumps(self.status_info(job_id)), 200, content_type="application/json")
        return problem(404, "not found", f"{path} not found", request.url)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("CDSAPI_KEY", KEY)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cdsapirc is read or written
    monkeypatch.delenv("CDSAPI_URL", raising=False)


@pytest.fixture()
def fake(httpserver) -> FakeCds:
    return FakeCds(httpserver)


def study(tmp_path: Path, url: str, dataset: str = cds.HOURLY, first: int = 2020,
          last: int | None = 2020, max_in_flight: int = 2, max_backoff_s: float = 0.05,
          variables: list[str] | None = None) -> StudyConfig:
    cds_opts: dict[str, Any] = {"enabled": True, "url": url, "dataset": dataset, "first_year": first,
                                "last_year": last, "max_in_flight": max_in_flight,
                                "poll_interval_s": 0.01}
    if variables is not None:
        cds_opts["variables"] = variables
    return StudyConfig.model_validate({
        "name": "cds-test", "title": "CDS test",
        "aoi": {"name": "box", "bbox": list(BBOX)},
        "sensors": {"sentinel1": {"platform": "Sentinel-1", "band": "C", "wavelength_m": 0.0555,
                                  "incidence_deg": 39.0, "direction": "descending",
                                  "polarization": "VV"}},
        "source": {"kind": "local", "hyp3_dir": str(tmp_path / "hyp3"),
                   "era5": str(tmp_path / "inputs" / "era5_land.nc")},
        "stores": {"work_dir": str(tmp_path / "work"), "release_dir": str(tmp_path / "releases")},
        "ingest": {"retries": {"attempts": 4, "backoff_s": 0.01, "max_backoff_s": max_backoff_s},
                   "cds": cds_opts},
    })


def tools(tmp_path: Path, cfg: StudyConfig) -> tuple[Ledger, RawStore]:
    ledger = Ledger(tmp_path / "work" / "ingest" / "ledger.sqlite")
    return ledger, RawStore(tmp_path, ledger, cfg.ingest.retries)


def assert_no_secret(tmp_path: Path, caplog, *texts: str) -> None:
    assert KEY not in caplog.text
    assert "***" not in caplog.text  # the key never even reached a log record
    for f in (tmp_path / "work" / "ingest").glob("ledger.sqlite*"):
        assert KEY.encode() not in f.read_bytes()
    for text in texts:
        assert KEY not in text
    assert not (tmp_path / "home" / ".cdsapirc").exists()


# ------------------------------------------------------------------------------- tests
def test_area_and_plan():
    area = cds.cds_area(BBOX)
    assert area == [37.2, 99.9, 36.9, 100.3]  # [N, W, S, E]: snapped to 0.1° and one cell more
    opts = study(Path("/tmp"), "http://127.0.0.1:1/api").ingest.cds
    hourly = cds.plan_chunks(opts, area, dt.date(2020, 3, 10))
    assert [c.month_labels for c in hourly] == [["2020-01"], ["2020-02"]]  # March not over yet
    assert hourly[0].fields() == 7 * 31 * 24
    year = cds.Chunk(cds.MONTHLY, 2020, tuple(range(1, 13)), tuple(opts.variables), tuple(area))
    assert year.fields() == 84  # a year of monthly means: far under the CDS's per-request limit
    assert year.request()["product_type"] == ["monthly_averaged_reanalysis"]


def test_whole_fetch_two_months(tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = study(tmp_path, fake.url, max_in_flight=1)
    ledger, store = tools(tmp_path, cfg)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    json.dumps(summary)
    assert summary["complete"] and summary["changed"]
    assert summary["months"] == ["2020-01", "2020-02"]
    assert len(summary["submitted"]) == 2 and summary["resumed"] == []
    assert fake.max_queued <= 1
    # one request per month, the padded area, every hour of every day
    inputs = sorted((j["inputs"] for j in fake.jobs.values()), key=lambda i: i["month"])
    assert [i["month"] for i in inputs] == [["01"], ["02"]]
    assert inputs[1]["day"] == [f"{d:02d}" for d in range(1, 30)]
    assert len(inputs[0]["time"]) == 24 and inputs[0]["area"] == [37.2, 99.9, 36.9, 100.3]
    assert inputs[0]["data_format"] == "netcdf"
    # the reader reads the merged file back
    merged = Path(summary["path"])
    assert merged == cfg.source.era5 and merged.is_file()
    out = read_era5_land(merged)
    jan, feb = out.sel(time="2020-01-01"), out.sel(time="2020-02-01")
    assert float(jan.air_temperature.mean()) == pytest.approx(10.0, abs=1e-3)
    assert float(feb.air_temperature.mean()) == pytest.approx(20.0, abs=1e-3)
    assert float(jan.precipitation.mean()) == pytest.approx(31 * 24 * TP_RATE * 1000, rel=1e-4)
    assert float(jan.evapotranspiration.mean()) == pytest.approx(31 * 12 * TP_RATE * 1000, rel=1e-4)
    assert float(jan.net_radiation.mean()) == pytest.approx(24 * (1.0 - 0.2), rel=1e-4)
    assert float(jan.soil_moisture.mean()) == pytest.approx(0.25, rel=1e-4)
    # ledger: remote ids, manifest: the parts (with their request) and the merged file
    reqs = ledger.requests(source="cds")
    assert {r.state for r in reqs} == {"downloaded"} and all(r.remote_id in fake.jobs for r in reqs)
    files = {f.path: f for f in ledger.files(source="cds")}
    parts = [f for p, f in files.items() if "_parts" in p]
    assert len(parts) == 2 and all(f.query["request"]["month"] in (["01"], ["02"]) for f in parts)
    assert files[store.relative(merged)].status == "provisional"  # both months are recent
    assert summary["provisional_months"] == ["2020-01", "2020-02"]
    assert not list(Path(summary["parts_dir"]).glob(".*partial"))
    # a second run changes nothing and asks for nothing
    n_jobs = len(fake.jobs)
    again = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    assert len(fake.jobs) == n_jobs and not again["changed"] and again["sha256"] == summary["sha256"]
    assert_no_secret(tmp_path, caplog, json.dumps(summary))


def test_cost_limit_refusal_is_split(tmp_path, fake, caplog):
    fake.max_fields = 400  # refuses one variable for a whole month (744 fields)
    cfg = study(tmp_path, fake.url, max_in_flight=3)
    ledger, store = tools(tmp_path, cfg)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 2, 10))
    assert summary["complete"] and summary["months"] == ["2020-01"]
    assert summary["split"][0].startswith("reanalysis-era5-land/2020-01_")
    accepted = list(fake.jobs.values())
    assert len(accepted) == 14  # 7 variables × 2 halves of the month
    assert all(fields(cds.HOURLY, j["inputs"]) <= 400 for j in accepted)
    assert {len(j["inputs"]["variable"]) for j in accepted} == {1}
    assert sorted({tuple(j["inputs"]["day"])[0] for j in accepted}) == ["01", "17"]
    assert fake.max_queued <= 3
    out = read_era5_land(summary["path"])
    jan = out.sel(time="2020-01-01")
    assert float(jan.air_temperature.mean()) == pytest.approx(10.0, abs=1e-3)
    assert float(jan.snow_depth.mean()) == pytest.approx(0.1, rel=1e-4)
    raw = xr.open_dataset(summary["path"])
    assert raw.sizes["valid_time"] == 31 * 24 and set(SHORT.values()) <= set(raw.data_vars)
    raw.close()
    # the split is remembered: the next run asks the CDS nothing
    calls = len(fake.calls)
    again = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 2, 10))
    assert again["submitted"] == [] and not again["changed"]
    assert not [c for c in fake.calls[calls:] if c[1] == "POST"]
    assert_no_secret(tmp_path, caplog)


def test_503_recovers(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO)
    fake.fail("POST", r"/execution$", 503, times=2)
    fake.fail("GET", r"/jobs/[\w-]+$", 503, times=1)
    fake.fail("GET", r"^/download/", 503, times=1)
    cfg = study(tmp_path, fake.url, variables=["2m_temperature", "snow_depth"])
    ledger, store = tools(tmp_path, cfg)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 2, 10))
    assert summary["complete"] and len(fake.jobs) == 1  # the 503s did not submit twice
    assert all(f["times"] == 0 for f in fake.faults)
    assert "attempt 1 failed" in caplog.text and "503" in caplog.text
    assert_no_secret(tmp_path, caplog)


def test_429_retry_after_is_honoured(tmp_path, fake, caplog):
    fake.fail("POST", r"/execution$", 429, headers={"Retry-After": "1"})
    cfg = study(tmp_path, fake.url, max_backoff_s=5.0, variables=["2m_temperature"])
    ledger, store = tools(tmp_path, cfg)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 2, 10))
    assert summary["complete"]
    posts = [c[0] for c in fake.calls if c[1] == "POST"]
    assert len(posts) == 2 and posts[1] - posts[0] >= 0.95  # waited as told, not the 0.01 s backoff
    assert_no_secret(tmp_path, caplog)


def test_401_fails_fast_naming_the_key(tmp_path, httpserver, caplog):
    fake = FakeCds(httpserver, key="another-token-the-server-expects")
    cfg = study(tmp_path, fake.url)
    ledger, store = tools(tmp_path, cfg)
    with pytest.raises(MissingCredentialError, match="CDSAPI_KEY") as err:
        cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    assert "401" in str(err.value)
    assert len([c for c in fake.calls if "/processes/" in c[2]]) == 1  # not retried
    assert fake.jobs == {}
    assert_no_secret(tmp_path, caplog, str(err.value), repr(err.value))


def test_403_licence_names_key_and_licence(tmp_path, fake, caplog):
    fake.fail("POST", r"/execution$", 403, title="required licences not accepted",
              detail="please accept the following licences to proceed: [{'id': 'licence-to-use-"
                     "copernicus-products', 'revision': 12}]")
    cfg = study(tmp_path, fake.url)
    ledger, store = tools(tmp_path, cfg)
    with pytest.raises(MissingCredentialError, match="CDSAPI_KEY") as err:
        cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 2, 10))
    assert "licence" in str(err.value) and "manage-licences" in str(err.value)
    assert_no_secret(tmp_path, caplog, str(err.value))


class Interrupted(BaseException):
    """Stands for the process being killed."""


def test_interrupted_run_resumes_the_queued_request(tmp_path, fake, monkeypatch, caplog):
    cfg = study(tmp_path, fake.url, max_in_flight=1, variables=["2m_temperature", "snow_depth"])
    ledger, store = tools(tmp_path, cfg)

    def killed(seconds: float) -> None:
        raise Interrupted

    monkeypatch.setattr(cds, "sleep", killed)
    with pytest.raises(Interrupted):
        cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    (first_id,) = fake.jobs
    (queued,) = [r for r in ledger.requests(source="cds") if r.state in ("submitted", "running")]
    assert queued.remote_id == first_id and fake.jobs[first_id]["status"] != "successful"

    monkeypatch.setattr(cds, "sleep", lambda s: None)
    calls = len(fake.calls)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    assert summary["resumed"] == [queued.key] and summary["complete"]
    assert len(summary["submitted"]) == 1 and queued.key not in summary["submitted"]  # only Feb
    assert len(fake.jobs) == 2  # January was never submitted again
    assert any(c[2] == f"/api/retrieve/v1/jobs/{first_id}" for c in fake.calls[calls:])
    assert fake.jobs[first_id]["status"] == "successful"
    assert_no_secret(tmp_path, caplog)


def test_max_wait_returns_with_requests_queued(tmp_path, fake):
    cfg = study(tmp_path, fake.url, max_in_flight=2, variables=["2m_temperature"])
    ledger, store = tools(tmp_path, cfg)
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10), max_wait_s=0)
    assert not summary["complete"] and len(summary["queued"]) == 2 and not cfg.source.era5.exists()
    summary = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2020, 3, 10))
    assert summary["complete"] and len(summary["resumed"]) == 2 and len(fake.jobs) == 2


def test_provisional_months_replaced_when_final(tmp_path, fake, caplog):
    fake.era5t = {"2023-10", "2023-11", "2023-12"}
    cfg = study(tmp_path, fake.url, dataset=cds.MONTHLY, first=2023, last=2023)
    ledger, store = tools(tmp_path, cfg)
    first = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2024, 1, 20))
    assert len(fake.jobs) == 1  # the whole year in one request (84 fields)
    assert first["provisional_months"] == ["2023-10", "2023-11", "2023-12"]
    assert first["replaced_months"] == []
    merged = Path(first["path"])
    assert ledger.file(store.relative(merged)).status == "provisional"
    before = read_era5_land(merged)
    assert float(before.air_temperature.sel(time="2023-12-01").mean()) == pytest.approx(120.5, abs=1e-3)

    # later the same month: nothing is asked again
    same = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2024, 1, 31))
    assert same["submitted"] == [] and not same["changed"] and same["sha256"] == first["sha256"]

    # October is four months old: the year is asked for again; October comes back final
    fake.era5t = {"2023-11", "2023-12"}
    feb = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2024, 2, 20))
    assert len(fake.jobs) == 2 and feb["requested_again"] == feb["submitted"] != []
    assert feb["replaced_months"] == ["2023-10"]
    assert feb["provisional_months"] == ["2023-11", "2023-12"]

    # December is four months old: asked for again, now all final
    fake.era5t = set()
    later = cds.fetch_era5_land(cfg, ledger, store, today=dt.date(2024, 4, 20))
    assert len(fake.jobs) == 3 and later["requested_again"] == later["submitted"] != []
    assert later["replaced_months"] == ["2023-11", "2023-12"]
    assert later["provisional_months"] == [] and later["changed"]
    assert later["sha256"] != first["sha256"]  # the input checksum changes: a new release follows
    after = read_era5_land(merged)
    assert float(after.air_temperature.sel(time="2023-12-01").mean()) == pytest.approx(120.0, abs=1e-3)
    assert float(after.air_temperature.sel(time="2023-01-01").mean()) == pytest.approx(10.0, abs=1e-3)
    days = calendar.monthrange(2023, 12)[1]
    assert float(after.precipitation.sel(time="2023-12-01").mean()) == pytest.approx(
        TP_RATE * days * 1000, rel=1e-4)
    entries = ledger.files(source="cds")
    assert {e.status for e in entries if e.path == store.relative(merged)} == {"final"}
    (part,) = [e for e in entries if "_parts" in e.path]
    assert part.status == "final" and part.query["remote_id"] in fake.jobs
    raw = xr.open_dataset(merged)
    assert set(raw["expver"].values.tolist()) == {"0001"}
    raw.close()
    assert_no_secret(tmp_path, caplog)
