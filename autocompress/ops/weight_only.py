"""Weight-only quantisation: int8 or group-wise int4 weights, activations in bfloat16.

Decoding one token at a time reads every weight once per token, so the bytes of the weights,
not the arithmetic, set its speed. A :class:`WeightOnlyLinear` keeps only quantised weights and
runs PyTorch's weight-only kernels on bfloat16 activations:

* 8 bits: symmetric int8 codes per output channel with a bfloat16 scale each
  (``aten._weight_int8pack_mm``);
* 4 bits: asymmetric codes 0..15 per group of :data:`GROUP_SIZE` input features of each output
  channel, with a bfloat16 scale and zero per group, ``w ≈ (code - 8) * scale + zero``
  (``aten._weight_int4pack_mm_for_cpu``).

The module's state is what it ships (int8 codes and scales; 4-bit codes two to a byte and the
scales and zeros per group), so the size objective counts its real bytes. The layout a kernel wants
may depend on the machine (the int4 kernel's does), so it is prepared from the shipped codes at
first use on a device, never shipped. Where the running PyTorch has no such kernel for the device
(:func:`weight_only_kernel` says ``None``), the module computes with its dequantised weight: the
same values, but no speed is gained.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from autocompress.errors import ModelError

__all__ = ["GROUP_SIZE", "KERNELS", "WeightOnlyLinear", "quantize_weight_only_", "quantize_weight_only_named_",
           "weight_only_codes", "weight_only_kernel", "weight_only_rounded"]

log = logging.getLogger(__name__)

GROUP_SIZE = 32  # input features per int4 scale and zero (the kernel takes 32, 64, 128 or 256)
#: The kernel that computes each weight-only width where the running PyTorch has it.
KERNELS = {8: "aten._weight_int8pack_mm", 4: "aten._weight_int4pack_mm_for_cpu"}
_INT4_ROWS = 16  # the int4 kernel packs output channels in blocks of 16
# the int8 kernel reads input features in blocks (torch 2.13 crashes or computes garbage on others: blocks of 8
# on some CPUs, of 16 on AVX-512 ones): inputs are padded to a multiple of 32
_INT8_COLS = 32


def weight_only_kernel(bits: int, device: torch.device | str = "cpu") -> str | None:
    """The kernel that computes ``bits``-bit weight-only Linears on ``device`` with the running
    PyTorch (e.g. ``"aten._weight_int4pack_mm_for_cpu"``), or ``None`` where there is none: there
    such a Linear computes with its dequantised weight (the same values, at float speed)."""
    if bits not in KERNELS:
        raise ValueError(f"weight-only widths are {sorted(KERNELS)}, not {bits}")
    return KERNELS[bits] if _kernel_runs(bits, torch.device(device).type) else None


# Whether a kernel exists is a fact of the installed PyTorch and the device kind, fixed for the
# process: it is tried once on a small input of the shapes it is given (padded) and remembered; one
# that computes other numbers than the dequantised weight does is not used either.
@functools.cache
def _kernel_runs(bits: int, device_type: str) -> bool:
    gen = torch.Generator().manual_seed(0)
    rows, cols = 2 * _INT4_ROWS, 2 * GROUP_SIZE
    x = torch.randint(-4, 5, (3, cols), generator=gen).to(torch.bfloat16)
    try:
        if bits == 8:
            w = torch.randint(-127, 128, (rows, cols), generator=gen, dtype=torch.int8)
            expected = x.float() @ w.float().T / 64
            got = torch.ops.aten._weight_int8pack_mm(x.to(device_type), w.to(device_type),
                                                     torch.full((rows,), 1 / 64, dtype=torch.bfloat16, device=device_type))
        else:
            codes = torch.randint(0, 16, (rows, cols), generator=gen, dtype=torch.int32)
            expected = x.float() @ (codes.float() - 8).T / 4  # scale 1/4, zero 0: (code − 8) / 4
            scales = torch.zeros(cols // GROUP_SIZE, rows, 2, dtype=torch.bfloat16)
            scales[..., 0] = 0.25
            got = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(device_type), _int4_pack(codes.to(device_type)),
                                                             GROUP_SIZE, scales.to(device_type))
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        log.info("no %d-bit weight-only kernel for %s in torch %s (%s): such layers compute with their dequantised "
                 "weights", bits, device_type, torch.__version__, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return False
    if not torch.allclose(got.float().cpu(), expected, rtol=2**-7, atol=2**-7 * float(expected.abs().max())):
        log.warning("the %d-bit weight-only kernel of torch %s computes wrong numbers on this %s: such layers compute "
                    "with their dequantised weights", bits, torch.__version__, device_type)
        return False
    return True


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous at a 64-byte boundary: the CPU kernels read with aligned vector loads (torch
    2.13's int8 kernel crashes on AVX-512 machines given a weight at another offset, as a tensor read
    from a safetensors file may be)."""
    if t.is_contiguous() and t.data_ptr() % 64 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _int4_pack(codes: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """``codes`` (N, K) in 0..15 as (N, ceil(K/2)) bytes: column 2j in the low four bits, 2j+1 in the high."""
    codes = codes.to(torch.uint8)
    if codes.shape[1] % 2:
        codes = F.pad(codes, (0, 1))
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def _unpack_nibbles(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    return torch.stack([packed & 0xF, packed >> 4], dim=2).reshape(packed.shape[0], -1)[:, :in_features]


def _float_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of an ``nn.Linear`` or a transformers ``Conv1D`` (which stores (in, out))."""
    if isinstance(module, Conv1D):
        return module.weight.detach().T.float()
    if isinstance(module, nn.Linear):
        return module.weight.detach().float()
    raise ModelError(f"weight-only quantisation takes an nn.Linear or a Conv1D, not a {type(module).__name__}")


def weight_only_codes(weight: torch.Tensor, bits: int, group_size: int = GROUP_SIZE) -> dict[str, torch.Tensor]:
    """The state a :class:`WeightOnlyLinear` stores for the float (out, in) ``weight``: int8 codes
    and a bfloat16 scale per output channel, or int4 codes (two a byte) with a bfloat16 scale and
    zero per group of ``group_size`` inputs."""
    out_features, in_features = weight.shape
    if bits == 8:
        # the stored (bfloat16) scale is the one the codes are rounded against
        scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).to(torch.bfloat16)
        codes = torch.round(weight / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
        return {"weight_int8": codes, "scales": scales}
    if bits == 4:
        groups = -(-in_features // group_size)
        padded = F.pad(weight, (0, groups * group_size - in_features), value=float("nan"))
        grouped = padded.reshape(out_features, groups, group_size)
        lo = torch.nan_to_num(grouped, nan=float("inf")).amin(dim=2)
        hi = torch.nan_to_num(grouped, nan=float("-inf")).amax(dim=2)
        scale = ((hi - lo) / 15).clamp_min(1e-12).to(torch.bfloat16)
        zero = (lo + 8 * scale.float()).to(torch.bfloat16)
        codes = torch.round((grouped - zero.float()[..., None]) / scale.float()[..., None] + 8).clamp(0, 15)
        codes = codes.reshape(out_features, -1)[:, :in_features]
        return {"weight_int4": _pack_nibbles(codes),
                "scales_and_zeros": torch.stack([scale, zero], dim=2).transpose(0, 1).contiguous()}
    raise ModelError(f"weight-only widths are {sorted(KERNELS)}, not {bits}")


@torch.no_grad()
def weight_only_rounded(weight: torch.Tensor, bits: int, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """The float (out, in) weight a ``bits``-bit :class:`WeightOnlyLinear` made from ``weight``
    computes with (its codes dequantised): what quantisation-aware training rounds to."""
    return _dequantized(weight_only_codes(weight.detach().float(), bits, group_size), bits, weight.shape[1], group_size)


def _dequantized(tensors: dict[str, torch.Tensor], bits: int, in_features: int, group_size: int) -> torch.Tensor:
    """The float (out, in) weight that weight-only state ``tensors`` stands for."""
    if bits == 8:
        return tensors["weight_int8"].float() * tensors["scales"].float()[:, None]
    codes = _unpack_nibbles(tensors["weight_int4"], in_features).float()
    sz = tensors["scales_and_zeros"].float()
    scale = sz[..., 0].T.repeat_interleave(group_size, dim=1)[:, :in_features]
    zero = sz[..., 1].T.repeat_interleave(group_size, dim=1)[:, :in_features]
    return (codes - 8) * scale + zero


class WeightOnlyLinear(nn.Module):
    """A Linear whose weight is int8 per output channel (``bits=8``) or int4 per group of
    :data:`GROUP_SIZE` inputs (``bits=4``). It computes ``x @ W.T + bias`` with ``x`` rounded to
    bfloat16 and the product rounded to bfloat16, and returns the input's dtype.

    State: ``weight_int8`` (out, in) int8 and ``scales`` (out,) bfloat16; or ``weight_int4``
    (out, ceil(in/2)) uint8, two codes a byte, and ``scales_and_zeros`` (groups, out, 2) bfloat16;
    and the float ``bias`` when there is one.
    """

    def __init__(self, in_features: int, out_features: int, bits: int, tensors: dict[str, torch.Tensor], *,
                 group_size: int = GROUP_SIZE) -> None:
        super().__init__()
        if bits not in KERNELS:
            raise ModelError(f"weight-only widths are {sorted(KERNELS)}, not {bits}")
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        # the kernel's layout of the weight, with the state it was made from: (codes, scales, their versions, layout)
        self._prepared: tuple[torch.Tensor, torch.Tensor, tuple[int, int], Any] | None = None
        groups = -(-in_features // group_size)
        expected = ({"weight_int8": ((out_features, in_features), torch.int8), "scales": ((out_features,), torch.bfloat16)}
                    if bits == 8 else
                    {"weight_int4": ((out_features, -(-in_features // 2)), torch.uint8),
                     "scales_and_zeros": ((groups, out_features, 2), torch.bfloat16)})
        for name, (shape, dtype) in expected.items():
            t = tensors.get(name)
            if t is None or tuple(t.shape) != shape or t.dtype != dtype:
                got = "nothing" if t is None else f"{t.dtype} {list(t.shape)}"
                raise ModelError(f"a {bits}-bit weight-only Linear {in_features}→{out_features} needs {name} "
                                 f"{dtype} {list(shape)}, got {got}")
            self.register_buffer(name, t.contiguous())
        bias = tensors.get("bias")
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ModelError(f"a weight-only Linear with {out_features} outputs got a bias of shape {list(bias.shape)}")
        self.bias: torch.Tensor | None
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_float(cls, module: nn.Module, bits: int, *, group_size: int = GROUP_SIZE) -> "WeightOnlyLinear":
        """The weight-only form of an ``nn.Linear`` or a transformers ``Conv1D`` (its float weight is left as it is)."""
        weight = _float_weight(module)
        out_features, in_features = weight.shape
        bias = None if module.bias is None else module.bias.detach().clone()
        tensors = weight_only_codes(weight, bits, group_size)
        if bias is not None:
            tensors["bias"] = bias
        return cls(in_features, out_features, bits, tensors, group_size=group_size)

    def codes(self) -> torch.Tensor:
        """The integer codes, (out, in): -127..127 at 8 bits, 0..15 at 4."""
        if self.bits == 8:
            return self.weight_int8
        return _unpack_nibbles(self.weight_int4, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The (out, in) float32 weight the module computes with."""
        return _dequantized(dict(self.named_buffers(recurse=False)), self.bits, self.in_features, self.group_size)

    @property
    def kernel(self) -> str | None:
        """The kernel this module computes with where its state lives (``None``: its dequantised weight)."""
        return weight_only_kernel(self.bits, (self.scales if self.bits == 8 else self.scales_and_zeros).device)

    def _prepare(self) -> Any:
        """The weight in the layout this device's kernel takes (or dequantised where there is no
        kernel), made once and again only when the state is replaced, moved or changed in place."""
        buffers = self._buffers
        codes, scales = (buffers["weight_int8"], buffers["scales"]) if self.bits == 8 else (
            buffers["weight_int4"], buffers["scales_and_zeros"])
        versions = (-1 if codes.is_inference() else codes._version, -1 if scales.is_inference() else scales._version)
        made = self._prepared
        if made is not None and made[0] is codes and made[1] is scales and made[2] == versions:
            return made[3]
        with torch.no_grad(), torch.inference_mode(False):
            if self.kernel is None:
                ready: Any = self.dequantized_weight()
            elif self.bits == 8:
                cols = -(-self.in_features // _INT8_COLS) * _INT8_COLS
                weight = self.weight_int8 if cols == self.in_features else F.pad(self.weight_int8, (0, cols - self.in_features))
                ready = (_aligned(weight), _aligned(self.scales.to(torch.bfloat16)), cols)
            else:  # pad to the kernel's blocks: 16 outputs, whole groups of inputs
                rows = -(-self.out_features // _INT4_ROWS) * _INT4_ROWS
                cols = self.scales_and_zeros.shape[0] * self.group_size
                padded = F.pad(self.codes().to(torch.int32), (0, cols - self.in_features, 0, rows - self.out_features))
                sz = F.pad(self.scales_and_zeros.to(torch.bfloat16), (0, 0, 0, rows - self.out_features))
                ready = (_aligned(_int4_pack(padded)), _aligned(sz), cols)
        self._prepared = (codes, scales, versions, ready)
        return ready

    def _apply(self, fn: Any, recurse: bool = True) -> "WeightOnlyLinear":
        self._prepared = None  # moved or cast: made again where it runs next (and the old state is not kept alive)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        ready = self._prepare()
        if isinstance(ready, torch.Tensor):  # no kernel here: the dequantised weight, rounded as the kernel rounds
            y = F.linear(flat.float(), ready).to(torch.bfloat16)
        else:
            weight, scales, cols = ready
            if cols != self.in_features:  # zero inputs against the padding columns
                flat = F.pad(flat, (0, cols - self.in_features))
            flat = _aligned(flat)
            if self.bits == 8:
                y = torch.ops.aten._weight_int8pack_mm(flat, weight, scales)
            else:
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, weight, self.group_size, scales)
            if y.shape[1] != self.out_features:
                y = y[:, :self.out_features]
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        how = "int8 per channel" if self.bits == 8 else f"int4 per {self.group_size} inputs"
        return f"in_features={self.in_features}, out_features={self.out_features}, {how}, bias={self.bias is not None}"


def _is_float_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear or isinstance(module, Conv1D)


def quantize_weight_only_(module: nn.Module, bits: int) -> None:
    """Replace every ``nn.Linear`` and ``Conv1D`` inside ``module`` by a ``bits``-bit :class:`WeightOnlyLinear`.

    A replaced module's float weight is not touched, so a weight it shares (a head tied to the
    input embedding) keeps its values."""
    for name, child in list(module.named_children()):
        if _is_float_linear(child):
            setattr(module, name, WeightOnlyLinear.from_float(child, bits))
        else:
            quantize_weight_only_(child, bits)


def quantize_weight_only_named_(model: nn.Module, names: list[str], bits: int) -> None:
    """Quantise the submodules of ``model`` called ``names`` (Linears themselves, or modules holding them)."""
    for name in names:
        target = model.get_submodule(name)
        if _is_float_linear(target):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, WeightOnlyLinear.from_float(target, bits))
        else:
            quantize_weight_only_(target, bits)
