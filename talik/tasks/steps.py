"""How a step keeps its outputs: content-addressed folders, atomic completion, Prefect caching.

A step's output folder is ``<work_dir>/steps/<step>/<digest>``, where the digest covers the
step's inputs (their own digests), its parameters and talik's code. The step writes into a
temporary sibling and renames it into place when complete, so a crash never leaves a
half-written output that looks finished, and a rerun resumes by recomputing only the steps
that did not finish. Prefect's cache (inputs + task source + the code the step imports) lets a rerun skip
finished steps without even starting them; the folder check makes the skip safe even when
Prefect's cache records were lost.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext

from talik.errors import MissingStepOutputError
from talik.tasks.provenance import code_digest

__all__ = ["COMPLETE", "STEP_CACHE", "StepDir", "TalikCode", "owned_name", "owner_alive", "require",
           "step_folder", "step_path"]

COMPLETE = "_COMPLETE"


class TalikCode(CachePolicy):
    """Cache-key component: the fingerprint of the code a step runs.

    Its module and the talik modules it imports, transitively (:func:`code_digest`): an edit
    of anything the step imports invalidates it, an edit elsewhere (the CLI, another
    analysis) does not. The step's output folder digest uses the same fingerprint.
    """

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """The digest of the code of the task's module."""
        return code_digest(task_ctx.task.fn.__module__)


STEP_CACHE = INPUTS + TASK_SOURCE + TalikCode()
"""Cache policy of every computing step."""


@dataclass(frozen=True)
class StepDir:
    """Where a step writes (``work``) and where its output ends up (``final``).

    ``done`` means the output is already complete and nothing needs writing.
    """

    work: Path
    final: Path
    done: bool


def step_path(work_dir: str | Path, step: str, digest: str) -> Path:
    """Final output folder of a step with this digest."""
    return Path(work_dir) / "steps" / step / digest[:16]


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def owner_alive(tmp_name: str, prefix: str) -> bool:
    """Whether the process that made a temporary step folder may still be writing it.

    The name carries ``<host>-<pid>-<random>``: a folder of this host whose process is gone
    is a leftover of a killed run; folders of other hosts (a shared work store) are left to
    their own host.
    """
    try:
        host, pid, _ = tmp_name[len(prefix):].rsplit("-", 2)
        pid_n = int(pid)
    except ValueError:
        return False  # an older name without host and pid: no process can be writing it
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_name(prefix: str) -> str:
    """A temporary name ``<prefix><host>-<pid>-<random>`` that says who is writing it."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_leftovers(final: Path) -> None:
    """Delete temporary folders of this step left by killed runs on this host."""
    prefix = _tmp_prefix(final)
    for old in final.parent.glob(prefix + "*"):
        if old.is_dir() and not owner_alive(old.name, prefix):
            shutil.rmtree(old, ignore_errors=True)


def _complete(folder: Path) -> bool:
    return (folder / COMPLETE).exists()


@contextmanager
def step_folder(work_dir: str | Path, step: str, digest: str):
    """Yield a :class:`StepDir`; write into ``.work`` unless ``.done``.

    On normal exit the temporary folder is renamed to its final name and marked complete; on
    an exception it is removed and nothing final is touched. When another process completed
    the same step (same digest, so the same content) in the meantime, its folder is kept and
    this one discarded: a completed step folder is never removed or replaced. Temporary
    folders of killed runs of this step are removed first.
    """
    final = step_path(work_dir, step, digest)
    if _complete(final):
        yield StepDir(final, final, True)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = final.parent / owned_name(_tmp_prefix(final))
    tmp.mkdir()
    try:
        yield StepDir(tmp, final, False)
        (tmp / COMPLETE).write_text(digest + "\n")
        if not _complete(final):
            if final.exists():  # an incomplete leftover of a crashed run (never a complete one)
                shutil.rmtree(final, ignore_errors=True)
            try:
                tmp.rename(final)
            except OSError:
                if not _complete(final):  # not a concurrent completion: a real failure
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require(path: str | Path, step: str, rerun_hint: Callable[[], str] | None = None) -> Path:
    """Return ``path`` if the step output exists, else explain how to recompute it."""
    p = Path(path)
    if not p.exists():
        hint = rerun_hint() if rerun_hint else "rerun with --refresh to recompute cached steps"
        raise MissingStepOutputError(f"output of step '{step}' is missing at {p}; {hint}")
    return p
