"""A task the defaults were never tuned on: the bundled default study, its task swapped, end to end.

Takes a search space (default ``search_spaces/tweets.yaml``, the bundled default), keeps every
setting but the task (source, columns, split sizes, token length), runs the study from the command
line as a user would (teacher fine-tuning, seeded baselines, the sampler's trials, real recovery,
measured latency), and compares the study's best full-fidelity candidate within 1 point of the
teacher with the best of the uniform recipes the study seeds (int8, 50 % heads+FFN, half depth +
distillation). All figures come from the one study: same teacher, eval split and latency protocol.

    python benchmarks/untuned.py                       # BBC News, 1,500 train / 700 eval, 128 tokens
    python benchmarks/untuned.py --task my.csv --text-column review --label-column stars
    python benchmarks/untuned.py --quick               # smoke run (tiny sizes, 3 trials)

Merges into ``benchmarks/results/untuned.json`` (``untuned-quick.json`` with ``--quick``) and the space
file it ran, ``benchmarks/results/untuned-space.yaml``; the study is kept in ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from _common import RESULTS, ROOT, shown, write_results
from autocompress.store import record, study_record
from autocompress.store.study_record import TeacherFigures

TARGET_RATIO = 1.3


def space_for(base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``base`` with its task swapped (and, with ``--quick``, every budget cut to a smoke run)."""
    space = {**base, "name": f"untuned-{args.name}"}
    space["task"] = {**base["task"], "source": args.task, "text_column": args.text_column,
                     "label_column": args.label_column, "train_size": args.train_size,
                     "eval_size": args.eval_size, "max_length": args.max_length}
    if args.quick:
        space["task"].update(train_size=64, eval_size=48, max_length=32)
        space["teacher"] = {**base["teacher"], "epochs": 1}
        space["search"] = {**base["search"], "trials": 3}
        space["profile"] = {"name": "quick", "threads": 1, "seq_len": 32, "warmup": 1, "repeats": 3, "max_repeats": 6}
    return space


def row(rec: record.TrialRecord, number: int) -> dict[str, Any]:
    score = rec.score
    return {
        "trial": number, "plan": rec.plan_summary, "baseline": rec.baseline,
        "percent": None if score is None else 100 * score.value,
        "ci": None if score is None else [100 * score.ci_low, 100 * score.ci_high],
        "drop_pt": rec.accuracy_drop, "speedup": rec.speedup, "size_mb": rec.size_mb,
        "latency": rec.latency_kind,
    }


def summarise(study: optuna.Study) -> dict[str, Any]:
    """The baselines, the best within 1 and 2 points, and the ratio the target is about."""
    teacher = study_record.read(study).teacher or TeacherFigures()
    full = [(t.number, record.read(t)) for t in study.get_trials(deepcopy=False) if record.is_full(t)]
    rows = [row(rec, n) for n, rec in full if rec.accuracy_drop is not None and rec.speedup is not None]

    def best(candidates: list[dict[str, Any]], within: float) -> dict[str, Any] | None:
        return max((r for r in candidates if r["drop_pt"] <= within), key=lambda r: r["speedup"], default=None)

    baselines = [r for r in rows if r["baseline"]]
    recipes = [r for r in baselines if r["baseline"] != "teacher"]  # the teacher is the reference, not a recipe
    ours, recipe = best(rows, 1.0), best(recipes, 1.0)
    # no recipe within 1 point: the teacher itself (speedup 1) is the best a uniform recipe keeps
    recipe_speedup = recipe["speedup"] if recipe else 1.0
    ratio = ours["speedup"] / recipe_speedup if ours else None
    trials = study.get_trials(deepcopy=False)
    return {
        "teacher_percent": teacher.percent if teacher.percent is not None else float("nan"),
        "teacher_fine_tune_seconds": teacher.fine_tune_seconds,
        "baselines": sorted(baselines, key=lambda r: r["baseline"]),
        "best_within_1pt": ours, "best_within_2pt": best(rows, 2.0),
        "best_recipe_within_1pt": recipe,
        "ratio_to_best_recipe": ratio,
        "target": f">= {TARGET_RATIO}", "met": None if ratio is None else ratio >= TARGET_RATIO,
        "full": len(full), "trials": len(trials),
        "stopped": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "plans": sorted(r["plan"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "tweets.yaml")
    ap.add_argument("--task", default="bundled:bbc", help="the task's source (bundled name, local file, hub name)")
    ap.add_argument("--name", default="bbc", help="names the study: untuned-<name>")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--train-size", type=int, default=1500)
    ap.add_argument("--eval-size", type=int, default=700)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--workdir", type=Path, help="keep the study and the teacher cache here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not args.space.is_file():
        raise SystemExit(f"--space: no file {args.space}; give a search-space YAML such as search_spaces/tweets.yaml")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="untuned-"))
    work.mkdir(parents=True, exist_ok=True)
    space = space_for(yaml.safe_load(args.space.read_text()), args)
    space_file = RESULTS / ("untuned-quick-space.yaml" if args.quick else "untuned-space.yaml")
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    db = work / f"{space['name']}.db"
    cmd = [sys.executable, "-m", "autocompress.cli", "run", str(space_file), "--storage", f"sqlite:///{db}",
           "--cache-dir", str(work / "cache")]
    start = time.perf_counter()
    with (work / "run.log").open("a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              cwd=work)  # the study's report lands in the workdir, not in the repository
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the study failed (exit {proc.returncode}); see {work / 'run.log'}")
    study = optuna.load_study(study_name=space["name"], storage=f"sqlite:///{db}")
    out = {"task": args.task, "space": shown(args.space), "ran": shown(space_file), "process_seconds": seconds,
           **summarise(study), "workdir": str(work)}
    path = write_results("untuned-quick" if args.quick else "untuned", None, out)
    ours = out["best_within_1pt"]
    print(f"best within 1 pt: {ours['speedup']:.2f}x ({ours['plan']})" if ours else "no candidate within 1 pt")
    print(f"ratio to the best recipe: {out['ratio_to_best_recipe']}; wrote {path}")


if __name__ == "__main__":
    main()
