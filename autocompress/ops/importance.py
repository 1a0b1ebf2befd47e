"""Which heads, neurons and layers matter: scored once per study on a calibration batch.

* ``taylor`` (default): first-order Taylor estimate of the loss change when a unit is removed,
  ``Σ |W ⊙ ∂L/∂W|`` over the unit's weights (its Q/K/V rows and output-projection columns for a
  head; its input row and output column for an FFN neuron), accumulated over the calibration
  examples with the task's cross-entropy loss.
* ``magnitude``: ``Σ |W|`` over the same weights (the L1 criterion; needs no data).

Layers are scored by how much the calibration loss grows when the layer alone is skipped.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.tasks.batches import Encoded
from autocompress.models.adapters import adapter_for
from autocompress.ops.prune import Importance, ffn_magnitude, head_magnitude

__all__ = ["Criterion", "unit_importance", "layer_importance"]

log = logging.getLogger(__name__)

Criterion = Literal["taylor", "magnitude"]


def _head_scores(parts, weights_of) -> torch.Tensor:
    h = parts.head_size
    rows = sum(weights_of(lin).sum(dim=1) for lin in (parts.query, parts.key, parts.value))
    cols = weights_of(parts.out).sum(dim=0)
    return (rows + cols).view(-1, h).sum(dim=1)


def unit_importance(model: nn.Module, criterion: Criterion, data: Encoded | None = None, batch_size: int = 32) -> Importance:
    """Scores for every head and FFN neuron of ``model``, keyed by layer index (model unchanged)."""
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
    work.zero_grad(set_to_none=True)
    for idx, inputs in data.batches(batch_size):
        loss = F.cross_entropy(work(**inputs).logits, data.labels[idx], reduction="sum") / len(data)
        loss.backward()
    wl = adapter.layers(work)

    def taylor(lin: nn.Linear) -> torch.Tensor:
        return (lin.weight.detach() * lin.weight.grad).abs()

    heads = {i: _head_scores(adapter.attention(layer), taylor) for i, layer in enumerate(wl)}
    ffn = {}
    for i, layer in enumerate(wl):
        parts = adapter.ffn(layer)
        ffn[i] = taylor(parts.up).sum(dim=1) + taylor(parts.down).sum(dim=0)
    return Importance(heads=heads, ffn=ffn)


@torch.no_grad()
def layer_importance(model: nn.Module, data: Encoded, batch_size: int = 64) -> torch.Tensor:
    """Calibration-loss increase when each layer alone is skipped, shape ``(num_layers,)``."""
    adapter = adapter_for(model)
    work = copy.deepcopy(model).eval()
    layers = list(adapter.layers(work))

    def loss() -> float:
        total = 0.0
        for idx, inputs in data.batches(batch_size, by_length=True):
            total += F.cross_entropy(work(**inputs).logits, data.labels[idx], reduction="sum").item()
        return total / len(data)

    base = loss()
    scores = []
    for i in range(len(layers)):
        adapter.set_layers_(work, layers[:i] + layers[i + 1 :])
        scores.append(loss() - base)
    adapter.set_layers_(work, layers)
    return torch.tensor(scores)
