"""Task metrics as pure functions of a model and tokenised examples."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from autocompress.batches import Encoded

__all__ = ["Accuracy", "Size", "predict_logits", "accuracy", "bootstrap_ci", "model_size"]


@dataclass(frozen=True)
class Accuracy:
    """Accuracy in [0, 1] with a bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Encoded, batch_size: int = 64) -> torch.Tensor:
    """Logits of ``model`` on every example, in the examples' order, shape ``(n, num_labels)``."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out: torch.Tensor | None = None
    for idx, inputs in data.batches(batch_size, by_length=True):
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
        if out is None:
            out = torch.empty((len(data), logits.shape[-1]))
        out[idx] = logits
    if out is None:
        raise ValueError("no examples to evaluate")
    return out


def bootstrap_ci(correct: torch.Tensor, *, level: float = 0.95, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector."""
    g = torch.Generator().manual_seed(seed)
    n = correct.numel()
    draws = torch.randint(0, n, (samples, n), generator=g)
    means = correct.float()[draws].mean(dim=1)
    lo = torch.quantile(means, (1 - level) / 2).item()
    hi = torch.quantile(means, 1 - (1 - level) / 2).item()
    return lo, hi


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    """Top-1 accuracy of ``logits`` against ``labels``, with a 95 % bootstrap interval."""
    correct = (logits.argmax(dim=-1) == labels).float()
    lo, hi = bootstrap_ci(correct)
    return Accuracy(value=correct.mean().item(), ci_low=lo, ci_high=hi, n=int(correct.numel()))


@dataclass(frozen=True)
class Size:
    """How big a model is: parameters, bytes as serialised, and bytes counting simulated bits."""

    params: int
    serialized_bytes: int  # ``torch.save(state_dict)`` as it is
    effective_bytes: int  # serialised bytes with simulated low-bit layers counted at their width

    @property
    def megabytes(self) -> float:
        return self.effective_bytes / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "megabytes": self.megabytes}


def model_size(model: nn.Module, simulated_bits: dict[str, int] | None = None) -> Size:
    """Size of ``model``; ``simulated_bits`` maps module-name prefixes to their simulated width.

    A fake-quantised Linear is stored in float32, so its weight is re-counted at ``bits`` bits plus
    one float32 scale and zero-point per output channel.
    """
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    serialized = buf.getbuffer().nbytes
    params = 0
    for p in model.parameters():
        params += p.numel()
    # int8 dynamic-quantised Linears keep their weights in packed params, not parameters
    for mod in model.modules():
        packed = getattr(mod, "_packed_params", None)
        if packed is not None and hasattr(mod, "weight"):
            w = mod.weight()
            params += w.numel() + (mod.bias().numel() if mod.bias() is not None else 0)
    effective = serialized
    for prefix, bits in (simulated_bits or {}).items():
        for name, mod in model.named_modules():
            if (name == prefix or name.startswith(prefix + ".")) and isinstance(mod, (nn.Linear, nn.Embedding)):
                w = mod.weight
                effective -= w.numel() * w.element_size()
                effective += (w.numel() * bits + 7) // 8 + w.shape[0] * 8
    return Size(params=params, serialized_bytes=serialized, effective_bytes=effective)
