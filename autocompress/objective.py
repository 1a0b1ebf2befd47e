"""One trial: plan → apply → recover → evaluate → measure → record.

:func:`prepare` builds the study's runtime state once per process (data, tokenizer, the cached
teacher); :class:`Objective` then turns each Optuna trial into a compressed candidate and
returns its three objective values: accuracy (%, maximise), latency relative to the
uncompressed teacher measured in the same rounds (minimise), and size in MB (minimise).
Everything needed to understand or rebuild the candidate is stored on the trial.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from autocompress.batches import Encoded, encode
from autocompress.config import StudyConfig
from autocompress.data import TaskData, load_task
from autocompress.distill import Progress, recover_
from autocompress.errors import PlanError
from autocompress.evaluate import Size, accuracy, model_size, predict_logits
from autocompress.latency.measure import example_inputs, host_info, measure_pair
from autocompress.models import ArchInfo, arch_info, load_tokenizer
from autocompress.plan import CompressionPlan
from autocompress.space import check_space, suggest_plan
from autocompress.teacher import Teacher, prepare_teacher
from autocompress.transforms import apply_bits_, apply_structure_, simulated_widths

__all__ = ["OBJECTIVES", "Workbench", "prepare", "Objective", "plan_changes_structure"]

log = logging.getLogger(__name__)

#: (name, direction) of the study's objectives, in the order the objective returns them.
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("accuracy", "maximize"),
    ("relative_latency", "minimize"),
    ("size_mb", "minimize"),
)


@dataclass
class Workbench:
    """Runtime state shared by every trial of a study in this process."""

    config: StudyConfig
    task: TaskData
    train: Encoded
    eval: Encoded
    teacher: Teacher
    arch: ArchInfo
    teacher_size: Size
    latency_inputs: dict[str, torch.Tensor]
    host: dict[str, Any]


def prepare(
    cfg: StudyConfig,
    cache_dir: Path,
    progress: Progress | None = None,
    config_file: str | None = None,
    task: TaskData | None = None,
) -> Workbench:
    """Load data (unless given) and tokenizer, and get the fine-tuned teacher (cached when possible)."""
    task = task or load_task(cfg.task)
    tokenizer = load_tokenizer(cfg.model.source)
    train = encode(tokenizer, task.train, cfg.task.max_length)
    eval_ = encode(tokenizer, task.eval, cfg.task.max_length)
    teacher = prepare_teacher(cfg, task.num_labels, train, eval_, cache_dir, progress)
    arch = arch_info(teacher.model)
    check_space(cfg.space, arch, file=config_file)
    return Workbench(
        config=cfg,
        task=task,
        train=train,
        eval=eval_,
        teacher=teacher,
        arch=arch,
        teacher_size=model_size(teacher.model),
        latency_inputs=example_inputs(cfg.profile, teacher.model.config.vocab_size),
        host=host_info(),
    )


def plan_changes_structure(plan: CompressionPlan) -> bool:
    """True when the plan drops layers or prunes (what distillation can recover from)."""
    return any((not lp.keep) or lp.heads < 1.0 or lp.ffn < 1.0 for lp in plan.layers)


class Objective:
    """Callable for ``study.optimize``: builds, scores and records one candidate per trial."""

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench

    def build(self, plan: CompressionPlan) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The candidate model for ``plan`` and facts about how it was made."""
        b = self.bench
        rec = b.config.recovery
        student = copy.deepcopy(b.teacher.model)
        apply_structure_(student, plan)
        facts: dict[str, Any] = {"recovered": False}
        if rec.epochs > 0 and plan_changes_structure(plan):
            n = min(len(b.train), rec.max_examples or len(b.train))
            data = b.train.head(n)
            start = time.perf_counter()
            loss = recover_(student, b.teacher.train_logits[:n], data, rec)
            facts.update(recovered=True, recovery_seconds=time.perf_counter() - start, recovery_loss=loss, recovery_examples=n)
        apply_bits_(student, plan)
        student.eval()
        return student, facts

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        b = self.bench
        cfg = b.config
        plan = suggest_plan(trial, cfg.space, b.arch)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("plan_summary", plan.describe())
        trial.set_user_attr("simulated", plan.simulated)
        t0 = time.perf_counter()
        try:
            student, facts = self.build(plan)
        except PlanError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        t1 = time.perf_counter()
        logits = predict_logits(student, b.eval)
        acc = accuracy(logits, b.eval.labels)
        agreement = (logits.argmax(-1) == b.teacher.eval_logits.argmax(-1)).float().mean().item()
        t2 = time.perf_counter()
        lat = measure_pair(b.teacher.model, student, cfg.profile, inputs=b.latency_inputs)
        t3 = time.perf_counter()
        size = model_size(student, simulated_widths(student, plan))
        acc_pct = 100 * acc.value
        drop = 100 * b.teacher.eval_accuracy.value - acc_pct
        trial.set_user_attr("accuracy", acc.to_dict())
        trial.set_user_attr("accuracy_drop", drop)
        trial.set_user_attr("teacher_agreement", agreement)
        trial.set_user_attr("latency", lat.to_dict())
        trial.set_user_attr("speedup", lat.speedup)
        trial.set_user_attr("size", size.to_dict())
        trial.set_user_attr("size_ratio", size.effective_bytes / b.teacher_size.effective_bytes)
        trial.set_user_attr("fidelity", "full")
        trial.set_user_attr("host", b.host)
        trial.set_user_attr(
            "seconds", {"build": t1 - t0, "evaluate": t2 - t1, "latency": t3 - t2, **{k: v for k, v in facts.items() if k.endswith("seconds")}}
        )
        trial.set_user_attr("recovery", facts)
        if cfg.objectives.max_accuracy_drop is not None:
            trial.set_constraint("accuracy_drop", drop - cfg.objectives.max_accuracy_drop)
        log.info(
            "trial %d: %s → acc %.2f%% (drop %.2f), %.2f× faster, %.1f MB",
            trial.number, plan.describe(), acc_pct, drop, lat.speedup, size.megabytes,
        )
        return acc_pct, lat.ratio, size.megabytes

