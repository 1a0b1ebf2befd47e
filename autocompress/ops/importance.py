"""Which heads, neurons and layers matter: scored once per study on a calibration batch.

* ``taylor`` (default): first-order Taylor estimate of the loss change when a unit is removed,
  ``Σ |W ⊙ ∂L/∂W|`` over the unit's weights (for a query head its Q rows and output-projection
  columns, plus its group's K/V rows divided among the group's query heads; for an FFN neuron its
  input row(s) and output column), accumulated over the calibration examples with the task's loss
  (by default the cross-entropy of a classifier's logits against the labels).
* ``magnitude``: ``Σ |W|`` over the same weights (the L1 criterion; needs no data).

Layers are scored by how much the calibration loss grows when the layer alone is skipped.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.tasks.batches import Encoded
from autocompress.models.adapters import adapter_for
from autocompress.ops.prune import Importance, ffn_magnitude, ffn_scores, head_magnitude, head_scores

__all__ = ["Criterion", "Loss", "unit_importance", "layer_importance"]

log = logging.getLogger(__name__)

Criterion = Literal["taylor", "magnitude"]
#: ``loss(model output, targets)``: the mean loss over a batch, ``targets = data.labels[indices]``
Loss = Callable[[Any, torch.Tensor], torch.Tensor]


def _batch_loss_sum(output: Any, targets: torch.Tensor, loss: Loss | None) -> torch.Tensor:
    """The loss summed over one batch's examples (``loss`` is a mean over them)."""
    if loss is None:
        return F.cross_entropy(output.logits, targets, reduction="sum")
    return loss(output, targets) * targets.shape[0]


def unit_importance(model: nn.Module, criterion: Criterion, data: Encoded | None = None, batch_size: int = 32, *,
                    loss: Loss | None = None) -> Importance:
    """Scores for every query head and FFN neuron of ``model``, keyed by layer index (model unchanged).

    ``loss`` is the task's loss, ``loss(output, data.labels[idx])`` a mean over the batch (default:
    cross-entropy of ``output.logits`` against the labels); only ``taylor`` uses data and loss."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if criterion == "magnitude":
        return Importance(
            heads={i: head_magnitude(adapter.attention(layer)) for i, layer in enumerate(layers)},
            ffn={i: ffn_magnitude(adapter.ffn(layer)) for i, layer in enumerate(layers)},
        )
    if data is None or len(data) == 0:
        raise ValueError("the taylor criterion needs calibration examples")
    work = copy.deepcopy(model).train()
    for m in work.modules():  # deterministic gradients: no dropout
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # decoders keep the attention's as a number
            m.attention_dropout = 0.0
    work.zero_grad(set_to_none=True)
    for idx, inputs in data.batches(batch_size):
        (_batch_loss_sum(work(**inputs), data.labels[idx], loss) / len(data)).backward()
    wl = adapter.layers(work)

    def taylor(module: nn.Module) -> torch.Tensor:
        weight = module.weight.detach()
        grad = module.weight.grad
        return torch.zeros_like(weight) if grad is None else (weight * grad).abs()

    heads = {i: head_scores(adapter.attention(layer), taylor) for i, layer in enumerate(wl)}
    ffn = {i: ffn_scores(adapter.ffn(layer), taylor) for i, layer in enumerate(wl)}
    return Importance(heads=heads, ffn=ffn)


@torch.no_grad()
def layer_importance(model: nn.Module, data: Encoded, batch_size: int = 64, *, loss: Loss | None = None) -> torch.Tensor:
    """Calibration-loss increase when each layer alone is skipped, shape ``(num_layers,)``; ``loss``
    as in :func:`unit_importance`."""
    adapter = adapter_for(model)
    work = copy.deepcopy(model).eval()
    layers = list(adapter.layers(work))

    def mean_loss() -> float:
        total = 0.0
        for idx, inputs in data.batches(batch_size, by_length=True):
            total += _batch_loss_sum(work(**inputs), data.labels[idx], loss).item()
        return total / len(data)

    base = mean_loss()
    scores = []
    for i in range(len(layers)):
        adapter.set_layers_(work, layers[:i] + layers[i + 1 :])
        scores.append(mean_loss() - base)
    adapter.set_layers_(work, layers)
    return torch.tensor(scores)
