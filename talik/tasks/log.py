"""The logger of the current Prefect run, or a plain ``talik`` logger outside one."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

__all__ = ["step_logger"]


def step_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run; ``logging.getLogger('talik')`` otherwise."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("talik")
