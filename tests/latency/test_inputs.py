"""What a profile times: fixed shapes, or the task's own eval examples at their real lengths."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert, tiny_config_dict

from autocompress.tasks.batches import Encoded
from autocompress.schema.config import load_config
from autocompress.errors import ConfigError, LatencyError
from autocompress.latency.inputs import calibration_shapes, task_inputs, workloads
from autocompress.latency.measure import measure_profile, measure_workload
from autocompress.latency.predict import FEATURES, Calibration, HostPeaks, predict_ms, predict_profile
from autocompress.schema.profile import DeviceProfile, load_profile
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan


def _encoded(lengths: list[int], types: bool = False) -> Encoded:
    ids = [[1, *(5 + j % 20 for j in range(n - 2)), 2] for n in lengths]  # within the tiny vocabulary
    tt = [[0] * n for n in lengths] if types else None
    return Encoded(ids, tt, torch.zeros(len(lengths), dtype=torch.long), 0)


def _task_profile(**kw) -> DeviceProfile:
    return DeviceProfile(**{"name": "task", "threads": 1, "inputs": "task", "task_samples": 4, "warmup": 1,
                            "repeats": 3, "max_repeats": 3, **kw})


def test_the_sample_takes_examples_at_evenly_spaced_quantiles_of_their_lengths() -> None:
    lengths = [10 + i for i in range(100)][::-1]  # 10 .. 109 tokens, longest first
    task = task_inputs(_encoded(lengths))
    assert task.lengths == tuple(range(10, 110)) and task.of_examples == 100
    w = task.sample(4)
    assert w.facts["lengths"] == [22, 47, 72, 97]  # the 12.5th, 37.5th, 62.5th and 87.5th percentiles
    assert w.shapes == [(1, n) for n in (22, 47, 72, 97)]
    assert all(x["attention_mask"].sum() == x["input_ids"].numel() for x in w.inputs)  # no padding
    assert w.facts["inputs"] == "task" and w.facts["of_examples"] == 100
    assert w.facts["median_tokens"] == pytest.approx(59.5) and w.facts["p90_tokens"] == 100
    # each count is spread over the whole split, whatever other profiles ask for
    assert task.sample(2).facts["lengths"] == [35, 85]


def test_a_split_smaller_than_the_sample_is_timed_whole_with_its_token_types() -> None:
    task = task_inputs(_encoded([7, 3, 5], types=True))
    w = task.sample(8)
    assert w.facts["lengths"] == [3, 5, 7]
    assert all("token_type_ids" in x for x in w.inputs)
    with pytest.raises(LatencyError, match="needs eval examples"):
        task_inputs(_encoded([]))


def test_fixed_profiles_time_one_workload_per_shape_and_task_ones_need_the_task() -> None:
    fixed = DeviceProfile(threads=1, batch_size=[1, 2], seq_len=8)
    assert [w.shapes for w in workloads(fixed, 30)] == [[(1, 8)], [(2, 8)]]
    with pytest.raises(LatencyError, match="times the task's inputs"):
        workloads(_task_profile(), 30)
    task = task_inputs(_encoded(list(range(4, 40))))
    (w,) = workloads(_task_profile(task_samples=4), 30, task)
    assert w.facts["lengths"] == [8, 17, 26, 35]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_round_runs_every_input_once_and_the_ratio_is_that_of_the_mean_latencies() -> None:
    clock = Clock()
    cost = {"teacher": lambda n: 1e-3 * n, "student": lambda n: 2e-3 + 0.25e-3 * n}  # seconds per call

    def call(model, inputs):
        def run():
            clock.now += cost[model](inputs["input_ids"].shape[1])
        return run

    (w,) = workloads(_task_profile(), 30, task_inputs(_encoded([8, 16, 32, 64])))
    d = measure_workload("teacher", "student", _task_profile(), w, lock=False, call=call, clock=clock)
    teacher_mean = sum(cost["teacher"](n) for n in (8, 16, 32, 64)) / 4
    student_mean = sum(cost["student"](n) for n in (8, 16, 32, 64)) / 4
    assert d["ratio"] == pytest.approx(student_mean / teacher_mean)
    assert d["baseline_ms"] == pytest.approx(1e3 * teacher_mean) and d["candidate_ms"] == pytest.approx(1e3 * student_mean)
    assert d["inputs"] == "task" and d["lengths"] == [8, 16, 32, 64] and d["rounds"] == 3


def test_real_tiny_models_are_timed_on_the_task_sample() -> None:
    teacher = tiny_bert(layers=4)
    student = apply_plan(teacher, CompressionPlan.uniform(4, keep=[0, 2]))
    lat = measure_profile(teacher, student, _task_profile(), vocab_size=30, task=task_inputs(_encoded([5, 9, 14, 20, 30])),
                          lock=False)
    (shape,) = lat.shapes
    assert shape["batch_size"] == 1 and shape["seq_len"] is None and shape["inputs"] == "task"
    assert len(shape["lengths"]) == 4 and lat.ratio > 0 and lat.candidate_ms > 0
    with pytest.raises(LatencyError, match="times the task's inputs"):
        measure_profile(teacher, student, _task_profile(), vocab_size=30, lock=False)


def test_prediction_on_task_inputs_is_the_mean_over_the_sample_and_calibrates_across_it() -> None:
    coef = {name: 0.0 for name in FEATURES} | {"flops:linear_fp32": 1e-9, "flops:attention": 1e-9, "const": 1e-4}
    peaks = HostPeaks(threads=1, fp32_gflops=40.0, int8_gops=80.0, memory_gbs=10.0, clock_ghz=3.0)
    cal = Calibration(coefficients=coef, peaks=peaks, host={"host": "here"}, samples=8, fit_median_error=0.05,
                      shapes=[[1, 16]])
    teacher = tiny_bert(layers=4)
    student = apply_plan(teacher, CompressionPlan.uniform(4, keep=[0, 2]))
    sample = task_inputs(_encoded([6, 12, 24, 48]))
    lat = predict_profile(teacher, student, _task_profile(), cal, task=sample)
    base = sum(predict_ms(teacher, cal, 1, n) for n in (6, 12, 24, 48)) / 4
    cand = sum(predict_ms(student, cal, 1, n) for n in (6, 12, 24, 48)) / 4
    assert lat.kind == "predicted" and lat.ratio == pytest.approx(cand / base)
    assert lat.shapes[0]["lengths"] == [6, 12, 24, 48]
    assert calibration_shapes([_task_profile(), DeviceProfile(threads=1, seq_len=64)], sample) == [
        (1, 6), (1, 24), (1, 48), (1, 64)]
    with pytest.raises(ValueError, match="runs in onnxruntime"):
        measure_profile(teacher, student, _task_profile(backend="onnxruntime"), vocab_size=30, task=sample, lock=False)


def test_a_task_profile_names_what_does_not_apply() -> None:
    with pytest.raises(ValueError, match="remove 'seq_len'"):
        DeviceProfile(threads=1, inputs="task", seq_len=64)
    with pytest.raises(ValueError, match="remove 'batch_size'"):
        DeviceProfile(threads=1, inputs="task", batch_size=4)
    with pytest.raises(ValueError, match="task_samples applies to inputs: task only"):
        DeviceProfile(threads=1, task_samples=4)
    stored = DeviceProfile(threads=1, inputs="task", task_samples=4)
    assert DeviceProfile.model_validate(stored.model_dump(mode="json")) == stored, "a stored task profile reads back"
    with pytest.raises(ValueError, match="inputs"):
        DeviceProfile(threads=1, inputs="eval")
    bundled = load_profile("cpu-2t-task")
    assert bundled.task_inputs and bundled.shapes == [] and "task's eval texts" in bundled.inputs_label


def test_a_config_with_a_wrong_task_profile_key_names_the_file_and_what_to_remove(tiny_model_dir, tiny_csv, tmp_path) -> None:
    import yaml

    raw = tiny_config_dict(tiny_model_dir, tiny_csv)
    raw["profile"] = {"name": "t", "threads": 1, "inputs": "task", "seq_len": 64}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path) and info.value.key == "profile"
    assert "remove 'seq_len'" in str(info.value) and "\n" not in str(info.value)
    profile_file = tmp_path / "mine.yaml"
    profile_file.write_text("threads: 1\ninputs: task\nbatch_size: 4\n")
    with pytest.raises(ConfigError, match=r"profile file '.*mine.yaml': .*remove 'batch_size'") as info:
        load_profile(str(profile_file))
    assert "key ''" not in str(info.value)
