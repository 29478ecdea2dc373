"""MODIS stacks from Earth Engine against a loopback Earth Engine (no traffic leaves 127.0.0.1).

The loopback serves the discovery document and algorithm list shipped in the earthengine-api
wheel, answers ``value:compute`` (the image listing) and ``image:computePixels`` in the NPY
wire format (a structured array, one field per band), and can be told to refuse requests.
Pixel values are a function of the global pixel indices and the day of year, so the test
checks georeferencing, band order and dates of what the reader reads back.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import re
import threading
import time
from pathlib import Path

import ee
import google.oauth2.credentials
import numpy as np
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from talik.config import load_study
from talik.tasks.ingest.common import MissingCredentialError, PermanentServiceError
from talik.tasks.ingest.earthengine import Grid, fetch_modis, plan_tiles, request_bytes
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.readers.modis import read_modis_stack
from tests.conftest import STORES_AND_SENSORS

EE_TESTS = Path(ee.__file__).parent / "tests"
PROJECT = "talik-loopback"
FAKE_KEY_MATERIAL = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key-0123456789"
FAKE_KEY = json.dumps({
    "type": "service_account", "project_id": "talik-from-key", "private_key_id": "a1b2c3d4e5f6a7b8c9",
    "private_key": f"-----BEGIN PRIVATE KEY-----\n{FAKE_KEY_MATERIAL}\n-----END PRIVATE KEY-----\n",
    "client_email": "talik@talik-from-key.iam.gserviceaccount.com",
    "token_uri": "http://127.0.0.1:9/token"})

COLLECTIONS = {"MODIS/061/MOD13Q1": "ndvi", "MODIS/061/MCD43A3": "albedo", "MODIS/061/MOD11A1": "lst"}
DTYPES = {"ndvi": "<i2", "albedo": "<i2", "lst": "<u2"}
FILLS = {"ndvi": -3000, "albedo": 32767, "lst": 0}
BASE = {"ndvi": 1000, "albedo": 100, "lst": 13000}
SCALE = {"ndvi": (0.0001, 0.0), "albedo": (0.001, 0.0), "lst": (0.02, -273.15)}
DATES = {
    "ndvi": ["2020-12-02", "2020-12-18", "2021-01-01", "2021-01-17"],
    "albedo": ["2020-12-30", "2020-12-31", "2021-01-01", "2021-01-02"],
    "lst": ["2020-12-31", "2021-01-01", "2021-01-02", "2021-01-03"],
}


def raw_value(role: str, day: dt.date, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
    """The raw integer the loopback serves at global pixel indices (gi east, gj north)."""
    doy = day.timetuple().tm_yday
    value = BASE[role] + (gi % 100) + 3 * (gj % 100) + doy
    return np.where((gi + gj + doy) % 7 == 0, FILLS[role], value)


class FakeEarthEngine:
    """The loopback service: records requests, serves answers, injects failures."""

    def __init__(self, url: str) -> None:
        doc = json.loads((EE_TESTS / "cloud_api_discovery_document.json").read_text()
                         .replace("v1alpha", "v1"))
        doc["rootUrl"] = doc["baseUrl"] = url + "/"
        self.discovery = json.dumps(doc)
        self.algorithms = (EE_TESTS / "algorithms.json").read_text()
        self.dates = {k: list(v) for k, v in DATES.items()}
        self.lock = threading.Lock()
        self.pixels: list[dict] = []     # every computePixels request (answered or not)
        self.listings: list[dict] = []
        self.paths: list[str] = []
        self.failures: list[tuple[str, int, str, dict]] = []  # (path part, status, message, headers)
        self.refuse_above_pixels: int | None = None
        self.in_flight = 0
        self.peak = 0
        self.delay_s = 0.0

    def fail(self, path_part: str, status: int, message: str, times: int = 1,
             headers: dict | None = None) -> None:
        self.failures += [(path_part, status, message, headers or {})] * times

    def _error(self, status: int, message: str, headers: dict) -> Response:
        body = {"error": {"code": status, "message": message, "status": "ERROR"}}
        return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.paths.append(request.path)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self._answer(request)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, request: Request) -> Response:
        path = request.path
        with self.lock:
            for k, (part, status, message, headers) in enumerate(self.failures):
                if part in path:
                    del self.failures[k]
                    if "computePixels" in path:
                        self.pixels.append({"failed": status, **self._describe(request)})
                    return self._error(status, message, headers)
        if path.startswith("/$discovery/rest"):
            return Response(self.discovery, content_type="application/json")
        if path == f"/v1/projects/{self.project_of(path)}/algorithms":
            return Response(self.algorithms, content_type="application/json")
        if path.endswith("/value:compute"):
            return self._listing(request)
        if path.endswith("/image:computePixels"):
            return self._pixels(request)
        return self._error(404, f"no such method {path}", {})

    @staticmethod
    def project_of(path: str) -> str:
        match = re.match(r"/v1/projects/([^/]+)/", path)
        return match.group(1) if match else ""

    def _listing(self, request: Request) -> Response:
        text = request.get_data(as_text=True)
        body = json.loads(text)
        self.listings.append(body)
        for collection in COLLECTIONS:
            assert collection in text
        assert "Filter.dateRangeContains" in text and "Filter.intersects" in text
        result = {}
        for role, days in self.dates.items():
            stamps = [int(dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC).timestamp() * 1000)
                      for d in days]
            result[role] = {"ids": [d.replace("-", "_") for d in days], "times": stamps}
        return Response(json.dumps({"result": result}), content_type="application/json")

    @staticmethod
    def _describe(request: Request) -> dict:
        body = json.loads(request.get_data(as_text=True))
        dims = body["grid"]["dimensions"]
        return {"bands": len(body["bandIds"]), "rows": dims["height"], "cols": dims["width"],
                "bandIds": body["bandIds"], "body": body}

    def _pixels(self, request: Request) -> Response:
        text = request.get_data(as_text=True)
        desc = self._describe(request)
        body = desc["body"]
        with self.lock:
            self.pixels.append(desc)
        assert body["fileFormat"] == "NPY"
        assert body["grid"]["crsCode"] == "EPSG:4326"
        assert "Image.unmask" in text and "ImageCollection.toBands" in text
        assert '"sameFootprint": {"constantValue": false}' in text  # fill outside footprints too
        roles = {role for collection, role in COLLECTIONS.items() if collection in text}
        assert len(roles) == 1
        role = roles.pop()
        if self.refuse_above_pixels and desc["rows"] * desc["cols"] > self.refuse_above_pixels:
            return self._error(400, "User memory limit exceeded.", {})
        affine = body["grid"]["affineTransform"]
        step = affine["scaleX"]
        assert math.isclose(affine["scaleY"], -step)
        lon = affine["translateX"] + (np.arange(desc["cols"]) + 0.5) * step
        lat = affine["translateY"] - (np.arange(desc["rows"]) + 0.5) * step
        gi, gj = np.meshgrid(np.floor(lon / step).astype(int), np.floor(lat / step).astype(int))
        fields = [(name, DTYPES[role]) for name in desc["bandIds"]]
        out = np.zeros((desc["rows"], desc["cols"]), dtype=fields)
        for name in desc["bandIds"]:
            image_id, band = name.split("_", 3)[:3], name.split("_", 3)[3]
            assert band in ("NDVI", "Albedo_BSA_Band7", "LST_Day_1km")
            day = dt.date(*map(int, image_id))
            out[name] = raw_value(role, day, gi, gj)
        buffer = io.BytesIO()
        np.save(buffer, out)
        return Response(buffer.getvalue(), content_type="application/octet-stream")


@pytest.fixture(scope="module")
def loopback():
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture()
def fake(loopback, monkeypatch):
    loopback.clear()
    service = FakeEarthEngine(f"http://127.0.0.1:{loopback.port}")
    loopback.expect_request(re.compile(".*")).respond_with_handler(service.handle)
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    monkeypatch.delenv("EE_SERVICE_ACCOUNT_KEY", raising=False)
    service.url = f"http://127.0.0.1:{loopback.port}"
    yield service
    ee.Reset()


STUDY = """
name = "ee-test"
title = "Earth Engine loopback"

[aoi]
name = "test"
bbox = [100.0, 35.0, 100.12, 35.07]

[source]
kind = "local"
hyp3_dir = "hyp3"
modis_dir = "raw/modis"

{stores_and_sensors}
[ingest.retries]
attempts = 4
backoff_s = 0.01
max_backoff_s = 0.05

[ingest.earthengine]
enabled = true
api_url = "{url}"
{project}
start = 2020-12-01
end = 2021-01-20
scale_m = 500.0
max_request_mib = {mib}
max_concurrent = {concurrent}
"""


def make_study(tmp_path: Path, url: str, mib: float = 48.0, concurrent: int = 4,
               project: str | None = PROJECT):
    line = f'project = "{project}"' if project else ""
    path = tmp_path / "study.toml"
    stores = STORES_AND_SENSORS.format(work="work", releases="releases")
    path.write_text(STUDY.format(url=url, mib=mib, concurrent=concurrent, project=line,
                                 stores_and_sensors=stores))
    cfg = load_study(path)
    ledger = Ledger(tmp_path / "work" / "ingest" / "ledger.sqlite")
    store = RawStore(tmp_path / "raw", ledger, cfg.ingest.retries)
    return cfg, ledger, store


def token() -> google.oauth2.credentials.Credentials:
    return google.oauth2.credentials.Credentials(token="x")


def check_stack(path: Path, role: str, days: list[str]) -> None:
    """The reader reads ``path`` back with the loopback's values and the listed dates."""
    da = read_modis_stack(path)
    assert [str(t) for t in da.time.values.astype("datetime64[D]").tolist()] == days
    step = abs(float(da.x[1] - da.x[0]))
    gi, gj = np.meshgrid(np.floor(da.x.values / step).astype(int), np.floor(da.y.values / step).astype(int))
    scale, offset = SCALE[role]
    for k, day in enumerate(days):
        raw = raw_value(role, dt.date.fromisoformat(day), gi, gj)
        expected = np.where(raw == FILLS[role], np.nan, raw * scale + offset)
        np.testing.assert_allclose(da.values[k], expected.astype(np.float32), rtol=1e-6, atol=1e-4)
    assert np.isnan(da.values).any() and not np.isnan(da.values).all()
    assert da.rio.crs.to_epsg() == 4326


FILES = {"ndvi": "MOD13Q1_NDVI_{}.tif", "albedo": "MCD43A3_Albedo_BSA_Band7_{}.tif",
         "lst": "MOD11A1_LST_Day_1km_{}.tif"}


def test_small_fetch_writes_stacks_the_reader_reads(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url)
    summary = fetch_modis(cfg, ledger, store, credentials=token())
    json.dumps(summary)  # JSON-able
    modis = tmp_path / "raw" / "modis"
    assert sorted(p.name for p in modis.iterdir()) == sorted(
        f.format(y) for f in FILES.values() for y in (2020, 2021))
    for role, name in FILES.items():
        for year in (2020, 2021):
            days = [d for d in DATES[role] if d.startswith(str(year))]
            check_stack(modis / name.format(year), role, days)
            entry = ledger.file(f"modis/{name.format(year)}")
            assert entry is not None and entry.source == "earthengine"
            assert entry.query["dates"] == days and entry.query["year"] == year
            assert entry.query["bbox"] == [100.0, 35.0, 100.12, 35.07]
            assert entry.query["scale_m"] == 500.0
            assert entry.query["collection"].startswith("MODIS/061/")
    assert summary["requests"] == 6 == len(fake.pixels)  # one request per stack at 48 MiB
    assert len(fake.listings) == 1
    assert all(p.startswith(f"/v1/projects/{PROJECT}/") or p.startswith("/$discovery")
               for p in fake.paths)
    assert not list(modis.glob(".*"))  # no partial file left behind
    grid = summary["grid"]
    assert grid["crs"] == "EPSG:4326" and math.isclose(grid["step_deg"], 500 / 111195.08, rel_tol=1e-6)


def test_second_run_fetches_nothing_and_new_dates_only_fetch_those(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url)
    fetch_modis(cfg, ledger, store, credentials=token())
    first = len(fake.pixels)
    summary = fetch_modis(cfg, ledger, store, credentials=token())
    assert len(fake.pixels) == first and summary["requests"] == 0
    assert summary["skipped_stacks"] == 6 and summary["fetched_stacks"] == 0

    # A new LST image appears: only that date of that stack is fetched, the rest copied.
    fake.dates["lst"].append("2021-01-04")
    before = len(fake.pixels)
    summary = fetch_modis(cfg, ledger, store, credentials=token())
    new = fake.pixels[before:]
    assert [r["bandIds"] for r in new] == [["2021_01_04_LST_Day_1km"]]
    lst = next(s for s in summary["stacks"] if s["file"] == "MOD11A1_LST_Day_1km_2021.tif")
    assert (lst["fetched"], lst["copied"]) == (1, 3)
    check_stack(tmp_path / "raw/modis/MOD11A1_LST_Day_1km_2021.tif", "lst",
                ["2021-01-01", "2021-01-02", "2021-01-03", "2021-01-04"])

    # A stack edited on disk no longer matches its manifest entry: fetched again in full.
    edited = tmp_path / "raw/modis/MOD13Q1_NDVI_2020.tif"
    edited.write_bytes(edited.read_bytes() + b"\0")
    before = len(fake.pixels)
    fetch_modis(cfg, ledger, store, credentials=token())
    assert [r["bandIds"] for r in fake.pixels[before:]] == [["2020_12_02_NDVI", "2020_12_18_NDVI"]]
    check_stack(edited, "ndvi", ["2020-12-02", "2020-12-18"])


def test_requests_over_the_size_limit_are_split(tmp_path, fake):
    mib = 0.004  # 4194 bytes: a 27 × 16 grid of 2 int16 bands (2592 B + header) needs tiles
    cfg, ledger, store = make_study(tmp_path, fake.url, mib=mib, concurrent=3)
    fake.delay_s = 0.01  # long enough for requests to overlap
    grid = Grid.covering(cfg.aoi.bbox, 500.0)
    summary = fetch_modis(cfg, ledger, store, credentials=token())
    limit = mib * 2**20
    assert len(fake.pixels) == summary["requests"] > 6
    for r in fake.pixels:
        assert request_bytes(r["rows"], r["cols"], r["bands"], 2) <= limit
    # The requests of each stack (year, band) cover its grid once per date.
    covered: dict[tuple[str, str], int] = {}
    for r in fake.pixels:
        year, band = r["bandIds"][0][:4], r["bandIds"][0].split("_", 3)[3]
        covered[(year, band)] = covered.get((year, band), 0) + r["rows"] * r["cols"] * r["bands"]
    bands = {"ndvi": "NDVI", "albedo": "Albedo_BSA_Band7", "lst": "LST_Day_1km"}
    expected = {(y, bands[role]): grid.width * grid.height * sum(d.startswith(y) for d in days)
                for role, days in DATES.items() for y in ("2020", "2021")}
    assert covered == expected
    check_stack(tmp_path / "raw/modis/MOD13Q1_NDVI_2020.tif", "ndvi", ["2020-12-02", "2020-12-18"])
    check_stack(tmp_path / "raw/modis/MOD11A1_LST_Day_1km_2021.tif", "lst",
                ["2021-01-01", "2021-01-02", "2021-01-03"])
    assert 2 <= fake.peak <= 3  # requests overlap, never more than max_concurrent


def test_plan_tiles_respects_the_budget_and_covers_the_grid():
    grid = Grid.covering((90.0, 30.0, 95.0, 33.0), 500.0)  # 1112 × 668 pixels
    budget = 48 * 2**20
    tiles = plan_tiles(grid, 365, 2, budget)
    assert all(request_bytes(t.rows, t.cols, t.bands, 2) <= budget for t in tiles)
    assert sum(t.rows * t.cols * t.bands for t in tiles) == grid.width * grid.height * 365
    aligned = plan_tiles(grid, 46, 2, budget)  # tiles larger than a block: whole blocks
    assert len(aligned) > 1 and all(t.row % 256 == 0 and t.col % 256 == 0 for t in aligned)
    assert sum(t.rows * t.cols * t.bands for t in aligned) == grid.width * grid.height * 46
    with pytest.raises(PermanentServiceError, match="max_request_mib"):
        plan_tiles(grid, 1, 2, 100)


def test_a_memory_limit_answer_splits_the_tile(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url)
    fake.refuse_above_pixels = 150  # the 27 × 16 grid is refused until split in four
    fetch_modis(cfg, ledger, store, credentials=token())
    refused = [r for r in fake.pixels if r["rows"] * r["cols"] > 150]
    answered = [r for r in fake.pixels if r["rows"] * r["cols"] <= 150]
    assert len(refused) == 6 * 3  # the whole grid, then its two halves, per stack
    assert len(answered) == 6 * 4
    check_stack(tmp_path / "raw/modis/MCD43A3_Albedo_BSA_Band7_2021.tif", "albedo",
                ["2021-01-01", "2021-01-02"])


def test_too_many_concurrent_aggregations_recovers(tmp_path, fake, caplog):
    cfg, ledger, store = make_study(tmp_path, fake.url, concurrent=1)
    fake.fail("computePixels", 429, "Too many concurrent aggregations.", times=2)
    with caplog.at_level(logging.WARNING, logger="talik.ingest"):
        summary = fetch_modis(cfg, ledger, store, credentials=token())
    assert len([r for r in fake.pixels if r.get("failed") == 429]) == 2
    assert summary["requests"] == 6 + 2
    assert "Too many concurrent aggregations" in caplog.text and "retrying" in caplog.text
    check_stack(tmp_path / "raw/modis/MOD13Q1_NDVI_2021.tif", "ndvi", ["2021-01-01", "2021-01-17"])


def test_service_unavailable_recovers_honouring_retry_after(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url)
    fake.fail("computePixels", 503, "The service is currently unavailable.", headers={"Retry-After": "0"})
    fake.fail("value:compute", 503, "The service is currently unavailable.")
    fetch_modis(cfg, ledger, store, credentials=token())
    assert len(fake.listings) == 1 and len([r for r in fake.pixels if r.get("failed") == 503]) == 1
    assert len(list((tmp_path / "raw/modis").glob("*.tif"))) == 6


def test_retries_used_up_leave_no_partial_file(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url, concurrent=1)
    fake.fail("computePixels", 503, "Backend error", times=50)
    with pytest.raises(Exception, match="503"):
        fetch_modis(cfg, ledger, store, credentials=token())
    modis = tmp_path / "raw/modis"
    assert not modis.exists() or not list(modis.iterdir())
    assert ledger.files() == []


@pytest.fixture()
def key_in_environment(monkeypatch):
    """The fake key in EE_SERVICE_ACCOUNT_KEY; ee's key parser replaced by a bearer token."""
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", FAKE_KEY)
    seen = []

    def service_account(email=None, key_file=None, key_data=None):
        seen.append(key_data)
        return token()

    monkeypatch.setattr(ee, "ServiceAccountCredentials", service_account)
    return seen


def secrets_absent(*texts: str) -> None:
    for text in texts:
        assert FAKE_KEY_MATERIAL not in text
        assert "a1b2c3d4e5f6a7b8c9" not in text
        assert FAKE_KEY not in text


def ledger_bytes(ledger: Ledger) -> str:
    files = [ledger.path, *ledger.path.parent.glob(ledger.path.name + "-*")]
    return b"".join(p.read_bytes() for p in files if p.exists()).decode("latin-1")


def test_unauthorised_fails_fast_naming_the_key_variable(tmp_path, fake, key_in_environment, caplog):
    cfg, ledger, store = make_study(tmp_path, fake.url, concurrent=1)
    fake.fail("computePixels", 401, f"Request had invalid authentication credentials. {FAKE_KEY_MATERIAL}",
              times=10)
    with caplog.at_level(logging.DEBUG), pytest.raises(MissingCredentialError) as err:
        fetch_modis(cfg, ledger, store)
    message = str(err.value)
    assert "EE_SERVICE_ACCOUNT_KEY" in message and PROJECT in message
    assert len(fake.pixels) == 1  # not retried
    assert key_in_environment == [FAKE_KEY]
    secrets_absent(message, caplog.text, ledger_bytes(ledger))


class RefreshingToken(google.oauth2.credentials.Credentials):
    """A bearer token whose refresh succeeds locally (a new token, no token endpoint)."""

    def refresh(self, request):
        self.token = "y"


def test_unauthorised_after_a_token_refresh_names_the_status(tmp_path, fake):
    cfg, ledger, store = make_study(tmp_path, fake.url, concurrent=1)
    fake.fail("computePixels", 401, "Request had invalid authentication credentials.", times=10)
    with pytest.raises(MissingCredentialError, match="HTTP 401") as err:
        fetch_modis(cfg, ledger, store, credentials=RefreshingToken(token="x"))
    assert "EE_SERVICE_ACCOUNT_KEY" in str(err.value) and PROJECT in str(err.value)
    assert len(fake.pixels) == 3  # the request, then after each of google-auth's two refreshes


def test_forbidden_at_initialise_fails_fast(tmp_path, fake, key_in_environment, caplog):
    cfg, ledger, store = make_study(tmp_path, fake.url, project=None)  # project from the key
    fake.fail("/algorithms", 403, "Caller does not have required permission to use project "
              "talik-from-key.", times=10)
    with caplog.at_level(logging.DEBUG), pytest.raises(MissingCredentialError) as err:
        fetch_modis(cfg, ledger, store)
    message = str(err.value)
    assert "EE_SERVICE_ACCOUNT_KEY" in message and "talik-from-key" in message and "HTTP 403" in message
    assert fake.paths.count("/v1/projects/talik-from-key/algorithms") == 1
    secrets_absent(message, caplog.text, ledger_bytes(ledger))


def test_key_from_environment_is_used_and_never_logged(tmp_path, fake, key_in_environment, caplog):
    cfg, ledger, store = make_study(tmp_path, fake.url, mib=0.004)
    fake.fail("computePixels", 429, "Too many concurrent aggregations.")
    with caplog.at_level(logging.DEBUG):
        summary = fetch_modis(cfg, ledger, store)
    assert summary["project"] == PROJECT
    assert key_in_environment == [FAKE_KEY]
    secrets_absent(caplog.text, ledger_bytes(ledger), json.dumps(summary))


def test_missing_or_unusable_key(tmp_path, fake, monkeypatch):
    cfg, ledger, store = make_study(tmp_path, fake.url)
    with pytest.raises(MissingCredentialError, match="EE_SERVICE_ACCOUNT_KEY"):
        fetch_modis(cfg, ledger, store)
    broken = FAKE_KEY.replace('"client_email"', '"no_email"')
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", broken)  # ee's real parser refuses it locally
    with pytest.raises(MissingCredentialError, match="EE_SERVICE_ACCOUNT_KEY") as err:
        fetch_modis(cfg, ledger, store)
    secrets_absent(str(err.value))
    assert fake.paths == []  # nothing was sent
