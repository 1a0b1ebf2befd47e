"""Where studies live: the storage URL resolved once, opened with heartbeats, and studies loaded from it.

By default each study lives in its own SQLite file ``studies/<name>.db``; any SQLAlchemy URL Optuna
accepts (PostgreSQL for shared studies) works. Optuna's storage is the source of truth: trials
carry their record (:mod:`autocompress.store.record`), the study its own (:mod:`autocompress.store.study_record`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, NoReturn

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from autocompress.store import optuna_internals as compat
from autocompress.store import record, study_record
from autocompress.schema.config import StudyConfig
from autocompress.errors import StorageError, StudyNotFoundError
from autocompress.store.urls import mask_url, sqlite_path

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_CACHE",
    "GRACE_SECONDS",
    "HEARTBEAT_SECONDS",
    "default_storage",
    "default_output",
    "local_study_urls",
    "open_storage",
    "retry_stale_trial",
    "load",
    "stored_config",
]

log = logging.getLogger(__name__)

#: where studies, their reports and the teacher cache go unless told otherwise
DEFAULT_ROOT = Path("studies")
DEFAULT_CACHE = DEFAULT_ROOT / "cache"
# a running trial proves it is alive this often; one silent for the grace period is marked failed
# (its process died) and queued again. AUTOCOMPRESS_HEARTBEAT / AUTOCOMPRESS_GRACE override them.
HEARTBEAT_SECONDS = int(os.environ.get("AUTOCOMPRESS_HEARTBEAT", "10"))
GRACE_SECONDS = int(os.environ.get("AUTOCOMPRESS_GRACE", "30"))


def default_storage(name: str, root: Path = DEFAULT_ROOT) -> str:
    """The SQLite URL of study ``name`` when no storage is given."""
    return f"sqlite:///{root / f'{name}.db'}"


def default_output(name: str, fmt: str, root: Path = DEFAULT_ROOT) -> Path:
    """Where study ``name``'s report (``html``) or trial table (``csv``, ``parquet``) is written by default."""
    return root / f"{name}.{fmt}"


def local_study_urls(root: Path = DEFAULT_ROOT) -> list[str]:
    """The URLs of the SQLite study files under ``root``."""
    return [f"sqlite:///{p}" for p in sorted(root.glob("*.db"))]


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
    worker that starts a trial, and queued again.
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
    kwargs = {"engine_kwargs": engine_kwargs, "heartbeat_interval": heartbeat_seconds,
              "grace_period": grace_seconds, "heartbeat_stale_trial_callback": retry_stale_trial}
    for attempt in range(3):
        try:
            return _open_rdb(url, kwargs)
        except _CreationRace:
            # another worker created Optuna's tables at the same moment: they exist now; try again
            time.sleep(0.5 + attempt)
    return _open_rdb(url, kwargs, last=True)


def retry_stale_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int = 2) -> None:
    """Stale-trial callback: a trial whose worker died (no heartbeat) is queued again, same plan.

    Like Optuna's ``RetryFailedTrialCallback``, but the new trial inherits only the labels that
    queued it (baseline, warm start), not the dead trial's half-written record.
    """
    retry = compat.retry_system_attrs(trial)
    if len(retry["retry_history"]) > max_retry:
        log.warning("trial %d died %d times; not retrying it again", trial.number, len(retry["retry_history"]))
        return
    labels = record.read(trial)
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=record.queue_labels(baseline=labels.baseline, warm_start=labels.warm_start, retry_of=trial.number),
            system_attrs=retry,
        )
    )
    log.info("trial %d lost its worker; queued again", trial.number)


class _CreationRace(Exception):
    pass


def _open_rdb(url: str, kwargs: dict[str, Any], last: bool = False) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not last:
            # PostgreSQL says a concurrent CREATE TABLE lost either way: a unique violation on its
            # catalogue, or "relation already exists"
            if isinstance(cause, sa_exc.IntegrityError) or type(cause).__name__ in ("UniqueViolation", "DuplicateTable"):
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


def load(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load an existing study, or raise :class:`StudyNotFoundError` listing those that exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        hint = f"; studies here: {', '.join(names)}" if names else "; this storage holds no studies"
        raise StudyNotFoundError(f"no study named '{name}'{hint}") from None


def stored_config(study: optuna.Study) -> StudyConfig:
    """The config a study was created with (as this version reads it: :func:`autocompress.store.study_record.stored_config`)."""
    return study_record.stored_config(study)
