"""Each compression operator alone and combined, on MiniLM and the tweets task.

For int8, 50 % heads+FFN, half depth and all three combined: speedup over the fine-tuned teacher
(batch 1, sequence 128, 2 threads, measured interleaved with the teacher in this process), size
ratio (the bytes export ships, over the teacher's), and accuracy drop with and without knowledge-distillation recovery, each accuracy with its
95 % bootstrap interval. The teacher is fine-tuned on exactly the labelled examples the students
are distilled on, so the drop against it is also the drop against "a teacher fine-tuned on the same
data". Merges into ``benchmarks/results/operators.json``.

    python benchmarks/operators.py            # full run (~20 min on 2 cores)
    python benchmarks/operators.py --quick    # smoke run (~3 min), results to operators-quick.json
    python benchmarks/operators.py --remeasure  # re-time the speedups of an existing results file
    python benchmarks/operators.py --only combined --transfer 3000  # distil on 9,000 tweets
    python benchmarks/operators.py --size --transfer 3000  # the size operators (~30 min): "size" rows
    python benchmarks/operators.py --resize   # the size ratios again from the stored plans (~1 min)

``--size`` builds each size operator alone (task vocabulary, 8-bit embeddings, both) and with the
speed plan ``combined`` (then also shared layers and an int8 head), writes each as
``autocompress export`` writes it (model.safetensors, plan, metadata, tokenizer: ``exported_bytes``;
the weights file alone: ``weights_bytes``) and as ONNX (``onnx_bytes``), and measures its accuracy
drop against the teacher on the 3,000-example eval split (95 % paired-bootstrap interval) and its
speedup in this process. It merges ``size`` into ``operators.json``, other fields untouched.

``--remeasure`` exists because speed does not depend on the weights: when the machine was busy
during a full run, the speedups can be measured again on a quiet machine (structure only, same
plans, same protocol) without redoing the training; the file records that it was done. ``--resize``
exists for the same reason: sizes depend on the plan's shapes, not on the weights.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from _common import (candidate, machine, paired_ci, prepare, read_results, resize_note, resized_, right, scored, shaped,
                     size_ratio, today, write_results)
from autocompress import study as st
from autocompress.latency.measure import measure_profile
from autocompress.models.adapters import load_classifier, load_tokenizer
from autocompress.ops.size import model_size
from autocompress.schema.config import parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import build
from autocompress.tasks.evaluate import predict_logits

#: the model of every operator row (the config's default), loaded for --remeasure and --resize
MODEL = "bundled:all-MiniLM-L6-v2"


def config(quick: bool, transfer: int = 0) -> dict:
    train, evals = (800, 400) if quick else (6000, 3000)
    return {
        "name": "bench-operators",
        "task": {"source": "bundled:tweets", "train_size": train, "eval_size": evals, "max_length": 64, "seed": 1,
                 "transfer_size": transfer},
        "teacher": {"epochs": 1.0 if quick else 3.0, "learning_rate": 5.0e-5, "batch_size": 32},
        "recovery": {"epochs": 0.5 if quick else 3.0, "learning_rate": 1.0e-4, "temperature": 2.0, "alpha": 0.5},
        "pruning": {"criterion": "taylor", "calibration_examples": 256},
        "fidelity": {"enabled": False},
        "profile": {"name": "cpu-2t", "threads": 2, "batch_size": 1, "seq_len": 128, "warmup": 10, "repeats": 40, "max_repeats": 160},
    }


def operator_plans(n: int) -> dict[str, CompressionPlan]:
    """Each operator alone at its usual setting, then all three together."""
    return {
        "int8": CompressionPlan.uniform(n, bits=8),
        "prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
        "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))),
        "combined": CompressionPlan.uniform(n, heads=0.5, ffn=0.5, bits=8, keep=list(range(0, n, 2))),
    }


def size_plans(n: int) -> dict[str, CompressionPlan]:
    """The size operators alone, and with the speed plan (``combined``)."""
    def with_(plan: CompressionPlan, **extra) -> CompressionPlan:
        return CompressionPlan.from_dict({**plan.to_dict(), **extra})

    full, speed = CompressionPlan.uniform(n), operator_plans(n)["combined"]
    small = {"vocab_min_count": 1, "embedding_bits": 8}
    return {
        "task_vocabulary": with_(full, vocab_min_count=1),
        "int8_embeddings": with_(full, embedding_bits=8),
        "vocabulary+int8_embeddings": with_(full, **small),
        "combined": speed,
        "combined+vocabulary+int8_embeddings": with_(speed, **small),
        "combined+vocabulary+int8_embeddings+shared_pairs": with_(speed, **small, share=[list(speed.kept_layers[:2])]),
        "combined+vocabulary+int8_embeddings+int8_head": with_(speed, **small, head_bits=8),
        # milder speed plans, for a member within 1 point
        "3l_75+vocabulary+int8_embeddings+int8_head": with_(
            CompressionPlan.uniform(n, heads=0.75, ffn=0.75, bits=8, keep=list(range(0, n, 2))), **small, head_bits=8),
        "4l_50+vocabulary+int8_embeddings+int8_head": with_(
            CompressionPlan.uniform(n, heads=0.5, ffn=0.5, bits=8, keep=[0, 2, 3, 5][:n]), **small, head_bits=8),
    }


def _export_bytes(bench, model, float_model, plan: CompressionPlan) -> dict[str, int]:
    """Bytes of what ``autocompress export`` writes for ``model`` (PyTorch directory, weights alone) and its ONNX file."""
    import inspect
    import tempfile

    from autocompress.export.saved import WEIGHTS_FILE, save_student
    from autocompress.latency.runtimes.onnx_model import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "export"
        save_student(d, model, plan, bench.teacher.model.config, list(bench.task.label_names), bench.kind)
        tokenizer = load_tokenizer(bench.config.model.source)
        tokenizer.save_pretrained(d)
        exported = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        accepted = inspect.signature(float_model.forward).parameters
        names = [n for n in tokenizer.model_input_names if n in accepted]
        onnx = export_onnx(float_model, plan, Path(tmp) / "model.onnx", names)
        return {"exported_bytes": exported, "weights_bytes": (d / WEIGHTS_FILE).stat().st_size, "onnx_bytes": onnx.bytes,
                "onnx_int8_matmuls": onnx.int8_matmuls}


def size_rows(bench, cfg, only: list[str] | None) -> list[dict]:
    teacher = bench.teacher
    t_right = right(teacher.eval_logits, bench.eval.labels)
    rows = [{"name": "teacher", "plan": "uncompressed", "acc_drop": 0.0, "acc_drop_ci": [0.0, 0.0], "speedup": 1.0,
             "accuracy": 100 * teacher.eval_accuracy.value,
             **_export_bytes(bench, teacher.model, teacher.model, CompressionPlan.uniform(bench.arch.num_layers))}]
    logging.info("teacher: %s", rows[0])
    for name, plan in size_plans(bench.arch.num_layers).items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        built = candidate(bench, plan, keep_float=True)
        ok = right(predict_logits(built.model, bench.eval), bench.eval.labels)
        lat = measure_profile(teacher.model, built.model, cfg.profile, vocab_size=teacher.model.config.vocab_size).to_dict()
        row = {"name": name, "plan": plan.describe(), "accuracy": 100 * ok.mean().item(),
               "acc_drop": 100 * (t_right.mean() - ok.mean()).item(), "acc_drop_ci": paired_ci(t_right, ok),
               "speedup": lat["speedup"], "speedup_iqr": [1 / lat["ratio_iqr"][1], 1 / lat["ratio_iqr"][0]],
               "noisy": lat["noisy"], "size": model_size(built.model).to_dict(),
               **_export_bytes(bench, built.model, built.float_model, plan),
               "vocabulary": built.recovery.get("vocabulary"), "recovered": built.recovered}
        row["seconds"] = time.perf_counter() - start
        logging.info("%s: %.2f MB exported (ONNX %.2f MB), drop %+.2f pt [%+.2f, %+.2f], %.2f× faster", name,
                     row["exported_bytes"] / 1e6, row["onnx_bytes"] / 1e6, row["acc_drop"], *row["acc_drop_ci"], row["speedup"])
        rows.append(row)
    return rows


def size_section(rows: list[dict], cfg) -> dict:
    teacher = rows[0]
    ok = [r for r in rows[1:] if r["exported_bytes"] <= 15e6 and r["acc_drop"] <= 1.0 and r["speedup"] >= 3.0]
    best = min(ok, key=lambda r: r["exported_bytes"]) if ok else None
    return {
        "rows": rows,
        "target": "a member <= 15 MB as exported (>= 6x smaller than the teacher) within 1 point (3,000-example eval) "
                  "and >= 3x faster; its ONNX file <= 20 MB",
        "best": best["name"] if best else None,
        "met": bool(best and best["onnx_bytes"] <= 20e6 and teacher["exported_bytes"] / best["exported_bytes"] >= 6),
        "teacher_exported_bytes": teacher["exported_bytes"],
        "speedup_profile": cfg.profile.model_dump(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, short training: a smoke run")
    ap.add_argument("--remeasure", action="store_true", help="re-time the speedups in operators.json")
    ap.add_argument("--transfer", type=int, default=0, help="extra tweets, labelled by the teacher, to distil on")
    ap.add_argument("--only", nargs="*", help="operators to run (default: all)")
    ap.add_argument("--size", action="store_true", help="the size operators: merges 'size' into operators.json")
    ap.add_argument("--resize", action="store_true",
                    help="measure the size ratios in the results file again from their plans, as export ships them")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = "operators" + ("-quick" if args.quick else "") + (f"-transfer{args.transfer}" if args.transfer else "")
    if args.remeasure:
        remeasure(results)
        return
    if args.resize:
        print(f"written {resize(results)}")
        return
    raw = config(args.quick, args.transfer)
    if args.size:
        raw["space"] = {"vocabulary": {"keep": ["all", "task"]}}  # the kept vocabulary counts the distillation set
    cfg = parse_config(raw)
    bench = prepare(cfg, st.DEFAULT_CACHE)
    if args.size:
        section = size_section(size_rows(bench, cfg, args.only), cfg)
        results = "operators-quick" if args.quick else "operators"  # the size rows of every --transfer go here
        new = {r["name"] for r in section["rows"]}  # rows run now replace theirs; the others stay
        rows = [r for r in read_results(results).get("size", []) if r["name"] not in new] + section["rows"]
        order = ["teacher", *size_plans(bench.arch.num_layers)]
        section = size_section(sorted(rows, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order)), cfg)
        write_results(results, "size", section["rows"], stamp=False)
        path = write_results(results, "size_summary", {k: v for k, v in section.items() if k != "rows"})
        for r in section["rows"]:
            print(f"{r['name']:<48}{r['exported_bytes'] / 1e6:>8.2f} MB{r['onnx_bytes'] / 1e6:>8.2f} MB ONNX"
                  f"{r['acc_drop']:>+8.2f} pt{r['speedup']:>7.2f}×")
        print(f"target met: {section['met']} (best: {section['best']}) — written {path}")
        return
    n = bench.arch.num_layers
    plans = {k: v for k, v in operator_plans(n).items() if not args.only or k in args.only}
    teacher = bench.teacher
    t_acc = 100 * teacher.eval_accuracy.value
    rows = []
    for name, plan in plans.items():
        start = time.perf_counter()
        unrecovered = candidate(bench, plan, recover=False).model
        acc0 = scored(predict_logits(unrecovered, bench.eval), bench.eval.labels)
        recovered_acc = None
        final = unrecovered
        if build.needs_recovery(cfg.recovery, plan):
            final = candidate(bench, plan).model
            recovered_acc = scored(predict_logits(final, bench.eval), bench.eval.labels)
        lat = measure_profile(teacher.model, final, cfg.profile, vocab_size=teacher.model.config.vocab_size).to_dict()
        acc1 = recovered_acc or acc0
        row = {
            "name": name,
            "plan": plan.describe(),
            "speedup": lat["speedup"],
            "speedup_iqr": [1 / lat["ratio_iqr"][1], 1 / lat["ratio_iqr"][0]],
            "latency_ms": lat["candidate_ms"],
            "baseline_ms": lat["baseline_ms"],
            "noisy": lat["noisy"],
            "size_ratio": size_ratio(bench, final),
            "plan_dict": plan.to_dict(),
            "accuracy_no_recovery": 100 * acc0.value,
            "accuracy_no_recovery_ci": [100 * acc0.ci_low, 100 * acc0.ci_high],
            "acc_drop_no_recovery": t_acc - 100 * acc0.value,
            "accuracy_recovered": 100 * acc1.value,
            "accuracy_recovered_ci": [100 * acc1.ci_low, 100 * acc1.ci_high],
            "acc_drop_recovered": t_acc - 100 * acc1.value,
            "recovered": recovered_acc is not None,
            "seconds": time.perf_counter() - start,
        }
        logging.info("%s: %.2f× faster, size %.2f, drop %.2f → %.2f pt", name, row["speedup"], row["size_ratio"],
                     row["acc_drop_no_recovery"], row["acc_drop_recovered"])
        rows.append(row)
    base_lat = sorted(r["baseline_ms"] for r in rows)[len(rows) // 2]
    out = {
        "task": "bundled:tweets (train %d, eval %d)" % (cfg.task.train_size, cfg.task.eval_size),
        "baseline": {
            "latency_ms": base_lat,
            "accuracy": t_acc,
            "accuracy_ci": [100 * teacher.eval_accuracy.ci_low, 100 * teacher.eval_accuracy.ci_high],
            "teacher_seen_same_labelled_data_as_students": True,
        },
        "profile": cfg.profile.model_dump(),
        "recovery": cfg.recovery.model_dump(),
        "candidates": rows,
        "quick": args.quick,
        "remeasured": None,  # timed in this run
        "resized": None,  # sized in this run
    }
    path = write_results(results, None, out)
    print(f"{'operator':<12}{'speedup':>9}{'size':>7}{'drop raw':>10}{'drop KD':>9}")
    for r in rows:
        print(f"{r['name']:<12}{r['speedup']:>8.2f}×{r['size_ratio']:>7.2f}{r['acc_drop_no_recovery']:>+10.2f}{r['acc_drop_recovered']:>+9.2f}")
    print(f"teacher {t_acc:.2f}% on {cfg.task.eval_size} examples, {base_lat:.1f} ms — written {path}")


def stored_plan(row: dict, n: int) -> CompressionPlan:
    """A candidate row's plan: as stored with it, or (rows written before plans were) its operator's."""
    return CompressionPlan.from_dict(row["plan_dict"]) if row.get("plan_dict") else operator_plans(n)[row["name"]]


def resize(name: str) -> Path:
    """The candidates' size ratios measured again from their plans, as export ships them (no training)."""
    data = read_results(name)
    base = load_classifier(MODEL, num_labels=3).eval()  # the tweets' three classes: the teacher's shapes
    figures = {}
    for row in data["candidates"]:
        figures[row["name"]] = resized_(row, size_ratio(base, shaped(base, stored_plan(row, base.config.num_hidden_layers))))
        logging.info("%s: size %.6f → %.6f", row["name"], *figures[row["name"]])
    return write_results(name, None, {"candidates": data["candidates"], "resized": resize_note(figures)}, stamp=False)


def remeasure(name: str) -> None:
    data = read_results(name)
    cfg = parse_config(config(quick="quick" in name))
    base = load_classifier(MODEL, num_labels=3).eval()
    for row in data["candidates"]:
        plan = stored_plan(row, base.config.num_hidden_layers)
        lat = measure_profile(base, shaped(base, plan), cfg.profile, vocab_size=base.config.vocab_size).to_dict()
        row["speedup_first_run"] = row["speedup"]
        row["speedup"] = lat["speedup"]
        row["speedup_iqr"] = [1 / lat["ratio_iqr"][1], 1 / lat["ratio_iqr"][0]]
        row["latency_ms"], row["baseline_ms"], row["noisy"] = lat["candidate_ms"], lat["baseline_ms"], lat["noisy"]
        logging.info("%s: %.2f× (first run %.2f×)", row["name"], row["speedup"], row["speedup_first_run"])
    write_results(name, None, {"candidates": data["candidates"], "remeasured": {
        "date": today(), "machine": machine(), "why": "speedups re-timed on a quiet machine"}}, stamp=False)
    for r in data["candidates"]:
        print(f"{r['name']:<12}{r['speedup']:>8.2f}×  drop after KD {r['acc_drop_recovered']:+.2f} pt")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
