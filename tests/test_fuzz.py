"""Property tests (hypothesis): parsers raise only talik's documented errors, whatever the input.

The HyP3 parameter-file parser, the GACOS ``.rsc`` header and grid reader, the discharge table
reader and the network planner are fed arbitrary (and near-valid) inputs; the only exception
allowed is :class:`~talik.errors.InputError` (or ``ValueError`` where the function documents
it), and round trips hold where they apply.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talik.errors import InputError
from talik.science.network import plan_pairs
from talik.tasks.readers.gacos import read_gacos, read_rsc
from talik.tasks.readers.hyp3 import parse_parameter_file
from talik.tasks.readers.tables import read_discharge

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = st.sampled_from(["Reference Granule", "Secondary Granule", "Baseline", "UTC time", "Heading",
                        "reference granule", ""])
TEXTISH = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@FUZZ
@given(st.lists(st.one_of(TEXTISH, st.tuples(KEYS, TEXTISH).map(lambda kv: f"{kv[0]}: {kv[1]}")),
                max_size=8))
def test_hyp3_parameter_parser_raises_only_input_errors(lines):
    try:
        params = parse_parameter_file("\n".join(lines), Path("p.txt"))
    except InputError as exc:
        assert "p.txt" in str(exc)
        return
    assert {"Reference Granule", "Secondary Granule"} <= set(params)


@FUZZ
@given(st.dictionaries(st.sampled_from(["REFERENCE GRANULE", "BASELINE", "HEADING", "UTC TIME"]),
                       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                               max_size=20), max_size=4))
def test_hyp3_parameter_round_trip(extra):
    """What is written as ``Key: value`` lines is read back as it was (values stripped)."""
    params = {"Reference Granule": "S1A_X", "Secondary Granule": "S1A_Y",
              **{k.title(): v for k, v in extra.items()}}
    text = "\n".join(f"{k}: {v}" for k, v in params.items())
    assert parse_parameter_file(text, Path("p.txt")) == {k: v.strip() for k, v in params.items()}


@FUZZ
@given(width=st.integers(-3, 6), length=st.integers(-3, 6),
       steps=st.tuples(st.sampled_from(["0.1", "-0.1", "0", "abc", "nan", "1e400"]),
                       st.sampled_from(["0.1", "-0.1", "0", "x", "inf"])),
       n_bytes=st.integers(0, 200), junk=st.booleans())
def test_gacos_reader_raises_only_input_errors(tmp_path_factory, width, length, steps, n_bytes,
                                               junk):
    folder = tmp_path_factory.mktemp("gacos")
    ztd = folder / "20200101.ztd"
    ztd.write_bytes(np.arange(n_bytes // 4, dtype="<f4").tobytes())
    lines = [f"WIDTH {width}", f"FILE_LENGTH {length}", "X_FIRST 99.0", "Y_FIRST 38.0",
             f"X_STEP {steps[0]}", f"Y_STEP {steps[1]}"]
    if junk:
        lines = lines[::2] + ["GARBAGE", "  "]
    (folder / "20200101.ztd.rsc").write_text("\n".join(lines))
    try:
        read_rsc(folder / "20200101.ztd.rsc")
        da = read_gacos(ztd)
    except InputError as exc:
        assert "20200101.ztd" in str(exc)
        return
    assert da.shape == (length, width) and width > 0 and length > 0
    assert np.isfinite(da["x"]).all() and np.isfinite(da["y"]).all()


CELL = st.one_of(st.sampled_from(["", "NA", "-999", "0", "1.5", "12", "-3", "x", "1e3", " 7 "]),
                 TEXTISH)
DATE = st.one_of(st.dates(dt.date(1990, 1, 1), dt.date(1990, 3, 1)).map(str),
                 st.sampled_from(["2001-02-30", "", "1990/01/02", "yesterday"]), TEXTISH)


@FUZZ
@given(st.lists(st.tuples(DATE, CELL), max_size=12), st.booleans())
def test_discharge_reader_raises_only_input_errors(tmp_path_factory, rows, header):
    path = tmp_path_factory.mktemp("q") / "q.csv"
    body = "\n".join(f"{d},{v}" for d, v in rows)
    path.write_text(("date,discharge_m3s\n" if header else "") + body + "\n")
    try:
        record = read_discharge(path, header=header,
                                column_names=None if header else ["date", "discharge_m3s"])
    except InputError as exc:
        assert "q.csv" in str(exc)
        return
    flows = record.flow_m3s.dropna()
    assert len(flows) > 0 and (flows > 0).all()  # zeros and negatives never pass as flows
    assert record.flow_m3s.index.is_monotonic_increasing and record.flow_m3s.index.is_unique


@FUZZ
@given(st.lists(st.dates(dt.date(2015, 1, 1), dt.date(2019, 12, 31)), min_size=0, max_size=40,
                unique=True),
       st.integers(1, 6), st.integers(1, 120),
       st.one_of(st.none(), st.lists(st.integers(1, 12), min_size=1, max_size=12)))
def test_network_planner_respects_every_rule(days, neighbours, max_days, months):
    dates = np.array(sorted(days), dtype="datetime64[D]")
    pairs = plan_pairs(dates, neighbours, max_days, months)
    assert pairs == sorted(set(pairs))
    for i, j in pairs:
        assert i < j and (dates[j] - dates[i]).astype(int) <= max_days
        if months:
            for k in (i, j):
                assert int(str(dates[k])[5:7]) in months
    allowed = [k for k in range(len(dates)) if not months or int(str(dates[k])[5:7]) in months]
    for pos, i in enumerate(allowed):  # each date pairs with at most its next N allowed dates
        partners = [j for a, j in pairs if a == i]
        assert partners == [j for j in allowed[pos + 1: pos + 1 + neighbours]
                            if (dates[j] - dates[i]).astype(int) <= max_days][:len(partners)]
    held = set((dates[i], dates[j]) for i, j in pairs[::2])
    again = plan_pairs(dates, neighbours, max_days, months, held=held)
    assert set(again) == set(pairs) - {p for p in pairs[::2]}
