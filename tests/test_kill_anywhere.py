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


def test_sigkill_during_the_inversion_leaves_nothing_and_the_rerun_matches(tmp_path,
                                                                            tiny_world):
    clean = write_study(tmp_path / "clean", tiny_world)
    done = _run(clean)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _products(tmp_path / "clean" / "releases" / "r0001")

    study = write_study(tmp_path / "killed", tiny_world)
    steps = tmp_path / "killed" / "work" / "steps" / "sentinel1-timeseries"
    proc = subprocess.Popen([str(TALIK), "run", str(study), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    children: dict[int, int] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        children.update(descendants(proc.pid))
        if steps.exists() and any(p.name.startswith(".") for p in steps.iterdir()):
            break  # the inversion is writing its temporary step folder
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the inversion could be interrupted"
    children.update(descendants(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    server = [p for p in children if "uvicorn" in _cmdline(p)]
    assert server, "expected the run's Prefect server among its children"
    time.sleep(8)  # the reaper's poll and grace period
    alive = [p for p in children if _cmdline(p)]
    assert not alive, f"processes outlived the killed run: {[_cmdline(p) for p in alive]}"

    again = _run(study)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list((tmp_path / "killed" / "work").rglob(".*.tmp-*"))  # no leftovers
    got = _products(tmp_path / "killed" / "releases" / "r0001")
    assert got.keys() == expected.keys()
    same = {k for k in expected if got[k] == expected[k]}
    # NetCDF files carry their creation time in the history attribute; every other product
    # must be byte-identical to the uninterrupted run's.
    differing = {k for k in expected.keys() - same if not k.endswith(".nc")}
    assert not differing, differing


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
