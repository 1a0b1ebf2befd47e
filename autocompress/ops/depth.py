"""Student depth: keep only the layers the plan keeps, in their original order (a decoder's layers
renumbered for its key/value cache by the adapter)."""

from __future__ import annotations

from torch import nn

from autocompress.models.adapters import ModelAdapter
from autocompress.schema.plan import CompressionPlan

__all__ = ["drop_layers_"]


def drop_layers_(model: nn.Module, plan: CompressionPlan, adapter: ModelAdapter) -> None:
    """Remove every layer the plan does not keep; the model keeps working with fewer layers."""
    layers = adapter.layers(model)
    plan.check_fits(len(layers))
    kept = [layers[i] for i in plan.kept_layers]
    adapter.set_layers_(model, kept)
    if len(adapter.layers(model)) != len(plan.kept_layers):
        raise RuntimeError("layer dropping left the wrong number of layers")
    if adapter.info(model).num_layers != len(plan.kept_layers):
        raise RuntimeError("layer dropping left the config describing another number of layers")
