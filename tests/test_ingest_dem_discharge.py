"""GLO-30 DEM tiles and USGS daily discharge, against local test servers (127.0.0.1 only)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from werkzeug import Request, Response

from talik.config import StudyConfig
from talik.tasks.ingest.common import PermanentServiceError
from talik.tasks.ingest.dem import fetch_dem, tile_name, tile_url, tiles_for_bbox
from talik.tasks.ingest.discharge import daily_discharge_table, fetch_nwis_discharge
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.recession import read_discharge_file

PX = 600  # pixels per degree of the test tiles (real tiles: 3600); 600² float32 > 1 MiB
BBOX = (53.25, 27.1, 55.5, 27.8)  # tiles N27 E053 and E054 exist, N27 E055 does not (404)


def _study(tmp_path: Path, *, dem_url: str = "http://127.0.0.1:1", bbox=BBOX,
           discharge: dict | None = None) -> StudyConfig:
    raw = tmp_path / "raw"
    spec = {"path": str(raw / "discharge.csv"), "flow_column": "discharge_cfs", "units": "cfs"}
    return StudyConfig.model_validate({
        "name": "ingest-test", "title": "ingest test",
        "aoi": {"name": "test", "bbox": list(bbox)},
        "sensors": {"sentinel1": {"platform": "Sentinel-1", "band": "C", "wavelength_m": 0.0555,
                                  "incidence_deg": 39.0, "direction": "descending",
                                  "polarization": "VV"}},
        "source": {"kind": "local", "hyp3_dir": str(raw / "hyp3"),
                   "dem": str(raw / "dem" / "glo30.tif"), "discharge": {**spec, **(discharge or {})}},
        "stores": {"work_dir": str(tmp_path / "work"), "release_dir": str(tmp_path / "releases")},
        "ingest": {"retries": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05},
                   "dem": {"enabled": True, "url": dem_url},
                   "nwis": {"enabled": True, "site": "15356000", "start": "2024-01-01"}},
    })


def _store(tmp_path: Path, cfg: StudyConfig) -> tuple[Ledger, RawStore]:
    ledger = Ledger(tmp_path / "work" / "ingest" / "ledger.sqlite")
    return ledger, RawStore(tmp_path / "raw", ledger, cfg.ingest.retries)


# --------------------------------------------------------------------------------- GLO-30
def _height(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The test terrain, metres: a plane, so every pixel's value names its position."""
    return 1000.0 + 100.0 * (lon - 53.0) + 10.0 * (lat - 27.0)


def _write_tile(path: Path, lat: int, lon: int) -> bytes:
    """A GLO-30-like tile: float32, EPSG:4326, pixel centres on (lat, lat+1] × [lon, lon+1)."""
    res = 1.0 / PX
    transform = Affine(res, 0, lon - res / 2, 0, -res, lat + 1 + res / 2)
    cols, rows = np.meshgrid(np.arange(PX), np.arange(PX))
    x, y = transform * (cols + 0.5, rows + 0.5)
    data = _height(np.asarray(x), np.asarray(y)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=PX, height=PX, count=1, dtype="float32",
                       crs="EPSG:4326", transform=transform, tiled=True, blockxsize=256,
                       blockysize=256) as dst:
        dst.write(data, 1)
    return path.read_bytes()


class Bucket:
    """A public-bucket stand-in: GET with Range, a 404 for absent tiles, scripted failures."""

    def __init__(self, httpserver, tmp_path: Path) -> None:
        self.server = httpserver
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.plan: dict[str, list[str]] = {}
        folder = tmp_path / "served"
        folder.mkdir()
        base = httpserver.url_for("/glo30").rstrip("/")
        self.base = base
        for lat, lon in ((27, 53), (27, 54)):
            name = tile_name(lat, lon)
            self.files[f"/glo30/{name}/{name}.tif"] = _write_tile(folder / f"{name}.tif", lat, lon)
        for path in self.files:
            httpserver.expect_request(path, method="GET").respond_with_handler(self.handle)
        absent = tile_name(27, 55)
        self.absent_path = f"/glo30/{absent}/{absent}.tif"
        httpserver.expect_request(self.absent_path).respond_with_handler(self.handle_absent)

    def path_of(self, lat: int, lon: int) -> str:
        return tile_url("/glo30", tile_name(lat, lon))

    def handle_absent(self, request: Request) -> Response:
        self.hits[request.path] += 1
        return Response("<Error><Code>NoSuchKey</Code></Error>", status=404,
                        content_type="application/xml")

    def handle(self, request: Request) -> Response:
        path = request.path
        self.hits[path] += 1
        rng = request.headers.get("Range")
        self.ranges.append((path, rng))
        todo = self.plan.get(path) or []
        action = todo.pop(0) if todo else "ok"
        if action == "503":
            return Response("SlowDown", status=503, headers={"Retry-After": "0"})
        data = self.files[path]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(len(body))}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if action == "cut":  # promise the whole body, send 1.2 MB of it, hang up
            headers["Connection"] = "close"

            def partial(chunk=body[:1_200_000]):
                yield chunk

            return Response(partial(), status=status, headers=headers, direct_passthrough=True)
        return Response(body, status=status, headers=headers, content_type="image/tiff")


@pytest.fixture
def bucket(httpserver, tmp_path) -> Bucket:
    return Bucket(httpserver, tmp_path)


def test_tile_names_follow_the_bucket_layout():
    assert tile_name(27, 53) == "Copernicus_DSM_COG_10_N27_00_E053_00_DEM"
    assert tile_name(-14, -172) == "Copernicus_DSM_COG_10_S14_00_W172_00_DEM"
    assert tile_url("https://b.example/", tile_name(0, 6)) == (
        "https://b.example/Copernicus_DSM_COG_10_N00_00_E006_00_DEM/"
        "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif")
    assert tiles_for_bbox(BBOX) == [(27, 53), (27, 54), (27, 55)]
    assert tiles_for_bbox((99.0, 37.0, 101.0, 38.0)) == [(37, 99), (37, 100)]  # whole degrees


def _check_mosaic(path: Path) -> None:
    with rasterio.open(path) as src:
        data = src.read(1)
        transform, bounds = src.transform, src.bounds
        assert src.crs.to_epsg() == 4326 and np.isnan(src.nodata)
    res = 1.0 / PX
    assert data.shape == (round(0.7 * PX), round(2.25 * PX))
    # pixel centres: west <= lon < east, south < lat <= north
    assert bounds.left == pytest.approx(BBOX[0] - res / 2) and bounds.top == pytest.approx(BBOX[3] + res / 2)
    assert bounds.right == pytest.approx(BBOX[2] - res / 2)
    assert bounds.bottom == pytest.approx(BBOX[1] + res / 2)
    cols, rows = np.meshgrid(np.arange(data.shape[1]), np.arange(data.shape[0]))
    x, y = transform * (cols + 0.5, rows + 0.5)
    x, y = np.asarray(x), np.asarray(y)
    land = x < 55.0 - res / 4
    np.testing.assert_allclose(data[land], _height(x[land], y[land]), atol=1e-3)
    assert np.isnan(data[~land]).all() and (~land).sum() == round(0.5 * PX) * data.shape[0]


def test_dem_mosaic_second_run_and_corrupted_tile(tmp_path, bucket):
    cfg = _study(tmp_path, dem_url=bucket.base)
    ledger, store = _store(tmp_path, cfg)
    summary = fetch_dem(cfg, ledger, store)
    json.dumps(summary)  # JSON-able
    assert summary["written"] and summary["absent"] == [tile_name(27, 55)]
    assert summary["downloaded"] == [tile_name(27, 53), tile_name(27, 54)]
    assert any("404" in note for note in summary["notes"])
    out = Path(cfg.source.dem)
    _check_mosaic(out)
    entry = ledger.file(store.relative(out))
    assert entry.source == "glo30" and [t[0] for t in entry.query["tiles"]] == summary["tiles"]
    assert not list(out.parent.glob(".*tmp"))  # the temporary name is gone
    assert sum(bucket.hits.values()) == 3

    # Second run: nothing transferred (not even the absent tile), nothing rewritten.
    stamp = out.stat().st_mtime_ns
    again = fetch_dem(cfg, ledger, store)
    assert sum(bucket.hits.values()) == 3
    assert again["written"] is False and again["downloaded"] == [] and again["absent"] == summary["absent"]
    assert out.stat().st_mtime_ns == stamp

    # A damaged tile is caught by its checksum and fetched again; the DEM stays as it was.
    tile = out.parent / "glo30_tiles" / f"{tile_name(27, 53)}.tif"
    raw = bytearray(tile.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tile.write_bytes(bytes(raw))
    third = fetch_dem(cfg, ledger, store)
    assert third["downloaded"] == [tile_name(27, 53)]
    assert bucket.hits[bucket.path_of(27, 53)] == 2 and sum(bucket.hits.values()) == 4
    assert tile.read_bytes() == bucket.files[bucket.path_of(27, 53)]
    assert third["written"] is False and out.stat().st_mtime_ns == stamp

    # A damaged DEM is rebuilt from the tiles in place, with no download.
    out.write_bytes(out.read_bytes()[:-100])
    fourth = fetch_dem(cfg, ledger, store)
    assert fourth["written"] is True and sum(bucket.hits.values()) == 4
    _check_mosaic(out)


def test_dem_503_recovers_and_broken_download_resumes(tmp_path, bucket):
    bucket.plan[bucket.path_of(27, 54)] = ["503"]
    bucket.plan[bucket.path_of(27, 53)] = ["cut"]
    cfg = _study(tmp_path, dem_url=bucket.base)
    ledger, store = _store(tmp_path, cfg)
    summary = fetch_dem(cfg, ledger, store)
    assert summary["written"] and sorted(summary["downloaded"]) == sorted(summary["tiles"])
    assert bucket.hits[bucket.path_of(27, 54)] == 2  # 503, then the file
    assert bucket.hits[bucket.path_of(27, 53)] == 2  # broken off, then resumed
    ranges = [r for p, r in bucket.ranges if p == bucket.path_of(27, 53)]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) > 0  # resumed from the bytes already there
    for lat, lon in ((27, 53), (27, 54)):
        tile = Path(cfg.source.dem).parent / "glo30_tiles" / f"{tile_name(lat, lon)}.tif"
        assert tile.read_bytes() == bucket.files[bucket.path_of(lat, lon)]
    _check_mosaic(Path(cfg.source.dem))


def test_dem_all_tiles_absent_is_a_setting_error(tmp_path, httpserver):
    cfg = _study(tmp_path, dem_url=httpserver.url_for("/elsewhere"), bbox=(10.2, 40.2, 10.4, 40.4))
    httpserver.expect_request(
        tile_url("/elsewhere", tile_name(40, 10))).respond_with_data("NoSuchKey", status=404)
    ledger, store = _store(tmp_path, cfg)
    with pytest.raises(PermanentServiceError, match="ingest.dem.url"):
        fetch_dem(cfg, ledger, store)
    assert ledger.requests(source="glo30") == []  # not remembered as absent


# ----------------------------------------------------------------------------------- NWIS
def _feature(day: str, value: str | None, status: str, qualifier: list[str] | None) -> dict:
    """One feature of the Water Data API's ``daily`` collection, as the service sends it."""
    return {
        "type": "Feature", "id": f"0005{day.replace('-', '')}-9ef8-468d-b436-a55022d254e6",
        "geometry": {"type": "Point", "coordinates": [-149.8, 61.5]},
        "properties": {
            "approval_status": status, "last_modified": "2026-07-30T15:43:16.002990+00:00",
            "monitoring_location_id": "USGS-15356000", "parameter_code": "00060",
            "qualifier": qualifier, "statistic_id": "00003", "time": day,
            "time_series_id": "90a0ea0b6d99431e9f3d91da1aa49564", "unit_of_measure": "ft^3/s",
            "value": value,
        },
    }


DAYS = [
    ("2024-01-01", "412", "Approved", None),
    ("2024-01-02", "405", "Approved", None),
    ("2024-01-03", None, "Approved", ["ICE"]),  # ice-affected: no value
    ("2024-01-04", "398", "Approved", ["ESTIMATED"]),
    ("2024-01-05", "390", "Provisional", None),
    ("2024-01-06", "386", "Provisional", None),
]


def _serve_daily(httpserver, days=DAYS, fail_first: bool = False) -> list[Request]:
    seen: list[Request] = []

    def handle(request: Request) -> Response:
        seen.append(request)
        if fail_first and len(seen) == 1:
            return Response("upstream busy", status=503, headers={"Retry-After": "0"})
        body = {"type": "FeatureCollection", "features": [_feature(*d) for d in days],
                "numberReturned": len(days), "links": []}
        return Response(json.dumps(body), content_type="application/geo+json")

    httpserver.expect_request("/ogcapi/v1/collections/daily/items").respond_with_handler(handle)
    return seen


@pytest.fixture
def water_data(httpserver):
    """Point dataretrieval's Water Data calls at the test server (its documented setting)."""
    import dataretrieval
    from dataretrieval.waterdata.configuration import WaterdataConfiguration

    with dataretrieval.configure(WaterdataConfiguration(base_url=httpserver.url_for("/").rstrip("/"))):
        yield httpserver


def test_nwis_daily_discharge_reads_back_with_provisional_days(tmp_path, water_data):
    seen = _serve_daily(water_data, fail_first=True)
    cfg = _study(tmp_path)
    ledger, store = _store(tmp_path, cfg)
    summary = fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 6))
    json.dumps(summary)
    assert len(seen) == 2  # a 503, then the answer
    args = seen[-1].args
    assert args["monitoring_location_id"] == "USGS-15356000" and args["parameter_code"] == "00060"
    assert args["statistic_id"] == "00003" and args["time"] == "2024-01-01/2024-01-06"

    record = read_discharge_file(cfg.source.discharge)
    flow_cfs = record.flow_m3s / 0.3048**3
    expected = [412, 405, np.nan, 398, 390, 386]
    np.testing.assert_allclose(flow_cfs.to_numpy(), expected, rtol=1e-9)
    assert list(flow_cfs.index.strftime("%Y-%m-%d")) == [d[0] for d in DAYS]
    assert record.counts["missing"] == 1

    table = pd.read_csv(cfg.source.discharge.path, dtype=str, keep_default_na=False)
    assert list(table.loc[table["provisional"] == "1", "date"]) == ["2024-01-05", "2024-01-06"]
    assert table.loc[2, "qualifiers"] == "ICE" and table.loc[2, "discharge_cfs"] == ""
    assert summary["provisional"] and summary["provisional_days"] == {
        "count": 2, "first": "2024-01-05", "last": "2024-01-06"}
    assert summary["missing"] == 1 and summary["ice_missing"] == 1
    entry = ledger.file(store.relative(Path(cfg.source.discharge.path)))
    assert entry.status == "provisional" and entry.source == "nwis"
    assert "/ogcapi/v1/collections/daily/items?" in entry.url

    # The same answer again: the file is not rewritten.
    stamp = Path(cfg.source.discharge.path).stat().st_mtime_ns
    again = fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 6))
    assert again["written"] is False and Path(cfg.source.discharge.path).stat().st_mtime_ns == stamp


def test_nwis_approved_values_replace_a_provisional_file(tmp_path, water_data):
    cfg = _study(tmp_path)
    ledger, store = _store(tmp_path, cfg)
    path = Path(cfg.source.discharge.path)
    seen = _serve_daily(water_data, DAYS[:2] + [("2024-01-03", "401", "Provisional", None)])
    fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 3))
    assert ledger.file(store.relative(path)).status == "provisional"
    water_data.clear()
    _serve_daily(water_data, DAYS[:2] + [("2024-01-03", "401", "Approved", None)])
    summary = fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 3))
    assert summary["written"] and not summary["provisional"] and len(seen) == 1
    assert ledger.file(store.relative(path)).status == "final"


def test_nwis_table_follows_the_study_layout(tmp_path, water_data):
    _serve_daily(water_data)
    layout = {"date_column": ["year", "month", "day"], "flow_column": "q", "units": "mm/d",
              "basin_area_km2": 1000.0, "sep": None}
    cfg = _study(tmp_path, discharge=layout)
    ledger, store = _store(tmp_path, cfg)
    fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 6))
    lines = Path(cfg.source.discharge.path).read_text().splitlines()
    assert lines[0].split() == ["year", "month", "day", "q", "provisional", "qualifiers"]
    assert lines[3].split()[3] == "NaN"
    record = read_discharge_file(cfg.source.discharge)
    m3s = 412 * 0.3048**3
    assert record.flow_m3s.iloc[0] == pytest.approx(m3s, rel=1e-9)
    assert record.flow("mm/d").iloc[0] == pytest.approx(m3s * 86400 / 1e9 * 1000, rel=1e-9)
    assert np.isnan(record.flow_m3s.iloc[2])


def test_nwis_value_codes_are_missing():
    frame = pd.DataFrame({
        "time": ["2024-02-01", "2024-02-02", "2024-02-03", "2024-02-04", "2024-02-05"],
        "value": ["Ice", "***", "-999999", None, "12.5"],
        "approval_status": ["Approved", "Provisional", "Approved", "Approved", "Approved"],
        "qualifier": [["ICE"], None, None, None, "['P', 'e']"],
        "unit_of_measure": ["ft^3/s"] * 5,
    })
    table, counts = daily_discharge_table(frame)
    assert table["flow_cfs"].isna().tolist() == [True, True, True, True, False]
    assert table["provisional"].tolist() == [False, True, False, False, True]  # legacy 'P' qualifier
    assert counts["missing"] == 4 and counts["ice_qualified"] == 1


def test_nwis_refused_site_names_the_setting(tmp_path, water_data):
    water_data.expect_request("/ogcapi/v1/collections/daily/items").respond_with_json(
        {"code": "InvalidParameterValue", "description": "bad monitoring_location_id"}, status=400)
    cfg = _study(tmp_path)
    ledger, store = _store(tmp_path, cfg)
    with pytest.raises(PermanentServiceError, match="ingest.nwis.site"):
        fetch_nwis_discharge(cfg, ledger, store, today=dt.date(2024, 1, 6))
    assert not Path(cfg.source.discharge.path).exists()


def test_ingest_flow_runs_an_enabled_source_and_skips_another(prefect_server, tmp_path, bucket):
    """Through Prefect: the `ingest` flow's DEM subflow fills the study's DEM file, records it in
    the study's own ledger (<work_dir>/ingest/ledger.sqlite), and a skipped source sends nothing."""
    from talik.flows.ingest import ingest_flow
    from talik.tasks.ingest.run import ledger_of

    cfg = _study(tmp_path, dem_url=bucket.base)
    out = ingest_flow(cfg, skip=["nwis"])
    assert set(out) == {"dem"} and out["dem"]["written"]
    _check_mosaic(Path(cfg.source.dem))
    ledger = ledger_of(cfg)
    assert ledger.path == tmp_path / "work" / "ingest" / "ledger.sqlite"
    assert any(f.source == "glo30" and f.path.endswith("glo30.tif") for f in ledger.files())
    assert not any("ogcapi" in str(r) for r in bucket.server.log)  # NWIS skipped: no request


def test_a_second_fetching_run_of_a_study_fetches_nothing(prefect_server, tmp_path, bucket):
    """While one run holds the study's ingest lease, another run sends no request."""
    import datetime as dt

    from talik.flows.ingest import ingest_flow
    from talik.tasks.ingest.run import ledger_of

    cfg = _study(tmp_path, dem_url=bucket.base)
    with ledger_of(cfg).lease("ingest", dt.timedelta(minutes=5)):
        out = ingest_flow(cfg, skip=["nwis"])
    assert "held by another run" in out["not_fetched"] and "dem" not in out
    assert sum(bucket.hits.values()) == 0
