"""Bit-widths: real int8 and int4 kernels, and simulated (fake-quantised) lower widths.

Under the plan's ``dynamic`` weight scheme, 8 bits use PyTorch's dynamic quantisation with
per-channel weight scales (int8 weights and activations, measured faster on AVX2 CPUs); under
``weight_only``, 8 and 4 bits keep int8 or group-wise int4 weights and compute on bfloat16
activations (:mod:`autocompress.ops.weight_only`: what decoding one token at a time gains from).
8-bit embedding tables are stored as 8-bit codes with a scale and offset per row
(:class:`Int8Embedding`: a quarter of the bytes, rows dequantised as they are looked up). Other
widths only round the float weights to ``2**bits`` levels per output channel: the model's
accuracy reflects them, its speed does not, and the plan says so (``CompressionPlan.simulated``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.ops.exits import static_part
from autocompress.ops.weight_only import (GROUP_SIZE, quantize_weight_only_, quantize_weight_only_named_, weight_only_kernel,
                                          weight_only_rounded)
from autocompress.schema.plan import CompressionPlan

__all__ = ["CODES_ATTR", "Int8Embedding", "Rounding", "apply_bits_", "kernel_roundings", "bits_summary", "simulated_widths", "remember_codes",
           "quantize_embeddings_int8_", "quantize_tables_int8_", "quantize_int8_", "quantize_int8_named_", "fake_quantize_",
           "fake_quantize_weight"]


def quantize_int8_(module: nn.Module) -> None:
    """Replace every ``nn.Linear`` (and transformers ``Conv1D``) inside ``module`` by an int8 dynamic-quantised Linear."""
    _conv1d_as_linear_(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao prints a deprecation notice on every call
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


def quantize_int8_named_(model: nn.Module, names: list[str]) -> None:
    """Quantise the submodules of ``model`` called ``names`` (Linears themselves, or modules holding them)."""
    for name in names:
        _conv1d_as_linear_(model, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)


def _conv1d_as_linear_(model: nn.Module, name: str = "") -> None:
    """Turn each transformers ``Conv1D`` at or inside ``model.name`` into the ``nn.Linear`` that
    computes the same (dynamic quantisation only knows Linears; GPT-2 projects with Conv1D)."""
    target = model.get_submodule(name) if name else model
    if isinstance(target, Conv1D):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, _linear_of(target))
        return
    for child_name, child in list(target.named_children()):
        if isinstance(child, Conv1D):
            setattr(target, child_name, _linear_of(child))
        else:
            _conv1d_as_linear_(child)


@torch.no_grad()
def _linear_of(conv: nn.Module) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf, device=conv.weight.device, dtype=conv.weight.dtype)
    linear.weight.copy_(conv.weight.T)
    linear.bias.copy_(conv.bias)
    return linear


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


def quantize_tables_int8_(model: nn.Module, tables: list[str]) -> None:
    """Replace the embedding tables of ``model`` called ``tables`` by :class:`Int8Embedding`. A
    replaced table's float weight is not touched, so an output projection tied to it keeps its values."""
    for name in tables:
        parent, _, child = name.rpartition(".")
        table = model.get_submodule(name)
        if not isinstance(table, nn.Embedding):
            raise PlanError(f"{name} is a {type(table).__name__}, not an embedding table: it cannot be stored as 8-bit rows")
        setattr(model.get_submodule(parent) if parent else model, child, Int8Embedding.from_embedding(table))


@torch.no_grad()
def fake_quantize_(module: nn.Module, bits: int) -> None:
    """Round the weights of every Linear/Conv1D/Embedding inside ``module`` to ``bits`` bits in
    place, per output channel (a table's row)."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            codes, scale, lo = _row_codes(sub.weight, bits)
            sub.weight.copy_(codes * scale + lo)
            remember_codes(sub, codes, scale, lo, bits)
        elif isinstance(sub, Conv1D):  # weight (in, out): an output channel is a column
            codes, scale, lo = _row_codes(sub.weight.T, bits)
            codes, scale, lo = codes.T, scale.T, lo.T
            sub.weight.copy_(codes * scale + lo)
            remember_codes(sub, codes, scale, lo, bits)


def apply_bits_(model: nn.Module, plan: CompressionPlan) -> None:
    """Quantise in place a model already shaped by ``plan`` (an early-exit wrapper's student; its
    small exit heads stay float).

    Each kept layer's Linears go to the layer's width, computed as the plan's weight scheme says;
    the input embedding tables to ``embedding_bits``; the head to ``head_bits``. A head tied to the
    input embedding is replaced, never rounded in place, so the embedding keeps its own width."""
    model = static_part(model)
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if len(layers) != len(plan.kept_layers):
        raise PlanError(f"the model has {len(layers)} layers but the plan keeps {len(plan.kept_layers)}")
    weight_only = plan.weight_scheme == "weight_only"
    done: set[int] = set()
    for layer, base_i in zip(layers, plan.kept_layers, strict=True):
        if id(layer) in done:  # a shared layer: quantised once, where it first runs
            continue
        done.add(id(layer))
        bits = plan.layers[base_i].bits
        if weight_only and bits in (8, 4):
            quantize_weight_only_(layer, bits)
        elif bits == 8:
            quantize_int8_(layer)
        elif bits < 8:
            fake_quantize_(layer, bits)
    # the head before the tables: a head tied to the token table is quantised from its float values
    if plan.head_bits < 32:
        if weight_only:
            quantize_weight_only_named_(model, adapter.head_modules(model), plan.head_bits)
        else:
            # quantize_dynamic replaces children only, so the head modules are named from the top model
            quantize_int8_named_(model, adapter.head_modules(model))
    if plan.embedding_bits == 8:
        quantize_tables_int8_(model, _tables(model))
    elif plan.embedding_bits == 4:  # simulated: the tables' rows rounded to 16 levels, shipped packed as 4-bit codes
        for name in _tables(model):
            fake_quantize_(model.get_submodule(name), 4)


def _tables(model: nn.Module) -> list[str]:
    """Names of ``model``'s input embedding tables (an encoder's word, position and type tables; a
    decoder's token table, and GPT-2's position table)."""
    return list(adapter_for(model).embedding_tables(model))


def simulated_widths(model: nn.Module, plan: CompressionPlan) -> dict[str, int]:
    """Module names of a compressed ``model`` whose weights are only simulated, with their width: the
    plan's simulated widths, and weight-only widths that no kernel computes where ``model`` is."""
    names = {id(m): name for name, m in model.named_modules()}
    layers = adapter_for(model).layers(model)
    device = next((t.device for t in itertools.chain(model.parameters(), model.buffers())), torch.device("cpu"))
    return {
        names[id(layer)]: plan.layers[base_i].bits
        for layer, base_i in zip(layers, plan.kept_layers, strict=True)
        if not _real(plan, plan.layers[base_i].bits, device)
    }


def _real(plan: CompressionPlan, bits: int, device: torch.device | str) -> bool:
    """Whether a Linear at ``bits`` bits under ``plan`` runs a real kernel on ``device``."""
    if bits == 32 or plan.bits_simulated(bits):
        return bits == 32
    return plan.weight_scheme != "weight_only" or weight_only_kernel(bits, device) is not None


def bits_summary(plan: CompressionPlan, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Which parts of a model shaped by ``plan`` compute at which width, which widths are real on
    ``device`` (and the kernel that computes each), which simulated, and how they are stored."""
    kept = plan.kept_layers
    weight_only = plan.weight_scheme == "weight_only"
    widths = sorted(({plan.layers[i].bits for i in kept} | {plan.head_bits}) - {32}, reverse=True)
    kernels: dict[str, str | None] = {}
    for bits in widths:
        if plan.bits_simulated(bits):
            continue
        kernels[str(bits)] = weight_only_kernel(bits, device) if weight_only else "torch.ao dynamic int8 (quantized::linear_dynamic)"
    return {
        "weight_scheme": plan.weight_scheme,
        "int8_layers": [i for i in kept if plan.layers[i].bits == 8],
        "weight_only_layers": {str(i): plan.layers[i].bits for i in kept if weight_only and plan.layers[i].bits in (8, 4)},
        "simulated_layers": {str(i): plan.layers[i].bits for i in kept
                             if plan.layers[i].bits < 32 and not _real(plan, plan.layers[i].bits, device)},
        "head_bits": plan.head_bits,
        "int8_head": plan.head_bits == 8,
        "int8_embeddings": plan.embedding_bits == 8,
        "simulated_embedding_bits": plan.embedding_bits if plan.embedding_bits < 8 else None,
        "kernels": kernels,  # each real width below 32 bits: the kernel that computes it on ``device`` (None: dequantised)
        "device": str(torch.device(device)),
        "how": "stored as shipped: int8 layers = int8 weights with per-channel scales, run by PyTorch dynamic "
        "quantisation (weight_scheme dynamic) or by the weight-only int8 kernel on bfloat16 activations "
        "(weight_only); weight-only 4-bit layers = 4-bit codes two to a byte with a bfloat16 scale and zero per "
        f"group of {GROUP_SIZE} inputs, run by the int4 kernel; other low-bit layers = codes packed per byte with "
        "a scale and offset per row, computed in float after loading (simulated: their speed is not real); "
        "8-bit tables = 8-bit codes per row. A weight-only width with no kernel where it runs computes with "
        "its dequantised weights (listed as simulated)",
    }


# ------------------------------------------------------------------ the rounding a shipped model computes with
Round = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rounding:
    """How one module of a model shaped by a plan computes once :func:`apply_bits_` quantises it:
    ``weight`` maps its float weight (as the module stores it) to the values the shipped kernel
    multiplies by, ``inputs`` its input to what the kernel reads (``None``: the input as it is).
    Quantisation-aware training (:mod:`autocompress.train.quant_aware`) computes through them."""

    module: str  # the module's name in the model
    weight: Round
    inputs: Round | None
    how: str  # e.g. "dynamic int8", "weight-only int4", "4-bit rows (simulated)"
    differentiable: bool = False  # the functions pass gradients themselves (else: straight through, unchanged)


def kernel_roundings(model: nn.Module, plan: CompressionPlan) -> list[Rounding]:
    """The :class:`Rounding` of every module of ``model`` (shaped by ``plan``, float) that
    :func:`apply_bits_` would quantise, as it would: each kept layer's Linears at the layer's
    width, the head at ``head_bits``, the input tables at ``embedding_bits``. Empty for a plan
    that keeps 32 bits everywhere."""
    model = static_part(model)
    adapter = adapter_for(model)
    names = {id(m): name for name, m in model.named_modules()}
    weight_only = plan.weight_scheme == "weight_only"
    out: list[Rounding] = []
    seen: set[int] = set()

    def add(module: nn.Module, bits: int) -> None:
        for sub in module.modules():
            if id(sub) in seen or not (type(sub) is nn.Linear or isinstance(sub, Conv1D)):
                continue
            seen.add(id(sub))
            out.append(_linear_rounding(names[id(sub)], isinstance(sub, Conv1D), bits, weight_only))

    for layer, base_i in zip(adapter.layers(model), plan.kept_layers, strict=True):
        if plan.layers[base_i].bits < 32:
            add(layer, plan.layers[base_i].bits)
    if plan.head_bits < 32:
        for name in adapter.head_modules(model):
            add(model.get_submodule(name), plan.head_bits)
    if plan.embedding_bits < 32:
        for name in _tables(model):
            bits = plan.embedding_bits
            out.append(Rounding(name, lambda w, bits=bits: fake_quantize_weight(w, bits), None,
                                f"{bits}-bit rows" + (" (simulated)" if bits < 8 else "")))
    return out


def _linear_rounding(name: str, conv1d: bool, bits: int, weight_only: bool) -> Rounding:
    """The rounding :func:`apply_bits_` gives one Linear (``conv1d``: a transformers Conv1D, weight (in, out))."""
    fn: Round
    inputs: Round | None
    if weight_only and bits in (8, 4):
        fn, inputs, how, own = (lambda w: weight_only_rounded(w, bits)), _bfloat16, f"weight-only int{bits}", False
    elif bits == 8:  # torch's fake-quantisation ops: one pass each, gradients masked where clipped
        fn, inputs, how, own = _dynamic_int8_weight, _dynamic_int8_inputs, "dynamic int8", True
    else:
        fn, inputs, how, own = (lambda w: fake_quantize_weight(w, bits)), None, f"{bits}-bit rows (simulated)", False
    if conv1d:  # an output channel is a column
        rows = fn
        fn = lambda w: rows(w.T).T  # noqa: E731
    return Rounding(name, fn, inputs, how, own)


def _dynamic_int8_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight ``quantize_dynamic`` stores (``per_channel_dynamic_qconfig``: symmetric int8 per
    output channel, the scale its observer chooses: the row's largest magnitude over 127.5),
    dequantised; gradients pass where the weight is not clipped."""
    with torch.no_grad():
        lo, hi = torch.aminmax(weight.detach().float(), dim=1)
        amax = torch.maximum(-lo, hi)
        scale = (amax / 127.5).clamp_min(torch.finfo(torch.float32).eps)
        zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight.float(), scale, zero, 0, -128, 127).to(weight.dtype)


#: the activation range of the dynamic int8 kernel on x86 (``quantized::linear_dynamic`` with ``reduce_range``)
_DYNAMIC_QMAX = 127


def _dynamic_int8_inputs(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the dynamic int8 kernel reads it: unsigned 7-bit codes, the scale and zero point chosen
    from the tensor's range (and 0); gradients pass where ``x`` is not clipped. Each example of a
    batch gets its own range, as the shipped model sees one example at a time: the first dimension
    indexes examples ((examples, tokens, features), or (examples, features) where a head reads one
    vector per example)."""
    flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    with torch.no_grad():
        lo, hi = torch.aminmax(flat.detach().float(), dim=1)
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
        scale = ((hi - lo) / _DYNAMIC_QMAX).clamp_min(1e-8)
        zero = torch.round(-lo / scale).clamp(0, _DYNAMIC_QMAX).to(torch.int32)
    out = torch.fake_quantize_per_channel_affine(flat.float(), scale, zero, 0, 0, _DYNAMIC_QMAX)
    return out.reshape(x.shape).to(x.dtype)


@torch.no_grad()
def _bfloat16(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.bfloat16).to(x.dtype)
