"""One plan, one build: a plan the study already built on this host is found, and repeated faithfully."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState, create_trial

from autocompress.models.adapters import ArchInfo
from autocompress.schema.config import DepthSpace, SpaceConfig
from autocompress.search.space import suggest_plan
from autocompress.store import record
from autocompress.search.dedupe import repeat, seen
from autocompress.tasks.evaluate import Accuracy, Metric
from autocompress.schema.plan import CompressionPlan
from autocompress.store.facts import Host, LatencyFigures, RecoveryFacts, SizeFigures
from autocompress.store.record import TrialRecord

HOST = {"host": "bench-1", "cpu": "Test CPU", "cores": 2, "python": "3.12.0", "torch": "2.5.0"}  # as host_info gives it
OTHER_HOST = {**HOST, "host": "bench-2"}
PLAN = CompressionPlan.uniform(4, heads=0.5, keep=[0, 2])
OTHER_PLAN = CompressionPlan.uniform(4, heads=0.5, keep=[1, 3])

FIGURES = TrialRecord(
    plan=PLAN,
    plan_summary=PLAN.describe(),
    host=Host.from_dict(HOST),
    sampler="random",
    baseline="prune50",
    warm_start="other#3",
    fidelity="full",
    metric=Metric(name="accuracy", value=0.8, ci_low=0.7, ci_high=0.9, n=80),
    accuracy=Accuracy(value=0.8, ci_low=0.7, ci_high=0.9, n=80),
    accuracy_drop=2.5,
    teacher_agreement=0.9,
    latency=LatencyFigures(kind="measured", candidate_ms=1.5, rounds=3),
    latencies={"test": LatencyFigures(kind="measured", candidate_ms=1.5)},
    speedup=2.0,
    size=SizeFigures(shipped_bytes=1000, megabytes=0.001),
    size_ratio=0.4,
    recovery=RecoveryFacts(recovered=True, recovery_loss=0.3, recovery_seconds=4.0, recovery_examples=200),
    seconds={"build": 4.5, "evaluate": 0.2, "latency": 1.0},
)


@pytest.fixture
def study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize", "minimize"])


def _add(study: optuna.Study, rec: TrialRecord, state: TrialState = TrialState.COMPLETE) -> int:
    values = [80.0, 0.5, 0.001] if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, values=values, params={}, distributions={}, user_attrs=rec.to_attrs()))
    return study.trials[-1].number


def _seen(study: optuna.Study, plan: CompressionPlan = PLAN, host: dict = HOST):
    """What a new trial (numbered after every stored one) with ``plan`` on ``host`` would repeat."""
    found = seen(study, len(study.trials), plan, host)
    return None if found is None else found.number


def test_a_complete_trial_with_the_same_plan_on_the_same_host_is_found(study):
    _add(study, FIGURES.with_(plan=OTHER_PLAN))
    n = _add(study, FIGURES)
    assert _seen(study) == n


def test_draws_that_build_the_same_decoder_are_one_plan_and_built_once(study):
    arch = ArchInfo(family="llama", num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=64, hidden_size=32,
                    decoder=True)
    space = SpaceConfig(heads=(1.0, 0.5), kv=(1.0, 0.5), bits=(32, 8), weight_scheme=("dynamic", "weight_only"),
                        depth=DepthSpace(min=4), schedule="shared")
    common = {"ffn": 1.0, "bits": 32}
    # one of two key/value groups holds 4 of the 8 query heads, whatever heads ratio was drawn;
    # and float weights compute alike under either scheme
    first = suggest_plan(FixedTrial({**common, "heads": 1.0, "kv": 0.5, "weight_scheme": "weight_only"}), space, arch)
    again = suggest_plan(FixedTrial({**common, "heads": 0.5, "kv": 0.5, "weight_scheme": "dynamic"}), space, arch)
    n = _add(study, FIGURES.with_(plan=first, plan_summary=first.describe()))
    assert _seen(study, plan=again) == n
    int8 = {"ffn": 1.0, "bits": 8, "heads": 1.0, "kv": 1.0}
    dynamic = suggest_plan(FixedTrial({**int8, "weight_scheme": "dynamic"}), space, arch)
    weight_only = suggest_plan(FixedTrial({**int8, "weight_scheme": "weight_only"}), space, arch)
    _add(study, FIGURES.with_(plan=dynamic, plan_summary=dynamic.describe()))
    assert _seen(study, plan=weight_only) is None  # quantised weights compute differently: another model


def test_a_plan_built_on_another_host_is_built_again(study):
    _add(study, FIGURES.with_(host=OTHER_HOST))
    assert _seen(study) is None
    assert _seen(study, host=OTHER_HOST) == 0


def test_another_plan_is_not_a_repeat(study):
    _add(study, FIGURES)
    assert _seen(study, plan=OTHER_PLAN) is None


def test_a_trial_is_not_a_repeat_of_itself(study):
    n = _add(study, FIGURES)
    assert seen(study, n, PLAN, HOST) is None


def test_a_repeat_is_never_the_source_of_another_repeat(study):
    _add(study, FIGURES.with_(same_plan_as=12))  # its source is gone (e.g. another study's number)
    assert _seen(study) is None


def test_only_the_fidelity_a_trial_ended_at_counts(study):
    # a pruned trial that claims the full fidelity was not stopped by the screen: nothing to repeat
    _add(study, FIGURES.with_(fidelity="full"), TrialState.PRUNED)
    # a complete trial scored only at the cheap fidelity is not a full result
    _add(study, FIGURES.with_(fidelity="cheap"))
    assert _seen(study) is None
    stopped = _add(study, FIGURES.with_(fidelity="cheap", prune_reason="not recovered: trial 0 ..."), TrialState.PRUNED)
    assert _seen(study) == stopped


def test_failed_and_unplanned_trials_are_ignored(study):
    _add(study, FIGURES, TrialState.FAIL)
    study.add_trial(create_trial(values=[80.0, 0.5, 0.001], params={}, distributions={}, user_attrs={"note": "mine"}))
    assert _seen(study) is None


def _own() -> TrialRecord:
    """A new trial's own record: its plan, host, sampler and labels, no figures yet."""
    return TrialRecord(plan=PLAN, plan_summary="own summary", simulated=False, host=Host.from_dict(HOST), sampler="tpe",
                       retry_of=5)


def test_a_repeat_keeps_its_own_identity_and_copies_the_figures(study):
    n = _add(study, FIGURES)
    out = repeat(_own(), study.trials[n])
    # its own: who chose it and how it was queued (the source's labels must not leak into it)
    assert out.sampler == "tpe"
    assert out.retry_of == 5
    assert out.baseline is None and out.warm_start is None
    assert out.plan == PLAN and out.host == Host.from_dict(HOST) and out.plan_summary == "own summary"
    # the source's figures
    for key in ("fidelity", "metric", "accuracy", "accuracy_drop", "teacher_agreement", "latency", "latencies",
                "speedup", "size", "size_ratio", "recovery"):
        assert getattr(out, key) == getattr(FIGURES, key), key
    # marked as a repeat, no time spent
    assert out.same_plan_as == n
    assert out.seconds == {}
    assert out.prune_reason is None


def test_a_repeat_of_a_stopped_trial_says_which_trial_it_repeats(study):
    _add(study, FIGURES)
    n = _add(study, FIGURES.with_(fidelity="cheap", prune_reason="not recovered: trial 0 is already as fast"),
             TrialState.PRUNED)
    out = repeat(_own(), study.trials[n])
    assert out.same_plan_as == n
    assert f"trial {n}" in out.prune_reason
    assert "not recovered: trial 0 is already as fast" in out.prune_reason
    assert out.fidelity == "cheap"


def test_a_repeat_is_stored_as_a_repeat_and_left_off_the_front(study):
    n = _add(study, FIGURES)
    _add(study, repeat(_own(), study.trials[n]))
    stored = record.read(study.trials[-1])
    assert stored.same_plan_as == n
    assert [t.number for t in record.front(study)] == [n]
