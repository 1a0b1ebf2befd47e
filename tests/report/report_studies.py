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


# ------------------------------------------------------------------------ a decoder (perplexity) study
DECODER_LAYERS = 6
TEACHER_PPL = 21.7
TEACHER_TTFT_MS, TEACHER_TPOT_MS, NEW_TOKENS = 40.0, 9.0, 64
TEACHER_KV_BYTES = 6 * 2 * 2 * 192 * 64 * 4  # layers × (k, v) × kv heads × tokens × head size × fp32

DECODER_CONFIG: dict[str, Any] = {
    "model": {"source": "bundled:llama-bbc"},
    "task": {"kind": "causal-lm", "source": "bundled:bbc", "train_size": 1600, "eval_size": 200, "max_length": 128,
             "metric": "perplexity"},
    "profile": {"name": "cpu-2t-chat", "kind": "measured", "device": "cpu", "threads": 2, "batch_size": 1,
                "seq_len": 128, "new_tokens": NEW_TOKENS},
    "objectives": {"max_perplexity_increase": 10},
    "search": {"trials": 12},
}


def decoder_trial(number: int, keep: int, kv: float, bits: int, baseline: str | None = None,
                  weight_only: bool = False) -> optuna.trial.FrozenTrial:
    """A complete trial of a decoder study as the objective stores it: perplexity beside its relative
    value, and the generation workload's prefill and decode figures with the KV cache's bytes."""
    plan = {"schema_version": 1, "layers": [
        {"keep": i < keep, "heads": 1.0, "kv": kv, "ffn": 1.0, "bits": bits} for i in range(DECODER_LAYERS)],
        "embedding_bits": 32, "head_bits": 32, **({"weight_scheme": "weight_only"} if weight_only else {})}
    share = keep / DECODER_LAYERS
    ppl = TEACHER_PPL * (1 + 0.25 * (1 - share) + 0.06 * (1 - kv) + {32: 0.0, 8: 0.02, 4: 0.03}[bits])
    percent = 100 * TEACHER_PPL / ppl
    ttft = TEACHER_TTFT_MS * share * (0.6 if bits < 32 else 1.0)
    tpot = TEACHER_TPOT_MS * (0.3 + 0.7 * share) * {32: 1.0, 8: 0.7, 4: 0.5}[bits]
    end_to_end, teacher_e2e = ttft + NEW_TOKENS * tpot, TEACHER_TTFT_MS + NEW_TOKENS * TEACHER_TPOT_MS
    ratio = end_to_end / teacher_e2e
    size = 24.0 * share * {32: 1.0, 8: 0.3, 4: 0.18}[bits] + 4.2
    latency = {
        "profile": "cpu-2t-chat", "kind": "measured", "ratio": ratio, "speedup": 1 / ratio,
        "candidate_ms": end_to_end, "baseline_ms": teacher_e2e, "noisy": False, "rounds": 10,
        "ratio_iqr": [ratio * 0.98, ratio * 1.02],
        "ttft_ms": ttft, "baseline_ttft_ms": TEACHER_TTFT_MS, "ttft_ratio": ttft / TEACHER_TTFT_MS,
        "tpot_ms": tpot, "baseline_tpot_ms": TEACHER_TPOT_MS, "tpot_ratio": tpot / TEACHER_TPOT_MS,
        "kv_cache_bytes": int(TEACHER_KV_BYTES * share * kv), "baseline_kv_cache_bytes": TEACHER_KV_BYTES,
    }
    metric = {"name": "perplexity", "value": percent / 100, "ci_low": percent / 100 - 0.01,
              "ci_high": min(1.0, percent / 100 + 0.01), "n": 200, "natural": ppl, "natural_low": ppl * 0.97,
              "natural_high": ppl * 1.03, "teacher_natural": TEACHER_PPL}
    user_attrs = {
        "plan": plan, "plan_summary": f"{keep}/{DECODER_LAYERS} blocks, kv {kv:.0%}, {bits} bits",
        "simulated": False, "metric": metric, "accuracy_drop": 100 - percent,
        "latency": latency, "latencies": {"cpu-2t-chat": latency}, "speedup": 1 / ratio,
        "size": {"megabytes": size}, "size_ratio": size / 28.2, "fidelity": "full", "host": {"host": "bench-1"},
    }
    if baseline:
        user_attrs["baseline"] = baseline
    budget = 100 - 100 / 1.1  # max_perplexity_increase 10, in points of the first objective
    t = optuna.trial.create_trial(
        values=[percent, ratio, size], params={"keep": keep, "kv": kv, "bits": bits},
        distributions={"keep": IntDistribution(1, DECODER_LAYERS), "kv": CategoricalDistribution([1.0, 0.5]),
                       "bits": CategoricalDistribution([32, 8, 4])},
        user_attrs=user_attrs, constraints={"accuracy_drop": 100 - percent - budget},
    )
    t.datetime_start = T0 + timedelta(minutes=3 * number)
    t.datetime_complete = t.datetime_start + timedelta(seconds=90)
    return t


def decoder_study(tmp_path: Path, name: str = "decoder") -> optuna.Study:
    """A finished perplexity study of a 6-block decoder: the teacher, baselines, and candidates on both
    sides of its budget (perplexity at most 10 % above the teacher's)."""
    study = new_study(tmp_path, name=name, config=DECODER_CONFIG, teacher={
        "metric": {"name": "perplexity", "value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 200,
                   "natural": TEACHER_PPL, "natural_low": 20.9, "natural_high": 22.5, "teacher_natural": TEACHER_PPL},
        "size": {"megabytes": 28.2},
    })
    plans = [(6, 1.0, 32, "teacher"), (6, 1.0, 8, "int8"), (3, 1.0, 32, "half_depth"), (6, 0.5, 32, None),
             (5, 1.0, 8, None), (4, 0.5, 8, None), (5, 0.5, 32, None), (2, 1.0, 8, None), (4, 1.0, 32, None)]
    for k, (keep, kv, bits, baseline) in enumerate(plans):
        study.add_trial(decoder_trial(k, keep, kv, bits, baseline))
    study.add_trial(decoder_trial(len(plans), 6, 0.5, 4, weight_only=True))  # weight-only int4, half the kv groups
    return study
