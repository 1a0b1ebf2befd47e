"""Gather a study into plain data (no plotting, no HTML): easy to test, reused by every view."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from autocompress.report.analysis import (
    BUDGETS,
    HypervolumeHistory,
    ObjectiveImportance,
    hypervolume_history,
    param_importances,
)

__all__ = ["ProfileFigure", "TrialRow", "ReportInfo", "collect", "feasible"]

log = logging.getLogger(__name__)

#: Labels of the task metrics the objective may maximise (``task.metric``).
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


@dataclass(frozen=True)
class ProfileFigure:
    """A trial's latency on one device profile, as stored by the objective."""

    kind: str  # "measured" (timed on the host, interleaved with the teacher) or "predicted" (cost model)
    speedup: float
    speedup_low: float | None = None  # measured: from the ratio's IQR; predicted: minus the fit error
    speedup_high: float | None = None
    candidate_ms: float | None = None
    baseline_ms: float | None = None
    noisy: bool = False
    host_prediction: float | None = None  # measured only: the cost model's speedup for this host
    fit_error: float | None = None  # the cost model's median relative error on this host's measurements


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    accuracy: float | None  # % (the task metric: accuracy or macro-F1)
    accuracy_ci: tuple[float, float] | None  # % (95 % bootstrap)
    accuracy_drop: float | None  # points below the teacher
    speedup: float | None  # teacher latency / candidate latency, same host, interleaved
    latency_ms: float | None
    baseline_ms: float | None  # the teacher's latency in the same interleaved rounds
    latency_iqr_ms: float | None
    noisy: bool
    size_mb: float | None
    size_ratio: float | None
    plan: dict[str, Any] | None
    plan_summary: str
    baseline: str | None  # name of a seeded uniform baseline
    simulated: bool
    feasible: bool
    on_front: bool
    fail_reason: str | None  # why it failed, or why it was pruned at the cheap fidelity
    fidelity: str | None  # "full", or "cheap" for a trial stopped before recovery
    duration_s: float | None
    latency_kind: str = "measured"  # of the objective's profile: "measured" or "predicted"
    profile_latency: dict[str, ProfileFigure] = field(default_factory=dict)  # every profile's figures, by name
    host: str | None = None  # where the measured figures come from
    values: tuple[float, ...] | None = None  # the objective values Optuna holds (complete trials)
    params: dict[str, Any] = field(default_factory=dict)
    started: datetime | None = None
    completed: datetime | None = None
    test_accuracy: float | None = None  # % on the held-out test split, when the task has one

    @property
    def profile_speedups(self) -> dict[str, float]:
        return {name: p.speedup for name, p in self.profile_latency.items()}

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.accuracy is not None


@dataclass(frozen=True)
class ReportInfo:
    study_name: str
    config: dict[str, Any]
    teacher: dict[str, Any]
    trials: list[TrialRow] = field(default_factory=list)
    target_trials: int | None = None  # the trial budget the study was run to
    hypervolume: HypervolumeHistory | None = None
    importances: tuple[ObjectiveImportance, ...] = ()
    storage: str | None = None  # the storage URL the report was read from (password masked)

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.complete]

    @property
    def profiles(self) -> list[dict[str, Any]]:
        """The study's profiles as stored in its config: the objective's first, then the reported ones."""
        return [p for p in [self.config.get("profile"), *(self.config.get("report_profiles") or [])] if p]

    @property
    def front(self) -> list[TrialRow]:
        return sorted((t for t in self.trials if t.on_front), key=lambda t: -(t.speedup or 0))

    @property
    def metric(self) -> str:
        """What the first objective measures, as a reader says it ('accuracy', 'macro-F1')."""
        name = (self.config.get("task") or {}).get("metric", "accuracy")
        return METRIC_LABELS.get(name, str(name))

    @property
    def teacher_accuracy(self) -> float | None:
        """The teacher's task metric on the eval split, in %."""
        m = self.teacher.get("metric") or self.teacher.get("accuracy") or {}
        return None if m.get("value") is None else 100 * m["value"]

    @property
    def teacher_size_mb(self) -> float | None:
        return (self.teacher.get("size") or {}).get("megabytes")

    @property
    def teacher_ms(self) -> float | None:
        """The teacher's median latency on the objective's profile, over every interleaved measurement."""
        ms = sorted(t.baseline_ms for t in self.complete if t.baseline_ms)
        return ms[len(ms) // 2] if ms else None

    @property
    def num_layers(self) -> int:
        return max((len((t.plan or {}).get("layers", [])) for t in self.trials), default=0)

    @property
    def budgets(self) -> tuple[float, ...]:
        """Accuracy drops (points) to name the best candidates at: the common ones and the study's own."""
        own = (self.config.get("objectives") or {}).get("max_accuracy_drop")
        return tuple(sorted({*BUDGETS, *([float(own)] if isinstance(own, (int, float)) else [])}))

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """True unless the trial broke one of its constraints (e.g. the accuracy-drop budget)."""
    return all(v <= 0 for v in (trial.constraints or {}).values())


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _profile_figure(d: dict[str, Any]) -> ProfileFigure | None:
    """One profile's stored latency record (see ``ProfileLatency.to_dict``) as report data."""
    speedup = _num(d.get("speedup"))
    if speedup is None and _num(d.get("ratio")):
        speedup = 1.0 / d["ratio"]
    if speedup is None:
        return None
    kind = str(d.get("kind", "measured"))
    low = high = None
    fit_error = _num(d.get("fit_error"))
    iqr = d.get("ratio_iqr")
    if kind == "measured" and isinstance(iqr, list) and len(iqr) == 2 and all(_num(q) for q in iqr):
        low, high = 1.0 / max(iqr), 1.0 / min(iqr)  # speedup = 1 / ratio: the quartiles swap
    elif kind == "predicted" and fit_error is not None:
        low, high = speedup * (1 - fit_error), speedup * (1 + fit_error)
    host_pred = d.get("host_prediction") or {}
    return ProfileFigure(
        kind=kind,
        speedup=speedup,
        speedup_low=low,
        speedup_high=high,
        candidate_ms=_num(d.get("candidate_ms")),
        baseline_ms=_num(d.get("baseline_ms")),
        noisy=bool(d.get("noisy", False)),
        host_prediction=_num(host_pred.get("speedup")),
        fit_error=fit_error,
    )


def _row(t: optuna.trial.FrozenTrial, front: set[int]) -> TrialRow:
    ua = t.user_attrs
    acc = ua.get("metric") or ua.get("accuracy") or {}
    lat = ua.get("latency") or {}
    size = ua.get("size") or {}
    done = t.state == TrialState.COMPLETE and t.values is not None
    values = tuple(t.values) if done else None
    speedup = _num(ua.get("speedup"))
    if speedup is None and values and len(values) > 1 and values[1] > 0:
        speedup = 1.0 / values[1]  # the objective value is the latency ratio
    duration = (
        (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    )
    profiles: dict[str, ProfileFigure] = {}
    for name, record in (ua.get("latencies") or {}).items():
        fig = _profile_figure(record) if isinstance(record, dict) else None
        if fig is not None:
            profiles[str(name)] = fig
    test = ua.get("test_metric") or ua.get("test_accuracy") or {}
    ci = (100 * acc["ci_low"], 100 * acc["ci_high"]) if _num(acc.get("ci_low")) is not None and _num(acc.get("ci_high")) is not None else None
    return TrialRow(
        number=t.number,
        state=t.state.name,
        accuracy=values[0] if values else None,
        accuracy_ci=ci,
        accuracy_drop=_num(ua.get("accuracy_drop")),
        speedup=speedup,
        latency_ms=_num(lat.get("candidate_ms")),
        baseline_ms=_num(lat.get("baseline_ms")),
        latency_iqr_ms=_num(lat.get("candidate_iqr_ms")),
        noisy=bool(lat.get("noisy", False)),
        size_mb=values[2] if values and len(values) > 2 else _num(size.get("megabytes")),
        size_ratio=_num(ua.get("size_ratio")),
        plan=ua.get("plan") if isinstance(ua.get("plan"), dict) else None,
        plan_summary=str(ua.get("plan_summary", "")),
        baseline=ua.get("baseline"),
        simulated=bool(ua.get("simulated", False)),
        feasible=feasible(t),
        on_front=t.number in front,
        fail_reason=ua.get("fail_reason") or ua.get("prune_reason"),
        fidelity=ua.get("fidelity"),
        duration_s=duration,
        latency_kind=str(lat.get("kind", "measured")),
        profile_latency=profiles,
        host=(ua.get("host") or {}).get("host"),
        values=values,
        params=dict(t.params),
        started=t.datetime_start,
        completed=t.datetime_complete,
        test_accuracy=None if _num(test.get("value")) is None else 100 * test["value"],
    )


#: user attribute of a trial whose plan had already been built in the study (on this host): it
#: holds that trial's number, and the trial repeats its figures instead of building it again
SAME_PLAN_AS = "same_plan_as"


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto front, each plan once: a trial that repeated an earlier trial's plan
    (samplers propose a plan again when only parameters it ignores differ) is left out."""
    return [t for t in study.best_trials if SAME_PLAN_AS not in t.user_attrs]


def collect(study: optuna.Study, storage: str | None = None) -> ReportInfo:
    """Everything the report shows, read from the study's storage alone.

    ``storage`` is the URL the study was opened from (shown in the page, password masked).
    """
    from autocompress.urls import mask_url

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    front = {t.number for t in front_trials(study)} if complete else set()
    rows = [_row(t, front) for t in trials]
    teacher = dict(study.user_attrs.get("teacher") or {})
    config = dict(study.user_attrs.get("config") or {})
    target = study.user_attrs.get("target_trials") or (config.get("search") or {}).get("trials")
    teacher_size = (teacher.get("size") or {}).get("megabytes")
    return ReportInfo(
        study_name=study.study_name,
        config=config,
        teacher=teacher,
        trials=rows,
        target_trials=int(target) if isinstance(target, int) else None,
        hypervolume=hypervolume_history(
            [(t.number, t.values) for t in rows if t.complete and t.feasible and t.values], teacher_size
        ),
        importances=param_importances(study),
        storage=mask_url(storage) if storage else None,
    )
