"""Deployments from ``deployments/prefect.yaml`` run through a real server and process worker.

This is the path of scheduled monitoring and of reruns from the Prefect UI: a Prefect server,
a process work pool, ``prefect deploy``, a worker, and a deployment run watched to completion.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """TERM, wait, TERM again (the worker turns the first into SIGINT), then KILL."""
    for sig in (signal.SIGTERM, signal.SIGTERM):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout=10)


def test_deployment_runs_through_server_and_worker(tmp_path, tiny_study):
    port = _free_port()
    home = tmp_path / "prefect-home"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PROJECT_DIR": str(REPO),
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("Prefect server did not start:\n" + (tmp_path / "server.log").read_text())
                time.sleep(1)

        def prefect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
            return subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True,
                                  text=True, timeout=timeout)

        out = prefect("work-pool", "create", "talik-process", "--type", "process", "--overwrite")
        assert out.returncode == 0, out.stdout + out.stderr
        out = prefect("--no-prompt", "deploy", "--all", "--prefect-file",
                      "deployments/prefect.yaml")
        assert out.returncode == 0, out.stdout + out.stderr
        wlog = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "talik-process",
                                   "--name", "test-worker", "--limit", "1"], env=env, cwd=REPO,
                                  stdout=wlog, stderr=subprocess.STDOUT)
        out = prefect("deployment", "run", "monitor/demo-weekly",
                      "-p", f"study={json.dumps(str(tiny_study))}",
                      "--watch", "--watch-interval", "1", "--watch-timeout", "400", timeout=450)
        assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "worker.log").read_text()
        assert "Completed" in out.stdout

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name("monitor/datong-monthly")
                crons = [s.schedule.cron for s in deployment.schedules]
                assert crons == ["0 4 1 * *"]
        releases = list((tiny_study.parent / "releases").glob("r*"))
        assert [p.name for p in releases] == ["r0001"]
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
