"""The one harness every benchmark script scores through: the product's own calls, and the results files.

A benchmark measures what the product does, so it builds, sizes and scores candidates with the
calls a study's trials and ``autocompress export`` use, never with copies of them:

* a study's runtime state: :func:`prepare` (``autocompress.search.workbench.prepare``);
* a candidate: :func:`candidate` (``autocompress.search.build.candidate``, the one builder, with
  recovery), or, for random-weight models that have no study, :func:`shaped` (``autocompress.ops.apply_plan``
  with a :class:`~autocompress.ops.Selection`, so a plan may keep part of the vocabulary or have exits);
* size: :func:`shipped_bytes` and :func:`size_ratio`, the bytes export ships (what the size objective counts);
* accuracy and intervals: :func:`right`, :func:`scored` and :func:`paired_ci` (``autocompress.tasks.evaluate``);
* a sampler: :func:`study_sampler`, wrapped exactly as a real study wraps it
  (:class:`~autocompress.search.samplers.OnePlanOnce`, through ``autocompress.study.study_sampler``).

Results: :func:`write_results` merges one section into ``benchmarks/results/<name>.json`` and keeps
every other section another script (or another run) wrote there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.latency.measure import host_info
from autocompress.ops import Selection, apply_plan
from autocompress.ops.size import model_size
from autocompress.ops.vocab import VocabularyChoice, choose_vocabulary, token_counts
from autocompress.schema.config import RecoveryConfig, SearchConfig, SpaceConfig
from autocompress.schema.plan import CompressionPlan
from autocompress.search import build
from autocompress.search.samplers import OnePlanOnce, with_sampler
from autocompress.search.workbench import Workbench
from autocompress.search.workbench import prepare as prepare
from autocompress.study.runner import study_sampler as _study_sampler
from autocompress.tasks.evaluate import Accuracy, accuracy, paired_bootstrap_ci
from autocompress.train.distill import TeacherStates

__all__ = [
    "CACHE", "RESULTS", "ROOT", "candidate", "machine", "paired_ci", "plan_files", "prepare", "read_results",
    "resize_note", "resized_", "results_path", "right", "scored", "shaped", "shipped_bytes", "shown", "size_ratio",
    "study_sampler", "task_vocabulary", "today", "write_results",
]

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "studies" / "cache"  # the teacher cache the bundled default study uses


# ------------------------------------------------------------------------------------------ where and when
def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, else as an absolute path."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine() -> dict[str, Any]:
    """The host a figure was measured on (CPU, cores, library versions, OS)."""
    return {**host_info(), "platform": platform.platform()}


def today() -> str:
    return date.today().isoformat()


def results_path(target: str | Path) -> Path:
    """``benchmarks/results/<target>.json`` for a name, or ``target`` itself for a path."""
    return target if isinstance(target, Path) else RESULTS / f"{target}.json"


def read_results(target: str | Path) -> dict[str, Any]:
    """The results file's sections (empty when there is no file yet)."""
    path = results_path(target)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_results(target: str | Path, section: str | None, data: Any, *, stamp: bool = True) -> Path:
    """Merge ``data`` into the results file ``target`` (a name under ``benchmarks/results`` or a path)
    and return its path; every other section stays as it is.

    ``section`` names the key ``data`` replaces; ``None`` merges ``data``'s keys into the top level
    (a script's main run), each replacing its own. With ``stamp`` a dict is written with the
    ``machine`` and ``date`` it was measured on. The file is replaced in one step (written beside it,
    then renamed), so an interrupted run leaves the previous file whole.
    """
    path = results_path(target)
    if stamp and isinstance(data, dict):
        data = {**data, "machine": machine(), "date": today()}
    merged = read_results(path)
    if section is None:
        if not isinstance(data, dict):
            raise TypeError("the top level of a results file takes a dict of sections")
        merged.update(data)
    else:
        merged[section] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(merged, fh, indent=2, default=str)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp's file is private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------ building
def candidate(bench: Workbench, plan: CompressionPlan, *, recover: bool = True, keep_float: bool = False,
              recovery: RecoveryConfig | None = None, states: TeacherStates | None = None,
              scale: float = 1.0) -> build.Candidate:
    """The candidate a study's trial of ``plan`` builds (``build.candidate``; a refinement's with its
    ``scale``); with ``recovery`` (and the teacher's hidden ``states``), distilled with those settings
    instead of the study's."""
    if recovery is None and states is None:
        return build.candidate(bench, plan, recover=recover, keep_float=keep_float, scale=scale)
    source = build.source_of(bench)
    source = dataclasses.replace(source, recovery=recovery or source.recovery,
                                 transfer_states=states if states is not None else source.transfer_states)
    return build.candidate(source, plan, recover=recover, keep_float=keep_float, scale=scale)


@functools.lru_cache(maxsize=4)
def _train_token_counts(space: Path, vocab_size: int) -> tuple[torch.Tensor, tuple[int, ...], int]:
    from autocompress.models.adapters import load_tokenizer
    from autocompress.schema.config import load_config
    from autocompress.tasks.batches import encode
    from autocompress.tasks.data import load_task

    cfg = load_config(space)
    tokenizer = load_tokenizer(cfg.model.source)
    train = encode(tokenizer, load_task(cfg.task).train, cfg.task.max_length)
    return token_counts(train.input_ids, vocab_size), tuple(tokenizer.all_special_ids), int(tokenizer.unk_token_id)


def task_vocabulary(space: Path, plan: CompressionPlan, vocab_size: int) -> VocabularyChoice | None:
    """The rows ``plan`` keeps of a ``vocab_size`` vocabulary when counted on the train texts of the
    search space ``space`` (a study counts its distillation set: these texts, and any teacher-labelled
    extras); ``None`` for a plan that keeps every row."""
    if plan.vocab_min_count is None:
        return None
    counts, special, unk = _train_token_counts(space.resolve(), vocab_size)
    return choose_vocabulary(counts, plan.vocab_min_count, special, unk)


def shaped(model: nn.Module, plan: CompressionPlan, *, vocabulary_from: Path | None = None,
           bits: bool = True) -> nn.Module:
    """A compressed copy of a model with no study behind it (random weights, for timing and size):
    every step of ``plan`` that needs no training (``autocompress.ops.apply_plan``), heads and neurons
    ranked by weight magnitude; a kept vocabulary counted on the train texts of the search space
    ``vocabulary_from`` (:func:`task_vocabulary`); exit heads untrained, so where an input stops is not a
    trained model's."""
    kept = None
    if plan.vocab_min_count is not None:
        if vocabulary_from is None:
            raise ValueError("the plan keeps part of the vocabulary: say which task's texts choose it (vocabulary_from)")
        kept = task_vocabulary(vocabulary_from, plan, int(model.config.vocab_size))
    return apply_plan(model, plan, Selection(vocabulary=kept), bits=bits).eval()


def plan_files(paths: Iterable[Path] | None) -> dict[str, CompressionPlan]:
    """Plans stored as YAML (an export's ``plan.yaml``), by their paths."""
    return {str(p): CompressionPlan.from_yaml(p.read_text(encoding="utf-8")) for p in paths or []}


# ------------------------------------------------------------------------------------------ size
def shipped_bytes(model: nn.Module) -> int:
    """The bytes export ships ``model`` as: what the size objective counts (``Size.bytes``)."""
    return model_size(model).bytes


def size_ratio(bench: Workbench | nn.Module, model: nn.Module) -> float:
    """``model``'s shipped bytes over the teacher's (a study's, or a model given as the reference)."""
    reference = bench.teacher_size.shipped_bytes if isinstance(bench, Workbench) else shipped_bytes(bench)
    return shipped_bytes(model) / reference


def resized_(row: dict[str, Any], new: float, key: str = "size_ratio") -> tuple[float | None, float]:
    """Set ``row[key]`` to ``new``, a size measured again as export ships it, keeping the figure first
    written with the older measure (``torch.save`` bytes, simulated layers at their width) as
    ``<key>_effective_old``; returns (old, new)."""
    row.setdefault(f"{key}_effective_old", row.get(key))
    row[key] = new
    return row[f"{key}_effective_old"], new


def resize_note(figures: dict[str, Any], key: str = "size_ratio") -> dict[str, Any]:
    """What a results file records about sizes measured again (``figures``: name → (old, new))."""
    return {"why": "sizes measured again from the stored plans as export ships them (shipped bytes, what the size "
                   "objective counts) instead of torch.save bytes; sizes depend on the plan's shapes, not on the "
                   "trained weights, so nothing was trained again",
            "old_figures": f"{key}_effective_old in each row", "figures": figures, "machine": machine(), "date": today()}


# ------------------------------------------------------------------------------------------ accuracy
def right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 where the top prediction is the label, else 0 (float, one per example)."""
    return (logits.argmax(-1) == labels).float()


def scored(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    """Accuracy with its 95 % bootstrap interval, as a trial records it."""
    return accuracy(logits, labels)


def paired_ci(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """95 % paired-bootstrap interval, in points, of ``mean(a) − mean(b)`` (0/1 per example, the same examples)."""
    lo, hi = paired_bootstrap_ci(a, b)
    return [100 * lo, 100 * hi]


# ------------------------------------------------------------------------------------------ sampling
def study_sampler(bench: Workbench, sampler: str, seed: int, space: SpaceConfig | None = None) -> OnePlanOnce:
    """The sampler a study of ``bench``'s config runs with ``search.sampler = sampler``, ``search.seed
    = seed`` and (when given) ``space``: inside :class:`~autocompress.search.samplers.OnePlanOnce`, as
    ``autocompress run`` builds it."""
    cfg = with_sampler(bench.config, sampler)
    search = SearchConfig.model_validate({**cfg.search.model_dump(), "seed": seed})
    cfg = cfg.model_copy(update={"search": search, **({"space": space} if space is not None else {})})
    return _study_sampler(dataclasses.replace(bench, config=cfg))

