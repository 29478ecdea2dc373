"""``[sentinel1] reference_bbox``: a reference area the user gives, in degrees."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from talik.config import Sentinel1Options
from talik.errors import InputError
from tests.conftest import generate_and_stage, write_study


@pytest.fixture(scope="module")
def staged_tiny(tmp_path_factory, tiny_world):
    return generate_and_stage(write_study(tmp_path_factory.mktemp("bbox"), tiny_world))


def _bbox_around(stack, rows: slice, cols: slice) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the pixel centres of a window, a quarter pixel wider."""
    from talik.tasks.stage import AnalysisGrid

    grid = AnalysisGrid.from_attrs(stack.attrs)
    to_deg = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    x, y = stack["x"].values[cols], stack["y"].values[rows]
    pad = 0.25 * grid.pixel_m
    lon, lat = to_deg.transform([x.min() - pad, x.max() + pad, x.min() - pad, x.max() + pad],
                                [y.min() - pad, y.min() - pad, y.max() + pad, y.max() + pad])
    return (min(lon), min(lat), max(lon), max(lat))


def test_the_reference_area_is_the_given_box(staged_tiny):
    from talik.tasks.sentinel1 import open_chain_inputs, run_sentinel1_chain

    cfg, staged = staged_tiny
    inputs = open_chain_inputs(staged["sentinel1"], cfg.sentinel1, staged["rasters"],
                               staged["gacos"], staged["pairs"])
    rows, cols = slice(4, 9), slice(20, 26)
    box = _bbox_around(inputs.stack, rows, cols)
    options = cfg.sentinel1.model_copy(update={"reference_bbox": box})
    _, report, _ = run_sentinel1_chain(inputs, options)
    assert report.reference_window["rows"] == [4, 9]
    assert report.reference_window["cols"] == [20, 26]
    assert report.reference_window["how"] == "given: reference_bbox"
    # Without it, the chain chooses its own (a 5×5 window of stable pixels).
    _, chosen, _ = run_sentinel1_chain(inputs, cfg.sentinel1)
    assert chosen.reference_window["how"].startswith("chosen")
    assert np.diff(chosen.reference_window["rows"])[0] == cfg.sentinel1.reference_window_px


def test_a_box_off_the_grid_is_refused_by_name(staged_tiny):
    from talik.tasks.sentinel1 import reference_window_of_bbox
    from talik.tasks.stage import open_sentinel1_store

    _, staged = staged_tiny
    stack = open_sentinel1_store(staged["sentinel1"])
    with pytest.raises(InputError, match="sentinel1.reference_bbox"):
        reference_window_of_bbox(stack, (0.0, 0.0, 0.1, 0.1))
    assert Sentinel1Options(reference_bbox=(1, 2, 3, 4)).reference_bbox == (1, 2, 3, 4)
