"""Streamflow recession on real rivers (against TOSSH), bad input, and the regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from talik.cli import app
from talik.errors import InputError
from talik.science.recession import fit_recession, recession_points, windowed_fits
from talik.science.regression import attribution, fit_climate_model
from talik.tasks.readers.tables import read_discharge

from .conftest import SHARED

DATA = SHARED / "data" / "discharge"
CAMELS_NAMES = ["gauge", "year", "month", "day", "Q", "flag"]

# TOSSH (commit 81151bdb, GNU Octave) on these files, reference-results.md, configuration
# "BN, len>=7, n_start=0, full-series segments, points in Aug-Oct": a, b, points, Ks CI.
# talik's defaults follow exactly that convention: runs of >= 7 declining steps detected on the
# whole record, points kept in Aug–Oct, the Brutsaert–Nieber difference paired with the two-day
# mean, the peak step kept (exclude_peak=False); flows in mm/d.
REFERENCE = {
    "tossh_33029": (0.1229, 1.6659, 74, (6.139, 10.79)),
    "camels_01013500": (0.03914, 1.0762, 915, (24.34, 26.81)),
    "camels_09035900": (0.04391, 1.2616, 76, (19.74, 26.27)),
    "kuparuk_15896000": (0.07908, 1.0418, 1995, (12.0, 13.32)),
}
# The other convention of the file, offered as an option: the backward difference.
REFERENCE_BACKWARD = {
    "tossh_33029": (0.1283, 1.6051),
    "camels_01013500": (0.03993, 1.0693),
    "camels_09035900": (0.04566, 1.2287),
    "kuparuk_15896000": (0.08158, 1.0299),
}


def _record(name: str):
    if name == "tossh_33029":
        return read_discharge(DATA / "tossh_camelsgb_33029_daily.csv", "t", "Q", "mm/d",
                              date_format="%d-%b-%Y")
    if name.startswith("camels_"):
        gauge = name.split("_")[1]
        area = {"01013500": 2252.70, "09035900": 72.84}[gauge]
        return read_discharge(DATA / f"camels_{gauge}_streamflow_qc.txt", ["year", "month", "day"],
                              "Q", "cfs", area, sep=None, header=False, column_names=CAMELS_NAMES)
    return read_discharge(DATA / "kuparuk_usgs15896000_daily.csv", "date", "Q_m3_per_day",
                          "m3/d", 8654.5)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_pooled_fit_matches_tossh(name):
    rec = _record(name)
    flow = rec.flow("mm/d")
    fit = fit_recession(recession_points(flow))
    a, b, n, (lo, hi) = REFERENCE[name]
    assert fit.a == pytest.approx(a, rel=0.02)
    assert fit.b == pytest.approx(b, rel=0.02)
    assert fit.n_points == n
    assert fit.ks_ci_low == pytest.approx(lo, rel=0.02)
    assert fit.ks_ci_high == pytest.approx(hi, rel=0.02)
    assert fit.ks_ci_low < fit.ks_days < fit.ks_ci_high
    assert 0 < fit.r2 < 1 and np.isfinite(fit.tau_median_days)
    back = fit_recession(recession_points(flow, difference="backward"))
    a_b, b_b = REFERENCE_BACKWARD[name]
    assert back.a == pytest.approx(a_b, rel=0.02)
    assert back.b == pytest.approx(b_b, rel=0.02)


def test_one_year_windows_match_tossh_on_the_kuparuk():
    points = recession_points(_record("kuparuk_15896000").flow("mm/d"))
    w = windowed_fits(points, 1, 1983, 2020).set_index("window_start")
    assert w.loc[1983, "a"] == pytest.approx(0.2123, rel=0.02)
    assert w.loc[1983, "b"] == pytest.approx(1.171, rel=0.02)
    assert w.loc[1983, "n_points"] == 41
    assert w.loc[2007, "ks_days"] == pytest.approx(248.1, rel=0.02)
    assert (w["units"] == "").all()


def test_quantised_and_frozen_records_are_handled_and_counted():
    kuparuk = _record("kuparuk_15896000")
    assert kuparuk.counts["zero_masked"] == 6077  # frozen river: zero flows masked
    assert kuparuk.counts["missing"] == 80  # empty cells
    assert kuparuk.counts["calendar_days_added"] == 10  # the missing 29 Februaries
    camels = _record("camels_09035900")
    pts = recession_points(camels.flow("mm/d"))
    # Whole-cfs low flows: equal consecutive days break runs, so few points remain.
    assert len(pts) == 76
    windows = windowed_fits(pts, 1, 1994, 2013, min_points=10)
    assert (windows["status"] == "insufficient").any()
    assert windows.loc[windows["status"] == "insufficient", "ks_days"].isna().all()


def test_runs_never_bridge_a_gap():
    days = pd.date_range("2001-08-01", periods=20, freq="D")
    q = pd.Series(np.linspace(10, 5, 20), index=days)
    q.iloc[6] = np.nan  # one missing day splits the 19-step decline into 5 and 13 steps
    pts = recession_points(q, min_steps=7)
    assert pts.index.min() > days[7]  # the first 5-step run is too short
    assert pts["event"].nunique() == 1
    with pytest.raises(ValueError, match="full daily calendar"):
        recession_points(q.drop(days[10]))


def test_exact_known_answer_regression():
    years = np.arange(1973, 2003)
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(len(years), 3)), index=years, columns=["t", "p", "s"])
    ks = 20 + 3 * x["t"] - 2 * x["p"] + 0.5 * x["s"]
    model = fit_climate_model(ks, x, (1973, 2002))
    coef = model.coefficients()["coefficient"]
    assert coef["const"] == pytest.approx(20)
    assert coef["t"] == pytest.approx(3)
    assert coef["p"] == pytest.approx(-2)
    assert coef["s"] == pytest.approx(0.5)
    assert model.r2 == pytest.approx(1.0)


def test_attribution_test_is_calibrated_and_detects_a_shift():
    """Under no change the gap test rejects about 5 % of the time at p < 0.05; a shift of two
    prediction standard errors is found almost always."""
    years = np.arange(1973, 2023)
    false_alarms, detections = 0, 0
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        x = pd.DataFrame({"t": rng.normal(size=len(years))}, index=years)
        ks = 20 + 2 * x["t"] + rng.normal(0, 1.0, len(years))
        model = fit_climate_model(ks, x, (1973, 2002))
        pred = model.predict(x)
        false_alarms += attribution(ks, pred, (2003, 2022), 5)["p_value"] < 0.05
        shifted = ks + np.where(years > 2002, 2.0, 0.0)
        detections += attribution(shifted, pred, (2003, 2022), 5)["p_value"] < 0.01
    assert 0.01 <= false_alarms / trials <= 0.10
    assert detections / trials >= 0.9


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("date,discharge_m3s\n2001-05-01,3.2\n2001-13-02,3.1\n", r"row 3.*expected a date"),
        ("date,discharge_m3s\n2001-05-01,3.2\n2001-05-02,-0.5\n",
         r"row 3, column 'discharge_m3s': expected a flow >= 0"),
        ("day,flow\n2001-05-01,3.2\n", r"column 'date'.*found \['day', 'flow'\]"),
        ("date,discharge_m3s\n2001-05-01,3.2\n2001-05-01,3.4\n", r"rows \[2, 3\].*one value per day"),
        ("date,discharge_m3s\n2001-05-01,abc\n", r"row 2.*expected a number"),
    ],
)
def test_bad_discharge_names_file_row_and_expectation(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as err:
        read_discharge(path)
    assert str(path) in str(err.value)


def test_unsorted_and_duplicate_rows_are_fixed_and_counted(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("date,discharge_m3s\n2001-05-03,3.0\n2001-05-01,3.2\n2001-05-02,3.1\n"
                    "2001-05-02,3.1\n2001-05-04,\n2001-05-05,-999\n")
    rec = read_discharge(path)
    assert rec.counts["unsorted_rows"] == 1
    assert rec.counts["duplicates_dropped"] == 1
    assert rec.counts["missing"] == 2
    np.testing.assert_allclose(rec.flow("m3/s").to_numpy(), [3.2, 3.1, 3.0, np.nan, np.nan])


def test_recession_command_on_camels(tmp_path):
    out = tmp_path / "ks.csv"
    res = CliRunner().invoke(app, [
        "recession", str(DATA / "camels_01013500_streamflow_qc.txt"), "--out", str(out),
        "--window-years", "5", "--sep", "whitespace", "--no-header",
        "--names", ",".join(CAMELS_NAMES), "--date-col", "year,month,day", "--flow-col", "Q",
        "--units", "cfs", "--area-km2", "2252.7"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert list(table.columns[:12]) == ["window_start", "window_end", "center_year", "a", "b",
                                        "ks_days", "ks_ci_low", "ks_ci_high", "r2", "n_points",
                                        "n_events", "units"]
    assert (table["window_end"] - table["window_start"] == 4).all()
    assert (table["units"] == "mm/d").all()
    ok = table[table["status"] == "ok"]
    assert len(ok) >= 14
    assert ((ok["ks_ci_low"] < ok["ks_days"]) & (ok["ks_days"] < ok["ks_ci_high"])).all()


def test_recession_command_reports_bad_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,discharge_m3s\n2001-05-01,3.2\n2001-05-02,-1\n")
    res = CliRunner().invoke(app, ["recession", str(bad), "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 2
    assert "row 3" in res.output and "expected a flow >= 0" in res.output
