"""Bad inputs through `talik run`, as a user meets them: a message naming the file, the field
and what was expected comes first, with no traceback (``--debug`` shows it), exit status 2,
and the release already published stays exactly as it was.

Each case edits one input of a local copy of the tiny world after a first run has published
r0001, reruns `talik run`, and puts the input back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import write_study

pytestmark = pytest.mark.slow

TALIK = Path(sys.executable).with_name("talik")


def _local_study(folder: Path, raw: Path) -> Path:
    """The tiny study with its inputs read from ``raw`` as a local source."""
    study = write_study(folder, raw)
    local = "\n".join([
        "[source]", 'kind = "local"', f'hyp3_dir = "{raw / "hyp3"}"',
        f'pairs_dir = "{raw / "pairs"}"', f'gacos_dir = "{raw / "gacos"}"',
        f'dem = "{raw / "dem" / "glo30.tif"}"', f'ground_ice = "{raw / "ground_ice.tif"}"',
        f'temperature = "{raw / "station_tmean.csv"}"',
        f'era5 = "{raw / "era5land_monthly.nc"}"', f'modis_dir = "{raw / "modis"}"', "",
        "[source.discharge]", f'path = "{raw / "discharge.csv"}"', "basin_area_km2 = 4576.0",
        "", ""])
    study.write_text(re.sub(r"\[source\].*?(?=\[stores\])", local, study.read_text(), flags=re.S))
    return study


def _run(study: Path, api_url: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_API_URL=api_url)
    env.pop("TALIK_REAPER_OF", None)
    return subprocess.run([str(TALIK), "run", str(study), "--quiet", *extra], capture_output=True,
                          text=True, timeout=600, env=env)


def _published(releases: Path) -> dict[str, bytes]:
    """Every file of the release folder, by relative path (what must not change)."""
    return {str(p.relative_to(releases)): p.read_bytes()
            for p in sorted(releases.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_world, prefect_server):
    """A local copy of the tiny world, its study, a first release, and the server's URL."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("matrix")
    raw = root / "raw"
    shutil.copytree(tiny_world, raw)
    study = _local_study(root / "study", raw)
    api_url = PREFECT_API_URL.value()
    first = _run(study, api_url)
    assert first.returncode == 0, first.stderr[-3000:]
    releases = root / "study" / "releases"
    assert (releases / "LATEST").read_text().strip() == "r0001"
    return study, raw, releases, api_url


def _rewrite_netcdf(path: Path, change: Callable[[xr.Dataset], xr.Dataset]) -> None:
    ds = xr.open_dataset(path).load()
    ds.close()
    change(ds).to_netcdf(path)


def _swap_product_dates(raw: Path, equal: bool) -> None:
    """Rename one HyP3 product (folder, files) so that its dates are reversed or equal."""
    folder = sorted((raw / "hyp3").iterdir())[0]
    name = folder.name
    m = re.match(r"(S1\w\w_)(\d{8}T\d{6})_(\d{8}T\d{6})(_.*)", name)
    first, second = m.group(2), m.group(3)
    new = m.group(1) + (f"{first}_{first}" if equal else f"{second}_{first}") + m.group(4)
    for f in folder.iterdir():
        f.rename(folder / f.name.replace(name, new))
    folder.rename(folder.with_name(new))


def _duplicate_product(raw: Path) -> None:
    """A second product of an existing pair (the same dates, another product id)."""
    folder = sorted((raw / "hyp3").iterdir())[0]
    name = folder.name
    new = name[:-4] + ("AAAA" if not name.endswith("AAAA") else "BBBB")
    copy = folder.with_name(new)
    shutil.copytree(folder, copy)
    for f in copy.iterdir():
        f.rename(copy / f.name.replace(name, new))


def _txt_date_disagrees(raw: Path) -> None:
    txt = next(sorted((raw / "hyp3").iterdir())[0].glob("*.txt"))
    text = txt.read_text()
    line = next(x for x in text.splitlines() if x.startswith("Secondary Granule"))
    day = re.search(r"_(\d{8})T", line).group(1)
    txt.write_text(text.replace(line, line.replace(f"_{day}T", "_20991231T", 1)))


def _modis_wrong_band(raw: Path) -> None:
    import rasterio

    path = next((raw / "modis").glob("MOD13Q1_NDVI_*.tif"))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(band="EVI")


def _discharge(text: str) -> Callable[[Path], None]:
    return lambda raw: (raw / "discharge.csv").write_text(text)


def _era5(change: Callable[[xr.Dataset], xr.Dataset]) -> Callable[[Path], None]:
    return lambda raw: _rewrite_netcdf(raw / "era5land_monthly.nc", change)


CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # case: (edit of the raw folder, file named, expectation named)
    "discharge header only": (_discharge("date,discharge_m3s\n"), "discharge.csv",
                              "(rows): expected at least one row of daily discharge"),
    "discharge flow column empty": (_discharge("date,discharge_m3s\n2001-01-01,\n2001-01-02,\n"),
                                    "discharge.csv", "column 'discharge_m3s'"),
    "ERA5 variable all NaN": (_era5(lambda ds: ds.assign(tp=ds["tp"] * np.nan)),
                              "era5land_monthly.nc", "variables ['tp']: expected values"),
    "ERA5 variable missing": (_era5(lambda ds: ds.drop_vars("tp")), "era5land_monthly.nc",
                              "variables ['tp']: expected all of"),
    "ERA5 wrong units": (_era5(lambda ds: ds.assign(
        t2m=(ds["t2m"] - 273.15).assign_attrs(units="degC"))), "era5land_monthly.nc",
        "variable 't2m' units: expected the CDS's units 'K', got 'degC'"),
    "HyP3 .txt date disagrees with the name": (_txt_date_disagrees, ".txt",
                                               "Secondary Granule: expected"),
    "HyP3 duplicate pair": (_duplicate_product, "AAAA", "one product per pair"),
    "HyP3 reversed dates": (lambda raw: _swap_product_dates(raw, equal=False), "S1AA_",
                            "expected the secondary date after the reference date"),
    "HyP3 equal dates": (lambda raw: _swap_product_dates(raw, equal=True), "S1AA_",
                         "expected the secondary date after the reference date"),
    "MODIS stack of the wrong variable": (_modis_wrong_band, "MOD13Q1_NDVI_", "tag 'band'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_first_and_the_release_is_untouched(published, tmp_path, case,
                                                               bad_input_report):
    study, raw, releases, api_url = published
    edit, named, expected = CASES[case]
    backup = tmp_path / "raw"
    shutil.copytree(raw, backup)
    before = _published(releases)
    try:
        edit(raw)
        result = _run(study, api_url)
    finally:
        shutil.rmtree(raw)
        shutil.copytree(backup, raw)
    output = (result.stdout + result.stderr).strip()
    first = output.splitlines()[0] if output else ""
    bad_input_report.append(f"{case}: {first.replace(str(raw), '…')[:400]}")
    assert result.returncode == 2, (case, output[-3000:])
    assert "Traceback" not in output, (case, output[-3000:])
    assert named in first and expected in first, (case, first)
    assert output.splitlines()[-1].startswith("(nothing was published"), case
    assert _published(releases) == before, case  # not one byte of the release changed


def test_debug_shows_the_traceback(published, tmp_path):
    study, raw, releases, api_url = published
    original = (raw / "discharge.csv").read_text()
    try:
        (raw / "discharge.csv").write_text("date,discharge_m3s\n")
        result = _run(study, api_url, "--debug")
    finally:
        (raw / "discharge.csv").write_text(original)
    assert result.returncode != 0
    assert "Traceback" in result.stdout + result.stderr
    assert json.loads((releases / "r0001" / "manifest.json").read_text())
