"""The measuring protocol: baseline and candidate timed in the same process, interleaved.

On a shared machine absolute latency drifts by 10–15 % between runs, so the figure we trust is
the *ratio* candidate / baseline measured round by round (ABBA order cancels linear drift).
After warm-up, ``profile.repeats`` rounds are timed; while the 95 % interval of the median
ratio is wider than ``profile.max_spread`` of the median on either side, more rounds are timed (half as many again each time), up to
``profile.max_repeats``, and the result is flagged noisy if the interval is still too wide. The
interval comes from the order statistics of the per-round ratios (distribution-free), so it
narrows as rounds accumulate even though one round's spread does not. A machine-wide file lock keeps two measurements from
running at once on one host.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import LatencyError
from autocompress.latency.inputs import InputsFn, TaskInputs, Workload, example_inputs, workloads
from autocompress.schema.profile import DeviceProfile
from autocompress.store.locks import exclusive_lock, shared_lock
from autocompress.models.adapters import adapter_for_config

__all__ = [
    "LatencyResult",
    "ProfileLatency",
    "RatioStats",
    "check_profile_fits",
    "compute_lock",
    "example_inputs",
    "host_info",
    "interleaved_rounds",
    "measure_pair",
    "measure_profile",
    "measure_workload",
    "measurement_lock",
    "median_interval",
]

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
    noisy: bool  # the median ratio's interval stayed wider than the profile's limit
    profile: str
    ratio_ci_low: float | None = None  # 95 % interval of the median ratio
    ratio_ci_high: float | None = None

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, ta: list[float], tb: list[float], stats: "RatioStats", *, noisy: bool, profile: str) -> "LatencyResult":
        """The figures of baseline seconds ``ta`` and candidate seconds ``tb`` per round, whose ratios ``stats`` summarises."""
        a1, am, a3 = _quartiles(ta)
        b1, bm, b3 = _quartiles(tb)
        return cls(
            candidate_ms=bm * 1e3,
            candidate_iqr_ms=(b3 - b1) * 1e3,
            baseline_ms=am * 1e3,
            baseline_iqr_ms=(a3 - a1) * 1e3,
            ratio=stats.median,
            ratio_q1=stats.q1,
            ratio_q3=stats.q3,
            rounds=len(ta),
            noisy=noisy,
            profile=profile,
            ratio_ci_low=stats.ci_low,
            ratio_ci_high=stats.ci_high,
        )


def host_info() -> dict[str, Any]:
    """What a latency figure was measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for lib in ("transformers", "optuna"):
        with contextlib.suppress(ImportError):
            info[lib] = __import__(lib).__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


_LOCK_FILE = Path(tempfile.gettempdir()) / "autocompress-latency.lock"


def measurement_lock(path: str | Path | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the host's measurement lock exclusively: no other measurement, and no computation
    under :func:`compute_lock` by another local worker, overlaps it."""
    return exclusive_lock(path or _LOCK_FILE)


def compute_lock(path: str | Path | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the host's measurement lock shared, around heavy computation (training, evaluation)."""
    return shared_lock(path or _LOCK_FILE)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def median_interval(xs: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free ``level`` interval of the median of ``xs``: the order statistics whose
    ranks are n/2 ∓ z·√n/2 (the normal approximation to the binomial)."""
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    ordered = sorted(xs)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], ordered[hi]


@dataclass(frozen=True)
class RatioStats:
    """Per-round ratios summarised: their median, quartiles and the 95 % interval of the median."""

    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, ratios: list[float]) -> "RatioStats":
        q1, med, q3 = _quartiles(ratios)
        low, high = median_interval(ratios)
        return cls(median=med, q1=q1, q3=q3, ci_low=low, ci_high=high)

    @property
    def spread(self) -> float:
        """The interval's wider half, as a share of the median (what ``max_spread`` bounds)."""
        if self.median <= 0:
            return float("inf")
        return max(self.median - self.ci_low, self.ci_high - self.median) / self.median


#: the seconds of each phase of one timed run (one phase for a forward pass; prefill and decoding for a generation)
Phases = tuple[float, ...]


def interleaved_rounds(
    time_a: Callable[[], Phases], time_b: Callable[[], Phases], profile: DeviceProfile, *, lock: bool = True,
) -> tuple[list[Phases], list[Phases]]:
    """The protocol's rounds: ``profile.warmup`` untimed runs of each, then ABBA rounds until the 95 %
    interval of the median ratio of the totals (b / a) is within ``profile.max_spread`` or
    ``profile.max_repeats`` rounds ran; returns each round's phases, baseline (a) and candidate (b).

    Each ``time_*`` runs its model once and returns the seconds of its phases (it reads the clock
    itself). They run under ``torch.inference_mode()``, ``profile.threads`` intra-op threads and,
    with ``lock``, the host's measurement lock.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    ctx = measurement_lock() if lock else contextlib.nullcontext()
    try:
        with ctx, torch.inference_mode():
            for _ in range(profile.warmup):
                time_a()
                time_b()
            ta: list[Phases] = []
            tb: list[Phases] = []
            target = profile.repeats
            while True:
                while len(ta) < target:
                    first_a = len(ta) % 2 == 0  # ABBA: alternate which model goes first
                    for which in ("a", "b") if first_a else ("b", "a"):
                        if which == "a":
                            ta.append(time_a())
                        else:
                            tb.append(time_b())
                stats = RatioStats.of(_total_ratios(ta, tb))
                if stats.spread <= profile.max_spread or target >= profile.max_repeats:
                    return ta, tb
                target = min(profile.max_repeats, math.ceil(target * 1.5))
                log.debug("median ratio known to ±%.1f%% > %.1f%%: measuring %d rounds",
                          stats.spread * 100, profile.max_spread * 100, target)
    finally:
        torch.set_num_threads(previous_threads)


def _total_ratios(ta: list[Phases], tb: list[Phases]) -> list[float]:
    ratios = [sum(b) / sum(a) for a, b in zip(ta, tb) if sum(a) > 0]
    if not ratios:
        raise RuntimeError("the clock did not advance while timing the baseline")
    return ratios


def measure_pair(
    baseline: nn.Module | Callable[[], Any],
    candidate: nn.Module | Callable[[], Any],
    profile: DeviceProfile,
    *,
    inputs: dict[str, torch.Tensor] | None = None,
    clock: Clock = time.perf_counter,
    lock: bool = True,
) -> LatencyResult:
    """Time ``candidate`` against ``baseline`` under ``profile`` for one input shape.

    Models are called as ``model(**inputs)`` (followed by a CUDA synchronise on a CUDA profile);
    zero-argument callables are called as they are (used by tests with a fake clock).
    """
    sync = profile.device == "cuda"
    run_a = _as_runner(baseline, inputs, sync)
    run_b = _as_runner(candidate, inputs, sync)

    def timed(run: Callable[[], Any]) -> Callable[[], Phases]:
        def once() -> Phases:
            start = clock()
            run()
            return (clock() - start,)

        return once

    pa, pb = interleaved_rounds(timed(run_a), timed(run_b), profile, lock=lock)
    stats = RatioStats.of(_total_ratios(pa, pb))
    ta, tb = [p[0] for p in pa], [p[0] for p in pb]
    return LatencyResult.of(ta, tb, stats, noisy=stats.spread > profile.max_spread, profile=profile.name)


def _as_runner(
    model: nn.Module | Callable[[], Any], inputs: dict[str, torch.Tensor] | None, sync: bool = False
) -> Callable[[], Any]:
    if not isinstance(model, nn.Module):
        return model
    if inputs is None:
        raise ValueError("inputs are required to time a model")
    if sync:
        return lambda: (model(**inputs), torch.cuda.synchronize())
    return lambda: model(**inputs)


@dataclass(frozen=True)
class ProfileLatency:
    """A candidate's latency on one profile: measured on this host, or predicted for a device.

    With several input shapes, ``ratio`` is the geometric mean of the per-shape ratios and the
    millisecond figures are geometric means too; ``shapes`` keeps each shape's own figures.

    A generation workload (``profile.new_tokens``) compares whole requests (the milliseconds are per
    request: prompt and new tokens); ``extra`` holds its split, combined over shapes the same way:
    time to first token and per output token (``ttft_ms``, ``baseline_ttft_ms``, ``ttft_ratio``,
    ``ttft_speedup``; ``tpot_*`` alike, each ratio's 95 % interval ``ttft_ratio_ci`` for one shape),
    ``new_tokens``, the longest prompt (``prompt_tokens``) and the key/value cache's bytes at it
    plus the new tokens (``kv_cache_bytes``, ``baseline_kv_cache_bytes``).
    """

    profile: str
    kind: str  # "measured" or "predicted": never shown without it
    ratio: float  # candidate / baseline: the figure the study compares
    candidate_ms: float
    baseline_ms: float
    noisy: bool  # measured only: some shape's ratio spread stayed above the profile's limit
    shapes: tuple[dict[str, Any], ...]
    extra: dict[str, Any] = field(default_factory=dict)  # what else the runtime tells (ONNX Runtime: the export's seconds)

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        out["shapes"] = list(self.shapes)
        out["speedup"] = self.speedup
        if self.kind == "measured":
            out["rounds"] = sum(int(d.get("rounds", 0)) for d in self.shapes)
            if len(self.shapes) == 1:  # a spread only means something for one shape
                out["candidate_iqr_ms"] = self.shapes[0].get("candidate_iqr_ms")
                out["ratio_iqr"] = [self.shapes[0].get("ratio_q1"), self.shapes[0].get("ratio_q3")]
        return out

    @classmethod
    def combine(cls, profile: DeviceProfile, per_shape: list[tuple[int, int | None, dict[str, Any]]]) -> "ProfileLatency":
        """Merge per-shape figures (each with ``ratio``, ``candidate_ms``, ``baseline_ms``)."""
        def gmean(key: str) -> float:
            return math.exp(sum(math.log(d[key]) for _, _, d in per_shape) / len(per_shape))

        return cls(
            profile=profile.name,
            kind=profile.kind,
            ratio=gmean("ratio"),
            candidate_ms=gmean("candidate_ms"),
            baseline_ms=gmean("baseline_ms"),
            noisy=any(d.get("noisy", False) for _, _, d in per_shape),
            shapes=tuple({"batch_size": b, "seq_len": s, **d} for b, s, d in per_shape),
            extra=_generation_split([d for _, _, d in per_shape]) if profile.generates else {},
        )


def _generation_split(shapes: list[dict[str, Any]]) -> dict[str, Any]:
    """A generation workload's split over its shapes: the geometric mean of each phase's figures (a
    phase's interval for one shape only), the longest prompt and the largest key/value cache."""
    out: dict[str, Any] = {}
    for phase in ("ttft", "tpot"):
        for key in (f"{phase}_ms", f"baseline_{phase}_ms", f"{phase}_ratio"):
            if all(d.get(key) for d in shapes):
                out[key] = math.exp(sum(math.log(d[key]) for d in shapes) / len(shapes))
        if f"{phase}_ratio" in out:
            out[f"{phase}_speedup"] = 1.0 / out[f"{phase}_ratio"]
        if len(shapes) == 1 and shapes[0].get(f"{phase}_ratio_ci_low") is not None:
            out[f"{phase}_ratio_ci"] = [shapes[0][f"{phase}_ratio_ci_low"], shapes[0][f"{phase}_ratio_ci_high"]]
    for key in ("new_tokens", "prompt_tokens", "kv_cache_bytes", "baseline_kv_cache_bytes"):
        if all(d.get(key) is not None for d in shapes):
            out[key] = max(int(d[key]) for d in shapes)
    return out


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


#: how a generation workload is timed: :func:`autocompress.latency.generation.measure_generation_workload`,
#: which builds on this module and puts itself here when imported (the package imports it)
GENERATION: list[Callable[..., dict[str, Any]]] = []


def measure_workload(
    baseline: Any,
    candidate: Any,
    profile: DeviceProfile,
    workload: Workload,
    *,
    lock: bool = True,
    call: Callable[[Any, dict[str, torch.Tensor]], Callable[[], Any]] | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """One workload's figures (``LatencyResult.to_dict`` plus the workload's facts): each round runs
    every input of ``workload`` once per model, and the millisecond figures are per input.

    ``call(model, inputs)`` makes the zero-argument call timed for one input (default: the
    PyTorch model on those inputs, synchronised on CUDA); export passes one for ONNX Runtime.

    A profile with ``new_tokens`` times a generation workload instead (each input a prompt, then
    the new tokens; :func:`autocompress.latency.generation.measure_generation_workload`).
    """
    if profile.generates:
        if call is not None:
            raise ValueError(f"profile '{profile.name}' generates tokens, timed in PyTorch here: it takes no call")
        return GENERATION[0](baseline, candidate, profile, workload, lock=lock, clock=clock)
    sync = profile.device == "cuda"

    def default_call(model: Any, inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
        if sync:
            return lambda: (model(**inputs), torch.cuda.synchronize())
        return lambda: model(**inputs)

    make = call or default_call
    # the default call runs models ``measure_profile`` moved to the profile's device; a given call takes the inputs as they are
    inputs = [{k: v.to(profile.device) for k, v in x.items()} for x in workload.inputs] if call is None \
        else list(workload.inputs)
    if len(inputs) == 1 and call is None:  # one batch: the model itself, as measure_pair times it
        r = measure_pair(baseline, candidate, profile, inputs=inputs[0], lock=lock, clock=clock)
        return {**r.to_dict(), **workload.facts}
    runs_a = [make(baseline, x) for x in inputs]
    runs_b = [make(candidate, x) for x in inputs]
    def round_of(runs: list[Callable[[], Any]]) -> Callable[[], Any]:
        return lambda: [f() for f in runs]  # each default call waits for its GPU work already

    r = measure_pair(round_of(runs_a), round_of(runs_b), profile, lock=lock, clock=clock)
    out = r.to_dict()
    for key in ("candidate_ms", "candidate_iqr_ms", "baseline_ms", "baseline_iqr_ms"):
        out[key] /= len(inputs)  # a round ran every input: per input, the mean over the sample
    return {**out, **workload.facts}


def measure_profile(
    baseline: nn.Module, candidate: nn.Module, profile: DeviceProfile, *, vocab_size: int,
    task: TaskInputs | None = None, lock: bool = True, make_inputs: InputsFn = example_inputs,
) -> ProfileLatency:
    """Measure ``candidate`` against ``baseline`` on every workload of a measured profile (its fixed
    shapes, inputs from ``make_inputs``; or ``task``, the task's sample, for a profile with task inputs).

    Raises :class:`LatencyError` with advice when a shape does not fit in memory.
    """
    if profile.predicted:
        raise ValueError(f"profile '{profile.name}' is predicted, not measured")
    if profile.backend != "torch":
        raise ValueError(f"profile '{profile.name}' runs in {profile.backend}, not PyTorch: "
                         "time it with autocompress.latency.runtimes.ort.measure_onnxruntime")
    loads = workloads(profile, vocab_size, task, make_inputs)
    if profile.device == "cuda":
        if not torch.cuda.is_available():
            raise LatencyError(f"profile '{profile.name}' runs on CUDA but this host has no CUDA device")
        baseline = copy.deepcopy(baseline).to("cuda")
        candidate = copy.deepcopy(candidate).to("cuda")
    per_shape = []
    try:
        for w in loads:
            try:
                d = measure_workload(baseline, candidate, profile, w, lock=lock)
            except (RuntimeError, MemoryError) as exc:
                if _out_of_memory(exc):
                    what = f"batch {w.batch_size} × {w.seq_len} tokens" if w.seq_len else "the task's longest example"
                    lower = "batch_size or seq_len"
                    if profile.generates:
                        what += f" and {profile.new_tokens} new tokens"
                        lower = "batch_size, seq_len or new_tokens" if w.seq_len else "new_tokens (or task.max_length)"
                    raise LatencyError(
                        f"{what} does not fit in memory on {profile.device}; "
                        f"lower {lower} of profile '{profile.name}'"
                    ) from None
                raise
            per_shape.append((w.batch_size, w.seq_len, d))
    finally:
        if profile.device == "cuda":
            del baseline, candidate
            torch.cuda.empty_cache()
    return ProfileLatency.combine(profile, per_shape)


def _available_bytes(device: str) -> int | None:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_profile_fits(profile: DeviceProfile, model_config: Any, *, prompt_tokens: int | None = None) -> None:
    """Refuse, before a study starts, a profile whose inputs the model cannot take or memory cannot hold.

    ``model_config`` is the teacher's Hugging Face config. A generation workload's prompt and new
    tokens must fit the model's positions together; for task inputs, ``prompt_tokens`` is the
    longest prompt the task gives (``task.max_length``; at least one token when not given). The
    memory estimate is a floor: one layer's hidden states, FFN activations and attention scores at
    a time, and a generation workload's key/value cache at its full context.
    """
    adapter = adapter_for_config(model_config)
    max_pos = adapter.max_tokens(model_config)
    arch = adapter.config_info(model_config)
    heads, hidden, inter = arch.num_heads, arch.hidden_size, arch.intermediate_size
    new = profile.new_tokens
    for b, s in profile.shapes:
        if max_pos is not None and s + new > max_pos:
            if profile.generates:
                raise LatencyError(f"profile '{profile.name}': {s} prompt + {new} new tokens exceed the model's "
                                   f"{max_pos} positions; lower seq_len or new_tokens")
            raise LatencyError(
                f"profile '{profile.name}' has seq_len {s}, but the model takes at most {max_pos} tokens; "
                "lower the profile's seq_len"
            )
    if profile.generates and profile.task_inputs and max_pos is not None:
        longest = prompt_tokens or 1
        if longest + new > max_pos:
            raise LatencyError(f"profile '{profile.name}': the task's prompts (up to {longest} tokens) + {new} new "
                               f"tokens exceed the model's {max_pos} positions; lower task.max_length or new_tokens")
    if profile.predicted or profile.task_inputs:  # the task's examples are within task.max_length, checked apart
        return
    head_size = arch.head_size or hidden // max(heads, 1)

    def floor(b: int, s: int) -> int:
        kv = 4 * 2 * arch.num_layers * arch.num_kv_heads * head_size * b * (s + new) if new else 0
        return 4 * b * s * (4 * hidden + inter) + 4 * 2 * b * heads * s * s + kv

    b, s = max(profile.shapes, key=lambda x: floor(*x))
    need = floor(b, s)
    have = _available_bytes(profile.device)
    if have is not None and need > 0.8 * have:
        tokens = f" + {new} new tokens" if new else ""
        what = "activations and the key/value cache" if new else "activations"
        raise LatencyError(
            f"profile '{profile.name}': batch {b} × {s} tokens{tokens} needs at least {need / 2**30:.1f} GiB for "
            f"{what} but {have / 2**30:.1f} GiB are free on {profile.device}; lower batch_size or seq_len"
            + (" or new_tokens" if new else "")
        )
