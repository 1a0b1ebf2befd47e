"""A run that refines its front, end to end on the tiny model: what each refinement stores, that the
trial target, a resume and the front before refinement leave refinements out, that export rebuilds
a refinement with its scale, and how search.time_budget bounds the trials.

Time here is a test's clock (:class:`Clock`): the session and the refinement loop read it, and the
test moves it on (a slow teacher, slow trials, the end of the refinements' time), so what a budget
allows is the same on a loaded machine as on an idle one. Everything else runs for real.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.cli import _refined_line
from autocompress.errors import ExportError
from autocompress.export.ship import REBUILD_TOLERANCE_PT, export_trial
from autocompress.schema.config import StudyConfig, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import refine as refine_mod
from autocompress.search.objective import OBJECTIVES
from autocompress.store import record
from autocompress.store.record import TrialRecord
from autocompress.study import session
from autocompress.study.runner import completed, counted_states, typical_trial_seconds
from conftest import tiny_config_dict

#: refinements the refined study is allowed before its clock jumps past the refinements' time
REFINEMENTS = 3


class Clock:
    """The ``time`` module as the session and the refinement loop see it: the real one, with
    ``monotonic`` moved on by the seconds a test skips."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Listener(session.StudyProgress):
    """Records what the run tells, and moves the clock on: ``teacher`` seconds when the teacher is
    ready, ``per_trial`` after each trial, and past any deadline once ``refinements`` were added."""

    def __init__(self, *, teacher: float = 0.0, per_trial: float = 0.0, refinements: int = REFINEMENTS) -> None:
        self.clock = Clock()
        self.teacher, self.per_trial, self.limit = teacher, per_trial, refinements
        self.trials: list[int] = []
        self.refined_numbers: list[int] = []
        self.reserved: float | None = None

    def teacher_ready(self, metric, from_cache: bool, fine_tune_seconds: float) -> None:
        self.clock.skipped += self.teacher

    def trial_done(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.trials.append(trial.number)
        self.clock.skipped += self.per_trial

    def refining(self, study: optuna.Study, seconds: float) -> None:
        self.reserved = seconds
        if self.limit == 0:
            self.clock.skipped += 1e7

    def refined(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.refined_numbers.append(trial.number)
        if len(self.refined_numbers) >= self.limit:
            self.clock.skipped += 1e7


def _config(model_dir: Path, csv_path: Path, **search: Any) -> StudyConfig:
    return parse_config(tiny_config_dict(
        model_dir, csv_path,
        teacher={"epochs": 8.0, "learning_rate": 3.0e-3},  # a teacher that learns the task (100 %)
        recovery={"epochs": 0.5, "learning_rate": 3.0e-4},  # too short for a deep cut to catch up: room to refine
        fidelity={"enabled": False},
        space={"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32, 8], "depth": {"min": 1}},
        objectives={"max_accuracy_drop": 5.0},
        search={"trials": 5, "sampler": "random", "seed": 0, **search},
    ))


def _run(mp: pytest.MonkeyPatch, request: session.StudyRequest, listener: Listener) -> session.StudyRun:
    mp.setattr(session, "time", listener.clock)
    mp.setattr(refine_mod, "time", listener.clock)
    return session.run_study(request, listener)


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> Path:
    """One cache for the module: every study here shares its teacher (same model, data and settings)."""
    return tmp_path_factory.mktemp("teacher-cache")


@pytest.fixture(scope="module")
def refined(tiny_model_dir, tiny_csv, teacher_cache, tmp_path_factory):
    """(run, request, listener): five trials, then up to three refinements (refine.seconds is an hour,
    cut short by the test's clock)."""
    tmp = tmp_path_factory.mktemp("refined")
    cfg = _config(tiny_model_dir, tiny_csv, refine={"seconds": 3600.0, "near": 100.0})
    request = session.run_request(cfg, storage=f"sqlite:///{tmp / 'study.db'}", cache_dir=teacher_cache)
    listener = Listener()
    with pytest.MonkeyPatch.context() as mp:
        run = _run(mp, request, listener)
    return run, request, listener


def _trials(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in study.get_trials(deepcopy=False)}


# ------------------------------------------------------------------------------------ the refined study
def test_each_refinement_rebuilds_a_trials_plan_with_twice_its_recovery_and_keeps_its_speed_and_size(refined):
    run, _, listener = refined
    assert run.refined, "no candidate was refined: the study needs a recovered candidate below the teacher"
    assert list(run.refined) == listener.refined_numbers  # each one told as it was added
    assert 3590.0 < listener.reserved <= 3600.0  # refine.seconds, after the trials
    trials = _trials(run.study)
    teacher = 100 * record.read(trials[0]).metric.value + record.read(trials[0]).accuracy_drop
    for number in run.refined:
        t = trials[number]
        r = record.read(t)
        base_t = trials[r.refines]
        base = record.read(base_t)
        assert record.is_full(base_t) and base.same_plan_as is None
        assert r.plan == base.plan and t.params == base_t.params and r.sampler == "refinement"
        assert record.is_full(t) and r.fidelity == "full" and r.host == base.host
        assert r.recovery_scale == 2 * base.scale and r.scale == r.recovery_scale
        assert r.recovered and r.recovery.recovery_epochs == pytest.approx(2 * base.recovery.recovery_epochs)
        assert r.recovery.recovery_steps > base.recovery.recovery_steps
        # the same plan on the same host: the refined build's latency, speed-up and size
        assert (r.latency, r.latencies, r.speedup, r.size, r.size_ratio) == \
            (base.latency, base.latencies, base.speedup, base.size, base.size_ratio)
        assert tuple(t.values[1:]) == tuple(base_t.values[1:])
        # its own metric, on the whole eval split
        assert t.values[0] == pytest.approx(100 * r.metric.value)
        assert r.accuracy_drop == pytest.approx(teacher - t.values[0], abs=1e-4)
        assert r.metric.n == base.metric.n
        assert record.feasible(t) == (r.accuracy_drop <= 5.0)


def test_refinements_are_not_trials_the_target_counts(refined):
    run, _, _ = refined
    sampled = [t.number for t in run.study.trials if record.REFINES not in t.user_attrs]
    assert len(sampled) == 5 and completed(run.study) == 5 == run.result.completed
    assert sorted(counted_states(run.study)) == sampled
    assert len(run.study.trials) == 5 + len(run.refined)
    assert not set(run.refined) & set(sampled)


def test_the_front_before_refinement_holds_trials_only_and_a_better_refinement_replaces_its_original(refined):
    run, _, _ = refined
    study = run.study
    trials = _trials(study)
    before = record.front_before_refinement(study)
    assert before and not any(record.REFINES in t.user_attrs for t in before)
    assert all(record.feasible(t) and record.is_full(t) for t in before)
    gained = [n for n in run.refined if trials[n].values[0] > trials[trials[n].user_attrs["refines"]].values[0]]
    assert gained, "no refinement raised its plan's metric"
    on_front = {t.number for t in record.front(study)}
    for n in gained:  # the same speed and size with a higher metric: the original is dominated
        assert trials[n].user_attrs["refines"] not in on_front


def test_the_cli_tells_a_refinement_in_one_line(refined):
    run, _, _ = refined
    trials = _trials(run.study)
    t = trials[run.refined[0]]
    r = record.read(t)
    line = _refined_line(run.study, t)
    assert line.startswith(f"trial {t.number} refines trial {r.refines} ({r.plan_summary}) with 2× the recovery: ")
    assert f"{trials[r.refines].values[0]:.2f} → {t.values[0]:.2f}" in line and "\n" not in line


def test_resuming_a_refined_study_at_its_target_starts_no_trial(refined, teacher_cache):
    run, request, _ = refined
    before = sorted(t.number for t in run.study.trials)
    listener = Listener(refinements=0)  # and its refinements' time ends as it begins
    with pytest.MonkeyPatch.context() as mp:
        again = _run(mp, session.resume_request(request.name, request.url, cache_dir=teacher_cache), listener)
    assert listener.trials == [] and again.refined == ()
    assert again.result.completed == 5 and not again.result.gave_up
    assert sorted(t.number for t in again.study.trials) == before


def test_export_rebuilds_a_refinement_with_its_own_recovery(refined, teacher_cache, tmp_path, monkeypatch):
    run, _, _ = refined
    trials = _trials(run.study)

    def accuracy(t: optuna.trial.FrozenTrial) -> float:
        return 100 * record.read(t).accuracy.value

    changed = [n for n in run.refined
               if abs(accuracy(trials[n]) - accuracy(trials[trials[n].user_attrs["refines"]])) > REBUILD_TOLERANCE_PT]
    assert changed, "no refinement changed its plan's accuracy by more than export's tolerance"
    number = changed[0]
    result = export_trial(run.study, number, tmp_path / "out", teacher_cache)  # raises if the rebuild differs
    assert result.trial == number and result.rebuilt_accuracy == pytest.approx(accuracy(trials[number]), abs=1e-6)
    # rebuilt with the study's own recovery, it would be the refined trial's model, not this one
    monkeypatch.setattr(TrialRecord, "scale", property(lambda self: 1.0))
    with pytest.raises(ExportError, match="rebuilt model"):
        export_trial(run.study, number, tmp_path / "wrong", teacher_cache)
    assert not (tmp_path / "wrong").exists()


# ------------------------------------------------------------------------------------ the time budget
def test_a_time_budget_counts_the_teachers_preparation_and_keeps_the_refinements_time(
        tiny_model_dir, tiny_csv, teacher_cache, tmp_path, monkeypatch):
    """2500 s in all, 600 of them kept for refinements: a teacher ready at 1000 s leaves time for one
    1000 s trial (the second would start at 2000 s, past the trials' 1900 s)."""
    cfg = _config(tiny_model_dir, tiny_csv, trials=500, time_budget=2500.0, refine={"seconds": 600.0})
    listener = Listener(teacher=1000.0, per_trial=1000.0)
    run = _run(monkeypatch, session.run_request(cfg, storage=f"sqlite:///{tmp_path / 't.db'}", cache_dir=teacher_cache),
               listener)
    assert completed(run.study) == 1 == len(listener.trials) and not run.result.gave_up
    assert 490.0 < listener.reserved <= 500.0  # what is left of the budget goes to refinements
    assert run.refined == ()  # the one trial is the uncompressed teacher: nothing to refine


def test_no_trial_starts_that_the_median_trial_says_would_run_into_the_refinements_time(
        tiny_model_dir, tiny_csv, teacher_cache, tmp_path, monkeypatch):
    """Trials take 700 s and the median trial says 600: the second starts at 700 s (ends about
    1300 s), the third would start at 1400 s and likely end past the trials' 1900 s."""
    cfg = _config(tiny_model_dir, tiny_csv, trials=500, time_budget=2500.0, refine={"seconds": 600.0})
    monkeypatch.setattr(session, "typical_trial_seconds", lambda study: 600.0)
    listener = Listener(per_trial=700.0)
    run = _run(monkeypatch, session.run_request(cfg, storage=f"sqlite:///{tmp_path / 't.db'}", cache_dir=teacher_cache),
               listener)
    assert completed(run.study) == 2 and not run.result.gave_up


# ------------------------------------------------------------------------------------ the trial target's reader
def _add(study: optuna.Study, seconds: float, **attrs: Any) -> None:
    start = datetime.datetime(2026, 1, 1)
    plan = CompressionPlan.uniform(2)
    study.add_trial(optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=TrialState.COMPLETE, value=None, values=[80.0, 0.5, 1.0],
        datetime_start=start, datetime_complete=start + datetime.timedelta(seconds=seconds), params={},
        distributions={}, user_attrs={**TrialRecord(plan=plan, fidelity="full").to_attrs(), **attrs},
        system_attrs={}, intermediate_values={}))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_the_target_and_the_median_trial_leave_refinements_and_repeats_out(storage, tmp_path):
    url = None if storage == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, directions=[d for _, d in OBJECTIVES])
    assert typical_trial_seconds(study) == 0.0
    for seconds in (10.0, 30.0, 20.0):
        _add(study, seconds)
    _add(study, 500.0, refines=0, recovery_scale=2.0)
    _add(study, 600.0, refines=1, recovery_scale=2.0)
    assert typical_trial_seconds(study) == 20.0  # the median of 10, 30 and 20 s: a refinement is no trial
    for number in (2, 1, 0):
        _add(study, 0.0, same_plan_as=number)
    assert typical_trial_seconds(study) == 20.0  # nor a repeat's instant one
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert completed(study) == 6  # three trials and three repeats; no refinement
    assert sorted(counted_states(study)) == [0, 1, 2, 5, 6, 7, 8]
