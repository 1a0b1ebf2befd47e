"""Refinement: which front members earn a longer recovery, in what order, and how a refinement is stored."""

from __future__ import annotations

import csv
import random

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.export.ship import export_trial
from autocompress.schema.config import parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import build, dedupe
from autocompress.search.refine import refinable
from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.store.facts import Host, RecoveryFacts
from autocompress.store.record import TrialRecord
from autocompress.study import session
from autocompress.study.runner import completed
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


def _hard_csv(path, n=300, noise=0.3, seed=0):
    """Sentiment rows whose label is flipped for ``noise`` of them: no model reaches 100 %."""
    from conftest import sentiment_rows

    rng = random.Random(seed)
    rows = sentiment_rows(n, seed)
    for r in rows:
        if rng.random() < noise:
            r["sentiment"] = rng.choice(["negative", "neutral", "positive"])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sentence", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def refined_study(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    data = _hard_csv(tmp / "noisy.csv")
    cfg = parse_config(tiny_config_dict(
        tiny_model_dir, data, teacher={"epochs": 6.0}, recovery={"epochs": 0.5, "learning_rate": 1e-3},
        fidelity={"enabled": False}, space={"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32], "depth": {"min": 1}},
        search={"trials": 5, "sampler": "random", "seed": 3, "refine": {"seconds": 15, "near": 50.0}},
    ))
    request = session.run_request(cfg, storage=f"sqlite:///{tmp / 'r.db'}", cache_dir=tmp / "cache")
    return session.run_study(request), request, tmp


def test_a_study_refines_its_front_and_stores_each_refinement_as_its_own_trial(refined_study):
    run, _, _ = refined_study
    study = run.study
    assert run.refined, "no candidate was refined"
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in run.refined:
        t = trials[number]
        r = record.read(t)
        base = trials[r.refines]
        b = record.read(base)
        assert r.plan == b.plan and r.sampler == "refinement" and record.is_full(t)
        assert r.recovery_scale == 2 * b.scale
        assert r.recovery.recovery_epochs == pytest.approx(2 * b.recovery.recovery_epochs)
        assert r.recovery.recovery_steps > b.recovery.recovery_steps
        assert (r.speedup, r.size_mb, tuple(t.values[1:])) == (b.speedup, b.size_mb, tuple(base.values[1:]))
        assert r.latency == b.latency  # the same plan on the same host: the refined trial's latency
        assert t.params == base.params
    assert completed(study) == 5  # the target counts the sampler's trials, not refinements
    assert not any(record.REFINES in t.user_attrs for t in record.front_before_refinement(study))


def test_a_refinement_is_never_the_build_a_repeated_plan_repeats(refined_study):
    run, _, _ = refined_study
    refinement = next(t for t in run.study.trials if t.number == run.refined[0])
    r = record.read(refinement)
    same = dedupe.seen(run.study, 10_000, r.plan, r.host)
    assert same is not None and same.number != refinement.number and record.REFINES not in same.user_attrs


def test_resuming_a_refined_study_at_its_target_runs_no_new_trial(refined_study):
    run, request, _ = refined_study
    sampled = {t.number for t in run.study.trials if record.REFINES not in t.user_attrs}
    again = session.run_study(session.resume_request(request.name, request.url, cache_dir=request.cache_dir))
    assert {t.number for t in again.study.trials if record.REFINES not in t.user_attrs} == sampled


def test_export_rebuilds_a_refinement_with_its_own_scale(refined_study):
    run, request, tmp = refined_study
    number = run.refined[0]
    result = export_trial(run.study, number, tmp / "out", request.cache_dir)  # checks the rebuilt metric
    assert result is not None
    plan = record.read(next(t for t in run.study.trials if t.number == number)).plan
    from autocompress.search.workbench import prepare

    bench = prepare(request.config, request.cache_dir)
    shorter = build.candidate(bench, plan, scale=1.0).model
    longer = build.candidate(bench, plan, scale=2.0).model
    assert any((a != b).any() for a, b in zip(shorter.state_dict().values(), longer.state_dict().values()))


def test_a_time_budget_stops_the_trials_early_and_the_run_ends_normally(tiny_model_dir, tiny_csv, tmp_path):
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv,
                                        search={"trials": 500, "sampler": "random", "time_budget": 15,
                                                "refine": {"seconds": 0}}))
    run = session.run_study(session.run_request(cfg, storage=f"sqlite:///{tmp_path / 't.db'}",
                                                cache_dir=tmp_path / "cache"))
    assert 0 < completed(run.study) < 500 and run.refined == ()


def test_constraint_attributes_mark_a_refinement_outside_the_budget_infeasible(study):
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0, 1.0, 1.0],
                                              system_attrs=compat.constraint_attrs({record.DROP_CONSTRAINT: 0.5})))
    assert not record.feasible(study.trials[-1])
