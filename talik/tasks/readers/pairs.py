"""Reader of single-pair products from sparse sensors (ERS-2, Envisat, ALOS-1, ALOS-2).

Users process these pairs themselves (GAMMA, ISCE), so talik asks for one GeoTIFF per pair
with the unwrapped phase (radians) or the LOS displacement (mm or m) in band 1 and the
coherence in band 2, and a JSON sidecar of the same stem describing it::

    {"sensor": "ALOS-2", "reference_date": "2019-05-19", "secondary_date": "2019-07-14",
     "wavelength_m": 0.2419, "incidence_deg": 40.55, "direction": "descending",
     "polarization": "HH", "perpendicular_baseline_m": -25,
     "quantity": "unwrapped_phase", "units": "rad",
     "sign_convention": "positive_away_from_sensor"}
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

import numpy as np
import rioxarray
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from talik.errors import InputError
from talik.tasks.readers.raster import raster_errors

__all__ = ["PairSidecar", "find_pairs", "read_pair"]


class PairSidecar(BaseModel):
    """The JSON sidecar of a sparse-sensor pair GeoTIFF."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sensor: str = Field(description="Platform, e.g. 'ALOS-2'.")
    reference_date: dt.date = Field(description="Earlier acquisition date.")
    secondary_date: dt.date = Field(description="Later acquisition date.")
    wavelength_m: float = Field(gt=0.01, lt=0.5, description="Radar wavelength, m.")
    incidence_deg: float = Field(gt=0, lt=90, description="Incidence angle, degrees.")
    direction: Literal["ascending", "descending"]
    polarization: str = "unknown"
    perpendicular_baseline_m: float | None = None
    quantity: Literal["unwrapped_phase", "los_displacement"]
    units: Literal["rad", "mm", "m"]
    sign_convention: Literal["positive_away_from_sensor", "positive_toward_sensor"]

    @model_validator(mode="after")
    def _check(self) -> PairSidecar:
        if self.secondary_date <= self.reference_date:
            kind = "equal" if self.secondary_date == self.reference_date else "reversed"
            raise ValueError(f"secondary_date after reference_date ({kind} dates: "
                             f"{self.reference_date} → {self.secondary_date})")
        if (self.quantity == "unwrapped_phase") != (self.units == "rad"):
            raise ValueError("unwrapped_phase must be in 'rad'; los_displacement in 'mm' or 'm'")
        return self

    @property
    def span_days(self) -> int:
        """Temporal baseline, days."""
        return (self.secondary_date - self.reference_date).days


def read_sidecar(path: Path) -> PairSidecar:
    """Parse and validate a pair's JSON sidecar."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "(file)", "a JSON sidecar next to the pair GeoTIFF") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, "(syntax)", f"valid JSON ({exc})") from None
    try:
        return PairSidecar.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"] and message.startswith("secondary_date"):
            field = "reference_date/secondary_date"
        got = err.get("input") if err["loc"] else None
        raise InputError(path, field, message, got) from None


def find_pairs(folder: str | Path) -> list[tuple[Path, PairSidecar]]:
    """All ``*.tif`` + ``*.json`` pairs in ``folder``, sorted by sensor and dates."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "(folder)", "a folder of pair GeoTIFFs with JSON sidecars")
    out = []
    for tif in sorted(folder.glob("*.tif")):
        out.append((tif, read_sidecar(tif.with_suffix(".json"))))
    return sorted(out, key=lambda item: (item[1].sensor, item[1].reference_date,
                                         item[1].secondary_date))


def read_pair(path: str | Path, sidecar: PairSidecar | None = None) -> xr.Dataset:
    """Read a pair: ``value`` (band 1, as in the file) and ``coherence`` (band 2), NaN no-data.

    The value keeps the file's quantity, units and sign convention (in its attributes); use
    :func:`talik.science.interferogram.pair_to_los_mm` to get LOS millimetres.
    """
    path = Path(path)
    meta = sidecar or read_sidecar(path.with_suffix(".json"))
    with raster_errors(path, "read"):  # .load() decodes: a truncated file fails here
        da = rioxarray.open_rasterio(path, masked=True).load()
    if da.rio.crs is None:
        raise InputError(path, "CRS", "a georeferenced GeoTIFF (its grid is reprojected onto the "
                         "analysis grid, which needs a CRS)", "no CRS")
    if da.sizes["band"] < 2:
        raise InputError(path, "band 2", "coherence in band 2 (band 1 is phase or displacement)")
    value = da.isel(band=0, drop=True).astype(np.float32)
    coherence = da.isel(band=1, drop=True).astype(np.float32)
    attrs = meta.model_dump(mode="json")
    return xr.Dataset(
        {"value": value.assign_attrs(units=meta.units), "coherence": coherence.assign_attrs(units="1")},
        attrs=attrs,
    )
