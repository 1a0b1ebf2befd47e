"""Operators: one module per plan setting, and :func:`apply_plan`, every step of a plan that needs no training.

============  ==========================================================
module        plan setting
============  ==========================================================
``depth``     which layers the student keeps (``layers[i].keep``)
``prune``     attention heads and FFN neurons kept (``layers[i].heads``, ``.ffn``)
``share``     layers that run one module (``share``)
``vocab``     the kept vocabulary (``vocab_min_count``)
``exits``     early-exit heads (``exits``)
``quantize``  bit-widths (``layers[i].bits``, ``embedding_bits``, ``head_bits``)
``pack``      the tensors a compressed model ships as; ``size`` counts their bytes
============  ==========================================================

:func:`apply_plan` returns a compressed copy (``apply_plan_`` works in place) in that order:
structure (depth, pruning, sharing, vocabulary), then exit heads, then bit-widths. Where a plan
leaves a choice to data (which heads and neurons a ratio keeps, which vocabulary rows), a
:class:`Selection` says what was chosen; without it pruning ranks units by weight magnitude. A
candidate that is recovered by distillation goes through the same three stages with training in
between (:mod:`autocompress.search.build`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.ops.depth import drop_layers_
from autocompress.ops.exits import attach_exits
from autocompress.ops.prune import Importance, prune_layers_
from autocompress.ops.quantize import apply_bits_, simulated_widths
from autocompress.ops.share import share_layers_
from autocompress.ops.vocab import KeptShape, VocabularyChoice, keep_vocabulary_
from autocompress.schema.plan import CompressionPlan

__all__ = ["Importance", "Selection", "apply_bits_", "apply_plan", "apply_plan_", "apply_structure_", "attach_exits",
           "simulated_widths"]


@dataclass(frozen=True)
class Selection:
    """What a plan leaves to data: which heads and neurons its ratios keep, which vocabulary rows it
    keeps, and the seed its exit heads start from."""

    importance: Importance = field(default_factory=Importance)  # per base layer; magnitude where absent
    vocabulary: VocabularyChoice | KeptShape | None = None  # needed when the plan keeps part of the vocabulary
    exit_seed: int = 0  # the exit heads' initialisation (they are trained after recovery, or loaded)


def apply_plan(model: nn.Module, plan: CompressionPlan, selection: Selection | None = None, *,
               bits: bool = True) -> nn.Module:
    """A compressed copy of ``model`` following ``plan`` (``model`` is not modified); with
    ``bits=False``, its float form (the shapes and structure only).

    Raises :class:`~autocompress.errors.PlanError` when the plan does not fit the model.
    """
    return apply_plan_(copy.deepcopy(model), plan, selection, bits=bits)


def apply_plan_(model: nn.Module, plan: CompressionPlan, selection: Selection | None = None, *,
                bits: bool = True) -> nn.Module:
    """Compress ``model`` in place following ``plan``; returns the model to use (an early-exit
    wrapper around ``model`` when the plan has exits, else ``model``)."""
    selection = selection or Selection()
    apply_structure_(model, plan, selection)
    out = attach_exits(model, plan, seed=selection.exit_seed)
    if bits:
        apply_bits_(out, plan)
    return out.eval()


def apply_structure_(model: nn.Module, plan: CompressionPlan, selection: Selection | None = None) -> None:
    """Drop layers, prune heads and neurons, share layers and keep the vocabulary, in place: the part
    of the plan that distillation can recover from."""
    adapter = adapter_for(model)
    num_layers = len(adapter.layers(model))
    if plan.num_layers != num_layers:
        raise PlanError(
            f"the plan lists {plan.num_layers} layers but the model has {num_layers}; "
            "was the plan made for another model?"
        )
    selection = selection or Selection()
    model.eval()
    drop_layers_(model, plan, adapter)
    prune_layers_(model, plan, adapter, selection.importance)
    share_layers_(model, plan, adapter)
    keep_vocabulary_(model, plan, selection.vocabulary)
