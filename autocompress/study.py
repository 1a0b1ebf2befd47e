"""Create, load, resume and list studies; Optuna's storage is the source of truth.

The storage URL is resolved once, here: by default each study lives in its own SQLite file
``studies/<name>.db``; any SQLAlchemy URL Optuna accepts (PostgreSQL for shared studies) works.
Trials carry their plan and metrics as user attributes; the study carries its config, the
teacher's figures and the names of its objectives.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.config import SearchConfig, StudyConfig, parse_config
from autocompress.errors import ConfigError, StorageError, StudyNotFoundError
from autocompress.objective import OBJECTIVES, Objective, Workbench
from autocompress.report.collect import feasible
from autocompress.space import baseline_plans

__all__ = [
    "DEFAULT_ROOT",
    "StudySummary",
    "default_storage",
    "mask_url",
    "open_storage",
    "check_can_continue",
    "create_or_load",
    "load",
    "stored_config",
    "make_sampler",
    "run",
    "list_studies",
    "completed",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("studies")
HEARTBEAT_SECONDS = 10  # a running trial proves it is alive this often
GRACE_SECONDS = 30  # a running trial silent this long is marked failed (its process died)


def default_storage(name: str, root: Path = DEFAULT_ROOT) -> str:
    return f"sqlite:///{root / f'{name}.db'}"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


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
    path = _sqlite_path(url)
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
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds,
        )
    except ImportError:
        raise StorageError(
            f"cannot open storage {mask_url(url)}: its database driver is not installed; "
            "for PostgreSQL: pip install 'psycopg[binary]' (or the extra autocompress[postgres])"
        ) from None
    except Exception as exc:  # SQLAlchemy / driver errors of every kind mean "cannot open"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"cannot open storage {mask_url(url)}: {mask_url(detail)}") from None


def make_sampler(search: SearchConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``search.seed + offset`` (offset: trials already run)."""
    seed = search.seed + offset
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    return optuna.samplers.RandomSampler(seed=seed)


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
    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        return False
    try:
        existing = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        return False
    stored = existing.user_attrs.get("config") or {}
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


def create_or_load(cfg: StudyConfig, storage: optuna.storages.BaseStorage, name: str, bench: Workbench) -> optuna.Study:
    """Create the study (seeded with the uniform baselines) or continue the one of that name.

    Call :func:`check_can_continue` first: this function does not compare configs.
    """
    directions = [d for _, d in OBJECTIVES]
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    study.set_metric_names([n for n, _ in OBJECTIVES])
    study.set_user_attr("config", cfg.to_dict())
    study.set_user_attr("autocompress", {"objectives": [list(o) for o in OBJECTIVES], "schema_version": 1})
    study.set_user_attr(
        "teacher",
        {
            "fingerprint": bench.teacher.fingerprint,
            "accuracy": bench.teacher.eval_accuracy.to_dict(),
            "size": bench.teacher_size.to_dict(),
            "fine_tune_seconds": bench.teacher.fine_tune_seconds,
            "arch": vars(bench.arch),
            "labels": bench.task.label_names,
        },
    )
    if cfg.search.seed_baselines:
        for label, params in baseline_plans(cfg.space, bench.arch).items():
            study.enqueue_trial(params, user_attrs={"baseline": label}, skip_if_exists=True)
    return study


def completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class _StopAfter:
    """Stop when the study holds ``target`` complete trials, or after too many failures in a row."""

    def __init__(self, target: int, max_consecutive_failures: int) -> None:
        self.target = target
        self.max_failures = max_consecutive_failures
        self.failures = 0
        self.gave_up = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures = self.failures + 1 if trial.state == TrialState.FAIL else 0
        if self.failures >= self.max_failures:
            self.gave_up = True
            study.stop()
        elif completed(study) >= self.target:
            study.stop()


class _Recorded:
    """Wraps the objective so that every failure, Ctrl-C included, leaves its reason on the trial."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); the trial will be run again on resume")
            raise
        except Exception as exc:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise


@dataclass(frozen=True)
class RunResult:
    completed: int
    target: int
    gave_up: bool  # stopped after repeated failures
    last_failure: str | None = None


def run(
    study: optuna.Study,
    bench: Workbench,
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> RunResult:
    """Run trials until the study holds ``n_trials`` complete ones (or ``timeout`` seconds pass).

    A trial that raises (a plan that cannot apply, memory exhausted, ...) is recorded as failed
    with its reason and the study goes on; ten failures in a row stop it. ``KeyboardInterrupt`` propagates after the running trial is marked failed.
    """
    done = completed(study)
    if done >= n_trials:
        return RunResult(done, n_trials, False)
    study.sampler = make_sampler(bench.config.search, offset=len(study.trials))
    stopper = _StopAfter(n_trials, max_consecutive_failures=10)
    study.optimize(
        _Recorded(Objective(bench)),
        timeout=timeout,
        catch=(Exception,),
        callbacks=[stopper, *callbacks],
        gc_after_trial=True,
    )
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    last = failed[-1].user_attrs.get("fail_reason") if failed else None
    return RunResult(completed(study), n_trials, stopper.gave_up, last)


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
        front = study.best_trials if complete and len(study.directions) > 1 else []
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
