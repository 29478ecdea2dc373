"""The logger of the current Prefect run, or a plain ``talik`` logger outside one."""

from __future__ import annotations

import logging
import sys

__all__ = ["step_logger"]


def step_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run; ``logging.getLogger('talik')`` otherwise.

    Without Prefect imported there is no run: Prefect is not imported for the answer.
    """
    if "prefect" not in sys.modules:
        return logging.getLogger("talik")
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("talik")
