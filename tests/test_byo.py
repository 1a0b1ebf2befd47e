"""Bring your own model and data: a study runs on another architecture and a local CSV with only
a new YAML (the bundled template, search_spaces/custom-csv.yaml), and every bad input is one line."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import WORDS_NEG, WORDS_NEU, WORDS_POS, run_cli, save_tiny_model, tiny_distilbert


TEMPLATE = Path(__file__).resolve().parents[1] / "search_spaces" / "custom-csv.yaml"



def _imbalanced_reviews(path: Path, n: int = 400, seed: int = 0) -> Path:
    """Reviews rated 'bad' / 'ok' / 'great', most of them 'ok' (the case for macro-F1)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "review", "rating"])
        writer.writeheader()
        for i in range(n):
            rating = rng.choices(["bad", "ok", "great"], weights=[1, 6, 2])[0]
            words = rng.sample(WORDS_NEU, 4)
            words += rng.sample(WORDS_POS, 2) if rating == "great" else rng.sample(WORDS_NEG, 2) if rating == "bad" else []
            rng.shuffle(words)
            writer.writerow({"id": i, "review": " ".join(words), "rating": rating})
    return path


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> Path:
    """A working directory with a tiny DistilBERT saved as a model directory and a local CSV."""
    d = tmp_path_factory.mktemp("byo")
    save_tiny_model(tiny_distilbert(), d / "models" / "my-distilbert")
    _imbalanced_reviews(d / "reviews.csv")
    return d


def _from_template(d: Path, name: str = "custom.yaml", **task: Any) -> Path:
    """The bundled template with only the keys it says to change (and sizes fit for a test) changed."""
    cfg = yaml.safe_load(TEMPLATE.read_text())
    cfg["name"] = "reviews"
    cfg["model"]["source"] = str(d / "models" / "my-distilbert")
    cfg["task"].update(
        source=str(d / "reviews.csv"), text_column="review", label_column="rating",
        train_size=200, eval_size=80, test_size=60, max_length=16,
    )
    cfg["task"].update(task)
    cfg["teacher"].update(epochs=4, learning_rate=1.0e-3, batch_size=16)
    cfg["recovery"] = {"epochs": 0}
    cfg["profile"] = {"name": "test", "threads": 1, "batch_size": 1, "seq_len": 16, "warmup": 1, "repeats": 3, "max_repeats": 6}
    cfg["space"] = {"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32, 8], "depth": {"min": 2}}
    cfg["search"].update(trials=3, sampler="random")
    path = d / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_template_names_a_local_csv_a_model_directory_macro_f1_and_a_test_split() -> None:
    cfg = yaml.safe_load(TEMPLATE.read_text())
    assert cfg["task"]["source"].endswith(".csv") and cfg["task"]["metric"] == "macro_f1"
    assert cfg["task"]["test_size"] > 0 and not cfg["model"]["source"].startswith("bundled:")
    assert TEMPLATE.read_text().count("CHANGE") >= 5  # it says which keys to change


def test_a_study_runs_on_distilbert_and_a_local_csv_with_only_a_new_yaml(byo, capsys, monkeypatch) -> None:
    monkeypatch.chdir(byo)
    monkeypatch.setenv("COLUMNS", "250")
    space = _from_template(byo)
    code, out, err = run_cli(capsys, "validate", str(space))
    assert code == 0, err
    assert "200 train / 80 eval / 60 test examples, 3 classes (bad, great, ok)" in " ".join(out.split())

    code, out, err = run_cli(capsys, "run", str(space), "--trials", "3")
    assert code == 0, err
    header = out.split("Pareto front", 1)[-1].split("┡", 1)[0]  # the front table's header rows
    assert "Pareto front" in out and "macro_f1" in header  # the front table names the metric
    assert (byo / "studies" / "reviews.html").is_file()

    study = optuna.load_study(study_name="reviews", storage=f"sqlite:///{byo / 'studies' / 'reviews.db'}")
    assert study.user_attrs["config"]["task"]["metric"] == "macro_f1"
    teacher = study.user_attrs["teacher"]
    assert teacher["arch"]["family"] == "distilbert"
    assert teacher["metric"]["name"] == "macro_f1" and teacher["metric"]["n"] == 80
    assert teacher["test_metric"]["name"] == "macro_f1" and teacher["test_metric"]["n"] == 60
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    for t in complete:
        m = t.user_attrs["metric"]
        assert m["name"] == "macro_f1" and t.values[0] == pytest.approx(100 * m["value"])
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
        assert t.user_attrs["accuracy_drop"] == pytest.approx(100 * teacher["metric"]["value"] - t.values[0])
        assert t.user_attrs["test_metric"]["n"] == 60 and t.user_attrs["test_metric"]["name"] == "macro_f1"
    # the uncompressed baseline computes what the teacher computes, on the eval and the test split
    first = next(t for t in complete if t.user_attrs.get("baseline") == "teacher")
    assert first.user_attrs["metric"]["value"] == pytest.approx(teacher["metric"]["value"])
    assert first.user_attrs["test_metric"]["value"] == pytest.approx(teacher["test_metric"]["value"])


def _gpt2_dir(d: Path) -> Path:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    target = d / "models" / "gpt2"
    cfg = GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=32, num_labels=2,
                     pad_token_id=0, bos_token_id=1, eos_token_id=1)
    GPT2ForSequenceClassification(cfg).save_pretrained(target)
    return target


def _mamba_dir(d: Path) -> Path:
    """A state-space model's config (no weights: it is refused from its config alone)."""
    from transformers import MambaConfig

    target = d / "models" / "mamba"
    MambaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1).save_pretrained(target)
    return target


def _one_class_csv(d: Path) -> Path:
    path = d / "one-class.csv"
    path.write_text("review,rating\n" + "".join(f"good day {i},great\n" for i in range(400)))
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("mamba", "Unknown architecture 'mamba'. Did you mean 'llama'? Available: bert, camembert, distilbert, electra, gpt2, llama, mistral, "
                  "qwen2, qwen3, roberta, xlm-roberta"),
        ("gpt2", "key 'task.kind': model '{model}' is a gpt2 causal language model, but a sequence-classification "
                 "study takes an encoder (bert, camembert, distilbert, electra, roberta, xlm-roberta); set task.kind: "
                 "causal-lm"),
        ({"label_column": "stars"}, "no column 'stars'; available: id, review, rating — set task.label_column"),
        ({"text_pair_column": "context"}, "no column 'context'"),
        ({"text_pair_column": "review"}, "a pair task needs two text columns"),
        ("one-class", "only one class"),
        ({"metric": "f1"}, "key 'task.metric': 'f1' is not a metric of task kind 'sequence-classification'; use one of "
                           "accuracy, macro_f1"),
        ({"max_length": 512}, "task.max_length is 512 tokens but this distilbert model takes at most 128"),
        ({"test_size": 200}, "lower task.train_size, task.eval_size, task.transfer_size or task.test_size"),
    ],
    ids=["architecture", "decoder", "column", "pair-column", "pair-same", "one-class", "metric", "max-length", "test-size"],
)
def test_bad_inputs_are_one_line_and_exit_2(byo, capsys, monkeypatch, change, expected) -> None:
    monkeypatch.chdir(byo)
    monkeypatch.setenv("COLUMNS", "400")
    path = _from_template(byo, name="bad.yaml", **(change if isinstance(change, dict) else {}))
    cfg = yaml.safe_load(path.read_text())
    if change in ("gpt2", "mamba"):
        cfg["model"]["source"] = str(_gpt2_dir(byo) if change == "gpt2" else _mamba_dir(byo))
        expected = expected.format(model=cfg["model"]["source"])
    elif change == "one-class":
        cfg["task"]["source"] = str(_one_class_csv(byo))
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()  # what setting up wrote is not the command's output
    for command in ("validate", "run"):
        code, _, err = run_cli(capsys, command, str(path), "--study", "bad") if command == "run" else run_cli(
            capsys, command, str(path)
        )
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
        assert expected in lines[0]
    assert not (byo / "studies" / "bad.db").exists()
