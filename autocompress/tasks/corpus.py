"""Text corpora for language modelling: documents split into distillation, eval, transfer and test sets.

A corpus is a ``.txt`` file with one document per line, a ``.jsonl``/``.json``/``.csv``/``.tsv``/
``.parquet`` file (or a hub dataset) with a text column (``task.text_column``), or a bundled
source (``bundled:bbc``: the 2,225 BBC News articles). Documents are shuffled by ``task.seed``
and cut into ``train_size`` documents to train and distil on, ``eval_size`` the search scores,
``transfer_size`` more to distil on and ``test_size`` held out.
"""

from __future__ import annotations

import random
from pathlib import Path

from autocompress.errors import DataError, UnknownNameError
from autocompress.schema.config import TaskConfig
from autocompress.tasks.data import BUNDLED_DATASETS, Examples, TaskData, _load_with_datasets

__all__ = ["load_corpus", "read_documents"]


def read_documents(cfg: TaskConfig) -> list[str]:
    """Every non-empty document of the task's corpus, in the source's order."""
    where = f"corpus '{cfg.source}'"
    if cfg.source.startswith("bundled:"):
        if cfg.source not in BUNDLED_DATASETS:
            raise UnknownNameError("bundled dataset", cfg.source, BUNDLED_DATASETS)
        rows = BUNDLED_DATASETS[cfg.source]()
    else:
        path = Path(cfg.source).expanduser()
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise DataError(f"{where} does not exist; give a text file with one document per line")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise DataError(f"{where} is not UTF-8 text; save it as UTF-8, one document per line") from None
            rows = {cfg.text_column: lines}
        else:
            rows, _, _, _ = _load_with_datasets(cfg)
    if cfg.text_column not in rows:
        raise DataError(f"{where} has no column '{cfg.text_column}'; available: {', '.join(rows) or '(none)'} "
                        "— set task.text_column")
    return [t.strip() for t in rows[cfg.text_column] if isinstance(t, str) and t.strip()]


def load_corpus(cfg: TaskConfig) -> TaskData:
    """The corpus split by ``cfg.seed`` (raises :class:`DataError` naming the sizes to lower)."""
    docs = read_documents(cfg)
    order = list(range(len(docs)))
    random.Random(cfg.seed).shuffle(order)
    need = cfg.train_size + cfg.eval_size + cfg.transfer_size + cfg.test_size
    if len(docs) < need:
        raise DataError(
            f"corpus '{cfg.source}' has {len(docs)} documents but task.train_size + eval_size + transfer_size + "
            f"test_size = {need}; lower them to at most {len(docs)} in all"
        )
    cuts = [cfg.train_size, cfg.eval_size, cfg.transfer_size, cfg.test_size]
    parts: list[Examples] = []
    start = 0
    for size in cuts:
        ids = order[start : start + size]
        parts.append(Examples([docs[i] for i in ids], [0] * len(ids)))
        start += size
    train, eval_, transfer, test = parts
    return TaskData(train=train, eval=eval_, label_names=[], transfer=transfer if len(transfer) else None,
                    test=test if len(test) else None)
