"""Predicted latency: a cost model calibrated on this host, scaled to devices that are not here.

The model is linear in the structural costs of :mod:`autocompress.latency.cost`::

    t = c_fp32 · FLOPs(fp32 Linear) + c_int8 · FLOPs(int8 Linear) + c_attn · FLOPs(attention)
        + c_mem · bytes(element-wise) + c_q · int8 Linear calls + c_op · ops + c_0

Calibration measures a spread of compressed variants of the study's model on this host
(interleaved with the uncompressed model, so that drift cancels: each variant's time is its
ratio times the baseline's median) and fits the coefficients by non-negative least squares.

Scaling to a device: each coefficient is a throughput this host reaches, i.e. a fraction of its
own peak (measured by :func:`host_peaks`: a large fp32 GEMM, a large int8 GEMM, a large copy).
The device is assumed to reach the same fractions of *its* peaks (from its profile's ``spec``);
per-op and fixed overheads scale with the clock. Every figure made this way is labelled
``predicted``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.errors import LatencyError
from autocompress.latency.cost import OpCost, model_costs, totals
from autocompress.latency.inputs import TaskInputs, Workload, example_inputs, workloads
from autocompress.latency.measure import ProfileLatency, host_info, measure_pair, measurement_lock
from autocompress.schema.profile import DeviceProfile
from autocompress.store.locks import file_lock
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.models.adapters import arch_info

__all__ = [
    "CALIBRATION_VERSION",
    "FEATURES",
    "Calibration",
    "HostPeaks",
    "cached_calibration",
    "calibrate",
    "calibration_plans",
    "features",
    "host_peaks",
    "predict_ms",
    "predict_profile",
    "roofline_ms",
]

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 2

#: Features of the cost model, in coefficient order.
FEATURES = (
    "flops:linear_fp32",
    "flops:linear_int8",
    "flops:attention",
    "bytes:elementwise",
    "ops:linear_int8",  # fixed cost per int8 call (packing, activation scale), apart from its FLOPs
    "ops",
    "const",
)

# which host peak each feature's throughput is a fraction of
_PEAK_OF = {
    "flops:linear_fp32": "fp32",
    "flops:linear_int8": "int8",
    "flops:attention": "fp32",
    "bytes:elementwise": "memory",
    "ops:linear_int8": "clock",
    "ops": "clock",
    "const": "clock",
}


@dataclass(frozen=True)
class HostPeaks:
    """Attainable peaks of this host at some thread count (measured, not datasheet)."""

    threads: int
    fp32_gflops: float
    int8_gops: float
    memory_gbs: float
    clock_ghz: float


def _best_rate(work: float, fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return work / best


def _host_clock_ghz() -> float:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return 3.0  # unknown: a typical server clock


def host_peaks(threads: int) -> HostPeaks:
    """Measure this host's attainable fp32 GEMM, int8 GEMM and copy bandwidth with ``threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            n = 1024
            a, b = torch.randn(n, n), torch.randn(n, n)
            fp32 = _best_rate(2.0 * n**3, lambda: torch.mm(a, b)) / 1e9
            q = torch.ao.nn.quantized.dynamic.Linear(n, n)
            int8 = _best_rate(2.0 * n**3, lambda: q(a)) / 1e9
            src = torch.empty(32 * 2**20)  # 128 MiB, far beyond any cache
            src.fill_(1.0)
            dst = torch.empty_like(src)
            mem = _best_rate(2.0 * src.numel() * 4, lambda: dst.copy_(src)) / 1e9
    finally:
        torch.set_num_threads(previous)
    return HostPeaks(threads=threads, fp32_gflops=fp32, int8_gops=int8, memory_gbs=mem, clock_ghz=_host_clock_ghz())


def features(model: nn.Module, batch_size: int, seq_len: int) -> np.ndarray:
    """The cost-model features of ``model`` for one input shape (see :data:`FEATURES`)."""
    t = totals(model_costs(model, batch_size, seq_len))
    return np.array([t.get(name, 0.0) for name in FEATURES[:-1]] + [1.0])


@dataclass(frozen=True)
class Calibration:
    """Fitted cost-model coefficients for this host (seconds per unit of each feature)."""

    coefficients: dict[str, float]
    peaks: HostPeaks
    host: dict[str, Any]
    samples: int  # measured variants the fit used
    fit_median_error: float  # median |predicted/measured − 1| on those samples
    version: int = CALIBRATION_VERSION
    shapes: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        if data.get("version") != CALIBRATION_VERSION:
            raise LatencyError(f"latency calibration version {data.get('version')} is not {CALIBRATION_VERSION}")
        return cls(**{**data, "peaks": HostPeaks(**data["peaks"])})

    def scale_to(self, spec_profile: DeviceProfile | None) -> dict[str, float]:
        """Coefficients for a predicted profile's device (this host's when ``None``)."""
        if spec_profile is None:
            return dict(self.coefficients)
        spec = spec_profile.spec
        if spec is None:
            raise LatencyError(f"profile '{spec_profile.name}' has no device spec to predict from")
        cores = min(spec_profile.threads, spec.cores)
        target = {
            "fp32": spec.fp32_gflops_per_core * cores,
            "int8": spec.int8_gops_per_core * cores,
            "memory": spec.memory_gbs,
            "clock": spec.clock_ghz,
        }
        here = {
            "fp32": self.peaks.fp32_gflops,
            "int8": self.peaks.int8_gops,
            "memory": self.peaks.memory_gbs,
            "clock": self.peaks.clock_ghz,
        }
        # same fraction of peak there as here: time scales with peak_here / peak_there
        return {k: c * here[_PEAK_OF[k]] / target[_PEAK_OF[k]] for k, c in self.coefficients.items()}


def predict_ms(model: nn.Module, calibration: Calibration, batch_size: int, seq_len: int,
               profile: DeviceProfile | None = None) -> float:
    """Predicted latency in ms of ``model`` on a predicted ``profile``'s device, or on this host."""
    coef = calibration.scale_to(profile)
    f = features(model, batch_size, seq_len)
    return 1e3 * float(sum(coef[name] * x for name, x in zip(FEATURES, f, strict=True)))


def predict_workload_ms(model: nn.Module, calibration: Calibration, workload: Workload,
                        profile: DeviceProfile | None = None) -> float:
    """Predicted latency in ms per input of ``workload`` (the mean over its inputs' shapes)."""
    shapes = workload.shapes
    return sum(predict_ms(model, calibration, b, s, profile) for b, s in shapes) / len(shapes)


def predict_profile(baseline: nn.Module, candidate: nn.Module, profile: DeviceProfile,
                    calibration: Calibration, *, task: TaskInputs | None = None) -> ProfileLatency:
    """A candidate's predicted latency and ratio to the baseline on every workload of ``profile``
    (``task``: the task's inputs, for a profile that samples them), on the profile's device when it
    is predicted, on this host when it is measured; labelled predicted either way."""
    device = profile if profile.predicted else None
    per_shape = []
    for w in workloads(profile, 1, task):
        base = predict_workload_ms(baseline, calibration, w, device)
        cand = predict_workload_ms(candidate, calibration, w, device)
        per_shape.append((w.batch_size, w.seq_len, {"ratio": cand / base, "candidate_ms": cand, "baseline_ms": base,
                                                     **w.facts}))
    out = ProfileLatency.combine(profile, per_shape)
    return out if out.kind == "predicted" else replace(out, kind="predicted")


def roofline_ms(ops: list[OpCost], peaks: HostPeaks) -> float:
    """Lower bound in ms: each op at the slower of its compute peak and the memory bandwidth."""
    rate = {"linear_fp32": peaks.fp32_gflops, "attention": peaks.fp32_gflops, "linear_int8": peaks.int8_gops,
            "elementwise": peaks.fp32_gflops}
    return 1e3 * sum(max(op.flops / (rate[op.kind] * 1e9), op.bytes / (peaks.memory_gbs * 1e9)) for op in ops)


def calibration_plans(num_layers: int, count: int, seed: int = 0) -> list[CompressionPlan]:
    """A spread of plans for calibration: uniform corners first, then random per-layer mixes."""
    rng = random.Random(seed)
    ratios = (1.0, 0.75, 0.5, 0.25)
    plans = [
        CompressionPlan.uniform(num_layers),
        CompressionPlan.uniform(num_layers, bits=8),
        CompressionPlan.uniform(num_layers, heads=0.25, ffn=0.25),
        CompressionPlan.uniform(num_layers, keep=list(range(0, num_layers, 2))),
    ]
    while len(plans) < count:
        depth = rng.randint(1, num_layers)
        keep = set(rng.sample(range(num_layers), depth))
        layers = tuple(
            LayerPlan(keep=i in keep, heads=rng.choice(ratios), ffn=rng.choice(ratios), bits=rng.choice((32, 8)))
            for i in range(num_layers)
        )
        plans.append(CompressionPlan(layers=layers))
    return plans[:count]


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    x, _ = nnls(a / scale, b)
    return x / scale


def calibrate(
    model: nn.Module,
    build: Callable[[CompressionPlan], nn.Module],
    *,
    threads: int,
    shapes: list[tuple[int, int]],
    plans: list[CompressionPlan],
    repeats: int = 10,
) -> Calibration:
    """Fit the cost model on this host: measure each plan's variant of ``model`` against ``model``.

    ``build`` turns a plan into a compressed model (weights do not matter for speed).
    """
    profile = DeviceProfile(name="calibration", threads=threads, warmup=2, repeats=repeats, max_repeats=repeats)
    rows, ratios, shape_of = [], [], []
    baselines: dict[tuple[int, int], list[float]] = {shape: [] for shape in shapes}
    vocab = model.config.vocab_size
    with measurement_lock():
        peaks = host_peaks(threads)
        for plan in plans:
            variant = build(plan)
            for b, s in shapes:
                inputs = example_inputs(b, s, vocab)
                r = measure_pair(model, variant, profile, inputs=inputs, lock=False)
                rows.append(features(variant, b, s))
                ratios.append(r.ratio)
                shape_of.append((b, s))
                baselines[(b, s)].append(r.baseline_ms)
            del variant
    # a variant's time is its ratio to the baseline times the baseline's median over the whole
    # calibration: the drift of the machine during calibration cancels out of the fit
    ref = {shape: statistics.median(ms) / 1e3 for shape, ms in baselines.items()}
    a = np.vstack(rows)
    t = np.array([ratio * ref[shape] for ratio, shape in zip(ratios, shape_of, strict=True)])
    # relative error matters, not absolute: weight each sample by 1/t
    coef = _nnls(a / t[:, None], np.ones_like(t))
    fit = a @ coef
    err = statistics.median(float(abs(p / m - 1)) for p, m in zip(fit, t, strict=True))
    log.info("latency calibration: %d samples, median fit error %.1f%%", len(t), 100 * err)
    return Calibration(
        coefficients={name: float(c) for name, c in zip(FEATURES, coef, strict=True)},
        peaks=peaks,
        host=host_info(),
        samples=len(t),
        fit_median_error=err,
        shapes=[list(s) for s in shapes],
    )


def cached_calibration(
    model: nn.Module,
    build: Callable[[CompressionPlan], nn.Module],
    cache_dir: Path,
    *,
    threads: int,
    shapes: list[tuple[int, int]],
    count: int = 24,
) -> Calibration:
    """:func:`calibrate` once per host, architecture, thread count and input shapes; cached as JSON.

    The key holds the host's CPU and library versions, so a study shared by several machines
    calibrates once on each of them, and the model family as well as its shape: a RoBERTa and a
    BERT of the same size run different code (position ids, activation) and get their own model.
    """
    host = host_info()
    arch = arch_info(model)
    key_src = json.dumps(
        [CALIBRATION_VERSION, host["host"], host["cpu"], host["cores"], host["torch"], threads, sorted(shapes),
         arch.family, arch.hidden_size, arch.num_layers, arch.num_heads, arch.intermediate_size, count],
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    path = Path(cache_dir) / "latency-calibration" / f"{key}.json"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            try:
                return Calibration.from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError, LatencyError):
                log.warning("ignoring an unreadable latency calibration at %s", path)
        log.info("calibrating the latency cost model on this host (%d variants, %d shape(s))", count, len(shapes))
        cal = calibrate(model, build, threads=threads, shapes=shapes, plans=calibration_plans(arch.num_layers, count))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cal.to_dict(), indent=2))
        tmp.rename(path)
        return cal
