"""Gather a study into plain data (no plotting, no HTML): easy to test, reused by every view."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import optuna

from autocompress.schema import legacy
from autocompress.store import record, study_record
from autocompress.report.analysis import (
    OBJECTIVE_TITLES,
    HypervolumeHistory,
    ObjectiveImportance,
    hypervolume_history,
    param_importances,
)
from autocompress.report.quality import METRIC_LABELS, Quality
from autocompress.report.rows import ProfileFigure, TrialRow, trial_row
from autocompress.store.study_record import TeacherFigures
from autocompress.store.urls import mask_url
from autocompress.study.listing import MetricScale, scale_of

__all__ = ["METRIC_LABELS", "ProfileFigure", "TrialRow", "ReportInfo", "collect"]

log = logging.getLogger(__name__)

# METRIC_LABELS (the labels of the task metrics, by ``task.metric``: accuracy, macro-F1, perplexity,
# next-token accuracy, KL divergence) are the labels of autocompress.report.quality.READINGS, which
# also say how each metric reads in its own unit.


@dataclass(frozen=True)
class ReportInfo:
    study_name: str
    config: dict[str, Any]  # the study's config as stored (``StudyRecord.config``)
    teacher: TeacherFigures
    trials: list[TrialRow] = field(default_factory=list)
    target_trials: int | None = None  # the trial budget the study was run to
    hypervolume: HypervolumeHistory | None = None
    importances: tuple[ObjectiveImportance, ...] = ()
    storage: str | None = None  # the storage URL the report was read from (password masked)

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.complete]

    @property
    def profiles(self) -> list[dict[str, Any]]:
        """The study's profiles as stored in its config: the objective's first, then the reported ones."""
        return [p for p in [self.config.get("profile"), *(self.config.get("report_profiles") or [])] if p]

    @property
    def front(self) -> list[TrialRow]:
        return sorted((t for t in self.trials if t.on_front), key=lambda t: -(t.speedup or 0))

    @property
    def refinements(self) -> list[TrialRow]:
        """The complete refinements (see :mod:`autocompress.search.refine`), in the order they ran."""
        return [t for t in self.complete if t.refines is not None]

    @property
    def unrefined(self) -> list[TrialRow]:
        """The trials as they stood before any refinement."""
        return [t for t in self.trials if t.refines is None]

    @property
    def metric(self) -> str:
        """What the first objective measures, as a reader says it ('accuracy', 'macro-F1', 'perplexity')."""
        name = legacy.config_metric(self.config)
        return METRIC_LABELS.get(name, name)

    @property
    def scale(self) -> MetricScale:
        """What the first objective measures and what it is relative to (the teacher's perplexity, ...)."""
        return scale_of(self.config, self.teacher, (t.teacher_natural for t in self.complete))

    @property
    def quality(self) -> Quality:
        """The first objective in words, in the metric's own unit."""
        return Quality(self.scale)

    @property
    def teacher_accuracy(self) -> float | None:
        """The teacher's task metric on the eval split, in %."""
        return self.teacher.percent

    @property
    def teacher_size_mb(self) -> float | None:
        return self.teacher.size_mb

    @property
    def teacher_ms(self) -> float | None:
        """The teacher's median latency on the objective's profile, over every interleaved measurement."""
        ms = sorted(t.baseline_ms for t in self.complete if t.baseline_ms)
        return ms[len(ms) // 2] if ms else None

    @property
    def num_layers(self) -> int:
        return max((len((t.plan or {}).get("layers", [])) for t in self.trials), default=0)

    @property
    def budgets(self) -> tuple[float, ...]:
        """Budgets to name the best candidates at, as points of the first objective below the teacher:
        the metric's common ones (accuracy drops of 0.5, 1 and 2 points; perplexity 5, 10 and 20 % above
        the teacher's) and the study's own."""
        return self.quality.budgets

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def collect(study: optuna.Study, storage: str | None = None) -> ReportInfo:
    """Everything the report shows, read from the study's storage alone.

    ``storage`` is the URL the study was opened from (shown in the page, password masked).
    """
    trials = study.get_trials(deepcopy=False)
    front = {t.number for t in record.front(study)}
    refined = any(record.REFINES in t.user_attrs for t in trials)
    before = {t.number for t in record.front_before_refinement(study)} if refined else None
    rows = [trial_row(t, front, before) for t in trials]
    stored = study_record.read(study)
    teacher = stored.teacher or TeacherFigures()
    quality = Quality(scale_of(stored.config or {}, teacher, (t.teacher_natural for t in rows if t.complete)))
    return ReportInfo(
        study_name=study.study_name,
        config=dict(stored.config or {}),
        teacher=teacher,
        trials=rows,
        target_trials=stored.trial_target,
        hypervolume=hypervolume_history(
            [(t.number, t.values) for t in rows if t.complete and t.feasible and t.values], teacher.size_mb
        ),
        importances=param_importances(study, (quality.word, *OBJECTIVE_TITLES[1:])),
        storage=mask_url(storage) if storage else None,
    )
