"""Progress output of long commands: step messages and dask progress bars on standard error.

Inside a Prefect run, messages go to Prefect's run logger (and its UI); outside one (the
``talik sentinel1`` command) they go to the ``talik`` logger, which :func:`progress_output`
connects to standard error for the duration of a command. Every dask computation that takes
longer than ``min_seconds`` (reading tiles, the inversion, writing stores) shows a bar.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from timeit import default_timer

__all__ = ["progress_output"]


@contextmanager
def progress_output(enabled: bool = True, min_seconds: float = 1.0) -> Iterator[None]:
    """Show the ``talik`` logger's INFO messages and dask progress bars while inside."""
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    class _PromptProgressBar(ProgressBar):
        """dask's bar, whose timer wakes as soon as a computation ends.

        The stock bar's timer sleeps ``dt`` between redraws and each computation waits for it,
        so every small compute cost up to ``dt`` (half a second here: 12 s of a 42 s run).
        """

        def _start(self, dsk) -> None:
            self._stop = threading.Event()
            super()._start(dsk)

        def _finish(self, dsk, state, errored) -> None:
            self._stop.set()
            super()._finish(dsk, state, errored)

        def _timer_func(self) -> None:
            while self._running:
                elapsed = default_timer() - self._start_time
                if elapsed > self._minimum:
                    self._update_bar(elapsed)
                if self._stop.wait(self._dt):
                    return

    logger = logging.getLogger("talik")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    previous, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # once on the terminal, not again through a root handler
    try:
        with _PromptProgressBar(minimum=min_seconds, dt=0.5, out=sys.stderr):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagate
