"""Decoders: what a chat user waits for, at real shapes, and what the search finds on the bundled decoder.

``latency`` (weights random: speed does not depend on their values): SmolLM2-135M's shapes (30
blocks, hidden 576, 9 query / 3 key-value heads, MLP 1,536, vocabulary 49,152) and Qwen2.5-0.5B's
(24 blocks, hidden 896, 14 / 2 heads, MLP 4,864, vocabulary 151,936), 2 threads, batch 1, 128
prompt tokens then 64 generated greedily with the KV cache (profile ``cpu-2t-chat``). For the
teacher and each uniform recipe (weight-only int8 and int4, dynamic int8, half the blocks, half
the MLP, and half the blocks with the fastest of those quantisations), every candidate is timed
against the teacher in one process, interleaved (``autocompress.latency.measure.measure_profile``):
time to first token, time per output token, the end-to-end speedup with its interval, and which
bit-widths a kernel computed.

``quality``: the bundled decoder study (``search_spaces/llama-bbc.yaml``) is run as a user runs
it (teacher included when it is not cached) and timed; then, in one process, its fastest trial
within the study's perplexity budget and the best uniform recipe given the same distillation
budget (int8; half the blocks + distillation; the MLP halved + distillation) are built by the
study's own builder (``autocompress.search.build.candidate``) and scored and timed by its own
calls (``autocompress.search.scoring``), so every speedup compared was measured in the same run.

    python benchmarks/decoder.py --part latency    # ~20 minutes on 2 cores; run alone on the machine
    python benchmarks/decoder.py --part quality    # the study (~30 minutes) and the recipes

Results merge into ``benchmarks/results/decoder.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import CACHE, ROOT, candidate, prepare, read_results, write_results
from autocompress.latency.measure import measure_profile
from autocompress.ops import apply_plan
from autocompress.ops.quantize import bits_summary
from autocompress.schema.config import load_config
from autocompress.schema.plan import CompressionPlan
from autocompress.schema.profile import resolve_profile
from autocompress.search import scoring
from autocompress.search.space import select_layers

SPACE = ROOT / "search_spaces" / "llama-bbc.yaml"
log = logging.getLogger("decoder")


# ------------------------------------------------------------------------------------------ latency
def _shapes() -> dict[str, Any]:
    from transformers import LlamaConfig, Qwen2Config

    return {
        "SmolLM2-135M": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                    tie_word_embeddings=True),
        "Qwen2.5-0.5B": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=2048,
                                    tie_word_embeddings=True),
    }


def _recipes(layers: int) -> dict[str, CompressionPlan]:
    half = select_layers(layers, layers // 2, "even")
    return {
        "int8 weight-only": CompressionPlan.uniform(layers, bits=8, head_bits=8, weight_scheme="weight_only"),
        "int4 weight-only": CompressionPlan.uniform(layers, bits=4, head_bits=4, weight_scheme="weight_only"),
        "int8 dynamic": CompressionPlan.uniform(layers, bits=8, head_bits=8),
        "half the blocks": CompressionPlan.uniform(layers, keep=half),
        "half the MLP": CompressionPlan.uniform(layers, ffn=0.5),
    }


def _with_bits(plan: CompressionPlan, bits_from: CompressionPlan) -> CompressionPlan:
    """``plan``'s structure with ``bits_from``'s (uniform) bit-widths and scheme."""
    data = plan.to_dict()
    width = bits_from.layers[0].bits
    data["layers"] = [{**layer, "bits": width} for layer in data["layers"]]
    data["head_bits"] = bits_from.head_bits
    data["weight_scheme"] = bits_from.weight_scheme
    return CompressionPlan.from_dict(data)


def _widths(plan: CompressionPlan) -> set[int]:
    """The bit-widths of the plan's kept layers and head."""
    return {plan.layers[i].bits for i in plan.kept_layers} | {plan.head_bits}


def _real_bits(plan: CompressionPlan) -> list[int]:
    """The widths of the plan's kept layers and head that a kernel computes (32 included)."""
    return sorted(w for w in _widths(plan) if not plan.bits_simulated(w))


def _figures(name: str, plan: CompressionPlan, lat: Any) -> dict[str, Any]:
    d = lat.to_dict()
    return {"name": name, "plan": plan.describe(), "ttft_ms": d.get("ttft_ms"), "tpot_ms": d.get("tpot_ms"),
            "end_to_end_ms": lat.candidate_ms, "teacher_end_to_end_ms": lat.baseline_ms,
            "end_to_end_speedup": lat.speedup,
            "speedup_interval": [1 / d["shapes"][0]["ratio_ci_high"], 1 / d["shapes"][0]["ratio_ci_low"]]
            if d["shapes"] and d["shapes"][0].get("ratio_ci_low") else None,
            "ttft_speedup": d.get("ttft_speedup"), "tpot_speedup": d.get("tpot_speedup"),
            "kv_cache_bytes": d.get("kv_cache_bytes"), "rounds": d.get("rounds"), "noisy": lat.noisy,
            "real_bits": _real_bits(plan), "bits": bits_summary(plan)}


def latency_part(repeats: int, only: list[str] | None, plans: list[str] | None = None) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    base = resolve_profile("cpu-2t-chat")
    profile = base.model_copy(update={"warmup": 1, "repeats": repeats, "max_repeats": max(repeats, 2 * repeats)})
    shapes = []
    for name, config in _shapes().items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        teacher = AutoModelForCausalLM.from_config(config).eval()
        layers = config.num_hidden_layers
        rows = []
        start = time.perf_counter()
        same = measure_profile(teacher, teacher, profile, vocab_size=config.vocab_size)
        rows.append(_figures("teacher", CompressionPlan.uniform(layers), same))
        quantised: dict[str, tuple[float, CompressionPlan]] = {}
        for recipe, plan in _recipes(layers).items():
            if plans and recipe not in plans and not (plan.quantises and "combined" in plans):
                continue  # a quantisation is timed again when the combination is asked for
            model = apply_plan(teacher, plan)
            lat = measure_profile(teacher, model, profile, vocab_size=config.vocab_size)
            rows.append(_figures(recipe, plan, lat))
            if plan.quantises:
                quantised[recipe] = (lat.speedup, plan)
            log.info("%s %s: %.2fx end to end", name, recipe, lat.speedup)
            del model
        if quantised and (not plans or "combined" in plans):
            fastest = max(quantised, key=lambda k: quantised[k][0])
            plan = _with_bits(_recipes(layers)["half the blocks"], quantised[fastest][1])
            lat = measure_profile(teacher, apply_plan(teacher, plan), profile, vocab_size=config.vocab_size)
            rows.append(_figures(f"half the blocks + {fastest}", plan, lat))
        shapes.append({"name": name, "config": {k: getattr(config, k) for k in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
            "vocab_size")}, "profile": profile.model_dump(mode="json"), "seconds": time.perf_counter() - start,
            "plans": rows})
    return {"shapes": shapes}


# ------------------------------------------------------------------------------------------ quality
def _run_study(config: Path, storage: str, cache: Path) -> tuple[float, int]:
    """Run (or finish) the study; its wall time as its storage shows it: from the teacher's training
    (when this run trained it) through the first trial's start to the last trial's end."""
    import optuna

    from autocompress.api import run_study

    start = time.perf_counter()
    ran = run_study(config, storage=storage, cache_dir=cache)
    full = sum(1 for t in ran.trials() if t.complete)
    trials = [t for t in optuna.load_study(study_name=ran.name, storage=storage).get_trials(deepcopy=False)
              if t.datetime_start is not None and t.datetime_complete is not None]
    searched = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return max(searched, time.perf_counter() - start), full


def _scored(bench: Any, plan: CompressionPlan) -> dict[str, Any]:
    built = candidate(bench, plan)
    ev = scoring.evaluate(bench, built.model)
    m = scoring.measure(bench, built.model, plan)
    lat = m.records[bench.config.profile.name]
    return {"plan": plan.describe(), "speedup": m.objective.speedup, "perplexity": ev.metric.natural,
            "perplexity_interval": [ev.metric.natural_low, ev.metric.natural_high],
            "relative_quality_interval": [ev.metric.ci_low, ev.metric.ci_high],
            "drop": ev.drop, "ttft_speedup": lat.get("ttft_speedup"), "tpot_speedup": lat.get("tpot_speedup"),
            "size_ratio": m.size_ratio, "recovered": built.recovered}


def quality_part(storage: str | None, cache: Path) -> dict[str, Any]:
    import optuna

    from autocompress.store import record
    from autocompress.train.teacher import cache_entry

    cfg = load_config(SPACE)
    url = storage or f"sqlite:///{Path(tempfile.mkdtemp()) / 'decoder.db'}"
    wall, full = _run_study(SPACE, url, cache)
    meta = json.loads((cache_entry(cfg, cache) / "autocompress-teacher.json").read_text())
    wall += float(meta.get("fine_tune_seconds") or 0.0)  # the teacher is trained on first use, part of the run
    bench = prepare(cfg, cache, config_file=str(SPACE))
    budget = cfg.objectives.max_drop
    study = optuna.load_study(study_name=cfg.name, storage=url)
    within, simulated = [], []
    for t in study.get_trials(deepcopy=False):
        r = record.read(t)
        if t.values is not None and r.accuracy_drop is not None and r.accuracy_drop <= budget and r.plan is not None:
            real = all(not r.plan.bits_simulated(w) for w in _widths(r.plan))
            (within if real else simulated).append((t.values[1], t.number, r.plan))
    # the headline is the fastest plan every bit-width of which a kernel computes; one with simulated widths
    # (timed as the float layers it runs as) is reported beside it
    best_ratio, best_number, best_plan = min(within, key=lambda x: x[0])
    study_best = {"trial": best_number, "speedup_in_study": 1 / best_ratio, **_scored(bench, best_plan)}
    fastest_any = min(within + simulated, key=lambda x: x[0])
    any_best = None if fastest_any[1] == best_number else {
        "trial": fastest_any[1], "speedup_in_study": 1 / fastest_any[0], "simulated_bits": True,
        **_scored(bench, fastest_any[2])}
    n = bench.arch.num_layers
    recipes = {
        "int8 dynamic": CompressionPlan.uniform(n, bits=8, head_bits=8),
        "int8 weight-only": CompressionPlan.uniform(n, bits=8, head_bits=8, weight_scheme="weight_only"),
        "half the blocks + distillation": CompressionPlan.uniform(n, keep=select_layers(n, n // 2, "even")),
        "MLP halved + distillation": CompressionPlan.uniform(n, ffn=0.5),
    }
    scored = {name: _scored(bench, plan) for name, plan in recipes.items()}
    fits = {k: v for k, v in scored.items() if v["drop"] <= budget}
    pool = fits or scored
    best_name = max(pool, key=lambda k: pool[k]["speedup"])
    best = pool[best_name]
    return {
        "teacher": {"perplexity": bench.teacher_metric.natural, "train_seconds": meta.get("fine_tune_seconds"),
                    "test_perplexity": bench.teacher_test.natural if bench.teacher_test else None},
        "budget": f"perplexity at most {cfg.objectives.max_perplexity_increase:g} % above the teacher's",
        "study": {"wall_seconds": wall, "full_trials": full,
                  "best_within_budget": {"speedup": study_best["speedup"], "perplexity": study_best["perplexity"],
                                         "trial": best_number, **study_best},
                  "fastest_within_budget_with_simulated_bits": any_best},
        "recipes": scored,
        "best_recipe": {"name": best_name, "speedup": best["speedup"], "perplexity": best["perplexity"],
                        "within_budget": bool(fits)},
        "ratio_to_best_recipe": study_best["speedup"] / best["speedup"],
        "target": 1.3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["latency", "quality"], required=True)
    ap.add_argument("--repeats", type=int, default=5, help="latency: timed rounds per candidate (more when noisy)")
    ap.add_argument("--shape", action="append", help="latency: only these shapes (SmolLM2-135M, Qwen2.5-0.5B)")
    ap.add_argument("--plan", action="append", help="latency: only these recipes (e.g. 'int4 weight-only'; 'combined': "
                    "every quantisation and half the blocks with the fastest), replacing their rows; the teacher is "
                    "always timed")
    ap.add_argument("--storage", help="quality: where the study is stored (default: a new SQLite file); a finished "
                    "study there is read, not run again")
    ap.add_argument("--cache-dir", type=Path, default=CACHE, help="quality: where the study's teacher is cached")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    if args.part == "latency":
        data = latency_part(args.repeats, args.shape, args.plan)
        if args.plan:  # keep the other recipes' rows from an earlier run (this run's teacher row replaces its)
            earlier = {s["name"]: s for s in read_results("decoder").get("latency", {}).get("shapes", [])}
            for shape in data["shapes"]:
                new = {p["name"]: p for p in shape["plans"]}
                old = [p for p in earlier.get(shape["name"], {}).get("plans", [])
                       if p["name"] not in new and not p["name"].startswith("half the blocks + ")]
                shape["plans"] = [new.pop("teacher"), *old, *new.values()]
        if args.shape:  # keep the other shapes' figures from an earlier run
            kept = [s for s in read_results("decoder").get("latency", {}).get("shapes", []) if s["name"] not in args.shape]
            data["shapes"] = kept + data["shapes"]
        path = write_results("decoder", "latency", data)
    else:
        path = write_results("decoder", "quality", quality_part(args.storage, args.cache_dir))
    write_results("decoder", None, {}, stamp=True)  # the file's own machine and date: its latest run
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
