"""Figures of a Sentinel-1 run, after the paper's.

Network (Fig. S2a), CDF matching (Fig. S3), rate and thaw-season maps (Fig. 8a–b), and the
series of chosen points under each constraint model (Fig. 3c).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from talik.tasks.figure_process import FIGURE_SETS  # noqa: E402

__all__ = [
    "agreement_figure",
    "attribution_figure",
    "drivers_binned_figure",
    "drivers_maps_figure",
    "joint_figure",
    "period_maps_figure",
    "period_stats_figure",
    "cdf_figure",
    "constraint_figure",
    "ks_windows_figure",
    "maps_figure",
    "network_figure",
    "recession_fit_figure",
    "network_figures",
    "result_figures",
    "sentinel1_figures",
]

MODEL_STYLE = {
    "none": ("plain SBAS (minimum norm)", "tab:gray"),
    "linear": ("linear (LiCSBAS)", "tab:orange"),
    "linear_periodic": ("linear-periodic", "tab:blue"),
    "linear_periodic_vref": ("linear-periodic + L-band v_ref", "tab:green"),
}


def _save(fig, path: Path) -> Path:
    """Write a figure as PNG (110 dpi) and release it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _date_baselines(ref: pd.DatetimeIndex, sec: pd.DatetimeIndex, bperp: np.ndarray
                    ) -> pd.Series:
    """Per-date perpendicular baseline from pair baselines (least squares, first date = 0)."""
    dates = pd.DatetimeIndex(sorted(set(ref) | set(sec)))
    idx = {d: i for i, d in enumerate(dates)}
    g = np.zeros((len(ref), len(dates)))
    for k, (a, b) in enumerate(zip(ref, sec, strict=True)):
        g[k, idx[b]] = 1.0
        g[k, idx[a]] = -1.0
    ok = np.isfinite(bperp)
    if not ok.any():
        return pd.Series(np.zeros(len(dates)), index=dates)
    sol = np.linalg.lstsq(g[ok][:, 1:], bperp[ok], rcond=None)[0]
    return pd.Series(np.concatenate([[0.0], sol]), index=dates)


def network_figure(network: dict, components: list[dict], path: Path) -> Path:
    """Pairs on a time–baseline plot, rejected ones in red, winter gaps shaded (Fig. S2a)."""
    ref = pd.DatetimeIndex(network["reference_date"])
    sec = pd.DatetimeIndex(network["secondary_date"])
    bperp = np.array(network.get("baseline_m") or [np.nan] * len(ref), dtype=float)
    base = _date_baselines(ref, sec, bperp)
    rejected = np.array(network["rejected"], dtype=bool)
    fig, ax = plt.subplots(figsize=(11, 4), constrained_layout=True)
    for parts in zip(components[:-1], components[1:], strict=False):
        ax.axvspan(pd.Timestamp(parts[0]["last"]), pd.Timestamp(parts[1]["first"]),
                   color="tab:blue", alpha=0.08, lw=0)
    ax.plot(base.index, base.values, "o", ms=2.5, color="k", zorder=3)
    # One artist per kind of pair (a line per pair took most of the figure's time).
    x = mdates.date2num(np.stack([ref, sec], axis=1).reshape(-1)).reshape(-1, 2)
    y = np.stack([base[ref].to_numpy(), base[sec].to_numpy()], axis=1)
    for bad, color, lw, alpha in ((False, "0.45", 0.6, 0.6), (True, "tab:red", 1.4, 0.9)):
        keep = rejected == bad
        if keep.any():
            ax.add_collection(LineCollection(np.stack([x[keep], y[keep]], axis=2), colors=color,
                                             linewidths=lw, alpha=alpha, zorder=2 + bad))
    ax.autoscale_view()
    ax.set_ylabel("perpendicular baseline (m)")
    ax.set_title(f"Interferogram network: {len(ref)} pairs, {int(rejected.sum())} rejected by "
                 f"loop closure (red), {len(components)} connected parts (gaps shaded)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def cdf_figure(vref: dict, path: Path) -> Path:
    """CDFs of the initial Sentinel-1 rates and the L-band rates, and the mapping (Fig. S3)."""
    p = np.asarray(vref["probabilities"])
    src = np.asarray(vref["source_quantiles"])
    tgt = np.asarray(vref["target_quantiles"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    axes[0].plot(src, p, color="tab:orange",
                 label=f"Sentinel-1 initial ({vref['initial_constraint']})")
    axes[0].plot(tgt, p, color="tab:green", label="L-band (ALOS-2) annual rate")
    axes[0].plot(tgt, p, ":", color="k", label="Sentinel-1 after matching")
    axes[0].set_xlabel("LOS rate (mm/yr)")
    axes[0].set_ylabel("cumulative probability")
    axes[0].legend()
    axes[0].set_title(f"CDF matching over {vref['n_overlap']} overlapping pixels")
    axes[1].plot(src, tgt, color="tab:blue")
    lim = [min(src.min(), tgt.min()), max(src.max(), tgt.max())]
    axes[1].plot(lim, lim, "--", color="0.6")
    axes[1].set_xlabel("initial Sentinel-1 rate (mm/yr)")
    axes[1].set_ylabel("velocity reference v_ref (mm/yr)")
    axes[1].set_title("quantile mapping")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def maps_figure(product: xr.Dataset, path: Path) -> Path:
    """LOS rate and mean thaw-season deformation maps (Fig. 8a–b)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    # imshow, not pcolormesh: a regular grid drawn as one image (a mesh of a million cells
    # took most of the figure's time).
    product["velocity"].plot.imshow(ax=axes[0], cmap="RdBu", center=0,
                                    cbar_kwargs={"label": "LOS velocity (mm/yr, + toward)"})
    axes[0].set_title("Sentinel-1 LOS velocity")
    product["thaw_season_deformation_mean"].plot.imshow(ax=axes[1], cmap="RdBu", center=0,
                                                        cbar_kwargs={"label": "mm"})
    axes[1].set_title("Mean thaw-season deformation (1 May → 1 Oct)")
    for ax in axes:
        ax.set_aspect("equal")
    return _save(fig, path)


def constraint_figure(points: xr.Dataset, path: Path, published: xr.DataArray | None = None,
                      truth: xr.DataArray | None = None) -> Path:
    """Series of the chosen points under each constraint model (Fig. 3c), truth if known.

    ``published``: the product's series at the points (:func:`published_at_points`).
    """
    n = points.sizes["point"]
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.4 * n), constrained_layout=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        pt = points.isel(point=i)
        for model in points["model"].values:
            label, color = MODEL_STYLE.get(str(model), (str(model), None))
            ax.plot(points["time"], pt["displacement"].sel(model=model), ".-", ms=2, lw=0.8,
                    label=label, color=color)
        if published is not None:
            ax.plot(published["time"], published.isel(point=i), "-", lw=1.6, color="k",
                    alpha=0.6, label="published (filtered)")
        if truth is not None:
            ax.plot(truth["time"], truth.isel(y=int(pt["row"]), x=int(pt["col"])), "--",
                    color="tab:red", lw=1.2, label="truth (demo world)")
        ax.set_title(str(pt["point"].values))
        ax.set_ylabel("LOS displacement (mm)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=3)
    return _save(fig, path)


def network_figures(folder: Path, qc: dict, prefix: str = "") -> list[Path]:
    """The figures of a Sentinel-1 run that need only its report: network and CDF matching.

    ``qc`` is the run's report (``network``, ``components``, ``velocity_reference``); they can
    be drawn as soon as the interferograms are prepared, before the inversion.
    """
    out = [network_figure(qc["network"], qc["components"], folder / f"{prefix}network.png")]
    if (qc.get("velocity_reference") or {}).get("source_quantiles"):
        out.append(cdf_figure(qc["velocity_reference"], folder / f"{prefix}cdf_matching.png"))
    return out


def result_figures(folder: Path, layers: xr.Dataset, points: xr.Dataset | None,
                   published: xr.DataArray | None = None, truth: xr.DataArray | None = None,
                   prefix: str = "") -> list[Path]:
    """The figures of a Sentinel-1 run's products: maps, and the Fig. 3c comparison.

    ``layers`` holds the maps' ``velocity`` (mm/yr) and ``thaw_season_deformation_mean`` (mm);
    ``points`` the Fig. 3c comparison series, with the product's own series at them in
    ``published``.
    """
    out = [maps_figure(layers, folder / f"{prefix}maps.png")]
    if points is not None:
        out.append(constraint_figure(points, folder / f"{prefix}constraints.png", published,
                                     truth))
    return out


def sentinel1_figures(folder: Path, layers: xr.Dataset, qc: dict, points: xr.Dataset | None,
                      published: xr.DataArray | None = None, truth: xr.DataArray | None = None,
                      prefix: str = "") -> list[Path]:
    """Every figure of a Sentinel-1 run in ``folder``; returns their paths.

    Those of :func:`network_figures` and :func:`result_figures`. Every input is in memory,
    so the figures can be drawn in another process.
    """
    return (network_figures(folder, qc, prefix)
            + result_figures(folder, layers, points, published, truth, prefix))


_BACKGROUND_FIGURES = dict(zip(FIGURE_SETS, (network_figures, result_figures), strict=True))
"""What :class:`~talik.tasks.figure_process.FiguresInBackground` can be asked to draw."""


def _draw_requested() -> None:
    """The other process's side of :class:`FiguresInBackground`: draw each request, print paths.

    Started by :class:`~talik.tasks.figure_process.FiguresInBackground`.
    """
    import pickle
    import sys

    for line in sys.stdin:
        request = line.strip()
        if not request:
            continue
        which, folder, args, kwargs = pickle.loads(Path(request).read_bytes())
        for path in _BACKGROUND_FIGURES[which](folder, *args, **kwargs):
            print(path, flush=True)


def recession_fit_figure(flow: pd.Series, points: pd.DataFrame, options, path: Path) -> Path:
    """Recession days on a year's hydrograph and the log–log fit of all points (Fig. 4b–c)."""
    from talik.science.recession import fit_recession

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    years = pd.DatetimeIndex(points.index).year
    year = int(pd.Series(years).mode().iloc[0]) if len(points) else int(flow.index[-1].year)
    season = flow[str(year)].dropna()
    axes[0].plot(season.index, season.values, "-", color="0.4", lw=1)
    sel = points[years == year]
    axes[0].plot(sel.index, flow.reindex(sel.index).values, "o", ms=3, color="tab:red",
                 label=f"recession points (≥ {options.min_recession_days} declining days)")
    axes[0].set_ylabel(f"discharge ({options.flow_units})")
    axes[0].set_title(f"Recession selection, {year}")
    axes[0].legend(fontsize=8)
    fit = fit_recession(points, options.min_points)
    if np.isfinite(fit.a):
        axes[1].loglog(points["q"], -points["dqdt"], ".", ms=2, alpha=0.5, color="tab:blue")
        q = np.geomspace(points["q"].min(), points["q"].max(), 50)
        axes[1].loglog(q, fit.a * q**fit.b, "-", color="k",
                       label=f"−dQ/dt = {fit.a:.3g}·Q^{fit.b:.2f}  (R² {fit.r2:.2f}, "
                             f"Ks {fit.ks_days:.1f} d)")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel(f"Q ({options.flow_units})")
    axes[1].set_ylabel(f"−dQ/dt ({options.flow_units}/d)")
    axes[1].set_title(f"All recession points ({fit.n_points} in {fit.n_events} events)")
    return _save(fig, path)


def ks_windows_figure(windows: pd.DataFrame, path: Path) -> Path:
    """Ks from 1-, 3- and 5-year windows with 95 % intervals, and R² (Fig. S5)."""
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True, constrained_layout=True)
    colors = {1: "k", 3: "tab:blue", 5: "tab:red"}
    for length, w in windows.groupby("window_years"):
        w = w[w["status"] == "ok"]
        c = colors.get(int(length), None)
        axes[0].plot(w["center_year"], w["ks_days"], "-", color=c, label=f"{length}-year windows")
        axes[0].fill_between(w["center_year"], w["ks_ci_low"], w["ks_ci_high"], color=c,
                             alpha=0.15, lw=0)
        axes[1].plot(w["center_year"], w["r2"], "-", color=c)
    units = windows["units"].iloc[0] if len(windows) else ""
    axes[0].set_ylabel(f"Ks = 1/a (d, flow in {units})")
    axes[0].legend()
    axes[1].set_ylabel("R²")
    axes[1].set_xlabel("window centre year")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def attribution_figure(predictions: pd.DataFrame, predictors: pd.DataFrame, summary: dict,
                       path: Path) -> Path:
    """Observed and climate-predicted Ks with 95 % prediction band; predictor correlations."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1.3]},
                             constrained_layout=True)
    ax = axes[0]
    ax.fill_between(predictions.index, predictions["pi_low"], predictions["pi_high"],
                    color="tab:green", alpha=0.2, lw=0, label="95 % prediction interval")
    ax.plot(predictions.index, predictions["predicted"], "-", color="tab:green",
            label=f"climate only (fitted {summary['before'][0]}–{summary['before'][1]}, "
                  f"R² {summary['r2']:.2f})")
    ax.plot(predictions.index, predictions["observed"], "o-", ms=3, color="k",
            label="observed (5-year windows)")
    ax.axvline(summary["before"][1] + 0.5, color="0.5", ls="--")
    ax.set_ylabel("Ks (d)")
    ax.set_title(f"observed − predicted after {summary['before'][1]}: "
                 f"{summary['mean_observed_minus_predicted']:+.1f} d "
                 f"(p = {summary['gap_p_value']:.2g})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    corr = pd.DataFrame(summary["correlations_before"]).T["r"]
    axes[1].barh(corr.index, corr.values, color=np.where(corr.values > 0, "tab:red", "tab:blue"))
    axes[1].set_xlabel("r with Ks (before)")
    axes[1].set_xlim(-1, 1)
    return _save(fig, path)


# ----------------------------------------------------------------- environmental drivers
DRIVER_LABELS = {
    "thawing_index": "thawing index (°C·d)",
    "slope": "slope (°)",
    "ndvi": "growing-season NDVI",
    "ground_ice": "ground-ice content",
    "swir_albedo": "thaw-season SWIR albedo",
}


def drivers_binned_figure(table: pd.DataFrame, binned: pd.DataFrame, path: Path) -> Path:
    """|R| of each factor with the deformation, and deformation mean ± std per bin (Fig. 12)."""
    ok = table[table["status"] == "ok"]
    factors = list(ok["factor"])
    n = len(factors) + 1
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows),
                             constrained_layout=True, squeeze=False)
    flat = axes.ravel()
    bars = flat[0]
    colors = np.where(ok["r"].to_numpy() < 0, "tab:blue", "tab:red")
    bars.bar([DRIVER_LABELS.get(f, f).split(" (")[0] for f in factors], ok["abs_r"], color=colors)
    bars.set_ylabel("|R| with thaw-season deformation")
    bars.set_ylim(0, 1)
    bars.tick_params(axis="x", labelrotation=35, labelsize=8)
    bars.set_title("(a) |R| (blue: more factor, more subsidence)", fontsize=9)
    for k, factor in enumerate(factors, start=1):
        ax = flat[k]
        b = binned[binned["factor"] == factor]
        ax.errorbar(b["factor_mean"], b["deformation_mean"], yerr=b["deformation_std"], fmt="o-",
                    ms=4, capsize=3, color="k")
        row = ok[ok["factor"] == factor].iloc[0]
        ax.set_title(f"({chr(ord('a') + k)}) R = {row['r']:.2f}, p = {row['p']:.2g}, "
                     f"n = {int(row['n'])}", fontsize=9)
        ax.set_xlabel(DRIVER_LABELS.get(factor, factor))
        ax.set_ylabel("deformation (mm)")
        ax.grid(alpha=0.3)
    for ax in flat[n:]:
        ax.set_visible(False)
    return _save(fig, path)


def drivers_maps_figure(ds: xr.Dataset, factors: list[str], path: Path) -> Path:
    """Maps of the thaw-season deformation and each factor on the aggregation cells (Fig. 13)."""
    names = ["thaw_season_deformation", *factors]
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows),
                             constrained_layout=True, squeeze=False)
    flat = axes.ravel()
    x_km, y_km = ds["x"].values / 1000.0, ds["y"].values / 1000.0
    for k, name in enumerate(names):
        ax = flat[k]
        values = ds[name].values
        is_def = name == "thaw_season_deformation"
        if is_def:
            lim = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
            mesh = ax.pcolormesh(x_km, y_km, values, cmap="RdBu", vmin=-lim, vmax=lim,
                                 shading="nearest")
        else:
            mesh = ax.pcolormesh(x_km, y_km, values, cmap="viridis", shading="nearest")
        label = "mm" if is_def else DRIVER_LABELS.get(name, name)
        fig.colorbar(mesh, ax=ax, label=label, shrink=0.85)
        ax.set_title(f"({chr(ord('a') + k)}) "
                     + ("thaw-season deformation" if is_def else label.split(" (")[0]), fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("easting (km)")
        ax.set_ylabel("northing (km)")
    for ax in flat[len(names):]:
        ax.set_visible(False)
    return _save(fig, path)


def _shared_limits(values: np.ndarray, diverging: bool = True) -> tuple[float, float]:
    """Colour limits shared by several maps: the 2nd–98th percentiles (symmetric if diverging)."""
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = np.percentile(finite, [2, 98])
    if diverging:
        m = max(abs(lo), abs(hi), 1e-6)
        return -m, m
    return float(lo), float(hi)


def agreement_figure(fig9: xr.Dataset, path: Path) -> Path:
    """Another sensor's pair against Sentinel-1 over the same dates (Fig. 9).

    Maps of both in Sentinel-1 LOS, their histograms, and a density scatter with R, mean
    bias, mean absolute bias and RMSE.
    """
    other, s1 = fig9["other"], fig9["sentinel1"]
    both = np.isfinite(other.values) & np.isfinite(s1.values)
    lim = _shared_limits(np.concatenate([other.values[both], s1.values[both]]))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4), constrained_layout=True)
    platform = fig9.attrs.get("platform", "other sensor")
    for ax, da, name in ((axes[0], other, platform), (axes[1], s1, "Sentinel-1")):
        da.where(both).plot(ax=ax, cmap="RdBu", vmin=lim[0], vmax=lim[1],
                            cbar_kwargs={"label": "LOS (mm, + toward)"})
        ax.set_title(f"{name}, in Sentinel-1 LOS")
        ax.set_aspect("equal")
    bins = np.linspace(lim[0], lim[1], 41)
    axes[2].hist(other.values[both], bins=bins, alpha=0.6, label=platform, color="tab:green")
    axes[2].hist(s1.values[both], bins=bins, alpha=0.6, label="Sentinel-1", color="tab:blue")
    axes[2].set_xlabel("LOS displacement (mm)")
    axes[2].set_ylabel("pixels")
    axes[2].legend()
    axes[3].hexbin(s1.values[both], other.values[both], gridsize=35, cmap="viridis", mincnt=1,
                   extent=(lim[0], lim[1], lim[0], lim[1]))
    axes[3].plot(lim, lim, "--", color="0.7")
    axes[3].set_xlabel("Sentinel-1 (mm)")
    axes[3].set_ylabel(f"{platform} (mm)")
    a = fig9.attrs
    axes[3].set_title(f"R = {a['r']:.2f}, bias {a['bias']:+.1f} mm\nMAB {a['mae']:.1f} mm, "
                      f"RMSE {a['rmse']:.1f} mm (n = {a['n']})", fontsize=9)
    fig.suptitle(str(fig9.attrs.get("file", "")))
    return _save(fig, path)


def period_maps_figure(maps: xr.Dataset, mask: xr.DataArray, path: Path) -> Path:
    """Rate and thaw-season maps of every period (Fig. 10 and 11), shared colour scales.

    The vertical maps (positive up) are shown; the outline of the common area is drawn.
    """
    n = maps.sizes["period"]
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.4), constrained_layout=True,
                             squeeze=False)
    for row, (name, units) in enumerate((("rate_vertical", "mm/yr"),
                                         ("thaw_season_vertical", "mm"))):
        lim = _shared_limits(maps[name].values)
        for col in range(n):
            ax = axes[row, col]
            m = maps[name].isel(period=col)
            image = ax.pcolormesh(maps["x"], maps["y"], m.values, cmap="RdBu", vmin=lim[0],
                                  vmax=lim[1], shading="auto")
            ax.contour(maps["x"], maps["y"], mask.values.astype(float), levels=[0.5],
                       colors="k", linewidths=0.6)
            ax.set_title(f"{maps['label'].values[col]}\n({maps['platform'].values[col]})",
                         fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(image, ax=axes[row, :].tolist(), shrink=0.8,
                     label=f"{'rate' if row == 0 else 'thaw season'} vertical ({units}, + up)")
    return _save(fig, path)


def period_stats_figure(table: pd.DataFrame, path: Path) -> Path:
    """Mean ± std per period over the common area: rate (mm/yr) and thaw season (mm)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    x = np.arange(len(table))
    for ax, stem, units in ((axes[0], "rate_mm_yr", "mm/yr"), (axes[1], "thaw_season_mm", "mm")):
        ax.errorbar(x, table[f"{stem}_mean"], yerr=table[f"{stem}_std"], fmt="o", capsize=4,
                    color="k", label="LOS")
        vert = stem.replace("rate_", "rate_vertical_").replace("thaw_season_", "thaw_season_vertical_")
        if f"{vert}_mean" in table:
            ax.errorbar(x + 0.15, table[f"{vert}_mean"], yerr=table[f"{vert}_std"], fmt="s",
                        capsize=4, color="tab:red", label="vertical")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(table["label"], rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(units)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("deformation rate, mean ± std over the common area")
    axes[1].set_title("thaw-season deformation, mean ± std over the common area")
    return _save(fig, path)


def joint_figure(table: pd.DataFrame, windows: pd.DataFrame, main_years: int, path: Path) -> Path:
    """Both records on one time axis (Fig. 14).

    Ks of the moving windows, and each period's mean ± std vertical rate and thaw-season
    deformation drawn over the period's span.
    """
    fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, constrained_layout=True)
    main = windows[(windows["window_years"] == main_years) & (windows["status"] == "ok")]
    for ax, column, label in ((axes[0], "rate_mm_yr", "vertical rate (mm/yr)"),
                              (axes[1], "thaw_season_mm", "thaw-season deformation (mm)")):
        ks_ax = ax.twinx()
        ks_ax.plot(main["center_year"], main["ks_days"], "-", color="tab:red",
                   label=f"Ks, {main_years}-year windows")
        ks_ax.fill_between(main["center_year"], main["ks_ci_low"], main["ks_ci_high"],
                           color="tab:red", alpha=0.12, lw=0)
        ks_ax.set_ylabel("Ks (d)", color="tab:red")
        for r in table.itertuples():
            mean, std = getattr(r, f"{column}_mean"), getattr(r, f"{column}_std")
            if not np.isfinite(mean):
                continue
            start = pd.Timestamp(r.start)
            end = pd.Timestamp(r.end)
            x0 = start.year + start.day_of_year / 365.25
            x1 = end.year + end.day_of_year / 365.25
            ax.fill_between([x0, x1], mean - std, mean + std, color="tab:blue", alpha=0.2, lw=0)
            ax.plot([x0, x1], [mean, mean], "-", color="tab:blue", lw=2.5)
            ax.annotate(r.sensor, ((x0 + x1) / 2, mean), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8, color="tab:blue")
        ax.set_ylabel(label, color="tab:blue")
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_title("streamflow recession (red) and ground deformation (blue) by period")
    axes[1].set_xlabel("year")
    return _save(fig, path)
