"""Sequence classification (single texts or text pairs): the first task kind.

Data are labelled texts (:mod:`autocompress.tasks.data`), tokenised with their labels
(:mod:`autocompress.tasks.batches`); the metric is accuracy or macro-F1 with a bootstrap interval
(:mod:`autocompress.tasks.evaluate`); the teacher is fine-tuned with cross-entropy and students
distil its logits (temperature-scaled KL plus the labels' cross-entropy); latency feeds token ids
and an attention mask; an exit is a small classifier on a layer's pooled state; an export serves
``transformers.pipeline("text-classification")``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.models.adapters import load_classifier
from autocompress.schema.config import TaskConfig
from autocompress.tasks.batches import Encoded, encode
from autocompress.tasks.data import Examples, TaskData, load_task
from autocompress.tasks.evaluate import METRICS, Metric, metric, predict_logits
from autocompress.tasks.kind import TaskKind, register_task_kind

__all__ = ["SequenceClassification", "kd_loss"]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(z_s, y), averaged over the batch."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


@register_task_kind("sequence-classification")
class SequenceClassification(TaskKind):
    """Labelled texts (or text pairs) → one class each."""

    auto_class = "AutoModelForSequenceClassification"
    pipeline = "text-classification"
    metrics = tuple(METRICS)
    supports_exits = True

    def load_data(self, cfg: TaskConfig) -> TaskData:
        return load_task(cfg)

    def encode(self, tokenizer: Any, examples: Examples, max_length: int) -> Encoded:
        return encode(tokenizer, examples, max_length)

    def load_model(self, source: str, data: TaskData | int, *, trust_remote_code: bool = False) -> nn.Module:
        labels = data if isinstance(data, int) else data.num_labels
        return load_classifier(source, labels, trust_remote_code=trust_remote_code)

    def outputs(self, model: nn.Module, data: Encoded, reference: torch.Tensor | None = None) -> torch.Tensor:
        return predict_logits(model, data)

    def metric(self, name: str, outputs: torch.Tensor, data: Encoded, reference: torch.Tensor | None = None) -> Metric:
        return metric(name, outputs, data.labels)

    def training_loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, targets)

    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                          temperature: float, alpha: float) -> torch.Tensor:
        return kd_loss(student, teacher, targets, temperature, alpha)
