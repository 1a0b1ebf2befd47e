"""Every use of Optuna's internals, in one place, each with why no public API serves.

Checked against the Optuna versions ``pyproject.toml`` allows (``tests/store/test_optuna_internals.py`` runs on the
installed one; ``pytest -m slow tests/store/test_optuna_internals.py`` also runs it on the oldest allowed release
in a fresh virtual environment). Where Optuna has a public call, the code uses it instead: study
ids come from ``get_study_id_from_name``, a retried trial's history from
``RetryHeartbeatStaleTrialCallback``, trial ids from ``get_trial_id_from_study_id_trial_number``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "StudyView",
    "as_complete",
    "backing_storage",
    "constraint_attrs",
    "numbers_with_user_attr",
    "pareto_mask",
    "hypervolume",
    "queued_params",
    "retry_system_attrs",
    "running_without_heartbeat",
    "trial_states",
]


def backing_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage the study was opened on, without Optuna's per-process trial cache.

    Private: Optuna wraps an ``RDBStorage`` in ``_CachedStorage`` (``study._storage._backend``),
    whose cache can miss a running trial that another worker created; a trial budget counted
    across workers must read the database itself, and no public accessor returns it.
    """
    storage = study._storage  # no public accessor
    return getattr(storage, "_backend", storage)  # _CachedStorage keeps the RDBStorage here


def trial_states(storage: optuna.storages.BaseStorage, study_id: int) -> dict[int, TrialState]:
    """Every trial's state by number, read from the database itself.

    Private for RDB storages: a query of two columns of Optuna's trial table. The public
    ``RDBStorage.get_all_trials(study_id, states=...)`` gives the same answer (a test checks it)
    but reads every trial's parameters and attributes: 0.38 s per call on a 315-trial study
    against 0.5 ms for this query, and the trial loop asks several times per trial. Other
    storages use the public call.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        return {t.number: t.state for t in storage.get_all_trials(study_id, deepcopy=False)}
    from optuna.storages._rdb.models import TrialModel

    query = sa.select(TrialModel.number, TrialModel.state).where(TrialModel.study_id == study_id)
    with engine.connect() as conn:
        return {int(number): TrialState(state) for number, state in conn.execute(query)}


def pareto_mask(losses: Sequence[Sequence[float]]) -> list[bool]:
    """Which rows of ``losses`` (to minimise) are on the Pareto front (duplicates stay on it).

    Private: ``optuna.study._multi_objective._is_pareto_front``; the public ``study.best_trials``
    only works on a study's own trials, not on a view's points.
    """
    from optuna.study._multi_objective import _is_pareto_front

    if not losses:
        return []
    return [bool(v) for v in _is_pareto_front(np.asarray(losses, dtype=float), assume_unique_lexsorted=False)]


def hypervolume(points: np.ndarray, reference: np.ndarray, *, assume_pareto: bool = False) -> float:
    """Hypervolume of ``points`` (losses) up to ``reference``: Optuna's WFG implementation.

    Private: ``optuna._hypervolume.compute_hypervolume``; Optuna's public hypervolume is only the
    plot (``plot_hypervolume_history``), not the number.
    """
    from optuna._hypervolume import compute_hypervolume

    if len(points) == 0:
        return 0.0
    return float(compute_hypervolume(points, reference, assume_pareto=assume_pareto))


def queued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial was queued with (``enqueue_trial``), or its parameters once it ran.

    Private: a waiting trial's parameters are the ``fixed_params`` system attribute that
    ``enqueue_trial`` writes; ``trial.params`` stays empty until it runs.
    """
    return dict(trial.system_attrs.get("fixed_params", trial.params))


def retry_system_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """System attributes for a retry of ``trial`` that ``RetryHeartbeatStaleTrialCallback.retried_trial_number``
    and ``retry_history`` (public) read back.

    Private: the key names are those Optuna's retry callback writes; it has no public way to queue
    a retry with other user attributes (it copies all of them, half-written metrics included).
    """
    with warnings.catch_warnings():  # experimental since Optuna 3.0, still there in 5.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = [*RetryHeartbeatStaleTrialCallback.retry_history(trial), trial.number]
    return {"failed_trial": history[0], "retry_history": history}  # as Optuna's callback: the first failed trial


def running_without_heartbeat(storage: optuna.storages.BaseStorage, study_id: int, started_before: datetime) -> list[tuple[int, int]]:
    """``(trial_id, number)`` of the study's running trials, started before ``started_before``
    (naive UTC), that never recorded a heartbeat; ``[]`` for a storage without heartbeats.

    Private: Optuna's tables (``optuna.storages._rdb.models``). ``fail_stale_trials`` only sees
    trials with a heartbeat on record, and no public call lists the others.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        return []
    from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel

    query = sa.select(TrialModel.trial_id, TrialModel.number).where(
        TrialModel.study_id == study_id,
        TrialModel.state == TrialState.RUNNING,
        TrialModel.__table__.c.datetime_start < started_before,  # the column, whatever its ORM attribute is called
        ~sa.exists().where(TrialHeartbeatModel.trial_id == TrialModel.trial_id),
    )
    with engine.connect() as conn:
        return [(int(a), int(b)) for a, b in conn.execute(query)]


class StudyView:
    """A study as a sampler sees it: its trials passed through ``adjust`` (which may turn a stopped
    trial into a complete one that breaks a constraint), everything else the study itself.

    Private: Optuna's samplers read a study's trials through ``Study._get_trials`` (GP, TPE and
    NSGA-II all do) and a study has no public hook for what a sampler is told about a trial that
    did not complete: they ignore pruned trials of a multi-objective study. Writing those trials
    as complete would change what every other reader of the study (trial budget, front, export)
    sees. ``tests/search/test_samplers.py`` checks that GP reads the adjusted trials, and runs every sampler through it.
    """

    def __init__(self, study: optuna.Study, adjust: Callable[[list[FrozenTrial]], list[FrozenTrial]]) -> None:
        self._view_of = study
        self._adjust = adjust

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view_of, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._adjust(self._view_of._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache))
        return trials if states is None else [t for t in trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def as_complete(trial: FrozenTrial, values: Sequence[float], constraints: dict[str, float]) -> FrozenTrial:
    """A copy of ``trial`` as a complete trial with ``values`` and ``constraints`` (for a sampler).

    Private: a trial's constraints live in its system attributes under Optuna's
    ``constraints:<name>`` keys (what ``trial.set_constraint`` writes); a copy that a sampler reads
    as constrained must carry them there.
    """
    system_attrs = {k: v for k, v in trial.system_attrs.items() if k != "constraints" and not k.startswith("constraints:")}
    system_attrs.update(constraint_attrs(constraints))
    return FrozenTrial(
        number=trial.number,
        state=TrialState.COMPLETE,
        value=None,
        values=list(values),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs=system_attrs,
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    )


def constraint_attrs(constraints: dict[str, float]) -> dict[str, float]:
    """The system attributes that hold ``constraints`` (private: Optuna's ``constraints:<name>`` keys,
    what ``trial.set_constraint`` writes), for a trial made with ``optuna.trial.create_trial``."""
    return {f"constraints:{k}": float(v) for k, v in constraints.items()}


def numbers_with_user_attr(storage: optuna.storages.BaseStorage, study_id: int, key: str) -> set[int]:
    """The numbers of the study's trials that hold user attribute ``key``, read from the database.

    Private for RDB storages, as :func:`trial_states` and for its reason: a query of Optuna's trial
    and user-attribute tables. Other storages use the public call.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        return {t.number for t in storage.get_all_trials(study_id, deepcopy=False) if key in t.user_attrs}
    from optuna.storages._rdb.models import TrialModel, TrialUserAttributeModel

    query = (sa.select(TrialModel.number)
             .join(TrialUserAttributeModel, TrialUserAttributeModel.trial_id == TrialModel.trial_id)
             .where(TrialModel.study_id == study_id, TrialUserAttributeModel.key == key))
    with engine.connect() as conn:
        return {int(number) for (number,) in conn.execute(query)}
