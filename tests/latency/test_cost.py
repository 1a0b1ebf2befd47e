"""The structural cost model: FLOPs and bytes follow what a plan removes, pruned, dropped or quantised."""

from __future__ import annotations

import pytest
from conftest import tiny_bert
from torch import nn

from autocompress.latency.cost import OP_KINDS, linear_costs, model_costs, totals
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan
from autocompress.ops.quantize import quantize_int8_

# tiny_bert(): 4 layers, hidden 32, intermediate 64, 4 heads of 8, 3 labels
LAYERS, HIDDEN, FFN, LABELS = 4, 32, 64, 3


def _encoder_linear_flops(tokens: int, layers: int = LAYERS, heads: float = 1.0, ffn: float = 1.0) -> float:
    """By hand: Q, K, V, out (hidden × kept heads' width) and FFN up/down (hidden × kept neurons)."""
    attn = 4 * 2 * tokens * HIDDEN * (HIDDEN * heads)
    mlp = 2 * 2 * tokens * HIDDEN * (FFN * ffn)
    return layers * (attn + mlp)


def _head_flops(batch: int) -> float:
    return 2 * batch * HIDDEN * HIDDEN + 2 * batch * HIDDEN * LABELS  # pooler + classifier


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return tiny_bert()


def _totals(model: nn.Module, b: int = 1, s: int = 16) -> dict[str, float]:
    return totals(model_costs(model, b, s))


def test_one_fp32_linear_costs_two_flops_per_multiply_add_and_its_weights_and_activations() -> None:
    (op,) = linear_costs(nn.Linear(32, 64), rows=16)
    assert op.kind == "linear_fp32"
    assert op.flops == 2 * 16 * 32 * 64 == 65_536
    assert op.bytes == 4 * 32 * 64 + 4 * 16 * (32 + 64)  # fp32 weights + input and output rows


def test_one_int8_linear_reads_int8_weights_and_quantises_its_input() -> None:
    holder = nn.Sequential(nn.Linear(32, 64))
    quantize_int8_(holder)
    quant, gemm = linear_costs(holder[0], rows=16)
    assert (quant.kind, gemm.kind) == ("elementwise", "linear_int8")
    assert gemm.flops == 65_536  # same arithmetic as fp32, on another kernel
    assert gemm.bytes == 32 * 64 + 16 * 32 + 4 * 16 * 64  # int8 weights and input, fp32 output
    assert quant.flops == 2 * 16 * 32


def test_teacher_linear_flops_match_a_hand_count(teacher) -> None:
    t = _totals(teacher, b=2, s=16)
    assert t["flops:linear_fp32"] == _encoder_linear_flops(tokens=32) + _head_flops(batch=2)
    assert "flops:linear_int8" not in t
    # attention: QK^T and AV, 2 FLOPs per multiply-add, per head: 4 · b · heads · s² · head_size
    assert t["flops:attention"] == LAYERS * 4 * 2 * 4 * 16 * 16 * 8
    assert set(k.split(":")[1] for k in t if ":" in k) <= set(OP_KINDS)
    assert t["ops"] == len(model_costs(teacher, 2, 16))


def test_pruning_half_the_heads_halves_attention_and_its_projections(teacher) -> None:
    full = _totals(teacher)
    half = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, heads=0.5)))
    assert half["flops:attention"] == full["flops:attention"] / 2
    assert half["flops:linear_fp32"] == _encoder_linear_flops(16, heads=0.5) + _head_flops(1)
    assert half["bytes:attention"] < full["bytes:attention"]


def test_pruning_half_the_ffn_halves_only_the_ffn_linears(teacher) -> None:
    full = _totals(teacher)
    half = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, ffn=0.5)))
    assert half["flops:linear_fp32"] == _encoder_linear_flops(16, ffn=0.5) + _head_flops(1)
    assert half["flops:attention"] == full["flops:attention"]
    assert half["bytes:elementwise"] < full["bytes:elementwise"]  # GELU runs on fewer neurons


def test_dropping_layers_reduces_encoder_flops_in_proportion(teacher) -> None:
    full = _totals(teacher)
    half = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, keep=[0, 2])))
    one = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, keep=[3])))
    head = _head_flops(1)
    assert half["flops:linear_fp32"] - head == (full["flops:linear_fp32"] - head) / 2
    assert one["flops:linear_fp32"] - head == (full["flops:linear_fp32"] - head) / 4
    assert half["flops:attention"] == full["flops:attention"] / 2
    assert one["ops"] < half["ops"] < full["ops"]


def test_int8_layers_move_flops_from_fp32_to_int8_kernels(teacher) -> None:
    full = _totals(teacher)
    q = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, bits=8)))
    assert q["flops:linear_int8"] == _encoder_linear_flops(16)
    assert q["flops:linear_fp32"] == _head_flops(1)  # the head stays float
    assert q["flops:linear_int8"] + q["flops:linear_fp32"] == full["flops:linear_fp32"]
    assert q["bytes:linear_int8"] < full["bytes:linear_fp32"]  # a quarter of the weight bytes
    assert q["bytes:elementwise"] > full["bytes:elementwise"]  # activations are quantised on the fly
    assert q["ops"] > full["ops"]


def test_int8_in_some_layers_and_in_the_head(teacher) -> None:
    plan = CompressionPlan.from_dict({**CompressionPlan.uniform(LAYERS, bits=8).to_dict(), "head_bits": 8})
    q = _totals(apply_plan(teacher, plan))
    assert q.get("flops:linear_fp32", 0.0) == 0.0
    assert q["flops:linear_int8"] == _encoder_linear_flops(16) + _head_flops(1)
    layers = [{"keep": True, "heads": 1.0, "ffn": 1.0, "bits": 8 if i < 1 else 32} for i in range(LAYERS)]
    mixed = _totals(apply_plan(teacher, CompressionPlan.from_dict({"layers": layers})))
    assert mixed["flops:linear_int8"] == _encoder_linear_flops(16, layers=1)


def test_simulated_bit_widths_cost_as_much_as_fp32(teacher) -> None:
    # 4-bit weights are only rounded (kept in fp32 Linears): no speed can be predicted from them
    four = _totals(apply_plan(teacher, CompressionPlan.uniform(LAYERS, bits=4)))
    assert four == _totals(teacher)


def test_attention_grows_with_the_square_of_the_sequence_and_linears_with_tokens(teacher) -> None:
    short, long = _totals(teacher, b=1, s=16), _totals(teacher, b=1, s=32)
    assert long["flops:attention"] == 4 * short["flops:attention"]
    assert long["flops:linear_fp32"] - _head_flops(1) == 2 * (short["flops:linear_fp32"] - _head_flops(1))
    wide = _totals(teacher, b=4, s=16)
    assert wide["flops:attention"] == 4 * short["flops:attention"]
    assert wide["flops:linear_fp32"] == 4 * short["flops:linear_fp32"]  # the head runs once per sequence too

