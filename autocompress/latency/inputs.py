"""What a profile times: workloads of fixed shapes, or a sample of the task's own eval examples.

A :class:`Workload` is what one timed round runs, each input once and in order. A fixed shape is
one batch of the task kind's fixed-shape inputs (random token ids: content does not change the speed). With a profile's
``inputs: task``, the workload is a sample of :class:`TaskInputs`: eval examples at evenly spaced
quantiles of their token lengths, each at batch 1, so that a round's time over the sample's size is the mean
latency over the task's length distribution, and a round's ratio is the ratio of those means.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autocompress.errors import LatencyError
from autocompress.schema.profile import DeviceProfile
from autocompress.tasks.batches import random_token_batch

__all__ = ["InputsFn", "TaskInputs", "Workload", "calibration_shapes", "example_inputs", "task_inputs", "workloads"]

#: ``make(batch_size, seq_len, vocab_size)``: the inputs of one fixed-shape workload (a task kind's ``timed_inputs``)
InputsFn = Callable[[int, int, int], dict[str, torch.Tensor]]
#: the fixed-shape inputs of token models: random ids and a full mask
example_inputs = random_token_batch


class Tokenised(Protocol):
    """Token ids per example, unpadded (``batches.Encoded`` is one)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class TaskInputs:
    """The eval split's examples as timing inputs, each a batch of one at its own length, sorted
    by length; a profile times :meth:`sample` of them."""

    inputs: tuple[dict[str, torch.Tensor], ...]  # ascending length
    lengths: tuple[int, ...]

    @property
    def of_examples(self) -> int:
        return len(self.inputs)

    def picks(self, count: int) -> list[int]:
        """Indices of ``count`` examples at the quantiles (i + ½)/count of the lengths (all when fewer)."""
        n = len(self.inputs)
        return list(range(n)) if n <= count else [int((k + 0.5) * n / count) for k in range(count)]

    def sample(self, count: int) -> Workload:
        """The workload of ``count`` examples spread over the task's lengths."""
        picks = self.picks(count)
        n = len(self.lengths)
        facts = {"inputs": "task", "lengths": [self.lengths[i] for i in picks], "of_examples": n,
                 "median_tokens": float(statistics.median(self.lengths)),
                 "p90_tokens": float(self.lengths[min(n - 1, int(0.9 * n))])}
        return Workload(1, None, tuple(self.inputs[i] for i in picks), facts)


def task_inputs(data: Tokenised) -> TaskInputs:
    """Every example of ``data`` as a batch of one with its own tokens, sorted by length."""
    n = len(data)
    if n == 0:
        raise LatencyError("a profile with inputs 'task' needs eval examples to time; the task has none")
    order = sorted(range(n), key=lambda i: (len(data.input_ids[i]), i))
    inputs = []
    for i in order:
        ids = torch.tensor([data.input_ids[i]], dtype=torch.long)
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if data.token_type_ids is not None:
            x["token_type_ids"] = torch.tensor([data.token_type_ids[i]], dtype=torch.long)
        inputs.append(x)
    return TaskInputs(inputs=tuple(inputs), lengths=tuple(len(data.input_ids[i]) for i in order))


@dataclass(frozen=True)
class Workload:
    """The inputs of one timed round: a fixed shape, or a sample of the task's."""

    batch_size: int
    seq_len: int | None  # None: the task's own lengths
    inputs: tuple[dict[str, torch.Tensor], ...]
    facts: dict[str, Any]  # stored with the figures: the task sample's lengths, nothing for a fixed shape

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The (batch, tokens) of each input, in order: what a cost model predicts and averages."""
        return [(int(x["input_ids"].shape[0]), int(x["input_ids"].shape[1])) for x in self.inputs]


def workloads(profile: DeviceProfile, vocab_size: int, task: TaskInputs | None = None,
              make_inputs: InputsFn = example_inputs) -> list[Workload]:
    """What ``profile`` times, one workload per fixed shape (its inputs from ``make_inputs``) or one
    for its sample of the task's inputs."""
    if profile.task_inputs:
        if task is None:
            raise LatencyError(f"profile '{profile.name}' times the task's inputs, but none were given; "
                               "time it through a study's workbench, or use a profile with fixed shapes")
        return [task.sample(profile.task_samples)]
    return [Workload(b, s, (make_inputs(b, s, vocab_size),), {}) for b, s in profile.shapes]


def calibration_shapes(profiles: list[DeviceProfile], task: TaskInputs | None) -> list[tuple[int, int]]:
    """The shapes a cost model for ``profiles`` is fitted on: their fixed shapes, and for task
    inputs the shortest, middle and longest length of each one's sample (the model is linear in
    length between them)."""
    shapes = {shape for p in profiles for shape in p.shapes}
    for p in profiles:
        if p.task_inputs and task is not None:
            ls = task.sample(p.task_samples).facts["lengths"]
            shapes |= {(1, ls[0]), (1, ls[len(ls) // 2]), (1, ls[-1])}
    return sorted(shapes)
