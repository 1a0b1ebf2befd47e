"""Structured pruning of decoders is exact: a pruned causal LM computes what the masked original
computes, for every decoder family (Llama, Qwen2, Qwen3, Mistral through grouped-query attention
and a gated MLP; GPT-2 through its fused Conv1D projections), and grouped-query layers stay valid."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_decoders import DECODERS, decoder_batch, tiny_decoder

from autocompress.models.adapters import ModelAdapter, adapter_for
from autocompress.models.gqa import canonical_attention
from autocompress.ops import apply_plan
from autocompress.ops.prune import (
    ffn_magnitude,
    head_magnitude,
    heads_to_keep,
    prune_ffn_,
    prune_heads_,
    units_to_keep,
)
from autocompress.schema.plan import CompressionPlan, LayerPlan

GQA = ["llama", "qwen2", "qwen3", "mistral"]
HEADS, KV, HIDDEN, FFN = 8, 2, 64, 96
D = HIDDEN // HEADS


def _logits(model, batch=None) -> torch.Tensor:
    with torch.no_grad():
        return model(**(batch or decoder_batch())).logits


def _mask_heads_(adapter: ModelAdapter, layer, keep: torch.Tensor) -> None:
    """Zero the output-projection columns of every query head not in ``keep`` (the masked original)."""
    o = adapter.attention(layer).matrices()[3]  # a view of the weight, in (hidden, features) orientation
    heads = o.shape[1] // D
    mask = torch.zeros(heads)
    mask[keep] = 1.0
    with torch.no_grad():
        o.mul_(mask.repeat_interleave(D)[None, :])


def _mask_ffn_(adapter: ModelAdapter, layer, keep: torch.Tensor) -> None:
    """Zero the down-projection columns of every neuron not in ``keep``."""
    down = adapter.ffn(layer).matrices()[2]
    mask = torch.zeros(down.shape[1])
    mask[keep] = 1.0
    with torch.no_grad():
        down.mul_(mask[None, :])


# (heads, kv) -> (groups kept, query heads per kept group) for 8 query heads in 2 groups
GQA_CASES = {
    "query heads within every group": ((0.5, 1.0), (2, 2)),
    "a whole group": ((0.5, 0.5), (1, 4)),
    "a group and heads within the other": ((0.25, 0.5), (1, 2)),
    "one head per group": ((0.25, 1.0), (2, 1)),
}


@pytest.mark.parametrize("family", GQA)
@pytest.mark.parametrize("case", list(GQA_CASES))
def test_gqa_pruned_heads_compute_what_masked_original_computes(family: str, case: str) -> None:
    (heads, kv), (groups, per) = GQA_CASES[case]
    model = tiny_decoder(family, heads=HEADS, kv_heads=KV, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for m_layer, p_layer in zip(adapter.layers(masked), adapter.layers(pruned), strict=True):
        expected, expected_groups = heads_to_keep(head_magnitude(adapter.attention(m_layer)), KV, heads, kv)
        _mask_heads_(adapter, m_layer, expected)
        kept = prune_heads_(p_layer, adapter, heads, kv=kv)
        assert torch.equal(kept, expected) and kept.numel() == groups * per
        # each kept query head reads its own group: heads come in whole groups, ``per`` of each
        assert torch.equal(kept // (HEADS // KV), expected_groups.repeat_interleave(per))
        sa = p_layer.self_attn
        assert sa.num_key_value_groups == per
        assert (sa.q_proj.out_features, sa.k_proj.out_features, sa.v_proj.out_features) == (groups * per * D, groups * D,
                                                                                         groups * D)
        assert sa.o_proj.in_features == groups * per * D
        assert adapter.kv_features(p_layer) == groups * D

    got = _logits(pruned)
    assert torch.allclose(got, _logits(masked), atol=1e-4)  # logits of size ~7: float rounding
    assert not torch.allclose(got, _logits(model), atol=1e-3)  # the check has teeth


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.25])
def test_gpt2_pruned_heads_compute_what_masked_original_computes(ratio: float) -> None:
    model = tiny_decoder("gpt2", heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for m_layer, p_layer in zip(adapter.layers(masked), adapter.layers(pruned), strict=True):
        expected = units_to_keep(head_magnitude(adapter.attention(m_layer)), ratio)
        _mask_heads_(adapter, m_layer, expected)
        kept = prune_heads_(p_layer, adapter, ratio, kv=0.5)  # kv has no say: every head has its own keys
        assert torch.equal(kept, expected) and kept.numel() == round(ratio * HEADS)
        attn = p_layer.attn
        width = kept.numel() * D
        assert (attn.c_attn.nx, attn.c_attn.nf) == (HIDDEN, 3 * width) and attn.split_size == width
        assert (attn.c_proj.nx, attn.c_proj.nf) == (width, HIDDEN) and attn.num_heads == kept.numel()
        assert adapter.kv_features(p_layer) == width

    got = _logits(pruned)
    assert torch.allclose(got, _logits(masked), atol=1e-4)  # logits of size ~7: float rounding
    assert not torch.allclose(got, _logits(model), atol=1e-3)


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("ratio", [0.5, 0.1])
def test_decoder_pruned_ffn_computes_what_masked_original_computes(family: str, ratio: float) -> None:
    model = tiny_decoder(family, heads=HEADS, kv_heads=KV, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for m_layer, p_layer in zip(adapter.layers(masked), adapter.layers(pruned), strict=True):
        expected = units_to_keep(ffn_magnitude(adapter.ffn(m_layer)), ratio)
        _mask_ffn_(adapter, m_layer, expected)
        kept = prune_ffn_(p_layer, adapter, ratio)
        assert torch.equal(kept, expected) and kept.numel() == round(ratio * FFN)
        up, gate, down = adapter.ffn(p_layer).matrices()
        assert up.shape == (kept.numel(), HIDDEN) and down.shape == (HIDDEN, kept.numel())
        assert (gate is None) == (family == "gpt2")
        if gate is not None:  # a gated MLP loses the gate rows of the same neurons
            assert torch.equal(gate, adapter.ffn(m_layer).gate.weight[expected])

    got = _logits(pruned)
    assert torch.allclose(got, _logits(masked), atol=1e-4)  # logits of size ~7: float rounding
    assert not torch.allclose(got, _logits(model), atol=1e-3)


def test_gqa_heads_to_keep_takes_the_best_groups_and_the_best_heads_within_them() -> None:
    #                      group 0 (heads 0-3): 9   group 1 (heads 4-7): 8.5
    scores = torch.tensor([9.0, 0.0, 0.0, 0.0, 3.0, 2.5, 2.0, 1.0])
    heads, groups = heads_to_keep(scores, 2, 0.5, 0.5)
    assert groups.tolist() == [0] and heads.tolist() == [0, 1, 2, 3]
    heads, groups = heads_to_keep(scores, 2, 0.25, 1.0)  # one head from each group: its best one
    assert groups.tolist() == [0, 1] and heads.tolist() == [0, 4]
    scores[0] = 1.0  # now group 1 is worth more
    heads, groups = heads_to_keep(scores, 2, 0.25, 0.5)
    assert groups.tolist() == [1] and heads.tolist() == [4, 5]


def test_gqa_head_magnitude_shares_a_group_s_keys_and_values_among_its_query_heads() -> None:
    model = tiny_decoder("llama", layers=1, heads=HEADS, kv_heads=KV, hidden=HIDDEN, ffn=FFN)
    parts = adapter_for(model).attention(adapter_for(model).layers(model)[0])
    scores = head_magnitude(parts)
    assert scores.shape == (HEADS,)
    j, group = 5, 5 // (HEADS // KV)
    q, k, v, o = (m.detach().abs() for m in parts.matrices())
    rows, kv_rows = slice(j * D, (j + 1) * D), slice(group * D, (group + 1) * D)
    manual = q[rows].sum() + o[:, rows].sum() + (k[kv_rows].sum() + v[kv_rows].sum()) / (HEADS // KV)
    assert scores[j].item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("heads", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("kv", [1.0, 0.75, 0.5, 0.25])
def test_qwen2_5_0_5b_attention_shape_prunes_for_every_ratio(heads: float, kv: float) -> None:
    """Qwen2.5-0.5B has 14 query heads reading 2 key/value heads (7 per group): every ratio pair
    rounds to a valid shape, the plan that asks for it canonicalises to what is built, and it runs."""
    model = tiny_decoder("qwen2", layers=2, heads=14, kv_heads=2, hidden=56, ffn=32)
    want_heads, want_kv = canonical_attention(14, 2, heads, kv)
    student = apply_plan(model, CompressionPlan.uniform(2, heads=heads, kv=kv), bits=False)
    same = apply_plan(model, CompressionPlan.uniform(2, heads=want_heads, kv=want_kv), bits=False)
    adapter = adapter_for(student)
    for layer, twin in zip(adapter.layers(student), adapter.layers(same), strict=True):
        parts = adapter.attention(layer)
        assert parts.num_heads == round(want_heads * 14) and parts.num_kv_heads == round(want_kv * 2)
        assert layer.self_attn.num_key_value_groups * parts.num_kv_heads == parts.num_heads
        assert torch.equal(layer.self_attn.q_proj.weight, twin.self_attn.q_proj.weight)
    logits = _logits(student)
    assert logits.shape == (3, 10, 100) and torch.isfinite(logits).all()
    assert torch.equal(logits, _logits(same))


def test_a_mixed_decoder_plan_gives_each_layer_its_own_shape() -> None:
    model = tiny_decoder("qwen3", layers=3, heads=HEADS, kv_heads=KV, hidden=HIDDEN, ffn=FFN)
    plan = CompressionPlan(layers=(LayerPlan(heads=0.5, kv=0.5, ffn=0.5), LayerPlan(keep=False),
                                   LayerPlan(heads=0.25, ffn=1.0)))
    student = apply_plan(model, plan, bits=False)
    adapter = adapter_for(student)
    shapes = [(adapter.attention(layer).num_heads, adapter.attention(layer).num_kv_heads, adapter.ffn(layer).width)
              for layer in adapter.layers(student)]
    assert shapes == [(4, 1, 48), (2, 2, FFN)]
    assert [adapter.kv_features(layer) for layer in adapter.layers(student)] == [D, 2 * D]
    assert torch.isfinite(_logits(student)).all()
