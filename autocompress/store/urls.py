"""Storage URLs: where a SQLite database file is, and how to show a URL without its password."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["mask_url", "sqlite_path"]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; ``None`` for any other storage."""
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
