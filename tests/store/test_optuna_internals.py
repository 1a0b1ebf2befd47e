"""Optuna's internals that autocompress relies on, checked against the installed Optuna.

``pytest -m slow tests/store/test_optuna_internals.py`` also runs this file (and the record's tests) on the oldest
Optuna that ``pyproject.toml`` allows, in a fresh virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState, create_trial

from autocompress.store import optuna_internals as compat
from autocompress.study import open_storage

REPO = Path(__file__).resolve().parents[2]
OLDEST_OPTUNA = "5.0.0"  # the lower bound of ``optuna`` in pyproject.toml

pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning",
    "ignore:Heartbeat of storage is supposed to be used with Study.optimize",
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------------- the front and its volume
def test_pareto_mask_keeps_every_nondominated_point_and_its_duplicates():
    losses = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]]
    assert compat.pareto_mask(losses) == [True, True, True, False, True]


def test_pareto_mask_drops_a_point_dominated_in_one_objective_only():
    losses = [[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [1.0, 2.0, 3.0], [2.0, 1.0, 5.0]]
    assert compat.pareto_mask(losses) == [True, False, True, True]
    assert compat.pareto_mask([]) == []


def test_hypervolume_of_one_point_is_its_box():
    assert compat.hypervolume(np.array([[0.0, 0.0, 0.0]]), np.array([1.0, 2.0, 3.0])) == pytest.approx(6.0)


def test_hypervolume_of_two_boxes_counts_their_overlap_once():
    front = np.array([[0.0, 1.0], [1.0, 0.0]])  # boxes of area 2 and 2, overlapping on 1
    ref = np.array([2.0, 2.0])
    assert compat.hypervolume(front, ref) == pytest.approx(3.0)
    assert compat.hypervolume(front, ref, assume_pareto=True) == pytest.approx(3.0)
    with_dominated = np.array([[0.0, 1.0], [1.5, 1.5], [1.0, 0.0]])
    assert compat.hypervolume(with_dominated, ref) == pytest.approx(3.0)
    assert compat.hypervolume(np.empty((0, 2)), ref) == 0.0


# ---------------------------------------------------------------------- queued and retried trials
def test_queued_params_of_a_waiting_trial_are_the_ones_it_was_queued_with():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.5, "n": 3})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.params == {}  # why Optuna's public view is not enough
    assert compat.queued_params(waiting) == {"x": 1.5, "n": 3}


def test_queued_params_of_a_finished_trial_are_its_parameters():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"x": 1.5, "n": 3})
    study.optimize(lambda t: t.suggest_float("x", 0, 2) + t.suggest_int("n", 0, 5), n_trials=2)
    queued, sampled = study.get_trials()
    assert compat.queued_params(queued) == {"x": 1.5, "n": 3} == queued.params
    assert compat.queued_params(sampled) == sampled.params
    assert set(sampled.params) == {"x", "n"}


def _retry(study: optuna.Study, failed) -> optuna.trial.FrozenTrial:
    """Queue a retry of ``failed`` with compat's system attributes; the new waiting trial."""
    study.add_trial(create_trial(state=TrialState.WAITING, params={}, distributions={},
                                 system_attrs=compat.retry_system_attrs(failed)))
    return study.get_trials()[-1]


def _fail(study: optuna.Study, waiting) -> optuna.trial.FrozenTrial:
    """The waiting trial, run and failed (as when its worker dies)."""
    trial = study.ask()
    assert trial.number == waiting.number
    study.tell(trial, state=TrialState.FAIL)
    return study.get_trials()[trial.number]


def test_a_retry_reads_back_through_optunas_retry_callback():
    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))
    first = study.get_trials()[0]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(first) is None
    retry = _retry(study, first)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == first.number
    assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [first.number]
    again = _retry(study, _fail(study, retry))
    assert RetryHeartbeatStaleTrialCallback.retry_history(again) == [0, 1]


def test_a_retry_of_a_retry_names_the_original_trial_as_optunas_callback_does():
    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))
    failed_again = _fail(study, _retry(study, study.get_trials()[0]))
    ours = _retry(study, failed_again)
    RetryHeartbeatStaleTrialCallback()(study, failed_again)  # what Optuna itself queues for the same trial
    theirs = study.get_trials()[-1]
    assert RetryHeartbeatStaleTrialCallback.retry_history(ours) == RetryHeartbeatStaleTrialCallback.retry_history(theirs) == [0, 1]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(theirs) == 0
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(ours) == 0


# ---------------------------------------------------------------------- trial states from the database
def _every_state(study: optuna.Study) -> None:
    """One trial in each state: complete, pruned, failed, running and waiting."""
    study.tell(study.ask(), [1.0])
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()
    study.enqueue_trial({})


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_trial_states_are_what_optunas_public_call_says(tmp_path, backend):
    storage = _sqlite(tmp_path) if backend == "sqlite" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    other = optuna.create_study(storage=storage, study_name="other")
    other.tell(other.ask(), [2.0])  # another study's trials are not counted
    _every_state(study)
    study_id = storage.get_study_id_from_name("s")
    states = compat.trial_states(storage, study_id)
    assert states == {t.number: t.state for t in storage.get_all_trials(study_id)}
    assert sorted(states.values(), key=lambda s: s.value) == [
        TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING
    ]


# ---------------------------------------------------------------------- running trials without a heartbeat
def _sqlite(tmp_path: Path, name: str = "c.db") -> optuna.storages.RDBStorage:
    return open_storage(f"sqlite:///{tmp_path / name}")


def _trial_id(storage: optuna.storages.RDBStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _orphans(storage, study: optuna.Study, started_before: datetime) -> list[int]:
    study_id = storage.get_study_id_from_name(study.study_name)
    return [number for _, number in compat.running_without_heartbeat(storage, study_id, started_before)]


def test_a_running_trial_that_never_sent_a_heartbeat_is_listed(tmp_path):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(storage=storage, study_name="c")
    study.tell(study.ask(), 1.0)  # a finished trial is never listed
    running = study.ask()
    assert _orphans(storage, study, _utc_now() + timedelta(minutes=1)) == [running.number]
    trial_id = _trial_id(storage, study, running.number)
    study_id = storage.get_study_id_from_name("c")
    assert compat.running_without_heartbeat(storage, study_id, _utc_now() + timedelta(minutes=1)) == [
        (trial_id, running.number)
    ]


def test_a_trial_started_after_the_cutoff_is_not_listed(tmp_path):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(storage=storage, study_name="c")
    study.ask()
    assert _orphans(storage, study, _utc_now() - timedelta(minutes=1)) == []


def test_a_trial_with_a_heartbeat_is_not_listed(tmp_path):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(storage=storage, study_name="c")
    beating, silent = study.ask(), study.ask()
    storage.record_heartbeat(_trial_id(storage, study, beating.number))
    assert _orphans(storage, study, _utc_now() + timedelta(minutes=1)) == [silent.number]


def test_only_the_given_studys_trials_are_listed(tmp_path):
    storage = _sqlite(tmp_path)
    mine = optuna.create_study(storage=storage, study_name="mine")
    other = optuna.create_study(storage=storage, study_name="other")
    other.ask()
    assert _orphans(storage, mine, _utc_now() + timedelta(minutes=1)) == []


def test_a_storage_without_heartbeats_has_no_orphans():
    study = optuna.create_study()
    study.ask()
    assert compat.running_without_heartbeat(compat.backing_storage(study), 0, _utc_now() + timedelta(minutes=1)) == []


@pytest.fixture(params=["EST+5", "JST-9"], ids=["west-of-utc", "east-of-utc"])
def local_zone(request, monkeypatch):
    """The process's local time zone set to one far from UTC (POSIX rules: no zone database needed)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_the_cutoff_is_utc_whatever_the_local_time_zone(tmp_path, local_zone):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(storage=storage, study_name="c")
    study.ask()
    assert _orphans(storage, study, _utc_now() - timedelta(minutes=1)) == [], "a trial started now is not an orphan"
    assert _orphans(storage, study, _utc_now() + timedelta(minutes=1)) == [0]


def test_a_storage_opened_by_autocompress_queues_a_dead_workers_trial_again(tmp_path):
    """Optuna calls the stale-trial hook ``open_storage`` gives it; the retry is readable by Optuna's own callback."""
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_seconds=1, grace_seconds=1)
    study = optuna.create_study(storage=storage, study_name="h")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(_trial_id(storage, study, dead.number))
    time.sleep(2.2)  # the worker "died": its heartbeat is older than the grace period
    optuna.storages.fail_stale_trials(study)
    first, retry = study.get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.user_attrs == {"retry_of": dead.number}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == dead.number


# ---------------------------------------------------------------------- the oldest Optuna allowed
@pytest.mark.slow
def test_this_file_passes_on_the_oldest_optuna_allowed(tmp_path):
    """Install the oldest allowed Optuna in a fresh venv (the rest comes from this environment) and run
this file and the record's tests there (the record writes Optuna constraints)."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"optuna=={OLDEST_OPTUNA}", "numpy", "sqlalchemy", "pytest"],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, f"could not install optuna {OLDEST_OPTUNA}:\n{install.stderr[-3000:]}"
    # ``--system-site-packages`` reaches the base interpreter's packages, not this (outer) environment's:
    # add the outer site-packages after the new venv's own, so its Optuna wins and torch etc. are found
    inner_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(outer))
    (Path(inner_site) / "_outer_environment.pth").write_text(lines)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VIRTUAL_ENV", None)
    version = subprocess.run([str(python), "-c", "import optuna; print(optuna.__version__)"],
                             capture_output=True, text=True, env=env, check=True)
    assert version.stdout.strip() == OLDEST_OPTUNA
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
         "tests/store/test_optuna_internals.py", "tests/store/test_record.py", "tests/search/test_dedupe.py", "tests/search/test_fidelity.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
