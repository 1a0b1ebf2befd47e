"""Tasks the defaults were never tuned on: the bundled default study, its task swapped, in a time budget.

For each task of ``untuned_tasks.py`` (BBC News topics, headline/sentence pairs, package summaries),
takes a search space (default ``search_spaces/tweets.yaml``, the bundled default), keeps every
setting but the task, gives the study ``search.time_budget`` seconds (teacher fine-tuning included:
every run starts from an empty teacher cache) and runs it from the command line as a user would
(seeded baselines, the sampler's trials, real recovery, measured latency, then the refinement of
the front, unless ``--no-refine``). From the one study it reads the fastest full candidate within 1
point of the teacher and the fastest uniform recipe the study seeded (int8, 50 % heads+FFN, half
depth + distillation) within 1 point, and rebuilds the first with the study's own builder to give
its drop a 95 % paired-bootstrap interval on the eval split.

    python benchmarks/untuned.py                          # every task, 20 minutes each
    python benchmarks/untuned.py --budget 3600 --tasks bbc
    python benchmarks/untuned.py --no-refine --tasks bbc  # the same without the refinement
    python benchmarks/untuned.py --quick                  # smoke run (tiny sizes, 90 s budget)

Merges one row per task, budget and refinement setting into ``"tasks"`` of
``benchmarks/results/untuned.json`` (``untuned-quick.json`` with ``--quick``); each study, its log
and report are kept in ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from _common import ROOT, candidate, machine, paired_ci, prepare, read_results, right, shown, write_results
from untuned_tasks import TASKS
from autocompress.store import record, study_record
from autocompress.store.study_record import TeacherFigures
from autocompress.store.storage import stored_config

#: what the study should reach at each budget: (seconds, best speedup within 1 point, × the best recipe)
TARGETS = {1200: (2.5, 1.3), 3600: (3.5, None)}


def space_for(base: dict[str, Any], name: str, task: dict[str, Any], budget: float, refine: bool,
              quick: bool) -> dict[str, Any]:
    """``base`` with its task swapped, a time budget, and (with ``quick``) every size cut to a smoke run."""
    space = {**base, "name": f"untuned-{name}"}
    space["task"] = {k: v for k, v in {**base["task"], **task}.items() if k not in ("transfer_size",)}
    search = {**base.get("search", {}), "trials": 10_000, "time_budget": budget}
    if not refine:
        search["refine"] = {"seconds": 0}
    space["search"] = search
    if quick:
        space["task"].update(train_size=64, eval_size=48, max_length=32)
        space["teacher"] = {**base["teacher"], "epochs": 1}
        space["profile"] = {"name": "quick", "threads": 1, "seq_len": 32, "warmup": 1, "repeats": 3, "max_repeats": 6}
    return space


def row(rec: record.TrialRecord, number: int) -> dict[str, Any]:
    return {"trial": number, "plan": rec.plan_summary, "baseline": rec.baseline, "refines": rec.refines,
            "recovery_scale": rec.scale, "percent": 100 * rec.score.value if rec.score else None,
            "drop_pt": rec.accuracy_drop, "speedup": rec.speedup, "size_mb": rec.size_mb}


def best(rows: list[dict[str, Any]], within: float = 1.0) -> dict[str, Any] | None:
    return max((r for r in rows if r["drop_pt"] is not None and r["drop_pt"] <= within and r["speedup"]),
               key=lambda r: r["speedup"], default=None)


def paired_drop_ci(study: optuna.Study, cache: Path, trial: int) -> list[float]:
    """The 95 % paired-bootstrap interval (points) of the teacher's accuracy minus trial ``trial``'s,
    the candidate rebuilt with the study's builder (``scale`` included) on the study's eval split."""
    t = next(t for t in study.get_trials(deepcopy=False) if t.number == trial)
    rec = record.read(t)
    bench = prepare(stored_config(study), cache)
    built = candidate(bench, rec.plan, scale=rec.scale)
    kind, labels = bench.kind, bench.eval.labels
    ours = right(kind.outputs(built.model, bench.eval, bench.teacher.eval_logits), labels)
    return paired_ci(right(bench.teacher.eval_logits, labels), ours)


def summarise(study: optuna.Study, cache: Path) -> dict[str, Any]:
    teacher = study_record.read(study).teacher or TeacherFigures()
    full = [(t.number, record.read(t)) for t in study.get_trials(deepcopy=False) if record.is_full(t)]
    rows = [row(rec, n) for n, rec in full if rec.accuracy_drop is not None and rec.speedup is not None]
    recipes = [r for r in rows if r["baseline"] and r["baseline"] != "teacher"]
    ours, recipe = best(rows), best(recipes)
    before = best([r for r in rows if r["refines"] is None])
    recipe_speedup = recipe["speedup"] if recipe else 1.0  # no recipe within 1 point: the teacher is the best one
    trials = study.get_trials(deepcopy=False)
    return {
        "teacher_percent": teacher.percent, "teacher_fine_tune_seconds": teacher.fine_tune_seconds,
        "best_within_1pt": ours,
        "best_within_1pt_ci": paired_drop_ci(study, cache, ours["trial"]) if ours else None,
        "best_recipe": recipe["baseline"] if recipe else None,
        "best_recipe_within_1pt": recipe,
        "ratio_to_best_recipe": ours["speedup"] / recipe_speedup if ours else None,
        "best_within_1pt_before_refinement": before,
        "best_within_2pt": best(rows, 2.0),
        "baselines": sorted((r for r in rows if r["baseline"]), key=lambda r: r["baseline"]),
        "full": sum(r["refines"] is None for r in rows), "refinements": sum(r["refines"] is not None for r in rows),
        "stopped": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "front": sorted((row(record.read(t), t.number) for t in record.front(study)), key=lambda r: -r["speedup"]),
    }


def run_task(name: str, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    task = TASKS[name]
    tag = f"{name}-{int(args.budget)}s" + ("" if args.refine else "-norefine")
    work = args.workdir / tag
    shutil.rmtree(work, ignore_errors=True)  # an empty teacher cache: the budget includes the teacher
    work.mkdir(parents=True)
    space = space_for(base, name, task.section(work), args.budget, args.refine, args.quick)
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    db = work / "study.db"
    cmd = [sys.executable, "-m", "autocompress.cli", "run", str(space_file), "--storage", f"sqlite:///{db}",
           "--cache-dir", str(work / "cache")]
    start = time.perf_counter()
    with (work / "run.log").open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the study failed (exit {proc.returncode}); see {work / 'run.log'}")
    study = optuna.load_study(study_name=space["name"], storage=f"sqlite:///{db}")
    out = {"name": name, "source": task.origin, "budget_seconds": args.budget, "refine": args.refine,
           "process_seconds": seconds, **summarise(study, work / "cache"), "workdir": str(work)}
    goal = TARGETS.get(int(args.budget))
    if goal:
        speedup = out["best_within_1pt"]["speedup"] if out["best_within_1pt"] else 1.0
        out["target"] = {"best_within_1pt": goal[0], "ratio_to_best_recipe": goal[1]}
        out["met"] = speedup >= goal[0] and (goal[1] is None or (out["ratio_to_best_recipe"] or 0) >= goal[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "tweets.yaml")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    ap.add_argument("--budget", type=float, default=1200.0, help="seconds per study, teacher included")
    ap.add_argument("--no-refine", dest="refine", action="store_false", help="no refinement of the front")
    ap.add_argument("--workdir", type=Path, help="keep the studies here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks: unknown task {unknown[0]!r}; available: {', '.join(TASKS)}")
    if not args.space.is_file():
        raise SystemExit(f"--space: no file {args.space}; give a search-space YAML such as search_spaces/tweets.yaml")
    if args.quick:
        args.budget = min(args.budget, 90.0)
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="untuned-"))
    base = yaml.safe_load(args.space.read_text())
    target = "untuned-quick" if args.quick else "untuned"
    for name in names:
        out = run_task(name, args, base)
        out["space"] = shown(args.space)
        kept = [r for r in read_results(target).get("tasks", [])
                if (r.get("name"), r.get("budget_seconds"), r.get("refine", True)) != (name, args.budget, args.refine)]
        path = write_results(target, "tasks", kept + [{**out, "machine": machine(), "date": time.strftime("%Y-%m-%d")}], stamp=False)
        ours = out["best_within_1pt"]
        print(f"{name} ({args.budget:.0f} s{'' if args.refine else ', no refinement'}): "
              + (f"best within 1 pt {ours['speedup']:.2f}x ({ours['plan']}), drop CI {out['best_within_1pt_ci']}"
                 if ours else "no candidate within 1 pt")
              + f"; ratio to the best recipe {out['ratio_to_best_recipe']}; wrote {path}")


if __name__ == "__main__":
    main()
