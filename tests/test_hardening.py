"""Hardening: content-true input checksums and step folders that cannot be lost or left over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from talik.tasks.provenance import file_sha256
from talik.tasks.steps import COMPLETE, step_folder, step_path


def test_an_edit_in_place_with_size_and_mtime_restored_is_seen(tmp_path):
    """The checksum cache must not trust size + mtime: a rescaled file keeps both."""
    f = tmp_path / "unw_phase.tif"
    f.write_bytes(b"\x01" * 4096)
    cache: dict = {}
    before = file_sha256(f, cache)
    stat = f.stat()
    with f.open("r+b") as fh:  # same size, other bytes
        fh.write(b"\x03" * 4096)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back
    assert f.stat().st_size == stat.st_size and f.stat().st_mtime_ns == stat.st_mtime_ns
    after = file_sha256(f, cache)
    assert after != before
    assert file_sha256(f, cache) == after  # and the cache serves the new value


def test_a_completed_step_folder_is_never_replaced(tmp_path):
    """Two computations of one step: the second keeps the first's folder, never deletes it."""
    final = step_path(tmp_path, "s", "d" * 64)
    seen = []
    with step_folder(tmp_path, "s", "d" * 64) as first:
        first.work.joinpath("out.txt").write_text("first")
        with step_folder(tmp_path, "s", "d" * 64) as second:  # a concurrent run, same digest
            second.work.joinpath("out.txt").write_text("second")
        seen.append(final.joinpath("out.txt").read_text())
        reader = final.joinpath("out.txt")
    assert seen == ["second"]  # the one that finished first is in place …
    assert reader.read_text() == "second" and (final / COMPLETE).exists()  # … and stays
    assert not list(final.parent.glob(".*tmp-*"))


def test_leftovers_of_killed_runs_are_removed_but_live_ones_kept(tmp_path):
    final = step_path(tmp_path, "s", "e" * 64)
    final.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    killed = final.parent / f".{final.name}.tmp-{host}-{dead}-abcd1234"
    old_style = final.parent / f".{final.name}.tmp-1a2b3c4d"
    live = final.parent / f".{final.name}.tmp-{host}-{os.getpid()}-ffff0000"
    other_host = final.parent / f".{final.name}.tmp-elsewhere-1-00000000"
    for folder in (killed, old_style, live, other_host):
        folder.mkdir()
    with step_folder(tmp_path, "s", "e" * 64) as sd:
        sd.work.joinpath("x").write_text("x")
    assert not killed.exists() and not old_style.exists()
    assert live.exists() and other_host.exists()
    assert (final / COMPLETE).exists()


def test_concurrent_completions_leave_one_complete_folder(tmp_path):
    errors = []

    def run(i: int) -> None:
        try:
            with step_folder(tmp_path, "s", "f" * 64) as sd:
                sd.work.joinpath("v").write_text("same")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = step_path(tmp_path, "s", "f" * 64)
    assert not errors and (final / COMPLETE).exists() and final.joinpath("v").read_text() == "same"


# --- bad inputs that ended in tracebacks ------------------------------------------------------
def test_discharge_with_an_empty_flow_column_or_a_header_only_is_refused(tmp_path):
    import pytest

    from talik.errors import InputError
    from talik.tasks.readers.tables import read_discharge

    empty_flow = tmp_path / "q.csv"
    empty_flow.write_text("date,discharge_m3s\n2001-01-01,\n2001-01-02,-999\n")
    with pytest.raises(InputError, match=r"q\.csv: column .discharge_m3s..*no usable value in 2 rows"):
        read_discharge(empty_flow)
    header_only = tmp_path / "h.csv"
    header_only.write_text("date,discharge_m3s\n")
    with pytest.raises(InputError, match=r"h\.csv: \(rows\).*no data rows"):
        read_discharge(header_only)


def test_era5_variable_all_nan_names_file_and_variable(tiny_world, tmp_path):
    import numpy as np
    import pytest
    import xarray as xr

    from talik.errors import InputError
    from talik.tasks.readers.era5 import read_era5_land

    ds = xr.open_dataset(tiny_world / "era5land_monthly.nc").load()
    ds["tp"] = ds["tp"] * np.nan
    bad = tmp_path / "era5_nan.nc"
    ds.to_netcdf(bad)
    with pytest.raises(InputError, match=r"era5_nan\.nc: variables \['tp'\].*all NaN"):
        read_era5_land(bad)


def test_cli_refuses_a_missing_input_first_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from talik.cli import app
    from tests.conftest import STORES_AND_SENSORS

    study = tmp_path / "s.toml"
    study.write_text('name = "bad"\ntitle = "bad"\n[aoi]\nname = "x"\n[source]\nkind = "local"\n'
                     'hyp3_dir = "nowhere"\n'
                     + STORES_AND_SENSORS.format(work=tmp_path / "w", releases=tmp_path / "r"))
    result = CliRunner().invoke(app, ["run", str(study)])
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"error: {tmp_path / 'nowhere'}: source.hyp3: expected an existing file or folder")
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_user_error_records_lose_their_traceback_but_not_their_message():
    import logging

    from talik.cli import _UserErrorsWithoutTraceback
    from talik.errors import InputError

    try:
        raise InputError("q.csv", "column 'flow'", "numbers")
    except InputError:
        record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                   "Task run failed with exception: %s", ("InputError(...)",),
                                   sys.exc_info())
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        bug = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", (),
                                sys.exc_info())
    quiet = _UserErrorsWithoutTraceback()
    assert quiet.filter(record) and record.exc_info is None
    assert "InputError" in record.getMessage()
    assert quiet.filter(bug) and bug.exc_info is not None  # a real bug keeps its traceback


def _product_copy(tiny_world, tmp_path):
    import shutil

    source = sorted(p for p in (tiny_world / "hyp3").iterdir() if p.is_dir())[0]
    folder = tmp_path / "hyp3"
    shutil.copytree(source, folder / source.name)
    return folder, folder / source.name / f"{source.name}.txt"


def test_garbled_hyp3_metadata_is_refused_naming_the_key(tiny_world, tmp_path):
    import re

    import pytest

    from talik.errors import InputError
    from talik.tasks.readers.hyp3 import find_hyp3_products

    folder, txt = _product_copy(tiny_world, tmp_path)
    original = txt.read_text()
    ref_line = next(line for line in original.splitlines() if line.startswith("Reference Granule"))
    sec_line = next(line for line in original.splitlines() if line.startswith("Secondary Granule"))
    sec_day = re.search(r"_(\d{8})T", sec_line).group(1)
    shifted = sec_line.replace(f"_{sec_day}T", "_20991231T", 1)
    cases = {
        "Reference Granule": (original.replace(ref_line, "Reference Granule: S1A_GARBLED"),
                              "IW SLC granule names"),
        "Secondary Granule": (original.replace(sec_line, shifted), "product name's date"),
        "UTC time": (re.sub(r"UTC time: .*", "UTC time: 23:24:10", original), "seconds of the day"),
        "Baseline": (re.sub(r"Baseline: .*", "Baseline: n/a", original), "from -5000 to 5000"),
    }
    for key, (text, expected) in cases.items():
        txt.write_text(text)
        with pytest.raises(InputError) as err:
            find_hyp3_products(folder)
        message = str(err.value)
        assert txt.name in message and f": {key}: expected" in message and expected in message, key
    txt.write_text(original)
    assert len(find_hyp3_products(folder)) == 1  # the untouched file is accepted


def test_archives_cannot_write_outside_their_target(tmp_path):
    """A CDS-style zip with a '..' member, an absolute member or a symlink is refused by name."""
    import stat
    import zipfile

    import pytest

    from talik.errors import InputError
    from talik.tasks.readers.era5 import read_era5_land

    cases = {"../escape.nc": None, "/etc/evil.nc": None, "link.nc": "symlink"}
    for member, kind in cases.items():
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            info = zipfile.ZipInfo(member)
            if kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd" if kind else b"x")
        with pytest.raises(InputError, match=rf"{bad.name}: member '{member}'"):
            read_era5_land(bad)
    assert not (tmp_path.parent / "escape.nc").exists()


def test_era5_with_wrong_units_names_file_variable_and_units(tiny_world, tmp_path):
    import pytest
    import xarray as xr

    from talik.errors import InputError
    from talik.tasks.readers.era5 import read_era5_land

    ds = xr.open_dataset(tiny_world / "era5land_monthly.nc").load()
    ds["t2m"] = (ds["t2m"] - 273.15).assign_attrs(units="degC")  # a user's converted file
    bad = tmp_path / "era5_celsius.nc"
    ds.to_netcdf(bad)
    with pytest.raises(InputError, match=r"era5_celsius\.nc: variable 't2m' units: expected "
                                         r"the CDS's units 'K', got 'degC'"):
        read_era5_land(bad)


def test_no_shell_is_ever_given_a_command_line():
    """No subprocess call with ``shell=True``, and no ``os.system``/``os.popen``, in talik."""
    import ast
    from pathlib import Path

    import talik

    offenders = []
    for path in Path(talik.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant)
                                                  and k.value.value is False)
                        for k in node.keywords)
            if shell or name in ("os.system", "os.popen"):
                offenders.append(f"{path.name}:{node.lineno} {name}")
    assert not offenders, offenders


def test_a_cached_staging_step_reports_what_the_fresh_one_did(tiny_world, tmp_path):
    """The summary of stage-sentinel1 read back from its folder equals the fresh one's."""
    from talik.config import load_study
    from talik.tasks.ingest.world import ingest_world
    from talik.tasks.stage import stage_sentinel1
    from tests.conftest import write_study

    cfg = load_study(write_study(tmp_path, tiny_world))
    work = str(tmp_path / "work")
    manifest = ingest_world.fn(cfg.source, work)
    fresh = stage_sentinel1.fn(manifest, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    cached = stage_sentinel1.fn(manifest, cfg.aoi, cfg.s1_sensor.wavelength_m, work)
    assert cached.path == fresh.path and cached.summary == fresh.summary
    assert {"first_date", "last_date", "dropped_products", "n_pairs"} <= set(cached.summary)


def _no_early_server(monkeypatch) -> None:
    """These tests stop ``talik run`` before its flow: no Prefect server is wanted."""
    import talik.cli

    monkeypatch.setattr(talik.cli, "_start_api_server_early", lambda: None)


def test_a_full_disk_is_said_in_one_line_and_the_run_resumes_later(tiny_study, monkeypatch):
    import errno

    _no_early_server(monkeypatch)

    from typer.testing import CliRunner

    import talik.flows.monitor
    from talik.cli import app

    def full_disk(**_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(talik.flows.monitor, "monitor", full_disk)
    monkeypatch.setenv("TALIK_REAPER_OF", str(os.getpid()))  # no watchdog for this process
    result = CliRunner().invoke(app, ["run", str(tiny_study)])
    assert result.exit_code == 2
    from talik.config import load_study

    work = load_study(tiny_study).stores.work_dir
    assert result.output.splitlines()[0] == f"error: no space left on the device writing {work}"
    assert "rerun, it resumes" in result.output and "Traceback" not in result.output


def test_run_until_must_be_a_date_and_reaches_the_flow(tiny_study, monkeypatch):
    import datetime as dt

    from typer.testing import CliRunner

    import talik.flows.monitor
    from talik.cli import app

    result = CliRunner().invoke(app, ["run", str(tiny_study), "--until", "2021-13-01"])
    assert result.exit_code == 2
    assert "--until: expected a date YYYY-MM-DD, got '2021-13-01'" in result.output
    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        raise OSError(28, "No space left on device")  # stop there, with a known message

    monkeypatch.setattr(talik.flows.monitor, "monitor", record)
    monkeypatch.setenv("TALIK_REAPER_OF", str(os.getpid()))
    _no_early_server(monkeypatch)
    CliRunner().invoke(app, ["run", str(tiny_study), "--until", "2021-06-30"])
    assert seen["until"] == dt.date(2021, 6, 30)


_EARLY_SERVER_CHECK = """
import httpx
from prefect.server.api.server import SubprocessASGIServer

import talik.cli

thread = talik.cli._start_api_server_early()
assert thread is not None
thread.join(timeout=150)
server = SubprocessASGIServer()  # (Prefect's instance for this process)
try:
    assert server.running and server.server_process.poll() is None
    assert httpx.get(f"{server.api_url}/health", timeout=10).status_code == 200
finally:
    server.stop()
print("early server ok")
"""


def test_the_temporary_prefect_server_is_started_early_and_is_the_one_prefect_uses(tmp_path):
    """``talik run`` starts Prefect's temporary server while the pipeline is imported; the
    flow's client then finds that same server running (no second one is started). In a
    process of its own: this one's Prefect instance is the tests' server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), TALIK_REAPER_OF=str(os.getpid()))
    done = subprocess.run([sys.executable, "-c", _EARLY_SERVER_CHECK], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "early server ok" in done.stdout, done.stderr[-3000:]


def test_a_configured_prefect_server_is_not_started_again():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import talik.cli

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert talik.cli._start_api_server_early() is None
