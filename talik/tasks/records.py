"""Small records passed between tasks: file manifests and step outputs (paths + digests).

Tasks never pass arrays to each other; they pass these records, whose digests make Prefect's
input-hash cache content-aware (a changed file changes the digest, so the step reruns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FileRecord", "InputManifest", "StepOutput"]


class FileRecord(BaseModel):
    """One input file with its checksum."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="Path relative to the manifest root.")
    role: str = Field(description="What the file is: hyp3, pairs, gacos, dem, discharge, ...")
    sha256: str
    bytes: int


class InputManifest(BaseModel):
    """Every input file of a run, with checksums; ``digest`` summarises them all."""

    model_config = ConfigDict(frozen=True)

    root: str = Field(description="Absolute folder the file paths are relative to.")
    source_kind: str = Field(description="'world' or 'local'.")
    locations: dict[str, str] = Field(
        description="Role → absolute file or folder of that input, as configured.")
    files: list[FileRecord]
    digest: str

    def role_files(self, role: str) -> list[Path]:
        """Absolute paths of the files with ``role``."""
        return [Path(self.root) / f.path for f in self.files if f.role == role]

    def location(self, role: str) -> Path | None:
        """Configured file or folder of ``role`` (None when not given)."""
        value = self.locations.get(role)
        return Path(value) if value else None


class StepOutput(BaseModel):
    """What a step produced: where, a digest of how it was made, and a short summary."""

    model_config = ConfigDict(frozen=True)

    step: str
    path: str = Field(description="Output file or folder (absolute).")
    digest: str = Field(description="Digest of the step's inputs, parameters and code.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
