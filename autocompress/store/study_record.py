"""What a study stores (not a trial): one typed, versioned record, written and read here alone.

A study's record lives in its Optuna user attributes, like a trial's (:mod:`autocompress.store.record`);
this module owns their names and shapes:

=================  ====================================================================
``config``         the :class:`~autocompress.schema.config.StudyConfig` it was created with
                   (``to_dict``), exactly as that version wrote it
``autocompress``   the objectives as stored (name, direction) and the record's ``schema_version``
``teacher``        the teacher's figures (:class:`TeacherFigures`), written once
``target_trials``  the complete trials the last run aimed for (what ``resume`` aims for)
``shared_cache``   teacher cache entries published for other workers: {entry name: artifact id}
=================  ====================================================================

Writers call :func:`create` (with the config and objectives), :func:`write_teacher`,
:func:`write_target` and :func:`add_cache_entry`; every reader gets a :class:`StudyRecord` from
:func:`read`. Older stored forms are read by :mod:`autocompress.schema.legacy`; a newer version is
refused with a line that says to upgrade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from pydantic import field_validator, field_serializer

from autocompress.errors import StorageError, StudyNotFoundError
from autocompress.schema import legacy
from autocompress.schema.config import StudyConfig, parse_config
from autocompress.store.facts import Arch, Facts, SizeFigures
from autocompress.tasks.evaluate import Accuracy, Estimate, Metric

__all__ = [
    "STUDY_RECORD_VERSION",
    "DistillationSet",
    "StudyRecord",
    "TeacherFigures",
    "read",
    "create",
    "write_teacher",
    "write_target",
    "add_cache_entry",
    "stored_config",
]

#: version of what a study (not a trial) stores: config, objectives, teacher
STUDY_RECORD_VERSION = 1

_CONFIG, _ABOUT, _TEACHER, _TARGET, _CACHE = "config", "autocompress", "teacher", "target_trials", "shared_cache"
#: the name the first objective is stored under, whatever task metric it measures: see :func:`create`
_STORED_METRIC_NAME = "accuracy"


class DistillationSet(Facts):
    """What the students distil on: the train examples, the teacher-labelled transfer texts and the
    augmented variants, and how many examples ``recovery.epochs`` count."""

    examples: int | None = None  # in all
    train: int | None = None  # labelled train examples
    transfer: int | None = None  # unlabelled texts (task.transfer_size, or task.transfer_source's)
    transfer_source: str | None = None  # where those came from
    budget_examples: int | None = None  # what an epoch of recovery counts
    augmented: dict[str, Any] | None = None  # kind, copies, share, neighbours, examples, replaced_share, seconds


class TeacherFigures(Facts):
    """The teacher's figures, stored once per study: what drops and speedups are measured from."""

    fingerprint: str | None = None  # its cache key (``train.teacher.teacher_fingerprint``)
    accuracy: Accuracy | None = None  # top-1 accuracy on the eval split
    metric: Metric | None = None  # task.metric on the eval split: what drops are measured from
    test_metric: Metric | None = None  # on the held-out test split, reported only
    size: SizeFigures | None = None
    fine_tune_seconds: float | None = None  # 0 when it came from the cache
    arch: Arch | None = None
    labels: tuple[str, ...] | None = None  # the task's label names, in label order
    distillation: DistillationSet | None = None  # what students distil on (None: stored before it was recorded)

    @field_validator("accuracy", mode="before")
    @classmethod
    def _estimate(cls, v: Any) -> Any:
        return legacy.estimate(v) if isinstance(v, dict) else v

    @field_validator("metric", "test_metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        return legacy.metric(v) if isinstance(v, dict) else v

    @field_serializer("metric", "test_metric")
    def _metric_as_stored(self, v: Metric | None) -> dict[str, Any] | None:
        return None if v is None else v.to_dict()  # own-unit figures only where the metric has them

    @property
    def score(self) -> Estimate | None:
        """The task metric on the eval split (accuracy for teachers stored before metrics had names)."""
        return legacy.score(self.metric, self.accuracy)

    @property
    def percent(self) -> float | None:
        """:attr:`score` in %."""
        return None if self.score is None else 100 * self.score.value

    @property
    def size_mb(self) -> float | None:
        return self.size.megabytes if self.size is not None else None


@dataclass(frozen=True)
class StudyRecord:
    """Everything autocompress stores about a study (not its trials), as typed values.

    ``config`` is kept in its stored form: it is the study's identity (a continued study is
    compared with it key by key) and a later version parses it with the settings it predates
    filled in (:meth:`study_config`).
    """

    config: dict[str, Any] | None = None  # StudyConfig.to_dict() as the creating version wrote it
    objectives: tuple[tuple[str, str], ...] | None = None  # (stored name, direction), in the objective's order
    teacher: TeacherFigures | None = None
    target_trials: int | None = None
    teacher_cache: dict[str, str] = field(default_factory=dict)  # cache entry name → artifact id
    version: int = STUDY_RECORD_VERSION

    # ------------------------------------------------------------------ views
    @property
    def metric_name(self) -> str:
        """The task metric the first objective measures, as the config names it (``task.metric``)."""
        return legacy.config_metric(self.config or {})

    @property
    def trial_target(self) -> int | None:
        """The complete trials the study was last run to, or its config's ``search.trials``."""
        if self.target_trials is not None:
            return self.target_trials
        trials = ((self.config or {}).get("search") or {}).get("trials")
        return trials if isinstance(trials, int) and not isinstance(trials, bool) else None

    def study_config(self, name: str) -> StudyConfig:
        """The config study ``name`` was created with, as this version reads it (settings the study
        predates at the values it ran with); raises :class:`StudyNotFoundError` without one."""
        if self.config is None:
            raise StudyNotFoundError(f"study '{name}' was not created by autocompress (it has no config)")
        return parse_config(legacy.with_legacy_training(self.config), file=f"study '{name}'")

    # ------------------------------------------------------------------ storage form
    def to_attrs(self) -> dict[str, Any]:
        """The study user attributes that store this record (unset fields are left out)."""
        out: dict[str, Any] = {}
        if self.config is not None:
            out[_CONFIG] = self.config
        if self.objectives is not None:
            out[_ABOUT] = {"objectives": [list(o) for o in self.objectives], "schema_version": self.version}
        if self.teacher is not None:
            out[_TEACHER] = self.teacher.to_dict()
        if self.target_trials is not None:
            out[_TARGET] = self.target_trials
        if self.teacher_cache:
            out[_CACHE] = dict(self.teacher_cache)
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], *, where: str = "a study") -> "StudyRecord":
        """The record stored as ``attrs``; keys it does not know are ignored (a user's own attributes)."""
        about = attrs.get(_ABOUT)
        version = legacy.study_version(about)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= STUDY_RECORD_VERSION:
            raise StorageError(
                f"{where} was written in study record version {version!r}; this autocompress reads versions up to "
                f"{STUDY_RECORD_VERSION}: upgrade autocompress to read it"
            )
        objectives = None
        if isinstance(about, dict) and isinstance(about.get("objectives"), list):
            objectives = tuple((str(o[0]), str(o[1])) for o in about["objectives"] if isinstance(o, list) and len(o) == 2)
        config = attrs.get(_CONFIG)
        teacher = attrs.get(_TEACHER)
        target = attrs.get(_TARGET)
        cache = attrs.get(_CACHE)
        return cls(
            config=dict(config) if isinstance(config, dict) else None,
            objectives=objectives,
            teacher=TeacherFigures.from_dict(teacher, where=f"{where}'s teacher") if isinstance(teacher, dict) else None,
            target_trials=target if isinstance(target, int) and not isinstance(target, bool) else None,
            teacher_cache={str(k): str(v) for k, v in cache.items()} if isinstance(cache, dict) else {},
            version=version,
        )


def read(study: optuna.Study) -> StudyRecord:
    """The record of a stored study."""
    return StudyRecord.from_attrs(study.user_attrs, where=f"study '{study.study_name}'")


def _write(study: optuna.Study, record: StudyRecord) -> None:
    for key, value in record.to_attrs().items():
        study.set_user_attr(key, value)


def create(study: optuna.Study, cfg: StudyConfig, objectives: Sequence[tuple[str, str]]) -> None:
    """Store what a new study is: its config and its objectives ((name, direction) in the order the
    objective returns them; Optuna's metric names too)."""
    # The first objective is the task metric (``task.metric``: accuracy or macro-F1), and is stored as
    # "accuracy" whatever it measures: studies have stored it under that name since before task
    # metrics had names, and a study continued or compared with an older one must keep it.
    stored = tuple((_STORED_METRIC_NAME if i == 0 else name, direction) for i, (name, direction) in enumerate(objectives))
    study.set_metric_names([name for name, _ in stored])
    _write(study, StudyRecord(config=cfg.to_dict(), objectives=stored))


def write_teacher(study: optuna.Study, teacher: TeacherFigures) -> bool:
    """Store the teacher's figures unless the study holds them already; True if written."""
    if _TEACHER in study.user_attrs:
        return False
    _write(study, StudyRecord(teacher=teacher))
    return True


def write_target(study: optuna.Study, trials: int) -> None:
    """Store the complete trials a run aims for (what ``resume`` aims for next)."""
    _write(study, StudyRecord(target_trials=trials))


def add_cache_entry(study: optuna.Study, name: str, artifact_id: str) -> bool:
    """Add the shared teacher cache entry ``name`` (stored as ``artifact_id``) unless the study
    lists it already; True if added."""
    held = read(study).teacher_cache
    if name in held:
        return False
    _write(study, StudyRecord(teacher_cache={**held, name: artifact_id}))
    return True


def stored_config(study: optuna.Study) -> StudyConfig:
    """The config a study was created with (as this version reads it)."""
    return read(study).study_config(study.study_name)
