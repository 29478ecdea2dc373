"""Analysis-ready stacks in the release store: copied, appended, left as they are, rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import xarray as xr

from talik.tasks import stack_store
from talik.tasks.stack_store import StagedStack, commit_stacks
from talik.tasks.zarr_io import write_zarr

N_Y, N_X = 40, 30


def _stack(n: int, seed: int = 0) -> xr.Dataset:
    """A staged-like stack of ``n`` pairs: LOS mm (float32), coherence as 8-bit codes."""
    rng = np.random.default_rng(seed)
    los = rng.normal(0, 20, (n, N_Y, N_X)).astype(np.float32)
    los[:, :3, :3] = np.nan  # a NaN corner in every pair
    coh = np.round(rng.uniform(0, 1, (n, N_Y, N_X)) * 250) / 250
    coh[:, -2:, :] = np.nan
    return xr.Dataset(
        {"los_mm": (("pair", "y", "x"), los, {"units": "mm"}),
         "coherence": (("pair", "y", "x"), coh.astype(np.float32), {"units": "1"}),
         "incidence_deg": (("y", "x"), np.full((N_Y, N_X), 39.5, np.float32))},
        coords={"pair": np.arange(n), "y": np.arange(N_Y) * -30.0, "x": np.arange(N_X) * 30.0,
                "product": ("pair", np.array([f"S1_{i:04d}" for i in range(n)])),
                "reference_date": ("pair", np.datetime64("2020-01-01") +
                                   np.arange(n).astype("timedelta64[D]") * 12)})


def _staged(path: Path, ds: xr.Dataset, los_compressor=None) -> Path:
    """``ds`` written as staging writes it (Zarr v2, chunks of 8 pairs × 16 × 16)."""
    encoding = {"coherence": {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": 255,
                              "compressors": None, "chunks": (8, 16, 16)},
                "los_mm": {"chunks": (8, 16, 16)}}
    if los_compressor is not None:
        encoding["los_mm"]["compressors"] = los_compressor
    write_zarr(ds, path, mode="w", encoding=encoding)
    return path


def _record(path: Path, lineage: str = "staging code A") -> StagedStack:
    return StagedStack("sentinel1", lambda: xr.open_zarr(path), "pair", lineage,
                       lambda ds: [f"{p}:digest" for p in ds["product"].values], path)


def _commit(repo, stacks: list[StagedStack]) -> tuple[dict, str]:
    session = repo.writable_session("main")
    done = commit_stacks(session.store, stacks)
    if set(done.values()) == {"unchanged"}:
        assert not session.has_uncommitted_changes  # nothing was written
        return done, repo.lookup_branch("main")
    return done, session.commit("test")


def _read(repo, snapshot: str) -> xr.Dataset:
    store = repo.readonly_session(snapshot_id=snapshot).store
    return xr.open_zarr(store, group="analysis_ready/sentinel1", consolidated=False).load()


def _assert_same(stored: xr.Dataset, staged: Path) -> None:
    with xr.open_zarr(staged) as src:
        for name in ("los_mm", "coherence", "incidence_deg"):
            np.testing.assert_array_equal(stored[name].values, src[name].values, err_msg=name)
            assert stored[name].dtype == src[name].dtype, name
        assert list(stored["product"].values) == list(src["product"].values)
        np.testing.assert_array_equal(stored["reference_date"].values,
                                      src["reference_date"].values)
    assert "product" in stored.coords and "reference_date" in stored.coords
    assert stored["coherence"].encoding["dtype"] == np.uint8  # still the stored codes


@pytest.fixture
def repo(tmp_path):
    from talik.tasks.release_store import _repository

    return _repository(tmp_path / "releases", create=True)


@pytest.mark.parametrize("los_compressor", [None, (numcodecs.Zstd(level=3),),
                                            (numcodecs.Zlib(level=1),)],
                         ids=["blosc-lz4", "zstd", "zlib-not-copyable"])
def test_large_arrays_are_copied_chunk_for_chunk_and_read_back_identical(
        repo, tmp_path, monkeypatch, los_compressor):
    monkeypatch.setattr(stack_store, "_BIG_BYTES", 1)  # every array counts as large here
    copies = []
    real_copy = stack_store._copy_chunks
    monkeypatch.setattr(stack_store, "_copy_chunks",
                        lambda store, path, source, names: (copies.append(sorted(names)),
                                                            real_copy(store, path, source, names)))
    staged = _staged(tmp_path / "s1.zarr", _stack(20), los_compressor)
    done, snap = _commit(repo, [_record(staged)])
    assert done == {"sentinel1": "written"}
    # lz4/Zstd frames are copied as they are; zlib is not a codec the copy maps: computed.
    expect = ["coherence", "incidence_deg"] + (["los_mm"] if los_compressor is None or
                                               los_compressor[0].codec_id == "zstd" else [])
    assert copies == [sorted(expect)]
    _assert_same(_read(repo, snap), staged)


def test_a_longer_stack_is_appended_an_equal_one_left_and_another_rewritten(
        repo, tmp_path, monkeypatch):
    monkeypatch.setattr(stack_store, "_BIG_BYTES", 1)
    first = _staged(tmp_path / "first.zarr", _stack(19))
    longer = _staged(tmp_path / "longer.zarr", _stack(19).pipe(
        lambda a: xr.concat([a, _stack(33, seed=1).isel(pair=slice(19, 33))
                             .assign_coords(pair=np.arange(19, 33))], dim="pair",
                            data_vars="minimal", coords="minimal", compat="override")))
    done1, snap1 = _commit(repo, [_record(first)])
    done2, snap2 = _commit(repo, [_record(longer)])
    assert done1 == {"sentinel1": "written"} and done2 == {"sentinel1": "appended 14"}
    _assert_same(_read(repo, snap1), first)  # the earlier snapshot is unchanged
    _assert_same(_read(repo, snap2), longer)
    # (the stored stack's chunks of 8 pairs: the append filled the partial one, 16 … 23)
    assert _read(repo, snap2)["los_mm"].encoding["chunks"][0] == 8

    done3, snap3 = _commit(repo, [_record(longer)])
    assert done3 == {"sentinel1": "unchanged"}
    _assert_same(_read(repo, snap3), longer)
    # Other staging code (a lineage that changed): the whole stack again, not appended.
    done4, snap4 = _commit(repo, [_record(first, lineage="staging code B")])
    assert done4 == {"sentinel1": "written"}
    _assert_same(_read(repo, snap4), first)
    # A stack whose first items changed content: rewritten, not appended to.
    changed = StagedStack("sentinel1", lambda: xr.open_zarr(longer), "pair", "staging code B",
                          lambda ds: [f"{p}:other" for p in ds["product"].values], longer)
    assert _commit(repo, [changed])[0] == {"sentinel1": "written"}
    attrs = json.loads(_read(repo, repo.lookup_branch("main")).attrs["talik_items"])
    assert attrs[0] == "S1_0000:other"


def _date_stack(n_dates: int, n_pairs: int) -> xr.Dataset:
    """A GACOS-like stack: maps along ``date`` and per-pair indices along ``pair``."""
    rng = np.random.default_rng(0)  # the same maps whatever the pairs
    return xr.Dataset(
        {"ztd_m": (("date", "y", "x"), rng.normal(2, 0.1, (n_dates, N_Y, N_X)).astype("f4")),
         "has_gacos": (("pair",), np.arange(n_pairs) % 2 == 0)},
        coords={"date": np.datetime64("2020-01-01") + np.arange(n_dates).astype("m8[D]") * 12,
                "y": np.arange(N_Y) * -30.0, "x": np.arange(N_X) * 30.0})


def test_a_stack_whose_items_stay_but_whose_rest_changed_is_updated(repo, tmp_path):
    """New pairs whose dates are all staged: same maps, longer per-pair indices."""
    def record(path: Path) -> StagedStack:
        return StagedStack("gacos", lambda: xr.open_zarr(path), "date", "code A",
                           lambda ds: [f"{d}:digest" for d in ds["date"].values], path)

    before, after = _date_stack(5, 6), _date_stack(5, 9)
    write_zarr(before, tmp_path / "before.zarr", mode="w")
    write_zarr(after, tmp_path / "after.zarr", mode="w")
    assert _commit(repo, [record(tmp_path / "before.zarr")])[0] == {"gacos": "written"}
    done, snap = _commit(repo, [record(tmp_path / "after.zarr")])
    assert done == {"gacos": "updated"}
    stored = xr.open_zarr(repo.readonly_session(snapshot_id=snap).store,
                          group="analysis_ready/gacos", consolidated=False).load()
    np.testing.assert_array_equal(stored["has_gacos"].values, after["has_gacos"].values)
    np.testing.assert_array_equal(stored["ztd_m"].values, after["ztd_m"].values)


def test_a_stack_the_release_no_longer_has_is_removed_from_its_commit(repo, tmp_path):
    staged = _staged(tmp_path / "s1.zarr", _stack(10))
    write_zarr(_date_stack(4, 3), tmp_path / "gacos.zarr", mode="w")
    gacos = StagedStack("gacos", lambda: xr.open_zarr(tmp_path / "gacos.zarr"), "date", "A",
                        lambda ds: [str(d) for d in ds["date"].values], tmp_path / "gacos.zarr")
    assert _commit(repo, [_record(staged), gacos])[0] == {"sentinel1": "written",
                                                          "gacos": "written"}
    done, snap = _commit(repo, [_record(staged, lineage="staging code B")])
    assert done == {"sentinel1": "written", "gacos": "removed"}
    import zarr

    root = zarr.open_group(repo.readonly_session(snapshot_id=snap).store,
                           path="analysis_ready", mode="r")
    assert sorted(root.group_keys()) == ["sentinel1"]


def test_a_sentinel1_staging_made_of_earlier_parts_only_is_committed(repo, tmp_path):
    """An extension whose new products were all empty writes no store, only parts.json."""
    from talik.tasks.records import StepOutput
    from talik.tasks.stack_store import staged_stacks

    (tmp_path / "earlier").mkdir()
    earlier = _staged(tmp_path / "earlier" / "sentinel1.zarr", _stack(12))
    folder = tmp_path / "later"
    folder.mkdir()
    (folder / "parts.json").write_text(json.dumps([str(earlier)]))
    names = {f"S1_{i:04d}": "digest" for i in range(12)}
    (folder / "summary.json").write_text(json.dumps({"lineage": {
        "code": "c", "wavelength_m": 0.0555, "grid": "g", "products": names}}))
    stacks = staged_stacks([StepOutput(step="stage-sentinel1", path=str(folder), digest="x")])
    assert [s.name for s in stacks] == ["sentinel1"] and stacks[0].source == earlier
    done, snap = _commit(repo, stacks)
    assert done == {"sentinel1": "written"}
    _assert_same(_read(repo, snap), earlier)
