"""Benchmark of talik's NSBAS inversion and of the whole `talik sentinel1` chain.

Prints wall time, pixel·interferogram throughput and peak resident memory (RSS) of:

1. the inversion alone on a synthetic staged stack (N×N pixels, 200 dates, 4 neighbours per
   date, spatially correlated coherence masks, a winter gap every year), for N = 1000 and 2000
   (peak RSS must not grow with the image);
2. the inversion on the size of the reference Rust SBAS run (500 × 500 pixels, 590
   interferograms, 150 dates);
3. the whole chain from HyP3 product files (`talik sentinel1` with GACOS, a ground-ice map and
   an ALOS-2 rate map), on a demo world of 1000 × 1000 pixels and about 200 dates.

Each measured phase runs in its own process, so its peak RSS is its own. Inputs are generated
once into ``--workdir`` (several GB) and reused.

    .venv/bin/python benchmarks/inversion.py                # everything
    .venv/bin/python benchmarks/inversion.py --only inversion --sizes 1000
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


def run_inversion(path: Path, model: str, in_memory: bool) -> dict:
    """Invert a stack; time the solve in memory, or the whole read → invert → write path."""
    import xarray as xr

    from talik.science.interferogram import mask_incoherent
    from talik.science.inversion import ConstraintSpec, invert_nsbas, solve_nsbas
    from talik.science.network import Network
    from talik.tasks.zarr_io import write_zarr_by_tiles

    stack = xr.open_zarr(path, chunks={"pair": -1, "y": CHUNK, "x": CHUNK})
    spec = ConstraintSpec(model, 1e-4)
    # Load the compiled kernel before timing (numba caches it on disk after the first run).
    solve_nsbas(np.zeros((stack.sizes["pair"], 2), np.float32), Network.from_stack(stack), spec,
                pair_major=True)
    los = mask_incoherent(stack["los_mm"], stack["coherence"], 0.3)
    if in_memory:  # the solve alone: masked interferograms already in RAM, result kept in RAM
        los = los.compute().chunk({"y": CHUNK, "x": CHUNK})
        start = time.perf_counter()
        result = invert_nsbas(los, spec, min_valid=10).compute()
        wall = time.perf_counter() - start
    else:  # from the staged Zarr store to a time-series Zarr store
        result = invert_nsbas(los, spec, min_valid=10)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            start = time.perf_counter()
            write_zarr_by_tiles(result, Path(tmp) / "ts.zarr")
            wall = time.perf_counter() - start
    return {"wall_s": wall, "pixels": stack.sizes["y"] * stack.sizes["x"],
            "pairs": stack.sizes["pair"], "dates": result.sizes["time"]}


def make_world(raw: Path, size: int) -> None:
    """A demo world of ``size``² pixels and about 200 dates, written as HyP3 products."""
    from talik.config import WorldSource
    from talik.world import generate_world

    source = WorldSource(raw_dir=raw, ny=size, nx=size, s1_start=dt.date(2015, 3, 20),
                         s1_end=dt.date(2025, 11, 10), neighbours=4, hydro_start_year=2000,
                         hydro_end_year=2012)
    generate_world(source, geometry_in_every_product=False)


def run_chain(raw: Path, out: Path) -> dict:
    from typer.testing import CliRunner

    from talik.cli import app

    runner = CliRunner()
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = out.parent / "alos2_rate.tif"
    res = runner.invoke(app, ["lband-rate", str(raw / "pairs"), "--out", str(rate)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
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


def _child(args: list[str]) -> dict:
    """Run a phase in a fresh process; return its JSON result plus its own peak RSS."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _phase(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "make-stack":
        out = make_stack(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]),
                         gap_days=int(rest[4]) if len(rest) > 4 else 125)
    elif kind == "invert":
        out = run_inversion(Path(rest[0]), rest[1], rest[2] == "memory")
    elif kind == "make-world":
        make_world(Path(rest[0]), int(rest[1]))
        out = {}
    elif kind == "chain":
        out = run_chain(Path(rest[0]), Path(rest[1]))
    else:
        raise SystemExit(f"unknown phase {kind}")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _line(label: str, r: dict) -> str:
    rate = r["pixels"] * r["pairs"] / r["wall_s"]
    return (f"{label:<46} {r['wall_s']:8.1f} s  {rate / 1e6:8.1f} M pixel·ifg/s  "
            f"peak RSS {r['peak_rss_mb']:7.0f} MiB  ({r['pixels'] / 1e6:.2f} M px, "
            f"{r['pairs']} ifgs, {r['dates']} dates)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        _phase(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--dates", type=int, default=200)
    parser.add_argument("--neighbours", type=int, default=4)
    parser.add_argument("--chain-size", type=int, default=1000)
    parser.add_argument("--only", choices=["inversion", "rust", "chain"], nargs="+",
                        default=["inversion", "rust", "chain"])
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    print(f"machine: {os.cpu_count()} cores; dask threaded scheduler; numba kernel")
    results = []
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
                results.append(_line(f"inversion {size}², {label}", r))
                print(results[-1], flush=True)
    if "rust" in args.only:
        # The reference run: a connected network (no winter gap), 590 interferograms.
        path = args.workdir / "stack_500_150_4_nogap.zarr"
        if not path.exists():
            _child(["--phase", "make-stack", str(path), "500", "150", "4", "0"])
        _child(["--phase", "invert", str(path), "linear", "memory"])  # warm the file cache
        for model in ("none", "linear_periodic"):
            for mode in ("memory", "zarr"):
                r = _child(["--phase", "invert", str(path), model, mode])
                label = "in memory" if mode == "memory" else "Zarr → Zarr"
                results.append(_line(f"500² {model}, {label} (Rust: 10.6 s)", r))
                print(results[-1], flush=True)
    if "chain" in args.only:
        raw = args.workdir / f"world_{args.chain_size}"
        if not (raw / "world.json").exists():
            print(f"generating a {args.chain_size}² demo world (not timed) ...", flush=True)
            _child(["--phase", "make-world", str(raw), str(args.chain_size)])
        r = _child(["--phase", "chain", str(raw), str(args.workdir / "chain" / "out.nc")])
        results.append(_line(f"whole `talik sentinel1` chain {args.chain_size}²", r))
        print(results[-1], flush=True)
        print("   ", r["output"])


if __name__ == "__main__":
    main()
