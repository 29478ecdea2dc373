"""The raw store: downloaded files, each checked and recorded in the ledger's manifest.

A file is downloaded to ``.<name>.partial`` beside its destination, resumed with an HTTP
``Range`` request when a partial file is there, checked (size, and MD5 or SHA-256 when the
service states one), then renamed into place in one step: a reader never sees half a file,
and a killed download resumes where it stopped. A file already in place is hashed again and
compared with its manifest entry: a match is not downloaded again; a mismatch (a corrupted or
edited file) is logged and fetched again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talik.config import RetryOptions
from talik.tasks.ingest.common import (
    TransientServiceError,
    http_session,
    raise_for_status,
    retrying,
    scrub_url,
)
from talik.tasks.ingest.ledger import FileEntry, Ledger, utc_now
from talik.tasks.provenance import file_sha256

__all__ = ["Download", "RawStore", "sha256_of"]

CHUNK_BYTES = 1 << 20
STREAM_BYTES = 64 << 10  # written as it arrives: a cut connection loses at most this much
logger = logging.getLogger("talik.ingest")


def sha256_of(path: Path, md5: bool = False) -> str:
    """Hex SHA-256 or MD5 of the bytes of ``path`` (never cached).

    SHA-256 is :func:`~talik.tasks.provenance.file_sha256`, the project's one file checksum.
    """
    if not md5:
        return file_sha256(Path(path))
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _content_range_total(header: str | None) -> int | None:
    """The full length ``N`` of a ``Content-Range: bytes a-b/N`` header, or None."""
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


@dataclass(frozen=True)
class Download:
    """What :meth:`RawStore.fetch` did: the file, and whether bytes were transferred."""

    path: Path
    downloaded: bool
    entry: FileEntry


class RawStore:
    """Files under ``root`` (paths in the manifest are relative to it), recorded in ``ledger``."""

    def __init__(self, root: str | Path, ledger: Ledger, retries: RetryOptions) -> None:
        self.root = Path(root).resolve()
        self.ledger = ledger
        self.retries = retries

    def relative(self, path: Path) -> str:
        """The manifest key of ``path`` (relative to the root when inside it)."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def verify(self, path: Path) -> bool:
        """Whether ``path`` exists and its bytes match its manifest entry."""
        entry = self.ledger.file(self.relative(path))
        if entry is None or not path.is_file():
            return False
        return path.stat().st_size == entry.bytes and sha256_of(path) == entry.sha256

    def fetch(self, url: str, dest: str | Path, source: str, query: dict[str, Any] | None = None,
              *, session: Any = None, size: int | None = None, md5: str | None = None,
              sha256: str | None = None, provisional: bool = False,
              credential_key: str | None = None) -> Download:
        """Download ``url`` to ``dest`` unless a verified copy is already there.

        ``size``/``md5``/``sha256`` are what the service states (checked when given);
        ``session`` is a ``requests.Session`` (default: one that retries transient statuses);
        ``credential_key`` names the credential to fix if the server refuses (401/403).
        """
        dest = Path(dest)
        key = self.relative(dest)
        entry = self.ledger.file(key)
        if entry is not None and dest.is_file():
            if dest.stat().st_size == entry.bytes and sha256_of(dest) == entry.sha256 \
                    and (sha256 is None or sha256 == entry.sha256):
                return Download(dest, False, entry)
            logger.warning("%s does not match its manifest checksum; fetching it again", key)
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        get = retrying(self.retries, f"download {scrub_url(url)}")(self._transfer)
        get(url, partial, session or http_session(self.retries, retry=False), size, md5, sha256,
            credential_key)
        digest = sha256_of(partial)
        partial.replace(dest)
        entry = FileEntry(path=key, source=source, query=query or {}, url=scrub_url(url),
                          bytes=dest.stat().st_size, sha256=digest, fetched_at=utc_now(),
                          status="provisional" if provisional else "final")
        self.ledger.record_file(entry)
        return Download(dest, True, entry)

    def adopt(self, path: Path, source: str, query: dict[str, Any] | None = None,
              url: str | None = None, provisional: bool = False) -> FileEntry:
        """Record a file a client library wrote itself (e.g. cdsapi, eodag) in the manifest."""
        entry = FileEntry(path=self.relative(path), source=source, query=query or {},
                          url=scrub_url(url) if url else None, bytes=path.stat().st_size,
                          sha256=sha256_of(path), fetched_at=utc_now(),
                          status="provisional" if provisional else "final")
        self.ledger.record_file(entry)
        return entry

    @staticmethod
    def _transfer(url: str, partial: Path, session: Any, size: int | None, md5: str | None,
                  sha256: str | None, credential_key: str | None) -> None:
        """One attempt: resume ``partial`` from its length, then check what the service said."""
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with session.get(url, headers=headers, stream=True, timeout=(30, 300)) as response:
            if response.status_code == 416 and have:  # nothing left to send: check what we have
                total = _content_range_total(response.headers.get("Content-Range"))
                if size is None:
                    size = total
                if size is None or have > size:  # unknown length, or the partial is too long:
                    partial.unlink()            # not this file's bytes; start again
                    raise TransientServiceError(
                        f"download {scrub_url(url)}: the server refused to resume at byte {have}"
                        f" (file length {total if total is not None else 'not stated'}); "
                        "downloading it again from the start")
            else:
                raise_for_status(response, f"download {scrub_url(url)}", credential_key)
                append = have and response.status_code == 206
                total = _content_range_total(response.headers.get("Content-Range"))
                if size is None and total is not None:
                    size = total  # what the server says the whole file is
                elif (size is None and not append and response.headers.get("Content-Length")
                      and not response.headers.get("Content-Encoding")):  # not a decoded length
                    size = int(response.headers["Content-Length"])
                with partial.open("ab" if append else "wb") as out:
                    for block in response.iter_content(STREAM_BYTES):
                        out.write(block)
        got = partial.stat().st_size
        if size is not None and got != size:
            if got > size:
                partial.unlink()
            raise TransientServiceError(f"download {scrub_url(url)}: {got} bytes of {size}")
        for expected, is_md5 in ((md5, True), (sha256, False)):
            if expected and sha256_of(partial, md5=is_md5) != expected.lower():
                partial.unlink()
                raise TransientServiceError(
                    f"download {scrub_url(url)}: {'MD5' if is_md5 else 'SHA-256'} mismatch")
