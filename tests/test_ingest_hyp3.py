"""Ordering, polling and downloading HyP3 interferograms against a loopback fake of HyP3."""

# ruff: noqa: F811  (pytest fixtures imported from tests.fakes are parameters here)

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import pytest

from talik.tasks.ingest.common import (
    BudgetExceededError,
    MissingCredentialError,
    PermanentServiceError,
    SceneRecord,
)
from talik.tasks.ingest.hyp3 import (
    download_products,
    job_name,
    job_payload,
    order_pairs,
    plan_orders,
    poll_jobs,
)
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore
from talik.tasks.readers.hyp3 import find_hyp3_products
from tests.fakes.asf_hyp3 import (  # noqa: F401  (fixtures)
    FakeScene,
    earthdata_token,
    fake_hyp3,
    make_study,
    write_product,
)

DATES = [dt.date(2020, 6, 3) + dt.timedelta(days=12 * k) for k in range(5)]


def _scene(day: dt.date, orbit: int = 41, frame: int = 1180, direction: str = "DESCENDING",
           hour: int = 23) -> SceneRecord:
    fake = FakeScene(dt.datetime.combine(day, dt.time(hour, 24, 10), tzinfo=dt.UTC), relative_orbit=orbit,
                     frame=frame, direction=direction)
    return SceneRecord(source="asf", scene_id=fake.name, platform="Sentinel-1A", start_time=fake.start,
                       beam_mode="IW", flight_direction=direction, relative_orbit=orbit, frame=frame,
                       product_type="SLC")


def _setup(tmp_path: Path, fake, ingest: dict | None = None, dates=DATES, neighbours: int = 1):
    merged = {"network": {"neighbours": neighbours, "max_temporal_baseline_days": 48}}
    for key, values in (ingest or {}).items():
        merged.setdefault(key, {}).update(values)
    cfg = make_study(tmp_path, hyp3_url=fake.url, ingest=merged)
    ledger = Ledger(tmp_path / "work" / "ingest" / "ledger.sqlite")
    ledger.add_scenes([_scene(d) for d in dates])
    products = tmp_path / "products"
    for a, b in zip(dates, dates[1:], strict=False):
        write_product(products, a, b)
    fake.use_products(products)
    return cfg, ledger


def _states(ledger: Ledger) -> list[str]:
    return [p.state for p in ledger.pairs()]


# -------------------------------------------------------------------------------- planning
def test_plan_groups_stacks_and_skips_held_pairs(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, dates=DATES[:3], neighbours=2)
    ledger.add_scenes([_scene(DATES[1], hour=23).model_copy(update={"scene_id": "S1B_IW_SLC__1SDV_"
                       f"{DATES[1]:%Y%m%d}T235959_{DATES[1]:%Y%m%d}T240026_000001_000001_AAAA",
                       "start_time": dt.datetime.combine(DATES[1], dt.time(23, 59, 59), tzinfo=dt.UTC)}),
                       *[_scene(d, orbit=128, frame=400, direction="ASCENDING", hour=11) for d in DATES[:2]]])
    first = plan_orders(cfg, ledger)
    assert first["n_stacks"] == 2 and first["n_new_pairs"] == 3 + 1
    pairs = ledger.pairs()
    assert all(p.state == "planned" for p in pairs)
    names = {s.scene_id for s in ledger.scenes()}
    assert not any("T235959" in p.reference or "T235959" in p.secondary for p in pairs)  # earliest kept
    assert all(p.reference in names and p.secondary in names for p in pairs)
    assert plan_orders(cfg, ledger)["n_new_pairs"] == 0
    ledger.add_scenes([_scene(DATES[3])])  # a new acquisition: only pairs that reach it are new
    third = plan_orders(cfg, ledger)
    assert third["n_new_pairs"] == 2


# -------------------------------------------------------------------------------- ordering
def test_job_payloads_and_batches(tmp_path, fake_hyp3, caplog):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"submit_batch_size": 2}})
    plan_orders(cfg, ledger)
    with caplog.at_level(logging.DEBUG):
        out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 4 and out["n_batches"] == 2 and out["n_deferred"] == 0
    posts = [r for r in fake_hyp3.requests if r.method == "POST"]
    assert [len(r.json["jobs"]) for r in posts] == [2, 2]
    body = fake_hyp3.posted_jobs()[0]
    pair = ledger.pairs()[0]
    assert body["job_type"] == "INSAR_GAMMA"
    assert body["job_parameters"]["granules"] == [pair.reference, pair.secondary]
    assert body["job_parameters"]["looks"] == "20x4"
    assert body["job_parameters"]["include_look_vectors"] is True
    assert body["job_parameters"]["include_dem"] is True
    assert body["name"] == pair.job_name == job_name(cfg.name, pair, 1) and len(body["name"]) <= 100
    assert set(_states(ledger)) == {"submitted"}
    jobs = ledger.jobs()
    assert len(jobs) == 4 and all(j.credit_cost == 10 for j in jobs)
    assert ledger.credits_spent(dt.datetime.now(dt.UTC).date()) == 40
    assert fake_hyp3.state.credits == 10000 - 40
    assert order_pairs(cfg, ledger)["n_ordered"] == 0  # nothing planned is left
    assert fake_hyp3.token not in caplog.text


def test_multi_burst_payload():
    from talik.config import Hyp3Options
    from talik.tasks.ingest.ledger import PairEntry

    ref = "S1_136231_IW2_20200604T022312_VV_7C85-BURST S1_136232_IW2_20200604T022315_VV_7C85-BURST"
    sec = "S1_136231_IW2_20200616T022313_VV_5D11-BURST S1_136232_IW2_20200616T022316_VV_5D11-BURST"
    pair = PairEntry(ref, sec,
                     "INSAR_ISCE_MULTI_BURST", "planned", None, 0, None, None)
    opts = Hyp3Options(job_type="INSAR_ISCE_MULTI_BURST", looks="10x2")
    body = job_payload(opts, pair, "n")
    assert body == {"job_type": "INSAR_ISCE_MULTI_BURST", "name": "n", "job_parameters": {
        "reference": pair.reference.split(), "secondary": pair.secondary.split(),
        "apply_water_mask": False, "looks": "10x2"}}


def test_budget_fits_only_some_pairs(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"monthly_budget_credits": 25}})
    plan_orders(cfg, ledger)
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 2 and out["n_deferred"] == 2
    assert "monthly budget 25" in out["deferred_reason"]
    ordered = [p for p in ledger.pairs() if p.state == "submitted"]
    assert [p.reference for p in ordered] == [p.reference for p in ledger.pairs()[:2]]  # oldest first
    assert len(fake_hyp3.posted_jobs()) == 2


def test_hyp3_credits_limit_the_order(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    fake_hyp3.state.credits = 15
    plan_orders(cfg, ledger)
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 1 and out["n_deferred"] == 3
    assert "HyP3 reports 15" in out["deferred_reason"]


def test_zero_budget_orders_nothing_and_says_why(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"monthly_budget_credits": 0}})
    plan_orders(cfg, ledger)
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 0 and out["n_deferred"] == 4
    assert "0 credits available" in out["deferred_reason"] and "monthly budget 0" in out["deferred_reason"]
    assert fake_hyp3.posted_jobs() == [] and set(_states(ledger)) == {"planned"}


def test_budget_below_one_job_is_a_configuration_error(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"monthly_budget_credits": 5}})
    plan_orders(cfg, ledger)
    with pytest.raises(BudgetExceededError, match="monthly_budget_credits"):
        order_pairs(cfg, ledger)


def test_submit_503_recovers(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    fake_hyp3.fail_next(503, path="/jobs", method="POST")
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 4 and len(fake_hyp3.jobs) == 4  # sent once, not twice
    assert set(_states(ledger)) == {"submitted"}


def test_lost_submit_response_is_not_submitted_twice(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    fake_hyp3.state.lose_post_responses = 1  # the jobs are created, the answer is a 502
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 4 and len(fake_hyp3.jobs) == 4
    assert len([r for r in fake_hyp3.requests if r.method == "POST"]) == 1  # found by name instead
    assert set(_states(ledger)) == {"submitted"} and len(ledger.jobs()) == 4


def test_429_retry_after_honoured(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    fake_hyp3.fail_next(429, headers={"Retry-After": "0.3"}, path="/jobs", method="POST")
    t0 = time.monotonic()
    out = order_pairs(cfg, ledger)
    assert out["n_ordered"] == 4 and time.monotonic() - t0 >= 0.3


def test_401_fails_fast_naming_the_token(tmp_path, fake_hyp3, monkeypatch, caplog):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    monkeypatch.setenv("EARTHDATA_TOKEN", "edl-wrong-token-0123456789")
    with pytest.raises(MissingCredentialError, match="EARTHDATA_TOKEN"):
        order_pairs(cfg, ledger)
    assert len(fake_hyp3.requests) == 1  # GET /user once, no retries
    assert "edl-wrong-token-0123456789" not in caplog.text


def test_missing_token_names_the_variable(tmp_path, fake_hyp3, monkeypatch):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    monkeypatch.delenv("EARTHDATA_TOKEN")
    with pytest.raises(MissingCredentialError, match="EARTHDATA_TOKEN"):
        order_pairs(cfg, ledger)


def test_killed_after_submit_is_not_submitted_twice(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    first = ledger.pairs()[0]
    name = job_name(cfg.name, first, 1)
    # The killed run: pair marked 'submitting', job sent and created at HyP3, response never recorded.
    ledger.set_pair(first.reference, first.secondary, first.job_type, "submitting", job_name=name, attempts=1)
    for k in range(3):  # other jobs of the user (paging through GET /jobs?name= must find ours)
        fake_hyp3.create_job("INSAR_GAMMA", {"granules": ["a", "b"]}, f"other-{k}")
    fake_hyp3.create_job("INSAR_GAMMA", job_payload(cfg.ingest.hyp3, first, name)["job_parameters"], name)
    out = order_pairs(cfg, ledger)
    assert out["n_recovered"] == 1 and out["n_ordered"] == 3
    assert name not in [j.get("name") for j in fake_hyp3.posted_jobs()]
    assert sum(1 for j in fake_hyp3.jobs.values() if j.record.get("name") == name) == 1
    assert set(_states(ledger)) == {"submitted"}
    assert any(j.name == name for j in ledger.jobs())


def test_submitting_pair_never_delivered_is_sent_under_its_name(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, dates=DATES[:2])
    plan_orders(cfg, ledger)
    pair = ledger.pairs()[0]
    name = job_name(cfg.name, pair, 1)
    ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "submitting", job_name=name, attempts=1)
    out = order_pairs(cfg, ledger)
    assert out["n_recovered"] == 0 and out["n_ordered"] == 1
    assert [j["name"] for j in fake_hyp3.posted_jobs()] == [name]
    assert ledger.pairs()[0].attempts == 1


# --------------------------------------------------------------------------------- polling
def test_poll_progress_and_failed_job_resubmitted_once(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"max_resubmits": 1}}, dates=DATES[:3])
    fake_hyp3.state.fail_once = {(DATES[0], DATES[1])}
    plan_orders(cfg, ledger)
    order_pairs(cfg, ledger)
    first = poll_jobs(cfg, ledger)  # PENDING -> RUNNING
    assert first["n_running"] == 2 and first["n_succeeded"] == 0
    assert {j.state for j in ledger.jobs()} == {"RUNNING"}
    second = poll_jobs(cfg, ledger)  # one SUCCEEDED, one FAILED and resubmitted
    assert second["n_succeeded"] == 1 and second["n_failed"] == 1 and second["n_resubmitted"] == 1
    assert second["n_running"] == 1
    failed = next(p for p in ledger.pairs() if p.reference.find(f"{DATES[0]:%Y%m%d}") > 0)
    assert failed.state == "submitted" and failed.attempts == 2
    assert failed.job_name == job_name(cfg.name, failed, 2)
    ok = next(p for p in ledger.pairs() if p is not failed and p.state == "succeeded")
    job = next(j for j in ledger.jobs() if j.name == ok.job_name)
    assert job.expires_at is not None and job.files[0]["filename"].endswith(".zip")
    assert poll_jobs(cfg, ledger)["n_running"] == 1
    final = poll_jobs(cfg, ledger)
    assert final["n_running"] == 0 and set(_states(ledger)) == {"succeeded"}
    gets = [r for r in fake_hyp3.requests if r.method == "GET" and r.path == "/jobs"]
    assert gets == []  # polling asks for each job by id, never the whole history


def test_failed_job_abandoned_without_resubmits(tmp_path, fake_hyp3):
    cfg, ledger = _setup(tmp_path, fake_hyp3, {"hyp3": {"max_resubmits": 0}}, dates=DATES[:2])
    fake_hyp3.state.fail_once = {(DATES[0], DATES[1])}
    plan_orders(cfg, ledger)
    order_pairs(cfg, ledger)
    fake_hyp3.finish_all()
    out = poll_jobs(cfg, ledger)
    assert out["n_failed"] == 1 and out["n_abandoned"] == 1 and out["n_running"] == 0
    assert _states(ledger) == ["abandoned"] and len(fake_hyp3.jobs) == 1


# -------------------------------------------------------------------------------- download
def _ordered_and_done(tmp_path, fake, ingest=None, dates=DATES[:3]):
    cfg, ledger = _setup(tmp_path, fake, ingest, dates=dates)
    plan_orders(cfg, ledger)
    order_pairs(cfg, ledger)
    fake.finish_all()
    poll_jobs(cfg, ledger)
    return cfg, ledger, RawStore(tmp_path, ledger, cfg.ingest.retries)


def test_download_checks_and_records(tmp_path, fake_hyp3, caplog):
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3)
    with caplog.at_level(logging.DEBUG):
        out = download_products(cfg, ledger, store)
    assert out["n_downloaded"] == 2 and out["n_near_expiry"] == 0
    hyp3_dir = Path(cfg.source.hyp3_dir)
    products = find_hyp3_products(hyp3_dir)
    assert [p.name for p in products] == sorted(out["products"])
    assert set(_states(ledger)) == {"downloaded"}
    assert {p.product for p in ledger.pairs()} == set(out["products"])
    entries = ledger.files("hyp3")
    assert len(entries) == 2 and all(len(e.sha256) == 64 for e in entries)
    for r in fake_hyp3.download_requests():
        assert "Authorization" not in r.headers  # the token never goes to the download host
    again = download_products(cfg, ledger, store)  # nothing left to download
    assert again["n_downloaded"] == 0 and again["products"] == []
    token = fake_hyp3.token
    assert token not in caplog.text
    for f in (tmp_path / "work" / "ingest").iterdir():
        assert token.encode() not in f.read_bytes()


def test_download_resumes_with_range(tmp_path, fake_hyp3):
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3, dates=DATES[:2])
    job = next(j for j in ledger.jobs() if j.state == "SUCCEEDED")
    file = job.files[0]
    full = (fake_hyp3.cache_dir / job.job_id / file["filename"]).read_bytes()
    dest = Path(cfg.source.hyp3_dir) / file["filename"]
    partial = dest.with_name(f".{dest.name}.partial")
    partial.write_bytes(full[: len(full) // 2])  # a killed earlier download
    out = download_products(cfg, ledger, store)
    assert out["n_downloaded"] == 1 and dest.read_bytes() == full and not partial.exists()
    ranges = [r.headers.get("Range") for r in fake_hyp3.download_requests()]
    assert ranges == [f"bytes={len(full) // 2}-"]


def test_soon_expiring_product_warned(tmp_path, fake_hyp3, caplog):
    fake_hyp3.state.expiry_days = 1.0
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3, dates=DATES[:2])
    with caplog.at_level(logging.WARNING, logger="talik.ingest"):
        out = download_products(cfg, ledger, store)
    assert out["n_near_expiry"] == 1 and out["n_downloaded"] == 1 and "expires at" in caplog.text


def test_expired_product_skipped(tmp_path, fake_hyp3, caplog):
    fake_hyp3.state.expiry_days = -1.0
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3, dates=DATES[:2])
    with caplog.at_level(logging.WARNING, logger="talik.ingest"):
        out = download_products(cfg, ledger, store)
    assert out["n_expired"] == 1 and out["n_downloaded"] == 0
    assert "expired" in caplog.text and fake_hyp3.download_requests() == []
    pair = ledger.pairs()[0]
    assert pair.state == "planned" and "expired" in pair.note  # ordered again by the next run
    assert not any(Path(cfg.source.hyp3_dir).iterdir())


def test_bad_zip_refetched_once(tmp_path, fake_hyp3):
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3, dates=DATES[:2])
    fake_hyp3.state.corrupt_downloads = 1
    out = download_products(cfg, ledger, store)
    assert out["n_downloaded"] == 1 and len(fake_hyp3.download_requests()) == 2
    assert find_hyp3_products(cfg.source.hyp3_dir)


def test_bad_zip_twice_fails_naming_the_file(tmp_path, fake_hyp3):
    cfg, ledger, store = _ordered_and_done(tmp_path, fake_hyp3, dates=DATES[:2])
    fake_hyp3.state.corrupt_downloads = 2
    job = next(j for j in ledger.jobs() if j.state == "SUCCEEDED")
    with pytest.raises(PermanentServiceError, match=job.files[0]["filename"]):
        download_products(cfg, ledger, store)
    assert not any(Path(cfg.source.hyp3_dir).iterdir())  # no unreadable zip left for the reader
    assert ledger.pairs()[0].state == "succeeded"


# ----------------------------------------------------------------------- concurrent runs
def test_second_run_while_one_orders_orders_nothing(tmp_path, fake_hyp3):
    """Two runs (two processes) on one ledger: the one without the lease sends nothing."""
    from talik.tasks.ingest.hyp3 import LEASE, LEASE_TTL

    cfg, ledger = _setup(tmp_path, fake_hyp3)
    plan_orders(cfg, ledger)
    other = Ledger(ledger.path)  # the other run, mid-way through its own order
    with other.lease(LEASE, LEASE_TTL):
        out = order_pairs(cfg, ledger)
        assert out["n_ordered"] == 0 and "held by another run" in out["busy"]
        assert fake_hyp3.posted_jobs() == [] and set(_states(ledger)) == {"planned"}
        assert poll_jobs(cfg, ledger)["n_checked"] == 0
    assert order_pairs(cfg, ledger)["n_ordered"] == 4  # released: the next run orders
    assert len(fake_hyp3.jobs) == 4


def test_lease_of_a_dead_or_expired_run_is_taken_over(tmp_path):
    import os
    import sqlite3
    import subprocess
    import sys

    from talik.tasks.ingest.ledger import LeaseHeldError

    ledger = Ledger(tmp_path / "ledger.sqlite")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    with sqlite3.connect(ledger.path) as db:  # a killed run on this host left its lease
        db.execute("INSERT INTO leases VALUES ('x', 'o1', ?, ?, '2999-01-01T00:00:00+00:00')",
                   (__import__("socket").gethostname(), dead_pid))
        db.execute("INSERT INTO leases VALUES ('y', 'o2', 'another-host', 1, "
                   "'2000-01-01T00:00:00+00:00')")  # expired, elsewhere
        db.execute("INSERT INTO leases VALUES ('z', 'o3', 'another-host', 1, "
                   "'2999-01-01T00:00:00+00:00')")  # live, elsewhere
    for name in ("x", "y"):
        with ledger.lease(name, dt.timedelta(minutes=1)) as renew:
            renew()
    with pytest.raises(LeaseHeldError, match="another-host"):
        with ledger.lease("z", dt.timedelta(minutes=1)):
            pass
    assert os.getpid() != dead_pid
