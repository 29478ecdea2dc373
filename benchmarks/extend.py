"""Benchmark: extending a study by one month of new acquisitions against a full run.

On the 1000² × 212-date demo world of ``benchmarks/inversion.py`` (738 HyP3 products, 2015-03
to 2025-11, generated there by ``--only chain``), described as a local study:

1. ``full``: ``talik run`` of the whole study into an empty work folder;
2. ``extend``: in another empty work folder, ``talik run --until <last date − 1 month>``
   (not timed), then ``talik run`` (timed): the month's new products are staged, the series
   inverted again, the release published.

Each run is a separate ``talik run`` process (its own throwaway Prefect server), timed whole.
Prints both wall times, the ratio, the products staged by the timed run, the peak RSS and
the time of each step each run computed (the rest is start-up, Prefect and cached steps).

    .venv/bin/python benchmarks/extend.py [--workdir benchmarks/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _study(root: Path, raw: Path) -> Path:
    """The benchmark study as TOML: the world's inputs in their own layout."""
    from talik.config import (
        SENTINEL1_WAVELENGTH_M,
        AreaOfInterest,
        Sensor,
        Stores,
        StudyConfig,
        to_toml,
    )
    from talik.tasks.ingest.world import world_as_local

    root.mkdir(parents=True, exist_ok=True)
    path = root / "study.toml"
    path.write_text(to_toml(StudyConfig(
        name="extend-bench", title="one month more", aoi=AreaOfInterest(name="bench"),
        sensors={"sentinel1": Sensor(platform="Sentinel-1", band="C",
                                     wavelength_m=SENTINEL1_WAVELENGTH_M, incidence_deg=39.47,
                                     direction="descending", polarization="VV")},
        # Without the discharge record: the 1000² world of an earlier generator drew it
        # from too short a climate reference (negative flows, refused now); the recession
        # is a second's work either way.
        source=world_as_local(raw).model_copy(update={"discharge": None}),
        stores=Stores(work_dir=root / "work", release_dir=root / "releases"))))
    return path


def _talik() -> str:
    return str(Path(sys.executable).with_name("talik"))


STEP_TIME = re.compile(r"step ([\w-]+): ([\d.]+) s")


def _run(study: Path, *extra: str) -> dict:
    """One ``talik run`` in its own process: wall time and the steps it computed, with times."""
    start = time.perf_counter()
    proc = subprocess.run([_talik(), "run", str(study), *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"talik run {' '.join(extra)} failed:\n{proc.stdout}\n{proc.stderr}")
    steps = STEP_TIME.findall(proc.stdout + proc.stderr)
    return {"wall_s": wall, "steps": ", ".join(f"{name} {float(s):.1f} s" for name, s in steps)}


def _stage_summary(root: Path) -> dict:
    """The summary of the newest release's stage-sentinel1 step."""
    releases = sorted(p for p in (root / "releases").glob("r*") if p.is_dir())
    manifest = json.loads((releases[-1] / "manifest.json").read_text())
    return next(s["summary"] for s in manifest["steps"] if s["step"] == "stage-sentinel1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)
    raw = args.workdir / "world_1000"
    if not (raw / "world.json").exists():
        raise SystemExit(f"no 1000² world at {raw}: run benchmarks/inversion.py --only chain first")
    from talik.tasks.readers.hyp3 import find_hyp3_products

    products = find_hyp3_products(raw / "hyp3")
    last = max(p.secondary_date for p in products)
    until = last - dt.timedelta(days=31)
    n_new = sum(p.secondary_date > until for p in products)
    print(f"{len(products)} products up to {last}; {n_new} of them after {until}", flush=True)

    full_root = args.workdir / "extend" / "full"
    ext_root = args.workdir / "extend" / "extend"
    for root in (full_root, ext_root):
        shutil.rmtree(root, ignore_errors=True)
    full = _run(_study(full_root, raw))
    print(f"full run ({len(products)} products)            {full['wall_s']:7.1f} s", flush=True)
    print(f"  steps computed: {full['steps']}", flush=True)
    study = _study(ext_root, raw)
    _run(study, "--until", until.isoformat())
    ext = _run(study)
    staged = _stage_summary(ext_root)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"extension by {n_new} products (one month)     {ext['wall_s']:7.1f} s  "
          f"= {ext['wall_s'] / full['wall_s']:.0%} of the full run; "
          f"staged {staged.get('staged_now')} products; peak RSS of a run {peak:.0f} MiB; "
          f"{os.cpu_count()} cores", flush=True)
    print(f"  steps computed: {ext['steps']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
