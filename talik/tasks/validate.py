"""Checks a release must pass before it becomes LATEST.

Run on the files as they were copied into the release's staging folder (the bytes that would
be published): every expected product is present and readable; the Sentinel-1 product's time
axis is strictly increasing, its mask keeps pixels, its trusted pixels have plausible, finite
values; and the number of solved pixels has not collapsed since the previous release (a "NaN
explosion"). A failed check raises :class:`ReleaseCheckError` listing every problem; the
publisher then removes the staging folder, so the previous release stays LATEST.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from talik.config import ReleaseChecks

__all__ = ["EXPECTED_PRODUCTS", "NETCDF_LOCK", "ReleaseCheckError", "check_release",
           "expected_products"]

NETCDF_LOCK = threading.RLock()
"""Held while a release's NetCDF files are read: HDF5 is not thread-safe, and publishers
(or Prefect tasks) running in threads of one process crash it when they open files at once."""

EXPECTED_PRODUCTS: dict[str, tuple[str, ...]] = {
    "sentinel1-timeseries": ("products/sentinel1.nc", "products/velocity.tif",
                             "products/velocity_vertical.tif",
                             "products/thaw_season_deformation_mean.tif"),
    "recession": ("products/recession/ks_windows.csv", "products/recession/recession_points.csv"),
    "longterm": ("products/longterm.nc", "products/period_stats.csv"),
    "drivers": ("products/drivers_1km.nc", "products/drivers.csv"),
    "joint-assessment": ("products/joint.json", "products/period_means.csv"),
}
"""Release files each step that ran must have produced."""

_PNG = b"\x89PNG\r\n\x1a\n"


class ReleaseCheckError(RuntimeError):
    """A release refused before it became LATEST; ``problems`` lists why."""

    def __init__(self, release_dir: Path, problems: list[str]) -> None:
        self.release_dir, self.problems = Path(release_dir), list(problems)
        super().__init__(f"release refused in {release_dir} (the previous release stays LATEST): "
                         + "; ".join(problems))

    def __reduce__(self):
        return type(self), (self.release_dir, self.problems)


def expected_products(step_names: Iterable[str]) -> list[str]:
    """The release files the steps that ran must have produced."""
    return sorted({f for s in step_names for f in EXPECTED_PRODUCTS.get(s, ())})


def _readable(name: str, path: Path, skip: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` cannot be read as what its suffix says, or None.

    ``skip``: variables of a NetCDF file not read here (another check reads them whole).
    """
    with NETCDF_LOCK:
        return _unreadable_reason(name, path, skip)


def _unreadable_reason(name: str, path: Path, skip: tuple[str, ...] = ()) -> str | None:
    try:
        if path.stat().st_size == 0:
            return f"{name} is empty"
        if path.suffix == ".nc":
            import xarray as xr

            from talik.tasks.netcdf_chunks import cube_blocks, cubes_read_raw

            with xr.open_dataset(path) as ds:
                raw = cubes_read_raw(ds)  # the cubes: every chunk inflated, on every core
                for variable, var in ds.variables.items():  # the rest decoded, block by block
                    if variable not in raw and variable not in skip:
                        for block in _blocks(var):
                            np.asarray(block.values)
            for variable in (v for v in raw if v not in skip):
                for _ in cube_blocks(path, variable, TIME_BLOCK):
                    pass
        elif path.suffix == ".tif":
            import rasterio

            with rasterio.open(path) as src:
                src.read(1)
        elif path.suffix == ".csv":
            import pandas as pd

            pd.read_csv(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png" and path.read_bytes()[:8] != _PNG:
            return f"{name} is not a PNG image"
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return f"{name} cannot be read ({type(exc).__name__}: {exc})"
    return None


TIME_BLOCK = 16
"""Dates read at once when a (time, y, x) variable is checked: memory does not grow with the
length of the series."""


def _blocks(var):
    """``var`` in slices of :data:`TIME_BLOCK` along its first dimension (whole if ≤ 2-D)."""
    if var.ndim < 3:
        return [var]
    n = var.shape[0]
    return [var[i:i + TIME_BLOCK] for i in range(0, n, TIME_BLOCK)]


def _solved(ds) -> np.ndarray:
    """Pixels the inversion solved (their quality layers are finite, masked or not)."""
    layer = ds["residual_rms"] if "residual_rms" in ds else ds["velocity"]
    return np.isfinite(layer.values)


def _solved_pixels(path: Path) -> int:
    import xarray as xr

    with xr.open_dataset(path) as ds:
        return int(_solved(ds).sum())


def _sentinel1_problems(name: str, path: Path, checks: ReleaseChecks, previous: Path | None
                        ) -> list[str]:
    with NETCDF_LOCK:
        return _s1_problems(name, path, checks, previous)


def _s1_problems(name: str, path: Path, checks: ReleaseChecks, previous: Path | None
                 ) -> list[str]:
    """Problems of the Sentinel-1 product at ``path`` (release file ``name``).

    Its displacement cube is read whole here, a block of dates at a time (the readability
    check leaves it to this one).
    """
    import xarray as xr

    from talik.tasks.netcdf_chunks import cube_blocks, cubes_read_raw

    problems = []
    with xr.open_dataset(path) as ds:
        time = ds["time"].values
        if time.size < 2 or not (np.diff(time.astype("datetime64[ns]").astype(np.int64)) > 0).all():
            problems.append("sentinel1.nc: the time axis is not strictly increasing")
        velocity = ds["velocity"].values
        solved = _solved(ds)
        trusted = np.isfinite(velocity) & solved
        if "mask" in ds:  # 1: trusted (products kept), 0: masked
            trusted &= ds["mask"].values == 1
        n_solved, n_trusted = int(solved.sum()), int(trusted.sum())
        if n_solved == 0:
            problems.append("sentinel1.nc: no pixel was solved")
        elif n_trusted < checks.min_trusted_fraction * n_solved:
            problems.append(f"sentinel1.nc: the mask keeps {n_trusted} of {n_solved} solved "
                            f"pixels (< {checks.min_trusted_fraction:.0%}; "
                            "release_checks.min_trusted_fraction)")
        if n_trusted:
            worst_v = float(np.nanmax(np.abs(velocity[trusted])))
            if not worst_v <= checks.max_abs_velocity_mm_yr:
                problems.append(f"sentinel1.nc: a trusted pixel's |velocity| is {worst_v:.4g} "
                                f"mm/yr (> {checks.max_abs_velocity_mm_yr:g}; "
                                "release_checks.max_abs_velocity_mm_yr)")
        n_bad, worst_d = 0, 0.0
        if "displacement" in cubes_read_raw(ds):  # on every core
            blocks = (values for _, values in cube_blocks(path, "displacement", TIME_BLOCK))
        else:
            blocks = (block.values for block in _blocks(ds["displacement"]))
        try:
            for values in blocks:
                if not n_trusted:
                    continue  # (read all the same: it must be readable)
                series = values[:, trusted]
                finite = np.isfinite(series)
                n_bad += int((~finite).sum())
                if finite.any():
                    worst_d = max(worst_d, float(np.abs(series[finite]).max()))
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            return [f"{name} cannot be read ({type(exc).__name__}: {exc})"]
        if n_bad:
            problems.append(f"sentinel1.nc: {n_bad} NaN or infinite displacement values at "
                            "trusted pixels")
        if worst_d > checks.max_abs_displacement_mm:
            problems.append(f"sentinel1.nc: a trusted pixel's |displacement| reaches "
                            f"{worst_d:.4g} mm (> {checks.max_abs_displacement_mm:g}; "
                            "release_checks.max_abs_displacement_mm)")
    if previous is not None and previous.exists() and n_solved:
        before = _solved_pixels(previous)
        if before and n_solved < (1 - checks.max_solved_drop) * before:
            problems.append(f"sentinel1.nc: {n_solved} solved pixels against {before} in the "
                            f"previous release (a drop of more than "
                            f"{checks.max_solved_drop:.0%}; release_checks.max_solved_drop)")
    return problems


def check_release(folder: Path, files: Iterable[str], expected: Iterable[str],
                  checks: ReleaseChecks, previous_folder: Path | None = None) -> list[str]:
    """Every problem of the release being staged in ``folder`` (empty: it may be published).

    ``files`` are its release-relative file names, ``expected`` those it must hold;
    ``previous_folder`` is the LATEST release, if any, for the comparison of solved pixels.
    Every file is read whole; a cube once (the displacement by the value checks, the others
    by the readability check), while the value checks read the product's small maps again.
    """
    files = set(files)
    problems = [f"{name} is missing" for name in sorted(set(expected) - files)]
    s1 = "products/sentinel1.nc"
    for name in sorted(files):
        reason = _readable(name, folder / name, skip=("displacement",) if name == s1 else ())
        if reason is not None:
            problems.append(reason)
    if s1 in files and not any(p.startswith(s1) for p in problems):
        previous = previous_folder / s1 if previous_folder is not None else None
        problems += _sentinel1_problems(s1, folder / s1, checks, previous)
    return problems
