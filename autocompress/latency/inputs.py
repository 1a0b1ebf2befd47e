"""What a profile times: workloads of fixed shapes, or a sample of the task's own eval examples.

A :class:`Workload` is what one timed round runs, each input once and in order. A fixed shape is
one batch of random token ids (content does not change the speed of an encoder). With a profile's
``inputs: task``, the workload is :class:`TaskSample`: eval examples at evenly spaced quantiles of
their token lengths, each at batch 1, so that a round's time over the sample's size is the mean
latency over the task's length distribution, and a round's ratio is the ratio of those means.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autocompress.errors import LatencyError
from autocompress.latency.profile import DeviceProfile

__all__ = ["TaskSample", "Workload", "calibration_shapes", "example_inputs", "task_sample", "workloads"]


def example_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of one batch shape (their content does not change the speed)."""
    g = torch.Generator().manual_seed(seed)
    low = min(100, vocab_size // 2)  # skip the special tokens at the start of most vocabularies
    ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class Tokenised(Protocol):
    """Token ids per example, unpadded (``batches.Encoded`` is one)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class TaskSample:
    """Eval examples picked to stand for the task's token lengths (one tensor dict each, batch 1)."""

    inputs: tuple[dict[str, torch.Tensor], ...]
    lengths: tuple[int, ...]  # tokens of each picked example, ascending
    of_examples: int  # eval examples the sample was drawn from
    median_tokens: float  # over all of them
    p90_tokens: float

    def describe(self) -> dict[str, Any]:
        """The sample as stored with a latency: which lengths were timed, from how many examples."""
        return {"inputs": "task", "lengths": list(self.lengths), "of_examples": self.of_examples,
                "median_tokens": self.median_tokens, "p90_tokens": self.p90_tokens}


def task_sample(data: Tokenised, count: int) -> TaskSample:
    """``count`` examples of ``data`` at the quantiles (i + ½)/count of their token lengths (all of
    them when there are fewer), each as a batch of one with its own tokens."""
    n = len(data)
    if n == 0:
        raise LatencyError("a profile with inputs 'task' needs eval examples to time; the task has none")
    order = sorted(range(n), key=lambda i: (len(data.input_ids[i]), i))
    picks = order if n <= count else [order[int((k + 0.5) * n / count)] for k in range(count)]
    inputs = []
    for i in picks:
        ids = torch.tensor([data.input_ids[i]], dtype=torch.long)
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if data.token_type_ids is not None:
            x["token_type_ids"] = torch.tensor([data.token_type_ids[i]], dtype=torch.long)
        inputs.append(x)
    all_lengths = sorted(len(x) for x in data.input_ids)
    p90 = all_lengths[min(n - 1, int(0.9 * n))]
    return TaskSample(
        inputs=tuple(inputs),
        lengths=tuple(len(data.input_ids[i]) for i in picks),
        of_examples=n,
        median_tokens=float(statistics.median(all_lengths)),
        p90_tokens=float(p90),
    )


@dataclass(frozen=True)
class Workload:
    """The inputs of one timed round: a fixed shape, or the task's sample."""

    batch_size: int
    seq_len: int | None  # None: the task's own lengths
    inputs: tuple[dict[str, torch.Tensor], ...]
    facts: dict[str, Any]  # stored with the figures: the task sample's lengths, nothing for a fixed shape

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The (batch, tokens) of each input, in order: what a cost model predicts and averages."""
        return [(int(x["input_ids"].shape[0]), int(x["input_ids"].shape[1])) for x in self.inputs]


def workloads(profile: DeviceProfile, vocab_size: int, task: TaskSample | None = None) -> list[Workload]:
    """What ``profile`` times, one workload per fixed shape or one for the task's sample."""
    if profile.task_inputs:
        if task is None:
            raise LatencyError(f"profile '{profile.name}' times the task's inputs, but none were given; "
                               "time it through a study's workbench, or use a profile with fixed shapes")
        return [Workload(1, None, task.inputs, task.describe())] if len(task.inputs) <= profile.task_samples \
            else [_fewer(task, profile.task_samples)]
    return [Workload(b, s, (example_inputs(b, s, vocab_size),), {}) for b, s in profile.shapes]


def _fewer(task: TaskSample, count: int) -> Workload:
    """``count`` of the sample's examples, again at evenly spaced quantiles of their lengths."""
    m = len(task.inputs)
    picks = [int((k + 0.5) * m / count) for k in range(count)]
    facts = {**task.describe(), "lengths": [task.lengths[i] for i in picks]}
    return Workload(1, None, tuple(task.inputs[i] for i in picks), facts)


def calibration_shapes(profiles: list[DeviceProfile], task: TaskSample | None) -> list[tuple[int, int]]:
    """The shapes a cost model for ``profiles`` is fitted on: their fixed shapes, and for task
    inputs three lengths across the sample (the model is linear in length between them)."""
    shapes = {shape for p in profiles for shape in p.shapes}
    if task is not None and any(p.task_inputs for p in profiles):
        ls = task.lengths
        shapes |= {(1, ls[0]), (1, ls[len(ls) // 2]), (1, ls[-1])}
    return sorted(shapes)
