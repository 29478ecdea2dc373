"""What goes into a release besides the products: GeoTIFFs, figures, report, truth comparison.

The truth comparison is made only for the demo world, whose truth is written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from talik.config import StudyConfig
from talik.science.compare import agreement
from talik.tasks.figure_process import published_at_points
from talik.tasks.figures import sentinel1_figures
from talik.tasks.log import step_logger
from talik.tasks.netcdf_chunks import load_netcdf
from talik.tasks.records import InputSet, StepOutput
from talik.tasks.steps import step, this_step

__all__ = ["compare_with_truth", "release_contents", "truth_table_markdown"]

TRUTH_QUANTITIES = (
    ("velocity", "velocity", "mm/yr", "LOS velocity"),
    ("thaw_season_deformation_mean", "thaw_season_deformation_mean", "mm",
     "mean thaw-season deformation (LOS)"),
    ("displacement", "displacement", "mm", "cumulative LOS displacement"),
)


def referenced_truth(truth: xr.Dataset, product: xr.Dataset) -> xr.Dataset:
    """The truth seen as InSAR sees it: relative to the product's reference window and date.

    InSAR measures motion relative to its reference area, and the world's "stable" ground still
    has a small seasonal cycle, so series and thaw-season changes are compared after removing
    the truth's own motion over the same window.
    """
    if "reference_window" not in product.attrs or "displacement" not in truth:
        return truth
    w = json.loads(product.attrs["reference_window"])
    window = {"y": slice(*w["rows"]), "x": slice(*w["cols"])}
    out = truth.copy()
    out["displacement"] = truth["displacement"] - truth["displacement"].isel(**window).mean(("y", "x"))
    ref_date = product.attrs.get("reference_date") or product.get(
        "displacement", xr.DataArray()).attrs.get("reference_date")
    if ref_date:  # the product's zero epoch is the truth's zero too
        out["displacement"] = out["displacement"] - out["displacement"].sel(
            time=np.datetime64(ref_date, "ns"), method="nearest")
    if "thaw_season_deformation" in truth:
        ref = truth["thaw_season_deformation"].isel(**window).mean(("y", "x"))
        out["thaw_season_deformation"] = truth["thaw_season_deformation"] - ref
        out["thaw_season_deformation_mean"] = out["thaw_season_deformation"].mean("year")
    return out


def compare_with_truth(product: xr.Dataset, truth: xr.Dataset) -> list[dict]:
    """Agreement of the Sentinel-1 products with the demo world's truth, over coherent pixels.

    The truth is first referenced to the product's reference window and date
    (:func:`referenced_truth`).
    """
    truth = referenced_truth(truth, product)
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


def _figures(product: xr.Dataset, qc: dict, step: Path, folder: Path,
             truth: xr.Dataset | None) -> list[Path]:
    points = published = true_series = None
    if (step / "points.nc").exists():
        with xr.open_dataset(step / "points.nc") as opened:
            points = opened.load()
        published = published_at_points(product, points)
        if truth is not None and "displacement" in truth:
            true_series = truth["displacement"].sel(time=points["time"])
    layers = product[["velocity", "thaw_season_deformation_mean"]]
    return sentinel1_figures(folder, layers, qc, points, published, true_series,
                             prefix="sentinel1_")


def _quality_lines(qc: dict) -> list[str]:
    """Reference date and product mask, as report bullet points."""
    lines = []
    r = qc.get("reference_date") or {}
    if r:
        lines.append(f"- series relative to {r['date']} ({r['how']}; the range's first date "
                     f"{r['first_date']} is touched by a valid pair at "
                     f"{100 * r['first_date_coverage']:.0f} % of pixels)")
    m = qc.get("mask") or {}
    if m:
        failed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m["masked_by"].items() if v)
        lines.append(f"- product mask: {m['n_trusted']} of {m['n_solved']} solved pixels "
                     f"trusted ({100 * m['n_trusted'] / max(m['n_solved'], 1):.1f} %); "
                     f"{m['n_pixels'] - m['n_solved']} pixels without a solution"
                     + (f"; solved pixels failing a test: {failed}" if failed else ""))
    return lines


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
        f"`{qc['constraint']['model']}` constraint, γ = {qc['constraint']['gamma']:g}, "
        f"velocity reference: {qc['constraint']['velocity_reference']})",
        f"- GACOS correction: {'applied' if qc['gacos_applied'] else 'not applied'}"
        + (f" ({len(qc['no_gacos_pairs'])} pairs without delays left out)"
           if qc.get("no_gacos_pairs") else ""),
        *_quality_lines(qc),
        f"- LOS velocity: median {np.nanmedian(vel):.1f} mm/yr, 5th percentile "
        f"{np.nanpercentile(vel, 5):.1f} mm/yr (positive toward the satellite)",
        f"- mean thaw-season deformation: median {np.nanmedian(tsd):.1f} mm, 5th percentile "
        f"{np.nanpercentile(tsd, 5):.1f} mm",
        "",
    ]
    vr = qc.get("velocity_reference") or {}
    if vr:
        scores = ", ".join(f"{k} {v:+.2f}" for k, v in vr["initial_rank_agreement"].items())
        lines += [f"- v_ref: rates of an initial `{vr['initial_constraint']}` inversion "
                  f"CDF-matched to the L-band annual rates on {vr['n_overlap']} pixels (rank "
                  f"agreement with the L-band map: {scores})", ""]
    if qc["rejected_pairs"]:
        lines += ["Rejected interferograms:", ""]
        lines += [f"- `{r['pair']}`: {r['reason']}" for r in qc["rejected_pairs"]]
        lines.append("")
    if truth_rows:
        lines += ["## Comparison with the demo world's truth", "", truth_table_markdown(truth_rows)]
    return "\n".join(lines) + "\n"


def ks_truth_comparison(windows: pd.DataFrame, truth: pd.DataFrame, disturbance: dict,
                        window_years: int) -> dict:
    """Ratio of mean Ks during vs before the disturbance: estimated (windows) and true.

    "Before" windows end before the disturbance starts; "during" windows lie within
    [start, peak]; the truth averages its yearly Ks over the same years.
    """
    w = windows[(windows["window_years"] == window_years) & (windows["status"] == "ok")]
    start, peak = int(disturbance["start"]), int(disturbance["peak"])
    before = w[w["window_end"] < start]
    during = w[(w["window_start"] >= start) & (w["window_end"] <= peak)]
    est = during["ks_days"].mean() / before["ks_days"].mean()
    t = truth["ks_days"]
    true = t.loc[start:peak].mean() / t.loc[: start - 1].mean()
    return {"estimated_ratio": float(est), "true_ratio": float(true),
            "relative_error": float(est / true - 1), "n_before": len(before),
            "n_during": len(during)}


def _recession_report(rec: StepOutput, truth_dir: Path | None) -> tuple[str, dict | None]:
    summary = json.loads((Path(rec.path) / "summary.json").read_text())
    pooled = summary["pooled"]
    lines = ["## Streamflow recession", "",
             f"- {pooled['n_points']} recession points in {pooled['n_events']} events "
             f"(flow in {summary['units']}); pooled fit −dQ/dt = {pooled['a']:.4g}·Q^"
             f"{pooled['b']:.3f}, Ks = {pooled['ks_days']:.1f} d "
             f"[{pooled['ks_ci_low']:.1f}–{pooled['ks_ci_high']:.1f}], R² {pooled['r2']:.2f}",
             f"- record: {summary['counts']}"]
    attr = summary.get("attribution")
    if attr:
        lines.append(f"- climate-only model fitted {attr['before'][0]}–{attr['before'][1]}: "
                     f"R² {attr['r2']:.2f} (F-test p = {attr['p_value']:.2g}); after "
                     f"{attr['before'][1]}, observed − predicted = "
                     f"{attr['mean_observed_minus_predicted']:+.1f} d (p = "
                     f"{attr['gap_p_value']:.2g}, {attr['fraction_above_prediction_interval']:.0%}"
                     f" of windows above the 95 % prediction interval)")
    truth_rows = None
    if truth_dir is not None and (truth_dir / "ks_truth.csv").exists():
        world = json.loads((truth_dir.parent / "world.json").read_text())
        windows = pd.read_csv(Path(rec.path) / "ks_windows.csv")
        truth = pd.read_csv(truth_dir / "ks_truth.csv", index_col="year")
        truth_rows = ks_truth_comparison(windows, truth, world["disturbance"], 5)
        lines.append(f"- demo world: Ks during/before the disturbance = "
                     f"{truth_rows['estimated_ratio']:.2f} (truth {truth_rows['true_ratio']:.2f},"
                     f" error {truth_rows['relative_error']:+.0%})")
    return "\n".join(lines) + "\n", truth_rows


def _joint_report(joint: StepOutput) -> str:
    table = pd.read_csv(Path(joint.path) / "period_means.csv")
    res = json.loads((Path(joint.path) / "joint.json").read_text())
    lines = ["## Joint assessment (Fig. 14c)", "",
             "| period | sensor | vertical rate (mm/yr, common area) | thaw season (mm) | Ks (d) |",
             "|---|---|---|---|---|"]
    for r in table.itertuples():
        thaw = ("—" if np.isnan(r.thaw_season_mm_mean)
                else f"{r.thaw_season_mm_mean:.1f} ± {r.thaw_season_mm_std:.1f}"
                + ("" if getattr(r, "thaw_season_trusted", True) else " (too noisy: not used)"))
        rate = ("—" if np.isnan(r.rate_mm_yr_mean)
                else f"{r.rate_mm_yr_mean:.1f} ± {r.rate_mm_yr_std:.1f}")
        lines.append(f"| {r.label} | {r.sensor} | {rate} | {thaw} | {r.ks_days_mean:.1f} |")
    c = res["ks_vs_subsidence_rate"]
    lines += ["", f"Ks vs subsidence rate across periods: r = {c['r']:.2f} (p = {c['p_value']:.2g}, "
                  f"{c['n']} periods; positive = more subsidence with slower recession)."]
    t = res["ks_vs_thaw_season_subsidence"]
    if t["r"] is None or not np.isfinite(t["r"]):
        lines.append(f"Ks vs thaw-season subsidence: not computed ({t['n']} period(s) with both "
                     "a thaw-season value and Ks; at least 3 are needed).")
    else:
        left = t.get("left_out") or []
        lines.append(f"Ks vs thaw-season subsidence: r = {t['r']:.2f} (p = {t['p_value']:.2g}, "
                     f"{t['n']} periods" + (f"; left out as too noisy: {', '.join(left)}"
                                            if left else "") + ").")
    return "\n".join(lines) + "\n"


def _longterm_report(longterm: StepOutput) -> str:
    folder = Path(longterm.path)
    table = pd.read_csv(folder / "period_stats.csv")
    lines = ["## Long-term multi-sensor record (Fig. 9–11, 14c)", "",
             "Mean ± std over the pixels every sensor sees, LOS of each sensor and vertical "
             "(subsidence negative); partial thaw-season pairs scaled to a full season as "
             "stated.", "",
             "| period | sensor | rate LOS (mm/yr) | thaw season LOS (mm) | rate vertical | "
             "thaw season vertical | scaling | noise (mm) |", "|---|---|---|---|---|---|---|---|"]

    def pm(mean: float, std: float) -> str:
        return "—" if not np.isfinite(mean) else f"{mean:.1f} ± {std:.1f}"

    for r in table.itertuples():
        lines.append(f"| {r.label} | {r.sensor} | {pm(r.rate_mm_yr_mean, r.rate_mm_yr_std)} | "
                     f"{pm(r.thaw_season_mm_mean, r.thaw_season_mm_std)} | "
                     f"{pm(r.rate_vertical_mm_yr_mean, r.rate_vertical_mm_yr_std)} | "
                     f"{pm(r.thaw_season_vertical_mm_mean, r.thaw_season_vertical_mm_std)} | "
                     f"{r.scaling if isinstance(r.scaling, str) else ''} | "
                     + (f"{r.thaw_season_noise_mm:.1f}" if np.isfinite(r.thaw_season_noise_mm)
                        else "") + (" (not trusted)" if np.isfinite(r.thaw_season_mm_mean)
                                    and not r.thaw_season_reliable else "") + " |")
    agreement = folder / "agreement.json"
    for a in json.loads(agreement.read_text()).get("pairs", []) if agreement.exists() else []:
        lines += ["", f"Sensor agreement, {a['platform']} {a['reference_date']} → "
                  f"{a['secondary_date']} vs Sentinel-1 over the same dates (Sentinel-1 LOS, "
                  f"{a['n']} pixels): R = {a['r']:.2f}, bias {a['bias']:+.1f} mm, mean absolute "
                  f"bias {a['mae']:.1f} mm, RMSE {a['rmse']:.1f} mm."]
    return "\n".join(lines) + "\n"


def _drivers_report(drivers: StepOutput) -> str:
    table = pd.read_csv(Path(drivers.path) / "drivers.csv")
    cell = drivers.parameters.get("aggregate_m", "?")
    lines = [f"## Environmental drivers at {cell:g} m (Fig. 12–13)" if isinstance(cell, float)
             else "## Environmental drivers (Fig. 12–13)", "",
             "Pearson R of each factor with the mean thaw-season deformation (positive up, so "
             "a negative R means more of the factor goes with more subsidence).", "",
             "| factor | R | p | cells | |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        if r.status == "ok":
            lines.append(f"| {r.factor} | {r.r:+.2f} | {r.p:.2g} | {int(r.n)} | |")
        else:
            lines.append(f"| {r.factor} | — | — | — | {r.status} |")
    return "\n".join(lines) + "\n"


def _step_files(step: StepOutput, products: tuple[str, ...]) -> dict[str, str]:
    """Release name → file of a step's products (``products/``) and figures (``figures/``)."""
    folder = Path(step.path)
    files = {f"products/{name}": str(folder / name) for name in products
             if (folder / name).exists()}
    for png in sorted((folder / "figures").glob("*.png")):
        files[f"figures/{png.name}"] = str(png)
    return files


@step("release-contents")
def release_contents(cfg: StudyConfig, manifest: InputSet, s1: StepOutput,
                     recession: StepOutput | None, joint: StepOutput | None, work_dir: str,
                     drivers: StepOutput | None = None, longterm: StepOutput | None = None
                     ) -> dict:
    """GeoTIFF exports, figures, report (and truth comparison for the demo world)."""
    run = this_step()
    with run.folder(work_dir) as sd:
        if not sd.done:
            product = load_netcdf(Path(s1.path) / "sentinel1.nc")  # (cubes on every core)
            qc = json.loads((Path(s1.path) / "qc.json").read_text())
            crs = product["spatial_ref"].attrs.get("crs_wkt")
            for name in ("velocity", "thaw_season_deformation_mean", "velocity_vertical"):
                _geotiff(product[name], crs, sd.work / f"{name}.tif")
            truth_rows, truth = None, None
            if manifest.source_kind == "world":
                truth_nc = Path(manifest.root) / "truth" / "sentinel1_truth.nc"
                if truth_nc.exists():
                    with xr.open_dataset(truth_nc) as t:
                        truth = referenced_truth(t.load(), product)
                    truth_rows = compare_with_truth(product, truth)
                    pd.DataFrame(truth_rows).to_csv(sd.work / "truth_comparison.csv", index=False)
            _figures(product, qc, Path(s1.path), sd.work, truth)
            text = _report(cfg, manifest, product, qc, truth_rows)
            if recession is not None:
                truth_dir = (Path(manifest.root) / "truth" if manifest.source_kind == "world"
                             else None)
                rec_text, ks_rows = _recession_report(recession, truth_dir)
                text += "\n" + rec_text
                if ks_rows:
                    (sd.work / "ks_truth_comparison.json").write_text(json.dumps(ks_rows))
            if longterm is not None:
                text += "\n" + _longterm_report(longterm)
            if joint is not None:
                text += "\n" + _joint_report(joint)
            if drivers is not None:
                text += "\n" + _drivers_report(drivers)
            (sd.work / "report.md").write_text(text)
            step_logger().info("release contents prepared in %s", sd.final)
    files = {p.name if p.suffix != ".png" else f"figures/{p.name}": str(sd.final / p.name)
             for p in sorted(sd.final.iterdir())
             if p.suffix in (".tif", ".png", ".csv")}
    files["products/sentinel1.nc"] = str(Path(s1.path) / "sentinel1.nc")
    if joint is not None:
        files["products/period_means.csv"] = str(Path(joint.path) / "period_means.csv")
        files["products/joint.json"] = str(Path(joint.path) / "joint.json")
    if recession is not None:
        rec = Path(recession.path)
        for p in sorted(rec.iterdir()):
            if p.suffix == ".csv":
                files[f"products/recession/{p.name}"] = str(p)
            elif p.suffix == ".png":
                files[f"figures/{p.name}"] = str(p)
    if drivers is not None:
        files.update(_step_files(drivers, ("drivers_1km.nc", "drivers.csv", "binned.csv")))
    if longterm is not None:
        files.update(_step_files(longterm, ("longterm.nc", "period_stats.csv", "thaw_seasons.csv",
                                            "pairs.csv", "agreement.json")))
    if joint is not None:
        files.update(_step_files(joint, ()))
    files = {(k if "/" in k else f"products/{k}"): v for k, v in files.items()}
    return {"files": files, "report": (sd.final / "report.md").read_text(),
            "digest": run.digest}
