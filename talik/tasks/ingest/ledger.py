"""The ingest ledger: what was found, planned, ordered and downloaded, durable across runs.

One SQLite file (default ``<work_dir>/ingest/ledger.sqlite``; WAL journal, so a reader never
waits for a writer and a killed writer loses at most its open transaction). Tables:

``scenes``      acquisitions found at a catalogue (a :class:`SceneRecord` as JSON)
``pairs``       planned interferograms and their state: ``planned`` → ``submitting`` (an order
                is being sent under a recorded job name) → ``submitted`` → ``succeeded`` →
                ``downloaded``; or ``failed`` (resubmitted while attempts remain) → ``abandoned``
``jobs``        every service job (id, state, credit cost, submitted and expiry times, files)
``files``       the raw store's manifest: every downloaded file with its source, query, URL
                (no credentials), size, SHA-256, time and whether it is provisional
``requests``    queued requests of other services (CDS, Earth Engine exports): key, remote id,
                state, result file
``leases``      who is ordering right now (:meth:`Ledger.lease`): one run at a time reads the
                pairs, checks the budget and sends orders, so two runs (two processes, two
                machines) never order the same pair twice nor spend the same credits twice

A pair is marked ``submitting`` with its job name *before* the order is sent: a run killed
between sending and recording finds the order by name at the service and never sends it twice.
Secrets are never written here (:func:`talik.tasks.ingest.common.redact` guards free text).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talik.tasks.ingest.common import SceneRecord, redact, scrub_url

__all__ = ["FileEntry", "JobEntry", "Ledger", "LeaseHeldError", "PairEntry", "RequestEntry", "utc_now"]


class LeaseHeldError(RuntimeError):
    """Another live run holds the lease asked for (its owner and expiry are in the message)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    scene_id TEXT PRIMARY KEY, source TEXT NOT NULL, platform TEXT, start_time TEXT NOT NULL,
    relative_orbit INTEGER, frame INTEGER, flight_direction TEXT, record TEXT NOT NULL,
    first_seen TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    reference TEXT NOT NULL, secondary TEXT NOT NULL, job_type TEXT NOT NULL,
    state TEXT NOT NULL, job_name TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    product TEXT, note TEXT, planned_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (reference, secondary, job_type));
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, reference TEXT NOT NULL, secondary TEXT NOT NULL,
    job_type TEXT NOT NULL, name TEXT, state TEXT NOT NULL, credit_cost REAL,
    submitted_at TEXT, expires_at TEXT, files TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, query TEXT, url TEXT, bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL, fetched_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'final');
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, request TEXT NOT NULL, remote_id TEXT,
    state TEXT NOT NULL, result TEXT, provisional INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    expires_at TEXT NOT NULL);
"""

PAIR_STATES = ("planned", "submitting", "submitted", "succeeded", "downloaded", "failed",
               "abandoned")


def utc_now() -> dt.datetime:
    """The current time, UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass(frozen=True)
class PairEntry:
    """A planned interferogram (two scene names) and where its order stands."""

    reference: str
    secondary: str
    job_type: str
    state: str
    job_name: str | None
    attempts: int
    product: str | None
    note: str | None


@dataclass(frozen=True)
class JobEntry:
    """A job at a service (HyP3)."""

    job_id: str
    reference: str
    secondary: str
    job_type: str
    name: str | None
    state: str
    credit_cost: float | None
    submitted_at: dt.datetime | None
    expires_at: dt.datetime | None
    files: list[dict[str, Any]]


@dataclass(frozen=True)
class FileEntry:
    """A file of the raw store."""

    path: str
    source: str
    query: dict[str, Any]
    url: str | None
    bytes: int
    sha256: str
    fetched_at: dt.datetime
    status: str


@dataclass(frozen=True)
class RequestEntry:
    """A queued request at a service (CDS)."""

    key: str
    source: str
    request: dict[str, Any]
    remote_id: str | None
    state: str
    result: str | None
    provisional: bool


class Ledger:
    """The ingest ledger at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all of it lands, or none of it."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -------------------------------------------------------------------------- leases
    @contextlib.contextmanager
    def lease(self, name: str, ttl: dt.timedelta) -> Iterator[Callable[[], None]]:
        """Hold the lease ``name`` for the block (raise :class:`LeaseHeldError` if another run does).

        A lease another run left behind is taken over once it has expired, or at once when
        its process is gone (same host, pid no longer running): a killed run never blocks
        the next one for longer than ``ttl``. The block receives ``renew()``, which pushes
        the expiry ``ttl`` ahead again (call it between long steps) and raises
        :class:`LeaseHeldError` if the lease was lost meanwhile.
        """
        owner, host, pid = uuid.uuid4().hex, socket.gethostname(), os.getpid()

        def take(renewing: bool) -> None:
            now = utc_now()
            with self.transaction() as db:
                row = db.execute("SELECT owner, host, pid, expires_at FROM leases WHERE name = ?",
                                 (name,)).fetchone()
                if row is not None and row[0] != owner:
                    expired = _time(row[3]) <= now
                    dead = row[1] == host and not _alive(int(row[2]))
                    if renewing or not (expired or dead):
                        raise LeaseHeldError(
                            f"ledger {self.path}: {name} is held by another run (host {row[1]}, "
                            f"pid {row[2]}) until {row[3]}")
                db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?)",
                           (name, owner, host, pid, _iso(now + ttl)))

        take(False)
        try:
            yield lambda: take(True)
        finally:
            with self.transaction() as db:
                db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    # -------------------------------------------------------------------------- scenes
    def add_scenes(self, scenes: Sequence[SceneRecord]) -> list[SceneRecord]:
        """Record ``scenes``; return those not seen before."""
        now = _iso(utc_now())
        new = []
        with self.transaction() as db:
            for s in scenes:
                cur = db.execute(
                    "INSERT OR IGNORE INTO scenes VALUES (?,?,?,?,?,?,?,?,?)",
                    (s.scene_id, s.source, s.platform, _iso(s.start_time), s.relative_orbit,
                     s.frame, s.flight_direction, s.model_dump_json(), now))
                if cur.rowcount:
                    new.append(s)
        return new

    def scenes(self, source: str | None = None) -> list[SceneRecord]:
        """Every scene recorded (of ``source``), by acquisition time."""
        rows = self._select("SELECT record FROM scenes", "start_time, scene_id", source=source)
        return [SceneRecord.model_validate_json(r[0]) for r in rows]

    # --------------------------------------------------------------------------- pairs
    def add_pairs(self, pairs: Sequence[tuple[str, str]], job_type: str) -> int:
        """Plan ``pairs`` (reference, secondary scene names); return how many are new."""
        now = _iso(utc_now())
        with self.transaction() as db:
            n = 0
            for ref, sec in pairs:
                n += db.execute("INSERT OR IGNORE INTO pairs (reference, secondary, job_type, "
                                "state, planned_at, updated_at) VALUES (?,?,?,?,?,?)",
                                (ref, sec, job_type, "planned", now, now)).rowcount
        return n

    def _select(self, select: str, order: str, **where: Any) -> list[tuple]:
        """Rows of ``select`` filtered by ``column=value`` and sorted by ``order``.

        A value of None sets no filter; a list or tuple matches any of its values.
        """
        clauses, args = [], []
        for column, value in where.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                clauses.append(f"{column} IN ({','.join('?' * len(value))})")
                args.extend(value)
            else:
                clauses.append(f"{column} = ?")
                args.append(value)
        sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "") + f" ORDER BY {order}"
        with self._connect() as db:
            return db.execute(sql, args).fetchall()

    def pairs(self, job_type: str | None = None, states: Sequence[str] | None = None
              ) -> list[PairEntry]:
        """Planned pairs (of ``job_type``, in ``states``), in planning order."""
        rows = self._select("SELECT reference, secondary, job_type, state, job_name, attempts, "
                            "product, note FROM pairs", "reference, secondary",
                            job_type=job_type, state=None if states is None else list(states))
        return [PairEntry(*r) for r in rows]

    def set_pair(self, reference: str, secondary: str, job_type: str, state: str, *,
                 job_name: str | None = None, attempts: int | None = None,
                 product: str | None = None, note: str | None = None,
                 db: sqlite3.Connection | None = None) -> None:
        """Move a pair to ``state`` (and set the fields given)."""
        if state not in PAIR_STATES:
            raise ValueError(f"unknown pair state {state!r}; one of {PAIR_STATES}")
        sets, args = ["state = ?", "updated_at = ?"], [state, _iso(utc_now())]
        for name, value in (("job_name", job_name), ("attempts", attempts),
                            ("product", product), ("note", redact(note) if note else note)):
            if value is not None:
                sets.append(f"{name} = ?")
                args.append(value)
        args += [reference, secondary, job_type]
        sql = f"UPDATE pairs SET {', '.join(sets)} WHERE reference = ? AND secondary = ? " \
              "AND job_type = ?"
        if db is not None:
            db.execute(sql, args)
            return
        with self.transaction() as tx:
            tx.execute(sql, args)

    # ---------------------------------------------------------------------------- jobs
    def upsert_job(self, job: JobEntry, db: sqlite3.Connection | None = None) -> None:
        """Record or update a job."""
        row = (job.job_id, job.reference, job.secondary, job.job_type, job.name, job.state,
               job.credit_cost, _iso(job.submitted_at), _iso(job.expires_at),
               json.dumps([{k: (scrub_url(v) if k == "url" else v) for k, v in f.items()}
                           for f in job.files]), _iso(utc_now()))
        sql = ("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(job_id) DO UPDATE "
               "SET state=excluded.state, credit_cost=excluded.credit_cost, "
               "expires_at=excluded.expires_at, files=excluded.files, "
               "updated_at=excluded.updated_at")
        if db is not None:
            db.execute(sql, row)
            return
        with self.transaction() as tx:
            tx.execute(sql, row)

    def jobs(self, states: Sequence[str] | None = None) -> list[JobEntry]:
        """Jobs recorded (in ``states``), by submission time."""
        rows = self._select("SELECT job_id, reference, secondary, job_type, name, state, "
                            "credit_cost, submitted_at, expires_at, files FROM jobs",
                            "submitted_at, job_id", state=None if states is None else list(states))
        return [JobEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _time(r[7]), _time(r[8]),
                         json.loads(r[9] or "[]")) for r in rows]

    def credits_spent(self, month: dt.date) -> float:
        """Credits of the jobs submitted in ``month``'s calendar month (UTC)."""
        first = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
        nxt = dt.datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=dt.UTC)
        with self._connect() as db:
            (total,) = db.execute("SELECT COALESCE(SUM(credit_cost), 0) FROM jobs WHERE "
                                  "submitted_at >= ? AND submitted_at < ?",
                                  (_iso(first), _iso(nxt))).fetchone()
        return float(total)

    # --------------------------------------------------------------------------- files
    def record_file(self, entry: FileEntry) -> None:
        """Add or replace a raw-store manifest entry."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                       (entry.path, entry.source, redact(json.dumps(entry.query, sort_keys=True,
                                                                    default=str)),
                        scrub_url(entry.url) if entry.url else None, entry.bytes, entry.sha256,
                        _iso(entry.fetched_at), entry.status))

    @staticmethod
    def _file_entry(row: tuple) -> FileEntry:
        return FileEntry(row[0], row[1], json.loads(row[2] or "{}"), row[3], row[4], row[5],
                         _time(row[6]), row[7])

    def file(self, path: str) -> FileEntry | None:
        """The manifest entry of ``path`` (as recorded), or None."""
        rows = self._select("SELECT * FROM files", "path", path=path)
        return self._file_entry(rows[0]) if rows else None

    def files(self, source: str | None = None) -> list[FileEntry]:
        """Every manifest entry (of ``source``)."""
        return [self._file_entry(r) for r in self._select("SELECT * FROM files", "path",
                                                           source=source)]

    # ------------------------------------------------------------------------ requests
    def upsert_request(self, entry: RequestEntry) -> None:
        """Record or update a queued request."""
        now = _iso(utc_now())
        with self.transaction() as db:
            db.execute(
                "INSERT INTO requests VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
                "remote_id=excluded.remote_id, state=excluded.state, result=excluded.result, "
                "provisional=excluded.provisional, updated_at=excluded.updated_at",
                (entry.key, entry.source, redact(json.dumps(entry.request, sort_keys=True)),
                 entry.remote_id, entry.state, entry.result, int(entry.provisional), now, now))

    def requests(self, source: str | None = None, states: Sequence[str] | None = None
                 ) -> list[RequestEntry]:
        """Queued requests recorded (of ``source``, in ``states``)."""
        rows = self._select("SELECT key, source, request, remote_id, state, result, provisional "
                            "FROM requests", "key", source=source,
                            state=None if states is None else list(states))
        return [RequestEntry(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], bool(r[6]))
                for r in rows]
