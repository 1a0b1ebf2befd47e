"""A candidate's figures against the teacher: task metrics on the eval split, latency on every
profile and size. Pure functions of the workbench and the model; the trial records what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.ops.exits import EarlyExit, exit_predictions, exit_shares, static_part
from autocompress.tasks.evaluate import Accuracy, Metric
from autocompress.ops.size import Size, model_size
from autocompress.latency.measure import ProfileLatency, compute_lock, measure_profile
from autocompress.latency.runtimes.ort import measure_onnxruntime
from autocompress.latency.predict import predict_profile
from autocompress.schema.profile import DeviceProfile
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import simulated_widths
from autocompress.search.workbench import Workbench

__all__ = ["Evaluation", "HeldOut", "Measurement", "Screen", "evaluate", "held_out", "measure", "screen", "subset_metric"]


@dataclass(frozen=True)
class Measurement:
    """Latency against the teacher on every profile (the objective's first) and size."""

    objective: ProfileLatency  # on the study's latency profile
    records: dict[str, dict[str, Any]]  # every profile's stored form, by name (with the cost model's facts)
    size: Size
    size_ratio: float  # shipped bytes / the teacher's


@dataclass(frozen=True)
class Evaluation:
    """The candidate's task figures on the eval split."""

    accuracy: Accuracy
    metric: Metric  # task.metric: the first objective
    drop: float  # points of the metric below the teacher
    teacher_agreement: float  # fraction of predictions equal to the teacher's
    exits: dict[str, Any] | None = None  # a model with early exits: where eval examples stop (:func:`exits_taken`)

    @property
    def percent(self) -> float:
        return 100 * self.metric.value


def _timed(bench: Workbench, model: nn.Module, float_model: nn.Module | None, plan: CompressionPlan,
           profile: DeviceProfile) -> ProfileLatency:
    """``model`` timed against the teacher on one measured profile: in PyTorch, or (backend
    onnxruntime) ``float_model`` exported to ONNX as export writes it and run by ONNX Runtime."""
    if profile.backend == "onnxruntime":
        if bench.onnx_teacher is None or float_model is None:
            raise RuntimeError("an ONNX Runtime profile needs the teacher's ONNX model and the float candidate")
        return measure_onnxruntime(bench.onnx_teacher, float_model, plan, profile, task=bench.task_inputs)
    return measure_profile(bench.teacher.model, model, profile, vocab_size=bench.teacher.model.config.vocab_size,
                           task=bench.task_inputs, make_inputs=bench.kind.timed_inputs)


def measure(bench: Workbench, model: nn.Module, plan: CompressionPlan, float_model: nn.Module | None = None) -> Measurement:
    """Time (or predict) ``model`` against the teacher on every profile of the study, and size it.

    ``float_model`` (the candidate before bit-widths) is what a profile timed in ONNX Runtime exports.
    """
    cfg = bench.config
    lats: dict[str, ProfileLatency] = {}
    for profile in cfg.all_profiles:
        if profile.predicted:
            if bench.calibration is None:
                raise RuntimeError("a predicted profile needs the latency calibration; prepare() makes it")
            lats[profile.name] = predict_profile(bench.teacher.model, static_part(model), profile, bench.calibration,
                                                 task=bench.task_inputs)  # exits: the static model's (every layer)
        else:
            lats[profile.name] = _timed(bench, model, float_model, plan, profile)
    records = {name: v.to_dict() for name, v in lats.items()}
    if bench.calibration is not None:  # what the report needs to judge the cost model against measurements
        for profile in cfg.all_profiles:
            records[profile.name].update(_prediction_facts(bench, model, profile))
    size = _size(model, plan)
    return Measurement(
        objective=lats[cfg.profile.name],
        records=records,
        size=size,
        size_ratio=size.bytes / bench.teacher_size.bytes,
    )


def _size(model: nn.Module, plan: CompressionPlan) -> Size:
    """``model``'s size as export ships it, split into embeddings, encoder layers and the head (with any exit heads)."""
    inner = static_part(model)
    adapter = adapter_for(inner)
    names = {id(m): n for n, m in model.named_modules()}
    return model_size(model, _widths(model, plan), parts={
        "embeddings": (names[id(adapter.embeddings(inner))],),
        "layers": tuple(names[id(layer)] for layer in adapter.layers(inner))})


def _widths(model: nn.Module, plan: CompressionPlan) -> dict[str, int]:
    """The simulated bit-widths of ``model``'s modules, by name (inside an exits wrapper too)."""
    inner = static_part(model)
    widths = simulated_widths(inner, plan)
    return widths if inner is model else {f"model.{k}": v for k, v in widths.items()}


def exits_taken(model: EarlyExit, taken: torch.Tensor) -> dict[str, Any]:
    """Where examples stop (``taken``: each one's exit index, from :func:`exit_predictions`): at each
    exit (the student's layer count there, its own last layer last) the share of examples, the
    threshold, and the mean layers run."""
    shares = exit_shares(model, taken)
    depths = [p + 1 for p in model.positions] + [model.num_layers]
    return {"threshold": model.threshold, "student_layers": depths, "shares": shares,
            "mean_layers": sum(d * s for d, s in zip(depths, shares, strict=True))}


@dataclass(frozen=True)
class Screen:
    """A candidate's figures at the cheap rung: latency on the objective's profile (predicted by the
    cost model where one applies), exact size, and the task metric on the eval subset."""

    latency: ProfileLatency
    tolerance: float  # the cost model's median relative error; 0 for a measured latency
    size: Size
    metric: Metric

    def to_dict(self) -> dict[str, Any]:
        return {**self.latency.to_dict(), "tolerance": self.tolerance}


def subset_metric(bench: Workbench, model: nn.Module) -> Metric:
    """The task metric on the first ``fidelity.cheap_eval_size`` eval examples (the rungs' subset)."""
    cfg = bench.config
    subset = bench.eval.head(cfg.fidelity.cheap_eval_size)
    reference = bench.teacher.eval_logits[: len(subset)]
    with compute_lock():
        logits = bench.kind.outputs(model.eval(), subset, reference)
    return bench.kind.metric(cfg.task.metric, logits, subset, reference)


def screen(bench: Workbench, model: nn.Module, plan: CompressionPlan, float_model: nn.Module | None = None) -> Screen:
    """The cheap rung: latency from this host's cost model when the objective's profile is a
    PyTorch CPU one at the calibration's thread count (else measured), size, and the subset's metric."""
    profile = bench.config.profile
    cal = bench.calibration
    if cal is not None and profile.device == "cpu" and profile.backend == "torch" and (
            profile.predicted or profile.threads == cal.peaks.threads):
        latency = predict_profile(bench.teacher.model, model, profile, cal, task=bench.task_inputs)
        tolerance = cal.fit_median_error
    else:
        latency = _timed(bench, model, float_model, plan, profile)
        tolerance = 0.0
    size = _size(model, plan)
    return Screen(latency=latency, tolerance=tolerance, size=size, metric=subset_metric(bench, model))


def evaluate(bench: Workbench, model: nn.Module) -> Evaluation:
    """The task metric, accuracy and agreement with the teacher on the eval split."""
    cfg = bench.config
    exits = None
    with compute_lock():
        if isinstance(model, EarlyExit):  # each example at the exit it takes, and where that is, in one pass
            logits, taken = exit_predictions(model, bench.eval)
            exits = exits_taken(model, taken)
        else:
            logits = bench.kind.outputs(model, bench.eval, bench.teacher.eval_logits)
    score = bench.kind.metric(cfg.task.metric, logits, bench.eval, bench.teacher.eval_logits)
    return Evaluation(
        accuracy=bench.kind.accuracy(logits, bench.eval),
        metric=score,
        drop=100 * bench.teacher_metric.value - 100 * score.value,
        teacher_agreement=bench.kind.agreement(logits, bench.teacher.eval_logits),
        exits=exits,
    )


@dataclass(frozen=True)
class HeldOut:
    """The candidate on the held-out test split: reported, never optimised on."""

    metric: Metric
    accuracy: Accuracy


def held_out(bench: Workbench, model: nn.Module) -> HeldOut | None:
    """The test split's figures, or ``None`` when the task has no test split."""
    if bench.test is None:
        return None
    with compute_lock():
        logits = bench.kind.outputs(model, bench.test, bench.test_reference)
    return HeldOut(bench.kind.metric(bench.config.task.metric, logits, bench.test, bench.test_reference),
                   bench.kind.accuracy(logits, bench.test))


def _prediction_facts(bench: Workbench, model: nn.Module, profile: DeviceProfile) -> dict[str, Any]:
    """The cost model's fit error, and for a measured CPU profile at the calibration's thread
    count its prediction for this host (``host_prediction``), to set against the measurement."""
    cal = bench.calibration
    if cal is None:
        return {}
    facts: dict[str, Any] = {"fit_error": cal.fit_median_error}
    if profile.predicted or profile.device != "cpu" or profile.backend != "torch" or profile.threads != cal.peaks.threads:
        return facts  # the cost model is PyTorch's on this host's CPU at the calibration's threads
    here = predict_profile(bench.teacher.model, static_part(model), profile, cal, task=bench.task_inputs)
    facts["host_prediction"] = {"ratio": here.ratio, "speedup": here.speedup, "candidate_ms": here.candidate_ms}
    return facts
