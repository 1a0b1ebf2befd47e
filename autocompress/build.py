"""The one builder: a plan and the study's workbench in, a candidate model out.

Structure (depth, then head and FFN pruning by the teacher's importance scores) → recovery
(seeded knowledge distillation from the teacher, when the plan changes structure and the study
recovers) → bit-widths. A trial, an export and every benchmark call :func:`candidate`, so what is
shipped is what was scored: building is deterministic, and the same plan gives the same model.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from autocompress.config import RecoveryConfig
from autocompress.distill import recover_
from autocompress.latency.measure import compute_lock
from autocompress.plan import CompressionPlan
from autocompress.transforms import apply_bits_, apply_structure_
from autocompress.workbench import Workbench

__all__ = ["Candidate", "candidate", "changes_structure", "needs_recovery"]


@dataclass
class Candidate:
    """A built candidate: the model as scored, and how it was made."""

    model: nn.Module  # shaped, recovered (when asked and needed), bit-widths applied; eval mode
    recovery: dict[str, Any]  # {"recovered": False}, or the distillation's facts
    float_model: nn.Module | None = None  # the same model before bit-widths (with ``keep_float``): what export saves

    @property
    def recovered(self) -> bool:
        return bool(self.recovery.get("recovered"))


def changes_structure(plan: CompressionPlan) -> bool:
    """True when the plan drops layers or prunes (what distillation can recover from)."""
    return any((not lp.keep) or lp.heads < 1.0 or lp.ffn < 1.0 for lp in plan.layers)


def needs_recovery(recovery: RecoveryConfig, plan: CompressionPlan) -> bool:
    """True when the study recovers (``recovery.epochs`` > 0) and the plan changes structure."""
    return recovery.epochs > 0 and changes_structure(plan)


def candidate(bench: Workbench, plan: CompressionPlan, *, recover: bool = True, keep_float: bool = False) -> Candidate:
    """The candidate for ``plan``: a copy of the teacher shaped by the plan, recovered when ``recover``
    and :func:`needs_recovery`, then quantised to the plan's bit-widths. The teacher is untouched.

    Raises :class:`~autocompress.errors.PlanError` when the plan does not fit the model.
    """
    student = copy.deepcopy(bench.teacher.model)
    apply_structure_(student, plan, bench.importance)
    facts: dict[str, Any] = {"recovered": False}
    if recover and needs_recovery(bench.config.recovery, plan):
        start = time.perf_counter()
        with compute_lock():  # no local worker times a candidate meanwhile
            loss = recover_(student, bench.transfer_logits, bench.transfer, bench.config.recovery)
        facts = {
            "recovered": True,
            "recovery_seconds": time.perf_counter() - start,
            "recovery_loss": loss,
            "recovery_examples": len(bench.transfer),
        }
    student.eval()
    float_model = copy.deepcopy(student) if keep_float else None
    apply_bits_(student, plan)
    return Candidate(model=student.eval(), recovery=facts, float_model=float_model)
