"""Scores of a Sentinel-1 product against a world's truth: the mean error and the worst pixel."""

from __future__ import annotations

import numpy as np
import xarray as xr

from talik.science.compare import agreement
from talik.tasks.report import referenced_truth
from talik.tasks.sentinel1 import ChainInputs, open_chain_inputs


def load_truth(staged: dict) -> xr.Dataset:
    """The world's Sentinel-1 truth (``truth/sentinel1_truth.nc``), in memory."""
    with xr.open_dataset(staged["raw"] / "truth" / "sentinel1_truth.nc") as t:
        return t.load()


def chain_inputs(staged: dict, options, sentinel1=None) -> ChainInputs:
    """The chain's inputs from a staged world (optionally another Sentinel-1 store)."""
    return open_chain_inputs(sentinel1 or staged["sentinel1"], options, staged["rasters"],
                             staged["gacos"], staged["pairs"])


def winter_epochs(times: np.ndarray) -> np.ndarray:
    """Dates from 15 November to 31 March (snow season at the Datong site)."""
    t = np.asarray(times).astype("datetime64[D]")
    doy = (t - t.astype("datetime64[Y]")).astype(int) + 1
    return (doy >= 319) | (doy <= 90)


def score(products: xr.Dataset, truth: xr.Dataset) -> dict[str, float]:
    """RMSE of series (all and winter epochs), velocity and thaw season over unmasked pixels;
    the worst pixel's largest absolute cumulative error; the masked share of solved land."""
    ref = referenced_truth(truth, products)
    disp = products["displacement"]
    true = ref["displacement"].sel(time=disp["time"])
    trusted = products["mask"].values.astype(bool)
    land = truth["water"].values < 0.5 if "water" in truth else np.ones_like(trusted)
    if "lake" in truth:
        land &= truth["lake"].values < 0.5
    solved = (products["quality_flags"].values & 1) == 0
    err = np.abs(disp.values - true.values)
    err = np.where(trusted, np.nan_to_num(err, nan=np.inf), 0.0)  # a NaN in a trusted series counts
    worst_per_pixel = np.where(trusted, err.max(axis=0), np.nan)
    winter = winter_epochs(disp["time"].values)
    iy, ix = np.unravel_index(int(np.nanargmax(worst_per_pixel)), worst_per_pixel.shape)
    return {
        "displacement_rmse": agreement(disp, true, np.broadcast_to(trusted, disp.shape))["rmse"],
        "winter_rmse": agreement(disp.values[winter], true.values[winter],
                                 np.broadcast_to(trusted, (int(winter.sum()), *trusted.shape))
                                 )["rmse"] if winter.any() else np.nan,
        "velocity_rmse": agreement(products["velocity"], truth["velocity"], trusted)["rmse"],
        "thaw_rmse": agreement(products["thaw_season_deformation_mean"],
                               ref["thaw_season_deformation_mean"], trusted)["rmse"],
        "worst_pixel_mm": float(np.nanmax(worst_per_pixel)),
        "worst_pixel_at": (int(iy), int(ix)),
        "p99_pixel_mm": float(np.nanpercentile(worst_per_pixel, 99)),
        "masked_share": float(1 - (trusted & land & solved).sum() / max((land & solved).sum(), 1)),
        "n_trusted": int(trusted.sum()),
    }


def table_lines(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    """Lines of the printed science table for one world."""
    out = [title, f"  {'constraint':<26}{'series RMSE':>12}{'winter':>9}{'velocity':>12}"
                  f"{'thaw':>8}{'worst px':>10}{'p99 px':>9}{'masked':>8}"]
    for name, s in rows.items():
        out.append(f"  {name:<26}{s['displacement_rmse']:9.1f} mm{s['winter_rmse']:6.1f} mm"
                   f"{s['velocity_rmse']:7.2f} mm/yr{s['thaw_rmse']:5.1f} mm"
                   f"{s['worst_pixel_mm']:7.1f} mm{s['p99_pixel_mm']:6.1f} mm"
                   f"{100 * s['masked_share']:6.1f} %")
    return out
