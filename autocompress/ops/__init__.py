"""Apply a compression plan to a model: depth, then pruning, then quantisation.

``apply_plan(model, plan)`` returns a compressed copy and leaves ``model`` untouched;
``apply_plan_`` does the same in place. Pruning chooses heads/neurons by the given importance
scores (per *base* layer index) or, without them, by weight magnitude.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan
from autocompress.ops.depth import drop_layers_
from autocompress.ops.prune import prune_ffn_, prune_heads_
from autocompress.ops.quantize import fake_quantize_, quantize_embeddings_int8_, quantize_int8_, quantize_int8_named_

__all__ = ["Importance", "apply_plan", "apply_plan_", "apply_structure_", "apply_bits_", "share_layers_", "simulated_widths"]


@dataclass(frozen=True)
class Importance:
    """Importance scores per base-layer index: ``heads[i]`` (num_heads,), ``ffn[i]`` (intermediate,)."""

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)


def apply_plan(model: nn.Module, plan: CompressionPlan, importance: Importance | None = None) -> nn.Module:
    """A compressed copy of ``model`` following ``plan``; ``model`` is not modified."""
    student = copy.deepcopy(model)
    apply_plan_(student, plan, importance)
    return student


def apply_plan_(model: nn.Module, plan: CompressionPlan, importance: Importance | None = None) -> None:
    """Compress ``model`` in place following ``plan`` (raises :class:`PlanError` if it cannot)."""
    apply_structure_(model, plan, importance)
    apply_bits_(model, plan)


def apply_structure_(model: nn.Module, plan: CompressionPlan, importance: Importance | None = None) -> None:
    """Drop and prune in place (the trainable part of the plan; recovery happens after this)."""
    adapter = adapter_for(model)
    num_layers = len(adapter.layers(model))
    if plan.num_layers != num_layers:
        raise PlanError(
            f"the plan lists {plan.num_layers} layers but the model has {num_layers}; "
            "was the plan made for another model?"
        )
    importance = importance or Importance()
    model.eval()
    base_indices = plan.kept_layers
    drop_layers_(model, plan, adapter)
    layers = adapter.layers(model)
    for layer, base_i in zip(layers, base_indices, strict=True):
        lp = plan.layers[base_i]
        if lp.heads < 1.0:
            prune_heads_(layer, adapter, lp.heads, importance.heads.get(base_i))
        if lp.ffn < 1.0:
            prune_ffn_(layer, adapter, lp.ffn, importance.ffn.get(base_i))
    share_layers_(model, plan)


def share_layers_(model: nn.Module, plan: CompressionPlan) -> None:
    """Make each student layer of a sharing group run its group's first layer (one module, one
    set of weights: training updates it from every position, export stores it once)."""
    shared = plan.shared_positions
    if not shared:
        return
    adapter = adapter_for(model)
    layers = list(adapter.layers(model))
    adapter.set_layers_(model, [layers[shared.get(i, i)] for i in range(len(layers))])


def apply_bits_(model: nn.Module, plan: CompressionPlan) -> None:
    """Quantise in place a model that ``apply_structure_`` has already shaped by ``plan``."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if len(layers) != len(plan.kept_layers):
        raise PlanError(f"the model has {len(layers)} layers but the plan keeps {len(plan.kept_layers)}")
    done: set[int] = set()
    for layer, base_i in zip(layers, plan.kept_layers, strict=True):
        if id(layer) in done:  # a shared layer: quantised once, where it first runs
            continue
        done.add(id(layer))
        bits = plan.layers[base_i].bits
        if bits == 8:
            quantize_int8_(layer)
        elif bits < 8:
            fake_quantize_(layer, bits)
    if plan.embedding_bits == 8:
        quantize_embeddings_int8_(adapter.embeddings(model))
    elif plan.embedding_bits == 4:  # simulated: the tables' rows rounded to 16 levels, shipped packed as 4-bit codes
        fake_quantize_(adapter.embeddings(model), 4)
    if plan.head_bits == 8:
        # quantize_dynamic replaces children only, so the head modules are named from the top model
        quantize_int8_named_(model, adapter.head_modules(model))


def simulated_widths(model: nn.Module, plan: CompressionPlan) -> dict[str, int]:
    """Module names of a compressed ``model`` whose weights are only simulated, with their width."""
    names = {id(m): name for name, m in model.named_modules()}
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    out = {
        names[id(layer)]: plan.layers[base_i].bits
        for layer, base_i in zip(layers, plan.kept_layers, strict=True)
        if plan.layers[base_i].bits < 8
    }
    return out
