"""Unpacking archives a service delivered (CDS zips) without letting them escape the target."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from talik.errors import InputError

__all__ = ["MAX_UNPACKED_BYTES", "safe_extract"]

MAX_UNPACKED_BYTES = 50 * 2**30
"""Largest total size an archive may unpack to (bytes): a larger one is refused unread."""


def safe_extract(archive: zipfile.ZipFile, target: Path, source: str | Path) -> None:
    """Extract every member of ``archive`` into ``target``, after checking them all.

    Refused (naming ``source`` and the member): absolute paths, ``..`` components, symbolic
    links, and archives that would unpack to more than :data:`MAX_UNPACKED_BYTES`.
    """
    target = Path(target).resolve()
    total = 0
    for info in archive.infolist():
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
            raise InputError(source, f"member {info.filename!r}",
                             "a path inside the archive (no absolute path, no '..')")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(source, f"member {info.filename!r}", "a file, not a symbolic link")
        if not (target / name).resolve().is_relative_to(target):
            raise InputError(source, f"member {info.filename!r}", "a path inside the archive")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise InputError(source, "(archive)", f"at most {MAX_UNPACKED_BYTES} bytes unpacked",
                         f"{total} bytes")
    archive.extractall(target)
