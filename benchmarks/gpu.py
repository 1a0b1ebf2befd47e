"""The CUDA paths on a machine with a GPU: training on the GPU, and the bundled `gpu` profile.

(a) training: the same distillation steps of a MiniLM-shaped model (6 layers, hidden 384, 12
    heads, FFN 1536; random weights — speed does not depend on them) on the GPU and on the CPU;
(b) latency on the `gpu` profile (batch 32 × 128 tokens, measured on CUDA, interleaved with
    the uncompressed model): speedup of 50 % heads+FFN, half depth, both, and both with the task
    vocabulary (counted on the default study's train tweets), and of any plan given with ``--plan``
    (an export's ``plan.yaml``; exit heads are untrained here, so their timing is not a trained model's).

Merges into ``benchmarks/results/gpu.json``; exits with a message on a machine without CUDA.

    python benchmarks/gpu.py [--plan FILE.yaml ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from _common import ROOT, plan_files, shaped, write_results
from autocompress.latency.measure import measure_profile
from autocompress.schema.config import RecoveryConfig
from autocompress.schema.plan import CompressionPlan
from autocompress.schema.profile import load_profile
from autocompress.tasks.batches import Encoded
from autocompress.train.distill import recover_

SPACE = ROOT / "search_spaces" / "tweets.yaml"  # whose train tweets choose a kept vocabulary


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


def plans(n: int, files: list[Path] | None = None) -> dict[str, CompressionPlan]:
    """The timed plans: pruning, depth, both, both with the task vocabulary, then any stored ones."""
    both = CompressionPlan.uniform(n, heads=0.5, ffn=0.5, keep=list(range(0, n, 2)))
    return {
        "prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
        "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))),
        "prune50_half_depth": both,
        "prune50_half_depth_vocabulary": CompressionPlan.from_dict({**both.to_dict(), "vocab_min_count": 1}),
        **plan_files(files),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", type=Path, action="append", metavar="FILE.yaml", help="also time this stored plan (repeatable)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: this benchmark needs a GPU")
    base = minilm_shaped()
    n = base.config.num_hidden_layers
    gpu_s = kd_seconds(minilm_shaped(), 1024, force_cpu=False)
    cpu_s = kd_seconds(minilm_shaped(), 1024, force_cpu=True)
    profile = load_profile("gpu")
    latency = {name: measure_profile(base, shaped(base, p, vocabulary_from=SPACE), profile, vocab_size=30522).to_dict()
               for name, p in plans(n, args.plan).items()}
    out = {
        "training": {"examples": 1024, "seq_len": 64, "gpu_seconds": gpu_s, "cpu_seconds": cpu_s, "gpu_speedup": cpu_s / gpu_s},
        "profile": profile.model_dump(mode="json"),
        "latency": latency,
    }
    path = write_results("gpu", None, out)
    print(f"(a) one KD epoch on 1024 × 64 tokens: GPU {gpu_s:.1f} s, CPU {cpu_s:.1f} s ({cpu_s / gpu_s:.1f}×)")
    for name, r in latency.items():
        print(f"(b) {name}: {r['speedup']:.2f}× on {profile.name} (teacher {r['baseline_ms']:.2f} ms, noisy={r['noisy']})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
