"""The Prefect cache policy of a step (:func:`talik.tasks.steps.step`).

Kept apart so that the steps' modules import Prefect only when a step's task is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

__all__ = ["StepKey"]


@dataclass
class StepKey(CachePolicy):
    """Prefect cache policy of a step: its key, which also names its output folder."""

    key_of: Callable[[dict[str, Any]], str] | None = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """The step's key for these inputs."""
        return self.key_of(inputs) if self.key_of is not None else None
