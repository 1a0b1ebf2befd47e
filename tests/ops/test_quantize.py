"""Bit-widths: real int8 dynamic quantisation and simulated (fake-quantised) lower widths."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.ops import apply_plan, simulated_widths
from autocompress.ops.quantize import Int8Embedding, fake_quantize_, fake_quantize_weight, quantize_int8_


def _float_linears(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if type(m) is nn.Linear]


def _int8_linears(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, DynamicInt8Linear)]


def _distinct_per_row(weight: torch.Tensor) -> int:
    return max(len(torch.unique(row)) for row in weight.detach())


# ------------------------------------------------------------------------------------- int8
def test_quantize_int8_replaces_every_linear_of_a_layer(lively_bert) -> None:
    model = lively_bert(layers=1)
    layer = adapter_for(model).layers(model)[0]
    assert len(_float_linears(layer)) == 6
    quantize_int8_(layer)
    assert _float_linears(layer) == []
    assert sorted(_int8_linears(layer)) == sorted(
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ]
    )


def test_int8_linear_output_is_close_to_float() -> None:
    torch.manual_seed(0)
    container = nn.Sequential(nn.Linear(64, 32))
    x = torch.randn(16, 64)
    with torch.no_grad():
        reference = container(x)
        quantize_int8_(container)
        got = container(x)
    assert isinstance(container[0], DynamicInt8Linear)
    assert (got - reference).norm() / reference.norm() < 0.02


def test_int8_plan_quantises_exactly_the_int8_layers(lively_bert) -> None:
    model = lively_bert(layers=3)
    plan = CompressionPlan(layers=(LayerPlan(bits=8), LayerPlan(keep=False, bits=8), LayerPlan(bits=32)))
    student = apply_plan(model, plan)
    layers = adapter_for(student).layers(student)
    assert len(_int8_linears(layers[0])) == 6 and _float_linears(layers[0]) == []
    assert _int8_linears(layers[1]) == [] and len(_float_linears(layers[1])) == 6
    # head_bits=32: pooler and classifier stay float
    assert type(student.classifier) is nn.Linear and type(student.bert.pooler.dense) is nn.Linear


def test_int8_model_logits_stay_close_to_float(lively_bert) -> None:
    model = lively_bert(layers=4)
    ids = torch.randint(5, 31, (64, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        int8 = apply_plan(model, CompressionPlan.uniform(4, bits=8))(input_ids=ids).logits
        two_bit = apply_plan(model, CompressionPlan.uniform(4, bits=2))(input_ids=ids).logits
    err8 = (int8 - reference).abs().max().item()
    err2 = (two_bit - reference).abs().max().item()
    assert err8 < 0.1 * reference.abs().max().item()
    assert err8 < err2 / 4  # real int8 is far closer than a crude 2-bit rounding
    assert (int8.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


def test_head_bits_8_quantises_pooler_and_classifier(lively_bert) -> None:
    model = lively_bert(layers=2)
    student = apply_plan(model, CompressionPlan(layers=(LayerPlan(), LayerPlan()), head_bits=8))
    assert isinstance(student.bert.pooler.dense, DynamicInt8Linear)
    assert isinstance(student.classifier, DynamicInt8Linear)


# ------------------------------------------------------------------------------ simulated bits
@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_fake_quantize_weight_has_at_most_2_pow_bits_values_per_row(bits: int) -> None:
    weight = torch.randn(16, 300, generator=torch.Generator().manual_seed(bits))
    q = fake_quantize_weight(weight, bits)
    assert q.shape == weight.shape
    assert _distinct_per_row(q) <= 2**bits
    # enough input values that all levels are actually used at low widths
    if bits <= 4:
        assert _distinct_per_row(q) == 2**bits


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_fake_quantize_weight_error_is_at_most_half_a_step(bits: int) -> None:
    weight = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    q = fake_quantize_weight(weight, bits)
    lo, hi = weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True)
    step = (hi - lo) / (2**bits - 1)
    assert ((q - weight).abs() <= step / 2 + 1e-6).all()
    # min–max: each row's extremes are representable
    assert torch.allclose(q.amin(dim=1, keepdim=True), lo, atol=1e-6)
    assert torch.allclose(q.amax(dim=1, keepdim=True), hi, atol=1e-5)


def test_fake_quantize_weight_keeps_a_constant_row_finite() -> None:
    weight = torch.full((2, 5), 0.3)
    q = fake_quantize_weight(weight, 4)
    assert torch.isfinite(q).all()
    assert torch.allclose(q, weight)


def test_fake_quantize_rounds_linear_and_embedding_weights_only(lively_bert) -> None:
    model = lively_bert(layers=1)
    emb = model.bert.embeddings
    ln_before = emb.LayerNorm.weight.detach().clone()
    fake_quantize_(emb, 4)
    assert _distinct_per_row(emb.word_embeddings.weight) <= 16
    assert _distinct_per_row(emb.position_embeddings.weight) <= 16
    assert torch.equal(emb.LayerNorm.weight, ln_before)

    layer = adapter_for(model).layers(model)[0]
    bias_before = layer.intermediate.dense.bias.detach().clone()
    fake_quantize_(layer, 2)
    for name in _float_linears(layer):
        assert _distinct_per_row(layer.get_submodule(name).weight) <= 4, name
    assert torch.equal(layer.intermediate.dense.bias, bias_before)


def test_low_bit_plan_fake_quantises_kept_layers_and_reports_them(lively_bert) -> None:
    model = lively_bert(layers=3)
    plan = CompressionPlan(
        layers=(LayerPlan(bits=4), LayerPlan(keep=False), LayerPlan(bits=2)), embedding_bits=8
    )
    student = apply_plan(model, plan)
    layers = adapter_for(student).layers(student)
    # simulated widths stay float Linear modules (no speed claim) with rounded weights
    assert _int8_linears(student) == []
    assert _distinct_per_row(layers[0].output.dense.weight) <= 16
    assert _distinct_per_row(layers[1].output.dense.weight) <= 4
    assert isinstance(student.bert.embeddings.word_embeddings, Int8Embedding)  # 8-bit embeddings are real
    assert simulated_widths(student, plan) == {
        "bert.encoder.layer.0": 4,
        "bert.encoder.layer.1": 2,
    }
    int8_plan = CompressionPlan.uniform(3, bits=8)
    assert simulated_widths(apply_plan(model, int8_plan), int8_plan) == {}  # int8 is real, not simulated


def test_fewer_bits_move_the_logits_more(lively_bert) -> None:
    model = lively_bert(layers=2)
    ids = torch.randint(5, 31, (16, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        errors = [
            (apply_plan(model, CompressionPlan.uniform(2, bits=b))(input_ids=ids).logits - reference).abs().mean()
            for b in (8, 4, 2)
        ]
    assert errors[0] < errors[1] < errors[2]


def test_int8_embeddings_store_codes_and_give_the_rounded_rows_exactly(lively_bert) -> None:
    from autocompress.ops.size import model_size
    from autocompress.ops.quantize import fake_quantize_, quantize_embeddings_int8_
    from autocompress.ops.vocab import choose_vocabulary, prune_vocabulary_

    model = lively_bert(layers=2).eval()
    simulated, real = copy.deepcopy(model), copy.deepcopy(model)
    fake_quantize_(simulated.bert.embeddings, 8)  # the float rows an 8-bit table holds
    quantize_embeddings_int8_(real.bert.embeddings)
    table = real.bert.embeddings.word_embeddings
    assert isinstance(table, Int8Embedding) and table.codes.dtype == torch.uint8
    assert isinstance(real.bert.embeddings.position_embeddings, Int8Embedding)
    ids = torch.randint(0, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(real(input_ids=ids).logits, simulated(input_ids=ids).logits)
    tables = [m for m in model.bert.embeddings.modules() if isinstance(m, nn.Embedding)]
    expected = sum(t.weight.shape[0] * (3 * t.weight.shape[1] - 8) for t in tables)  # 1 byte a value, not 4; 8 a row
    saved = model_size(model).serialized_bytes - model_size(real).serialized_bytes
    assert 0.8 * expected < saved <= expected  # less a few hundred bytes of file records per new tensor
    # a kept vocabulary's table keeps its lookup from full-vocabulary ids
    kept = copy.deepcopy(model)
    prune_vocabulary_(kept, choose_vocabulary(torch.bincount(ids.flatten(), minlength=model.config.vocab_size), 1, [0], 1))
    both = copy.deepcopy(kept)
    quantize_embeddings_int8_(both.bert.embeddings)
    fake_quantize_(kept.bert.embeddings, 8)
    with torch.inference_mode():
        assert torch.equal(both(input_ids=ids).logits, kept(input_ids=ids).logits)


# ----------------------------------------------------------------------- GPT-2's Conv1D projections
def _conv1d_block() -> nn.Sequential:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(24, 40)  # weight (in, out) = (40, 24)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.2)
        conv.bias.normal_(0.0, 0.1)
    return nn.Sequential(conv)


def test_int8_quantises_conv1d_projections_as_the_linears_they_are() -> None:
    block = _conv1d_block()
    x = torch.randn(5, 40)
    with torch.no_grad():
        reference = block(x)
        quantize_int8_(block)
        got = block(x)
    assert isinstance(block[0], DynamicInt8Linear)
    assert (got - reference).norm() / reference.norm() < 0.02


def test_simulated_bits_round_a_conv1d_per_output_channel() -> None:
    block = _conv1d_block()
    weight = block[0].weight.detach().clone()
    fake_quantize_(block, 2)
    assert torch.equal(block[0].weight, fake_quantize_weight(weight.T, 2).T)  # an output channel is a column
    assert _distinct_per_row(block[0].weight.T) <= 4
