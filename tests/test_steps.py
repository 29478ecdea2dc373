"""Steps declared once: one key for Prefect's cache and the output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from talik.config import RecessionOptions, load_study
from talik.tasks.publish import read_release
from talik.tasks.records import StepOutput
from talik.tasks.steps import step, this_step


def _staged(digest: str) -> StepOutput:
    return StepOutput(step="stage-x", path="/nowhere", digest=digest)


@step("toy")
def _toy(options: RecessionOptions, staged: StepOutput, label: str, work_dir: str) -> str:
    """A step that returns its own key."""
    return this_step().digest


def test_a_step_key_covers_every_parameter_but_locations():
    key = _toy.cache_policy.key_of
    base = {"options": RecessionOptions(), "staged": _staged("a" * 64), "label": "x",
            "work_dir": "/w1"}
    first = key(base)
    assert key({**base, "work_dir": "/w2"}) == first  # a location, not a content
    assert key({**base, "options": RecessionOptions(min_recession_days=9)}) != first
    assert key({**base, "staged": _staged("b" * 64)}) != first
    assert key({**base, "label": "y"}) != first
    # The key the running step sees is the cache key.
    assert _toy.fn(**base) == first
    with pytest.raises(RuntimeError, match="only available inside"):
        this_step()


def test_a_step_refuses_a_parameter_it_cannot_digest():
    @step("opaque")
    def opaque(handle: object, work_dir: str) -> None:
        return None

    with pytest.raises(TypeError, match="handle"):
        opaque.cache_policy.key_of({"handle": object(), "work_dir": "/w"})


def test_every_step_s_cache_key_is_its_output_folder(prefect_server, tiny_study):
    from talik.flows.monitor import monitor

    cfg = load_study(tiny_study)
    outcome = monitor(study=str(tiny_study))
    manifest = read_release(cfg.stores.release_dir, outcome.release.id)
    keys = Path(cfg.stores.work_dir) / ".prefect-cache" / "keys"
    stored = {p.name for p in keys.iterdir()}
    assert len(manifest["steps"]) >= 8
    for s in manifest["steps"]:
        assert s["digest"] in stored, s["step"]  # Prefect's key …
        assert Path(s["path"]).name == s["digest"][:16]  # … names the folder
