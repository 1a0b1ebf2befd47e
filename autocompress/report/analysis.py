"""What the report concludes from the trials: best candidates at accuracy budgets, hypervolume
history, the front's progress over time, and parameter importance (plain data, no plotting).

Pareto dominance and hypervolume come from Optuna (through :mod:`autocompress.store.optuna_internals`), importance
from Optuna's PED-ANOVA evaluator.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import numpy as np
import optuna
from optuna.trial import TrialState

from autocompress.schema.config import COMMON_BUDGETS
from autocompress.store import optuna_internals as compat
from autocompress.report.rows import TrialRow

__all__ = [
    "BUDGETS",
    "HypervolumeHistory",
    "ObjectiveImportance",
    "ProgressPoint",
    "best_within",
    "front_progress",
    "hypervolume_history",
    "pareto_mask",
    "param_importances",
]

log = logging.getLogger(__name__)

#: Accuracy drops (points below the teacher) at which the summary names the best candidates.
BUDGETS: tuple[float, ...] = COMMON_BUDGETS

#: Readable names of the study's objectives, in the order the objective returns them.
OBJECTIVE_TITLES: tuple[str, ...] = ("accuracy", "latency", "size")

#: Fewest complete trials for which importance is worth computing.
MIN_TRIALS_FOR_IMPORTANCE = 4

#: Margin past the worst observed latency and size, so that every feasible trial adds volume.
_REFERENCE_MARGIN = 1.1


def pareto_mask(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[bool]:
    """Which points no other point dominates (Optuna's non-domination test)."""
    if not points:
        return []
    signs = np.array([-1.0 if m else 1.0 for m in maximize])
    return compat.pareto_mask((np.asarray(points, dtype=float) * signs).tolist())


def best_within(rows: Iterable[TrialRow], budget: float, key: str = "speedup") -> TrialRow | None:
    """The feasible complete trial with the highest speedup (``key='speedup'``) or the smallest
    size (``key='size_mb'``) among those that lose at most ``budget`` points of accuracy."""
    ok = [
        t for t in rows
        if t.complete and t.feasible and t.accuracy_drop is not None and t.accuracy_drop <= budget
        and getattr(t, key) is not None
    ]
    if not ok:
        return None
    if key == "size_mb":
        return min(ok, key=lambda t: (t.size_mb, -(t.speedup or 0)))
    return max(ok, key=lambda t: (getattr(t, key), -(t.size_mb or 0)))


@dataclass(frozen=True)
class ProgressPoint:
    """The best speedup within each accuracy budget once a trial had completed."""

    trial: int
    elapsed_s: float  # since the study's first trial started
    best: dict[float, float | None]  # budget (points) → best speedup so far


def front_progress(rows: Sequence[TrialRow], budgets: Sequence[float] = BUDGETS) -> list[ProgressPoint]:
    """How the best candidates at each budget improved, in the order trials completed."""
    starts = [t.started for t in rows if t.started is not None]
    done = sorted((t for t in rows if t.complete and t.completed is not None), key=lambda t: t.completed)
    if not starts or not done:
        return []
    t0 = min(starts)
    best: dict[float, float | None] = {b: None for b in budgets}
    out = []
    for t in done:
        if t.feasible and t.accuracy_drop is not None and t.speedup is not None:
            for b in budgets:
                if t.accuracy_drop <= b and (best[b] is None or t.speedup > best[b]):
                    best[b] = t.speedup
        out.append(ProgressPoint(trial=t.number, elapsed_s=(t.completed - t0).total_seconds(), best=dict(best)))
    return out


@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume of the feasible trials after each complete trial, by trial number.

    ``values`` are fractions of the box between the ideal point (100 % accuracy, zero latency,
    zero size) and ``reference`` (accuracy 0 %, relative latency and size a margin past the worst
    observed, at least the teacher's), so 1.0 would be a perfect model.
    """

    reference: tuple[float, float, float]  # accuracy %, latency relative to the teacher, size MB
    trials: list[int]
    values: list[float]


def hypervolume_history(
    points: Sequence[tuple[int, Sequence[float]]], teacher_size_mb: float | None
) -> HypervolumeHistory | None:
    """The hypervolume history of ``(trial number, (accuracy %, latency ratio, size MB))`` points
    (the feasible complete trials), or ``None`` when there are none."""
    pts = sorted((n, tuple(v)) for n, v in points if len(v) == 3)
    if not pts:
        return None
    ref_latency = _REFERENCE_MARGIN * max(1.0, *(v[1] for _, v in pts))
    ref_size = _REFERENCE_MARGIN * max(teacher_size_mb or 0.0, *(v[2] for _, v in pts))
    reference = np.array([0.0, ref_latency, ref_size])
    box = 100.0 * ref_latency * ref_size
    front = np.empty((0, 3))
    hv = 0.0
    trials, values = [], []
    for number, (acc, ratio, size) in pts:
        loss = np.array([[-acc, ratio, size]])  # Optuna's hypervolume minimises every objective
        if not (loss[0] >= reference).any() and not (front <= loss).all(axis=1).any():
            front = np.vstack([front, loss])
            front = front[pareto_mask(front.tolist(), [False, False, False])]
            hv = compat.hypervolume(front, reference, assume_pareto=True) / box
        trials.append(number)
        values.append(float(hv))
    return HypervolumeHistory(reference=(0.0, ref_latency, ref_size), trials=trials, values=values)


@dataclass(frozen=True)
class ObjectiveImportance:
    """Parameter importances for one objective (fractions summing to 1), or why there are none."""

    objective: str
    scores: dict[str, float]
    note: str | None = None  # shown instead of, or next to, the scores


def _importance_of(
    study: optuna.Study, target: Callable[[optuna.trial.FrozenTrial], float], n: int
) -> tuple[dict[str, float], str | None]:
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    # PED-ANOVA wants about five trials in its top quantile; a fixed 10 % would hold fewer than one
    evaluator = PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 5 / n)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = get_param_importances(study, evaluator=evaluator, target=target)
    if any("will be equal" in str(w.message) for w in caught):
        return {}, "the best trials do not differ from the rest on this objective, so no parameter stands out"
    return {str(k): float(v) for k, v in scores.items()}, None


def param_importances(study: optuna.Study, titles: Sequence[str] = OBJECTIVE_TITLES) -> tuple[ObjectiveImportance, ...]:
    """Each objective's parameter importances (PED-ANOVA: no extra packages, handles categorical
    and conditional parameters), titled ``titles`` in the objective's order; a note instead where
    they cannot be computed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    titles = tuple(titles)[: len(study.directions)]
    n = len(complete)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        note = f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials (this study has {n})"
        return tuple(ObjectiveImportance(title, {}, note) for title in titles)
    varying = {name for name in {p for t in complete for p in t.params} if len({repr(t.params.get(name)) for t in complete}) > 1}
    if len(varying) < 2:
        note = (
            f"needs at least two parameters that vary between trials (varying: {', '.join(sorted(varying)) or 'none'})"
        )
        return tuple(ObjectiveImportance(title, {}, note) for title in titles)
    out = []
    for i, (title, direction) in enumerate(zip(titles, study.directions)):
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0  # PED-ANOVA minimises

        def target(t: optuna.trial.FrozenTrial, i: int = i, sign: float = sign) -> float:
            return sign * t.values[i]

        try:
            scores, note = _importance_of(study, target, n)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. a degenerate search space
            log.info("importance for %s failed: %s", title, exc)
            scores, note = {}, f"could not be computed: {exc}"
        out.append(ObjectiveImportance(title, scores, note))
    return tuple(out)

