"""One plan, one build: a trial whose plan the study already built on this host repeats its figures.

Samplers propose a plan again when only parameters it ignores change: those of dropped layers, a
heads/kv pair that grouped-query attention keeps as the same shape, the weight scheme of a plan
with no 8- or 4-bit Linear. The search space records each plan in that one form
(:func:`autocompress.search.space.suggest_plan`), so equal plans are equal models. Building is
deterministic (seeded distillation), so building it again would cost a full recovery and give the
same model, timed on the same host.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

import optuna

from autocompress.schema.plan import CompressionPlan
from autocompress.store import record
from autocompress.store.facts import Host
from autocompress.store.record import TrialRecord

__all__ = ["seen", "repeat"]

#: what a repeat keeps as its own rather than copying from the trial it repeats
_OWN = ("plan", "plan_summary", "simulated", "host", "sampler", *record.QUEUED_BY)


def seen(study: optuna.Study, number: int, plan: CompressionPlan, host: Host | dict) -> FrozenTrial | None:
    """A trial of ``study`` other than ``number`` that already built ``plan`` on ``host`` (as
    ``latency.measure.host_info`` describes it): complete at the full fidelity, or stopped before
    it; ``None`` if there is none. A refinement is not a build of the plan at the study's recovery:
    never the one repeated."""
    here = host if isinstance(host, Host) else Host.from_dict(host)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=done):
        if t.number == number:
            continue
        r = record.read(t)
        fidelities = ("full",) if t.state == TrialState.COMPLETE else ("cheap", "short")
        if r.same_plan_as is None and r.refines is None and r.fidelity in fidelities and r.host == here and r.plan == plan:
            return t
    return None


def repeat(own: TrialRecord, same: FrozenTrial) -> TrialRecord:
    """The record of a trial (identified by ``own``: its plan, host, sampler and labels) that repeats
    ``same``: ``same``'s figures, marked as a repeat of it, with no time spent."""
    copied = record.read(same).with_(**{key: getattr(own, key) for key in _OWN})
    out = copied.with_(same_plan_as=same.number, seconds={})
    if same.state == TrialState.PRUNED:
        out = out.with_(prune_reason=f"the plan of trial {same.number}, stopped before the full fidelity: {copied.prune_reason}")
    return out
