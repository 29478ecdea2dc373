"""What goes into a release besides the products: GeoTIFFs, figures, report, truth comparison.

The truth comparison is made only for the demo world, whose truth is written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from prefect import task  # noqa: E402

from talik.config import StudyConfig  # noqa: E402
from talik.science.compare import agreement  # noqa: E402
from talik.tasks.log import step_logger  # noqa: E402
from talik.tasks.provenance import code_digest, digest_of  # noqa: E402
from talik.tasks.records import InputSet, StepOutput  # noqa: E402
from talik.tasks.steps import STEP_CACHE, step_folder  # noqa: E402

__all__ = ["compare_with_truth", "release_contents", "truth_table_markdown"]

TRUTH_QUANTITIES = (
    ("velocity", "velocity", "mm/yr", "LOS velocity"),
    ("thaw_season_deformation_mean", "thaw_season_deformation_mean", "mm",
     "mean thaw-season deformation (LOS)"),
    ("displacement", "displacement", "mm", "cumulative LOS displacement"),
)


def compare_with_truth(product: xr.Dataset, truth: xr.Dataset) -> list[dict]:
    """Agreement of the Sentinel-1 products with the demo world's truth, over coherent pixels."""
    rows = []
    coherent = np.isfinite(product["velocity"].values)
    lowland = truth["lowland"].values > 0.5 if "lowland" in truth else np.ones_like(coherent)
    for est_name, true_name, units, label in TRUTH_QUANTITIES:
        if est_name not in product or true_name not in truth:
            continue
        est = product[est_name]
        ref = truth[true_name]
        if "time" in est.dims:
            ref = ref.sel(time=est["time"])
            mask = np.broadcast_to(coherent, est.shape)
        else:
            mask = coherent
        stats = agreement(est.values, ref.values, mask)
        low = agreement(est.values, ref.values, mask & np.broadcast_to(lowland, est.shape))
        rows.append({"quantity": label, "units": units,
                     "estimate_mean_lowland": float(np.nanmean(np.where(
                         np.broadcast_to(lowland, est.shape) & mask, est.values, np.nan))),
                     "truth_mean_lowland": float(np.nanmean(np.where(
                         np.broadcast_to(lowland, ref.shape), ref.values, np.nan))),
                     "rmse": stats["rmse"], "bias": stats["bias"], "r": stats["r"],
                     "rmse_lowland": low["rmse"], "n_pixels": int(coherent.sum())})
    return rows


def truth_table_markdown(rows: list[dict]) -> str:
    """Markdown table of :func:`compare_with_truth` rows."""
    lines = ["| quantity | units | found (lowland mean) | truth (lowland mean) | RMSE | bias | r |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quantity']} | {r['units']} | {r['estimate_mean_lowland']:.1f} | "
                     f"{r['truth_mean_lowland']:.1f} | {r['rmse']:.2f} | {r['bias']:+.2f} | "
                     f"{r['r']:.2f} |")
    return "\n".join(lines) + "\n"


def _geotiff(da: xr.DataArray, crs: str, path: Path) -> None:
    out = da.astype("float32").rio.write_crs(crs).rio.write_nodata(np.nan)
    out.rio.to_raster(path, driver="COG", compress="DEFLATE")


def _figures(product: xr.Dataset, folder: Path) -> list[Path]:
    out = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    product["velocity"].plot(ax=axes[0], cmap="RdBu", center=0,
                             cbar_kwargs={"label": "LOS velocity (mm/yr, + toward)"})
    axes[0].set_title("Sentinel-1 LOS velocity")
    product["thaw_season_deformation_mean"].plot(ax=axes[1], cmap="RdBu", center=0,
                                                 cbar_kwargs={"label": "mm"})
    axes[1].set_title("Mean thaw-season deformation (1 May → 1 Oct)")
    for ax in axes:
        ax.set_aspect("equal")
    path = folder / "sentinel1_maps.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)

    vel = product["velocity"].values
    if np.isfinite(vel).any():
        fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
        iy, ix = np.unravel_index(np.nanargmin(vel), vel.shape)
        jy, jx = np.unravel_index(np.nanargmin(np.abs(vel)), vel.shape)
        for (a, b), label in (((iy, ix), "fastest subsidence"), ((jy, jx), "stable ground")):
            series = product["displacement"].isel(y=a, x=b)
            ax.plot(series["time"], series, ".-", ms=3, label=f"{label} (row {a}, col {b})")
        ax.set_ylabel("cumulative LOS displacement (mm)")
        ax.legend()
        ax.grid(alpha=0.3)
        path = folder / "sentinel1_timeseries.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def _report(cfg: StudyConfig, manifest: InputSet, product: xr.Dataset, qc: dict,
            truth_rows: list[dict] | None) -> str:
    vel = product["velocity"].values
    tsd = product["thaw_season_deformation_mean"].values
    lines = [
        f"# {cfg.title}",
        "",
        f"Study `{cfg.name}` · inputs: {manifest.n_files} files ({manifest.source_kind}) · "
        f"digest `{manifest.digest[:12]}`",
        "",
        "## Sentinel-1 time series",
        "",
        f"- {qc['n_dates']} dates, {qc['n_pairs_used']} interferograms used, "
        f"{len(qc['rejected_pairs'])} rejected by loop closure "
        f"({qc['n_bad_loops']} of {qc['n_loops']} loops above "
        f"{cfg.sentinel1.loop_closure_rms_rad} rad)",
        f"- network in {len(qc['components'])} connected parts (winter gaps bridged by the "
        f"`{qc['constraint']['model']}` constraint, γ = {qc['constraint']['gamma']:g})",
        f"- LOS velocity: median {np.nanmedian(vel):.1f} mm/yr, 5th percentile "
        f"{np.nanpercentile(vel, 5):.1f} mm/yr (positive toward the satellite)",
        f"- mean thaw-season deformation: median {np.nanmedian(tsd):.1f} mm, 5th percentile "
        f"{np.nanpercentile(tsd, 5):.1f} mm",
        "",
    ]
    if qc["rejected_pairs"]:
        lines += ["Rejected interferograms:", ""]
        lines += [f"- `{r['pair']}`: {r['reason']}" for r in qc["rejected_pairs"]]
        lines.append("")
    if truth_rows:
        lines += ["## Comparison with the demo world's truth", "", truth_table_markdown(truth_rows)]
    return "\n".join(lines) + "\n"


@task(name="release-contents", cache_policy=STEP_CACHE, persist_result=True)
def release_contents(cfg: StudyConfig, manifest: InputSet, s1: StepOutput,
                     work_dir: str) -> dict:
    """GeoTIFF exports, figures, report (and truth comparison for the demo world)."""
    digest = digest_of("release-contents", cfg, manifest.digest, s1.digest, code_digest())
    with step_folder(work_dir, "release-contents", digest) as sd:
        if not sd.done:
            product = xr.open_dataset(Path(s1.path) / "sentinel1.nc").load()
            qc = json.loads((Path(s1.path) / "qc.json").read_text())
            crs = product["spatial_ref"].attrs.get("crs_wkt")
            for name in ("velocity", "thaw_season_deformation_mean", "velocity_vertical"):
                _geotiff(product[name], crs, sd.work / f"{name}.tif")
            _figures(product, sd.work)
            truth_rows = None
            if manifest.source_kind == "world":
                truth_nc = Path(manifest.root) / "truth" / "sentinel1_truth.nc"
                if truth_nc.exists():
                    with xr.open_dataset(truth_nc) as truth:
                        truth_rows = compare_with_truth(product, truth.load())
                    pd.DataFrame(truth_rows).to_csv(sd.work / "truth_comparison.csv", index=False)
            (sd.work / "report.md").write_text(_report(cfg, manifest, product, qc, truth_rows))
            step_logger().info("release contents prepared in %s", sd.final)
    files = {p.name if p.suffix != ".png" else f"figures/{p.name}": str(sd.final / p.name)
             for p in sorted(sd.final.iterdir())
             if p.suffix in (".tif", ".png", ".csv")}
    files["products/sentinel1.nc"] = str(Path(s1.path) / "sentinel1.nc")
    files = {(k if "/" in k else f"products/{k}"): v for k, v in files.items()}
    return {"files": files, "report": (sd.final / "report.md").read_text(),
            "digest": digest}
