"""Large NetCDF-4 variables written and read chunk by chunk, (de)compressed on every core.

The HDF5 library under netCDF4 compresses each chunk on the writing thread, and HDF5 is not
thread-safe, so a NetCDF product's ``(time, y, x)`` cubes were deflated on one core while the
other waited. Here the netCDF library still defines each cube (dimensions, filters,
chunking, attributes: an ordinary NetCDF-4 variable), and its chunks are then filtered as
HDF5 would — byte shuffle, then deflate — by threads, and stored as they are with HDF5's
direct chunk write (h5py). The deflate is Intel ISA-L's (``isal``): the same zlib streams any
reader inflates, made about ten times faster than zlib's at level 1 with about the same size.
Readers see the same file as if the library had written the values itself.

Reading is the mirror image (:func:`cube_blocks`, :func:`read_variable`): the chunks' places in
the file come from HDF5's chunk index, and threads read, inflate and un-shuffle them. A
variable stored any other way is read by the netCDF library.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import dask.array
import netCDF4
import numpy as np
import xarray as xr
from isal import isal_zlib

__all__ = ["chunk_index", "cube_blocks", "cubes_read_raw", "load_netcdf", "read_variable",
           "write_cubes"]

_SHUFFLE, _DEFLATE = 2, 1  # HDF5 filter ids


def _shuffled_deflate(chunk: np.ndarray, level: int) -> bytes:
    """HDF5's shuffle filter (bytes grouped by their place in the element), then deflate.

    ``level``: ISA-L's, 0–3 (zlib streams, readable by any inflate).
    """
    values = np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("="))  # as declared
    size = values.dtype.itemsize
    columns = values.view(np.uint8).reshape(-1, size)
    planes = np.empty((size, columns.shape[0]), np.uint8)
    for b in range(size):  # one byte plane at a time (faster than a transposed copy)
        planes[b] = columns[:, b]
    return isal_zlib.compress(planes.tobytes(), level)


def _full_chunk(block: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    """A chunk of ``shape`` holding ``block`` at its origin (HDF5 stores edge chunks whole)."""
    if block.shape == shape:
        return block
    out = np.full(shape, fill, dtype=block.dtype)
    out[tuple(slice(0, n) for n in block.shape)] = block
    return out


def _whole_chunks(blocks: tuple[tuple[int, ...], ...], chunk: tuple[int, ...]
                  ) -> tuple[int | tuple[int, ...], ...]:
    """Dask chunks along each dimension made of whole NetCDF chunks (kept where they are)."""
    out: list[int | tuple[int, ...]] = []
    for sizes, c in zip(blocks, chunk, strict=True):
        if all(b % c == 0 for b in sizes[:-1]):
            out.append(sizes)
        else:
            out.append(max(c, max(sizes) // c * c))
    return tuple(out)


def _block_chunks(block: np.ndarray, origin: tuple[int, ...], shape: tuple[int, ...], fill,
                  level: int) -> list[tuple[tuple[int, ...], bytes]]:
    """The filtered chunks of a block of values starting at ``origin``: (chunk offset, bytes)."""
    out = []
    counts = [-(-n // c) for n, c in zip(block.shape, shape, strict=True)]
    for index in np.ndindex(*counts):
        lo = [i * c for i, c in zip(index, shape, strict=True)]
        part = block[tuple(slice(a, a + c) for a, c in zip(lo, shape, strict=True))]
        offset = tuple(o + a for o, a in zip(origin, lo, strict=True))
        out.append((offset, _shuffled_deflate(_full_chunk(part, shape, fill), level)))
    return out


def write_cubes(path: Path, cubes: dict[str, xr.Variable], chunks: dict[str, tuple[int, ...]],
                level: int = 1) -> None:
    """Add the CF-encoded variables ``cubes`` to the NetCDF-4 file at ``path``.

    ``cubes``: name → encoded variable (``xarray.conventions.cf_encoder``; dask-backed or
    not), whose dimensions the file already has. Each is created with deflate ``level``,
    shuffle and ``chunks[name]``; its values are computed a dask block at a time (blocks
    made of whole chunks; dask's chunks are changed where they are not) and its chunks
    compressed on every core, one block per core in flight (memory: one block, all its dates,
    and its temporaries per core).
    """
    import h5py

    fills = {}
    with netCDF4.Dataset(path, "a") as nc:
        for name, var in cubes.items():
            attrs = dict(var.attrs)
            fill = attrs.pop("_FillValue", None)
            # (in this machine's byte order, as the chunks are written: a '<f4' read from a
            # GeoTIFF is the same type, but netCDF4 warns about the explicit order)
            v = nc.createVariable(name, var.dtype.newbyteorder("="), var.dims, zlib=True,
                                  complevel=level, shuffle=True, chunksizes=chunks[name],
                                  fill_value=fill)
            v.setncatts(attrs)
            fills[name] = fill if fill is not None else netCDF4.default_fillvals[var.dtype.str[1:]]
    workers = os.cpu_count() or 1
    with h5py.File(path, "r+") as h5, ThreadPoolExecutor(workers) as pool:
        for name, var in cubes.items():
            shape = chunks[name]
            data = var.data
            if getattr(data, "chunks", None) is None:
                data = dask.array.from_array(np.asarray(data), chunks=data.shape)
            data = data.rechunk(_whole_chunks(data.chunks, shape))
            blocks = data.to_delayed()
            starts = [np.cumsum((0, *c[:-1])) for c in data.chunks]

            def filtered(index: tuple[int, ...], blocks=blocks, starts=starts, shape=shape,
                         fill=fills[name]) -> list[tuple[tuple[int, ...], bytes]]:
                block = np.asarray(dask.compute(blocks[index], scheduler="synchronous")[0])
                origin = tuple(int(starts[d][i]) for d, i in enumerate(index))
                return _block_chunks(block, origin, shape, fill, level)

            dataset = h5[name]
            order = list(np.ndindex(*blocks.shape))
            ahead = workers  # blocks in flight: memory of a few blocks, both cores busy
            pending = [pool.submit(filtered, index) for index in order[:ahead]]
            for k in range(len(order)):
                for offset, chunk in pending[k].result():
                    dataset.id.write_direct_chunk(offset, chunk)
                pending[k] = None
                if k + ahead < len(order):
                    pending.append(pool.submit(filtered, order[k + ahead]))


def _unshuffled(raw: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A chunk's values from its inflated, byte-shuffled bytes (the inverse of the writer's)."""
    size = dtype.itemsize
    planes = np.frombuffer(raw, np.uint8).reshape(size, -1)
    out = np.empty(planes.shape[1] * size, np.uint8)
    columns = out.reshape(-1, size)
    for b in range(size):  # one byte plane at a time (faster than a transposed copy)
        columns[:, b] = planes[b]
    return out.view(dtype).reshape(shape)


def chunk_index(path: Path, name: str):
    """Where the chunks of a shuffle+deflate chunked variable are in the file.

    ``(dataset facts, [(chunk offset, byte offset, size)])``, or None when the variable is
    stored otherwise (contiguous, other filters, a filter skipped for a chunk).
    """
    import h5py

    with h5py.File(path, "r") as h5:
        if name not in h5:
            return None
        ds = h5[name]
        if ds.chunks is None:
            return None
        plist = ds.id.get_create_plist()
        if [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] != [_SHUFFLE, _DEFLATE]:
            return None
        infos: list = []
        if hasattr(ds.id, "chunk_iter"):  # one walk of the chunk index (HDF5 ≥ 1.14)
            ds.id.chunk_iter(infos.append)
        else:  # each lookup walks the index again: quadratic in the number of chunks
            infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
        if any(info.filter_mask for info in infos):
            return None
        facts = (ds.shape, ds.chunks, ds.dtype, ds.fillvalue)
        return facts, [(info.chunk_offset, info.byte_offset, info.size) for info in infos]


def cube_blocks(path: Path, name: str, rows: int | None = None):
    """Yield ``(start, values)`` of variable ``name`` in blocks along its first dimension.

    ``rows``: the block length (default one chunk's); each block's chunks are read, inflated
    and un-shuffled by threads. Values are raw (no CF decoding: the fill value stays as
    stored). A variable not stored as shuffle+deflate chunks is read through netCDF4.
    """
    index = chunk_index(Path(path), name)
    if index is None:
        with netCDF4.Dataset(path) as nc:
            var = nc[name]
            var.set_auto_maskandscale(False)
            n = var.shape[0] if var.ndim else 1
            step = rows or n
            for start in range(0, n, step):
                yield start, np.asarray(var[start:start + step] if var.ndim else var[...])
        return
    (shape, chunks, dtype, fill), infos = index
    step = rows or chunks[0]
    step = max(chunks[0], step // chunks[0] * chunks[0])
    by_row: dict[int, list] = {}
    for info in infos:
        by_row.setdefault(info[0][0] // step, []).append(info)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for k, start in enumerate(range(0, shape[0], step)):
                stop = min(start + step, shape[0])
                parts = by_row.get(k, [])
                expected = -(-(stop - start) // chunks[0]) * int(np.prod(
                    [-(-n // c) for n, c in zip(shape[1:], chunks[1:], strict=True)]))
                if len(parts) == expected:  # every chunk stored: each value is written below
                    block = np.empty((stop - start, *shape[1:]), dtype=dtype)
                else:  # chunks never written hold the fill value
                    block = np.full((stop - start, *shape[1:]), fill, dtype=dtype)

                def place(info, start=start, block=block) -> None:
                    offset, where, size = info
                    values = _unshuffled(isal_zlib.decompress(os.pread(fd, size, where)), dtype,
                                         chunks)
                    lo = [offset[0] - start, *offset[1:]]
                    target = tuple(slice(a, min(a + c, n))
                                   for a, c, n in zip(lo, chunks, block.shape, strict=True))
                    block[target] = values[tuple(slice(0, t.stop - t.start) for t in target)]

                list(pool.map(place, parts))
                yield start, block
    finally:
        os.close(fd)


def read_variable(path: Path, name: str) -> np.ndarray:
    """The raw values of variable ``name`` (see :func:`cube_blocks`), whole."""
    blocks = [values for _, values in cube_blocks(path, name, rows=1 << 30)]
    if not blocks:  # an empty first dimension
        with netCDF4.Dataset(path) as nc:
            var = nc[name]
            return np.empty(var.shape, dtype=var.dtype)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def cubes_read_raw(ds: xr.Dataset) -> list[str]:
    """The ``(time, y, x)``-like variables of an opened NetCDF whose stored values are its values.

    No scale or offset, and no fill value but NaN for floats (none for integers): reading
    them raw (:func:`cube_blocks`) gives what xarray's decoding gives.
    """
    names = []
    for name, var in ds.data_vars.items():
        enc = var.encoding
        if var.ndim < 3 or "scale_factor" in enc or "add_offset" in enc:
            continue
        fills = [enc[k] for k in ("_FillValue", "missing_value") if k in enc]
        stored = np.dtype(enc.get("dtype", var.dtype))
        if stored.kind == "f" and all(np.isnan(f) for f in fills) and stored == var.dtype:
            names.append(name)
        elif stored.kind in "iu" and not fills and stored == var.dtype:
            names.append(name)
    return names


def load_netcdf(path: Path) -> xr.Dataset:
    """A NetCDF file in memory; its large variables read chunk by chunk on every core.

    The same values as ``xr.open_dataset(path).load()`` (:func:`cubes_read_raw` says which
    variables are read raw).
    """
    with xr.open_dataset(path) as ds:
        order = list(ds.data_vars)
        raw = cubes_read_raw(ds)
        loaded = ds.drop_vars(raw).load()
        shells = {name: ds[name] for name in raw}
    for name, var in shells.items():
        loaded[name] = var.copy(data=read_variable(path, name))
    return loaded[order]
