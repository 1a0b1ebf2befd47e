"""A compressed model as the tensors it ships as, and back: the bytes the size objective counts.

:func:`packed_tensors` turns a compressed model (structure and bit-widths applied) into plain
tensors that ``safetensors`` stores:

* an int8 dynamic-quantised Linear: its int8 weight, per-channel scales and zero points, float bias;
* a weight-only Linear (:class:`~autocompress.ops.weight_only.WeightOnlyLinear`): its state as it is,
  int8 codes with a scale per channel, or 4-bit codes two to a byte with a scale and zero per group;
* a layer with simulated 4- or 2-bit weights: its codes packed two (or four) to a byte, with a
  float scale and offset per row; the model computes with those values in float after loading;
* an 8-bit embedding table (:class:`Int8Embedding`): its codes, scales and offsets as they are;
* everything else: the float tensor.

A tensor that several modules share (layers sharing weights, tied tables) is stored once.
:func:`unpack_` gives a structured, float model those tensors back, so it computes exactly what
the packed model computed; ``safetensors`` writes them as the file whose bytes the size objective counts.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import nn

from autocompress.errors import ModelError
from autocompress.ops.quantize import CODES_ATTR as _CODES
from autocompress.ops.quantize import Int8Embedding, remember_codes
from autocompress.ops.weight_only import WeightOnlyLinear

__all__ = ["PACK_KEY", "packed_tensors", "packed_split", "unpack_"]

PACK_KEY = "autocompress"  # the safetensors metadata entry describing the packed modules


def _pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes`` (uint8, each < 2**bits) packed ``8 // bits`` to a byte, low bits first."""
    per = 8 // bits
    flat = codes.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.reshape(-1, per)
    out = torch.zeros(flat.shape[0], dtype=torch.uint8)
    for i in range(per):
        out |= flat[:, i] << (i * bits)
    return out


def _unpack_bits(packed: torch.Tensor, bits: int, shape: list[int]) -> torch.Tensor:
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (i * bits)) & mask for i in range(per)]
    n = 1
    for s in shape:
        n *= s
    return torch.stack(parts, dim=1).reshape(-1)[:n].reshape(shape)


def _is_int8_linear(module: nn.Module) -> bool:
    packed = getattr(module, "_packed_params", None)
    return packed is not None and callable(getattr(module, "weight", None))


def packed_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors ``model`` ships as, and the safetensors metadata that says how to read them back."""
    modules: dict[str, dict[str, Any]] = {}
    tensors: dict[str, torch.Tensor] = {}
    covered: set[str] = set()  # state-dict keys a packed module replaces
    seen: dict[int, str] = {}  # module id -> the name it was first packed under (shared modules)
    stored: dict[tuple[Any, ...], str] = {}  # a tensor's storage, offset, shape, dtype -> the key it is stored under
    aliases: dict[str, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        prefix = name + "." if name else ""
        if id(mod) in seen and (_is_int8_linear(mod) or hasattr(mod, _CODES) or isinstance(mod, WeightOnlyLinear)):
            modules[name] = {"kind": "same", "as": seen[id(mod)]}
            covered.update(k for k in _state_keys(mod, prefix))
            continue
        if _is_int8_linear(mod):
            w = mod.weight()
            if w.qscheme() != torch.per_channel_affine:
                raise ModelError(f"{name}: only per-channel int8 weights can be packed, not {w.qscheme()}")
            tensors[prefix + "weight.int8"] = w.int_repr().contiguous()
            tensors[prefix + "weight.scales"] = w.q_per_channel_scales().contiguous()
            tensors[prefix + "weight.zero_points"] = w.q_per_channel_zero_points().contiguous()
            bias = mod.bias()
            if bias is not None:
                tensors[prefix + "bias"] = bias.detach().contiguous()
            modules[name] = {"kind": "int8_linear", "axis": int(w.q_per_channel_axis()),
                             "in_features": int(mod.in_features), "out_features": int(mod.out_features)}
            covered.update(_state_keys(mod, prefix))
            seen[id(mod)] = name
        elif isinstance(mod, WeightOnlyLinear):
            for key, value in mod.state_dict().items():
                tensors[prefix + key] = value.detach().contiguous()
            modules[name] = {"kind": "weight_only", "bits": mod.bits, "group_size": mod.group_size,
                             "in_features": mod.in_features, "out_features": mod.out_features}
            covered.update(_state_keys(mod, prefix))
            seen[id(mod)] = name
        elif hasattr(mod, _CODES):
            codes, scale, offset, bits = getattr(mod, _CODES)
            if not torch.equal(codes.float() * scale + offset, mod.weight.detach()):
                raise ModelError(f"{name}: the weight changed after it was rounded to {bits} bits; round it again")
            tensors[prefix + f"weight.codes{bits}"] = _pack_bits(codes, bits)
            tensors[prefix + "weight.scale"] = scale.contiguous()
            tensors[prefix + "weight.offset"] = offset.contiguous()
            modules[name] = {"kind": "codes", "bits": bits, "shape": list(codes.shape)}
            covered.add(prefix + "weight")
            seen[id(mod)] = name
            w = mod.weight
            # a module tied to this weight (an output projection tied to a 4-bit table) points at its codes
            stored[(w.untyped_storage().data_ptr(), w.storage_offset(), tuple(w.shape), w.dtype)] = prefix + "weight"
    for key, value in model.state_dict(keep_vars=False).items():
        if key in covered:
            continue
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise ModelError(f"{key}: a {type(value).__name__} this format cannot store")
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.dtype)
        if ptr in stored:
            aliases[key] = stored[ptr]
            continue
        stored[ptr] = key
        tensors[key] = value.detach().contiguous()
    meta = {"format": "pt", PACK_KEY: json.dumps({"version": 1, "modules": modules, "aliases": aliases})}
    return tensors, meta


def _state_keys(module: nn.Module, prefix: str) -> list[str]:
    return [prefix + k for k in module.state_dict()]


def packed_split(tensors: dict[str, torch.Tensor], parts: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Bytes of packed ``tensors`` per part: ``parts`` names each part's module-name prefixes; what
    no prefix covers is ``"head"``. A shared tensor counts once, where it is stored."""
    out = dict.fromkeys((*parts, "head"), 0)
    for key, t in tensors.items():
        part = next((n for n, prefixes in parts.items() if any(key.startswith(p + ".") for p in prefixes)), "head")
        out[part] += t.numel() * t.element_size()
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@torch.no_grad()
def unpack_(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Give ``model`` (float, already shaped as the packed one was) the packed ``tensors`` back, in
    place: int8 Linears become int8 again, weight-only Linears are rebuilt from their codes, low-bit
    codes are expanded, 8-bit tables come back as :class:`Int8Embedding`. Raises :class:`ModelError` when a tensor is missing or left over."""
    import torch.ao.nn.quantized.dynamic as nnqd

    try:
        info = json.loads(meta[PACK_KEY])
        modules, aliases = info["modules"], info["aliases"]
    except (KeyError, ValueError, TypeError):
        raise ModelError(f"the weights file has no readable '{PACK_KEY}' entry: it was not written by this format") from None
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in tensors:
            raise ModelError(f"the weights file lacks {key}")
        used.add(key)
        return tensors[key]

    made: dict[str, nn.Module] = {}
    expanded: dict[str, torch.Tensor] = {}  # the float weights expanded from codes, by their key
    for name, spec in modules.items():
        prefix = name + "." if name else ""
        kind = spec.get("kind")
        if kind == "same":
            _set_module(model, name, made[spec["as"]])
        elif kind == "int8_linear":
            with warnings.catch_warnings():  # torch.ao announces its deprecation on every quantised tensor made
                warnings.simplefilter("ignore")
                q = torch._make_per_channel_quantized_tensor(take(prefix + "weight.int8"), take(prefix + "weight.scales"),
                                                             take(prefix + "weight.zero_points"), spec["axis"])
                new = nnqd.Linear(spec["in_features"], spec["out_features"], dtype=torch.qint8)
                new.set_weight_bias(q, take(prefix + "bias") if prefix + "bias" in tensors else None)
            _set_module(model, name, new)
            made[name] = new
        elif kind == "weight_only":
            keys = ("weight_int8", "scales") if spec["bits"] == 8 else ("weight_int4", "scales_and_zeros")
            state = {k: take(prefix + k) for k in keys}
            if prefix + "bias" in tensors:
                state["bias"] = take(prefix + "bias")
            new = WeightOnlyLinear(spec["in_features"], spec["out_features"], spec["bits"], state,
                                   group_size=spec["group_size"])
            _set_module(model, name, new)
            made[name] = new
        elif kind == "codes":
            bits = spec["bits"]
            codes = _unpack_bits(take(prefix + f"weight.codes{bits}"), bits, spec["shape"])
            scale, offset = take(prefix + "weight.scale"), take(prefix + "weight.offset")
            mod = model.get_submodule(name)
            if tuple(mod.weight.shape) != tuple(spec["shape"]):
                raise ModelError(f"{name}: the packed weight is {spec['shape']} but the plan's shape is {list(mod.weight.shape)}")
            mod.weight.copy_(codes.float() * scale + offset)
            remember_codes(mod, codes, scale, offset, bits)
            made[name] = mod
            expanded[prefix + "weight"] = mod.weight
        else:
            raise ModelError(f"{name}: unknown packed kind {kind!r}")
    _int8_tables_(model, tensors)
    state = model.state_dict()
    skip = {k for name in modules for k in state if k.startswith(name + ".") and modules[name]["kind"] != "codes"}
    skip |= {name + ".weight" for name, spec in modules.items() if spec["kind"] == "codes"}
    for key in state:
        if key in skip:
            continue
        source = aliases.get(key, key)
        value = expanded[source] if source in expanded else take(source)
        owner, _, attr = key.rpartition(".")
        target = getattr(model.get_submodule(owner) if owner else model, attr)
        if tuple(target.shape) != tuple(value.shape):
            raise ModelError(f"the weights file has {key} of shape {list(value.shape)}; the plan's model needs {list(target.shape)}")
        target.copy_(value)
    left = sorted(set(tensors) - used)
    if left:
        raise ModelError(f"the weights file holds tensors the plan's model has no place for: {', '.join(left[:3])}")


def _int8_tables_(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Turn each ``nn.Embedding`` whose name has 8-bit codes in ``tensors`` into an :class:`Int8Embedding`."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Embedding) and f"{name}.codes" in tensors:
            lookup = tensors.get(f"{name}.lookup")
            _set_module(model, name, Int8Embedding(tensors[f"{name}.codes"], tensors[f"{name}.scale"],
                                                   tensors[f"{name}.offset"], lookup))
