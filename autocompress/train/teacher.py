"""The fine-tuned teacher, prepared once and cached on disk.

The cache key is a fingerprint of everything that determines the teacher (model source, task
data settings, fine-tuning settings), so a resumed study — or another study on the same task —
reuses it instead of fine-tuning again. A file lock keeps two local workers from preparing the
same teacher at once: the second waits and then loads what the first wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.tasks.batches import Encoded
from autocompress.schema.config import LEGACY_TRAINING, StudyConfig, TrainConfig
from autocompress.train.distill import Progress, fine_tune_
from autocompress.store.locks import file_lock
from autocompress.tasks.evaluate import Accuracy
from autocompress.models.adapters import load_tokenizer
from autocompress.tasks.data import TaskData
from autocompress.tasks.kind import TaskKind

__all__ = ["Teacher", "cache_entry", "cached_tensors", "is_cached", "teacher_fingerprint", "prepare_teacher"]

log = logging.getLogger(__name__)

_META = "autocompress-teacher.json"
_LOGITS = "teacher-logits.pt"


@dataclass
class Teacher:
    model: nn.Module
    weights: str  # where the weights live: the cache, or the user's own fine-tuned model source
    cache: Path  # this teacher's cache directory (also holds its importance scores)
    eval_accuracy: Accuracy
    eval_logits: torch.Tensor  # teacher logits on the eval split
    train_logits: torch.Tensor  # teacher logits on the train split (soft targets for KD)
    fingerprint: str
    fine_tune_seconds: float  # 0 when loaded from the cache
    from_cache: bool


def teacher_fingerprint(cfg: StudyConfig) -> str:
    """A short hash of every setting that changes the teacher or the examples it is scored on."""
    key = {
        "model": cfg.model.model_dump(mode="json"),
        # KD-only data, the metric and the held-out test split leave the teacher and its train/eval data alone;
        # the first task kind is left out so that teachers cached before kinds existed still match
        "task": cfg.task.model_dump(mode="json", exclude={"transfer_size", "transfer_source", "transfer_column", "metric",
                                                          "test_size", "test_split",
                                                          *(["kind"] if cfg.task.kind == "sequence-classification" else []),
                                                          *(["windows"] if cfg.task.windows == 1 else []),
                                                          *(["choices"] if cfg.task.choices is None else [])}),
        "teacher": None if cfg.model.finetuned else _training_key(cfg.teacher),
        "v": 1,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _training_key(teacher: TrainConfig) -> dict[str, Any]:
    """The fine-tuning settings as the fingerprint sees them: a setting added later is left out at
    the value that reproduces what came before, so teachers cached before it still match."""
    dump = teacher.model_dump(mode="json")
    for key, value in LEGACY_TRAINING.items():
        if dump.get(key) == value:
            del dump[key]
    return dump


def cache_entry(cfg: StudyConfig, cache_dir: Path) -> Path:
    """The directory under ``cache_dir`` that holds (or will hold) ``cfg``'s teacher."""
    return Path(cache_dir) / f"teacher-{teacher_fingerprint(cfg)}"


def is_cached(cfg: StudyConfig, cache_dir: Path) -> bool:
    """True when ``cache_dir`` holds ``cfg``'s prepared teacher."""
    return (cache_entry(cfg, cache_dir) / _META).is_file()


def prepare_teacher(
    cfg: StudyConfig,
    kind: TaskKind,
    task: TaskData,
    train: Encoded,
    eval_: Encoded,
    cache_dir: Path,
    progress: Progress | None = None,
) -> Teacher:
    """Load the teacher from the cache, or fine-tune (if needed) on the task kind's loss, score and cache it."""
    fp = teacher_fingerprint(cfg)
    target = cache_entry(cfg, cache_dir)
    with file_lock(target.with_name(target.name + ".lock")):
        if (target / _META).is_file():
            return _load(target, cfg, kind, task, fp)
        return _build(target, cfg, kind, task, train, eval_, fp, progress)


def _load(target: Path, cfg: StudyConfig, kind: TaskKind, task: TaskData, fp: str) -> Teacher:
    meta = json.loads((target / _META).read_text())
    weights = meta["weights"]
    if weights == "." or ((target / "config.json").is_file() and not Path(weights).exists()):
        weights = str(target.resolve())
    model = kind.load_model(weights, task, trust_remote_code=cfg.model.trust_remote_code).eval()
    logits = torch.load(target / _LOGITS, weights_only=True)
    log.info("teacher loaded from the cache %s (accuracy %.2f%%)", target, 100 * meta["eval_accuracy"]["value"])
    return Teacher(
        model=model,
        weights=weights,
        cache=target,
        eval_accuracy=Accuracy(**meta["eval_accuracy"]),
        eval_logits=logits["eval"],
        train_logits=logits["train"],
        fingerprint=fp,
        fine_tune_seconds=0.0,
        from_cache=True,
    )


def _build(
    target: Path,
    cfg: StudyConfig,
    kind: TaskKind,
    task: TaskData,
    train: Encoded,
    eval_: Encoded,
    fp: str,
    progress: Progress | None,
) -> Teacher:
    model = kind.load_model(cfg.model.source, task, trust_remote_code=cfg.model.trust_remote_code)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seconds = 0.0
    if cfg.model.finetuned:
        weights = cfg.model.source  # used as it is; nothing to copy
    else:
        start = time.perf_counter()
        fine_tune_(model, train, cfg.teacher, progress, loss=kind.training_loss)
        seconds = time.perf_counter() - start
        model.save_pretrained(tmp)  # safetensors
        load_tokenizer(cfg.model.source).save_pretrained(tmp)
        weights = "."  # this cache entry itself: it may be moved to another machine and path
    model.eval()
    eval_logits = kind.outputs(model, eval_)
    train_logits = kind.outputs(model, train)
    acc = kind.accuracy(eval_logits, eval_)
    torch.save({"eval": eval_logits, "train": train_logits}, tmp / _LOGITS)
    meta: dict[str, Any] = {
        "fingerprint": fp,
        "weights": weights,
        "eval_accuracy": acc.to_dict(),
        "fine_tune_seconds": seconds,
        "config": {"model": cfg.model.model_dump(mode="json"), "teacher": cfg.teacher.model_dump(mode="json")},
    }
    (tmp / _META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written teacher is never picked up
    log.info("teacher ready: accuracy %.2f%% after %.0f s of fine-tuning", 100 * acc.value, seconds)
    return Teacher(
        model=model,
        weights=str(target.resolve()) if weights == "." else weights,
        cache=target,
        eval_accuracy=acc,
        eval_logits=eval_logits,
        train_logits=train_logits,
        fingerprint=fp,
        fine_tune_seconds=seconds,
        from_cache=False,
    )


def cached_tensors(teacher: Teacher, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` once per teacher: stored as ``<cache>/<name>.pt`` and loaded afterwards."""
    path = teacher.cache / f"{name}.pt"
    with file_lock(teacher.cache.with_name(teacher.cache.name + ".lock")):
        if path.is_file():
            return torch.load(path, weights_only=True)
        value = compute()
        tmp = path.with_suffix(".tmp")
        torch.save(value, tmp)
        tmp.rename(path)
        return value
