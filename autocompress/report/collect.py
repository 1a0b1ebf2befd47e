"""Gather a study into plain data (no plotting, no HTML): easy to test, reused by every view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["TrialRow", "ReportInfo", "collect", "feasible"]


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, FAIL, RUNNING, ...
    accuracy: float | None  # %
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
    profile_speedups: dict[str, float] = field(default_factory=dict)  # every profile's speedup, by name
    host: str | None = None  # where the measured figures come from


@dataclass(frozen=True)
class ReportInfo:
    study_name: str
    config: dict[str, Any]
    teacher: dict[str, Any]
    trials: list[TrialRow] = field(default_factory=list)

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.accuracy is not None]

    @property
    def profiles(self) -> list[dict[str, Any]]:
        """The study's profiles as stored in its config: the objective's first, then the reported ones."""
        return [p for p in [self.config.get("profile"), *(self.config.get("report_profiles") or [])] if p]

    @property
    def front(self) -> list[TrialRow]:
        return sorted((t for t in self.trials if t.on_front), key=lambda t: -(t.speedup or 0))

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """True unless the trial broke one of its constraints (e.g. the accuracy-drop budget)."""
    return all(v <= 0 for v in (trial.constraints or {}).values())


def collect(study: optuna.Study) -> ReportInfo:
    """Everything the report shows, read from the study's storage alone."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    front = {t.number for t in study.best_trials} if complete else set()
    rows = []
    for t in trials:
        ua = t.user_attrs
        acc = ua.get("accuracy") or {}
        lat = ua.get("latency") or {}
        size = ua.get("size") or {}
        done = t.state == TrialState.COMPLETE and t.values is not None
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name,
                accuracy=t.values[0] if done else None,
                accuracy_ci=(100 * acc["ci_low"], 100 * acc["ci_high"]) if "ci_low" in acc else None,
                accuracy_drop=ua.get("accuracy_drop"),
                speedup=ua.get("speedup"),
                latency_ms=lat.get("candidate_ms"),
                baseline_ms=lat.get("baseline_ms"),
                latency_iqr_ms=lat.get("candidate_iqr_ms"),
                noisy=bool(lat.get("noisy", False)),
                size_mb=t.values[2] if done and len(t.values) > 2 else size.get("megabytes"),
                size_ratio=ua.get("size_ratio"),
                plan=ua.get("plan"),
                plan_summary=ua.get("plan_summary", ""),
                baseline=ua.get("baseline"),
                simulated=bool(ua.get("simulated", False)),
                feasible=feasible(t),
                on_front=t.number in front,
                fail_reason=ua.get("fail_reason") or ua.get("prune_reason"),
                fidelity=ua.get("fidelity"),
                duration_s=duration,
                latency_kind=lat.get("kind", "measured"),
                profile_speedups={
                    name: v["speedup"] for name, v in (ua.get("latencies") or {}).items() if v.get("speedup")
                },
                host=(ua.get("host") or {}).get("host"),
            )
        )
    return ReportInfo(
        study_name=study.study_name,
        config=dict(study.user_attrs.get("config") or {}),
        teacher=dict(study.user_attrs.get("teacher") or {}),
        trials=rows,
    )
