"""Environmental drivers of the thaw-season deformation (method.md §4; paper Fig. 12–13).

The step reads the Sentinel-1 product (mean thaw-season deformation), the staged rasters
(DEM height → slope, ground-ice content) and the MODIS stacks of the input folder (LST →
thawing index, NDVI, SWIR albedo), puts every layer on ``[drivers] aggregate_m`` cells of the
analysis grid (:mod:`talik.science.drivers`), and writes into its step folder:

* ``drivers_1km.nc`` (CF-1.8, the analysis grid's CRS): ``thaw_season_deformation`` (mm,
  positive up, cells with too little valid area masked), ``deformation_coverage`` (0–1) and one
  variable per computed factor: ``slope`` (degree), ``ground_ice`` (1), ``thawing_index``
  (degC d), ``ndvi`` (1), ``swir_albedo`` (1);
* ``drivers.csv``: one row per requested factor: ``factor, r, p, n, units, abs_r, status``
  (``status`` is ``ok`` or why the factor was not computed);
* ``binned.csv``: ``factor, bin, lower, upper, factor_mean, n, deformation_mean,
  deformation_std``;
* ``figures/drivers_binned.png`` (Fig. 12) and ``figures/drivers_maps.png`` (Fig. 13).

A factor whose input is missing (no MODIS folder, no stack of its band, no staged raster) is
reported as not computed, with the reason, in ``drivers.csv`` and the step summary. A MODIS
file that is not the stack its name announces is an :class:`~talik.errors.InputError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from rasterio.transform import Affine

from talik import __version__
from talik.config import DriverOptions, StudyConfig
from talik.errors import InputError
from talik.science import drivers as drv
from talik.tasks.log import step_logger
from talik.tasks.readers.modis import find_modis_stacks, read_modis_stack
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.steps import step, this_step
from talik.tasks.validate import NETCDF_LOCK

__all__ = ["FACTOR_UNITS", "MODIS_BANDS", "drivers_assessment", "drivers_on_cells",
           "modis_factors", "modis_per_year", "thaw_season_of"]

STEP = "drivers"
DEFORMATION = "thaw_season_deformation"

MODIS_BANDS = {"ndvi": "NDVI", "swir_albedo": "Albedo_BSA_Band7"}
"""MODIS band of each MODIS factor (the thawing index uses ``[drivers] lst_band``)."""

FACTOR_UNITS = {"slope": "degree", "ground_ice": "1", "thawing_index": "degC d", "ndvi": "1",
                "swir_albedo": "1"}
FACTOR_LONG_NAMES = {
    "slope": "terrain slope from the DEM",
    "ground_ice": "volumetric ground-ice content",
    "thawing_index": "thawing index (degree-days above 0 °C over the thaw season, from LST)",
    "ndvi": "growing-season mean NDVI",
    "swir_albedo": "thaw-season mean SWIR (MODIS band 7) black-sky albedo",
}

Layers = dict[str, xr.DataArray]
Reasons = dict[str, str]


def thaw_season_of(cfg: StudyConfig) -> tuple[str, str]:
    """The drivers' thaw season (MM-DD, MM-DD): ``[drivers] thaw_season`` or Sentinel-1's."""
    return cfg.drivers.thaw_season or (cfg.sentinel1.thaw_onset, cfg.sentinel1.thaw_end)


def _deformation(product: xr.Dataset, path: Path, options: DriverOptions) -> xr.DataArray:
    name = ("thaw_season_deformation_mean_vertical" if options.deformation == "vertical"
            else "thaw_season_deformation_mean")
    if name not in product:
        raise InputError(path, name, f"the mean thaw-season deformation ({options.deformation}, mm) "
                         "of the Sentinel-1 product")
    da = product[name].transpose("y", "x").astype(np.float64)
    return da.rename(DEFORMATION).assign_attrs(units=product[name].attrs.get("units", "mm"))


def _raster_factors(rasters: xr.Dataset | None, cells: drv.CellGrid, wanted: list[str]
                    ) -> tuple[Layers, Reasons]:
    """Slope (from the staged DEM height) and ground ice, on the cells."""
    layers, reasons = {}, {}
    for factor in [f for f in wanted if f in ("slope", "ground_ice")]:
        if rasters is None:
            reasons[factor] = "no staged rasters (DEM, ground-ice map) for this run"
        elif factor == "slope" and "elevation" in rasters:
            layers[factor] = drv.aggregate_to_cells(drv.slope_from_dem(rasters["elevation"]), cells)
        elif factor == "slope" and "slope_deg" in rasters:
            layers[factor] = drv.aggregate_to_cells(rasters["slope_deg"].rename("slope"), cells)
        elif factor == "ground_ice" and "ground_ice" in rasters:
            layers[factor] = drv.aggregate_to_cells(rasters["ground_ice"], cells)
        else:
            source = "DEM (source.dem)" if factor == "slope" else "ground-ice map (source.ground_ice)"
            reasons[factor] = f"no {source} among the inputs"
    return layers, reasons


def _modis_layer(factor: str, cfg: StudyConfig) -> Callable[[xr.DataArray], xr.DataArray]:
    """Per-year layer ``(year, y, x)`` of a MODIS factor from one stack."""
    options, thaw = cfg.drivers, thaw_season_of(cfg)
    if factor == "thawing_index":
        return lambda da: drv.thawing_index(da, thaw, options.lst_min_valid_fraction)
    if factor == "ndvi":
        return lambda da: drv.season_mean(da, options.growing_season, include_end=True)
    return lambda da: drv.season_mean(da, thaw, include_end=False)


def _modis_per_year(factor: str, files: list[Path], band: str, cfg: StudyConfig,
                    cells: drv.CellGrid) -> xr.DataArray | str:
    """A MODIS factor on the cells, one layer per year of the stacks ``(year, y, x)``, or why not."""
    per_year = []
    for path in files:
        stack = read_modis_stack(path, band)
        crs = str(stack.rio.crs)
        layer = _modis_layer(factor, cfg)(stack.drop_vars("spatial_ref", errors="ignore"))
        for year in layer["year"].values:
            on_cells = drv.resample_to_cells(layer.sel(year=year), crs, cells)
            per_year.append(on_cells.expand_dims(year=[int(year)]))
    if not per_year:
        return f"the {band} stacks hold no date in the season"
    stacked = xr.concat(per_year, dim="year").groupby("year").mean()
    return stacked.rename(factor).assign_attrs(source_band=band,
                                               source_files=[p.name for p in files])


def _years_mean(per_year: xr.DataArray, years: list[int] | None) -> xr.DataArray:
    """Mean of a per-year layer over ``years`` where it has them (else over all its years)."""
    chosen = [y for y in per_year["year"].values if years is None or int(y) in years]
    if not chosen:
        chosen = list(per_year["year"].values)  # no common year: every MODIS year
    out = drv.mean_over_years(per_year, [int(y) for y in chosen])
    return out.rename(per_year.name).assign_attrs(per_year.attrs)


def _modis_wanted(options: DriverOptions) -> list[str]:
    return [f for f in options.factors if f in ("thawing_index", "ndvi", "swir_albedo")]


def modis_per_year(cfg: StudyConfig, modis_dir: Path | None, cells: drv.CellGrid
                   ) -> tuple[Layers, Reasons]:
    """Every wanted MODIS factor on the cells, per year, and why the others are missing."""
    wanted = _modis_wanted(cfg.drivers)
    layers, reasons = {}, {}
    if not wanted:
        return layers, reasons
    if modis_dir is None or not modis_dir.is_dir():
        where = modis_dir if modis_dir is not None else "(not configured: source.modis_dir)"
        return layers, dict.fromkeys(wanted, f"no MODIS folder {where}")
    stacks = find_modis_stacks(modis_dir)
    for factor in wanted:
        band = cfg.drivers.lst_band if factor == "thawing_index" else MODIS_BANDS[factor]
        if band not in stacks:
            reasons[factor] = f"no MODIS {band} stack in {modis_dir}"
            continue
        result = _modis_per_year(factor, stacks[band], band, cfg, cells)
        if isinstance(result, str):
            reasons[factor] = result
        else:
            layers[factor] = result
    return layers, reasons


def _cells_of(product: xr.Dataset, product_path: Path, options: DriverOptions) -> drv.CellGrid:
    """The ``aggregate_m`` cells over a Sentinel-1 product's grid."""
    crs = product.rio.crs
    if crs is None:
        raise InputError(product_path, "spatial_ref", "the analysis grid's CRS (CF grid mapping)")
    return drv.cell_grid(product["x"].values, product["y"].values, options.aggregate_m,
                         crs.to_string())


def _product_grid(s1: StepOutput) -> str:
    """Digest of the Sentinel-1 product's grid (its x, y and CRS), not of its values."""
    path = Path(s1.path) / "sentinel1.nc"
    with NETCDF_LOCK, xr.open_dataset(path, decode_coords="all") as ds:
        crs = ds.rio.crs
        blob = (ds["x"].values.astype(np.float64).tobytes()
                + ds["y"].values.astype(np.float64).tobytes()
                + (crs.to_wkt() if crs is not None else "").encode())
    return hashlib.sha256(blob).hexdigest()


MODIS_FILE = "modis_{factor}_per_year.nc"


@step("modis-factors", key=lambda cfg, manifest, s1, work_dir: (
    _modis_wanted(cfg.drivers), cfg.drivers.lst_band, cfg.drivers.lst_min_valid_fraction,
    cfg.drivers.growing_season, cfg.drivers.aggregate_m, thaw_season_of(cfg),
    manifest.digest_of_roles("modis"), _product_grid(s1)))
def modis_factors(cfg: StudyConfig, manifest: InputSet, s1: StepOutput,
                  work_dir: str) -> StepOutput:
    """MODIS factors (thawing index, NDVI, SWIR albedo) on the cells, one layer per year.

    Keyed on the MODIS inputs, the options that shape them and the product's grid only, not
    on the product's values: a study extended by new Sentinel-1 dates resamples no MODIS
    stack again. Writes ``modis_<factor>_per_year.nc`` per factor; the summary lists the
    factors that could not be computed, with why.
    """
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            product_path = Path(s1.path) / "sentinel1.nc"
            with NETCDF_LOCK, xr.open_dataset(product_path, decode_coords="all") as product:
                cells = _cells_of(product, product_path, cfg.drivers)
            layers, reasons = modis_per_year(cfg, manifest.location("modis"), cells)
            for factor, layer in layers.items():
                out = layer.copy()
                out.attrs["source_files"] = json.dumps(layer.attrs["source_files"])
                with NETCDF_LOCK:
                    out.to_netcdf(sd.work / MODIS_FILE.format(factor=factor))
            (sd.work / "reasons.json").write_text(json.dumps(reasons))
    reasons = json.loads((sd.final / "reasons.json").read_text())
    computed = [f for f in _modis_wanted(cfg.drivers) if f not in reasons]
    return run.output(sd.final, summary={"factors": computed, "not_computed": reasons})


def _modis_factors(modis: StepOutput, cells: drv.CellGrid, years: list[int] | None
                   ) -> tuple[Layers, Reasons]:
    """The MODIS factors of the modis-factors step, each the mean over ``years``."""
    folder = Path(modis.path)
    layers = {}
    for factor in modis.summary.get("factors", []):
        with NETCDF_LOCK, xr.open_dataarray(folder / MODIS_FILE.format(factor=factor)) as da:
            per_year = da.load()
        if not (np.array_equal(per_year["x"].values, cells.x)
                and np.array_equal(per_year["y"].values, cells.y)):
            raise ValueError(f"{folder}: MODIS {factor} is on other cells than the product's")
        per_year.attrs["source_files"] = json.loads(per_year.attrs["source_files"])
        layers[factor] = _years_mean(per_year, years)
    return layers, dict(modis.summary.get("not_computed", {}))


def drivers_on_cells(cfg: StudyConfig, product: xr.Dataset, product_path: Path,
                     rasters: xr.Dataset | None, modis: StepOutput
                     ) -> tuple[xr.Dataset, Reasons]:
    """Deformation and every computable factor on the cells, and why the others are missing.

    ``modis``: the modis-factors step's output (the MODIS factors per year on these cells).
    """
    options = cfg.drivers
    deformation = _deformation(product, product_path, options)
    cells = _cells_of(product, product_path, options)
    coverage = drv.valid_fraction(deformation, cells).rename("deformation_coverage")
    mean = drv.aggregate_to_cells(deformation, cells).where(coverage >= options.min_cell_coverage)
    years = ([int(y) for y in product["year"].values] if "year" in product.coords else None)
    layers, reasons = _raster_factors(rasters, cells, options.factors)
    modis_layers, modis_reasons = _modis_factors(modis, cells, years)
    layers.update(modis_layers)
    reasons.update(modis_reasons)
    component = ("vertical, positive up" if options.deformation == "vertical"
                 else "LOS, positive toward the satellite")
    data = {DEFORMATION: mean.assign_attrs(
        units="mm", long_name=f"mean thaw-season deformation ({component}; subsidence negative)")}
    data["deformation_coverage"] = coverage
    for factor in options.factors:
        if factor in layers:
            data[factor] = layers[factor].assign_attrs(units=FACTOR_UNITS[factor],
                                                       long_name=FACTOR_LONG_NAMES[factor])
    ds = xr.Dataset(data)
    ds = ds.rio.write_crs(cells.crs).rio.write_transform(
        Affine(cells.cell_m, 0.0, cells.x_edges[0], 0.0, -cells.cell_m, cells.y_edges[0]))
    ds.attrs.update(cell_m=cells.cell_m, thaw_season=list(thaw_season_of(cfg)),
                    growing_season=list(options.growing_season))
    return ds, reasons


def _tables(ds: xr.Dataset, options: DriverOptions, reasons: Reasons
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, binned = [], []
    deformation = ds[DEFORMATION]
    for factor in options.factors:
        if factor not in ds:
            rows.append({"factor": factor, "r": np.nan, "p": np.nan, "n": 0,
                         "units": FACTOR_UNITS[factor], "abs_r": np.nan,
                         "status": f"not computed: {reasons.get(factor, 'unknown')}"})
            continue
        stat = drv.correlate(ds[factor], deformation)
        rows.append({"factor": factor, **stat, "units": FACTOR_UNITS[factor],
                     "abs_r": abs(stat["r"]), "status": "ok"})
        table = drv.binned_means(ds[factor], deformation, options.n_bins, options.binning)
        binned.append(table.assign(factor=factor, units=FACTOR_UNITS[factor]))
    columns = ["factor", "bin", "lower", "upper", "factor_mean", "n", "deformation_mean",
               "deformation_std", "units"]
    binned_table = (pd.concat(binned, ignore_index=True)[columns] if binned
                    else pd.DataFrame(columns=columns))
    return pd.DataFrame(rows), binned_table


def _write_netcdf(ds: xr.Dataset, path: Path) -> None:
    out = ds.copy()
    out["x"].attrs.update(standard_name="projection_x_coordinate", units="m",
                          long_name="easting of the cell centre")
    out["y"].attrs.update(standard_name="projection_y_coordinate", units="m",
                          long_name="northing of the cell centre")
    for name in out.data_vars:
        out[name].attrs["grid_mapping"] = "spatial_ref"
        for key, value in list(out[name].attrs.items()):
            if isinstance(value, list):  # NetCDF attributes: strings or numbers
                out[name].attrs[key] = ", ".join(map(str, value))
    out.attrs.update(
        Conventions="CF-1.8", title="Environmental drivers of thaw-season deformation (talik)",
        institution="talik", history=f"{pd.Timestamp.now('UTC'):%Y-%m-%dT%H:%M:%SZ} talik {__version__}",
        source="Sentinel-1 thaw-season deformation; DEM; ground-ice map; MODIS LST, NDVI, albedo",
        references="Chang et al., long-term InSAR and streamflow recession (Datong River), "
                   "Fig. 12-13",
        sign_convention="deformation positive up (toward the satellite for LOS); subsidence "
                        "negative, so a negative r means more of the factor, more subsidence",
        thaw_season=" to ".join(ds.attrs["thaw_season"]),
        growing_season=" to ".join(ds.attrs["growing_season"]),
    )
    encoding = {name: {"zlib": True, "complevel": 1} for name in out.data_vars
                if out[name].ndim}
    out.to_netcdf(path, encoding=encoding, engine="netcdf4")


def _figures(ds: xr.Dataset, table: pd.DataFrame, binned: pd.DataFrame, folder: Path) -> list[str]:
    from talik.tasks.figures import drivers_binned_figure, drivers_maps_figure

    folder.mkdir(exist_ok=True)
    return [drivers_binned_figure(table, binned, folder / "drivers_binned.png").name,
            drivers_maps_figure(ds, [f for f in table["factor"] if f in ds],
                                folder / "drivers_maps.png").name]


def _summary(table: pd.DataFrame, ds: xr.Dataset) -> dict:
    ok = table[table["status"] == "ok"]
    return {
        "factors": {r.factor: {"r": float(r.r), "p": float(r.p), "n": int(r.n), "units": r.units}
                    for r in ok.itertuples()},
        "not_computed": {r.factor: r.status.removeprefix("not computed: ")
                         for r in table[table["status"] != "ok"].itertuples()},
        "n_cells": int(np.isfinite(ds[DEFORMATION].values).sum()),
        "cell_m": float(ds.attrs["cell_m"]),
    }


@step("drivers", key=lambda cfg, s1, staged_rasters, modis, work_dir: (
    cfg.drivers, thaw_season_of(cfg), s1.digest,
    staged_rasters.digest if staged_rasters else None, modis.digest))
def drivers_assessment(cfg: StudyConfig, s1: StepOutput, staged_rasters: StepOutput | None,
                       modis: StepOutput, work_dir: str) -> StepOutput:
    """Factors and deformation on 1 km cells, their R/p and binned means, Fig. 12–13."""
    logger = step_logger()
    thaw = thaw_season_of(cfg)
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            product_path = Path(s1.path) / "sentinel1.nc"
            with xr.open_dataset(product_path, decode_coords="all") as product:
                product = product.drop_vars([v for v in product.data_vars
                                             if product[v].ndim > 2 and "time" in product[v].dims])
                product = product.load()
            rasters_path = Path(staged_rasters.path) / "rasters.zarr" if staged_rasters else None
            rasters = (xr.open_zarr(rasters_path).load()
                       if rasters_path is not None and rasters_path.exists() else None)
            ds, reasons = drivers_on_cells(cfg, product, product_path, rasters, modis)
            table, binned = _tables(ds, cfg.drivers, reasons)
            _write_netcdf(ds, sd.work / "drivers_1km.nc")
            table.to_csv(sd.work / "drivers.csv", index=False)
            binned.to_csv(sd.work / "binned.csv", index=False)
            _figures(ds, table, binned, sd.work / "figures")
            for row in table.itertuples():
                logger.info("drivers: %s r = %.2f (p = %.2g, n = %d) %s", row.factor, row.r, row.p,
                            row.n, "" if row.status == "ok" else row.status)
            summary = _summary(table, ds)
        else:
            table = pd.read_csv(sd.final / "drivers.csv")
            with xr.open_dataset(sd.final / "drivers_1km.nc") as ds:
                summary = _summary(table, ds.assign_attrs(cell_m=ds.attrs["cell_m"]))
    return run.output(sd.final, summary=summary,
                      parameters={**cfg.drivers.model_dump(mode="json"), "thaw_season": list(thaw)})
