"""A line per study in a storage: trial counts, front size, best metric and speedup; and what a
study's first objective measures (:class:`MetricScale`), so that views can say it in its own unit."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from autocompress.schema import legacy
from autocompress.schema.config import ObjectivesConfig
from autocompress.store import record, study_record
from autocompress.store.study_record import TeacherFigures
from autocompress.store.urls import mask_url

__all__ = [
    "BestSoFar",
    "MetricScale",
    "StudyLine",
    "StudySummary",
    "best_so_far",
    "list_studies",
    "metric_name",
    "metric_scale",
    "scale_of",
    "study_lines",
]


@dataclass(frozen=True)
class MetricScale:
    """What a study's first objective measures, and what it is relative to.

    The first objective is always "higher is better, in %". A metric with its own unit (perplexity,
    KL divergence) stores that unit beside it; ``teacher_natural`` is the teacher's figure in it, so
    that a view can say "perplexity 23.4 (+7.9 % vs the teacher's 21.7)" rather than "92.7 %".
    """

    metric: str = "accuracy"  # task.metric
    teacher_natural: float | None = None  # the teacher's figure in the metric's own unit, where it has one
    max_drop: float | None = None  # the study's own budget, points of the first objective (None: no budget)


def _own_budget(config: Mapping[str, Any]) -> float | None:
    """The study's budget in points of its first objective, as its config's objectives state it."""
    objectives = config.get("objectives")
    if not isinstance(objectives, dict):
        return None
    try:
        return ObjectivesConfig.model_validate(objectives).max_drop
    except ValidationError:  # a config of another version: read the points budget it names, if any
        own = objectives.get("max_accuracy_drop")
        return float(own) if isinstance(own, (int, float)) and not isinstance(own, bool) else None


def scale_of(config: Mapping[str, Any], teacher: TeacherFigures | None,
             trial_teacher: Iterable[float | None] = ()) -> MetricScale:
    """The scale of a study stored with ``config`` and ``teacher``; ``trial_teacher`` are the teacher's
    figures its trials stored beside their own (read when the teacher's record has none)."""
    natural = teacher.metric.natural if teacher is not None and teacher.metric is not None else None
    if natural is None:
        stored = [v for v in trial_teacher if v is not None]
        natural = statistics.median(stored) if stored else None
    return MetricScale(metric=legacy.config_metric(config), teacher_natural=natural, max_drop=_own_budget(config))


def _teacher_natural(t: FrozenTrial) -> float | None:
    metric = record.read(t).metric
    return metric.teacher_natural if metric is not None else None


def metric_scale(study: optuna.Study) -> MetricScale:
    """What ``study``'s first objective measures, read from its stored record (and its trials')."""
    stored = study_record.read(study)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return scale_of(stored.config or {}, stored.teacher, (_teacher_natural(t) for t in done))


def _natural(t: FrozenTrial | None) -> float | None:
    """A trial's metric in its own unit (perplexity), where the metric has one."""
    metric = record.read(t).metric if t is not None else None
    return metric.natural if metric is not None else None


@dataclass(frozen=True)
class StudySummary:
    name: str
    storage: str  # masked
    complete: int
    failed: int
    running: int
    front_size: int
    best_accuracy: float | None  # the first objective, %
    best_speedup: float | None  # among trials within the study's accuracy-drop budget
    refined: int = 0  # complete refinements (not counted in ``complete``: see autocompress.search.refine)


@dataclass(frozen=True)
class StudyLine:
    """A study's line in a listing: its figures, and what its first objective measures."""

    summary: StudySummary
    scale: MetricScale
    best_natural: float | None = None  # the best trial's metric in its own unit (perplexity), where it has one


def study_lines(storage: optuna.storages.BaseStorage, url: str) -> list[StudyLine]:
    """Every study in ``storage`` (opened from ``url``), summarised, with its metric's scale."""
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        front = record.front(study) if complete and len(study.directions) > 1 else []
        speedups = [record.read(t).speedup for t in complete if record.feasible(t)]
        best = max(complete, key=lambda t: t.values[0], default=None)
        stored = study_record.read(study)
        out.append(StudyLine(
            summary=StudySummary(
                name=summary.study_name,
                storage=mask_url(url),
                complete=sum(record.REFINES not in t.user_attrs for t in complete),
                failed=sum(t.state == TrialState.FAIL for t in trials),
                running=sum(t.state == TrialState.RUNNING for t in trials),
                front_size=len(front),
                best_accuracy=best.values[0] if best is not None else None,
                best_speedup=max((s if s is not None else 0.0 for s in speedups), default=None),
                refined=sum(record.REFINES in t.user_attrs for t in complete),
            ),
            scale=scale_of(stored.config or {}, stored.teacher, (_teacher_natural(t) for t in complete)),
            best_natural=_natural(best),
        ))
    return out


def list_studies(storage: optuna.storages.BaseStorage, url: str) -> list[StudySummary]:
    """Every study in ``storage`` (opened from ``url``), summarised."""
    return [line.summary for line in study_lines(storage, url)]


def metric_name(study: optuna.Study) -> str:
    """The study's task metric (its first objective), as its config names it (``task.metric``)."""
    return study_record.read(study).metric_name


@dataclass(frozen=True)
class BestSoFar:
    """A running study's best figures: its highest task metric, and its fastest trial within a budget."""

    metric: str  # the task metric's name (task.metric)
    best_percent: float | None  # highest task metric of a complete trial, %
    budget: float  # points below the teacher
    fastest_within: float | None  # highest speedup among complete trials within ``budget``
    scale: MetricScale = MetricScale()  # what the first objective measures
    best_natural: float | None = None  # the best trial's metric in its own unit (perplexity), where it has one


def best_so_far(study: optuna.Study, budget: float) -> BestSoFar:
    """The study's best figures so far (its complete trials)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    records = [record.read(t) for t in done]
    within = [r.speedup or 0.0 for r in records if r.accuracy_drop is not None and r.accuracy_drop <= budget]
    best = max(done, key=lambda t: t.values[0], default=None)
    scale = metric_scale(study)
    return BestSoFar(
        metric=scale.metric,
        best_percent=best.values[0] if best is not None else None,
        budget=budget,
        fastest_within=max(within, default=None),
        scale=scale,
        best_natural=_natural(best),
    )
