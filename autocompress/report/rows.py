"""A stored trial as one report row: plain data read through the trial record, easy to test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from autocompress.store import record

__all__ = ["ProfileFigure", "TrialRow", "trial_row"]


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
    fidelity: str | None  # the rung it reached: "cheap", "short" or "full" (see autocompress.search.fidelity)
    duration_s: float | None
    latency_kind: str = "measured"  # of the objective's profile: "measured" or "predicted"
    profile_latency: dict[str, ProfileFigure] = field(default_factory=dict)  # every profile's figures, by name
    host: str | None = None  # where the measured figures come from
    values: tuple[float, ...] | None = None  # the objective values Optuna holds (complete trials)
    params: dict[str, Any] = field(default_factory=dict)
    started: datetime | None = None
    completed: datetime | None = None
    test_accuracy: float | None = None  # % on the held-out test split, when the task has one
    screened: float | None = None  # a stopped trial's metric % on the eval subset, at the rung it reached
    exits: dict[str, Any] | None = None  # early exits: where eval examples stop (``scoring.exits_taken``)
    vocabulary: dict[str, Any] | None = None  # a kept vocabulary: rows kept, eval tokens read as [UNK]
    size_split: dict[str, int] | None = None  # shipped bytes of the embeddings, encoder layers and head

    @property
    def profile_speedups(self) -> dict[str, float]:
        return {name: p.speedup for name, p in self.profile_latency.items()}

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.accuracy is not None


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


def trial_row(t: optuna.trial.FrozenTrial, front: set[int]) -> TrialRow:
    """``t`` as a report row; ``front`` holds the numbers of the trials on the Pareto front."""
    r = record.read(t)
    score = r.score
    done = t.state == TrialState.COMPLETE and t.values is not None
    values = tuple(t.values) if done else None
    speedup = r.speedup
    if speedup is None and values and len(values) > 1 and values[1] > 0:
        speedup = 1.0 / values[1]  # the objective value is the latency ratio
    duration = (
        (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    )
    profiles = {name: fig for name, stored in r.latencies.items() if (fig := _profile_figure(stored)) is not None}
    test = r.test_metric or r.test_accuracy
    return TrialRow(
        number=t.number,
        state=t.state.name,
        accuracy=values[0] if values else None,
        accuracy_ci=(100 * score.ci_low, 100 * score.ci_high) if score is not None else None,
        accuracy_drop=r.accuracy_drop,
        speedup=speedup,
        latency_ms=r.candidate_ms,
        baseline_ms=r.baseline_ms,
        latency_iqr_ms=r.candidate_iqr_ms,
        noisy=r.noisy,
        size_mb=values[2] if values and len(values) > 2 else r.size_mb,
        size_ratio=r.size_ratio,
        plan=r.plan.to_dict() if r.plan is not None else None,
        plan_summary=r.plan_summary,
        baseline=r.baseline,
        simulated=r.simulated,
        feasible=record.feasible(t),
        on_front=t.number in front,
        fail_reason=r.reason,
        fidelity=r.fidelity,
        duration_s=duration,
        latency_kind=r.latency_kind,
        profile_latency=profiles,
        host=r.host_name,
        values=values,
        params=dict(t.params),
        started=t.datetime_start,
        completed=t.datetime_complete,
        test_accuracy=None if test is None else 100 * test.value,
        screened=None if done else r.screened_percent,
        exits=r.exits,
        vocabulary=r.vocabulary,
        size_split=_split((r.size or {}).get("split")),
    )


def _split(v: Any) -> dict[str, int] | None:
    if not isinstance(v, dict) or not all(isinstance(b, int) and not isinstance(b, bool) for b in v.values()):
        return None
    return {str(k): int(b) for k, b in v.items()}


def split_text(split: dict[str, int]) -> str:
    """Where a model's bytes are, e.g. 'embeddings 47.0 MB · layers 10.6 MB · head 0.6 MB'."""
    return " · ".join(f"{name} {b / 1e6:.2f} MB" for name, b in split.items())


def vocabulary_text(vocab: dict[str, Any]) -> str:
    """A kept vocabulary in words, e.g. '9,812 of 30,522 rows (tokens seen ≥1× in the distillation set); 0.4 % of eval tokens read as [UNK]'."""
    kept, full = _num(vocab.get("kept_rows")), _num(vocab.get("full_rows"))
    if kept is None or full is None:
        return ""
    dropped = _num(vocab.get("eval_tokens_dropped"))
    text = f"{kept:,.0f} of {full:,.0f} rows (tokens seen ≥{vocab.get('min_count', 1)}× in {vocab.get('corpus', 'the corpus')})"
    return text + (f"; {100 * dropped:.1f} % of eval tokens read as [UNK]" if dropped is not None else "")


def exits_text(exits: dict[str, Any]) -> str:
    """Where a front member's eval examples stop, e.g. '61 % after 2 layers, 39 % run all 6 (mean 3.6 layers, threshold 0.9)'."""
    depths, shares = exits.get("student_layers") or [], exits.get("shares") or []
    if not depths or len(depths) != len(shares):
        return ""
    parts = [f"{100 * s:.0f} % after {d} layer{'s' if d != 1 else ''}" for d, s in zip(depths[:-1], shares[:-1], strict=True)]
    parts.append(f"{100 * shares[-1]:.0f} % run all {depths[-1]}")
    mean = _num(exits.get("mean_layers"))
    threshold = _num(exits.get("threshold"))
    tail = ", ".join(x for x in (f"mean {mean:.1f} layers" if mean is not None else "",
                                 f"threshold {threshold:g}" if threshold is not None else "") if x)
    return ", ".join(parts) + (f" ({tail})" if tail else "")
