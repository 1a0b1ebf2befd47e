"""The Python API: apply a plan, run a study with a per-trial callback, read it, export, report."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

import autocompress
from autocompress.models.adapters import load_tokenizer
from autocompress.errors import AutocompressError, ConfigError, ExportError, PlanError, StudyNotFoundError
from autocompress.schema.config import RecoveryConfig, parse_config
from autocompress.schema.plan import CompressionPlan, LayerPlan
from conftest import sentiment_rows, tiny_bert, tiny_config_dict

PLAN = CompressionPlan(layers=(
    LayerPlan(keep=True, heads=0.5, ffn=0.5, bits=8), LayerPlan(keep=False),
    LayerPlan(keep=True, heads=1.0, ffn=0.5, bits=32), LayerPlan(keep=True),
))


def test_importing_the_package_loads_no_heavy_library():
    code = "import sys, autocompress; print(sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(autocompress.__all__) <= set(dir(autocompress))


# ------------------------------------------------------------------------------------------ apply_plan
def test_apply_plan_takes_a_plan_object_dict_or_yaml_file_and_leaves_the_model_alone(tmp_path, token_batch):
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.to_yaml())
    outs = []
    for plan in (PLAN, PLAN.to_dict(), path, str(path)):
        small = autocompress.apply_plan(model, plan)
        assert len(small.bert.encoder.layer) == 3 and not small.training
        assert small.bert.encoder.layer[0].attention.self.num_attention_heads == 2
        with torch.inference_mode():
            outs.append(small(**token_batch).logits)
    assert all(torch.equal(outs[0], o) for o in outs[1:])  # one plan, one model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_apply_plan_refuses_what_cannot_work_in_one_clear_line(tmp_path):
    model = tiny_bert()
    with pytest.raises(PlanError, match="no plan file at"):
        autocompress.apply_plan(model, tmp_path / "missing.yaml")
    with pytest.raises(PlanError, match="plan lists 2 layers but the model has 4"):
        autocompress.apply_plan(model, CompressionPlan.uniform(2))
    with pytest.raises(AutocompressError, match="give data="):
        autocompress.apply_plan(model, PLAN, teacher=model)
    with pytest.raises(ConfigError, match="key 'recovery.epochs': Input should be greater than or equal to 0"):
        autocompress.apply_plan(model, PLAN, teacher=model, data=(["a"], [0]), recovery={"epochs": -1})
    with pytest.raises(AutocompressError, match="one label per text"):
        autocompress.apply_plan(model, PLAN, data=(["a", "b"], [0]), tokenizer=object())


def test_apply_plan_with_a_teacher_and_texts_distils_the_student_towards_it(lively_bert, tiny_model_dir):
    teacher = lively_bert(seed=3)
    rows = sentiment_rows(96, seed=5)
    texts, labels = [r["sentence"] for r in rows], [["negative", "neutral", "positive"].index(r["sentiment"]) for r in rows]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    plan = CompressionPlan(layers=(LayerPlan(keep=True), LayerPlan(keep=False), LayerPlan(keep=True, heads=0.5),
                                   LayerPlan(keep=False)))
    shaped = autocompress.apply_plan(teacher, plan, data=(texts, labels), tokenizer=tokenizer)
    recovery = RecoveryConfig(epochs=4.0, learning_rate=3e-3, batch_size=16, alpha=1.0, freeze_word_embeddings=False,
                              depth_scaled=False)
    distilled = autocompress.apply_plan(teacher, plan, teacher=teacher, data=(texts, labels), tokenizer=tokenizer,
                                        recovery=recovery)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = teacher(**inputs).logits.argmax(-1)
        agree = [(m(**inputs).logits.argmax(-1) == want).float().mean().item() for m in (shaped, distilled)]
    assert len(distilled.bert.encoder.layer) == 2
    assert agree[1] > 0.9 > agree[0] + 0.4, agree  # the distilled student predicts what its teacher predicts


# ------------------------------------------------------------------------------------------ a study
@pytest.fixture(scope="module")
def ran(tiny_model_dir, tiny_csv, tmp_path_factory):
    """A five-trial tiny study run through the API, with every event its callback received."""
    root = tmp_path_factory.mktemp("api")
    config = tiny_config_dict(tiny_model_dir, tiny_csv, name="api", teacher={"epochs": 10.0},
                              fidelity={"enabled": False}, search={"trials": 5, "sampler": "random", "seed": 0})
    events: list[autocompress.TrialEvent] = []
    url = f"sqlite:///{root / 'api.db'}"
    study = autocompress.run_study(config, storage=url, cache_dir=root / "cache", on_trial=events.append)
    return SimpleNamespace(study=study, events=events, url=url, cache=root / "cache", config=config, root=root)


def test_run_study_tells_the_callback_about_every_trial_with_the_stored_figures(ran):
    assert ran.study.last_run.completed == 5 and not ran.study.last_run.gave_up
    rows = autocompress.open_study("api", storage=ran.url).trials()
    assert [e.trial.number for e in ran.events] == [r.number for r in rows] == list(range(len(rows)))
    assert [e.trial for e in ran.events] == rows  # the event's figures are the stored ones
    assert [e.completed for e in ran.events] == list(range(1, 6)) and {e.target for e in ran.events} == {5}
    for row, trial in zip(rows, ran.study.optuna.trials):
        assert row.state == "COMPLETE" and row.metric_name == "accuracy"
        assert row.plan == CompressionPlan.from_dict(trial.user_attrs["plan"])
        assert (row.metric, 1 / row.speedup, row.size_mb) == pytest.approx(tuple(trial.values))
        assert row.drop == pytest.approx(rows[0].metric - row.metric)  # trial 0 is the teacher itself
    front = ran.study.front()
    assert front and {r.number for r in front} <= {r.number for r in rows}
    assert [r.speedup for r in front] == sorted((r.speedup for r in front), reverse=True)


def test_run_study_continues_a_stored_study_by_name(ran):
    events: list[autocompress.TrialEvent] = []
    more = autocompress.run_study(study_name="api", storage=ran.url, trials=6, cache_dir=ran.cache, on_trial=events.append)
    assert [e.trial.number for e in events] == [5] and more.last_run.completed == 6
    assert autocompress.open_study("api", ran.url).config == parse_config(ran.config)


def test_wrong_names_paths_and_trials_are_clear_errors(ran, tmp_path):
    with pytest.raises(StudyNotFoundError, match="no study named 'nope'; studies here: api"):
        autocompress.open_study("nope", storage=ran.url)
    with pytest.raises(StudyNotFoundError, match="no study database at"):
        autocompress.open_study("api", storage=f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(AutocompressError, match="has no trial 99; its trials are numbered 0–"):
        ran.study.trial(99)
    with pytest.raises(ExportError, match="has no trial 99"):
        autocompress.export_trial(ran.study, tmp_path / "x", trial=99, cache_dir=ran.cache)
    with pytest.raises(ExportError, match="exactly one of trial=N or pick="):
        autocompress.export_trial("api", tmp_path / "x", storage=ran.url)
    with pytest.raises(AutocompressError, match="file not found"):
        autocompress.run_study(tmp_path / "missing.yaml")
    assert not (tmp_path / "x").exists()


def test_an_exported_front_member_loads_and_predicts_as_the_trial_built_it(ran, tmp_path):
    from autocompress.search.workbench import prepare

    result = autocompress.export_trial("api", tmp_path / "model", pick="fastest with accuracy drop <= 100",
                                       storage=ran.url, cache_dir=ran.cache)
    assert result.trial in {r.number for r in ran.study.front()}
    loaded = autocompress.load(result.directory)
    bench = prepare(ran.study.config, ran.cache)  # the study's teacher, from the cache
    rebuilt = autocompress.apply_plan(bench.teacher.model, ran.study.trial(result.trial).plan, data=bench)
    with torch.inference_mode():
        got, want = bench.kind.outputs(loaded, bench.eval), bench.kind.outputs(rebuilt, bench.eval)
    assert torch.equal(got.argmax(-1), want.argmax(-1)) and torch.allclose(got, want, atol=1e-4)


def test_write_report_writes_the_html_page_or_the_trial_table(ran, tmp_path):
    page = autocompress.write_report(ran.study, tmp_path / "r.html")
    assert page.stat().st_size > 10_000 and "api" in page.read_text(encoding="utf-8")
    table = ran.study.write_report(tmp_path / "r.csv", format="csv")
    assert len(table.read_text().splitlines()) == 1 + len(ran.study.trials())
    with pytest.raises(AutocompressError, match="unknown report format 'pdf'; available: html, csv"):
        autocompress.write_report(ran.study, tmp_path / "r.pdf", format="pdf")


def test_load_config_reads_the_yaml_a_dict_would_give(ran, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(ran.config))
    assert autocompress.load_config(path) == parse_config(ran.config)
