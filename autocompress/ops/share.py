"""Parameter sharing: layers of a sharing group run one module (one set of weights)."""

from __future__ import annotations

from torch import nn

from autocompress.errors import PlanError
from autocompress.models.adapters import ModelAdapter
from autocompress.schema.plan import CompressionPlan

__all__ = ["share_layers_"]


def share_layers_(model: nn.Module, plan: CompressionPlan, adapter: ModelAdapter) -> None:
    """Make each student layer of a sharing group run its group's first layer (one module, one
    set of weights: training updates it from every position, export stores it once).

    Refused for decoders: a layer is one key/value-cache slot (its ``layer_idx``), so one module at
    two positions would make both write and read the same slot while generating."""
    shared = plan.shared_positions
    if not shared:
        return
    if adapter.decoder:
        raise PlanError(f"layer sharing (share) is not supported for {model.config.model_type} decoders: shared layers "
                        "would write one key/value-cache slot; remove share from the plan")
    layers = list(adapter.layers(model))
    adapter.set_layers_(model, [layers[shared.get(i, i)] for i in range(len(layers))])
