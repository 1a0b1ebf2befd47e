"""Quantisation-aware training: a float model trained through the rounding its kernels will apply.

A compressed candidate is quantised after its recovery (:func:`autocompress.ops.apply_bits_`).
Distilled in float, it never sees that rounding, and an int8 model loses what the rounding costs.
Inside :func:`rounded`, each module a plan quantises computes with the weight (and reads the input)
as the shipped kernel will (:class:`~autocompress.ops.quantize.Rounding`), while the gradient
passes through the rounding unchanged (the straight-through estimator; torch's fake-quantisation
ops, which the dynamic int8 rounding uses, pass it where nothing was clipped) to the float weight, which
is what is trained and, afterwards, quantised: the model distillation optimised is the model that
ships. Outside the block the model is as it was, float modules with plain weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.ops.quantize import Round, Rounding

__all__ = ["rounded", "straight_through"]


def straight_through(x: torch.Tensor, fn: Round) -> torch.Tensor:
    """``fn(x)`` forward, the identity backward."""
    return x + (fn(x) - x).detach()


class _Rounded(nn.Module):
    """A weight parametrisation: the weight as the kernel computes with it, straight-through (or
    with the rounding's own gradient where it has one)."""

    def __init__(self, fn: Round, differentiable: bool) -> None:
        super().__init__()
        self.fn, self.differentiable = fn, differentiable

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fn(weight) if self.differentiable else straight_through(weight, self.fn)


@contextmanager
def rounded(model: nn.Module, roundings: Sequence[Rounding]) -> Iterator[nn.Module]:
    """``model`` computing through ``roundings`` (by module name) for the block's length. Parameters
    stay the same objects (an optimiser made before the block keeps training them)."""
    hooks = []
    done: list[nn.Module] = []
    try:
        for r in roundings:
            module = model.get_submodule(r.module)
            parametrize.register_parametrization(module, "weight", _Rounded(r.weight, r.differentiable), unsafe=True)
            done.append(module)
            if r.inputs is not None:
                rounding = _Rounded(r.inputs, r.differentiable)
                hooks.append(module.register_forward_pre_hook(lambda _m, args, f=rounding: (f(args[0]), *args[1:])))
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for module in done:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
