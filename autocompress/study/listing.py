"""A line per study in a storage: trial counts, front size, best accuracy and speedup."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from autocompress.store import record, study_record
from autocompress.store.urls import mask_url

__all__ = ["BestSoFar", "StudySummary", "best_so_far", "list_studies", "metric_name"]


@dataclass(frozen=True)
class StudySummary:
    name: str
    storage: str  # masked
    complete: int
    failed: int
    running: int
    front_size: int
    best_accuracy: float | None
    best_speedup: float | None  # among trials within the study's accuracy-drop budget


def list_studies(storage: optuna.storages.BaseStorage, url: str) -> list[StudySummary]:
    """Every study in ``storage`` (opened from ``url``), summarised."""
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        front = record.front(study) if complete and len(study.directions) > 1 else []
        speedups = [record.read(t).speedup for t in complete if record.feasible(t)]
        out.append(
            StudySummary(
                name=summary.study_name,
                storage=mask_url(url),
                complete=len(complete),
                failed=sum(t.state == TrialState.FAIL for t in trials),
                running=sum(t.state == TrialState.RUNNING for t in trials),
                front_size=len(front),
                best_accuracy=max((t.values[0] for t in complete), default=None),
                best_speedup=max((s if s is not None else 0.0 for s in speedups), default=None),
            )
        )
    return out


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


def best_so_far(study: optuna.Study, budget: float) -> BestSoFar:
    """The study's best figures so far (its complete trials)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    records = [record.read(t) for t in done]
    within = [r.speedup or 0.0 for r in records if r.accuracy_drop is not None and r.accuracy_drop <= budget]
    return BestSoFar(
        metric=metric_name(study),
        best_percent=max((t.values[0] for t in done), default=None),
        budget=budget,
        fastest_within=max(within, default=None),
    )
