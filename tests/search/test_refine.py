"""Refinement: which front members earn a longer recovery, in what order, and how a refinement is stored."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.schema.config import parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search.refine import refinable
from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.store.facts import Host, RecoveryFacts
from autocompress.store.record import TrialRecord
from conftest import tiny_config_dict

HERE = Host(host="a", cpu="x", cores=2)


def _cfg(tiny_model_dir, tiny_csv, **search):
    return parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, objectives={"max_accuracy_drop": 5.0},
                                         search={"trials": 6, "refine": {"seconds": 60, **search}}))


def _add(study, plan, percent, ratio, *, drop, recovered=True, host=HERE, refines=None, scale=None, seconds=10.0):
    rec = TrialRecord(plan=plan, plan_summary=plan.describe(), host=host, fidelity="full", accuracy_drop=drop,
                      recovery=RecoveryFacts(recovered=recovered, recovery_seconds=seconds if recovered else None),
                      seconds={"build": 1.0, "evaluate": 2.0}, refines=refines, recovery_scale=scale,
                      speedup=1 / ratio)
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[percent, ratio, 10.0],
                                              user_attrs=rec.to_attrs()))
    return study.trials[-1].number


def _plan(keep, heads=1.0):
    return CompressionPlan.uniform(4, keep=keep, heads=heads)


@pytest.fixture
def study():
    return optuna.create_study(directions=["maximize", "minimize", "minimize"])


def test_the_fastest_candidates_outside_a_budget_come_first_the_nearest_to_it_first(study, tiny_model_dir, tiny_csv):
    cfg = _cfg(tiny_model_dir, tiny_csv, near=2.0)
    _add(study, _plan([0, 1, 2, 3]), 80.0, 1.0, drop=0.0, recovered=False)  # the teacher
    within = _add(study, _plan([0, 1, 2, 3], 0.5), 79.6, 0.8, drop=0.4)  # within 0.5: on the front, nothing faster
    close = _add(study, _plan([0, 1]), 78.4, 0.5, drop=1.6)  # 0.6 outside 1 point; faster than all within it
    far = _add(study, _plan([0]), 77.0, 0.3, drop=3.0)  # 1 outside 2 points
    slow = _add(study, _plan([0, 1, 2]), 77.5, 0.9, drop=2.5)  # 2.1 below trial `within` at its speed: too far
    order = [c.trial.number for c in refinable(study, cfg)]
    assert order == [close, far, within]  # `within` could only win a budget it already wins: last
    assert slow not in order and 0 not in order  # too far below the front; not recovered
    first = refinable(study, cfg)[0]
    assert first.shortfall == pytest.approx(0.6) and first.scale == 2.0
    assert first.estimate == pytest.approx(2 * 10.0 + 1.0 + 2.0)  # distillation × the scale, plus build and evaluation


def test_a_plan_at_the_teachers_metric_or_built_elsewhere_is_not_refined(study, tiny_model_dir, tiny_csv):
    cfg = _cfg(tiny_model_dir, tiny_csv)
    _add(study, _plan([0, 1]), 80.0, 0.5, drop=0.0)
    other = _add(study, _plan([0]), 78.0, 0.3, drop=2.0, host=Host(host="b"))
    assert [c.trial.number for c in refinable(study, cfg, HERE)] == []
    assert [c.trial.number for c in refinable(study, cfg, Host(host="b"))] == [other]


def test_a_refinement_that_gained_earns_the_next_rung_and_one_that_did_not_stops(study, tiny_model_dir, tiny_csv):
    cfg = _cfg(tiny_model_dir, tiny_csv)
    plan = _plan([0, 1])
    first = _add(study, plan, 77.0, 0.5, drop=3.0)
    gained = _add(study, plan, 78.0, 0.5, drop=2.0, refines=first, scale=2.0, seconds=20.0)
    [next_rung] = refinable(study, cfg)
    assert next_rung.trial.number == gained and next_rung.scale == 4.0
    assert next_rung.estimate == pytest.approx(2 * 20.0 + 3.0)
    _add(study, plan, 77.9, 0.5, drop=2.1, refines=gained, scale=4.0, seconds=40.0)  # no gain at 4×
    assert refinable(study, cfg) == []


def test_the_front_keeps_each_plan_once_and_the_front_before_refinement_leaves_refinements_out(study):
    plan = _plan([0, 1])
    first = _add(study, plan, 77.0, 0.5, drop=3.0)
    same = _add(study, plan, 77.0, 0.5, drop=3.0, refines=first, scale=2.0)
    assert [t.number for t in record.front(study)] == [first]  # equal figures: the first build
    better = _add(study, plan, 78.5, 0.5, drop=1.5, refines=same, scale=4.0)
    assert [t.number for t in record.front(study)] == [better]
    assert [t.number for t in record.front_before_refinement(study)] == [first]


def test_constraint_attributes_mark_a_refinement_outside_the_budget_infeasible(study):
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0, 1.0, 1.0],
                                              system_attrs=compat.constraint_attrs({record.DROP_CONSTRAINT: 0.5})))
    assert not record.feasible(study.trials[-1])
