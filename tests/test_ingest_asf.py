"""Scene discovery with asf_search against a loopback HTTPS fake of ASF's search API."""

# ruff: noqa: F811  (pytest fixtures imported from tests.fakes are parameters here)

from __future__ import annotations

import datetime as dt
import logging

import pytest

from talik.config import AsfSearchOptions, RetryOptions
from talik.tasks.ingest.asf import bbox_wkt, discover_scenes, search_scenes
from talik.tasks.ingest.common import MissingCredentialError
from talik.tasks.ingest.ledger import Ledger
from tests.fakes.asf_hyp3 import (  # noqa: F401  (fixtures)
    FakeScene,
    earthdata_token,
    fake_asf,
    make_study,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:asf_search.*")
FAST = RetryOptions(attempts=4, backoff_s=0.01, max_backoff_s=0.5)
DATES = [dt.date(2020, 6, 3) + dt.timedelta(days=12 * k) for k in range(6)]


def _options(fake, **kw) -> AsfSearchOptions:
    return AsfSearchOptions(enabled=True, host=fake.host, **kw)


def test_scene_records_parsed(fake_asf, earthdata_token):
    fake_asf.set_dates(DATES[:2], relative_orbit=41, frame=1180, direction="DESCENDING")
    scenes = search_scenes(_options(fake_asf), (100.0, 37.0, 101.0, 38.0), FAST, earthdata_token)
    assert [s.date for s in scenes] == DATES[:2]
    s = scenes[0]
    expected = FakeScene(dt.datetime.combine(DATES[0], dt.time(23, 24, 10), tzinfo=dt.UTC))
    assert s.source == "asf" and s.scene_id == expected.name
    assert s.platform == "Sentinel-1A" and s.beam_mode == "IW" and s.polarization == "VV+VH"
    assert s.flight_direction == "DESCENDING" and s.relative_orbit == 41 and s.frame == 1180
    assert s.product_type == "SLC" and s.start_time == expected.start
    assert s.stop_time == expected.start + dt.timedelta(seconds=27)
    assert s.url == f"https://datapool.asf.alaska.edu/SLC/SA/{expected.name}.zip"
    assert s.size_bytes == expected.size_bytes and s.md5 == expected.md5
    assert s.footprint_wkt.startswith("POLYGON")
    # The token went to the search as a bearer token.
    assert fake_asf.requests[0].headers["Authorization"] == f"Bearer {earthdata_token}"


def test_filters_sent_to_the_search(fake_asf):
    fake_asf.set_dates(DATES)
    opts = _options(fake_asf, flight_direction="DESCENDING", relative_orbit=41, frame=1180,
                    polarization="VV+VH", start=DATES[1], end=DATES[3])
    scenes = search_scenes(opts, (100.0, 37.0, 101.0, 38.0), FAST, None)
    assert [s.date for s in scenes] == DATES[1:4]  # the end date is searched to its last second
    form = fake_asf.search_bodies()[0]
    attrs = set(form["attribute[]"])
    assert {"string,ASCENDING_DESCENDING,DESCENDING", "int,PATH_NUMBER,41", "int,FRAME_NUMBER,1180",
            "string,BEAM_MODE,IW", "string,POLARIZATION,VV+VH"} <= attrs
    assert "SENTINEL-1A_SLC" in form["shortName"]
    assert form["bounding_box"] == ["100.0,37.0,101.0,38.0"]
    assert form["temporal"][0].startswith(f"{DATES[1]:%Y-%m-%d}T00:00:00Z,{DATES[3]:%Y-%m-%d}T23:59:59Z")
    assert "Authorization" not in fake_asf.requests[0].headers


def test_paging_across_pages(fake_asf):
    dates = [dt.date(2016, 1, 1) + dt.timedelta(days=6 * k) for k in range(263)]
    fake_asf.set_dates(dates)
    scenes = search_scenes(_options(fake_asf), None, FAST, None)
    assert len(scenes) == 263 and [s.date for s in scenes] == dates
    afters = [r.headers.get("Cmr-Search-After") for r in fake_asf.requests]
    assert len(afters) == 2 and afters[0] is None and afters[1] is not None


def test_small_pages(fake_asf, caplog):
    fake_asf.page_size = 2
    fake_asf.set_dates(DATES[:5])
    scenes = search_scenes(_options(fake_asf), None, FAST, None)
    assert [s.date for s in scenes] == DATES[:5]
    assert len(fake_asf.requests) == 3


def test_503_recovers(fake_asf, caplog):
    fake_asf.set_dates(DATES[:3])
    fake_asf.fail_next(503, times=2)
    with caplog.at_level(logging.WARNING, logger="talik.ingest"):
        scenes = search_scenes(_options(fake_asf), None, FAST, None)
    assert len(scenes) == 3 and len(fake_asf.requests) == 3
    assert "HTTP 503" in caplog.text


def test_429_retry_after_honoured(fake_asf, monkeypatch):
    fake_asf.set_dates(DATES[:3])
    fake_asf.fail_next(429, headers={"Retry-After": "0.3"})
    import time

    t0 = time.monotonic()
    scenes = search_scenes(_options(fake_asf), None, FAST, None)
    assert len(scenes) == 3
    assert time.monotonic() - t0 >= 0.3  # the backoff alone would be ~0.01 s


def test_401_fails_fast_naming_the_token(fake_asf, earthdata_token, caplog):
    fake_asf.set_dates(DATES[:3])
    fake_asf.fail_next(401, times=10)
    with pytest.raises(MissingCredentialError, match="EARTHDATA_TOKEN"):
        search_scenes(_options(fake_asf), None, FAST, earthdata_token)
    assert len(fake_asf.requests) == 1  # no retry
    assert earthdata_token not in caplog.text


def test_discover_records_new_scenes(fake_asf, earthdata_token, tmp_path, caplog):
    cfg = make_study(tmp_path, asf_host=fake_asf.host)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    fake_asf.set_dates(DATES[:3])
    with caplog.at_level(logging.DEBUG):
        first = discover_scenes(cfg, ledger)
        assert first["n_found"] == 3 and first["n_new"] == 3 and len(first["new"]) == 3
        fake_asf.set_dates(DATES[:5])  # two new acquisitions since the last run
        second = discover_scenes(cfg, ledger)
    assert second["n_found"] == 5 and second["n_new"] == 2
    assert [s.date for s in ledger.scenes("asf")] == DATES[:5]
    assert earthdata_token not in caplog.text
    assert earthdata_token.encode() not in (tmp_path / "ledger.sqlite").read_bytes()
    assert logging.getLogger("asf_search").getEffectiveLevel() >= logging.INFO


def test_bbox_wkt():
    assert bbox_wkt((1, 2, 3, 4)) == ("POLYGON((1.000000 2.000000, 3.000000 2.000000, "
                                      "3.000000 4.000000, 1.000000 4.000000, 1.000000 2.000000))")
