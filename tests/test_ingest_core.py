"""The ingest groundwork: network planner, ledger, raw store downloads, retries, secrets."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time

import numpy as np
import pytest
from werkzeug import Request, Response

from talik.config import RetryOptions
from talik.science.network import plan_pairs
from talik.tasks.ingest.common import (
    MissingCredentialError,
    PermanentServiceError,
    SceneRecord,
    TransientServiceError,
    redact,
    register_secret,
    require_credential,
    retrying,
    scrub_url,
)
from talik.tasks.ingest.ledger import JobEntry, Ledger
from talik.tasks.ingest.rawstore import RawStore

FAST = RetryOptions(attempts=4, backoff_s=0.01, max_backoff_s=2.0)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


# ------------------------------------------------------------------------------ planner
def test_plan_pairs_neighbours_baseline_months_and_held():
    dates = np.array(["2020-01-01", "2020-01-13", "2020-01-25", "2020-03-01", "2020-03-13"],
                     dtype="datetime64[D]")
    assert plan_pairs(dates, 2, 30) == [(0, 1), (0, 2), (1, 2), (3, 4)]  # 01-25→03-01 is 36 d
    assert plan_pairs(dates, 2, 60) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    assert plan_pairs(dates, 3, 60, months=[3]) == [(3, 4)]
    held = {(dates[0], dates[1])}
    assert (0, 1) not in plan_pairs(dates, 2, 30, held=held)
    with pytest.raises(ValueError, match="sorted and unique"):
        plan_pairs(dates[::-1], 2, 30)


def test_plan_pairs_counts_dates_not_a_fixed_revisit():
    """A 6-day constellation and a 12-day gap: neighbours are the next dates, whatever the gap."""
    dates = np.array(["2021-06-01", "2021-06-07", "2021-06-19", "2021-06-25"], "datetime64[D]")
    assert plan_pairs(dates, 1, 12) == [(0, 1), (1, 2), (2, 3)]


# ------------------------------------------------------------------------------- ledger
def _scene(name: str, day: str) -> SceneRecord:
    return SceneRecord(source="asf", scene_id=name, platform="Sentinel-1A",
                       start_time=dt.datetime.fromisoformat(day + "T23:24:10+00:00"),
                       relative_orbit=12, frame=100, flight_direction="DESCENDING")


def test_ledger_scenes_pairs_jobs_and_credits(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    a, b = _scene("A", "2021-06-01"), _scene("B", "2021-06-13")
    assert [s.scene_id for s in ledger.add_scenes([a, b])] == ["A", "B"]
    assert ledger.add_scenes([a, b, _scene("C", "2021-06-25")])[0].scene_id == "C"
    assert [s.scene_id for s in Ledger(tmp_path / "l.sqlite").scenes()] == ["A", "B", "C"]
    assert ledger.add_pairs([("A", "B"), ("B", "C")], "INSAR_GAMMA") == 2
    assert ledger.add_pairs([("A", "B")], "INSAR_GAMMA") == 0
    ledger.set_pair("A", "B", "INSAR_GAMMA", "submitting", job_name="talik-x")
    assert [p.job_name for p in ledger.pairs(states=["submitting"])] == ["talik-x"]
    with pytest.raises(ValueError, match="unknown pair state"):
        ledger.set_pair("A", "B", "INSAR_GAMMA", "lost")
    now = dt.datetime(2021, 7, 3, tzinfo=dt.UTC)
    for i, when in enumerate([now, now, now - dt.timedelta(days=40)]):
        ledger.upsert_job(JobEntry(f"j{i}", "A", "B", "INSAR_GAMMA", "talik-x", "PENDING", 10.0,
                                   when, None, []))
    assert ledger.credits_spent(dt.date(2021, 7, 20)) == 20.0
    assert ledger.credits_spent(dt.date(2021, 5, 1)) == 10.0


def test_ledger_transaction_is_all_or_nothing(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add_pairs([("A", "B")], "INSAR_GAMMA")
    with pytest.raises(RuntimeError), ledger.transaction() as db:
        ledger.set_pair("A", "B", "INSAR_GAMMA", "submitting", job_name="n", db=db)
        raise RuntimeError("killed before the order was sent")
    assert ledger.pairs()[0].state == "planned"


# ---------------------------------------------------------------------------- raw store
def _ranged(payload: bytes, cut: int | None = None):
    """A handler serving ``payload`` with Range support; the first answer stops at ``cut``."""
    calls = {"n": 0, "ranges": []}

    def handler(request: Request) -> Response:
        calls["n"] += 1
        rng = request.headers.get("Range")
        calls["ranges"].append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = payload[start:]
        if cut is not None and calls["n"] == 1:
            body = body[:cut]
        status = 206 if rng else 200
        return Response(body, status=status, headers={"Accept-Ranges": "bytes"})

    return handler, calls


def test_fetch_records_checksum_and_skips_a_verified_copy(tmp_path, httpserver):
    handler, calls = _ranged(PAYLOAD)
    httpserver.expect_request("/f.zip").respond_with_handler(handler)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    url = httpserver.url_for("/f.zip") + "?token=s3cr3tvalue&x=1"
    got = store.fetch(url, tmp_path / "raw" / "f.zip", "test", {"q": 1}, size=len(PAYLOAD),
                      sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert got.downloaded and got.path.read_bytes() == PAYLOAD
    entry = store.ledger.file("raw/f.zip")
    assert entry.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and entry.bytes == len(PAYLOAD)
    assert "s3cr3tvalue" not in entry.url and "x=1" in entry.url
    again = store.fetch(url, tmp_path / "raw" / "f.zip", "test")
    assert not again.downloaded and calls["n"] == 1


def test_corrupted_file_is_fetched_again(tmp_path, httpserver, caplog):
    handler, calls = _ranged(PAYLOAD)
    httpserver.expect_request("/f.zip").respond_with_handler(handler)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    dest = tmp_path / "f.zip"
    store.fetch(httpserver.url_for("/f.zip"), dest, "test")
    data = bytearray(dest.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte changed
    dest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        got = store.fetch(httpserver.url_for("/f.zip"), dest, "test")
    assert got.downloaded and dest.read_bytes() == PAYLOAD and calls["n"] == 2
    assert "does not match its manifest checksum" in caplog.text


def test_interrupted_download_resumes_with_range(tmp_path, httpserver):
    handler, calls = _ranged(PAYLOAD, cut=300_000)
    httpserver.expect_request("/f.zip").respond_with_handler(handler)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    got = store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test",
                      size=len(PAYLOAD))
    assert got.path.read_bytes() == PAYLOAD
    assert calls["ranges"] == [None, "bytes=300000-"]
    assert not (tmp_path / ".f.zip.partial").exists()


def test_checksum_mismatch_from_the_service_is_retried_then_refused(tmp_path, httpserver):
    httpserver.expect_request("/f.zip").respond_with_data(PAYLOAD)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    with pytest.raises(TransientServiceError, match="MD5 mismatch"):
        store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test", md5="0" * 32)
    assert not (tmp_path / "f.zip").exists() and store.ledger.file("f.zip") is None


def test_503_recovers_and_429_retry_after_is_honoured(tmp_path, httpserver):
    answers = iter([Response("busy", 503), Response("slow down", 429, {"Retry-After": "1"}),
                    Response(PAYLOAD, 200)])
    httpserver.expect_request("/f.zip").respond_with_handler(lambda r: next(answers))
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    start = time.monotonic()
    got = store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test")
    assert got.path.read_bytes() == PAYLOAD
    assert time.monotonic() - start >= 0.9  # the Retry-After second was waited


def test_401_fails_fast_naming_the_credential(tmp_path, httpserver):
    httpserver.expect_request("/f.zip").respond_with_data("no", status=401)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    with pytest.raises(MissingCredentialError, match="EARTHDATA_TOKEN"):
        store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test",
                    credential_key="earthdata_token")
    assert len(httpserver.log) == 1  # not retried


def test_404_is_permanent(tmp_path, httpserver):
    httpserver.expect_request("/f.zip").respond_with_data("gone", status=404)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    with pytest.raises(PermanentServiceError, match="HTTP 404"):
        store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test")


# ------------------------------------------------------------------------ retries, secrets
def test_retrying_honours_retry_after_and_gives_up():
    calls = []

    @retrying(RetryOptions(attempts=3, backoff_s=0.01, max_backoff_s=1.0), "svc")
    def flaky():
        calls.append(time.monotonic())
        raise TransientServiceError("busy", retry_after_s=0.3)

    with pytest.raises(TransientServiceError):
        flaky()
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.29


def test_missing_credential_names_variable_and_block(monkeypatch):
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    with pytest.raises(MissingCredentialError, match="CDSAPI_KEY.*talik-cdsapi-key"):
        require_credential("cds_key", "CDS")


def test_secrets_are_masked_in_logs_and_urls(monkeypatch, caplog):
    monkeypatch.setenv("EARTHDATA_TOKEN", "eyJ-planted-token-value-123")
    token = require_credential("earthdata_token", "HyP3")
    log = logging.getLogger("talik.test")
    with caplog.at_level(logging.INFO):
        log.info("calling with %s", token)
        log.warning(f"inline {token}")
    assert token not in caplog.text and "***" in caplog.text
    assert token not in scrub_url(f"https://u:{token}@h.example/p?access_token={token}")
    register_secret("line-one-secret\nline-two-secret")
    assert redact("a line-two-secret b") == "a *** b"


# ----------------------------------------------------------------------- review findings
def test_a_download_that_keeps_failing_makes_attempts_requests_not_their_square(tmp_path, httpserver):
    """One retry layer: [ingest.retries] attempts = 4 means 4 requests, not 4 × 4."""
    httpserver.expect_request("/f.zip").respond_with_data("busy", status=503)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    with pytest.raises(TransientServiceError, match="HTTP 503"):
        store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test")
    assert len(httpserver.log) == FAST.attempts


def test_http_session_caps_retry_after_at_max_backoff():
    from talik.tasks.ingest.common import http_session

    session = http_session(RetryOptions(attempts=3, backoff_s=0.01, max_backoff_s=5.0))
    retry = session.get_adapter("https://x.example").max_retries
    assert retry.parse_retry_after("86400") == 5.0  # a day-long Retry-After waits 5 s, not a day


def test_a_secret_in_a_logged_traceback_is_masked(monkeypatch, caplog):
    monkeypatch.setenv("CDSAPI_KEY", "cds-planted-key-0123456789")
    key = require_credential("cds_key", "CDS")
    log = logging.getLogger("talik.test")
    with caplog.at_level(logging.INFO):
        try:
            raise RuntimeError(f"client said: bad key {key}")
        except RuntimeError:
            log.exception("the call failed")
    assert "the call failed" in caplog.text and "bad key ***" in caplog.text
    assert key not in caplog.text


def test_partial_longer_than_the_file_is_not_taken_for_complete(tmp_path, httpserver):
    """A 416 on resume (the partial is as long as, or longer than, the file) is checked."""
    def handler(request: Request) -> Response:
        rng = request.headers.get("Range")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        if start >= len(PAYLOAD):
            return Response("", status=416, headers={"Content-Range": f"bytes */{len(PAYLOAD)}"})
        return Response(PAYLOAD[start:], status=206 if rng else 200)

    httpserver.expect_request("/f.zip").respond_with_handler(handler)
    store = RawStore(tmp_path, Ledger(tmp_path / "l.sqlite"), FAST)
    (tmp_path / ".f.zip.partial").write_bytes(PAYLOAD + b"junk from an older version")
    got = store.fetch(httpserver.url_for("/f.zip"), tmp_path / "f.zip", "test")
    assert got.path.read_bytes() == PAYLOAD
