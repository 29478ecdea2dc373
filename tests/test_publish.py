"""Releases are immutable, idempotent, atomic under crashes and safe under concurrency."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from talik.config import load_study
from talik.tasks.publish import list_releases, write_release
from talik.tasks.records import FileRecord, InputManifest, StepOutput

from .conftest import write_study


@pytest.fixture()
def setup(tmp_path):
    study = write_study(tmp_path, tmp_path / "raw")
    cfg = load_study(study)
    product = tmp_path / "a.nc"
    product.write_bytes(b"x" * 1000)
    other = tmp_path / "b.tif"
    other.write_bytes(b"y" * 500)
    manifest = InputManifest(root=str(tmp_path), source_kind="local", locations={},
                             files=[FileRecord(path="a.nc", role="x", sha256="0" * 64, bytes=1)],
                             digest="d" * 64)
    steps = [StepOutput(step="s", path=str(tmp_path), digest="e" * 64)]
    return cfg, manifest, steps, {"products/a.nc": product, "products/b.tif": other}


def test_publish_is_idempotent(setup):
    cfg, manifest, steps, files = setup
    first = write_release(cfg, manifest, steps, files, "# report\n")
    again = write_release(cfg, manifest, steps, files, "# report\n")
    assert first.created and not again.created
    assert again.release.id == first.release.id == "r0001"
    changed = manifest.model_copy(update={"digest": "f" * 64})
    second = write_release(cfg, changed, steps, files, "# report\n")
    assert second.created and second.release.id == "r0002"
    assert (Path(cfg.stores.release_dir) / "LATEST").read_text().strip() == "r0002"


def test_crash_during_publish_leaves_previous_release_intact(setup, monkeypatch):
    cfg, manifest, steps, files = setup
    first = write_release(cfg, manifest, steps, files, "# report\n")
    before = sorted(p.relative_to(first.release.path) for p in Path(first.release.path).rglob("*"))
    calls = {"n": 0}
    real_copy = shutil.copy2

    def crashing_copy(src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", crashing_copy)
    with pytest.raises(OSError, match="disk full"):
        write_release(cfg, manifest.model_copy(update={"digest": "1" * 64}), steps, files, "x")
    root = Path(cfg.stores.release_dir)
    assert [r.id for r in list_releases(root)] == ["r0001"]
    assert not list(root.glob(".staging-*"))  # nothing half-written is left behind
    after = sorted(p.relative_to(first.release.path) for p in Path(first.release.path).rglob("*"))
    assert before == after
    monkeypatch.setattr(shutil, "copy2", real_copy)
    retry = write_release(cfg, manifest.model_copy(update={"digest": "1" * 64}), steps, files, "x")
    assert retry.created and retry.release.id == "r0002"


def test_concurrent_publishers_do_not_clobber(setup):
    cfg, manifest, steps, files = setup
    outcomes = []

    def publish(digit: str) -> None:
        outcomes.append(write_release(cfg, manifest.model_copy(update={"digest": digit * 64}),
                                      steps, files, "x"))

    threads = [threading.Thread(target=publish, args=(str(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(o.release.id for o in outcomes)
    assert ids == ["r0001", "r0002", "r0003", "r0004"]
    assert len({o.release.digest for o in outcomes}) == 4
