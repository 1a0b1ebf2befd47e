"""load_config: valid search-space files load; every mistake is a ConfigError naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_config_dict
from pydantic import ValidationError

from autocompress.schema.config import StudyConfig, load_config
from autocompress.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, content: dict[str, Any] | str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def _config(**overrides: Any) -> dict[str, Any]:
    return tiny_config_dict(Path("/models/tiny"), Path("/data/sentiment.csv"), **overrides)


def test_valid_config_loads_with_its_values_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _config()))
    assert isinstance(cfg, StudyConfig)
    assert cfg.name == "tiny"
    assert cfg.task.text_column == "sentence" and cfg.task.train_size == 200
    assert cfg.space.heads == (1.0, 0.5) and cfg.space.bits == (32, 8)
    assert cfg.space.depth.min == 2 and cfg.space.depth.max is None
    assert cfg.search.sampler == "random"
    assert cfg.profile.name == "test" and cfg.profile.repeats == 3
    # documented defaults for what the file leaves out
    assert cfg.task.seed == 0 and cfg.recovery.temperature == 2.0 and cfg.space.per_layer is True


def test_config_round_trips_through_to_dict(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _config()))
    again = load_config(_write(tmp_path, cfg.to_dict(), name="again.yaml"))
    assert again == cfg


def test_unquoted_exponent_float_is_accepted_as_learning_rate(tmp_path: Path) -> None:
    # YAML 1.1 (safe_load) reads an unquoted 5e-5 as the string "5e-5"
    text = (
        "name: lr\n"
        "task:\n  source: data.csv\n"
        "teacher:\n  learning_rate: 5e-5\n"
        "recovery:\n  learning_rate: 1e-4\n  epochs: 1\n"
    )
    cfg = load_config(_write(tmp_path, text))
    assert cfg.teacher.learning_rate == pytest.approx(5e-5)
    assert isinstance(cfg.teacher.learning_rate, float)
    assert cfg.recovery.learning_rate == pytest.approx(1e-4)
    assert cfg.recovery.epochs == 1.0


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: broken\ntask:\n  source: a.csv\n  bad: [1, 2\nsearch: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 5" in message
    assert info.value.file == str(path)


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["", "- a\n- b\n", "just a string\n"], ids=["empty", "list", "scalar"])
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, content))


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        ({"bogus": 1}, "bogus", ["name", "task", "space", "search"]),
        ({"space": {"bogus": 1}}, "space.bogus", ["heads", "ffn", "bits", "depth", "per_layer"]),
        ({"space": {"depth": {"min": 2, "bogus": 1}}}, "space.depth.bogus", ["min", "max", "selection"]),
        ({"task": {"text_colum": "x"}}, "task.text_colum", ["text_column", "label_column"]),
        ({"profile": {"threds": 2}}, "profile.threds", ["threads", "repeats"]),
    ],
)
def test_unknown_key_names_key_path_and_lists_allowed_keys(
    tmp_path: Path, overrides: dict[str, Any], key: str, allowed: list[str]
) -> None:
    path = _write(tmp_path, _config(**overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.key == key
    assert f"'{key}'" in str(err) and str(path) in str(err)
    for name in allowed:
        assert name in str(err)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"task": {"train_size": -1}}, "task.train_size"),
        ({"task": {"train_size": "100"}}, "task.train_size"),
        ({"task": {"max_length": 100_000}}, "task.max_length"),
        ({"space": {"heads": [1.5]}}, "space.heads"),
        ({"space": {"ffn": [0]}}, "space.ffn"),
        ({"space": {"heads": []}}, "space.heads"),
        ({"space": {"bits": [16]}}, "space.bits[0]"),
        ({"space": {"depth": {"min": 4, "max": 2}}}, "space.depth"),
        ({"space": {"depth": {"selection": ["middle"]}}}, "space.depth.selection[0]"),
        ({"search": {"sampler": "foo"}}, "search.sampler"),
        ({"search": {"trials": 0}}, "search.trials"),
        ({"teacher": {"learning_rate": "fast"}}, "teacher.learning_rate"),
        ({"teacher": {"epochs": True}}, "teacher.epochs"),
        ({"recovery": {"alpha": 1.5}}, "recovery.alpha"),
        ({"profile": {"threads": 0}}, "profile.threads"),
        ({"name": "has spaces"}, "name"),
    ],
)
def test_wrong_type_or_out_of_range_names_key_path(tmp_path: Path, overrides: dict[str, Any], key: str) -> None:
    path = _write(tmp_path, _config(**overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert f"key '{key}'" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_required_section_is_named(tmp_path: Path) -> None:
    data = _config()
    del data["task"]
    with pytest.raises(ConfigError, match="required") as info:
        load_config(_write(tmp_path, data))
    assert info.value.key == "task"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _config()))
    with pytest.raises(ValidationError):
        cfg.search.trials = 99  # type: ignore[misc]
    assert cfg.search.trials == 6


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_search_spaces_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name
    if path.name != "custom-csv.yaml":  # the template for your own files; the others run offline as they are
        assert cfg.task.source.startswith("bundled:")


def test_there_are_bundled_search_spaces() -> None:
    assert len(list((REPO / "search_spaces").glob("*.yaml"))) >= 2


def test_max_repeats_below_repeats_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, _config(profile={"repeats": 20, "max_repeats": 6}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.key or "").startswith("profile")


# --- device profiles: a bundled name, a YAML path or a mapping; reported profiles ----------------


def test_profile_by_bundled_name_and_report_profiles(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _config(profile="cpu-2t-batch", report_profiles=["rpi4", "phone-bigcore"])))
    assert cfg.profile.name == "cpu-2t-batch" and cfg.profile.shapes == [(8, 64), (8, 128)]
    assert [p.name for p in cfg.all_profiles] == ["cpu-2t-batch", "rpi4", "phone-bigcore"]
    assert [p.kind for p in cfg.all_profiles] == ["measured", "predicted", "predicted"]
    # the stored config holds the profiles in full, and loads back to the same study config
    again = load_config(_write(tmp_path, cfg.to_dict(), name="again.yaml"))
    assert again == cfg
    assert cfg.to_dict()["report_profiles"][0]["spec"]["cores"] == 4


def test_profile_by_path_relative_or_absolute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "box.yaml").write_text(yaml.safe_dump({"threads": 1, "batch_size": [1, 2], "seq_len": 16}))
    cfg = load_config(_write(tmp_path, _config(profile=str(tmp_path / "box.yaml"))))
    assert cfg.profile.name == "box" and cfg.profile.shapes == [(1, 16), (2, 16)]
    monkeypatch.chdir(tmp_path)
    assert load_config(_write(tmp_path, _config(report_profiles=["./box.yaml"]))).report_profiles[0].name == "box"


def test_predicted_profile_as_a_mapping(tmp_path: Path) -> None:
    spec = {"cpu": "My board", "cores": 2, "clock_ghz": 1.2, "fp32_gflops_per_core": 5, "int8_gops_per_core": 10,
            "memory_gbs": 3, "sources": ["board manual"]}
    cfg = load_config(_write(tmp_path, _config(profile={"name": "board", "kind": "predicted", "threads": 2, "spec": spec})))
    assert cfg.profile.predicted and cfg.profile.spec is not None and cfg.profile.spec.cpu == "My board"
    assert cfg.profile.spec.memory_gbs == 3.0


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"profile": "rpi"}, "profile", "Did you mean 'rpi4'?"),
        ({"profile": "nope"}, "profile", "Available: cpu-1t"),
        ({"profile": "missing.yaml"}, "profile", "does not exist"),
        ({"report_profiles": ["cpu-2"]}, "report_profiles", "Did you mean 'cpu-2t'"),
        ({"profile": {"name": "x", "kind": "predicted"}}, "profile", "needs 'spec'"),
        ({"report_profiles": "rpi4"}, "report_profiles", "report_profiles"),
    ],
)
def test_bad_profile_reference_names_the_key(tmp_path: Path, overrides, key: str, message: str) -> None:
    path = _write(tmp_path, _config(**overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert message in str(info.value) and str(path) in str(info.value)


def test_duplicate_profile_names_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _config(profile="rpi4", report_profiles=["cpu-1t", "rpi4"]))
    with pytest.raises(ConfigError, match="rpi4 appears twice") as info:
        load_config(path)
    assert info.value.key == "report_profiles"
    renamed = {**yaml.safe_load((REPO / "autocompress/schema/profiles/rpi4.yaml").read_text()), "name": "rpi4-b"}
    cfg = load_config(_write(tmp_path, _config(profile="rpi4", report_profiles=[renamed])))
    assert [p.name for p in cfg.all_profiles] == ["rpi4", "rpi4-b"]


def test_cuda_profile_with_int8_in_the_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CUDA.*without 8") as info:
        load_config(_write(tmp_path, _config(profile="gpu")))
    assert info.value.key == "space"
    with pytest.raises(ConfigError, match="CUDA"):
        load_config(_write(tmp_path, _config(profile="gpu", space={"bits": [32, 4], "head_bits": [32, 8]})))
    default_space = _config(profile="gpu")
    del default_space["space"]  # the default space searches int8 too
    with pytest.raises(ConfigError, match="CUDA") as info:
        load_config(_write(tmp_path, default_space))
    assert info.value.key == "space"
    cfg = load_config(_write(tmp_path, _config(profile="gpu", space={"bits": [32, 4]})))
    assert cfg.profile.device == "cuda" and cfg.space.bits == (32, 4)
    # a reported GPU profile times every candidate on CUDA too
    with pytest.raises(ConfigError, match="profile 'gpu' runs on CUDA") as info:
        load_config(_write(tmp_path, _config(report_profiles=["rpi4", "gpu"])))
    assert info.value.key == "space"
    cfg = load_config(_write(tmp_path, _config(report_profiles=["gpu"], space={"bits": [32]})))
    assert cfg.report_profiles[0].device == "cuda"


@pytest.mark.parametrize(
    ("task", "key", "message"),
    [
        ({"test_split": "test"}, "task.test_size", "say how many"),
        ({"test_size": 5}, "task.test_size", "at least 10"),
        ({"text_pair_column": "sentence"}, "task.text_pair_column", "two text columns"),
    ],
)
def test_bad_task_settings_name_the_key(tmp_path: Path, task: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, _config(task=task)))
    assert f"key '{key}'" in str(info.value) and message in str(info.value)


def test_task_metric_and_test_split_settings_load(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _config(task={"metric": "macro_f1", "test_size": 40})))
    assert cfg.task.metric == "macro_f1" and cfg.task.test_size == 40 and cfg.task.test_split is None
    plain = load_config(_write(tmp_path, _config(), name="plain.yaml"))
    assert plain.task.metric == "accuracy" and plain.task.test_size == 0


def test_a_study_stored_before_the_training_cuts_reads_as_it_ran():
    from autocompress.schema.config import LEGACY_RECOVERY, LEGACY_TRAINING, continuing, parse_config, with_legacy_training

    new = parse_config(_config(teacher={"freeze_word_embeddings": True, "group_by_length": True}))  # the defaults
    stored = new.to_dict()
    for key in LEGACY_TRAINING:
        del stored["teacher"][key]
    for key in LEGACY_RECOVERY:
        del stored["recovery"][key]
    old = parse_config(with_legacy_training(stored))
    assert not old.teacher.freeze_word_embeddings and not old.teacher.group_by_length
    assert not old.recovery.depth_scaled and not old.recovery.freeze_word_embeddings
    assert not old.recovery.quantization_aware and old.recovery.quantize_only_fraction == 0.0  # int8 as it was built
    # the same file run again on that study: settings it left at their defaults follow the study
    again = continuing(new, stored)
    assert again.teacher == old.teacher and again.recovery == old.recovery
    # a study that has the keys keeps what the file says
    assert continuing(new, new.to_dict()) == new
    assert parse_config(with_legacy_training(new.to_dict())) == new


@pytest.mark.parametrize(("vocabulary", "key", "match"), [
    ({"keep": ["task"], "min_count": [1, 0]}, "space.vocabulary.min_count", "at least 1"),
    ({"keep": ["task"], "corpus": "/no/such/corpus.txt"}, "space.vocabulary.corpus", "not found"),
    ({"keep": ["some"]}, "space.vocabulary.keep", None),
])
def test_a_bad_vocabulary_setting_names_its_key(tmp_path: Path, vocabulary: dict[str, Any], key: str, match: str | None) -> None:
    path = _write(tmp_path, _config(space={"vocabulary": vocabulary}))
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert info.value.key is not None and info.value.key.startswith(key)


def test_a_vocabulary_corpus_that_exists_is_accepted(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\nanother one\n")
    cfg = load_config(_write(tmp_path, _config(space={"vocabulary": {"keep": ["all", "task"], "corpus": str(corpus)}})))
    assert cfg.space.vocabulary.offered and cfg.space.vocabulary.choices == (0, 1)


def test_refinement_takes_a_quarter_of_the_time_budget_unless_told_and_never_all_of_it(tiny_model_dir, tiny_csv):
    from autocompress.schema.config import parse_config

    def search(**s: Any):
        return parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, search=s)).search

    assert search().refine_seconds == 0 and search(time_budget=1200).refine_seconds == 300
    assert search(time_budget=1200, refine={"seconds": 0}).refine_seconds == 0
    assert search(refine={"seconds": 60}).refine_seconds == 60  # after the trials, without a time budget
    for bad in ({"time_budget": 100, "refine": {"seconds": 100}}, {"refine": {"scale": 1.0}}, {"time_budget": 0}):
        with pytest.raises(ConfigError):
            search(**bad)


@pytest.mark.parametrize(
    ("search", "key", "words"),
    [
        ({"time_budget": 600, "refine": {"seconds": 600}}, "search.refine", "below the time budget"),
        ({"time_budget": 600.0, "refine": {"seconds": 900.0}}, "search.refine", "below the time budget"),
        ({"refine": {"scale": 1.0}}, "search.refine.scale", "greater than 1"),
        ({"refine": {"scale": 17.0}}, "search.refine.scale", "16"),
        ({"refine": {"near": -1.0}}, "search.refine.near", "0"),
        ({"refine": {"seconds": -5}}, "search.refine.seconds", "0"),
        ({"time_budget": 0}, "search.time_budget", "greater than 0"),
        ({"refine": {"secs": 60}}, "search.refine.secs", "seconds"),
    ],
)
def test_a_bad_refinement_setting_names_its_key(tmp_path: Path, search: dict[str, Any], key: str, words: str) -> None:
    path = _write(tmp_path, _config(search=search))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and f"key '{key}'" in str(info.value) and str(path) in str(info.value)
    assert words in str(info.value)


def test_refinement_time_just_below_the_budget_is_accepted_and_a_refinement_setting_alone_needs_no_budget(
        tmp_path: Path) -> None:
    search = load_config(_write(tmp_path, _config(search={"time_budget": 600, "refine": {"seconds": 599.5}}))).search
    assert search.refine_seconds == 599.5 and search.time_budget == 600
    search = load_config(_write(tmp_path, _config(search={"refine": {"seconds": 1e6, "scale": 16, "near": 100}}))).search
    assert (search.refine_seconds, search.refine.scale, search.refine.near, search.time_budget) == (1e6, 16, 100, None)
    default = load_config(_write(tmp_path, _config())).search
    assert (default.refine.seconds, default.refine.scale, default.refine.near, default.refine_seconds) == (None, 2.0, 1.0, 0.0)
