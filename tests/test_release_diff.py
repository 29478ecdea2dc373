"""`talik releases diff`: options, inputs, code and product values between two releases."""

from __future__ import annotations

import numpy as np
import xarray as xr

from talik.config import load_study
from talik.tasks.publish import write_release
from talik.tasks.records import FileRecord, InputManifest, StepOutput
from talik.tasks.release_diff import diff_releases, format_diff

from .conftest import write_study
from .test_publish import _s1_release


def test_diff_names_options_inputs_and_value_changes(tmp_path):
    study = write_study(tmp_path, tmp_path / "raw")
    cfg = load_study(study)
    steps = [StepOutput(step="sentinel1-timeseries", path=str(tmp_path), digest="e" * 64)]

    def manifest(files: dict[str, str]) -> InputManifest:
        return InputManifest(root=str(tmp_path), source_kind="local", locations={},
                             files=[FileRecord(path=p, role="hyp3", sha256=h, bytes=1)
                                    for p, h in files.items()], digest=str(sorted(files)))

    first = write_release(cfg, manifest({"a.zip": "1" * 64, "b.zip": "2" * 64}), steps,
                          _s1_release(tmp_path, "one"), "# one\n")
    faster = np.full((4, 5), -12.0)
    faster[0, :2] = -20.0  # two pixels 8 mm/yr faster
    cfg2 = cfg.model_copy(update={"sentinel1": cfg.sentinel1.model_copy(
        update={"coherence_threshold": 0.35})})
    second = write_release(cfg2, manifest({"a.zip": "1" * 64, "b.zip": "3" * 64,
                                           "c.zip": "4" * 64}), steps,
                           _s1_release(tmp_path, "two", velocity=faster), "# two\n")
    diff = diff_releases(cfg.stores.release_dir, first.release.id, second.release.id)
    assert diff.options == {"sentinel1.coherence_threshold": (0.3, 0.35)}
    assert diff.inputs_added == ["c.zip"] and diff.inputs_changed == ["b.zip"]
    assert not diff.inputs_removed and not diff.code  # same code
    s1 = next(p for p in diff.products if p.path == "products/sentinel1.nc")
    velocity = next(v for v in s1.values if v.variable == "velocity")
    assert velocity.units == ""  # the test product states none
    assert velocity.n_compared == 20 and velocity.max_abs == 8.0 and velocity.median_abs == 0.0
    assert velocity.p95_abs == np.percentile([0.0] * 18 + [8.0] * 2, 95)
    text = format_diff(diff)
    assert "sentinel1.coherence_threshold: 0.3 → 0.35" in text and "  c.zip" in text
    assert "velocity" in text and "max 8" in text
    # Displacement over the dates both hold; a variable equal in both is reported as such.
    mask = next(v for v in s1.values if v.variable == "mask")
    assert mask.max_abs == 0.0
    with xr.open_dataset(tmp_path / "two" / "sentinel1.nc") as ds:
        assert ds.sizes["time"] == 6

    from typer.testing import CliRunner

    from talik.cli import app

    out = CliRunner().invoke(app, ["releases", "diff", "r0001", "r0002", "--study", str(study)])
    assert out.exit_code == 0 and "inputs added: 1" in out.output, out.output
    missing = CliRunner().invoke(app, ["releases", "diff", "r0001", "r0009", "--study", str(study)])
    assert missing.exit_code != 0 and "no release 'r0009'" in missing.output
