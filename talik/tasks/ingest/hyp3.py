"""On-demand interferograms from ASF HyP3 (hyp3_sdk): plan, order within budget, poll, download.

Four steps, each safe to rerun and each returning a JSON-able summary:

:func:`plan_orders`       ledger scenes → stacks → pairs (``talik.science.network.plan_pairs``)
:func:`order_pairs`       planned pairs → HyP3 jobs, within the credits HyP3 reports *and* the
                          study's monthly budget; crash-safe (see below)
:func:`poll_jobs`         job states refreshed one by one (``GET /jobs/{id}``); failed jobs
                          resubmitted a bounded number of times; one run at a time
                          (a ledger lease), so two runs never order a pair twice
:func:`download_products` product zips into ``[source] hyp3_dir``, soonest-expiring first,
                          checked by the HyP3 product reader

Crash safety: before a batch is sent, each of its pairs is marked ``submitting`` with a
deterministic job name in one ledger transaction. A run killed after sending finds those jobs
by name at HyP3 (``GET /jobs?name=...``) and records them instead of ordering them again; a
batch that never arrived is sent again under the same names.

Credits (hyp3-docs "credits"; hyp3 ``job_spec/*.yml`` cost tables of the production, EDC,
deployment): INSAR_GAMMA costs 10 credits at 20x4 looks and 15 at 10x2;
INSAR_ISCE_MULTI_BURST costs by looks and number of bursts per date (20x4: 1 credit up to 4
bursts, else 5; 10x2: 1 up to 3, 5 up to 9, else 10). HyP3's own ``credit_cost`` of each job,
when it returns one, is what the ledger records.

The Earthdata token is sent to the HyP3 API only (never to the product download host) and is
never logged or stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from talik.config import Hyp3Options, LocalSource, StudyConfig
from talik.errors import InputError
from talik.science.network import plan_pairs
from talik.tasks.ingest.asf import error_hook
from talik.tasks.ingest.common import (
    BudgetExceededError,
    IngestError,
    MissingCredentialError,
    PermanentServiceError,
    SceneRecord,
    install_redaction,
    require_credential,
    retrying,
)
from talik.tasks.ingest.ledger import JobEntry, LeaseHeldError, Ledger, PairEntry, utc_now
from talik.tasks.ingest.rawstore import RawStore

__all__ = [
    "JOB_NAME_MAX",
    "MAX_JOBS_PER_REQUEST",
    "connect",
    "download_products",
    "job_cost",
    "job_name",
    "job_payload",
    "order_pairs",
    "pair_dates",
    "plan_orders",
    "poll_jobs",
]

logger = logging.getLogger("talik.ingest")
T = TypeVar("T")

SERVICE = "HyP3"
JOB_NAME_MAX = 100
"""Longest job name the HyP3 API accepts, characters (OpenAPI ``name``: 1–100)."""
MAX_JOBS_PER_REQUEST = 200
"""Most jobs one ``POST /jobs`` may carry (OpenAPI ``list_of_new_jobs``)."""
MAX_BURSTS = 15
"""Most bursts per date an INSAR_ISCE_MULTI_BURST job takes."""
_DATE = re.compile(r"_(\d{8})T\d{6}")
LEASE = "hyp3-orders"
"""Ledger lease held while a run reads the pairs, checks the budget, sends orders or polls."""
LEASE_TTL = dt.timedelta(hours=1)
"""How long the lease outlives its last renewal (renewed before every batch and every job)."""


def _no_renew() -> None:
    return None


# ------------------------------------------------------------------------------- helpers
def _hyp3_dir(cfg: StudyConfig) -> Path:
    if not isinstance(cfg.source, LocalSource):
        raise PermanentServiceError("HyP3 products are downloaded into [source] hyp3_dir: set "
                                    "[source] kind = \"local\"")
    return Path(cfg.source.hyp3_dir)


def _call(cfg: StudyConfig, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` retried on transient errors as ``[ingest.retries]`` says."""
    return retrying(cfg.ingest.retries, f"{SERVICE} {what}")(fn)(*args, **kwargs)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def pair_dates(pair: PairEntry) -> tuple[dt.date, dt.date]:
    """Acquisition dates (UTC) of a pair's reference and secondary, from the granule names."""
    out = []
    for names in (pair.reference, pair.secondary):
        match = _DATE.search(names)
        if match is None:
            raise PermanentServiceError(f"{SERVICE}: no acquisition date in granule name {names!r}")
        out.append(dt.datetime.strptime(match[1], "%Y%m%d").date())
    return out[0], out[1]


def _label(pair: PairEntry) -> str:
    ref, sec = pair_dates(pair)
    return f"{ref:%Y%m%d}_{sec:%Y%m%d}"


def job_name(study: str, pair: PairEntry, attempt: int) -> str:
    """Deterministic HyP3 job name of ``pair``'s submission number ``attempt`` (1 = first).

    ``talik-<study>-<12 hex of the pair>-<attempt>``, at most :data:`JOB_NAME_MAX` characters.
    """
    digest = hashlib.sha256(f"{pair.job_type}|{pair.reference}|{pair.secondary}".encode()).hexdigest()
    name = f"talik-{study[:60]}-{digest[:12]}-{attempt}"
    return name[:JOB_NAME_MAX]


def job_cost(options: Hyp3Options, n_bursts: int = 1) -> float:
    """Credits one job of ``options.job_type`` costs (``n_bursts``: bursts per date, multi-burst)."""
    if options.job_type == "INSAR_GAMMA":
        return 10.0 if options.looks == "20x4" else 15.0
    if options.looks == "20x4":
        return 1.0 if n_bursts <= 4 else 5.0
    return 1.0 if n_bursts <= 3 else (5.0 if n_bursts <= 9 else 10.0)


def _pair_cost(options: Hyp3Options, pair: PairEntry) -> float:
    return job_cost(options, len(pair.reference.split()))


def job_payload(options: Hyp3Options, pair: PairEntry, name: str) -> dict[str, Any]:
    """The prepared job (``POST /jobs`` item) of ``pair``, built by hyp3_sdk."""
    from hyp3_sdk import HyP3

    if options.job_type == "INSAR_GAMMA":
        return HyP3.prepare_insar_job(pair.reference, pair.secondary, name=name, looks=options.looks,
                                      include_look_vectors=True, include_dem=True)
    return HyP3.prepare_insar_isce_multi_burst_job(pair.reference.split(), pair.secondary.split(),
                                                   name=name, looks=options.looks)


def connect(cfg: StudyConfig) -> Any:
    """A ``hyp3_sdk.HyP3`` client for ``[ingest.hyp3] api_url``, authenticated by EARTHDATA_TOKEN.

    Its session classifies HTTP errors our way (transient / refused credential / permanent).
    """
    from hyp3_sdk import HyP3

    install_redaction()
    token = require_credential("earthdata_token", SERVICE)
    hyp3 = HyP3(api_url=cfg.ingest.hyp3.api_url, token=token)
    hyp3.session.hooks["response"].append(error_hook(SERVICE, "earthdata_token", "ingest.hyp3"))
    return hyp3


def _job_entry(job: Any, pair: PairEntry, estimate: float | None) -> JobEntry:
    cost = job.credit_cost if job.credit_cost is not None else estimate
    return JobEntry(job_id=job.job_id, reference=pair.reference, secondary=pair.secondary,
                    job_type=job.job_type, name=job.name, state=job.status_code,
                    credit_cost=float(cost) if cost is not None else None,
                    submitted_at=_aware(job.request_time), expires_at=_aware(job.expiration_time),
                    files=list(job.files or []))


def _find_by_name(hyp3: Any, name: str) -> Any | None:
    """The newest job named exactly ``name`` (``GET /jobs?name=``, paged by hyp3_sdk), or None."""
    jobs = [j for j in hyp3.find_jobs(name=name).jobs if j.name == name]
    return max(jobs, key=lambda j: j.request_time) if jobs else None


def _record(ledger: Ledger, options: Hyp3Options, pairs: dict[str, PairEntry],
            jobs: dict[str, Any]) -> None:
    """Record the jobs sent for ``pairs`` (by job name) and mark those pairs ``submitted``."""
    with ledger.transaction() as tx:
        for name, job in jobs.items():
            pair = pairs[name]
            ledger.upsert_job(_job_entry(job, pair, _pair_cost(options, pair)), db=tx)
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "submitted",
                            job_name=name, db=tx)


# ---------------------------------------------------------------------------- planning
def _stack_key(scene: SceneRecord, job_type: str) -> tuple:
    frame = None if job_type == "INSAR_ISCE_MULTI_BURST" else scene.frame
    return (scene.relative_orbit, frame, scene.flight_direction)


def _burst_id(scene_id: str) -> str:
    """``136231_IW2`` of a burst name ``S1_136231_IW2_20200604T022312_VV_7C85-BURST``."""
    parts = scene_id.split("_")
    return "_".join(parts[1:3]) if len(parts) > 3 else scene_id


def _per_date(scenes: list[SceneRecord], job_type: str) -> dict[dt.date, list[SceneRecord]]:
    """Scenes of one stack by date: the earliest scene (full SLCs) or every burst (multi-burst)."""
    out: dict[dt.date, list[SceneRecord]] = {}
    for scene in sorted(scenes, key=lambda s: (s.start_time, s.scene_id)):
        if job_type == "INSAR_GAMMA":
            out.setdefault(scene.date, [scene])
        else:
            bursts = out.setdefault(scene.date, [])
            if _burst_id(scene.scene_id) not in {_burst_id(b.scene_id) for b in bursts}:
                bursts.append(scene)
    return out


def _granules(ref: list[SceneRecord], sec: list[SceneRecord], job_type: str) -> tuple[str, str] | None:
    """Reference and secondary granule text of a pair (multi-burst: the common bursts, spaced)."""
    if job_type == "INSAR_GAMMA":
        return ref[0].scene_id, sec[0].scene_id
    sec_ids = {_burst_id(s.scene_id): s.scene_id for s in sec}
    common = sorted((_burst_id(r.scene_id), r.scene_id) for r in ref if _burst_id(r.scene_id) in sec_ids)
    common = common[:MAX_BURSTS]
    if not common:
        return None
    return " ".join(r for _, r in common), " ".join(sec_ids[b] for b, _ in common)


def plan_orders(cfg: StudyConfig, ledger: Ledger) -> dict[str, Any]:
    """Plan the interferograms of every stack of the ledger's ASF scenes (state ``planned``).

    A stack is one relative orbit, frame and flight direction (multi-burst: orbit and
    direction); one acquisition per date (the earliest). Pairs follow ``[ingest.network]``;
    pairs of dates the ledger already holds are left out. Returns a JSON-able summary.
    """
    options, net = cfg.ingest.hyp3, cfg.ingest.network
    job_type = options.job_type
    scenes = ledger.scenes("asf")
    stack_of = {s.scene_id: _stack_key(s, job_type) for s in scenes}
    held_pairs = ledger.pairs(job_type)
    stacks: dict[tuple, list[SceneRecord]] = {}
    for scene in scenes:
        stacks.setdefault(stack_of[scene.scene_id], []).append(scene)
    report, total = [], 0
    for key in sorted(stacks, key=str):
        per_date = _per_date(stacks[key], job_type)
        dates = sorted(per_date)
        held = {tuple(np.datetime64(d, "D") for d in pair_dates(p)) for p in held_pairs
                if stack_of.get(p.reference.split()[0]) == key}
        chosen = plan_pairs(np.array(dates, dtype="datetime64[D]"), net.neighbours,
                            net.max_temporal_baseline_days, net.months, held)
        new = [g for i, j in chosen
               if (g := _granules(per_date[dates[i]], per_date[dates[j]], job_type)) is not None]
        n_new = ledger.add_pairs(new, job_type)
        total += n_new
        report.append({"relative_orbit": key[0], "frame": key[1], "flight_direction": key[2],
                       "n_dates": len(dates), "n_new_pairs": n_new})
    logger.info("HyP3 plan: %d new %s pairs over %d stacks", total, job_type, len(stacks))
    return {"job_type": job_type, "n_scenes": len(scenes), "n_stacks": len(stacks),
            "n_new_pairs": total, "stacks": report}


# ---------------------------------------------------------------------------- ordering
def _recover_submitting(cfg: StudyConfig, ledger: Ledger, hyp3: Any) -> tuple[int, list[PairEntry]]:
    """Pairs a killed run left ``submitting``: record the jobs HyP3 has; return the others."""
    options = cfg.ingest.hyp3
    recovered, unsent = 0, []
    for pair in ledger.pairs(options.job_type, ["submitting"]):
        job = _call(cfg, "job lookup", _find_by_name, hyp3, pair.job_name) if pair.job_name else None
        if job is None:
            unsent.append(pair)
            continue
        _record(ledger, options, {pair.job_name: pair}, {pair.job_name: job})
        recovered += 1
        logger.info("HyP3: job %s of pair %s was sent by an earlier run; recorded", pair.job_name,
                    _label(pair))
    return recovered, unsent


def _credits(cfg: StudyConfig, ledger: Ledger, hyp3: Any) -> dict[str, Any]:
    """Credits this run may spend: the smaller of HyP3's remaining credits and the month's budget."""
    options = cfg.ingest.hyp3
    remaining = _call(cfg, "credit check", hyp3.check_credits)
    spent = ledger.credits_spent(utc_now().date())
    month_left = max(0.0, options.monthly_budget_credits - spent)
    available = month_left if remaining is None else min(float(remaining), month_left)
    return {"hyp3_remaining_credits": remaining, "monthly_budget_credits": options.monthly_budget_credits,
            "spent_this_month": spent, "month_left": month_left, "available": available}


def _send(cfg: StudyConfig, hyp3: Any, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Submit ``payloads``; a retry first looks up by name what an earlier attempt delivered."""
    sent: dict[str, Any] = {}
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            for p in payloads:
                if p["name"] not in sent and (job := _find_by_name(hyp3, p["name"])) is not None:
                    sent[p["name"]] = job
        pending = [p for p in payloads if p["name"] not in sent]
        if pending:
            for job in hyp3.submit_prepared_jobs(pending).jobs:
                sent[job.name] = job

    _call(cfg, "job submission", attempt)
    return sent


class _OutOfCredits(Exception):
    """HyP3 refused a batch for lack of credits (its pairs stay ``submitting``; nothing was sent)."""


def _submit(cfg: StudyConfig, ledger: Ledger, hyp3: Any, batch: list[PairEntry]) -> tuple[int, list[str]]:
    """Send one batch crash-safely; return (jobs sent, refused pair labels)."""
    options = cfg.ingest.hyp3
    by_name: dict[str, PairEntry] = {}
    with ledger.transaction() as tx:
        for pair in batch:
            resend = pair.state == "submitting" and pair.job_name
            attempt = pair.attempts if resend else pair.attempts + 1
            name = pair.job_name if resend else job_name(cfg.name, pair, attempt)
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "submitting",
                            job_name=name, attempts=attempt, db=tx)
            by_name[name] = pair
    payloads = [job_payload(options, pair, name) for name, pair in by_name.items()]
    try:
        jobs = _send(cfg, hyp3, payloads)
    except MissingCredentialError:
        raise
    except PermanentServiceError as exc:
        if "credit" in str(exc).lower():  # HyP3 counted fewer credits than we did: stop here
            raise _OutOfCredits(str(exc)) from None
        if len(batch) > 1:  # one refused granule refuses the batch: find it by sending singly
            results = [_submit(cfg, ledger, hyp3, [p]) for p in batch]
            return sum(r[0] for r in results), [lab for r in results for lab in r[1]]
        pair = batch[0]
        ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "abandoned",
                        note=f"refused by HyP3: {exc}")
        logger.warning("HyP3 refused pair %s; abandoned: %s", _label(pair), exc)
        return 0, [_label(pair)]
    _record(ledger, options, by_name, jobs)
    return len(jobs), []


def _order(cfg: StudyConfig, ledger: Ledger, hyp3: Any, pairs: Sequence[PairEntry],
           renew: Callable[[], None] = _no_renew) -> dict[str, Any]:
    """Order ``pairs`` oldest first, as many as the credits allow, in batches.

    Called with the ledger's :data:`LEASE` held (``renew`` keeps it).
    """
    options = cfg.ingest.hyp3
    pairs = sorted(pairs, key=lambda p: (pair_dates(p), p.reference, p.secondary))
    budget = _credits(cfg, ledger, hyp3) if pairs else {}
    fits, cost = [], 0.0
    for pair in pairs:
        price = _pair_cost(options, pair)
        if 0 < options.monthly_budget_credits < price:
            raise BudgetExceededError(
                f"{SERVICE}: one {options.job_type} job costs {price:g} credits, more than the whole "
                f"monthly budget ingest.hyp3.monthly_budget_credits = {options.monthly_budget_credits}")
        if cost + price > budget["available"]:
            break
        fits.append(pair)
        cost += price
    deferred = [_label(p) for p in pairs[len(fits):]]
    reason = None
    if deferred:
        reason = (f"{len(deferred)} pairs deferred: {budget['available']:g} credits available "
                  f"(monthly budget {options.monthly_budget_credits}, {budget['spent_this_month']:g} "
                  f"spent this month; HyP3 reports {budget['hyp3_remaining_credits']} remaining), "
                  f"{cost:g} used by the pairs ordered")
        logger.warning("HyP3: %s", reason)
    size = min(options.submit_batch_size, MAX_JOBS_PER_REQUEST)
    n_sent, refused, n_batches = 0, [], 0
    for start in range(0, len(fits), size):
        renew()
        try:
            sent, bad = _submit(cfg, ledger, hyp3, fits[start:start + size])
        except _OutOfCredits as exc:
            rest = [_label(p) for p in fits[start:]]
            deferred = rest + deferred
            reason = f"HyP3 refused {len(rest)} pairs for lack of credits: {exc}"
            logger.warning("HyP3: %s", reason)
            break
        n_sent, refused, n_batches = n_sent + sent, refused + bad, n_batches + 1
    return {"n_ordered": n_sent, "n_batches": n_batches, "credits_estimated": cost,
            "n_deferred": len(deferred), "deferred": deferred, "deferred_reason": reason,
            "refused": refused, "credits": budget}


def order_pairs(cfg: StudyConfig, ledger: Ledger) -> dict[str, Any]:
    """Order the planned pairs at HyP3, oldest first, as far as the credits go.

    Both limits are checked before anything is sent: HyP3's remaining credits (``GET /user``)
    and ``[ingest.hyp3] monthly_budget_credits`` minus what the ledger spent this month. Pairs
    that do not fit are *deferred* (reported with the reason, ordered by a later run) — no
    error, since a spent budget is an expected state of a monthly service. A
    :class:`~talik.tasks.ingest.common.BudgetExceededError` is raised only when one job costs
    more than the whole (non-zero) monthly budget, so that nothing could ever be ordered.
    A budget of 0 pauses ordering. Pairs a killed run left ``submitting`` are first looked up
    at HyP3 by job name (``n_recovered``); those never delivered are sent under the same name.
    """
    hyp3 = connect(cfg)
    try:
        with ledger.lease(LEASE, LEASE_TTL) as renew:
            recovered, unsent = _recover_submitting(cfg, ledger, hyp3)
            planned = ledger.pairs(cfg.ingest.hyp3.job_type, ["planned"])
            summary = _order(cfg, ledger, hyp3, [*unsent, *planned], renew)
    except LeaseHeldError as exc:
        logger.warning("HyP3: nothing ordered by this run: %s", exc)
        return {"n_ordered": 0, "n_batches": 0, "credits_estimated": 0.0, "n_deferred": 0,
                "deferred": [], "deferred_reason": None, "refused": [], "credits": {},
                "n_recovered": 0, "busy": str(exc)}
    summary["n_recovered"] = recovered
    logger.info("HyP3: %d jobs ordered, %d recovered, %d deferred", summary["n_ordered"], recovered,
                summary["n_deferred"])
    return summary


# ----------------------------------------------------------------------------- polling
def poll_jobs(cfg: StudyConfig, ledger: Ledger) -> dict[str, Any]:
    """Refresh every submitted job (``GET /jobs/{id}``, never the user's whole history).

    SUCCEEDED → pair ``succeeded`` (expiry time and file URLs recorded); FAILED → pair
    ``failed`` and submitted again as a new job while ``attempts <= max_resubmits`` (the first
    submission is attempt 1), else ``abandoned``. ``n_running`` counts jobs still pending or
    running, resubmissions included: poll again while it is above 0.

    Runs with the ledger's :data:`LEASE` held; while another run holds it nothing is
    refreshed and ``n_running`` is the number of submitted pairs (so the caller polls again).
    """
    hyp3 = connect(cfg)
    try:
        with ledger.lease(LEASE, LEASE_TTL) as renew:
            return _poll(cfg, ledger, hyp3, renew)
    except LeaseHeldError as exc:
        logger.warning("HyP3: not polled by this run: %s", exc)
        submitted = ledger.pairs(cfg.ingest.hyp3.job_type, ["submitted"])
        return {"n_checked": 0, "n_succeeded": 0, "n_failed": 0, "n_running": len(submitted),
                "n_abandoned": 0, "n_resubmitted": 0, "busy": str(exc)}


def _poll(cfg: StudyConfig, ledger: Ledger, hyp3: Any, renew: Callable[[], None]) -> dict[str, Any]:
    options = cfg.ingest.hyp3
    jobs = {j.name: j for j in ledger.jobs()}
    counts = {"n_checked": 0, "n_succeeded": 0, "n_failed": 0, "n_running": 0, "n_abandoned": 0,
              "n_resubmitted": 0}
    again = list(ledger.pairs(options.job_type, ["failed"]))  # left by a run killed mid-way
    for pair in ledger.pairs(options.job_type, ["submitted"]):
        entry = jobs.get(pair.job_name)
        if entry is None:
            logger.warning("HyP3: pair %s has no recorded job %s; ordering it again", _label(pair),
                           pair.job_name)
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "planned")
            continue
        renew()
        job = _call(cfg, "job refresh", hyp3.get_job_by_id, entry.job_id)
        ledger.upsert_job(_job_entry(job, pair, entry.credit_cost))
        counts["n_checked"] += 1
        if job.status_code == "SUCCEEDED":
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "succeeded")
            counts["n_succeeded"] += 1
        elif job.status_code == "FAILED":
            counts["n_failed"] += 1
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "failed",
                            note=f"job {job.job_id} failed (attempt {pair.attempts})")
            again.append(_with_state(pair, "failed"))
        else:
            counts["n_running"] += 1
    retry, abandoned = [], []
    for pair in again:
        (retry if pair.attempts <= options.max_resubmits else abandoned).append(pair)
    for pair in abandoned:
        ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "abandoned",
                        note=f"failed {pair.attempts} times; max_resubmits = {options.max_resubmits}")
        logger.warning("HyP3: pair %s abandoned after %d failed jobs", _label(pair), pair.attempts)
    counts["n_abandoned"] = len(abandoned)
    if retry:
        resubmitted = _order(cfg, ledger, hyp3, retry, renew)
        counts["n_resubmitted"] = resubmitted["n_ordered"]
        counts["n_running"] += resubmitted["n_ordered"]
        counts["resubmission"] = resubmitted
    logger.info("HyP3 poll: %s", {k: v for k, v in counts.items() if k.startswith("n_")})
    return counts


def _with_state(pair: PairEntry, state: str) -> PairEntry:
    return PairEntry(pair.reference, pair.secondary, pair.job_type, state, pair.job_name,
                     pair.attempts, pair.product, pair.note)


# ---------------------------------------------------------------------------- download
def _zip_file(job: JobEntry) -> dict[str, Any] | None:
    return next((f for f in job.files if str(f.get("filename", "")).endswith(".zip")), None)


def _unreadable(path: Path, job_type: str) -> str | None:
    """Why ``path`` is not a readable HyP3 product zip, or None when it is."""
    if job_type != "INSAR_GAMMA":  # the talik reader knows INSAR_GAMMA names only
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except zipfile.BadZipFile as exc:
            return str(exc)
        return f"corrupt member {bad}" if bad else None
    from talik.tasks.readers.hyp3 import find_hyp3_products

    with tempfile.TemporaryDirectory(prefix="talik-hyp3-check-") as tmp:
        (Path(tmp) / path.name).symlink_to(path.resolve())
        try:
            found = find_hyp3_products(tmp)
        except InputError as exc:
            return str(exc)
    return None if [p.name for p in found] == [path.stem] else "not named as a HyP3 product"


def _fetch_checked(cfg: StudyConfig, store: RawStore, job: JobEntry, file: dict[str, Any],
                   dest: Path) -> bool:
    """Download ``file`` of ``job`` to ``dest`` and check it; a bad zip is fetched once more.

    Returns whether bytes were transferred. Raises PermanentServiceError naming the file.
    """
    query = {"job_id": job.job_id, "job_type": job.job_type, "reference": job.reference,
             "secondary": job.secondary}
    problem = None
    for attempt in (1, 2):
        result = store.fetch(file["url"], dest, "hyp3", query, size=file.get("size"))
        problem = _unreadable(dest, job.job_type)
        if problem is None:
            return result.downloaded
        logger.warning("HyP3 product %s is not readable (%s); %s", dest, problem,
                       "fetching it again" if attempt == 1 else "giving up")
        dest.unlink(missing_ok=True)
    raise PermanentServiceError(f"{SERVICE}: downloaded product {dest} is not readable after a "
                                f"second download: {problem}")


def download_products(cfg: StudyConfig, ledger: Ledger, store: RawStore) -> dict[str, Any]:
    """Download the product zip of every succeeded pair into ``[source] hyp3_dir``.

    Soonest-expiring first; products within ``download_margin_days`` of expiry are warned
    about; expired ones are skipped with a warning and their pair planned again (HyP3 deletes
    products 14 days after processing). Each zip is checked by the HyP3 product reader; a bad
    zip is fetched once more, then the run fails naming the file (after the other products).
    """
    options = cfg.ingest.hyp3
    folder = _hyp3_dir(cfg)
    jobs = {j.name: j for j in ledger.jobs(["SUCCEEDED"])}
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    todo = [(p, jobs.get(p.job_name)) for p in ledger.pairs(options.job_type, ["succeeded"])]
    todo.sort(key=lambda pj: (pj[1].expires_at or far) if pj[1] else far)
    now, margin = utc_now(), dt.timedelta(days=options.download_margin_days)
    out: dict[str, Any] = {"n_downloaded": 0, "n_present": 0, "n_expired": 0, "n_near_expiry": 0,
                           "products": [], "expired": [], "failed": []}
    for pair, job in todo:
        file = _zip_file(job) if job else None
        if job is None or file is None:
            logger.warning("HyP3: pair %s succeeded but no product zip is recorded", _label(pair))
            out["failed"].append(_label(pair))
            continue
        if job.expires_at is not None and job.expires_at <= now:
            logger.warning("HyP3 product of pair %s (job %s) expired at %s before it was downloaded; "
                           "skipped, the pair is planned again", _label(pair), job.job_id,
                           job.expires_at.isoformat())
            ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "planned",
                            note=f"product of job {job.job_id} expired before download")
            out["n_expired"] += 1
            out["expired"].append(_label(pair))
            continue
        if job.expires_at is not None and job.expires_at - now <= margin:
            logger.warning("HyP3 product %s expires at %s (within %g days)", file["filename"],
                           job.expires_at.isoformat(), options.download_margin_days)
            out["n_near_expiry"] += 1
        dest = folder / file["filename"]
        try:
            transferred = _fetch_checked(cfg, store, job, file, dest)
        except IngestError as exc:
            logger.error("HyP3: %s", exc)
            out["failed"].append(str(exc))
            continue
        ledger.set_pair(pair.reference, pair.secondary, pair.job_type, "downloaded", product=dest.stem)
        out["n_downloaded" if transferred else "n_present"] += 1
        out["products"].append(dest.stem)
    if out["failed"]:
        raise PermanentServiceError(f"{SERVICE}: {len(out['failed'])} products not downloaded: "
                                    + "; ".join(out["failed"]))
    return out
