"""Generation workloads: the latency a chat user feels, time to first token and time per output token.

A request is a prompt, then ``profile.new_tokens`` (n) tokens generated greedily with the key/value
cache, as ``model.generate(max_new_tokens=n, do_sample=False)`` makes them: one pass over the
prompt (the *prefill*; it gives the first token, so its time is the time to first token, TTFT),
then n - 1 decoding steps of one token each (their mean is the time per output token, TPOT). A
user feels both, the wait before text appears and the speed it streams at, and a compression that
halves one may leave the other unchanged: pruning FFN neurons shortens the prefill's matrix
products, weight-only int4 mostly the decoding steps, which read every weight once per token.

:func:`measure_generation` times candidate against baseline with the protocol of
:mod:`autocompress.latency.measure` (warm-up, ABBA rounds, more rounds until the median end-to-end
ratio is known within the profile's spread). Each round times the prefill and the decoding apart,
so the per-round ratios of TTFT, TPOT and the whole request (TTFT + (n - 1)·TPOT) each get their
median, quartiles and 95 % interval. :func:`kv_cache_bytes` is the memory the cache holds at a
context: what decides how many conversations fit on a device.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.errors import LatencyError, ModelError
from autocompress.latency.inputs import Workload
from autocompress.latency.measure import (
    GENERATION,
    Clock,
    LatencyResult,
    Phases,
    RatioStats,
    interleaved_rounds,
)
from autocompress.models.adapters import adapter_for
from autocompress.schema.profile import DeviceProfile

__all__ = [
    "GenerationModel",
    "GenerationResult",
    "GreedyDecoder",
    "PhaseLatency",
    "greedy_tokens",
    "kv_cache_bytes",
    "measure_generation",
    "measure_generation_workload",
]

#: a causal LM, or (for tests with a fake clock) a pair of zero-argument callables: the prefill, one decoding step
GenerationModel = nn.Module | tuple[Callable[[], Any], Callable[[], Any]]


class GreedyDecoder:
    """One request to a causal LM, run as ``generate(do_sample=False)`` runs it: :meth:`prefill`
    passes the prompt and picks the first token; each :meth:`step` passes the last token with the
    key/value cache and a mask one longer, and picks the next (the argmax of the last logits).

    Like ``generate``, only the last position's logits are computed where the model's forward
    takes ``logits_to_keep``. Call it under ``torch.inference_mode()``.
    """

    def __init__(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
        params = inspect.signature(model.forward).parameters
        self.model = model
        self.ids = inputs["input_ids"]
        self.mask = inputs.get("attention_mask", torch.ones_like(self.ids))
        self.cache: Any = None  # the key/value cache, once the prompt has passed
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers renamed it in 5.x
        self._extra: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._tokens: list[torch.Tensor] = []

    def prefill(self) -> None:
        """Pass the prompt, fill the cache and pick the first new token."""
        self._take(self.model(input_ids=self.ids, attention_mask=self.mask, use_cache=True, **self._extra))

    def step(self) -> None:
        """Pass the last token with the cache and pick the next."""
        if not self._tokens:
            raise RuntimeError("prefill the prompt before decoding")
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
        out = self.model(input_ids=self._tokens[-1], attention_mask=self.mask, use_cache=True,
                         **{self._cache_arg: self.cache}, **self._extra)
        self._take(out)

    def _take(self, out: Any) -> None:
        self.cache = out["cache"] if "cache" in out else out["past_key_values"]
        self._tokens.append(out.logits[:, -1, :].argmax(dim=-1, keepdim=True))

    @property
    def tokens(self) -> torch.Tensor:
        """The new tokens so far, ``(batch, count)``."""
        return torch.cat(self._tokens, dim=-1)


def greedy_tokens(model: nn.Module, inputs: dict[str, torch.Tensor], new_tokens: int) -> torch.Tensor:
    """The ``new_tokens`` tokens the timed loop generates after the prompt ``inputs``, ``(batch, new_tokens)``."""
    decoder = GreedyDecoder(model, inputs)
    with torch.inference_mode():
        decoder.prefill()
        for _ in range(new_tokens - 1):
            decoder.step()
    return decoder.tokens


def kv_cache_bytes(model: nn.Module, tokens: int, batch_size: int = 1) -> int:
    """The bytes of the key/value cache after ``tokens`` tokens of context, ``batch_size`` sequences:
    over the model's layers, 2 (keys and values) × the layer's cached features
    (``ModelAdapter.kv_features``) × the tokens it keeps × batch × the bytes of the model's float
    dtype. A sliding-window layer keeps only the window's last ``sliding_window - 1`` tokens, as
    transformers' dynamic cache does."""
    adapter = adapter_for(model)
    itemsize = _float_dtype(model).itemsize
    total = 0
    for i, layer in enumerate(adapter.layers(model)):
        total += 2 * adapter.kv_features(layer) * _cached_tokens(model.config, i, tokens) * batch_size * itemsize
    return total


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's hidden states, so of its cache: its first floating-point parameter's
    (the token table's; weight-only Linears return their input's dtype)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    raise ModelError(f"{type(model).__name__} has no floating-point parameter to tell its cache's dtype")


def _cached_tokens(cfg: Any, layer: int, tokens: int) -> int:
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    sliding = types[layer] == "sliding_attention" if types is not None else window is not None
    return min(tokens, int(window) - 1) if sliding and window else tokens


@dataclass(frozen=True)
class PhaseLatency:
    """One phase of a request (time to first token, or per output token): medians over the rounds,
    and the per-round candidate / baseline ratio's median, quartiles and 95 % interval."""

    candidate_ms: float
    baseline_ms: float
    ratio: float
    ratio_q1: float
    ratio_q3: float
    ratio_ci_low: float
    ratio_ci_high: float

    @classmethod
    def of(cls, ta: list[float], tb: list[float]) -> "PhaseLatency":
        """The figures of baseline seconds ``ta`` and candidate seconds ``tb``, one per round."""
        stats = RatioStats.of(_ratios(ta, tb))
        return cls(candidate_ms=statistics.median(tb) * 1e3, baseline_ms=statistics.median(ta) * 1e3,
                   ratio=stats.median, ratio_q1=stats.q1, ratio_q3=stats.q3, ratio_ci_low=stats.ci_low,
                   ratio_ci_high=stats.ci_high)

    def to_dict(self, name: str) -> dict[str, float]:
        """Stored under ``name`` (``ttft``, ``tpot``): ``{name}_ms``, ``baseline_{name}_ms``, ``{name}_ratio``, ..."""
        return {f"{name}_ms": self.candidate_ms, f"baseline_{name}_ms": self.baseline_ms, f"{name}_ratio": self.ratio,
                f"{name}_ratio_q1": self.ratio_q1, f"{name}_ratio_q3": self.ratio_q3,
                f"{name}_ratio_ci_low": self.ratio_ci_low, f"{name}_ratio_ci_high": self.ratio_ci_high}


@dataclass(frozen=True)
class GenerationResult:
    """One interleaved measurement of a generation workload: the whole request (the figure the study
    compares, in :class:`LatencyResult`'s terms: milliseconds per request) and its two phases."""

    end_to_end: LatencyResult
    ttft: PhaseLatency  # time to first token: the prompt's pass
    tpot: PhaseLatency  # time per output token: a decoding step
    new_tokens: int

    @property
    def ratio(self) -> float:
        return self.end_to_end.ratio

    def to_dict(self) -> dict[str, Any]:
        """``LatencyResult.to_dict`` of the whole request, then ``ttft_*`` and ``tpot_*`` and ``new_tokens``."""
        return {**self.end_to_end.to_dict(), **self.ttft.to_dict("ttft"), **self.tpot.to_dict("tpot"),
                "new_tokens": self.new_tokens}


def measure_generation(
    baseline: GenerationModel,
    candidate: GenerationModel,
    profile: DeviceProfile,
    prompts: Sequence[dict[str, torch.Tensor]] | None = None,
    *,
    clock: Clock = time.perf_counter,
    lock: bool = True,
) -> GenerationResult:
    """Time ``candidate`` against ``baseline`` generating ``profile.new_tokens`` tokens after each of
    ``prompts`` (on the models' device); each round runs every prompt once per model.

    The figures are per request: the mean over the prompts of a round, then the median over rounds.
    A model given as a (prefill, step) pair of callables runs the prefill once and the step
    ``new_tokens - 1`` times per round. On a CUDA profile the device is synchronised before the
    clock is read.
    """
    n = profile.new_tokens
    if n < 2:
        raise ValueError(f"profile '{profile.name}' generates no tokens (new_tokens {n}); time it with measure_pair")
    sync = profile.device == "cuda"
    count_a, timed_a = _timed_requests(baseline, prompts, n, clock, sync)
    count_b, timed_b = _timed_requests(candidate, prompts, n, clock, sync)
    pa, pb = interleaved_rounds(timed_a, timed_b, profile, lock=lock)
    ttft_a, ttft_b = [p[0] / count_a for p in pa], [p[0] / count_b for p in pb]
    tpot_a, tpot_b = [p[1] / count_a / (n - 1) for p in pa], [p[1] / count_b / (n - 1) for p in pb]
    e2e_a, e2e_b = [sum(p) / count_a for p in pa], [sum(p) / count_b for p in pb]
    stats = RatioStats.of(_ratios(e2e_a, e2e_b))
    end_to_end = LatencyResult.of(e2e_a, e2e_b, stats, noisy=stats.spread > profile.max_spread, profile=profile.name)
    return GenerationResult(end_to_end=end_to_end, ttft=PhaseLatency.of(ttft_a, ttft_b),
                            tpot=PhaseLatency.of(tpot_a, tpot_b), new_tokens=n)


def measure_generation_workload(
    baseline: GenerationModel, candidate: GenerationModel, profile: DeviceProfile, workload: Workload, *,
    lock: bool = True, clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """One generation workload's figures: ``GenerationResult.to_dict``, the longest prompt
    (``prompt_tokens``), the key/value cache's bytes of candidate and baseline at that prompt plus
    the new tokens (``kv_cache_bytes``, ``baseline_kv_cache_bytes``) and the workload's facts.

    Raises :class:`LatencyError` when a prompt and its new tokens exceed a model's positions.
    """
    prompts = [{k: v.to(profile.device) for k, v in x.items()} for x in workload.inputs]
    batch = max(b for b, _ in workload.shapes)
    longest = max(s for _, s in workload.shapes)
    context = longest + profile.new_tokens
    models = [m for m in (baseline, candidate) if isinstance(m, nn.Module)]
    for model in models:
        positions = adapter_for(model).max_tokens(model.config)
        if positions is not None and context > positions:
            what = "the task's longest sampled prompt" if workload.seq_len is None else "the prompt"
            lower = "task.max_length" if workload.seq_len is None else "seq_len"
            raise LatencyError(f"profile '{profile.name}': {what} ({longest} tokens) + {profile.new_tokens} new tokens "
                               f"exceed the model's {positions} positions; lower {lower} or new_tokens")
    result = measure_generation(baseline, candidate, profile, prompts, clock=clock, lock=lock)
    out: dict[str, Any] = {**result.to_dict(), "prompt_tokens": longest}
    if len(models) == 2:
        out["kv_cache_bytes"] = kv_cache_bytes(candidate, context, batch)  # type: ignore[arg-type]
        out["baseline_kv_cache_bytes"] = kv_cache_bytes(baseline, context, batch)  # type: ignore[arg-type]
    return {**out, **workload.facts}


GENERATION.append(measure_generation_workload)


def _timed_requests(model: GenerationModel, prompts: Sequence[dict[str, torch.Tensor]] | None, new_tokens: int,
                    clock: Clock, sync: bool) -> tuple[int, Callable[[], Phases]]:
    """(requests per round, a run of one round returning its prefill and decoding seconds)."""
    if isinstance(model, tuple):
        prefill, step = model

        def pair() -> Phases:
            start = clock()
            prefill()
            first = clock()
            for _ in range(new_tokens - 1):
                step()
            return first - start, clock() - first

        return 1, pair
    if not prompts:
        raise ValueError("prompts are required to time a model generating")
    wait: Callable[[], None] = torch.cuda.synchronize if sync else (lambda: None)

    def requests() -> Phases:
        prefill_s = decode_s = 0.0
        for inputs in prompts:
            decoder = GreedyDecoder(model, inputs)
            start = clock()
            decoder.prefill()
            wait()
            first = clock()
            for _ in range(new_tokens - 1):
                decoder.step()
            wait()
            prefill_s += first - start
            decode_s += clock() - first
        return prefill_s, decode_s

    return len(prompts), requests


def _ratios(ta: list[float], tb: list[float]) -> list[float]:
    ratios = [b / a for a, b in zip(ta, tb) if a > 0]
    if not ratios:
        raise RuntimeError("the clock did not advance while timing the baseline")
    return ratios
