"""The fidelity policy: which candidates are worth their distillation and their measured latency.

A candidate climbs up to three rungs, and each step up costs more:

* ``cheap`` (seconds): built without recovery, its size exact, its latency from the calibrated
  cost model (labelled predicted; measured where no cost model applies), its task metric on the
  first ``fidelity.cheap_eval_size`` eval examples;
* ``short``, for plans that need recovery: distilled for ``fidelity.short_fraction`` of its
  budget (:func:`autocompress.search.build.recovery_epochs`), the metric on the same subset again;
* ``full``: the rest of the budget, latency measured against the teacher, the whole eval split.

Between rungs :func:`decide` stops a candidate that could not move the front, in this order
(unless ``fidelity.patience`` candidates in a row have been stopped: then the next one goes on,
so that a study whose screen stops everything still reaches its target):

1. **Out of budget**: even its optimistic final metric is more than ``objectives.max_accuracy_drop``
   below the teacher (not applied before recovery to a plan that recovery will change).
2. **Dominated**: a full-fidelity trial is already at least as fast (by the cost model's tolerance
   when the candidate's latency is predicted), as small, and as accurate as the candidate's
   optimistic final metric.
3. **Successive halving over several objectives**: among the candidates that reached this rung
   (metric at the rung, latency, size), it is neither on their Pareto front nor in the best
   ``fidelity.keep_fraction`` of them by non-dominated rank. Before recovery, a plan that
   distillation will change is ranked only against plans of the same depth that it will change
   too: a 2-layer student's unrecovered metric is far below a 6-layer one's whatever it will reach.

The optimistic final metric at ``cheap`` is the teacher's less ``fidelity.margin`` for a plan
that recovery will change (a trial that close to the teacher counts as recovered already; the
unrecovered metric says nothing of what distillation will reach), and the top of the
subset's 95 % interval for one it will not. At ``short`` it is the top of the interval plus the
largest gain from ``short`` to ``full`` that the study has measured (``fidelity.short_gain``
until it has measured two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial, TrialState

from autocompress.store import record
from autocompress.search.build import needs_recovery
from autocompress.store.optuna_internals import pareto_mask
from autocompress.schema.config import StudyConfig
from autocompress.tasks.evaluate import Metric
from autocompress.schema.plan import CompressionPlan
from autocompress.search.workbench import screening_predicts

__all__ = ["Gate", "Point", "Standing", "Rung", "decide", "staged", "standing"]

Rung = Literal["cheap", "short"]


@dataclass(frozen=True)
class Gate:
    """What a rung decided for one candidate."""

    blocker: int | None = None  # the full-fidelity trial that made going on pointless, if one did
    reason: str = ""  # why it was stopped, as the trial records it; "" when promoted
    note: str = ""  # why it was promoted although the rules were not asked

    @property
    def promote(self) -> bool:
        """Go on to the next rung."""
        return not self.reason


@dataclass(frozen=True)
class Point:
    """A trial's figures at one rung: metric %, latency ratio to the teacher, size MB."""

    percent: float
    ratio: float
    size_mb: float
    number: int = -1
    layers: int = 0  # layers the plan keeps
    recovers: bool = False  # distillation changes it (what an unrecovered metric can be compared with)


@dataclass(frozen=True)
class Standing:
    """What the study knows when a candidate reaches a rung."""

    full: tuple[Point, ...]  # full-fidelity trials (their objective values)
    peers: tuple[Point, ...]  # every other trial that reached this rung, with its figures there
    gains: tuple[float, ...]  # measured gains (points) from the short rung to the full one
    stopped_in_a_row: int = 0  # candidates stopped since the last one that reached the full fidelity


def staged(cfg: StudyConfig, plan: CompressionPlan) -> bool:
    """True when ``plan`` climbs the rungs: the study screens, and the plan changes structure that
    recovery will distil, or it quantises and the screen predicts its latency (where the screen
    would have to time it, timing it once at the full fidelity costs less; a plan that only
    quantises is screened as it is, before its short quantisation-aware pass); False: straight to
    the full fidelity."""
    if not cfg.fidelity.enabled:
        return False
    return (plan.changes_structure and needs_recovery(cfg.recovery, plan)) or (plan.quantises and screening_predicts(cfg))


def standing(trials: Sequence[FrozenTrial], rung: Rung, number: int) -> Standing:
    """The :class:`Standing` at ``rung`` from the study's ``trials`` (the candidate's own, ``number``, left out)."""
    full, peers, gains = [], [], []
    stopped: list[int] = []
    for t in trials:
        if t.number == number or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        r = record.read(t)
        if r.same_plan_as is not None or r.refines is not None:  # a refinement's longer recovery is no peer
            continue
        layers = len(r.plan.kept_layers) if r.plan is not None else 0
        recovers = r.plan is not None and r.plan.changes_structure
        if t.state == TrialState.COMPLETE and t.values is not None and r.fidelity in (None, "full"):
            full.append(Point(t.values[0], t.values[1], t.values[2], t.number))
            if r.short_accuracy is not None:
                gains.append(t.values[0] - 100 * r.short_accuracy.value)
        if t.state == TrialState.PRUNED and r.fidelity in ("cheap", "short"):
            stopped.append(t.number)
        at = r.cheap_accuracy if rung == "cheap" else r.short_accuracy
        ratio = r.screened_ratio
        if at is not None and ratio is not None and r.size_mb is not None:
            peers.append(Point(100 * at.value, ratio, r.size_mb, t.number, layers, recovers))
    last_full = max((p.number for p in full), default=-1)
    return Standing(tuple(full), tuple(peers), tuple(gains), sum(n > last_full for n in stopped))


def optimistic(cfg: StudyConfig, rung: Rung, teacher_percent: float, at: Metric, recovers: bool, gains: Sequence[float]) -> float:
    """The best final metric (%) the candidate could still reach (see the module's text)."""
    top = 100 * at.ci_high
    if rung == "cheap":
        return teacher_percent - cfg.fidelity.margin if recovers else top
    gain = max(gains) if len(gains) >= 2 else cfg.fidelity.short_gain
    return top + max(0.0, gain)


def decide(
    cfg: StudyConfig,
    rung: Rung,
    teacher_percent: float,
    at: Metric,
    ratio: float,
    size_mb: float,
    *,
    recovers: bool,
    known: Standing,
    tolerance: float = 0.0,
    layers: int = 0,
) -> Gate:
    """Promote the candidate (metric ``at`` this rung, latency ``ratio``, ``size_mb``) to the next rung
    unless one of the module's three rules stops it. ``tolerance`` is the relative error of a
    predicted ``ratio`` (0 for a measured one); ``recovers`` says whether distillation will change it;
    ``layers`` is how many layers it keeps.
    """
    if known.stopped_in_a_row >= cfg.fidelity.patience:
        return Gate(note=f"promoted: the last {known.stopped_in_a_row} candidates were stopped (fidelity.patience)")
    best = optimistic(cfg, rung, teacher_percent, at, recovers, known.gains)
    where = "before recovery" if rung == "cheap" else "after the short distillation"
    name = at.name
    budget = cfg.objectives.max_drop
    blind = rung == "cheap" and recovers  # the unrecovered metric says nothing of the recovered one
    if budget is not None and not blind and teacher_percent - best > budget:
        if at.natural is not None and cfg.objectives.max_perplexity_increase is not None:
            return Gate(reason=(  # the budget in the metric's own terms
                f"stopped {where}: {_on_subset(at)}, at best {best:.1f}%, cannot come within the budget: {name} at most "
                f"{cfg.objectives.max_perplexity_increase:g} % above the teacher's"
            ))
        return Gate(reason=(
            f"stopped {where}: {name} {100 * at.value:.1f}% on the subset, at best {best:.1f}%, cannot come "
            f"within {budget:g} pt of the teacher's {teacher_percent:.1f}%"
        ))
    for f in known.full:
        if f.ratio <= ratio * (1 - tolerance) and f.size_mb <= size_mb and f.percent >= best:
            return Gate(blocker=f.number, reason=(
                f"stopped {where}: trial {f.number} is already as fast, as small and at {f.percent:.1f}%, "
                f"at least the {best:.1f}% this one could reach ({_on_subset(at)})"
            ))
    me = Point(100 * at.value, ratio, size_mb, layers=layers, recovers=recovers)
    peers = known.peers
    if rung == "cheap":  # unrecovered metrics compare only among plans that distillation will treat alike
        peers = tuple(p for p in peers if p.recovers == recovers and (not recovers or p.layers == layers))
    group = [*peers, me]
    keep = math.ceil(cfg.fidelity.keep_fraction * len(group))
    ranks = _ranks(group)
    order = sorted(range(len(group)), key=lambda i: (ranks[i], -group[i].percent, group[i].ratio))
    mine = len(group) - 1
    if ranks[mine] > 0 and order.index(mine) >= keep:
        return Gate(reason=(
            f"stopped {where}: not among the best {keep} of the {len(group)} candidates at this rung "
            f"({_on_subset(at)}, {1 / ratio:.2f}× faster, {size_mb:.1f} MB)"
        ))
    return Gate()


def _on_subset(at: Metric) -> str:
    """The candidate's figure at this rung: the objective's %, and a metric's own figure where it has one
    ("perplexity 287.4 (69.1%) on the subset")."""
    if at.natural is None:
        return f"{at.name} {100 * at.value:.1f}% on the subset"
    return f"{at.name} {at.natural:.4g} ({100 * at.value:.1f}% of the teacher's quality) on the subset"


def _ranks(points: Sequence[Point]) -> list[int]:
    """Non-dominated rank of each point (0: on the front), maximising percent, minimising the rest."""
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        mask = pareto_mask([(-points[i].percent, points[i].ratio, points[i].size_mb) for i in left])
        for i, on in zip(left, mask):
            if on:
                ranks[i] = rank
        left = [i for i, on in zip(left, mask) if not on]
        rank += 1
    return ranks
