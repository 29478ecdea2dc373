"""`talik sentinel1` and `talik lband-rate`: the chain for users with their own HyP3 products."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from typer.testing import CliRunner

from talik.cli import app

pytestmark = pytest.mark.slow


def test_sentinel1_command_writes_the_product(tmp_path, tiny_world):
    runner = CliRunner()
    rate = tmp_path / "alos2_rate.tif"
    res = runner.invoke(app, ["lband-rate", str(tiny_world / "pairs"), "--out", str(rate)])
    assert res.exit_code == 0, res.output
    with rasterio.open(rate) as src:
        assert src.tags()["quantity"] == "los_rate"
        assert float(src.tags()["incidence_deg"]) == pytest.approx(40.55)

    out = tmp_path / "out" / "tiny.nc"
    res = runner.invoke(app, ["sentinel1", str(tiny_world / "hyp3"), "--out", str(out),
                              "--alos2-rate", str(rate), "--gacos", str(tiny_world / "gacos"),
                              "--ground-ice", str(tiny_world / "ground_ice.tif")])
    assert res.exit_code == 0, res.output
    assert "velocity reference alos2-cdf-matched" in res.output
    with xr.open_dataset(out) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        for name, dims, units in [
            ("displacement", ("time", "y", "x"), "mm"),
            ("velocity", ("y", "x"), "mm/yr"),
            ("thaw_season_deformation", ("year", "y", "x"), "mm"),
            ("thaw_season_deformation_mean", ("y", "x"), "mm"),
            ("n_valid_ifg", ("y", "x"), "1"),
            ("residual_rms", ("y", "x"), "mm"),
        ]:
            assert ds[name].dims == dims, name
            assert ds[name].attrs["units"] == units, name
        assert ds["displacement"].attrs["sign_convention"] == "positive toward the satellite"
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate"
        assert ds.rio.crs.to_epsg() == 32647
        first = ds["displacement"].isel(time=0)
        assert np.nanmax(np.abs(first)) < 1e-3  # relative to the first date
        rejected = json.loads(ds.attrs["rejected_interferograms"])
        assert rejected and all(r.startswith("S1AA_") for r in rejected)
        assert json.loads(ds.attrs["constraint"])["velocity_reference"] == "alos2-cdf-matched"
    figures = sorted(p.name for p in (out.parent / "tiny_figures").iterdir())
    assert figures == ["cdf_matching.png", "constraints.png", "maps.png", "network.png"]


def test_sentinel1_command_refuses_a_folder_without_products(tmp_path):
    res = CliRunner().invoke(app, ["sentinel1", str(tmp_path), "--out", str(tmp_path / "x.nc")])
    assert res.exit_code == 2
    assert "at least one HyP3 INSAR_GAMMA product" in res.output


def test_untagged_lband_rate_reference_date_and_quiet(tmp_path, tiny_world):
    """A user's own L-band rate GeoTIFF without tags, with --lband-incidence; --reference-date."""
    runner = CliRunner()
    tagged = tmp_path / "rate.tif"
    res = runner.invoke(app, ["lband-rate", str(tiny_world / "pairs"), "--out", str(tagged),
                              "--gacos", str(tiny_world / "gacos"),
                              "--ground-ice", str(tiny_world / "ground_ice.tif")])
    assert res.exit_code == 0, res.output
    assert "GACOS applied" in res.output and "ground-ice map" in res.output
    untagged = tmp_path / "untagged.tif"
    with rasterio.open(tagged) as src:
        profile, data = src.profile, src.read(1)
    with rasterio.open(untagged, "w", **profile) as dst:
        dst.write(data, 1)
    args = ["sentinel1", str(tiny_world / "hyp3"), "--alos2-rate", str(untagged),
            "--gacos", str(tiny_world / "gacos")]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a.nc")])
    assert res.exit_code == 2
    assert "untagged.tif" in res.output and "--lband-incidence" in res.output
    assert not (tmp_path / "a.nc").exists()
    out = tmp_path / "b.nc"
    res = runner.invoke(app, [*args, "--out", str(out), "--lband-incidence", "40.55",
                              "--reference-date", "2020-06-15", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "trusted" not in res.output  # --quiet: only the one-line result
    with xr.open_dataset(out) as ds:
        ref = np.datetime64(ds.attrs["reference_date"])
        assert abs((ref - np.datetime64("2020-06-15")).astype(int)) <= 12
        at_ref = ds["displacement"].sel(time=ref)
        assert np.nanmax(np.abs(at_ref)) < 1e-3
        assert json.loads(ds.attrs["constraint"])["velocity_reference"] == "alos2-cdf-matched"
        for name in ("mask", "quality_flags", "bridged", "temporal_coherence", "velocity_std",
                     "condition", "n_parts", "bridged_fraction"):
            assert name in ds, name
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "c.nc"), "--reference-date", "June"])
    assert res.exit_code == 2 and "YYYY-MM-DD" in res.output



def test_a_run_that_fails_after_the_network_figures_leaves_the_earlier_figures(
        tmp_path, tiny_world, monkeypatch):
    """The network figures are drawn during the inversion, but they join the product's
    figures only when the run succeeds: a failed rerun leaves the earlier ones untouched, and
    a failed first run leaves no output folder."""
    import time

    import talik.tasks.sentinel1 as s1

    def run(out):
        return CliRunner().invoke(app, ["sentinel1", str(tiny_world / "hyp3"), "--out", str(out),
                                        "--work", str(tmp_path / "work")])

    out = tmp_path / "out" / "s1.nc"
    assert run(out).exit_code == 0
    figures = out.with_name("s1_figures")
    before = {p.name: p.stat().st_mtime_ns for p in figures.iterdir()}  # (same data: same bytes)
    real = s1.invert_nsbas

    def failing(*args, **kwargs):
        time.sleep(1.5)  # the figure process draws the network meanwhile
        real(*args, **kwargs)
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(s1, "invert_nsbas", failing)
    res = run(out)
    assert res.exit_code != 0 and "disk full" in repr(res.exception)
    assert {p.name: p.stat().st_mtime_ns for p in figures.iterdir()} == before  # not rewritten
    res = run(tmp_path / "fresh" / "s1.nc")
    assert res.exit_code != 0
    assert not (tmp_path / "fresh").exists()
