"""The ``talik`` command (typer). Heavy imports happen inside commands so ``--help`` is quick."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

# Telemetry off unless the user decided otherwise (docs/prefect.md).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect waits 20 s for its throwaway local server; a cold start on a busy 2-core machine
# (imports, database check) was seen to take longer.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# numpy advises the kernel to back large arrays with huge pages; where transparent huge
# pages are on "madvise" with synchronous compaction (Ubuntu's default, and the VMs this was
# measured on), first touching fresh memory then took 2.7 s per GB instead of 0.4 s, and the
# chain allocates several GB over a run. A user's own setting wins (numpy reads it at import;
# nothing above has imported numpy).
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

app = typer.Typer(help="talik: permafrost degradation monitoring from InSAR and streamflow.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect study configurations.", no_args_is_help=True)
releases_app = typer.Typer(help="List and inspect published releases.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(releases_app, name="releases")

StudyArg = Annotated[Path, typer.Argument(help="Study TOML file.")]
StudyOpt = Annotated[Path, typer.Option("--study", "-s", help="Study TOML file.")]
DEMO_STUDY = Path("studies/demo.toml")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _s1_help(name: str) -> str:
    """The help of a ``[sentinel1]`` option, taken from its description in ``talik.config``."""
    from talik.config import Sentinel1Options

    return Sentinel1Options.model_fields[name].description or name


def _date(text: str | None, option: str):
    import datetime as dt

    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        _fail(f"{option}: expected a date YYYY-MM-DD, got {text!r}")


def _load(path: Path):
    from talik.config import load_study
    from talik.errors import ConfigError

    try:
        return load_study(path)
    except ConfigError as exc:
        _fail(str(exc))


@config_app.command("show")
def config_show(study: StudyArg) -> None:
    """Print the resolved configuration of STUDY (defaults filled in, paths absolute)."""
    from talik.config import config_digest, to_toml

    cfg = _load(study)
    typer.echo(f"# {study} (config sha256 {config_digest(cfg)[:16]})")
    typer.echo(to_toml(cfg))


@config_app.command("defaults")
def config_defaults() -> None:
    """Print every analysis option with its default, unit and meaning (commented TOML)."""
    from talik.config import defaults_toml

    typer.echo(defaults_toml())


class _UserErrorsWithoutTraceback:
    """A logging filter: bad-input and service errors keep their message, not their traceback.

    The traceback is about talik's call stack, not the user's file; ``--debug`` keeps it.
    """

    def filter(self, record) -> bool:  # noqa: A003 - the logging.Filter protocol
        from talik.errors import InputError
        from talik.tasks.ingest.common import PermanentServiceError
        from talik.tasks.validate import ReleaseCheckError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (InputError, PermanentServiceError, ReleaseCheckError)):
            record.exc_info, record.exc_text = None, None
        return True


def _user_errors_briefly(debug: bool) -> None:
    """Install :class:`_UserErrorsWithoutTraceback` on every handler (unless ``debug``)."""
    import logging

    if debug:
        return
    quiet = _UserErrorsWithoutTraceback()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "talik"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(quiet)


def _check_local_inputs(cfg) -> None:
    """Refuse a local study whose configured inputs do not exist, before anything starts.

    Inputs an enabled ``[ingest]`` source is about to fetch are not required yet.
    """
    from talik.config import LocalSource
    from talik.tasks.ingest.local import source_locations

    if not isinstance(cfg.source, LocalSource):
        return
    fetched = {"hyp3": cfg.ingest.hyp3.enabled, "modis": cfg.ingest.earthengine.enabled,
               "era5": cfg.ingest.cds.enabled, "dem": cfg.ingest.dem.enabled,
               "discharge": cfg.ingest.nwis.enabled}
    for role, path in source_locations(cfg.source).items():
        if not path.exists() and not fetched.get(role, False):
            _fail(f"{path}: source.{role}: expected an existing file or folder")


def _start_api_server_early():
    """Start Prefect's temporary API server in a thread, when no server is configured.

    Prefect starts that server (a uvicorn subprocess: about 5 s on 2 cores) only when the
    flow first talks to the API, after the pipeline's modules are imported (another 5 s, one
    core): started here, the two overlap. The server is the one Prefect would have started
    (its per-process instance), so the flow finds it running. Returns the thread to join
    before the flow starts, or None when ``PREFECT_API_URL`` names a server.
    """
    import threading

    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    # (imported here, in one thread: two threads importing Prefect's modules at once could
    # each see the other's half-initialised)
    from prefect.server.api.server import SubprocessASGIServer

    def start() -> None:
        try:
            SubprocessASGIServer().start()
        except Exception:  # noqa: BLE001 - the flow's client starts it again and reports why
            pass

    thread = threading.Thread(target=start, name="talik-prefect-server", daemon=True)
    thread.start()
    return thread


def _run(study: Path, refresh: bool, skip_sources: list[str] | None = None, debug: bool = False,
         until=None):
    from talik.tasks.reaper import start_reaper

    cfg = _load(study)  # fail early with a clear message
    _check_local_inputs(cfg)
    start_reaper()  # a killed run leaves no Prefect server or Dask worker behind
    server = _start_api_server_early()
    from talik.errors import InputError
    from talik.flows.monitor import monitor
    from talik.tasks.ingest.common import PermanentServiceError
    from talik.tasks.validate import ReleaseCheckError

    _user_errors_briefly(debug)  # (on the handlers Prefect's import made)
    if server is not None:
        server.join()
    try:
        return monitor(study=str(study.resolve()), refresh=refresh, skip_sources=skip_sources,
                       until=until)
    except (InputError, PermanentServiceError, ReleaseCheckError) as exc:
        if debug:
            raise
        _fail(f"{exc}\n(nothing was published; rerun with --debug for the traceback)")
    except OSError as exc:
        if debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _fail(f"no space left on the device writing {exc.filename or cfg.stores.work_dir}\n"
              "(nothing was published; the steps that finished are kept: free some space and "
              "rerun, it resumes)")


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of input and service "
                                                         "errors (hidden otherwise).")]


SOURCES = ("asf", "esa", "earthengine", "cds", "dem", "nwis")
SkipOpt = Annotated[list[str] | None, typer.Option(
    "--skip", help=f"A service not to fetch from this time (repeatable): one of {', '.join(SOURCES)}.")]


def _check_sources(names: list[str] | None) -> list[str]:
    bad = sorted(set(names or []) - set(SOURCES))
    if bad:
        _fail(f"--skip: unknown source {', '.join(bad)}; expected one of {', '.join(SOURCES)}")
    return list(names or [])


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the outcome: "
                                                               "no per-step progress.")]


def _study_help(name: str) -> str:
    """The help of a top-level study setting, taken from its description in ``talik.config``."""
    from talik.config import StudyConfig

    return StudyConfig.model_fields[name].description or name


@app.command()
def run(study: StudyArg,
        refresh: Annotated[bool, typer.Option(help="Recompute cached steps.")] = False,
        quiet: QuietOpt = False, skip: SkipOpt = None, debug: DebugOpt = False,
        until: Annotated[str | None, typer.Option(
            metavar="YYYY-MM-DD", help=_study_help("until") + " Overrides the study file's.")] = None,
        ) -> None:
    """Run the monitor flow for STUDY: ingest → stage → time series → publish."""
    skip = _check_sources(skip)
    last = _date(until, "--until")
    if quiet:  # before Prefect is imported: its console handler reads the level once
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    outcome = _run(study, refresh, skip, debug, last)
    _print_outcome(outcome, steps=not quiet)


@app.command()
def ingest(study: StudyArg, skip: SkipOpt = None, debug: DebugOpt = False) -> None:
    """Fetch what is new from the services STUDY enables (its ingest sections); no processing."""
    skip = _check_sources(skip)
    cfg = _load(study)
    if not cfg.ingest.any_enabled:
        _fail(f"{study}: no [ingest] source is enabled (set e.g. [ingest.asf] enabled = true)")
    from talik.flows.ingest import ingest_flow
    from talik.tasks.ingest.common import PermanentServiceError
    from talik.tasks.reaper import start_reaper

    _user_errors_briefly(debug)
    start_reaper()
    try:
        summary = ingest_flow(cfg, skip)
    except PermanentServiceError as exc:
        if debug:
            raise
        _fail(f"{exc}\n(rerun with --debug for the traceback)")
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command()
def ledger(study: StudyArg) -> None:
    """Show STUDY's ingest ledger: scenes, pairs by state, jobs, credits this month, files."""
    import collections
    import datetime as dt

    from talik.tasks.ingest.run import ledger_of

    cfg = _load(study)
    book = ledger_of(cfg)
    scenes = book.scenes()
    states = collections.Counter(p.state for p in book.pairs())
    jobs = collections.Counter(j.state for j in book.jobs())
    files = book.files()
    typer.echo(f"ledger {book.path}")
    typer.echo(f"  scenes: {len(scenes)}" + (f" ({scenes[0].date} .. {scenes[-1].date})" if scenes else ""))
    typer.echo("  pairs:  " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"))
    typer.echo("  jobs:   " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    typer.echo(f"  credits spent this month: {book.credits_spent(dt.datetime.now(dt.UTC).date()):g} "
               f"of {cfg.ingest.hyp3.monthly_budget_credits}")
    provisional = sum(f.status == "provisional" for f in files)
    typer.echo(f"  files:  {len(files)} ({sum(f.bytes for f in files) / 1e6:.1f} MB, "
               f"{provisional} provisional)")


def _print_outcome(outcome, steps: bool = True) -> None:
    r = outcome.release
    if outcome.created:
        typer.secho(f"published release {r.id}", fg=typer.colors.GREEN, bold=True)
    else:
        typer.secho(f"no new release needed: inputs, configuration and code are those of release "
                    f"{r.id}", fg=typer.colors.YELLOW, bold=True)
    typer.echo(f"  release:  {r.id}  ({r.created}, digest {r.digest[:12]})")
    typer.echo(f"  location: {r.path}")
    manifest = Path(r.path) / "manifest.json"
    if steps and manifest.exists():
        typer.echo("  steps:")
        for step in json.loads(manifest.read_text()).get("steps", []):
            summary = ", ".join(f"{k} {v}" for k, v in step.get("summary", {}).items()
                                if not isinstance(v, (list, dict)))
            typer.echo(f"    {step['step']:<24} {summary[:90]}")


@app.command()
def demo(study: StudyOpt = DEMO_STUDY,
         refresh: Annotated[bool, typer.Option(help="Recompute cached steps.")] = False,
         debug: DebugOpt = False) -> None:
    """Generate the demo world (first time), run the whole pipeline, compare with the truth."""
    started = time.time()
    outcome = _run(study, refresh, debug=debug)
    _print_outcome(outcome)
    report = Path(outcome.release.path) / "report.md"
    typer.echo("")
    typer.echo(report.read_text())
    typer.echo(f"finished in {time.time() - started:.0f} s")


@releases_app.command("list")
def releases_list(study: StudyOpt = DEMO_STUDY) -> None:
    """List the releases of a study."""
    from talik.tasks.publish import list_releases

    cfg = _load(study)
    rows = list_releases(cfg.stores.release_dir)
    if not rows:
        typer.echo(f"no releases in {cfg.stores.release_dir}")
        return
    typer.echo(f"{'id':<8} {'created':<21} {'digest':<13} {'inputs':>6}  talik")
    for r in rows:
        typer.echo(f"{r.id:<8} {r.created:<21} {r.digest[:12]:<13} {r.n_inputs:>6}  "
                   f"{r.talik_version}")


@releases_app.command("show")
def releases_show(release_id: Annotated[str, typer.Argument(help="Release id, e.g. r0001.")],
                  study: StudyOpt = DEMO_STUDY,
                  full: Annotated[bool, typer.Option(help="Print the whole manifest.")] = False
                  ) -> None:
    """Show a release: its manifest summary (or the whole manifest with --full)."""
    from talik.tasks.publish import read_release

    cfg = _load(study)
    try:
        m = read_release(cfg.stores.release_dir, release_id)
    except FileNotFoundError as exc:
        _fail(str(exc))
    if full:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(f"release {m['release_id']} of study {m['study']['name']} ({m['created']})")
    typer.echo(f"  digest:      {m['release_digest']}")
    typer.echo(f"  config:      sha256 {m['study']['config_sha256']}")
    typer.echo(f"  talik:       {m['talik']['version']} (code {m['talik']['code_sha256'][:12]}, "
               f"git {m['talik']['git_commit']})")
    typer.echo(f"  inputs:      {len(m['inputs']['files'])} files, digest "
               f"{m['inputs']['digest'][:12]}")
    typer.echo("  steps:")
    for s in m["steps"]:
        typer.echo(f"    {s['step']:<24} {s['digest'][:12]}  {json.dumps(s['summary'])[:80]}")
    typer.echo("  products:")
    for p in m["products"]:
        typer.echo(f"    {p['path']:<48} {p['bytes']:>12,d} B  sha256 {p['sha256'][:12]}")


@app.command()
def deploy(study: StudyArg,
           pool: Annotated[str, typer.Option(help="Process work pool (created if missing).")
                           ] = "talik-process",
           cron: Annotated[str, typer.Option(help="Schedule of the monitor deployment (cron, "
                                                  "UTC); 'none' for no schedule.")
                           ] = "0 3 * * 1") -> None:
    """Register STUDY's deployments on the Prefect server at PREFECT_API_URL (monitor + reruns)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail("PREFECT_API_URL is not set: start a server (prefect server start) and export "
              "PREFECT_API_URL=http://127.0.0.1:4200/api")
    from talik.flows.deploy import deploy_study

    _load(study)  # a bad study file fails here, clearly
    names = deploy_study(study, pool, None if cron.lower() == "none" else cron)
    typer.echo("deployments: " + ", ".join(names))
    typer.echo(f"start a worker: prefect worker start --pool {pool}")


@releases_app.command("diff")
def releases_diff(a: Annotated[str, typer.Argument(help="The earlier release, e.g. r0001.")],
                  b: Annotated[str, typer.Argument(help="The later release, e.g. r0002.")],
                  study: StudyOpt = DEMO_STUDY,
                  as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                  ) -> None:
    """What changed from release A to release B: options, inputs, code and product values."""
    from talik.tasks.release_diff import diff_releases, format_diff

    cfg = _load(study)
    try:
        diff = diff_releases(cfg.stores.release_dir, a, b)
    except FileNotFoundError as exc:
        _fail(str(exc))
    typer.echo(diff.model_dump_json(indent=1) if as_json else format_diff(diff))


@app.command()
def sentinel1(
    products_dir: Annotated[Path, typer.Argument(help="Folder of HyP3 INSAR_GAMMA products "
                                                      "(folders or zips).")],
    out: Annotated[Path, typer.Option("--out", help="Output CF NetCDF file.")],
    alos2_rate: Annotated[Path | None, typer.Option(
        "--alos2-rate", help="L-band annual rate GeoTIFF (mm/yr) for the velocity reference; tag "
        "quantity=los_rate (with incidence_deg) or vertical_rate.")] = None,
    study: Annotated[Path | None, typer.Option(
        "--study", help="Study TOML whose [sentinel1] options, AOI and sensors to use.")] = None,
    gacos: Annotated[Path | None, typer.Option("--gacos", help="Folder of GACOS .ztd files.")
                     ] = None,
    ground_ice: Annotated[Path | None, typer.Option(
        "--ground-ice", help="Ground-ice GeoTIFF (stable ground = ice-poor pixels).")] = None,
    lband_incidence: Annotated[float | None, typer.Option(
        "--lband-incidence", help="Incidence angle (degrees) of an L-band LOS rate GeoTIFF that "
        "has no incidence_deg tag.")] = None,
    lband_quantity: Annotated[str | None, typer.Option(
        "--lband-quantity", help="What an untagged L-band rate GeoTIFF holds: los_rate (the "
        "L-band sensor's LOS, + toward it) or vertical_rate (+ up).")] = None,
    reference_date: Annotated[str | None, typer.Option(
        "--reference-date", help=_s1_help("reference_date") + " YYYY-MM-DD.")] = None,
    first_date: Annotated[str | None, typer.Option(
        "--first-date", help=_s1_help("first_date") + " YYYY-MM-DD.")] = None,
    last_date: Annotated[str | None, typer.Option(
        "--last-date", help=_s1_help("last_date") + " YYYY-MM-DD.")] = None,
    work: Annotated[Path | None, typer.Option(
        "--work", help="Folder for intermediate stores (default: beside OUT).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Sentinel-1 time series from your own HyP3 products, written to OUT as CF NetCDF."""
    from talik.tasks.figure_process import FiguresInBackground

    # The figures' process first: its imports (matplotlib, xarray) run on the other core
    # while this one imports the chain's.
    with FiguresInBackground() as drawing:
        _sentinel1(products_dir, out, alos2_rate, study, gacos, ground_ice, lband_incidence,
                   lband_quantity, reference_date, first_date, last_date, work, quiet, drawing)


def _sentinel1(products_dir, out, alos2_rate, study, gacos, ground_ice, lband_incidence,  # noqa: ANN001
               lband_quantity, reference_date, first_date, last_date, work, quiet, drawing
               ) -> None:
    """The body of :func:`sentinel1`, with the figures' process already started."""
    from talik.config import SENTINEL1_WAVELENGTH_M, AreaOfInterest, LocalSource, Sentinel1Options
    from talik.errors import InputError
    from talik.tasks.progress import progress_output
    from talik.tasks.sentinel1 import sentinel1_from_products

    options, aoi, wavelength = Sentinel1Options(), None, SENTINEL1_WAVELENGTH_M
    lband_inc, title = None, None
    if study is not None:
        cfg = _load(study)
        options, aoi, wavelength, title = cfg.sentinel1, cfg.aoi, cfg.s1_sensor.wavelength_m, cfg.title
        lband = cfg.sensors.get(options.velocity_reference_sensor)
        lband_inc = lband.incidence_deg if lband else None
        if isinstance(cfg.source, LocalSource):
            gacos = gacos or cfg.source.gacos_dir
            ground_ice = ground_ice or cfg.source.ground_ice
    if alos2_rate is None:
        options = options.model_copy(update={"velocity_reference": "none"})
    if lband_quantity not in (None, "los_rate", "vertical_rate"):
        _fail(f"--lband-quantity: expected los_rate or vertical_rate, got {lband_quantity!r}")
    if lband_incidence is not None:
        if not 0 < lband_incidence < 90:
            _fail(f"--lband-incidence: expected an angle in (0, 90) degrees, got {lband_incidence}")
        lband_inc = lband_incidence
    dates = {"reference_date": _date(reference_date, "--reference-date"),
             "first_date": _date(first_date, "--first-date"),
             "last_date": _date(last_date, "--last-date")}
    try:
        options = Sentinel1Options.model_validate(
            {**options.model_dump(), **{k: v for k, v in dates.items() if v is not None}})
    except ValueError as exc:
        _fail(str(exc).splitlines()[-1] if "\n" in str(exc) else str(exc))
    aoi = aoi or AreaOfInterest(name=products_dir.name)
    work = work or out.with_name(f".{out.stem}-work")
    started = time.time()
    try:
        with progress_output(enabled=not quiet):
            report = sentinel1_from_products(
                products_dir, out, options, aoi, wavelength, work, alos2_rate, lband_inc, gacos,
                ground_ice, title or f"Sentinel-1 time series of {products_dir.name}",
                lband_quantity=lband_quantity, drawing=drawing)
    except InputError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {out} ({report.n_dates} dates, {report.n_pairs_used} interferograms, "
               f"{len(report.rejected_pairs)} rejected by loop closure, constraint "
               f"{report.constraint['model']}, velocity reference "
               f"{report.constraint['velocity_reference']}) in {time.time() - started:.0f} s")
    if not quiet:
        m, r = report.mask, report.reference_date
        if m:
            share = m["n_trusted"] / max(m["n_solved"], 1)
            reasons = ", ".join(f"{k} {v}" for k, v in m["masked_by"].items() if v)
            typer.echo(f"  series relative to {r.get('date')} ({r.get('how')}); "
                       f"{m['n_trusted']} of {m['n_solved']} solved pixels trusted "
                       f"({share:.1%}); masked: {reasons or 'none'}")
    global _SKIP_TEARDOWN
    _SKIP_TEARDOWN = True  # the product, figures and work stores are written and closed


@app.command("lband-rate")
def lband_rate(
    pairs_dir: Annotated[Path, typer.Argument(help="Folder of pair GeoTIFFs + JSON sidecars.")],
    out: Annotated[Path, typer.Option("--out", help="Output GeoTIFF (mm/yr).")],
    sensor: Annotated[str, typer.Option(help="Platform of the pairs to use.")] = "ALOS-2",
    min_span_days: Annotated[float | None, typer.Option(
        help=_s1_help("velocity_reference_min_span_days"))] = None,
    study: Annotated[Path | None, typer.Option(
        "--study", help="Study TOML whose [sentinel1] options (coherence threshold, ramp, "
        "stable ground) to use.")] = None,
    gacos: Annotated[Path | None, typer.Option("--gacos", help="Folder of GACOS .ztd files.")
                     ] = None,
    ground_ice: Annotated[Path | None, typer.Option(
        "--ground-ice", help="Ground-ice GeoTIFF (stable ground = ice-poor pixels).")] = None,
) -> None:
    """Mean annual LOS rate of a sensor's long pairs, as a GeoTIFF for `talik sentinel1`.

    The pairs get the post-processing the monitor flow gives them (coherence mask, GACOS where
    delays exist for both dates, ramp fitted on stable ground, stable ground at zero), by the
    same function; the map stays on the pairs' grid, in the sensor's own LOS.
    """
    import tempfile

    import numpy as np
    import xarray as xr
    from rasterio.enums import Resampling

    from talik.config import Sentinel1Options
    from talik.errors import InputError
    from talik.science.interferogram import stable_ground
    from talik.science.velocity_reference import lband_rate
    from talik.tasks.readers.pairs import find_pairs
    from talik.tasks.readers.raster import read_raster
    from talik.tasks.stage import grid_of_raster, on_grid, pairs_on_grid, write_gacos_store

    options = _load(study).sentinel1 if study is not None else Sentinel1Options()
    if min_span_days is not None:
        options = options.model_copy(update={"velocity_reference_min_span_days": min_span_days})
    try:
        found = [(p, m) for p, m in find_pairs(pairs_dir) if m.sensor == sensor]
        if not found:
            _fail(f"{pairs_dir}: no pairs of sensor {sensor!r}")
        grid = grid_of_raster(found[0][0])
        pairs = pairs_on_grid(found, grid)
        stable = None
        if ground_ice is not None:
            ice = on_grid(read_raster(ground_ice, "1"), grid, Resampling.bilinear)
            stable = stable_ground(ice, options.stable_max_ground_ice)
        delays = None
        if gacos is not None and options.gacos:
            dates = sorted({m.reference_date for _, m in found} | {m.secondary_date for _, m in found})
            with tempfile.TemporaryDirectory() as tmp:
                write_gacos_store(gacos, dates, grid, Path(tmp) / "gacos.zarr")
                with xr.open_zarr(Path(tmp) / "gacos.zarr") as g:
                    delays = g["ztd_m"].load()
        incidence = float(found[0][1].incidence_deg)
        rate = lband_rate(pairs, sensor, options.velocity_reference_min_span_days,
                          options.coherence_threshold, incidence, stable, options.ramp,
                          delays).compute()
    except InputError as exc:
        _fail(str(exc))
    rate = rate.astype("float32").rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    rate = rate.rio.write_nodata(np.nan)
    rate.attrs = {"quantity": "los_rate", "incidence_deg": incidence, "units": "mm/yr",
                  "sensor": sensor, "n_pairs": int(rate.attrs.get("n_pairs", 0))}
    out.parent.mkdir(parents=True, exist_ok=True)
    rate.rio.to_raster(out, tags=rate.attrs)
    typer.echo(f"wrote {out}: mean annual LOS rate of {rate.attrs['n_pairs']} {sensor} pairs "
               f"(coherence ≥ {options.coherence_threshold}, ramp {options.ramp}, "
               f"GACOS {'applied' if delays is not None else 'not applied'}, stable ground "
               f"{'from the ground-ice map' if stable is not None else 'the whole scene'})")


def _months(text: str) -> list[int]:
    months: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = (int(v) for v in part.split("-"))
            months += list(range(a, b + 1)) if a <= b else list(range(a, 13)) + list(range(1, b + 1))
        else:
            months.append(int(part))
    return months


@app.command()
def recession(
    discharge: Annotated[Path, typer.Argument(help="Daily discharge table (CSV or text).")],
    out: Annotated[Path, typer.Option("--out", help="Output CSV, one row per window.")],
    window_years: Annotated[int, typer.Option(help="Moving-window length, years.")] = 5,
    months: Annotated[str, typer.Option(help="Months of recession points, e.g. 8-10.")] = "8-10",
    min_days: Annotated[int, typer.Option(help="Minimum consecutive declining days (steps).")
                        ] = 7,
    date_col: Annotated[str, typer.Option(help="Date column, or year,month,day columns.")
                        ] = "date",
    flow_col: Annotated[str, typer.Option(help="Flow column.")] = "discharge_m3s",
    units: Annotated[str, typer.Option(help="Flow units: m3/s, m3/d, cfs or mm/d.")] = "m3/s",
    area_km2: Annotated[float | None, typer.Option(help="Basin area, km² (for mm/d).")] = None,
    flow_units: Annotated[str, typer.Option(help="Units to fit in: mm/d or m3/s.")] = "mm/d",
    date_format: Annotated[str | None, typer.Option(help="strptime format of the dates.")
                           ] = None,
    sep: Annotated[str, typer.Option(help="Field separator; 'whitespace' for any.")] = ",",
    no_header: Annotated[bool, typer.Option(help="The file has no header line.")] = False,
    names: Annotated[str | None, typer.Option(help="Comma-separated column names (with "
                                                   "--no-header).")] = None,
    difference: Annotated[str, typer.Option(help="brutsaert_nieber or backward.")
                          ] = "brutsaert_nieber",
    exclude_peak: Annotated[bool, typer.Option(help="Drop each run's first step.")] = False,
    select: Annotated[str, typer.Option(help="clip: detect on the whole record, keep the "
                                             "months; mask: blank other months first.")] = "clip",
    min_points: Annotated[int, typer.Option(help="Fewer points = 'insufficient'.")] = 10,
) -> None:
    """Recession time constant Ks in moving windows from a daily discharge record."""
    from pydantic import ValidationError

    from talik.config import DischargeFile, RecessionOptions
    from talik.errors import InputError
    from talik.tasks.recession import KS_COLUMNS, analyse_recession, read_discharge_file

    if flow_units == "mm/d" and units != "mm/d" and area_km2 is None:
        flow_units = "m3/s"
        typer.secho("no --area-km2: fitting flows in m3/s", fg=typer.colors.YELLOW, err=True)
    try:
        spec = DischargeFile(
            path=discharge,
            date_column=date_col.split(",") if "," in date_col else date_col,
            flow_column=flow_col, units=units, basin_area_km2=area_km2,
            date_format=date_format, sep=None if sep == "whitespace" else sep,
            header=not no_header, column_names=names.split(",") if names else None)
        options = RecessionOptions(min_recession_days=min_days, months=_months(months),
                                   exclude_peak=exclude_peak, difference=difference,
                                   window_years=[window_years], main_window_years=window_years,
                                   min_points=min_points, flow_units=flow_units, select=select)
    except ValidationError as exc:
        _fail(f"invalid option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    try:
        record = read_discharge_file(spec)
        points, windows, unit = analyse_recession(record, options)
    except InputError as exc:
        _fail(str(exc))
    table = windows[windows["window_years"] == window_years]
    extra = ["q_median", "tau_median_days", "b_ci_low", "b_ci_high", "status"]
    out.parent.mkdir(parents=True, exist_ok=True)
    table[KS_COLUMNS + extra].to_csv(out, index=False)
    ok = table[table["status"] == "ok"]
    typer.echo(f"wrote {out}: {len(table)} windows of {window_years} years ({len(ok)} fitted), "
               f"{len(points)} recession points in {points['event'].nunique()} events; "
               f"record: {record.counts}")


_SKIP_TEARDOWN = False
"""Set by a command that finished with everything written and closed (see :func:`main`)."""


def _exit_without_teardown() -> None:
    """End the process now, after what an exit must still do, without interpreter teardown.

    What a normal exit does first still happens, in its order: threads are joined (thread
    pools finish their queued work: ``threading._shutdown``), then the exit handlers run
    (logging's flush among them), and the standard streams are flushed. Only the finalisation
    of every remaining object and module is skipped, which after a run that held a few GB
    took 0.45 s of a 12 s `talik sentinel1` (the 500² benchmark). Only for commands whose
    files are all closed when they return (C libraries' own exit handlers do not run).
    """
    import atexit
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    # (CPython's own steps of an exit, private: multiprocessing's children call the first)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    """Entry point of the ``talik`` script."""
    global _SKIP_TEARDOWN
    _SKIP_TEARDOWN = False  # (set again by the command that allows it)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit as done:
        if _SKIP_TEARDOWN and done.code in (0, None):
            _exit_without_teardown()
        raise
    if _SKIP_TEARDOWN:
        _exit_without_teardown()
