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


@functools.cache
def code_digest() -> str:
    """SHA-256 over talik's own source files: changes whenever the code that computes changes."""
    root = Path(talik.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
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
