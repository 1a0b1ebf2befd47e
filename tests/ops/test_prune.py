"""Structured pruning is exact: a pruned model computes what the masked original computes.

The exactness tests run on every architecture family with an adapter (BERT, RoBERTa, XLM-R,
DistilBERT), each through its own module layout.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autocompress.models.adapters import ModelAdapter, adapter_for
from autocompress.ops.prune import (
    ffn_magnitude,
    head_magnitude,
    prune_ffn_,
    prune_heads_,
    units_to_keep,
)

HEADS, HIDDEN, FFN = 4, 32, 64
HEAD_SIZE = HIDDEN // HEADS
FAMILIES = ["bert", "roberta", "xlm-roberta", "distilbert"]


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _mask_heads_(adapter: ModelAdapter, layer: nn.Module, keep: torch.Tensor) -> None:
    """Zero the attention-output columns of every head not in ``keep`` (the masked original)."""
    out = adapter.attention(layer).out
    mask = torch.zeros(HEADS)
    mask[keep] = 1.0
    with torch.no_grad():
        out.weight.mul_(mask.repeat_interleave(HEAD_SIZE)[None, :])


def _mask_ffn_(adapter: ModelAdapter, layer: nn.Module, keep: torch.Tensor) -> None:
    """Zero the FFN down-projection columns of every neuron not in ``keep``."""
    down = adapter.ffn(layer).down
    mask = torch.zeros(down.in_features)
    mask[keep] = 1.0
    with torch.no_grad():
        down.weight.mul_(mask[None, :])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.25])
def test_pruned_heads_compute_what_masked_original_computes(lively_bert, token_batch, ratio: float, family: str) -> None:
    model = lively_bert(family=family, layers=3, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for m_layer, p_layer in zip(adapter.layers(masked), adapter.layers(pruned), strict=True):
        expected = units_to_keep(head_magnitude(adapter.attention(m_layer)), ratio)
        _mask_heads_(adapter, m_layer, expected)
        kept = prune_heads_(p_layer, adapter, ratio)
        assert torch.equal(kept, expected)
        assert kept.numel() == round(ratio * HEADS)

    reference = _logits(masked, token_batch)
    got = _logits(pruned, token_batch)
    assert torch.allclose(got, reference, atol=1e-5)
    # the check has teeth: removing heads does change what the model computes
    assert not torch.allclose(got, _logits(model, token_batch), atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.1])
def test_pruned_ffn_computes_what_masked_original_computes(lively_bert, token_batch, ratio: float, family: str) -> None:
    model = lively_bert(family=family, layers=3, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for m_layer, p_layer in zip(adapter.layers(masked), adapter.layers(pruned), strict=True):
        expected = units_to_keep(ffn_magnitude(adapter.ffn(m_layer)), ratio)
        _mask_ffn_(adapter, m_layer, expected)
        kept = prune_ffn_(p_layer, adapter, ratio)
        assert torch.equal(kept, expected)
        assert kept.numel() == round(ratio * FFN)

    reference = _logits(masked, token_batch)
    got = _logits(pruned, token_batch)
    assert torch.allclose(got, reference, atol=1e-5)
    assert not torch.allclose(got, _logits(model, token_batch), atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_and_ffn_pruned_together_with_padding_match_masked_original(lively_bert, token_batch, family: str) -> None:
    model = lively_bert(family=family, layers=2, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    ratios = [(0.5, 0.25), (0.75, 0.5)]
    for (h, f), m_layer, p_layer in zip(ratios, adapter.layers(masked), adapter.layers(pruned), strict=True):
        heads = units_to_keep(head_magnitude(adapter.attention(m_layer)), h)
        neurons = units_to_keep(ffn_magnitude(adapter.ffn(m_layer)), f)
        _mask_heads_(adapter, m_layer, heads)
        _mask_ffn_(adapter, m_layer, neurons)
        prune_heads_(p_layer, adapter, h)
        prune_ffn_(p_layer, adapter, f)
    assert token_batch["attention_mask"].min() == 0  # the batch really has padding
    assert torch.allclose(_logits(pruned, token_batch), _logits(masked, token_batch), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_with_the_wrong_heads_is_detected(lively_bert, token_batch, family: str) -> None:
    """Guard on the method: masking other heads than the pruned ones gives different logits."""
    model = lively_bert(family=family, layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    kept = prune_heads_(adapter.layers(pruned)[0], adapter, 0.5)
    others = torch.tensor([i for i in range(HEADS) if i not in kept.tolist()])
    _mask_heads_(adapter, adapter.layers(masked)[0], others)
    assert not torch.allclose(_logits(pruned, token_batch), _logits(masked, token_batch), atol=1e-3)


def test_shapes_and_head_count_after_pruning(lively_bert, token_batch) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    prune_heads_(layer, adapter, 0.25)
    prune_ffn_(layer, adapter, 0.5)
    sa = layer.attention.self
    for lin in (sa.query, sa.key, sa.value):
        assert tuple(lin.weight.shape) == (HEAD_SIZE, HIDDEN)
        assert tuple(lin.bias.shape) == (HEAD_SIZE,)
        assert lin.out_features == HEAD_SIZE
    assert tuple(layer.attention.output.dense.weight.shape) == (HIDDEN, HEAD_SIZE)
    assert tuple(layer.attention.output.dense.bias.shape) == (HIDDEN,)
    assert sa.num_attention_heads == 1 and sa.all_head_size == HEAD_SIZE
    assert tuple(layer.intermediate.dense.weight.shape) == (FFN // 2, HIDDEN)
    assert tuple(layer.intermediate.dense.bias.shape) == (FFN // 2,)
    assert tuple(layer.output.dense.weight.shape) == (HIDDEN, FFN // 2)
    # and the model still runs end to end on a padded batch
    assert _logits(model, token_batch).shape == (4, 3)


def test_distilbert_shapes_and_head_count_after_pruning(lively_bert, token_batch) -> None:
    model = lively_bert(family="distilbert", layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    prune_heads_(layer, adapter, 0.25)
    prune_ffn_(layer, adapter, 0.5)
    sa = layer.attention
    for lin in (sa.q_lin, sa.k_lin, sa.v_lin):
        assert tuple(lin.weight.shape) == (HEAD_SIZE, HIDDEN) and lin.out_features == HEAD_SIZE
    assert tuple(sa.out_lin.weight.shape) == (HIDDEN, HEAD_SIZE)
    assert sa.n_heads == 1 and adapter.attention(layer).num_heads == 1
    assert tuple(layer.ffn.lin1.weight.shape) == (FFN // 2, HIDDEN)
    assert tuple(layer.ffn.lin2.weight.shape) == (HIDDEN, FFN // 2)
    assert _logits(model, token_batch).shape == (4, 3)


def test_ratio_one_leaves_layer_untouched(lively_bert) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    query, down = layer.attention.self.query, layer.output.dense
    assert prune_heads_(layer, adapter, 1.0).tolist() == list(range(HEADS))
    assert prune_ffn_(layer, adapter, 1.0).tolist() == list(range(FFN))
    assert layer.attention.self.query is query and layer.output.dense is down


def test_explicit_scores_choose_the_kept_units(lively_bert) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    head_w = layer.attention.self.query.weight.detach().clone()
    kept = prune_heads_(layer, adapter, 0.5, scores=torch.tensor([0.0, 5.0, 1.0, 7.0]))
    assert kept.tolist() == [1, 3]
    # the surviving rows are the original rows of heads 1 and 3, in order
    expected = torch.cat([head_w[HEAD_SIZE : 2 * HEAD_SIZE], head_w[3 * HEAD_SIZE : 4 * HEAD_SIZE]])
    assert torch.equal(layer.attention.self.query.weight, expected)

    up_w = layer.intermediate.dense.weight.detach().clone()
    scores = torch.zeros(FFN)
    scores[[60, 3, 17]] = 1.0
    kept = prune_ffn_(layer, adapter, 3 / FFN, scores=scores)
    assert kept.tolist() == [3, 17, 60]
    assert torch.equal(layer.intermediate.dense.weight, up_w[[3, 17, 60]])


def test_scores_of_wrong_length_are_rejected(lively_bert) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    with pytest.raises(RuntimeError, match="head scores"):
        prune_heads_(layer, adapter, 0.5, scores=torch.ones(HEADS + 1))
    with pytest.raises(RuntimeError, match="FFN scores"):
        prune_ffn_(layer, adapter, 0.5, scores=torch.ones(3))


def test_head_magnitude_is_per_head_l1_norm(lively_bert) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    parts = adapter_for(model).attention(adapter_for(model).layers(model)[0])
    scores = head_magnitude(parts)
    assert scores.shape == (HEADS,)
    j = 2
    rows = slice(j * HEAD_SIZE, (j + 1) * HEAD_SIZE)
    manual = sum(lin.weight[rows].abs().sum() for lin in (parts.query, parts.key, parts.value))
    manual = manual + parts.out.weight[:, rows].abs().sum()
    assert scores[j].item() == pytest.approx(manual.item(), rel=1e-5)


def test_magnitude_prunes_a_silenced_head_and_neuron_first(lively_bert) -> None:
    model = lively_bert(layers=1, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    with torch.no_grad():
        layer.attention.self.value.weight[HEAD_SIZE : 2 * HEAD_SIZE] = 0.0  # head 1
        layer.attention.output.dense.weight[:, HEAD_SIZE : 2 * HEAD_SIZE] = 0.0
        layer.intermediate.dense.weight[5] = 0.0
        layer.output.dense.weight[:, 5] = 0.0
    assert head_magnitude(adapter.attention(layer)).argmin().item() == 1
    assert ffn_magnitude(adapter.ffn(layer)).argmin().item() == 5
    assert 1 not in prune_heads_(layer, adapter, 0.75).tolist()
    assert 5 not in prune_ffn_(layer, adapter, 0.9).tolist()


@pytest.mark.parametrize(
    ("n", "ratio", "k"),
    [(4, 1.0, 4), (4, 0.5, 2), (4, 0.25, 1), (4, 0.01, 1), (64, 0.75, 48), (12, 0.5, 6), (12, 0.25, 3)],
)
def test_units_to_keep_counts(n: int, ratio: float, k: int) -> None:
    kept = units_to_keep(torch.randn(n, generator=torch.Generator().manual_seed(n)), ratio)
    assert kept.numel() == k
    assert kept.tolist() == sorted(set(kept.tolist()))  # ascending, no duplicates


def test_units_to_keep_picks_the_highest_scores() -> None:
    scores = torch.tensor([0.3, 9.0, -1.0, 4.0, 2.0, 8.0])
    assert units_to_keep(scores, 0.5).tolist() == [1, 3, 5]
    assert units_to_keep(scores, 1 / 6).tolist() == [1]
