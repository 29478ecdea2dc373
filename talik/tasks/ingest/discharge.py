"""Daily discharge of a USGS gauge, written as the study's discharge table.

The values are the daily means (statistic ``00003``) of discharge (parameter ``00060``, cubic
feet per second) of ``[ingest.nwis] site`` from ``[ingest.nwis] start`` to today, read with
``dataretrieval.waterdata.get_daily``: the USGS Water Data OGC API,
``<base>/ogcapi/v1/collections/daily/items``, which answers GeoJSON features whose properties
hold ``time`` (a date), ``value`` (text), ``unit_of_measure`` (``ft^3/s``), ``approval_status``
(``Approved`` / ``Provisional``) and ``qualifier`` (a list such as ``["ICE"]``, or null). The
legacy WaterServices ``nwis.get_dv`` is deprecated by dataretrieval and not used.

The base URL is the service's own unless a ``dataretrieval.configure`` block around the call
redirects it (``WaterdataConfiguration(base_url=...)``), or ``[ingest.nwis]`` has a ``url``.

The table is written in the layout the study's :class:`~talik.config.DischargeFile` describes
(date column or year/month/day columns, date format, separator, header, flow column and units —
cfs as served, or converted to m³/s, m³/d or mm/d), so
:func:`talik.tasks.readers.tables.read_discharge` reads it with the study's own settings. Two
more columns record what the gauge said: ``provisional`` (1 for a provisional day, else 0) and
``qualifiers`` (the USGS codes of the day, ``|``-separated). A value the service does not give
as a number (null, ``Ice``, ``***``, ``Eqp``, ...) or gives as negative (the reader refuses
negative flows; the legacy ``-999999`` fill value) is written as missing. The file goes to a
temporary name and is renamed into place, then recorded with :meth:`RawStore.adopt` — as
*provisional* when any day is provisional, so a later run replaces it when the USGS approves
the values. An unchanged table is not rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from talik.config import DischargeFile, LocalSource, StudyConfig
from talik.tasks.ingest.common import (
    PermanentServiceError,
    TransientServiceError,
    redact,
    retrying,
)
from talik.tasks.ingest.ledger import Ledger
from talik.tasks.ingest.rawstore import RawStore

__all__ = ["PARAMETER", "SOURCE", "STATISTIC", "daily_discharge_table", "fetch_nwis_discharge",
           "write_discharge_table"]

SOURCE = "nwis"
PARAMETER = "00060"
"""USGS parameter code: discharge, cubic feet per second."""
STATISTIC = "00003"
"""USGS statistic code: daily mean."""

CFS_TO_M3S = 0.3048**3
_CFS_UNITS = {"ft^3/s", "ft3/s", "cfs", "ft³/s", "cubic feet per second"}
_SERVICE = "USGS Water Data (daily values)"
logger = logging.getLogger("talik.ingest")


# ----------------------------------------------------------------------------------- query
def _location_id(site: str) -> str:
    """The Water Data monitoring-location id of a site number (``USGS-`` unless an agency is given)."""
    site = site.strip()
    return site if "-" in site else f"USGS-{site}"


def _query_daily(location: str, start: dt.date | None, end: dt.date, base_url: str | None,
                 retries: Any) -> tuple[pd.DataFrame, str | None]:
    """Daily mean discharge rows of ``location`` (``start``..``end``) and the URL asked.

    dataretrieval's own retries are turned off; talik's (``[ingest.retries]``) apply instead,
    so one setting governs every service.
    """
    import dataretrieval
    from dataretrieval import waterdata
    from dataretrieval.waterdata.configuration import WaterdataConfiguration

    period = f"{start.isoformat() if start else '..'}/{end.isoformat()}"
    blocks = [dataretrieval.Configuration(retries=0, progress=False)]
    if base_url:
        blocks.append(WaterdataConfiguration(base_url=base_url.rstrip("/")))

    def once() -> tuple[pd.DataFrame, str | None]:
        try:
            with dataretrieval.configure(*blocks):
                frame, meta = waterdata.get_daily(
                    monitoring_location_id=location, parameter_code=PARAMETER,
                    statistic_id=STATISTIC, time=period, skip_geometry=True, convert_type=False)
        except dataretrieval.DataRetrievalError as exc:
            message = redact(" ".join(str(exc).split()))[:500]
            if getattr(exc, "retryable", False):
                raise TransientServiceError(f"{_SERVICE}: {message}",
                                            getattr(exc, "retry_after", None)) from None
            raise PermanentServiceError(f"{_SERVICE}: {message} (check the settings ingest.nwis.site "
                                        "and ingest.nwis.start)") from None
        return frame, getattr(meta, "url", None)

    return retrying(retries, _SERVICE)(once)()


# ------------------------------------------------------------------------------- cleaning
def _qualifier_list(value: Any) -> list[str]:
    """The qualifier codes of one row, whatever shape the service gave them in."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return _qualifier_list(json.loads(text))
        except ValueError:
            text = text.strip("[]")
    return [t.strip().strip("'\"") for t in text.replace(";", ",").split(",") if t.strip().strip("'\"")]


def daily_discharge_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per day from the service's rows: ``date``, ``flow_cfs``, ``provisional``, ``qualifiers``.

    ``flow_cfs`` is the daily mean in ft³/s, NaN where the service gave no usable number
    (null, a text code such as ``Ice`` or ``***``, or a negative value). When the site has
    more than one daily-mean discharge series, the one with the most values is kept. Also
    returns counts: days, missing, provisional, ice-qualified, the series dropped.
    """
    if frame.empty:
        return pd.DataFrame(columns=["date", "flow_cfs", "provisional", "qualifiers"]), {"days": 0}
    rows = frame.copy()
    for column in ("time", "value"):
        if column not in rows.columns:
            raise PermanentServiceError(f"{_SERVICE}: the response has no '{column}' field "
                                        f"(fields: {sorted(rows.columns)})")
    units = {str(u).strip() for u in rows.get("unit_of_measure", pd.Series(dtype=str)).dropna()}
    unknown = {u for u in units if u.lower() not in _CFS_UNITS}
    if unknown:
        raise PermanentServiceError(f"{_SERVICE}: discharge in {sorted(unknown)}, not ft^3/s")
    counts: dict[str, Any] = {"series_dropped": []}
    if "time_series_id" in rows.columns and rows["time_series_id"].nunique() > 1:
        numeric = pd.to_numeric(rows["value"], errors="coerce")
        best = numeric.notna().groupby(rows["time_series_id"]).sum().sort_values(ascending=False)
        keep = best.index[0]
        counts["series_dropped"] = [str(s) for s in best.index[1:]]
        rows = rows[rows["time_series_id"] == keep]
        logger.warning("%s: %d daily-mean series at the site; kept %s (most values)", _SERVICE,
                       len(best), keep)
    dates = pd.to_datetime(rows["time"].astype(str).str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        bad = rows["time"][dates.isna()].iloc[0]
        raise PermanentServiceError(f"{_SERVICE}: a row with an unreadable date {bad!r}")
    text = rows["value"].astype("string").str.strip()
    flow = pd.to_numeric(text, errors="coerce").astype(float)
    flow = flow.where(flow >= 0)  # negative: a fill value (-999999) or not a flow the reader takes
    qualifiers = rows["qualifier"].map(_qualifier_list) if "qualifier" in rows.columns else \
        pd.Series([[]] * len(rows), index=rows.index)
    status = rows["approval_status"].astype("string").str.strip().str.lower() \
        if "approval_status" in rows.columns else pd.Series("", index=rows.index, dtype="string")
    provisional = status.fillna("").str.startswith("prov") | qualifiers.map(lambda q: "P" in q)
    table = pd.DataFrame({"date": dates.dt.date.to_numpy(), "flow_cfs": flow.to_numpy(),
                          "provisional": provisional.to_numpy(dtype=bool),
                          "qualifiers": qualifiers.map(lambda q: "|".join(q)).to_numpy()})
    table = table.sort_values("date", kind="stable").drop_duplicates("date", keep="first")
    table = table.reset_index(drop=True)
    ice = table["qualifiers"].str.upper().str.split("|").map(lambda q: "ICE" in q)
    counts.update(days=len(table), missing=int(table["flow_cfs"].isna().sum()),
                  provisional=int(table["provisional"].sum()), ice_qualified=int(ice.sum()),
                  ice_missing=int((ice & table["flow_cfs"].isna()).sum()))
    return table, counts


# -------------------------------------------------------------------------------- writing
def _convert(flow_cfs: pd.Series, spec: DischargeFile) -> pd.Series:
    """``flow_cfs`` (ft³/s) in the units of the study's discharge file."""
    if spec.units == "cfs":
        return flow_cfs
    m3s = flow_cfs * CFS_TO_M3S
    if spec.units == "m3/s":
        return m3s
    if spec.units == "m3/d":
        return m3s * 86400.0
    if spec.basin_area_km2 is None:
        raise PermanentServiceError("NWIS: the discharge file is in mm/d but source.discharge."
                                    "basin_area_km2 is not set (needed to convert ft^3/s to mm/d)")
    return m3s * 86400.0 / (spec.basin_area_km2 * 1e6) * 1000.0


def write_discharge_table(table: pd.DataFrame, spec: DischargeFile) -> bytes:
    """The bytes of ``table`` (from :func:`daily_discharge_table`) in the layout of ``spec``.

    Dates follow ``spec.date_column`` (one column in ``spec.date_format``, ISO by default, or
    year/month/day columns), the flow goes to ``spec.flow_column`` in ``spec.units``, and the
    ``provisional`` (0/1) and ``qualifiers`` columns follow. Missing flows are empty cells
    (``NaN`` when the separator is whitespace).
    """
    whitespace = spec.sep is None or spec.sep.strip() == ""
    sep = " " if whitespace else spec.sep
    missing = "NaN" if whitespace else ""
    flow = _convert(table["flow_cfs"].astype(float), spec)
    dates = pd.to_datetime(pd.Series(table["date"]))
    columns: dict[str, pd.Series] = {}
    if isinstance(spec.date_column, str):
        columns[spec.date_column] = dates.dt.strftime(spec.date_format or "%Y-%m-%d")
    else:
        if len(spec.date_column) != 3:
            raise PermanentServiceError("NWIS: source.discharge.date_column must be one column or "
                                        "three [year, month, day]")
        for name, part in zip(spec.date_column, (dates.dt.year, dates.dt.month, dates.dt.day),
                              strict=True):
            columns[name] = part.astype(int).astype(str)
    columns[spec.flow_column] = flow.map(lambda v: missing if not np.isfinite(v) else f"{v:.10g}")
    extra = {"provisional": table["provisional"].astype(int).astype(str),
             "qualifiers": table["qualifiers"].astype(str)}
    for name, values in extra.items():
        key = name if name not in columns else f"nwis_{name}"
        if whitespace:
            values = values.where(values != "", "-").str.replace(r"\s+", "_", regex=True)
        columns[key] = values
    frame = pd.DataFrame({k: v.to_numpy() for k, v in columns.items()})
    if spec.header:
        order = list(frame.columns)
    else:
        if not spec.column_names:
            raise PermanentServiceError("NWIS: source.discharge has header = false but no "
                                        "column_names; the table could not be read back")
        order = list(spec.column_names)
        needed = ([spec.date_column] if isinstance(spec.date_column, str) else list(spec.date_column))
        absent = [c for c in [*needed, spec.flow_column] if c not in order]
        if absent:
            raise PermanentServiceError(f"NWIS: source.discharge.column_names lacks {absent}")
        for name in order:
            if name not in frame.columns:
                frame[name] = missing
    text = frame[order].to_csv(sep=sep, index=False, header=spec.header, lineterminator="\n")
    return text.encode("utf-8")


# ---------------------------------------------------------------------------------- entry
def fetch_nwis_discharge(cfg: StudyConfig, ledger: Ledger, store: RawStore,
                         today: dt.date | None = None) -> dict[str, Any]:
    """Fetch the daily mean discharge of ``[ingest.nwis] site`` into ``[source] discharge``.

    ``today`` (default: the current UTC date) is the last day asked for. Returns a JSON-able
    summary: the site, the period, counts (days, missing, provisional and ice-qualified
    days), the provisional dates (first, last and how many), the file and whether it was
    (re)written. Flows are written in the discharge file's units (ft³/s as served unless the
    study's ``[source.discharge] units`` say m³/s, m³/d or mm/d).

    Raises
    ------
    PermanentServiceError
        No site or no discharge file configured, no data for the site, or a refused request.
    """
    opts = cfg.ingest.nwis
    source = cfg.source
    if not isinstance(source, LocalSource) or source.discharge is None:
        raise PermanentServiceError("NWIS: set [source.discharge] (path, columns, units) in a local "
                                    "source: the gauge's record is written there")
    if not opts.site:
        raise PermanentServiceError("NWIS: set ingest.nwis.site (a USGS site number, e.g. '15356000')")
    spec = source.discharge
    today = today or dt.datetime.now(dt.UTC).date()
    if opts.start is not None and opts.start > today:
        raise PermanentServiceError(f"NWIS: ingest.nwis.start {opts.start} is after today ({today})")
    location = _location_id(opts.site)
    base_url = getattr(opts, "url", None)  # [ingest.nwis] has no such field yet; honoured if added
    raw, url = _query_daily(location, opts.start, today, base_url, cfg.ingest.retries)
    table, counts = daily_discharge_table(raw)
    if table.empty or table["flow_cfs"].notna().sum() == 0:
        raise PermanentServiceError(f"NWIS: no daily mean discharge for {location} between "
                                    f"{opts.start or 'the first record'} and {today} (check the "
                                    "settings ingest.nwis.site and ingest.nwis.start)")
    body = write_discharge_table(table, spec)
    provisional_days = [d.isoformat() for d in table.loc[table["provisional"], "date"]]
    is_provisional = bool(provisional_days)
    out = Path(spec.path)
    query = {"site": location, "parameter": PARAMETER, "statistic": STATISTIC,
             "start": opts.start.isoformat() if opts.start else None, "end": today.isoformat(),
             "units": spec.units, "provisional_days": len(provisional_days)}
    summary: dict[str, Any] = {
        "source": SOURCE, "site": location, "start": str(table["date"].iloc[0]),
        "end": str(table["date"].iloc[-1]), "output": str(out), "units": spec.units,
        "provisional": is_provisional,
        "provisional_days": {"count": len(provisional_days),
                             "first": provisional_days[0] if provisional_days else None,
                             "last": provisional_days[-1] if provisional_days else None},
        **counts,
    }
    entry = ledger.file(store.relative(out))
    if out.is_file() and out.read_bytes() == body and entry is not None and store.verify(out) \
            and (entry.status == "provisional") == is_provisional:
        summary["written"] = False
        logger.info("NWIS: %s is up to date (%d days)", out, len(table))
        return summary
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(body)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    recorded = store.adopt(out, SOURCE, query, url=url, provisional=is_provisional)
    summary.update(written=True, sha256=recorded.sha256)
    logger.info("NWIS: wrote %s (%d days, %d missing, %d provisional)", out, len(table),
                counts["missing"], len(provisional_days))
    return summary
