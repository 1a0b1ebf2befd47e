"""The measuring protocol: interleaved ABBA rounds, ratio statistics, more rounds when noisy."""

from __future__ import annotations

import fcntl
import itertools
from collections.abc import Callable, Iterable

import pytest
import torch
from conftest import tiny_bert

from autocompress.latency import DeviceProfile, measure_pair
from autocompress.latency.measure import example_inputs, measurement_lock
from autocompress.plan import CompressionPlan
from autocompress.transforms import apply_plan


class FakeTime:
    """A clock that only moves when a fake model runs; records who ran, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, durations: Iterable[float]) -> Callable[[], None]:
        it = itertools.cycle(durations)

        def run() -> None:
            self.calls.append(name)
            self.now += next(it)

        return run


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
