"""Writers for the demo world's non-SAR inputs, in the formats real sources deliver.

* DEM: GLO-30-like GeoTIFF, EPSG:4326, 1 arc-second, float32 metres.
* Ground ice: GeoTIFF, EPSG:4326, 0.0025°, volumetric ice fraction.
* MODIS stacks as Earth Engine exports them: raw integers with the product's scale and fill
  (MOD13Q1 NDVI int16 × 0.0001, fill −3000; MCD43A3 band-7 albedo int16 × 0.001, fill 32767;
  MOD11A1 daytime LST uint16 × 0.02 K, fill 0), one band per date named by its date.
* ERA5-Land monthly means as the new CDS writes NetCDF: ``valid_time`` (seconds since 1970),
  decreasing ``latitude``, ``longitude``; accumulations (tp, e, ssr, str) as mean daily
  accumulations; ECMWF sign conventions (downward positive, evaporation negative).
* Station daily air temperature and outlet daily discharge as CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer
from rasterio.transform import from_origin

from talik.world.geotiff import write_geotiff
from talik.world.landscape import UTM_CRS, Landscape

__all__ = [
    "LonLatBox",
    "scene_lonlat_box",
    "write_dem",
    "write_discharge_csv",
    "write_era5_monthly",
    "write_ground_ice",
    "write_modis",
    "write_station_csv",
]

LonLatBox = tuple[float, float, float, float]


def scene_lonlat_box(x0: float, y0: float, width_m: float, height_m: float, margin_deg: float
                     ) -> LonLatBox:
    """Geographic box (west, south, east, north) enclosing a UTM rectangle plus a margin."""
    to_ll = Transformer.from_crs(UTM_CRS, "EPSG:4326", always_xy=True)
    xs = np.array([x0, x0 + width_m, x0, x0 + width_m])
    ys = np.array([y0, y0, y0 - height_m, y0 - height_m])
    lon, lat = to_ll.transform(xs, ys)
    return (min(lon) - margin_deg, min(lat) - margin_deg, max(lon) + margin_deg,
            max(lat) + margin_deg)


def _lonlat_grid(box: LonLatBox, step: float) -> tuple[np.ndarray, np.ndarray, object]:
    west = np.floor(box[0] / step) * step
    north = np.ceil(box[3] / step) * step
    nx = int(np.ceil((box[2] - west) / step))
    ny = int(np.ceil((north - box[1]) / step))
    lons = west + step * (np.arange(nx) + 0.5)
    lats = north - step * (np.arange(ny) + 0.5)
    return lons, lats, from_origin(west, north, step, step)


def _sample_lonlat_grid(land: Landscape, name: str, lons: np.ndarray, lats: np.ndarray
                        ) -> np.ndarray:
    lon2, lat2 = np.meshgrid(lons, lats)
    return land.sample_lonlat(name, lon2, lat2)


def write_dem(path: Path, land: Landscape, box: LonLatBox) -> None:
    """Copernicus GLO-30-like DEM (float32 metres, EPSG:4326, 1 arc-second)."""
    lons, lats, transform = _lonlat_grid(box, 1.0 / 3600.0)
    dem = _sample_lonlat_grid(land, "elevation", lons, lats).astype(np.float32)
    write_geotiff(path, dem, transform, "EPSG:4326", compress="deflate",
                  tags={"units": "m", "vertical_datum": "EGM2008"})


def write_ground_ice(path: Path, land: Landscape, box: LonLatBox) -> None:
    """Ground-ice content map (volumetric fraction, EPSG:4326, 0.0025°), like a TPDC map."""
    step = 0.0025
    lons, lats, transform = _lonlat_grid(box, step)
    # Average the fine ice field over each map cell (maps are coarse).
    sub = 5
    acc = np.zeros((len(lats), len(lons)))
    for dy in (np.arange(sub) + 0.5) / sub - 0.5:
        for dx in (np.arange(sub) + 0.5) / sub - 0.5:
            acc += _sample_lonlat_grid(land, "ground_ice", lons + dx * step, lats + dy * step)
    ice = (acc / sub**2).astype(np.float32)
    write_geotiff(path, ice, transform, "EPSG:4326", nodata=np.nan,
                  tags={"units": "1", "long_name": "volumetric ground-ice content"})


def write_modis(
    out_dir: Path, rng: np.random.Generator, land: Landscape, box: LonLatBox,
    climate: pd.DataFrame, years: list[int],
) -> list[Path]:
    """MODIS-like NDVI, SWIR albedo and daytime LST stacks for May–October of ``years``."""
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for year in years:
        # NDVI, 16-day composites (MOD13Q1), 250 m.
        lons, lats, transform = _lonlat_grid(box, 0.0025)
        wet = _sample_lonlat_grid(land, "wetness", lons, lats)
        low = _sample_lonlat_grid(land, "lowland", lons, lats)
        water = _sample_lonlat_grid(land, "water", lons, lats) > 0.5
        doys = [d for d in range(1, 366, 16) if 121 <= d <= 289]
        bands, names = [], []
        for doy in doys:
            date = pd.Timestamp(year, 1, 1) + pd.Timedelta(days=doy - 1)
            green = np.exp(-(((doy - 215) / 45.0) ** 2))
            ndvi = 0.12 + green * (0.3 + 0.35 * low + 0.1 * wet) + 0.03 * rng.standard_normal(wet.shape)
            ndvi = np.where(water, -0.08, ndvi)
            raw = np.clip(np.round(ndvi / 0.0001), -2000, 10000).astype(np.int16)
            cloudy = rng.random(raw.shape) < 0.05
            raw[cloudy] = -3000
            bands.append(raw)
            names.append(f"{date:%Y-%m-%d}")
        p = out_dir / f"MOD13Q1_NDVI_{year}.tif"
        write_geotiff(p, np.stack(bands), transform, "EPSG:4326", nodata=-3000, descriptions=names,
                      tags={"product": "MOD13Q1", "band": "NDVI", "scale_factor": "0.0001"})
        written.append(p)

        days = pd.date_range(f"{year}-05-01", f"{year}-10-31", freq="D")
        # SWIR (band 7) black-sky albedo (MCD43A3), 500 m, daily.
        lons, lats, transform = _lonlat_grid(box, 0.005)
        wet = _sample_lonlat_grid(land, "wetness", lons, lats)
        water = _sample_lonlat_grid(land, "water", lons, lats)
        bands, names = [], []
        for day in days:
            snow = float(climate.loc[day, "snow_depth_m"]) > 0.01
            albedo = 0.2 - 0.09 * wet - 0.05 * water + 0.008 * rng.standard_normal(wet.shape)
            albedo = albedo + (0.25 if snow else 0.0)
            raw = np.clip(np.round(albedo / 0.001), 0, 32766).astype(np.int16)
            raw[rng.random(raw.shape) < 0.1] = 32767
            bands.append(raw)
            names.append(f"{day:%Y-%m-%d}")
        p = out_dir / f"MCD43A3_Albedo_BSA_Band7_{year}.tif"
        write_geotiff(p, np.stack(bands), transform, "EPSG:4326", nodata=32767, descriptions=names,
                      tags={"product": "MCD43A3", "band": "Albedo_BSA_Band7", "scale_factor": "0.001"})
        written.append(p)

        # Daytime land-surface temperature (MOD11A1), 1 km, daily, with cloud gaps.
        lons, lats, transform = _lonlat_grid(box, 0.01)
        elev = _sample_lonlat_grid(land, "elevation", lons, lats)
        wet = _sample_lonlat_grid(land, "wetness", lons, lats)
        bands, names = [], []
        for day in days:
            t_air = float(climate.loc[day, "t_air_c"])
            lst_c = t_air + 9.0 - 3.0 * wet - 0.0065 * (elev - 3900) + 1.5 * rng.standard_normal(elev.shape)
            raw = np.clip(np.round((lst_c + 273.15) / 0.02), 7500, 65535).astype(np.uint16)
            raw[rng.random(raw.shape) < 0.35] = 0
            bands.append(raw)
            names.append(f"{day:%Y-%m-%d}")
        p = out_dir / f"MOD11A1_LST_Day_1km_{year}.tif"
        write_geotiff(p, np.stack(bands), transform, "EPSG:4326", nodata=0, descriptions=names,
                      tags={"product": "MOD11A1", "band": "LST_Day_1km", "scale_factor": "0.02"})
        written.append(p)
    return written


def write_era5_monthly(path: Path, rng: np.random.Generator, climate: pd.DataFrame,
                       box: LonLatBox) -> None:
    """ERA5-Land monthly means (``reanalysis-era5-land-monthly-means``) in the new CDS layout."""
    step = 0.1
    west = np.floor(box[0] / step) * step
    east = np.ceil(box[2] / step) * step
    south = np.floor(box[1] / step) * step
    north = np.ceil(box[3] / step) * step
    lons = np.round(np.arange(west, east + step / 2, step), 4)
    lats = np.round(np.arange(north, south - step / 2, -step), 4)
    monthly = climate.resample("MS").mean()
    times = monthly.index
    nt, ny, nx = len(times), len(lats), len(lons)
    cell = rng.normal(0, 1, (ny, nx))

    def field(values: np.ndarray, spread: float) -> np.ndarray:
        return (values[:, None, None] * (1 + spread * cell[None])).astype(np.float32)

    t2m = (monthly["t_air_c"].to_numpy() + 273.15 - 0.8)[:, None, None] + 0.4 * cell[None]
    data = {
        "t2m": (t2m.astype(np.float32), "K", "2 metre temperature", "2t", "avgua"),
        "tp": (field(monthly["precip_mm"].to_numpy() / 1000, 0.05), "m", "Total precipitation",
               "tp", "avgad"),
        "e": (field(-monthly["et_mm"].to_numpy() / 1000, 0.05), "m of water equivalent",
              "Evaporation", "e", "avgad"),
        "ssr": (field(monthly["ssr_mj"].to_numpy() * 1e6, 0.02), "J m**-2",
                "Surface net short-wave (solar) radiation", "ssr", "avgad"),
        "str": (field(monthly["str_mj"].to_numpy() * 1e6, 0.02), "J m**-2",
                "Surface net long-wave (thermal) radiation", "str", "avgad"),
        "sde": (field(monthly["snow_depth_m"].to_numpy(), 0.1), "m", "Snow depth", "sde", "avgua"),
        "swvl1": (field(monthly["soil_moisture"].to_numpy(), 0.03), "m**3 m**-3",
                  "Volumetric soil water layer 1", "swvl1", "avgua"),
    }
    variables = {}
    for name, (values, units, long_name, short, step_type) in data.items():
        variables[name] = xr.Variable(
            ("valid_time", "latitude", "longitude"),
            values,
            attrs={
                "units": units,
                "long_name": long_name,
                "GRIB_shortName": short,
                "GRIB_cfVarName": name,
                "GRIB_stepType": step_type,
                "GRIB_units": units,
                "GRIB_gridType": "regular_ll",
                "standard_name": "unknown",
            },
        )
    ds = xr.Dataset(
        variables,
        coords={
            "valid_time": ("valid_time", times.to_numpy()),
            "latitude": ("latitude", lats, {"units": "degrees_north", "stored_direction": "decreasing"}),
            "longitude": ("longitude", lons, {"units": "degrees_east"}),
            "number": ((), 0, {"long_name": "ensemble member numerical id"}),
            "expver": ("valid_time", np.array(["0001"] * nt, dtype=object)),
        },
        attrs={
            "GRIB_centre": "ecmf",
            "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
            "GRIB_subCentre": 0,
            "Conventions": "CF-1.7",
            "institution": "European Centre for Medium-Range Weather Forecasts",
            "history": "talik demo world: ERA5-Land monthly means in the new-CDS NetCDF layout",
        },
    )
    encoding = {
        "valid_time": {"units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian",
                       "dtype": "int64"},
    }
    for name in data:
        encoding[name] = {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, encoding=encoding, engine="netcdf4")


def write_station_csv(path: Path, climate: pd.DataFrame, start_year: int, end_year: int) -> None:
    """Station daily mean air temperature: ``date,t_mean_c`` (°C, 0.1 °C resolution)."""
    t = climate.loc[f"{start_year}-01-01":f"{end_year}-12-31", "t_air_c"] + 0.9
    frame = pd.DataFrame({"date": t.index.strftime("%Y-%m-%d"), "t_mean_c": t.round(1).to_numpy()})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def write_discharge_csv(path: Path, discharge: pd.Series) -> None:
    """Outlet daily discharge, May–October only, as a yearbook digitisation: ``date,discharge_m3s``."""
    frame = pd.DataFrame({"date": discharge.index.strftime("%Y-%m-%d"),
                          "discharge_m3s": discharge.to_numpy()})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
