"""Provenance: file checksums, the code's own fingerprint, git commit, step digests."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import talik

__all__ = [
    "code_digest",
    "module_closure",
    "digest_of",
    "file_sha256",
    "git_commit",
]

_CHUNK = 1 << 20


def _fingerprint(stat: os.stat_result) -> dict[str, int]:
    """What must be unchanged for a cached checksum to stand.

    Size and mtime alone can be restored after an edit in place; the inode change time
    (ctime) cannot be set back by a user (any write or ``utime`` call moves it), and the inode
    number changes when a file is replaced by another.
    """
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino, "device": stat.st_dev}


def file_sha256(path: Path, cache: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file's bytes.

    ``cache`` maps ``path`` → the file's fingerprint (size, mtime, ctime, inode, device) and
    its checksum: the bytes are hashed again whenever any of those changed, so an edit in
    place with the size and mtime restored is still seen.
    """
    stat = path.stat()
    key = str(path)
    fingerprint = _fingerprint(stat)
    if cache is not None:
        hit = cache.get(key)
        if hit and all(hit.get(k) == v for k, v in fingerprint.items()):
            return hit["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    value = h.hexdigest()
    if cache is not None:
        cache[key] = {**fingerprint, "sha256": value}
    return value


def _module_file(name: str, root: Path, package: str) -> Path | None:
    """The source file of module ``name`` of ``package`` (rooted at ``root``), if it has one."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1024)
def _imports_of(path: Path, _stamp: tuple[int, int], package: str, root: Path
                ) -> frozenset[str]:
    """Names of the ``package`` modules that the file ``path`` imports (anywhere in it)."""
    import ast

    tree = ast.parse(path.read_bytes(), str(path))
    here = path.parent
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                anchor = here
                for _ in range(node.level - 1):
                    anchor = anchor.parent
                base = ".".join((package, *anchor.relative_to(root).parts))
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] == package:
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return frozenset(found)


def module_closure(module: str, root: Path | None = None) -> list[Path]:
    """Source files of ``module`` and of every module of its package it imports, transitively.

    Parent packages' ``__init__`` files are included (importing a module runs them). ``root`` is
    the package's folder (default: talik's).
    """
    root = Path(talik.__file__).parent if root is None else Path(root)
    package = module.split(".")[0]
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:depth]), root, package)
            if path is None or path in seen:
                continue
            seen.add(path)
            stat = path.stat()
            todo.extend(_imports_of(path, (stat.st_mtime_ns, stat.st_size), package, root))
    return sorted(seen)


def code_digest(module: str | None = None) -> str:
    """SHA-256 of talik's source: of the modules ``module`` runs, or of the whole package.

    With ``module`` (e.g. a step's ``__name__``), only its own file and the talik modules it
    imports, transitively, count: editing the CLI's help text does not invalidate a cached
    inversion, while editing anything the inversion imports does.
    """
    root = Path(talik.__file__).parent
    files = module_closure(module, root) if module else sorted(root.rglob("*.py"))
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def git_commit() -> str | None:
    """The git commit of the checkout talik runs from (``+dirty`` if modified), if any."""
    root = Path(talik.__file__).parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "talik"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path | os.PathLike):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def digest_of(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (pydantic models, paths, plain data)."""
    blob = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
