"""Headline: autocompress against the usual recipes, side by side on one machine and profile.

On the tweets task (MiniLM fine-tuned on 6,000 tweets, scored on 3,000 held-out ones), one run
measures, each against the same teacher in the same process and with the same latency protocol
(batch 1 × 128 tokens, 2 threads, interleaved with the teacher):

* the fine-tuned MiniLM itself (the baseline);
* uniform dynamic int8 in PyTorch;
* the baseline in ONNX Runtime, int8 (``autocompress.export``'s ONNX export, MatMuls quantised by
  ``onnxruntime.quantization.quantize_dynamic``);
* half depth + knowledge distillation (every other layer kept, the DistilBERT recipe): the
  study's seeded trial of that plan (same teacher, distillation and eval split), re-timed here,
  or distilled here when the study has none;
* the best Pareto-front members of a full autocompress study on the same teacher and data: run
  here from the config this script writes (``benchmarks/results/headline-tweets-space.yaml``;
  students of 2-4 layers; resumable, stored in ``studies/headline-tweets.db``), or read from
  ``--study-db``. Their accuracy is the study's (same eval split, same teacher); their speed is
  re-timed here (speed depends on the plan, not the weights).

``--space FILE.yaml`` runs the study of that search space instead (its model, task sizes,
transfer set, recovery and profile; study stored in ``studies/<name>.db`` and resumed there), with
the same recipe rows built on its teacher. The whole run keeps to ``--hours`` (default 3): the study
stops starting trials when the time left is what the rows after it need.

Every accuracy comes with its 95 % bootstrap interval; the drops of rows built here also get a
paired bootstrap interval. The teacher is fine-tuned on every labelled tweet the students see (students
are distilled on those 6,000 plus 3,000 tweets labelled by the teacher, their own labels unused),
so the teacher fine-tuned on the students' data *is* the teacher: both drops are reported and are
equal by construction. Size is what export ships (the size objective's bytes) over the teacher's,
measured on each row's model as built here; every row keeps its plan (``plan_dict``), so the sizes can
be measured again from the results file alone (``--resize``: sizes depend on the plan's shapes, not
on the trained weights). Merges into ``benchmarks/results/headline.json``.

    python benchmarks/headline.py                      # full run: teacher, recipes, a study, in at most 3 h
    python benchmarks/headline.py --space search_spaces/tweets.yaml --hours 1   # any search-space YAML
    python benchmarks/headline.py --study-db studies/headline-tweets.db   # recipes + an existing study
    python benchmarks/headline.py --quick              # smoke run (tiny data, 5 trials), headline-quick.json
    python benchmarks/headline.py --resize             # the size figures again, from the plans in the file (~1 min)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from _common import (CACHE, RESULTS, ROOT, candidate, paired_ci, read_results, resize_note, resized_, right, scored, shaped,
                     shipped_bytes, shown, size_ratio, write_results)
from autocompress import study as st
from autocompress.latency.measure import ProfileLatency, measure_profile
from autocompress.latency.runtimes.ort import measure_runners
from autocompress.models.adapters import load_classifier
from autocompress.schema.config import SearchConfig, StudyConfig, load_config, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search.workbench import Workbench
from autocompress.store import record
from autocompress.tasks.evaluate import Accuracy, predict_logits
from operators import config as operators_config
from operators import operator_plans

THRESHOLDS = (1.0, 2.0)  # points of accuracy drop the headline speedups are read at
TARGETS = {1.0: 3.0, 2.0: 5.0}  # speedup the issue asks for at each threshold
# Time the rows after the study take on the 2-core machine (timing one model against the teacher,
# and distilling half depth when the study has no seeded trial of it), with room to spare.
AFTER_STUDY_SECONDS = {"per_member": 90.0, "half_depth_distillation": 900.0}
log = logging.getLogger("headline")


# ------------------------------------------------------------------------------------------ setting
def study_config(quick: bool, trials: int) -> dict[str, Any]:
    """The operators benchmark's teacher and distillation recipe, as a search space for a study."""
    data = operators_config(quick, transfer=0 if quick else 3000)
    data["name"] = "headline-quick" if quick else "headline-tweets"
    data["fidelity"] = {"enabled": True, "cheap_eval_size": 100 if quick else 500, "margin": 0.5}
    # Students of 2-4 of the 6 layers: the headline is read at 3x and 5x, which 5- and 6-layer
    # students reach only through heavy pruning, and each of them costs two to three times as long
    # to distil. The teacher, int8 and ONNX Runtime rows cover the full-depth end.
    data["space"] = {"heads": [1.0, 0.75, 0.5, 0.25], "ffn": [1.0, 0.75, 0.5, 0.25], "bits": [32, 8],
                     "depth": {"min": 2, "max": 4, "selection": ["even", "first", "importance"]}}
    data["objectives"] = {"max_accuracy_drop": 2.0}  # the budget the headline is read within
    data["search"] = {"trials": trials, "sampler": SearchConfig().sampler, "seed": 0}
    if quick:
        data["task"].update(train_size=300, eval_size=200, max_length=32)
        data["recovery"].update(epochs=0.3)
        data["profile"].update(warmup=2, repeats=5, max_repeats=10)
    return data


def open_study(args: argparse.Namespace) -> tuple[optuna.Study, StudyConfig, str, Path | None]:
    """The study to read: the one at ``--study-db``, or the one this script runs (created if new),
    with the search-space file it ran from (``None`` for a study read from ``--study-db``)."""
    if args.study_db is not None:
        url = f"sqlite:///{args.study_db}"
        storage = st.open_storage(url, must_exist=True)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        name = args.study or (names[0] if len(names) == 1 else None)
        if name is None:
            raise SystemExit(f"{args.study_db} holds {len(names)} studies ({', '.join(names)}); name one with --study")
        study = st.load(name, storage)
        return study, st.stored_config(study), url, None
    if args.space is not None:
        path = args.space
        cfg = load_config(path)
    else:
        data = study_config(args.quick, args.trials or 24)
        path = RESULTS / f"{data['name']}-space.yaml"
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by benchmarks/headline.py: the study behind the headline figures\n"
                        + yaml.safe_dump(data, sort_keys=False))
        cfg = parse_config(data, file=str(path))
    url = st.default_storage(cfg.name, ROOT / "studies")
    cfg = st.continued_config(cfg, url, cfg.name)
    st.check_can_continue(cfg, url, cfg.name)
    return st.create_or_load(cfg, st.open_storage(url), cfg.name), cfg, url, path


# ------------------------------------------------------------------------------------------ timing
def time_model(bench: Workbench, model: torch.nn.Module) -> ProfileLatency:
    teacher = bench.teacher.model
    return measure_profile(teacher, model, bench.config.profile, vocab_size=teacher.config.vocab_size,
                           task=bench.task_inputs)


def time_runner(bench: Workbench, runner: Any) -> ProfileLatency:
    """An ONNX Runtime session timed against the PyTorch teacher, workload by workload, interleaved."""
    teacher = bench.teacher.model
    return measure_runners(teacher, runner, bench.config.profile, vocab_size=teacher.config.vocab_size,
                           task=bench.task_inputs)


# ------------------------------------------------------------------------------------------ rows
def row(bench: Workbench, method: str, lat: ProfileLatency | None, acc: Accuracy | dict[str, Any], size: float,
        *, plan: CompressionPlan | str = "", drop_ci: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    a = acc.to_dict() if isinstance(acc, Accuracy) else acc
    t_acc = 100 * bench.teacher.eval_accuracy.value
    drop = t_acc - 100 * a["value"]
    out = {
        "method": method,
        "plan": plan.describe() if isinstance(plan, CompressionPlan) else plan,
        "plan_dict": plan.to_dict() if isinstance(plan, CompressionPlan) else None,
        "speedup": 1.0 if lat is None else lat.speedup,
        "latency_ms": None if lat is None else lat.candidate_ms,
        "teacher_ms": None if lat is None else lat.baseline_ms,
        "accuracy": 100 * a["value"],
        "accuracy_ci": [100 * a["ci_low"], 100 * a["ci_high"]],
        "acc_drop": drop,
        "acc_drop_ci": drop_ci,
        "acc_drop_vs_same_data_teacher": drop,  # the same teacher: see "same_data_teacher"
        "size_ratio": size,
        **extra,
    }
    if lat is not None and lat.kind == "measured" and len(lat.shapes) == 1:
        q1, q3 = lat.shapes[0]["ratio_q1"], lat.shapes[0]["ratio_q3"]
        out["speedup_iqr"] = [1 / q3, 1 / q1]
        out["noisy"] = lat.noisy
    log.info("%-40s %5.2f× faster, drop %+.2f pt, size %.2f", method, out["speedup"], drop, size)
    return out


def paired_drop_ci(bench: Workbench, logits: torch.Tensor) -> list[float]:
    """95 % paired-bootstrap interval, in points, of (teacher right − student right) over the same examples."""
    labels = bench.eval.labels
    return paired_ci(right(bench.teacher.eval_logits, labels), right(logits, labels))


def recipe_rows(bench: Workbench) -> list[dict[str, Any]]:
    """The baseline and the usual recipes, each built, scored and timed here."""
    n = bench.arch.num_layers
    plans = operator_plans(n)
    rows = [row(bench, "fine-tuned MiniLM (baseline)", None, bench.teacher.eval_accuracy, 1.0,
                plan=CompressionPlan.uniform(n))]

    int8 = candidate(bench, plans["int8"]).model
    logits = predict_logits(int8, bench.eval)
    rows.append(row(bench, "PyTorch dynamic int8 (uniform)", time_model(bench, int8), scored(logits, bench.eval.labels),
                    size_ratio(bench, int8), plan=plans["int8"], drop_ci=paired_drop_ci(bench, logits)))

    rows.append(onnx_row(bench, plans["int8"]))
    return rows


def seeded_trial(study: optuna.Study, label: str) -> optuna.trial.FrozenTrial | None:
    """The study's complete full-fidelity trial of the uniform baseline ``label``, if it ran one."""
    return next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if (r := record.read(t)).baseline == label and r.fidelity == "full"), None)


def half_depth_row(bench: Workbench, study: optuna.Study) -> dict[str, Any]:
    """Half depth + KD: the study's seeded trial of it when there is one (same teacher, distillation
    and eval split, so distilling it twice would only cost time), re-timed here; else built here."""
    plan = operator_plans(bench.arch.num_layers)["half_depth"]
    method = "half depth + KD (DistilBERT recipe)"
    trial = seeded_trial(study, "half_depth")
    if trial is not None and (stored := record.read(trial)).accuracy is not None:
        model = candidate(bench, plan, recover=False).model  # speed and size do not depend on the weights
        return row(bench, method, time_model(bench, model), stored.accuracy, size_ratio(bench, model), plan=plan,
                   trial=trial.number, source="the study's seeded half_depth trial",
                   recovery_seconds=stored.recovery_seconds)
    start = time.perf_counter()
    half = candidate(bench, plan)
    logits = predict_logits(half.model, bench.eval)
    return row(bench, method, time_model(bench, half.model), scored(logits, bench.eval.labels),
               size_ratio(bench, half.model), plan=plan, drop_ci=paired_drop_ci(bench, logits),
               recovery_seconds=half.recovery.get("recovery_seconds"), seconds=time.perf_counter() - start)


ONNX_PLAN = "the baseline, MatMuls int8 in ONNX Runtime"
ONNX_SIZE_NOTE = "ONNX file bytes / the teacher's shipped bytes"


def onnx_export(teacher: torch.nn.Module, int8_plan: CompressionPlan, names: list[str], directory: Path) -> Any:
    """The teacher exported to ONNX with the plan's MatMuls in int8, as ``autocompress export --onnx`` writes it."""
    from autocompress.latency.runtimes.onnx_model import export_onnx

    return export_onnx(teacher, int8_plan, directory / "model.onnx", names)


def onnx_row(bench: Workbench, int8_plan: CompressionPlan) -> dict[str, Any]:
    from autocompress.latency.runtimes.onnx_model import OnnxRunner

    teacher = bench.teacher.model
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if bench.eval.token_type_ids is not None else [])
    with tempfile.TemporaryDirectory() as tmp:
        facts = onnx_export(teacher, int8_plan, names, Path(tmp))
        onnx = facts.to_dict()  # while its files exist
        runner = OnnxRunner(facts.path, threads=bench.config.profile.threads)  # idle threads do not spin
        logits = runner.logits(bench.eval)
        lat = time_runner(bench, runner)
    return row(bench, "ONNX Runtime int8 (baseline)", lat, scored(logits, bench.eval.labels),
               onnx["bytes"] / bench.teacher_size.shipped_bytes, plan=ONNX_PLAN, drop_ci=paired_drop_ci(bench, logits),
               onnx={**onnx, "file_bytes": onnx["bytes"]}, size_note=ONNX_SIZE_NOTE)


def front_members(study: optuna.Study, budget: float, count: int) -> list[optuna.trial.FrozenTrial]:
    """The fastest front members within each headline threshold, then the fastest others in ``budget``."""
    members = record.front(study)
    records = {t.number: record.read(t) for t in members}
    front = [t for t in members if (r := records[t.number]).fidelity == "full" and r.plan is not None
             and r.baseline is None  # a seeded recipe has its own row
             and r.accuracy_drop is not None and r.accuracy_drop <= budget]
    front.sort(key=lambda t: -(records[t.number].speedup or 0.0))
    chosen = []
    for threshold in (*THRESHOLDS, budget):
        best = next((t for t in front if (records[t.number].accuracy_drop or 0.0) <= threshold), None)
        if best is not None and best not in chosen:
            chosen.append(best)
    chosen += [t for t in front if t not in chosen][: max(0, count - len(chosen))]
    return chosen


def study_rows(bench: Workbench, study: optuna.Study, count: int) -> list[dict[str, Any]]:
    """The study's best front members: stored accuracy, speed re-timed here against the teacher."""
    rows = []
    budget = max(THRESHOLDS[-1], bench.config.objectives.max_accuracy_drop or 0.0)
    for t in front_members(study, budget, count):
        r = record.read(t)
        if r.plan is None or r.accuracy is None:
            continue
        model = candidate(bench, r.plan, recover=False).model  # speed and size do not depend on the weights
        rows.append(row(bench, f"autocompress (trial {t.number})", time_model(bench, model), r.accuracy,
                        size_ratio(bench, model), plan=r.plan, trial=t.number, study_speedup=r.speedup,
                        study_size_ratio=r.size_ratio, recovered=r.recovered))
    return rows


def study_timeout(args: argparse.Namespace, spent: float, *, has_half_depth: bool) -> float:
    """Seconds the study may start trials for: ``--study-minutes``, or what ``--hours`` leaves once
    the rows after the study are provided for (re-timing each member, distilling half depth when the
    study will not have it)."""
    if args.study_minutes:
        return 60 * args.study_minutes
    after = AFTER_STUDY_SECONDS["per_member"] * (args.members + 1)
    if not has_half_depth:
        after += AFTER_STUDY_SECONDS["half_depth_distillation"]
    return max(0.0, 3600 * args.hours - spent - after)


def best_at(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["acc_drop"] <= threshold]
    return max(ok, key=lambda r: r["speedup"]) if ok else None


def resize(path: Path) -> Path:
    """The size figures of ``path``'s rows measured again from their plans (``plan_dict``, or
    ``size_plan`` where a row's own plan was not stored), as export ships them, on the space's model
    (sizes depend on shapes alone: nothing is trained); the old figures are kept beside the new."""
    data = read_results(path)
    if not data.get("rows"):
        raise SystemExit(f"{path}: no rows to measure again")
    cfg = load_config(ROOT / data["space"]) if data.get("space") else parse_config(study_config(False, 24))
    from autocompress.tasks.data import load_task

    base = load_classifier(cfg.model.source, num_labels=len(load_task(cfg.task).label_names)).eval()
    figures = {}
    for r in data["rows"]:
        plan = r.get("plan_dict") or r.get("size_plan")
        if r.get("onnx"):  # exported again from the base weights: an ONNX file's bytes move a few KB with the weights
            with tempfile.TemporaryDirectory() as tmp:
                facts = onnx_export(base, operator_plans(base.config.num_hidden_layers)["int8"], r["onnx"]["inputs"], Path(tmp))
                file_bytes = facts.bytes
            r["onnx"]["file_bytes"], r["size_note"] = file_bytes, ONNX_SIZE_NOTE
            figures[r["method"]] = resized_(r, file_bytes / shipped_bytes(base))
        elif plan is not None:
            figures[r["method"]] = resized_(r, size_ratio(base, shaped(base, CompressionPlan.from_dict(plan))))
        else:
            log.warning("%s: no plan stored, its size is left as it was", r["method"])
            continue
        log.info("%-40s size %.6f → %.6f", r["method"], *figures[r["method"]])
    best = {th: best_at(data["rows"], th) for th in THRESHOLDS}
    return write_results(path, None, {
        "rows": data["rows"], "resized": resize_note(figures),
        **{f"best_size_ratio_at_{th:g}pt": best[th]["size_ratio"] if best[th] else None for th in THRESHOLDS},
    }, stamp=False)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, short training, 5 trials")
    ap.add_argument("--space", type=Path, help="run the study of this search-space YAML (default: the tweets headline space)")
    ap.add_argument("--study-db", type=Path, help="read the autocompress study from this SQLite file instead of running one")
    ap.add_argument("--study", help="study name in --study-db (default: its only study)")
    ap.add_argument("--trials", type=int,
                    help="complete trials of the study run here (default: the space's own; 24 for the headline space, 5 with --quick)")
    ap.add_argument("--members", type=int, default=6, help="front members to re-time (default 6)")
    ap.add_argument("--hours", type=float, default=3.0, help="wall-time budget of the whole run (default 3)")
    ap.add_argument("--study-minutes", type=float,
                    help="stop starting trials after this many minutes instead (the study resumes on the next run)")
    ap.add_argument("--resize", action="store_true",
                    help="only measure the size figures again from the plans in the results file (no training)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    if args.resize:
        print(f"written {resize(RESULTS / ('headline-quick.json' if args.quick else 'headline.json'))}")
        return
    if args.space is not None and (args.study_db is not None or args.quick):
        ap.error("--space runs its own study: it does not go with --study-db or --quick")
    if args.space is not None and not args.space.is_file():
        ap.error(f"--space {args.space}: no such file")
    if args.quick and args.trials is None:
        args.trials = 5
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()

    study, cfg, url, space_file = open_study(args)
    trials = args.trials or cfg.search.trials
    if cfg.task.eval_size < 3000 and not args.quick:
        log.warning("the eval split has %d examples: too few for a claim within 1 point (3,000 or more)", cfg.task.eval_size)
    cache = CACHE / "quick" if args.quick else CACHE
    bench = st.prepare_worker(study, url, cfg, cache)
    t_acc = bench.teacher.eval_accuracy
    log.info("teacher: %.2f%% (95%% CI %.2f–%.2f) on %d eval examples", 100 * t_acc.value, 100 * t_acc.ci_low,
             100 * t_acc.ci_high, t_acc.n)

    rows = recipe_rows(bench)
    if args.study_db is None:
        left = max(0, trials - st.completed(study))
        timeout = study_timeout(args, time.perf_counter() - started, has_half_depth=seeded_trial(study, "half_depth") is not None
                                or cfg.search.seed_baselines)
        log.info("study '%s': %d trials to run, stopping after %.0f min", study.study_name, left, timeout / 60)
        result = st.run(study, bench, n_trials=trials, timeout=timeout)
        log.info("study: %d complete trials", result.completed)
    rows.append(half_depth_row(bench, study))
    rows += study_rows(bench, study, args.members)

    ours = [r for r in rows if r["method"].startswith("autocompress")]
    best = {th: best_at(rows, th) for th in THRESHOLDS}
    best_ours = {th: best_at(ours, th) for th in THRESHOLDS}
    out = {
        "task": f"{cfg.task.source}: train {cfg.task.train_size} (+{cfg.task.transfer_size} teacher-labelled for "
                f"distillation), eval {bench.eval.labels.numel()}, max {cfg.task.max_length} tokens",
        "rows": rows,
        "best_speedup_at_1pt": best[1.0]["speedup"] if best[1.0] else None,
        "best_speedup_at_2pt": best[2.0]["speedup"] if best[2.0] else None,
        "best_method_at_1pt": best[1.0]["method"] if best[1.0] else None,
        "best_method_at_2pt": best[2.0]["method"] if best[2.0] else None,
        "best_size_ratio_at_1pt": best[1.0]["size_ratio"] if best[1.0] else None,
        "best_size_ratio_at_2pt": best[2.0]["size_ratio"] if best[2.0] else None,
        "autocompress_best_speedup_at_1pt": best_ours[1.0]["speedup"] if best_ours[1.0] else None,
        "autocompress_best_speedup_at_2pt": best_ours[2.0]["speedup"] if best_ours[2.0] else None,
        "targets": {f"{th:g}pt": {"speedup": TARGETS[th], "met": bool(best[th] and best[th]["speedup"] >= TARGETS[th])}
                    for th in THRESHOLDS},
        "teacher": {"accuracy": 100 * t_acc.value, "accuracy_ci": [100 * t_acc.ci_low, 100 * t_acc.ci_high],
                    "eval_examples": t_acc.n, "fingerprint": bench.teacher.fingerprint,
                    "teacher_ms": statistics.median(r["teacher_ms"] for r in rows if r["teacher_ms"])},
        "same_data_teacher": {
            "identical_to_teacher": True,
            "why": "the teacher is fine-tuned on every labelled example the students see; the extra distillation "
                   "examples are labelled by the teacher, their own labels unused",
        },
        "study": {"name": study.study_name, "storage": st.mask_url(url), "complete_trials": st.completed(study),
                  "sampler": cfg.search.sampler, "budget_pt": cfg.objectives.max_accuracy_drop,
                  "accuracy_source": "the study's own evaluation (same teacher, same eval split)",
                  "speed_source": "re-timed here against the teacher, interleaved, same profile"},
        "profile": cfg.profile.model_dump(mode="json"),
        "recovery": cfg.recovery.model_dump(mode="json"),
        "wall_seconds": time.perf_counter() - started,
        "wall_budget_seconds": None if args.study_db is not None or args.study_minutes else 3600 * args.hours,
        "space": None if space_file is None else shown(space_file),
        "quick": args.quick,
        "resized": None,  # every size above was measured in this run
    }
    path = write_results("headline-quick" if args.quick else "headline", None, out)
    print(f"{'method':<40}{'speedup':>9}{'drop pt (95% CI)':>24}{'size':>7}")
    for r in rows:
        ci = f"({r['acc_drop_ci'][0]:+.1f}…{r['acc_drop_ci'][1]:+.1f})" if r["acc_drop_ci"] else ""
        print(f"{r['method']:<40}{r['speedup']:>8.2f}×{r['acc_drop']:>+9.2f} {ci:>14}{r['size_ratio']:>7.2f}")
    for th in THRESHOLDS:
        b = best[th]
        verdict = "met" if out["targets"][f"{th:g}pt"]["met"] else "missed"
        figure = f"{b['speedup']:.2f}× ({b['method']})" if b else "none"
        print(f"best speedup at ≤{th:g} pt: {figure}; target ≥{TARGETS[th]:g}×: {verdict}")
    print(f"written {path} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
