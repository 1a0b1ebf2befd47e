"""The CUDA paths on a machine with a GPU: training on the GPU, and the bundled `gpu` profile.

(a) training: the same distillation steps of a MiniLM-shaped model (6 layers, hidden 384, 12
    heads, FFN 1536; random weights — speed does not depend on them) on the GPU and on the CPU;
(b) latency on the `gpu` profile (batch 32 × 128 tokens, measured on CUDA, interleaved with
    the uncompressed model): speedup of 50 % heads+FFN, half depth, and both.

Writes ``benchmarks/results/gpu.json``; exits with a message on a machine without CUDA.

    python benchmarks/gpu.py
"""

from __future__ import annotations

import json
import sys
import time

import torch

from _common import RESULTS, machine, today
from autocompress.tasks.batches import Encoded
from autocompress.schema.config import RecoveryConfig
from autocompress.train.distill import recover_
from autocompress.latency.measure import measure_profile
from autocompress.schema.profile import load_profile
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan


def minilm_shaped() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def kd_seconds(model: torch.nn.Module, n: int, force_cpu: bool) -> float:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 30522, (n, 64), generator=g).tolist()
    data = Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 3, (n,), generator=g), pad_id=0)
    logits = torch.randn(n, 3, generator=g)
    cfg = RecoveryConfig(epochs=1.0, batch_size=32)
    real = torch.cuda.is_available
    if force_cpu:
        torch.cuda.is_available = lambda: False  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        recover_(model, logits, data, cfg)
        return time.perf_counter() - start
    finally:
        torch.cuda.is_available = real  # type: ignore[method-assign]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: this benchmark needs a GPU")
    base = minilm_shaped()
    n = base.config.num_hidden_layers
    gpu_s = kd_seconds(minilm_shaped(), 1024, force_cpu=False)
    cpu_s = kd_seconds(minilm_shaped(), 1024, force_cpu=True)
    profile = load_profile("gpu")
    plans = {
        "prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
        "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))),
        "prune50_half_depth": CompressionPlan.uniform(n, heads=0.5, ffn=0.5, keep=list(range(0, n, 2))),
    }
    latency = {name: measure_profile(base, apply_plan(base, p), profile, vocab_size=30522).to_dict() for name, p in plans.items()}
    out = {
        "training": {"examples": 1024, "seq_len": 64, "gpu_seconds": gpu_s, "cpu_seconds": cpu_s, "gpu_speedup": cpu_s / gpu_s},
        "profile": profile.model_dump(mode="json"),
        "latency": latency,
        "machine": machine(),
        "date": today(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "gpu.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"(a) one KD epoch on 1024 × 64 tokens: GPU {gpu_s:.1f} s, CPU {cpu_s:.1f} s ({cpu_s / gpu_s:.1f}×)")
    for name, r in latency.items():
        print(f"(b) {name}: {r['speedup']:.2f}× on {profile.name} (teacher {r['baseline_ms']:.2f} ms, noisy={r['noisy']})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
