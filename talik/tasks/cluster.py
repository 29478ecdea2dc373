"""Optional connection to a running Dask cluster for the heavy steps.

A cloud worker points the Sentinel-1 chain at a ``distributed`` scheduler by setting the
standard Dask setting ``scheduler-address`` (environment variable ``DASK_SCHEDULER_ADDRESS``,
e.g. ``tcp://dask-scheduler:8786``). Without it, dask's local threads do the work. The result
is the same either way (tests/test_sentinel1_truth.py checks a LocalCluster against threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask

__all__ = ["configured_scheduler", "dask_cluster"]


def configured_scheduler() -> str | None:
    """The configured scheduler address, or None for local threads."""
    address = dask.config.get("scheduler-address", None)
    return str(address) if address else None


@contextlib.contextmanager
def dask_cluster(timeout: str = "30s") -> Iterator[str | None]:
    """Run the enclosed dask computations on the configured cluster, if there is one.

    Yields the scheduler address used, or None when computing with local threads. An
    unreachable scheduler fails within the connection timeout with the address in the error.
    """
    address = configured_scheduler()
    if address is None:
        yield None
        return
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=True)
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the Dask scheduler at {address!r} (from the 'scheduler-address' "
            f"setting / DASK_SCHEDULER_ADDRESS): {exc}") from exc
    with client:
        yield address
