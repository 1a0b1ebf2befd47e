"""autocompress: search compression plans for Hugging Face encoder classifiers, and ship the chosen one.

The public entry point here is :func:`load`; the rest lives in the submodules (``autocompress.export``,
``autocompress.study``, ...). Importing this package is cheap: heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load"]


def load(directory: str | Path) -> Any:
    """The model `autocompress export` wrote to ``directory`` (a ``transformers`` model in eval mode).

    Use it with ``transformers.pipeline("text-classification", model=load(DIR), tokenizer=DIR)``.
    """
    from autocompress.export.saved import load as _load

    return _load(directory)
