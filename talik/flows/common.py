"""Options shared by the flows: where step caches live, and forced recomputation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task

__all__ = ["step_options"]


def step_options(task: Task, work_dir: str, refresh: bool = False) -> Task:
    """A computing step configured to keep its cache and results in the study's work folder.

    Keeping them beside the step outputs means deleting a work folder also forgets its cache,
    so a cached step never points at outputs that no longer exist. ``refresh`` recomputes.
    """
    cache = Path(work_dir) / ".prefect-cache"
    options: dict[str, Any] = {
        "result_storage": cache / "results",
        "cache_policy": task.cache_policy.configure(key_storage=cache / "keys"),
        "refresh_cache": refresh,
    }
    return task.with_options(**options)
