"""Bit-widths: real int8 dynamic quantisation, and simulated (fake-quantised) lower widths.

8 bits use PyTorch's dynamic quantisation with per-channel weight scales (real int8 kernels,
measured faster on AVX2 CPUs); 8-bit embedding tables are stored as 8-bit codes with a scale and
offset per row (:class:`Int8Embedding`: a quarter of the bytes, rows dequantised as they are looked up). 4 and 2 bits only round the float weights to ``2**bits`` levels
per output channel: the model's accuracy reflects them, its speed does not, and the plan says
so (``CompressionPlan.simulated``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.ops.exits import static_part
from autocompress.schema.plan import CompressionPlan

__all__ = ["CODES_ATTR", "Int8Embedding", "apply_bits_", "bits_summary", "simulated_widths", "remember_codes", "quantize_embeddings_int8_", "quantize_int8_", "quantize_int8_named_", "fake_quantize_",
           "fake_quantize_weight"]


def quantize_int8_(module: nn.Module) -> None:
    """Replace every ``nn.Linear`` inside ``module`` by an int8 dynamic-quantised Linear."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao prints a deprecation notice on every call
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


def quantize_int8_named_(model: nn.Module, names: list[str]) -> None:
    """Quantise the submodules of ``model`` called ``names`` (Linears themselves, or modules holding them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)


CODES_ATTR = "_autocompress_codes"  # on a module whose float weight holds simulated low-bit values: their codes


def remember_codes(module: nn.Module, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> None:
    """Note on ``module`` the codes its float weight was rounded to, so that it ships at ``bits`` bits."""
    setattr(module, CODES_ATTR, (codes.to(torch.uint8), scale.float(), offset.float(), bits))


def _row_codes(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min–max asymmetric quantisation of each row to ``2**bits`` levels: codes, scale, offset."""
    levels = 2**bits - 1
    lo = weight.amin(dim=1, keepdim=True)
    hi = weight.amax(dim=1, keepdim=True)
    scale = (hi - lo).clamp_min(1e-12) / levels
    return torch.round((weight - lo) / scale), scale, lo


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Min–max asymmetric quantisation of each output row to ``2**bits`` levels, dequantised."""
    codes, scale, lo = _row_codes(weight, bits)
    return codes * scale + lo


class Int8Embedding(nn.Module):
    """An embedding table stored as 8-bit codes with a float scale and offset per row (min–max per
    row, the rounding of :func:`fake_quantize_weight`, so its rows are exactly those values): a
    lookup gathers the codes of the ids it is given and dequantises only those rows. A kept
    vocabulary's lookup from full-vocabulary ids to rows comes along (``lookup``)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                 lookup: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scale", scale.reshape(-1, 1).float())
        self.register_buffer("offset", offset.reshape(-1, 1).float())
        self.lookup: torch.Tensor | None
        self.register_buffer("lookup", None if lookup is None else lookup.to(torch.int32))
        self.num_embeddings, self.embedding_dim = int(codes.shape[0]), int(codes.shape[1])

    @classmethod
    @torch.no_grad()
    def from_embedding(cls, emb: nn.Embedding) -> "Int8Embedding":
        codes, scale, lo = _row_codes(emb.weight.detach().float(), 8)
        return cls(codes, scale, lo, getattr(emb, "lookup", None))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids if self.lookup is None else self.lookup[input_ids].long()
        return self.codes[rows].float() * self.scale[rows] + self.offset[rows]

    def extra_repr(self) -> str:
        kept = "" if self.lookup is None else f" of {int(self.lookup.shape[0])}"
        return f"{self.num_embeddings}{kept} rows, {self.embedding_dim}, 8-bit codes per row"


def quantize_embeddings_int8_(module: nn.Module) -> None:
    """Replace every ``nn.Embedding`` inside ``module`` (a kept vocabulary's table too) by an :class:`Int8Embedding`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Embedding):
            setattr(module, name, Int8Embedding.from_embedding(child))
        else:
            quantize_embeddings_int8_(child)


@torch.no_grad()
def fake_quantize_(module: nn.Module, bits: int) -> None:
    """Round the weights of every Linear/Embedding inside ``module`` to ``bits`` bits in place."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            codes, scale, lo = _row_codes(sub.weight, bits)
            sub.weight.copy_(codes * scale + lo)
            remember_codes(sub, codes, scale, lo, bits)


def apply_bits_(model: nn.Module, plan: CompressionPlan) -> None:
    """Quantise in place a model already shaped by ``plan`` (an early-exit wrapper's student; its
    small exit heads stay float)."""
    model = static_part(model)
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
    layers = adapter_for(model).layers(model)
    return {
        names[id(layer)]: plan.layers[base_i].bits
        for layer, base_i in zip(layers, plan.kept_layers, strict=True)
        if plan.layers[base_i].bits < 8
    }


def bits_summary(plan: CompressionPlan) -> dict[str, Any]:
    """Which parts of a model shaped by ``plan`` are int8, which simulated, and how they are stored."""
    return {
        "int8_layers": [i for i in plan.kept_layers if plan.layers[i].bits == 8],
        "simulated_layers": {str(i): plan.layers[i].bits for i in plan.kept_layers if plan.layers[i].bits < 8},
        "int8_head": plan.head_bits == 8,
        "int8_embeddings": plan.embedding_bits == 8,
        "simulated_embedding_bits": plan.embedding_bits if plan.embedding_bits < 8 else None,
        "how": "stored as shipped: int8 layers = int8 weights with per-channel scales, run by PyTorch dynamic "
        "quantisation; 4/2-bit layers = codes packed per byte with a scale and offset per row, computed in "
        "float after loading (simulated: their speed is not real); 8-bit tables = 8-bit codes per row",
    }
