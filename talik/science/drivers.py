"""Environmental drivers of seasonal deformation (method.md §4; paper Fig. 12–13).

Per-pixel factor layers from daily or composite stacks, their aggregation to square cells
(1 km by default) on the analysis grid's CRS, and the statistics the paper reports: Pearson R
and p of each factor with the mean thaw-season deformation, and binned means ± std.

Factors and their units
-----------------------
* thawing index: degree-days above 0 °C over the thaw season (``degC d``), from daily LST with
  cloud gaps filled by linear interpolation in time (:func:`fill_gaps_linear`,
  :func:`thawing_index`);
* NDVI: mean over the growing season (``1``, :func:`season_mean`);
* SWIR albedo: mean over the thaw season (``1``, :func:`season_mean`);
* slope: terrain slope from the DEM (degrees, :func:`slope_from_dem`);
* ground-ice content: volumetric fraction (``1``), as mapped.

Aggregation
-----------
Cells are squares of ``cell_m`` aligned on the analysis grid's north-west corner
(:func:`cell_grid`); the cells of the last row and column are clipped to the grid's extent.
A layer on a grid in the cells' CRS with its axes along the cells' (the analysis grid, or any
finer or coarser north-up grid in the same CRS) is averaged with the exact overlap area of each
of its pixels with each cell (:func:`aggregate_to_cells`): since the overlaps of axis-aligned
rectangles factor into an overlap length along x times one along y, the cell means are two
small matrix products. A layer on another grid (MODIS on its lon/lat grid) is first sampled
by nearest cell at the centres of a regular sub-grid of the cells, fine compared with the
source cells (:func:`resample_to_cells`), and that sub-grid is aggregated the same way; each
source cell thus counts with the area it covers in the cell, to within the sub-grid spacing.
Missing values are left out of a mean (the cell mean is over the valid area).

Signs
-----
Deformation is positive up (toward the satellite); subsidence is negative. R is computed with
the deformation as it is: a negative R means "more of the factor, more subsidence".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer
from scipy import stats

from talik.science.spatial import slope_deg

__all__ = [
    "CellGrid",
    "aggregate_to_cells",
    "binned_means",
    "cell_grid",
    "correlate",
    "fill_gaps_linear",
    "mean_over_years",
    "overlap_lengths",
    "resample_to_cells",
    "season_mask",
    "season_mean",
    "slope_from_dem",
    "thawing_index",
    "valid_fraction",
]

SUBGRID_PER_SOURCE_CELL = 8
"""Sub-grid points per source-cell side when resampling a foreign grid onto cells."""


# ----------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class CellGrid:
    """Square aggregation cells over a north-up grid, clipped to that grid's extent.

    Attributes
    ----------
    x_edges
        Cell edges along x (east), increasing, in the CRS units (metres); ``nx + 1`` values.
    y_edges
        Cell edges along y (north), decreasing; ``ny + 1`` values.
    cell_m
        Nominal cell side (metres); edge cells may be narrower (clipped).
    crs
        CRS of the edges (e.g. ``"EPSG:32647"``).
    """

    x_edges: np.ndarray
    y_edges: np.ndarray
    cell_m: float
    crs: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return len(self.y_edges) - 1, len(self.x_edges) - 1

    @property
    def x(self) -> np.ndarray:
        """Centres of the full (unclipped) cells along x, metres."""
        return self.x_edges[0] + self.cell_m * (np.arange(self.shape[1]) + 0.5)

    @property
    def y(self) -> np.ndarray:
        """Centres of the full (unclipped) cells along y, metres (decreasing)."""
        return self.y_edges[0] - self.cell_m * (np.arange(self.shape[0]) + 0.5)

    def area_m2(self) -> np.ndarray:
        """Area of each (clipped) cell, m², ``(ny, nx)``."""
        return np.outer(-np.diff(self.y_edges), np.diff(self.x_edges))

    def template(self, values: np.ndarray, name: str, attrs: dict) -> xr.DataArray:
        """``values`` ``(ny, nx)`` as a DataArray on the cells, with ``attrs``."""
        return xr.DataArray(np.asarray(values, dtype=np.float32), dims=("y", "x"),
                            coords={"y": self.y, "x": self.x}, name=name, attrs=dict(attrs))


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges of a regular axis of cell ``centres`` (increasing or decreasing)."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        raise ValueError("a grid axis needs at least two cells to know its spacing")
    step = (c[-1] - c[0]) / (c.size - 1)
    return c[0] - step / 2 + step * np.arange(c.size + 1)


def cell_grid(x: np.ndarray, y: np.ndarray, cell_m: float, crs: str) -> CellGrid:
    """Cells of ``cell_m`` metres over the grid of pixel centres ``x`` (east) × ``y`` (north-up).

    Cells start at the grid's north-west corner; the last column and row are clipped to the
    grid's east and south edges.
    """
    xe, ye = _edges(x), _edges(y)
    west, east, north, south = xe.min(), xe.max(), ye.max(), ye.min()
    nx = int(np.ceil((east - west) / cell_m - 1e-9))
    ny = int(np.ceil((north - south) / cell_m - 1e-9))
    x_edges = np.minimum(west + cell_m * np.arange(nx + 1), east)
    y_edges = np.maximum(north - cell_m * np.arange(ny + 1), south)
    return CellGrid(x_edges, y_edges, float(cell_m), crs)


def overlap_lengths(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """Overlap length of every source interval with every destination interval.

    Both edge arrays are monotonic (either direction). Returns ``(n_dst, n_src)`` lengths in
    the edges' units.
    """
    s = np.sort(np.stack([src_edges[:-1], src_edges[1:]]), axis=0)
    d = np.sort(np.stack([dst_edges[:-1], dst_edges[1:]]), axis=0)
    lo = np.maximum(d[0][:, None], s[0][None, :])
    hi = np.minimum(d[1][:, None], s[1][None, :])
    return np.clip(hi - lo, 0.0, None)


def _cell_sums(values: np.ndarray, x: np.ndarray, y: np.ndarray, cells: CellGrid
               ) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted sums of valid values and valid areas (m²) per cell, for pixel centres."""
    return _edge_sums(values, _edges(x), _edges(y), cells)


def _edge_sums(values: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, cells: CellGrid
               ) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted sums of valid values and valid areas (m²) per cell, for pixel edges."""
    wx = overlap_lengths(x_edges, cells.x_edges)  # (cells nx, source nx)
    wy = overlap_lengths(y_edges, cells.y_edges)  # (cells ny, source ny)
    v = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(v)
    return wy @ np.where(valid, v, 0.0) @ wx.T, wy @ valid.astype(np.float64) @ wx.T


def aggregate_to_cells(da: xr.DataArray, cells: CellGrid) -> xr.DataArray:
    """Area-weighted mean of ``da (y, x)`` over each cell (NaN where a cell has no valid value).

    ``da`` is on a regular north-up grid in the cells' CRS (coordinates are pixel centres in
    metres). Each pixel counts with its exact overlap area with the cell; missing pixels are
    left out. Units and attributes are kept.
    """
    total, area = _cell_sums(da.transpose("y", "x").values, da["x"].values, da["y"].values, cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(area > 0, total / np.where(area > 0, area, 1.0), np.nan)
    return cells.template(mean, str(da.name), da.attrs)


def valid_fraction(da: xr.DataArray, cells: CellGrid) -> xr.DataArray:
    """Fraction (0–1) of each cell's nominal area (``cell_m²``) where ``da (y, x)`` has a value.

    A cell clipped by the grid's edge thus counts only the part of a full cell it covers.
    """
    _, area = _cell_sums(da.transpose("y", "x").values, da["x"].values, da["y"].values, cells)
    return cells.template(area / cells.cell_m**2, "valid_fraction",
                          {"units": "1", "long_name": f"fraction of the cell with {da.name}"})


def _source_cell_m(x: np.ndarray, y: np.ndarray, src_crs: str, dst_crs: str) -> float:
    """Smaller side (metres of ``dst_crs``) of a source pixel at the grid's centre."""
    xc, yc = float(np.median(x)), float(np.median(y))
    dx, dy = abs(float(x[1] - x[0])), abs(float(y[1] - y[0]))
    to_dst = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    px, py = to_dst.transform([xc, xc + dx, xc], [yc, yc, yc + dy])
    return float(min(np.hypot(px[1] - px[0], py[1] - py[0]), np.hypot(px[2] - px[0], py[2] - py[0])))


def _nearest_index(centres: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the regular-axis cell holding each point, and whether it is inside the axis."""
    edges = _edges(centres)
    step = edges[1] - edges[0]
    idx = np.floor((points - edges[0]) / step).astype(np.int64)
    inside = (idx >= 0) & (idx < centres.size)
    return np.clip(idx, 0, centres.size - 1), inside


@functools.lru_cache(maxsize=8)
def _sub_grid_sampling(xs: bytes, ys: bytes, src_crs: str, x_edges: bytes, y_edges: bytes,
                       cell_m: float, crs: str, spacing_m: float | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Where :func:`resample_to_cells`'s sub-grid samples a source grid (arrays as bytes).

    Returns the source row and column of each sub-pixel, whether it falls inside the source
    grid, the sub-grid's x and y edges and its spacing (m). It depends on the two grids only,
    so every layer (year, factor) on the same source grid reuses it: projecting the sub-grid
    is most of the resampling's cost.
    """
    src_x, src_y = np.frombuffer(xs), np.frombuffer(ys)
    cells = CellGrid(np.frombuffer(x_edges), np.frombuffer(y_edges), cell_m, crs)
    if spacing_m is None:
        spacing_m = (min(_source_cell_m(src_x, src_y, src_crs, cells.crs), cells.cell_m)
                     / SUBGRID_PER_SOURCE_CELL)
    per_cell = max(1, int(np.ceil(cells.cell_m / spacing_m)))
    step = cells.cell_m / per_cell
    west, east = cells.x_edges[0], cells.x_edges[-1]
    north, south = cells.y_edges[0], cells.y_edges[-1]
    fx = np.minimum(west + step * np.arange(int(np.ceil((east - west) / step - 1e-9)) + 1), east)
    fy = np.maximum(north - step * np.arange(int(np.ceil((north - south) / step - 1e-9)) + 1), south)
    cx, cy = (fx[:-1] + fx[1:]) / 2, (fy[:-1] + fy[1:]) / 2
    gx, gy = np.meshgrid(cx, cy)
    to_src = Transformer.from_crs(cells.crs, src_crs, always_xy=True)
    sx, sy = to_src.transform(gx, gy)
    col, in_x = _nearest_index(src_x, np.asarray(sx))
    row, in_y = _nearest_index(src_y, np.asarray(sy))
    for array in (row, col, fx, fy):
        array.setflags(write=False)  # shared by every caller
    inside = in_x & in_y
    inside.setflags(write=False)
    return row, col, inside, fx, fy, step


def resample_to_cells(da: xr.DataArray, src_crs: str, cells: CellGrid,
                      spacing_m: float | None = None) -> xr.DataArray:
    """Area-weighted mean over each cell of ``da (y, x)`` given on a grid in another CRS.

    The cells are covered by a regular sub-grid in their own CRS, of spacing ``spacing_m``
    (default: a quarter of the source pixel's smaller side, at most a quarter of a cell,
    rounded so that whole sub-pixels tile a cell). Each sub-pixel centre takes the value of
    the source pixel it falls in (nearest cell, NaN outside the source grid); the sub-grid is
    then averaged onto the cells with :func:`aggregate_to_cells`. So each source pixel counts
    with its overlap area with the cell, to within one sub-grid spacing along its edges.
    ``da``'s ``x``/``y`` coordinates are source pixel centres (degrees for EPSG:4326). The
    sub-grid's sampling of a source grid is computed once and reused for every layer on it.
    """
    xs = np.ascontiguousarray(da["x"].values, dtype=np.float64)
    ys = np.ascontiguousarray(da["y"].values, dtype=np.float64)
    row, col, inside, fx, fy, step = _sub_grid_sampling(
        xs.tobytes(), ys.tobytes(), str(src_crs),
        np.ascontiguousarray(cells.x_edges, dtype=np.float64).tobytes(),
        np.ascontiguousarray(cells.y_edges, dtype=np.float64).tobytes(),
        float(cells.cell_m), str(cells.crs), spacing_m)
    values = da.transpose("y", "x").values.astype(np.float64)
    sampled = np.where(inside, values[row, col], np.nan)
    total, area = _edge_sums(sampled, fx, fy, cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(area > 0, total / np.where(area > 0, area, 1.0), np.nan)
    attrs = {**da.attrs, "resampling": f"area-weighted from {src_crs} via a {step:.0f} m sub-grid"}
    return cells.template(mean, str(da.name), attrs)


# ----------------------------------------------------------------------------- layers
def slope_from_dem(elevation: xr.DataArray) -> xr.DataArray:
    """Terrain slope (degrees) of a north-up DEM ``(y, x)`` in metres on square pixels (m).

    :func:`talik.science.spatial.slope_deg` on the grid's own pixel size (central differences).
    """
    pixel_m = abs(float(elevation["x"][1] - elevation["x"][0]))
    out = slope_deg(elevation.transpose("y", "x").values, pixel_m)
    return xr.DataArray(out, dims=("y", "x"), coords={"y": elevation["y"], "x": elevation["x"]},
                        name="slope", attrs={"units": "degree", "long_name": "terrain slope"})


def _mmdd(times: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(times.strftime("%m-%d"))


def season_mask(times: pd.DatetimeIndex | np.ndarray, start: str, end: str,
                include_end: bool) -> np.ndarray:
    """True for dates from ``start`` (MM-DD) to ``end`` (MM-DD) of any year.

    ``include_end`` says whether ``end`` itself belongs to the season. The season must not
    cross the new year (``start < end``).
    """
    md = _mmdd(pd.DatetimeIndex(times))
    return (md >= start) & ((md <= end) if include_end else (md < end))


def fill_gaps_linear(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Fill missing values of ``da`` along ``dim`` by linear interpolation in time, per pixel.

    Interpolation is in days between the valid neighbours before and after each gap (the
    coordinate ``dim`` holds datetimes, not necessarily evenly spaced). At the edges (before
    the first or after the last valid value of a pixel) the nearest valid value is held; a
    pixel with no valid value stays NaN. Vectorised over all pixels: the previous and next
    valid index of every element come from running maxima/minima of index arrays.
    """
    arr = da.transpose(dim, ...)
    v = arr.values.astype(np.float64)
    shape = v.shape
    v = v.reshape(shape[0], -1)
    t = (pd.DatetimeIndex(arr[dim].values) - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    t = np.asarray(t, dtype=np.float64)
    valid = np.isfinite(v)
    steps = np.arange(shape[0])[:, None]
    prev = np.maximum.accumulate(np.where(valid, steps, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(valid, steps, shape[0])[::-1], axis=0)[::-1]
    has_prev, has_next = prev >= 0, nxt < shape[0]
    p = np.where(has_prev, prev, np.where(has_next, nxt, 0))
    n = np.where(has_next, nxt, p)
    cols = np.arange(v.shape[1])[None, :]
    vp, vn = v[p, cols], v[n, cols]
    tp, tn = t[p], t[n]
    span = tn - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(span > 0, (t[:, None] - tp) / np.where(span > 0, span, 1.0), 0.0)
    filled = vp + (vn - vp) * frac
    filled = np.where(valid, v, np.where(has_prev | has_next, filled, np.nan))
    dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
    return arr.copy(data=filled.reshape(shape).astype(dtype)).transpose(*da.dims)


def _on_daily_axis(da: xr.DataArray, year: int) -> xr.DataArray:
    """``da``'s dates of ``year`` reindexed onto every day from its first to its last date."""
    sel = da.sel(time=da["time"].dt.year == year)
    days = pd.date_range(pd.Timestamp(sel["time"].values[0]), pd.Timestamp(sel["time"].values[-1]),
                         freq="D")
    return sel.reindex(time=days)


def thawing_index(lst: xr.DataArray, season: tuple[str, str], min_valid_fraction: float
                  ) -> xr.DataArray:
    """Thawing index per year: degree-days above 0 °C over the thaw season, ``degC d``.

    Parameters
    ----------
    lst
        Daily land-surface temperature ``(time, y, x)``, °C; NaN on cloudy / no-data days.
    season
        ``(start, end)`` as MM-DD: the days from ``start`` up to the day before ``end``.
    min_valid_fraction
        A pixel-year needs at least this fraction of the season's days observed (0–1),
        otherwise its index is NaN.

    Notes
    -----
    Per year, the stack is put on a daily axis (days without a band are gaps like cloudy
    days), gaps are filled by :func:`fill_gaps_linear` using every date of that year's stack
    (so a gap at the season's edge is interpolated with observations outside the season when
    the stack has them; when it has none, the nearest observation inside is held), and
    ``TI = Σ max(T, 0) · 1 d`` over the season's days. A season day the stack does not reach
    at all counts as a gap held at the nearest observation.
    """
    out = []
    years = sorted(set(pd.DatetimeIndex(lst["time"].values).year))
    for year in years:
        daily = _on_daily_axis(lst, year)
        days = pd.date_range(f"{year}-{season[0]}", f"{year}-{season[1]}", freq="D", inclusive="left")
        # Season days outside the stack become gaps on the extended axis.
        axis = pd.DatetimeIndex(sorted(set(daily["time"].values) | set(days.values)))
        filled = fill_gaps_linear(daily.reindex(time=axis)).sel(time=days)
        observed = daily.reindex(time=days).notnull().sum("time") / len(days)
        ti = filled.clip(min=0).sum("time", skipna=False)
        out.append(ti.where(observed >= min_valid_fraction))
    result = xr.concat(out, dim=pd.Index(years, name="year"))
    return result.rename("thawing_index").assign_attrs(
        units="degC d", long_name="thawing index (degree-days above 0 °C)",
        season=f"{season[0]} to {season[1]} (end excluded)")


def season_mean(da: xr.DataArray, season: tuple[str, str], include_end: bool) -> xr.DataArray:
    """Per year, mean of the valid values of ``da (time, y, x)`` dated within ``season``.

    ``season`` is ``(start, end)`` as MM-DD (:func:`season_mask`). Units are kept; a pixel
    without a valid value in a year's season is NaN for that year.
    """
    keep = season_mask(da["time"].values, season[0], season[1], include_end)
    sel = da.isel(time=np.flatnonzero(keep))
    out = sel.groupby("time.year").mean("time", skipna=True)
    return out.assign_attrs({**da.attrs, "season": f"{season[0]} to {season[1]}"})


def mean_over_years(da: xr.DataArray, years: list[int] | None = None) -> xr.DataArray:
    """Mean of ``da (year, ...)`` over ``years`` (all when None), NaN-skipping; attrs kept."""
    if years is not None:
        da = da.sel(year=[y for y in da["year"].values if int(y) in set(years)])
    out = da.mean("year", skipna=True)
    return out.assign_attrs({**da.attrs, "years": [int(y) for y in da["year"].values]})


# ----------------------------------------------------------------------------- statistics
def _finite_pairs(factor: xr.DataArray | np.ndarray, deformation: xr.DataArray | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(factor, dtype=np.float64).ravel()
    b = np.asarray(deformation, dtype=np.float64).ravel()
    use = np.isfinite(a) & np.isfinite(b)
    return a[use], b[use]


def correlate(factor: xr.DataArray | np.ndarray, deformation: xr.DataArray | np.ndarray
              ) -> dict[str, float]:
    """Pearson ``r`` and two-sided ``p`` of a factor with the deformation.

    Over the cells where both are finite (``n``); NaN r and p with fewer than three cells or
    when either is constant.
    """
    a, b = _finite_pairs(factor, deformation)
    n = int(a.size)
    if n < 3 or a.std() == 0 or b.std() == 0:
        return {"r": float("nan"), "p": float("nan"), "n": n}
    r, p = stats.pearsonr(a, b)
    return {"r": float(r), "p": float(p), "n": n}


def _bin_edges(values: np.ndarray, n_bins: int, method: str) -> np.ndarray:
    if method == "equal_count":
        edges = np.quantile(values, np.linspace(0, 1, n_bins + 1))
        return np.unique(edges)  # tied quantiles (many equal values) merge their bins
    if method == "equal_width":
        return np.linspace(values.min(), values.max(), n_bins + 1)
    raise ValueError(f"binning: expected 'equal_count' or 'equal_width', got {method!r}")


def binned_means(factor: xr.DataArray | np.ndarray, deformation: xr.DataArray | np.ndarray,
                 n_bins: int, method: str = "equal_count") -> pd.DataFrame:
    """Deformation mean ± std (population, mm) in bins of a factor (paper Fig. 12b–f).

    ``method`` ``"equal_count"`` cuts the factor at its quantiles (about the same number of
    cells per bin; tied quantiles merge, so there may be fewer bins), ``"equal_width"`` at equal
    steps between its minimum and maximum (empty bins are dropped). Bins are closed on the
    left, the last also on the right. Columns: ``bin``, ``lower``, ``upper``,
    ``factor_mean``, ``n``, ``deformation_mean``, ``deformation_std``.
    """
    a, b = _finite_pairs(factor, deformation)
    columns = ["bin", "lower", "upper", "factor_mean", "n", "deformation_mean", "deformation_std"]
    if a.size == 0:
        return pd.DataFrame(columns=columns)
    edges = _bin_edges(a, n_bins, method)
    if edges.size < 2:
        edges = np.array([a.min(), a.max()])
    which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, edges.size - 2)
    frame = pd.DataFrame({"bin": which, "f": a, "d": b})
    g = frame.groupby("bin")
    out = pd.DataFrame({
        "lower": edges[:-1][g.size().index], "upper": edges[1:][g.size().index],
        "factor_mean": g["f"].mean().to_numpy(), "n": g.size().to_numpy(),
        "deformation_mean": g["d"].mean().to_numpy(),
        "deformation_std": g["d"].std(ddof=0).to_numpy(),
    }, index=g.size().index).reset_index()
    return out[columns]
