"""The study record: what a study (not a trial) stores, written and read back the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from autocompress.errors import StorageError, StudyNotFoundError
from autocompress.schema.config import parse_config
from autocompress.search.objective import OBJECTIVES
from autocompress.store import study_record
from autocompress.store.facts import Arch, SizeFigures
from autocompress.store.study_record import STUDY_RECORD_VERSION, StudyRecord, TeacherFigures
from autocompress.tasks.evaluate import Accuracy, Metric
from conftest import tiny_config_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

TEACHER = TeacherFigures(
    fingerprint="057e13c9bcc771fe",
    accuracy=Accuracy(value=0.9, ci_low=0.85, ci_high=0.95, n=80),
    metric=Metric(name="macro_f1", value=0.88, ci_low=0.8, ci_high=0.93, n=80),
    test_metric=None,
    size=SizeFigures(params=40547, serialized_bytes=190344, effective_bytes=190344, megabytes=0.190344),
    fine_tune_seconds=4.8,
    arch=Arch(family="bert", num_layers=4, num_heads=4, intermediate_size=64, hidden_size=32),
    labels=("negative", "neutral", "positive"),
)


def _full() -> StudyRecord:
    return StudyRecord(config={"name": "x", "task": {"metric": "macro_f1"}, "search": {"trials": 6}},
                       objectives=(("accuracy", "maximize"), ("relative_latency", "minimize"), ("size_mb", "minimize")),
                       teacher=TEACHER, target_trials=9, teacher_cache={"teacher-abc": "artifact-1"})


@pytest.mark.parametrize("rec", [_full(), StudyRecord()], ids=["full", "empty"])
def test_a_study_record_reads_back_as_it_was_written(rec):
    attrs = json.loads(json.dumps(rec.to_attrs()))  # as the storage keeps it
    assert StudyRecord.from_attrs(attrs) == rec
    assert StudyRecord.from_attrs(attrs).to_attrs() == attrs


def test_the_teacher_is_stored_in_the_shape_it_always_had():
    stored = TEACHER.to_dict()
    assert list(stored) == ["fingerprint", "accuracy", "metric", "test_metric", "size", "fine_tune_seconds", "arch", "labels"]
    assert stored["accuracy"] == TEACHER.accuracy.to_dict() and stored["metric"] == TEACHER.metric.to_dict()
    assert stored["test_metric"] is None and stored["labels"] == ["negative", "neutral", "positive"]
    assert TeacherFigures.from_dict(json.loads(json.dumps(stored))) == TEACHER
    assert TEACHER.percent == pytest.approx(88.0) and TEACHER.size_mb == 0.190344


def test_a_teacher_stored_before_metrics_had_names_scores_its_accuracy():
    old = TeacherFigures.from_dict({"accuracy": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 10}})
    assert old.score == Accuracy(value=0.7, ci_low=0.6, ci_high=0.8, n=10) and old.percent == pytest.approx(70.0)
    unnamed = TeacherFigures.from_dict({"metric": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 10}})
    assert unnamed.metric is not None and unnamed.metric.name == "accuracy"


def test_views_read_the_config_and_the_target():
    assert _full().metric_name == "macro_f1" and _full().trial_target == 9
    assert StudyRecord(config={"search": {"trials": 6}}).trial_target == 6  # never run to a target: its config's
    assert StudyRecord().metric_name == "accuracy" and StudyRecord().trial_target is None


def test_a_study_record_from_a_newer_autocompress_is_refused_with_an_upgrade_hint():
    attrs = {**_full().to_attrs(), "autocompress": {"objectives": [], "schema_version": STUDY_RECORD_VERSION + 1}}
    with pytest.raises(StorageError, match="upgrade autocompress") as info:
        StudyRecord.from_attrs(attrs, where="study 'x'")
    assert "study 'x'" in str(info.value)


def test_create_stores_the_config_and_the_first_objective_as_accuracy(tiny_model_dir, tiny_csv):
    """The first objective is the task metric; its stored name stays "accuracy", as every study has it."""
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, task={"metric": "macro_f1"}))
    study = optuna.create_study(directions=[d for _, d in OBJECTIVES])
    assert OBJECTIVES[0][0] == "metric"
    study_record.create(study, cfg, OBJECTIVES)
    assert study.metric_names == ["accuracy", "relative_latency", "size_mb"]
    assert study.user_attrs == {
        "config": cfg.to_dict(),
        "autocompress": {"objectives": [["accuracy", "maximize"], ["relative_latency", "minimize"],
                                        ["size_mb", "minimize"]], "schema_version": 1},
    }
    rec = study_record.read(study)
    assert rec.metric_name == "macro_f1" and rec.study_config(study.study_name) == cfg
    assert study_record.stored_config(study) == cfg


def test_the_teacher_is_written_once_and_cache_entries_are_added():
    study = optuna.create_study()
    assert study_record.write_teacher(study, TEACHER)
    assert not study_record.write_teacher(study, TEACHER.with_(fingerprint="other"))
    assert study_record.read(study).teacher == TEACHER
    assert study_record.add_cache_entry(study, "teacher-a", "id-1") and study_record.add_cache_entry(study, "teacher-b", "id-2")
    assert not study_record.add_cache_entry(study, "teacher-a", "id-3")
    assert study.user_attrs["shared_cache"] == {"teacher-a": "id-1", "teacher-b": "id-2"}
    study_record.write_target(study, 12)
    assert study.user_attrs["target_trials"] == 12 and study_record.read(study).target_trials == 12


def test_a_study_without_a_config_was_not_made_by_autocompress():
    study = optuna.create_study(study_name="bare")
    with pytest.raises(StudyNotFoundError, match="'bare' was not created by autocompress"):
        study_record.stored_config(study)


def test_the_v1_study_reads_as_a_study_record(tmp_path):
    db = tmp_path / "legacy.db"
    shutil.copy(FIXTURES / "study-v1.db", db)
    study = optuna.load_study(study_name="legacy", storage=f"sqlite:///{db}")
    rec = study_record.read(study)
    assert rec.version == 1 and rec.target_trials == 8 and rec.metric_name == "accuracy"
    assert rec.objectives == (("accuracy", "maximize"), ("relative_latency", "minimize"), ("size_mb", "minimize"))
    assert rec.teacher is not None and rec.teacher.fingerprint == "057e13c9bcc771fe" and rec.teacher.percent == 100.0
    assert rec.teacher.size is not None and rec.teacher.size.shipped_bytes is None and rec.teacher.size.bytes == 190344
    assert rec.to_attrs() == study.user_attrs  # read and written back, it is what that version stored
    cfg = rec.study_config("legacy")
    assert not cfg.recovery.depth_scaled  # a setting it predates, as it ran
