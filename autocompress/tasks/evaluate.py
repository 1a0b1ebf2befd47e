"""Task metrics as pure functions of a model and tokenised examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from autocompress.tasks.batches import Encoded
from autocompress.errors import UnknownNameError

__all__ = [
    "METRICS",
    "Accuracy",
    "Metric",
    "collect_logits",
    "predict_logits",
    "accuracy",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "macro_f1",
    "macro_f1_of",
    "metric",
]


@dataclass(frozen=True)
class Estimate:
    """A proportion in [0, 1] measured on ``n`` examples, with its 95 % bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Accuracy(Estimate):
    """Accuracy in [0, 1] with its bootstrap interval."""


def collect_logits(
    data: Encoded, forward: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch_size: int = 64
) -> torch.Tensor:
    """``forward``'s logits on every example, in the examples' order, shape ``(n, num_labels)``.

    Batches group examples of similar length; any runtime (PyTorch, ONNX Runtime) plugs in as
    ``forward``, a function of one batch of tokenised inputs.
    """
    out: torch.Tensor | None = None
    for idx, inputs in data.batches(batch_size, by_length=True):
        logits = forward(inputs).float().cpu()
        if out is None:
            out = torch.empty((len(data), logits.shape[-1]))
        out[idx] = logits
    if out is None:
        raise ValueError("no examples to evaluate")
    return out


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Encoded, batch_size: int = 64) -> torch.Tensor:
    """Logits of ``model`` on every example, in the examples' order, shape ``(n, num_labels)``."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return collect_logits(data, lambda inputs: model(**{k: v.to(device) for k, v in inputs.items()}).logits, batch_size)


def bootstrap_ci(correct: torch.Tensor, *, level: float = 0.95, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector."""
    g = torch.Generator().manual_seed(seed)
    n = correct.numel()
    draws = torch.randint(0, n, (samples, n), generator=g)
    means = correct.float()[draws].mean(dim=1)
    lo = torch.quantile(means, (1 - level) / 2).item()
    hi = torch.quantile(means, 1 - (1 - level) / 2).item()
    return lo, hi


def paired_bootstrap_ci(a: torch.Tensor, b: torch.Tensor, *, level: float = 0.95, samples: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) − mean(b)`` for two 0/1 vectors over the same
    examples (say, which examples the teacher and a student get right): each draw resamples the
    examples once for both, so what they get right or wrong together cancels."""
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must cover the same examples, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap_ci(a.float() - b.float(), level=level, samples=samples, seed=seed)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    """Top-1 accuracy of ``logits`` against ``labels``, with a 95 % bootstrap interval."""
    correct = (logits.argmax(dim=-1) == labels).float()
    lo, hi = bootstrap_ci(correct)
    return Accuracy(value=correct.mean().item(), ci_low=lo, ci_high=hi, n=int(correct.numel()))


@dataclass(frozen=True)
class Metric(Estimate):
    """A task metric (named as in ``task.metric``) in [0, 1], higher is better, with its bootstrap
    interval. A metric whose own unit is not a share (perplexity, KL divergence) keeps it in
    ``natural`` with its interval, and ``value`` is the teacher's figure relative to it (perplexity:
    the teacher's over the candidate's; KL: exp(−KL)), so that 1 is the teacher's quality."""

    name: str
    natural: float | None = None  # the metric in its own unit (perplexity, nats), where value is relative
    natural_low: float | None = None
    natural_high: float | None = None
    teacher_natural: float | None = None  # the teacher's figure in that unit, on the same examples

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("value", "ci_low", "ci_high", "n")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metric":
        def opt(key: str) -> float | None:
            return None if d.get(key) is None else float(d[key])

        return cls(name=str(d["name"]), value=float(d["value"]), ci_low=float(d["ci_low"]),
                   ci_high=float(d["ci_high"]), n=int(d["n"]), natural=opt("natural"),
                   natural_low=opt("natural_low"), natural_high=opt("natural_high"),
                   teacher_natural=opt("teacher_natural"))


def macro_f1_of(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int | None = None) -> torch.Tensor:
    """Macro-F1 of each row of ``predicted`` against the same row of ``labels``; shape ``(rows,)``.

    Per class ``F1 = 2·TP / (2·TP + FP + FN)``, averaged over the classes that occur in the row's
    labels or predictions (a class absent from both is not counted, as in scikit-learn's default).
    1-D inputs are one row.
    """
    one = predicted.dim() == 1
    p, y = (predicted[None], labels[None]) if one else (predicted, labels)
    k = int(num_labels if num_labels is not None else max(int(p.max()), int(y.max())) + 1)
    rows = p.shape[0]
    offset = (torch.arange(rows) * k)[:, None]  # counts per (row, class) with one bincount each

    def counts(cls: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        flat = (offset + cls).reshape(-1)
        if where is not None:
            flat = flat[where.reshape(-1)]
        return torch.bincount(flat, minlength=rows * k).view(rows, k).float()

    tp = counts(y, p == y)
    denom = counts(p) + counts(y)  # 2·TP + FP + FN
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    out = f1.sum(1) / present.sum(1).clamp_min(1)
    return out[0] if one else out


def macro_f1(logits: torch.Tensor, labels: torch.Tensor, *, samples: int = 1000, seed: int = 0) -> Metric:
    """Macro-F1 of ``logits`` against ``labels``, with a 95 % percentile-bootstrap interval."""
    predicted = logits.argmax(dim=-1)
    k = logits.shape[-1]
    value = macro_f1_of(predicted, labels, k).item()
    g = torch.Generator().manual_seed(seed)
    n = labels.numel()
    draws = torch.randint(0, n, (samples, n), generator=g)
    boot = macro_f1_of(predicted[draws], labels[draws], k)
    lo = torch.quantile(boot, 0.025).item()
    hi = torch.quantile(boot, 0.975).item()
    return Metric(name="macro_f1", value=value, ci_low=lo, ci_high=hi, n=int(n))


def _accuracy_metric(logits: torch.Tensor, labels: torch.Tensor) -> Metric:
    return Metric(name="accuracy", **accuracy(logits, labels).to_dict())


#: Task metrics by the name ``task.metric`` uses; each maps (logits, labels) to a :class:`Metric`.
METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], Metric]] = {
    "accuracy": _accuracy_metric,
    "macro_f1": macro_f1,
}


def metric(name: str, logits: torch.Tensor, labels: torch.Tensor) -> Metric:
    """The task metric ``name`` of ``logits`` against ``labels``."""
    if name not in METRICS:
        raise UnknownNameError("metric", name, METRICS)
    return METRICS[name](logits, labels)
