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
from autocompress.store.facts import (
    ExitsTaken,
    Host,
    HostPrediction,
    LatencyFigures,
    RecoveryFacts,
    ShapeLatency,
    SizeFigures,
    VocabularyFacts,
)
from autocompress.store.record import RECORD_VERSION, TrialRecord
from conftest import run_cli

# ---- the record as data

_PLAN = CompressionPlan.uniform(4, heads=0.5, ffn=0.75, bits=8, keep=[0, 1, 3])
_SHAPE = ShapeLatency(batch_size=1, seq_len=16, candidate_ms=1.25, candidate_iqr_ms=0.05, baseline_ms=3.0,
                      baseline_iqr_ms=0.1, ratio=0.41, ratio_q1=0.4, ratio_q3=0.43, rounds=5, noisy=False, profile="test",
                      ratio_ci_low=0.39, ratio_ci_high=0.44)
_MEASURED = LatencyFigures(profile="test", kind="measured", ratio=0.41, candidate_ms=1.25, baseline_ms=3.0, noisy=False,
                           shapes=(_SHAPE,), speedup=1 / 0.41, rounds=5, candidate_iqr_ms=0.05, ratio_iqr=(0.4, 0.43),
                           fit_error=0.1, host_prediction=HostPrediction(ratio=0.45, speedup=1 / 0.45, candidate_ms=1.3))
_SCREEN = LatencyFigures(profile="test", kind="predicted", ratio=0.5, candidate_ms=1.5, baseline_ms=3.0, noisy=False,
                         shapes=(ShapeLatency(batch_size=1, seq_len=16, ratio=0.5, candidate_ms=1.5, baseline_ms=3.0),),
                         speedup=2.0, tolerance=0.1)


def _full() -> TrialRecord:
    """A record with every field set, in the shapes the objective writes."""
    return TrialRecord(
        plan=_PLAN,
        plan_summary=_PLAN.describe(),
        simulated=True,
        host=Host(host="bench-1", cpu="Test CPU", cores=2, torch="2.5.0"),
        sampler="tpe",
        baseline="prune50",
        warm_start="old#4",
        retry_of=3,
        same_plan_as=1,
        refines=2,
        recovery_scale=4.0,
        fidelity="full",
        cheap_accuracy=Metric(name="macro_f1", value=0.55, ci_low=0.4, ci_high=0.7, n=50),
        accuracy=Accuracy(value=0.8125, ci_low=0.7, ci_high=0.9, n=80),
        metric=Metric(name="macro_f1", value=0.79, ci_low=0.68, ci_high=0.88, n=80),
        accuracy_drop=3.5,
        teacher_agreement=0.925,
        test_metric=Metric(name="macro_f1", value=0.75, ci_low=0.6, ci_high=0.85, n=40),
        test_accuracy=Accuracy(value=0.775, ci_low=0.65, ci_high=0.875, n=40),
        screen=_SCREEN,
        latency=_MEASURED,
        latencies={"test": _MEASURED, "rpi4": LatencyFigures(profile="rpi4", kind="predicted", ratio=2.0, fit_error=0.1)},
        speedup=2.4,
        size=SizeFigures(params=1000, serialized_bytes=123456, effective_bytes=123456, split={"embeddings": 100000,
                         "layers": 20000, "head": 3456}, shipped_bytes=123456, megabytes=0.123456),
        size_ratio=0.31,
        recovery=RecoveryFacts(recovered=True, recovery_seconds=4.2, recovery_loss=0.31, recovery_examples=200),
        exits=ExitsTaken(threshold=0.9, student_layers=(2, 3), shares=(0.6, 0.4), mean_layers=2.4),
        vocabulary=VocabularyFacts(kept_rows=90, full_rows=120, min_count=1, corpus="the distillation set",
                                   eval_tokens_dropped=0.01),
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


def test_a_v1_study_rebuilds_its_trials_without_the_training_added_since(legacy):
    """Quantisation-aware recovery and augmented distillation came later: the v1 study's int8 trial
    was built untrained and its students distilled on the train examples alone, and an export of
    them rebuilds them so."""
    from autocompress.search.build import needs_recovery
    from autocompress.store.study_record import stored_config

    _, study = legacy
    cfg = stored_config(study)
    assert not cfg.recovery.quantization_aware and cfg.recovery.quantize_only_fraction == 0.0
    assert cfg.recovery.augment.kind == "none"
    int8 = next(record.read(t).plan for t in study.trials if record.read(t).baseline == "int8")
    assert int8 is not None and int8.quantises and not needs_recovery(cfg.recovery, int8)


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
    listed = _plain(listed)  # fields added since (refinements) are new reads: v1 had none
    assert listed["refined"] == 0
    assert {k: listed[k] for k in then["studies"][0] if k != "storage"} == {
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


# ---- what a study written today stores

#: the attributes a complete trial of the ``finished`` study stores (a measured objective profile,
#: a predicted report profile, no recovery), nested ones by their keys: the names studies have
#: always been written with, whatever types the code reads them into
_WRITTEN = {"accuracy", "accuracy_drop", "fidelity", "host", "latencies", "latency", "metric", "plan", "plan_summary",
            "record_version", "recovery", "sampler", "seconds", "simulated", "size", "size_ratio", "speedup",
            "teacher_agreement"}
_MEASURED_KEYS = ["profile", "kind", "ratio", "candidate_ms", "baseline_ms", "noisy", "shapes", "speedup", "rounds",
                  "candidate_iqr_ms", "ratio_iqr", "fit_error", "host_prediction"]
_MEASURED_SHAPE = ["batch_size", "seq_len", "candidate_ms", "candidate_iqr_ms", "baseline_ms", "baseline_iqr_ms", "ratio",
                   "ratio_q1", "ratio_q3", "rounds", "noisy", "profile", "ratio_ci_low", "ratio_ci_high"]
_PREDICTED_KEYS = ["profile", "kind", "ratio", "candidate_ms", "baseline_ms", "noisy", "shapes", "speedup", "fit_error"]
_SIZE_KEYS = ["params", "serialized_bytes", "effective_bytes", "split", "shipped_bytes", "megabytes"]


def test_a_study_written_today_stores_the_attributes_it_always_has(finished):
    from autocompress import study as st
    from autocompress.latency.measure import host_info

    study = st.load("rep", st.open_storage(finished, must_exist=True))
    assert study.metric_names == ["accuracy", "relative_latency", "size_mb"]  # the first is task.metric's, stored as before
    assert set(study.user_attrs) >= {"config", "autocompress", "teacher"}
    assert study.user_attrs["autocompress"] == {
        "objectives": [["accuracy", "maximize"], ["relative_latency", "minimize"], ["size_mb", "minimize"]],
        "schema_version": 1}
    teacher = study.user_attrs["teacher"]
    assert list(teacher) == ["fingerprint", "accuracy", "metric", "test_metric", "size", "fine_tune_seconds", "arch", "labels",
                             "distillation"]
    assert teacher["distillation"]["augmented"] is None, "a study that does not distil augments nothing"
    assert teacher["test_metric"] is None and list(teacher["size"]) == _SIZE_KEYS
    assert list(teacher["arch"]) == ["family", "num_layers", "num_heads", "intermediate_size", "hidden_size"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        attrs = t.user_attrs
        assert set(attrs) - {"baseline"} == _WRITTEN, t.number
        assert list(attrs["accuracy"]) == ["value", "ci_low", "ci_high", "n"]
        assert list(attrs["metric"]) == ["value", "ci_low", "ci_high", "n", "name"]
        assert set(attrs["host"]) == set(host_info()) and attrs["recovery"] == {"recovered": False}
        assert set(attrs["seconds"]) == {"build", "quantise", "latency", "evaluate"}
        assert list(attrs["size"]) == _SIZE_KEYS and set(attrs["size"]["split"]) == {"embeddings", "layers", "head"}
        assert attrs["latency"] == attrs["latencies"]["test"] and list(attrs["latencies"]) == ["test", "rpi4"]
        assert list(attrs["latency"]) == _MEASURED_KEYS and [list(s) for s in attrs["latency"]["shapes"]] == [_MEASURED_SHAPE]
        assert list(attrs["latency"]["host_prediction"]) == ["ratio", "speedup", "candidate_ms"]
        assert list(attrs["latencies"]["rpi4"]) == _PREDICTED_KEYS
        assert set(attrs["latencies"]["rpi4"]["shapes"][0]) == {"batch_size", "seq_len", "ratio", "candidate_ms", "baseline_ms"}
        r = record.read(t)  # and each reads back as exactly what is stored
        assert r.to_attrs() == attrs


def test_figures_that_cannot_be_read_leave_the_rest_of_the_record(caplog):
    attrs = {**_full().to_attrs(), "size": {"megabytes": "big"}, "latencies": {"test": _MEASURED.to_dict(), "odd": 3}}
    with caplog.at_level("WARNING"):
        r = TrialRecord.from_attrs(attrs, where="trial 7")
    assert r.size is None and r.latency == _MEASURED and list(r.latencies) == ["test"]
    assert "trial 7's size cannot be read: megabytes" in caplog.text


def test_the_record_reads_its_figures_through_typed_views():
    r = _full()
    assert (r.ratio, r.candidate_ms, r.baseline_ms, r.candidate_iqr_ms) == (0.41, 1.25, 3.0, 0.05)
    assert r.latency_kind == "measured" and not r.noisy and r.size_mb == 0.123456 and r.host_name == "bench-1"
    assert r.recovered and r.recovery_seconds == 4.2
    assert r.screened_ratio == 0.5  # the screen's, not the full latency's
    assert r.with_(screen=None).screened_ratio == 0.41  # a trial that kept no screen apart (v1): its latency's
    empty = TrialRecord()
    assert (empty.ratio, empty.size_mb, empty.host_name, empty.latency_kind, empty.recovered) == (None, None, None,
                                                                                               "measured", False)


def test_a_refinement_round_trips_and_an_older_record_reads_as_unrefined():
    from autocompress.store.record import TrialRecord

    rec = TrialRecord(fail_reason="x", refines=4, recovery_scale=2.0)
    again = TrialRecord.from_attrs(rec.to_attrs())
    assert again == rec and again.scale == 2.0
    old = TrialRecord.from_attrs({"fail_reason": "x", "record_version": 1})
    assert old.refines is None and old.scale == 1.0 and "refines" not in old.to_attrs()
