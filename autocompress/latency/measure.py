"""The measuring protocol: baseline and candidate timed in the same process, interleaved.

On a shared machine absolute latency drifts by 10–15 % between runs, so the figure we trust is
the *ratio* candidate / baseline measured round by round (ABBA order cancels linear drift).
After warm-up, ``profile.repeats`` rounds are timed; while the ratio's relative IQR exceeds
``profile.max_spread`` we keep measuring, up to ``profile.max_repeats`` rounds, and flag the
result as noisy if it is still too wide. A machine-wide file lock keeps two measurements from
running at once on one host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.latency.profile import DeviceProfile
from autocompress.locks import file_lock

__all__ = ["LatencyResult", "host_info", "measure_pair", "measurement_lock"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class LatencyResult:
    """One interleaved measurement of a candidate against the baseline."""

    candidate_ms: float  # median latency of the candidate
    candidate_iqr_ms: float
    baseline_ms: float  # median latency of the baseline in the same rounds
    baseline_iqr_ms: float
    ratio: float  # median of per-round candidate/baseline (the figure to compare)
    ratio_q1: float
    ratio_q3: float
    rounds: int
    noisy: bool  # the ratio's spread stayed above the profile's limit
    profile: str

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_info() -> dict[str, Any]:
    """What a latency figure was measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def measurement_lock(path: str | Path | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold a host-wide exclusive lock so that no two measurements overlap on this machine."""
    return file_lock(path or Path(tempfile.gettempdir()) / "autocompress-latency.lock")


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def example_inputs(profile: DeviceProfile, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of the profile's batch and sequence length (content does not change speed)."""
    g = torch.Generator().manual_seed(seed)
    low = min(100, vocab_size // 2)  # skip the special tokens at the start of most vocabularies
    ids = torch.randint(low, vocab_size, (profile.batch_size, profile.seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure_pair(
    baseline: nn.Module | Callable[[], Any],
    candidate: nn.Module | Callable[[], Any],
    profile: DeviceProfile,
    *,
    inputs: dict[str, torch.Tensor] | None = None,
    clock: Clock = time.perf_counter,
    lock: bool = True,
) -> LatencyResult:
    """Time ``candidate`` against ``baseline`` under ``profile`` (see the module docstring).

    Models are called as ``model(**inputs)``; zero-argument callables are called as they are
    (used by tests with a fake clock).
    """
    run_a = _as_runner(baseline, inputs)
    run_b = _as_runner(candidate, inputs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    ctx = measurement_lock() if lock else contextlib.nullcontext()
    try:
        with ctx, torch.inference_mode():
            for _ in range(profile.warmup):
                run_a()
                run_b()
            ta: list[float] = []
            tb: list[float] = []
            target = profile.repeats
            while True:
                while len(ta) < target:
                    first_a = len(ta) % 2 == 0  # ABBA: alternate which model goes first
                    for which in ("a", "b") if first_a else ("b", "a"):
                        start = clock()
                        (run_a if which == "a" else run_b)()
                        elapsed = clock() - start
                        (ta if which == "a" else tb).append(elapsed)
                ratios = [b / a for a, b in zip(ta, tb) if a > 0]
                if not ratios:
                    raise RuntimeError("the clock did not advance while timing the baseline")
                q1, med, q3 = _quartiles(ratios)
                spread = (q3 - q1) / med if med > 0 else float("inf")
                if spread <= profile.max_spread or target >= profile.max_repeats:
                    break
                target = min(profile.max_repeats, target * 2)
                log.debug("ratio spread %.1f%% > %.1f%%: measuring %d rounds", spread * 100, profile.max_spread * 100, target)
    finally:
        torch.set_num_threads(previous_threads)
    a1, am, a3 = _quartiles(ta)
    b1, bm, b3 = _quartiles(tb)
    return LatencyResult(
        candidate_ms=bm * 1e3,
        candidate_iqr_ms=(b3 - b1) * 1e3,
        baseline_ms=am * 1e3,
        baseline_iqr_ms=(a3 - a1) * 1e3,
        ratio=med,
        ratio_q1=q1,
        ratio_q3=q3,
        rounds=len(ta),
        noisy=spread > profile.max_spread,
        profile=profile.name,
    )


def _as_runner(model: nn.Module | Callable[[], Any], inputs: dict[str, torch.Tensor] | None) -> Callable[[], Any]:
    if isinstance(model, nn.Module):
        if inputs is None:
            raise ValueError("inputs are required to time a model")
        return lambda: model(**inputs)
    return model
