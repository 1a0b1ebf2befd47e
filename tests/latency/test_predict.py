"""Predicted latency: calibration on this host, scaling to a device's peaks, and the JSON cache."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert, tiny_roberta

from autocompress.errors import LatencyError
from autocompress.latency import predict
from autocompress.latency.cost import OpCost, model_costs, totals
from autocompress.latency.predict import (
    CALIBRATION_VERSION,
    FEATURES,
    Calibration,
    HostPeaks,
    cached_calibration,
    calibrate,
    calibration_plans,
    features,
    predict_ms,
    predict_profile,
    roofline_ms,
)
from autocompress.schema.profile import DeviceProfile, resolve_profile
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan

HOST = HostPeaks(threads=2, fp32_gflops=40.0, int8_gops=80.0, memory_gbs=10.0, clock_ghz=3.0)


def _calibration(**coefficients: float) -> Calibration:
    coef = {name: 0.0 for name in FEATURES}
    coef.update({k.replace("__", ":"): v for k, v in coefficients.items()})
    return Calibration(coefficients=coef, peaks=HOST, host={"host": "here"}, samples=8, fit_median_error=0.05,
                       shapes=[[1, 16]])


def _device(threads: int = 2, cores: int = 4, **spec: float) -> DeviceProfile:
    figures = {"fp32_gflops_per_core": 40.0, "int8_gops_per_core": 80.0, "memory_gbs": 20.0, "clock_ghz": 1.5, **spec}
    return DeviceProfile.model_validate({
        "name": "device", "kind": "predicted", "threads": threads, "seq_len": 16,
        "spec": {"cpu": "Some CPU", "cores": cores, "sources": ["datasheet"], **figures},
    })


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return tiny_bert()


def test_calibration_plans_start_with_the_corners_and_are_reproducible() -> None:
    plans = calibration_plans(4, 10, seed=3)
    assert len(plans) == 10
    assert plans[0] == CompressionPlan.uniform(4)  # the teacher itself
    assert plans[1] == CompressionPlan.uniform(4, bits=8)
    assert plans[3].kept_layers == [0, 2]
    assert all(p.num_layers == 4 for p in plans)
    assert plans == calibration_plans(4, 10, seed=3)
    assert plans[4:] != calibration_plans(4, 10, seed=4)[4:]
    mixed = plans[4:]
    assert any(lp.bits == 8 for p in mixed for lp in p.layers) and any(lp.bits == 32 for p in mixed for lp in p.layers)
    assert len(calibration_plans(4, 2)) == 2


def test_calibrate_fits_non_negative_coefficients_that_reproduce_this_host(teacher) -> None:
    before = torch.get_num_threads()
    plans = calibration_plans(4, 6)
    build = lambda plan: apply_plan(teacher, plan)  # noqa: E731
    cal = calibrate(teacher, build, threads=1, shapes=[(1, 16)], plans=plans, repeats=3)
    assert torch.get_num_threads() == before
    assert list(cal.coefficients) == list(FEATURES)
    assert all(c >= 0 and math.isfinite(c) for c in cal.coefficients.values())
    assert cal.samples == 6 and cal.shapes == [[1, 16]]
    assert cal.peaks.threads == 1 and cal.peaks.fp32_gflops > 0 and cal.peaks.memory_gbs > 0
    assert cal.host["torch"] == torch.__version__
    assert 0 <= cal.fit_median_error < 0.5, "the fit reproduces the measured variants"
    here = predict_ms(teacher, cal, 1, 16)
    assert here > 0
    # a model with half the layers is predicted faster than the teacher on this host
    assert predict_ms(apply_plan(teacher, plans[3]), cal, 1, 16) < here


def test_calibration_round_trips_through_json_and_refuses_other_versions() -> None:
    cal = _calibration(flops__linear_fp32=1e-11, const=2e-4)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert cal.to_dict()["version"] == CALIBRATION_VERSION
    with pytest.raises(LatencyError, match="version 0"):
        Calibration.from_dict({**cal.to_dict(), "version": 0})
    with pytest.raises(LatencyError, match="version"):
        Calibration.from_dict({k: v for k, v in cal.to_dict().items() if k != "version"})


def test_scaling_to_a_device_follows_the_ratio_of_peaks() -> None:
    cal = _calibration(flops__linear_fp32=1.0, flops__linear_int8=1.0, flops__attention=1.0,
                       bytes__elementwise=1.0, ops=1.0, const=1.0)
    assert cal.scale_to(None) == cal.coefficients  # this host
    # 2 threads of 40 GFLOPS/core = 80: twice the host's fp32 → fp32 work takes half the time there
    fast = cal.scale_to(_device(threads=2, memory_gbs=20.0, clock_ghz=1.5, int8_gops_per_core=20.0))
    assert fast["flops:linear_fp32"] == pytest.approx(0.5)
    assert fast["flops:attention"] == pytest.approx(0.5)
    assert fast["flops:linear_int8"] == pytest.approx(2.0)  # 2 × 20 = 40 GOPS vs 80 here
    assert fast["bytes:elementwise"] == pytest.approx(0.5)  # 20 GB/s vs 10
    assert fast["ops"] == pytest.approx(2.0) and fast["const"] == pytest.approx(2.0)  # 1.5 GHz vs 3
    # more threads than the device has cores run on its cores only
    capped = cal.scale_to(_device(threads=8, cores=1, fp32_gflops_per_core=40.0))
    assert capped["flops:linear_fp32"] == pytest.approx(1.0)


def test_scaling_to_a_profile_without_a_spec_is_refused() -> None:
    with pytest.raises(LatencyError, match="no device spec"):
        _calibration(const=1.0).scale_to(DeviceProfile(name="here"))


def test_prediction_is_linear_in_the_cost_features(teacher) -> None:
    t = totals(model_costs(teacher, 1, 16))
    only_fp32 = _calibration(flops__linear_fp32=1e-9)
    assert predict_ms(teacher, only_fp32, 1, 16) == pytest.approx(1e3 * 1e-9 * t["flops:linear_fp32"])
    only_const = _calibration(const=2e-3)
    assert predict_ms(teacher, only_const, 1, 16) == pytest.approx(2.0)
    both = _calibration(flops__linear_fp32=1e-9, const=2e-3)
    assert predict_ms(teacher, both, 1, 16) == pytest.approx(
        predict_ms(teacher, only_fp32, 1, 16) + predict_ms(teacher, only_const, 1, 16)
    )
    f = features(teacher, 1, 16)
    assert f[FEATURES.index("ops")] == t["ops"] and f[-1] == 1.0
    # on a device with twice the host's fp32 peak, the fp32 part takes half as long
    assert predict_ms(teacher, only_fp32, 1, 16, _device(threads=2)) == pytest.approx(
        predict_ms(teacher, only_fp32, 1, 16) / 2
    )


def test_predict_profile_labels_figures_predicted_and_compares_to_the_teacher(teacher) -> None:
    cal = _calibration(flops__linear_fp32=1e-9, flops__attention=1e-9, ops=1e-5, const=1e-4)
    profile = _device().model_copy(update={"batch_size": (1, 2), "seq_len": (8, 16)})
    same = predict_profile(teacher, teacher, profile, cal)
    assert same.kind == "predicted" and same.ratio == pytest.approx(1.0)
    assert len(same.shapes) == 4 and same.to_dict()["kind"] == "predicted"
    half = predict_profile(teacher, apply_plan(teacher, CompressionPlan.uniform(4, keep=[0, 2])), profile, cal)
    assert half.ratio < 1.0 and half.speedup > 1.0
    ratios = [s["ratio"] for s in half.shapes]
    assert half.ratio == pytest.approx(math.prod(ratios) ** (1 / len(ratios)))
    # a slower device (the Raspberry Pi) takes longer than this host for the same model
    rpi = predict_profile(teacher, teacher, resolve_profile("rpi4").model_copy(update={"seq_len": 16}), cal)
    host_ms = predict_ms(teacher, cal, 1, 16)
    assert rpi.baseline_ms > host_ms


def test_roofline_takes_the_slower_of_compute_and_memory_per_op() -> None:
    peaks = HostPeaks(threads=1, fp32_gflops=100.0, int8_gops=400.0, memory_gbs=10.0, clock_ghz=2.0)
    ops = [
        OpCost("linear_fp32", flops=2e9, bytes=1e9),  # compute 20 ms, memory 100 ms → 100 ms
        OpCost("linear_int8", flops=8e9, bytes=1e8),  # compute 20 ms, memory 10 ms → 20 ms
    ]
    assert roofline_ms(ops, peaks) == pytest.approx(120.0)
    assert roofline_ms([], peaks) == 0.0


def test_cached_calibration_measures_once_then_reads_the_json(teacher, tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []

    def counting(model, build, *, threads, shapes, plans, repeats=10):  # measures nothing: counts
        calls.append(threads)
        return dataclasses.replace(_calibration(const=1e-3 * threads), samples=len(plans) * len(shapes))

    monkeypatch.setattr(predict, "calibrate", counting)
    build = lambda plan: apply_plan(teacher, plan)  # noqa: E731
    first = cached_calibration(teacher, build, tmp_path, threads=1, shapes=[(1, 16)], count=6)
    (path,) = (tmp_path / "latency-calibration").glob("*.json")
    again = cached_calibration(teacher, build, tmp_path, threads=1, shapes=[(1, 16)], count=6)
    assert calls == [1], "the second study on this host reuses the calibration"
    assert again == first
    assert json.loads(path.read_text())["samples"] == 6
    # another thread count or other input shapes need another cost model
    two = cached_calibration(teacher, build, tmp_path, threads=2, shapes=[(1, 16)], count=6)
    cached_calibration(teacher, build, tmp_path, threads=1, shapes=[(1, 16), (2, 16)], count=6)
    assert calls == [1, 2, 1]
    assert two != first and len(list((tmp_path / "latency-calibration").glob("*.json"))) == 3
    # a model of another family but the same shape gets its own cost model
    roberta = tiny_roberta()
    cached_calibration(roberta, lambda plan: apply_plan(roberta, plan), tmp_path, threads=1, shapes=[(1, 16)], count=6)
    assert calls == [1, 2, 1, 1] and len(list((tmp_path / "latency-calibration").glob("*.json"))) == 4
    # an outdated or unreadable file is measured again, not trusted
    path.write_text(json.dumps({**first.to_dict(), "version": CALIBRATION_VERSION + 1}))
    fresh = cached_calibration(teacher, build, tmp_path, threads=1, shapes=[(1, 16)], count=6)
    assert calls == [1, 2, 1, 1, 1]
    assert json.loads(path.read_text())["version"] == CALIBRATION_VERSION
    assert fresh == first
    path.write_text("{not json")
    assert cached_calibration(teacher, build, tmp_path, threads=1, shapes=[(1, 16)], count=6) == first
    assert calls == [1, 2, 1, 1, 1, 1]
