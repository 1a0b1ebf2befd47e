"""What a trial stores: one typed, versioned record, written once per trial and read back here alone.

A trial's record lives in its Optuna user attributes (Optuna's storage is the source of truth); this
module owns their names and shapes, so the objective writes a :class:`TrialRecord` with
:func:`write` (what identifies the trial as it starts, its figures as it ends) and every reader (report, pick, export, CLI, benchmarks) gets one from :func:`read`.
It also owns what is derived from the record and Optuna's state together: feasibility
(:func:`feasible`), the Pareto front with each plan once (:func:`front`), and which trials can be
shipped (:func:`is_full`).

Version 1 is the format studies have been written in from the start; trials written before the
record carried ``record_version`` read as version 1 (that and every other reading of an older
form is in :mod:`autocompress.schema.legacy`). A newer version is refused with a line that says to
upgrade, never half-read. The nested figures (latency, size, recovery, ...) are the typed
classes of :mod:`autocompress.store.facts`, written back exactly as they were read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import PlanError, StorageError
from autocompress.schema import legacy
from autocompress.schema.plan import CompressionPlan
from autocompress.store import optuna_internals as compat
from autocompress.store.facts import (
    ExitsTaken,
    Facts,
    Host,
    LatencyFigures,
    RecoveryFacts,
    SizeFigures,
    VocabularyFacts,
)
from autocompress.tasks.evaluate import Accuracy, Estimate, Metric

__all__ = [
    "RECORD_VERSION",
    "SAME_PLAN_AS",
    "REFINES",
    "QUEUED_BY",
    "DROP_CONSTRAINT",
    "TrialRecord",
    "read",
    "write",
    "queue_labels",
    "failure_reason",
    "INTERRUPTED",
    "feasible",
    "front",
    "front_before_refinement",
    "is_full",
    "told",
    "FIDELITIES",
    "STOPPED_VIOLATION",
]

log = logging.getLogger(__name__)

RECORD_VERSION = 1
#: the record's version key; trials without it were written before it existed (version 1)
_VERSION_KEY = "record_version"
#: a trial whose plan the study had already built on this host holds that trial's number here
SAME_PLAN_AS = "same_plan_as"
#: a refinement (a plan built again with a longer recovery) holds the refined trial's number here
REFINES = "refines"
#: labels of a trial whose parameters were queued rather than sampled
QUEUED_BY = ("baseline", "warm_start", "retry_of")
#: name of the accuracy-drop constraint (Optuna's ``trial.set_constraint``): > 0 means infeasible
DROP_CONSTRAINT = "accuracy_drop"

#: the fail reason of a trial cut off by Ctrl-C
INTERRUPTED = "interrupted (Ctrl-C); the trial will be run again on resume"

#: how far a trial got: "cheap" (screened: built without recovery, accuracy on a subset), "short"
#: (distilled for the first rung of its budget, accuracy on the subset), "full" (recovered in full,
#: evaluated on the whole eval split, latency measured)
Fidelity = Literal["full", "short", "cheap"]
FIDELITIES: tuple[str, ...] = ("cheap", "short", "full")
#: the accuracy constraint a sampler is told a stopped candidate breaks, at least (points)
STOPPED_VIOLATION = 1.0

FactsT = TypeVar("FactsT", bound=Facts)


@dataclass(frozen=True)
class TrialRecord:
    """Everything autocompress stores about one trial, as typed values.

    Each field is stored as the user attribute of its name (the nested figures as their
    ``to_dict``), the version as ``record_version``; :meth:`to_attrs` and :meth:`from_attrs` are
    exact inverses.
    """

    plan: CompressionPlan | None = None
    plan_summary: str = ""
    simulated: bool = False  # some bit-width is simulated (fake-quantised)
    host: Host | None = None  # where the candidate was built and timed
    sampler: str | None = None  # which sampler chose the plan, or "enqueued"
    baseline: str | None = None  # a seeded uniform baseline's label
    warm_start: str | None = None  # "<study>#<trial>" this plan was queued from
    retry_of: int | None = None  # the trial whose worker died, run again
    same_plan_as: int | None = None  # the trial whose figures this one repeats
    refines: int | None = None  # the trial whose plan this one built again with a longer recovery
    recovery_scale: float | None = None  # the recovery's epochs as a multiple of the study's for the plan (None: 1)
    fidelity: Fidelity | None = None  # how far it got (FIDELITIES); None for trials before any
    cheap_accuracy: Metric | None = None  # the task metric on the cheap subset, before recovery
    short_accuracy: Metric | None = None  # the task metric on the cheap subset after the short distillation
    screen: LatencyFigures | None = None  # the screen's latency on the objective's profile
    accuracy: Accuracy | None = None  # top-1 accuracy on the eval split
    metric: Metric | None = None  # the task metric on the eval split (the first objective)
    accuracy_drop: float | None = None  # points of the task metric below the teacher
    teacher_agreement: float | None = None  # fraction of eval predictions equal to the teacher's
    test_metric: Metric | None = None  # held-out test split, reported only
    test_accuracy: Accuracy | None = None
    latency: LatencyFigures | None = None  # on the objective's profile (until measured: the screen's)
    latencies: dict[str, LatencyFigures] = field(default_factory=dict)  # every profile's, by name
    speedup: float | None = None  # teacher / candidate on the objective's profile
    size: SizeFigures | None = None
    size_ratio: float | None = None  # shipped bytes / the teacher's (older records: effective bytes)
    recovery: RecoveryFacts | None = None  # how the candidate was recovered (distillation facts)
    exits: ExitsTaken | None = None  # early exits: where eval examples stop
    vocabulary: VocabularyFacts | None = None  # a kept vocabulary: rows kept, and the eval tokens that read as [UNK]
    seconds: dict[str, float] | None = None  # wall time per stage, by the stage's name
    prune_reason: str | None = None  # why it was stopped
    fail_reason: str | None = None  # why it failed
    version: int = RECORD_VERSION

    # ------------------------------------------------------------------ views
    @property
    def score(self) -> Estimate | None:
        """The task metric on the eval split (accuracy for trials stored before metrics had names)."""
        return legacy.score(self.metric, self.accuracy)

    @property
    def queued(self) -> bool:
        """The trial's parameters were queued (a baseline, a warm start, a retry), not sampled."""
        return any(getattr(self, key) is not None for key in QUEUED_BY)

    @property
    def scale(self) -> float:
        """The recovery's epochs as a multiple of the study's for the plan (1 unless refined)."""
        return self.recovery_scale if self.recovery_scale is not None else 1.0

    @property
    def latency_kind(self) -> str:
        """How the objective's latency was obtained: "measured" (timed here) or "predicted"."""
        return self.latency.kind if self.latency is not None else "measured"

    @property
    def ratio(self) -> float | None:
        """The candidate's latency / the teacher's on the objective's profile."""
        return self.latency.ratio if self.latency is not None else None

    @property
    def screened_ratio(self) -> float | None:
        """The latency ratio the screen gave (a trial that kept no screen apart: its latency's)."""
        screened = self.screen.ratio if self.screen is not None else None
        return screened if screened is not None else self.ratio

    @property
    def screened_percent(self) -> float | None:
        """The task metric (%) at the last rung before the full fidelity that the trial reached."""
        best = self.short_accuracy or self.cheap_accuracy
        return None if best is None else 100 * best.value

    @property
    def candidate_ms(self) -> float | None:
        """The candidate's latency on the objective's profile, ms."""
        return self.latency.candidate_ms if self.latency is not None else None

    @property
    def baseline_ms(self) -> float | None:
        """The teacher's latency in the same interleaved rounds, ms."""
        return self.latency.baseline_ms if self.latency is not None else None

    @property
    def candidate_iqr_ms(self) -> float | None:
        """The candidate's latency IQR on the objective's profile, ms (one measured shape only)."""
        return self.latency.candidate_spread_ms if self.latency is not None else None

    @property
    def noisy(self) -> bool:
        """The latency's spread stayed above the profile's limit."""
        return self.latency is not None and self.latency.noisy

    @property
    def size_mb(self) -> float | None:
        """Size in MB, as the size objective counts it."""
        return self.size.megabytes if self.size is not None else None

    @property
    def host_name(self) -> str | None:
        """The host the candidate was built and timed on."""
        return self.host.host if self.host is not None else None

    @property
    def recovered(self) -> bool:
        """The candidate was distilled from the teacher."""
        return self.recovery is not None and self.recovery.recovered

    @property
    def recovery_seconds(self) -> float | None:
        return self.recovery.recovery_seconds if self.recovery is not None else None

    @property
    def reason(self) -> str | None:
        """Why the trial failed or was stopped, if it was."""
        return self.fail_reason or self.prune_reason

    def with_(self, **changes: Any) -> "TrialRecord":
        """A copy with ``changes`` (the record is frozen)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ storage form
    def to_attrs(self) -> dict[str, Any]:
        """The user attributes that store this record (unset fields are left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "version":
                continue
            value = getattr(self, f.name)
            if value is None or (f.name == "latencies" and not value):
                continue
            if f.name in ("plan_summary", "simulated") and self.plan is None:
                continue  # they describe the plan: a record without one (a reason alone) leaves them out
            if isinstance(value, (CompressionPlan, Estimate, Facts)):
                value = value.to_dict()
            elif f.name == "latencies":
                value = {name: figures.to_dict() for name, figures in value.items()}
            elif f.name == "seconds":
                value = dict(value)
            out[f.name] = value
        out[_VERSION_KEY] = self.version
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], *, where: str = "a trial") -> "TrialRecord":
        """The record stored as ``attrs``; keys it does not know are ignored (a user's own attributes)."""
        version = legacy.record_version(attrs)
        if not isinstance(version, int) or version > RECORD_VERSION or version < 1:
            raise StorageError(
                f"{where} was written in record version {version!r}; this autocompress reads versions up to "
                f"{RECORD_VERSION}: upgrade autocompress to read it"
            )
        plan = None
        if isinstance(attrs.get("plan"), dict):
            try:
                plan = CompressionPlan.from_dict(attrs["plan"])
            except PlanError as exc:
                log.warning("%s stores a plan this version cannot read: %s", where, exc)

        def figures(kind: type[FactsT], key: str) -> FactsT | None:
            return _facts(kind, attrs.get(key), f"{where}'s {key}")

        latencies = _dict(attrs.get("latencies")) or {}
        return cls(
            plan=plan,
            plan_summary=str(attrs.get("plan_summary", "")),
            simulated=bool(attrs.get("simulated", False)),
            host=figures(Host, "host"),
            sampler=_str(attrs.get("sampler")),
            baseline=_str(attrs.get("baseline")),
            warm_start=_str(attrs.get("warm_start")),
            retry_of=_int(attrs.get("retry_of")),
            same_plan_as=_int(attrs.get(SAME_PLAN_AS)),
            refines=_int(attrs.get(REFINES)),
            recovery_scale=_num(attrs.get("recovery_scale")),
            fidelity=attrs.get("fidelity") if attrs.get("fidelity") in FIDELITIES else None,
            cheap_accuracy=_metric(attrs.get("cheap_accuracy")),
            short_accuracy=_metric(attrs.get("short_accuracy")),
            screen=figures(LatencyFigures, "screen"),
            accuracy=_accuracy(attrs.get("accuracy")),
            metric=_metric(attrs.get("metric")),
            accuracy_drop=_num(attrs.get("accuracy_drop")),
            teacher_agreement=_num(attrs.get("teacher_agreement")),
            test_metric=_metric(attrs.get("test_metric")),
            test_accuracy=_accuracy(attrs.get("test_accuracy")),
            latency=figures(LatencyFigures, "latency"),
            latencies={str(name): profile for name, v in latencies.items()
                       if (profile := _facts(LatencyFigures, v, f"{where}'s latency on {name}")) is not None},
            speedup=_num(attrs.get("speedup")),
            size=figures(SizeFigures, "size"),
            size_ratio=_num(attrs.get("size_ratio")),
            recovery=figures(RecoveryFacts, "recovery"),
            exits=figures(ExitsTaken, "exits"),
            vocabulary=figures(VocabularyFacts, "vocabulary"),
            seconds=_seconds(attrs.get("seconds")),
            prune_reason=_str(attrs.get("prune_reason")),
            fail_reason=_str(attrs.get("fail_reason")),
            version=version,
        )


def read(trial: FrozenTrial | optuna.Trial) -> TrialRecord:
    """The record of a stored trial, or what a running one holds so far (its queue labels)."""
    return TrialRecord.from_attrs(trial.user_attrs, where=f"trial {trial.number}")


def write(trial: optuna.Trial, record: TrialRecord, *, max_accuracy_drop: float | None = None) -> None:
    """Store ``record`` on the running ``trial`` (attributes it already holds unchanged are not written
    again), and its accuracy-drop constraint when the study has a budget (``max_accuracy_drop``
    points) and the record a drop."""
    held = trial.user_attrs  # a deep copy per access: read it once
    for key, value in record.to_attrs().items():
        if held.get(key) != value:
            trial.set_user_attr(key, value)
    if max_accuracy_drop is not None and record.accuracy_drop is not None:
        trial.set_constraint(DROP_CONSTRAINT, record.accuracy_drop - max_accuracy_drop)


def queue_labels(*, baseline: str | None = None, warm_start: str | None = None, retry_of: int | None = None) -> dict[str, Any]:
    """The user attributes that label a queued trial (pass them to ``enqueue_trial``)."""
    labels = {"baseline": baseline, "warm_start": warm_start, "retry_of": retry_of}
    return {k: v for k, v in labels.items() if v is not None}


def failure_reason(exc: BaseException) -> str:
    """The one line a failed trial records for ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, PlanError):  # the plan does not fit the model: its own words say why
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def feasible(trial: FrozenTrial) -> bool:
    """True unless the trial broke one of its constraints (e.g. the accuracy-drop budget)."""
    return all(v <= 0 for v in (trial.constraints or {}).values())


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's Pareto front (Optuna's: feasible trials only), each plan once: a trial that
    repeated an earlier trial's plan is left out, and of a plan's builds with equal figures (a
    refinement that changed nothing) the first is kept."""
    out, seen = [], set()
    for t in sorted(study.best_trials, key=lambda t: t.number):
        if SAME_PLAN_AS in t.user_attrs:
            continue
        key = (json.dumps(t.user_attrs.get("plan"), sort_keys=True), tuple(t.values))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def front_before_refinement(study: optuna.Study) -> list[FrozenTrial]:
    """The front :func:`front` gives, as it stood before any refinement (see
    :mod:`autocompress.search.refine`): feasible full trials, refinements and repeats left out."""
    trials = [t for t in study.get_trials(deepcopy=False) if is_full(t) and feasible(t)
              and REFINES not in t.user_attrs and SAME_PLAN_AS not in t.user_attrs]
    losses = [[-v if d == optuna.study.StudyDirection.MAXIMIZE else v for v, d in zip(t.values, study.directions)]
              for t in trials]
    return [t for t, on in zip(trials, compat.pareto_mask(losses)) if on]


def is_full(trial: FrozenTrial) -> bool:
    """A complete trial with a plan, scored at the full fidelity: one whose model can be shipped."""
    return (
        trial.state == TrialState.COMPLETE
        and trial.values is not None
        and "plan" in trial.user_attrs
        and trial.user_attrs.get("fidelity", "full") == "full"
    )


# ---------------------------------------------------------------------- lenient readers
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _dict(v: Any) -> dict[str, Any] | None:
    return dict(v) if isinstance(v, dict) else None


def _seconds(v: Any) -> dict[str, float] | None:
    if not isinstance(v, dict):
        return None
    return {str(stage): float(s) for stage, s in v.items() if _num(s) is not None}


def _accuracy(d: Any) -> Accuracy | None:
    base = legacy.estimate(d)
    return None if base is None else Accuracy(**base)


def _metric(d: Any) -> Metric | None:
    fields_ = legacy.metric(d)
    return None if fields_ is None else Metric(**fields_)


def _facts(kind: type[FactsT], v: Any, where: str) -> FactsT | None:
    """``v`` read as ``kind``; ``None`` when it is absent (or, with a warning, unreadable: the rest
    of the record still reads, as with a plan this version cannot read)."""
    if v is None:
        return None
    try:
        return kind.from_dict(v, where=where)
    except StorageError as exc:
        log.warning("%s", exc)
        return None


def told(trial: FrozenTrial, teacher_percent: float, max_accuracy_drop: float | None) -> FrozenTrial | None:
    """What a sampler is told about ``trial`` when it was stopped before the full fidelity: a complete
    trial with the figures its screen gave (metric % at the rung it reached, latency ratio, size MB)
    that breaks the accuracy constraint (by its drop beyond the budget, and at least
    :data:`STOPPED_VIOLATION` points), so that it can never look feasible. ``None`` for any other
    trial (and for a repeat, whose plan was told already)."""
    if trial.state != TrialState.PRUNED or SAME_PLAN_AS in trial.user_attrs:
        return None
    r = read(trial)
    percent, ratio, size = r.screened_percent, r.ratio, r.size_mb
    if r.fidelity not in ("cheap", "short") or percent is None or ratio is None or size is None:
        return None
    constraints = {}
    if max_accuracy_drop is not None:
        constraints[DROP_CONSTRAINT] = max(teacher_percent - percent - max_accuracy_drop, STOPPED_VIOLATION)
    return compat.as_complete(trial, (percent, ratio, size), constraints)
