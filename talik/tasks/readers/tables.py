"""Readers of daily station tables: discharge and air temperature.

Discharge files come in many shapes (a digitised yearbook CSV, USGS/CAMELS text, a converted
MATLAB record); the reader takes the columns, the date format and the units as parameters and
always returns the same thing: a daily series on a **full calendar** (a missing day is NaN, so
no difference is ever taken across a gap), in m³/s, and in mm/d when the basin area is known,
with a count of everything it had to do to the input.

What is refused, with the file, the row and what was expected: an unparsable date, a
non-numeric or negative flow, a missing column, and two different values for the same day.
What is masked (set to NaN) and counted: sentinel values (e.g. ``-999``), empty cells and zero
flows (the logarithm of a recession fit is undefined at zero). What is fixed and counted:
unsorted rows (sorted) and exact duplicate rows (dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from talik.errors import InputError

__all__ = ["DischargeRecord", "FLOW_UNITS", "read_discharge", "read_station_temperature"]

FlowUnits = Literal["m3/s", "m3/d", "cfs", "mm/d"]
CFS_TO_M3S = 0.3048**3
FLOW_UNITS: tuple[str, ...] = ("m3/s", "m3/d", "cfs", "mm/d")


@dataclass(frozen=True)
class DischargeRecord:
    """A daily discharge record on a full calendar.

    Attributes
    ----------
    flow_m3s
        Daily mean discharge, m³/s (NaN where missing or masked). ``None`` when the file is
        in mm/d and no basin area was given.
    flow_mmd
        Daily discharge as a depth over the basin, mm/d; ``None`` without a basin area.
    counts
        What the reader did: ``rows``, ``days``, ``missing`` (empty or sentinel),
        ``zero_masked``, ``duplicates_dropped``, ``unsorted_rows``, ``calendar_days_added``.
    source
        The file read.
    """

    flow_m3s: pd.Series | None
    flow_mmd: pd.Series | None
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def flow(self, units: Literal["m3/s", "mm/d"]) -> pd.Series:
        """The record in ``units``; refuses mm/d without a basin area."""
        series = self.flow_m3s if units == "m3/s" else self.flow_mmd
        if series is None:
            raise InputError(self.source, "basin_area_km2",
                             f"a basin area to express discharge in {units}")
        return series


def _read_frame(path: Path, sep: str | None, header: bool, column_names: list[str] | None
                ) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, "(file)", "an existing discharge table")
    kwargs: dict = {"dtype": str, "keep_default_na": False, "skipinitialspace": True}
    if sep is None or sep.strip() == "":
        kwargs["sep"] = r"\s+"
        kwargs["engine"] = "python"
    else:
        kwargs["sep"] = sep
    if not header:
        kwargs["header"] = None
        kwargs["names"] = column_names
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, "(table)", f"a delimited text table ({exc})") from None


def _row_number(frame: pd.DataFrame, index_label: int, header: bool) -> int:
    """1-based line number in the file of a frame row (counting the header line)."""
    return int(index_label) + (2 if header else 1)


def read_discharge(
    path: str | Path,
    date_column: str | list[str] = "date",
    flow_column: str = "discharge_m3s",
    units: FlowUnits = "m3/s",
    basin_area_km2: float | None = None,
    missing_values: tuple[float, ...] = (-999.0,),
    date_format: str | None = None,
    sep: str | None = ",",
    header: bool = True,
    column_names: list[str] | None = None,
) -> DischargeRecord:
    """Read a daily discharge table.

    Parameters
    ----------
    path
        The file.
    date_column
        Column of dates, or three columns ``[year, month, day]``.
    flow_column
        Column of daily flows.
    units
        Units of the flow column: ``m3/s``, ``m3/d``, ``cfs`` or ``mm/d``.
    basin_area_km2
        Basin area (km²), needed to convert between volume flow and depth (mm/d).
    missing_values
        Numeric sentinels meaning "missing".
    date_format
        ``strptime`` format of the date column (ISO dates need none).
    sep
        Field separator; ``None`` for any whitespace.
    header, column_names
        Whether the file has a header line; names to give the columns when it has none.
    """
    path = Path(path)
    if units not in FLOW_UNITS:
        raise InputError(path, "units", f"one of {FLOW_UNITS}", units)
    frame = _read_frame(path, sep, header, column_names)
    date_cols = [date_column] if isinstance(date_column, str) else list(date_column)
    for col in [*date_cols, flow_column]:
        if col not in frame.columns:
            raise InputError(path, f"column {col!r}",
                             f"a column named {col!r} (found {list(frame.columns)})")
    counts = {"rows": len(frame)}
    if frame.empty:
        raise InputError(path, "(rows)", "at least one row of daily discharge below the header",
                         "no data rows")

    # Dates: refuse the first row that does not parse.
    if len(date_cols) == 1:
        raw_dates = frame[date_cols[0]].str.strip()
        dates = pd.to_datetime(raw_dates, format=date_format or "ISO8601", errors="coerce")
    elif len(date_cols) == 3:
        y, m, d = (pd.to_numeric(frame[c], errors="coerce") for c in date_cols)
        raw_dates = frame[date_cols[0]] + "-" + frame[date_cols[1]] + "-" + frame[date_cols[2]]
        dates = pd.to_datetime(pd.DataFrame({"year": y, "month": m, "day": d}), errors="coerce")
    else:
        raise InputError(path, "date_column", "one column or three columns [year, month, day]",
                         date_column)
    bad = dates.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, f"row {_row_number(frame, i, header)}, column {date_cols}",
                         f"a date{' as ' + date_format if date_format else ' (YYYY-MM-DD)'}",
                         raw_dates.iloc[i])

    # Flows: empty cells and sentinels are missing; anything else must be a number >= 0.
    text = frame[flow_column].str.strip()
    empty = text.isin(["", "NA", "NaN", "nan"])
    values = pd.to_numeric(text.where(~empty), errors="coerce")
    unparsable = values.isna() & ~empty
    if unparsable.any():
        i = int(np.flatnonzero(unparsable.to_numpy())[0])
        raise InputError(path, f"row {_row_number(frame, i, header)}, column {flow_column!r}",
                         "a number (daily flow)", text.iloc[i])
    sentinel = values.isin(list(missing_values))
    values = values.mask(sentinel)
    negative = values < 0
    if negative.any():
        i = int(np.flatnonzero(negative.to_numpy())[0])
        raise InputError(path, f"row {_row_number(frame, i, header)}, column {flow_column!r}",
                         f"a flow >= 0 in {units} (negative flows are not physical)",
                         float(values.iloc[i]))
    counts["missing"] = int((empty | sentinel).sum())
    zero = values == 0
    counts["zero_masked"] = int(zero.sum())
    values = values.mask(zero)
    if not values.notna().any():
        raise InputError(path, f"column {flow_column!r}", "daily flows (numbers > 0)",
                         f"no usable value in {len(frame)} rows (all empty, zero or "
                         f"missing-value sentinels {list(missing_values)})")

    series = pd.Series(values.to_numpy(dtype=float), index=pd.DatetimeIndex(dates), name="flow")
    order_ok = series.index.is_monotonic_increasing
    counts["unsorted_rows"] = 0 if order_ok else int((np.diff(series.index.asi8) < 0).sum())
    series = series.sort_index(kind="stable")
    dup = series.index.duplicated(keep=False)
    if dup.any():
        groups = series[dup].groupby(level=0)
        conflicting = groups.nunique(dropna=False) > 1
        if conflicting.any():
            day = conflicting[conflicting].index[0]
            rows = [_row_number(frame, i, header) for i in np.flatnonzero((dates == day).to_numpy())]
            raise InputError(path, f"rows {rows}", f"one value per day; {day:%Y-%m-%d} has "
                             f"{sorted(str(v) for v in series[day].unique())}")
    counts["duplicates_dropped"] = int(series.index.duplicated().sum())
    series = series[~series.index.duplicated()]
    calendar = pd.date_range(series.index.min(), series.index.max(), freq="D")
    counts["calendar_days_added"] = int(len(calendar) - len(series))
    series = series.reindex(calendar)
    series.index.name = "date"
    counts["days"] = len(series)

    seconds = 86400.0
    area_m2 = basin_area_km2 * 1e6 if basin_area_km2 else None
    if units == "m3/s":
        m3s = series
    elif units == "m3/d":
        m3s = series / seconds
    elif units == "cfs":
        m3s = series * CFS_TO_M3S
    else:  # mm/d
        m3s = series / 1000.0 * area_m2 / seconds if area_m2 else None
    if units == "mm/d":
        mmd = series
    else:
        mmd = m3s * seconds / area_m2 * 1000.0 if area_m2 else None
    if m3s is not None:
        m3s = m3s.rename("discharge").astype(float)
        m3s.attrs["units"] = "m3/s"
    if mmd is not None:
        mmd = mmd.rename("discharge").astype(float)
        mmd.attrs["units"] = "mm/d"
    return DischargeRecord(m3s, mmd, counts, str(path))


def read_station_temperature(
    path: str | Path, date_column: str = "date", value_column: str = "t_mean_c"
) -> pd.Series:
    """Daily mean air temperature (°C) on a full calendar (missing days NaN)."""
    path = Path(path)
    frame = _read_frame(path, ",", True, None)
    for col in (date_column, value_column):
        if col not in frame.columns:
            raise InputError(path, f"column {col!r}",
                             f"a column named {col!r} (found {list(frame.columns)})")
    dates = pd.to_datetime(frame[date_column].str.strip(), format="ISO8601", errors="coerce")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise InputError(path, f"row {i + 2}, column {date_column!r}", "a date YYYY-MM-DD",
                         frame[date_column].iloc[i])
    text = frame[value_column].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, f"row {i + 2}, column {value_column!r}", "a temperature in °C",
                         text.iloc[i])
    if ((values < -80) | (values > 60)).any():
        i = int(np.flatnonzero(((values < -80) | (values > 60)).to_numpy())[0])
        raise InputError(path, f"row {i + 2}, column {value_column!r}",
                         "a daily mean air temperature between -80 and 60 °C", values.iloc[i])
    series = pd.Series(values.to_numpy(float), index=pd.DatetimeIndex(dates), name="t_mean_c")
    series = series[~series.index.duplicated()].sort_index()
    series = series.reindex(pd.date_range(series.index.min(), series.index.max(), freq="D"))
    series.index.name = "date"
    series.attrs["units"] = "degC"
    return series
