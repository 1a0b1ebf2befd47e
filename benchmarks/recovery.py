"""Where the teacher's fine-tuning and a distillation epoch spend their time, and what the two
training cuts (word embeddings frozen, batches grouped by length) cost in accuracy.

The bundled default's task (3,000 train tweets, seed 0) with a 3,000-example eval split. Each
variant fine-tunes the teacher from the pre-trained model, then distils three students (six
layers at 50 % heads+FFN, three layers at 50 %, two layers) from the one teacher fine-tuned
without either cut, so the students differ only in how they were trained. Accuracy comes with its
95 % bootstrap interval, and each variant's difference from the uncut one with the paired
bootstrap interval of the difference (same eval examples). One process, one variant at a time.

    python benchmarks/recovery.py            # full run (~25 min on 2 cores)
    python benchmarks/recovery.py --quick    # smoke run (~2 min), results to recovery-quick.json
    python benchmarks/recovery.py --hidden --teacher-variants both --teacher-epochs 3   # hidden-state KD (~15 min)

    python benchmarks/recovery.py --quant-aware      # quantisation-aware recovery on tweets and BBC (~25 min)

``--quant-aware`` builds, on two bundled tasks with their search spaces' settings (tweets from
``search_spaces/tweets.yaml``, BBC News from ``search_spaces/bbc.yaml`` with the tweets' recovery
budget), int8 plans as a study does: full depth quantised as it is, and with its short
quantisation-aware pass (and a longer one); pruned and shallow int8 students distilled in float and
then quantised, and distilled through the rounding. Each row gives the accuracy with its interval and
the paired difference to the teacher and to the same student without the rounding; it writes the
``quantization_aware`` section.

    python benchmarks/recovery.py --data             # more data for the student: augmentation, a transfer file (~15 min)

``--data`` distils 6-layer (heads and FFN 50 %), 4-layer and 3-layer students of the bundled default
(``search_spaces/tweets.yaml``: 2,000 train tweets) at the same number of steps (equal wall time but
for the extra examples' labelling) from three distillation sets: the train tweets alone, the train
tweets and their augmented variants (``recovery.augment``), and the train tweets and 4,000 other
tweets of the corpus written to a text file as a user's own unlabelled texts
(``task.transfer_source``); it writes the ``distillation_data`` section.

``--hidden`` distils the same three students with the recovery the default study uses (word
embeddings frozen, depth-scaled epochs) from logits alone and with each kept layer's hidden state
too (:func:`autocompress.train.distill.hidden_targets`), at the full budget and at part of it, and
writes the ``hidden_state`` section of the results file (its other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from _common import ROOT, candidate, paired_ci, prepare, right, scored, write_results
from autocompress.schema.config import RecoveryConfig, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search.build import recovery_epochs
from autocompress.search.workbench import Workbench
from autocompress.tasks.batches import Encoded
from autocompress.tasks.evaluate import predict_logits
from autocompress.train.distill import TeacherStates, teacher_states

#: name → (freeze_word_embeddings, group_by_length, teacher epochs)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "uncut": (False, False),
    "frozen_embeddings": (True, False),
    "grouped_by_length": (False, True),
    "both": (True, True),
}


#: name → (hidden_weight, share of the depth-scaled budget)
HIDDEN_VARIANTS: dict[str, tuple[float, float]] = {
    "logits": (0.0, 1.0),
    "logits_half_budget": (0.0, 0.5),
    "logits_third_budget": (0.0, 1 / 3),
    "hidden": (1.0, 1.0),
    "hidden_half_budget": (1.0, 0.5),
    "hidden_third_budget": (1.0, 1 / 3),
}


def config(quick: bool, freeze: bool, group: bool, teacher_epochs: float) -> dict[str, Any]:
    train, evals = (400, 300) if quick else (3000, 3000)
    return {
        "name": "bench-recovery",
        "task": {"source": "bundled:tweets", "train_size": train, "eval_size": evals, "max_length": 64, "seed": 0},
        "teacher": {"epochs": teacher_epochs, "learning_rate": 5.0e-5, "batch_size": 32,
                    "freeze_word_embeddings": freeze, "group_by_length": group},
        "recovery": {"epochs": 1.0, "learning_rate": 1.0e-4, "temperature": 2.0, "alpha": 0.5,
                     "freeze_word_embeddings": freeze, "group_by_length": group},
        "pruning": {"criterion": "taylor", "calibration_examples": 64 if quick else 256},
        "profile": "cpu-2t",
        "report_profiles": [],
    }


def padding_share(data: Encoded, batch_size: int, group: bool) -> float:
    """The share of token slots in one epoch's training batches that are padding."""
    real = padded = 0
    for _, inputs in data.batches(batch_size, shuffle=True, seed=0, by_length=group):
        real += int(inputs["attention_mask"].sum())
        padded += inputs["attention_mask"].numel()
    return 1 - real / padded


def figures(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Which examples are right, and the accuracy with its 95 % interval, in points."""
    acc = scored(logits, labels)
    return right(logits, labels), {"accuracy": 100 * acc.value, "ci": [100 * acc.ci_low, 100 * acc.ci_high]}


def paired(correct: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    return {"diff_pt": 100 * (correct.mean() - reference.mean()).item(), "diff_ci": paired_ci(correct, reference)}


def distilled(bench: Workbench, plan: CompressionPlan, recovery: RecoveryConfig, epochs: float,
              states: TeacherStates | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """``plan``'s candidate from the one builder, distilled for exactly ``epochs`` with ``recovery``'s
    other settings: which eval examples it gets right, and its figures with the training's time."""
    exact = recovery.model_copy(update={"epochs": epochs, "depth_scaled": False})
    built = candidate(bench, plan, recovery=exact, states=states)
    correct, row = figures(predict_logits(built.model, bench.eval), bench.eval.labels)
    seconds, steps = built.recovery["recovery_seconds"], built.recovery["recovery_steps"]
    row.update(seconds=seconds, steps=steps, seconds_per_step=seconds / steps)
    return correct, row


def students(n: int) -> dict[str, CompressionPlan]:
    return {
        "6_layers_prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
        "3_layers_prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5, keep=list(range(0, n, 2))),
        "2_layers": CompressionPlan.uniform(n, keep=[0, n // 2]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--teacher-epochs", type=float, nargs="+", default=[3.0, 2.0],
                    help="teacher epochs to try with both cuts (the first is also used for the uncut teacher)")
    ap.add_argument("--teacher-variants", nargs="+", default=["uncut", "both"], choices=list(VARIANTS),
                    help="how the teacher is fine-tuned (every variant is tried on the students)")
    ap.add_argument("--cache", type=Path, help="teacher cache to reuse (default: a new temporary one)")
    ap.add_argument("--hidden", action="store_true", help="hidden-state distillation against logits alone")
    ap.add_argument("--quant-aware", action="store_true", help="quantisation-aware recovery against float recovery")
    ap.add_argument("--tasks", nargs="+", default=list(QAT_TASKS), choices=list(QAT_TASKS))
    ap.add_argument("--data", action="store_true", help="augmented and transfer-file distillation sets")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    if args.data:
        path = write_results("recovery-quick" if args.quick else "recovery", "distillation_data",
                             data_rows(args.quick, cache))
        print(f"wrote {path}")
        return
    if args.quant_aware:
        rows = {name: quant_aware_rows(name, args.quick, cache) for name in args.tasks}
        path = write_results("recovery-quick" if args.quick else "recovery", "quantization_aware",
                             {"tasks": rows, "cache": str(cache)})
        print(f"wrote {path}")
        return
    epochs = [1.0] if args.quick else args.teacher_epochs
    out: dict[str, Any] = {"teacher": [], "distillation": [], "cache": str(cache)}

    teacher_runs = [(name, *VARIANTS[name], epochs[0]) for name in args.teacher_variants]
    teacher_runs += [("both", True, True, e) for e in epochs[1:]]
    reference: torch.Tensor | None = None
    uncut_bench = None
    for name, freeze, group, ep in teacher_runs:
        cfg = parse_config(config(args.quick, freeze, group, ep))
        start = time.perf_counter()
        bench = prepare(cfg, cache)
        wall = time.perf_counter() - start
        correct, row = figures(bench.teacher.eval_logits, bench.eval.labels)
        steps = math.ceil(len(bench.train) / cfg.teacher.batch_size) * ep
        seconds = json.loads((bench.teacher.cache / "autocompress-teacher.json").read_text())["fine_tune_seconds"]
        row.update(name=name, epochs=ep, fine_tune_seconds=seconds, prepare_seconds=wall, from_cache=bench.teacher.from_cache,
                   seconds_per_step=seconds / steps,
                   padding_share=padding_share(bench.train, cfg.teacher.batch_size, group))
        if reference is None:
            reference, uncut_bench = correct, bench
        row.update(paired(correct, reference))
        out["teacher"].append(row)
        logging.info("teacher %s, %g epochs: %.1f s, %.2f%%", name, ep, seconds, row["accuracy"])

    assert uncut_bench is not None
    bench = uncut_bench
    if args.hidden:
        path = write_results("recovery-quick" if args.quick else "recovery", "hidden_state", hidden_rows(bench))
        print(f"wrote {path}")
        return
    for student, plan in students(bench.arch.num_layers).items():
        base: torch.Tensor | None = None
        for name, (freeze, group) in VARIANTS.items():
            rcfg = bench.config.recovery.model_copy(update={"freeze_word_embeddings": freeze, "group_by_length": group})
            correct, row = distilled(bench, plan, rcfg, rcfg.epochs)
            base = correct if base is None else base
            row.update(student=student, name=name, **paired(correct, base))
            out["distillation"].append(row)
            logging.info("%s %s: %.1f s, %.2f%% (%+.2f)", student, name, row["seconds"], row["accuracy"], row["diff_pt"])
    out["settings"] = config(args.quick, False, False, epochs[0])
    path = write_results("recovery-quick" if args.quick else "recovery", None, out)  # hidden_state stays
    print(f"wrote {path}")


#: task → (its search space, recovery settings over the space's): the bundled tasks the int8 rows run on
QAT_TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "tweets": ("search_spaces/tweets.yaml", {}),
    "bbc": ("search_spaces/bbc.yaml", {"epochs": 0.75, "learning_rate": 1.0e-4, "temperature": 2.0, "alpha": 0.5}),
}


def quant_aware_rows(task: str, quick: bool, cache: Path) -> dict[str, Any]:
    """Int8 students of ``task`` (:data:`QAT_TASKS`) with and without quantisation-aware recovery."""
    space, recovery = QAT_TASKS[task]
    raw = yaml.safe_load((ROOT / space).read_text())
    raw["recovery"] = {**raw.get("recovery", {}), **recovery}
    raw["report_profiles"] = []
    if quick:
        raw["task"].update(train_size=200, eval_size=200, max_length=32)
        raw["teacher"]["epochs"] = 1
    cfg = parse_config(raw)
    start = time.perf_counter()
    bench = prepare(cfg, cache)
    teacher, trow = figures(bench.teacher.eval_logits, bench.eval.labels)
    out: dict[str, Any] = {"space": space, "recovery": cfg.recovery.model_dump(), "eval_examples": len(bench.eval),
                           "teacher": {**trow, "prepare_seconds": time.perf_counter() - start}, "rows": []}
    n = bench.arch.num_layers
    aware = cfg.recovery.model_copy(update={"quantization_aware": True})
    unaware = cfg.recovery.model_copy(update={"quantization_aware": False})
    full_int8 = CompressionPlan.uniform(n, bits=8)
    variants: list[tuple[str, CompressionPlan, RecoveryConfig, bool]] = [
        ("int8, quantised as it is", full_int8, unaware, False),
        ("int8, quantisation-aware pass (a quarter of recovery.epochs, the default)", full_int8, aware, True),
        ("int8, quantisation-aware pass (recovery.epochs)", full_int8,
         aware.model_copy(update={"quantize_only_fraction": 1.0}), True),
    ]
    for label, plan in (("6 layers, heads+FFN 50 %, int8", CompressionPlan.uniform(n, heads=0.5, ffn=0.5, bits=8)),
                        ("3 layers, int8", CompressionPlan.uniform(n, bits=8, keep=list(range(0, n, 2))))):
        variants += [(f"{label}, distilled in float", plan, unaware, True),
                     (f"{label}, distilled through the rounding", plan, aware, True)]
    float_of: dict[str, torch.Tensor] = {}
    for name, plan, rcfg, recover in variants:
        built = candidate(bench, plan, recovery=rcfg, recover=recover)
        correct, row = figures(predict_logits(built.model, bench.eval), bench.eval.labels)
        row.update(name=name, plan=plan.describe(), quantization_aware=bool(built.recovery.get("quantization_aware")),
                   recovery_epochs=built.recovery.get("recovery_epochs"), recovery_seconds=built.recovery.get("recovery_seconds"),
                   vs_teacher=paired(correct, teacher))
        key = plan.describe()
        if key in float_of:
            row["vs_without_rounding"] = paired(correct, float_of[key])
        else:
            float_of[key] = correct
        out["rows"].append(row)
        logging.info("%s %s: %.2f%% (%+.2f vs teacher)", task, name, row["accuracy"], row["vs_teacher"]["diff_pt"])
    return out


def data_rows(quick: bool, cache: Path) -> dict[str, Any]:
    """Students of the bundled default distilled from each distillation set at equal steps."""
    raw = yaml.safe_load((ROOT / "search_spaces/tweets.yaml").read_text())
    raw["report_profiles"] = []
    if quick:
        raw["task"].update(train_size=200, eval_size=200, max_length=32)
        raw["teacher"]["epochs"] = 1
    base = parse_config({**raw, "recovery": {**raw["recovery"], "augment": {"kind": "none"}}})
    others = transfer_file(base, 400 if quick else 4000, cache / "other-tweets.txt")
    sources = {
        "train only": base,
        "train + augmented (neighbours, 2 copies, 30 %)": parse_config(
            {**raw, "recovery": {**raw["recovery"], "augment": {"kind": "neighbours"}}}),
        "train + 4,000 other tweets (transfer file)": parse_config(
            {**raw, "task": {**raw["task"], "transfer_source": str(others)},
             "recovery": {**raw["recovery"], "augment": {"kind": "none"}}}),
    }
    out: dict[str, Any] = {"space": "search_spaces/tweets.yaml", "transfer_file": f"{len(others.read_text().splitlines())} "
                           "tweets of the bundled corpus outside the study's train and eval splits", "rows": []}
    reference: dict[str, torch.Tensor] = {}
    for source, cfg in sources.items():
        start = time.perf_counter()
        bench = prepare(cfg, cache)
        prep = time.perf_counter() - start
        if "teacher" not in out:
            _, out["teacher"] = figures(bench.teacher.eval_logits, bench.eval.labels)
        n = bench.arch.num_layers
        plans = {"6 layers, heads+FFN 50 %": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
                 "4 layers": CompressionPlan.uniform(n, keep=[0, 2, 3, 5]),
                 "3 layers": CompressionPlan.uniform(n, keep=[0, 2, 4])}
        for student, plan in plans.items():
            built = candidate(bench, plan)
            correct, row = figures(predict_logits(built.model, bench.eval), bench.eval.labels)
            row.update(source=source, student=student, distillation_set=bench.distillation_set,
                       prepare_seconds=prep, steps=built.recovery["recovery_steps"],
                       recovery_seconds=built.recovery["recovery_seconds"])
            if student in reference:
                row["vs_train_only"] = paired(correct, reference[student])
            else:
                reference[student] = correct
            out["rows"].append(row)
            logging.info("%s, %s: %.2f%% in %d steps", source, student, row["accuracy"], row["steps"])
    return out


def transfer_file(cfg: Any, n: int, path: Path) -> Path:
    """``n`` tweets of the bundled corpus that the study's train and eval splits do not hold, one a line."""
    from autocompress.tasks.data import BUNDLED_DATASETS, load_task

    task = load_task(cfg.task)
    used = set(task.train.texts) | set(task.eval.texts)
    rows = BUNDLED_DATASETS[cfg.task.source]()[cfg.task.text_column]
    texts = [t.replace("\n", " ").strip() for t in rows if isinstance(t, str) and t.strip() and t not in used]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(texts[-n:]) + "\n", encoding="utf-8")
    return path


def hidden_rows(bench: Any) -> dict[str, Any]:
    """Each student distilled by every :data:`HIDDEN_VARIANTS` entry from the one teacher."""
    rcfg0 = bench.config.recovery.model_copy(update={"freeze_word_embeddings": True, "group_by_length": False,
                                                     "depth_scaled": True})
    states_start = time.perf_counter()
    states = teacher_states(bench.teacher.model, bench.transfer, range(1, bench.arch.num_layers + 1))
    out: dict[str, Any] = {"states_seconds": time.perf_counter() - states_start, "states_mb": states.nbytes / 2**20,
                           "rows": [], "variants": {k: {"hidden_weight": w, "budget_share": b}
                                                    for k, (w, b) in HIDDEN_VARIANTS.items()}}
    for student, plan in students(bench.arch.num_layers).items():
        base: torch.Tensor | None = None
        for name, (weight, share) in HIDDEN_VARIANTS.items():
            rcfg = rcfg0.model_copy(update={"hidden_weight": weight})
            epochs = share * recovery_epochs(rcfg, plan)
            correct, row = distilled(bench, plan, rcfg, epochs, states)
            base = correct if base is None else base
            row.update(student=student, name=name, epochs=epochs, **paired(correct, base))
            out["rows"].append(row)
            logging.info("%s %s: %.1f s, %.2f%% (%+.2f vs logits)", student, name, row["seconds"], row["accuracy"],
                         row["diff_pt"])
    return out


if __name__ == "__main__":
    main()
