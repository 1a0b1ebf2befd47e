"""Search efficiency: hypervolume after a fixed number of trials, each sampler against random sampling.

For every sampler (tpe, nsga2, gp, random) and seed, a real study runs on MiniLM + tweets: the
space, accuracy budget and teacher of ``search_spaces/tweets.yaml`` (the cached fine-tuned teacher
of the default study), the uniform baselines queued first as in every study, then the sampler,
inside :class:`~autocompress.search.samplers.OnePlanOnce` as every study runs it (told about stopped
candidates, canonical plans, one plan once). To compare many studies at equal cost, each trial is
evaluated at the *cheap* rung only, with the study's own call (``autocompress.search.scoring.screen``
on the candidate ``build.candidate`` builds without recovery):

* the task metric on the first ``--eval`` tweets of the eval split (``fidelity.cheap_eval_size``);
* latency from this host's calibrated cost model (``autocompress.latency.predict``, 30 of 30
  held-out plans within ±15 % of measurement): deterministic, so every sampler is scored on the
  same ground and no study is favoured by a quiet minute of the machine;
* size: the bytes export ships, as the size objective counts them.

A plan's figures are then deterministic, so each plan is evaluated once and cached. The
hypervolume of a study is computed by Optuna's own code over its feasible trials (accuracy drop
within ``objectives.max_accuracy_drop``), in (−accuracy %, latency ratio, size ratio) against the
fixed reference point (teacher accuracy − budget, 1.0, 1.0) written into the results.

Trials per hour at each fidelity of a *real* study (measured latency, recovery for the full
fidelity) come from the trial durations of an existing study database (``--throughput-db``,
default ``studies/tweets-quick.db`` when it has trials of both fidelities), or else from timing a
few real trials of the real objective here (``--time-trials``).

    python benchmarks/search.py            # full run (~35 min on 2 cores): 4 samplers × 3 seeds × 40 trials,
                                           # then the default sampler on the two other schedules
    python benchmarks/search.py --quick    # smoke run: 2 samplers × 2 seeds × 6 trials, tiny data

Merges into ``benchmarks/results/search.json`` (``search-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from _common import CACHE, ROOT, candidate, prepare, study_sampler, write_results
from autocompress import study as st
from autocompress.schema.config import SearchConfig, SpaceConfig, StudyConfig, load_config, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import scoring
from autocompress.search.objective import OBJECTIVES, Objective
from autocompress.search.space import SCHEDULES, baseline_plans, suggest_plan
from autocompress.search.workbench import Workbench
from autocompress.store import optuna_internals as compat
from autocompress.store import record

DEFAULT_DB = ROOT / "studies" / "tweets-quick.db"  # the bundled default's study
log = logging.getLogger("search")
#: how a study here is run and scored (a results file made before says otherwise)
HARNESS = {"sampler": "inside OnePlanOnce, as every study runs it", "cheap_rung": "autocompress.search.scoring.screen",
           "size": "shipped bytes (the size objective)"}
GP_SECONDS_PER_TRIAL = 3.0  # GPSampler's model fitting per trial at 40 trials, 2 cores (the others: milliseconds)


# ------------------------------------------------------------------------------------------ setting
def study_config(quick: bool, n_eval: int) -> StudyConfig:
    """The default study's config (its teacher, space and budget), its cheap rung scoring the first
    ``n_eval`` eval examples; a tiny one for a smoke run."""
    data = load_config(ROOT / "search_spaces" / "tweets.yaml").to_dict()
    data["fidelity"].update(enabled=True, cheap_eval_size=n_eval)  # the rung every trial here stops at
    if quick:
        data["name"] = "search-bench-quick"
        data["task"].update(train_size=300, eval_size=200, max_length=32)
        data["teacher"].update(epochs=1.0)
        data["recovery"].update(epochs=0.5, max_examples=300)
        data["profile"] = {"name": "cpu-2t-quick", "threads": 2, "batch_size": 1, "seq_len": 128, "warmup": 2,
                           "repeats": 5, "max_repeats": 10}
        data["report_profiles"] = []
    return parse_config(data)


@dataclass(frozen=True)
class Figures:
    accuracy: float  # % on the cheap rung's subset, no recovery
    ratio: float  # predicted latency / the teacher's, on this host
    size_ratio: float  # shipped bytes / the teacher's


class CheapEvaluator:
    """A plan's figures at a study's cheap rung (``scoring.screen``), computed once per plan (they are
    deterministic: no recovery, predicted latency)."""

    def __init__(self, bench: Workbench) -> None:
        if bench.calibration is None:
            raise SystemExit("the study's cheap rung does not predict latency here (no cost model): the config must "
                             "screen (fidelity.enabled, recovery.epochs > 0) on a PyTorch CPU profile")
        self.bench = bench
        self.teacher_accuracy = 100 * scoring.subset_metric(bench, bench.teacher.model).value  # on the same subset
        self.n_eval = min(bench.config.fidelity.cheap_eval_size, len(bench.eval))
        self.cache: dict[CompressionPlan, Figures] = {}
        self.seconds: list[float] = []

    def __call__(self, plan: CompressionPlan) -> Figures:
        if plan not in self.cache:
            start = time.perf_counter()
            model = candidate(self.bench, plan, recover=False).model  # the trial's builder, unrecovered
            screen = scoring.screen(self.bench, model, plan)  # the trial's cheap rung
            if screen.tolerance == 0.0:
                raise SystemExit("the cheap rung measured a latency instead of predicting it: the profile's threads "
                                 "differ from the cost model's; every plan must be scored on the same ground")
            self.cache[plan] = Figures(accuracy=100 * screen.metric.value, ratio=screen.latency.ratio,
                                       size_ratio=screen.size.bytes / self.bench.teacher_size.bytes)
            self.seconds.append(time.perf_counter() - start)
        return self.cache[plan]


# ------------------------------------------------------------------------------------------ studies
def hypervolume(points: list[Figures], reference: tuple[float, float, float]) -> float:
    """Optuna's hypervolume of feasible points, as (−accuracy, ratio, size ratio) losses."""
    losses = [(-p.accuracy, p.ratio, p.size_ratio) for p in points]
    inside = np.array([x for x in losses if all(v < r for v, r in zip(x, reference))])
    return compat.hypervolume(inside, np.array(reference))  # Optuna's own (WFG) implementation


def new_study(bench: Workbench, space: SpaceConfig, sampler: str, seed: int) -> optuna.Study:
    """An in-memory study as ``autocompress run`` starts one: its sampler inside ``OnePlanOnce``, the
    uniform baselines the space can express queued first."""
    study = optuna.create_study(directions=[d for _, d in OBJECTIVES], sampler=study_sampler(bench, sampler, seed, space))
    for label, params in baseline_plans(space, bench.arch).items():
        study.enqueue_trial(params, user_attrs=record.queue_labels(baseline=label))
    return study


def run_study(
    evaluate: CheapEvaluator, space: SpaceConfig, sampler: str, seed: int, trials: int, budget: float
) -> dict[str, Any]:
    """One study of ``trials`` trials (the baselines first); its hypervolume after each trial."""
    bench = evaluate.bench
    reference = (-(evaluate.teacher_accuracy - budget), 1.0, 1.0)
    study = new_study(bench, space, sampler, seed)
    feasible: list[Figures] = []
    sampled: list[Figures] = []
    history: list[float] = []

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        plan = suggest_plan(trial, space, bench.arch, bench.layer_ranking)
        fig = evaluate(plan)
        drop = evaluate.teacher_accuracy - fig.accuracy
        trial.set_constraint(record.DROP_CONSTRAINT, drop - budget)
        if drop <= budget:
            feasible.append(fig)
            if record.read(trial).baseline is None:
                sampled.append(fig)
        history.append(hypervolume(feasible, reference))
        return fig.accuracy, fig.ratio, fig.size_ratio * bench.teacher_size.megabytes

    start = time.perf_counter()
    evals_before = sum(evaluate.seconds)
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - start
    return {
        "sampler": sampler,
        "seed": seed,
        "hypervolume": history[-1],
        "hypervolume_sampled_only": hypervolume(sampled, reference),
        "history": history,
        "feasible_trials": len(feasible),
        "distinct_plans": len({CompressionPlan.from_dict(_plan_of(t, space, bench)) for t in study.trials}),
        "wall_seconds": wall,
        "evaluation_seconds": sum(evaluate.seconds) - evals_before,
    }


def _plan_of(trial: optuna.trial.FrozenTrial, space: SpaceConfig, bench: Workbench) -> dict[str, Any]:
    return suggest_plan(optuna.trial.FixedTrial(trial.params), space, bench.arch, bench.layer_ranking).to_dict()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    hv = [r["hypervolume"] for r in runs]
    return {
        "hypervolume_median": statistics.median(hv),
        "hypervolumes": hv,
        "hypervolumes_sampled_only": [r["hypervolume_sampled_only"] for r in runs],
        "feasible_trials": [r["feasible_trials"] for r in runs],
        "distinct_plans": [r["distinct_plans"] for r in runs],
        "seconds_per_trial_besides_evaluation": statistics.median(
            (r["wall_seconds"] - r["evaluation_seconds"]) / len(r["history"]) for r in runs
        ),
        "history_median": [statistics.median(h) for h in zip(*(r["history"] for r in runs))],
    }


# ------------------------------------------------------------------------------------------ throughput
def rates(trials: list[optuna.trial.FrozenTrial]) -> dict[str, dict[str, float]]:
    """Trials per hour of each fidelity (``fidelity`` user attribute), from trial wall times."""
    by: dict[str, list[float]] = {}
    for t in trials:
        fid = record.read(t).fidelity
        if fid and t.datetime_start and t.datetime_complete:
            by.setdefault(fid, []).append((t.datetime_complete - t.datetime_start).total_seconds())
    return {
        fid: {"trials_per_hour": 3600 / statistics.mean(s), "trials": len(s), "mean_seconds": statistics.mean(s),
              "median_seconds": statistics.median(s)}
        for fid, s in sorted(by.items())
    }


def throughput_from_db(path: Path) -> dict[str, dict[str, float]]:
    storage = st.open_storage(f"sqlite:///{path}", must_exist=True)
    trials = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials += study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    return rates(trials)


def throughput_measured(bench: Workbench, count: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Time ``count`` real trials at each fidelity with the study's own objective.

    Cheap: structural plans in a study holding a trial that dominates any student, so each is
    stopped after the cheap evaluation, as a real study stops those that cannot reach its front.
    Full: the same plans in a study without it, so each is recovered and fully evaluated.
    """
    cfg = bench.config
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    plans: list[dict[str, Any]] = []
    while len(plans) < count:
        trial = probe.ask()
        if suggest_plan(trial, cfg.space, bench.arch, bench.layer_ranking).changes_structure:
            plans.append(dict(trial.params))
        probe.tell(trial, 0.0)
    trials = []
    for fidelity in ("cheap", "full"):
        study = optuna.create_study(directions=[d for _, d in OBJECTIVES],
                                    sampler=study_sampler(bench, cfg.search.sampler, seed))
        if fidelity == "cheap":
            best = 100 * bench.teacher.eval_accuracy.value
            study.add_trial(optuna.trial.create_trial(values=[best, 1e-3, 1e-6], params={}, distributions={}))
        for params in plans:
            study.enqueue_trial(params)
        study.optimize(Objective(bench), n_trials=count, catch=(Exception,))
        trials += [t for t in study.trials if record.read(t).fidelity == fidelity]
    return rates(trials)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 samplers × 2 seeds × 6 trials, tiny data")
    ap.add_argument("--samplers", nargs="+", choices=sorted(st.SAMPLERS), help="default: all")
    ap.add_argument("--seeds", type=int, help="seeds per sampler (default 3)")
    ap.add_argument("--trials", type=int, help="trials per study, baselines included (default 40)")
    ap.add_argument("--eval", type=int, help="eval tweets scored per plan (default 500)")
    ap.add_argument("--schedule", choices=sorted(SCHEDULES), help="the space's schedule (default: the config's)")
    ap.add_argument("--compare-schedules", action=argparse.BooleanOptionalAction, default=None,
                    help="also run the default sampler on every other schedule (default: on, off with --quick)")
    ap.add_argument("--schedules-only", action="store_true",
                    help="only compare the schedules (the default sampler on each, per_layer included) and store "
                         "that comparison in the existing results file, leaving the sampler figures as they are")
    ap.add_argument("--throughput-db", type=Path, default=DEFAULT_DB, help="study database to read trial durations from")
    ap.add_argument("--time-trials", type=int, help="time this many real trials per fidelity instead of reading a database")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    default = SearchConfig().sampler
    samplers = args.samplers or ([default, "random"] if args.quick else ["tpe", "nsga2", "gp", "random"])
    seeds = args.seeds or (2 if args.quick else 3)
    trials = args.trials or (6 if args.quick else 40)
    n_eval = args.eval or (100 if args.quick else 500)
    compare = (not args.quick) if args.compare_schedules is None else args.compare_schedules
    if not args.schedules_only and ("random" not in samplers or default not in samplers):
        ap.error(f"--samplers must include random and the default sampler ({default})")

    started = time.perf_counter()
    cfg = study_config(args.quick, n_eval)
    space = cfg.space if args.schedule is None else cfg.space.model_copy(update={"schedule": args.schedule})
    budget = cfg.objectives.max_accuracy_drop if cfg.objectives.max_accuracy_drop is not None else 5.0
    cache = CACHE / "quick" if args.quick else CACHE
    bench = prepare(cfg, cache)  # with this host's cost model: the cheap rung predicts latency
    evaluate = CheapEvaluator(bench)
    studies = (f"{default} on {len(SCHEDULES)} schedules" if args.schedules_only else f"{len(samplers)} samplers")
    log.info("teacher %.2f%% on %d eval tweets; budget %.1f pt; %s × %d seeds × %d trials",
             evaluate.teacher_accuracy, evaluate.n_eval, budget, studies, seeds, trials)

    if args.schedules_only:
        compare_schedules_only(evaluate, space, default, seeds, trials, budget, args.quick, started)
        return
    jobs = [(space, s, seed) for s in samplers for seed in range(seeds)]
    if compare:
        jobs += [(space.model_copy(update={"schedule": name}), default, seed)
                 for name in sorted(SCHEDULES) if name != space.schedule for seed in range(seeds)]
    t_eval = _time_one(evaluate, CompressionPlan.uniform(bench.arch.num_layers, heads=0.5, ffn=0.5, bits=8))
    gp_jobs = sum(sampler == "gp" for _, sampler, _ in jobs)
    estimate = len(jobs) * trials * 0.9 * t_eval + gp_jobs * trials * GP_SECONDS_PER_TRIAL
    log.info("estimate: %.0f min for %d studies of %d trials (%.1f s per new plan, most plans are new; "
             "about %.0f s per GP trial)", estimate / 60, len(jobs), trials, t_eval, GP_SECONDS_PER_TRIAL)
    runs: list[tuple[str, dict[str, Any]]] = []
    for i, (job_space, sampler, seed) in enumerate(jobs):
        run = run_study(evaluate, job_space, sampler, seed, trials, budget)
        runs.append((job_space.schedule, run))
        log.info("%s / %s seed %d: hypervolume %.4f (%d feasible, %d distinct plans, %.0f s)", sampler,
                 job_space.schedule, seed, run["hypervolume"], run["feasible_trials"], run["distinct_plans"], run["wall_seconds"])

    main_runs = [r for sched, r in runs if sched == space.schedule]
    by_sampler = {s: summarise([r for r in main_runs if r["sampler"] == s]) for s in samplers}
    random_median = by_sampler["random"]["hypervolume_median"]
    ratios = {s: (v["hypervolume_median"] / random_median if random_median > 0 else None) for s, v in by_sampler.items()}
    best = max(by_sampler, key=lambda s: by_sampler[s]["hypervolume_median"])
    schedules = None
    if compare:
        schedules = {name: summarise([r for sched, r in runs if sched == name and r["sampler"] == default])
                     for name in sorted(SCHEDULES)}

    if args.time_trials is not None or not _db_has_both(args.throughput_db):
        count = args.time_trials or (1 if args.quick else 3)
        per_fidelity = throughput_measured(bench, count)
        source = f"timed here: {count} real trials per fidelity with the study's own objective ({cfg.name} settings)"
    else:
        per_fidelity = throughput_from_db(args.throughput_db)
        source = f"trial wall times recorded in {args.throughput_db.relative_to(ROOT)} (a real study on this machine)"
    evals = evaluate.seconds
    per_fidelity["cheap_predicted_no_recovery"] = {
        "trials_per_hour": 3600 / statistics.mean(evals), "trials": len(evals),
        "mean_seconds": statistics.mean(evals), "median_seconds": statistics.median(evals),
        "note": "this benchmark's own trials (no recovery, latency predicted), not a study's",
    }
    out = {
        "trials": trials,
        "seeds": seeds,
        "samplers": by_sampler,
        "default_sampler": default,
        "ratio_vs_random": ratios[default],
        "ratios_vs_random": ratios,
        "best_sampler": best,
        "target": "default sampler's median hypervolume >= 1.15 x random's at equal trials",
        "target_met": ratios[default] is not None and ratios[default] >= 1.15,
        "schedule": space.schedule,
        "schedules": schedules,
        "reference_point": {"accuracy": evaluate.teacher_accuracy - budget, "relative_latency": 1.0, "size_ratio": 1.0},
        "teacher_accuracy": evaluate.teacher_accuracy,
        "accuracy_budget": budget,
        "setting": {
            "task": f"{cfg.task.source}: teacher of {cfg.name} (train {cfg.task.train_size}, {cfg.teacher.epochs:g} epochs)",
            "eval_examples": evaluate.n_eval,
            "fidelity": "the study's cheap rung only (scoring.screen): the task metric without recovery training on "
                        "the first eval examples",
            "latency": "predicted by this host's calibrated cost model (deterministic, the same for every sampler)",
            "baselines_seeded": True,
            "hypervolume": "Optuna's compute_hypervolume over feasible trials of (-accuracy %, latency ratio, size ratio)",
            "space": space.model_dump(mode="json"),
        },
        "trials_per_hour": {fid: v["trials_per_hour"] for fid, v in per_fidelity.items()},
        "throughput": {"source": source, "by_fidelity": per_fidelity},
        "unique_plans_evaluated": len(evaluate.cache),
        "wall_seconds": time.perf_counter() - started,
        "runs": [{k: v for k, v in r.items() if k != "history"} | {"schedule": sched} for sched, r in runs],
        "quick": args.quick,
        "harness": HARNESS,
    }
    if compare:  # the schedules above come from this run, not from an earlier --schedules-only one
        out["schedules_run"] = {"sampler": default, "trials": trials, "seeds": seeds,
                                "note": "in the same run as the sampler figures"}
    path = write_results("search-quick" if args.quick else "search", None, out)
    print(f"{'sampler':<8}{'median HV':>11}{'× random':>10}   hypervolumes")
    for s, v in by_sampler.items():
        r = ratios[s]
        print(f"{s:<8}{v['hypervolume_median']:>11.4f}{(f'{r:.2f}×' if r else '—'):>10}   "
              + ", ".join(f"{h:.4f}" for h in v["hypervolumes"]))
    if schedules:
        for name, v in schedules.items():
            print(f"schedule {name:<10} ({default}) median HV {v['hypervolume_median']:.4f}")
    verdict = "met" if out["target_met"] else "missed"
    print(f"default sampler {default}: {ratios[default] or 0:.2f}× random's median hypervolume (target ≥1.15×: {verdict})")
    if best != default:
        print(f"note: {best} scored highest here; the default is {default}")
    for fid, v in per_fidelity.items():
        print(f"trials per hour, {fid}: {v['trials_per_hour']:.0f} (mean {v['mean_seconds']:.1f} s over {v['trials']})")
    print(f"throughput from {source}")
    print(f"written {path} in {(time.perf_counter() - started) / 60:.1f} min")


def compare_schedules_only(evaluate: CheapEvaluator, space: SpaceConfig, sampler: str, seeds: int, trials: int,
                           budget: float, quick: bool, started: float) -> None:
    """The default sampler on every schedule, side by side in this run, merged into the results file."""
    runs = {name: [run_study(evaluate, space.model_copy(update={"schedule": name}), sampler, seed, trials, budget)
                   for seed in range(seeds)] for name in sorted(SCHEDULES)}
    schedules = {name: summarise(r) for name, r in runs.items()}
    name = "search-quick" if quick else "search"
    write_results(name, "schedules", schedules, stamp=False)
    path = write_results(name, "schedules_run", {
        "sampler": sampler, "trials": trials, "seeds": seeds,
        "teacher_accuracy": evaluate.teacher_accuracy, "eval_examples": evaluate.n_eval,
        "reference_point": {"accuracy": evaluate.teacher_accuracy - budget, "relative_latency": 1.0, "size_ratio": 1.0},
        "wall_seconds": time.perf_counter() - started, "harness": HARNESS,
        "note": "run on its own (--schedules-only), all three schedules in this one run; the sampler figures "
                "above it come from the run dated in 'date'",
    })
    for name, v in schedules.items():
        print(f"schedule {name:<10} ({sampler}) median HV {v['hypervolume_median']:.4f}   "
              + ", ".join(f"{h:.4f}" for h in v["hypervolumes"]))
    print(f"written the schedules into {path} in {(time.perf_counter() - started) / 60:.1f} min")


def _time_one(evaluate: CheapEvaluator, plan: CompressionPlan) -> float:
    start = time.perf_counter()
    evaluate(plan)
    return time.perf_counter() - start


def _db_has_both(path: Path) -> bool:
    if not path.is_file():
        return False
    found = throughput_from_db(path)
    return all(found.get(f, {}).get("trials", 0) >= 3 for f in ("cheap", "full"))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
