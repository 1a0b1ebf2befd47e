"""The one builder: a plan and what it is built from (a study's workbench, or a model, a teacher's
outputs and examples: :class:`BuildSource`) in, a candidate model out.

Structure (depth, then head and FFN pruning by the teacher's importance scores, sharing and the
kept vocabulary: :func:`autocompress.ops.apply_structure_`) → recovery
(seeded knowledge distillation from the teacher, when the study recovers and the plan changes
structure, or only quantises and the study asks for a quantisation-aware pass; a plan that
quantises distils through its kernels' rounding, :mod:`autocompress.train.quant_aware`) → exit
heads (when the plan has early exits: distilled from the teacher with the student frozen) →
bit-widths (of the student; the small exit heads stay float). A trial, an export and every
benchmark call :func:`candidate`, so what is shipped is what was scored: building is
deterministic, and the same plan gives the same model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.errors import PlanError
from autocompress.latency.measure import compute_lock
from autocompress.ops import Importance, Selection, apply_bits_, apply_structure_, attach_exits
from autocompress.ops.quantize import kernel_roundings
from autocompress.ops.vocab import VocabularyCorpus
from autocompress.schema.config import ExitsSpace, RecoveryConfig
from autocompress.schema.plan import CompressionPlan
from autocompress.search.workbench import Workbench
from autocompress.tasks.batches import Encoded
from autocompress.tasks.kind import TaskKind
from autocompress.train.distill import TeacherStates, TrainingRun, distillation
from autocompress.train.exits import ExitTraining, train_exits_

__all__ = ["Build", "BuildSource", "Candidate", "add_exits", "candidate", "needs_recovery", "quantize_only_pass",
           "recovery_epochs", "source_of"]


@dataclass(frozen=True)
class BuildSource:
    """What candidates are built from, besides their plans: the model to compress (a study's
    teacher), how its units rank, and the distillation set with the teacher's outputs on it."""

    model: nn.Module  # compressed copies are made of it; never modified
    kind: TaskKind  # the distillation loss
    recovery: RecoveryConfig  # how (and whether) a changed structure is recovered
    exits: ExitsSpace  # how exit heads are trained
    transfer: Encoded  # the distillation set
    transfer_logits: torch.Tensor  # the teacher's outputs on ``transfer``
    importance: Importance = Importance()  # which heads and neurons a ratio keeps (magnitude where absent)
    transfer_states: TeacherStates | None = None  # the teacher's hidden states on ``transfer`` (hidden-state distillation)
    vocabulary: VocabularyCorpus | None = None  # token counts a plan's kept vocabulary is chosen from
    eval_ids: list[list[int]] | None = None  # the eval split's token ids: the share a kept vocabulary drops
    budget_examples: int | None = None  # the examples ``recovery.epochs`` count (None: all of ``transfer``)


def source_of(bench: Workbench) -> BuildSource:
    """What a study's trials are built from."""
    return BuildSource(model=bench.teacher.model, kind=bench.kind, recovery=bench.config.recovery,
                       exits=bench.config.space.exits, transfer=bench.transfer, transfer_logits=bench.transfer_logits,
                       importance=bench.importance, transfer_states=bench.transfer_states, vocabulary=bench.vocabulary,
                       eval_ids=bench.eval.input_ids, budget_examples=bench.budget_examples)


@dataclass
class Candidate:
    """A built candidate: the model as scored, and how it was made."""

    model: nn.Module  # shaped, recovered (when asked and needed), bit-widths applied; eval mode
    recovery: dict[str, Any]  # {"recovered": False}, or the distillation's facts
    float_model: nn.Module | None = None  # the same model before bit-widths (with ``keep_float``): what export saves

    @property
    def recovered(self) -> bool:
        return bool(self.recovery.get("recovered"))


def needs_recovery(recovery: RecoveryConfig, plan: CompressionPlan) -> bool:
    """True when the study recovers (``recovery.epochs`` > 0) and the plan changes structure, or
    only quantises and :func:`quantize_only_pass` gives it a quantisation-aware pass."""
    return recovery.epochs > 0 and (plan.changes_structure or quantize_only_pass(recovery, plan))


def quantize_only_pass(recovery: RecoveryConfig, plan: CompressionPlan) -> bool:
    """True when ``plan`` keeps every layer and unit, quantises, and the study distils such plans
    through their rounding (``recovery.quantization_aware`` and ``quantize_only_fraction`` > 0)."""
    return (not plan.changes_structure and plan.quantises and recovery.quantization_aware
            and recovery.quantize_only_fraction > 0)


def recovery_epochs(recovery: RecoveryConfig, plan: CompressionPlan) -> float:
    """The plan's distillation budget in epochs: ``recovery.epochs``, times n/k for a student that
    keeps k of the model's n layers when ``recovery.depth_scaled`` (capped at ``max_epochs``).

    A shallower student's step costs about k/n of a full one, so each depth gets about the same
    compute, and the deep cuts, which lose the most, get the most steps. A plan that only
    quantises gets ``quantize_only_fraction`` of ``recovery.epochs``.
    """
    if not plan.changes_structure:
        return recovery.epochs * recovery.quantize_only_fraction
    if not recovery.depth_scaled:
        return recovery.epochs
    scale = plan.num_layers / max(1, len(plan.kept_layers))
    return max(recovery.epochs, min(recovery.max_epochs, recovery.epochs * scale))


class Build:
    """A candidate built in steps: shaped at once, distilled in as many steps as asked (a trial
    scores it part-way), then quantised. The steps give the model that :func:`candidate` builds in
    one go: the distillation is one :class:`~autocompress.train.distill.TrainingRun`."""

    def __init__(self, source: Workbench | BuildSource, plan: CompressionPlan, *, recover: bool = True,
                 scale: float = 1.0) -> None:
        self.source = src = source_of(source) if isinstance(source, Workbench) else source
        self.plan = plan
        self.scale = scale  # the distillation's epochs as a multiple of recovery_epochs' (a refinement's > 1)
        self.student = copy.deepcopy(src.model)
        self.vocabulary: dict[str, Any] = {}
        vocabulary = None
        if plan.vocab_min_count is not None:
            if src.vocabulary is None:
                raise PlanError("the plan prunes the vocabulary and the study's space.vocabulary.keep offers only all")
            vocabulary = src.vocabulary.choice(plan.vocab_min_count)
            self.vocabulary = {"vocabulary": src.vocabulary.facts(vocabulary, plan.vocab_min_count, src.eval_ids or [])}
        apply_structure_(self.student, plan, Selection(importance=src.importance, vocabulary=vocabulary))
        self.run: TrainingRun | None = None
        if recover and needs_recovery(src.recovery, plan):
            roundings = kernel_roundings(self.student, plan) if src.recovery.quantization_aware else []
            self.run = distillation(self.student, src.transfer_logits, src.transfer, src.recovery,
                                    epochs=scale * recovery_epochs(src.recovery, plan), states=src.transfer_states,
                                    kept=plan.kept_layers, output_loss=src.kind.distillation_loss, roundings=roundings,
                                    epoch_examples=src.budget_examples)

    @property
    def recovers(self) -> bool:
        return self.run is not None

    def recover_to(self, fraction: float) -> None:
        """Distil up to ``fraction`` of the budget (no-op without recovery)."""
        if self.run is None:
            return
        with compute_lock():  # no local worker times a candidate meanwhile
            self.run.run_to(math.ceil(fraction * self.run.total_steps))

    def snapshot(self) -> nn.Module:
        """The candidate as it stands (a quantised copy; the build goes on)."""
        model = copy.deepcopy(self.student)
        apply_bits_(model, self.plan)
        return model.eval()

    def finish(self, *, keep_float: bool = False) -> Candidate:
        """Distil the rest of the budget and quantise: the candidate itself."""
        facts: dict[str, Any] = {"recovered": False}
        if self.run is not None:
            self.recover_to(1.0)
            facts = {
                "recovered": True,
                "recovery_seconds": self.run.seconds,
                "recovery_loss": self.run.loss,
                "recovery_examples": len(self.source.transfer),
                "recovery_steps": self.run.total_steps,
                "recovery_epochs": self.scale * recovery_epochs(self.source.recovery, self.plan),
                "quantization_aware": bool(self.run.roundings),
                "rounded_modules": len(self.run.roundings),
            }
        facts.update(self.vocabulary)
        model: nn.Module = self.student
        if self.plan.exits is not None:
            model, exit_facts = add_exits(self.source, self.student, self.plan)
            facts = {**facts, **exit_facts}
        float_model = copy.deepcopy(model) if keep_float else None
        apply_bits_(self.student, self.plan)  # inside the exits' wrapper too: the same module
        return Candidate(model=model.eval(), recovery=facts, float_model=float_model)


def add_exits(source: Workbench | BuildSource, student: nn.Module, plan: CompressionPlan) -> tuple[nn.Module, dict[str, Any]]:
    """``student`` (recovered, float, shaped by ``plan``) with ``plan``'s exit heads, distilled from
    the teacher on the distillation set with the student frozen; and what the training did."""
    if plan.exits is None:
        raise ValueError("the plan has no exits")
    src = source_of(source) if isinstance(source, Workbench) else source
    recovery = src.recovery
    model = attach_exits(student, plan, seed=recovery.seed)
    cfg = ExitTraining(epochs=src.exits.epochs, learning_rate=src.exits.learning_rate, batch_size=recovery.batch_size,
                       temperature=recovery.temperature, alpha=recovery.alpha, seed=recovery.seed)
    with compute_lock():
        facts = train_exits_(model, src.transfer, src.transfer_logits, cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, facts


def candidate(source: Workbench | BuildSource, plan: CompressionPlan, *, recover: bool = True,
              keep_float: bool = False, scale: float = 1.0) -> Candidate:
    """The candidate for ``plan``: a copy of the teacher shaped by the plan, recovered when ``recover``
    and :func:`needs_recovery` (for ``scale`` × :func:`recovery_epochs`: a refined trial's scale
    rebuilds it), then quantised to the plan's bit-widths. The teacher is untouched.

    Raises :class:`~autocompress.errors.PlanError` when the plan does not fit the model.
    """
    return Build(source, plan, recover=recover, scale=scale).finish(keep_float=keep_float)
