"""Bit-widths: real int8 dynamic quantisation, and simulated (fake-quantised) lower widths.

8 bits use PyTorch's dynamic quantisation with per-channel weight scales (real int8 kernels,
measured faster on AVX2 CPUs). 4 and 2 bits only round the float weights to ``2**bits`` levels
per output channel: the model's accuracy reflects them, its speed does not, and the plan says
so (``CompressionPlan.simulated``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["quantize_int8_", "quantize_int8_named_", "fake_quantize_", "fake_quantize_weight"]


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


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Min–max asymmetric quantisation of each output row to ``2**bits`` levels, dequantised."""
    levels = 2**bits - 1
    lo = weight.amin(dim=1, keepdim=True)
    hi = weight.amax(dim=1, keepdim=True)
    scale = (hi - lo).clamp_min(1e-12) / levels
    return torch.round((weight - lo) / scale) * scale + lo


@torch.no_grad()
def fake_quantize_(module: nn.Module, bits: int) -> None:
    """Round the weights of every Linear/Embedding inside ``module`` to ``bits`` bits in place."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            sub.weight.copy_(fake_quantize_weight(sub.weight, bits))
