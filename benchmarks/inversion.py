"""Benchmark of talik's NSBAS inversion and of the whole `talik sentinel1` chain.

Prints wall time, pixel·interferogram throughput and peak resident memory (RSS) of:

1. the inversion alone on a synthetic staged stack (N×N pixels, 200 dates, 4 neighbours per
   date, spatially correlated coherence masks, a winter gap every year), for N = 1000 and 2000
   (peak RSS must not grow with the image);
2. ``peer``: talik against the Rust SBAS engine insar-rs (``pip install -e '.[bench]'``), both
   run here, in the same run, on one 500 × 500 pixel stack of 590 interferograms and 150 dates
   (a connected network: insar-rs refuses one split by winter gaps). talik's in-memory solve
   for each constraint (``none``, ``linear``, ``linear_periodic``, ``linear_periodic`` with a
   per-pixel ``v_ref``), and insar-rs's read (the same Zarr store, into numpy) + unweighted
   least-squares solve (``insar_rs.invert_sbas``), on the coherence-masked interferograms and
   on the unmasked ones; every line prints the ratio talik/peer (< 1: talik is faster).
   insar-rs computes and keeps one pseudo-inverse (an SVD of the 590 × 149 design matrix,
   0.7 MB) per distinct pattern of valid interferograms; the benchmark counts the patterns
   first and runs it on the masked stack only if they fit in half the memory;
3. the whole chain from HyP3 product files (`talik sentinel1` with GACOS, a ground-ice map and
   an ALOS-2 rate map), on a demo world of 1000 × 1000 pixels and about 200 dates (``chain``,
   in-process, start-up not included; the ALOS-2 rate map is made beforehand by
   ``talik lband-rate`` in its own process, so the peak RSS is the chain's);
4. ``cli``: the same chain as a user runs it, ``.venv/bin/talik sentinel1 …`` in a subprocess
   timed whole (interpreter start-up, imports, numba cache load included), on a demo world of
   500 × 500 pixels and ~500 HyP3 product folders (~185 dates, each date paired with its next
   3). insar-rs has no reader of HyP3 products (its Python API reads ISCE ``.unw`` folders or
   numpy arrays) and inverts only connected networks, so it is not run on that chain.

Each measured phase runs in its own process, so its peak RSS is its own. Inputs are generated
once into ``--workdir`` (several GB) and reused.

    .venv/bin/python benchmarks/inversion.py                # everything
    .venv/bin/python benchmarks/inversion.py --only inversion --sizes 1000
    .venv/bin/python benchmarks/inversion.py --only peer cli
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHUNK = 256


def _dates(n_dates: int, gap_days: int = 125) -> np.ndarray:
    """``n_dates`` 12-day acquisitions, skipping a winter gap of ``gap_days`` each year."""
    out, day = [], np.datetime64("2015-04-01")
    while len(out) < n_dates:
        doy = (day - day.astype("datetime64[Y]")).astype(int)
        if gap_days == 0 or not (doy > 320 or doy < 320 + gap_days - 365):
            out.append(day)
        day = day + np.timedelta64(12, "D")
    return np.array(out)


def _pairs(dates: np.ndarray, neighbours: int) -> list[tuple[int, int]]:
    """Each date to its next ``neighbours`` dates, except across a winter gap."""
    return [(i, j) for i in range(len(dates)) for j in range(i + 1, min(i + 1 + neighbours, len(dates)))
            if (dates[j] - dates[i]).astype(int) <= 12 * neighbours]


def make_stack(path: Path, size: int, n_dates: int, neighbours: int, seed: int = 1,
               gap_days: int = 125) -> dict:
    """A staged-like Zarr stack: ``los_mm``/``coherence (pair, y, x)``, written tile by tile."""
    import dask.array as da
    import xarray as xr
    from scipy.ndimage import map_coordinates

    from talik.tasks.zarr_io import write_zarr

    dates = _dates(n_dates, gap_days)
    pairs = _pairs(dates, neighbours)
    rng = np.random.default_rng(seed)
    m = len(pairs)
    t = (dates - dates[0]).astype(float) / 365.25
    coarse = 24  # coherence varies on ~size/24-pixel scales (several km at 80 m)
    n_basis = 16  # each pair's coherence field mixes these smooth random fields
    basis = rng.normal(0, 1, (n_basis, coarse, coarse))
    mixing = rng.normal(0, 1, (m, n_basis)) / np.sqrt(n_basis)
    v_field = rng.normal(0, 1, (coarse, coarse))
    a_field = rng.normal(0, 1, (coarse, coarse))
    ref = np.array([p[0] for p in pairs])
    sec = np.array([p[1] for p in pairs])
    span = (dates[sec] - dates[ref]).astype(float)

    def tile(block_id=None, kind="los"):
        iy, ix = block_id[1], block_id[2]
        y0, x0 = iy * CHUNK, ix * CHUNK
        ny, nx = min(CHUNK, size - y0), min(CHUNK, size - x0)
        yy, xx = np.meshgrid((np.arange(ny) + y0) / size * (coarse - 1),
                             (np.arange(nx) + x0) / size * (coarse - 1), indexing="ij")
        coords = np.stack([yy.ravel(), xx.ravel()])
        local = np.random.default_rng(seed * 7919 + iy * 1000 + ix)
        smooth = np.stack([map_coordinates(f, coords, order=1) for f in basis])  # (basis, px)
        base = (mixing @ smooth).reshape(m, ny, nx)
        coh = 0.12 + 0.8 * np.exp(-span[:, None, None] / 70.0) * (1 + 0.25 * base)
        if kind == "coh":
            return np.clip(coh, 0, 1).astype(np.float32)
        v = -8 * np.clip(map_coordinates(v_field, coords, order=1).reshape(ny, nx), 0, None)
        amp = 20 * np.clip(1 + map_coordinates(a_field, coords, order=1).reshape(ny, nx), 0, None)
        u = v[None] * t[:, None, None] - amp[None] * np.maximum(0, np.sin(2 * np.pi * t))[:, None, None]
        d = u[sec] - u[ref] + local.normal(0, 2, (m, ny, nx))
        return d.astype(np.float32)

    shape = (m, size, size)
    chunks = ((m,), *(tuple(min(CHUNK, size - s) for s in range(0, size, CHUNK)),) * 2)
    los = da.map_blocks(tile, chunks=chunks, dtype=np.float32, kind="los")
    coh = da.map_blocks(tile, chunks=chunks, dtype=np.float32, kind="coh")
    assert los.shape == shape
    ds = xr.Dataset(
        {"los_mm": (("pair", "y", "x"), los), "coherence": (("pair", "y", "x"), coh)},
        coords={"reference_date": ("pair", dates[ref].astype("datetime64[ns]")),
                "secondary_date": ("pair", dates[sec].astype("datetime64[ns]")),
                "y": 4.2e6 - 80.0 * np.arange(size), "x": 5.0e5 + 80.0 * np.arange(size)},
    )
    enc = {"coherence": {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": 255}}
    tmp = path.with_name(path.name + ".partial")
    write_zarr(ds.chunk({"pair": 32, "y": CHUNK, "x": CHUNK}), tmp, mode="w", encoding=enc)
    tmp.rename(path)  # only a complete stack gets the final name
    return {"n_dates": len(dates), "n_pairs": m}


MODELS = ("none", "linear", "linear_periodic", "linear_periodic_vref")
"""The constraints timed against the peer; ``linear_periodic_vref`` is ``linear_periodic`` with
the rate fixed to a per-pixel reference ``v_ref``."""
COHERENCE_THRESHOLD = 0.3
S1_WAVELENGTH_M = 0.055465763  # as talik.world.sentinel1 (not imported: the peer's process
# loads neither talik nor numba)


def _spec(model: str):
    from talik.science.inversion import ConstraintSpec

    if model == "linear_periodic_vref":
        return ConstraintSpec("linear_periodic", 1e-4, velocity_reference=True)
    return ConstraintSpec(model, 1e-4)


def _v_ref(ny: int, nx: int) -> np.ndarray:
    """A smooth per-pixel reference rate, mm/yr (its values do not change the work)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    return -8.0 * np.clip(np.sin(3 * yy) * np.cos(2 * xx), 0, None) - 0.5


def run_inversion(path: Path, model: str, mode: str) -> dict:
    """Invert a stack; time the solve in memory, or the whole read → invert → write path.

    ``mode``: ``memory`` (masked interferograms already in RAM, result kept in RAM),
    ``memory-nomask`` (the same, without the coherence mask: the peer's input) or ``zarr``
    (from the staged Zarr store to a time-series Zarr store).
    """
    import xarray as xr

    from talik.science.interferogram import mask_incoherent
    from talik.science.inversion import invert_nsbas, solve_nsbas
    from talik.science.network import Network
    from talik.tasks.zarr_io import write_zarr_by_tiles

    stack = xr.open_zarr(path, chunks={"pair": -1, "y": CHUNK, "x": CHUNK})
    spec = _spec(model)
    ny, nx = stack.sizes["y"], stack.sizes["x"]
    v_ref = None
    if spec.velocity_reference:
        v_ref = xr.DataArray(_v_ref(ny, nx), dims=("y", "x"),
                             coords={"y": stack["y"], "x": stack["x"]})
    # Load the compiled kernel before timing (numba caches it on disk after the first run).
    solve_nsbas(np.zeros((stack.sizes["pair"], 2), np.float32), Network.from_stack(stack), spec,
                v_ref=None if v_ref is None else np.zeros(2), pair_major=True)
    if mode == "memory-nomask":
        los = stack["los_mm"]
    else:
        los = mask_incoherent(stack["los_mm"], stack["coherence"], COHERENCE_THRESHOLD)
    if mode.startswith("memory"):
        # The masked stack held in memory in its tiles, as read from the store (each tile one
        # contiguous array): the time is the solve and the assembly of its outputs only.
        los = los.persist()
        walls = []
        for _ in range(3):  # the best of three in this process: the kernel, not the allocator
            start = time.perf_counter()
            result = invert_nsbas(los, spec, v_ref=v_ref, min_valid=10).compute()
            walls.append(time.perf_counter() - start)
            del result
        result = invert_nsbas(los, spec, v_ref=v_ref, min_valid=10)
        wall = min(walls)
    else:
        result = invert_nsbas(los, spec, v_ref=v_ref, min_valid=10)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            start = time.perf_counter()
            write_zarr_by_tiles(result, Path(tmp) / "ts.zarr")
            wall = time.perf_counter() - start
    return {"wall_s": wall, "pixels": ny * nx, "pairs": stack.sizes["pair"],
            "dates": result.sizes["time"]}


def _n_patterns(valid: np.ndarray) -> int:
    """Distinct patterns of valid interferograms among the pixels of a ``(pair, pixel)`` mask."""
    packed = np.ascontiguousarray(np.packbits(valid, axis=0).T)
    return len(np.unique(packed.view(np.dtype((np.void, packed.shape[1])))))


def _peer_network(stack) -> tuple[list[int], list[int], list[int]]:
    """The pairs as date indices and the dates as day numbers, as ``insar_rs`` takes them."""
    ref = stack["reference_date"].values.astype("datetime64[D]")
    sec = stack["secondary_date"].values.astype("datetime64[D]")
    dates = np.unique(np.concatenate([ref, sec]))
    days = (dates - dates[0]).astype(np.int64)
    return (np.searchsorted(dates, ref).tolist(), np.searchsorted(dates, sec).tolist(),
            days.tolist())


def run_peer(path: Path, masked: bool) -> dict:
    """insar-rs on the stack: read the Zarr store into numpy phase, then its SBAS solve.

    insar-rs takes unwrapped phase (rad) with ``d = −λ/(4π)·φ`` and returns metres; the
    staged ``los_mm`` (mm, + toward the satellite) is converted accordingly while read, and
    with ``masked`` set to NaN where the coherence is below the threshold, as talik masks it.
    After the timing, a strip of its solution is compared with talik's ``none`` model (a check
    that the two solve the same problem, not part of the timing).
    """
    try:
        import insar_rs
    except ImportError as exc:
        return {"installed": False, "reason": f"{exc}"}
    import xarray as xr

    stack = xr.open_zarr(path)
    m, ny, nx = (stack.sizes[d] for d in ("pair", "y", "x"))
    refs, secs, days = _peer_network(stack)
    out = {"installed": True, "version": insar_rs.__version__, "pixels": ny * nx, "pairs": m,
           "dates": len(days), "masked": masked}
    if masked:  # counted before: insar-rs keeps one (N−1) × M float64 matrix per pattern
        valid = (stack["coherence"] >= COHERENCE_THRESHOLD).values.reshape(m, -1)
        out["patterns"] = _n_patterns(valid)
        out["complete_fraction"] = float(valid.all(axis=0).mean())
        out["pinv_gb"] = out["patterns"] * (len(days) - 1) * m * 8 / 1e9
        del valid
        ram_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        if out["pinv_gb"] > ram_gb / 2:
            out["skipped"] = (f"{out['patterns']:,} patterns would need {out['pinv_gb']:.0f} GB "
                              f"of pseudo-inverses ({ram_gb:.0f} GB here)")
            return out
    to_phase = np.float32(-4 * np.pi / (S1_WAVELENGTH_M * 1000))
    start = time.perf_counter()
    stack = xr.open_zarr(path)
    phase = stack["los_mm"].values  # (pair, y, x) float32
    for i in range(0, m if masked else 0, 32):  # as talik.science.interferogram.mask_incoherent
        coherent = stack["coherence"][i : i + 32].values >= COHERENCE_THRESHOLD
        phase[i : i + 32][~coherent] = np.nan
    phase *= to_phase
    read = time.perf_counter() - start
    start = time.perf_counter()
    series = insar_rs.invert_sbas(phase, refs, secs, days, wavelength_m=S1_WAVELENGTH_M)
    solve = time.perf_counter() - start
    out.update(read_s=read, solve_s=solve, wall_s=read + solve,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               solved_fraction=float(np.isfinite(series[-1]).mean()))

    from talik.science.inversion import ConstraintSpec, solve_nsbas
    from talik.science.network import Network

    rows = 4
    strip = phase[:, :rows, :].reshape(m, -1) / to_phase
    talik = solve_nsbas(strip, Network.from_stack(stack), ConstraintSpec("none", 1e-4),
                        pair_major=True)["displacement"]  # (P, N) mm from the first date
    peer = series[:, :rows, :].reshape(series.shape[0], -1).T * 1000.0
    out["max_diff_mm"] = float(np.nanmax(np.abs(peer - talik)))
    return out


def make_world(raw: Path, size: int, end: str = "2025-11-10", neighbours: int = 4) -> None:
    """A demo world of ``size``² pixels, from 2015-03-20 to ``end``, written as HyP3 products."""
    from talik.config import WorldSource
    from talik.world import generate_world

    source = WorldSource(raw_dir=raw, ny=size, nx=size, s1_start=dt.date(2015, 3, 20),
                         s1_end=dt.date.fromisoformat(end), neighbours=neighbours,
                         hydro_start_year=1990, hydro_end_year=2012)
    generate_world(source, geometry_in_every_product=False)


def run_chain(raw: Path, out: Path) -> dict:
    from typer.testing import CliRunner

    from talik.cli import app

    runner = CliRunner()
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = out.parent / "alos2_rate.tif"
    # The L-band rate map is an input of the chain, made in its own process (not timed): its
    # peak memory is that command's (``talik lband-rate``), not the chain's.
    subprocess.run([str(_talik_script()), "lband-rate", str(raw / "pairs"), "--out", str(rate)],
                   check=True, capture_output=True)
    start = time.perf_counter()
    res = runner.invoke(app, ["sentinel1", str(raw / "hyp3"), "--out", str(out),
                              "--alos2-rate", str(rate), "--gacos", str(raw / "gacos"),
                              "--ground-ice", str(raw / "ground_ice.tif"),
                              "--work", str(out.parent / "chain-work")], catch_exceptions=False)
    wall = time.perf_counter() - start
    assert res.exit_code == 0, res.output
    world = json.loads((raw / "world.json").read_text())
    return {"wall_s": wall, "pixels": world["s1_grid"]["nx"] * world["s1_grid"]["ny"],
            "pairs": world["s1_network"]["n_pairs"], "dates": world["s1_network"]["n_dates"],
            "output": res.output.strip()}


def _talik_script() -> Path:
    return Path(sys.executable).with_name("talik")


def sentinel1_command(raw: Path, out: Path) -> list[str]:
    """The `talik sentinel1` command line of the ``cli`` case (also what to profile)."""
    return [str(_talik_script()), "sentinel1", str(raw / "hyp3"), "--out", str(out),
            "--alos2-rate", str(out.parent / "alos2_rate.tif"), "--gacos", str(raw / "gacos"),
            "--ground-ice", str(raw / "ground_ice.tif"), "--work", str(out.parent / "work")]


def run_cli_chain(raw: Path, out: Path) -> dict:
    """`talik sentinel1` as a user runs it: a subprocess, timed whole, from a clean work folder."""
    import shutil

    out.parent.mkdir(parents=True, exist_ok=True)
    rate = out.parent / "alos2_rate.tif"
    if not rate.exists():  # not timed
        subprocess.run([str(_talik_script()), "lband-rate", str(raw / "pairs"), "--out",
                        str(rate)], check=True, capture_output=True)
    for old in (out.parent / "work", out.with_name(out.stem + "_figures")):
        shutil.rmtree(old, ignore_errors=True)
    out.unlink(missing_ok=True)
    cmd = sentinel1_command(raw, out)
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    world = json.loads((raw / "world.json").read_text())
    return {"wall_s": wall, "pixels": world["s1_grid"]["nx"] * world["s1_grid"]["ny"],
            "pairs": world["s1_network"]["n_pairs"], "dates": world["s1_network"]["n_dates"],
            "n_products": len(list((raw / "hyp3").iterdir())),
            "n_parts": len(world["s1_network"]["winter_gaps"]) + 1,
            "command_peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "command": " ".join(cmd), "output": output.strip()}


REPEAT = 1  # --repeat: each timed phase runs this many times; the fastest run is kept


def _best(args: list[str], key: str = "wall_s") -> dict:
    """The fastest of ``REPEAT`` runs of a phase (on a shared machine, the least disturbed)."""
    runs = [_child(args) for _ in range(REPEAT)]
    best = min(runs, key=lambda r: r.get(key, 0.0))
    best["runs"] = len(runs)
    return best


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


_CHILD_ENV = {**os.environ,
              "NUMPY_MADVISE_HUGEPAGE": os.environ.get("NUMPY_MADVISE_HUGEPAGE", "0")}
"""Every phase (peer included) runs as the ``talik`` command does: numpy's huge-page advice
off unless set otherwise (talik/cli.py says why)."""


def _child(args: list[str]) -> dict:
    """Run a phase in a fresh process; return its JSON result plus its own peak RSS.

    Also ``others_cpu``: the share of the machine's cores that other processes kept busy
    meanwhile (this machine is shared; a busy one makes every time longer).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        busy, start = _busy_cpu_s(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=err,
                                text=True, env=_CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        others = _busy_cpu_s() - busy - usage.ru_utime - usage.ru_stime
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(stdout + stderr)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["others_cpu"] = max(0.0, others) / (wall * (os.cpu_count() or 1))
    return result


def _phase(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "make-stack":
        out = make_stack(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]),
                         gap_days=int(rest[4]) if len(rest) > 4 else 125)
    elif kind == "invert":
        out = run_inversion(Path(rest[0]), rest[1], rest[2])
    elif kind == "peer":
        out = run_peer(Path(rest[0]), rest[1] == "masked")
    elif kind == "make-world":
        make_world(Path(rest[0]), int(rest[1]), *rest[2:3], *(int(v) for v in rest[3:4]))
        out = {}
    elif kind == "chain":
        out = run_chain(Path(rest[0]), Path(rest[1]))
    elif kind == "cli":
        out = run_cli_chain(Path(rest[0]), Path(rest[1]))
    else:
        raise SystemExit(f"unknown phase {kind}")
    out.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


def _line(label: str, r: dict) -> str:
    rate = r["pixels"] * r["pairs"] / r["wall_s"]
    return (f"{label:<46} {r['wall_s']:8.2f} s  {rate / 1e6:8.1f} M pixel·ifg/s  "
            f"peak RSS {r['peak_rss_mb']:7.0f} MiB  ({r['pixels'] / 1e6:.2f} M px, "
            f"{r['pairs']} ifgs, {r['dates']} dates; others {r['others_cpu']:.0%} CPU)")


def _vs_peer(talik_s: float, peer: dict) -> str:
    if not peer.get("installed"):
        return "  talik/peer: peer not installed"
    if "solve_s" not in peer:
        return "  talik/peer: peer not run (see above)"
    return (f"  talik/peer {talik_s / peer['solve_s']:5.2f} (solve), "
            f"{talik_s / peer['wall_s']:5.2f} (peer read+solve)")


def peer_case(workdir: Path) -> list[str]:
    """talik and insar-rs on the same 500² stack, in this run."""
    lines = []

    def say(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    # A connected network (no winter gap): 590 interferograms, 150 dates.
    path = workdir / "stack_500_150_4_nogap.zarr"
    if not path.exists():
        _child(["--phase", "make-stack", str(path), "500", "150", "4", "0"])
    _child(["--phase", "invert", str(path), "linear", "memory"])  # warm the file cache
    peers = {}
    for label in ("masked", "no mask"):
        peer = peers[label] = _best(["--phase", "peer", str(path),
                                     "masked" if label == "masked" else "all"], key="solve_s")
        if not peer["installed"]:
            say(f"peer insar-rs: peer not installed ({peer['reason']}; pip install -e '.[bench]')")
            peers["no mask"] = peer
            break
        if label == "masked":
            say(f"masked stack: {peer['complete_fraction']:.1%} of pixels keep all "
                f"{peer['pairs']} ifgs; {peer['patterns']:,} distinct patterns of valid ifgs "
                f"→ {peer['pinv_gb']:.1f} GB of pseudo-inverses in insar-rs")
        if "skipped" in peer:
            say(f"peer insar-rs {peer['version']}, {label}: not run: {peer['skipped']}")
            continue
        say(_line(f"peer insar-rs {peer['version']} read + solve, {label}", peer))
        say(f"    read {peer['read_s']:.1f} s (Zarr → numpy phase) + solve {peer['solve_s']:.1f} s;"
            f" {peer['solved_fraction']:.1%} of pixels solved; max |insar-rs − talik none| = "
            f"{peer['max_diff_mm']:.2g} mm")
    for model, mode in [("none", "memory-nomask"), *((m, "memory") for m in MODELS)]:
        r = _best(["--phase", "invert", str(path), model, mode])
        label = "no mask" if mode == "memory-nomask" else "masked"
        say(_line(f"500² {model}, in memory, {label}", r) + _vs_peer(r["wall_s"], peers[label]))
    for model in ("none", "linear_periodic"):
        r = _best(["--phase", "invert", str(path), model, "zarr"])
        say(_line(f"500² {model}, Zarr → Zarr, masked", r) + "  (peer: no Zarr path)")
    return lines


def cli_case(workdir: Path, size: int, end: str, neighbours: int) -> list[str]:
    """`talik sentinel1` in a subprocess, start-up included, on HyP3 product folders."""
    raw = workdir / f"world_{size}_{end.replace('-', '')}_{neighbours}nb"
    if not (raw / "world.json").exists():
        print(f"generating a {size}² demo world to {end}, {neighbours} neighbours (not timed) ...",
              flush=True)
        _child(["--phase", "make-world", str(raw), str(size), end, str(neighbours)])
    r = _best(["--phase", "cli", str(raw), str(workdir / f"cli_{size}" / "out.nc")])
    r["peak_rss_mb"] = r["command_peak_rss_mb"]
    said = r["output"].splitlines()
    said = [t.strip() for t in said if t.startswith("wrote")] + said[-1:]
    lines = [_line(f"`talik sentinel1` command {size}², start-up incl.", r),
             f"    {r['n_products']} HyP3 product folders; CPU {r['cpu_s']:.0f} s (user + system)",
             *(f"    > {t.strip()}" for t in dict.fromkeys(said)),
             f"    $ {r['command']}",
             f"    peer: not run (insar-rs has no HyP3 product reader, and refuses a network "
             f"in {r['n_parts']} parts split by winter gaps)"]
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        _phase(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--dates", type=int, default=200)
    parser.add_argument("--neighbours", type=int, default=4)
    parser.add_argument("--chain-size", type=int, default=1000)
    parser.add_argument("--cli-size", type=int, default=500)
    parser.add_argument("--cli-end", default="2024-08-01",
                        help="last acquisition date of the `cli` world (2015-03-20 onwards)")
    parser.add_argument("--cli-neighbours", type=int, default=3)
    parser.add_argument("--only", choices=["inversion", "peer", "chain", "cli"], nargs="+",
                        default=["inversion", "peer", "chain", "cli"])
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each timed phase of `peer` and `cli`; the fastest is printed")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    print(f"machine: {os.cpu_count()} cores; dask threaded scheduler; numba kernel; "
          f"NUMPY_MADVISE_HUGEPAGE={_CHILD_ENV['NUMPY_MADVISE_HUGEPAGE']} in every phase"
          + (f"; fastest of {REPEAT} runs of each `peer`/`cli` phase" if REPEAT > 1 else ""))
    if "inversion" in args.only:
        for size in args.sizes:
            path = args.workdir / f"stack_{size}_{args.dates}_{args.neighbours}.zarr"
            if not path.exists():
                _child(["--phase", "make-stack", str(path), str(size), str(args.dates),
                        str(args.neighbours)])
            # Holding a whole stack in memory only makes sense up to 1000² (2.8 GB of data).
            modes = ("memory", "zarr") if size <= 1000 else ("zarr",)
            _child(["--phase", "invert", str(path), "linear", modes[0]])  # warm the file cache
            for mode in modes:
                r = _child(["--phase", "invert", str(path), "linear_periodic", mode])
                label = "solve in memory" if mode == "memory" else "Zarr → solve → Zarr"
                print(_line(f"inversion {size}², {label}", r), flush=True)
    if "peer" in args.only:
        peer_case(args.workdir)
    if "chain" in args.only:
        raw = args.workdir / f"world_{args.chain_size}"
        if not (raw / "world.json").exists():
            print(f"generating a {args.chain_size}² demo world (not timed) ...", flush=True)
            _child(["--phase", "make-world", str(raw), str(args.chain_size)])
        r = _child(["--phase", "chain", str(raw), str(args.workdir / "chain" / "out.nc")])
        print(_line(f"whole `talik sentinel1` chain {args.chain_size}²", r), flush=True)
        print("   ", r["output"])
    if "cli" in args.only:
        cli_case(args.workdir, args.cli_size, args.cli_end, args.cli_neighbours)


if __name__ == "__main__":
    main()
