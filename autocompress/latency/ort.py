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
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from autocompress.latency.inputs import TaskSample, workloads
from autocompress.latency.measure import ProfileLatency, compute_lock, measure_workload
from autocompress.latency.profile import DeviceProfile
from autocompress.onnxrt import OnnxRunner, export_onnx
from autocompress.plan import CompressionPlan

__all__ = ["OrtTeacher", "measure_onnxruntime", "onnx_call", "teacher_session"]

log = logging.getLogger(__name__)


@dataclass
class OrtTeacher:
    """The teacher's ONNX model, exported once, and the input names every export of the study uses."""

    path: Path
    input_names: tuple[str, ...]
    export_seconds: float
    directory: tempfile.TemporaryDirectory[str]  # holds ``path`` for as long as this object lives

    def runner(self, threads: int) -> OnnxRunner:
        return OnnxRunner(self.path, threads=threads)


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


def onnx_call(runner: OnnxRunner, inputs: dict) -> object:
    """What is timed for one input: the session run on that input's feed (built beforehand)."""
    feed = runner.feed(inputs)
    return lambda: runner.run(feed)


def measure_onnxruntime(
    teacher: OrtTeacher, student: nn.Module, plan: CompressionPlan, profile: DeviceProfile, *,
    task: TaskSample | None = None, lock: bool = True,
) -> ProfileLatency:
    """``student`` (the float model shaped by ``plan``: bit-widths are applied by the export) in
    ONNX Runtime against the teacher's ONNX model, on every workload of ``profile``."""
    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        start = time.perf_counter()
        with compute_lock():
            facts = export_onnx(student, plan, Path(tmp) / "candidate.onnx", list(teacher.input_names))
        export_seconds = time.perf_counter() - start
        base, cand = teacher.runner(profile.threads), OnnxRunner(facts.path, threads=profile.threads)
        per_shape = [(w.batch_size, w.seq_len, measure_workload(base, cand, profile, w, lock=lock, call=onnx_call))
                     for w in workloads(profile, int(student.config.vocab_size), task)]
    out = ProfileLatency.combine(profile, per_shape)
    return replace(out, extra={"backend": "onnxruntime", "export_seconds": export_seconds,
                               "int8_matmuls": facts.int8_matmuls})
