"""Kill anywhere: a `talik run` SIGKILLed mid-step leaves no process behind, and the rerun
publishes the release an uninterrupted run publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talik.tasks.reaper import descendants
from tests.conftest import write_study
from tests.fakes.asf_hyp3 import fake_asf, fake_hyp3  # noqa: F401

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

TALIK = Path(sys.executable).with_name("talik")


def _run(study: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(TALIK), "run", str(study), "--quiet"], capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # each run starts (and must stop) its own server
    env.pop("TALIK_REAPER_OF", None)
    return env


def _products(release: Path) -> dict[str, str]:
    manifest = json.loads((release / "manifest.json").read_text())
    return {p["path"]: p["sha256"] for p in manifest["products"]}


@pytest.fixture(scope="module")
def clean_products(tmp_path_factory, tiny_world) -> dict[str, str]:
    """The products of an uninterrupted run of the tiny study."""
    folder = tmp_path_factory.mktemp("clean")
    done = _run(write_study(folder, tiny_world))
    assert done.returncode == 0, done.stderr[-2000:]
    return _products(folder / "releases" / "r0001")


def _marker(kind: str, folder: Path):
    """A test of whether the run is inside the phase ``kind`` (its temporary folder exists)."""
    if kind == "publish":
        root = folder / "releases"
        return lambda: root.exists() and any(p.name.startswith(".staging-") for p in root.iterdir())
    steps = folder / "work" / "steps" / kind
    return lambda: steps.exists() and any(p.name.startswith(".") for p in steps.iterdir())


def _kill_run_when(study: Path, inside, timeout: float = 300) -> dict[int, int] | None:
    """Start `talik run STUDY` and SIGKILL it as soon as ``inside()`` holds.

    Returns every process it had started (pid → start time), or None if it finished first.
    """
    proc = subprocess.Popen([str(TALIK), "run", str(study), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    children: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        children.update(descendants(proc.pid))
        if inside():
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return None
    children.update(descendants(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return children


@pytest.mark.parametrize("phase", ["stage-sentinel1", "sentinel1-timeseries", "publish"])
def test_sigkill_leaves_nothing_and_the_rerun_matches(tmp_path, tiny_world, clean_products,
                                                      phase):
    study = write_study(tmp_path, tiny_world)
    inside = _marker(phase, tmp_path)
    children = _kill_run_when(study, inside)
    if children is None:
        pytest.skip(f"the run finished before {phase} could be interrupted (too fast to catch)")
    assert any("uvicorn" in _cmdline(p) for p in children), "expected the run's Prefect server"
    time.sleep(8)  # the reaper's poll and grace period
    alive = [p for p in children if _cmdline(p)]
    assert not alive, f"processes outlived the killed run: {[_cmdline(p) for p in alive]}"
    assert not (tmp_path / "releases" / "r0001").exists() or phase == "publish"

    again = _run(study)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list((tmp_path / "work").rglob(".*.tmp-*"))  # no leftover step folders
    assert not list((tmp_path / "releases").glob(".staging-*"))
    got = _products(tmp_path / "releases" / "r0001")
    assert got.keys() == clean_products.keys()
    # NetCDF files carry their creation time in the history attribute; every other product
    # must be byte-identical to the uninterrupted run's.
    differing = {k for k in clean_products if got[k] != clean_products[k] and not k.endswith(".nc")}
    assert not differing, differing


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sigkill_during_a_download_resumes_and_matches(tmp_path, tiny_world, fake_asf,  # noqa: F811
                                                       fake_hyp3):  # noqa: F811
    """(d) Killed while a HyP3 product is downloading (its ``.partial`` file open; the fake
    sends each file over one second): nothing outlives the run, and the rerun leaves no partial
    file and publishes what an uninterrupted run publishes. (Resuming a partial file with a
    Range request is tested in test_ingest_core.)"""
    from talik.tasks.readers.hyp3 import find_hyp3_products
    from tests.conftest import STORES_AND_SENSORS
    from tests.test_ingest_scheduled_run import STUDY

    products = find_hyp3_products(tiny_world / "hyp3")
    fake_asf.set_dates(sorted({d for p in products for d in (p.reference_date, p.secondary_date)}))
    fake_hyp3.use_products(tiny_world / "hyp3")

    def study_in(folder: Path) -> Path:
        path = folder / "scheduled.toml"
        folder.mkdir()
        stores = STORES_AND_SENSORS.format(work=folder / "work", releases=folder / "releases")
        path.write_text(STUDY.format(hyp3=folder / "raw" / "hyp3", stores_and_sensors=stores,
                                     asf=fake_asf.host, hyp3_url=fake_hyp3.url))
        return path

    clean = _run(study_in(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    expected = _products(tmp_path / "clean" / "releases" / "r0001")

    folder = tmp_path / "killed"
    study = study_in(folder)
    fake_hyp3.state.download_seconds = 1.0
    raw = folder / "raw" / "hyp3"
    children = _kill_run_when(study, lambda: raw.exists() and any(
        p.name.endswith(".partial") for p in raw.iterdir()))
    assert children is not None, "the run ended before any download could be interrupted"
    assert any(p.name.endswith(".partial") for p in raw.iterdir())  # killed mid-file
    time.sleep(8)  # the reaper's poll and grace period
    alive = [p for p in children if _cmdline(p)]
    assert not alive, f"processes outlived the killed run: {[_cmdline(p) for p in alive]}"

    fake_hyp3.state.download_seconds = 0.0
    again = _run(study)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [p for p in folder.rglob("*") if p.name.endswith(".partial")]
    assert not list((folder / "work").rglob(".*.tmp-*"))
    assert not list((folder / "releases").glob(".staging-*"))
    got = _products(folder / "releases" / "r0001")
    assert got.keys() == expected.keys()
    differing = {k for k in expected if got[k] != expected[k] and not k.endswith(".nc")}
    assert not differing, differing
