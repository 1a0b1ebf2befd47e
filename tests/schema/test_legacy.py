"""Readers of what earlier versions stored: each reads its older form, and leaves a current one alone."""

from __future__ import annotations

from autocompress.schema import legacy


def test_a_config_stored_before_the_training_cuts_trains_as_it_did():
    stored = {"teacher": {"epochs": 1.0}, "recovery": {"epochs": 1.0, "depth_scaled": True}}
    filled = legacy.with_legacy_training(stored)
    assert filled["teacher"] == {"epochs": 1.0, **legacy.LEGACY_TRAINING}
    assert filled["recovery"]["depth_scaled"] is True  # what it stored wins
    assert filled["recovery"]["hidden_weight"] == 0.0
    assert legacy.predated_training(stored) == {
        "teacher": legacy.LEGACY_TRAINING,
        "recovery": {k: v for k, v in legacy.LEGACY_RECOVERY.items() if k != "depth_scaled"},
    }
    current = {"teacher": {**legacy.LEGACY_TRAINING}, "recovery": {**legacy.LEGACY_RECOVERY}}
    assert legacy.with_legacy_training(current) == current and legacy.predated_training(current) == {}


def test_the_older_per_layer_spelling_gives_the_schedule():
    assert legacy.space_schedule({"per_layer": True}) == {"per_layer": True, "schedule": "per_layer"}
    assert legacy.space_schedule({"per_layer": False})["schedule"] == "shared"
    assert legacy.space_schedule({"schedule": "linear", "per_layer": False}) == {"schedule": "linear", "per_layer": False}


def test_a_config_that_names_no_metric_measured_accuracy():
    assert legacy.config_metric({"task": {"source": "x.csv"}}) == "accuracy"
    assert legacy.config_metric({}) == "accuracy"
    assert legacy.config_metric({"task": {"metric": "macro_f1"}}) == "macro_f1"


def test_records_and_studies_without_a_version_are_version_1():
    assert legacy.record_version({"plan_summary": "x"}) == 1
    assert legacy.record_version({"record_version": 7}) == 7  # judged by the reader, not here
    assert legacy.study_version(None) == 1 and legacy.study_version({"objectives": []}) == 1
    assert legacy.study_version({"schema_version": 2}) == 2


def test_an_estimate_without_its_interval_or_a_metric_without_its_name_still_reads():
    assert legacy.estimate({"value": 0.5}) == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 0}
    assert legacy.estimate({"value": "x"}) is None and legacy.estimate(None) is None
    full = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}
    assert legacy.metric(full) == {**full, "name": "accuracy"}
    assert legacy.metric({**full, "name": "macro_f1"})["name"] == "macro_f1"
    assert legacy.score(None, "accuracy") == "accuracy" and legacy.score("metric", "accuracy") == "metric"


def test_a_size_before_shipped_bytes_counts_the_effective_bytes():
    assert legacy.size_bytes(None, 800) == 800 and legacy.size_bytes(750, 800) == 750


def test_an_export_of_format_1_or_before_task_kinds_reads_as_it_was_written():
    assert legacy.export_task_kind({"format_version": 1}) == "sequence-classification"
    assert legacy.export_task_kind({"format_version": 2, "task_kind": "other"}) == "other"
    assert legacy.export_weights_are_float({"format_version": 1})
    assert not legacy.export_weights_are_float({"format_version": 2})
    assert legacy.EXPORT_FORMATS == (1, 2)
