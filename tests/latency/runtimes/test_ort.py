"""Latency in ONNX Runtime: candidates exported as export writes them, timed against the teacher's ONNX model."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert, tiny_config_dict

from autocompress.tasks.batches import Encoded
from autocompress.schema.config import parse_config
from autocompress.errors import ConfigError
from autocompress.latency.inputs import task_inputs
from autocompress.latency.runtimes.ort import measure_onnxruntime, teacher_session
from autocompress.schema.profile import DeviceProfile
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_structure_



@pytest.fixture(autouse=True)
def _needs_onnxruntime(request):
    if "without_onnxruntime" not in request.node.name:
        pytest.importorskip("onnxruntime")


def _profile(**kw) -> DeviceProfile:
    return DeviceProfile(**{"name": "ort", "threads": 1, "backend": "onnxruntime", "seq_len": 16, "warmup": 1,
                            "repeats": 3, "max_repeats": 3, **kw})


def _student(teacher, plan: CompressionPlan):
    import copy

    student = copy.deepcopy(teacher)
    apply_structure_(student, plan)
    return student.eval()


def test_a_candidate_is_exported_with_its_int8_layers_and_timed_against_the_teachers_onnx_model() -> None:
    teacher = tiny_bert(layers=4)
    ort_teacher = teacher_session(teacher, ["input_ids", "attention_mask"])
    assert ort_teacher.path.is_file() and ort_teacher.export_seconds > 0
    plan = CompressionPlan.uniform(4, keep=[0, 2], bits=8)
    lat = measure_onnxruntime(ort_teacher, _student(teacher, plan), plan, _profile(), lock=False)
    d = lat.to_dict()
    assert d["backend"] == "onnxruntime" and d["export_seconds"] > 0
    assert d["int8_matmuls"] == 2 * 6, "two kept int8 layers, six weight MatMuls each"
    assert d["kind"] == "measured" and d["rounds"] == 3 and lat.ratio > 0 and lat.baseline_ms > 0
    same = measure_onnxruntime(ort_teacher, teacher, CompressionPlan.uniform(4), _profile(), lock=False)
    assert same.to_dict()["int8_matmuls"] == 0


def test_onnxruntime_times_the_tasks_own_texts_too() -> None:
    teacher = tiny_bert(layers=2)
    ort_teacher = teacher_session(teacher, ["input_ids", "attention_mask"])
    data = Encoded([[1, *([5] * (n - 2)), 2] for n in (4, 8, 12, 16)], None, torch.zeros(4, dtype=torch.long), 0)
    profile = DeviceProfile(name="ort-task", threads=1, backend="onnxruntime", inputs="task", task_samples=4,
                            warmup=1, repeats=3, max_repeats=3)
    plan = CompressionPlan.uniform(2, keep=[0])
    lat = measure_onnxruntime(ort_teacher, _student(teacher, plan), plan, profile, task=task_inputs(data), lock=False)
    (shape,) = lat.shapes
    assert shape["inputs"] == "task" and shape["lengths"] == [4, 8, 12, 16]


def test_an_onnxruntime_profile_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="runs on the CPU"):
        DeviceProfile(threads=1, backend="onnxruntime", device="cuda")
    spec = {"cpu": "x", "cores": 1, "clock_ghz": 1.0, "fp32_gflops_per_core": 1.0, "int8_gops_per_core": 1.0,
            "memory_gbs": 1.0, "sources": ["s"]}
    with pytest.raises(ValueError, match="predicted profile has no runtime"):
        DeviceProfile.model_validate({"threads": 1, "backend": "onnxruntime", "kind": "predicted", "spec": spec})


def test_without_onnxruntime_the_study_names_the_key_and_the_install(tiny_model_dir, tiny_csv, tmp_path, monkeypatch) -> None:
    from autocompress.search import workbench

    monkeypatch.setattr(workbench, "missing_onnx", lambda: "onnxruntime")
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, profile={"backend": "onnxruntime"}))
    with pytest.raises(ConfigError) as info:
        workbench.prepare(cfg, tmp_path / "cache", config_file="space.yaml")
    message = str(info.value)
    assert "key 'profile.backend'" in message and "pip install 'autocompress[onnx]'" in message
    assert "space.yaml" in message and not (tmp_path / "cache").exists(), "refused before anything was made"


def test_validate_without_onnxruntime_is_one_line_and_exit_2(tiny_model_dir, tiny_csv, tmp_path, monkeypatch, capsys) -> None:
    import yaml
    from conftest import run_cli

    from autocompress.search import workbench

    monkeypatch.setattr(workbench, "missing_onnx", lambda: "onnxruntime")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv, profile={"backend": "onnxruntime"})))
    code, out, err = run_cli(capsys, "validate", str(path))
    text = (out + err).strip()
    assert code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text
    assert "profile.backend" in text and "autocompress[onnx]" in text


def test_run_without_onnxruntime_creates_no_study(tiny_model_dir, tiny_csv, tmp_path, monkeypatch, capsys) -> None:
    """Refused before the storage is touched: no empty study is left behind to collide with the next run."""
    import yaml
    from conftest import run_cli

    from autocompress.search import workbench

    monkeypatch.setattr(workbench, "missing_onnx", lambda: "onnxruntime")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv, profile={"backend": "onnxruntime"})))
    db = tmp_path / "s.db"
    code, out, err = run_cli(capsys, "run", str(path), "--storage", f"sqlite:///{db}", "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and "profile.backend" in err and "Traceback" not in out + err
    assert not db.exists() and not (tmp_path / "cache").exists()
