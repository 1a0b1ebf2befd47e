"""The fidelity policy: which candidates are worth recovering.

A candidate that needs recovery is first built without it and screened (latency and size are
already final, since recovery changes weights, not shapes; accuracy on a subset of the eval
split). If a full-fidelity trial is at least as fast and as small and already within
``fidelity.margin`` points of the teacher, recovery could not put the candidate on the front: it
is stopped there. Otherwise it is promoted to recovery and the full evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from autocompress.build import needs_recovery
from autocompress.config import StudyConfig
from autocompress.evaluate import Metric
from autocompress.plan import CompressionPlan

__all__ = ["Gate", "staged", "decide"]


@dataclass(frozen=True)
class Gate:
    """What the screen decided for one candidate."""

    blocker: int | None = None  # the full-fidelity trial that made recovery pointless, if any
    reason: str = ""  # why it was stopped, as the trial records it

    @property
    def promote(self) -> bool:
        """Recover the candidate and evaluate it in full."""
        return self.blocker is None


def staged(cfg: StudyConfig, plan: CompressionPlan) -> bool:
    """True when ``plan`` is screened before recovery (the study screens and the plan needs recovery)."""
    return cfg.fidelity.enabled and needs_recovery(cfg.recovery, plan)


def decide(
    cfg: StudyConfig, teacher_percent: float, complete: Sequence[FrozenTrial], ratio: float, size_mb: float, cheap: Metric
) -> Gate:
    """Promote the screened candidate (latency ``ratio``, ``size_mb``, ``cheap`` metric) unless one of
    the ``complete`` trials already dominates what its recovery could reach.

    ``teacher_percent`` is the teacher's task metric in %; the complete trials' values are
    (metric %, latency ratio, size MB).
    """
    floor = teacher_percent - cfg.fidelity.margin
    for t in complete:
        if t.values and t.values[1] <= ratio and t.values[2] <= size_mb and t.values[0] >= floor:
            reason = (
                f"not recovered: trial {t.number} is already as fast, as small and within "
                f"{cfg.fidelity.margin:g} pt of the teacher (cheap {cheap.name} {100 * cheap.value:.1f}%)"
            )
            return Gate(blocker=t.number, reason=reason)
    return Gate()
