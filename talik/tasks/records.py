"""Small records passed between tasks: file manifests and step outputs (paths + digests).

Tasks never pass arrays to each other; they pass these records, whose digests make Prefect's
input-hash cache content-aware (a changed file changes the digest, so the step reruns).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from talik.tasks.provenance import digest_of

__all__ = ["DriversSteps", "FileRecord", "InputManifest", "InputSet", "RecessionSteps",
           "Sentinel1Steps", "StepOutput"]


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
    until: dt.date | None = Field(
        default=None, description="Last acquisition date of the inputs (products and GACOS "
        "files of later dates left out); None: every file found.")

    def save(self, folder: Path) -> InputSet:
        """Write the manifest as JSON in ``folder`` (named by digest); return its input set."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"inputs-{self.digest[:16]}.json"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.model_dump_json(indent=1))
            tmp.replace(path)
        roles: dict[str, list[tuple[str, str]]] = {}
        for f in self.files:
            roles.setdefault(f.role, []).append((f.path, f.sha256))
        return InputSet(root=self.root, source_kind=self.source_kind, locations=self.locations,
                        digest=self.digest, manifest_path=str(path), n_files=len(self.files),
                        until=self.until,
                        role_digests={role: digest_of(sorted(files)) for role, files in roles.items()})

    def role_files(self, role: str) -> list[Path]:
        """Absolute paths of the files with ``role``."""
        return [Path(self.root) / f.path for f in self.files if f.role == role]

    def location(self, role: str) -> Path | None:
        """Configured file or folder of ``role`` (None when not given)."""
        value = self.locations.get(role)
        return Path(value) if value else None


class InputSet(BaseModel):
    """A run's inputs as tasks see them: where each input is, and the manifest's digest.

    The full file list (with checksums) is in the manifest JSON at ``manifest_path``; this
    small record is what flows and tasks pass around.
    """

    model_config = ConfigDict(frozen=True)

    root: str
    source_kind: str
    locations: dict[str, str]
    digest: str
    manifest_path: str
    n_files: int
    until: dt.date | None = None
    role_digests: dict[str, str] = Field(
        default_factory=dict, description="Role (hyp3, dem, discharge, …) → digest of its files.")

    def digest_of_roles(self, *roles: str) -> str:
        """Digest of the inputs of ``roles`` only: where they are and their files' checksums.

        What a step that reads just those inputs depends on.
        """
        return digest_of([(role, self.locations.get(role), self.role_digests.get(role))
                        for role in roles])

    def location(self, role: str) -> Path | None:
        """Configured file or folder of ``role`` (None when not given)."""
        value = self.locations.get(role)
        return Path(value) if value else None

    def load_manifest(self) -> InputManifest:
        """The full manifest (file list with checksums)."""
        return InputManifest.model_validate_json(Path(self.manifest_path).read_text())


class StepOutput(BaseModel):
    """What a step produced: where, a digest of how it was made, and a short summary."""

    model_config = ConfigDict(frozen=True)

    step: str
    path: str = Field(description="Output file or folder (absolute).")
    digest: str = Field(description="Digest of the step's inputs, parameters and code.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)


class DriversSteps(BaseModel):
    """What the drivers flow made: the MODIS factors per year, and the assessment."""

    model_config = ConfigDict(frozen=True)

    modis: StepOutput = Field(description="MODIS factors on the cells, one layer per year.")
    assessment: StepOutput = Field(description="Factors against the deformation (Fig. 12-13).")

    def all(self) -> list[StepOutput]:
        """Every step, in the order they ran."""
        return [self.modis, self.assessment]


class Sentinel1Steps(BaseModel):
    """What the Sentinel-1 flow made: the staged stores and the time series."""

    model_config = ConfigDict(frozen=True)

    staged: StepOutput = Field(description="HyP3 interferograms on the analysis grid.")
    rasters: StepOutput = Field(description="DEM, slope and ground ice on the grid.")
    gacos: StepOutput = Field(description="GACOS zenith delays on the grid.")
    pairs: StepOutput = Field(description="Sparse-sensor pairs (ERS-2 … ALOS-2) on the grid.")
    series: StepOutput = Field(description="The inverted time series and its products.")

    def all(self) -> list[StepOutput]:
        """Every step, in the order they ran."""
        return [self.staged, self.rasters, self.gacos, self.pairs, self.series]


class RecessionSteps(BaseModel):
    """What the recession flow made: the climate table and the Ks analysis."""

    model_config = ConfigDict(frozen=True)

    climate: StepOutput = Field(description="ERA5-Land / station climate, yearly.")
    analysis: StepOutput = Field(description="Ks windows and their climate attribution.")

    def all(self) -> list[StepOutput]:
        """Every step, in the order they ran."""
        return [self.climate, self.analysis]
