"""Structured pruning: remove whole attention heads and FFN neurons from the weight matrices.

Which heads and neurons go is decided by an importance score per unit (higher = more
important). Without scores, the weight-magnitude (L1) criterion is used. Removal is exact:
a pruned layer computes what the original computes with the removed units masked to zero
(tested in ``tests/ops/test_prune.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from autocompress.models.adapters import AttentionParts, FFNParts, ModelAdapter
from autocompress.schema.plan import CompressionPlan

__all__ = ["Importance", "head_magnitude", "ffn_magnitude", "units_to_keep", "prune_heads_", "prune_ffn_", "prune_layers_"]


@dataclass(frozen=True)
class Importance:
    """Importance scores per base-layer index: ``heads[i]`` (num_heads,), ``ffn[i]`` (intermediate,)."""

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)


def head_magnitude(parts: AttentionParts) -> torch.Tensor:
    """L1 norm of each head's Q/K/V rows and output-projection columns, shape ``(num_heads,)``."""
    h = parts.head_size
    per_row = sum(lin.weight.detach().abs().sum(dim=1) for lin in (parts.query, parts.key, parts.value))
    per_col = parts.out.weight.detach().abs().sum(dim=0)
    return (per_row + per_col).view(-1, h).sum(dim=1)


def ffn_magnitude(parts: FFNParts) -> torch.Tensor:
    """L1 norm of each neuron's input row and output column, shape ``(intermediate,)``."""
    return parts.up.weight.detach().abs().sum(dim=1) + parts.down.weight.detach().abs().sum(dim=0)


def units_to_keep(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (ascending) of the ``max(1, round(ratio * n))`` highest-scoring units."""
    n = scores.numel()
    k = max(1, min(n, round(ratio * n)))
    top = torch.topk(scores.float(), k).indices
    return torch.sort(top).values


def _expect(linear: nn.Linear, out_features: int, in_features: int, what: str) -> None:
    if (linear.out_features, linear.in_features) != (out_features, in_features) or tuple(
        linear.weight.shape
    ) != (out_features, in_features):
        raise RuntimeError(
            f"{what}: expected weight {out_features}x{in_features}, got {tuple(linear.weight.shape)}"
        )


def prune_heads_(
    layer: nn.Module, adapter: ModelAdapter, ratio: float, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the best ``ratio`` of this layer's heads; returns the kept head indices."""
    parts = adapter.attention(layer)
    h = parts.head_size
    num_heads = parts.query.out_features // h
    if scores is None:
        scores = head_magnitude(parts)
    if scores.numel() != num_heads:
        raise RuntimeError(f"head scores have {scores.numel()} entries for {num_heads} heads")
    heads = units_to_keep(scores, ratio)
    if heads.numel() == num_heads:
        return heads
    rows = (heads[:, None] * h + torch.arange(h)[None, :]).reshape(-1)
    hidden = parts.query.in_features
    new = AttentionParts(
        module=parts.module,
        query=prune_linear_layer(parts.query, rows, dim=0),
        key=prune_linear_layer(parts.key, rows, dim=0),
        value=prune_linear_layer(parts.value, rows, dim=0),
        out=prune_linear_layer(parts.out, rows, dim=1),
        head_size=h,
    )
    kept = heads.numel() * h
    for name in ("query", "key", "value"):
        _expect(getattr(new, name), kept, hidden, f"pruned {name}")
    _expect(new.out, parts.out.out_features, kept, "pruned attention output")
    adapter.set_attention_(layer, new, heads.numel())
    return heads


def prune_ffn_(
    layer: nn.Module, adapter: ModelAdapter, ratio: float, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the best ``ratio`` of this layer's FFN neurons; returns the kept neuron indices."""
    parts = adapter.ffn(layer)
    n = parts.up.out_features
    if scores is None:
        scores = ffn_magnitude(parts)
    if scores.numel() != n:
        raise RuntimeError(f"FFN scores have {scores.numel()} entries for {n} neurons")
    neurons = units_to_keep(scores, ratio)
    if neurons.numel() == n:
        return neurons
    new = FFNParts(
        up=prune_linear_layer(parts.up, neurons, dim=0),
        down=prune_linear_layer(parts.down, neurons, dim=1),
    )
    _expect(new.up, neurons.numel(), parts.up.in_features, "pruned FFN input")
    _expect(new.down, parts.down.out_features, neurons.numel(), "pruned FFN output")
    adapter.set_ffn_(layer, new)
    return neurons


def prune_layers_(model: nn.Module, plan: CompressionPlan, adapter: ModelAdapter, importance: Importance) -> None:
    """Prune the heads and FFN neurons of each of ``model``'s layers (already cut to the plan's
    depth) to the plan's ratios, keeping the units ``importance`` ranks highest (by weight
    magnitude where it has no scores for a layer)."""
    for layer, base_i in zip(adapter.layers(model), plan.kept_layers, strict=True):
        lp = plan.layers[base_i]
        if lp.heads < 1.0:
            prune_heads_(layer, adapter, lp.heads, importance.heads.get(base_i))
        if lp.ffn < 1.0:
            prune_ffn_(layer, adapter, lp.ffn, importance.ffn.get(base_i))
