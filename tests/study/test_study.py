"""Studies on a temporary SQLite DB: complete, interrupt, resume, kill, list."""

from __future__ import annotations

import re

import time

import optuna
import torch
import pytest
from optuna.trial import TrialState

from autocompress import study as st
from autocompress.schema.config import parse_config
from autocompress.errors import ConfigError, StorageError, StudyNotFoundError
from autocompress.search.objective import Objective
from autocompress.search.samplers import sampler_name
from autocompress.search.workbench import prepare
from autocompress.schema.plan import CompressionPlan
from conftest import tiny_config_dict


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tiny_csv, tmp_path_factory):
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0}))
    return prepare(cfg, tmp_path_factory.mktemp("cache"))


def test_the_teacher_learns_the_task_from_its_text(bench):
    """The tiny task is separable by its words: a teacher that reads them beats the majority class."""
    labels = bench.eval.labels
    majority = labels.bincount().max().item() / len(labels)
    assert bench.teacher.eval_accuracy.value >= majority + 0.15


def _numbers(study: optuna.Study, state: TrialState) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False, states=(state,))]


def test_study_completes_n_trials_with_plans_and_metrics(bench, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = st.create_or_load(bench.config, st.open_storage(url), "s", bench)
    result = st.run(study, bench, n_trials=6)
    assert result.completed == 6
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    for t in trials:
        plan = CompressionPlan.from_dict(t.user_attrs["plan"])  # stored plan rebuilds the candidate
        assert plan.num_layers == bench.arch.num_layers
        assert 0 <= t.values[0] <= 100 and t.values[1] > 0 and t.values[2] > 0
        assert t.user_attrs["latency"]["rounds"] >= bench.config.profile.repeats
        assert t.user_attrs["host"]["cores"] >= 1
    # the uniform baselines run first, labelled
    labels = [t.user_attrs.get("baseline") for t in trials[:4]]
    assert labels == ["teacher", "int8", "prune50", "half_depth"]
    teacher_trial = trials[0]
    assert teacher_trial.values[0] == pytest.approx(100 * bench.teacher.eval_accuracy.value)
    assert study.best_trials, "a multi-objective study has a Pareto front"


def test_interrupt_then_resume_reaches_n_without_loss_or_duplicates(bench, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = st.create_or_load(bench.config, st.open_storage(url), "r", bench)
    real_call = Objective.__call__
    calls = {"n": 0}

    def interrupting(self, trial):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_call(self, trial)

    monkeypatch.setattr(Objective, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        st.run(study, bench, n_trials=7)
    assert len(_numbers(study, TrialState.COMPLETE)) == 3
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "interrupted" in failed[0].user_attrs["fail_reason"]
    before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}

    monkeypatch.setattr(Objective, "__call__", real_call)
    resumed = st.load("r", st.open_storage(url))  # as a new process would
    result = st.run(resumed, bench, n_trials=7)
    assert result.completed == 7
    after = {t.number: t.values for t in resumed.get_trials(states=(TrialState.COMPLETE,))}
    assert len(after) == 7
    assert all(after[n] == v for n, v in before.items()), "completed trials are kept as they were"
    assert len(_numbers(resumed, TrialState.FAIL)) == 1  # the interrupted one, not retried as a duplicate


def test_killed_trial_is_marked_failed_by_heartbeat(bench, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    storage = st.open_storage(url, heartbeat_seconds=1, grace_seconds=2)
    study = st.create_or_load(bench.config, storage, "k", bench)
    st.run(study, bench, n_trials=2)
    # a worker that died mid-trial leaves a RUNNING trial whose heartbeat stops
    orphan = study.ask()
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("k"), orphan.number))
    time.sleep(3)
    st.run(st.load("k", storage), bench, n_trials=3)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL
    assert len(_numbers(study, TrialState.COMPLETE)) == 3


def test_continuing_with_a_changed_space_is_refused(bench, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    storage = st.open_storage(url)
    assert not st.check_can_continue(bench.config, url, "c")
    st.create_or_load(bench.config, storage, "c", bench)
    assert st.check_can_continue(bench.config, url, "c")
    changed = bench.config.model_copy(update={"space": bench.config.space.model_copy(update={"bits": (32,)})})
    with pytest.raises(ConfigError, match="space"):
        st.check_can_continue(changed, url, "c")


def test_missing_study_and_database_give_clear_errors(tmp_path):
    with pytest.raises(StudyNotFoundError, match="no study database"):
        st.open_storage(f"sqlite:///{tmp_path / 'none.db'}", must_exist=True)
    assert not (tmp_path / "none.db").exists(), "reading must not create a database"
    storage = st.open_storage(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StudyNotFoundError, match="no study named 'ghost'"):
        st.load("ghost", storage)


def test_unreachable_storage_and_password_masking():
    with pytest.raises(StorageError) as info:
        st.open_storage("postgresql://bob:s3cret@127.0.0.1:1/nowhere")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)
    assert st.mask_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert st.mask_url("sqlite:///studies/x.db") == "sqlite:///studies/x.db"


def test_list_studies_summarises_each_study(bench, tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    storage = st.open_storage(url)
    study = st.create_or_load(bench.config, storage, "l", bench)
    st.run(study, bench, n_trials=4)
    (summary,) = st.list_studies(storage, url)
    assert summary.name == "l" and summary.complete == 4 and summary.failed == 0
    assert summary.front_size >= 1
    assert summary.best_speedup and summary.best_speedup > 1.0  # half depth is faster than the teacher


def test_cheap_fidelity_prunes_a_candidate_that_cannot_reach_the_front(tiny_model_dir, tiny_csv, tmp_path):
    cfg = parse_config(
        tiny_config_dict(
            tiny_model_dir, tiny_csv,
            teacher={"epochs": 10.0},
            recovery={"epochs": 1.0, "learning_rate": 1.0e-3},
            fidelity={"cheap_eval_size": 40, "margin": 0.5},
            search={"trials": 3, "sampler": "random", "seed_baselines": False},
        )
    )
    bench = prepare(cfg, tmp_path / "cache")
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 'f.db'}"), "f", bench)
    # a completed trial that is faster, smaller and as accurate as the teacher dominates any student
    teacher_acc = 100 * bench.teacher.eval_accuracy.value
    study.add_trial(optuna.trial.create_trial(values=[teacher_acc, 1e-3, 1e-6], params={}, distributions={}))
    half = {"depth": 2, "selection": "even", **{f"{k}_{i}": v for i in range(4) for k, v in (("heads", 1.0), ("ffn", 1.0), ("bits", 32))}}
    study.enqueue_trial(half)
    study.optimize(Objective(bench), n_trials=1, catch=())
    pruned = study.trials[1]
    assert pruned.state == TrialState.PRUNED
    assert pruned.user_attrs["fidelity"] == "cheap" and "trial 0" in pruned.user_attrs["prune_reason"]
    assert pruned.user_attrs["speedup"] > 1.0 and "cheap_accuracy" in pruned.user_attrs
    assert pruned.user_attrs["latency"]["kind"] == "predicted" == pruned.user_attrs["screen"]["kind"]
    assert not {"recover", "short_recover", "latency"} & set(pruned.user_attrs["seconds"]), \
        "a candidate stopped before recovery is never distilled nor timed"
    # the same plan again (only the ignored parameters of dropped layers differ) is stopped at once,
    # without building or timing it
    study.enqueue_trial({**half, "heads_1": 0.5, "heads_3": 0.5})
    study.optimize(Objective(bench), n_trials=1, catch=())
    again = study.trials[2]
    assert again.params != pruned.params and again.user_attrs["plan"] == pruned.user_attrs["plan"]
    assert again.state == TrialState.PRUNED and again.user_attrs["same_plan_as"] == pruned.number
    assert again.user_attrs["seconds"] == {} and f"trial {pruned.number}" in again.user_attrs["prune_reason"]
    # the study's sampler is told the stopped candidate and proposes a plan the study does not hold
    study.sampler = st.study_sampler(bench)
    assert sampler_name(study.sampler) == "random"
    assert [t.number for t in study.sampler.view(study).get_trials(states=(TrialState.COMPLETE,))] == [0, 1]
    study.enqueue_trial({**half, "heads_1": 1.0, "heads_3": 1.0}, user_attrs={"warm_start": "other#1"})
    study.optimize(Objective(bench), n_trials=2, catch=())
    assert study.trials[3].user_attrs["sampler"] == "enqueued" and study.trials[4].user_attrs["sampler"] == "random"
    assert study.trials[4].user_attrs["plan"] != pruned.user_attrs["plan"]


def test_promising_candidate_is_recovered_and_fully_evaluated(tiny_model_dir, tiny_csv, tmp_path):
    cfg = parse_config(
        tiny_config_dict(
            tiny_model_dir, tiny_csv,
            teacher={"epochs": 10.0},
            recovery={"epochs": 1.0, "learning_rate": 1.0e-3},
            fidelity={"cheap_eval_size": 40},
            search={"trials": 1, "sampler": "random", "seed_baselines": False},
        )
    )
    bench = prepare(cfg, tmp_path / "cache")
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 'g.db'}"), "g", bench)
    study.enqueue_trial({"depth": 2, "selection": "first", **{f"{k}_{i}": v for i in range(4) for k, v in (("heads", 0.5), ("ffn", 1.0), ("bits", 32))}})
    study.optimize(Objective(bench), n_trials=1, catch=())
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.user_attrs["fidelity"] == "full"
    assert t.user_attrs["recovery"]["recovered"] and t.user_attrs["seconds"]["recover"] > 0
    assert t.user_attrs["accuracy"]["n"] == cfg.task.eval_size
    assert t.user_attrs["cheap_accuracy"]["n"] == cfg.fidelity.cheap_eval_size
    # it climbed every rung: screened, distilled for a third of its budget and checked, then in full
    assert t.user_attrs["short_accuracy"]["n"] == cfg.fidelity.cheap_eval_size
    assert t.user_attrs["seconds"]["short_recover"] > 0 and t.user_attrs["latency"]["kind"] == "measured"
    assert t.user_attrs["recovery"]["recovery_epochs"] == 2.0  # 2 of 4 layers kept: twice the epochs


def test_a_plan_built_before_is_repeated_not_rebuilt_and_shown_once_on_the_front(bench, tmp_path):
    """Parameters of dropped layers are ignored, so a sampler can propose a built plan again."""
    from autocompress.report import collect
    from autocompress.store import record

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p")
    first_two = {"depth": 2, "selection": "first", "heads_0": 0.5, "heads_1": 1.0}  # keeps layers 0 and 1
    for dropped_heads in (1.0, 0.5):  # differ only in layers 2 and 3, which the plan drops
        study.enqueue_trial({**first_two, **{f"{k}_{i}": 1.0 for i in range(4) for k in ("ffn",)},
                             **{f"bits_{i}": 32 for i in range(4)}, "heads_2": dropped_heads, "heads_3": dropped_heads})
    study.optimize(Objective(bench), n_trials=2, catch=())
    built, again = study.trials
    assert built.state == again.state == TrialState.COMPLETE
    assert built.params != again.params and built.user_attrs["plan"] == again.user_attrs["plan"]
    assert "same_plan_as" not in built.user_attrs and again.user_attrs["same_plan_as"] == built.number
    assert again.values == built.values and again.user_attrs["accuracy"] == built.user_attrs["accuracy"]
    assert "build" in built.user_attrs["seconds"] and again.user_attrs["seconds"] == {}, "nothing rebuilt"
    assert [t.number for t in record.front(study)] == [built.number]
    rows = {r.number: r for r in collect(study).trials}
    assert rows[built.number].on_front and not rows[again.number].on_front


def test_transfer_set_is_labelled_by_the_teacher_and_keeps_the_cached_teacher(tiny_model_dir, tiny_csv, tmp_path):
    from autocompress.train.teacher import teacher_fingerprint

    base = tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0},
                            task={"train_size": 150, "eval_size": 80},
                            recovery={"epochs": 1.0})
    plain = parse_config(base)
    more = parse_config({**base, "task": {**base["task"], "transfer_size": 60}})
    assert teacher_fingerprint(plain) == teacher_fingerprint(more)
    first = prepare(plain, tmp_path / "cache")
    bench = prepare(more, tmp_path / "cache")
    assert bench.teacher.from_cache, "KD-only data does not fine-tune the teacher again"
    assert len(bench.transfer) == 150 + 60 == len(bench.transfer_logits)
    extra_labels = bench.transfer.labels[150:]
    assert torch.equal(extra_labels, bench.transfer_logits[150:].argmax(-1))
    assert torch.equal(bench.transfer.labels[:150], first.train.labels)


def test_trials_record_every_profile_and_label_the_predicted_one(finished):
    """The shared study (objective measured on 'test', rpi4 reported) stores both figures on each trial."""
    study = st.load("rep", st.open_storage(finished, must_exist=True))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    for t in trials:
        lats = t.user_attrs["latencies"]
        assert list(lats) == ["test", "rpi4"], "the objective's profile first, then the reported ones"
        assert lats["test"]["kind"] == "measured" and lats["test"]["rounds"] >= 3
        assert lats["rpi4"]["kind"] == "predicted" and "rounds" not in lats["rpi4"]
        assert [(s["batch_size"], s["seq_len"]) for s in lats["rpi4"]["shapes"]] == [(1, 128)]
        assert t.user_attrs["latency"] == lats["test"]
        assert t.values[1] == pytest.approx(lats["test"]["ratio"]), "the study optimises the objective's profile"
    by_label = {t.user_attrs.get("baseline"): t.user_attrs["latencies"]["rpi4"] for t in trials}
    assert by_label["teacher"]["ratio"] == pytest.approx(1.0), "a prediction of the teacher against itself is exact"
    assert by_label["half_depth"]["speedup"] > 1.0
    assert by_label["half_depth"]["baseline_ms"] > 0


def test_a_predicted_objective_profile_runs_a_study(tiny_model_dir, tiny_csv, tmp_path, monkeypatch):
    from autocompress.search import workbench
    from autocompress.latency import predict

    # a smaller calibration than the default (24 variants, 10 rounds) keeps this test short
    real_cached, real_calibrate = predict.cached_calibration, predict.calibrate
    monkeypatch.setattr(workbench, "cached_calibration", lambda *a, **k: real_cached(*a, **{**k, "count": 6}))
    monkeypatch.setattr(predict, "calibrate", lambda *a, **k: real_calibrate(*a, **{**k, "repeats": 3}))
    spec = {"cpu": "Small board", "cores": 2, "clock_ghz": 1.0, "fp32_gflops_per_core": 4.0,
            "int8_gops_per_core": 8.0, "memory_gbs": 2.0, "sources": ["a test"]}
    cfg = parse_config(tiny_config_dict(
        tiny_model_dir, tiny_csv,
        profile={"name": "board", "kind": "predicted", "threads": 2, "batch_size": 1, "seq_len": 16, "spec": spec},
    ))
    bench = prepare(cfg, tmp_path / "cache")
    assert bench.calibration is not None and bench.calibration.shapes == [[1, 16]]
    assert list((tmp_path / "cache").rglob("latency-calibration/*.json")), "the calibration is cached for the next study"
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 'p.db'}"), "p", bench)
    result = st.run(study, bench, n_trials=4)
    assert result.completed == 4
    trials = {t.user_attrs["baseline"]: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    for t in trials.values():
        lat = t.user_attrs["latency"]
        assert lat["kind"] == "predicted" and lat["profile"] == "board"
        assert list(t.user_attrs["latencies"]) == ["board"]
        assert t.values[1] == pytest.approx(lat["ratio"])
    assert trials["teacher"].values[1] == pytest.approx(1.0)
    assert trials["half_depth"].values[1] < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs where a GPU is lent)")
def test_study_on_the_gpu_profile_trains_and_measures_on_cuda(tiny_model_dir, tiny_csv, tmp_path, caplog):
    import logging

    cfg = parse_config(tiny_config_dict(
        tiny_model_dir, tiny_csv, profile="gpu", space={"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32]},
        recovery={"epochs": 1.0}, search={"trials": 3, "sampler": "random", "seed": 0},
    ))
    with caplog.at_level(logging.INFO, logger="autocompress"):
        bench = prepare(cfg, tmp_path / "cache")
    assert any("on cuda" in r.getMessage() for r in caplog.records)  # the teacher trained on the GPU
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 'g.db'}"), "g", bench)
    st.run(study, bench, n_trials=3)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3
    for t in done:
        lat = t.user_attrs["latency"]
        assert lat["profile"] == "gpu" and lat["kind"] == "measured" and lat["shapes"][0]["batch_size"] == 32


# ---------------------------------------------------------------------------- samplers
def _toy_constrained_study(name: str, seed: int, n_trials: int) -> optuna.Study:
    """Three objectives on the real space (shared schedule); feasible only with little compression."""
    import warnings

    from autocompress.schema.config import DepthSpace, SearchConfig, SpaceConfig
    from autocompress.models.adapters import ArchInfo
    from autocompress.search.space import baseline_plans, suggest_plan

    arch = ArchInfo(family="bert", num_layers=6, num_heads=4, intermediate_size=64, hidden_size=32)
    space = SpaceConfig(depth=DepthSpace(min=1), schedule="shared")

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        plan = suggest_plan(trial, space, arch, [0.9, 0.1, 0.5, 0.3, 0.8, 0.2])
        kept = [lp for lp in plan.layers if lp.keep]
        size = len(kept) * (kept[0].heads + 2 * kept[0].ffn) * (1.0 if kept[0].bits == 32 else 0.25)
        drop = (6 - len(kept)) * 1.5 + (1 - kept[0].heads) * 4 + (1 - kept[0].ffn) * 4 + (kept[0].bits == 8) * 0.5
        trial.set_constraint("accuracy_drop", drop - 3.0)
        return 80.0 - drop, size / 18, size

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated constraints_func
        sampler = st.make_sampler(SearchConfig(sampler=name, seed=seed))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    study.enqueue_trial(baseline_plans(space, arch)["teacher"])  # as studies do: one feasible trial first
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_every_sampler_runs_a_constrained_three_objective_search(name):
    from autocompress.store.record import feasible

    study = _toy_constrained_study(name, seed=0, n_trials=10)
    assert len(study.trials) == 10
    assert any(not feasible(t) for t in study.trials)
    assert study.best_trials and all(feasible(t) for t in study.best_trials), "infeasible trials leave the front"


def test_model_based_samplers_learn_to_stay_within_the_accuracy_budget():
    from autocompress.store.record import feasible

    def late_feasible(name: str) -> int:
        return sum(sum(feasible(t) for t in _toy_constrained_study(name, seed, 30).trials[10:]) for seed in (0, 1))

    assert late_feasible("tpe") >= 3 * max(1, late_feasible("random"))


def test_unknown_sampler_names_the_available_ones():
    from autocompress.schema.config import SearchConfig
    from autocompress.errors import UnknownNameError

    cfg = parse_config({"name": "x", "task": {"source": "bundled:tweets"}})
    assert st.with_sampler(cfg, "gp").search.sampler == "gp"
    assert st.with_sampler(cfg, None) is cfg
    with pytest.raises(UnknownNameError, match="Did you mean 'nsga2'.*Available: gp, nsga2, random, tpe"):
        st.with_sampler(cfg, "nsga")
    assert isinstance(st.make_sampler(SearchConfig(sampler="gp")), optuna.samplers.GPSampler)


def test_each_trial_records_the_sampler_that_chose_its_plan(bench, tmp_path):
    url = f"sqlite:///{tmp_path / 'sampler.db'}"
    study = st.create_or_load(bench.config, st.open_storage(url), "sampler", bench)
    st.run(study, bench, n_trials=5)
    labels = [(t.user_attrs.get("baseline"), t.user_attrs["sampler"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert labels[:4] == [(b, "enqueued") for b in ("teacher", "int8", "prune50", "half_depth")]
    assert labels[4] == (None, bench.config.search.sampler)


def test_a_running_trial_already_shows_its_plan_in_the_storage(bench, tmp_path, monkeypatch):
    """A worker that dies mid-trial (killed, out of memory) leaves a trial that still names its plan."""
    from autocompress.search import build

    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = st.create_or_load(bench.config, st.open_storage(url), "live", bench)
    seen: list[dict] = []
    real = build.Build

    def peeking(*args, **kwargs):
        other = st.load("live", st.open_storage(url))  # another process's view of the database
        (running,) = other.get_trials(states=(TrialState.RUNNING,))
        seen.append(dict(running.user_attrs))
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "Build", peeking)
    st.run(study, bench, n_trials=1)
    assert seen and seen[0]["plan"]["layers"] and seen[0]["plan_summary"] and "host" in seen[0]
    assert "accuracy" not in seen[0], "figures are stored when the trial ends"


def test_a_study_times_the_tasks_own_texts_and_export_times_them_again(tiny_model_dir, tiny_csv, tmp_path):
    import json

    from autocompress.export import export_trial
    from autocompress.report import collect, render_html

    profile = {"name": "task", "threads": 1, "inputs": "task", "task_samples": 4, "warmup": 1, "repeats": 3,
               "max_repeats": 6}
    wider = {**profile, "name": "task-wide", "task_samples": 16}  # a reported profile that samples more
    raw = tiny_config_dict(tiny_model_dir, tiny_csv, report_profiles=["rpi4", wider])
    cfg = parse_config({**raw, "profile": profile})
    bench = prepare(cfg, tmp_path / "cache")
    assert bench.task_inputs is not None and bench.task_inputs.of_examples == len(bench.eval)
    lengths = sorted(len(x) for x in bench.eval.input_ids)
    n = len(lengths)
    expected = [lengths[int((k + 0.5) * n / 4)] for k in range(4)]  # quantiles of the eval split itself
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 't.db'}"), "t", bench)
    assert st.run(study, bench, n_trials=4).completed == 4
    half = next(t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("baseline") == "half_depth")
    (shape,) = half.user_attrs["latency"]["shapes"]
    assert shape["inputs"] == "task" and shape["lengths"] == expected
    assert shape["seq_len"] is None and shape["of_examples"] == n
    assert len(half.user_attrs["latencies"]["task-wide"]["shapes"][0]["lengths"]) == 16
    assert half.values[1] == pytest.approx(half.user_attrs["latency"]["ratio"]) and half.values[1] < 1.0
    assert [(s["batch_size"], s["seq_len"]) for s in half.user_attrs["latencies"]["rpi4"]["shapes"]] == [(1, 128)]
    assert "own eval texts at batch 1 and their real lengths" in render_html(collect(study))
    result = export_trial(study, half.number, tmp_path / "out", tmp_path / "cache")
    torch_row = next(r for r in result.latency if r.what == "export (PyTorch)")
    assert torch_row.kind == "measured" and torch_row.speedup is not None and torch_row.speedup > 0
    exported = json.loads((tmp_path / "out" / "metrics.json").read_text())["export"]["latency"]["export (PyTorch)"]
    assert exported["shapes"][0]["lengths"] == expected, "export times the lengths the trial was timed on"


def test_a_study_timed_in_onnxruntime_stores_the_runtime_and_export_retimes_it_the_same_way(tiny_model_dir, tiny_csv, tmp_path):
    pytest.importorskip("onnxruntime")
    from autocompress.export import export_trial

    raw = tiny_config_dict(tiny_model_dir, tiny_csv, profile={"name": "ort", "backend": "onnxruntime"})
    cfg = parse_config(raw)
    bench = prepare(cfg, tmp_path / "cache")
    assert bench.onnx_teacher is not None and bench.onnx_teacher.path.is_file()
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "o", bench)
    assert st.run(study, bench, n_trials=4).completed == 4
    trials = {t.user_attrs.get("baseline"): t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    for t in trials.values():
        lat = t.user_attrs["latency"]
        assert lat["backend"] == "onnxruntime" and lat["export_seconds"] > 0 and lat["kind"] == "measured"
    assert trials["int8"].user_attrs["latency"]["int8_matmuls"] > 0
    assert trials["half_depth"].values[1] < 1.0
    plain = export_trial(study, trials["half_depth"].number, tmp_path / "plain", tmp_path / "cache")
    assert any("timed in ONNX Runtime" in n and "--onnx" in n for n in plain.notes)
    shipped = export_trial(study, trials["half_depth"].number, tmp_path / "onnx", tmp_path / "cache", onnx=True)
    row = next(r for r in shipped.latency if r.what.endswith("against the teacher in ONNX Runtime"))
    assert row.kind == "measured" and row.speedup is not None and row.speedup > 0 and row.teacher_ms
    import json

    latency = json.loads((tmp_path / "onnx" / "metrics.json").read_text())["export"]["latency"]
    assert latency[row.what]["baseline"] == "teacher (ONNX Runtime)" and latency[row.what]["backend"] == "onnxruntime"


def _ran(tiny_model_dir, tiny_csv, tmp_path, space, trials, profile=None):
    """A study of ``space`` on the tiny model and CSV (``profile`` replacing the test one), run for
    ``trials`` trials, with its workbench; every trial completes."""
    raw = tiny_config_dict(tiny_model_dir, tiny_csv, space=space, search={"trials": trials, "sampler": "random", "seed": 0})
    cfg = parse_config(raw if profile is None else {**raw, "profile": profile})
    bench = prepare(cfg, tmp_path / "cache")
    study = st.create_or_load(cfg, st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), "s", bench)
    assert st.run(study, bench, n_trials=trials).completed == trials
    return study, bench


def test_a_study_with_early_exits_records_where_inputs_stop_and_export_loads_them(tiny_model_dir, tiny_csv, tmp_path):
    from autocompress.search import build
    from autocompress.store import record
    from autocompress.tasks.evaluate import predict_logits
    from autocompress.ops.exits import EarlyExit
    from autocompress.export import export_trial, load
    from autocompress.report import collect, render_html

    profile = {"name": "task", "threads": 1, "inputs": "task", "task_samples": 4, "warmup": 1, "repeats": 3,
               "max_repeats": 6}
    space = {"heads": [1.0], "ffn": [1.0], "bits": [32], "depth": {"min": 3},
             "exits": {"schedule": ["every"], "threshold": [0.4]}}
    study, bench = _ran(tiny_model_dir, tiny_csv, tmp_path, space, 2, profile)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    t = done[0]
    plan = record.read(t).plan
    assert plan is not None and plan.exits is not None and plan.exits.threshold == 0.4
    assert "exits after" in t.user_attrs["plan_summary"]
    exits = t.user_attrs["exits"]
    assert len(exits["shares"]) == len(plan.exits.after) + 1 and sum(exits["shares"]) == pytest.approx(1.0)
    assert exits["student_layers"][-1] == len(plan.kept_layers)
    assert 1 <= exits["mean_layers"] <= len(plan.kept_layers)
    assert t.user_attrs["recovery"]["exit_steps"] > 0
    assert t.user_attrs["latency"]["kind"] == "measured"
    html = render_html(collect(study))
    assert "exits after" in html and "Where inputs exit" in html and "run all" in html
    export_trial(study, t.number, tmp_path / "out", tmp_path / "cache")
    loaded = load(tmp_path / "out")
    assert isinstance(loaded, EarlyExit) and loaded.threshold == 0.4 and loaded.pooling == plan.exits.pooling == "mean"
    built = build.candidate(bench, plan).model
    assert torch.allclose(predict_logits(built, bench.eval), predict_logits(loaded, bench.eval), atol=1e-5)
    from transformers import AutoTokenizer, pipeline

    clf = pipeline("text-classification", model=loaded, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "out"))
    assert clf(["a text"])[0]["label"] in bench.task.label_names and loaded.last_exit is not None


def test_exits_timed_in_onnxruntime_run_stage_by_stage_and_export_ships_the_stages(tiny_model_dir, tiny_csv, tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    from autocompress.store import record
    from autocompress.export import export_trial

    profile = {"name": "ort-task", "threads": 1, "backend": "onnxruntime", "inputs": "task", "task_samples": 4,
               "warmup": 1, "repeats": 3, "max_repeats": 6}
    space = {"heads": [1.0], "ffn": [1.0], "bits": [32, 8], "depth": {"min": 3},
             "exits": {"schedule": ["middle"], "threshold": [0.4]}}
    study, _ = _ran(tiny_model_dir, tiny_csv, tmp_path, space, 1, profile)
    t = study.get_trials(states=(TrialState.COMPLETE,))[0]
    plan = record.read(t).plan
    assert plan is not None and plan.exits is not None
    lat = t.user_attrs["latency"]
    assert lat["backend"] == "onnxruntime" and lat["kind"] == "measured" and lat["export_seconds"] > 0
    shipped = export_trial(study, t.number, tmp_path / "out", tmp_path / "cache", onnx=True)
    assert shipped.onnx_files == ("model.stage0.onnx", "model.stage1.onnx")
    assert all((tmp_path / "out" / f).is_file() for f in shipped.onnx_files)
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert any("early exits" in n and "model.stage1.onnx" in n for n in shipped.notes)
    onnx = json.loads((tmp_path / "out" / "metrics.json").read_text())["onnx"]
    assert onnx["stages"] == list(shipped.onnx_files) and onnx["exit_threshold"] == 0.4
    assert abs(onnx["accuracy"] - onnx["torch_accuracy"]) <= onnx["allowed_difference_pt"]


def test_exits_need_the_tasks_own_inputs_and_a_threshold_in_range(tiny_model_dir, tiny_csv):
    exits = {"exits": {"schedule": ["none", "middle"]}}
    with pytest.raises(ConfigError, match="inputs: task") as info:
        parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, space=exits))
    assert info.value.key == "space"
    raw = tiny_config_dict(tiny_model_dir, tiny_csv, space={"exits": {"schedule": ["middle"], "threshold": [0.9, 1.5]}})
    with pytest.raises(ConfigError, match=r"outside \(0, 1\]") as info:
        parse_config({**raw, "profile": {"name": "task", "inputs": "task"}})
    assert info.value.key == "space.exits.threshold"


def test_a_kept_vocabulary_shrinks_the_student_and_export_and_load_keep_it(tiny_model_dir, tiny_csv, tmp_path):
    from transformers import AutoTokenizer, pipeline

    from autocompress.search import build
    from autocompress.store import record
    from autocompress.tasks.evaluate import predict_logits
    from autocompress.export import export_trial, load
    from autocompress.ops.vocab import KeptVocabulary, word_embeddings

    from conftest import WORDS_NEG, WORDS_NEU, WORDS_POS

    corpus = tmp_path / "corpus.txt"  # every sentiment word, half of the neutral ones: some eval tokens fall back
    corpus.write_text("\n".join([" ".join(WORDS_POS), " ".join(WORDS_NEG), " ".join(WORDS_NEU[: len(WORDS_NEU) // 2])]))
    space = {"heads": [1.0], "ffn": [1.0], "bits": [32], "depth": {"min": 4},
             "vocabulary": {"keep": ["task"], "corpus": str(corpus)}}
    study, bench = _ran(tiny_model_dir, tiny_csv, tmp_path, space, 1)
    assert bench.vocabulary is not None and "corpus.txt (3 texts)" in bench.vocabulary.source
    t = study.get_trials(states=(TrialState.COMPLETE,))[0]
    rec = record.read(t)
    assert rec.plan is not None and rec.plan.vocab_min_count == 1 and "task vocabulary" in rec.plan_summary
    vocab = rec.vocabulary
    assert vocab is not None and 0 < vocab.kept_rows < vocab.full_rows == bench.teacher.model.config.vocab_size
    assert vocab.eval_tokens_dropped is not None and 0.0 < vocab.eval_tokens_dropped < 0.5
    assert rec.size_ratio is not None and rec.size_ratio < 1.0  # the same layers, a smaller table
    from autocompress.report import collect, render_html

    html = render_html(collect(study))
    assert "of eval tokens read as [UNK]" in html and re.search(r"embeddings [\d.]+ MB (?:·|\\u00b7) layers [\d.]+", html)
    split = rec.size.split
    assert split is not None and set(split) == {"embeddings", "layers", "head"} and split["layers"] > split["head"] > 0
    export_trial(study, t.number, tmp_path / "out", tmp_path / "cache")
    loaded = load(tmp_path / "out")
    assert isinstance(word_embeddings(loaded), KeptVocabulary) and word_embeddings(loaded).num_embeddings == vocab.kept_rows
    built = build.candidate(bench, rec.plan).model
    assert torch.equal(predict_logits(built, bench.eval), predict_logits(loaded, bench.eval))
    clf = pipeline("text-classification", model=loaded, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "out"))
    assert clf(["an entirely unseen zyzzyva text"])[0]["label"] in bench.task.label_names


def test_shared_layers_and_compressed_tables_ship_at_the_trials_size_in_pytorch_and_onnx(tiny_model_dir, tiny_csv, tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    from transformers import AutoTokenizer, pipeline

    from autocompress.search import build
    from autocompress.store import record
    from autocompress.tasks.evaluate import predict_logits
    from autocompress.export import export_trial, load

    space = {"heads": [1.0], "ffn": [0.5], "bits": [4], "depth": {"min": 4}, "sharing": ["pairs"],
             "embedding_bits": [8], "vocabulary": {"keep": ["task"]}}
    study, bench = _ran(tiny_model_dir, tiny_csv, tmp_path, space, 1)
    t = study.get_trials(states=(TrialState.COMPLETE,))[0]
    rec = record.read(t)
    assert rec.plan is not None and rec.plan.share == ((0, 1), (2, 3))
    assert "shared layers 1+2; 3+4" in rec.plan_summary
    teacher = study.user_attrs["teacher"]["size"]["shipped_bytes"]
    assert rec.size is not None and rec.size.shipped_bytes is not None and rec.size.shipped_bytes < 0.5 * teacher
    shipped = export_trial(study, t.number, tmp_path / "out", tmp_path / "cache", onnx=True)
    out = tmp_path / "out"
    assert (out / "model.safetensors").stat().st_size == rec.size.shipped_bytes  # size as it ships
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"]["bytes"] == (out / "model.onnx").stat().st_size
    assert abs(shipped.onnx_accuracy - shipped.rebuilt_accuracy) <= metrics["onnx"]["allowed_difference_pt"]
    loaded = load(out)
    layers = loaded.bert.encoder.layer
    assert layers[0] is layers[1] and layers[2] is layers[3] and layers[0] is not layers[2]
    built = build.candidate(bench, rec.plan).model
    assert torch.equal(predict_logits(built, bench.eval), predict_logits(loaded, bench.eval))
    clf = pipeline("text-classification", model=loaded, tokenizer=AutoTokenizer.from_pretrained(out))
    assert clf(["a text"])[0]["label"] in bench.task.label_names
