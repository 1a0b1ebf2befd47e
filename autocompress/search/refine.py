"""Recovery spent where the front is: the fidelity rungs continued past the full one.

Every full trial gets the same distillation budget, whatever its promise. Once the trials are done
(``search.refine``: the time kept for it), the candidates on or near the front of the task metric
against speed are built again from the teacher with ``refine.scale`` times the epochs, and a
refined candidate still on or near the front whose last rung raised its metric may earn the next
(the scale again), while the time lasts; one already at the teacher's metric has nothing to
gain. The order spends the time where it can change the answer a user picks: first the candidates
faster than every trial within some accuracy budget (0.5, 1 and 2 points, and the study's own),
the fewest points outside such a budget first; then the rest of the front, fastest first. A
refinement is not started unless its estimated time (the refined build's distillation time × the
scale, plus its evaluation) fits.

A refinement is a trial of its own, added complete to the study, so the trial it refines keeps its
figures and the front before refinement stays readable: the same plan and parameters, its
``refines`` (the trial it rebuilt) and ``recovery_scale`` (its epochs as a multiple of the
study's), the distillation's facts, the metric on the whole eval split, and the latency and size
of the trial it refines (the same plan on the same host: the same shapes and kernels, so the same
time; a refinement on another host is timed afresh). Samplers, the fidelity gates and the
duplicate check never count refinements as the study's own trials, and neither does the trial
target. Export rebuilds a refinement with its scale: the same model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.schema.config import COMMON_BUDGETS, StudyConfig
from autocompress.search import build, scoring
from autocompress.search.objective import timed, with_evaluation, with_measurement
from autocompress.search.workbench import Workbench
from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.store.facts import Host
from autocompress.store.record import TrialRecord

__all__ = ["Refinable", "refinable", "refine", "refine_until"]

log = logging.getLogger(__name__)

#: seconds a refinement's build and evaluation are assumed to take beyond its distillation, when
#: the refined trial recorded none
_OVERHEAD_SECONDS = 5.0


@dataclass(frozen=True)
class Refinable:
    """A plan worth a longer recovery: its latest build, how it stands, what the next rung costs."""

    trial: FrozenTrial  # the plan's latest build (the trial itself, or its last refinement)
    record: TrialRecord
    gap: float  # points of the metric below the front at its speed (≤ 0: on it)
    # points it lacks to be the fastest within some budget (COMMON_BUDGETS and the study's own): it is
    # faster than every trial within that budget, and this far outside it; None: no such budget
    shortfall: float | None
    estimate: float  # seconds the next refinement is expected to take
    scale: float  # the next refinement's recovery scale


def _builds(study: optuna.Study) -> list[tuple[FrozenTrial, TrialRecord]]:
    """The study's full-fidelity builds (refinements included, repeats left out)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not record.is_full(t):
            continue
        r = record.read(t)
        if r.same_plan_as is None and r.plan is not None:
            out.append((t, r))
    return out


def _estimate(r: TrialRecord, factor: float) -> float:
    """Seconds a build of ``r``'s plan with ``factor`` × its recovery would take."""
    seconds = r.seconds or {}
    recovery = r.recovery_seconds if r.recovery_seconds is not None else seconds.get("recover", 0.0)
    rest = sum(seconds.get(step, 0.0) for step in ("build", "evaluate", "test_evaluate")) or _OVERHEAD_SECONDS
    return factor * recovery + rest


def refinable(study: optuna.Study, cfg: StudyConfig, host: Host | None = None) -> list[Refinable]:
    """The plans worth refining next, in the order to refine them (see the module's text): recovered
    by distillation, built on ``host`` (any host when ``None``), on the front or within
    ``search.refine.near`` points of it at their speed."""
    builds = _builds(study)
    by_plan: dict[tuple, list[tuple[FrozenTrial, TrialRecord]]] = {}
    for t, r in builds:  # a plan built on two hosts climbs on each: each worker refines its own builds
        by_plan.setdefault((r.plan.key(), r.host), []).append((t, r))  # type: ignore[union-attr]
    metric = {key: max(t.values[0] for t, _ in group) for key, group in by_plan.items()}
    ratio = {key: group[0][0].values[1] for key, group in by_plan.items()}
    drop = {key: min((r.accuracy_drop for _, r in group if r.accuracy_drop is not None), default=None)
            for key, group in by_plan.items()}
    own = cfg.objectives.max_drop
    budgets = sorted({*COMMON_BUDGETS, *((own,) if own is not None else ())})
    fastest = {b: min((ratio[k] for k, d in drop.items() if d is not None and d <= b), default=float("inf"))
               for b in budgets}
    factor = cfg.search.refine.scale
    out = []
    for key, group in by_plan.items():
        group.sort(key=lambda tr: (tr[1].scale, tr[0].number))
        latest_t, latest = group[-1]
        if not latest.recovered or (host is not None and latest.host != host):
            continue
        d = drop[key]
        if d is None or d <= 0:
            continue  # as good as the teacher already: nothing left to recover
        if len(group) > 1 and latest_t.values[0] <= group[-2][0].values[0]:
            continue  # its last rung gained nothing: the next would not either (successive halving)
        faster = [metric[k] for k in by_plan if k != key and ratio[k] <= ratio[key]]
        gap = max(faster, default=metric[key]) - metric[key]
        if gap > cfg.search.refine.near:
            continue
        shortfalls = [d - b for b in budgets if d > b and ratio[key] < fastest[b]]
        out.append(Refinable(latest_t, latest, gap, min(shortfalls, default=None), _estimate(latest, factor),
                             latest.scale * factor))

    def order(c: Refinable) -> tuple[int, float, int]:
        if c.shortfall is not None:
            return 0, c.shortfall, c.trial.number
        return 1, c.trial.values[1], c.trial.number
    return sorted(out, key=order)


def refine(study: optuna.Study, bench: Workbench, target: Refinable) -> FrozenTrial:
    """Build ``target``'s plan again with its next recovery scale, score it, and add it to ``study``
    as a complete trial (see the module's text); the trial added."""
    base, plan = target.record, target.record.plan
    if plan is None:
        raise ValueError(f"trial {target.trial.number} has no plan to refine")
    seconds: dict[str, float] = {}
    host = Host.from_dict(bench.host)
    rec = TrialRecord(plan=plan, plan_summary=plan.describe(), simulated=plan.simulated, host=host,
                      sampler="refinement", refines=target.trial.number, recovery_scale=target.scale)
    built = timed(seconds, "build", build.Build, bench, plan, scale=target.scale)
    full = timed(seconds, "recover", built.finish, keep_float=bench.onnx_teacher is not None)
    if base.host == host:  # the same shapes and kernels on the same host: the same time
        rec = rec.with_(latency=base.latency, latencies=base.latencies, speedup=base.speedup, size=base.size,
                        size_ratio=base.size_ratio)
        ratio, size = target.trial.values[1], target.trial.values[2]
    else:
        m = timed(seconds, "latency", scoring.measure, bench, full.model, plan, full.float_model)
        rec = with_measurement(rec, m, bench.config.profile.name)
        ratio, size = m.objective.ratio, m.size.megabytes
    ev = timed(seconds, "evaluate", scoring.evaluate, bench, full.model)
    test = timed(seconds, "test_evaluate", scoring.held_out, bench, full.model) if bench.test is not None else None
    rec = with_evaluation(rec, ev, test, full.recovery).with_(seconds=seconds)
    budget = bench.config.objectives.max_drop
    constraints = {} if budget is None else {record.DROP_CONSTRAINT: ev.drop - budget}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[ev.percent, ratio, size],
        params=target.trial.params, distributions=target.trial.distributions,
        user_attrs=rec.to_attrs(), system_attrs=compat.constraint_attrs(constraints),
    ))
    added = max((t for t in study.get_trials(deepcopy=False)  # another worker may have added a trial meanwhile
                 if t.user_attrs.get(record.REFINES) == target.trial.number and t.user_attrs.get("recovery_scale") == target.scale),
                key=lambda t: t.number)
    log.info("trial %d refines trial %d (%s) with %.3g× its recovery: %.2f%% → %.2f%% (drop %.2f)",
             added.number, target.trial.number, rec.plan_summary, target.scale / base.scale,
             target.trial.values[0], ev.percent, ev.drop)
    return added


def refine_until(
    study: optuna.Study, bench: Workbench, deadline: float,
    on_refined: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> list[int]:
    """Refine the most promising plan whose next rung fits before ``deadline`` (``time.monotonic()``),
    again and again, until none fits; the numbers of the trials added."""
    added: list[int] = []
    host = Host.from_dict(bench.host)
    while True:
        left = deadline - time.monotonic()
        fits = [c for c in refinable(study, bench.config, host) if c.estimate <= left]
        if not fits:
            return added
        try:
            trial = refine(study, bench, fits[0])
        except Exception as exc:  # the trials are stored; a refinement that cannot be built ends the refining
            log.warning("refining trial %d failed (%s: %s); no further refinement in this run",
                        fits[0].trial.number, type(exc).__name__, exc)
            return added
        added.append(trial.number)
        if on_refined is not None:
            on_refined(study, trial)
