"""A study, as data: pydantic models loaded from TOML.

Every threshold of ``method.md`` lives here with its default, its unit and its bounds.
Paths in a study file are resolved relative to the directory holding the file.

>>> cfg = load_study("studies/demo.toml")      # doctest: +SKIP
>>> cfg.sentinel1.gamma
0.0001
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from talik.errors import ConfigError

__all__ = [
    "RetryOptions",
    "NwisOptions",
    "NetworkPlanOptions",
    "IngestOptions",
    "Hyp3Options",
    "EsaOptions",
    "EarthEngineOptions",
    "DemOptions",
    "CdsOptions",
    "AsfSearchOptions",
    "AreaOfInterest",
    "AttributionOptions",
    "DischargeFile",
    "DriverOptions",
    "LocalSource",
    "LongTermOptions",
    "Period",
    "RecessionOptions",
    "ReleaseChecks",
    "Sensor",
    "Sentinel1Options",
    "Stores",
    "StudyConfig",
    "StudyOptions",
    "WorldSource",
    "config_digest",
    "defaults_toml",
    "load_study",
    "to_toml",
    "with_options",
    "with_until",
]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


StudyPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path that, when relative, is taken relative to the study file's folder."""

MonthDay = Annotated[
    str,
    Field(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AreaOfInterest(_Model):
    """The basin or area a study covers, and the grid results are delivered on."""

    name: str = Field(description="Name of the area, e.g. 'Source region of the Datong River'.")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None,
        description=(
            "Bounding box (west, south, east, north) in degrees longitude/latitude (EPSG:4326). "
            "The analysis grid is the Sentinel-1 product grid clipped to it; omit it to use the "
            "full common extent of the products."
        ),
    )
    area_km2: float | None = Field(
        default=None, gt=0, description="Nominal area of the basin in km², for reports."
    )
    outlet: str | None = Field(
        default=None, description="Hydrological station at the basin outlet, for reports."
    )

    @model_validator(mode="after")
    def _check_bbox(self) -> AreaOfInterest:
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise ValueError(
                    "bbox must be (west, south, east, north) with west < east and south < north, "
                    f"in degrees; got {self.bbox}"
                )
        return self


SENTINEL1_WAVELENGTH_M = 0.055465763
"""Sentinel-1 C-band radar wavelength, m (c / 5.405 GHz, as HyP3 documents it): the default
when no study names the sensor."""


class Sensor(_Model):
    """A SAR sensor as used in the study (Table 1 of the paper)."""

    platform: str = Field(description="Platform name, e.g. 'Sentinel-1', 'ALOS-2'.")
    band: Literal["C", "L", "X"] = Field(description="Radar band.")
    wavelength_m: float = Field(gt=0.01, lt=0.5, description="Radar wavelength in metres.")
    incidence_deg: float = Field(
        gt=0, lt=90, description="Nominal incidence angle at the study area, degrees."
    )
    direction: Literal["ascending", "descending"] = Field(description="Orbit direction.")
    polarization: str = Field(description="Polarisation, e.g. 'VV' or 'HH'.")
    dates: list[dt.date] = Field(
        default_factory=list,
        description="Acquisition dates used (empty for dense time series such as Sentinel-1).",
    )


class Period(_Model):
    """A named period of the study, observed by one sensor."""

    name: str = Field(description="Short identifier, e.g. 'pre_mining'.")
    label: str = Field(description="Human-readable label, e.g. '1997–98 pre-mining'.")
    start: dt.date = Field(description="First day of the period.")
    end: dt.date = Field(description="Last day of the period.")
    sensor: str = Field(description="Key of the sensor (in [sensors]) observing the period.")

    @model_validator(mode="after")
    def _check_order(self) -> Period:
        if self.end <= self.start:
            raise ValueError(f"period {self.name!r}: end {self.end} must be after start {self.start}")
        return self


WORLD_KS_REFERENCE_END = 2002
"""Last year of the climate the demo world's yearly recession constants are scored against."""


class WorldSource(_Model):
    """Inputs come from the synthetic Datong-like demo world, generated on first use."""

    kind: Literal["world"] = "world"
    raw_dir: StudyPath = Field(description="Folder the world's product files are written to.")
    seed: int = Field(default=20260917, ge=0, description="Random seed; the world is deterministic.")
    ny: int = Field(default=64, ge=16, le=4096, description="Sentinel-1 grid rows (pixels).")
    nx: int = Field(default=80, ge=16, le=4096, description="Sentinel-1 grid columns (pixels).")
    pixel_m: float = Field(default=80.0, gt=0, description="Sentinel-1 pixel spacing, metres.")
    s1_start: dt.date = Field(
        default=dt.date(2016, 1, 4), description="First Sentinel-1 acquisition date."
    )
    s1_end: dt.date = Field(
        default=dt.date(2023, 4, 30), description="Last possible Sentinel-1 acquisition date."
    )
    s1_repeat_days: int = Field(default=12, ge=1, le=48, description="Sentinel-1 revisit, days.")
    neighbours: int = Field(
        default=4, ge=1, le=12, description="Interferograms formed from each date to the next N."
    )
    unwrapping_error_fraction: float = Field(
        default=0.03,
        ge=0,
        le=0.3,
        description="Fraction of Sentinel-1 interferograms given a 2π unwrapping error.",
    )
    gacos: bool = Field(default=True, description="Write GACOS .ztd/.rsc zenith-delay files.")
    hydro_start_year: int = Field(default=1973, ge=1900, description="First year of discharge.")
    hydro_end_year: int = Field(default=2022, le=2100, description="Last year of discharge.")
    # Options of the "hard" test world; their defaults reproduce the demo world exactly.
    center_offset_km: tuple[float, float] = Field(
        default=(0.0, 0.0),
        description="Shift (east, north) of the scene centre from the Fig. 3c site, km.",
    )
    winter_acquisitions: bool = Field(
        default=False,
        description=(
            "Flag (no unit): keep winter Sentinel-1 dates and pair them like any other; a pair "
            "is then incoherent (coherence < 0.3) wherever the ground is snow-covered on one "
            "of its dates, with per-pixel snow onset and melt days."
        ),
    )
    snow_spread_days: float = Field(
        default=9.0,
        ge=0,
        le=30,
        description="Standard deviation of the per-pixel shift of snow onset and melt, days "
        "(with winter_acquisitions).",
    )
    snow_ridge_days: float = Field(
        default=14.0,
        ge=0,
        le=60,
        description="How much later snow arrives on, and earlier leaves, wind-scoured ridges, "
        "days (with winter_acquisitions).",
    )
    reference_offset_std_rad: float = Field(
        default=0.0,
        ge=0,
        le=50,
        description="Standard deviation of a random constant phase offset added to each "
        "Sentinel-1 product after its own referencing (an unknown reference-point error), "
        "radians.",
    )
    lake_nodata: bool = Field(
        default=False,
        description="Flag (no unit): put a lake of about 3 % of the scene area on the valley "
        "floor, written as HyP3 no-data (unw_phase = 0 rad, corr = 0) in every product.",
    )

    @model_validator(mode="after")
    def _check_dates(self) -> WorldSource:
        if self.s1_end <= self.s1_start:
            raise ValueError("s1_end must be after s1_start")
        if self.hydro_end_year <= self.hydro_start_year + 10:
            raise ValueError("the discharge record must span more than 10 years")
        if self.hydro_start_year > WORLD_KS_REFERENCE_END - 9:
            raise ValueError(f"hydro_start_year must be {WORLD_KS_REFERENCE_END - 9} or earlier: "
                             "the world's recession constants are drawn against the climate of "
                             f"at least 10 years up to {WORLD_KS_REFERENCE_END} (fewer gave "
                             "negative constants and negative discharge)")
        if max(abs(v) for v in self.center_offset_km) > 200.0:
            raise ValueError("center_offset_km must stay within 200 km of the Fig. 3c site "
                             "(the world's UTM zone)")
        return self


class DischargeFile(_Model):
    """A daily discharge table and how to read it."""

    path: StudyPath = Field(description="Text table of daily discharge.")
    date_column: str | list[str] = Field(
        default="date", description="Column of dates, or three columns [year, month, day]."
    )
    date_format: str | None = Field(
        default=None, description="strptime format of the dates (ISO dates need none)."
    )
    sep: str | None = Field(default=",", description="Field separator; unset for whitespace.")
    header: bool = Field(default=True, description="Whether the first line names the columns.")
    column_names: list[str] | None = Field(
        default=None, description="Names of the columns of a file without a header line."
    )
    flow_column: str = Field(default="discharge_m3s", description="Column holding daily flow.")
    units: Literal["m3/s", "m3/d", "cfs", "mm/d"] = Field(
        default="m3/s", description="Units of the flow column."
    )
    basin_area_km2: float | None = Field(
        default=None, gt=0, description="Basin area, km² (needed to express flow in mm/d)."
    )
    missing_values: list[float] = Field(
        default_factory=lambda: [-999.0], description="Sentinel values that mean 'missing'."
    )


class LocalSource(_Model):
    """Inputs are real products already on disk (e.g. downloaded HyP3 jobs)."""

    kind: Literal["local"] = "local"
    hyp3_dir: StudyPath = Field(
        description="Folder of HyP3 INSAR_GAMMA product folders or zips (Sentinel-1)."
    )
    pairs_dir: StudyPath | None = Field(
        default=None,
        description="Folder of pair GeoTIFFs + JSON sidecars from other sensors (ERS-2, ...).",
    )
    gacos_dir: StudyPath | None = Field(
        default=None, description="Folder of GACOS YYYYMMDD.ztd + .ztd.rsc files."
    )
    dem: StudyPath | None = Field(default=None, description="DEM GeoTIFF, metres.")
    ground_ice: StudyPath | None = Field(
        default=None, description="Ground-ice content GeoTIFF (volumetric fraction 0–1)."
    )
    discharge: DischargeFile | None = Field(default=None, description="Daily discharge record.")
    temperature: StudyPath | None = Field(
        default=None, description="Station CSV of daily mean air temperature (date, t_mean_c)."
    )
    era5: StudyPath | None = Field(default=None, description="ERA5-Land NetCDF (CDS format).")
    modis_dir: StudyPath | None = Field(
        default=None, description="Folder of MODIS NDVI/albedo/LST GeoTIFF stacks."
    )


class Stores(_Model):
    """Where intermediate products and releases are kept."""

    work_dir: StudyPath = Field(
        description="Working folder: staged stores, step outputs and the step cache."
    )
    release_dir: StudyPath = Field(description="Folder of immutable, versioned releases.")
    release_store: str | None = Field(
        default=None,
        description="Where the versioned store of the releases' products (Icechunk) lives: "
        "unset, <release_dir>/store.icechunk; s3://bucket/prefix or gs://bucket/prefix for "
        "object storage (credentials, region and endpoint from the environment: "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL; or Google's "
        "application credentials), or a local path.",
    )

    @field_validator("release_store")
    @classmethod
    def _check_store_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("", "file", "s3", "gs", "gcs"):
            raise ValueError("expected a local path, s3://bucket/prefix or gs://bucket/prefix")
        if parts.scheme in ("s3", "gs", "gcs") and (not parts.netloc or "@" in parts.netloc
                                                    or parts.query):
            raise ValueError("expected scheme://bucket/prefix with no credentials or query in "
                             "it (credentials come from the environment)")
        return value


class Sentinel1Options(_Model):
    """The Sentinel-1 time-series chain (method.md §2)."""

    sensor: str = Field(default="sentinel1", description="Key of the Sentinel-1 sensor.")
    coherence_threshold: float = Field(
        default=0.3, ge=0, le=1, description="Pixels with coherence below this are masked (0–1)."
    )
    ramp: Literal["none", "plane", "quadratic"] = Field(
        default="plane", description="Polynomial removed from each interferogram."
    )
    stable_max_ground_ice: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description=(
            "Pixels whose ground-ice content (fraction) is at most this are 'stable' and used to "
            "fit ramps and pick the reference area. Used when a ground-ice map is staged."
        ),
    )
    reference_window_px: int = Field(
        default=5, ge=1, le=101, description="Side of the common reference window, pixels."
    )
    reference_bbox: tuple[float, float, float, float] | None = Field(
        default=None,
        description="Fixed reference area (west, south, east, north) in degrees; default: automatic.",
    )
    gacos: bool = Field(default=True, description="Apply GACOS corrections when files are present.")
    loop_closure_rms_rad: float = Field(
        default=1.5, gt=0, description="Loop-closure RMS above which a loop is bad, radians."
    )
    constraint: Literal["none", "linear", "linear_periodic"] = Field(
        default="linear_periodic", description="Temporal constraint model of the NSBAS inversion."
    )
    period_yr: float = Field(default=1.0, gt=0, description="Period of the periodic term, years.")
    gamma: float = Field(
        default=1e-4, gt=0, le=1, description="Weight of the constraint rows (dimensionless)."
    )
    velocity_reference: Literal["none", "alos2"] = Field(
        default="alos2",
        description="Fix the constraint's rate to a CDF-matched L-band rate map ('alos2') or not.",
    )
    velocity_reference_sensor: str = Field(
        default="alos2", description="Key of the sensor whose annual pairs give the reference rate."
    )
    velocity_reference_initial: Literal["auto", "none", "linear", "linear_periodic"] = Field(
        default="auto",
        description=(
            "Constraint of the initial inversion whose rate map is CDF-matched to the L-band "
            "rates. 'auto' takes, among the three, the one whose rates rank the overlap pixels "
            "most like the L-band map (Spearman), since quantile mapping keeps the rank order."
        ),
    )
    velocity_reference_smoothing_m: float = Field(
        default=150.0,
        ge=0,
        description=(
            "Gaussian width (m) of the smoothing of the L-band rate map before CDF matching. Only "
            "its distribution is used, so removing pixel-scale decorrelation noise keeps it from "
            "widening the matched rates; spatial detail comes from Sentinel-1."
        ),
    )
    velocity_reference_min_span_days: float = Field(
        default=300.0, gt=0, description="L-band pairs at least this long (days) give the rate."
    )
    timeseries_points: list[tuple[str, float, float]] = Field(
        default_factory=list,
        description="Points (name, longitude, latitude) whose series are plotted (Fig. 3c); "
        "default: the fastest-subsiding and the most stable coherent pixels.",
    )
    min_valid_ifg_fraction: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Pixels with fewer valid interferograms than this fraction are masked.",
    )
    filter_enabled: bool = Field(default=True, description="Apply the atmospheric filter.")
    seasonal_products_from: Literal["unfiltered", "filtered"] = Field(
        default="unfiltered",
        description=(
            "Series the thaw-season deformation and seasonal amplitude are computed from. The "
            "filter's temporal high-pass also takes the sharp thaw onset and refreeze, and a "
            "100 m spatial low-pass cannot give them back, so by default seasonal products come "
            "from the unfiltered inversion (the published time series is the filtered one)."
        ),
    )
    filter_temporal_factor: float = Field(
        default=3.0,
        gt=0,
        description="Temporal Gaussian width as a multiple of the mean acquisition interval "
        "(the revisit inside connected parts of the network, winter gaps excluded).",
    )
    filter_spatial_m: float = Field(
        default=100.0, ge=0, description="Spatial Gaussian width of the atmospheric filter, metres."
    )
    thaw_onset: MonthDay = Field(default="05-01", description="Thaw onset, MM-DD.")
    thaw_end: MonthDay = Field(default="10-01", description="Thaw end, MM-DD.")
    chunk_px: int = Field(
        default=256, ge=16, le=4096, description="Spatial chunk side for dask processing, pixels."
    )
    in_memory_max_mb: float = Field(
        default=256.0, ge=0,
        description="Largest displacement cube (dates × pixels × 4 bytes, MB) whose "
        "intermediate results are held in memory between the inversion, the atmospheric filter "
        "and the products (about 2.3× the cube: unfiltered and filtered series, bridged flags); "
        "a larger one goes through Zarr stores in the work folder, a few tiles at a time, so "
        "that memory stays bounded whatever the image (so does any cube on a Dask cluster). "
        "0: always through Zarr. Results are the same either way.",
    )
    first_date: dt.date | None = Field(
        default=None, description="Use only pairs whose dates are both on or after this date."
    )
    last_date: dt.date | None = Field(
        default=None, description="Use only pairs whose dates are both on or before this date."
    )
    reference_date: dt.date | None = Field(
        default=None,
        description=(
            "Date whose displacement is zero in every series (the network date closest to it). "
            "Default: the first date that a valid interferogram touches at no fewer than "
            "'reference_date_min_coverage' of the pixels with data, i.e. the start of the first "
            "connected part of the network that carries data. A stack starting in winter thus "
            "gets the same zero as one starting in spring."
        ),
    )
    reference_date_min_coverage: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of pixels (with data) at which the automatic reference date must "
        "be touched by a valid interferogram.",
    )
    mask_min_temporal_coherence: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Products are masked where the temporal coherence (0–1) is below this.",
    )
    mask_max_bridged_fraction: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Products are masked where more than this fraction of the epochs is set by "
        "the constraint model alone (no valid interferogram touches them).",
    )
    mask_max_parts_per_year: float = Field(
        default=3.0,
        gt=0,
        description="Products are masked where the pixel's network of valid interferograms falls "
        "into more connected parts than this per year of the series (each part's offset is "
        "set by the constraint model).",
    )
    mask_max_condition: float = Field(
        default=1e12,
        gt=1,
        description="Products are masked where the condition estimate of the pixel's normal "
        "matrix exceeds this (1e16 and above is singular in double precision).",
    )
    mask_max_velocity_std: float = Field(
        default=10.0,
        gt=0,
        description="Products are masked where the standard error of the rate exceeds this, mm/yr.",
    )
    extension: Literal["forward", "reinvert"] = Field(
        default="forward",
        description="How a stack extended by acquisitions after its last date is inverted: "
        "'forward' solves only the new dates against the earlier series, kept as published "
        "(with its constraint parameters and velocity reference), and re-filters the whole "
        "series; 'reinvert' inverts the whole stack again. A forward update falls back to a "
        "whole inversion, saying why, when a new product lies within the earlier dates, when "
        "the earlier series was made by other code or options, or when 'forward_max_dates' "
        "would be exceeded.",
    )
    forward_max_dates: int = Field(
        default=30,
        ge=0,
        description="Most dates (count) solved forward since the last whole inversion; the "
        "extension that would exceed it inverts the whole stack again (0: always).",
    )

    @model_validator(mode="after")
    def _check_date_range(self) -> Sentinel1Options:
        if self.first_date and self.last_date and self.last_date <= self.first_date:
            raise ValueError(f"last_date {self.last_date} must be after first_date "
                             f"{self.first_date}")
        return self


class LongTermOptions(_Model):
    """The multi-sensor long-term dataset (method.md §3)."""

    scaling: Literal["sentinel1", "thawing_index"] = Field(
        default="sentinel1",
        description="How partial thaw-season pairs are scaled to a full season (Eq. 4 or Stefan).",
    )
    common_area_min_sensors: int = Field(
        default=5, ge=1, description="Period statistics use pixels seen by at least this many sensors."
    )
    min_span_days: float = Field(
        default=300.0,
        gt=0,
        description="Pairs at least this long (days) give annual rates D·365.25/Δdays.",
    )
    max_partial_span_days: float = Field(
        default=200.0,
        gt=0,
        description="Pairs at most this long (days), within one calendar year and overlapping the "
        "thaw season ([sentinel1] thaw_onset–thaw_end), are scaled to a full thaw season.",
    )
    detrend_partial_pairs: bool = Field(
        default=True,
        description="Flag (no unit): remove the period's long-pair rate over a partial pair's span "
        "before scaling it, as the Sentinel-1 thaw season is computed from a detrended series.",
    )
    min_s1_signal_mm: float = Field(
        default=3.0,
        gt=0,
        description="Eq. 4 uses a pixel's own ratio only where the Sentinel-1 change over the "
        "pair's calendar window is at least this large (mm, absolute); elsewhere the regional "
        "(median) ratio.",
    )
    max_scaling_ratio: float = Field(
        default=10.0,
        gt=1,
        description="Per-pixel Eq. 4 ratios above this (dimensionless) are replaced by the "
        "regional ratio.",
    )
    max_thaw_noise_mm: float = Field(
        default=15.0,
        gt=0,
        description="A period's scaled thaw-season value whose per-pixel noise (each pair's robust "
        "scatter on stable ground times its scaling factor, combined over the period's pairs) "
        "exceeds this, mm, is published but flagged as not trusted and left out of the Ks "
        "correlation.",
    )
    agreement_sensor: str = Field(
        default="alos2",
        description="Key of the sensor whose pairs inside the Sentinel-1 series are compared with "
        "Sentinel-1 over the same dates (Fig. 9).",
    )
    min_stable_pixels: int = Field(
        default=10,
        ge=1,
        description="A pair with fewer coherent stable-ground pixels than this cannot be "
        "referenced and is not used.",
    )


class DriverOptions(_Model):
    """Environmental drivers of seasonal deformation (method.md §4)."""

    aggregate_m: float = Field(default=1000.0, gt=0, description="Aggregation cell size, metres.")
    factors: list[Literal["slope", "ground_ice", "thawing_index", "ndvi", "swir_albedo"]] = Field(
        default_factory=lambda: ["slope", "ground_ice", "thawing_index", "ndvi", "swir_albedo"],
        description="Factors correlated with the mean thaw-season deformation.",
    )
    growing_season: tuple[MonthDay, MonthDay] = Field(
        default=("06-01", "08-31"),
        description="Growing season for NDVI means (MM-DD, MM-DD), both days included.",
    )
    n_bins: int = Field(default=8, ge=2, le=50, description="Bins for binned means ± std.")
    binning: Literal["equal_count", "equal_width"] = Field(
        default="equal_count",
        description="How a factor's bins are cut: 'equal_count' (quantiles, about the same number "
        "of 1 km cells per bin) or 'equal_width' (equal steps between the factor's min and max).",
    )
    thaw_season: tuple[MonthDay, MonthDay] | None = Field(
        default=None,
        description="Thaw season (MM-DD, MM-DD; first day included, last excluded) of the thawing "
        "index and the SWIR albedo mean; unset = the Sentinel-1 thaw season (sentinel1.thaw_onset "
        "→ sentinel1.thaw_end), so the factors cover the days of the deformation.",
    )
    lst_band: Literal["LST_Day_1km", "LST_Night_1km"] = Field(
        default="LST_Day_1km", description="MOD11A1 band the thawing index is computed from (°C)."
    )
    lst_min_valid_fraction: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Fewest cloud-free LST days, as a fraction of the thaw season's days, for a "
        "pixel-year's thawing index (fewer: no value for that pixel and year).",
    )
    deformation: Literal["vertical", "los"] = Field(
        default="vertical",
        description="Which mean thaw-season deformation of the Sentinel-1 product is correlated: "
        "'vertical' (thaw_season_deformation_mean_vertical) or 'los', mm.",
    )
    min_cell_coverage: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fewest valid deformation pixels in an aggregation cell, as a fraction of the "
        "cell's area (0–1); cells with less are left out of the correlations.",
    )

    @model_validator(mode="after")
    def _seasons_in_order(self) -> DriverOptions:
        seasons = {"growing_season": self.growing_season, "thaw_season": self.thaw_season}
        for name, season in seasons.items():
            if season is not None and season[0] >= season[1]:
                raise ValueError(f"{name}: the first day must come before the last within a "
                                 f"calendar year, got {season[0]} → {season[1]}")
        return self


class RecessionOptions(_Model):
    """Streamflow recession analysis (method.md §5)."""

    min_recession_days: int = Field(
        default=7,
        ge=2,
        le=60,
        description="Minimum run of consecutive declining days, counted as declining steps "
        "Q(t) < Q(t−1) (7 steps span 8 daily values).",
    )
    months: list[int] = Field(
        default_factory=lambda: [8, 9, 10], description="Calendar months of recession points (1–12)."
    )
    exclude_peak: bool = Field(
        default=False, description="Drop the first step of each run (the step leaving the peak)."
    )
    difference: Literal["brutsaert_nieber", "backward"] = Field(
        default="brutsaert_nieber", description="How dQ/dt and its paired Q are formed."
    )
    window_years: list[int] = Field(
        default_factory=lambda: [1, 3, 5], description="Moving-window lengths, years."
    )
    main_window_years: int = Field(default=5, ge=1, description="Window used for attribution.")
    min_points: int = Field(
        default=10, ge=3, description="Windows with fewer recession points are 'insufficient'."
    )
    select: Literal["clip", "mask"] = Field(
        default="clip",
        description="Detect runs on the whole record and keep the points in `months` ('clip'), "
        "or blank the other months before detecting runs ('mask').",
    )
    flow_units: Literal["m3/s", "mm/d"] = Field(
        default="mm/d", description="Units flows are converted to before fitting."
    )

    @model_validator(mode="after")
    def _check_months(self) -> RecessionOptions:
        if not self.months or any(m < 1 or m > 12 for m in self.months):
            raise ValueError(f"months must be calendar months 1–12; got {self.months}")
        return self


class AttributionOptions(_Model):
    """Climate-regression attribution of Ks (method.md §5)."""

    before_start: int = Field(default=1973, description="First year of the fitting period.")
    before_end: int = Field(default=2002, description="Last year of the fitting (before) period.")
    predictors: list[
        Literal["air_temperature", "precipitation", "evapotranspiration", "net_radiation",
                "snow_depth", "soil_moisture"]
    ] = Field(
        default_factory=lambda: [
            "air_temperature", "precipitation", "evapotranspiration",
            "net_radiation", "snow_depth", "soil_moisture",
        ],
        description="Climate predictors (5-year moving averages) of Ks.",
    )
    thaw_season_months: list[int] = Field(
        default_factory=lambda: [5, 6, 7, 8, 9, 10],
        description="Months summed/averaged as the thawing season.",
    )
    cold_season_months: list[int] = Field(
        default_factory=lambda: [11, 12, 1, 2, 3, 4],
        description="Months averaged as the cold season (snow depth).",
    )
    moving_average_years: int = Field(default=5, ge=1, description="Predictor smoothing, years.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Interval confidence level.")

    @model_validator(mode="after")
    def _check_years(self) -> AttributionOptions:
        if self.before_end <= self.before_start:
            raise ValueError("before_end must be after before_start")
        return self


# ---------------------------------------------------------------------------------------------
# Ingest from the real services (issue 8). Every source is off by default: a study runs from
# local folders with no credentials. Downloaded files land in the LocalSource folders that the
# readers already read; the ledger records what was found, ordered and downloaded.
# Credentials never live here: they come from environment variables or Prefect Secret blocks
# (talik.tasks.ingest.common.CREDENTIALS names them).


_CREDENTIAL_QUERY = re.compile(r"[?&](token|access_token|key|apikey|api_key|password|signature)=",
                               re.IGNORECASE)


def _no_credentials(url: str | None) -> str | None:
    """Refuse a service URL that carries a credential (they belong in the environment)."""
    if url is None:
        return url
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" in netloc or _CREDENTIAL_QUERY.search(url):
        raise ValueError("a service URL must not carry credentials (user:password@ or a token/key "
                         "query parameter): give them through the environment or a Prefect "
                         "Secret block (see the README)")
    return url


ServiceUrl = Annotated[str, AfterValidator(_no_credentials)]
"""A service base URL, refused if it holds a credential (study files and flow parameters are
stored in plain text)."""


class RetryOptions(_Model):
    """How transient service errors (5xx, timeouts, 429) are retried."""

    attempts: int = Field(default=5, ge=1, le=50, description="Attempts per request, the first included.")
    backoff_s: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="First wait between attempts, seconds (doubles each time, with jitter).",
    )
    max_backoff_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="Longest wait between attempts, seconds (a Retry-After header is honoured up to this).",
    )


class AsfSearchOptions(_Model):
    """Scene discovery at ASF with asf_search (Sentinel-1 SLC; ERS/ALOS-1 heritage scenes)."""

    enabled: bool = Field(default=False, description="Flag (no unit): search ASF for scenes.")
    host: str = Field(
        default="api.daac.asf.alaska.edu",
        description="Host of ASF's search API (HTTPS; asf_search's ASFSearchOptions(host=...)).",
    )
    platform: Literal["Sentinel-1", "ERS-1", "ERS-2", "ALOS"] = Field(
        default="Sentinel-1", description="Platform of the scenes to find."
    )
    processing_level: str = Field(
        default="SLC", description="ASF processing level (product type), e.g. 'SLC', 'L1.0'."
    )
    beam_mode: str | None = Field(default="IW", description="Beam mode, e.g. 'IW' (unset: any).")
    polarization: str | None = Field(
        default=None, description="Polarisation filter, e.g. 'VV+VH' (unset: any)."
    )
    flight_direction: Literal["ASCENDING", "DESCENDING"] | None = Field(
        default=None, description="Orbit direction (unset: both)."
    )
    relative_orbit: int | None = Field(
        default=None, ge=1, le=1000, description="Relative orbit (path) number."
    )
    frame: int | None = Field(default=None, ge=0, le=10000, description="ASF frame number.")
    start: dt.date | None = Field(default=None, description="First acquisition date searched.")
    end: dt.date | None = Field(default=None, description="Last acquisition date searched (unset: today).")
    max_results: int = Field(default=5000, ge=1, le=100000, description="Most scenes one search returns.")


class NetworkPlanOptions(_Model):
    """Which interferograms to order from a scene list (talik.science.network.plan_pairs)."""

    neighbours: int = Field(default=3, ge=1, le=12, description="Each date is paired with its next N dates.")
    max_temporal_baseline_days: int = Field(
        default=48, ge=1, le=3650, description="Longest pair, days (longer pairs are not ordered)."
    )
    months: list[Annotated[int, Field(ge=1, le=12)]] | None = Field(
        default=None,
        description="Months (1-12) both dates of a pair must fall in, e.g. the snow-free season "
        "(unset: any month).",
    )


class Hyp3Options(_Model):
    """On-demand interferograms from ASF HyP3 (hyp3_sdk)."""

    enabled: bool = Field(
        default=False, description="Flag (no unit): order and download HyP3 interferograms."
    )
    api_url: ServiceUrl = Field(default="https://hyp3-api.asf.alaska.edu", description="HyP3 API base URL.")
    job_type: Literal["INSAR_GAMMA", "INSAR_ISCE_MULTI_BURST"] = Field(
        default="INSAR_GAMMA", description="HyP3 job type ordered for each pair."
    )
    looks: Literal["20x4", "10x2"] = Field(
        default="20x4",
        description="Range x azimuth looks (INSAR_GAMMA: 20x4 costs 10 credits, 10x2 costs 15).",
    )
    monthly_budget_credits: int = Field(
        default=10000,
        ge=0,
        le=1000000,
        description="Credits this study may spend per calendar month (HyP3 grants 10,000 per user).",
    )
    submit_batch_size: int = Field(default=25, ge=1, le=200, description="Jobs per submission request.")
    max_resubmits: int = Field(default=2, ge=0, le=10, description="Times a failed job is submitted again.")
    poll_interval_s: float = Field(
        default=300.0, gt=0, le=86400, description="Wait between polls of running jobs, seconds."
    )
    poll_timeout_h: float = Field(
        default=6.0,
        gt=0,
        le=336,
        description="Longest a run waits for its jobs, hours (later runs keep polling).",
    )
    download_margin_days: float = Field(
        default=3.0,
        ge=0,
        le=13,
        description="Products within this many days of their expiry are downloaded first, and warned about.",
    )


class EsaOptions(_Model):
    """Copernicus Data Space / ESA heritage scenes (eodag; sentinelsat for DHuS mirrors)."""

    enabled: bool = Field(default=False, description="Flag (no unit): search ESA/Copernicus for scenes.")
    backend: Literal["eodag", "sentinelsat"] = Field(
        default="eodag",
        description="Client: eodag (Copernicus Data Space, STAC providers) or sentinelsat (a DHuS mirror).",
    )
    provider: str = Field(default="cop_dataspace", description="eodag provider name.")
    search_url: ServiceUrl | None = Field(
        default=None,
        description="Search endpoint overriding the provider's (eodag), or the DHuS API URL (sentinelsat).",
    )
    auth_url: ServiceUrl | None = Field(
        default=None, description="OIDC configuration URL overriding the provider's (eodag)."
    )
    collection: str = Field(
        default="S1_SAR_SLC", description="eodag collection (e.g. S1_SAR_SLC, ERS heritage SAR_IMS_1P)."
    )
    start: dt.date | None = Field(default=None, description="First acquisition date searched.")
    end: dt.date | None = Field(default=None, description="Last acquisition date searched (unset: today).")
    flight_direction: Literal["ASCENDING", "DESCENDING"] | None = Field(
        default=None, description="Orbit direction (unset: both)."
    )
    relative_orbit: int | None = Field(default=None, ge=1, le=1000, description="Relative orbit number.")
    download: bool = Field(
        default=False, description="Flag (no unit): download the scenes found (else only record them)."
    )


class EarthEngineOptions(_Model):
    """MODIS NDVI, albedo and LST from Google Earth Engine (computePixels)."""

    enabled: bool = Field(default=False, description="Flag (no unit): fetch MODIS stacks from Earth Engine.")
    api_url: ServiceUrl = Field(
        default="https://earthengine.googleapis.com", description="Earth Engine API base URL."
    )
    project: str | None = Field(default=None, description="Google Cloud project registered for Earth Engine.")
    ndvi_collection: str = Field(default="MODIS/061/MOD13Q1", description="NDVI collection (band NDVI).")
    albedo_collection: str = Field(
        default="MODIS/061/MCD43A3", description="Albedo collection (band Albedo_BSA_Band7)."
    )
    lst_collection: str = Field(default="MODIS/061/MOD11A1", description="LST collection (band LST_Day_1km).")
    start: dt.date | None = Field(
        default=None, description="First date fetched (unset: the start of the study's first period)."
    )
    end: dt.date | None = Field(default=None, description="Last date fetched (unset: today).")
    scale_m: float = Field(
        default=500.0, gt=0, le=10000, description="Pixel size of the fetched stacks, metres."
    )
    max_request_mib: float = Field(
        default=48.0,
        gt=0,
        le=48,
        description="Largest computePixels answer, MiB (Earth Engine's limit is 48, mask bytes included).",
    )
    max_concurrent: int = Field(default=4, ge=1, le=40, description="Requests in flight at once.")
    timeout_s: float = Field(
        default=360.0, gt=0, le=3600, description="Longest wait for one Earth Engine answer, seconds."
    )


class CdsOptions(_Model):
    """ERA5-Land from the Copernicus Climate Data Store (cdsapi)."""

    enabled: bool = Field(default=False, description="Flag (no unit): fetch ERA5-Land from the CDS.")
    url: ServiceUrl = Field(default="https://cds.climate.copernicus.eu/api", description="CDS API base URL.")
    dataset: Literal["reanalysis-era5-land-monthly-means", "reanalysis-era5-land"] = Field(
        default="reanalysis-era5-land-monthly-means", description="ERA5-Land dataset requested."
    )
    variables: list[str] = Field(
        default_factory=lambda: [
            "2m_temperature",
            "total_precipitation",
            "total_evaporation",
            "surface_net_solar_radiation",
            "surface_net_thermal_radiation",
            "snow_depth",
            "volumetric_soil_water_layer_1",
        ],
        description="CDS variable names requested (the attribution predictors).",
    )
    first_year: int = Field(default=1973, ge=1950, le=2100, description="First year requested.")
    last_year: int | None = Field(
        default=None, ge=1950, le=2100, description="Last year requested (unset: this year)."
    )
    max_in_flight: int = Field(default=3, ge=1, le=20, description="Requests queued at the CDS at once.")
    poll_interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="Wait between polls of a queued request, seconds."
    )
    max_wait_h: float = Field(
        default=2.0,
        gt=0,
        le=72,
        description="Longest a run waits for queued requests, hours (the next run polls them again).",
    )


class DemOptions(_Model):
    """Copernicus GLO-30 DEM tiles."""

    enabled: bool = Field(default=False, description="Flag (no unit): fetch GLO-30 DEM tiles over the area.")
    url: ServiceUrl = Field(
        default="https://copernicus-dem-30m.s3.amazonaws.com", description="Base URL of the GLO-30 COG tiles."
    )


class NwisOptions(_Model):
    """Daily discharge of a USGS NWIS gauge (dataretrieval), for new basins."""

    enabled: bool = Field(default=False, description="Flag (no unit): fetch daily discharge from USGS NWIS.")
    site: str | None = Field(default=None, description="USGS site number, e.g. '15356000'.")
    url: ServiceUrl | None = Field(
        default=None, description="Base URL of the USGS Water Data API (unset: dataretrieval's default)."
    )
    start: dt.date | None = Field(default=None, description="First day fetched.")


class IngestOptions(_Model):
    """Fetching inputs from the services; every source off by default (local folders only)."""

    ledger: StudyPath | None = Field(
        default=None,
        description="SQLite ledger of scenes, planned pairs, jobs and downloads (unset: "
        "<work_dir>/ingest/ledger.sqlite).",
    )
    retries: RetryOptions = Field(default_factory=RetryOptions)
    asf: AsfSearchOptions = Field(default_factory=AsfSearchOptions)
    network: NetworkPlanOptions = Field(default_factory=NetworkPlanOptions)
    hyp3: Hyp3Options = Field(default_factory=Hyp3Options)
    esa: EsaOptions = Field(default_factory=EsaOptions)
    earthengine: EarthEngineOptions = Field(default_factory=EarthEngineOptions)
    cds: CdsOptions = Field(default_factory=CdsOptions)
    dem: DemOptions = Field(default_factory=DemOptions)
    nwis: NwisOptions = Field(default_factory=NwisOptions)

    @property
    def any_enabled(self) -> bool:
        """Whether any source fetches from a service."""
        return any(
            getattr(self, name).enabled
            for name in ("asf", "hyp3", "esa", "earthengine", "cds", "dem", "nwis")
        )


class ReleaseChecks(_Model):
    """What a release must pass before it becomes LATEST (else the run fails, naming why)."""

    max_abs_velocity_mm_yr: float = Field(
        default=500.0, gt=0,
        description="Largest plausible |LOS velocity| of a trusted pixel, mm/yr.")
    max_abs_displacement_mm: float = Field(
        default=5000.0, gt=0,
        description="Largest plausible |cumulative LOS displacement| of a trusted pixel, mm.")
    min_trusted_fraction: float = Field(
        default=0.01, ge=0, le=1,
        description="Smallest share of the solved pixels the product mask may keep.")
    max_solved_drop: float = Field(
        default=0.5, ge=0, le=1,
        description="Largest drop in solved pixels since the previous release, as a share of "
        "its count (a larger drop is refused as a NaN explosion).")


class StudyConfig(_Model):
    """A whole study: where, which sensors, which periods, which inputs, which options."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Study identifier (lower case, no spaces)."
    )
    title: str = Field(description="Title shown in reports.")
    aoi: AreaOfInterest
    sensors: dict[str, Sensor]
    periods: list[Period] = Field(default_factory=list)
    source: Annotated[WorldSource | LocalSource, Field(discriminator="kind")]
    stores: Stores
    sentinel1: Sentinel1Options = Field(default_factory=Sentinel1Options)
    longterm: LongTermOptions = Field(default_factory=LongTermOptions)
    drivers: DriverOptions = Field(default_factory=DriverOptions)
    recession: RecessionOptions = Field(default_factory=RecessionOptions)
    attribution: AttributionOptions = Field(default_factory=AttributionOptions)
    ingest: IngestOptions = Field(default_factory=IngestOptions)
    release_checks: ReleaseChecks = Field(default_factory=ReleaseChecks)
    until: dt.date | None = Field(
        default=None,
        description="Last acquisition date the study analyses: Sentinel-1 products whose later "
        "date is after it (and GACOS files of later dates) are left out of the run's inputs, and "
        "the ASF, ESA and Earth Engine searches end there. Unset: every product found. Raising "
        "it extends the study in time: only the new products are staged, and the series keep "
        "the reference date and area of the stack they extend.",
    )

    @model_validator(mode="after")
    def _check_ingest_source(self) -> StudyConfig:
        if self.ingest.any_enabled and not isinstance(self.source, LocalSource):
            raise ValueError("[ingest] fetches into the folders of a local source: set "
                             "[source] kind = \"local\" (the demo world is generated, not fetched)")
        return self

    @model_validator(mode="after")
    def _check_sensor_keys(self) -> StudyConfig:
        for period in self.periods:
            if period.sensor not in self.sensors:
                raise ValueError(
                    f"period {period.name!r} names sensor {period.sensor!r}, which is not one of "
                    f"[sensors]: {sorted(self.sensors)}"
                )
        if self.sentinel1.sensor not in self.sensors:
            raise ValueError(
                f"sentinel1.sensor {self.sentinel1.sensor!r} is not one of [sensors]: "
                f"{sorted(self.sensors)}"
            )
        return self

    @property
    def s1_sensor(self) -> Sensor:
        """The Sentinel-1 sensor description."""
        return self.sensors[self.sentinel1.sensor]


ANALYSIS_SECTIONS = ("sentinel1", "longterm", "drivers", "recession", "attribution",
                     "release_checks")
"""The study's sections of analysis options: what a rerun from the Prefect UI may change."""


class StudyOptions(_Model):
    """A study's analysis options as one flow parameter (the form of the Prefect UI).

    A run given these uses them instead of the study file's sections of the same names, and
    records them in its parameters, so rerunning a run reproduces it even after the file has
    changed. The study file still says where the inputs and stores are.
    """

    sentinel1: Sentinel1Options = Field(default_factory=Sentinel1Options)
    longterm: LongTermOptions = Field(default_factory=LongTermOptions)
    drivers: DriverOptions = Field(default_factory=DriverOptions)
    recession: RecessionOptions = Field(default_factory=RecessionOptions)
    attribution: AttributionOptions = Field(default_factory=AttributionOptions)
    release_checks: ReleaseChecks = Field(default_factory=ReleaseChecks)

    @classmethod
    def of(cls, cfg: StudyConfig) -> StudyOptions:
        """The analysis options a study file sets (defaults filled in)."""
        return cls(**{name: getattr(cfg, name) for name in ANALYSIS_SECTIONS})


def with_until(cfg: StudyConfig, until: dt.date | None) -> StudyConfig:
    """``cfg`` analysing acquisitions up to ``until`` (unset: ``cfg`` as it is).

    Sets :attr:`StudyConfig.until` and ends the ASF, ESA and Earth Engine searches there
    (their own ``end``, when earlier, is kept).
    """
    if until is None:
        return cfg
    ingest = cfg.ingest
    searches = {}
    for name in ("asf", "esa", "earthengine"):
        section = getattr(ingest, name)
        end = until if section.end is None else min(section.end, until)
        searches[name] = section.model_copy(update={"end": end})
    return cfg.model_copy(update={"until": until,
                                  "ingest": ingest.model_copy(update=searches)})


def with_options(cfg: StudyConfig, options: StudyOptions | None, source: str | Path = "(options)"
                 ) -> StudyConfig:
    """``cfg`` with its analysis sections replaced by ``options`` (validated as a whole again).

    Raises :class:`~talik.errors.ConfigError` (naming ``source`` and the field) when the
    combination is invalid, e.g. ``sentinel1.sensor`` naming a sensor the study lacks.
    """
    if options is None:
        return cfg
    data = cfg.model_dump(mode="python")
    data.update({name: getattr(options, name).model_dump(mode="python")
                 for name in ANALYSIS_SECTIONS})
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        field, expected, got = _describe_error(exc.errors()[0])
        raise ConfigError(Path(str(source)), field, expected, got) from None


def _describe_error(err: dict[str, Any]) -> tuple[str, str, object]:
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        expected = "no such field (check the spelling; unknown fields are refused)"
    elif kind == "missing":
        expected = "this field to be present"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "?")
        words = {
            "greater_than": "a number > ",
            "greater_than_equal": "a number >= ",
            "less_than": "a number < ",
            "less_than_equal": "a number <= ",
        }[kind]
        expected = f"{words}{bound}"
    elif kind == "literal_error":
        expected = f"one of {ctx.get('expected', '?')}"
    elif kind == "string_pattern_mismatch":
        expected = f"text matching {ctx.get('pattern', '?')}"
    else:
        expected = err["msg"][0].lower() + err["msg"][1:]
    got = err.get("input") if kind not in ("missing",) else None
    if isinstance(got, dict):
        got = None
    return field, expected, got


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file.

    Raises
    ------
    ConfigError
        Naming the file, the first invalid field and what was expected.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "an existing study TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", f"valid TOML ({exc})") from None
    try:
        return StudyConfig.model_validate(raw, context={"base_dir": path.parent.resolve()})
    except ValidationError as exc:
        errors = exc.errors()
        field, expected, got = _describe_error(errors[0])
        if len(errors) > 1:
            others = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[1:5])
            expected += f" (also invalid: {others})"
        raise ConfigError(path, field, expected, got) from None


def _jsonable(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def config_digest(cfg: BaseModel) -> str:
    """SHA-256 of the canonical JSON of a (sub-)configuration."""
    blob = json.dumps(_jsonable(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def to_toml(cfg: BaseModel) -> str:
    """The resolved configuration as TOML (TOML has no null: unset options are left out)."""
    import tomli_w

    return tomli_w.dumps(_drop_none(_jsonable(cfg)))


def _default_repr(value: Any) -> str:
    import tomli_w

    text = tomli_w.dumps({"x": value}).strip()
    return text.split("=", 1)[1].strip()


def defaults_toml() -> str:
    """Commented TOML of every analysis option with its default, generated from the schema."""
    sections: list[tuple[str, type[_Model]]] = [
        ("sentinel1", Sentinel1Options),
        ("longterm", LongTermOptions),
        ("drivers", DriverOptions),
        ("recession", RecessionOptions),
        ("attribution", AttributionOptions),
        ("release_checks", ReleaseChecks),
        ("ingest", IngestOptions),
        ("ingest.retries", RetryOptions),
        ("ingest.asf", AsfSearchOptions),
        ("ingest.network", NetworkPlanOptions),
        ("ingest.hyp3", Hyp3Options),
        ("ingest.esa", EsaOptions),
        ("ingest.earthengine", EarthEngineOptions),
        ("ingest.cds", CdsOptions),
        ("ingest.dem", DemOptions),
        ("ingest.nwis", NwisOptions),
    ]
    lines = ["# talik options and their defaults (generated from talik.config)."]
    for name, model in sections:
        instance = model()
        lines += ["", f"[{name}]"]
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines.append(f"# {doc}")
        for field_name, info in model.model_fields.items():
            value = getattr(instance, field_name)
            if isinstance(value, _Model):
                continue  # a sub-section of its own, listed after this one
            if info.description:
                lines.append(f"# {info.description}")
            if value is None:
                lines.append(f"# {field_name} =  (unset)")
            else:
                if isinstance(value, BaseModel):
                    value = value.model_dump(mode="json")
                lines.append(f"{field_name} = {_default_repr(value)}")
    return "\n".join(lines) + "\n"
