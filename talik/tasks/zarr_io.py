"""Writing Zarr stores the same way everywhere (format 2: readable by every Zarr library)."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import dask
import xarray as xr

__all__ = ["irregular_chunks", "put_chunks", "regular_chunks", "release_freed_memory", "write_zarr",
           "write_zarr_by_tiles"]


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Give the C heap's freed pages back to the system (glibc ``malloc_trim``; else nothing).

    Tiles computed on several threads leave freed blocks of a few MB in glibc's per-thread
    heaps, which it keeps: several hundred MB of resident memory after a pass over the data,
    that the next step does not reuse. Called after each group of tiles.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def write_zarr(ds: xr.Dataset, path: str | Path, **kwargs) -> None:
    """Write ``ds`` to a Zarr store (format 2, consolidated metadata); kwargs go to ``to_zarr``.

    Every chunk is stored, even one holding only the fill value: Zarr's check for those scans
    every chunk written (a few tenths of a second per pass over a stack), and the chunks
    written here are almost never empty.
    """
    kwargs.setdefault("consolidated", True)
    kwargs.setdefault("write_empty_chunks", True)
    ds.to_zarr(path, zarr_format=2, **kwargs)


def irregular_chunks(chunks: Mapping[Hashable, tuple[int, ...]]) -> dict[Hashable, int]:
    """Dimensions whose dask chunks Zarr cannot store, each with the size to use instead.

    Zarr needs every chunk equal but a smaller last one; the size given is the largest.
    """
    return {dim: max(sizes) for dim, sizes in chunks.items()
            if len(sizes) > 1 and (len(set(sizes[:-1])) > 1 or sizes[-1] > sizes[0])}


def regular_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dimensions whose chunks Zarr cannot store (all equal but a smaller last one)."""
    fix = irregular_chunks(ds.chunks)
    return ds.chunk(fix) if fix else ds


def write_zarr_by_tiles(ds: xr.Dataset, path: str | Path, tiles_per_step: int | None = None
                        ) -> None:
    """Write a dask-backed ``(…, y, x)`` dataset a few spatial tiles at a time.

    Dask, given a whole image, starts reading many input tiles ahead of the computation, so
    memory grows with the image. Computing ``tiles_per_step`` tiles (default: two per CPU) of
    one row of chunks at a time keeps peak memory set by the tile size, whatever the image.
    """
    if not {"y", "x"} <= set(ds.dims) or not any(v.chunks for v in ds.variables.values()):
        write_zarr(ds, path, mode="w")
        return
    ds = regular_chunks(ds.unify_chunks())
    step = tiles_per_step or max(2, 2 * (os.cpu_count() or 1))
    write_zarr(ds, path, mode="w", compute=False)
    ys, xs = ds.chunks["y"], ds.chunks["x"]
    y0 = 0
    spatial = [name for name, v in ds.variables.items() if {"y", "x"} <= set(v.dims)]
    for ny in ys:
        x0 = 0
        for i in range(0, len(xs), step):
            nx = sum(xs[i : i + step])
            region = {"y": slice(y0, y0 + ny), "x": slice(x0, x0 + nx)}
            part = ds[spatial].isel(region)
            part = part.drop_vars(list(part.coords))  # coordinates were written up front
            with dask.config.set(scheduler="threads"):
                write_zarr(part, path, region=region, consolidated=False)
            release_freed_memory()
            x0 += nx
        y0 += ny


def put_chunks(store, jobs: list[tuple[str, Callable[[], bytes]]], in_flight: int = 8) -> None:
    """Store encoded chunks as they are: ``(key, read)`` pairs, ``read()`` giving the bytes.

    ``store`` is a Zarr v3 store (e.g. an Icechunk session's); each chunk is read on a thread
    and stored, ``in_flight`` at a time. The caller has written the arrays' metadata, whose
    codecs must decode these bytes.
    """
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = default_buffer_prototype().buffer

    async def put_all() -> None:
        slots = asyncio.Semaphore(in_flight)

        async def put(key: str, read: Callable[[], bytes]) -> None:
            async with slots:
                data = await asyncio.to_thread(read)
                await store.set(key, buffer.from_bytes(data))

        await asyncio.gather(*(put(key, read) for key, read in jobs))

    sync(put_all())
