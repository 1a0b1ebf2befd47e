"""Structured pruning: remove whole attention heads and FFN neurons from the weight matrices.

Which heads and neurons go is decided by an importance score per unit (higher = more
important). Without scores, the weight-magnitude (L1) criterion is used. Removal is exact:
a pruned layer computes what the original computes with the removed units masked to zero
(tested in ``tests/ops/test_prune.py`` and ``tests/ops/test_prune_decoders.py``).

Under grouped-query attention (``H`` query heads reading ``G`` key/value heads) a layer keeps
whole groups with the same number of query heads in each (:mod:`autocompress.models.gqa`): the
groups whose query heads score highest together, and within each the best query heads. Where
every head has its own keys and values (``H == G``) the head ratio alone decides.

The selection is here; the slicing is the family adapter's (``keep_heads_``, ``keep_neurons_``),
since it depends on how the family stores its projections. Shapes are checked after each slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autocompress.models.adapters import AttentionParts, FFNParts, ModelAdapter, WeightOf
from autocompress.models.gqa import attention_shape
from autocompress.schema.plan import CompressionPlan

__all__ = [
    "Importance",
    "head_magnitude",
    "head_scores",
    "ffn_magnitude",
    "ffn_scores",
    "units_to_keep",
    "heads_to_keep",
    "prune_heads_",
    "prune_ffn_",
    "prune_layers_",
]


@dataclass(frozen=True)
class Importance:
    """Importance scores per base-layer index: ``heads[i]`` (query heads,), ``ffn[i]`` (intermediate,)."""

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)


def _abs_weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().abs()


def head_scores(parts: AttentionParts, of: WeightOf) -> torch.Tensor:
    """Per query head, shape ``(num_heads,)``: the sum of ``of`` (a non-negative, weight-shaped
    score) over the head's Q rows and output-projection columns, plus its group's K and V rows
    shared equally among the group's query heads."""
    q, k, v, o = parts.matrices(of)
    d = parts.head_size
    num_heads, groups = q.shape[0] // d, k.shape[0] // d
    if groups < 1 or num_heads % groups:
        raise RuntimeError(f"{num_heads} query heads cannot read {groups} key/value heads")
    per = num_heads // groups

    def spread(m: torch.Tensor) -> torch.Tensor:  # a group's rows, each of its query heads taking 1/per
        rows = m.sum(dim=1)
        return rows if per == 1 else (rows.view(groups, 1, d) / per).expand(groups, per, d).reshape(-1)

    rows = q.sum(dim=1) + spread(k) + spread(v)
    return (rows + o.sum(dim=0)).view(num_heads, d).sum(dim=1)


def head_magnitude(parts: AttentionParts) -> torch.Tensor:
    """L1 norm of each query head's Q rows and output-projection columns, plus its share of its
    group's K/V rows (all of them when every head has its own), shape ``(num_heads,)``."""
    return head_scores(parts, _abs_weight)


def ffn_scores(parts: FFNParts, of: WeightOf) -> torch.Tensor:
    """Per neuron, shape ``(intermediate,)``: the sum of ``of`` over its input row(s) (``up``, and
    ``gate`` when gated) and its output column."""
    up, gate, down = parts.matrices(of)
    rows = up.sum(dim=1)
    if gate is not None:
        rows = rows + gate.sum(dim=1)
    return rows + down.sum(dim=0)


def ffn_magnitude(parts: FFNParts) -> torch.Tensor:
    """L1 norm of each neuron's input row(s) and output column, shape ``(intermediate,)``."""
    return ffn_scores(parts, _abs_weight)


def units_to_keep(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (ascending) of the ``max(1, round(ratio * n))`` highest-scoring units."""
    n = scores.numel()
    k = max(1, min(n, round(ratio * n)))
    top = torch.topk(scores.float(), k).indices
    return torch.sort(top).values


def heads_to_keep(scores: torch.Tensor, num_kv_heads: int, heads: float, kv: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query heads, key/value heads)`` to keep (ascending indices) for the fractions ``heads`` and
    ``kv``, given one score per query head: the groups whose query heads score highest together,
    and within each kept group its best query heads (as many in each). With one key/value head
    per query head they are the same indices, the best ``heads`` of them."""
    num_heads = scores.numel()
    groups, per = attention_shape(num_heads, num_kv_heads, heads, kv)
    if num_heads == num_kv_heads:
        kept = units_to_keep(scores, heads)
        return kept, kept
    by_group = scores.float().view(num_kv_heads, num_heads // num_kv_heads)
    kept_groups = torch.sort(torch.topk(by_group.sum(dim=1), groups).indices).values
    within = torch.sort(torch.topk(by_group[kept_groups], per, dim=1).indices, dim=1).values
    return (kept_groups[:, None] * by_group.shape[1] + within).reshape(-1), kept_groups


def _expect(matrix: torch.Tensor, shape: tuple[int, int], what: str) -> None:
    if tuple(matrix.shape) != shape:
        raise RuntimeError(f"{what}: expected weight {shape[0]}x{shape[1]}, got {tuple(matrix.shape)}")


def prune_heads_(
    layer: nn.Module, adapter: ModelAdapter, ratio: float, scores: torch.Tensor | None = None, *, kv: float = 1.0
) -> torch.Tensor:
    """Keep the best ``ratio`` of this layer's query heads and (grouped-query attention) ``kv`` of
    its key/value groups, as :func:`heads_to_keep` picks them; returns the kept query head indices."""
    parts = adapter.attention(layer)
    num_heads, num_kv = parts.num_heads, parts.num_kv_heads
    if scores is None:
        scores = head_magnitude(parts)
    if scores.numel() != num_heads:
        raise RuntimeError(f"head scores have {scores.numel()} entries for {num_heads} heads")
    heads, groups = heads_to_keep(scores, num_kv, ratio, kv)
    if heads.numel() == num_heads and groups.numel() == num_kv:
        return heads
    q, _, _, o = parts.matrices()
    hidden, out = q.shape[1], o.shape[0]
    adapter.keep_heads_(layer, heads, groups)

    new = adapter.attention(layer)
    d = new.head_size
    q, k, v, o = new.matrices()
    _expect(q, (heads.numel() * d, hidden), "pruned query")
    _expect(k, (groups.numel() * d, hidden), "pruned key")
    _expect(v, (groups.numel() * d, hidden), "pruned value")
    _expect(o, (out, heads.numel() * d), "pruned attention output")
    if (new.num_heads, new.num_kv_heads) != (heads.numel(), groups.numel()):
        raise RuntimeError(f"pruned attention reports {new.num_heads} query / {new.num_kv_heads} key-value heads, "
                           f"expected {heads.numel()} / {groups.numel()}")
    return heads


def prune_ffn_(
    layer: nn.Module, adapter: ModelAdapter, ratio: float, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the best ``ratio`` of this layer's FFN neurons; returns the kept neuron indices."""
    parts = adapter.ffn(layer)
    n = parts.width
    if scores is None:
        scores = ffn_magnitude(parts)
    if scores.numel() != n:
        raise RuntimeError(f"FFN scores have {scores.numel()} entries for {n} neurons")
    neurons = units_to_keep(scores, ratio)
    if neurons.numel() == n:
        return neurons
    up, gate, down = parts.matrices()
    hidden, out = up.shape[1], down.shape[0]
    adapter.keep_neurons_(layer, neurons)

    new = adapter.ffn(layer)
    up, gate, down = new.matrices()
    kept = neurons.numel()
    _expect(up, (kept, hidden), "pruned FFN input")
    if (gate is None) != (parts.gate is None):
        raise RuntimeError("pruning added or lost the FFN's gate")
    if gate is not None:
        _expect(gate, (kept, hidden), "pruned FFN gate")
    _expect(down, (out, kept), "pruned FFN output")
    if new.width != kept:
        raise RuntimeError(f"pruned FFN reports {new.width} neurons, expected {kept}")
    return neurons


def prune_layers_(model: nn.Module, plan: CompressionPlan, adapter: ModelAdapter, importance: Importance) -> None:
    """Prune the heads (and key/value groups) and FFN neurons of each of ``model``'s layers (already
    cut to the plan's depth) to the plan's ratios, keeping the units ``importance`` ranks highest
    (by weight magnitude where it has no scores for a layer)."""
    for layer, base_i in zip(adapter.layers(model), plan.kept_layers, strict=True):
        lp = plan.layers[base_i]
        if lp.heads < 1.0 or lp.kv < 1.0:
            prune_heads_(layer, adapter, lp.heads, importance.heads.get(base_i), kv=lp.kv)
        if lp.ffn < 1.0:
            prune_ffn_(layer, adapter, lp.ffn, importance.ffn.get(base_i))
