"""Releases are immutable, idempotent, atomic under crashes and safe under concurrency."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from talik.config import load_study
from talik.tasks.publish import list_releases, write_release
from talik.tasks.records import FileRecord, InputManifest, StepOutput

from .conftest import write_study


def _geotiff(path: Path, values: np.ndarray | None = None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    data = np.ones((4, 5), np.float32) if values is None else values.astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1],
                       count=1, dtype="float32", crs="EPSG:32647",
                       transform=from_origin(5e5, 4.2e6, 80, 80)) as dst:
        dst.write(data, 1)


@pytest.fixture()
def setup(tmp_path):
    study = write_study(tmp_path, tmp_path / "raw")
    cfg = load_study(study)
    product = tmp_path / "a.nc"
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_netcdf(product)
    other = tmp_path / "b.tif"
    _geotiff(other)
    manifest = InputManifest(root=str(tmp_path), source_kind="local", locations={},
                             files=[FileRecord(path="a.nc", role="x", sha256="0" * 64, bytes=1)],
                             digest="d" * 64)
    steps = [StepOutput(step="s", path=str(tmp_path), digest="e" * 64)]
    return cfg, manifest, steps, {"products/a.nc": product, "products/b.tif": other}


def test_publish_is_idempotent(setup):
    cfg, manifest, steps, files = setup
    first = write_release(cfg, manifest, steps, files, "# report\n")
    again = write_release(cfg, manifest, steps, files, "# report\n")
    assert first.created and not again.created
    assert again.release.id == first.release.id == "r0001"
    changed = manifest.model_copy(update={"digest": "f" * 64})
    second = write_release(cfg, changed, steps, files, "# report\n")
    assert second.created and second.release.id == "r0002"
    assert (Path(cfg.stores.release_dir) / "LATEST").read_text().strip() == "r0002"


def test_crash_during_publish_leaves_previous_release_intact(setup, monkeypatch):
    cfg, manifest, steps, files = setup
    first = write_release(cfg, manifest, steps, files, "# report\n")
    before = sorted(p.relative_to(first.release.path) for p in Path(first.release.path).rglob("*"))
    calls = {"n": 0}
    real_copy = shutil.copy2

    def crashing_copy(src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", crashing_copy)
    with pytest.raises(OSError, match="disk full"):
        write_release(cfg, manifest.model_copy(update={"digest": "1" * 64}), steps, files, "x")
    root = Path(cfg.stores.release_dir)
    assert [r.id for r in list_releases(root)] == ["r0001"]
    assert not list(root.glob(".staging-*"))  # nothing half-written is left behind
    after = sorted(p.relative_to(first.release.path) for p in Path(first.release.path).rglob("*"))
    assert before == after
    monkeypatch.setattr(shutil, "copy2", real_copy)
    retry = write_release(cfg, manifest.model_copy(update={"digest": "1" * 64}), steps, files, "x")
    assert retry.created and retry.release.id == "r0002"


def test_concurrent_publishers_do_not_clobber(setup):
    cfg, manifest, steps, files = setup
    outcomes = []

    def publish(digit: str) -> None:
        outcomes.append(write_release(cfg, manifest.model_copy(update={"digest": digit * 64}),
                                      steps, files, "x"))

    threads = [threading.Thread(target=publish, args=(str(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(o.release.id for o in outcomes)
    assert ids == ["r0001", "r0002", "r0003", "r0004"]
    assert len({o.release.digest for o in outcomes}) == 4


def _sentinel1_product(path: Path, velocity: np.ndarray | None = None, mask=None,
                       times=None) -> Path:
    """A minimal Sentinel-1 product: a 4 × 5 grid, 6 dates, every pixel solved and trusted."""
    times = (np.array(["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01", "2020-05-01",
                       "2020-06-01"], dtype="datetime64[ns]") if times is None else times)
    v = np.full((4, 5), -12.0) if velocity is None else velocity
    years = (times - times[0]) / np.timedelta64(1, "D") / 365.25
    xr.Dataset({
        "displacement": (("time", "y", "x"), (years[:, None, None] * v[None]).astype(np.float32)),
        "velocity": (("y", "x"), v),
        "residual_rms": (("y", "x"), np.full((4, 5), 1.0, np.float32)),
        "mask": (("y", "x"), np.ones((4, 5), np.uint8) if mask is None else mask),
    }, coords={"time": times}).to_netcdf(path)
    return path


def _s1_release(tmp_path: Path, name: str, **kwargs) -> dict[str, Path]:
    folder = tmp_path / name
    folder.mkdir()
    files = {"products/sentinel1.nc": _sentinel1_product(folder / "sentinel1.nc", **kwargs)}
    for tif in ("velocity", "velocity_vertical", "thaw_season_deformation_mean"):
        _geotiff(folder / f"{tif}.tif")
        files[f"products/{tif}.tif"] = folder / f"{tif}.tif"
    return files


BAD_RELEASES = {
    "implausible velocity": ({"velocity": np.where(np.eye(4, 5) > 0, 9e3, -12.0)},
                             "max_abs_velocity_mm_yr"),
    "empty mask": ({"mask": np.zeros((4, 5), np.uint8)}, "min_trusted_fraction"),
    "time not increasing": ({"times": np.array(["2020-01-01", "2020-03-01", "2020-02-01",
                                                "2020-04-01", "2020-05-01", "2020-06-01"],
                                               dtype="datetime64[ns]")}, "strictly increasing"),
    "NaN explosion": ({"velocity": np.where(np.arange(20).reshape(4, 5) < 3, -12.0, np.nan)},
                      "max_solved_drop"),
}


@pytest.mark.parametrize("case", list(BAD_RELEASES))
def test_a_release_failing_its_checks_is_not_published(setup, tmp_path, case):
    from talik.tasks.validate import ReleaseCheckError

    cfg, manifest, _, _ = setup
    steps = [StepOutput(step="sentinel1-timeseries", path=str(tmp_path), digest="e" * 64)]
    good = write_release(cfg, manifest, steps, _s1_release(tmp_path, "good"), "# ok\n")
    assert good.created
    root = Path(cfg.stores.release_dir)
    kwargs, named = BAD_RELEASES[case]
    if case == "NaN explosion":  # the solved pixels (finite quality layers) collapse too
        files = _s1_release(tmp_path, "bad", **kwargs)
        ds = xr.open_dataset(files["products/sentinel1.nc"]).load()
        ds["residual_rms"] = ds["residual_rms"].where(np.isfinite(ds["velocity"]))
        ds.to_netcdf(tmp_path / "bad" / "s1b.nc")
        files["products/sentinel1.nc"] = tmp_path / "bad" / "s1b.nc"
    else:
        files = _s1_release(tmp_path, "bad", **kwargs)
    with pytest.raises(ReleaseCheckError, match=named) as err:
        write_release(cfg, manifest.model_copy(update={"digest": "2" * 64}), steps, files, "x")
    assert "previous release stays LATEST" in str(err.value)
    assert (root / "LATEST").read_text().strip() == "r0001"
    visible = sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))
    assert visible == ["LATEST", "r0001", "store.icechunk"]  # no staging folder left
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(root / "store.icechunk")))
    assert set(repo.list_tags()) == {"r0001"}  # nothing of the refused release is tagged


def test_missing_or_unreadable_products_are_refused(setup, tmp_path):
    from talik.tasks.validate import ReleaseCheckError

    cfg, manifest, _, _ = setup
    steps = [StepOutput(step="sentinel1-timeseries", path=str(tmp_path), digest="e" * 64)]
    files = _s1_release(tmp_path, "partial")
    del files["products/velocity.tif"]
    truncated = tmp_path / "partial" / "velocity_vertical.tif"
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ReleaseCheckError) as err:
        write_release(cfg, manifest, steps, files, "x")
    assert err.value.problems[0] == "products/velocity.tif is missing"
    assert any(p.startswith("products/velocity_vertical.tif cannot be read")
               for p in err.value.problems)
    assert not (Path(cfg.stores.release_dir) / "LATEST").exists()
    import pickle

    again = pickle.loads(pickle.dumps(err.value))  # crosses process boundaries intact
    assert again.problems == err.value.problems and str(again) == str(err.value)


def _chunked_s1_release(tmp_path: Path, name: str, partial: bool = False):
    """A Sentinel-1 release whose cubes are chunked as the time-series step writes them.

    Byte shuffle + deflate (:func:`talik.tasks.netcdf_chunks.write_cubes`), with NaNs and edge
    chunks; ``partial``: the displacement written by the netCDF library in its first chunk of
    rows and columns only (the others are never stored; their pixels unsolved). Masked where
    NaN. Returns the files and the values.
    """
    import netCDF4

    from talik.tasks.netcdf_chunks import write_cubes

    files = _s1_release(tmp_path, name)
    rng = np.random.default_rng(7)
    times = np.arange("2020-01-01", "2020-12-25", 12, dtype="datetime64[D]").astype(
        "datetime64[ns]")
    shape = (times.size, 21, 34)
    disp = (rng.normal(size=shape) * 20).astype(np.float32)
    disp[:, 3:6, 5:9] = np.nan
    solved = np.ones(shape[1:], bool)
    if partial:
        solved[16:], solved[:, 16:] = False, False
        disp[:, ~solved] = np.nan
    mask = np.isfinite(disp).all(axis=0).astype(np.uint8)
    ds = xr.Dataset({
        "displacement": (("time", "y", "x"), disp, {"units": "mm"}),
        "bridged": (("time", "y", "x"), (rng.random(shape) < 0.1).astype(np.uint8)),
        "velocity": (("y", "x"), np.full(shape[1:], -12.0)),
        "residual_rms": (("y", "x"), np.where(solved, 1.0, np.nan).astype(np.float32)),
        "mask": (("y", "x"), mask),
    }, coords={"time": times, "y": np.arange(shape[1]) * -80.0, "x": np.arange(shape[2]) * 80.0})
    path = tmp_path / name / "sentinel1.nc"
    path.unlink()
    cubes = ["bridged"] if partial else ["displacement", "bridged"]
    ds.drop_vars(["displacement", "bridged"]).to_netcdf(path, engine="netcdf4")
    variables, _ = xr.conventions.encode_dataset_coordinates(ds)
    encoded, _ = xr.conventions.cf_encoder({n: variables[n] for n in cubes}, {})
    write_cubes(path, encoded, {n: (8, 16, 16) for n in cubes})
    if partial:
        with netCDF4.Dataset(path, "a") as nc:
            v = nc.createVariable("displacement", "f4", ("time", "y", "x"), zlib=True,
                                  shuffle=True, chunksizes=(8, 16, 16), fill_value=np.nan)
            v.units = "mm"
            v[:, :16, :16] = disp[:, :16, :16]
    files["products/sentinel1.nc"] = path
    return files, ds


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")
@pytest.mark.parametrize("partial", [False, True], ids=["chunks copied", "chunks missing"])
def test_the_store_holds_the_product_files_values_its_chunks_copied(setup, tmp_path, partial):
    """The store's cubes are the NetCDF file's chunks, copied as they are (same chunks, byte
    shuffle + zlib codecs); a cube with chunks never stored is written through xarray. Either
    way the store at the tag gives exactly the file's values."""
    import icechunk
    import zarr

    from talik.tasks.release_store import open_release

    cfg, manifest, _, _ = setup
    steps = [StepOutput(step="sentinel1-timeseries", path=str(tmp_path), digest="e" * 64)]
    files, truth = _chunked_s1_release(tmp_path, "cubes", partial=partial)
    out = write_release(cfg, manifest, steps, files, "x")
    root = Path(cfg.stores.release_dir)
    stored = open_release(root, out.release.id).load()
    with xr.open_dataset(files["products/sentinel1.nc"]) as nc:
        for name in ("displacement", "bridged", "velocity", "mask"):
            np.testing.assert_array_equal(stored[name].values, nc[name].values)
            assert stored[name].dtype == nc[name].dtype
    np.testing.assert_array_equal(stored["displacement"].values, truth["displacement"].values)
    np.testing.assert_array_equal(stored["bridged"].values, truth["bridged"].values)
    assert stored["displacement"].attrs["units"] == "mm"
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(root / "store.icechunk")))
    group = zarr.open_group(repo.readonly_session(tag=out.release.id).store, mode="r")
    for name in ("bridged",) if partial else ("displacement", "bridged"):
        codecs = [type(c).__name__ for c in group[f"sentinel1/{name}"].metadata.codecs]
        assert codecs == ["BytesCodec", "Shuffle", "Zlib"]
        assert group[f"sentinel1/{name}"].chunks == (8, 16, 16)
    if partial:  # (not copied: xarray's own encoding)
        codecs = [type(c).__name__ for c in group["sentinel1/displacement"].metadata.codecs]
        assert "Zlib" not in codecs


def test_a_corrupt_cube_chunk_refuses_the_release_and_commits_nothing(setup, tmp_path):
    """A damaged deflate stream in the displacement cube: the check that reads the cube names
    the release file; nothing is published or tagged, and LATEST is not made."""
    import h5py

    from talik.tasks.validate import ReleaseCheckError

    cfg, manifest, _, _ = setup
    steps = [StepOutput(step="sentinel1-timeseries", path=str(tmp_path), digest="e" * 64)]
    files, _ = _chunked_s1_release(tmp_path, "corrupt")
    path = files["products/sentinel1.nc"]
    with h5py.File(path, "r") as h5:
        info = h5["displacement"].id.get_chunk_info(3)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        f.write(b"\x00" * 64)
    with pytest.raises(ReleaseCheckError) as err:
        write_release(cfg, manifest, steps, files, "x")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("products/sentinel1.nc cannot be read")
    root = Path(cfg.stores.release_dir)
    assert not (root / "LATEST").exists() and not list(root.glob("r0*"))
    assert not (root / "store.icechunk").exists()  # (the check comes before the commit)
