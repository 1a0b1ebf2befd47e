"""The typed figures a record holds: they read what their producers write and write it back unchanged."""

from __future__ import annotations

import json

import pytest

from autocompress.errors import StorageError
from autocompress.latency.measure import LatencyResult, ProfileLatency, host_info
from autocompress.ops.size import Size
from autocompress.store.facts import (
    Arch,
    ExitsTaken,
    Host,
    HostPrediction,
    LatencyFigures,
    RecoveryFacts,
    ShapeLatency,
    SizeFigures,
    VocabularyFacts,
)


def _shape(ratio: float, q1: float, q3: float, **extra) -> dict:
    r = LatencyResult(candidate_ms=2.0 * ratio, candidate_iqr_ms=0.1, baseline_ms=2.0, baseline_iqr_ms=0.1, ratio=ratio,
                      ratio_q1=q1, ratio_q3=q3, rounds=5, noisy=False, profile="p", ratio_ci_low=q1, ratio_ci_high=q3)
    return {**r.to_dict(), **extra}


def _measured(*shapes: dict) -> ProfileLatency:
    per_shape = [(1, 16 * (i + 1), s) for i, s in enumerate(shapes)]
    return ProfileLatency(profile="p", kind="measured", ratio=0.5, candidate_ms=1.0, baseline_ms=2.0, noisy=False,
                          shapes=tuple({"batch_size": b, "seq_len": n, **d} for b, n, d in per_shape))


ONE_SHAPE = _measured(_shape(0.5, 0.45, 0.55))
TWO_SHAPES = _measured(_shape(0.4, 0.35, 0.45), _shape(0.6, 0.55, 0.65))
PREDICTED = ProfileLatency(profile="rpi4", kind="predicted", ratio=0.8, candidate_ms=8.0, baseline_ms=10.0, noisy=False,
                           shapes=({"batch_size": 1, "seq_len": 128, "ratio": 0.8, "candidate_ms": 8.0, "baseline_ms": 10.0},))
TASK_INPUTS = _measured(_shape(0.5, 0.45, 0.55, inputs="task", lengths=[5, 9, 12], of_examples=80, median_tokens=9.0,
                               p90_tokens=12.0))
ONNX = ProfileLatency(profile="ort", kind="measured", ratio=0.5, candidate_ms=1.0, baseline_ms=2.0, noisy=True,
                      shapes=ONE_SHAPE.shapes, extra={"backend": "onnxruntime", "export_seconds": 3.5, "int8_matmuls": 24})


def _generation(seq_lens: tuple[int, ...] | None) -> ProfileLatency:
    """What ``measure_profile`` makes of a generation workload (its per-shape figures as
    ``measure_generation_workload`` writes them), without timing anything."""
    from autocompress.latency.generation import GenerationResult, PhaseLatency
    from autocompress.latency.measure import RatioStats
    from autocompress.schema.profile import DeviceProfile

    shapes = {"seq_len": seq_lens} if seq_lens else {"inputs": "task"}  # None: the task's sample
    p = DeviceProfile(name="chat", new_tokens=16, **shapes)
    per_shape = []
    for i, s in enumerate(p.shapes or [(1, None)]):
        stats = RatioStats(median=0.6, q1=0.55, q3=0.65, ci_low=0.5, ci_high=0.7)
        e2e = LatencyResult.of([0.020, 0.022, 0.021], [0.012, 0.013, 0.0125], stats, noisy=False, profile="chat")
        result = GenerationResult(end_to_end=e2e, ttft=PhaseLatency.of([0.004] * 3, [0.002 + 0.001 * i] * 3),
                                  tpot=PhaseLatency.of([0.001] * 3, [0.0007] * 3), new_tokens=16)
        longest = s[1] or 12
        per_shape.append((s[0], s[1], {**result.to_dict(), "prompt_tokens": longest, "kv_cache_bytes": 1000 * longest,
                                       "baseline_kv_cache_bytes": 2000 * longest}))
    if p.task_inputs:
        per_shape = [(1, None, {**d, "inputs": "task", "lengths": [5, 9, 12], "of_examples": 80, "median_tokens": 9.0,
                                "p90_tokens": 12.0}) for _, _, d in per_shape]
    return ProfileLatency.combine(p, per_shape)


CHAT = _generation((32,))
CHAT_TWO_SHAPES = _generation((32, 64))
CHAT_TASK = _generation(None)


def _producers() -> list[tuple[type, dict]]:
    """What the producers write, in the shapes they write it (through JSON, as the storage keeps it)."""
    prediction = {"fit_error": 0.1, "host_prediction": {"ratio": 0.55, "speedup": 1 / 0.55, "candidate_ms": 1.1}}
    found = [
        (LatencyFigures, {**ONE_SHAPE.to_dict(), **prediction}),
        (LatencyFigures, TWO_SHAPES.to_dict()),
        (LatencyFigures, {**PREDICTED.to_dict(), "fit_error": 0.1}),
        (LatencyFigures, {**PREDICTED.to_dict(), "tolerance": 0.1}),  # the screen's
        (LatencyFigures, TASK_INPUTS.to_dict()),
        (LatencyFigures, ONNX.to_dict()),
        (LatencyFigures, CHAT.to_dict()),
        (LatencyFigures, CHAT_TWO_SHAPES.to_dict()),
        (LatencyFigures, CHAT_TASK.to_dict()),
        (SizeFigures, Size(params=10, serialized_bytes=900, effective_bytes=800).to_dict()),
        (SizeFigures, Size(params=10, serialized_bytes=900, effective_bytes=800, split={"embeddings": 300, "layers": 400,
                                                                                          "head": 50}, shipped_bytes=750).to_dict()),
        (Host, host_info()),
        (RecoveryFacts, {"recovered": False}),
        (RecoveryFacts, {"recovered": True, "recovery_seconds": 4.5, "recovery_loss": 0.31, "recovery_examples": 200,
                         "recovery_steps": 13, "recovery_epochs": 2.0, "exit_steps": 7, "exit_seconds": 0.5,
                         "exit_pass_seconds": 0.25, "exit_loss": 0.9}),
        (ExitsTaken, {"threshold": 0.9, "student_layers": [2, 4], "shares": [0.625, 0.375], "mean_layers": 2.75}),
        (VocabularyFacts, {"kept_rows": 90, "full_rows": 120, "min_count": 2, "eval_tokens_dropped": 0.0125,
                           "corpus": "the distillation set (200 texts)"}),
        (Arch, {"family": "bert", "num_layers": 4, "num_heads": 4, "intermediate_size": 64, "hidden_size": 32}),
    ]
    return [(kind, json.loads(json.dumps(d))) for kind, d in found]


@pytest.mark.parametrize(("kind", "stored"), _producers(), ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_what_a_producer_writes_reads_back_and_is_written_back_unchanged(kind, stored):
    figures = kind.from_dict(stored)
    assert figures.to_dict() == stored  # the same names and values: a new study stores what it always stored
    assert kind.from_dict(figures.to_dict()) == figures
    assert not figures.model_extra, f"{kind.__name__} does not name {sorted(figures.model_extra or {})}"


@pytest.mark.parametrize("figures", [
    LatencyFigures(profile="p", kind="measured", ratio=0.5, shapes=(ShapeLatency(batch_size=1, seq_len=None, ratio=0.5),),
                   ratio_iqr=(0.45, 0.55), host_prediction=HostPrediction(ratio=0.6)),
    SizeFigures(params=1, effective_bytes=2, split=None, megabytes=2e-6),
    RecoveryFacts(recovered=True, recovery_loss=None),
    ExitsTaken(threshold=0.5, student_layers=(1, 2), shares=(0.5, 0.5)),
    Host(host="h", gpu="GPU"),
    LatencyFigures(),
], ids=["latency", "size", "recovery", "exits", "host", "empty"])
def test_figures_round_trip_through_their_stored_form(figures):
    assert type(figures).from_dict(json.loads(json.dumps(figures.to_dict()))) == figures


def test_a_value_given_as_none_is_stored_and_one_never_given_is_left_out():
    assert SizeFigures(params=1, split=None).to_dict() == {"params": 1, "split": None}
    assert SizeFigures.from_dict({"params": 1}).to_dict() == {"params": 1}
    assert LatencyFigures(ratio=0.5).with_(noisy=True).to_dict() == {"ratio": 0.5, "noisy": True}


def test_keys_a_class_does_not_know_are_kept():
    stored = {**ONE_SHAPE.to_dict(), "a_newer_fact": {"x": [1, 2]}}
    stored["shapes"][0]["gpu_clock"] = 1.4
    figures = LatencyFigures.from_dict(stored)
    assert figures.to_dict() == stored and figures.model_extra == {"a_newer_fact": {"x": [1, 2]}}


def test_a_value_of_the_wrong_type_is_refused_naming_the_key():
    with pytest.raises(StorageError, match=r"trial 3's latency cannot be read: shapes\.0\.rounds"):
        LatencyFigures.from_dict({"shapes": [{"rounds": "many"}]}, where="trial 3's latency")
    with pytest.raises(StorageError, match="not a mapping"):
        SizeFigures.from_dict([1, 2])


def test_the_ratios_spread_is_read_for_one_measured_shape_only():
    assert LatencyFigures.from_dict(ONE_SHAPE.to_dict()).ratio_quartiles == (0.45, 0.55)
    assert LatencyFigures.from_dict(ONE_SHAPE.to_dict()).candidate_spread_ms == 0.1
    # a record whose summary lacks the quartiles still has its one shape's
    bare = {k: v for k, v in ONE_SHAPE.to_dict().items() if k not in ("ratio_iqr", "candidate_iqr_ms")}
    assert LatencyFigures.from_dict(bare).ratio_quartiles == (0.45, 0.55)
    assert LatencyFigures.from_dict(bare).candidate_spread_ms == 0.1
    # several shapes: their ratio is a geometric mean, and a spread over different shapes means nothing
    several = LatencyFigures.from_dict(TWO_SHAPES.to_dict())
    assert several.ratio_quartiles is None and several.candidate_spread_ms is None
    assert LatencyFigures.from_dict(PREDICTED.to_dict()).ratio_quartiles is None  # the fit error says how far


def test_speedup_is_the_stored_one_or_the_inverse_ratio():
    assert LatencyFigures(speedup=2.5, ratio=0.5).times_faster == 2.5
    assert LatencyFigures(ratio=0.5).times_faster == 2.0
    assert LatencyFigures().times_faster is None


def test_a_generation_workloads_split_reads_back_typed():
    chat = LatencyFigures.from_dict(json.loads(json.dumps(CHAT.to_dict())))
    assert chat.generation and chat.times_faster == pytest.approx(1 / 0.6)  # the whole request's
    assert chat.ttft_speedup == pytest.approx(2.0) and chat.tpot_speedup == pytest.approx(1 / 0.7)
    assert chat.ttft_ms == pytest.approx(2.0) and chat.baseline_ttft_ms == pytest.approx(4.0)
    assert chat.tpot_ms == pytest.approx(0.7) and chat.baseline_tpot_ms == pytest.approx(1.0)
    assert chat.ttft_ratio_ci == pytest.approx((0.5, 0.5)) and chat.tpot_ratio_ci == pytest.approx((0.7, 0.7))
    assert (chat.new_tokens, chat.prompt_tokens, chat.kv_cache_bytes, chat.baseline_kv_cache_bytes) == (16, 32, 32000, 64000)
    (shape,) = chat.shapes
    assert shape.ttft_ratio == pytest.approx(0.5) and shape.tpot_ratio_ci_high == pytest.approx(0.7)
    assert shape.kv_cache_bytes == 32000 and shape.prompt_tokens == 32 and shape.new_tokens == 16
    two = LatencyFigures.from_dict(CHAT_TWO_SHAPES.to_dict())
    assert two.ttft_ratio == pytest.approx((0.5 * 0.75) ** 0.5) and two.ttft_ratio_ci is None
    assert two.kv_cache_bytes == 64000 and two.prompt_tokens == 64  # the largest cache the profile needs
    assert LatencyFigures.from_dict(CHAT_TASK.to_dict()).prompt_tokens == 12  # the sample's longest prompt


def test_a_record_without_a_generation_workload_has_no_split():
    old = LatencyFigures.from_dict(ONE_SHAPE.to_dict())
    assert not old.generation
    assert old.ttft_speedup is None and old.tpot_speedup is None and old.kv_cache_bytes is None
    assert old.shapes[0].ttft_ratio is None and old.to_dict() == ONE_SHAPE.to_dict()


def test_a_size_stored_before_shipped_bytes_counts_its_effective_bytes():
    assert SizeFigures(effective_bytes=800).bytes == 800
    assert SizeFigures(effective_bytes=800, shipped_bytes=750).bytes == 750


def test_exits_pair_each_exit_with_its_share():
    assert ExitsTaken(student_layers=(2, 4), shares=(0.6, 0.4)).stops == [(2, 0.6), (4, 0.4)]
    assert ExitsTaken(student_layers=(2, 4), shares=(1.0,)).stops == []
