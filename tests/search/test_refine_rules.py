"""Which plans earn a longer recovery and in what order (refine.refinable), the loop that spends the
refinements' time (refine.refine_until), and the readers that must never count a refinement as a
trial of the study's own recovery (the duplicate check, the fidelity gates, the sampler's view).

Every study here is synthetic: complete trials written with the record the objective writes, so
each rule is checked on figures chosen to tell it apart from its neighbours.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.models.adapters import ArchInfo
from autocompress.schema.config import SpaceConfig, StudyConfig, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import dedupe, fidelity
from autocompress.search import refine as refine_mod
from autocompress.search.objective import OBJECTIVES
from autocompress.search.refine import refinable, refine_until
from autocompress.search.samplers import OnePlanOnce
from autocompress.store.facts import Host, RecoveryFacts
from autocompress.store.record import TrialRecord
from conftest import tiny_config_dict

HERE = Host(host="here", cpu="x", cores=2)
THERE = Host(host="there", cpu="x", cores=2)
TEACHER = 90.0


def _cfg(*, own_budget: float | None = 3.0, **refine: float) -> StudyConfig:
    objectives = {} if own_budget is None else {"max_accuracy_drop": own_budget}
    return parse_config(tiny_config_dict(Path("/models/tiny"), Path("/data/sentiment.csv"), objectives=objectives,
                                         search={"refine": {"seconds": 60.0, **refine}}))


def _plan(keep: list[int], heads: float = 1.0) -> CompressionPlan:
    return CompressionPlan.uniform(4, keep=keep, heads=heads)


#: distinct plans (a study holds each once, unless a test repeats one on purpose)
P = {name: _plan(keep, heads) for name, keep, heads in [
    ("teacher", [0, 1, 2, 3], 1.0), ("a", [0, 1, 2, 3], 0.5), ("b", [0, 1, 2], 1.0), ("c", [0, 1, 2], 0.5),
    ("d", [0, 1], 1.0), ("e", [0, 1], 0.5), ("f", [0], 1.0), ("g", [0], 0.5),
]}


def _add(study: optuna.Study, plan: CompressionPlan, percent: float, ratio: float, *, drop: float | None = "auto",
         recovered: bool = True, host: Host = HERE, refines: int | None = None, scale: float | None = None,
         recovery_seconds: float | None = 10.0, seconds: dict[str, float] | None = None,
         same_plan_as: int | None = None) -> int:
    """Add a complete full-fidelity trial as the objective (or a refinement) records it; its number."""
    rec = TrialRecord(
        plan=plan, plan_summary=plan.describe(), host=host, fidelity="full",
        accuracy_drop=round(TEACHER - percent, 6) if drop == "auto" else drop,
        recovery=RecoveryFacts(recovered=recovered, recovery_seconds=recovery_seconds if recovered else None),
        seconds={"build": 1.0, "evaluate": 2.0} if seconds is None else seconds,
        refines=refines, recovery_scale=scale, same_plan_as=same_plan_as, speedup=1 / ratio,
    )
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[percent, ratio, 10.0],
                                              user_attrs=rec.to_attrs()))
    return study.trials[-1].number


@pytest.fixture
def study() -> optuna.Study:
    return optuna.create_study(directions=[d for _, d in OBJECTIVES])


def _numbers(study: optuna.Study, cfg: StudyConfig, host: Host | None = None) -> list[int]:
    return [c.trial.number for c in refinable(study, cfg, host)]


# ------------------------------------------------------------------------------------ the order
def test_the_candidates_faster_than_every_trial_within_a_budget_come_first_the_fewest_points_outside_it_first(study):
    cfg = _cfg(own_budget=3.0, near=2.0)  # budgets 0.5, 1, 2 and the study's own 3 points
    _add(study, P["teacher"], 90.0, 1.0, drop=0.0, recovered=False)
    a = _add(study, P["a"], 89.7, 0.8)  # within 0.5: the fastest there; outside no budget
    b = _add(study, P["b"], 88.6, 0.6)  # 1.4: faster than all within 0.5 and 1 → 0.4 outside 1
    c = _add(study, P["c"], 87.7, 0.5)  # 2.3: faster than all within 2 (b, 0.6) → 0.3 outside 2
    d = _add(study, P["d"], 86.0, 0.3)  # 4.0: faster than all within the study's 3 (c, 0.5) → 1.0 outside it
    slow = _add(study, P["e"], 86.5, 0.9)  # 3.2 points below trial a, which is faster: beyond `near`
    found = refinable(study, cfg)
    assert [x.trial.number for x in found] == [c, b, d, a]
    assert slow not in _numbers(study, cfg)
    shortfall = {x.trial.number: x.shortfall for x in found}
    assert shortfall[c] == pytest.approx(0.3) and shortfall[b] == pytest.approx(0.4)
    assert shortfall[d] == pytest.approx(1.0), "the study's own budget counts as one of the budgets"
    assert shortfall[a] is None


def test_the_rest_of_the_front_follows_fastest_first():
    study = optuna.create_study(directions=[d for _, d in OBJECTIVES])
    cfg = _cfg(own_budget=None, near=0.0)
    # every one within 0.5 point, each the fastest of its own budget already: no shortfall anywhere
    slow = _add(study, P["a"], 89.9, 0.9)
    fast = _add(study, P["b"], 89.6, 0.4)
    mid = _add(study, P["c"], 89.8, 0.6)
    assert _numbers(study, cfg) == [fast, mid, slow]
    assert all(c.shortfall is None and c.gap <= 0 for c in refinable(study, cfg))


def test_near_is_how_far_below_the_front_at_its_speed_a_candidate_may_be(study):
    cfg = _cfg(near=2.0)
    _add(study, P["a"], 88.5, 0.5)  # the front at speed 0.5
    at_limit = _add(study, P["b"], 86.5, 0.7)  # 2 points below a faster plan: refined
    beyond = _add(study, P["c"], 86.25, 0.8)  # 2.25 below: not
    numbers = _numbers(study, cfg)
    assert at_limit in numbers and beyond not in numbers
    assert {c.trial.number: c.gap for c in refinable(study, cfg)}[at_limit] == pytest.approx(2.0)
    assert beyond in _numbers(study, _cfg(near=2.5))


# ------------------------------------------------------------------------------------ who is left out
def test_only_recovered_candidates_below_the_teacher_are_refined(study):
    cfg = _cfg(near=100.0)
    unrecovered = _add(study, P["a"], 85.0, 0.5, recovered=False)  # quantised only: no distillation to lengthen
    at_teacher = _add(study, P["b"], 90.0, 0.6, drop=0.0)
    above = _add(study, P["c"], 90.5, 0.7, drop=-0.5)
    unknown = _add(study, P["d"], 80.0, 0.3, drop=None)
    below = _add(study, P["e"], 84.0, 0.4)
    assert _numbers(study, cfg) == [below]
    assert not {unrecovered, at_teacher, above, unknown} & set(_numbers(study, cfg))


def test_a_plan_whose_refinement_reached_the_teachers_metric_is_not_refined_again(study):
    cfg = _cfg(near=100.0)
    first = _add(study, P["d"], 86.0, 0.3)
    _add(study, P["d"], 90.0, 0.3, drop=0.0, refines=first, scale=2.0)  # gained: but nothing is left to gain
    assert _numbers(study, cfg) == []


def test_each_rung_that_raised_the_metric_earns_the_next_and_the_first_that_did_not_ends_the_plans_climb(study):
    cfg = _cfg(near=100.0, scale=3.0)
    plan = P["d"]
    first = _add(study, plan, 84.0, 0.3, recovery_seconds=10.0)
    [c] = refinable(study, cfg)
    assert (c.trial.number, c.scale) == (first, 3.0)
    assert c.estimate == pytest.approx(3 * 10.0 + 1.0 + 2.0)  # distillation × the scale, plus build and evaluation
    gained = _add(study, plan, 86.0, 0.3, refines=first, scale=3.0, recovery_seconds=30.0,
                  seconds={"build": 1.0, "recover": 30.0, "evaluate": 2.0, "test_evaluate": 4.0})
    [c] = refinable(study, cfg)
    assert (c.trial.number, c.scale) == (gained, 9.0)  # the latest rung's scale × refine.scale
    assert c.estimate == pytest.approx(3 * 30.0 + 1.0 + 2.0 + 4.0)  # the latest rung's distillation, not the first's
    _add(study, plan, 86.0, 0.3, refines=gained, scale=9.0, recovery_seconds=90.0)  # no gain at 9×
    assert _numbers(study, cfg) == []


def test_a_rung_that_lost_ground_ends_the_climb_too_but_the_plans_best_drop_still_counts(study):
    cfg = _cfg(near=100.0)
    first = _add(study, P["d"], 84.0, 0.3)
    better = _add(study, P["d"], 87.0, 0.3, refines=first, scale=2.0)
    _add(study, P["d"], 86.5, 0.3, refines=better, scale=4.0)
    assert _numbers(study, cfg) == []
    other = _add(study, P["f"], 85.0, 0.2)  # faster than every plan within 3 points, and 2 points outside them
    [c] = refinable(study, cfg)
    assert c.trial.number == other and c.shortfall == pytest.approx(5.0 - 3.0)


def test_the_estimate_falls_back_to_the_recover_step_and_a_fixed_overhead(study):
    cfg = _cfg(near=100.0)
    timed = _add(study, P["d"], 84.0, 0.3, recovery_seconds=None, seconds={"recover": 7.0, "evaluate": 1.5})
    bare = _add(study, P["f"], 83.0, 0.2, recovery_seconds=4.0, seconds={})
    estimate = {c.trial.number: c.estimate for c in refinable(study, cfg)}
    assert estimate[timed] == pytest.approx(2 * 7.0 + 1.5)
    assert estimate[bare] == pytest.approx(2 * 4.0 + refine_mod._OVERHEAD_SECONDS)


def test_only_the_hosts_own_builds_are_refined_there(study):
    cfg = _cfg(near=100.0)
    here = _add(study, P["d"], 84.0, 0.3, host=HERE)
    there = _add(study, P["f"], 83.0, 0.2, host=THERE)
    assert _numbers(study, cfg, HERE) == [here]
    assert _numbers(study, cfg, THERE) == [there]
    assert sorted(_numbers(study, cfg)) == [here, there]  # no host given: any


def test_a_repeat_of_a_plan_is_not_a_rung_of_it(study):
    """A trial that repeated a plan's figures (dedupe) is no second build: the plan is still refined."""
    cfg = _cfg(near=100.0)
    first = _add(study, P["d"], 84.0, 0.3)
    _add(study, P["d"], 84.0, 0.3, same_plan_as=first)
    assert _numbers(study, cfg) == [first]


def test_a_plan_built_by_two_workers_on_different_hosts_is_refined_on_each(study):
    cfg = _cfg(near=100.0)
    here = _add(study, P["d"], 84.0, 0.3, host=HERE)
    there = _add(study, P["d"], 84.0, 0.3, host=THERE)  # the same plan, built again on another host
    assert _numbers(study, cfg, HERE) == [here]
    assert _numbers(study, cfg, THERE) == [there]


# ------------------------------------------------------------------------------------ refine_until
def _fake_refine(gain: float, calls: list[int]):
    """A stand-in for refine.refine: records the target and adds its refinement, ``gain`` points up."""

    def fake(study: optuna.Study, bench, target) -> optuna.trial.FrozenTrial:
        calls.append(target.trial.number)
        r = target.record
        number = _add(study, r.plan, target.trial.values[0] + gain, target.trial.values[1], host=r.host,
                      refines=target.trial.number, scale=target.scale, recovery_seconds=2 * r.recovery_seconds)
        return study.trials[number]

    return fake


def test_refine_until_refines_the_first_candidate_whose_next_rung_fits_and_stops_when_none_does(study, monkeypatch):
    cfg = _cfg(near=100.0)
    bench = SimpleNamespace(config=cfg, host=HERE.to_dict())
    costly = _add(study, P["d"], 85.0, 0.3, recovery_seconds=100.0)  # first in order: 2 points outside the study's 3
    cheap = _add(study, P["a"], 89.6, 0.8, recovery_seconds=5.0)  # within 0.5 point, outside no budget: last
    _add(study, P["f"], 84.0, 0.2, host=THERE, recovery_seconds=1.0)  # another worker's: not this one's to refine
    assert _numbers(study, cfg, HERE) == [costly, cheap]
    calls: list[int] = []
    told: list[int] = []
    monkeypatch.setattr(refine_mod, "refine", _fake_refine(0.0, calls))
    added = refine_until(study, bench, time.monotonic() + 60.0, on_refined=lambda s, t: told.append(t.number))
    # costly's next rung (2 × 100 s) never fits in a minute; cheap's (2 × 5 s) does, once: it gained nothing
    assert calls == [cheap]
    assert added == told and len(added) == 1 and study.trials[added[0]].user_attrs["refines"] == cheap


def test_refine_until_climbs_while_each_rung_gains_and_fits(study, monkeypatch):
    cfg = _cfg(near=100.0)
    bench = SimpleNamespace(config=cfg, host=HERE.to_dict())
    first = _add(study, P["d"], 80.0, 0.3, recovery_seconds=1.0)
    calls: list[int] = []
    monkeypatch.setattr(refine_mod, "refine", _fake_refine(1.0, calls))
    # each rung is estimated at 2 × the last one's distillation + 3 s: 2·1 + 3, 2·2 + 3, ... 2·16 + 3 = 35 s
    # fit in the 40 s (the fake rungs take no time); the sixth, 2·32 + 3 s, does not
    added = refine_until(study, bench, time.monotonic() + 40.0)
    assert calls[0] == first and calls[1:] == added[:-1]  # each rung refines the one before
    assert [study.trials[n].user_attrs["recovery_scale"] for n in added] == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_refine_until_past_its_deadline_refines_nothing(study, monkeypatch):
    cfg = _cfg(near=100.0)
    _add(study, P["d"], 80.0, 0.3, recovery_seconds=0.1)
    calls: list[int] = []
    monkeypatch.setattr(refine_mod, "refine", _fake_refine(1.0, calls))
    assert refine_until(study, SimpleNamespace(config=cfg, host=HERE.to_dict()), time.monotonic() - 1.0) == []
    assert calls == []


# ------------------------------------------------------------------------------------ readers that skip refinements
def test_a_refinement_is_never_the_build_a_repeated_plan_repeats(study):
    plan = P["d"]
    refinement = _add(study, plan, 86.0, 0.3, refines=41, scale=2.0)  # its original is not in this study
    assert dedupe.seen(study, 99, plan, HERE) is None
    original = _add(study, plan, 84.0, 0.3)
    assert dedupe.seen(study, 99, plan, HERE.to_dict()).number == original != refinement


def test_the_fidelity_gates_compare_a_candidate_with_the_studys_own_recovery_only(study):
    first = _add(study, P["d"], 84.0, 0.3)
    _add(study, P["d"], 88.0, 0.3, refines=first, scale=2.0)
    standing = fidelity.standing(study.get_trials(deepcopy=False), "cheap", number=99)
    assert [p.number for p in standing.full] == [first]


def test_the_sampler_never_sees_a_refinement(study):
    space = SpaceConfig(heads=(1.0, 0.5), ffn=(1.0,), bits=(32,))
    arch = ArchInfo(family="bert", num_layers=4, num_heads=4, intermediate_size=64, hidden_size=32)
    sampler = OnePlanOnce(optuna.samplers.RandomSampler(0), space, arch, None, teacher_percent=TEACHER,
                          max_accuracy_drop=3.0, seed=0)
    first = _add(study, P["d"], 84.0, 0.3)
    _add(study, P["d"], 88.0, 0.3, refines=first, scale=2.0)
    assert [t.number for t in sampler.view(study).get_trials(deepcopy=False)] == [first]
    assert [t.number for t in sampler.view(study).get_trials(states=(TrialState.COMPLETE,))] == [first]
