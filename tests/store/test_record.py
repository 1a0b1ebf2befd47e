"""The trial record: what a trial stores, read back the same, and what is derived from it."""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.store import record
from autocompress.errors import PlanError, StorageError
from autocompress.tasks.evaluate import Accuracy, Metric
from autocompress.schema.plan import CompressionPlan
from autocompress.store.record import RECORD_VERSION, TrialRecord
from conftest import run_cli

# ---- the record as data

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


# ---- studies stored by earlier versions (tests/fixtures/study-v1.db, see tests/fixtures/README.md)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _plain(obj: Any) -> Any:
    """Dataclasses, tuples and datetimes as JSON gives them back (to compare with the stored reading)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, datetime.datetime):
        return obj.isoformat()
    return obj


@pytest.fixture
def legacy(tmp_path) -> tuple[str, optuna.Study]:
    """A copy of the stored v1 study (the fixture file itself is never written)."""
    from autocompress import study as st

    db = tmp_path / "legacy.db"
    shutil.copy(FIXTURES / "study-v1.db", db)
    url = f"sqlite:///{db}"
    return url, st.load("legacy", st.open_storage(url, must_exist=True))


def test_every_trial_of_a_v1_study_reads_as_a_record(legacy):
    _, study = legacy
    records = {t.number: (t, record.read(t)) for t in study.trials}
    assert all(r.version == 1 for _, r in records.values())
    complete = [r for t, r in records.values() if t.state == TrialState.COMPLETE]
    assert complete and all(r.plan is not None and r.metric is not None and r.fidelity == "full" for r in complete)
    assert {r.baseline for r in complete} >= {"teacher", "int8", "prune50", "half_depth"}
    stopped = [r for t, r in records.values() if t.state == TrialState.PRUNED]
    assert stopped and all(r.fidelity == "cheap" and r.prune_reason and r.cheap_accuracy for r in stopped)
    repeats = [(t, r) for t, r in records.values() if r.same_plan_as is not None]
    assert repeats and all(r.plan == records[r.same_plan_as][1].plan for _, r in repeats)
    failed = [r for t, r in records.values() if t.state == TrialState.FAIL]
    assert failed and "out of memory" in failed[0].fail_reason and failed[0].plan is not None
    for t, r in records.values():  # what a trial stored reads back exactly
        assert TrialRecord.from_attrs(r.to_attrs()) == r


def test_a_v1_study_reports_picks_and_lists_as_the_version_that_wrote_it(legacy):
    """The report's data, the pick rule, the study list and the CSV table read from a v1 study are
    what that version read from it (tests/fixtures/study-v1-report.json)."""
    from autocompress import study as st
    from autocompress.export import pick_trial
    from autocompress.report import collect, trials_frame

    url, study = legacy
    then = json.loads((FIXTURES / "study-v1-report.json").read_text())
    info = collect(study, url)
    rows = json.loads(json.dumps(_plain(info.trials), default=str))
    # every figure that version read, read the same; fields added since (the screened metric of a
    # stopped trial) are new reads, and a v1 trial has nothing for them
    assert [{k: row[k] for k in old} for row, old in zip(rows, then["rows"], strict=True)] == then["rows"]
    assert all(row["screened"] is None for row in rows if row["state"] == "COMPLETE")
    assert [t.number for t in info.front] == then["front"]
    assert info.teacher_accuracy == then["teacher_accuracy"] and info.teacher_ms == then["teacher_ms"]
    assert json.loads(json.dumps(_plain(info.hypervolume))) == then["hypervolume"]
    assert {e: pick_trial(study, e).number for e in then["picks"]} == then["picks"]
    (listed,) = st.list_studies(st.open_storage(url), url)
    assert {k: v for k, v in _plain(listed).items() if k != "storage"} == {
        k: v for k, v in then["studies"][0].items() if k != "storage"}
    assert trials_frame(info).to_csv(index=False) == then["table_csv"]


def test_a_v1_study_resumes_and_keeps_its_trials(legacy, tiny_model_dir, tiny_csv, tmp_path):
    """A study written before the record existed continues to its target; its trials stay as they were."""
    from autocompress import study as st

    url, study = legacy
    config = study.user_attrs["config"]  # its model and CSV lived in a temporary directory: point at this session's
    study.set_user_attr("config", {**config, "model": {**config["model"], "source": str(tiny_model_dir)},
                                   "task": {**config["task"], "source": str(tiny_csv)}})
    before = {t.number: (t.state, t.values, t.user_attrs) for t in study.trials}
    target = st.completed(study) + 2
    ran = st.run_study(st.resume_request("legacy", url, trials=target, cache_dir=tmp_path / "cache"))
    assert ran.result.completed == target
    after = {t.number: t for t in ran.study.trials}
    for number, (state, values, attrs) in before.items():
        if state != TrialState.WAITING:  # the queued trial has run since
            assert (after[number].state, after[number].values, after[number].user_attrs) == (state, values, attrs)
    new = [t for n, t in after.items() if n not in before or before[n][0] == TrialState.WAITING]
    assert new and all(t.user_attrs.get("record_version") == record.RECORD_VERSION for t in new)


def test_a_v1_study_keeps_its_teachers_cache_key(legacy):
    """Its teacher was fingerprinted before the training cuts existed: the key comes out the same."""
    from autocompress.study import stored_config
    from autocompress.train.teacher import teacher_fingerprint

    _, study = legacy
    cfg = stored_config(study)
    assert not cfg.teacher.freeze_word_embeddings and not cfg.recovery.depth_scaled  # as it ran
    assert teacher_fingerprint(cfg) == study.user_attrs["teacher"]["fingerprint"]


def test_a_record_from_a_newer_version_is_refused_in_one_line(legacy, capsys):
    url, study = legacy
    storage = optuna.storages.RDBStorage(url)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("legacy"), 1)
    with sqlite3.connect(url[len("sqlite:///"):]) as db:  # as a newer autocompress would have written it
        db.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, 'record_version', ?)",
                   (trial_id, json.dumps(record.RECORD_VERSION + 1)))
    code, out, err = run_cli(capsys, "report", "legacy", "--storage", url, "-o", str(Path(url[10:]).with_suffix(".html")))
    assert code == 2 and err.count("\n") == 1 and "upgrade autocompress" in err and "Traceback" not in err


def test_a_record_holding_only_a_reason_writes_only_the_reason():
    """What the trial loop writes for a trial that never built anything must not blank a stored plan summary."""
    assert TrialRecord(fail_reason="x").to_attrs() == {"fail_reason": "x", "record_version": RECORD_VERSION}
    assert TrialRecord(prune_reason="not needed").to_attrs() == {"prune_reason": "not needed", "record_version": RECORD_VERSION}
