"""Reruns of one analysis with other options: a small form per analysis in the Prefect UI.

Each flow takes the study and one section of options (``sentinel1``, ``longterm``, ``drivers``,
``recession`` or ``attribution``) and runs the monitor flow with that section replaced: cached
steps that do not depend on it are reused, the ones that do are recomputed, and the result is
published as a release like any other (its manifest records every option used).
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from talik.config import (
    AttributionOptions,
    DriverOptions,
    LongTermOptions,
    RecessionOptions,
    Sentinel1Options,
    StudyOptions,
    load_study,
)
from talik.flows.monitor import monitor
from talik.tasks.publish import PublishOutcome

__all__ = ["RERUN_FLOWS", "rerun_attribution", "rerun_drivers", "rerun_longterm",
           "rerun_recession", "rerun_sentinel1"]


def _rerun(study: str, section: str, value: BaseModel | None, refresh: bool) -> PublishOutcome:
    options = None
    if value is not None:
        options = StudyOptions.of(load_study(study)).model_copy(update={section: value})
    return monitor(study=study, refresh=refresh, options=options)


@flow(name="rerun-sentinel1")
def rerun_sentinel1(study: str, sentinel1: Sentinel1Options | None = None,
                    refresh: bool = False) -> PublishOutcome:
    """The Sentinel-1 time series (and what depends on it) with other ``[sentinel1]`` options."""
    return _rerun(study, "sentinel1", sentinel1, refresh)


@flow(name="rerun-longterm")
def rerun_longterm(study: str, longterm: LongTermOptions | None = None,
                   refresh: bool = False) -> PublishOutcome:
    """The long-term multi-sensor record with other ``[longterm]`` options."""
    return _rerun(study, "longterm", longterm, refresh)


@flow(name="rerun-drivers")
def rerun_drivers(study: str, drivers: DriverOptions | None = None,
                  refresh: bool = False) -> PublishOutcome:
    """The environmental-driver correlation with other ``[drivers]`` options."""
    return _rerun(study, "drivers", drivers, refresh)


@flow(name="rerun-recession")
def rerun_recession(study: str, recession: RecessionOptions | None = None,
                    refresh: bool = False) -> PublishOutcome:
    """The streamflow recession (Ks) with other ``[recession]`` options."""
    return _rerun(study, "recession", recession, refresh)


@flow(name="rerun-attribution")
def rerun_attribution(study: str, attribution: AttributionOptions | None = None,
                      refresh: bool = False) -> PublishOutcome:
    """The climate-regression attribution of Ks with other ``[attribution]`` options."""
    return _rerun(study, "attribution", attribution, refresh)


RERUN_FLOWS = {"sentinel1": rerun_sentinel1, "longterm": rerun_longterm,
               "drivers": rerun_drivers, "recession": rerun_recession,
               "attribution": rerun_attribution}
"""Section of options → the flow that reruns its analysis."""
