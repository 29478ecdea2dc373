"""Sentinel-1 interferograms of the demo world, written as HyP3 INSAR_GAMMA products.

Each product folder holds what ASF HyP3 delivers: ``<name>_unw_phase.tif`` (radians, positive
= range increase, i.e. motion away from the satellite; 0 at the product's own reference point
and used as no-data), ``<name>_corr.tif`` (0–1), ``<name>_lv_theta.tif`` and
``<name>_lv_phi.tif`` (look-vector elevation and orientation, radians), ``<name>_dem.tif``
(metres), ``<name>_water_mask.tif`` and the ``<name>.txt`` parameter file. Products of a frame
differ slightly in extent, as real ones do.

The interferometric network is formed between each date and its next neighbours, but wet snow
decorrelates the C-band signal every winter, so no pair bridges a winter: the network falls
apart into one connected piece per thaw season, the difficulty the NSBAS constraint must solve.

Optionally (:class:`S1Difficulties`, the "hard" world) winter dates are acquired and paired like
any other, but a pair is incoherent wherever the ground is snow-covered on one of its dates
(:class:`talik.world.snow.SnowCover`, pixel by pixel), a water body is HyP3 no-data, and each
product carries an unknown constant phase offset on top of its own reference point.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter, uniform_filter

from talik.config import SENTINEL1_WAVELENGTH_M
from talik.world.deformation import DeformationModel
from talik.world.fields import gaussian_field
from talik.world.geotiff import write_geotiff
from talik.world.landscape import UTM_CRS, Landscape
from talik.world.snow import SnowCover
from talik.world.troposphere import Troposphere

__all__ = [
    "S1_WAVELENGTH_M",
    "S1Difficulties",
    "S1Frame",
    "S1Network",
    "build_network",
    "write_s1_products",
]

S1_WAVELENGTH_M = SENTINEL1_WAVELENGTH_M
"""Sentinel-1 C-band wavelength, m (c / 5.405 GHz), as HyP3 documents it."""
S1_HEADING_DEG = 193.29
S1_CENTER_INCIDENCE_DEG = 39.47
INCIDENCE_GRADIENT_DEG_PER_KM = 0.064  # IW swath: about 30–46° over 250 km
EFFECTIVE_LOOKS = 12  # multilook + adaptive filter, for phase noise


@dataclass(frozen=True)
class S1Network:
    """Acquisitions and interferometric pairs of the world's Sentinel-1 stack.

    Attributes
    ----------
    dates
        Acquisition dates kept in the network (winter dates are not processed).
    pairs
        ``(i, j)`` indices into ``dates`` with ``i < j``.
    gaps
        ``(last date before, first date after)`` of every winter break.
    """

    dates: list[dt.date]
    pairs: list[tuple[int, int]]
    gaps: list[tuple[dt.date, dt.date]] = field(default_factory=list)


def build_network(
    rng: np.random.Generator,
    start: dt.date,
    end: dt.date,
    repeat_days: int,
    neighbours: int,
    winter_acquisitions: bool = False,
) -> S1Network:
    """Dates every ``repeat_days`` minus each winter's snow window, and pairs to the next N dates.

    The snow window runs from mid-November (± 10 days) to late March (± 10 days). With
    ``winter_acquisitions`` every date is kept and paired to its next N neighbours through the
    winter too (no gaps; snow then acts on coherence, pixel by pixel), and ``rng`` is not used.
    """
    all_dates = pd.date_range(start, end, freq=f"{repeat_days}D")
    if winter_acquisitions:
        n = len(all_dates)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, min(i + 1 + neighbours, n))]
        return S1Network([d.date() for d in all_dates], pairs, [])
    windows = []
    for year in range(start.year - 1, end.year + 1):
        gap_start = pd.Timestamp(f"{year}-11-15") + pd.Timedelta(days=int(rng.integers(-10, 11)))
        gap_end = pd.Timestamp(f"{year + 1}-03-25") + pd.Timedelta(days=int(rng.integers(-10, 11)))
        windows.append((gap_start, gap_end))
    season_of = []
    kept = []
    for d in all_dates:
        in_gap = any(a <= d <= b for a, b in windows)
        if in_gap:
            continue
        kept.append(d)
        season_of.append(sum(d > b for _, b in windows))
    pairs = []
    for i in range(len(kept)):
        for j in range(i + 1, min(i + 1 + neighbours, len(kept))):
            if season_of[i] == season_of[j]:
                pairs.append((i, j))
    used = sorted({i for pair in pairs for i in pair})
    new_index = {old: new for new, old in enumerate(used)}
    kept = [kept[i] for i in used]
    season_of = [season_of[i] for i in used]
    pairs = [(new_index[i], new_index[j]) for i, j in pairs]
    gaps = [
        (kept[i].date(), kept[i + 1].date())
        for i in range(len(kept) - 1)
        if season_of[i] != season_of[i + 1]
    ]
    return S1Network([d.date() for d in kept], pairs, gaps)


@dataclass(frozen=True)
class S1Frame:
    """The Sentinel-1 analysis grid of the world and the padded frame products are cut from."""

    x0: float  # west edge, m
    y0: float  # north edge, m
    ny: int
    nx: int
    pixel_m: float
    pad: int = 4

    @property
    def transform(self) -> Affine:
        """Affine transform of the analysis grid."""
        return Affine(self.pixel_m, 0, self.x0, 0, -self.pixel_m, self.y0)

    def coords(self, padded: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre x (east) and y (north) coordinates, metres."""
        p = self.pad if padded else 0
        xs = self.x0 + self.pixel_m * (np.arange(-p, self.nx + p) + 0.5)
        ys = self.y0 - self.pixel_m * (np.arange(-p, self.ny + p) + 0.5)
        return xs, ys

    def incidence_deg(self, padded: bool = False) -> np.ndarray:
        """Ellipsoid incidence angle, degrees: grows westward (descending, right-looking)."""
        xs, ys = self.coords(padded)
        xc = self.x0 + self.pixel_m * self.nx / 2
        inc = S1_CENTER_INCIDENCE_DEG + INCIDENCE_GRADIENT_DEG_PER_KM * (xc - xs) / 1000.0
        return np.broadcast_to(inc[None, :], (len(ys), len(xs))).copy()


def _granule(date: dt.date, orbit: int) -> str:
    stamp = f"{date:%Y%m%d}T232410"
    stop = f"{date:%Y%m%d}T232437"
    mission_id = f"{(orbit * 37) % 0xFFFFFF:06X}"
    checksum = f"{(orbit * 7919) % 0xFFFF:04X}"
    return f"S1A_IW_SLC__1SDV_{stamp}_{stop}_{orbit:06d}_{mission_id}_{checksum}"


def _orbit(date: dt.date) -> int:
    return 9_350 + int(round((date - dt.date(2016, 1, 4)).days / 12 * 175))


def _reference_pixel(corr: np.ndarray, valid: np.ndarray) -> tuple[int, int]:
    """Highest neighbourhood coherence, ignoring pixels near the edge (HyP3's rule, simplified)."""
    c = np.where(valid & (corr >= 0.3) & (corr < 1.0), corr, 0.0)
    score = uniform_filter(c, size=9, mode="constant")
    edge = 10
    score[:edge] = score[-edge:] = 0
    score[:, :edge] = score[:, -edge:] = 0
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(iy), int(ix)


def _parameter_file(
    ref: dt.date,
    sec: dt.date,
    baseline: float,
    ref_phase: float,
    ref_row: int,
    ref_col: int,
    ref_x: float,
    ref_y: float,
) -> str:
    to_ll = Transformer.from_crs(UTM_CRS, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(ref_x, ref_y)
    orbit_ref, orbit_sec = _orbit(ref), _orbit(sec)
    lines = [
        ("Reference Granule", _granule(ref, orbit_ref)),
        ("Secondary Granule", _granule(sec, orbit_sec)),
        ("Reference Pass Direction", "DESCENDING"),
        ("Reference Orbit Number", orbit_ref),
        ("Secondary Pass Direction", "DESCENDING"),
        ("Secondary Orbit Number", orbit_sec),
        ("Baseline", f"{baseline:.4f}"),
        ("UTC time", "84250.691361"),
        ("Heading", f"{S1_HEADING_DEG:.7f}"),
        ("Spacecraft height", "693042.3147"),
        ("Earth radius at nadir", "6370250.0667"),
        ("Slant range near", "799517.4338"),
        ("Slant range center", "879794.1404"),
        ("Slant range far", "960070.8469"),
        ("Range looks", 20),
        ("Azimuth looks", 4),
        ("INSAR phase filter", "adf"),
        ("Phase filter parameter", 0.6),
        ("Resolution of output (m)", 80),
        ("Range bandpass filter", "no"),
        ("Azimuth bandpass filter", "no"),
        ("DEM source", "GLO-30"),
        ("DEM resolution (m)", 160),
        ("Unwrapping type", "mcf"),
        ("Phase at reference point", f"{ref_phase:.5f}"),
        ("Azimuth line of the reference point in SAR space", 400 + ref_row),
        ("Range pixel of the reference point in SAR space", 900 - ref_col),
        ("Y coordinate of the reference point in the map projection", f"{ref_y:.4f}"),
        ("X coordinate of the reference point in the map projection", f"{ref_x:.4f}"),
        ("Latitude of the reference point (WGS84)", f"{lat:.7f}"),
        ("Longitude of the reference point (WGS84)", f"{lon:.8f}"),
        ("Unwrapping threshold", "none"),
        ("Speckle filter", "no"),
    ]
    return "\n".join(f"{k}: {v}" for k, v in lines) + "\n"


def product_name(rng: np.random.Generator, ref: dt.date, sec: dt.date,
                 water_masked: bool = False) -> str:
    """HyP3 INSAR_GAMMA product name for a Sentinel-1A pair (random 4-hex product id).

    ``water_masked`` sets the name's mask letter to ``w`` (HyP3's ``apply_water_mask``).
    """
    days = (sec - ref).days
    mask = "w" if water_masked else "u"
    return (
        f"S1AA_{ref:%Y%m%d}T232410_{sec:%Y%m%d}T232410_VVP{days:03d}_INT80_G_{mask}eF_"
        f"{int(rng.integers(0, 0x10000)):04X}"
    )


@dataclass
class S1Truth:
    """What the writer knows about each pair (for truth files)."""

    rows: list[dict] = field(default_factory=list)


SNOW_CORR_RANGE = (0.03, 0.25)
"""Coherence (uniform range) of a pair at a pixel snow-covered on one of its dates."""


@dataclass(frozen=True)
class S1Difficulties:
    """Optional hardships of the Sentinel-1 products; the defaults change nothing.

    Attributes
    ----------
    rng
        Random stream for the draws these need (kept apart from the products' own stream).
    snow
        Per-pixel snow seasons on the padded frame grid: a pair is incoherent (coherence in
        :data:`SNOW_CORR_RANGE`) wherever one of its dates is snow-covered, and coherence is
        reduced near a pixel's snow onset or melt. Unwrapping errors then go to pairs that are
        snow-free over at least half of the scene.
    lake
        Boolean mask on the padded frame grid of a water body written as HyP3 no-data
        (``unw_phase`` = 0 and ``corr`` = 0, ``water_mask`` = 0) in every product.
    reference_offset_std_rad
        Standard deviation of a constant phase offset added to each product after its
        referencing (an unknown reference-point error), radians.
    """

    rng: np.random.Generator | None = None
    snow: SnowCover | None = None
    lake: np.ndarray | None = None
    reference_offset_std_rad: float = 0.0


def write_s1_products(
    out_dir: Path,
    rng: np.random.Generator,
    frame: S1Frame,
    network: S1Network,
    land: Landscape,
    model: DeformationModel,
    tropo: Troposphere,
    unwrapping_error_fraction: float,
    geometry_in_every_product: bool = True,
    los_truth_callback=None,
    difficulties: S1Difficulties | None = None,
) -> pd.DataFrame:
    """Write one HyP3 product folder per pair; return a table of the pairs with their truth.

    ``los_truth_callback(index, date, los_mm)`` is called once per date with the true LOS
    displacement on the analysis grid (mm, positive toward the satellite, relative to the
    model start), so that the caller can accumulate truth without holding the whole stack.
    ``difficulties`` (:class:`S1Difficulties`) adds per-pixel snow decorrelation, a no-data
    lake and per-product phase offsets; the table then gains the columns
    ``snow_area_fraction`` (share of the analysis grid snow-covered on either date) and
    ``reference_offset_rad`` (the offset added, radians) as they apply.
    """
    hard = difficulties or S1Difficulties()
    if (hard.snow is not None or hard.lake is not None or hard.reference_offset_std_rad > 0) \
            and hard.rng is None:
        raise ValueError("S1Difficulties needs an rng for its draws")
    # Never drawn from when hard.rng is None (no difficulty is then active).
    hard_rng = hard.rng if hard.rng is not None else np.random.default_rng(0)
    xs, ys = frame.coords(padded=True)
    ny, nx = len(ys), len(xs)
    p = frame.pad
    elevation = land.sample_grid("elevation", xs, ys)
    rate_w = land.sample_grid("rate_weight", xs, ys)
    season_w = land.sample_grid("seasonal_weight", xs, ys)
    delay = land.sample_grid("thaw_delay_days", xs, ys)
    water = land.sample_grid("water", xs, ys) > 0.5
    slope = land.sample_grid("slope_deg", xs, ys)
    inc = np.radians(frame.incidence_deg(padded=True))
    cos_inc = np.cos(inc)
    lv_theta = (np.pi / 2 - inc).astype(np.float32)
    heading = np.radians(S1_HEADING_DEG)
    look_az = heading + np.pi / 2  # sensor→ground azimuth, clockwise from north
    lv_phi_value = np.pi / 2 - (look_az + np.pi)  # ground→sensor, CCW from east
    lv_phi_value = (lv_phi_value + np.pi) % (2 * np.pi) - np.pi
    lv_phi = np.full((ny, nx), lv_phi_value, dtype=np.float32)

    # Coherence ingredients.
    gamma0 = np.where(slope > 8, 0.78, 0.93)
    gamma_floor = np.where(slope > 8, 0.22, 0.12)
    tau_days = np.where(slope > 8, 55.0, 70.0)
    n_base = 24
    base_fields = gaussian_field(rng, (n_base, ny, nx), frame.pixel_m, 6 * frame.pixel_m)
    error_fields = gaussian_field(rng, (8, ny, nx), frame.pixel_m, max(ny, nx) * frame.pixel_m / 5)
    gap_edges = [d for gap in network.gaps for d in gap]

    def edge_factor(d: dt.date) -> float | np.ndarray:
        if hard.snow is not None:
            return np.where(hard.snow.days_to_edge(d) < 25, 0.8, 1.0)
        if not gap_edges:
            return 1.0
        nearest = min(abs((d - e).days) for e in gap_edges)
        return 0.8 if nearest < 25 else 1.0

    snow_cache: dict[dt.date, np.ndarray] = {}

    def snowy(d: dt.date) -> np.ndarray:
        """Snow cover of the padded grid on ``d`` (all False without snow)."""
        if d not in snow_cache:
            snow_cache[d] = (hard.snow.covered(d) if hard.snow is not None
                             else np.zeros((ny, nx), dtype=bool))
        return snow_cache[d]

    # Per-date "apparent LOS position" (mm): displacement toward the satellite minus slant delay
    # plus an orbital ramp. Only a sliding window of dates is kept in memory.
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx), indexing="ij")
    cache: dict[int, np.ndarray] = {}

    def apparent(i: int) -> np.ndarray:
        if i in cache:
            return cache[i]
        d = network.dates[i]
        vertical = model.vertical(d, rate_w, season_w, delay)
        los = vertical * cos_inc
        if los_truth_callback is not None:
            los_truth_callback(i, d, los[p : ny - p, p : nx - p])
        slant_mm = tropo.zenith_delay(d, elevation, frame.pixel_m) / cos_inc * 1000.0
        a, b = rng.normal(0.0, 5.0, 2)
        ramp = a * xx + b * yy
        cache[i] = los - slant_mm + ramp
        for k in [k for k in cache if k < i - 12]:
            del cache[k]
        return cache[i]

    table = []
    n_pairs = len(network.pairs)
    n_errors = int(round(unwrapping_error_fraction * n_pairs))
    if hard.snow is None:
        candidates: int | np.ndarray = n_pairs
    else:
        # An unwrapping error needs something to unwrap: pick pairs snow-free over most pixels.
        inner = (slice(p, ny - p), slice(p, nx - p))
        candidates = np.array([k for k, (i, j) in enumerate(network.pairs)
                               if (snowy(network.dates[i]) | snowy(network.dates[j]))[inner].mean()
                               < 0.5], dtype=np.int64)
        n_errors = min(n_errors, len(candidates))
    error_pairs = (set(rng.choice(candidates, size=n_errors, replace=False).tolist())
                   if n_errors else set())
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, (i, j) in enumerate(network.pairs):
        d1, d2 = network.dates[i], network.dates[j]
        los_mm = apparent(j) - apparent(i)
        dt_days = (d2 - d1).days
        a_idx, b_idx = rng.choice(n_base, size=2, replace=False)
        modulation = (base_fields[a_idx] + base_fields[b_idx]) / np.sqrt(2)
        corr = gamma_floor + (gamma0 - gamma_floor) * np.exp(-dt_days / tau_days) * edge_factor(
            d1
        ) * edge_factor(d2) * (1 + 0.12 * modulation)
        corr = np.where(water, rng.uniform(0.03, 0.15, size=corr.shape), corr)
        snow_mask = None
        if hard.snow is not None:
            snow_mask = snowy(d1) | snowy(d2)
            corr = np.where(snow_mask, hard_rng.uniform(*SNOW_CORR_RANGE, size=corr.shape), corr)
        corr = np.clip(corr, 0.02, 0.98).astype(np.float32)
        sigma = np.sqrt((1 - corr.astype(np.float64) ** 2) / (2 * EFFECTIVE_LOOKS * corr**2))
        white = gaussian_filter(rng.standard_normal((ny, nx)), 0.7)
        white /= white.std()
        phase = -4 * np.pi / S1_WAVELENGTH_M * (los_mm / 1000.0) + sigma * white
        cycles = 0
        error_fraction = 0.0
        if k in error_pairs:
            f = error_fields[int(rng.integers(8))] * rng.choice([-1, 1])
            region = f > np.quantile(f, rng.uniform(0.55, 0.8))
            cycles = int(rng.choice([-2, -1, 1, 2], p=[0.15, 0.35, 0.35, 0.15]))
            phase = phase + 2 * np.pi * cycles * region
            error_fraction = float(region[p : ny - p, p : nx - p].mean())
        # Each product covers the frame minus a random margin on each side.
        top, bottom, left, right = rng.integers(0, p + 1, size=4)
        valid = np.zeros((ny, nx), dtype=bool)
        valid[top : ny - bottom, left : nx - right] = True
        if hard.lake is not None:
            valid &= ~hard.lake
        ref_row, ref_col = _reference_pixel(corr, valid)
        ref_phase = float(phase[ref_row, ref_col])
        phase = phase - ref_phase
        offset = None
        if hard.reference_offset_std_rad > 0:
            offset = float(hard_rng.normal(0.0, hard.reference_offset_std_rad))
            phase = phase + offset
        phase[~valid] = 0.0
        corr_out = np.where(valid, corr, 0.0).astype(np.float32)

        sub = (slice(top, ny - bottom), slice(left, nx - right))
        transform = Affine(
            frame.pixel_m, 0, frame.x0 + (left - p) * frame.pixel_m,
            0, -frame.pixel_m, frame.y0 - (top - p) * frame.pixel_m,
        )
        name = product_name(rng, d1, d2, water_masked=hard.lake is not None)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        write_geotiff(folder / f"{name}_unw_phase.tif", phase[sub].astype(np.float32), transform,
                      UTM_CRS, nodata=0.0)
        write_geotiff(folder / f"{name}_corr.tif", corr_out[sub], transform, UTM_CRS, nodata=0.0)
        land_mask = (np.ones((ny, nx), np.uint8) if hard.lake is None
                     else (~hard.lake).astype(np.uint8))
        write_geotiff(folder / f"{name}_water_mask.tif", land_mask[sub], transform, UTM_CRS)
        if geometry_in_every_product or k == 0:
            write_geotiff(folder / f"{name}_lv_theta.tif", lv_theta[sub], transform, UTM_CRS,
                          nodata=0.0)
            write_geotiff(folder / f"{name}_lv_phi.tif", lv_phi[sub], transform, UTM_CRS,
                          nodata=0.0)
            write_geotiff(folder / f"{name}_dem.tif", elevation[sub].astype(np.float32),
                          transform, UTM_CRS, nodata=0.0)
        ref_x = frame.x0 + (ref_col - p + 0.5) * frame.pixel_m
        ref_y = frame.y0 - (ref_row - p + 0.5) * frame.pixel_m
        (folder / f"{name}.txt").write_text(
            _parameter_file(d1, d2, float(rng.normal(0, 60)), ref_phase, ref_row, ref_col,
                            ref_x, ref_y)
        )
        row = {
            "product": name,
            "reference_date": d1,
            "secondary_date": d2,
            "unwrapping_error_cycles": cycles,
            "unwrapping_error_area_fraction": error_fraction,
            "reference_x": ref_x,
            "reference_y": ref_y,
        }
        if snow_mask is not None:
            row["snow_area_fraction"] = float(snow_mask[p : ny - p, p : nx - p].mean())
        if offset is not None:
            row["reference_offset_rad"] = offset
        table.append(row)
    return pd.DataFrame(table)
