"""The trial record: what a trial stores, read back the same, and what is derived from it."""

from __future__ import annotations

import optuna
import pytest

from autocompress import record

# ---- the record as data

from autocompress.errors import PlanError, StorageError  # noqa: E402
from autocompress.evaluate import Accuracy, Metric  # noqa: E402
from autocompress.plan import CompressionPlan  # noqa: E402
from autocompress.record import RECORD_VERSION, TrialRecord  # noqa: E402

_PLAN = CompressionPlan.uniform(4, heads=0.5, ffn=0.75, bits=8, keep=[0, 1, 3])


def _full() -> TrialRecord:
    """A record with every field set, in the shapes the objective writes."""
    return TrialRecord(
        plan=_PLAN,
        plan_summary=_PLAN.describe(),
        simulated=True,
        host={"host": "bench-1", "cpu": "Test CPU", "cores": 2, "torch": "2.5.0"},
        sampler="tpe",
        baseline="prune50",
        warm_start="old#4",
        retry_of=3,
        same_plan_as=1,
        fidelity="full",
        cheap_accuracy=Metric(name="macro_f1", value=0.55, ci_low=0.4, ci_high=0.7, n=50),
        accuracy=Accuracy(value=0.8125, ci_low=0.7, ci_high=0.9, n=80),
        metric=Metric(name="macro_f1", value=0.79, ci_low=0.68, ci_high=0.88, n=80),
        accuracy_drop=3.5,
        teacher_agreement=0.925,
        test_metric=Metric(name="macro_f1", value=0.75, ci_low=0.6, ci_high=0.85, n=40),
        test_accuracy=Accuracy(value=0.775, ci_low=0.65, ci_high=0.875, n=40),
        latency={"kind": "predicted", "median_ms": 1.25, "rounds": 5, "samples_ms": [1.2, 1.25, 1.3]},
        latencies={"test": {"kind": "measured", "median_ms": 1.25}, "rpi4": {"kind": "predicted", "median_ms": 9.5}},
        speedup=2.4,
        size={"bytes": 123456, "megabytes": 0.123456, "simulated": True},
        size_ratio=0.31,
        recovery={"recovered": True, "recovery_seconds": 4.2, "recovery_loss": 0.31, "recovery_examples": 200},
        seconds={"build": 4.5, "evaluate": 0.25, "latency": 1.0},
        prune_reason="not recovered: trial 0 is already as fast",
        fail_reason="RuntimeError: out of memory",
    )


@pytest.mark.parametrize("rec", [_full(), TrialRecord()], ids=["full", "empty"])
def test_a_record_reads_back_as_it_was_written(rec):
    attrs = rec.to_attrs()
    assert attrs["record_version"] == RECORD_VERSION
    assert TrialRecord.from_attrs(attrs) == rec


def test_a_users_own_attributes_are_ignored_on_read():
    rec = _full()
    attrs = {**rec.to_attrs(), "my_note": "run on the lab box", "owner": {"team": "nlp"}, "tags": [1, 2]}
    assert TrialRecord.from_attrs(attrs) == rec


def test_a_trial_written_before_the_record_was_versioned_reads_as_version_1():
    attrs = {k: v for k, v in _full().to_attrs().items() if k != "record_version"}
    assert TrialRecord.from_attrs(attrs) == _full().with_(version=1)


def test_a_record_from_a_newer_autocompress_is_refused_with_an_upgrade_hint():
    attrs = {**_full().to_attrs(), "record_version": RECORD_VERSION + 1}
    with pytest.raises(StorageError, match="upgrade autocompress") as info:
        TrialRecord.from_attrs(attrs, where="trial 9")
    assert "trial 9" in str(info.value)
    frozen = optuna.trial.create_trial(values=[1.0], params={}, distributions={}, user_attrs=attrs)
    with pytest.raises(StorageError, match="upgrade"):
        record.read(frozen)


def _run(tmp_path, records: list[TrialRecord], budget: float | None = 1.0) -> optuna.Study:
    """A real study on SQLite whose objective writes ``records``, one per trial."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'record.db'}")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize", "minimize"])
    todo = iter(records)

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        record.write(trial, next(todo), max_accuracy_drop=budget)
        return 80.0, 0.5, 1.0

    study.optimize(objective, n_trials=len(records))
    return study


def test_write_stores_the_record_on_the_running_trial(tmp_path):
    rec = _full().with_(accuracy_drop=0.5)
    study = _run(tmp_path, [rec])
    (trial,) = study.get_trials()
    assert record.read(trial) == rec  # through the database: JSON and back
    assert trial.user_attrs["plan"] == _PLAN.to_dict()


def test_the_accuracy_drop_budget_decides_feasibility(tmp_path):
    over, within, at, unknown = (
        TrialRecord(accuracy_drop=1.5),
        TrialRecord(accuracy_drop=0.2),
        TrialRecord(accuracy_drop=1.0),
        TrialRecord(),
    )
    study = _run(tmp_path, [over, within, at, unknown])
    trials = study.get_trials()
    assert [record.feasible(t) for t in trials] == [False, True, True, True]
    assert trials[0].constraints == {record.DROP_CONSTRAINT: pytest.approx(0.5)}
    assert trials[3].constraints == {}  # no drop, no constraint


def test_without_a_budget_every_trial_is_feasible(tmp_path):
    study = _run(tmp_path, [TrialRecord(accuracy_drop=40.0)], budget=None)
    (trial,) = study.get_trials()
    assert record.feasible(trial)
    assert trial.user_attrs["accuracy_drop"] == 40.0


def test_the_front_shows_each_plan_once():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    assert record.front(study) == []
    source = TrialRecord(plan=_PLAN, fidelity="full")
    for rec in (source, source.with_(same_plan_as=0), TrialRecord(fidelity="full")):
        study.add_trial(optuna.trial.create_trial(values=[80.0, 0.5, 1.0], params={}, distributions={},
                                                  user_attrs=rec.to_attrs()))
    study.add_trial(optuna.trial.create_trial(values=[70.0, 0.9, 2.0], params={}, distributions={}))  # dominated
    assert [t.number for t in record.front(study)] == [0, 2]


def test_an_interrupted_trial_says_it_will_run_again():
    reason = record.failure_reason(KeyboardInterrupt())
    assert reason == record.INTERRUPTED
    assert "resume" in reason


def test_a_plan_that_does_not_fit_records_its_own_words():
    msg = "the plan lists 3 layers but the model has 4; was the plan made for another model?"
    assert record.failure_reason(PlanError(msg)) == msg


def test_any_other_failure_records_its_type_and_message():
    assert record.failure_reason(RuntimeError("CUDA out of memory")) == "RuntimeError: CUDA out of memory"
