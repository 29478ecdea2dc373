"""The monitor flow end to end on the tiny world, inside a Prefect test server."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from talik.cli import app
from talik.config import load_study
from talik.tasks.publish import list_releases, read_release

pytestmark = pytest.mark.slow


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _task_states(flow_run_id) -> dict[str, str]:
    """Task name → state name for every task run under ``flow_run_id`` (subflows included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = [flow_run_id]
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        runs += [c.id for c in children]
        states = {}
        for run_id in runs:
            for tr in client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id={"any_": [run_id]})):
                if tr.state.state_details.child_flow_run_id is not None:
                    continue  # the parent's placeholder of a subflow, not a step
                states[tr.name.rsplit("-", 1)[0]] = tr.state.name
        return states


def _task_times(flow_run_id) -> dict[str, tuple]:
    """Task name → (start, end) of the task runs of ``flow_run_id``'s subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id={"any_": [c.id for c in children]}))
        return {tr.name.rsplit("-", 1)[0]: (tr.start_time, tr.end_time) for tr in runs
                if tr.state.state_details.child_flow_run_id is None}


NOT_CACHED = {"ingest-world", "ingest-local", "publish-release", "run-artifact"}
"""Tasks that run every time (inventory, publish, the UI artifact): never from a cache."""


def _latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        latest = [a for a in artifact if a.key == key]
        assert latest, [a.key for a in artifact]
        return str(latest[0].data)


def test_monitor_runs_end_to_end_and_publishes_once(prefect_server, tiny_study):
    from talik.flows.monitor import monitor

    cfg = load_study(tiny_study)
    state = monitor(study=str(tiny_study), return_state=True)
    assert state.is_completed(), state
    outcome = state.result()
    assert outcome.created
    # The GACOS delays are staged while the rasters or the pairs are: the runs overlap.
    times = _task_times(state.state_details.flow_run_id)
    gacos = times["stage-gacos"]
    assert any(gacos[0] < times[other][1] and times[other][0] < gacos[1]
               for other in ("stage-rasters", "stage-pairs")), times
    release = Path(outcome.release.path)
    manifest = read_release(cfg.stores.release_dir, outcome.release.id)

    # Every input file is listed with its checksum, and nothing else is.
    root = Path(manifest["inputs"]["root"])
    listed = {root / f["path"]: f["sha256"] for f in manifest["inputs"]["files"]}
    on_disk = {p for p in root.rglob("*") if p.is_file()
               and "truth" not in p.relative_to(root).parts and p.name != "world.json"}
    assert set(listed) == on_disk
    for path, digest in listed.items():
        assert _sha256(path) == digest, path

    # Provenance: config, code, every step with its parameters; products with checksums.
    assert manifest["study"]["config"]["name"] == "tiny"
    assert len(manifest["talik"]["code_sha256"]) == 64
    steps = {s["step"]: s for s in manifest["steps"]}
    assert {"stage-sentinel1", "stage-rasters", "sentinel1-timeseries"} <= set(steps)
    assert steps["sentinel1-timeseries"]["parameters"]["gamma"] == 1e-4
    for product in manifest["products"]:
        assert _sha256(release / product["path"]) == product["sha256"]
    nc = release / "products" / "sentinel1.nc"
    with xr.open_dataset(nc) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert {"displacement", "velocity", "thaw_season_deformation"} <= set(ds.data_vars)
        assert ds["displacement"].attrs["units"] == "mm"
    assert not nc.stat().st_mode & stat.S_IWUSR  # releases are read-only
    assert "Comparison with the demo world's truth" in (release / "report.md").read_text()

    # The release opens through its STAC catalog and through the versioned store at its tag,
    # with identical arrays; the catalog's checksums are the manifest's.
    import numpy as np
    import pystac

    from talik.tasks.release_store import open_release

    catalog = pystac.Catalog.from_file(str(release / "stac" / "catalog.json"))
    items = {i.id: i for i in catalog.get_items(recursive=True)}
    assert {"sentinel1", "velocity", "velocity_vertical"} <= set(items)
    checksums = {p["path"]: p["sha256"] for p in manifest["products"]}
    asset = items["sentinel1"].assets["data"]
    assert asset.extra_fields["file:checksum"] == "1220" + checksums["products/sentinel1.nc"]
    assert "cloud-optimized" in items["velocity"].assets["data"].media_type
    assert items["sentinel1"].properties["talik:sensor"] == "Sentinel-1"
    via_store = open_release(cfg.stores.release_dir, outcome.release.id)
    with xr.open_dataset(asset.get_absolute_href()) as via_stac:
        assert str(via_stac["time"].values[0])[:10] == items["sentinel1"].properties[
            "start_datetime"][:10]
        for name in ("displacement", "velocity", "mask", "temporal_coherence"):
            np.testing.assert_array_equal(via_stac[name].values, via_store[name].values)
    first_velocity = via_store["velocity"].values

    # The analysis-ready stores the release was made from are in the same commit: the staged
    # interferogram stack at the tag is the staged store, value for value.
    from talik.tasks.stage import open_sentinel1_store

    assert manifest["store"]["analysis_ready"] == {
        f"analysis_ready/{n}": "written" for n in ("sentinel1", "gacos", "rasters", "pairs")}
    stack = open_release(cfg.stores.release_dir, outcome.release.id, "analysis_ready/sentinel1")
    with open_sentinel1_store(Path(steps["stage-sentinel1"]["path"]) / "sentinel1.zarr") as s1:
        xr.testing.assert_identical(stack[["los_mm", "coherence", "incidence_deg"]].load().drop_attrs(),
                                    s1[["los_mm", "coherence", "incidence_deg"]].load().drop_attrs())
        assert list(stack["product"].values) == list(s1["product"].values)
        assert stack["coherence"].encoding["dtype"] == np.uint8  # still stored as codes
        first_pair = str(s1["reference_date"].values.min())[:10]

    # Each group of the commit is a STAC item too, its asset the store at the commit's
    # snapshot: opened through the catalog, it is the tag's group, value for value.
    from talik.tasks.release_store import ICECHUNK_MEDIA_TYPE, open_stac_asset

    for group in ("sentinel1", "analysis_ready/sentinel1", "analysis_ready/gacos",
                  "analysis_ready/rasters", "analysis_ready/pairs"):
        store_asset = items["store-" + group.replace("/", "-")].assets["zarr"]
        assert store_asset.media_type == ICECHUNK_MEDIA_TYPE
        assert store_asset.extra_fields["icechunk:snapshot_id"] == manifest["store"]["snapshot"]
        xr.testing.assert_identical(
            open_stac_asset(store_asset).load(),
            open_release(cfg.stores.release_dir, outcome.release.id, group).load())
    ready = items["store-analysis_ready-sentinel1"]
    assert ready.properties["start_datetime"][:10] == first_pair
    assert ready.properties["talik:units"]["los_mm"] == "mm"
    with pytest.raises(ValueError, match="media type"):
        open_stac_asset(asset)  # the NetCDF product's asset is not a store

    # The run's results are in the Prefect UI: a markdown artifact with the release, headline
    # numbers and figure links.
    text = _latest_artifact("release-tiny")
    assert f"published new release {outcome.release.id}" in text and str(release) in text
    assert "| Sentinel-1 dates |" in text and "sentinel1_maps" in text
    assert (release / "figures" / "sentinel1_maps.png").as_uri() in text

    # A second run reuses every cached step and publishes nothing new.
    state2 = monitor(study=str(tiny_study), return_state=True)
    outcome2 = state2.result()
    assert not outcome2.created and outcome2.release.id == outcome.release.id
    assert f"no new release (inputs, options and code match) {outcome.release.id}" in \
        _latest_artifact("release-tiny")
    states = _task_states(state2.state_details.flow_run_id)
    for step in ("stage-sentinel1", "stage-rasters", "sentinel1-timeseries", "release-contents"):
        assert states[step] == "Cached", states
    assert len(list_releases(cfg.stores.release_dir)) == 1

    # Code outside what the steps import (here a new module of the package) reruns nothing
    # and makes no release: each step's code digest covers only the modules it imports.
    import talik

    unrelated = Path(talik.__file__).parent / "_unrelated_test_module.py"
    unrelated.write_text('"""Written and removed by test_monitor_flow."""\nVALUE = 1\n')
    try:
        state_u = monitor(study=str(tiny_study), return_state=True)
    finally:
        unrelated.unlink()
    assert not state_u.result().created
    states = _task_states(state_u.state_details.flow_run_id)
    computing = {k: v for k, v in states.items() if k not in NOT_CACHED}
    assert set(computing.values()) == {"Cached"}, computing

    # A changed option recomputes only what depends on it, and makes a new release.
    changed = tiny_study.with_name("tiny-changed.toml")
    text = tiny_study.read_text().replace("chunk_px = 16", "chunk_px = 16\ncoherence_threshold = 0.35")
    changed.write_text(text)
    state3 = monitor(study=str(changed), return_state=True)
    assert state3.result().created
    states = _task_states(state3.state_details.flow_run_id)
    rerun = {k for k, v in states.items() if k not in NOT_CACHED and v != "Cached"}
    # Exactly the steps downstream of the Sentinel-1 options: staging and the recession
    # (which never reads them) come from the cache.
    assert rerun == {"sentinel1-timeseries", "drivers", "release-contents"}, states
    # The staged stores did not change: the new commit shares them with r0001's.
    assert set(read_release(cfg.stores.release_dir, "r0002")["store"]["analysis_ready"].values()
               ) == {"unchanged"}
    ids = [r.id for r in list_releases(cfg.stores.release_dir)]
    assert ids == ["r0001", "r0002"]
    # Each tag still reads its own release: r0001's arrays are unchanged by r0002.
    np.testing.assert_array_equal(open_release(cfg.stores.release_dir, "r0001")["velocity"].values,
                                  first_velocity)
    assert not np.array_equal(open_release(cfg.stores.release_dir, "r0002")["velocity"].values,
                              first_velocity, equal_nan=True)

    # The CLI lists and shows releases.
    runner = CliRunner()
    res = runner.invoke(app, ["releases", "list", "--study", str(tiny_study)])
    assert res.exit_code == 0 and "r0001" in res.output and "r0002" in res.output
    res = runner.invoke(app, ["releases", "show", "r0001", "--study", str(tiny_study)])
    assert res.exit_code == 0 and "sentinel1-timeseries" in res.output
    res = runner.invoke(app, ["releases", "show", "r0009", "--study", str(tiny_study)])
    assert res.exit_code == 2 and "r0001" in res.output
