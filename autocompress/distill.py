"""Teacher fine-tuning and knowledge-distillation recovery of compressed students.

Both train on CUDA when it is available and on the CPU otherwise; the model is returned to the
CPU afterwards (latency is measured there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.batches import Encoded
from autocompress.config import RecoveryConfig, TrainConfig

__all__ = ["train_device", "fine_tune_", "kd_loss", "recover_"]

log = logging.getLogger(__name__)

#: Called as ``progress(step, total_steps, loss)`` during training.
Progress = Callable[[int, int, float], None]


def train_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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


def _train_(
    model: nn.Module,
    data: Encoded,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    weight_decay: float,
    warmup_ratio: float,
    seed: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    progress: Progress | None,
) -> float:
    """Shared AdamW + linear-warmup/decay loop; returns the mean loss of the last 50 steps."""
    device = train_device()
    torch.manual_seed(seed)
    model.to(device).train()
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total = max(1, math.ceil(steps_per_epoch * epochs))
    warmup = int(total * warmup_ratio)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    step, recent = 0, []
    epoch = 0
    while step < total:
        for idx, inputs in data.batches(batch_size, shuffle=True, seed=seed + epoch):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            logits = model(**inputs).logits
            loss = loss_fn(logits, idx, data.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            recent = (recent + [loss.item()])[-50:]
            if progress is not None:
                progress(step, total, recent[-1])
            if step >= total:
                break
        epoch += 1
    model.to("cpu").eval()
    return sum(recent) / len(recent)


def fine_tune_(model: nn.Module, data: Encoded, cfg: TrainConfig, progress: Progress | None = None) -> float:
    """Fine-tune ``model`` on labelled ``data`` with cross-entropy; returns the final loss."""
    log.info("fine-tuning the teacher: %d examples, %.2g epochs, on %s", len(data), cfg.epochs, train_device())
    return _train_(
        model,
        data,
        epochs=cfg.epochs,
        lr=cfg.learning_rate,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        seed=cfg.seed,
        loss_fn=lambda logits, idx, y: F.cross_entropy(logits, y),
        progress=progress,
    )


def recover_(
    student: nn.Module,
    teacher_logits: torch.Tensor,
    data: Encoded,
    cfg: RecoveryConfig,
    progress: Progress | None = None,
) -> float:
    """Distil ``teacher_logits`` (precomputed on ``data``) into ``student``; returns the final loss."""
    if teacher_logits.shape[0] != len(data):
        raise ValueError(f"{teacher_logits.shape[0]} teacher logits for {len(data)} examples")
    device = train_device()
    targets = teacher_logits.to(device)
    t, a = cfg.temperature, cfg.alpha
    return _train_(
        student,
        data,
        epochs=cfg.epochs,
        lr=cfg.learning_rate,
        batch_size=cfg.batch_size,
        weight_decay=0.0,
        warmup_ratio=0.0,
        seed=cfg.seed,
        loss_fn=lambda logits, idx, y: kd_loss(logits, targets[idx.to(device)], y, t, a),
        progress=progress,
    )
