"""Training early-exit heads: distilled from the teacher's logits with the student itself frozen."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from autocompress.ops.exits import EarlyExit, pool
from autocompress.tasks.batches import Encoded
from autocompress.tasks.classification import kd_loss
from autocompress.train.distill import train_device

__all__ = ["ExitTraining", "train_exits_"]

@dataclass(frozen=True)
class ExitTraining:
    """How the exit heads are distilled (the student stays frozen)."""

    epochs: float = 3.0  # passes over the distillation set (after one pass of the frozen student)
    learning_rate: float = 1e-3
    batch_size: int = 32
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (teacher) loss; 1 − alpha for the labels
    seed: int = 0


def train_exits_(model: EarlyExit, data: Encoded, teacher_logits: torch.Tensor, cfg: ExitTraining) -> dict[str, Any]:
    """Distil ``model``'s exit heads from ``teacher_logits`` on ``data`` (the student's own weights
    do not change); returns what the training did.

    The student is frozen, so its first-token state at each exit is computed once, in one pass
    over ``data``; the heads then train on those states alone, and every epoch after the pass
    costs almost nothing.
    """
    device = train_device()
    start = time.perf_counter()
    model.to(device)
    model.model.eval()
    n = len(data)
    states = torch.zeros(len(model.positions), n, int(model.config.hidden_size))
    with torch.inference_mode():
        for idx, inputs in data.batches(max(cfg.batch_size, 64), by_length=True):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            hidden = model.model(**inputs, output_hidden_states=True).hidden_states
            for i, pos in enumerate(model.positions):
                states[i, idx] = pool(hidden[pos + 1], inputs.get("attention_mask"), model.pooling).float().cpu()
    pass_seconds = time.perf_counter() - start
    opt = torch.optim.AdamW(model.heads.parameters(), lr=cfg.learning_rate)
    steps = max(1, round(cfg.epochs * n / cfg.batch_size))
    g = torch.Generator().manual_seed(cfg.seed)
    model.heads.train()
    done, loss_sum, order = 0, 0.0, torch.randperm(n, generator=g)
    while done < steps:
        at = (done * cfg.batch_size) % n
        if done and at < cfg.batch_size:
            order = torch.randperm(n, generator=g)
        idx = order[at: at + cfg.batch_size]
        soft, hard = teacher_logits[idx].to(device), data.labels[idx].to(device)
        loss = sum(kd_loss(head(states[i, idx].to(device)), soft, hard, cfg.temperature, cfg.alpha)
                   for i, head in enumerate(model.heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        done += 1
    model.heads.eval()
    model.to("cpu")
    return {"exit_steps": steps, "exit_seconds": time.perf_counter() - start, "exit_pass_seconds": pass_seconds,
            "exit_loss": loss_sum / steps}
