"""Studies for report tests written straight into Optuna storage, shaped like the objective's
records (no model is built): a realistic 6-layer study and the edge cases a report must survive."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from autocompress.search.objective import OBJECTIVES

LAYERS = 6
TEACHER_ACC = 74.0
TEACHER_MB = 90.9
TEACHER_MS = 29.0
T0 = datetime(2026, 3, 1, 9, 0, 0)

CONFIG: dict[str, Any] = {
    "model": {"source": "bundled:all-MiniLM-L6-v2"},
    "task": {"source": "bundled:tweets", "train_size": 3000, "eval_size": 2000, "max_length": 128},
    "profile": {"name": "cpu-2t", "kind": "measured", "device": "cpu", "threads": 2, "batch_size": 1, "seq_len": 128},
    "report_profiles": [
        {"name": "rpi4", "kind": "predicted", "threads": 4, "batch_size": 1, "seq_len": 128,
         "spec": {"cpu": "Arm Cortex-A72"}},
    ],
    "search": {"trials": 40},
}


def _distributions() -> dict[str, Any]:
    d: dict[str, Any] = {"depth": IntDistribution(3, LAYERS), "selection": CategoricalDistribution(["even", "first"])}
    for i in range(LAYERS):
        d[f"heads_{i}"] = CategoricalDistribution([1.0, 0.75, 0.5, 0.25])
        d[f"ffn_{i}"] = CategoricalDistribution([1.0, 0.75, 0.5, 0.25])
        d[f"bits_{i}"] = CategoricalDistribution([32, 8, 4])
    return d


def _plan(params: dict[str, Any]) -> dict[str, Any]:
    depth = params["depth"]
    if params["selection"] == "first":
        kept = set(range(depth))
    else:  # evenly spaced, as DistilBERT keeps every other layer
        kept = {round(i * LAYERS / depth) for i in range(depth)}
    layers = [
        {"keep": i in kept, "heads": params[f"heads_{i}"], "ffn": params[f"ffn_{i}"], "bits": params[f"bits_{i}"]}
        for i in range(LAYERS)
    ]
    return {"schema_version": 1, "layers": layers, "embedding_bits": 32, "head_bits": 32}


def _latency(ratio: float, kind: str, spread: float = 0.03, host_prediction: float | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "profile": "cpu-2t" if kind == "measured" else "rpi4", "kind": kind, "ratio": ratio,
        "candidate_ms": TEACHER_MS * ratio, "baseline_ms": TEACHER_MS, "noisy": spread > 0.1, "speedup": 1 / ratio,
    }
    if kind == "measured":
        rec.update(ratio_iqr=[ratio * (1 - spread), ratio * (1 + spread)], candidate_iqr_ms=TEACHER_MS * ratio * spread,
                   rounds=20)
        if host_prediction is not None:
            rec["host_prediction"] = {"ratio": host_prediction, "speedup": 1 / host_prediction}
    rec["fit_error"] = 0.08
    return rec


def realistic_trial(rng: random.Random, number: int, params: dict[str, Any] | None = None,
                    baseline: str | None = None) -> optuna.trial.FrozenTrial:
    """A complete trial with the records the objective writes, loosely like a MiniLM study's."""
    if params is None:
        params = {"depth": rng.randint(3, LAYERS), "selection": rng.choice(["even", "first"])}
        for i in range(LAYERS):
            params[f"heads_{i}"] = rng.choice([1.0, 0.75, 0.5, 0.25])
            params[f"ffn_{i}"] = rng.choice([1.0, 0.75, 0.5, 0.25])
            params[f"bits_{i}"] = rng.choice([32, 8, 8, 4])
    plan = _plan(params)
    kept = [layer for layer in plan["layers"] if layer["keep"]]
    work = sum(0.35 * layer["heads"] + 0.65 * layer["ffn"] for layer in kept) / LAYERS
    int8 = sum(layer["bits"] != 32 for layer in kept) / LAYERS
    ratio = max(0.15, 0.08 + 0.92 * work * (1 - 0.35 * int8) * rng.uniform(0.95, 1.05))
    size = 47 + (TEACHER_MB - 47) * work * (1 - 0.6 * int8)
    acc = TEACHER_ACC - 7 * (1 - work) ** 1.5 - 0.8 * int8 - rng.uniform(0, 0.8)
    simulated = any(layer["bits"] < 8 for layer in kept)
    spread = 0.15 if rng.random() < 0.1 else 0.03
    user_attrs = {
        "plan": plan,
        "plan_summary": f"{len(kept)}/{LAYERS} layers",
        "simulated": simulated,
        "accuracy": {"value": acc / 100, "ci_low": (acc - 1.9) / 100, "ci_high": (acc + 1.9) / 100, "n": 2000},
        "accuracy_drop": TEACHER_ACC - acc,
        "latency": _latency(ratio, "measured", spread, host_prediction=ratio * rng.uniform(0.85, 1.15)),
        "latencies": {
            "cpu-2t": _latency(ratio, "measured", spread, host_prediction=ratio * rng.uniform(0.85, 1.15)),
            "rpi4": _latency(ratio * rng.uniform(0.9, 1.1), "predicted"),
        },
        "speedup": 1 / ratio,
        "size": {"megabytes": size},
        "size_ratio": size / TEACHER_MB,
        "fidelity": "full",
        "host": {"host": "bench-1"},
    }
    if baseline:
        user_attrs["baseline"] = baseline
    t = optuna.trial.create_trial(
        values=[acc, ratio, size], params=params, distributions=_distributions(), user_attrs=user_attrs,
        constraints={"accuracy_drop": TEACHER_ACC - acc - 4.5},
    )
    t.datetime_start = T0 + timedelta(minutes=2 * number)
    t.datetime_complete = t.datetime_start + timedelta(seconds=40 + rng.uniform(0, 60))
    return t


def new_study(tmp_path: Path, name: str = "synthetic", **attrs: Any) -> optuna.Study:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name=name, storage=storage, directions=[d for _, d in OBJECTIVES])
    study.set_user_attr("config", attrs.get("config", CONFIG))
    study.set_user_attr("teacher", attrs.get("teacher", {
        "accuracy": {"value": TEACHER_ACC / 100, "ci_low": 0.72, "ci_high": 0.76, "n": 2000},
        "size": {"megabytes": TEACHER_MB}, "fine_tune_seconds": 188.0,
    }))
    return study


def fill_realistic(study: optuna.Study, n: int = 40, seed: int = 0) -> optuna.Study:
    """``n`` complete trials (the four uniform baselines first), one failed and one pruned."""
    rng = random.Random(seed)
    uniform = {"depth": LAYERS, "selection": "even"}
    for i in range(LAYERS):
        uniform.update({f"heads_{i}": 1.0, f"ffn_{i}": 1.0, f"bits_{i}": 32})
    baselines = {
        "teacher": uniform,
        "int8": {**uniform, **{f"bits_{i}": 8 for i in range(LAYERS)}},
        "prune50": {**uniform, **{f"heads_{i}": 0.5 for i in range(LAYERS)}, **{f"ffn_{i}": 0.5 for i in range(LAYERS)}},
        "half_depth": {**uniform, "depth": 3},
    }
    for k, (label, params) in enumerate(baselines.items()):
        study.add_trial(realistic_trial(rng, k, params, baseline=label))
    for k in range(len(baselines), n):
        study.add_trial(realistic_trial(rng, k))
    failed = optuna.trial.create_trial(
        state=TrialState.FAIL, user_attrs={"fail_reason": "LatencyError: out of memory", "plan_summary": "6/6 layers"})
    pruned = optuna.trial.create_trial(
        state=TrialState.PRUNED, user_attrs={"prune_reason": "not recovered: trial 3 is already as fast",
                                             "fidelity": "cheap", "plan_summary": "4/6 layers"})
    for k, t in enumerate((failed, pruned)):
        t.datetime_start = T0 + timedelta(minutes=2 * (n + k))
        t.datetime_complete = t.datetime_start + timedelta(seconds=20)
        study.add_trial(t)
    return study
