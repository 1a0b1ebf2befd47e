"""The task-kind seam: every stage that depends on what the model does asks the study's kind."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from conftest import run_cli, tiny_config_dict

from autocompress.errors import ConfigError, UnknownNameError
from autocompress.schema.config import parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search.build import candidate
from autocompress.search.scoring import evaluate
from autocompress.search.workbench import prepare
from autocompress.tasks.classification import SequenceClassification
from autocompress.tasks.kind import TASK_KINDS, check_task, register_task_kind, task_kind
from autocompress.train.teacher import teacher_fingerprint


def test_the_built_in_kind_is_registered_and_a_typo_gets_a_suggestion() -> None:
    assert isinstance(task_kind("sequence-classification"), SequenceClassification)
    with pytest.raises(UnknownNameError, match="Did you mean 'sequence-classification'"):
        task_kind("sequence-clasification")


def test_a_config_names_its_kind_and_wrong_ones_are_refused_by_key(tiny_model_dir, tiny_csv) -> None:
    base = tiny_config_dict(tiny_model_dir, tiny_csv)
    assert parse_config(base).task.kind == "sequence-classification"  # files written before kinds existed
    wrong = copy.deepcopy(base)
    wrong["task"]["kind"] = "causal-lm-typo"
    with pytest.raises(ConfigError, match=r"key 'task.kind'.*Unknown task kind 'causal-lm-typo'.*Available: causal-lm, sequence-classification"):
        check_task(parse_config(wrong), "x.yaml")


def test_validate_refuses_an_unknown_kind_in_one_line(tiny_model_dir, tiny_csv, tmp_path, capsys) -> None:
    import yaml

    cfg = tiny_config_dict(tiny_model_dir, tiny_csv)
    cfg["task"]["kind"] = "sequence-clasification"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 2 and "task.kind" in err and "Did you mean 'sequence-classification'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_first_kind_keeps_the_teachers_cached_before_kinds_existed(tiny_model_dir, tiny_csv) -> None:
    base = tiny_config_dict(tiny_model_dir, tiny_csv)
    named = copy.deepcopy(base)
    named["task"]["kind"] = "sequence-classification"
    assert teacher_fingerprint(parse_config(base)) == teacher_fingerprint(parse_config(named))


class _Counting(SequenceClassification):
    """The built-in kind, counting which of its methods the stages call."""

    calls: Counter = Counter()

    def __getattribute__(self, name: str):
        attr = super().__getattribute__(name)
        if name not in {"load_data", "encode", "load_model", "outputs", "metric", "training_loss", "distillation_loss",
                        "timed_inputs"}:
            return attr

        def counted(*args, **kwargs):
            type(self).calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_every_stage_of_a_study_goes_through_the_kind(tiny_model_dir, tiny_csv, tmp_path, monkeypatch) -> None:
    from autocompress.search.scoring import measure

    monkeypatch.setitem(TASK_KINDS, "counting", _Counting)
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, task={"kind": "counting"},
                                        recovery={"epochs": 0.5}))

    def stages(step) -> set[str]:
        _Counting.calls = Counter()
        out = step()
        return {name for name, n in _Counting.calls.items() if n}, out

    called, bench = stages(lambda: prepare(cfg, tmp_path / "cache"))
    assert isinstance(bench.kind, _Counting)
    assert {"load_data", "encode", "load_model", "training_loss", "outputs", "metric"} <= called  # data, teacher
    plan = CompressionPlan.uniform(4, heads=0.5, keep=[0, 2])
    called, built = stages(lambda: candidate(bench, plan))
    assert "distillation_loss" in called  # recovery
    called, _ = stages(lambda: evaluate(bench, built.model))
    assert {"outputs", "metric"} <= called  # scoring
    called, _ = stages(lambda: measure(bench, built.model, plan))
    assert "timed_inputs" in called  # latency


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_task_kind("sequence-classification")(SequenceClassification)
    assert TASK_KINDS["sequence-classification"] is SequenceClassification


def test_a_kind_without_exits_refuses_an_exit_space(tiny_model_dir, tiny_csv, monkeypatch) -> None:
    class NoExits(SequenceClassification):
        supports_exits = False

    monkeypatch.setitem(TASK_KINDS, "no-exits", NoExits)
    data = tiny_config_dict(tiny_model_dir, tiny_csv, task={"kind": "no-exits"},
                            space={"exits": {"schedule": ["none", "every"]}})
    data["profile"] = {"name": "task", "threads": 1, "inputs": "task"}  # exits are timed on the task's inputs
    cfg = parse_config(data)
    with pytest.raises(ConfigError, match="space.exits.schedule"):
        check_task(cfg)



def test_a_metric_the_kind_does_not_have_names_the_key_and_the_choices() -> None:
    cfg = parse_config({"name": "s", "task": {"source": "bundled:tweets", "metric": "f1"}})
    with pytest.raises(ConfigError) as info:
        check_task(cfg, "s.yaml")
    assert info.value.key == "task.metric" and "accuracy, macro_f1" in str(info.value)


def test_windows_are_for_kinds_that_take_them_and_leave_cached_teachers_alone(tiny_model_dir, tiny_csv) -> None:
    base = tiny_config_dict(tiny_model_dir, tiny_csv)
    windowed = tiny_config_dict(tiny_model_dir, tiny_csv, task={"windows": 3})
    with pytest.raises(ConfigError) as info:
        check_task(parse_config(windowed), "s.yaml")
    assert info.value.key == "task.windows" and "first max_length tokens" in str(info.value)
    one = tiny_config_dict(tiny_model_dir, tiny_csv, task={"windows": 1})
    assert teacher_fingerprint(parse_config(base)) == teacher_fingerprint(parse_config(one))
