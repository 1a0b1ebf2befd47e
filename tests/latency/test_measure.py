"""The measuring protocol: interleaved ABBA rounds, ratio statistics, more rounds when noisy."""

from __future__ import annotations

import random

import fcntl

import pytest
import torch
from conftest import tiny_bert

from autocompress.errors import LatencyError
from autocompress.latency import DeviceProfile, measure, measure_pair
from autocompress.latency.measure import (
    ProfileLatency,
    median_interval,
    check_profile_fits,
    example_inputs,
    host_info,
    measure_profile,
    measurement_lock,
)
from autocompress.schema.profile import resolve_profile
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan
from conftest import FakeTime


def _profile(**kw) -> DeviceProfile:
    base = dict(name="fake", threads=1, warmup=2, repeats=4, max_repeats=32, max_spread=0.1)
    return DeviceProfile(**{**base, **kw})


def test_steady_fake_models_give_exact_ratio_and_speedup() -> None:
    t = FakeTime()
    result = measure_pair(t.model("A", [0.010]), t.model("B", [0.005]), _profile(), clock=t, lock=False)
    assert result.ratio == pytest.approx(0.5)
    assert result.speedup == pytest.approx(2.0)
    assert result.baseline_ms == pytest.approx(10.0)
    assert result.candidate_ms == pytest.approx(5.0)
    assert result.candidate_iqr_ms == pytest.approx(0.0, abs=1e-9)
    assert result.rounds == 4  # spread is zero: no extra rounds
    assert not result.noisy
    assert result.profile == "fake"
    assert t.calls.count("A") == t.calls.count("B") == 2 + 4  # warm-up + timed


def test_rounds_are_interleaved_in_abba_order_after_warmup() -> None:
    t = FakeTime()
    measure_pair(t.model("A", [0.010]), t.model("B", [0.005]), _profile(warmup=3, repeats=6), clock=t, lock=False)
    warmup, timed = t.calls[:6], t.calls[6:]
    assert warmup == ["A", "B"] * 3
    assert "".join(timed) == "AB" + "BA" + "AB" + "BA" + "AB" + "BA"


def test_noisy_ratio_measures_up_to_max_repeats_and_is_flagged() -> None:
    t = FakeTime()
    # the candidate alternates 5 ms / 15 ms: ratio 0.5 or 1.5 every other round, never settling
    result = measure_pair(
        t.model("A", [0.010]), t.model("B", [0.005, 0.015]), _profile(repeats=4, max_repeats=20), clock=t, lock=False
    )
    assert result.rounds == 20
    assert result.noisy
    assert result.ratio_q1 < result.ratio < result.ratio_q3
    assert t.calls.count("B") == 2 + 20


def test_noise_that_settles_stops_before_max_repeats() -> None:
    t = FakeTime()
    # noisy only during the first timed rounds, steady afterwards
    candidate = t.model("B", [0.005, 0.005] + [0.015, 0.005] * 2 + [0.005] * 100)
    result = measure_pair(t.model("A", [0.010]), candidate, _profile(repeats=4, max_repeats=64), clock=t, lock=False)
    assert 4 < result.rounds < 64
    assert not result.noisy
    assert result.ratio == pytest.approx(0.5)


def test_a_steady_spread_stops_once_the_median_is_known_well_enough() -> None:
    t = FakeTime()
    # every round's ratio is 0.45, 0.5 or 0.55: one round's spread (IQR 20 % of the median) never
    # shrinks, but the median's interval does as rounds accumulate
    candidate = t.model("B", [0.0045, 0.005, 0.0055])
    result = measure_pair(t.model("A", [0.010]), candidate, _profile(repeats=6, max_repeats=200, max_spread=0.02),
                          clock=t, lock=False)
    assert 6 < result.rounds < 60
    assert not result.noisy
    assert result.ratio == pytest.approx(0.5)
    assert result.ratio_ci_low == pytest.approx(0.5) and result.ratio_ci_high == pytest.approx(0.5)


def test_median_interval_covers_the_median_and_narrows_with_more_rounds() -> None:
    rng = random.Random(0)
    few = [rng.gauss(1.0, 0.1) for _ in range(30)]
    many = few + [rng.gauss(1.0, 0.1) for _ in range(270)]
    lo_few, hi_few = median_interval(few)
    lo_many, hi_many = median_interval(many)
    assert lo_few <= sorted(few)[15] <= hi_few
    assert hi_many - lo_many < (hi_few - lo_few) / 2  # ~1/sqrt(10) as wide
    assert lo_many < 1.0 < hi_many


def test_drift_shared_by_both_models_cancels_in_the_ratio() -> None:
    t = FakeTime()
    # the machine slows down round after round; the candidate always takes 60 % of the baseline
    durations = [0.010 * (1 + 0.05 * i) for i in range(200)]
    a = t.model("A", durations)
    b = t.model("B", [0.6 * d for d in durations])
    result = measure_pair(a, b, _profile(warmup=0, repeats=6, max_repeats=48), clock=t, lock=False)
    assert result.baseline_iqr_ms > 1.0  # absolute latency drifted a lot...
    assert result.ratio == pytest.approx(0.6)  # ...the per-round ratio did not
    assert result.rounds == 6 and not result.noisy


def test_threads_are_restored_after_measuring() -> None:
    before = torch.get_num_threads()
    t = FakeTime()
    measure_pair(t.model("A", [0.01]), t.model("B", [0.01]), _profile(threads=1), clock=t, lock=False)
    assert torch.get_num_threads() == before


def test_modules_need_inputs() -> None:
    with pytest.raises(ValueError, match="inputs"):
        measure_pair(tiny_bert(layers=1), tiny_bert(layers=1), _profile(), lock=False)


def test_real_tiny_models_are_measured() -> None:
    profile = DeviceProfile(name="test", threads=1, batch_size=2, seq_len=16, warmup=1, repeats=3, max_repeats=6)
    teacher = tiny_bert(layers=4)
    student = apply_plan(teacher, CompressionPlan.uniform(4, keep=[0, 2]))
    inputs = example_inputs(2, 16, teacher.config.vocab_size)
    assert inputs["input_ids"].shape == (2, 16)
    result = measure_pair(teacher, student, profile, inputs=inputs, lock=False)
    assert result.baseline_ms > 0 and result.candidate_ms > 0
    assert 3 <= result.rounds <= 6
    assert result.ratio > 0 and result.speedup == pytest.approx(1 / result.ratio)
    assert set(result.to_dict()) >= {"ratio", "rounds", "noisy", "profile", "candidate_ms", "baseline_ms"}


def test_measurement_lock_is_exclusive_while_held(tmp_path) -> None:
    path = tmp_path / "lock"
    with measurement_lock(path):
        with open(path) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(path) as other:  # released afterwards
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)


# --- per-profile latency: several shapes, memory checks, out-of-memory advice ---------------------


def _shape(ratio: float, cand: float, base: float, **kw) -> dict:
    return {"ratio": ratio, "candidate_ms": cand, "baseline_ms": base, **kw}


def test_several_shapes_combine_by_geometric_mean() -> None:
    profile = DeviceProfile(name="two", batch_size=[1, 8], seq_len=16, threads=1)
    lat = ProfileLatency.combine(
        profile,
        [(1, 16, _shape(0.25, 2.0, 8.0, rounds=4)), (8, 16, _shape(1.0, 8.0, 8.0, rounds=6, noisy=True))],
    )
    assert lat.ratio == pytest.approx(0.5)  # sqrt(0.25 · 1.0), not the arithmetic mean 0.625
    assert lat.speedup == pytest.approx(2.0)
    assert lat.candidate_ms == pytest.approx(4.0) and lat.baseline_ms == pytest.approx(8.0)
    assert lat.noisy, "one noisy shape makes the profile's figure noisy"
    assert [(s["batch_size"], s["seq_len"]) for s in lat.shapes] == [(1, 16), (8, 16)]
    d = lat.to_dict()
    assert d["kind"] == "measured" and d["profile"] == "two"
    assert d["speedup"] == pytest.approx(2.0)
    assert d["rounds"] == 10
    assert "candidate_iqr_ms" not in d, "a spread over different shapes means nothing"


def test_one_measured_shape_keeps_its_spread_and_rounds() -> None:
    profile = DeviceProfile(name="one", seq_len=16, threads=1)
    shape = _shape(0.5, 4.0, 8.0, rounds=5, candidate_iqr_ms=0.3, ratio_q1=0.45, ratio_q3=0.55)
    d = ProfileLatency.combine(profile, [(1, 16, shape)]).to_dict()
    assert d["ratio"] == pytest.approx(0.5) and d["rounds"] == 5
    assert d["candidate_iqr_ms"] == 0.3 and d["ratio_iqr"] == [0.45, 0.55]
    assert d["shapes"] == [{"batch_size": 1, "seq_len": 16, **shape}]


def _generation_shape(ratio: float, ttft: float, tpot: float, kv: int, prompt: int) -> dict:
    return _shape(ratio, 10 * ratio, 10.0, rounds=4, ttft_ms=ttft, baseline_ttft_ms=2 * ttft, ttft_ratio=0.5,
                  ttft_ratio_ci_low=0.45, ttft_ratio_ci_high=0.55, tpot_ms=tpot, baseline_tpot_ms=tpot / 0.8,
                  tpot_ratio=0.8, tpot_ratio_ci_low=0.7, tpot_ratio_ci_high=0.9, new_tokens=16, prompt_tokens=prompt,
                  kv_cache_bytes=kv, baseline_kv_cache_bytes=2 * kv)


def test_a_generation_profile_keeps_its_split_beside_the_end_to_end_ratio() -> None:
    profile = DeviceProfile(name="chat", seq_len=[32, 64], new_tokens=16, threads=1)
    lat = ProfileLatency.combine(profile, [(1, 32, _generation_shape(0.5, 4.0, 1.0, 1000, 32)),
                                           (1, 64, _generation_shape(0.8, 16.0, 4.0, 3000, 64))])
    d = lat.to_dict()
    assert d["ratio"] == pytest.approx(0.4**0.5)  # the whole request's, as any profile's ratio
    assert d["ttft_ms"] == pytest.approx(8.0) and d["baseline_tpot_ms"] == pytest.approx(2.0 / 0.8)  # geometric means
    assert d["ttft_ratio"] == pytest.approx(0.5) and d["ttft_speedup"] == pytest.approx(2.0)
    assert d["tpot_speedup"] == pytest.approx(1.25)
    assert "ttft_ratio_ci" not in d, "an interval over different shapes means nothing"
    # the memory a profile needs is its largest cache, at its longest prompt
    assert (d["kv_cache_bytes"], d["baseline_kv_cache_bytes"], d["prompt_tokens"], d["new_tokens"]) == (3000, 6000, 64, 16)
    one = ProfileLatency.combine(profile.model_copy(update={"seq_len": 32}), [(1, 32, _generation_shape(0.5, 4.0, 1.0, 1000, 32))])
    assert one.to_dict()["ttft_ratio_ci"] == [0.45, 0.55] and one.to_dict()["tpot_ratio_ci"] == [0.7, 0.9]
    plain = ProfileLatency.combine(DeviceProfile(name="plain", seq_len=32, threads=1), [(1, 32, _shape(0.5, 5.0, 10.0))])
    assert "ttft_ratio" not in plain.to_dict() and "new_tokens" not in plain.to_dict()


def test_a_generation_workload_is_timed_in_pytorch_only() -> None:
    from autocompress.latency.inputs import Workload

    w = Workload(1, 8, (example_inputs(1, 8, 30),), {})
    with pytest.raises(ValueError, match="generates tokens, timed in PyTorch here"):
        measure.measure_workload(None, None, DeviceProfile(name="chat", new_tokens=4), w, lock=False,
                                 call=lambda model, inputs: lambda: None)


def test_predicted_figures_carry_no_rounds() -> None:
    profile = DeviceProfile.model_validate(
        {"name": "far", "kind": "predicted", "spec": {
            "cpu": "x", "cores": 1, "clock_ghz": 1.0, "fp32_gflops_per_core": 1.0, "int8_gops_per_core": 1.0,
            "memory_gbs": 1.0, "sources": ["s"]}}
    )
    d = ProfileLatency.combine(profile, [(1, 128, _shape(0.8, 8.0, 10.0))]).to_dict()
    assert d["kind"] == "predicted"
    assert "rounds" not in d and "candidate_iqr_ms" not in d


def test_measure_profile_times_every_shape_of_real_models() -> None:
    profile = DeviceProfile(name="multi", threads=1, batch_size=[1, 2], seq_len=8, warmup=1, repeats=3, max_repeats=3)
    teacher = tiny_bert(layers=2)
    student = apply_plan(teacher, CompressionPlan.uniform(2, keep=[0]))
    lat = measure_profile(teacher, student, profile, vocab_size=teacher.config.vocab_size, lock=False)
    assert lat.kind == "measured" and lat.profile == "multi"
    assert [(s["batch_size"], s["seq_len"]) for s in lat.shapes] == [(1, 8), (2, 8)]
    assert all(s["rounds"] == 3 and s["baseline_ms"] > 0 for s in lat.shapes)
    gmean = (lat.shapes[0]["ratio"] * lat.shapes[1]["ratio"]) ** 0.5
    assert lat.ratio == pytest.approx(gmean)


def test_measure_profile_refuses_a_predicted_profile() -> None:
    profile = resolve_profile("rpi4")
    with pytest.raises(ValueError, match="predicted"):
        measure_profile(tiny_bert(layers=1), tiny_bert(layers=1), profile, vocab_size=30, lock=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_profile_without_cuda_is_a_latency_error() -> None:
    with pytest.raises(LatencyError, match="no CUDA device"):
        measure_profile(tiny_bert(layers=1), tiny_bert(layers=1), resolve_profile("gpu"), vocab_size=30, lock=False)


def test_out_of_memory_becomes_a_latency_error_with_advice(monkeypatch) -> None:
    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(measure, "measure_pair", oom)
    profile = DeviceProfile(name="huge", threads=1, batch_size=4, seq_len=8)
    with pytest.raises(LatencyError) as info:
        measure_profile(tiny_bert(layers=1), tiny_bert(layers=1), profile, vocab_size=30, lock=False)
    message = str(info.value)
    assert "batch 4 × 8 tokens" in message and "does not fit in memory" in message
    assert "lower batch_size or seq_len" in message and "'huge'" in message


def test_other_runtime_errors_are_not_disguised_as_memory_errors(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(measure, "measure_pair", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        measure_profile(tiny_bert(layers=1), tiny_bert(layers=1), DeviceProfile(threads=1, seq_len=8),
                        vocab_size=30, lock=False)


def test_profile_longer_than_the_model_takes_is_refused_before_a_study() -> None:
    cfg = tiny_bert(layers=1).config  # max_position_embeddings 128
    check_profile_fits(DeviceProfile(name="ok", seq_len=[64, 128]), cfg)  # fits: no error
    with pytest.raises(LatencyError, match="seq_len 256.*at most 128 tokens"):
        check_profile_fits(DeviceProfile(name="long", seq_len=[64, 256]), cfg)
    far = resolve_profile("rpi4").model_copy(update={"seq_len": 512})
    with pytest.raises(LatencyError, match="at most 128"):
        check_profile_fits(far, cfg)  # a predicted profile cannot feed the model more tokens either


def test_absurd_batch_is_refused_with_the_memory_it_needs() -> None:
    from transformers import BertConfig

    cfg = BertConfig(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512)
    profile = DeviceProfile(name="absurd", batch_size=65_536, seq_len=512)
    with pytest.raises(LatencyError) as info:
        check_profile_fits(profile, cfg)
    assert "GiB" in str(info.value) and "'absurd'" in str(info.value)
    assert "lower batch_size or seq_len" in str(info.value)


def test_host_info_names_the_machine_and_library_versions() -> None:
    import optuna
    import transformers

    info = host_info()
    assert info["torch"] == torch.__version__
    assert info["transformers"] == transformers.__version__
    assert info["optuna"] == optuna.__version__
    assert info["cores"] >= 1 and info["cpu"] and info["python"]


def test_measurement_waits_for_local_computation_and_blocks_new_computation(tmp_path) -> None:
    import threading
    import time

    from autocompress.latency.measure import compute_lock

    lock = tmp_path / "host.lock"
    events: list[str] = []
    held = []  # keeps the thread's lock alive after the thread ends

    def measure() -> None:
        cm = measurement_lock(lock)
        cm.__enter__()
        held.append(cm)
        events.append("measuring")

    with compute_lock(lock):  # another worker is training
        t = threading.Thread(target=measure)
        t.start()
        time.sleep(0.3)
        assert events == []  # the measurement waits for the computation to end
        events.append("training done")
    t.join(timeout=5)
    assert events == ["training done", "measuring"]
    # while it measures (the thread still holds the lock), new computation waits
    started = threading.Event()
    t2 = threading.Thread(target=lambda: (held.append(compute_lock(lock)), held[-1].__enter__(), started.set()))
    t2.start()
    assert not started.wait(0.3)
    held[0].__exit__(None, None, None)  # measurement done: the computation goes ahead
    assert started.wait(5)
