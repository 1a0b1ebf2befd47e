"""Text corpora for language modelling: documents split into distillation, eval, transfer and test sets.

A corpus is a ``.txt`` file with one document per line, a ``.jsonl``/``.json``/``.csv``/``.tsv``/
``.parquet`` file (or a hub dataset) with a text column (``task.text_column``), or a bundled
source (``bundled:bbc``: the 2,225 BBC News articles). Documents are shuffled by ``task.seed``
and cut into ``train_size`` documents to train and distil on, ``eval_size`` the search scores,
``transfer_size`` more to distil on (or the documents of ``transfer_source``) and ``test_size`` held out.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from autocompress.errors import DataError, UnknownNameError
from autocompress.schema.config import TaskConfig
from autocompress.tasks.data import BUNDLED_DATASETS, Examples, TaskData, _load_with_datasets, read_transfer

__all__ = ["load_choices", "load_corpus", "read_documents"]


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
            rows = {cfg.text_column: _lines(path, where, "a text file with one document per line",
                                            "UTF-8, one document per line")}
        else:
            rows, _, _, _ = _load_with_datasets(cfg)
    if cfg.text_column not in rows:
        raise DataError(f"{where} has no column '{cfg.text_column}'; available: {', '.join(rows) or '(none)'} "
                        "— set task.text_column")
    return [t.strip() for t in rows[cfg.text_column] if isinstance(t, str) and t.strip()]


def _lines(path: Path, where: str, give: str, save_as: str) -> list[str]:
    """The lines of a UTF-8 text file (``where`` names it in errors, ``give`` says what it should be)."""
    if not path.is_file():
        raise DataError(f"{where} does not exist; give {give}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{where} is not UTF-8 text; save it as {save_as}") from None


def load_corpus(cfg: TaskConfig) -> TaskData:
    """The corpus split by ``cfg.seed`` (raises :class:`DataError` naming the sizes to lower). With
    ``task.choices`` the questions there are the eval and test sets (:func:`load_choices`), and the
    corpus gives the training and transfer documents only."""
    docs = read_documents(cfg)
    order = list(range(len(docs)))
    random.Random(cfg.seed).shuffle(order)
    questions = cfg.choices is not None
    own_transfer = 0 if cfg.transfer_source else cfg.transfer_size  # documents of the corpus, or of transfer_source
    need = cfg.train_size + own_transfer + (0 if questions else cfg.eval_size + cfg.test_size)
    if len(docs) < need:
        sizes = "train_size + transfer_size" if questions else "train_size + eval_size + transfer_size + test_size"
        raise DataError(
            f"corpus '{cfg.source}' has {len(docs)} documents but task.{sizes} = {need}; lower them to at most "
            f"{len(docs)} in all"
        )
    cuts = [cfg.train_size, 0 if questions else cfg.eval_size, own_transfer, 0 if questions else cfg.test_size]
    parts: list[Examples] = []
    start = 0
    for size in cuts:
        ids = order[start : start + size]
        parts.append(Examples([docs[i] for i in ids], [0] * len(ids)))
        start += size
    train, eval_, transfer, test = parts
    if cfg.transfer_source:
        transfer = read_transfer(cfg)
    if questions:
        eval_, test = load_choices(cfg)
    return TaskData(train=train, eval=eval_, label_names=[], transfer=transfer if len(transfer) else None,
                    test=test if test is not None and len(test) else None)


def _question(item: Any, where: str) -> tuple[str, list[str], int]:
    """One question's context, choices and the index of the right one (``where`` names it in errors)."""
    if not isinstance(item, dict):
        raise DataError(f"{where} is not a JSON object; each line needs context, choices and answer")
    missing = [k for k in ("context", "choices", "answer") if k not in item]
    if missing:
        raise DataError(f"{where} has no {', '.join(missing)}; each line needs context, choices and answer")
    context, choices, answer = item["context"], item["choices"], item["answer"]
    if not isinstance(context, str) or not isinstance(choices, list) or len(choices) < 2 or \
            not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError(f"{where} needs a context string and at least two non-empty choice strings")
    if isinstance(answer, str):
        if answer not in choices:
            raise DataError(f"{where}: answer '{answer}' is not one of its choices; give the right choice or its index")
        answer = choices.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: answer {answer!r} is not an index of its {len(choices)} choices (0 to "
                        f"{len(choices) - 1})")
    return context, choices, answer


def load_choices(cfg: TaskConfig) -> tuple[Examples, Examples | None]:
    """The eval and test questions of ``task.choices`` (shuffled by ``task.seed``): one example per
    choice, its text the question's context, its pair the choice, its label the question's number;
    each question's right choice comes first (:func:`autocompress.tasks.causal_lm.multiple_choice`)."""
    path = Path(str(cfg.choices)).expanduser()
    where = f"task.choices '{cfg.choices}'"
    lines = _lines(path, where, "a .jsonl file with context, choices and answer on each line", "UTF-8 JSON lines")
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} line {number} is not JSON ({exc.msg}); write one question object per line") from None
        questions.append(_question(item, f"{where} line {number}"))
    need = cfg.eval_size + cfg.test_size
    if len(questions) < need:
        raise DataError(f"{where} has {len(questions)} questions but task.eval_size + test_size = {need}; lower them "
                        f"to at most {len(questions)} in all")
    random.Random(cfg.seed).shuffle(questions)

    def examples(part: list[tuple[str, list[str], int]]) -> Examples:
        texts, pairs, labels = [], [], []
        for q, (context, choices, answer) in enumerate(part):
            for choice in [choices[answer], *(c for i, c in enumerate(choices) if i != answer)]:
                texts.append(context)
                pairs.append(choice)
                labels.append(q)
        return Examples(texts, labels, pairs)

    test = questions[cfg.eval_size : need]
    return examples(questions[: cfg.eval_size]), examples(test) if test else None
