"""Releases as versions: an Icechunk store with a tag per release, and a STAC catalog in each.

* ``<release_dir>/store.icechunk``: an Icechunk repository (Zarr v3 with commits). Each release
  commits its NetCDF products there, one group per product (``sentinel1``, ``longterm``,
  ``drivers_1km``), and is tagged with its id once its folder is in place; readers of a tag see
  that release only, whatever is being written meanwhile. :func:`open_release` reads it.
* the same commit holds the analysis-ready stores the release was made from (the staged
  interferogram stack, GACOS delays, rasters, sparse-sensor pairs) as groups
  ``analysis_ready/<name>``, appended to rather than rewritten when a study is extended in
  time (:mod:`talik.tasks.stack_store`);
* ``<release>/stac/catalog.json``: a self-contained STAC catalog with one item per product
  file (GeoTIFF as Cloud-Optimised GeoTIFF, NetCDF, tables), each asset with its period,
  sensor, units, size and SHA-256 (``file:checksum``, multihash), and one item per group of
  the release's commit (``store-<group>``: the products and the analysis-ready stacks), whose
  asset is the Icechunk store at the commit's snapshot (:func:`open_stac_asset` reads it).

The store is addressed by ``[stores] release_store``: unset, the local folder above; an
``s3://bucket/prefix`` or ``gs://bucket/prefix`` URL puts it in object storage (Icechunk's own
S3/GCS clients; credentials, region and endpoint from the environment, never from the URL).
The release manifest records where its store is, so :func:`open_release` finds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import json
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import dask.array as dsa
import numpy as np
import xarray as xr

from talik.config import StudyConfig
from talik.tasks.netcdf_chunks import chunk_index, cubes_read_raw
from talik.tasks.stack_store import GROUP_PREFIX, StagedStack, commit_stacks
from talik.tasks.validate import NETCDF_LOCK
from talik.tasks.zarr_io import put_chunks

__all__ = ["ICECHUNK_MEDIA_TYPE", "STORE_NAME", "commit_products", "ensure_tag",
           "open_release", "open_stac_asset", "store_products",
           "write_stac_catalog"]

STORE_NAME = "store.icechunk"
ICECHUNK_MEDIA_TYPE = "application/vnd.zarr+icechunk"
"""Media type of a STAC asset that is an Icechunk repository (as xpystac reads them)."""


@functools.cache
def _icechunk():
    """The icechunk module, with its log kept to errors.

    It warns on every open that a local store is not safe for concurrent commits; talik's
    commits hold :func:`_store_lock`.
    """
    import icechunk

    os.environ.setdefault("ICECHUNK_LOG", "error")
    icechunk.initialize_logs()
    return icechunk


@contextlib.contextmanager
def _store_lock(release_dir: str | Path) -> Iterator[None]:
    """An exclusive lock (``flock``) of the store, across threads and processes of a host."""
    path = Path(release_dir) / f".{STORE_NAME}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREADS, path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_THREADS = threading.RLock()  # flock is per open file: threads of a process queue here first


def _storage(release_dir: str | Path, url: str | None):
    """Icechunk storage of the store at ``url`` (None: ``<release_dir>/store.icechunk``)."""
    icechunk = _icechunk()
    parts = urlsplit(url) if url else None
    if parts is None or parts.scheme in ("", "file"):
        path = Path(parts.path) if parts is not None else Path(release_dir) / STORE_NAME
        return icechunk.local_filesystem_storage(str(path))
    bucket, prefix = parts.netloc, parts.path.strip("/") or None
    if parts.scheme == "s3":
        # The AWS SDK's own variables; an endpoint (MinIO, a test server) means path-style.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return icechunk.s3_storage(
            bucket=bucket, prefix=prefix, from_env=True, endpoint_url=endpoint,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            force_path_style=bool(endpoint))
    if parts.scheme in ("gs", "gcs"):
        return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
    raise ValueError(f"release store {url!r}: expected a local path, s3://bucket/prefix or "
                     "gs://bucket/prefix")


def _repository(release_dir: str | Path, create: bool = False, url: str | None = None):
    icechunk = _icechunk()
    storage = _storage(release_dir, url)
    if create:
        return icechunk.Repository.open_or_create(storage)
    return icechunk.Repository.open(storage)


def store_products(files: dict[str, Path]) -> dict[str, Path]:
    """The release files committed to the store: its NetCDF products (name → path)."""
    return {name: path for name, path in sorted(files.items())
            if name.startswith("products/") and name.endswith(".nc")}


@contextlib.contextmanager
def _numcodecs_quiet() -> Iterator[None]:
    """Zarr's warning about numcodecs' codecs silenced.

    The products' cubes use numcodecs' shuffle and zlib (what HDF5 stores): outside the Zarr
    v3 specification, zarr-python reads them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Zarr version 3 specification")
        yield


def _copyable_cubes(path: Path, ds: xr.Dataset) -> dict[str, tuple]:
    """The cubes of NetCDF ``path`` whose stored chunks a Zarr v3 array can hold as they are.

    Those read raw (:func:`talik.tasks.netcdf_chunks.cubes_read_raw`), stored as
    shuffle+deflate chunks in little-endian order, every chunk present (a missing HDF5 chunk
    and a missing Zarr chunk may read as different fill values): name → ``(chunk shape,
    dtype, [(chunk offset, byte offset, size)])``.
    """
    out = {}
    for name in cubes_read_raw(ds):
        index = chunk_index(path, name)
        if index is None:
            continue
        (shape, chunks, dtype, _fill), infos = index
        n_chunks = int(np.prod([-(-n // c) for n, c in zip(shape, chunks, strict=True)]))
        if len(infos) != n_chunks or dtype.newbyteorder("<") != dtype:
            continue
        out[name] = (tuple(chunks), dtype, infos)
    return out


def _write_product(store, group: str, path: Path) -> None:
    """Write the NetCDF product at ``path`` as group ``group`` of a writable session's store.

    Its large cubes keep their NetCDF chunks: the compressed bytes are copied as they are into
    Zarr arrays of the same chunks and codecs (byte shuffle, then zlib: what HDF5's shuffle and
    deflate filters store), so nothing is inflated and compressed again; the values are those
    of the file. Everything else (maps, coordinates, cubes stored otherwise) is read and
    written through xarray.
    """
    from zarr.codecs.numcodecs import Shuffle, Zlib

    with NETCDF_LOCK, xr.open_dataset(path) as ds:
        order = list(ds.data_vars)
        copies = _copyable_cubes(path, ds)
        out = _for_store(ds.drop_vars(list(copies)).load())
        shells = {name: (ds[name].dims, ds[name].shape, dict(ds[name].attrs)) for name in copies}
    encoding = {}
    with _numcodecs_quiet():
        for name, (chunks, dtype, _infos) in copies.items():
            dims, shape, attrs = shells[name]
            # (a placeholder of the stored type: only its metadata is written from here)
            out[name] = xr.Variable(dims, dsa.empty(shape, dtype=dtype, chunks=chunks), attrs)
            encoding[name] = {"chunks": chunks, "compressors": (
                Shuffle(elementsize=dtype.itemsize), Zlib(level=1))}
            if dtype.kind == "f":
                encoding[name]["_FillValue"] = np.nan
        out[order].to_zarr(store, group=group, mode="w", consolidated=False, zarr_format=3,
                           encoding=encoding, compute=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        put_chunks(store, [
            (f"{group}/{name}/c/" + "/".join(str(o // c) for o, c in
                                             zip(offset, chunks, strict=True)),
             functools.partial(os.pread, fd, size, where))
            for name, (chunks, _dtype, infos) in copies.items()
            for offset, where, size in infos])
    finally:
        os.close(fd)


def _for_store(ds: xr.Dataset) -> xr.Dataset:
    out = ds.copy()
    for name in out.variables:
        out[name].encoding = {}
    return out


def commit_products(release_dir: str | Path, products: dict[str, Path], message: str,
                    url: str | None = None, stacks: Sequence[StagedStack] = ()) -> dict:
    """Commit the release's NetCDF products to the store's ``main`` branch; return a record.

    ``products``: release name (``products/<group>.nc``) → the file (as checked: its bytes
    are what the store gets, :func:`_write_product`).

    ``stacks``, the analysis-ready stores the release was made from, go into the same commit
    (groups ``analysis_ready/…``, written only where they changed: :mod:`talik.tasks.stack_store`).

    Publishers of a host take turns (:func:`_store_lock`); each group is written whole, so a
    later commit never needs merging with an earlier one. In object storage, a commit racing
    one from another host fails (Icechunk checks the branch did not move) and the publish
    fails with it: nothing is half-written, and the next run publishes.
    """
    groups = {Path(name).stem: Path(path) for name, path in sorted(products.items())}
    with _store_lock(release_dir):  # one writer at a time: a local store has no safe CAS
        repo = _repository(release_dir, create=True, url=url)
        session = repo.writable_session("main")
        for group, path in groups.items():
            _write_product(session.store, group, path)
        analysis_ready = commit_stacks(session.store, list(stacks))
        snapshot = session.commit(message)
    record = {"path": STORE_NAME} if url is None else {"url": url}
    return {**record, "snapshot": snapshot, "groups": sorted(groups),
            "analysis_ready": {f"{GROUP_PREFIX}/{name}": done
                               for name, done in analysis_ready.items()}}


def ensure_tag(release_dir: str | Path, release_id: str, snapshot: str,
               url: str | None = None) -> None:
    """Tag ``snapshot`` as ``release_id`` unless the tag exists already."""
    with _store_lock(release_dir):
        repo = _repository(release_dir, create=True, url=url)
        if release_id not in repo.list_tags():
            repo.create_tag(release_id, snapshot)


def _store_url_of(release_dir: str | Path, release_id: str) -> str | None:
    """Where the release's manifest says its store is (None: the local store)."""
    manifest = Path(release_dir) / release_id / "manifest.json"
    if not manifest.exists():
        return None
    return (json.loads(manifest.read_text()).get("store") or {}).get("url")


def open_release(release_dir: str | Path, release_id: str, group: str = "sentinel1",
                 url: str | None = None) -> xr.Dataset:
    """A product of release ``release_id`` read from the versioned store at its tag (lazy).

    The store is the one the release's manifest names (``url`` to give another).
    """
    url = url or _store_url_of(release_dir, release_id)
    repo = _repository(release_dir, url=url)
    if release_id not in repo.list_tags():
        where = url or Path(release_dir) / STORE_NAME
        raise FileNotFoundError(f"no tag {release_id!r} in {where} "
                                f"(tags: {', '.join(sorted(repo.list_tags())) or 'none'})")
    session = repo.readonly_session(tag=release_id)
    with _numcodecs_quiet():
        return xr.open_zarr(session.store, group=group, consolidated=False)


# ----------------------------------------------------------------------------------- STAC
def _datetime(value: np.datetime64) -> dt.datetime:
    return dt.datetime.fromisoformat(str(np.datetime_as_string(value, unit="s"))).replace(
        tzinfo=dt.UTC)


def _footprint(nc: Path) -> tuple[list[float], dict, str | None]:
    """(lon/lat bbox, GeoJSON polygon, CRS WKT) of a product's grid."""
    from pyproj import CRS, Transformer

    with NETCDF_LOCK, xr.open_dataset(nc) as ds:
        x, y = ds["x"].values, ds["y"].values
        wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds else None
    xs = [float(x.min()), float(x.max())]
    ys = [float(y.min()), float(y.max())]
    if wkt:
        to_ll = Transformer.from_crs(CRS.from_wkt(wkt), "EPSG:4326", always_xy=True)
        lon, lat = to_ll.transform([xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]])
    else:
        lon, lat = [xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    ring = [[a, b] for a, b in zip(lon, lat, strict=True)] + [[lon[0], lat[0]]]
    return bbox, {"type": "Polygon", "coordinates": [ring]}, wkt


_MEDIA = {".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
          ".nc": "application/netcdf", ".csv": "text/csv", ".json": "application/json"}


def _period(ds: xr.Dataset) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last date a dataset covers: its ``time`` or ``date`` axis, or its pairs' dates."""
    for first, last in (("time", "time"), ("date", "date"),
                        ("reference_date", "secondary_date")):
        if first in ds.variables and last in ds.variables and ds[first].size:
            start, end = ds[first].values.min(), ds[last].values.max()
            if np.issubdtype(np.asarray(start).dtype, np.datetime64):
                return _datetime(start), _datetime(end)
    return None


def _store_items(cfg: StudyConfig, store: dict, release_dir: Path, geometry: dict,
                 bbox: list[float], wkt: str | None, study_period: tuple) -> list:
    """One STAC item per group of the release's commit, its asset the store at that snapshot."""
    import pystac

    url = store.get("url")
    href = url or str((release_dir / store["path"]).resolve())
    session = _repository(release_dir, url=url).readonly_session(snapshot_id=store["snapshot"])
    groups = list(store["groups"]) + [name for name, done in store["analysis_ready"].items()
                                      if done != "removed"]
    items = []
    for group in groups:
        with xr.open_zarr(session.store, group=group, consolidated=False) as ds:
            start, end = _period(ds) or study_period
            units = {name: ds[name].attrs.get("units", "") for name in ds.data_vars}
            shapes = {name: list(ds[name].shape) for name in ds.data_vars}
        name = group.removeprefix(f"{GROUP_PREFIX}/")
        from_s1 = name in ("sentinel1", "gacos") or group == "sentinel1"
        properties = {"start_datetime": start.isoformat(), "end_datetime": end.isoformat(),
                      "talik:sensor": cfg.s1_sensor.platform if from_s1 else "multi-sensor",
                      "talik:units": units, "talik:shapes": shapes,
                      "talik:analysis_ready": group.startswith(f"{GROUP_PREFIX}/")}
        if wkt:
            properties["proj:wkt2"] = wkt
        item = pystac.Item(id="store-" + group.replace("/", "-"), geometry=geometry, bbox=bbox,
                           datetime=None, start_datetime=start, end_datetime=end,
                           properties=properties)
        item.add_asset("zarr", pystac.Asset(
            href=href, media_type=ICECHUNK_MEDIA_TYPE, roles=["data"],
            title=f"group {group} of the release store",
            extra_fields={"zarr:zarr_format": 3, "zarr:consolidated": False,
                          "icechunk:snapshot_id": store["snapshot"], "talik:group": group}))
        items.append(item)
    return items


def open_stac_asset(asset) -> xr.Dataset:
    """The group a store item's asset names, read lazily from its Icechunk snapshot.

    ``asset``: a ``pystac.Asset`` of media type :data:`ICECHUNK_MEDIA_TYPE` written by
    :func:`write_stac_catalog` (the store's path or URL, ``icechunk:snapshot_id`` and
    ``talik:group``).
    """
    if asset.media_type != ICECHUNK_MEDIA_TYPE:
        raise ValueError(f"STAC asset {asset.href}: media type {asset.media_type!r}, expected "
                         f"{ICECHUNK_MEDIA_TYPE!r} (a talik release store)")
    missing = [key for key in ("icechunk:snapshot_id", "talik:group")
               if key not in asset.extra_fields]
    if missing:
        raise ValueError(f"STAC asset {asset.href}: no {', '.join(missing)} field")
    href = asset.get_absolute_href() or asset.href
    session = _repository(".", url=href).readonly_session(
        snapshot_id=asset.extra_fields["icechunk:snapshot_id"])
    with _numcodecs_quiet():
        return xr.open_zarr(session.store, group=asset.extra_fields["talik:group"],
                            consolidated=False)


def write_stac_catalog(folder: Path, cfg: StudyConfig, products: list[dict], digest: str,
                       store: dict | None = None, release_dir: Path | None = None) -> Path:
    """A self-contained STAC catalog of the products in release ``folder`` (``stac/``).

    ``products`` are the manifest's entries (``path``, ``sha256``, ``bytes``); ``store``, the
    record of the release's commit (:func:`commit_products`), adds an item per group of it
    (``release_dir``: where a local store lies).
    """
    import pystac

    s1_nc = folder / "products" / "sentinel1.nc"
    bbox, geometry, wkt = _footprint(s1_nc)
    with NETCDF_LOCK, xr.open_dataset(s1_nc) as ds:
        s1_start, s1_end = _datetime(ds["time"].values[0]), _datetime(ds["time"].values[-1])
        units = {name: ds[name].attrs.get("units", "") for name in ds.data_vars}
    if cfg.periods:
        long_start = dt.datetime.combine(min(p.start for p in cfg.periods), dt.time(),
                                         dt.UTC)
        long_end = dt.datetime.combine(max(p.end for p in cfg.periods), dt.time(), dt.UTC)
    else:
        long_start, long_end = s1_start, s1_end
    catalog = pystac.Catalog(id=f"talik-{cfg.name}", title=cfg.title,
                             description=f"Products of a talik release of study {cfg.name} "
                                         f"(release digest {digest[:12]})")
    for entry in products:
        name = entry["path"]
        if not name.startswith("products/"):
            continue
        path = Path(name)
        from_s1 = path.stem in ("sentinel1", "velocity", "velocity_vertical",
                                "thaw_season_deformation_mean")
        start, end = (s1_start, s1_end) if from_s1 else (long_start, long_end)
        properties = {"start_datetime": start.isoformat(), "end_datetime": end.isoformat(),
                      "talik:sensor": cfg.s1_sensor.platform if from_s1 else "multi-sensor"}
        if path.stem in units:
            properties["talik:units"] = units[path.stem]
        if wkt:
            properties["proj:wkt2"] = wkt
        item_id = str(path.with_suffix("")).removeprefix("products/").replace("/", "-")
        item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=None,
                           start_datetime=start, end_datetime=end, properties=properties)
        item.add_asset("data", pystac.Asset(
            href=str((folder / name).resolve()), media_type=_MEDIA.get(path.suffix),
            roles=["data"], extra_fields={"file:size": entry["bytes"],
                                          "file:checksum": "1220" + entry["sha256"]}))
        catalog.add_item(item)
    if store is not None:
        for item in _store_items(cfg, store, release_dir or folder.parent, geometry, bbox, wkt,
                                 (long_start, long_end)):
            catalog.add_item(item)
    root = folder / "stac"
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    json.loads((root / "catalog.json").read_text())  # written and valid JSON
    return root / "catalog.json"
