"""apply_plan: depth → prune → quantise on a copy; the result is what the plan says, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.ops import Importance, Selection, apply_plan, apply_plan_
from autocompress.ops.prune import ffn_magnitude, head_magnitude, units_to_keep

HEADS, HIDDEN, FFN = 4, 32, 64
HEAD_SIZE = HIDDEN // HEADS

MIXED = CompressionPlan(
    layers=(
        LayerPlan(heads=0.5, ffn=0.25, bits=8),
        LayerPlan(keep=False),
        LayerPlan(heads=0.75, ffn=1.0, bits=32),
        LayerPlan(heads=1.0, ffn=0.5, bits=4),
    )
)


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _unit_masks(layer: nn.Module, adapter, heads: float, ffn: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit 0/1 masks over heads and FFN neurons, from the L1 (magnitude) importance."""
    head_mask = torch.zeros(HEADS)
    head_mask[units_to_keep(head_magnitude(adapter.attention(layer)), heads)] = 1.0
    ffn_mask = torch.zeros(FFN)
    ffn_mask[units_to_keep(ffn_magnitude(adapter.ffn(layer)), ffn)] = 1.0
    return head_mask, ffn_mask


@torch.no_grad()
def _apply_masks_(layer: nn.Module, adapter, head_mask: torch.Tensor, ffn_mask: torch.Tensor) -> None:
    """W ⊙ M: zero every weight and bias that belongs to a masked head or neuron."""
    att = adapter.attention(layer)
    rows = head_mask.repeat_interleave(HEAD_SIZE)
    for lin in (att.query, att.key, att.value):
        lin.weight.mul_(rows[:, None])
        lin.bias.mul_(rows)
    att.out.weight.mul_(rows[None, :])
    f = adapter.ffn(layer)
    f.up.weight.mul_(ffn_mask[:, None])
    f.up.bias.mul_(ffn_mask)
    f.down.weight.mul_(ffn_mask[None, :])


def test_apply_plan_leaves_the_original_model_unmodified(lively_bert, token_batch) -> None:
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    before_state = _state(model)
    before_logits = _logits(model, token_batch)
    student = apply_plan(model, MIXED)
    assert student is not model
    after = model.state_dict()
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], before_state[k]) for k in before_state)
    assert model.config.num_hidden_layers == 4
    assert len(adapter_for(model).layers(model)) == 4
    assert all(layer.attention.self.num_attention_heads == HEADS for layer in adapter_for(model).layers(model))
    assert not any(isinstance(m, DynamicInt8Linear) for m in model.modules())
    assert torch.equal(_logits(model, token_batch), before_logits)


def test_apply_plan_in_place_changes_the_model(lively_bert) -> None:
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    assert apply_plan_(model, CompressionPlan.uniform(4, heads=0.5, keep=[0, 3])) is model  # no exits: no wrapper
    assert len(adapter_for(model).layers(model)) == 2
    assert adapter_for(model).layers(model)[0].attention.self.num_attention_heads == 2


def test_plan_for_another_depth_is_rejected_without_touching_the_model(lively_bert) -> None:
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    before = _state(model)
    for n in (3, 6):
        with pytest.raises(PlanError, match=f"{n} layers.*4"):
            apply_plan(model, CompressionPlan.uniform(n))
        with pytest.raises(PlanError):
            apply_plan_(model, CompressionPlan.uniform(n))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_compression_removes_parameters(lively_bert) -> None:
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    full = _num_params(model)
    pruned = apply_plan(model, CompressionPlan.uniform(4, heads=0.5, ffn=0.5))
    shallow = apply_plan(model, CompressionPlan.uniform(4, keep=[0, 2]))
    both = apply_plan(model, CompressionPlan.uniform(4, heads=0.5, ffn=0.5, keep=[0, 2]))
    assert _num_params(pruned) < full and _num_params(shallow) < full
    assert _num_params(both) < min(_num_params(pruned), _num_params(shallow))
    # exactly: half of Q/K/V rows (+bias), half the out columns, half the FFN rows (+bias) and columns
    attention_removed = 3 * (HIDDEN // 2) * (HIDDEN + 1) + HIDDEN * (HIDDEN // 2)
    ffn_removed = (FFN // 2) * (HIDDEN + 1) + HIDDEN * (FFN // 2)
    per_layer_removed = attention_removed + ffn_removed
    assert full - _num_params(pruned) == 4 * per_layer_removed


def test_uncompressed_plan_computes_what_the_model_computes(lively_bert, token_batch) -> None:
    model = lively_bert(layers=3, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    student = apply_plan(model, CompressionPlan.uniform(3))
    assert torch.equal(_logits(student, token_batch), _logits(model, token_batch))


def test_explicit_l1_mask_then_remove_gives_identical_outputs(lively_bert, token_batch) -> None:
    """The W ⊙ M formulation: masking every weight of the pruned units equals removing them."""
    model = lively_bert(layers=3, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    ratios = [(0.5, 0.5), (0.25, 0.75), (0.75, 0.25)]
    masked = copy.deepcopy(model)
    head_masks: dict[int, torch.Tensor] = {}
    ffn_masks: dict[int, torch.Tensor] = {}
    for i, ((h, f), layer) in enumerate(zip(ratios, adapter.layers(masked), strict=True)):
        head_masks[i], ffn_masks[i] = _unit_masks(layer, adapter, h, f)
        _apply_masks_(layer, adapter, head_masks[i], ffn_masks[i])
    importance = Importance(heads=head_masks, ffn=ffn_masks)  # the masks themselves as scores
    plan = CompressionPlan(layers=tuple(LayerPlan(heads=h, ffn=f) for h, f in ratios))

    reference = _logits(masked, token_batch)
    removed_by_mask = apply_plan(model, plan, Selection(importance=importance))
    removed_by_magnitude = apply_plan(model, plan)  # default importance is the same L1 criterion
    assert torch.allclose(_logits(removed_by_mask, token_batch), reference, atol=1e-5)
    assert torch.allclose(_logits(removed_by_magnitude, token_batch), reference, atol=1e-5)
    assert not torch.allclose(reference, _logits(model, token_batch), atol=1e-3)


def test_importance_is_looked_up_by_base_layer_index(lively_bert, token_batch) -> None:
    """With layers dropped, scores for base layer 2 must prune the student's second layer."""
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    adapter = adapter_for(model)
    plan = CompressionPlan(
        layers=(LayerPlan(), LayerPlan(keep=False), LayerPlan(heads=0.25, ffn=0.5), LayerPlan(keep=False))
    )
    head_scores = torch.tensor([0.0, 0.0, 1.0, 0.0])  # keep only head 2 (not the magnitude choice)
    ffn_scores = torch.arange(FFN, dtype=torch.float).flip(0)  # keep the first half
    student = apply_plan(model, plan, Selection(importance=Importance(heads={2: head_scores}, ffn={2: ffn_scores})))

    reference = copy.deepcopy(model)
    layers = adapter.layers(reference)
    _apply_masks_(layers[2], adapter, head_scores, (ffn_scores >= FFN // 2).float())
    adapter.set_layers_(reference, [layers[0], layers[2]])
    assert torch.allclose(_logits(student, token_batch), _logits(reference, token_batch), atol=1e-5)
    kept_query = adapter.layers(student)[1].attention.self.query.weight
    base_query = model.bert.encoder.layer[2].attention.self.query.weight
    assert torch.equal(kept_query, base_query[2 * HEAD_SIZE : 3 * HEAD_SIZE])


def test_same_plan_rebuilds_the_same_model(lively_bert, token_batch) -> None:
    """A plan stored with a trial is enough to rebuild that trial's model."""
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    again = CompressionPlan.from_dict(MIXED.to_dict())
    assert torch.equal(_logits(apply_plan(model, MIXED), token_batch), _logits(apply_plan(model, again), token_batch))


def test_mixed_plan_has_the_planned_structure(lively_bert, token_batch) -> None:
    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    student = apply_plan(model, MIXED)
    layers = adapter_for(student).layers(student)
    assert len(layers) == 3 and student.config.num_hidden_layers == 3
    assert [layer.attention.self.num_attention_heads for layer in layers] == [2, 3, 4]
    assert [layer.intermediate.dense.out_features for layer in layers] == [16, 64, 32]
    assert isinstance(layers[0].output.dense, DynamicInt8Linear)  # int8 layer
    assert type(layers[1].output.dense) is nn.Linear and type(layers[2].output.dense) is nn.Linear
    logits = _logits(student, token_batch)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


def test_one_call_applies_every_setting_that_needs_no_training(lively_bert, token_batch) -> None:
    """Depth, heads/FFN, sharing, the kept vocabulary, exit heads and bit-widths, from one plan in one call."""
    from autocompress.ops.exits import EarlyExit, static_part
    from autocompress.ops.quantize import Int8Embedding
    from autocompress.ops.vocab import KeptVocabulary, choose_vocabulary

    model = lively_bert(layers=4, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    vocab = model.config.vocab_size
    plan = CompressionPlan.from_dict({
        "layers": [{"keep": True, "heads": 0.5, "ffn": 0.5, "bits": 8}, {"keep": False},
                   {"keep": True, "heads": 0.5, "ffn": 0.5, "bits": 8}, {"keep": True, "bits": 32}],
        "share": [[0, 2]], "vocab_min_count": 1, "embedding_bits": 8, "head_bits": 8,
        "exits": {"after": [0], "threshold": 0.9, "pooling": "mean"},
    })
    counts = torch.zeros(vocab, dtype=torch.long)
    counts[: vocab // 2] = 1  # the first half of the ids occur in the (pretend) corpus
    choice = choose_vocabulary(counts, 1, always=[0], fallback=1)

    out = apply_plan(model, plan, Selection(vocabulary=choice))

    assert isinstance(out, EarlyExit) and out.positions == [0]
    student = static_part(out)
    layers = adapter_for(student).layers(student)
    assert len(layers) == 3 and layers[0] is layers[1]  # base layers 0 and 2 run one module
    assert adapter_for(student).attention(layers[2]).query.out_features == HIDDEN  # layer 3 untouched
    table = adapter_for(student).embeddings(student).word_embeddings
    assert isinstance(table, (KeptVocabulary, Int8Embedding)) and table.num_embeddings == vocab // 2
    assert any(isinstance(m, DynamicInt8Linear) for m in layers[0].modules())
    assert not any(isinstance(m, DynamicInt8Linear) for m in layers[2].modules())
    with torch.no_grad():
        assert out(**token_batch).logits.shape == (token_batch["input_ids"].shape[0], model.config.num_labels)


def test_a_kept_vocabulary_without_a_choice_is_refused_in_words(lively_bert) -> None:
    model = lively_bert(layers=2, heads=HEADS, hidden=HIDDEN, ffn=FFN)
    plan = CompressionPlan.from_dict({"layers": [{}, {}], "vocab_min_count": 2})
    with pytest.raises(PlanError, match="no vocabulary choice"):
        apply_plan(model, plan)
