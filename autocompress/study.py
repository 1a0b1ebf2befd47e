"""Create, load, resume and list studies; Optuna's storage is the source of truth.

The storage URL is resolved once, here: by default each study lives in its own SQLite file
``studies/<name>.db``; any SQLAlchemy URL Optuna accepts (PostgreSQL for shared studies) works.
Trials carry their plan and metrics as user attributes; the study carries its config, the
teacher's figures and the names of its objectives.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import optuna
from optuna.trial import FrozenTrial, TrialState
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from autocompress.config import SearchConfig, StudyConfig, parse_config
from autocompress.errors import ConfigError, PlanError, StorageError, StudyNotFoundError, UnknownNameError
from autocompress.objective import OBJECTIVES, Objective, Workbench
from autocompress.report.collect import SAME_PLAN_AS, feasible, front_trials
from autocompress.urls import mask_url, sqlite_path
from autocompress.shared import artifact_store_for, fetch_shared_cache, publish_shared_cache, study_lock
from autocompress.plan import CompressionPlan
from autocompress.space import baseline_plans, params_for_plan

__all__ = [
    "DEFAULT_ROOT",
    "StudySummary",
    "default_storage",
    "mask_url",
    "open_storage",
    "check_can_continue",
    "create_or_load",
    "prepare_shared",
    "record_teacher",
    "retry_stale_trial",
    "run_trials",
    "trial_states",
    "load",
    "stored_config",
    "make_sampler",
    "with_sampler",
    "SAMPLERS",
    "WarmStart",
    "open_warm_start_source",
    "warm_start",
    "run",
    "list_studies",
    "completed",
    "fail_orphaned_trials",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("studies")
# a running trial proves it is alive this often; one silent for the grace period is marked failed
# (its process died) and queued again. AUTOCOMPRESS_HEARTBEAT / AUTOCOMPRESS_GRACE override them.
HEARTBEAT_SECONDS = int(os.environ.get("AUTOCOMPRESS_HEARTBEAT", "10"))
GRACE_SECONDS = int(os.environ.get("AUTOCOMPRESS_GRACE", "30"))


def default_storage(name: str, root: Path = DEFAULT_ROOT) -> str:
    return f"sqlite:///{root / f'{name}.db'}"


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
) -> optuna.storages.RDBStorage:
    """Open an Optuna RDB storage with heartbeats (so a killed worker's trial is marked failed).

    ``must_exist``: for reading, refuse to create a new SQLite file where none exists.
    A running trial whose heartbeat is older than ``grace_seconds`` is marked failed by the next
    worker that starts a trial.
    """
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise StudyNotFoundError(f"no study database at '{path}'; run `autocompress studies` to see what exists")
        if not must_exist:
            path.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        engine_kwargs["connect_args"] = {"timeout": 60}  # wait for a lock instead of failing at once
    elif url.startswith("postgresql"):
        engine_kwargs["pool_pre_ping"] = True
    # Optuna 4.9 renamed the stale-trial hook; use whichever this Optuna has
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    hook = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    kwargs = {"engine_kwargs": engine_kwargs, "heartbeat_interval": heartbeat_seconds,
              "grace_period": grace_seconds, hook: retry_stale_trial}
    for attempt in range(3):
        try:
            return _open_rdb(url, kwargs)
        except _CreationRace:
            # another worker created Optuna's tables at the same moment: they exist now; try again
            time.sleep(0.5 + attempt)
    return _open_rdb(url, kwargs, last=True)


class _CreationRace(Exception):
    pass


def _open_rdb(url: str, kwargs: dict[str, Any], last: bool = False) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not last:
            if isinstance(cause, sa_exc.IntegrityError) or type(cause).__name__ == "UniqueViolation":
                raise _CreationRace() from exc
            cause = cause.__cause__ or cause.__context__
        _storage_error(url, exc)


def _storage_error(url: str, exc: Exception) -> NoReturn:
    """One line saying why ``url`` cannot be opened, the password masked."""
    if isinstance(exc, ImportError):
        raise StorageError(
            f"cannot open storage {mask_url(url)}: its database driver is not installed; "
            "for PostgreSQL: pip install 'psycopg[binary]' (or the extra autocompress[postgres])"
        ) from None
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise StorageError(f"cannot open storage {mask_url(url)}: {mask_url(detail)}") from None


#: the samplers ``search.sampler`` names. TPE, NSGA-II and GP read the accuracy-drop constraint
#: that the objective records with ``trial.set_constraint`` (Optuna 5 samplers take it from the
#: trial itself; their ``constraints_func`` argument is deprecated and would only copy it) and
#: prefer feasible plans; random sampling ignores it.
SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    # multivariate: the per-layer choices interact (depth × pruning × bits)
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
    # small population: studies here run tens of trials, not thousands
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=16),
    # Gaussian process with (constrained) expected hypervolume improvement; categorical dimensions
    # are handled by its kernel
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=8),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def make_sampler(search: SearchConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``search.seed + offset`` (offset: trials already run)."""
    if search.sampler not in SAMPLERS:
        raise UnknownNameError("sampler", search.sampler, SAMPLERS)
    return SAMPLERS[search.sampler](search.seed + offset)


def with_sampler(cfg: StudyConfig, sampler: str | None) -> StudyConfig:
    """``cfg`` with ``search.sampler`` replaced (validated), or ``cfg`` itself for ``None``."""
    if sampler is None or sampler == cfg.search.sampler:
        return cfg
    if sampler not in SAMPLERS:
        raise UnknownNameError("sampler", sampler, SAMPLERS)
    search = SearchConfig.model_validate({**cfg.search.model_dump(), "sampler": sampler})
    return cfg.model_copy(update={"search": search})


def stored_config(study: optuna.Study) -> StudyConfig:
    data = study.user_attrs.get("config")
    if data is None:
        raise StudyNotFoundError(f"study '{study.study_name}' was not created by autocompress (it has no config)")
    return parse_config(data, file=f"study '{study.study_name}'")


def load(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load an existing study, or raise :class:`StudyNotFoundError` listing those that exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        hint = f"; studies here: {', '.join(names)}" if names else "; this storage holds no studies"
        raise StudyNotFoundError(f"no study named '{name}'{hint}") from None


def check_can_continue(cfg: StudyConfig, url: str, name: str) -> bool:
    """Whether study ``name`` already exists at ``url``; raises if ``cfg`` cannot continue it.

    Continuing refuses a config whose model, task, teacher, recovery, pruning, profile, space or
    objectives differ from the stored one: old and new trials would not be comparable.
    Creates nothing (a missing SQLite file simply means the study does not exist yet).
    """
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return False
    try:
        existing = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        return False
    stored = existing.user_attrs.get("config") or {}
    try:  # a study stored before a setting existed has it at its default
        stored = parse_config(stored).to_dict()
    except ConfigError:
        pass
    new = cfg.to_dict()
    keys = ("model", "task", "teacher", "recovery", "pruning", "profile", "space", "objectives")
    changed = [k for k in keys if stored.get(k) != new.get(k)]
    if changed:
        raise ConfigError(
            f"study '{name}' already exists with different {', '.join(changed)} settings; "
            "run it with its original file, or give a new name with --study",
            key=changed[0],
        )
    return True


def create_or_load(
    cfg: StudyConfig, storage: optuna.storages.BaseStorage, name: str, bench: Workbench | None = None
) -> optuna.Study:
    """Create the study or continue the one of that name; with ``bench``, also :func:`record_teacher`.

    Call :func:`check_can_continue` first: this function does not compare configs. Several
    workers may call it at once: the one that loses the race to create loads the winner's study.
    """
    directions = [d for _, d in OBJECTIVES]
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
        else:
            study.set_metric_names([n for n, _ in OBJECTIVES])
            study.set_user_attr("config", cfg.to_dict())
            study.set_user_attr("autocompress", {"objectives": [list(o) for o in OBJECTIVES], "schema_version": 1})
    if bench is not None:
        record_teacher(study, bench)
    return study


def record_teacher(study: optuna.Study, bench: Workbench) -> None:
    """Store the teacher's figures and enqueue the uniform baselines, once per study."""
    if "teacher" in study.user_attrs:
        return
    cfg = bench.config
    study.set_user_attr(
        "teacher",
        {
            "fingerprint": bench.teacher.fingerprint,
            "accuracy": bench.teacher.eval_accuracy.to_dict(),
            "metric": bench.teacher_metric.to_dict(),  # task.metric on the eval split: what drops are measured from
            "test_metric": bench.teacher_test.to_dict() if bench.teacher_test else None,  # held-out, reported only
            "size": bench.teacher_size.to_dict(),
            "fine_tune_seconds": bench.teacher.fine_tune_seconds,
            "arch": vars(bench.arch),
            "labels": bench.task.label_names,
        },
    )
    if cfg.search.seed_baselines:
        for label, params in baseline_plans(cfg.space, bench.arch).items():
            study.enqueue_trial(params, user_attrs={"baseline": label}, skip_if_exists=True)


@dataclass(frozen=True)
class WarmStart:
    """What :func:`warm_start` did with each plan on the source study's front."""

    source: str  # the study warm-started from
    enqueued: tuple[int, ...]  # its trial numbers whose plans were queued here
    present: tuple[int, ...]  # whose plans this study already has (run, running or queued)
    skipped: dict[int, str]  # trial number → why this study's space cannot express its plan


def open_warm_start_source(name: str, url: str, cfg: StudyConfig) -> optuna.Study:
    """The study to warm-start ``cfg``'s study from; refuses one that does not exist, was not made
    by autocompress, or compresses another base model (its plans would mean something else)."""
    source = load(name, open_storage(url, must_exist=True))
    other = stored_config(source)
    if other.model.source != cfg.model.source:
        raise ConfigError(
            f"cannot warm-start from study '{name}': it compresses {other.model.source}, "
            f"this study {cfg.model.source}; warm-start only from a study on the same base model"
        )
    return source


def warm_start(study: optuna.Study, source: optuna.Study, bench: Workbench) -> WarmStart:
    """Queue the plans of ``source``'s Pareto front in ``study`` (feasible, full-fidelity trials).

    Each plan is queued as the trial parameters that make this study's space build it, labelled
    ``warm_start: "<source>#<trial>"``; a plan this space cannot express (another number of
    layers, a value outside the choices, a layer set or per-layer pattern its selections and
    schedule cannot make) is skipped with the reason, and one this study already has is not
    queued twice. Running it again queues nothing new.
    """
    cfg = bench.config
    existing = [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]
    enqueued: list[int] = []
    present: list[int] = []
    skipped: dict[int, str] = {}
    front = [t for t in front_trials(source) if t.user_attrs.get("fidelity") == "full" and "plan" in t.user_attrs]
    for t in sorted(front, key=lambda t: t.number):
        try:
            plan = CompressionPlan.from_dict(t.user_attrs["plan"])
            params = params_for_plan(plan, cfg.space, bench.arch, bench.layer_ranking)
        except PlanError as exc:
            skipped[t.number] = str(exc)
            log.info("warm start: trial %d of '%s' is not expressible here: %s", t.number, source.study_name, exc)
            continue
        if params in existing:
            present.append(t.number)
            continue
        study.enqueue_trial(params, user_attrs={"warm_start": f"{source.study_name}#{t.number}"}, skip_if_exists=True)
        existing.append(params)
        enqueued.append(t.number)
    log.info("warm start from '%s': %d plans queued, %d already here, %d skipped",
             source.study_name, len(enqueued), len(present), len(skipped))
    return WarmStart(source.study_name, tuple(enqueued), tuple(present), skipped)


def prepare_shared(
    study: optuna.Study, url: str, cfg: StudyConfig, cache_dir: Path, **prepare_kwargs: Any
) -> Workbench:
    """:func:`prepare` the workbench as one of possibly many workers of ``study``.

    Under the study's lock (so that two workers starting together do not both fine-tune): fetch
    the teacher another machine published, prepare (a no-op for a cached teacher), publish it
    if this worker made it, and record the teacher's figures on the study once.
    """
    from autocompress.objective import prepare

    with study_lock(url, study.study_name, cache_dir):
        store = artifact_store_for(url)
        if store is not None:
            fetched = fetch_shared_cache(study, store, cache_dir)
            if fetched:
                log.info("using the teacher shared by another worker: %s", ", ".join(fetched))
        bench = prepare(cfg, cache_dir, **prepare_kwargs)
        if store is not None:
            publish_shared_cache(study, store, bench.teacher.cache)
        record_teacher(study, bench)
    return bench


def trial_states(study: optuna.Study) -> dict[int, TrialState]:
    """Every trial's state by number, read from the database itself.

    Optuna's per-process trial cache can miss a running trial that another worker created (when
    a newer one has already finished); counting for the trial budget must not.
    """
    storage = study._storage
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:  # not an RDB storage
        return {t.number: t.state for t in study.get_trials(deepcopy=False)}
    from optuna.storages._rdb.models import TrialModel

    query = sa.select(TrialModel.number, TrialModel.state).where(TrialModel.study_id == study._study_id)
    with engine.connect() as conn:
        return {number: state for number, state in conn.execute(query)}


def fail_orphaned_trials(study: optuna.Study, grace_seconds: float) -> list[int]:
    """Fail (and queue again) running trials that never sent a heartbeat, by number.

    Optuna's stale-trial check only sees trials with a heartbeat on record; a trial created just
    as the database connection dropped has none, so no worker would ever fail it and the others
    would wait for it forever. One older than ``grace_seconds`` has lost its worker.
    """
    storage = study._storage
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return []
    from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel

    # Optuna 5 stores naive UTC times in its tables (the column, whatever its ORM attribute is called)
    cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=grace_seconds)
    query = sa.select(TrialModel.trial_id, TrialModel.number).where(
        TrialModel.study_id == study._study_id,
        TrialModel.state == TrialState.RUNNING,
        TrialModel.__table__.c.datetime_start < cutoff,
        ~sa.exists().where(TrialHeartbeatModel.trial_id == TrialModel.trial_id),
    )
    with engine.connect() as conn:
        orphans = list(conn.execute(query))
    failed = []
    for trial_id, number in orphans:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", "its worker lost the database before its first heartbeat")
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it after all
        retry_stale_trial(study, storage.get_trial(trial_id))
        failed.append(number)
    return failed


def completed(study: optuna.Study) -> int:
    return sum(s == TrialState.COMPLETE for s in trial_states(study).values())


class _Recorded:
    """Wraps the objective: every failure, Ctrl-C included, leaves its reason on the trial; a trial
    that would take the study past its target (several workers asked at once) stops at once."""

    def __init__(self, objective: Callable[[optuna.Trial], Sequence[float]], target: int) -> None:
        self.objective = objective
        self.target = target

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        states = trial_states(trial.study)
        done = sum(s == TrialState.COMPLETE for s in states.values())
        ahead = [n for n, s in states.items() if s == TrialState.RUNNING and n < trial.number]
        if done + len(ahead) >= self.target:
            reason = f"not needed: {done} complete and {len(ahead)} running trials already reach the target of {self.target}"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); the trial will be run again on resume")
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise


def retry_stale_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int = 2) -> None:
    """Failed-trial callback: a trial whose worker died (no heartbeat) is queued again, same plan.

    Like Optuna's ``RetryFailedTrialCallback``, but the new trial inherits only the baseline
    label, not the dead trial's half-written metrics.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        log.warning("trial %d died %d times; not retrying it again", trial.number, len(history))
        return
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k in ("baseline", "warm_start")}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**user_attrs, "retry_of": trial.number},
            system_attrs={"failed_trial": trial.number, "retry_history": history},
        )
    )
    log.info("trial %d lost its worker; queued again", trial.number)


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
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
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
    ``outage_seconds``, then raise :class:`StorageError`. ``gc_after_trial`` frees a trial's
    models at once (worth its ~0.1 s when trials build models; not for cheap objectives).
    """
    deadline = time.monotonic() + timeout if timeout else None
    recorded = _Recorded(objective, n_trials)
    streak = 0
    outage_since: float | None = None
    backoff = 1.0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study, getattr(study._storage, "grace_period", None) or GRACE_SECONDS)
            states = list(trial_states(study).values())
            done = states.count(TrialState.COMPLETE)
            if done >= n_trials or (deadline is not None and time.monotonic() >= deadline):
                break
            if streak >= max_consecutive_failures:
                break
            running = states.count(TrialState.RUNNING)
            if done + running >= n_trials:
                time.sleep(poll_seconds)  # others are finishing the last trials; one may die
                continue
            states: list[TrialState] = []
            study.optimize(
                recorded, n_trials=1, catch=(Exception,), gc_after_trial=gc_after_trial,
                callbacks=[lambda _s, t: states.append(t.state), *callbacks],
            )
            for state in states:
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
    last = failed[-1].user_attrs.get("fail_reason") if failed else None
    return RunResult(completed(study), n_trials, streak >= max_consecutive_failures, last)


def run(
    study: optuna.Study,
    bench: Workbench,
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> RunResult:
    """Run the study's own objective until it holds ``n_trials`` complete trials (see :func:`run_trials`).

    A trial that raises (a plan that cannot apply, memory exhausted, ...) is recorded as failed
    with its reason and the study goes on; ten failures in a row stop it. ``KeyboardInterrupt``
    propagates after the running trial is marked failed.
    """
    if completed(study) >= n_trials:
        return RunResult(completed(study), n_trials, False)
    study.sampler = make_sampler(bench.config.search, offset=len(study.trials))
    labelled = _Labelled(Objective(bench), bench.config.search.sampler)
    return run_trials(
        study, labelled, n_trials=n_trials, timeout=timeout,
        callbacks=[_Unstick(labelled, bench.config.search), *callbacks], gc_after_trial=True,
    )


class _Unstick:
    """After a trial that only repeated a plan already stopped at the cheap fidelity, the next
    trial is drawn at random, then the configured sampler takes over again.

    Optuna's samplers learn nothing from pruned trials of a multi-objective study, so a model-based
    sampler that proposed a plan the cheap fidelity stopped keeps proposing it (only parameters the
    plan ignores change) and the study would loop on it forever; one new random plan changes what
    the sampler knows.
    """

    def __init__(self, labelled: "_Labelled", search: SearchConfig) -> None:
        self.labelled, self.search = labelled, search

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        stuck = trial.state == TrialState.PRUNED and SAME_PLAN_AS in trial.user_attrs
        if stuck and self.labelled.sampler != "random":
            log.info("trial %d repeated a plan stopped at the cheap fidelity; drawing the next plan at random",
                     trial.number)
            study.sampler = SAMPLERS["random"](self.search.seed + len(study.trials))
            self.labelled.sampler = "random"
        elif not stuck and self.labelled.sampler != self.search.sampler:
            study.sampler = make_sampler(self.search, offset=len(study.trials))
            self.labelled.sampler = self.search.sampler


#: user attributes of a trial whose parameters were queued rather than sampled
QUEUED_BY = ("baseline", "warm_start", "retry_of")


class _Labelled:
    """Records on each trial which sampler chose its plan (``sampler``), or ``"enqueued"`` when
    its parameters were queued (a baseline, a warm start, a retried trial)."""

    def __init__(self, objective: Callable[[optuna.Trial], Sequence[float]], sampler: str) -> None:
        self.objective = objective
        self.sampler = sampler

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        queued = any(k in trial.user_attrs for k in QUEUED_BY)
        trial.set_user_attr("sampler", "enqueued" if queued else self.sampler)
        return self.objective(trial)


@dataclass(frozen=True)
class StudySummary:
    name: str
    storage: str  # masked
    complete: int
    failed: int
    running: int
    front_size: int
    best_accuracy: float | None
    best_speedup: float | None  # among trials within the study's accuracy-drop budget


def list_studies(storage: optuna.storages.BaseStorage, url: str) -> list[StudySummary]:
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        front = front_trials(study) if complete and len(study.directions) > 1 else []
        out.append(
            StudySummary(
                name=summary.study_name,
                storage=mask_url(url),
                complete=len(complete),
                failed=sum(t.state == TrialState.FAIL for t in trials),
                running=sum(t.state == TrialState.RUNNING for t in trials),
                front_size=len(front),
                best_accuracy=max((t.values[0] for t in complete), default=None),
                best_speedup=max(
                    (t.user_attrs.get("speedup", 0.0) for t in complete if feasible(t)), default=None
                ),
            )
        )
    return out
