"""Early exit against the same static plan: mean latency over the task's own inputs, and accuracy.

On the bundled default's task and settings (``search_spaces/tweets.yaml``, eval split raised to
3,000 tweets), each static plan is built and recovered as a trial builds it; then each exit
schedule (``middle``, ``every``) with each pooling (the first token, the mean of the tokens) gets its heads distilled on the frozen student (``build.add_exits``,
what a trial with exits does), and each threshold is scored on the whole eval split, every example
at the exit it takes. Per static plan, the variant with the fewest mean layers run whose extra drop
against the static plan is at most ``--max-extra-drop`` points is timed: at batch 1 on
``--samples`` eval tweets per round (at evenly spaced quantiles of their lengths), the exit model
interleaved with the static one (and each with the teacher), so each ratio is on one clock. The
extra drop's 95 % interval is a paired bootstrap over the eval examples. The chosen variant is
picked on the same eval split it is reported on (twenty variants per plan): a small optimism.

    python benchmarks/early_exit.py              # ~20 min on 2 cores (teacher cached: ~12 min)
    python benchmarks/early_exit.py --onnx       # also: the chosen exits as ONNX stages vs the static ONNX model
    python benchmarks/early_exit.py --quick      # a smoke run on small settings

Merges ``early_exit`` into ``benchmarks/results/latency.json`` (``latency-quick.json`` with
``--quick``): ``static_plan``, ``speedup_over_static``, ``extra_drop_pt`` and
``extra_drop_ci`` of the best row, and every row with its exits, thresholds and speedups.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from _common import CACHE, ROOT, candidate, paired_ci, prepare, right, write_results
from autocompress.latency.measure import measure_profile
from autocompress.ops import apply_bits_
from autocompress.ops.exits import EarlyExit, exit_predictions
from autocompress.schema.config import parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import build
from autocompress.search.scoring import exits_taken
from autocompress.search.space import exit_after
from autocompress.search.workbench import Workbench
from autocompress.tasks.evaluate import predict_logits

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)  # three classes: a confident tweet often peaks well below 0.9
SCHEDULES = ("middle", "every")
POOLINGS = ("first", "mean")  # what an exit head reads: the first token's state, or the mean of the tokens'


def config(quick: bool, samples: int) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "search_spaces" / "tweets.yaml").read_text())
    raw["name"] = "bench-early-exit"
    raw["task"]["eval_size"] = 400 if quick else 3000
    if quick:
        raw["task"]["train_size"] = 600
        raw["teacher"]["epochs"] = 1
        raw["recovery"]["epochs"] = 0.3
    raw["profile"] = {"name": "cpu-2t-task", "threads": 2, "inputs": "task", "task_samples": samples,
                      "warmup": 3 if quick else 10, "repeats": 5 if quick else 20,
                      "max_repeats": 10 if quick else 80, "max_spread": 0.03}
    raw["report_profiles"] = []
    raw["space"]["exits"] = {"schedule": ["none", *SCHEDULES], "threshold": list(THRESHOLDS)}
    return raw


def static_plans(n: int) -> dict[str, CompressionPlan]:
    return {
        "int8": CompressionPlan.uniform(n, bits=8),  # full depth: room for exits
        "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))),
        "front_3l_50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5, keep=list(range(0, n, 2))),
    }


def with_schedule(plan: CompressionPlan, how: str, threshold: float, pooling: str) -> CompressionPlan:
    return CompressionPlan.from_dict({**plan.to_dict(), "exits": {"after": list(exit_after(plan.kept_layers, how)),
                                                                  "threshold": threshold, "pooling": pooling}})


def correct(bench: Workbench, model: torch.nn.Module) -> torch.Tensor:
    return right(predict_logits(model, bench.eval), bench.eval.labels)


def timed(bench: Workbench, baseline: torch.nn.Module, candidate: torch.nn.Module) -> dict[str, Any]:
    lat = measure_profile(baseline, candidate, bench.config.profile, vocab_size=bench.teacher.model.config.vocab_size,
                          task=bench.task_inputs)
    return summary(lat)


def summary(lat: Any) -> dict[str, Any]:
    """A timing's figures as the results file keeps them (``lat``: a ProfileLatency)."""
    shape = lat.shapes[0]
    return {"speedup": lat.speedup, "candidate_ms": lat.candidate_ms, "baseline_ms": lat.baseline_ms,
            "rounds": shape.get("rounds"), "ratio_ci": shape.get("ratio_ci"), "noisy": lat.noisy}


def timed_onnx(bench: Workbench, static: torch.nn.Module, static_plan: CompressionPlan, exits: torch.nn.Module,
               exit_plan: CompressionPlan) -> dict[str, Any]:
    """The chosen exits as ONNX stages against the static plan's ONNX model, both in ONNX Runtime
    (float models given; each plan's int8 layers are quantised by the export), interleaved."""
    from autocompress.latency.runtimes.ort import measure_runners
    from autocompress.latency.runtimes.onnx_model import export_onnx

    accepted = inspect.signature(static.forward).parameters
    names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in accepted]
    threads = bench.config.profile.threads
    with tempfile.TemporaryDirectory() as tmp:
        a = export_onnx(static, static_plan, Path(tmp) / "static.onnx", names)
        b = export_onnx(exits, exit_plan, Path(tmp) / "exits.onnx", names)
        lat = measure_runners(a.runner(threads), b.runner(threads), bench.config.profile,
                              vocab_size=bench.teacher.model.config.vocab_size, task=bench.task_inputs)
    return {**summary(lat), "stages": len(b.stages)}


def one_plan(bench: Workbench, name: str, plan: CompressionPlan, max_extra: float, onnx: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    built = candidate(bench, plan, keep_float=True)
    static, float_student = built.model, built.float_model
    assert float_student is not None
    static_ok = correct(bench, static)
    variants = []
    for how, pooling in ((h, p) for h in SCHEDULES for p in POOLINGS):
        if not exit_after(plan.kept_layers, how):
            continue
        exit_plan = with_schedule(plan, how, THRESHOLDS[0], pooling)
        model, facts = build.add_exits(bench, copy.deepcopy(float_student), exit_plan)
        apply_bits_(model.model, exit_plan)
        model.eval()
        for threshold in THRESHOLDS:
            model.threshold = threshold
            logits, taken = exit_predictions(model, bench.eval)
            ok = right(logits, bench.eval.labels)
            where = exits_taken(model, taken)
            variants.append({
                "schedule": how, "pooling": pooling, "threshold": threshold, "exits_after_student_layers": where["student_layers"][:-1],
                "accuracy": 100 * ok.mean().item(), "extra_drop_pt": 100 * (static_ok.mean() - ok.mean()).item(),
                "extra_drop_ci": paired_ci(static_ok, ok), "shares": where["shares"],  # > 0: the exits lost examples
                "mean_layers": where["mean_layers"],
                "exit_training_seconds": facts["exit_seconds"], "_model": (how, threshold, pooling),
            })
    within = [v for v in variants if v["extra_drop_pt"] <= max_extra]
    chosen = min(within, key=lambda v: v["mean_layers"]) if within else None
    row: dict[str, Any] = {"name": name, "static_plan": plan.describe(), "static_accuracy": 100 * static_ok.mean().item(),
                           "teacher_accuracy": 100 * bench.teacher_metric.value, "variants": variants}
    if chosen is not None:
        how, threshold, pooling = chosen["_model"]
        exit_plan = with_schedule(plan, how, threshold, pooling)
        model, _ = build.add_exits(bench, copy.deepcopy(float_student), exit_plan)
        float_exits = copy.deepcopy(model)
        apply_bits_(model.model, exit_plan)
        model.eval()
        assert isinstance(model, EarlyExit)
        over_static = timed(bench, static, model)
        static_vs_teacher = timed(bench, bench.teacher.model, static)
        exit_vs_teacher = timed(bench, bench.teacher.model, model)
        row.update(chosen=exit_plan.describe(), speedup_over_static=over_static["speedup"],
                   extra_drop_pt=chosen["extra_drop_pt"], extra_drop_ci=chosen["extra_drop_ci"],
                   mean_layers=chosen["mean_layers"], shares=chosen["shares"],
                   timing={"exit_vs_static": over_static, "static_vs_teacher": static_vs_teacher,
                           "exit_vs_teacher": exit_vs_teacher})
        if onnx:
            row["onnxruntime"] = {"exit_vs_static": timed_onnx(bench, float_student, plan, float_exits, exit_plan)}
    for v in variants:
        v.pop("_model")
    row["seconds"] = time.perf_counter() - start
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=64, help="eval tweets per timing round (default 64)")
    ap.add_argument("--max-extra-drop", type=float, default=0.5, help="points the exits may cost over the static plan")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--only", nargs="+", help="static plans to run (default: all)")
    ap.add_argument("--onnx", action="store_true", help="also time the chosen exits as ONNX stages against the static ONNX model")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = parse_config(config(args.quick, 8 if args.quick else args.samples), file="early_exit")
    start = time.perf_counter()
    bench = prepare(cfg, args.cache)
    rows = []
    for name, plan in static_plans(bench.arch.num_layers).items():
        if args.only and name not in args.only:
            continue
        rows.append(one_plan(bench, name, plan, args.max_extra_drop, onnx=args.onnx))
        r = rows[-1]
        print(f"{name}: static {r['static_accuracy']:.2f}%; "
              + (f"{r['chosen']}: {r['speedup_over_static']:.2f}× over static, extra drop {r['extra_drop_pt']:+.2f} pt "
                 f"[{r['extra_drop_ci'][0]:+.2f}, {r['extra_drop_ci'][1]:+.2f}], mean {r['mean_layers']:.2f} layers"
                 if "chosen" in r else "no exit variant within the extra-drop limit"), flush=True)
    timed_rows = [r for r in rows if "speedup_over_static" in r]
    best = max(timed_rows, key=lambda r: r["speedup_over_static"]) if timed_rows else None
    section = {
        "static_plan": best["static_plan"] if best else None,
        "speedup_over_static": best["speedup_over_static"] if best else None,
        "extra_drop_pt": best["extra_drop_pt"] if best else None,
        "extra_drop_ci": best["extra_drop_ci"] if best else None,
        "target": "speedup_over_static >= 1.3 at extra_drop_pt <= 0.5 (3,000-example eval)",
        "met": bool(best and best["speedup_over_static"] >= 1.3 and best["extra_drop_pt"] <= 0.5),
        "rows": rows,
        "settings": {"space": "search_spaces/tweets.yaml", "eval_size": cfg.task.eval_size,
                     "samples_per_round": cfg.profile.task_samples, "thresholds": list(THRESHOLDS),
                     "schedules": list(SCHEDULES), "poolings": list(POOLINGS), "max_extra_drop": args.max_extra_drop},
        "seconds": time.perf_counter() - start,
    }
    path = write_results("latency-quick" if args.quick else "latency", "early_exit", section)
    print(f"written {path}")


if __name__ == "__main__":
    main()
