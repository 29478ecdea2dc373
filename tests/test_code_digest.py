"""A step's code digest covers the modules it imports, transitively, and nothing else."""

from __future__ import annotations

from pathlib import Path

from talik.tasks.provenance import code_digest, module_closure


def _package(root: Path) -> Path:
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import numpy\nfrom pkg.sub import b\n\ndef f():\n"
                              "    from . import lazy  # an import inside a function counts\n")
    (pkg / "sub" / "b.py").write_text("from ..c import VALUE\n")
    (pkg / "c.py").write_text("VALUE = 1\n")
    (pkg / "lazy.py").write_text("")
    (pkg / "unrelated.py").write_text("import pkg.a\n")
    return pkg


def test_closure_follows_absolute_relative_and_lazy_imports(tmp_path):
    pkg = _package(tmp_path)
    names = {str(p.relative_to(pkg)) for p in module_closure("pkg.a", pkg)}
    assert names == {"__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py", "lazy.py"}
    assert "unrelated.py" not in names  # importers of a module are not what it runs


def test_talik_steps_do_not_depend_on_the_cli_or_other_analyses():
    def files(module: str) -> set[str]:
        return {"/".join(p.parts[-2:]) for p in module_closure(module)}

    s1 = files("talik.tasks.sentinel1")
    assert "science/inversion.py" in s1 and "tasks/stage.py" in s1
    assert not {"talik/cli.py", "tasks/recession.py", "science/regression.py",
                "tasks/drivers.py"} & s1
    monitor = files("talik.flows.monitor")
    assert "talik/cli.py" not in monitor and "tasks/recession.py" in monitor
    assert code_digest("talik.tasks.sentinel1") != code_digest("talik.tasks.recession")
    assert code_digest("talik.tasks.sentinel1") == code_digest("talik.tasks.sentinel1")
    assert len(code_digest()) == 64  # the whole package, for the manifest's provenance
