"""A stored trial as one report row: plain data read through the trial record, easy to test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from autocompress.store import record
from autocompress.store.facts import ExitsTaken, LatencyFigures, VocabularyFacts

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
    exits: ExitsTaken | None = None  # early exits: where eval examples stop
    vocabulary: VocabularyFacts | None = None  # a kept vocabulary: rows kept, eval tokens read as [UNK]
    size_split: dict[str, int] | None = None  # shipped bytes of the embeddings, encoder layers and head
    # a metric with a unit of its own (perplexity, KL in nats): the trial's figure in it, its interval and
    # the teacher's on the same examples (None for a share such as accuracy, whose unit is ``accuracy``'s %)
    natural: float | None = None
    natural_ci: tuple[float, float] | None = None
    teacher_natural: float | None = None
    # a generation workload (profile new_tokens > 0) on the objective's profile: the teacher's time to the
    # first token over the candidate's (prefill), the same per output token (decode), and the key/value
    # cache's bytes at the workload's length, the candidate's and the teacher's
    prefill_speedup: float | None = None
    decode_speedup: float | None = None
    kv_cache_bytes: int | None = None
    teacher_kv_cache_bytes: int | None = None
    refines: int | None = None  # a refinement: the trial whose plan it built again with a longer recovery
    recovery_scale: float | None = None  # its recovery's epochs as a multiple of the study's (None: 1)
    recovery_epochs: float | None = None  # the epochs its distillation ran
    on_front_before: bool = False  # on the front as it stood before any refinement

    @property
    def profile_speedups(self) -> dict[str, float]:
        return {name: p.speedup for name, p in self.profile_latency.items()}

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.accuracy is not None


def _profile_figure(f: LatencyFigures) -> ProfileFigure | None:
    """One profile's stored latency as report data (``None`` without a speedup or a ratio)."""
    speedup = f.times_faster
    if speedup is None:
        return None
    low = high = None
    quartiles = f.ratio_quartiles  # measured at one shape; several shapes have no one spread
    if quartiles is not None:
        low, high = 1.0 / max(quartiles), 1.0 / min(quartiles)  # speedup = 1 / ratio: the quartiles swap
    elif f.kind == "predicted" and f.fit_error is not None:
        low, high = speedup * (1 - f.fit_error), speedup * (1 + f.fit_error)
    return ProfileFigure(
        kind=f.kind,
        speedup=speedup,
        speedup_low=low,
        speedup_high=high,
        candidate_ms=f.candidate_ms,
        baseline_ms=f.baseline_ms,
        noisy=f.noisy,
        host_prediction=f.host_prediction.speedup if f.host_prediction is not None else None,
        fit_error=f.fit_error,
    )


def _faster(speedup: float | None, ratio: float | None) -> float | None:
    """Teacher / candidate: the stored speedup, or the inverse of the ratio."""
    if speedup is not None:
        return speedup
    return 1.0 / ratio if ratio else None


def _generation(f: LatencyFigures | None) -> dict[str, Any]:
    """A generation workload's figures on the objective's profile (none for other workloads)."""
    if f is None:
        return {}
    return {
        "prefill_speedup": _faster(f.ttft_speedup, f.ttft_ratio),
        "decode_speedup": _faster(f.tpot_speedup, f.tpot_ratio),
        "kv_cache_bytes": f.kv_cache_bytes,
        "teacher_kv_cache_bytes": f.baseline_kv_cache_bytes,
    }


def trial_row(t: optuna.trial.FrozenTrial, front: set[int], front_before: set[int] | None = None) -> TrialRow:
    """``t`` as a report row; ``front`` holds the numbers of the trials on the Pareto front,
    ``front_before`` those on it before any refinement (``None``: the same)."""
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
    metric = r.metric
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
        size_split=r.size.split if r.size is not None else None,
        natural=metric.natural if metric is not None else None,
        natural_ci=(metric.natural_low, metric.natural_high)
        if metric is not None and metric.natural_low is not None and metric.natural_high is not None else None,
        teacher_natural=metric.teacher_natural if metric is not None else None,
        **_generation(r.latency),
        refines=r.refines,
        recovery_scale=r.recovery_scale,
        recovery_epochs=r.recovery.recovery_epochs if r.recovery is not None else None,
        on_front_before=t.number in (front if front_before is None else front_before),
    )


def split_text(split: dict[str, int]) -> str:
    """Where a model's bytes are, e.g. 'embeddings 47.0 MB · layers 10.6 MB · head 0.6 MB'."""
    return " · ".join(f"{name} {b / 1e6:.2f} MB" for name, b in split.items())


def vocabulary_text(vocab: VocabularyFacts) -> str:
    """A kept vocabulary in words, e.g. '9,812 of 30,522 rows (tokens seen ≥1× in the distillation set); 0.4 % of eval tokens read as [UNK]'."""
    if vocab.kept_rows is None or vocab.full_rows is None:
        return ""
    min_count = vocab.min_count if vocab.min_count is not None else 1
    text = (f"{vocab.kept_rows:,.0f} of {vocab.full_rows:,.0f} rows (tokens seen ≥{min_count}× in "
            f"{vocab.corpus if vocab.corpus is not None else 'the corpus'})")
    dropped = vocab.eval_tokens_dropped
    return text + (f"; {100 * dropped:.1f} % of eval tokens read as [UNK]" if dropped is not None else "")


def exits_text(exits: ExitsTaken) -> str:
    """Where a front member's eval examples stop, e.g. '61 % after 2 layers, 39 % run all 6 (mean 3.6 layers, threshold 0.9)'."""
    stops = exits.stops
    if not stops:
        return ""
    parts = [f"{100 * s:.0f} % after {d} layer{'s' if d != 1 else ''}" for d, s in stops[:-1]]
    parts.append(f"{100 * stops[-1][1]:.0f} % run all {stops[-1][0]}")
    mean, threshold = exits.mean_layers, exits.threshold
    tail = ", ".join(x for x in (f"mean {mean:.1f} layers" if mean is not None else "",
                                 f"threshold {threshold:g}" if threshold is not None else "") if x)
    return ", ".join(parts) + (f" ({tail})" if tail else "")
