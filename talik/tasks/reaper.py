"""A watchdog that stops a run's child processes when the run itself is killed.

Prefect's throwaway API server (uvicorn) and Dask workers are children of the ``talik``
process; when that process is SIGKILLed they are reparented to PID 1 and keep running. The
reaper is a separate process (its own session, so a kill of the run's process group spares it)
that watches the run's PID: while the run lives it keeps the list of the run's descendants
(with their start times, so a reused PID is never mistaken for one of them); once the run is
gone it terminates those still alive (SIGTERM, then SIGKILL after a grace period) and exits.
Linux only (it reads ``/proc``); elsewhere it is not started.

    python -m talik.tasks.reaper PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["descendants", "start_reaper"]

POLL_S = 0.5
GRACE_S = 5.0


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every descendant of ``root`` → its start time (clock ticks since boot)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        info = _stat(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
            starts[pid] = info[1]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and child in starts:
                out[child] = starts[child]
                todo.append(child)
    return out


def _alive(pid: int, start: int) -> bool:
    info = _stat(pid)
    return info is not None and info[1] == start


def watch(parent: int) -> None:
    """Wait for ``parent`` to end; then stop the descendants it left behind."""
    known: dict[int, int] = {}
    me = os.getpid()
    while _stat(parent) is not None:
        known.update({p: s for p, s in descendants(parent).items() if p != me})
        time.sleep(POLL_S)
    left = {p: s for p, s in known.items() if _alive(p, s)}
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in left.items()):
        time.sleep(0.1)
    for pid, start in left.items():
        if _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_reaper() -> subprocess.Popen | None:
    """Start the watchdog of this process (Linux only; once per process)."""
    if not sys.platform.startswith("linux") or os.environ.get("TALIK_REAPER_OF") == str(os.getpid()):
        return None
    os.environ["TALIK_REAPER_OF"] = str(os.getpid())
    return subprocess.Popen([sys.executable, "-m", "talik.tasks.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


if __name__ == "__main__":  # pragma: no cover - run as its own process
    watch(int(sys.argv[1]))


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a child process: TERM, wait, TERM again, then KILL.

    A Prefect worker turns the first TERM into SIGINT, which a background job may ignore.
    """
    for sig in (signal.SIGTERM, signal.SIGTERM):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout=10)
