"""Latency in the runtime that ships: a candidate exported to ONNX as ``autocompress export --onnx``
writes it (its int8 layers quantised by ONNX Runtime), timed in ONNX Runtime against the teacher's
own ONNX model, interleaved round by round as in :mod:`autocompress.latency.measure`.

The teacher's model is exported once per process (:func:`teacher_session`); each candidate is
exported into a temporary directory, timed and discarded, and the seconds its export took are
stored with its figures.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.latency.inputs import TaskInputs, workloads
from autocompress.latency.measure import ProfileLatency, compute_lock, measure_workload
from autocompress.schema.profile import DeviceProfile
from autocompress.latency.runtimes.onnx_model import OnnxRunner, export_onnx
from autocompress.schema.plan import CompressionPlan

__all__ = ["OrtTeacher", "measure_onnxruntime", "measure_runners", "teacher_session", "timed_call"]

log = logging.getLogger(__name__)


@dataclass
class OrtTeacher:
    """The teacher's ONNX model, exported once, and the input names every export of the study uses."""

    path: Path
    input_names: tuple[str, ...]
    export_seconds: float
    directory: tempfile.TemporaryDirectory[str]  # holds ``path`` for as long as this object lives
    sessions: dict[int, OnnxRunner] = field(default_factory=dict)  # by thread count, opened once

    def runner(self, threads: int) -> OnnxRunner:
        """The teacher's ONNX Runtime session with ``threads`` intra-op threads (opened once)."""
        if threads not in self.sessions:
            self.sessions[threads] = OnnxRunner(self.path, threads=threads)
        return self.sessions[threads]


def teacher_session(teacher: nn.Module, input_names: list[str]) -> OrtTeacher:
    """Export the (float) teacher to ONNX once, into a directory that lives as long as the result."""
    directory = tempfile.TemporaryDirectory(prefix="autocompress-ort-")
    path = Path(directory.name) / "teacher.onnx"
    start = time.perf_counter()
    with compute_lock():
        export_onnx(teacher, CompressionPlan.uniform(teacher.config.num_hidden_layers), path, input_names)
    seconds = time.perf_counter() - start
    log.info("teacher exported to ONNX for ONNX Runtime timing in %.1f s", seconds)
    return OrtTeacher(path=path, input_names=tuple(input_names), export_seconds=seconds, directory=directory)


def timed_call(model: nn.Module | OnnxRunner, inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
    """What is timed for one input: a PyTorch model on it, or an ONNX Runtime session on its feed
    (built beforehand, so that only the run is timed)."""
    if isinstance(model, OnnxRunner):
        feed = model.feed(inputs)
        return lambda: model.run(feed)
    return lambda: model(**inputs)


def measure_runners(baseline: nn.Module | OnnxRunner, candidate: nn.Module | OnnxRunner, profile: DeviceProfile, *,
                    vocab_size: int, task: TaskInputs | None = None, lock: bool = True) -> ProfileLatency:
    """``candidate`` against ``baseline`` (each a PyTorch model on the CPU or an ONNX Runtime
    session), interleaved on every workload of ``profile``."""
    per_shape = [(w.batch_size, w.seq_len, measure_workload(baseline, candidate, profile, w, lock=lock, call=timed_call))
                 for w in workloads(profile, vocab_size, task)]
    return ProfileLatency.combine(profile, per_shape)


def measure_onnxruntime(
    teacher: OrtTeacher, student: nn.Module, plan: CompressionPlan, profile: DeviceProfile, *,
    task: TaskInputs | None = None, lock: bool = True,
) -> ProfileLatency:
    """``student`` (the float model shaped by ``plan``: bit-widths are applied by the export) in
    ONNX Runtime against the teacher's ONNX model, on every workload of ``profile``."""
    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        start = time.perf_counter()
        with compute_lock():
            facts = export_onnx(student, plan, Path(tmp) / "candidate.onnx", list(teacher.input_names))
        export_seconds = time.perf_counter() - start
        cand = facts.runner(profile.threads)
        out = measure_runners(teacher.runner(profile.threads), cand, profile, vocab_size=int(student.config.vocab_size),
                              task=task, lock=lock)
    return replace(out, extra={"backend": "onnxruntime", "export_seconds": export_seconds,
                               "int8_matmuls": facts.int8_matmuls})
