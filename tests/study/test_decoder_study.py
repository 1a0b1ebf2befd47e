"""A decoder study end to end on tiny random models of each family: prepare, search, record, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from autocompress import api
from autocompress.schema.config import parse_config
from autocompress.search.workbench import prepare
from autocompress.store import record
from conftest import file_digest, run_cli, tiny_config_dict, tiny_decoder_config_dict


@pytest.fixture(scope="module")
def llama_study(tiny_llama_dir, decoder_corpus, tmp_path_factory) -> tuple[api.Study, Path]:
    cache = tmp_path_factory.mktemp("cache")
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'lm.db'}"
    cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus)
    return api.run_study(cfg, storage=url, cache_dir=cache), cache


def test_the_teacher_learns_the_corpus(tiny_llama_dir, decoder_corpus, llama_study) -> None:
    _, cache = llama_study
    bench = prepare(parse_config(tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus)), cache)
    assert bench.teacher.from_cache
    # the structured corpus is learnable: far below the perplexity of guessing among 300 tokens
    assert bench.teacher_metric.value == pytest.approx(1.0) and bench.teacher_metric.natural < 30
    assert bench.arch.decoder and bench.arch.num_kv_heads == 2


def test_a_llama_study_records_perplexity_and_generation_latency(llama_study) -> None:
    study, _ = llama_study
    done = [t for t in study.trials() if t.complete]
    assert len(done) >= 5
    for t in done:
        assert t.metric_name == "perplexity" and t.natural is not None and t.natural > 1
        assert t.ttft_speedup is not None and t.tpot_speedup is not None and t.speedup > 0
    trials = optuna.load_study(study_name=study.name, storage=study.url).get_trials(deepcopy=False)
    figures = [record.read(t).latency for t in trials if t.state.name == "COMPLETE"]
    assert all(f is not None and f.kv_cache_bytes for f in figures)
    # the uncompressed baseline keeps the teacher's perplexity and its whole KV cache
    plans = {t.plan_summary: t for t in done}
    assert any("int8" in p or "int4" in p for p in plans)


def test_a_gpt2_study_runs(tiny_gpt2_dir, decoder_corpus, tmp_path) -> None:
    cfg = tiny_decoder_config_dict(tiny_gpt2_dir, decoder_corpus, space={"kv": [1.0]}, search={"trials": 3})
    study = api.run_study(cfg, storage=f"sqlite:///{tmp_path / 'g.db'}", cache_dir=tmp_path / "cache")
    assert sum(t.complete for t in study.trials()) >= 3


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"task": {"kind": "sequence-classification", "metric": "accuracy"},  # a decoder as a classifier
          "objectives": {"max_perplexity_increase": None}}, "set task.kind: causal-lm"),
        ({"profile": {"new_tokens": 0}}, "profile.new_tokens"),
        ({"profile": {"seq_len": 120, "new_tokens": 64}}, "profile"),  # longer than the model's 128 positions
        ({"task": {"train_size": 5000}}, None),  # corpus too small
        ({"space": {"strict": True, "heads": [1.0, 0.75]}}, "space.heads"),  # 3 of 4 heads over 2 groups
        ({"space": {"vocabulary": {"keep": ["task"]}}}, "space.vocabulary.keep"),
        ({"task": {"metric": "accuracy"}}, "task.metric"),
    ],
)
def test_bad_decoder_inputs_get_one_line_and_exit_2(capsys, tmp_path, tiny_llama_dir, decoder_corpus, change, key) -> None:
    cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, **change)
    code, out, err = run_cli(capsys, "run", str(_write(tmp_path, cfg)), "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                             "--cache-dir", str(tmp_path / "cache"))
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    if key is not None:
        assert key in err


def test_a_classifier_given_the_causal_lm_kind_is_refused(capsys, tmp_path, tiny_model_dir, decoder_corpus) -> None:
    cfg = tiny_decoder_config_dict(tiny_model_dir, decoder_corpus)
    code, _, err = run_cli(capsys, "run", str(_write(tmp_path, cfg)), "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                           "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "key 'model.source'" in err and "bert encoder" in err and "takes a decoder (gpt2, llama" in err


def test_a_bad_decoder_input_leaves_a_stored_study_untouched(capsys, tmp_path, tiny_model_dir, tiny_csv,
                                                             tiny_llama_dir, decoder_corpus) -> None:
    db = tmp_path / "keep.db"
    api.run_study(tiny_config_dict(tiny_model_dir, tiny_csv, search={"trials": 2}), storage=f"sqlite:///{db}",
                  cache_dir=tmp_path / "cache")
    before = file_digest(db)
    cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, name="tiny", profile={"new_tokens": 0})
    code, _, _ = run_cli(capsys, "run", str(_write(tmp_path, cfg)), "--storage", f"sqlite:///{db}",
                         "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and file_digest(db) == before


def test_training_windows_give_the_teacher_and_the_students_more_of_each_document(tiny_llama_dir, decoder_corpus,
                                                                                  tmp_path) -> None:
    one = prepare(parse_config(tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, task={"max_length": 8})),
                  tmp_path / "cache")
    three = prepare(parse_config(tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus,
                                                          task={"max_length": 8, "windows": 3})), tmp_path / "cache")
    assert three.teacher.cache != one.teacher.cache  # a teacher trained on other text
    assert len(one.train) == 240 and len(three.train) > 2 * 240
    assert three.train.head(240).input_ids == one.train.input_ids
    assert len(three.transfer) == len(three.train) and len(three.transfer_logits) == len(three.train)
    assert three.eval.input_ids == one.eval.input_ids  # scored on each document's first window, as before


def _grammar_questions(path: Path, n: int, seed: int = 1) -> Path:
    """Questions on the test corpus' grammar: after "the big cat" comes a verb, never an adjective or a
    preposition (each one token of the tiny tokenizer, so that no choice is favoured by its length)."""
    import json
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        context = f"the {rng.choice(['small', 'big', 'red'])} {rng.choice(['cat', 'dog', 'bird'])}"
        choices = [rng.choice(["small", "big", "red"]), rng.choice(["sat", "ran", "flew"]),
                   rng.choice(["on", "under", "over"])]
        rows.append({"context": context, "choices": choices, "answer": choices[1]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_a_multiple_choice_study_scores_questions(tiny_llama_dir, decoder_corpus, tmp_path) -> None:
    choices = _grammar_questions(tmp_path / "questions.jsonl", 60)
    cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus,
                                   task={"metric": "multiple_choice", "choices": str(choices), "eval_size": 40,
                                         "test_size": 20},
                                   objectives={"max_perplexity_increase": None, "max_accuracy_drop": 10},
                                   search={"trials": 3})
    study = api.run_study(cfg, storage=f"sqlite:///{tmp_path / 'mc.db'}", cache_dir=tmp_path / "cache")
    teacher = optuna.load_study(study_name=study.name, storage=study.url).user_attrs["teacher"]
    assert teacher["metric"]["name"] == "multiple_choice" and teacher["metric"]["n"] == 40
    assert teacher["metric"]["value"] >= 0.8  # chance is 1 in 3: the teacher learnt that a verb follows "the cat"
    assert teacher["test_metric"]["n"] == 20
    done = [t for t in study.trials() if t.complete]
    assert len(done) >= 3 and all(t.metric_name == "multiple_choice" for t in done)


def test_multiple_choice_and_its_questions_go_together(capsys, tmp_path, tiny_llama_dir, decoder_corpus) -> None:
    choices = _grammar_questions(tmp_path / "questions.jsonl", 30)
    for task, key in (({"metric": "multiple_choice"}, "task.choices"), ({"choices": str(choices)}, "task.choices")):
        cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, task=task,
                                       objectives={"max_perplexity_increase": None, "max_accuracy_drop": 10}
                                       if "metric" in task else {})
        code, _, err = run_cli(capsys, "validate", str(_write(tmp_path, cfg)))
        assert code == 2 and key in err and len(err.strip().splitlines()) == 1, err


def test_two_decoder_workers_share_one_postgresql_study_and_its_teacher(pg_url, tiny_llama_dir, decoder_corpus,
                                                                         tmp_path) -> None:
    import os
    import subprocess
    import sys

    from autocompress import study as st

    space = _write(tmp_path, tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, search={"trials": 4}))
    procs = [subprocess.Popen([sys.executable, "-m", "autocompress.cli", "-v", "run", str(space), "--storage", pg_url,
                               "--cache-dir", str(tmp_path / f"cache-{i}")],  # two machines: only the database shared
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i in range(2)]
    results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [e[-800:] for _, e in results]
    logs = [e for _, e in results]
    assert sum("using the teacher shared by another worker" in e for e in logs) == 1
    study = optuna.load_study(study_name="tiny-lm", storage=st.open_storage(pg_url))
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(done) == 4 and all(record.read(t).latency.tpot_ms for t in done)


def test_a_decoder_study_warm_starts_from_another_ones_front(llama_study, tiny_llama_dir, decoder_corpus,
                                                           tmp_path) -> None:
    source, cache = llama_study
    want = sorted(t.plan.describe() for t in source.front())
    assert want
    cfg = tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, name="warm-lm",
                                   search={"trials": len(want) + 1, "seed_baselines": False})
    warm = api.run_study(cfg, storage=f"sqlite:///{tmp_path / 'warm.db'}", cache_dir=cache,
                         warm_start=source.name, warm_start_storage=source.url)
    queued = [t.plan.describe() for t in warm.trials()[: len(want)]]
    assert sorted(queued) == want  # the source's front ran first, as it was
