"""Errors that name the thing that is wrong: the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "ConfigError", "MissingStepOutputError"]


class InputError(ValueError):
    """Bad input data: a file whose content is not what a reader expects.

    Parameters
    ----------
    path
        The offending file (or folder).
    field
        The field, column, band, key or row that is wrong.
    expected
        What was expected there, in words a user can act on.
    got
        What was found instead, if known.
    """

    def __init__(
        self, path: str | Path, field: str, expected: str, got: object | None = None
    ) -> None:
        self.path = Path(path)
        self.field = field
        self.expected = expected
        self.got = got
        message = f"{self.path}: {field}: expected {expected}"
        if got is not None:
            message += f", got {got!r}"
        super().__init__(message)

    def __reduce__(self):  # pickled (Prefect results, Dask) with the four fields, not the message
        return type(self), (self.path, self.field, self.expected, self.got)

    def __repr__(self) -> str:
        # Orchestrators log an exception by its repr ("failed with exception: …"): the message
        # as the user reads it, not a Python literal with every quote escaped.
        return f"{type(self).__name__}: {self}"


class ConfigError(InputError):
    """A study configuration file that does not validate."""


class MissingStepOutputError(RuntimeError):
    """A cached step's output has disappeared from the work directory."""
