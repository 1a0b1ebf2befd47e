"""What a forward pass of an encoder costs, op by op, read from the model's structure alone.

For one input shape, every Linear (by its real width after pruning and its kernel: fp32, dynamic
int8, or weight-only int8/int4 on bfloat16 activations), the attention matmuls (by the heads a
layer still has), and the memory-bound element-wise work (softmax, GELU, LayerNorm, residual
adds, embedding gathers, the activation quantisation of int8 Linears) become :class:`OpCost` records: FLOPs and bytes moved. These are
the features of the latency cost model (:mod:`autocompress.latency.predict`) and the inputs of
the roofline bound. Written by hand: FLOP counters (``torch.utils.flop_counter``) do not see the
quantised kernels and do not report bytes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from torch import nn

from autocompress.models.adapters import adapter_for

__all__ = ["OP_KINDS", "OpCost", "linear_costs", "model_costs", "totals"]

#: Kinds of op the cost model tells apart; each gets its own calibrated throughput.
OP_KINDS = ("linear_fp32", "linear_int8", "attention", "elementwise")

_F32 = 4  # bytes per fp32 value
_BF16 = 2  # bytes per bfloat16 value (a weight-only Linear's activations, scales and zeros)


@dataclass(frozen=True)
class OpCost:
    kind: str  # one of OP_KINDS
    flops: float
    bytes: float


def linear_costs(m: nn.Module, rows: int) -> list[OpCost]:
    """A Linear (fp32, dynamic int8, or weight-only int8/int4: a module with ``bits``) applied to ``rows`` vectors."""
    n_in, n_out = int(m.in_features), int(m.out_features)
    flops = 2.0 * rows * n_in * n_out
    acts = _F32 * rows * (n_in + n_out)
    if isinstance(m, nn.Linear):
        return [OpCost("linear_fp32", flops, _F32 * n_in * n_out + acts)]
    bits = getattr(m, "bits", None)
    if bits in (8, 4):
        return _weight_only_costs(m, rows, n_in, n_out, bits)
    # dynamic int8: the fp32 input is quantised on the fly (read + write int8), then an int8 GEMM
    return [
        OpCost("elementwise", 2.0 * rows * n_in, (_F32 + 1) * rows * n_in),
        OpCost("linear_int8", flops, n_in * n_out + rows * n_in + _F32 * rows * n_out),
    ]


def _weight_only_costs(m: nn.Module, rows: int, n_in: int, n_out: int, bits: int) -> list[OpCost]:
    """A weight-only Linear: the fp32 input rounded to bfloat16, then a kernel that reads the weight
    as stored (N·K int8 bytes, or N·K/2 for 4-bit codes, with their bfloat16 scales: one per output
    channel at 8 bits, a scale and a zero per group at 4) and computes on bfloat16 activations.
    Its multiply-adds count as float ones (the kernels dequantise to compute), so the cost model's
    fp32 throughput prices them and their bytes, not their width, make them cheaper."""
    if bits == 8:
        weight = n_in * n_out + _BF16 * n_out
    else:
        groups = -(-n_in // int(getattr(m, "group_size", 32)))
        weight = n_in * n_out / 2 + 2 * _BF16 * groups * n_out
    return [
        OpCost("elementwise", 1.0 * rows * n_in, (_F32 + _BF16) * rows * n_in),
        OpCost("linear_fp32", 2.0 * rows * n_in * n_out, weight + _BF16 * rows * (n_in + n_out)),
    ]


def _is_linear(m: nn.Module | None) -> bool:
    return m is not None and hasattr(m, "in_features") and hasattr(m, "out_features")


def model_costs(model: nn.Module, batch_size: int, seq_len: int) -> list[OpCost]:
    """The ops of one forward pass of ``model`` on ``batch_size`` sequences of ``seq_len`` tokens."""
    adapter = adapter_for(model)
    tokens = batch_size * seq_len
    hidden = adapter.info(model).hidden_size
    ops: list[OpCost] = [
        # word + position + type gathers, their sum and a LayerNorm
        OpCost("elementwise", 8.0 * tokens * hidden, _F32 * tokens * hidden * 6),
    ]
    for layer in adapter.layers(model):
        attn = adapter.attention(layer)
        heads = attn.num_heads
        hd = attn.head_size
        for lin in (attn.query, attn.key, attn.value, attn.out):
            ops += linear_costs(lin, tokens)
        scores = batch_size * heads * seq_len * seq_len
        ops.append(OpCost("attention", 4.0 * scores * hd, _F32 * (3 * tokens * heads * hd + 2 * scores)))
        ops.append(OpCost("elementwise", 5.0 * scores, _F32 * 2 * scores))  # masked softmax
        ffn = adapter.ffn(layer)
        ops += linear_costs(ffn.up, tokens)
        ops.append(OpCost("elementwise", 8.0 * tokens * ffn.up.out_features, _F32 * 2 * tokens * ffn.up.out_features))
        ops += linear_costs(ffn.down, tokens)
        for _ in range(2):  # residual add + LayerNorm after attention and after the FFN
            ops.append(OpCost("elementwise", 10.0 * tokens * hidden, _F32 * 5 * tokens * hidden))
    head_names = adapter.head_modules(model)
    head = [
        m for name, m in model.named_modules()
        if _is_linear(m) and any(name == h or name.startswith(h + ".") for h in head_names)
    ]
    for m in head:  # pooler and classifier (DistilBERT: pre_classifier too) act on one vector per sequence
        ops += linear_costs(m, batch_size)
    return ops


def totals(ops: list[OpCost]) -> dict[str, float]:
    """FLOPs, bytes and op count per op kind, and the op count: ``{"flops:attention": …, "ops:…": …, "ops": n}``."""
    out: dict[str, float] = defaultdict(float)
    for op in ops:
        out[f"flops:{op.kind}"] += op.flops
        out[f"bytes:{op.kind}"] += op.bytes
        out[f"ops:{op.kind}"] += 1.0
    out["ops"] = float(len(ops))
    return dict(out)
