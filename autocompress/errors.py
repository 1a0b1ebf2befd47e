"""One exception root for everything a user can get wrong.

The CLI turns any :class:`AutocompressError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AutocompressError",
    "ConfigError",
    "DataError",
    "ExportError",
    "LatencyError",
    "ModelError",
    "PlanError",
    "StorageError",
    "StudyNotFoundError",
    "UnknownNameError",
]


class AutocompressError(Exception):
    """Root of every error caused by user input or environment, not by a bug."""


class ConfigError(AutocompressError):
    """A search-space file is malformed; names the file and the key path."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ", ".join(p for p in (file, f"key '{key}'" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownNameError(AutocompressError):
    """A name looked up in a registry does not exist; suggests the closest ones."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        choices = sorted(available)
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(choices) or '(none)'}")
        self.kind = kind
        self.name = name
        self.available = choices


class PlanError(AutocompressError):
    """A compression plan cannot be applied to a model (names the layer and value)."""


class ModelError(AutocompressError):
    """A model cannot be loaded or is of an unsupported architecture."""


class DataError(AutocompressError):
    """A task dataset cannot be loaded or lacks what the task needs."""


class StorageError(AutocompressError):
    """A study storage cannot be opened or written."""


class StudyNotFoundError(AutocompressError):
    """A named study does not exist in the given storage."""


class LatencyError(AutocompressError):
    """A latency profile cannot be measured or predicted here (memory, device, calibration)."""


class ExportError(AutocompressError):
    """A trial cannot be exported, or its export does not reproduce the trial's model."""
