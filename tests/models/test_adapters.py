"""Bring your own model: every supported encoder family is located, compressed and costed
through its adapter; anything else is refused with the list of supported families (decoder
families: ``test_decoder_adapters.py``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODELS, tiny_bert, tiny_distilbert, tiny_roberta

from autocompress.tasks.batches import Encoded
from autocompress.errors import ModelError, UnknownNameError
from autocompress.ops.importance import layer_importance, unit_importance
from autocompress.latency import DeviceProfile
from autocompress.latency.cost import model_costs, totals
from autocompress.latency.measure import check_profile_fits
from autocompress.models.adapters import (
    SUPPORTED_FAMILIES,
    ArchInfo,
    adapter_for,
    arch_from_config,
    arch_info,
    check_max_length,
    load_causal_lm,
    load_classifier,
    peek_arch,
    peek_config,
)
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.ops import apply_plan, simulated_widths

FAMILIES = list(TINY_MODELS)
LAYERS, HEADS, HIDDEN, FFN, LABELS = 4, 4, 32, 64, 3

MIXED = CompressionPlan(
    layers=(
        LayerPlan(heads=0.5, ffn=0.25, bits=8),
        LayerPlan(keep=False),
        LayerPlan(heads=0.75, ffn=1.0, bits=32),
        LayerPlan(heads=1.0, ffn=0.5, bits=4),
    ),
    head_bits=8,
    embedding_bits=8,
)


def test_bert_roberta_xlmr_and_distilbert_families_are_supported() -> None:
    assert {"bert", "roberta", "xlm-roberta", "distilbert"} <= set(SUPPORTED_FAMILIES)


def test_an_encoder_has_one_key_value_head_per_query_head() -> None:
    arch = ArchInfo(family="bert", num_layers=2, num_heads=4, intermediate_size=64, hidden_size=32)
    assert (arch.num_kv_heads, arch.head_size, arch.decoder) == (4, 8, False)
    assert arch == ArchInfo(family="bert", num_layers=2, num_heads=4, intermediate_size=64, hidden_size=32,
                            num_kv_heads=4, head_size=8)
    with pytest.raises(ModelError, match="5 query heads cannot have 2 key/value heads"):
        ArchInfo(family="llama", num_layers=2, num_heads=5, intermediate_size=64, hidden_size=40, num_kv_heads=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_is_read_from_each_family_s_own_config_names(family: str) -> None:
    model = TINY_MODELS[family](layers=LAYERS, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    expected = ArchInfo(family=family, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN, hidden_size=HIDDEN)
    assert arch_info(model) == expected
    assert arch_from_config(model.config) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_compresses_runs_and_scores(family: str, lively_bert, token_batch) -> None:
    model = lively_bert(family=family, layers=LAYERS, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    student = apply_plan(model, MIXED)
    adapter = adapter_for(student)
    assert arch_info(student).num_layers == 3  # the config says so too: a saved student reloads
    layers = adapter.layers(student)
    assert [adapter.attention(layer).num_heads for layer in layers] == [2, 3, 4]
    assert [adapter.ffn(layer).up.out_features for layer in layers] == [16, 64, 32]
    assert set(simulated_widths(student, MIXED).values()) == {4}  # layer 3 at 4 bits; 8-bit embeddings are real codes
    with torch.no_grad():
        logits = student(**token_batch).logits
    assert logits.shape == (4, LABELS) and torch.isfinite(logits).all()
    # the head (pooler + classifier, or DistilBERT's pre_classifier + classifier) is int8
    assert totals(model_costs(student, 1, 16))["flops:linear_int8"] > 0
    assert not any(isinstance(m, torch.nn.Linear) for name in adapter.head_modules(student)
                   for m in student.get_submodule(name).modules())
    # importance scoring walks the same modules
    data = Encoded([row[m.bool()].tolist() for row, m in zip(token_batch["input_ids"], token_batch["attention_mask"])],
                   None, torch.tensor([0, 1, 2, 1]), 0)
    scores = unit_importance(model, "taylor", data)
    assert [s.shape for s in scores.heads.values()] == [(HEADS,)] * LAYERS
    assert [s.shape for s in scores.ffn.values()] == [(FFN,)] * LAYERS
    assert layer_importance(model, data).shape == (LAYERS,)
    assert arch_info(model).num_layers == LAYERS  # the teacher is left as it was


@pytest.mark.parametrize("family", FAMILIES)
def test_cost_model_counts_each_family_s_linears(family: str) -> None:
    model = TINY_MODELS[family](layers=LAYERS, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    tokens = 16
    encoder = LAYERS * (4 * 2 * tokens * HIDDEN * HIDDEN + 2 * 2 * tokens * HIDDEN * FFN)
    head = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * LABELS  # pooler / pre_classifier / dense, then the classifier
    assert totals(model_costs(model, 1, tokens))["flops:linear_fp32"] == encoder + head
    half = apply_plan(model, CompressionPlan.uniform(LAYERS, heads=0.5))
    assert totals(model_costs(half, 1, tokens))["flops:attention"] == pytest.approx(
        totals(model_costs(model, 1, tokens))["flops:attention"] / 2
    )


def test_distilbert_student_with_fewer_layers_saves_and_reloads(tmp_path: Path, token_batch) -> None:
    from transformers import AutoModelForSequenceClassification

    student = apply_plan(tiny_distilbert(), CompressionPlan.uniform(LAYERS, keep=[0, 3]))
    assert student.config.n_layers == 2 and len(student.distilbert.transformer.layer) == 2
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.config.n_layers == 2
    with torch.no_grad():
        assert torch.allclose(again(**token_batch).logits, student(**token_batch).logits, atol=1e-6)


def test_profile_check_reads_distilbert_dimensions() -> None:
    cfg = tiny_distilbert(layers=1).config  # no intermediate_size: DistilBERT calls it hidden_dim
    check_profile_fits(DeviceProfile(name="ok", seq_len=[64, 128]), cfg)


@pytest.mark.parametrize(("make", "limit"), [(tiny_bert, 128), (tiny_roberta, 129), (tiny_distilbert, 128)])
def test_max_length_beyond_the_model_s_positions_is_refused(make, limit: int) -> None:
    cfg = make(layers=1).config
    check_max_length(cfg, limit)
    with pytest.raises(ModelError, match=f"task.max_length is {limit + 1} tokens .* at most {limit}"):
        check_max_length(cfg, limit + 1)


def _saved_config(directory: Path, family: str) -> Path:
    """A model directory holding only the config of a tiny ``family`` model (enough to be refused)."""
    from transformers import MambaConfig, MixtralConfig, Qwen2MoeConfig, T5Config

    configs = {
        "mixtral": lambda: MixtralConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, num_local_experts=2),
        "qwen2_moe": lambda: Qwen2MoeConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, num_experts=2),
        "mamba": lambda: MambaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1),
        "t5": lambda: T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8),
    }
    configs[family]().save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "mamba", "t5"])
def test_unknown_architecture_is_refused_listing_the_supported_ones(tmp_path: Path, family: str) -> None:
    """Mixtures of experts, state-space models and encoder-decoders are refused before any weight is read."""
    source = str(_saved_config(tmp_path / family, family))
    for call in (peek_config, peek_arch, lambda src: load_classifier(src, 2), load_causal_lm):
        with pytest.raises(UnknownNameError) as info:
            call(source)
        assert f"architecture '{family}'" in str(info.value)
        assert "Available: " + ", ".join(sorted(SUPPORTED_FAMILIES)) in str(info.value)


def test_adapter_of_a_model_without_config_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="Linear"):
        adapter_for(copy.deepcopy(torch.nn.Linear(2, 2)))
