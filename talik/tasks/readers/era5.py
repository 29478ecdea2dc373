"""Reader of ERA5-Land NetCDF as the Copernicus Climate Data Store delivers it.

Accepts one NetCDF file, a folder of them, or the zip the new CDS returns when a request mixes
instantaneous and accumulated variables (one file per ``stepType``). Both products are read:

* **monthly means** (``reanalysis-era5-land-monthly-means``): accumulations (tp, e, ssr, str)
  are mean *daily* accumulations, so a month's total is the value × days in the month;
* **hourly** (``reanalysis-era5-land``): accumulations run from 00 UTC, so a day's total is
  the value at 00 UTC of the next day.

The result is always monthly, with talik's names and units: ``air_temperature`` (°C, mean),
``precipitation`` (mm, monthly total), ``evapotranspiration`` (mm, monthly total, positive =
water leaving the ground; ECMWF's ``e`` is negative for evaporation), ``net_radiation``
(MJ m⁻² d⁻¹, mean of ssr + str, downward positive), ``snow_depth`` (m, mean) and
``soil_moisture`` (m³ m⁻³, mean of layer 1, 0–7 cm).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from talik.errors import InputError
from talik.tasks.readers.archive import safe_extract

__all__ = ["ERA5_UNITS", "ERA5_VARIABLES", "read_era5_land"]

ERA5_VARIABLES = ("t2m", "tp", "e", "ssr", "str", "sde", "swvl1")

ERA5_UNITS = {
    "t2m": {"K", "kelvin"},
    "tp": {"m"},
    "e": {"m", "m of water equivalent"},
    "ssr": {"J m**-2", "J m-2"},
    "str": {"J m**-2", "J m-2"},
    "sde": {"m"},
    "swvl1": {"m**3 m**-3", "m3 m-3"},
}
"""Units the CDS writes for each variable (a file that states others is refused; one that
states none is taken as CDS's)."""


def _open_all(path: Path) -> xr.Dataset:
    if path.is_dir():
        files = sorted(path.glob("*.nc"))
        if not files:
            raise InputError(path, "(folder)", "ERA5-Land NetCDF files (*.nc)")
        parts = [xr.open_dataset(f, engine="netcdf4").load() for f in files]
        try:  # files of other months are concatenated, files of other variables merged
            return xr.combine_by_coords(parts, data_vars="minimal", coords="minimal",
                                        compat="override", combine_attrs="drop_conflicts")
        except ValueError as exc:
            raise InputError(path, "(folder)", "ERA5-Land NetCDF files of one area that "
                             f"tile in time or variables ({exc})") from None
    if zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
            safe_extract(zf, Path(tmp), path)
            return _open_all(Path(tmp))
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except FileNotFoundError:
        raise InputError(path, "(file)", "an ERA5-Land NetCDF file") from None
    except OSError as exc:
        raise InputError(path, "(file)", f"a readable NetCDF file ({exc})") from None


def read_era5_land(path: str | Path) -> xr.Dataset:
    """Read ERA5-Land (monthly means or hourly) into monthly talik variables (see module doc)."""
    path = Path(path)
    ds = _open_all(path)
    time_name = next((n for n in ("valid_time", "time", "date") if n in ds.coords), None)
    if time_name is None:
        raise InputError(path, "time coordinate", "'valid_time' (new CDS) or 'time'")
    ds = ds.rename({time_name: "time"})
    if "expver" in ds.dims:  # older files mixing ERA5 and ERA5T along an expver dimension
        ds = ds.max("expver")
    ds = ds.drop_vars([v for v in ("expver", "number") if v in ds.variables])
    missing = [v for v in ERA5_VARIABLES if v not in ds.data_vars]
    if missing:
        raise InputError(path, f"variables {missing}", f"all of {list(ERA5_VARIABLES)}")
    for v in ERA5_VARIABLES:
        units = ds[v].attrs.get("units")
        if units is not None and units.strip() not in ERA5_UNITS[v]:
            raise InputError(path, f"variable {v!r} units",
                             f"the CDS's units {sorted(ERA5_UNITS[v])[0]!r}", units)
    empty = [v for v in ERA5_VARIABLES if not bool(ds[v].notnull().any())]
    if empty:
        raise InputError(path, f"variables {empty}", "values (ERA5-Land fields over the area)",
                         "all NaN (no data: check the request's area and dates)")
    times = pd.DatetimeIndex(ds["time"].values)
    if len(times) < 2:
        raise InputError(path, "time", "at least two time steps")
    step_hours = float(np.median((times[1:] - times[:-1]) / pd.Timedelta(hours=1)))
    if step_hours > 24 * 20:
        monthly = ds.assign_coords(time=times.to_period("M").to_timestamp())
        days = xr.DataArray(monthly.time.dt.days_in_month.values, dims="time",
                            coords={"time": monthly.time})
        accum_total = {v: monthly[v] * days for v in ("tp", "e")}
        radiation = (monthly["ssr"] + monthly["str"]) / 1e6
        inst = monthly
    elif step_hours <= 1.01:
        # ERA5-Land accumulates from 00 UTC: the 00 UTC value closes the previous day.
        day_totals = {}
        for v in ("tp", "e", "ssr", "str"):
            at_midnight = ds[v].where(ds["time"].dt.hour == 0, drop=True)
            at_midnight = at_midnight.assign_coords(time=at_midnight.time - np.timedelta64(1, "D"))
            day_totals[v] = at_midnight
        inst = ds.resample(time="1D").mean()
        accum_total = {v: day_totals[v].resample(time="MS").sum() for v in ("tp", "e")}
        radiation = ((day_totals["ssr"] + day_totals["str"]) / 1e6).resample(time="MS").mean()
        inst = inst.resample(time="MS").mean()
    else:
        raise InputError(path, "time step", "hourly or monthly data", f"{step_hours:.1f} h")
    out = xr.Dataset(
        {
            "air_temperature": (inst["t2m"] - 273.15).assign_attrs(units="degC"),
            "precipitation": (accum_total["tp"] * 1000.0).assign_attrs(units="mm"),
            "evapotranspiration": (-accum_total["e"] * 1000.0).assign_attrs(units="mm"),
            "net_radiation": radiation.assign_attrs(units="MJ m-2 d-1"),
            "snow_depth": inst["sde"].assign_attrs(units="m"),
            "soil_moisture": inst["swvl1"].assign_attrs(units="m3 m-3"),
        }
    )
    out.attrs = {"source": str(path), "aggregation": "monthly"}
    return out.astype(np.float64)
