"""A model's size: parameters, and the bytes export ships it as (what the size objective counts)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from transformers.pytorch_utils import Conv1D

from autocompress.ops.pack import packed_split, packed_tensors
from autocompress.ops.weight_only import WeightOnlyLinear

__all__ = ["Size", "model_size", "serialized_bytes"]


@dataclass(frozen=True)
class Size:
    """How big a model is: parameters, the bytes export writes for it, and two older measures."""

    params: int
    serialized_bytes: int  # ``torch.save(state_dict)`` as it is
    effective_bytes: int  # serialised bytes with simulated low-bit layers counted at their width (weight-only ones as they are)
    split: dict[str, int] | None = None  # shipped tensor bytes by part (embeddings, encoder layers, head)
    shipped_bytes: int | None = None  # the safetensors file export writes (transforms.pack); None in older records

    @property
    def bytes(self) -> int:
        """The size objective's bytes: as shipped, or (records made before it was measured) effective."""
        return self.shipped_bytes if self.shipped_bytes is not None else self.effective_bytes

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "megabytes": self.megabytes}


def serialized_bytes(state: dict[str, Any]) -> int:
    """Bytes of ``torch.save(state)`` (tensors that share storage counted once)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def model_size(model: nn.Module, simulated_bits: dict[str, int] | None = None,
               parts: dict[str, tuple[str, ...]] | None = None) -> Size:
    """Size of ``model``: its bytes as export ships them (the safetensors file of :func:`~autocompress.ops.pack.packed_tensors`),
    split by ``parts`` (each part's module-name prefixes; the rest is ``"head"``) when given.

    ``effective_bytes`` is the older estimate: ``torch.save`` bytes with each simulated layer's
    weight (``simulated_bits``: module-name prefixes to widths) re-counted at its width plus one
    float32 scale and zero-point per output channel.
    """
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    serialized = buf.getbuffer().nbytes
    params = 0
    for p in model.parameters():
        params += p.numel()
    # int8 dynamic-quantised Linears keep their weights in packed params, weight-only ones in buffers
    for mod in model.modules():
        packed = getattr(mod, "_packed_params", None)
        if packed is not None and hasattr(mod, "weight"):
            w = mod.weight()
            params += w.numel() + (mod.bias().numel() if mod.bias() is not None else 0)
        elif isinstance(mod, WeightOnlyLinear):
            params += mod.in_features * mod.out_features + (mod.out_features if mod.bias is not None else 0)
    effective = serialized
    for prefix, bits in (simulated_bits or {}).items():
        for name, mod in model.named_modules():
            if (name == prefix or name.startswith(prefix + ".")) and isinstance(mod, (nn.Linear, nn.Embedding, Conv1D)):
                w = mod.weight
                effective -= w.numel() * w.element_size()
                effective += (w.numel() * bits + 7) // 8 + w.shape[1 if isinstance(mod, Conv1D) else 0] * 8
    tensors, meta = packed_tensors(model)
    split = None if parts is None else packed_split(tensors, parts)
    return Size(params=params, serialized_bytes=serialized, effective_bytes=effective, split=split,
                shipped_bytes=len(safetensors_bytes(tensors, metadata=meta)))
