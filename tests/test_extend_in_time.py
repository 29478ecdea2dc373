"""Extending a study in time: a later ``until`` stages only the new products and keeps the zero."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from talik.config import StudyOptions, load_study
from talik.tasks.inversion_parts import EXTENDS_ATTR, open_inversion
from talik.tasks.publish import read_release
from talik.tasks.report import referenced_truth
from tests.conftest import write_study

UNTIL = dt.date(2021, 6, 30)


def _steps(manifest: dict) -> dict[str, dict]:
    return {s["step"]: s for s in manifest["steps"]}


def test_a_later_until_stages_only_the_new_products_and_keeps_the_reference(
        prefect_server, tiny_world, tmp_path):
    from talik.flows.monitor import monitor
    from talik.tasks.readers.hyp3 import find_hyp3_products
    from talik.tasks.release_diff import diff_releases
    from talik.tasks.stage import (
        AnalysisGrid,
        open_sentinel1_store,
        sentinel1_parts,
        write_sentinel1_store,
    )

    # A copy of the world: a product of it is rewritten at the end.
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world, raw)
    tiny_study = write_study(tmp_path / "study", raw)
    cfg = load_study(tiny_study)
    hyp3 = Path(cfg.source.raw_dir) / "hyp3"
    every = find_hyp3_products(hyp3)
    new = [p for p in every if p.secondary_date > UNTIL]
    assert 5 <= len(new) < len(every) // 3  # the test world has products after UNTIL

    first = monitor(study=str(tiny_study), until=UNTIL)
    assert first.created
    second = monitor(study=str(tiny_study))  # until unset: every product
    assert second.created
    m1 = read_release(cfg.stores.release_dir, first.release.id)
    m2 = read_release(cfg.stores.release_dir, second.release.id)

    # The first run's inputs stop at UNTIL: no product (nor GACOS map) of a later date.
    for f in m1["inputs"]["files"]:
        if f["role"] == "gacos":
            assert f["path"].split("/")[-1][:8] <= UNTIL.strftime("%Y%m%d"), f["path"]

    # Only the new products were staged; the earlier staging is the first part of the stack.
    stage1, stage2 = _steps(m1)["stage-sentinel1"], _steps(m2)["stage-sentinel1"]
    assert stage1["summary"]["staged_now"] == len(every) - len(new)
    assert stage2["summary"]["staged_now"] == len(new)
    assert stage2["summary"]["extends"] == Path(stage1["path"]).name
    assert stage2["summary"]["n_pairs"] == len(every)
    folder2 = Path(stage2["path"])
    staged_now = json.loads((folder2 / "summary.json").read_text())["staged_now_products"]
    assert sorted(staged_now) == sorted(p.name for p in new)
    parts = sentinel1_parts(folder2 / "sentinel1.zarr")
    assert parts == [Path(stage1["path"]) / "sentinel1.zarr", folder2 / "sentinel1.zarr"]

    # The steps that read no Sentinel-1 product were not run again: same keys, same folders.
    steps1, steps2 = _steps(m1), _steps(m2)
    unchanged = {"stage-rasters", "stage-pairs", "stage-climate", "recession",
                 "modis-factors"} & set(steps1)
    # (the MODIS factors depend on the product's grid, not on its dates: not resampled again)
    assert {"stage-rasters", "stage-pairs", "recession", "modis-factors"} <= unchanged
    for name in unchanged:
        assert steps2[name]["digest"] == steps1[name]["digest"], name
    for name in ("stage-gacos", "sentinel1-timeseries", "drivers", "release-contents"):
        if name in steps1:
            assert steps2[name]["digest"] != steps1[name]["digest"], name

    # GACOS: the maps of the first run's dates are taken from its staging, and the store is
    # exactly what staging every date from scratch gives.
    from talik.tasks.stage import write_gacos_store

    gacos1, gacos2 = steps1["stage-gacos"]["summary"], steps2["stage-gacos"]["summary"]
    with xr.open_zarr(Path(steps1["stage-gacos"]["path"]) / "gacos.zarr") as g1:
        # only the maps among the first run's inputs: none after UNTIL, though the L-band
        # pairs have later dates and the folder holds their maps
        assert pd_date(g1["date"].values[-1]) <= UNTIL
        per_row = g1["ztd_m"].encoding["chunks"][0]  # dates per chunk row
    # (whole chunk rows of dates are reused; the first run's last, partial row is resampled)
    assert per_row > 1
    assert gacos2["reused_dates"] == gacos1["n_dates"] // per_row * per_row > 0
    assert gacos2["n_dates"] > gacos1["n_dates"]
    staged_gacos = Path(steps2["stage-gacos"]["path"]) / "gacos.zarr"
    with xr.open_zarr(staged_gacos) as g2:
        scratch = tmp_path / "gacos_scratch.zarr"
        write_gacos_store(Path(cfg.source.raw_dir) / "gacos", list(g2["date"].values),
                          AnalysisGrid.from_attrs(g2.attrs), scratch, folder2 / "sentinel1.zarr")
        with xr.open_zarr(scratch) as fresh:
            xr.testing.assert_identical(g2.load(), fresh.load())

    # The joined stack holds exactly what staging every product from scratch gives.
    joined = open_sentinel1_store(folder2 / "sentinel1.zarr").load()
    grid = AnalysisGrid.from_attrs(joined.attrs)
    write_sentinel1_store(every, grid, cfg.s1_sensor.wavelength_m, tmp_path / "full.zarr")
    full = xr.open_zarr(tmp_path / "full.zarr").load()
    order = np.argsort(joined["product"].values)
    assert list(joined["product"].values[order]) == sorted(full["product"].values)
    full_order = np.argsort(full["product"].values)
    for name in ("los_mm", "coherence"):
        np.testing.assert_array_equal(joined[name].values[order], full[name].values[full_order])
    for name in ("reference_date", "secondary_date", "baseline_m"):
        np.testing.assert_array_equal(joined[name].values[order], full[name].values[full_order])
    np.testing.assert_array_equal(joined["incidence_deg"].values, full["incidence_deg"].values)

    # The analysis-ready stack of each release is in its commit: the second release's only
    # appended the new interferograms to the first's (whose tag still reads the first stack).
    from talik.tasks.release_store import open_release

    ready1, ready2 = m1["store"]["analysis_ready"], m2["store"]["analysis_ready"]
    assert set(ready1.values()) == {"written"}
    n_new_pairs = len(every) - stage1["summary"]["n_pairs"]
    assert ready2["analysis_ready/sentinel1"] == f"appended {n_new_pairs}"
    assert ready2["analysis_ready/rasters"] == ready2["analysis_ready/pairs"] == "unchanged"
    assert ready2["analysis_ready/gacos"].startswith("appended ")
    root = cfg.stores.release_dir
    for name, staged in (("sentinel1", joined), ("gacos", xr.open_zarr(staged_gacos).load())):
        at1 = open_release(root, first.release.id, f"analysis_ready/{name}").load()
        at2 = open_release(root, second.release.id, f"analysis_ready/{name}").load()
        dim = "pair" if name == "sentinel1" else "date"
        assert at2.sizes[dim] == staged.sizes[dim] > at1.sizes[dim]
        for var in staged.data_vars:
            np.testing.assert_array_equal(at2[var].values, staged[var].values, err_msg=var)
            if dim in staged[var].dims:
                np.testing.assert_array_equal(at1[var].values,
                                              at2[var].isel({dim: slice(0, at1.sizes[dim])}).values)
        assert list(at2[dim].values) == list(staged[dim].values)

    # The series keep the first release's zero: the same reference date and area.
    release1 = Path(first.release.path) / "products" / "sentinel1.nc"
    release2 = Path(second.release.path) / "products" / "sentinel1.nc"
    with xr.open_dataset(release1) as a, xr.open_dataset(release2) as b:
        assert b["time"].values[-1] > a["time"].values[-1]
        assert pd_date(b["time"].values[-1]) > UNTIL >= pd_date(a["time"].values[-1])
        assert b.attrs["reference_date"] == a.attrs["reference_date"]
        wa, wb = json.loads(a.attrs["reference_window"]), json.loads(b.attrs["reference_window"])
        assert (wb["rows"], wb["cols"]) == (wa["rows"], wa["cols"])
        assert wb["how"].startswith("kept")

    # The diff of the two releases lists the new inputs: every new product's files.
    diff = diff_releases(cfg.stores.release_dir, first.release.id, second.release.id)
    added_products = {Path(p).parts[1] for p in diff.inputs_added if p.startswith("hyp3/")}
    assert added_products == {p.name for p in new}
    assert not diff.inputs_removed

    # The new dates were solved forward: the kept dates' series are the first release's
    # unfiltered series as they were, and the new dates are as good as a whole inversion's.
    series2 = steps2["sentinel1-timeseries"]
    assert series2["summary"]["forward_dates"] == len(
        np.setdiff1d(xr.open_dataset(release2)["time"].values,
                     xr.open_dataset(release1)["time"].values))
    inv1 = open_inversion(steps1["sentinel1-timeseries"]["path"])
    inv2 = open_inversion(series2["path"])
    # The update stored only its new dates; the earlier ones are read from the first series.
    with xr.open_zarr(Path(series2["path"]) / "inversion.zarr") as part:
        assert part.sizes["time"] == series2["summary"]["forward_dates"]
        assert json.loads(part.attrs[EXTENDS_ATTR])["folder"] == str(
            Path("..") / Path(steps1["sentinel1-timeseries"]["path"]).name)
    assert inv2.sizes["time"] == inv1.sizes["time"] + series2["summary"]["forward_dates"]
    kept = inv2["displacement"].isel(time=slice(0, inv1.sizes["time"]))
    solved = np.isfinite(inv2["residual_rms"]).values
    np.testing.assert_array_equal(kept.values[:, solved], inv1["displacement"].values[:, solved])
    assert int(np.isfinite(inv1["residual_rms"]).values.sum()) >= int(solved.sum()) > 0
    whole = monitor(study=str(tiny_study), options=StudyOptions.of(cfg).model_copy(update={
        "sentinel1": cfg.sentinel1.model_copy(update={"extension": "reinvert"})}))
    series_w = _steps(read_release(cfg.stores.release_dir, whole.release.id))[
        "sentinel1-timeseries"]
    assert series_w["summary"]["forward_dates"] == 0
    assert set(read_release(cfg.stores.release_dir, whole.release.id)["store"][
        "analysis_ready"].values()) == {"unchanged"}
    with xr.open_dataset(Path(whole.release.path) / "products" / "sentinel1.nc") as w, \
            xr.open_dataset(release2) as f:
        truth = referenced_truth(
            xr.open_dataset(Path(cfg.source.raw_dir) / "truth" / "sentinel1_truth.nc").load(), f)
        new_dates = f["time"].values[f["time"].values > np.datetime64(UNTIL)]
        both = (f["mask"] == 1) & (w["mask"] == 1)
        def err(ds):  # the new dates' change since the last kept date, against truth
            last = ds["time"].values[ds["time"].values <= np.datetime64(UNTIL)][-1]
            near = truth["displacement"].sel(time=new_dates, method="nearest").values
            tt = near - truth["displacement"].sel(time=last, method="nearest").values
            dd = ds["displacement"].sel(time=new_dates) - ds["displacement"].sel(time=last)
            return (dd - tt).where(both)  # (dates of the product, values of the truth)
        e_fwd, e_whole = err(f), err(w)
        rms_f = float(np.sqrt((e_fwd ** 2).mean()))
        rms_w = float(np.sqrt((e_whole ** 2).mean()))
        worst_f, worst_w = float(abs(e_fwd).max()), float(abs(e_whole).max())
        # The velocity: the whole inversion also revises the past (a new v_ref mapping, new
        # constraint parameters), so the two differ; each is scored against the truth.
        dv_f = abs(f["velocity"] - truth["velocity"]).where(both)
        dv_w = abs(w["velocity"] - truth["velocity"]).where(both)
        print(f"\nforward vs whole on the new dates: RMSE {rms_f:.2f} / {rms_w:.2f} mm, worst "
              f"{worst_f:.1f} / {worst_w:.1f} mm; velocity error RMS "
              f"{float(np.sqrt((dv_f ** 2).mean())):.2f} / {float(np.sqrt((dv_w ** 2).mean())):.2f}"
              f", worst {float(dv_f.max()):.2f} / {float(dv_w.max()):.2f} mm/yr; "
              f"|Δvelocity| p95 {float(abs(f['velocity'] - w['velocity']).where(both).quantile(0.95)):.2f}"
              f" mm/yr; trusted {int(both.sum())} px")
        assert int(both.sum()) > 0.5 * int((w["mask"] == 1).sum())
        assert rms_f <= 1.25 * rms_w + 0.5
        assert worst_f <= 1.5 * worst_w + 3.0
        assert float(np.sqrt((dv_f ** 2).mean())) <= 1.25 * float(np.sqrt((dv_w ** 2).mean())) + 0.3
        assert float(dv_f.max()) <= 1.5 * float(dv_w.max()) + 1.0

    # Rerun with nothing new: no new release.
    third = monitor(study=str(tiny_study))
    assert not third.created

    # A product rewritten in place (same name, other content) is not taken from an earlier
    # staging: the stack is staged again whole.
    txt = every[0].location / f"{every[0].name}.txt"
    txt.write_text(re.sub(r"Baseline: .*", "Baseline: 41.5", txt.read_text()))
    fourth = monitor(study=str(tiny_study))
    stage4 = _steps(read_release(cfg.stores.release_dir, fourth.release.id))["stage-sentinel1"]
    assert stage4["summary"]["staged_now"] == len(every)
    # ... and the versioned stack is written again whole, not appended to.
    ready4 = read_release(cfg.stores.release_dir, fourth.release.id)["store"]["analysis_ready"]
    assert ready4["analysis_ready/sentinel1"] == "written"
    assert "extends" not in stage4["summary"]


def pd_date(value) -> dt.date:
    """A numpy datetime64 as a date."""
    return dt.date.fromisoformat(str(value)[:10])


def test_kept_reference_ignores_layout_options_and_fills_defaults(tmp_path):
    """A time series saved before an option existed, or with another tile size or memory
    limit, still hands its reference date and area to the stack that extends it."""
    from talik.config import Sentinel1Options
    from talik.tasks.records import StepOutput
    from talik.tasks.sentinel1 import INPUTS_FILE, kept_reference

    folder = tmp_path / "steps" / "sentinel1-timeseries" / "abc"
    folder.mkdir(parents=True)
    saved = Sentinel1Options(chunk_px=64).model_dump(mode="json")
    del saved["in_memory_max_mb"]  # written by a version without the option
    (folder / INPUTS_FILE).write_text(json.dumps({"staged_s1": "0123456789abcdef" * 4,
                                                  "options": saved}))
    (folder / "qc.json").write_text(json.dumps({
        "reference_date": {"date": "2019-06-01"},
        "reference_window": {"rows": [3, 8], "cols": [5, 10]}}))
    staged = StepOutput(step="stage-sentinel1", path=str(tmp_path), digest="f" * 64,
                        summary={"extends": "0123456789abcdef"})
    kept = kept_reference(str(tmp_path), staged, Sentinel1Options(in_memory_max_mb=0))
    assert kept == {"date": dt.date(2019, 6, 1), "window": {"rows": [3, 8], "cols": [5, 10]}}
    # A change of the science is a change made on purpose: nothing is kept.
    assert kept_reference(str(tmp_path), staged, Sentinel1Options(coherence_threshold=0.5)) is None
