"""The long-term multi-sensor dataset (issue 9): period means against the demo world's truth,
Eq. 4 against the thawing-index baseline, agreement statistics, sign conventions, bad pairs.

The end-to-end tests run on the demo-sized world (``science_world``) with the demo study's
sensors and periods (Table S1 pairs of ERS-2, Envisat, ALOS-1, ALOS-2, and Sentinel-1).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from talik.config import Period, Sensor
from talik.errors import InputError
from talik.science.compare import agreement, masked_mean_std
from talik.science.geometry import los_to_vertical
from talik.science.interferogram import stable_ground
from talik.science.longterm import (
    classify_pairs,
    common_area,
    postprocess_pairs,
    s1_change,
    sensor_agreement,
)
from talik.science.scaling import sentinel1_ratio, thawing_degree_days, thawing_index_factor
from talik.tasks.readers.pairs import find_pairs, read_pair
from talik.tasks.records import StepOutput

REPO = Path(__file__).resolve().parent.parent


# --- Known answers --------------------------------------------------------------------------


def test_agreement_identical_maps_and_known_offset():
    rng = np.random.default_rng(1)
    a = rng.normal(-10, 5, (20, 30))
    same = agreement(a, a)
    assert same["r"] == pytest.approx(1.0) and same["rmse"] == 0.0 and same["bias"] == 0.0
    shifted = agreement(a - 3.6, a)
    assert shifted["bias"] == pytest.approx(-3.6)
    assert shifted["mae"] == pytest.approx(3.6) and shifted["rmse"] == pytest.approx(3.6)
    assert shifted["r"] == pytest.approx(1.0)
    stats = masked_mean_std(np.array([1.0, 3.0, np.nan, 100.0]), np.array([1, 1, 1, 0], bool))
    assert stats == {"mean": 2.0, "std": 1.0, "n": 2}


def _grid_da(values: np.ndarray, dims=("y", "x")) -> xr.DataArray:
    ny, nx = values.shape[-2:]
    return xr.DataArray(values, dims=dims, coords={"y": 1000.0 - 80.0 * np.arange(ny),
                                                   "x": 80.0 * np.arange(nx)})


def test_postprocessing_keeps_subsidence_negative_and_vertical_larger():
    """A lowland subsiding 10 mm in LOS beside stable ground, plus a ramp and an offset."""
    ny, nx = 30, 40
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lowland = (xx > 15) & (xx < 30) & (yy > 8) & (yy < 22)
    los = np.where(lowland, -10.0, 0.0) + 0.2 * xx - 0.1 * yy + 7.0
    pairs = xr.Dataset(
        {"los_mm": (("pair", "y", "x"), los[None]),
         "coherence": (("pair", "y", "x"), np.full((1, ny, nx), 0.8))},
        coords={"y": 1000.0 - 80.0 * np.arange(ny), "x": 80.0 * np.arange(nx),
                "sensor": ("pair", ["ALOS-2"]), "incidence_deg": ("pair", [40.0]),
                "reference_date": ("pair", pd.to_datetime(["2019-05-19"])),
                "secondary_date": ("pair", pd.to_datetime(["2019-07-14"]))})
    out = postprocess_pairs(pairs, 0.3, ~lowland, "plane")
    assert np.allclose(out.values[0][lowland], -10.0, atol=1e-6)
    assert np.allclose(out.values[0][~lowland], 0.0, atol=1e-6)
    vertical = los_to_vertical(out, 40.0)
    assert np.allclose(vertical.values[0][lowland], -10.0 / np.cos(np.radians(40.0)))
    # Incoherent pixels are masked, and a pair without stable ground cannot be referenced.
    low_coh = pairs.assign(coherence=pairs["coherence"].where(~lowland[None], 0.1))
    assert np.isnan(postprocess_pairs(low_coh, 0.3, ~lowland, "plane").values[0][lowland]).all()
    assert np.isnan(postprocess_pairs(low_coh, 0.3, lowland, "plane").values).all()


def test_classify_pairs_of_table_s1():
    ref = pd.to_datetime(["1997-04-28", "1997-08-11", "2007-07-12", "2019-07-14", "2019-05-19"])
    sec = pd.to_datetime(["1997-06-02", "1998-07-27", "2007-10-12", "2020-03-22", "2019-07-14"])
    roles = classify_pairs(ref, sec, 300, 200, "05-01", "10-01")
    assert list(roles) == ["partial_thaw", "long", "partial_thaw", "unused", "partial_thaw"]


def test_thawing_index_factor_is_stefan_ratio():
    days = pd.date_range("2010-01-01", "2010-12-31")
    t = pd.Series(np.where((days >= "2010-05-01") & (days < "2010-10-01"), 10.0, -5.0), index=days)
    assert thawing_degree_days(t, "2010-05-01", "2010-10-01") == pytest.approx(153 * 10.0)
    # A pair over the first quarter of the season's thawing index: factor √4 = 2.
    factor = thawing_index_factor(t, "2010-05-01", "2010-06-08", "2010-05-01", "2010-10-01")
    assert factor == pytest.approx(np.sqrt(153 / 38))
    assert np.isnan(thawing_index_factor(t, "2011-05-01", "2011-06-01", "2011-05-01",
                                         "2011-10-01"))  # no temperature: no factor


def test_eq4_ratio_falls_back_to_the_regional_median():
    season = _grid_da(np.full((10, 10), -40.0))
    window = _grid_da(np.full((10, 10), -20.0))
    window[:, :3] = -0.5  # too small to divide by
    window[0, 5] = 4.0  # wrong sign
    window[1, 5] = -16.0  # own ratio 2.5
    valid = _grid_da(np.ones((10, 10), bool))
    ratio, fallback, regional = sentinel1_ratio(season, window, valid, 3.0, 10.0)
    assert regional == pytest.approx(2.0)
    assert ratio.values[1, 5] == pytest.approx(2.5)
    assert np.allclose(ratio.values[:, :3], 2.0) and ratio.values[0, 5] == pytest.approx(2.0)
    assert int(fallback.sum()) == 31


def test_sensor_agreement_in_sentinel1_geometry():
    """An L-band pair equal to the S1 change, once both are in the same LOS: R = 1, RMSE = 0."""
    rng = np.random.default_rng(3)
    vertical = rng.normal(-20, 6, (12, 14))
    times = pd.date_range("2019-04-06", periods=12, freq="12D")
    frac = np.clip((times - times[0]).days.to_numpy() / 100.0, 0, 1)
    inc_s1 = 39.5
    disp = np.cos(np.radians(inc_s1)) * frac[:, None, None] * vertical[None]
    s1 = xr.Dataset({"displacement": (("time", "y", "x"), disp),
                     "mask": (("y", "x"), np.ones((12, 14), np.uint8)),
                     "incidence_deg": (("y", "x"), np.full((12, 14), inc_s1))},
                    coords={"time": times})
    a, b = times[1], times[6]
    change = s1_change(s1["displacement"], a, b)
    true_v = (frac[6] - frac[1]) * vertical
    lband = xr.DataArray(true_v * np.cos(np.radians(40.55)), dims=("y", "x"))
    stats, _, _ = sensor_agreement(lband, 40.55, s1, a, b)
    assert stats["r"] == pytest.approx(1.0) and stats["rmse"] == pytest.approx(0.0, abs=1e-9)
    stats, _, _ = sensor_agreement(lband - 3.0 * np.cos(np.radians(40.55)), 40.55, s1, a, b)
    assert stats["bias"] == pytest.approx(-3.0 * np.cos(np.radians(inc_s1)))
    assert np.isnan(s1_change(s1["displacement"], pd.Timestamp("2019-01-01"), b)).all()
    assert float(change.mean()) < 0  # subsidence is negative in LOS


def test_common_area_counts_sensors_not_periods():
    nan, one = np.nan, 1.0
    rate = np.array([[[one, nan]], [[one, one]], [[nan, one]]])  # (period, y, x)
    maps = xr.Dataset({"rate_los": (("period", "y", "x"), rate),
                       "thaw_season_los": (("period", "y", "x"), np.full_like(rate, np.nan))},
                      coords={"sensor": ("period", ["a", "b", "b"])})
    mask, count, needed = common_area(maps, 5)
    assert needed == 2  # capped at the sensors that have data
    assert count.values.tolist() == [[2, 1]] and mask.values.tolist() == [[True, False]]


# --- Bad pair input -------------------------------------------------------------------------


def _copy_pair(tiny_world: Path, folder: Path) -> tuple[Path, dict]:
    src = sorted((tiny_world / "pairs").glob("*.tif"))[0]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, folder / src.name)
    shutil.copy(src.with_suffix(".json"), folder / src.with_suffix(".json").name)
    return folder / src.name, json.loads(src.with_suffix(".json").read_text())


@pytest.mark.parametrize("dates", [("2019-07-14", "2019-05-19"), ("2019-05-19", "2019-05-19")])
def test_pair_with_reversed_or_equal_dates_is_refused_by_name(tmp_path, tiny_world, dates):
    tif, meta = _copy_pair(tiny_world, tmp_path)
    meta["reference_date"], meta["secondary_date"] = dates
    tif.with_suffix(".json").write_text(json.dumps(meta))
    kind = "equal" if dates[0] == dates[1] else "reversed"
    with pytest.raises(InputError, match=f"{tif.stem}.json: reference_date/secondary_date.*"
                                         f"{kind} dates"):
        find_pairs(tmp_path)


def test_pair_on_another_grid_is_reprojected_and_one_without_crs_refused(tmp_path, tiny_world):
    import rasterio
    from rasterio.transform import Affine

    from talik.tasks.stage import grid_of_raster, pairs_on_grid

    tif, meta = _copy_pair(tiny_world, tmp_path / "pairs")
    grid = grid_of_raster(tif)
    with rasterio.open(tif) as src:
        data, profile = src.read(), src.profile
    # The same pair on a grid of 45 m pixels shifted by 10 m: staged onto the original grid.
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    t = profile["transform"]
    profile_c = {**profile, "transform": Affine(45.0, 0, t.c + 10, 0, -45.0, t.f - 10),
                 "width": int(data.shape[2] * 30 / 45), "height": int(data.shape[1] * 30 / 45)}
    with rasterio.open(coarse / tif.name, "w", **profile_c) as dst:
        dst.write(data[:, ::3, ::3].repeat(2, 1).repeat(2, 2)[:, :profile_c["height"],
                                                               :profile_c["width"]])
    shutil.copy(tif.with_suffix(".json"), coarse / tif.with_suffix(".json").name)
    staged = pairs_on_grid(find_pairs(coarse), grid)
    assert staged["los_mm"].shape == (1, grid.height, grid.width)
    assert np.isfinite(staged["los_mm"].values).mean() > 0.5
    # Without a CRS the grid cannot be placed: refused, naming the file.
    bare = tmp_path / "bare"
    bare.mkdir()
    profile_b = {k: v for k, v in profile.items() if k not in ("crs",)}
    with rasterio.open(bare / tif.name, "w", **profile_b) as dst:
        dst.write(data)
    with pytest.raises(InputError, match=f"{tif.name}: CRS"):
        read_pair(bare / tif.name, find_pairs(coarse)[0][1])


# --- The demo world -------------------------------------------------------------------------


def _demo_cfg(cfg):
    """The science world's study with the demo study's sensors and periods."""
    demo = tomllib.loads((REPO / "studies" / "demo.toml").read_text())
    sensors = {k: Sensor.model_validate(v) for k, v in demo["sensors"].items()}
    sensors["sentinel1"] = cfg.sensors["sentinel1"]
    periods = [Period.model_validate(p) for p in demo["periods"]]
    return cfg.model_copy(update={"sensors": sensors, "periods": periods})


def _step(name: str, path: Path) -> StepOutput:
    return StepOutput(step=name, path=str(path.parent), digest=path.parent.name)


@pytest.fixture(scope="module")
def longterm_run(science_world):
    """Sentinel-1 step then the long-term step on the demo-sized world (default options)."""
    from talik.tasks.longterm import longterm_dataset
    from talik.tasks.sentinel1 import sentinel1_timeseries

    cfg, staged = science_world
    cfg = _demo_cfg(cfg)
    work = str(cfg.stores.work_dir)
    steps = {k: _step(k, staged[k]) for k in ("sentinel1", "rasters", "gacos", "pairs")}
    s1 = sentinel1_timeseries.fn(steps["sentinel1"], steps["rasters"], steps["gacos"],
                                 steps["pairs"], cfg.sentinel1, "ALOS-2", work, "science")
    out = longterm_dataset.fn(cfg, s1, steps["pairs"], steps["rasters"], steps["gacos"], work)
    return cfg, staged, s1, out


def _world_model(source):
    """The demo world's deformation model, rebuilt from its seed as the generator builds it."""
    from talik.world.climate import simulate_climate
    from talik.world.deformation import DeformationModel
    from talik.world.generate import _rngs

    rng = _rngs(source.seed, ["land", "climate", "deform", "network", "tropo", "s1", "sparse",
                              "modis", "era5", "hydro", "snow", "hard"])
    climate = simulate_climate(rng["climate"], min(source.hydro_start_year, 1996),
                               max(source.hydro_end_year, source.s1_end.year) + 1)
    return DeformationModel.build(rng["deform"], climate["t_air_c"])


@pytest.fixture(scope="module")
def world_truth(longterm_run):
    """Truth maps on the analysis grid, referenced (like the products) to stable ground."""
    cfg, staged, s1, out = longterm_run
    model = _world_model(cfg.source)
    with xr.open_dataset(staged["raw"] / "truth" / "sentinel1_truth.nc") as t:
        truth = t.load()
    with xr.open_zarr(staged["rasters"]) as r:
        stable = stable_ground(r["ground_ice"].values, cfg.sentinel1.stable_max_ground_ice)
    layers = (truth["rate_weight"].values, truth["seasonal_weight"].values,
              truth["thaw_delay_days"].values)
    seasonal_only = (np.zeros_like(layers[0]), *layers[1:])

    def ref(m: np.ndarray) -> np.ndarray:
        return m - np.median(m[stable])

    def los_change(a, b, inc, parts=layers) -> np.ndarray:
        return ref((model.vertical(b, *parts) - model.vertical(a, *parts))
                   * np.cos(np.radians(inc)))

    def full_season(year: int, inc: float) -> np.ndarray:
        return los_change(pd.Timestamp(f"{year}-{cfg.sentinel1.thaw_onset}"),
                          pd.Timestamp(f"{year}-{cfg.sentinel1.thaw_end}"), inc, seasonal_only)

    return {"model": model, "truth": truth, "ref": ref, "los_change": los_change,
            "full_season": full_season, "seasonal_only": seasonal_only}


def _truth_periods(longterm_run, world_truth) -> pd.DataFrame:
    """True period means over the step's common mask, from the pairs the step used."""
    cfg, _, _, out = longterm_run
    folder = Path(out.path)
    pairs = pd.read_csv(folder / "pairs.csv")
    ds = xr.open_dataset(folder / "longterm.nc")
    mask = ds["common_mask"].values.astype(bool)
    wt = world_truth
    rows = []
    for p in cfg.periods:
        if p.sensor == cfg.sentinel1.sensor:
            rate = wt["ref"](wt["truth"]["velocity"].values)
            thaw = wt["ref"](wt["truth"]["thaw_season_deformation_mean"].values)
        else:
            inc = cfg.sensors[p.sensor].incidence_deg
            mine = pairs[(pairs["period"] == p.name) & pairs["used"]]
            long = mine[mine["role"] == "long"]
            rate = np.mean([wt["los_change"](pd.Timestamp(r.reference_date),
                                             pd.Timestamp(r.secondary_date), inc)
                            * 365.25 / r.span_days for r in long.itertuples()], axis=0)
            years = sorted({pd.Timestamp(d).year for d in
                            mine.loc[mine["role"] == "partial_thaw", "reference_date"]})
            thaw = (np.mean([wt["full_season"](y, inc) for y in years], axis=0) if years
                    else np.full(mask.shape, np.nan))
        rows.append({"period": p.name, "rate_true": float(rate[mask].mean()),
                     "thaw_true": float(np.nanmean(thaw[mask])) if np.isfinite(thaw).any()
                     else np.nan})
    return pd.DataFrame(rows).set_index("period")


def test_step_writes_its_outputs(longterm_run):
    _, _, _, out = longterm_run
    folder = Path(out.path)
    for name in ("longterm.nc", "period_stats.csv", "agreement.json", "pairs.csv",
                 "thaw_seasons.csv", "figures/fig9_agreement.png",
                 "figures/fig10_11_period_maps.png", "figures/period_stats.png"):
        assert (folder / name).exists(), name
    table = pd.read_csv(folder / "period_stats.csv")
    assert list(table.columns[:9]) == ["period", "label", "sensor", "rate_mm_yr_mean",
                                       "rate_mm_yr_std", "thaw_season_mm_mean",
                                       "thaw_season_mm_std", "n_pixels", "scaling"]
    ds = xr.open_dataset(folder / "longterm.nc")
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert {"rate_los", "rate_vertical", "thaw_season_los", "thaw_season_vertical",
            "common_mask"} <= set(ds.data_vars)
    assert ds["rate_los"].attrs["units"] == "mm/yr" and ds["thaw_season_los"].attrs["units"] == "mm"
    # Vertical = LOS / cos θ: larger in magnitude, same sign.
    both = np.isfinite(ds["rate_los"]) & (np.abs(ds["rate_los"]) > 0.5)
    ratio = (ds["rate_vertical"] / ds["rate_los"]).where(both)
    assert float(ratio.min()) >= 1.0 and float(ratio.max()) < 1 / np.cos(np.radians(41))
    assert out.summary["n_common_pixels"] > 500
    pairs = pd.read_csv(folder / "pairs.csv")
    unused = pairs[~pairs["used"]]
    assert list(unused["file"]) == ["ALOS2_20190714_20200322.tif"]
    assert unused["reason"].str.contains("neither a long pair").all()


def test_period_means_match_truth(longterm_run, world_truth, science_report):
    """Period means over the common area against the world's truth.

    Tolerances: a sparse period rests on one to four single pairs, whose tropospheric delay
    (stratified with height, no GACOS before 2014) leaves residuals of 2–6 mm over the area
    against the truth, measured pair by pair on this world; a rate from ≥ 1-year pairs divides
    that by the span (≤ ~4 mm/yr), and a scaled thaw season multiplies it by Eq. 4's ratio
    (2–4 for the Table S1 windows). Sentinel-1's own products are checked in
    test_sentinel1_truth; here only their mean over the area.
    """
    _, _, _, out = longterm_run
    table = pd.read_csv(Path(out.path) / "period_stats.csv").set_index("period")
    truth = _truth_periods(longterm_run, world_truth)
    tolerance = {  # (rate mm/yr, thaw season mm)
        "pre_mining": (4.0, 30.0),  # ERS-2: C-band, no GACOS, one 35-day pair × ratio ≈ 4
        "early_mining": (2.0, None),  # Envisat: one 2-year pair, no partial pair
        "intense_mining": (3.0, 15.0),  # ALOS-1: four long pairs; two Jul–Oct pairs × 2.5–3.5
        "post_mining": (1.5, 6.0),  # Sentinel-1 itself (137 dates)
        "post_mining_lband": (2.0, 10.0),  # ALOS-2 with GACOS; one May–Jul pair × ≈ 2
    }
    science_report.append("long-term dataset: period means over the common area "
                          f"({out.summary['n_common_pixels']} px), recovered vs truth (LOS)")
    for period, (tol_rate, tol_thaw) in tolerance.items():
        got, want = table.loc[period], truth.loc[period]
        line = (f"  {period:<19} rate {got['rate_mm_yr_mean']:6.2f} vs {want['rate_true']:6.2f} "
                f"mm/yr")
        if tol_thaw is not None:
            line += f"; thaw season {got['thaw_season_mm_mean']:6.1f} vs {want['thaw_true']:6.1f} mm"
        science_report.append(line)
        assert abs(got["rate_mm_yr_mean"] - want["rate_true"]) <= tol_rate, period
        if tol_thaw is not None:
            assert abs(got["thaw_season_mm_mean"] - want["thaw_true"]) <= tol_thaw, period
        else:
            assert np.isnan(got["thaw_season_mm_mean"])
    # The regime change of the world: subsidence after mining, none before (vertical, + up).
    assert table.loc["post_mining", "rate_vertical_mm_yr_mean"] < -2.0
    for period in ("intense_mining", "post_mining", "post_mining_lband"):
        assert table.loc[period, "rate_vertical_mm_yr_mean"] < table.loc[
            "pre_mining", "rate_vertical_mm_yr_mean"] - 3.0


def test_eq4_beats_thawing_index_where_thaw_is_not_stefan_like(longterm_run, world_truth,
                                                                science_report):
    """Both scalings applied to the *true* partial-pair displacement (pair noise left out).

    The world's settlement follows √TDD from each pixel's own (delayed) thaw onset and heaves
    back after thaw end, so the thawing-index ratio √(TDD_season/TDD_pair) is wrong for a pair
    that starts after onset (ALOS-1 July–October, ALOS-2 May–July); Eq. 4 takes each
    window's share of the season from Sentinel-1. The same comparison on the recovered pairs is
    printed too.
    """
    _, _, _, out = longterm_run
    ds = xr.open_dataset(Path(out.path) / "longterm.nc")
    mask = ds["common_mask"].values.astype(bool)
    wt = world_truth
    seasons = pd.read_csv(Path(out.path) / "thaw_seasons.csv").set_index("file")
    science_report.append("long-term dataset: partial-pair scaling to the full thaw season, "
                          "error of the area mean (true pair | recovered pair), mm")
    errors = {}
    for i in range(ds.sizes["season"]):
        s = ds.isel(season=i)
        file = str(s["season_file"].values)
        a = pd.Timestamp(s["season_reference_date"].values)
        b = pd.Timestamp(s["season_secondary_date"].values)
        inc = float(s["season_incidence_deg"].values)
        true_pair = wt["los_change"](a, b, inc, wt["seasonal_only"])
        full = wt["full_season"](a.year, inc)[mask].mean()
        eq4 = (true_pair * s["season_ratio"].values)[mask].mean() - full
        stefan = (true_pair * float(s["season_thawing_index_factor"].values))[mask].mean() - full
        rec = seasons.loc[file]
        errors[file] = (eq4, stefan)
        science_report.append(
            f"  {file:<28} truth {full:6.1f}  Eq.4 {eq4:+6.1f} | "
            f"{rec['thaw_sentinel1_mm_mean'] - full:+6.1f}   thawing index {stefan:+6.1f} | "
            f"{rec['thaw_thawing_index_mm_mean'] - full:+6.1f}")
    mid_season = [f for f in errors if not f.startswith("ERS2")]
    assert len(mid_season) == 3
    for f in mid_season:
        assert abs(errors[f][0]) < abs(errors[f][1]), f
    # Eq. 4 on a noise-free pair: within 5 mm of the season everywhere (the S1 years' thaw
    # timing differs from the pair's year by a few days, which is what remains).
    assert all(abs(e[0]) < 5.0 for e in errors.values())


def test_alos2_agrees_with_sentinel1_over_2019(longterm_run, science_report):
    """Fig. 9: the ALOS-2 May–July 2019 pair against Sentinel-1 over the same dates.

    The study finds R = 0.84, bias −3.6 mm, RMSE 9.3 mm; one L-band pair carries its own
    atmosphere and decorrelation noise (a few mm), so R > 0.5 and RMSE < 10 mm are asked.
    """
    _, _, _, out = longterm_run
    rows = json.loads((Path(out.path) / "agreement.json").read_text())["pairs"]
    assert [r["file"] for r in rows] == ["ALOS2_20190519_20190714.tif"]
    a = rows[0]
    science_report.append(f"long-term dataset: ALOS-2 vs Sentinel-1 2019-05-19 → 2019-07-14 "
                          f"(S1 LOS, {a['n']} px): R {a['r']:.2f}, bias {a['bias']:+.1f} mm, "
                          f"MAB {a['mae']:.1f} mm, RMSE {a['rmse']:.1f} mm")
    assert a["n"] > 500
    assert a["r"] > 0.5 and a["rmse"] < 10.0 and abs(a["bias"]) < 5.0


def test_the_noisiest_scaled_thaw_season_is_flagged_not_trusted(longterm_run, science_report):
    """The flag must single out the value the truth shows to be worst, and keep the best.

    On this world the ERS-2 period's scaled thaw season (one 35-day pair starting before thaw
    onset, scaled × ≈ 4, no GACOS) is off by ~30 mm; ALOS-2's (GACOS, × ≈ 2) by ~2.5 mm. The
    noise estimate (the pair's scatter on stable ground × its factor) must rank them so, and
    the default threshold must flag the first and trust the second; Sentinel-1 is trusted.
    """
    _, _, _, out = longterm_run
    table = pd.read_csv(Path(out.path) / "period_stats.csv").set_index("period")
    noise = table["thaw_season_noise_mm"]
    science_report.append("long-term dataset: per-pixel noise of the scaled thaw seasons, mm: "
                          + ", ".join(f"{p} {v:.1f}" for p, v in noise.dropna().items()))
    assert noise["pre_mining"] > noise["post_mining_lband"]
    assert not table.loc["pre_mining", "thaw_season_reliable"]
    assert table.loc["post_mining_lband", "thaw_season_reliable"]
    assert table.loc["post_mining", "thaw_season_reliable"]
    assert not table.loc["early_mining", "thaw_season_reliable"]  # no thaw-season value at all
