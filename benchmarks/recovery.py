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

from _common import candidate, paired_ci, prepare, right, scored, write_results
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench-recovery-"))
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
