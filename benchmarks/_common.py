"""What every benchmark script shares: where results go and what machine and day they come from."""

from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path
from typing import Any

from autocompress.latency.measure import host_info

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, else as an absolute path."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine() -> dict[str, Any]:
    """The host a figure was measured on (CPU, cores, library versions, OS)."""
    return {**host_info(), "platform": platform.platform()}


def today() -> str:
    return date.today().isoformat()


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json``, stamped with the machine and the date."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, "machine": machine(), "date": today()}, indent=2))
    return path
