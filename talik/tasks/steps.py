"""How a step is declared and keeps its outputs: one key, content-addressed folders.

A computing step is a function decorated with :func:`step`, which names it once and makes it
a Prefect task. The step's key is the digest of its name, the inputs it depends on (by
default every parameter: a step or input set by its digest, an options model by its values;
a step may list exactly what it reads instead) and the code it runs (its module and the talik
modules that imports, :func:`~talik.tasks.provenance.code_digest`). That one key is both
Prefect's cache key and the name of the step's output folder ``<work_dir>/steps/<step>/<key>``,
so the two cannot disagree: Prefect skips a step exactly when its folder exists.

The step writes into a temporary sibling and renames it into place when complete, so a crash
never leaves a half-written output that looks finished, and a rerun resumes by recomputing only
the steps that did not finish; when Prefect's cache records were lost, the folder check still
makes the skip safe.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from talik.errors import MissingStepOutputError
from talik.tasks.log import step_logger
from talik.tasks.provenance import code_digest, digest_of
from talik.tasks.records import InputSet, StepOutput

__all__ = ["COMPLETE", "StepDir", "StepRun", "owned_name", "owner_alive", "require",
           "step", "step_folder", "step_path", "this_step"]

COMPLETE = "_COMPLETE"


def _default_parts(arguments: dict[str, Any], exclude: tuple[str, ...]) -> tuple:
    """What a step depends on when it does not say: every parameter but the excluded ones."""
    parts = []
    for name, value in arguments.items():
        if name in exclude:
            continue
        if isinstance(value, StepOutput | InputSet):
            value = value.digest  # an earlier step or the inputs: by their own digest
        elif not (value is None or isinstance(value, BaseModel | str | int | float | bool
                                              | list | tuple | dict)):
            raise TypeError(f"step parameter {name!r}: {type(value).__name__} has no digest; "
                            "give the step a key function")
        parts.append((name, value))
    return tuple(parts)


@dataclass(frozen=True)
class StepRun:
    """The step being run: its name and key (from :func:`this_step`)."""

    name: str
    digest: str

    def folder(self, work_dir: str | Path):
        """The step's output folder (:func:`step_folder`)."""
        return step_folder(work_dir, self.name, self.digest)

    def output(self, path: str | Path, parameters: dict[str, Any] | None = None,
               summary: dict[str, Any] | None = None) -> StepOutput:
        """The record of what the step produced at ``path``."""
        return StepOutput(step=self.name, path=str(path), digest=self.digest,
                          parameters=parameters or {}, summary=summary or {})


_CURRENT: ContextVar[StepRun | None] = ContextVar("talik_step", default=None)


def this_step() -> StepRun:
    """The step whose function is running (inside a function decorated with :func:`step`)."""
    run = _CURRENT.get()
    if run is None:
        raise RuntimeError("this_step() is only available inside a @step function")
    return run


def step(name: str, key: Callable[..., tuple] | None = None,
         exclude: tuple[str, ...] = ("work_dir",)) -> Callable[[Callable], Any]:
    """Declare a computing step: its name, once, and what its output depends on.

    ``key``, given the step's parameters by name, returns the parts its output depends on
    (the options it reads, the digests of its inputs); by default every parameter except
    ``exclude`` (locations, not contents). The step's key is the digest of its name, those
    parts and the code of its module (:func:`~talik.tasks.provenance.code_digest`); it is the
    Prefect cache key and names the output folder. Inside, :func:`this_step` gives the name
    and key. The result is a Prefect task (persisted results), made when first used:
    Prefect is imported then, not by importing the step's module (``talik sentinel1`` and the
    other commands that run steps' functions outside Prefect never import it).
    """
    def decorate(fn: Callable) -> Any:
        signature = inspect.signature(fn)
        module = fn.__module__

        def key_of(arguments: dict[str, Any]) -> str:
            bound = signature.bind_partial(**arguments)
            bound.apply_defaults()
            args = dict(bound.arguments)
            parts = key(**args) if key is not None else _default_parts(args, exclude)
            return digest_of(name, *parts, code_digest(module))

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            token = _CURRENT.set(StepRun(name, key_of(dict(bound.arguments))))
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                _CURRENT.reset(token)
            step_logger().info("step %s: %.1f s", name, time.perf_counter() - start)
            return result

        def make_task() -> Any:
            from prefect import task

            from talik.tasks.step_key import StepKey

            return task(name=name, cache_policy=StepKey(key_of=key_of), persist_result=True)(run)

        return _Step(make_task, run)

    return decorate


class _Step:
    """A step's Prefect task, made on first use (call, ``.submit``, ``.fn``, …)."""

    def __init__(self, make_task: Callable[[], Any], run: Callable) -> None:
        self._make_task = make_task
        self._task: Any = None
        functools.update_wrapper(self, run)

    def _prefect_task(self) -> Any:
        if self._task is None:
            self._task = self._make_task()
        return self._task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._prefect_task()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_task", "_make_task"):
            raise AttributeError(name)
        return getattr(self._prefect_task(), name)


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
