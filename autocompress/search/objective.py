"""One trial: suggest → de-duplicate → build → screen (cheap rung) → short distillation (short rung) →
full recovery, measured latency and evaluation (full rung) → record.

:class:`Objective` turns each Optuna trial into a compressed candidate and returns its three
objective values (:data:`OBJECTIVES`): the task metric (``task.metric``: accuracy or macro-F1, %,
maximise; a study stores its name as "accuracy", see :mod:`autocompress.store.study_record`),
latency relative to the uncompressed teacher measured in the same rounds (minimise), and size in
MB (minimise). Each step is a call into the module that owns it. The trial's record is written as
the trial starts (what identifies it: plan, host, sampler) and completed as it ends, however it
ends; each stored attribute is written once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn, TypeVar

import optuna
from optuna.trial import TrialState

from autocompress.search import build
from autocompress.search import dedupe
from autocompress.search import fidelity
from autocompress.store import record
from autocompress.search import scoring
from autocompress.tasks.evaluate import Metric
from autocompress.schema.plan import CompressionPlan
from autocompress.store.facts import ExitsTaken, Host, LatencyFigures, RecoveryFacts, SizeFigures, VocabularyFacts
from autocompress.store.record import TrialRecord
from autocompress.search.samplers import sampler_name
from autocompress.search.space import suggest_plan
from autocompress.search.workbench import Workbench

__all__ = ["OBJECTIVES", "Objective", "timed", "with_evaluation", "with_measurement"]

log = logging.getLogger(__name__)

#: (name, direction) of the study's objectives, in the order the objective returns them; "metric"
#: is the task metric (``task.metric``), stored under the name "accuracy" (see ``store.study_record``).
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("metric", "maximize"),
    ("relative_latency", "minimize"),
    ("size_mb", "minimize"),
)

Values = tuple[float, float, float]
T = TypeVar("T")


class Objective:
    """Callable for ``study.optimize``: builds, scores and records one candidate per trial."""

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench

    def __call__(self, trial: optuna.Trial) -> Values:
        b = self.bench
        plan = suggest_plan(trial, b.config.space, b.arch, b.layer_ranking)  # suggest
        with _RunningTrial(trial, b, plan) as run:
            same = dedupe.seen(trial.study, trial.number, plan, b.host)  # de-duplicate
            if same is not None:
                return run.repeat(same)
            build_ = run.timed("build", build.Build, b, plan)  # shaped, not yet recovered
            if fidelity.staged(b.config, plan) and not run.record.baseline:
                screened = run.timed("screen", scoring.screen, b, build_.snapshot(), plan, build_.student)  # cheap rung
                run.screened(screened)
                reshaped = build_.recovers and plan.changes_structure  # distillation will move its metric far
                run.gate("cheap", screened.metric, screened, reshaped)
                if reshaped:
                    run.timed("short_recover", build_.recover_to, b.config.fidelity.short_fraction)  # short rung
                    short = run.timed("short_evaluate", scoring.subset_metric, b, build_.snapshot())
                    run.update(short_accuracy=short)
                    run.gate("short", short, screened, True)
            full = run.timed("recover" if build_.recovers else "quantise", build_.finish,
                             keep_float=b.onnx_teacher is not None)  # full rung
            measured = run.measured(run.timed("latency", scoring.measure, b, full.model, plan, full.float_model))
            ev = run.timed("evaluate", scoring.evaluate, b, full.model)
            test = run.timed("test_evaluate", scoring.held_out, b, full.model) if b.test is not None else None
            return run.complete(ev, test, full.recovery, measured)  # record


class _RunningTrial:
    """One running trial, its record filled in as its steps run: what identifies the trial is
    written as it starts (so a trial whose worker dies still shows its plan), the rest once it
    ends (complete, stopped or failed): a failed trial keeps its plan, what was measured and why
    it failed."""

    def __init__(self, trial: optuna.Trial, bench: Workbench, plan: CompressionPlan) -> None:
        self.trial, self.bench, self.plan = trial, bench, plan
        labels = record.read(trial)  # what queued it, if anything did
        self.record = TrialRecord(
            plan=plan, plan_summary=plan.describe(), simulated=plan.simulated, host=Host.from_dict(bench.host),
            sampler="enqueued" if labels.queued else sampler_name(trial.study.sampler),
            baseline=labels.baseline, warm_start=labels.warm_start, retry_of=labels.retry_of,
        )

    def __enter__(self) -> "_RunningTrial":
        record.write(self.trial, self.record)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, optuna.TrialPruned) and self.record.fail_reason is None:
            self.update(fail_reason=record.failure_reason(exc))
        record.write(self.trial, self.record, max_accuracy_drop=self.bench.config.objectives.max_drop)

    def update(self, **changes: object) -> None:
        self.record = self.record.with_(**changes)

    def timed(self, step: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        seconds = dict(self.record.seconds or {})
        try:
            return timed(seconds, step, fn, *args, **kwargs)
        finally:
            self.update(seconds=seconds)

    def measured(self, m: scoring.Measurement) -> scoring.Measurement:
        self.record = with_measurement(self.record, m, self.bench.config.profile.name)
        return m

    def screened(self, screen: scoring.Screen) -> None:
        """Keep the cheap rung's figures: until the trial is measured, they are its latency and size."""
        b = self.bench
        figures = LatencyFigures.from_dict(screen.to_dict())
        self.update(
            fidelity="cheap", cheap_accuracy=screen.metric, screen=figures, latency=figures,
            speedup=screen.latency.speedup, size=SizeFigures.from_dict(screen.size.to_dict()),
            size_ratio=screen.size.bytes / b.teacher_size.bytes,
        )

    def gate(self, rung: fidelity.Rung, at: Metric, screen: scoring.Screen, recovers: bool) -> None:
        """Go on past ``rung`` or stop here (:func:`autocompress.search.fidelity.decide`)."""
        b = self.bench
        known = fidelity.standing(self.trial.study.get_trials(deepcopy=False), rung, self.trial.number)
        decision = fidelity.decide(
            b.config, rung, 100 * b.teacher_metric.value, at, screen.latency.ratio, screen.size.megabytes,
            recovers=recovers, known=known, tolerance=screen.tolerance, layers=len(self.plan.kept_layers),
        )
        self.update(fidelity=rung)
        if not decision.promote:
            self.stop(decision.reason)
        if decision.note:
            log.info("trial %d: %s", self.trial.number, decision.note)

    def stop(self, reason: str) -> NoReturn:
        """End the trial at the rung it reached (pruned), for ``reason``."""
        self.update(prune_reason=reason)
        log.info("trial %d: %s", self.trial.number, reason)
        raise optuna.TrialPruned(reason)

    def repeat(self, same: optuna.trial.FrozenTrial) -> Values:
        """End as ``same`` ended, with its figures: its values, or stopped for the same reason."""
        self.record = dedupe.repeat(self.record, same)
        if same.state == TrialState.PRUNED:
            log.info("trial %d: %s", self.trial.number, self.record.prune_reason)
            raise optuna.TrialPruned(self.record.prune_reason)
        log.info("trial %d: the plan of trial %d (%s); its figures repeated, nothing rebuilt",
                 self.trial.number, same.number, self.record.plan_summary)
        return tuple(same.values)  # type: ignore[return-value]

    def complete(
        self, ev: scoring.Evaluation, test: scoring.HeldOut | None, recovery: dict[str, object], m: scoring.Measurement
    ) -> Values:
        self.record = with_evaluation(self.record, ev, test, recovery)
        log.info(
            "trial %d: %s → %s %.2f%% (drop %.2f), %.2f× faster, %.1f MB",
            self.trial.number, self.record.plan_summary, ev.metric.name, ev.percent, ev.drop,
            m.objective.speedup, m.size.megabytes,
        )
        return ev.percent, m.objective.ratio, m.size.megabytes


def timed(seconds: dict[str, float], step: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)``, its wall time written to ``seconds[step]`` however it ends."""
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        seconds[step] = time.perf_counter() - start


def with_measurement(rec: TrialRecord, m: scoring.Measurement, profile: str) -> TrialRecord:
    """``rec`` with a candidate's measured latency (every profile's; ``profile`` is the objective's) and size."""
    latencies = {name: LatencyFigures.from_dict(figures) for name, figures in m.records.items()}
    return rec.with_(latency=latencies[profile], latencies=latencies, speedup=m.objective.speedup,
                     size=SizeFigures.from_dict(m.size.to_dict()), size_ratio=m.size_ratio)


def with_evaluation(
    rec: TrialRecord, ev: scoring.Evaluation, test: scoring.HeldOut | None, recovery: dict[str, object]
) -> TrialRecord:
    """``rec`` at the full fidelity: the eval (and test) split's figures and how the candidate was recovered."""
    vocabulary = recovery.get("vocabulary")
    return rec.with_(
        accuracy=ev.accuracy, metric=ev.metric, accuracy_drop=ev.drop, teacher_agreement=ev.teacher_agreement,
        test_metric=test.metric if test else None, test_accuracy=test.accuracy if test else None,
        fidelity="full", recovery=RecoveryFacts.from_dict({k: v for k, v in recovery.items() if k != "vocabulary"}),
        exits=None if ev.exits is None else ExitsTaken.from_dict(ev.exits),
        vocabulary=None if vocabulary is None else VocabularyFacts.from_dict(vocabulary),
    )
