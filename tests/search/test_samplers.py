"""The study's sampler: told about stopped candidates, canonical plans, one plan once."""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.schema.config import DepthSpace, SearchConfig, SpaceConfig
from autocompress.tasks.evaluate import Metric
from autocompress.models.adapters import ArchInfo
from autocompress.search.objective import OBJECTIVES
from autocompress.store.facts import LatencyFigures, SizeFigures
from autocompress.store.record import TrialRecord
from autocompress.search.samplers import OnePlanOnce, make_sampler, sampler_name
from autocompress.search.space import canonical, distributions, suggest_plan

ARCH = ArchInfo(family="bert", num_layers=6, num_heads=4, intermediate_size=64, hidden_size=32)
#: 64 plans in all: 2 × 2 × 2 per layer set; 8 layer sets (full depth, depths 2–4 by either
#: selection, and depth 5, where 'even' and 'first' both keep layers 0–4)
SMALL = SpaceConfig(heads=(1.0, 0.5), ffn=(1.0, 0.5), bits=(32, 8), schedule="shared",
                    depth=DepthSpace(min=2, selection=("even", "first")))
TEACHER = 90.0


def _study() -> optuna.Study:
    return optuna.create_study(directions=[d for _, d in OBJECTIVES])


def _wrap(inner: optuna.samplers.BaseSampler, space: SpaceConfig = SMALL, seed: int = 0) -> OnePlanOnce:
    return OnePlanOnce(inner, space, ARCH, None, teacher_percent=TEACHER, max_accuracy_drop=5.0, seed=seed)


def _values(plan) -> tuple[float, float, float]:
    kept = len(plan.kept_layers)
    return 80.0 + kept, kept / 6, float(kept)


def _run(study: optuna.Study, n: int) -> list:
    plans = []
    for _ in range(n):
        trial = study.ask()
        plan = suggest_plan(trial, SMALL, ARCH)
        plans.append((dict(trial.params), plan))
        study.tell(trial, _values(plan))
    return plans


def test_plain_random_sampling_repeats_plans_and_one_plan_once_does_not():
    plain = _run(optuna.create_study(directions=[d for _, d in OBJECTIVES], sampler=optuna.samplers.RandomSampler(0)), 40)
    assert len({p.key() for _, p in plain}) < 40  # the birthday problem over 72 plans (and dropped-layer duplicates)
    study = _study()
    study.sampler = _wrap(optuna.samplers.RandomSampler(0))
    wrapped = _run(study, 40)
    assert len({p.key() for _, p in wrapped}) == 40
    for params, plan in wrapped:  # stored in their canonical form
        assert canonical(params, SMALL, ARCH) == (plan, params)


def test_every_plan_is_proposed_once_until_the_space_runs_out(caplog):
    study = _study()
    study.sampler = _wrap(optuna.samplers.RandomSampler(1))
    with caplog.at_level(logging.INFO, logger="autocompress.search.samplers"):
        plans = _run(study, 70)
    assert len({p.key() for _, p in plans[:64]}) >= 60  # 64 random redraws may miss one of the last plans
    assert len({p.key() for _, p in plans}) == 64  # every plan, and then repeats: the space ran out
    assert "no new plan was found" in caplog.text


@pytest.mark.parametrize("name", ["gp"])
def test_model_based_samplers_are_told_the_stopped_candidates(name):
    """Past its start-up trials only because stopped candidates count as observations."""
    study = _study()
    space = distributions(SMALL, ARCH)
    for i in range(9):
        trial = study.ask()
        plan = suggest_plan(trial, SMALL, ARCH)
        m = Metric(name="accuracy", value=0.4 + 0.01 * i, ci_low=0.35, ci_high=0.45 + 0.01 * i, n=500)
        rec = TrialRecord(plan=plan, fidelity="cheap", cheap_accuracy=m, latency=LatencyFigures(ratio=0.5, kind="predicted"),
                          size=SizeFigures(megabytes=10.0), prune_reason="stopped before recovery")
        for key, value in rec.to_attrs().items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.PRUNED)
    inner = make_sampler(SearchConfig(sampler=name, seed=0))
    wrapped = _wrap(inner)
    probe = study.ask()
    frozen = study._storage.get_trial(probe._trial_id)  # noqa: SLF001 (what a sampler is handed)
    assert inner.sample_relative(study, frozen, space) == {}  # as Optuna sees it: no complete trial yet
    told = inner.sample_relative(wrapped.view(study), frozen, space)
    assert told and set(told) == set(space)
    complete = wrapped.view(study).get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 9 and all(t.constraints["accuracy_drop"] >= 1.0 for t in complete)


@pytest.mark.parametrize("name", ["gp", "tpe", "nsga2", "random"])
def test_each_sampler_runs_inside_and_keeps_its_name(name):
    study = _study()
    study.sampler = _wrap(make_sampler(SearchConfig(sampler=name, seed=0)))
    plans = _run(study, 12)
    assert len({p.key() for _, p in plans}) == 12
    assert sampler_name(study.sampler) == name


def test_a_queued_trial_keeps_its_parameters_even_when_the_plan_is_held():
    study = _study()
    study.sampler = _wrap(optuna.samplers.RandomSampler(0))
    (params, plan), = _run(study, 1)
    study.enqueue_trial(params)
    trial = study.ask()
    assert suggest_plan(trial, SMALL, ARCH) == plan  # the objective's de-duplication handles the repeat
