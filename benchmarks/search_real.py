"""The real pipeline, old policy against new: the bundled default end to end, hypervolume against time.

For each seed, the default study (``search_spaces/tweets.yaml``, or ``--space``) runs twice on this
machine, one after the other: once with the code and the space file of ``--old-rev`` (the policy
before the rungs: one flat distillation per candidate, a single cheap gate the sampler never heard
of, a latency rule that ran to its cap; its default aimed at 16 complete trials) and once with the
working tree's code and space file as they were when the script started. Real recovery, measured latency,
nothing cached between trials; each side has its own teacher cache, warmed before the first timed
run, so the times below are the studies' own (teacher fine-tuning excluded; it is given apart).

``--new-space FILE`` gives the new policy another space file instead (for example
``search_spaces/tweets-thorough.yaml``, the old default's data and distillation budget, to compare
the policies alone rather than the bundled defaults as a user gets them).

The new policy's default study ends sooner; it is then continued (``autocompress resume``, no trial
target) until it has had as much time as the old policy's study, so that both curves cover the
same time. The default run's own figures are kept apart (``default_run``).

From each study's trial timestamps: the hypervolume of its feasible full-fidelity front against
the seconds since its first trial began, in (−metric %, latency ratio, size MB) against the
reference point (teacher − ``objectives.max_accuracy_drop``, 1.0, the teacher's size): the region
of candidates within the budget that are faster and smaller than the teacher.

    python benchmarks/search_real.py --seeds 0 1 2      # ~2 h 30 min on 2 cores
    python benchmarks/search_real.py --seeds 0 --trials 4 --quick   # a smoke run on tiny settings
    python benchmarks/search_real.py --seeds 1 2 --keep-seeds-from earlier.json   # add seeds to an earlier run's

Each run records the machine and date it ran on: with ``--keep-seeds-from`` the seeds may come from
different sessions, and only the per-seed ratios (old and new one after the other on one machine)
compare like with like; the medians then pool runs from those machines.

Merges into ``benchmarks/results/search-real.json`` (``search-real-quick.json`` with ``--quick``): per
policy the medians of final hypervolume, wall time and share of repeated plans, and
``time_to_old_final_hv_ratio`` (the new policy's median time to the old policy's median final
hypervolume, over the old policy's median wall time) and ``hv_ratio_at_equal_time`` (the new
policy's median hypervolume at the old policy's median wall time, over the old one's final); and
the same two ratios per seed (``per_seed``: each new run against the old run of its seed, on the
same machine one after the other), with the ratio of the whole default-study processes (teacher
included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from _common import ROOT, machine, shown, today, write_results
from autocompress.store import optuna_internals as compat
from autocompress.store import record, study_record
from autocompress.store.study_record import TeacherFigures

#: the last commit with the flat policy
OLD_REV = "a795548"


def checkout(rev: str, where: Path) -> Path:
    """The package as it was at ``rev``, unpacked under ``where`` (no git worktree left behind)."""
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "autocompress"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def tree_rev() -> str:
    """The working tree's commit, marked ``+changes`` when the package differs from it."""
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "autocompress"], check=True,
                           capture_output=True, text=True).stdout.strip()
    return f"{rev}+changes" if dirty else rev


def snapshot_tree(where: Path) -> Path:
    """This working tree's package, copied now (later edits do not reach a run that starts later)."""
    shutil.rmtree(where / "autocompress", ignore_errors=True)  # a workdir used before (--reuse)
    shutil.copytree(ROOT / "autocompress", where / "autocompress", ignore=shutil.ignore_patterns("__pycache__"))
    return where


def space_at(rev: str | None, space: Path) -> dict[str, Any]:
    """The search space ``space`` as it was at ``rev`` (None: as it is now)."""
    if rev is None:
        return yaml.safe_load(space.read_text())
    rel = space.resolve().relative_to(ROOT)
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(text)


def space_for(base: dict[str, Any], seed: int, trials: int | None, quick: bool) -> dict[str, Any]:
    cfg = json.loads(json.dumps(base))
    cfg.setdefault("search", {})["seed"] = seed
    if trials:
        cfg["search"]["trials"] = trials
    if quick:
        cfg["task"].update(train_size=300, eval_size=200)
        cfg["teacher"]["epochs"] = 1
        cfg["recovery"]["max_examples"] = 300
    return cfg


def run_side(code: Path, space: Path, study: str, db: Path, cache: Path, log: Path, *, more_seconds: float | None = None) -> float:
    """Run one study as the command line would, with the package under ``code`` first on the path;
    with ``more_seconds``, continue it (``resume``) for that long instead, with no trial target."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    where = ["--storage", f"sqlite:///{db}", "--cache-dir", str(cache)]
    if more_seconds is None:
        cmd = [sys.executable, "-m", "autocompress.cli", "run", str(space), "--study", study, *where]
    else:
        cmd = [sys.executable, "-m", "autocompress.cli", "resume", study, *where, "--trials", "10000",
               "--timeout", str(max(1, int(more_seconds)))]
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=space.parent)
    if proc.returncode != 0:
        raise SystemExit(f"{study} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def curve(db: Path, study_name: str, first_trials: int | None = None) -> dict[str, Any]:
    """The study's hypervolume after each full-fidelity trial, against seconds since its first trial
    (of its first ``first_trials`` trials only, when given: the default run before it was continued)."""
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    trials = [t for t in study.get_trials(deepcopy=False) if first_trials is None or t.number < first_trials]
    stored = study_record.read(study)
    teacher = stored.teacher or TeacherFigures()
    budget = (stored.config or {})["objectives"]["max_accuracy_drop"]  # as stored: the run may be an older version's
    teacher_pct, teacher_mb = teacher.percent, teacher.size_mb
    if teacher_pct is None or teacher_mb is None:
        raise SystemExit(f"study '{study_name}' in {db} holds no teacher figures")
    reference = np.array([-(teacher_pct - budget), 1.0, teacher_mb])
    box = float(np.prod(np.array([budget, 1.0, teacher_mb])))
    t0 = min(t.datetime_start for t in trials if t.datetime_start)
    points, times, hvs = [], [], []
    for t in sorted((t for t in trials if record.is_full(t) and record.feasible(t)), key=lambda t: t.datetime_complete):
        loss = np.array([-t.values[0], t.values[1], t.values[2]])
        if (loss < reference).all():
            points.append(loss)
        times.append((t.datetime_complete - t0).total_seconds())
        hvs.append(compat.hypervolume(np.array(points), reference) / box if points else 0.0)
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    repeats = sum(record.SAME_PLAN_AS in t.user_attrs for t in trials)
    within1 = [1 / t.values[1] for t in trials if record.is_full(t) and teacher_pct - t.values[0] <= 1.0]
    return {
        "times": times, "hypervolume": hvs, "final_hypervolume": hvs[-1] if hvs else 0.0,
        "wall_seconds": (max(ends) - t0).total_seconds(),
        "trials": len(trials), "full": sum(record.is_full(t) for t in trials),
        "stopped": sum(t.state == TrialState.PRUNED for t in trials), "repeats": repeats,
        "repeat_share": repeats / len(trials), "best_speedup_within_1pt": max(within1, default=None),
        "teacher_percent": teacher_pct,
    }


def earlier_runs(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The runs of an earlier results file whose seeds are not run now, tagged with where they ran;
    refused unless it compared the same policies on the same space files."""
    if not path.is_file():
        raise SystemExit(f"--keep-seeds-from: no file {path}; give a results file this script wrote")
    old = json.loads(path.read_text())
    same = {"old_rev": args.old_rev, "space": shown(args.space), "new_space": shown(args.new_space or args.space)}
    differ = [f"{k} {old.get(k)!r} there, {v!r} here" for k, v in same.items() if old.get(k) != v]
    if differ:
        raise SystemExit(f"--keep-seeds-from: {path} compared something else ({'; '.join(differ)}); "
                         "run its settings again, or leave it out")
    runs: dict[str, list[dict[str, Any]]] = {}
    for policy, side in old["policies"].items():
        runs[policy] = [{"machine": old.get("machine"), "date": old.get("date"), **r}
                        for r in side["runs"] if r["seed"] not in set(args.seeds)]
    return {"runs": runs, "teacher_seconds": {p: s.get("teacher_fine_tune_seconds") for p, s in old["policies"].items()}}


def hv_at(side: dict[str, Any], seconds: float) -> float:
    return max([hv for t, hv in zip(side["times"], side["hypervolume"]) if t <= seconds], default=0.0)


def time_to(side: dict[str, Any], hv: float) -> float | None:
    return next((t for t, h in zip(side["times"], side["hypervolume"]) if h >= hv), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "tweets.yaml")
    ap.add_argument("--new-space", type=Path, help="the new policy's space file (default: --space as it is now)")
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--trials", type=int, help="complete trials per study (default: the space's)")
    ap.add_argument("--workdir", type=Path, help="keep studies, caches and logs here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep the studies already in --workdir (run only what is missing)")
    ap.add_argument("--keep-seeds-from", type=Path, metavar="RESULTS.json",
                    help="also count the runs of an earlier results file for seeds not given in --seeds "
                         "(each run keeps the machine and date it was measured on)")
    args = ap.parse_args()
    earlier = earlier_runs(args.keep_seeds_from, args) if args.keep_seeds_from else None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="search-real-"))
    work.mkdir(parents=True, exist_ok=True)
    codes = {"old": checkout(args.old_rev, work / "old-code"), "new": snapshot_tree(work / "new-code")}
    revs = {"old": args.old_rev, "new": tree_rev()}
    bases = {"old": space_at(args.old_rev, args.space), "new": space_at(None, args.new_space or args.space)}  # each its own default
    sides: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    teacher_seconds: dict[str, float] = {}
    for seed in args.seeds:
        for policy, code in codes.items():
            space = work / f"space-{policy}-{seed}.yaml"
            space.write_text(yaml.safe_dump(space_for(bases[policy], seed, args.trials, args.quick)))
            name = f"{policy}-{seed}"
            db, cache, log = work / f"{name}.db", work / f"cache-{policy}", work / f"{name}.log"
            times = json.loads((work / "process-seconds.json").read_text()) if (work / "process-seconds.json").is_file() else {}
            if not (args.reuse and db.is_file() and name in times):
                times[name] = run_side(code, space, name, db, cache, log)
                times[f"{name}:code"] = revs[policy]
                (work / "process-seconds.json").write_text(json.dumps(times))
            wall = times[name]
            default = curve(db, name, times.get(f"{name}:default_trials"))  # the default study as a user runs it
            times.setdefault(f"{name}:default_trials", default["trials"])
            if policy == "new":  # then on, until it has had the old policy's time
                old_wall = sides["old"][-1]["wall_seconds"]
                if default["wall_seconds"] < old_wall and not (args.reuse and f"{name}+" in times):
                    times[f"{name}+"] = run_side(code, space, name, db, cache, log,
                                                 more_seconds=old_wall - default["wall_seconds"])
                    (work / "process-seconds.json").write_text(json.dumps(times))
            result = curve(db, name)
            if policy == "new":
                result["default_run"] = {k: default[k] for k in ("wall_seconds", "final_hypervolume", "full", "trials",
                                                                 "repeats", "repeat_share", "best_speedup_within_1pt")}
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
            fine_tune = float((study_record.read(study).teacher or TeacherFigures()).fine_tune_seconds or 0.0)
            if fine_tune:
                teacher_seconds[policy] = fine_tune
            result.update(seed=seed, process_seconds=wall)
            result.update(machine=machine(), date=today(), code=times.get(f"{name}:code"))
            sides[policy].append(result)
            print(f"{name}: {result['wall_seconds']:.0f} s of trials, {result['full']} full of {result['trials']}, "
                  f"hypervolume {result['final_hypervolume']:.4f}, repeats {result['repeats']}", flush=True)
    seeds = list(args.seeds)
    if earlier:
        for policy, runs in earlier["runs"].items():
            sides[policy] = sorted(runs + sides[policy], key=lambda r: r["seed"])
            if policy not in teacher_seconds and earlier["teacher_seconds"].get(policy):
                teacher_seconds[policy] = earlier["teacher_seconds"][policy]
        seeds = sorted({r["seed"] for r in sides["old"]})
    summary = {p: {
        "hypervolume_median": statistics.median(r["final_hypervolume"] for r in rs),
        "wall_seconds_median": statistics.median(r["wall_seconds"] for r in rs),
        "repeat_share": statistics.median(r["repeat_share"] for r in rs),
        "best_speedup_within_1pt_median": statistics.median(r["best_speedup_within_1pt"] or 0.0 for r in rs),
        "default_study_process_seconds_median": statistics.median(r["process_seconds"] for r in rs),
        "teacher_fine_tune_seconds": teacher_seconds.get(p),
        "runs": rs,
    } for p, rs in sides.items()}
    old_hv, old_wall = summary["old"]["hypervolume_median"], summary["old"]["wall_seconds_median"]
    reach = [time_to(r, old_hv) for r in sides["new"]]
    reached = [t for t in reach if t is not None]
    per_seed = []
    for old, new in zip(sides["old"], sides["new"], strict=True):
        reach_at = time_to(new, old["final_hypervolume"])
        per_seed.append({
            "seed": old["seed"],
            "time_to_old_final_hv_ratio": None if reach_at is None else reach_at / old["wall_seconds"],
            "hv_ratio_at_equal_time": hv_at(new, old["wall_seconds"]) / old["final_hypervolume"]
            if old["final_hypervolume"] else None,
            "default_study_process_ratio": new["process_seconds"] / old["process_seconds"],
        })
    out = {
        "policies": summary,
        "per_seed": per_seed,
        "time_to_old_final_hv_ratio": (statistics.median(reached) / old_wall) if len(reached) == len(reach) else None,
        "new_runs_reaching_old_final_hv": f"{len(reached)} of {len(reach)}",
        "hv_ratio_at_equal_time": statistics.median(hv_at(r, old_wall) for r in sides["new"]) / old_hv if old_hv else None,
        "targets": {"time_to_old_final_hv_ratio": "<= 0.33", "hv_ratio_at_equal_time": ">= 1.3"},
        "seeds": seeds,
        "old_rev": args.old_rev,
        "space": shown(args.space),
        "new_space": shown(args.new_space or args.space),
        "workdir": str(work),
    }
    path = write_results("search-real-quick" if args.quick else "search-real", None, out)
    print(f"wrote {path}")
    if not args.workdir:
        for code in codes.values():
            shutil.rmtree(code, ignore_errors=True)


if __name__ == "__main__":
    main()
