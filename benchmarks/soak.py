"""Soak of the scheduled service: a cron deployment on a local Prefect server, every minute.

`make soak` (or ``.venv/bin/python benchmarks/soak.py --minutes 20``) generates a small world,
starts a Prefect server and a process worker (``--limit 1``), deploys talik's monitor flow with
the cron ``* * * * *`` on a study whose HyP3 folder starts with the first part of the world's
products, and lets the schedule run for ``--minutes``. Between runs (never while one runs) a
new batch of products is moved into the folder every ``--batch-every`` minutes. At the end it
prints every run's state and duration, the releases, the server's and the worker's resident
memory at the start and at the end, and checks that

* every scheduled run that started completed;
* a release was published exactly by the runs that saw new products (and by the first);
* nothing that the soak started (server, worker, flow-run processes, Dask workers) is left
  running after it stops them.

Exit status 0 when every check holds, 1 otherwise. Its files stay in ``--workdir``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from talik.flows.deploy import local_server_environment
from talik.tasks.reaper import stop_process

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _own_rss_mib(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def _ours(home: Path) -> list[psutil.Process]:
    """Every live process whose environment names the soak's PREFECT_HOME."""
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get("PREFECT_HOME") == str(home):
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            pass
    return found


def _world(root: Path) -> Path:
    """The soak's world (generated once; the tests' tiny world's parameters)."""
    from talik.config import WorldSource
    from talik.world import generate_world

    return generate_world(WorldSource(raw_dir=root / "raw", seed=7, ny=24, nx=32,
                                      s1_start=dt.date(2019, 1, 1), s1_end=dt.date(2021, 12, 31),
                                      neighbours=3, unwrapping_error_fraction=0.05,
                                      hydro_start_year=1990, hydro_end_year=2004))


def _study(root: Path, raw: Path, hyp3: Path) -> str:
    """The soak's study as TOML: the world's inputs (its own layout), HyP3 from ``hyp3``."""
    from talik.config import (
        SENTINEL1_WAVELENGTH_M,
        AreaOfInterest,
        Sensor,
        Sentinel1Options,
        Stores,
        StudyConfig,
        to_toml,
    )
    from talik.tasks.ingest.world import world_as_local

    source = world_as_local(raw).model_copy(update={"hyp3_dir": hyp3, "pairs_dir": None})
    return to_toml(StudyConfig(
        name="soak", title="soak of the scheduled service", aoi=AreaOfInterest(name="soak"),
        sensors={"sentinel1": Sensor(platform="Sentinel-1", band="C",
                                     wavelength_m=SENTINEL1_WAVELENGTH_M, incidence_deg=39.47,
                                     direction="descending", polarization="VV")},
        source=source, stores=Stores(work_dir=root / "work", release_dir=root / "releases"),
        sentinel1=Sentinel1Options(chunk_px=16)))


def _batches(products: list[Path], n_batches: int) -> list[list[Path]]:
    """The first half of the products by secondary date, then ``n_batches`` later batches."""
    def secondary(p: Path) -> str:
        return p.name.split("_")[2]

    dates = sorted({secondary(p) for p in products})
    cut = dates[len(dates) // 2]
    later = [d for d in dates if d >= cut]
    edges = [later[int(i * len(later) / n_batches)] for i in range(n_batches)] + ["99999999"]
    first = [p for p in products if secondary(p) < cut]
    return [first] + [[p for p in products if a <= secondary(p) < b]
                      for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _move_in(batch: list[Path], hyp3: Path) -> None:
    """Copy product folders in, each under a hidden name first and renamed whole."""
    for folder in batch:
        hidden = hyp3 / f".incoming-{folder.name}"
        shutil.copytree(folder, hidden)
        hidden.rename(hyp3 / folder.name)


def _runs(client) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=["soak"])), limit=200)
    return sorted(runs, key=lambda r: r.expected_start_time)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the schedule runs")
    parser.add_argument("--batch-every", type=int, default=4,
                        help="minutes between new batches of products")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "soak")
    args = parser.parse_args(argv)

    root = args.workdir.resolve()
    for stale in ("work", "releases", "hyp3", "prefect", "study.toml"):
        target = root / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    root.mkdir(parents=True, exist_ok=True)
    # Before anything imports Prefect (it reads its settings once): its clients here must
    # talk to the soak's server, not start a throwaway one.
    home = root / "prefect"
    home.mkdir()
    port = _free_port()
    env = local_server_environment(home, port)
    env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")})
    raw = _world(root)
    products = sorted(p for p in (raw / "hyp3").iterdir() if p.is_dir())
    n_batches = max(1, int(args.minutes // args.batch_every) - 1)
    batches = _batches(products, n_batches)
    hyp3 = root / "hyp3"
    hyp3.mkdir()
    _move_in(batches[0], hyp3)
    study = root / "study.toml"
    study.write_text(_study(root, raw, hyp3))

    server_log = (root / "server.log").open("w")
    worker_log = (root / "worker.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=server_log,
                              stderr=subprocess.STDOUT)
    worker = None
    failures: list[str] = []
    added: list[tuple[float, int]] = []  # (wall-clock time, batch) of each batch moved in
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print((root / "server.log").read_text()[-3000:])
                    raise SystemExit("the Prefect server did not start") from None
                time.sleep(1)

        def prefect(*cli: str) -> None:
            out = subprocess.run([str(BIN / "prefect"), *cli], env=env, cwd=REPO,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode:
                raise SystemExit(f"prefect {' '.join(cli)} failed:\n{out.stdout}{out.stderr}")

        prefect("work-pool", "create", "talik-soak", "--type", "process", "--overwrite")
        from prefect.client.orchestration import get_client

        from talik.flows.monitor import monitor

        monitor.from_source(source=str(REPO), entrypoint="talik/flows/monitor.py:monitor").deploy(
            name="soak", work_pool_name="talik-soak", cron="* * * * *",
            parameters={"study": str(study), "refresh": False}, build=False, push=False,
            print_next_steps=False, ignore_warnings=True)
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "talik-soak",
                                   "--name", "soak-worker", "--limit", "1"], env=env, cwd=REPO,
                                  stdout=worker_log, stderr=subprocess.STDOUT)
        time.sleep(5)
        rss_start = {"server": _rss_mib(server.pid), "worker": _own_rss_mib(worker.pid)}
        print(f"soak: {args.minutes:g} min of '* * * * *' runs at {root}; {len(batches[0])} "
              f"products at the start, {len(batches) - 1} batches of "
              f"{', '.join(str(len(b)) for b in batches[1:])} to come", flush=True)
        t0 = time.monotonic()
        next_batch, last_batch_at = 1, t0
        with get_client(sync_client=True) as client:
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(5)
                runs = _runs(client)
                running = any(r.state and r.state.type.value in ("RUNNING", "PENDING")
                              for r in runs)
                due = time.monotonic() - last_batch_at >= args.batch_every * 60
                if due and not running and next_batch < len(batches):
                    _move_in(batches[next_batch], hyp3)
                    added.append((time.time(), next_batch))
                    print(f"  {(time.monotonic() - t0) / 60:5.1f} min: moved in batch "
                          f"{next_batch} ({len(batches[next_batch])} products)", flush=True)
                    next_batch += 1
                    last_batch_at = time.monotonic()
            # Let a run in progress finish before reading the outcome.
            wait_until = time.monotonic() + 240
            while time.monotonic() < wait_until and any(
                    r.state and r.state.type.value == "RUNNING" for r in _runs(client)):
                time.sleep(3)
            rss_end = {"server": _rss_mib(server.pid), "worker": _own_rss_mib(worker.pid)}
            runs = [r for r in _runs(client) if r.state and r.state.type.value not in
                    ("SCHEDULED", "PENDING") and r.state.name != "Late"]
            results = []
            for r in runs:
                created = None
                if r.state.type.value == "COMPLETED":
                    try:
                        outcome = r.state.result(raise_on_failure=False)
                        created = getattr(outcome, "created", None)
                    except Exception:  # noqa: BLE001 - reported, not fatal to the report
                        created = None
                results.append((r, created))
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(server)
        server_log.close()
        worker_log.close()
    time.sleep(3)
    left = _ours(home)

    releases = sorted(p.name for p in (root / "releases").glob("r[0-9]*"))
    print(f"{'run':<24} {'state':<10} {'duration':>9}  release")
    for r, created in results:
        took = r.total_run_time.total_seconds() if r.total_run_time else float("nan")
        print(f"{r.expected_start_time:%H:%M:%S} {r.name:<15} {r.state.name:<10} {took:8.1f}s  "
              f"{'new' if created else ('none' if created is False else '?')}")
    n_done = sum(r.state.type.value == "COMPLETED" for r, _ in results)
    n_created = sum(bool(c) for _, c in results)
    print(f"runs: {len(results)} ({n_done} completed); batches moved in: {len(added)}; "
          f"releases: {len(releases)} ({', '.join(releases)})")
    for name in ("server", "worker"):
        print(f"RSS {name}: {rss_start[name]:7.1f} MiB at the start, {rss_end[name]:7.1f} MiB at "
              f"the end ({rss_end[name] - rss_start[name]:+.1f} MiB)")
    print(f"left running after the stop: {len(left)} process(es)"
          + (": " + "; ".join(" ".join(p.cmdline())[:120] for p in left) if left else ""))
    (root / "soak.json").write_text(json.dumps({
        "runs": [{"name": r.name, "state": r.state.name, "created": c,
                  "seconds": r.total_run_time.total_seconds() if r.total_run_time else None}
                 for r, c in results],
        "releases": releases, "batches_added": len(added), "rss_start_mib": rss_start,
        "rss_end_mib": rss_end, "left_running": len(left)}, indent=1))

    if n_done < len(results):
        failures.append(f"{len(results) - n_done} run(s) did not complete")
    if len(results) < max(1, int(args.minutes) - 3):
        failures.append(f"only {len(results)} runs in {args.minutes:g} min of a one-minute schedule")
    known = [c for _, c in results if c is not None]
    # Input changes a run could see: batches moved in before the last run started.
    last_start = max((r.start_time.timestamp() for r, _ in results if r.start_time), default=0)
    seen = [b for when, b in added if when < last_start]
    if len(releases) != 1 + len(seen) or (len(known) == len(results)
                                          and n_created != len(releases)):
        failures.append(f"{len(releases)} releases ({n_created} runs said they created one) for "
                        f"1 + {len(seen)} input changes seen by a run")
    if left:
        failures.append(f"{len(left)} process(es) left running")
    for name in ("server", "worker"):
        if rss_end[name] > 1.5 * rss_start[name] + 100:
            failures.append(f"{name} memory grew from {rss_start[name]:.0f} to "
                            f"{rss_end[name]:.0f} MiB")
    for f in failures:
        print("FAILED:", f)
    if left:
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    print("soak: every check holds" if not failures else "soak: checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
