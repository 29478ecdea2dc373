"""A scheduled monitoring run end to end against loopback ASF and HyP3 servers.

Run 1 discovers the scenes, plans and orders the pairs within the budget, polls until the
jobs are done (one fails once and is resubmitted), downloads the products, stages them and
publishes a release. Run 2 orders and downloads nothing and publishes nothing new. Run 3, after
ASF lists new scenes, orders only the pairs those scenes make. A planted token is looked for in
the logs, the ledger, the work folder, the release and the Prefect artifacts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest

from talik.config import load_study
from talik.tasks.ingest.run import ledger_of
from talik.tasks.readers.hyp3 import find_hyp3_products
from tests.conftest import STORES_AND_SENSORS
from tests.fakes.asf_hyp3 import fake_asf, fake_hyp3  # noqa: F401

pytestmark = pytest.mark.slow

STUDY = """
name = "scheduled"
title = "scheduled ingest test"

[aoi]
name = "tiny"

[source]
kind = "local"
hyp3_dir = "{hyp3}"

{stores_and_sensors}
[sentinel1]
chunk_px = 16
velocity_reference = "none"

[ingest.retries]
attempts = 4
backoff_s = 0.01
max_backoff_s = 0.5

[ingest.asf]
enabled = true
host = "{asf}"
start = 2019-01-01

[ingest.network]
neighbours = 3
max_temporal_baseline_days = 36

[ingest.hyp3]
enabled = true
api_url = "{hyp3_url}"
poll_interval_s = 0.05
poll_timeout_h = 0.02
monthly_budget_credits = 5000
"""


def _posted_pairs(fake) -> set[tuple[dt.date, dt.date]]:
    out = set()
    for job in fake.posted_jobs():
        granules = job["job_parameters"]["granules"]
        days = [dt.datetime.strptime(g.split("_")[5][:8], "%Y%m%d").date() for g in granules]
        out.add((days[0], days[1]))
    return out


def _artifact_texts() -> list[str]:
    """Every artifact of the test server (the ingest subflows' included)."""
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            arts = await client.read_artifacts()
            return [f"{a.key} {a.data} {a.description}" for a in arts]

    return asyncio.run(read())


def test_scheduled_runs_order_only_what_is_new(prefect_server, tiny_world, fake_asf,  # noqa: F811
                                               fake_hyp3, tmp_path, caplog):  # noqa: F811
    from talik.flows.monitor import monitor

    products = find_hyp3_products(tiny_world / "hyp3")
    world_pairs = {(p.reference_date, p.secondary_date) for p in products}
    dates = sorted({d for pair in world_pairs for d in pair})
    last_season = [d for d in dates if d.year == dates[-1].year]
    first_dates = [d for d in dates if d.year < dates[-1].year]  # the last year comes later
    fake_asf.set_dates(first_dates)
    fake_hyp3.use_products(tiny_world / "hyp3")
    failing = sorted(p for p in world_pairs if p[1] in first_dates)[5]
    fake_hyp3.state.fail_once = {failing}

    study = tmp_path / "scheduled.toml"
    stores = STORES_AND_SENSORS.format(work=tmp_path / "work", releases=tmp_path / "releases")
    study.write_text(STUDY.format(hyp3=tmp_path / "raw" / "hyp3", stores_and_sensors=stores,
                                  asf=fake_asf.host, hyp3_url=fake_hyp3.url))
    cfg = load_study(study)

    # Run 1: everything is new.
    with caplog.at_level(logging.INFO):
        state1 = monitor(study=str(study), return_state=True)
    assert state1.is_completed(), state1
    outcome1 = state1.result()
    assert outcome1.created
    ordered1 = _posted_pairs(fake_hyp3)
    expected1 = {p for p in world_pairs if p[1] in first_dates}
    assert ordered1 == expected1  # the planner asked for exactly the world's network
    assert len(fake_hyp3.posted_jobs()) == len(expected1) + 1  # the failed job, once more
    ledger = ledger_of(cfg)
    assert {p.state for p in ledger.pairs()} == {"downloaded"}
    downloaded = sorted((tmp_path / "raw" / "hyp3").glob("*.zip"))
    assert len(downloaded) == len(expected1)
    assert len(ledger.files()) == len(expected1)  # each in the raw-store manifest
    staged = find_hyp3_products(tmp_path / "raw" / "hyp3")
    assert {(p.reference_date, p.secondary_date) for p in staged} == expected1

    # Run 2: nothing new anywhere — no order, no download, no release.
    n_posts, n_downloads = len(fake_hyp3.posted_jobs()), len(fake_hyp3.download_requests())
    with caplog.at_level(logging.INFO):
        state2 = monitor(study=str(study), return_state=True)
    outcome2 = state2.result()
    assert not outcome2.created and outcome2.release.id == outcome1.release.id
    assert len(fake_hyp3.posted_jobs()) == n_posts
    assert len(fake_hyp3.download_requests()) == n_downloads

    # Run 3: ASF lists the last season's scenes; only their pairs are ordered.
    fake_asf.set_dates(first_dates + last_season)
    with caplog.at_level(logging.INFO):
        state3 = monitor(study=str(study), return_state=True)
    outcome3 = state3.result()
    assert outcome3.created and outcome3.release.id != outcome1.release.id
    new_posts = fake_hyp3.posted_jobs()[n_posts:]
    assert new_posts
    ordered3 = _posted_pairs(fake_hyp3) - ordered1
    assert ordered3 == {p for p in world_pairs if p[1] in last_season}
    assert len(new_posts) == len(ordered3)

    # The token is nowhere: logs, ledger, work folder, releases, Prefect artifacts.
    token = fake_hyp3.token  # what EARTHDATA_TOKEN holds in this test
    assert token not in caplog.text
    for folder in (tmp_path / "work", tmp_path / "releases"):
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert token.encode() not in path.read_bytes(), path
    texts = [t for t in _artifact_texts() if t.startswith("ingest-scheduled")]
    assert len(texts) >= 3 and "downloaded" in texts[-1]
    assert not any(token in t for t in texts)
