"""Shipping a decoder trial: export it, load it back, and generate exactly the trial model's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import autocompress
from autocompress.export import export_trial
from autocompress.schema.plan import CompressionPlan
from conftest import file_digest, run_cli, tiny_decoder_config_dict

#: grouped-query pruning (layer 0 keeps one of its two key/value groups), a layer dropped, weight-only
#: int4 and int8 layers and an int8 head
MIXED = CompressionPlan.from_dict({
    "layers": [{"heads": 0.5, "kv": 0.5, "bits": 4}, {"ffn": 0.5}, {"heads": 0.5, "bits": 8}, {"keep": False}],
    "weight_scheme": "weight_only", "head_bits": 8,
})
HALF = CompressionPlan.uniform(4, keep=[0, 2])  # whole blocks dropped: a standard config describes it
#: GPT-2: heads and neurons pruned, weight-only int8 and int4 layers, a layer dropped
GPT2_PRUNED = CompressionPlan.from_dict({
    "layers": [{"heads": 0.5, "ffn": 0.5, "bits": 8}, {"bits": 4}, {"heads": 0.5}, {"keep": False}],
    "weight_scheme": "weight_only",
})
GPT2_FFN = CompressionPlan.uniform(4, ffn=0.5)  # every layer the same FFN width: n_inner says it


def _study(model_dir: Path, corpus: Path, root: Path, name: str, plans: dict[str, CompressionPlan], **overrides):
    """A tiny decoder study whose trials are ``plans``, in order (trial 0 is the first)."""
    from autocompress import study as st
    from autocompress.schema.config import parse_config
    from autocompress.search.space import params_for_plan
    from autocompress.search.workbench import prepare
    from autocompress.store import record

    search = {"trials": len(plans), "sampler": "random", "seed": 0, "seed_baselines": False}
    cfg = parse_config(tiny_decoder_config_dict(model_dir, corpus, name=name, search=search, **overrides))
    cache = root / "cache"
    bench = prepare(cfg, cache)
    url = f"sqlite:///{root / f'{name}.db'}"
    study = st.create_or_load(cfg, st.open_storage(url), name, bench)
    for label, plan in plans.items():
        study.enqueue_trial(params_for_plan(plan, cfg.space, bench.arch, bench.layer_ranking),
                            user_attrs=record.queue_labels(baseline=label))
    st.run(study, bench, n_trials=len(plans))
    trials = {t.user_attrs.get("baseline"): t.number for t in study.trials if t.state.name == "COMPLETE"}
    assert set(trials) == set(plans), [t.user_attrs.get("fail_reason") for t in study.trials]
    return {"study": study, "bench": bench, "cache": cache, "url": url, "db": root / f"{name}.db", "trials": trials}


@pytest.fixture(scope="module")
def llama(tiny_llama_dir, decoder_corpus, tmp_path_factory):
    return _study(tiny_llama_dir, decoder_corpus, tmp_path_factory.mktemp("llama-export"), "lm",
                  {"mixed": MIXED, "half": HALF}, space={"head_bits": [32, 8]})


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir, decoder_corpus, tmp_path_factory):
    return _study(tiny_gpt2_dir, decoder_corpus, tmp_path_factory.mktemp("gpt2-export"), "gpt",
                  {"pruned": GPT2_PRUNED, "ffn": GPT2_FFN}, space={"kv": [1.0]})


def _prompts(bench, n: int = 8, tokens: int = 8) -> torch.Tensor:
    """The first tokens of the first eval documents that have that many."""
    return torch.tensor([ids[:tokens] for ids in bench.eval.input_ids if len(ids) >= tokens][:n])


def _greedy(model, prompts: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=16,
                              do_sample=False, **kwargs)


def _trial_model(case, label: str):
    """The trial's model, built again by the trial's own builder."""
    from autocompress.search import build

    trial = case["study"].trials[case["trials"][label]]
    return build.candidate(case["bench"], CompressionPlan.from_dict(trial.user_attrs["plan"])).model


def test_a_pruned_weight_only_llama_generates_the_trial_models_tokens(llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LlamaForCausalLM, pipeline

    from autocompress.ops.weight_only import WeightOnlyLinear

    out = tmp_path / "mixed"
    result = export_trial(llama["study"], llama["trials"]["mixed"], out, llama["cache"])
    assert result.rebuilt_accuracy == result.trial_accuracy and result.torch_max_logit_diff == 0.0
    assert result.rebuilt_metric.natural == result.trial_metric.natural > 1  # perplexity, rebuilt exactly
    assert result.generation.prompts == 8 and result.generation.new_tokens == 16
    assert not result.plain_hf and not (out / "config.json").exists()
    assert any("autocompress.load(DIR)" in n for n in result.notes)
    with pytest.raises((OSError, ValueError)):
        AutoModelForCausalLM.from_pretrained(out)  # uneven key/value heads and quantised layers: no standard config

    model = autocompress.load(out)
    assert isinstance(model, LlamaForCausalLM) and not model.training
    layers = model.model.layers
    assert [layer.self_attn.k_proj.out_features // 16 for layer in layers] == [1, 2, 2]  # kv heads kept per layer
    assert model.config.num_key_value_heads == 2  # the base model's count: generate must not size a cache by it
    assert {m.bits for m in layers[0].modules() if isinstance(m, WeightOnlyLinear)} == {4}
    assert isinstance(model.lm_head, WeightOnlyLinear) and model.lm_head.bits == 8

    prompts = _prompts(llama["bench"])
    want = _greedy(_trial_model(llama, "mixed"), prompts)
    got = _greedy(model, prompts, return_dict_in_generate=True)
    assert torch.equal(got.sequences, want)
    assert got.sequences[:, 8:].unique().numel() > 4  # the model writes text, not one token over and over
    assert isinstance(got.past_key_values, DynamicCache)
    assert [layer.keys.shape[1] for layer in got.past_key_values.layers] == [1, 2, 2]
    assert torch.equal(_greedy(model, prompts, cache_implementation="static"), want)  # a static cache too

    tokenizer = AutoTokenizer.from_pretrained(out)  # the tokenizer ships beside the model

    def write(m) -> str:
        return pipeline("text-generation", model=m, tokenizer=tokenizer)("the big cat sat on the", max_new_tokens=12,
                                                                         do_sample=False)[0]["generated_text"]

    assert write(model) == write(_trial_model(llama, "mixed"))

    metrics = json.loads((out / "metrics.json").read_text())
    stored = metrics["trial_figures"]["metric"]
    assert stored["name"] == "perplexity" and stored["natural_low"] < stored["natural"] < stored["natural_high"]
    assert stored["teacher_natural"] == metrics["trial_figures"]["teacher_metric"]["natural"]
    assert metrics["export"]["rebuilt_metric"]["natural"] == stored["natural"]
    assert metrics["export"]["generation"]["identical"] and metrics["export"]["generation"]["prompts"] == 8
    rows = {r["what"]: r for r in metrics["latency_comparison"]}
    assert set(rows) == {"trial (stored)", "export (PyTorch)"}
    for row in rows.values():  # time to first token and per output token, the model's and the teacher's
        assert row["ttft_ms"] > 0 and row["teacher_ttft_ms"] > 0 and row["tpot_ms"] > 0 and row["teacher_tpot_ms"] > 0
    timed = metrics["export"]["latency"]["export (PyTorch)"]
    assert timed["new_tokens"] == metrics["export"]["latency_profile"]["new_tokens"] == 4  # the study's workload
    assert "generation" in metrics["how_measured"]


def test_blocks_dropped_only_load_with_plain_transformers_too(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "half"
    result = export_trial(llama["study"], llama["trials"]["half"], out, llama["cache"])
    assert result.plain_hf and result.generation.plain_hf and (out / "config.json").is_file()
    assert any("plain transformers loads it too: AutoModelForCausalLM" in n for n in result.notes)
    assert json.loads((out / "metrics.json").read_text())["plain_hf_loadable"] is True
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert plain.config.num_hidden_layers == 2 and plain.config.num_key_value_heads == 2
    prompts = _prompts(llama["bench"])
    want = _greedy(_trial_model(llama, "half"), prompts)
    assert torch.equal(_greedy(plain, prompts), want)
    assert torch.equal(_greedy(autocompress.load(out), prompts), want)


def test_plain_config_says_the_kept_attention_and_ffn_widths(tiny_llama_dir, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    from autocompress.export.saved import plain_config
    from autocompress.ops import apply_plan
    from autocompress.tasks.kind import task_kind

    kind = task_kind("causal-lm")
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    uniform = CompressionPlan.uniform(4, heads=0.5, kv=0.5, ffn=0.5, keep=[0, 1, 3])
    config = plain_config(apply_plan(llama, uniform), uniform, kind)  # grouped-query: heads and kv say the shape
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.head_dim, config.intermediate_size) == (3, 2, 1, 16, 64)
    uneven = CompressionPlan.from_dict({"layers": [{"kv": 0.5, "heads": 0.5}, {}, {}, {}]})
    assert plain_config(apply_plan(llama, uneven), uneven, kind) is None
    assert plain_config(apply_plan(llama, MIXED), MIXED, kind) is None

    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    config = plain_config(apply_plan(gpt2, GPT2_FFN), GPT2_FFN, kind)
    assert (config.n_layer, config.n_head, config.n_inner) == (4, 4, 128)
    heads = CompressionPlan.uniform(4, heads=0.5)  # GPT-2 derives its head size from n_head: no config says it
    assert plain_config(apply_plan(gpt2, heads), heads, kind) is None


def test_a_gpt2_export_generates_the_trial_models_tokens(gpt2, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    result = export_trial(gpt2["study"], gpt2["trials"]["pruned"], out, gpt2["cache"])
    assert not result.plain_hf and result.rebuilt_metric.natural == result.trial_metric.natural
    prompts = _prompts(gpt2["bench"])
    assert torch.equal(_greedy(autocompress.load(out), prompts), _greedy(_trial_model(gpt2, "pruned"), prompts))

    out = tmp_path / "ffn"
    result = export_trial(gpt2["study"], gpt2["trials"]["ffn"], out, gpt2["cache"])
    assert result.plain_hf  # n_inner holds the kept width
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert plain.config.n_inner == 128
    assert torch.equal(_greedy(plain, prompts), _greedy(_trial_model(gpt2, "ffn"), prompts))


def test_onnx_for_a_decoder_is_refused_in_one_line(llama, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = file_digest(llama["db"])
    code, stdout, stderr = run_cli(capsys, "export", "lm", "--trial", str(llama["trials"]["half"]), "-o", "out",
                                   "--onnx", "--storage", llama["url"], "--cache-dir", str(llama["cache"]))
    assert code == 2, (stdout, stderr)
    assert "--onnx exports encoders only; decoders ship for PyTorch" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert file_digest(llama["db"]) == before
    assert not list(tmp_path.iterdir())  # nothing written, no partial directory
