"""Deployments run through a real Prefect server and process worker.

This is the path of scheduled monitoring and of reruns from the Prefect UI: a Prefect server
on 127.0.0.1, a process work pool, deployments (``prefect deploy`` of
``deployments/prefect.yaml``, and ``talik deploy``), a worker, and runs triggered through the
API as the UI's form does, watched to completion. Every process started is stopped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from talik.flows.deploy import local_server_environment
from talik.tasks.reaper import stop_process

from .conftest import REPO, write_study

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).with_name("prefect"))
TALIK = str(Path(sys.executable).with_name("talik"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Prefect server, the ``talik-process`` pool and a worker; yields the environment."""
    folder = tmp_path_factory.mktemp("stack")
    port = _free_port()
    home = folder / "prefect-home"
    env = local_server_environment(home, port)
    env["PROJECT_DIR"] = str(REPO)
    log = (folder / "server.log").open("w")
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
                    pytest.fail("Prefect server did not start:\n" + (folder / "server.log").read_text())
                time.sleep(1)
        out = _cli(env, PREFECT, "work-pool", "create", "talik-process", "--type", "process",
                   "--overwrite")
        assert out.returncode == 0, out.stdout + out.stderr
        wlog = (folder / "worker.log").open("w")
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "talik-process",
                                   "--name", "test-worker", "--limit", "1"], env=env, cwd=REPO,
                                  stdout=wlog, stderr=subprocess.STDOUT)
        yield env, folder
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(server)


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_deployment_runs_through_server_and_worker(stack, tiny_study):
    env, folder = stack
    out = _cli(env, PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file",
               "deployments/prefect.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    out = _cli(env, PREFECT, "deployment", "run", "monitor/demo-weekly",
               "-p", f"study={json.dumps(str(tiny_study))}",
               "--watch", "--watch-interval", "1", "--watch-timeout", "400", timeout=450)
    assert out.returncode == 0, out.stdout + out.stderr + (folder / "worker.log").read_text()
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


def _finish(client, run_id, folder: Path, timeout: float = 400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            assert run.state.is_completed(), (run.state, (folder / "worker.log").read_text()[-4000:])
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} did not finish in {timeout} s")


def test_reruns_through_the_api_record_options_and_reproduce(stack, tmp_path, tiny_world):
    """The UI's path: `talik deploy`, a run with changed options through the API, a rerun of
    its parameters after the study file changed, and an unchanged rerun."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from talik.tasks.publish import list_releases, read_release

    env, folder = stack
    study = write_study(tmp_path, tiny_world)
    out = _cli(env, TALIK, "deploy", str(study), "--cron", "none")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("monitor/tiny", "rerun-sentinel1/tiny", "rerun-recession/tiny"):
        assert name in out.stdout
    releases = tmp_path / "releases"
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("monitor/tiny")
            schema = deployment.parameter_openapi_schema
            assert "StudyOptions" in json.dumps(schema)  # the UI renders a form of the options
            params = json.loads(json.dumps(deployment.parameters))
            assert params["options"]["sentinel1"]["coherence_threshold"] == 0.3
            params["options"]["sentinel1"]["coherence_threshold"] = 0.35  # as edited in the form
            first = _finish(client, client.create_flow_run_from_deployment(
                deployment.id, parameters=params).id, folder)
            (r1,) = list_releases(releases)
            config = read_release(releases, r1.id)["study"]["config"]
            assert config["sentinel1"]["coherence_threshold"] == 0.35

            # The study file changes on disk; a rerun of the first run's parameters still
            # uses the first run's options, so it reproduces the first release.
            study.write_text(study.read_text().replace(
                "chunk_px = 16", "chunk_px = 16\ncoherence_threshold = 0.5"))
            _finish(client, client.create_flow_run_from_deployment(
                deployment.id, parameters=first.parameters).id, folder)
            assert [r.id for r in list_releases(releases)] == [r1.id]

            # An unchanged rerun makes no new release either; the file's new options, given
            # through the one-analysis deployment, do.
            _finish(client, client.create_flow_run_from_deployment(
                deployment.id, parameters=first.parameters).id, folder)
            assert [r.id for r in list_releases(releases)] == [r1.id]
            rerun = client.read_deployment_by_name("rerun-sentinel1/tiny")
            rerun_params = json.loads(json.dumps(rerun.parameters))
            rerun_params["sentinel1"]["coherence_threshold"] = 0.4
            _finish(client, client.create_flow_run_from_deployment(
                rerun.id, parameters=rerun_params).id, folder)
            ids = [r.id for r in list_releases(releases)]
            assert len(ids) == 2
            config = read_release(releases, ids[-1])["study"]["config"]
            assert config["sentinel1"]["coherence_threshold"] == 0.4
