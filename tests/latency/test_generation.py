"""Generation workloads: time to first token and per output token, interleaved with the baseline,
greedy decoding as generate runs it, and the key/value cache's bytes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pytest
import torch

from autocompress.errors import LatencyError
from autocompress.latency.generation import (
    GreedyDecoder,
    greedy_tokens,
    kv_cache_bytes,
    measure_generation,
    measure_generation_workload,
)
from autocompress.latency.inputs import TaskInputs, Workload
from autocompress.latency.measure import check_profile_fits, measure_profile
from autocompress.ops import apply_plan
from autocompress.schema.plan import CompressionPlan
from autocompress.schema.profile import DeviceProfile, resolve_profile
from autocompress.store.facts import LatencyFigures
from conftest import FakeTime as SharedFakeTime

VOCAB = 97


class FakeTime(SharedFakeTime):
    """The shared fake clock, whose models have two phases: a prefill and a decoding step."""

    def model(self, name: str, prefill: Iterable[float], step: Iterable[float]) -> tuple[Callable[[], None], ...]:  # type: ignore[override]
        """A (prefill, step) pair: the prefill records ``name``, each step ``name`` in lower case."""
        return super().model(name, prefill), super().model(name.lower(), step)


def _profile(**kw) -> DeviceProfile:
    base = dict(name="chat", threads=1, seq_len=8, new_tokens=5, warmup=2, repeats=4, max_repeats=32, max_spread=0.1)
    return DeviceProfile(**{**base, **kw})


def test_steady_fake_models_give_exact_phase_figures_and_ratios() -> None:
    t = FakeTime()
    # baseline: a 10 ms prompt pass, then 2 ms a token; candidate: 5 ms, then 1.5 ms; 5 new tokens = 4 steps
    result = measure_generation(t.model("A", [0.010], [0.002]), t.model("B", [0.005], [0.0015]), _profile(),
                                clock=t, lock=False)
    assert result.ttft.baseline_ms == pytest.approx(10.0) and result.ttft.candidate_ms == pytest.approx(5.0)
    assert result.tpot.baseline_ms == pytest.approx(2.0) and result.tpot.candidate_ms == pytest.approx(1.5)
    assert result.ttft.ratio == pytest.approx(0.5) and result.tpot.ratio == pytest.approx(0.75)
    # the study's figure is the whole request: time to first token + 4 more tokens
    assert result.end_to_end.baseline_ms == pytest.approx(18.0)
    assert result.end_to_end.candidate_ms == pytest.approx(11.0)
    assert result.ratio == pytest.approx(11 / 18)
    assert result.ttft.ratio_ci_low == pytest.approx(0.5) and result.tpot.ratio_ci_high == pytest.approx(0.75)
    assert result.end_to_end.rounds == 4 and not result.end_to_end.noisy
    d = result.to_dict()
    assert d["ratio"] == pytest.approx(11 / 18) and d["new_tokens"] == 5
    assert d["ttft_ms"] == pytest.approx(5.0) and d["baseline_tpot_ms"] == pytest.approx(2.0)
    assert d["tpot_ratio_q1"] == pytest.approx(0.75) and d["ttft_ratio_ci_high"] == pytest.approx(0.5)


def test_each_round_runs_a_whole_request_per_model_in_abba_order() -> None:
    t = FakeTime()
    measure_generation(t.model("A", [0.010], [0.002]), t.model("B", [0.005], [0.001]),
                       _profile(new_tokens=3, warmup=1, repeats=4), clock=t, lock=False)
    requests = ["".join(t.calls[i:i + 3]) for i in range(0, len(t.calls), 3)]  # a prefill and 2 steps each
    assert requests[:2] == ["Aaa", "Bbb"]  # warm-up
    assert requests[2:] == ["Aaa", "Bbb", "Bbb", "Aaa", "Aaa", "Bbb", "Bbb", "Aaa"]


def test_a_noisy_request_time_measures_up_to_max_repeats_and_is_flagged() -> None:
    t = FakeTime()
    # the candidate's prompt pass alternates 2 ms / 18 ms; its decoding is steady
    result = measure_generation(t.model("A", [0.010], [0.002]), t.model("B", [0.002, 0.018], [0.001]),
                                _profile(repeats=4, max_repeats=20), clock=t, lock=False)
    assert result.end_to_end.rounds == 20 and result.end_to_end.noisy
    assert result.tpot.ratio == pytest.approx(0.5) and result.tpot.ratio_ci_low == pytest.approx(0.5)
    assert result.ttft.ratio_ci_low == pytest.approx(0.2) and result.ttft.ratio_ci_high == pytest.approx(1.8)
    assert result.ttft.ratio_q1 < result.ttft.ratio_q3


def test_noise_that_settles_stops_before_max_repeats() -> None:
    t = FakeTime()
    # noisy only during the first timed rounds (after 2 warm-up requests), steady afterwards
    candidate = t.model("B", [0.005, 0.005] + [0.015, 0.005] * 2 + [0.005] * 100, [0.001])
    result = measure_generation(t.model("A", [0.010], [0.002]), candidate, _profile(repeats=4, max_repeats=64),
                                clock=t, lock=False)
    assert 4 < result.end_to_end.rounds < 64 and not result.end_to_end.noisy
    assert result.ttft.ratio == pytest.approx(0.5) and result.tpot.ratio == pytest.approx(0.5)


def test_drift_shared_by_both_models_cancels_in_every_ratio() -> None:
    t = FakeTime()
    slower = [1 + 0.05 * i for i in range(400)]  # the machine slows down request after request
    a = t.model("A", [0.010 * s for s in slower], [0.002 * s for s in slower for _ in range(4)])
    b = t.model("B", [0.006 * s for s in slower], [0.001 * s for s in slower for _ in range(4)])
    result = measure_generation(a, b, _profile(warmup=0, repeats=6), clock=t, lock=False)
    assert result.ttft.ratio == pytest.approx(0.6) and result.tpot.ratio == pytest.approx(0.5)
    assert result.end_to_end.baseline_iqr_ms > 1.0 and not result.end_to_end.noisy


def test_a_cuda_profile_reads_the_clock_only_after_synchronising(monkeypatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("sync"))
    clock = FakeTime()

    def read() -> float:
        events.append("clock")
        clock.now += 0.001
        return clock()

    model = _llama()
    prompt = [{"input_ids": torch.randint(3, VOCAB, (1, 6)), "attention_mask": torch.ones(1, 6, dtype=torch.long)}]
    profile = _profile(device="cuda", new_tokens=3, warmup=0, repeats=3, max_repeats=3)
    measure_generation(model, model, profile, prompt, clock=read, lock=False)
    # each request: clock, prefill, sync, clock, 2 steps, sync, clock
    assert events == ["clock", "sync", "clock", "sync", "clock"] * 6


def test_models_need_prompts_and_a_profile_that_generates() -> None:
    with pytest.raises(ValueError, match="prompts are required"):
        measure_generation(_llama(), _llama(), _profile(), lock=False)
    t = FakeTime()
    with pytest.raises(ValueError, match="generates no tokens"):
        measure_generation(t.model("A", [1], [1]), t.model("B", [1], [1]), _profile(new_tokens=0), lock=False)


# --- tiny real decoders ---------------------------------------------------------------------------


def _llama(layers: int = 2, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)
    model = LlamaForCausalLM(LlamaConfig(**{**cfg, **kw})).eval()
    model.generation_config.eos_token_id = None  # generate stops at no token: it makes as many as the timed loop
    return model


def _gpt2(layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=64,
                                       bos_token_id=1, eos_token_id=2, initializer_range=0.2)).eval()
    model.generation_config.eos_token_id = None
    return model


def _mistral(window: int):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                            sliding_window=window)).eval()


DECODERS = {"llama": _llama, "gpt2": _gpt2}


def _prompt(batch: int, tokens: int, seed: int = 1) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (batch, tokens), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("family", DECODERS)
def test_the_timed_loop_generates_what_generate_generates(family) -> None:
    model = DECODERS[family]()
    prompt = _prompt(2, 7)
    with torch.inference_mode():
        expected = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)[:, 7:]
    ours = greedy_tokens(model, prompt, 6)
    assert ours.shape == (2, 6)
    assert torch.equal(ours, expected)


def _cache_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("family", DECODERS)
def test_kv_cache_bytes_are_the_bytes_the_cache_holds(family) -> None:
    model = DECODERS[family]()
    decoder = GreedyDecoder(model, _prompt(3, 9))
    with torch.inference_mode():
        decoder.prefill()
        assert _cache_bytes(decoder.cache) == kv_cache_bytes(model, 9, batch_size=3)
        for _ in range(4):
            decoder.step()
    assert _cache_bytes(decoder.cache) == kv_cache_bytes(model, 13, batch_size=3)


def test_kv_cache_bytes_follow_dropped_layers_fewer_kv_groups_and_the_dtype() -> None:
    model = _llama(layers=3)
    full = kv_cache_bytes(model, 10)
    assert full == 3 * 2 * (2 * 8) * 10 * 4  # layers × (k, v) × kv heads × head size × tokens × fp32
    fewer = apply_plan(model, CompressionPlan.uniform(3, keep=[0, 2], heads=0.5, kv=0.5))
    assert kv_cache_bytes(fewer, 10) == 2 * 2 * 8 * 10 * 4
    half = _llama().to(torch.bfloat16)
    decoder = GreedyDecoder(half, _prompt(1, 5))
    with torch.inference_mode():
        decoder.prefill()
        decoder.step()
    assert kv_cache_bytes(half, 6) == _cache_bytes(decoder.cache) == 2 * 2 * 16 * 6 * 2
    for m in (fewer, model):
        decoder = GreedyDecoder(m, _prompt(2, 5))
        with torch.inference_mode():
            decoder.prefill()
            decoder.step()
        assert _cache_bytes(decoder.cache) == kv_cache_bytes(m, 6, batch_size=2)


def test_a_sliding_window_layer_counts_the_tokens_it_keeps() -> None:
    model = _mistral(window=4)
    decoder = GreedyDecoder(model, _prompt(1, 9))
    with torch.inference_mode():
        decoder.prefill()
        decoder.step()
    assert _cache_bytes(decoder.cache) == kv_cache_bytes(model, 10) < kv_cache_bytes(_llama(), 10)


@pytest.mark.parametrize("family", DECODERS)
def test_a_real_generation_workload_is_measured_end_to_end(family) -> None:
    teacher = DECODERS[family](layers=2)
    student = apply_plan(teacher, CompressionPlan.uniform(2, keep=[0]))
    profile = _profile(new_tokens=3, warmup=1, repeats=3, max_repeats=4)
    lat = measure_profile(teacher, student, profile, vocab_size=VOCAB, lock=False)
    d = lat.to_dict()
    assert lat.kind == "measured" and 3 <= d["rounds"] <= 4
    assert lat.ratio > 0 and lat.candidate_ms > 0 and lat.baseline_ms > 0
    for key in ("ttft_ms", "baseline_ttft_ms", "tpot_ms", "baseline_tpot_ms"):
        assert d[key] > 0, key
    assert d["ttft_speedup"] == pytest.approx(1 / d["ttft_ratio"])
    assert d["tpot_speedup"] == pytest.approx(1 / d["tpot_ratio"])
    low, high = d["tpot_ratio_ci"]
    assert low <= d["tpot_ratio"] <= high
    # a request is its first token and two more: the end-to-end medians are close to that sum
    assert lat.baseline_ms == pytest.approx(d["baseline_ttft_ms"] + 2 * d["baseline_tpot_ms"], rel=0.5)
    assert d["new_tokens"] == 3 and d["prompt_tokens"] == 8
    assert d["baseline_kv_cache_bytes"] == kv_cache_bytes(teacher, 8 + 3)
    assert d["kv_cache_bytes"] == kv_cache_bytes(student, 8 + 3) == d["baseline_kv_cache_bytes"] // 2
    (shape,) = d["shapes"]
    assert shape["seq_len"] == 8 and shape["ttft_ratio_ci_low"] <= shape["ttft_ratio"] <= shape["ttft_ratio_ci_high"]
    # the trial record reads every figure by name and writes it back unchanged
    stored = json.loads(json.dumps(d))
    figures = LatencyFigures.from_dict(stored)
    assert not figures.model_extra and not figures.shapes[0].model_extra
    assert figures.to_dict() == stored and figures.tpot_speedup == pytest.approx(d["tpot_speedup"])


def test_task_prompts_are_timed_and_the_cache_counted_at_the_longest() -> None:
    model = _llama()
    prompts = [_prompt(1, n, seed=n) for n in (3, 5, 9, 12)]
    task = TaskInputs(inputs=tuple(prompts), lengths=(3, 5, 9, 12))
    profile = DeviceProfile(name="chat-task", threads=1, inputs="task", task_samples=4, new_tokens=3, warmup=0,
                            repeats=3, max_repeats=3)
    lat = measure_profile(model, model, profile, vocab_size=VOCAB, task=task, lock=False)
    (shape,) = lat.shapes
    assert shape["inputs"] == "task" and shape["lengths"] == [3, 5, 9, 12]
    assert shape["prompt_tokens"] == 12 and shape["kv_cache_bytes"] == kv_cache_bytes(model, 12 + 3)


def test_a_prompt_and_its_new_tokens_must_fit_the_models_positions() -> None:
    from transformers import GPT2Config

    chat = resolve_profile("cpu-2t-chat")  # 128 prompt + 64 new tokens
    check_profile_fits(chat, GPT2Config(n_positions=192, n_embd=32, n_layer=2, n_head=4))  # fits exactly
    with pytest.raises(LatencyError) as info:
        check_profile_fits(chat, GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=4))
    assert str(info.value) == ("profile 'cpu-2t-chat': 128 prompt + 64 new tokens exceed the model's 128 positions; "
                               "lower seq_len or new_tokens")
    task = DeviceProfile(name="chat-task", inputs="task", new_tokens=40)
    check_profile_fits(task, GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4), prompt_tokens=24)
    with pytest.raises(LatencyError, match="prompts \\(up to 32 tokens\\) \\+ 40 new tokens exceed .* 64 positions"):
        check_profile_fits(task, GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4), prompt_tokens=32)
    # the sample actually timed is checked too
    long = Workload(1, None, (_prompt(1, 60),), {"inputs": "task"})
    with pytest.raises(LatencyError, match="longest sampled prompt \\(60 tokens\\) \\+ 5 new tokens exceed the "
                                           "model's 64 positions; lower task.max_length or new_tokens"):
        measure_generation_workload(_llama(), _llama(), _profile(), long, lock=False)


def test_out_of_memory_while_generating_names_new_tokens(monkeypatch) -> None:
    from autocompress.latency import generation

    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(generation, "measure_generation", oom)
    with pytest.raises(LatencyError, match="batch 1 × 8 tokens and 5 new tokens does not fit in memory.*"
                                           "lower batch_size, seq_len or new_tokens of profile 'chat'"):
        measure_profile(_llama(), _llama(), _profile(), vocab_size=VOCAB, lock=False)
