"""Generate the whole demo world into a folder, with its truth beside it.

Layout of the folder (the same a user would assemble from real downloads)::

    hyp3/<HyP3 INSAR_GAMMA product folders>
    pairs/<SENSOR>_<date1>_<date2>.tif + .json     ERS-2, Envisat, ALOS-1, ALOS-2
    gacos/<YYYYMMDD>.ztd + .ztd.rsc
    dem/glo30.tif, ground_ice.tif
    modis/MOD13Q1_NDVI_<year>.tif, MCD43A3_Albedo_BSA_Band7_<year>.tif, MOD11A1_LST_Day_1km_<year>.tif
    era5land_monthly.nc, station_tmean.csv, discharge.csv
    truth/                                          what the pipeline should find
    world.json                                      parameters, inventory, summary of the truth
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer

from talik import __version__
from talik.config import WorldSource
from talik.world.ancillary import (
    scene_lonlat_box,
    write_dem,
    write_discharge_csv,
    write_era5_monthly,
    write_ground_ice,
    write_modis,
    write_station_csv,
)
from talik.world.climate import simulate_climate, thaw_seasons
from talik.world.deformation import DeformationModel, decimal_year
from talik.world.hydrology import DISTURBANCE, annual_predictors, simulate_discharge, true_ks
from talik.world.landscape import UTM_CRS, WORLD_CENTER_LONLAT, Landscape, lake_mask
from talik.world.sentinel1 import S1Difficulties, S1Frame, build_network, write_s1_products
from talik.world.snow import SnowCover
from talik.world.sparse_pairs import SPARSE_SENSORS, TABLE_S1, write_sparse_pairs
from talik.world.troposphere import Troposphere, write_gacos

__all__ = ["WORLD_FORMAT_VERSION", "generate_world", "world_is_complete"]

WORLD_FORMAT_VERSION = 1
TRUTH_CUBE_MAX_BYTES = 400e6


def _generator_digest() -> str:
    """Fingerprint of the generator's code: a changed generator makes a new world."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _params(source: WorldSource) -> dict:
    params = source.model_dump(mode="json")
    params.pop("raw_dir", None)
    params["format_version"] = WORLD_FORMAT_VERSION
    params["generator"] = _generator_digest()
    return params


def world_is_complete(folder: Path, source: WorldSource) -> bool:
    """True if ``folder`` holds a finished world generated with the same parameters."""
    meta = folder / "world.json"
    if not meta.exists():
        return False
    try:
        return json.loads(meta.read_text())["parameters"] == _params(source)
    except (ValueError, KeyError):
        return False


def _rngs(seed: int, names: list[str]) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)}


def generate_world(source: WorldSource, geometry_in_every_product: bool = True) -> Path:
    """Write the world described by ``source`` into ``source.raw_dir``; return that folder.

    Writing goes to a temporary sibling folder that is renamed into place at the end, so an
    interrupted generation never leaves a half-written world behind. A complete world with
    the same parameters is reused.
    """
    final = Path(source.raw_dir)
    if world_is_complete(final, source):
        return final
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        _generate_into(tmp, source, geometry_in_every_product)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _generate_into(out: Path, source: WorldSource, geometry_in_every_product: bool) -> None:
    # New streams go at the end: spawned children are keyed by their index, so appending
    # names leaves the draws of the first ten (the demo world) unchanged.
    rng = _rngs(
        source.seed,
        ["land", "climate", "deform", "network", "tropo", "s1", "sparse", "modis", "era5", "hydro",
         "snow", "hard"],
    )
    # --- Where: a Sentinel-1 frame centred on the Fig. 3c site (optionally shifted), on HyP3's
    # aligned 80 m grid.
    to_utm = Transformer.from_crs("EPSG:4326", UTM_CRS, always_xy=True)
    xc, yc = to_utm.transform(*WORLD_CENTER_LONLAT)
    east_km, north_km = source.center_offset_km
    if east_km or north_km:
        xc, yc = xc + 1000.0 * east_km, yc + 1000.0 * north_km
    p = source.pixel_m
    width, height = source.nx * p, source.ny * p
    x0 = np.round((xc - width / 2) / p) * p
    y0 = np.round((yc + height / 2) / p) * p
    frame = S1Frame(x0=float(x0), y0=float(y0), ny=source.ny, nx=source.nx, pixel_m=p)
    spacing = p / 2 if max(source.nx, source.ny) <= 512 else p
    land = Landscape.build(rng["land"], x0, y0, width, height, spacing)
    box = scene_lonlat_box(x0, y0, width, height, margin_deg=0.01)

    # --- When: daily climate and the deformation model driven by it.
    first_year = min(source.hydro_start_year, 1996)
    last_year = max(source.hydro_end_year, source.s1_end.year) + 1
    climate = simulate_climate(rng["climate"], first_year, last_year)
    model = DeformationModel.build(rng["deform"], climate["t_air_c"])

    # --- Sentinel-1: network, troposphere, HyP3 products, GACOS, truth.
    network = build_network(rng["network"], source.s1_start, source.s1_end,
                            source.s1_repeat_days, source.neighbours,
                            winter_acquisitions=source.winter_acquisitions)
    sparse_dates = [d for _, a, b, _ in TABLE_S1 for d in (a, b)]
    tropo = Troposphere.build(rng["tropo"], list(network.dates) + sparse_dates)

    n_dates = len(network.dates)
    t_years = decimal_year(network.dates) - decimal_year(network.dates[:1])[0]
    cube_bytes = n_dates * source.ny * source.nx * 4
    cube = (np.zeros((n_dates, source.ny, source.nx), np.float32)
            if cube_bytes <= TRUTH_CUBE_MAX_BYTES else None)
    sums = {k: np.zeros((source.ny, source.nx)) for k in ("u", "tu")}

    def on_truth(i: int, _date: dt.date, los: np.ndarray) -> None:
        if cube is not None:
            cube[i] = los
        sums["u"] += los
        sums["tu"] += t_years[i] * los

    # --- Optional hardships (the "hard" world): per-pixel snow, a no-data lake, phase offsets.
    pxs, pys = frame.coords(padded=True)
    snow = None
    if source.winter_acquisitions:
        snow = SnowCover.build(rng["snow"], thaw_seasons(climate["t_air_c"]),
                               land.sample_grid("elevation", pxs, pys), p,
                               source.snow_spread_days, source.snow_ridge_days)
    lake = None
    if source.lake_nodata:
        pxx, pyy = np.meshgrid(pxs, pys)
        lake = lake_mask(pxx, pyy, x0, y0, width, height)
    difficulties = None
    if snow is not None or lake is not None or source.reference_offset_std_rad > 0:
        difficulties = S1Difficulties(rng=rng["hard"], snow=snow, lake=lake,
                                      reference_offset_std_rad=source.reference_offset_std_rad)

    pair_table = write_s1_products(
        out / "hyp3", rng["s1"], frame, network, land, model, tropo,
        source.unwrapping_error_fraction, geometry_in_every_product, on_truth, difficulties,
    )
    if source.gacos:
        # GACOS serves any date of the modern era: the Sentinel-1 dates and the ALOS-2 ones.
        lband_dates = sorted({dt.date.fromisoformat(d) for d in sparse_dates
                              if dt.date.fromisoformat(d).year >= 2014})
        _write_gacos_files(out / "gacos", sorted(set(network.dates) | set(lband_dates)), land,
                           tropo, box)

    # --- Sparse sensors, ancillary rasters, climate and hydrology files.
    sparse_table = write_sparse_pairs(out / "pairs", rng["sparse"], x0, y0, width, height,
                                      land, model, tropo)
    write_dem(out / "dem" / "glo30.tif", land, box)
    write_ground_ice(out / "ground_ice.tif", land, box)
    s1_years = sorted({d.year for d in network.dates})
    modis_years = [y for y in s1_years if dt.date(y, 5, 1) >= network.dates[0]
                   and dt.date(y, 10, 31) <= network.dates[-1]] or s1_years[:1]
    write_modis(out / "modis", rng["modis"], land, box, climate, modis_years)
    hydro_climate = climate.loc[f"{source.hydro_start_year}":f"{source.hydro_end_year}"]
    write_era5_monthly(out / "era5land_monthly.nc", rng["era5"], hydro_climate, box)
    write_station_csv(out / "station_tmean.csv", climate, source.hydro_start_year,
                      source.hydro_end_year)
    predictors = annual_predictors(hydro_climate)
    ks = true_ks(rng["hydro"], predictors)
    discharge = simulate_discharge(rng["hydro"], climate, ks["ks_days"])
    write_discharge_csv(out / "discharge.csv", discharge)

    # --- Truth.
    truth_dir = out / "truth"
    truth_dir.mkdir()
    xs, ys = frame.coords()
    inc_deg = frame.incidence_deg()
    cos_inc = np.cos(np.radians(inc_deg))
    layer = {name: land.sample_grid(name, xs, ys) for name in
             ("rate_weight", "seasonal_weight", "thaw_delay_days", "lowland", "ground_ice",
              "water", "elevation", "slope_deg", "wetness")}
    # Velocity = least-squares slope of the true LOS series at the network dates.
    t_mean = t_years.mean()
    sxx = float(((t_years - t_mean) ** 2).sum())
    velocity = (sums["tu"] - t_mean * sums["u"]) / sxx
    thaw_years = [y for y in s1_years
                  if network.dates[0] <= dt.date(y, 5, 1) and dt.date(y, 10, 1) <= network.dates[-1]]
    thaw = []
    for y in thaw_years:
        on, end = dt.date(y, 5, 1), dt.date(y, 10, 1)
        args = (layer["rate_weight"], layer["seasonal_weight"], layer["thaw_delay_days"])
        change = (model.vertical(end, *args) - model.vertical(on, *args)) * cos_inc
        thaw.append(change - velocity * (end - on).days / 365.25)
    thaw_arr = np.stack(thaw) if thaw else np.zeros((0, source.ny, source.nx))
    coords = {"y": ys, "x": xs}
    ds = xr.Dataset(
        {
            "velocity": (("y", "x"), velocity.astype(np.float32),
                         {"units": "mm/yr", "long_name": "LOS rate, least-squares slope at the "
                          "network dates, positive toward the satellite"}),
            "velocity_vertical": (("y", "x"), (velocity / cos_inc).astype(np.float32),
                                  {"units": "mm/yr"}),
            "thaw_season_deformation": (("year", "y", "x"), thaw_arr.astype(np.float32),
                                        {"units": "mm", "long_name": "LOS change 1 May → 1 Oct "
                                         "of the detrended series"}),
            "thaw_season_deformation_mean": (("y", "x"), thaw_arr.mean(axis=0).astype(np.float32)
                                             if len(thaw) else np.zeros((source.ny, source.nx)),
                                             {"units": "mm"}),
            "incidence_deg": (("y", "x"), inc_deg.astype(np.float32), {"units": "degree"}),
            **{k: (("y", "x"), v.astype(np.float32)) for k, v in layer.items()},
        },
        coords={**coords, "year": thaw_years},
        attrs={"crs": UTM_CRS, "sign_convention": "positive = toward the satellite (uplift)",
               "pixel_m": p},
    )
    if cube is not None:
        rel = cube - cube[0]
        ds["displacement"] = (("time", "y", "x"), rel,
                              {"units": "mm", "long_name": "true cumulative LOS displacement "
                               "relative to the first network date"})
        ds = ds.assign_coords(time=pd.to_datetime(network.dates))
    if snow is not None:
        inner = (slice(frame.pad, -frame.pad), slice(frame.pad, -frame.pad))
        ds["snow_cover"] = (("time", "y", "x"),
                            np.stack([snow.covered(d)[inner] for d in network.dates]).astype(np.uint8),
                            {"units": "1", "long_name": "1 where the ground is snow-covered on the "
                             "date, so that every pair with that date is incoherent there"})
        ds["snow_ridge"] = (("y", "x"), snow.ridge[inner].astype(np.float32),
                            {"units": "1", "long_name": "wind-scoured ridge weight (snow comes "
                             "later and leaves earlier)"})
        ds = ds.assign_coords(time=pd.to_datetime(network.dates))
    if lake is not None:
        xx, yy = np.meshgrid(xs, ys)
        ds["lake"] = (("y", "x"), lake_mask(xx, yy, x0, y0, width, height).astype(np.uint8),
                      {"units": "1", "long_name": "1 on the lake, HyP3 no-data in every product"})
    ds.to_netcdf(truth_dir / "sentinel1_truth.nc")
    pair_table.to_csv(truth_dir / "s1_pairs.csv", index=False)

    period_rows = _sparse_truth(sparse_table, frame, land, model, layer)
    pd.DataFrame(period_rows).to_csv(truth_dir / "sparse_pairs.csv", index=False)
    ks.to_csv(truth_dir / "ks_truth.csv", index_label="year")
    predictors.to_csv(truth_dir / "annual_predictors.csv", index_label="year")

    lowland = layer["lowland"] > 0.5
    before = ks.loc[: DISTURBANCE["start"] - 1, "ks_days"].mean()
    during = ks.loc[DISTURBANCE["start"] : DISTURBANCE["peak"], "ks_days"].mean()
    meta = {
        "talik_version": __version__,
        "parameters": _params(source),
        "crs": UTM_CRS,
        "s1_grid": {"x0": frame.x0, "y0": frame.y0, "nx": frame.nx, "ny": frame.ny,
                    "pixel_m": frame.pixel_m},
        "lonlat_box": box,
        "s1_network": {
            "n_dates": n_dates,
            "n_pairs": len(network.pairs),
            "first_date": network.dates[0].isoformat(),
            "last_date": network.dates[-1].isoformat(),
            "winter_gaps": [[a.isoformat(), b.isoformat()] for a, b in network.gaps],
            "n_unwrapping_errors": int((pair_table["unwrapping_error_cycles"] != 0).sum()),
            **({"winter_acquisitions": True,
                "snow_windows_median": [
                    [w, *(d.isoformat() for d in snow.scene_window(w))]
                    for w in sorted(snow.onset)
                    if network.dates[0].year - 1 <= w <= network.dates[-1].year]}
               if snow is not None else {}),
            **({"lake_pixels": int(ds["lake"].sum())} if lake is not None else {}),
        },
        "disturbance": DISTURBANCE,
        "ks_ratio_during_to_before": float(during / before),
        "lowland_summary": {
            "velocity_mm_yr_mean": float(velocity[lowland].mean()),
            "thaw_season_mm_mean": float(thaw_arr.mean(axis=0)[lowland].mean()) if thaw else None,
        },
        "seasonal_amplitude_mm": {str(k): round(v, 2) for k, v in model.amplitude_mm.items()},
        "sensors": {k: vars(v) for k, v in SPARSE_SENSORS.items()},
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def _write_gacos_files(folder: Path, dates, land: Landscape, tropo: Troposphere, box) -> None:
    step = 1.0 / 1200.0  # 3 arc-seconds, GACOS's usual spacing
    west = np.floor(box[0] / step) * step
    north = np.ceil(box[3] / step) * step
    nx = int(np.ceil((box[2] - west) / step))
    ny = int(np.ceil((north - box[1]) / step))
    lons = west + step * (np.arange(nx) + 0.5)
    lats = north - step * (np.arange(ny) + 0.5)
    lon2, lat2 = np.meshgrid(lons, lats)
    elevation = land.sample_lonlat("elevation", lon2, lat2)
    pixel_m = step * 111_000 * np.cos(np.radians(lats.mean()))
    for d in dates:
        ztd = tropo.zenith_delay(d, elevation, pixel_m, gacos=True)
        write_gacos(folder / f"{d:%Y%m%d}.ztd", ztd, west, north, step, d)


def _sparse_truth(table: pd.DataFrame, frame: S1Frame, land: Landscape,
                  model: DeformationModel, layer: dict) -> list[dict]:
    """Per pair: true LOS displacement and annualised rate over the lowland and the scene."""
    rows = []
    lowland = layer["lowland"] > 0.5
    args = (layer["rate_weight"], layer["seasonal_weight"], layer["thaw_delay_days"])
    for rec in table.to_dict("records"):
        sensor = SPARSE_SENSORS[rec["sensor"]]
        cos_inc = np.cos(np.radians(sensor.incidence_deg))
        d1, d2 = rec["reference_date"], rec["secondary_date"]
        los = (model.vertical(d2, *args) - model.vertical(d1, *args)) * cos_inc
        rate = los * 365.25 / rec["span_days"]
        rows.append({**rec,
                     "lowland_los_mm_mean": float(los[lowland].mean()),
                     "lowland_los_mm_std": float(los[lowland].std()),
                     "lowland_rate_mm_yr_mean": float(rate[lowland].mean()),
                     "lowland_rate_mm_yr_std": float(rate[lowland].std())})
    return rows
