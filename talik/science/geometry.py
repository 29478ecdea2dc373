"""Line-of-sight geometry: LOS ↔ vertical ↔ another sensor's LOS, assuming no horizontal motion.

On flat ground with purely vertical motion ``d_v``, a sensor looking at incidence θ sees
``d_los = d_v · cos θ`` (positive toward the satellite = up). Every conversion in talik goes
through these three functions; angles are in degrees, values keep their units (mm, mm/yr).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["los_to_los", "los_to_vertical", "vertical_to_los"]

Angle = xr.DataArray | np.ndarray | float


def los_to_vertical(los: xr.DataArray, incidence_deg: Angle) -> xr.DataArray:
    """``d_v = d_los / cos θ`` (positive up); attributes of ``los`` kept."""
    out = los / np.cos(np.radians(incidence_deg))
    return out.assign_attrs(los.attrs) if isinstance(out, xr.DataArray) else out


def vertical_to_los(vertical: xr.DataArray, incidence_deg: Angle) -> xr.DataArray:
    """``d_los = d_v · cos θ`` (positive toward the satellite); attributes kept."""
    out = vertical * np.cos(np.radians(incidence_deg))
    return out.assign_attrs(vertical.attrs) if isinstance(out, xr.DataArray) else out


def los_to_los(los: xr.DataArray, incidence_from_deg: Angle, incidence_to_deg: Angle
               ) -> xr.DataArray:
    """A value in one sensor's LOS expressed in another's, through the vertical."""
    return vertical_to_los(los_to_vertical(los, incidence_from_deg), incidence_to_deg)
