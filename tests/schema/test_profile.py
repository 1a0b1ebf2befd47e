"""Device profiles: bundled YAML, user files and mappings, validated; unknown names get suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from autocompress.errors import ConfigError
from autocompress.schema.profile import (
    BUNDLED_DIR,
    DeviceProfile,
    bundled_profiles,
    load_profile,
    resolve_profile,
)

SPEC = {
    "cpu": "Test CPU",
    "cores": 2,
    "clock_ghz": 2,  # an int is a valid float
    "fp32_gflops_per_core": 10,
    "int8_gops_per_core": 20.0,
    "memory_gbs": 5.0,
    "sources": ["a datasheet"],
}


def test_every_bundled_profile_loads_under_its_file_name() -> None:
    names = bundled_profiles()
    assert set(names) == {p.stem for p in BUNDLED_DIR.glob("*.yaml")}
    assert {"cpu-1t", "cpu-2t", "cpu-2t-batch", "gpu", "rpi4", "phone-bigcore"} <= set(names)
    for name in names:
        profile = resolve_profile(name)
        assert profile.name == name
        assert profile.description, f"{name} says what it describes"
        if profile.predicted:
            assert profile.spec is not None and profile.spec.sources, f"{name} cites where its figures come from"


def test_bundled_profiles_hold_their_documented_settings() -> None:
    rpi4 = resolve_profile("rpi4")
    assert rpi4.kind == "predicted" and rpi4.threads == 4 and rpi4.shapes == [(1, 128)]
    assert rpi4.spec is not None
    assert rpi4.spec.cores == 4 and rpi4.spec.clock_ghz == 1.5 and rpi4.spec.memory_gbs == 5.5
    assert resolve_profile("gpu").device == "cuda"
    assert resolve_profile("cpu-1t").threads == 1 and resolve_profile("cpu-1t").kind == "measured"
    assert resolve_profile("cpu-2t-batch").shapes == [(8, 64), (8, 128)]
    ort = resolve_profile("ort-2t-task")
    assert ort.backend == "onnxruntime" and ort.task_inputs and ort.threads == 2 and ort.kind == "measured"
    chat = resolve_profile("cpu-2t-chat")
    assert chat.threads == 2 and chat.shapes == [(1, 128)] and chat.new_tokens == 64 and chat.generates
    assert chat.backend == "torch" and chat.kind == "measured"
    assert chat.warmup + chat.max_repeats <= 30, "one candidate's measurement takes seconds on a small model"
    assert not resolve_profile("cpu-2t").generates, "profiles without new_tokens time one forward pass per input"


def test_several_sizes_give_every_shape_in_order() -> None:
    p = DeviceProfile(batch_size=[1, 4], seq_len=[16, 32])
    assert p.batch_size == (1, 4)
    assert p.shapes == [(1, 16), (1, 32), (4, 16), (4, 32)]
    assert DeviceProfile(batch_size=2, seq_len=8).shapes == [(2, 8)]
    assert "1×16" in p.inputs_label and "4×32" in p.inputs_label


@pytest.mark.parametrize("size", [[], 0, -1, 70_000, True, [8, 0], 2.5, "8"])
def test_bad_sizes_are_rejected(size) -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        DeviceProfile(batch_size=size)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "predicted"}, "needs 'spec'"),
        ({"kind": "predicted", "device": "cuda", "spec": SPEC}, "predicted profiles describe CPUs"),
        ({"repeats": 20, "max_repeats": 10}, "max_repeats"),
        ({"device": "tpu"}, "device"),
        ({"thread": 2}, "thread"),
        ({"kind": "predicted", "spec": {**SPEC, "sources": []}}, "sources"),
        ({"kind": "predicted", "spec": {**SPEC, "memory_gbs": 0}}, "memory_gbs"),
    ],
)
def test_inconsistent_or_unknown_settings_are_rejected(fields, message) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceProfile.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"new_tokens": 8, "backend": "onnxruntime"}, "timed in PyTorch eager; backend 'onnxruntime'"),
        ({"new_tokens": 8, "kind": "predicted", "spec": SPEC}, "predicted profile's cost model times forward passes"),
        ({"new_tokens": 1}, "at least 2 so that the time per output token is measured"),
        ({"new_tokens": -1}, "new_tokens"),
    ],
    ids=["onnxruntime", "predicted", "one-token", "negative"],
)
def test_a_generation_workload_is_refused_where_it_cannot_be_timed(fields, message) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        DeviceProfile.model_validate(fields)
    assert len(info.value.errors()) == 1


def test_a_generation_profile_says_it_times_prompts_then_new_tokens() -> None:
    fixed = DeviceProfile(seq_len=128, new_tokens=64)
    assert fixed.inputs_label.startswith("prompts of batch×seq 1×128")
    assert "then 64 new tokens each, generated greedily with the key/value cache" in fixed.inputs_label
    task = DeviceProfile(inputs="task", task_samples=4, new_tokens=16)
    assert "eval texts as prompts" in task.inputs_label and "then 16 new tokens" in task.inputs_label
    assert "new tokens" not in DeviceProfile().inputs_label


def test_a_profile_file_with_a_bad_new_tokens_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text("backend: onnxruntime\nnew_tokens: 16\n")
    with pytest.raises(ValueError, match="profile file .*chat.yaml.*backend: torch"):
        resolve_profile(str(path))


def test_a_mapping_becomes_a_predicted_profile_with_float_figures() -> None:
    p = resolve_profile({"name": "box", "kind": "predicted", "threads": 2, "spec": SPEC})
    assert p.predicted and p.name == "box"
    assert p.spec is not None
    assert isinstance(p.spec.clock_ghz, float) and p.spec.clock_ghz == 2.0
    assert p.spec.sources == ("a datasheet",)
    assert resolve_profile(p) is p


def test_a_yaml_path_is_loaded_and_named_after_its_file(tmp_path: Path) -> None:
    path = tmp_path / "my-box.yaml"
    path.write_text(yaml.safe_dump({"threads": 3, "seq_len": [32, 64]}))
    p = resolve_profile(str(path))
    assert p.name == "my-box" and p.threads == 3 and p.shapes == [(1, 32), (1, 64)]
    named = tmp_path / "other.yaml"
    named.write_text(yaml.safe_dump({"name": "given", "threads": 1}))
    assert resolve_profile(str(named)).name == "given"


def test_unknown_name_suggests_close_ones_and_lists_all() -> None:
    with pytest.raises(ValueError) as info:
        resolve_profile("rpi")
    message = str(info.value)
    assert "Unknown profile 'rpi'" in message
    assert "Did you mean 'rpi4'?" in message
    assert "Available:" in message
    for name in bundled_profiles():
        assert name in message.split("Available:")[1]
    with pytest.raises(ValueError) as info:
        resolve_profile("zzzzzz")
    assert "Did you mean" not in str(info.value) and "Available:" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("threads: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("threads: 0\n", "key 'threads'"),
        ("bogus: 1\n", "key 'bogus'"),
        ("kind: predicted\nspec:\n  cpu: x\n", "key 'spec.cores'"),
    ],
    ids=["missing", "bad-yaml", "list", "out-of-range", "unknown-key", "nested-key"],
)
def test_bad_profile_files_name_the_file_and_key(tmp_path: Path, content, message) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="profile file") as info:
        resolve_profile(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_a_profile_reference_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match="name, a path"):
        resolve_profile(4)  # type: ignore[arg-type]


def test_load_profile_raises_config_error_for_callers_outside_a_config() -> None:
    assert load_profile("cpu-2t").threads == 2
    with pytest.raises(ConfigError, match="Unknown profile 'cpu-3t'.*Did you mean"):
        load_profile("cpu-3t")
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile("./no/such/profile.yaml")


def test_an_edited_profile_file_is_read_again(tmp_path: Path) -> None:
    # a long-lived session (a notebook, a worker) sees the file as it is now, not as it was first read
    path = tmp_path / "box.yaml"
    path.write_text("threads: 1\n")
    assert resolve_profile(str(path)).threads == 1
    path.write_text("threads: 3\n")
    assert resolve_profile(str(path)).threads == 3
    path.write_text("threads: 0\n")
    with pytest.raises(ValueError, match="key 'threads'"):
        resolve_profile(str(path))
