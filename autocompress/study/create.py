"""Creating a study, or continuing one that exists: its config checked, its teacher and baselines recorded once."""

from __future__ import annotations

from typing import Any

import optuna

from autocompress.errors import ConfigError
from autocompress.schema.config import StudyConfig, continuing, parse_config
from autocompress.schema.legacy import with_legacy_training
from autocompress.search.objective import OBJECTIVES
from autocompress.search.space import baseline_plans
from autocompress.search.workbench import Workbench
from autocompress.store import record, study_record
from autocompress.store.facts import Arch, SizeFigures
from autocompress.store.storage import open_storage
from autocompress.store.study_record import DistillationSet, TeacherFigures
from autocompress.store.urls import sqlite_path

__all__ = ["check_can_continue", "continued_config", "create_or_load", "record_teacher"]

#: the settings a continued study must share with the stored config (old and new trials compare)
_FIXED = ("model", "task", "teacher", "recovery", "pruning", "profile", "space", "objectives")


def check_can_continue(cfg: StudyConfig, url: str, name: str) -> bool:
    """Whether study ``name`` already exists at ``url``; raises if ``cfg`` cannot continue it.

    Continuing refuses a config whose model, task, teacher, recovery, pruning, profile, space or
    objectives differ from the stored one: old and new trials would not be comparable.
    Creates nothing (a missing SQLite file simply means the study does not exist yet).
    """
    existing = _existing(url, name)
    if existing is None:
        return False
    raw = study_record.read(existing).config or {}
    try:  # a study stored before a setting existed has it at its default, or as it ran (training)
        stored = parse_config(with_legacy_training(raw)).to_dict()
    except ConfigError:
        stored = raw
    new = continuing(cfg, raw).to_dict()
    changed = [k for k in _FIXED if stored.get(k) != new.get(k)]
    if changed:
        raise ConfigError(
            f"study '{name}' already exists with different {', '.join(changed)} settings; "
            "run it with its original file, or give a new name with --study",
            key=changed[0],
        )
    return True


def continued_config(cfg: StudyConfig, url: str, name: str) -> StudyConfig:
    """``cfg`` as it runs study ``name`` at ``url``: unchanged for a new study; for an existing one,
    with the training settings the study predates as it ran them (:func:`~autocompress.schema.config.continuing`)."""
    existing = _existing(url, name)
    return cfg if existing is None else continuing(cfg, study_record.read(existing).config or {})


def _existing(url: str, name: str) -> optuna.Study | None:
    """Study ``name`` at ``url``, or None when there is none (a missing SQLite file is not created)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        return None


def create_or_load(
    cfg: StudyConfig, storage: optuna.storages.BaseStorage, name: str, bench: Workbench | None = None
) -> optuna.Study:
    """Create the study or continue the one of that name; with ``bench``, also :func:`record_teacher`.

    Call :func:`check_can_continue` first: this function does not compare configs. Several
    workers may call it at once: the one that loses the race to create loads the winner's study.
    """
    directions = [d for _, d in OBJECTIVES]
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
        else:
            study_record.create(study, cfg, OBJECTIVES)
    if bench is not None:
        record_teacher(study, bench)
    return study


def record_teacher(study: optuna.Study, bench: Workbench) -> None:
    """Store the teacher's figures and enqueue the uniform baselines, once per study."""
    teacher = TeacherFigures(
        fingerprint=bench.teacher.fingerprint,
        accuracy=bench.teacher.eval_accuracy,
        metric=bench.teacher_metric,
        test_metric=bench.teacher_test,
        size=SizeFigures.from_dict(bench.teacher_size.to_dict()),
        fine_tune_seconds=bench.teacher.fine_tune_seconds,
        arch=Arch.from_dict(_arch_facts(bench)),
        labels=tuple(bench.task.label_names),
        distillation=None if bench.distillation_set is None else DistillationSet.from_dict(bench.distillation_set),
    )
    if not study_record.write_teacher(study, teacher):
        return
    cfg = bench.config
    if cfg.search.seed_baselines:
        for label, params in baseline_plans(cfg.space, bench.arch).items():
            study.enqueue_trial(params, user_attrs=record.queue_labels(baseline=label), skip_if_exists=True)


def _arch_facts(bench: Workbench) -> dict[str, Any]:
    """The teacher's shape as stored: a decoder's in full, an encoder's as studies always stored it."""
    facts = dict(vars(bench.arch))
    if not bench.arch.decoder:
        for key in ("num_kv_heads", "head_size", "decoder"):
            facts.pop(key, None)
    return facts
