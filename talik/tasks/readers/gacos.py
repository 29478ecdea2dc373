"""Reader of GACOS zenith total delay grids: ``YYYYMMDD.ztd`` + ``YYYYMMDD.ztd.rsc``.

The ``.ztd`` file is headerless little-endian float32, ``FILE_LENGTH`` rows of ``WIDTH``
values from the north-west corner, in metres of zenith delay (0 = no data). The ROI_PAC-style
``.rsc`` header gives the grid. talik reads ``X_FIRST``/``Y_FIRST`` as the upper-left corner
of the first pixel (MintPy's reading; LiCSBAS treats them as pixel centres, half a pixel
apart — about 45 m, negligible for a delay field smooth over kilometres).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.transform import from_origin

from talik.errors import InputError

__all__ = ["find_gacos", "gacos_transform", "read_gacos", "read_gacos_values", "read_rsc"]

RSC_REQUIRED = ("WIDTH", "FILE_LENGTH", "X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP")


def read_rsc(path: Path) -> dict[str, str]:
    """Parse a ROI_PAC ``.rsc`` header (``KEY value`` per line, any whitespace)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "(file)", "the .ztd.rsc header next to the .ztd file") from None
    header = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            header[parts[0].upper()] = parts[1].strip()
    for key in RSC_REQUIRED:
        if key not in header:
            raise InputError(path, key, "a ROI_PAC header key of a GACOS grid")
    return header


def find_gacos(folder: str | Path) -> dict[dt.date, Path]:
    """Date → ``.ztd`` path for every ``YYYYMMDD.ztd`` in ``folder``."""
    out = {}
    for p in sorted(Path(folder).glob("*.ztd")):
        try:
            out[dt.datetime.strptime(p.stem, "%Y%m%d").date()] = p
        except ValueError:
            raise InputError(p, "file name", "YYYYMMDD.ztd", p.name) from None
    return out


def read_gacos(path: str | Path) -> xr.DataArray:
    """Zenith total delay (m) on its lat/lon grid, with CRS EPSG:4326 and 0 as NaN."""
    data, (x_first, y_first, x_step, y_step) = read_gacos_values(path)
    length, width = data.shape
    lon = x_first + x_step * (np.arange(width) + 0.5)
    lat = y_first + y_step * (np.arange(length) + 0.5)
    da = xr.DataArray(data, dims=("y", "x"), coords={"y": lat, "x": lon},
                      attrs={"units": "m", "long_name": "zenith total delay"})
    da = da.rio.write_crs("EPSG:4326")
    return da.rio.write_transform(gacos_transform(x_first, y_first, x_step, y_step))


def gacos_transform(x_first: float, y_first: float, x_step: float, y_step: float):
    """The affine transform (EPSG:4326, pixel corners) of a GACOS grid from its ``.rsc`` keys."""
    return from_origin(x_first, y_first, x_step, -y_step)


def read_gacos_values(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A GACOS grid's delays and ``X_FIRST, Y_FIRST, X_STEP, Y_STEP`` (degrees).

    The delays are metres, float32 ``(FILE_LENGTH, WIDTH)``, 0 as NaN: :func:`read_gacos`
    without the coordinates, for readers of many dates of one geometry.
    """
    path = Path(path)
    header = read_rsc(Path(str(path) + ".rsc"))
    try:
        width, length = int(header["WIDTH"]), int(header["FILE_LENGTH"])
        x_first, y_first = float(header["X_FIRST"]), float(header["Y_FIRST"])
        x_step, y_step = float(header["X_STEP"]), float(header["Y_STEP"])
    except ValueError as exc:
        raise InputError(str(path) + ".rsc", "grid keys", f"numbers ({exc})") from None
    if width <= 0 or length <= 0:
        raise InputError(str(path) + ".rsc", "WIDTH/FILE_LENGTH", "positive pixel counts",
                         f"{width} × {length}")
    if not all(np.isfinite(v) for v in (x_first, y_first, x_step, y_step)) or 0 in (x_step, y_step):
        raise InputError(str(path) + ".rsc", "X_FIRST/Y_FIRST/X_STEP/Y_STEP",
                         "finite numbers and non-zero steps (degrees)",
                         f"{x_first}, {y_first}, {x_step}, {y_step}")
    expected = 4 * width * length
    size = path.stat().st_size
    if size != expected:
        raise InputError(path, "(size)", f"{expected} bytes = 4 × WIDTH × FILE_LENGTH", size)
    data = np.fromfile(path, dtype="<f4").reshape(length, width).astype(np.float32)
    data[data == 0] = np.nan
    return data, (x_first, y_first, x_step, y_step)
