"""Running trials until the study holds its target, safely with many workers on one storage.

:func:`run` runs the study's own :class:`~autocompress.search.objective.Objective` with the configured
sampler inside :class:`~autocompress.search.samplers.OnePlanOnce`; :func:`run_trials` is the loop
itself, for any objective: budget counted across workers, dead workers' trials failed by
heartbeat and queued again, storage outages retried, failures recorded with their reason.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.errors import StorageError
from autocompress.search.objective import Objective
from autocompress.store.record import TrialRecord
from autocompress.search.samplers import OnePlanOnce, make_sampler
from autocompress.store.storage import GRACE_SECONDS, retry_stale_trial
from autocompress.store.urls import mask_url
from autocompress.search.workbench import Workbench

__all__ = ["RunResult", "completed", "counted_states", "typical_trial_seconds", "fail_orphaned_trials", "run", "run_trials", "study_sampler", "trial_states"]

log = logging.getLogger(__name__)

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def trial_states(study: optuna.Study) -> dict[int, TrialState]:
    """Every trial's state by number, read from the database itself.

    Optuna's per-process trial cache can miss a running trial that another worker created (when
    a newer one has already finished); counting for the trial budget must not.
    """
    storage = compat.backing_storage(study)
    return compat.trial_states(storage, storage.get_study_id_from_name(study.study_name))


def counted_states(study: optuna.Study) -> dict[int, TrialState]:
    """:func:`trial_states` without the refinements: the trials the study's target counts."""
    storage = compat.backing_storage(study)
    refinements = compat.numbers_with_user_attr(storage, storage.get_study_id_from_name(study.study_name), record.REFINES)
    return {n: s for n, s in trial_states(study).items() if n not in refinements}


def completed(study: optuna.Study) -> int:
    """How many trials of the study are complete (read from the database), refinements left out:
    they rebuild trials already counted (see :mod:`autocompress.search.refine`)."""
    return sum(s == TrialState.COMPLETE for s in counted_states(study).values())


def fail_orphaned_trials(study: optuna.Study, grace_seconds: float) -> list[int]:
    """Fail (and queue again) running trials that never sent a heartbeat, by number.

    Optuna's stale-trial check only sees trials with a heartbeat on record; a trial created just
    as the database connection dropped has none, so no worker would ever fail it and the others
    would wait for it forever. One older than ``grace_seconds`` has lost its worker.
    """
    storage = compat.backing_storage(study)
    # Optuna stores naive UTC times in its tables
    cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=grace_seconds)
    orphans = compat.running_without_heartbeat(storage, storage.get_study_id_from_name(study.study_name), cutoff)
    failed = []
    for trial_id, number in orphans:
        try:
            lost = TrialRecord(fail_reason="its worker lost the database before its first heartbeat")
            for key, value in lost.to_attrs().items():
                storage.set_trial_user_attr(trial_id, key, value)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it after all
        retry_stale_trial(study, storage.get_trial(trial_id))
        failed.append(number)
    return failed


class _GuardedObjective:
    """Wraps the objective: every failure, Ctrl-C included, leaves its reason on the trial; a trial
    that would take the study past its target (several workers asked at once) stops at once."""

    def __init__(self, objective: Callable[[optuna.Trial], Sequence[float]], target: int) -> None:
        self.objective = objective
        self.target = target

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        states = counted_states(trial.study)
        done = sum(s == TrialState.COMPLETE for s in states.values())
        ahead = [n for n, s in states.items() if s == TrialState.RUNNING and n < trial.number]
        if done + len(ahead) >= self.target:
            reason = f"not needed: {done} complete and {len(ahead)} running trials already reach the target of {self.target}"
            record.write(trial, TrialRecord(prune_reason=reason))
            raise optuna.TrialPruned(reason)
        try:
            return self.objective(trial)
        except optuna.TrialPruned:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # an objective that records its own failure has done so
            if record.read(trial).fail_reason is None:
                record.write(trial, TrialRecord(fail_reason=record.failure_reason(exc)))
            raise


@dataclass(frozen=True)
class RunResult:
    completed: int
    target: int
    gave_up: bool  # stopped after repeated failures
    last_failure: str | None = None


_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)


def _outage(exc: BaseException | None) -> BaseException | None:
    """The lost or refused database connection behind ``exc``, if that is what it is.

    Optuna wraps some in StorageInternalError, and its trial post-processing can raise an
    unrelated error while handling one, so the whole exception chain is searched.
    """
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, _TRANSIENT) or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
    stop: Callable[[optuna.Study], bool] | None = None,
    max_consecutive_failures: int = 10,
    poll_seconds: float = 2.0,
    outage_seconds: float = 120.0,
    gc_after_trial: bool = False,
) -> RunResult:
    """Run trials, one at a time in this process, until the study holds ``n_trials`` complete ones.

    Safe with many workers on one storage: a worker starts a trial only while complete + running
    trials are below the target, waits while the others finish (a dead worker's trial is failed
    by its missing heartbeat and queued again), and stops when the target is reached — the study
    ends with exactly ``n_trials`` complete trials. Storage outages are retried with backoff for
    ``outage_seconds``, then raise :class:`StorageError`. No trial starts after ``timeout`` seconds,
    nor once ``stop(study)`` is true. ``gc_after_trial`` frees a trial's
    models at once (worth its ~0.1 s when trials build models; not for cheap objectives).
    """
    deadline = time.monotonic() + timeout if timeout else None
    guarded = _GuardedObjective(objective, n_trials)
    grace = getattr(compat.backing_storage(study), "grace_period", None) or GRACE_SECONDS
    streak = 0
    outage_since: float | None = None
    backoff = 1.0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study, grace)
            states = list(counted_states(study).values())
            done = states.count(TrialState.COMPLETE)
            if done >= n_trials or (deadline is not None and time.monotonic() >= deadline):
                break
            if stop is not None and stop(study):
                break
            if streak >= max_consecutive_failures:
                break
            if done + states.count(TrialState.RUNNING) >= n_trials:
                time.sleep(poll_seconds)  # others are finishing the last trials; one may die
                continue
            ended: list[TrialState] = []
            study.optimize(
                guarded, n_trials=1, catch=(Exception,), gc_after_trial=gc_after_trial,
                callbacks=[lambda _s, t: ended.append(t.state), *callbacks],
            )
            for state in ended:
                streak = streak + 1 if state == TrialState.FAIL else (0 if state == TrialState.COMPLETE else streak)
            outage_since, backoff = None, 1.0
        except Exception as exc:
            cause = _outage(exc)
            if cause is None:
                raise
            detail = mask_url(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
            now = time.monotonic()
            outage_since = outage_since or now
            if now - outage_since > outage_seconds:
                raise StorageError(
                    f"the study's storage has been unreachable for {outage_seconds:.0f} s "
                    f"({detail}); completed trials are safe in it; run the same "
                    "command again once it is back (a trial cut off now is failed by heartbeat and retried)"
                ) from None
            log.warning("storage unreachable (%s); retrying in %.0f s", detail, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 15.0)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    last = record.read(failed[-1]).fail_reason if failed else None
    return RunResult(completed(study), n_trials, streak >= max_consecutive_failures, last)


def run(
    study: optuna.Study,
    bench: Workbench,
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
    stop: Callable[[optuna.Study], bool] | None = None,
) -> RunResult:
    """Run the study's own objective until it holds ``n_trials`` complete trials (see :func:`run_trials`).

    A trial that raises (a plan that cannot apply, memory exhausted, ...) is recorded as failed
    with its reason and the study goes on; ten failures in a row stop it. ``KeyboardInterrupt``
    propagates after the running trial is marked failed.
    """
    if completed(study) >= n_trials:
        return RunResult(completed(study), n_trials, False)
    study.sampler = study_sampler(bench, offset=len(study.trials))
    return run_trials(study, Objective(bench), n_trials=n_trials, timeout=timeout, callbacks=callbacks, stop=stop,
                      gc_after_trial=True)


def study_sampler(bench: Workbench, offset: int = 0) -> OnePlanOnce:
    """The study's configured sampler inside :class:`~autocompress.search.samplers.OnePlanOnce` (told about
    stopped candidates, canonical plans, one plan once), seeded with ``search.seed + offset``."""
    cfg = bench.config
    return OnePlanOnce(
        make_sampler(cfg.search, offset=offset), cfg.space, bench.arch, bench.layer_ranking,
        teacher_percent=100 * bench.teacher_metric.value, max_accuracy_drop=cfg.objectives.max_drop,
        seed=cfg.search.seed + offset,
    )


def typical_trial_seconds(study: optuna.Study) -> float:
    """The median wall time of the study's complete full-fidelity trials (refinements and repeats left
    out); 0 before there is one."""
    spans = sorted((t.datetime_complete - t.datetime_start).total_seconds()
                   for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if record.is_full(t) and t.datetime_start and t.datetime_complete
                   and record.REFINES not in t.user_attrs and record.SAME_PLAN_AS not in t.user_attrs)
    return spans[len(spans) // 2] if spans else 0.0
