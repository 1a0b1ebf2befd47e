"""The task-kind seam: what a model does, as one registered class per kind.

A :class:`TaskKind` owns everything that depends on what the model is for — reading the task's
data into splits, tokenising it, loading the base model with the right head, the task's
metric(s) with their intervals, the teacher's fine-tuning loss, the distillation loss, the
inputs latency is timed on, whether and how early exits attach, and the ``transformers`` class
and pipeline an export serves. Every other stage calls these methods and never asks which kind
it holds (no ``if kind == ...`` outside the kind's own module).

Kinds are registered with :func:`register_task_kind` and chosen by the study config's
``task.kind``; :func:`task_kind` resolves a name (unknown names get "Did you mean …?").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.errors import ConfigError, UnknownNameError
from autocompress.schema.config import StudyConfig, TaskConfig
from autocompress.tasks.batches import Encoded, random_token_batch
from autocompress.tasks.data import Examples, TaskData
from autocompress.tasks.evaluate import Accuracy, Metric, accuracy

__all__ = ["TASK_KINDS", "TaskKind", "check_task", "register_task_kind", "task_kind"]


class TaskKind(ABC):
    """What a model does, for every stage of a study. Stateless: one instance serves any study."""

    #: the name ``task.kind`` gives (also stored with every study's config)
    name: ClassVar[str]
    #: the ``transformers`` auto class that loads the base model with this kind's head
    auto_class: ClassVar[str]
    #: the ``transformers.pipeline`` task an exported model serves
    pipeline: ClassVar[str]
    #: the metrics :meth:`metric` computes (``task.metric`` names one of them)
    metrics: ClassVar[tuple[str, ...]]
    #: whether early-exit heads can attach to this kind's models (``space.exits``)
    supports_exits: ClassVar[bool]
    #: whether a plan may keep part of the vocabulary (``space.vocabulary``) or share layers (``space.sharing``)
    supports_vocabulary: ClassVar[bool] = True
    supports_sharing: ClassVar[bool] = True
    #: whether the model generates text: its latency is a generation workload (``profile.new_tokens``)
    generates: ClassVar[bool] = False
    #: whether training may take several consecutive windows of one long example (``task.windows``)
    supports_windows: ClassVar[bool] = False

    # ---------------------------------------------------------------- data
    @abstractmethod
    def load_data(self, cfg: TaskConfig) -> TaskData:
        """The task's examples split into train, eval (and optional transfer and test) by ``cfg.seed``."""

    @abstractmethod
    def encode(self, tokenizer: Any, examples: Examples, max_length: int) -> Encoded:
        """``examples`` as token ids (truncated to ``max_length``) with their targets."""

    def encode_training(self, tokenizer: Any, examples: Examples, max_length: int, windows: int) -> Encoded:
        """The training examples (the teacher's and the students'): by default encoded as any others;
        a kind that :attr:`supports_windows` takes up to ``windows`` consecutive pieces of each."""
        return self.encode(tokenizer, examples, max_length)

    # ---------------------------------------------------------------- model
    @abstractmethod
    def load_model(self, source: str, data: TaskData | int, *, trust_remote_code: bool = False) -> nn.Module:
        """The base model at ``source`` with this kind's head for ``data`` (or its number of outputs)."""

    @abstractmethod
    def outputs(self, model: nn.Module, data: Encoded, reference: torch.Tensor | None = None) -> torch.Tensor:
        """What ``model`` predicts for every example of ``data`` (the teacher's are the distillation
        targets); ``reference`` (the teacher's outputs on ``data``) lets a kind record what it needs to
        compare the two (a language model: its probabilities of the teacher's likeliest tokens)."""

    # ---------------------------------------------------------------- quality
    @abstractmethod
    def metric(self, name: str, outputs: torch.Tensor, data: Encoded, reference: torch.Tensor | None = None) -> Metric:
        """The metric ``name`` of ``outputs`` (from :meth:`outputs`) on ``data``, with its interval; its
        ``value`` is higher-is-better in [0, 1] (the study's first objective is 100 × it). Metrics
        measured against the teacher read its outputs from ``reference``."""

    def accuracy(self, outputs: torch.Tensor, data: Encoded) -> Accuracy:
        """The share of correct predictions (stored with every trial beside the task metric)."""
        return accuracy(outputs, data.labels)

    def agreement(self, outputs: torch.Tensor, reference: torch.Tensor) -> float:
        """The share of predictions equal to the teacher's (``reference``)."""
        return (outputs.argmax(-1) == reference.argmax(-1)).float().mean().item()

    def pseudo_labelled(self, data: Encoded, outputs: torch.Tensor) -> Encoded:
        """Extra distillation examples (``task.transfer_size``) with the targets the teacher's ``outputs``
        give them: by default its predicted classes."""
        return data.with_labels(outputs.argmax(-1))

    # ---------------------------------------------------------------- training
    @abstractmethod
    def training_loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """The loss the teacher is fine-tuned on, for one batch's model ``output``."""

    @abstractmethod
    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                          temperature: float, alpha: float) -> torch.Tensor:
        """The loss a student is distilled on: its outputs against the teacher's and the task's targets."""

    def check(self, cfg: StudyConfig, file: str | None = None) -> None:
        """Refuse settings this kind cannot honour (raises :class:`ConfigError` naming the key): by
        default, a generation workload (only a generating kind has one) and a perplexity budget
        for another metric."""
        if cfg.objectives.max_perplexity_increase is not None and cfg.task.metric != "perplexity":
            raise ConfigError(f"max_perplexity_increase is a perplexity budget but task.metric is {cfg.task.metric}; "
                              "use max_accuracy_drop (points of the metric)", file=file,
                              key="objectives.max_perplexity_increase")
        if self.generates:
            return
        for i, profile in enumerate(cfg.all_profiles):
            if getattr(profile, "new_tokens", 0) and not self.generates:
                key = "profile" if i == 0 else f"report_profiles.{i - 1}"
                raise ConfigError(f"task kind '{self.name}' does not generate text; remove new_tokens from "
                                  f"profile '{profile.name}' (or set it to 0)", file=file, key=f"{key}.new_tokens")

    # ---------------------------------------------------------------- latency
    def timed_inputs(self, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """The inputs of one fixed-shape latency workload (their content does not change the speed):
        token ids and an attention mask; a kind whose model takes more overrides this."""
        return random_token_batch(batch_size, seq_len, vocab_size, seed)


TASK_KINDS: dict[str, type[TaskKind]] = {}


def register_task_kind(name: str) -> Callable[[type[TaskKind]], type[TaskKind]]:
    """Register a :class:`TaskKind` subclass under ``name`` (what ``task.kind`` says)."""

    def register(cls: type[TaskKind]) -> type[TaskKind]:
        if name in TASK_KINDS:
            raise ValueError(f"task kind '{name}' is registered twice")
        cls.name = name
        TASK_KINDS[name] = cls
        return cls

    return register


def task_kind(name: str) -> TaskKind:
    """The registered task kind ``name`` (raises :class:`UnknownNameError` with the available ones)."""
    if name not in TASK_KINDS:
        raise UnknownNameError("task kind", name, TASK_KINDS)
    return TASK_KINDS[name]()


def check_task(cfg: StudyConfig, file: str | None = None) -> TaskKind:
    """The study's task kind, once its settings are checked against it: ``task.kind`` is registered,
    ``task.metric`` is one of its metrics, and ``space.exits`` is offered only where exits attach.
    Raises :class:`~autocompress.errors.ConfigError` naming the key."""
    try:
        kind = task_kind(cfg.task.kind)
    except UnknownNameError as exc:
        raise ConfigError(str(exc), file=file, key="task.kind") from None
    if cfg.task.metric not in kind.metrics:
        raise ConfigError(f"'{cfg.task.metric}' is not a metric of task kind '{kind.name}'; use one of "
                          f"{', '.join(kind.metrics)}", file=file, key="task.metric")
    if cfg.space.exits.offered and not kind.supports_exits:
        raise ConfigError(f"task kind '{kind.name}' has no early exits; set space.exits.schedule: [none]",
                          file=file, key="space.exits.schedule")
    if cfg.space.vocabulary.offered and not kind.supports_vocabulary:
        raise ConfigError(f"task kind '{kind.name}' keeps its whole vocabulary (its output layer predicts every "
                          "token); set space.vocabulary.keep: [all]", file=file, key="space.vocabulary.keep")
    if any(s != "none" for s in cfg.space.sharing) and not kind.supports_sharing:
        raise ConfigError(f"task kind '{kind.name}' cannot share layers (each layer keeps its own key/value cache); "
                          "set space.sharing: [none]", file=file, key="space.sharing")
    if cfg.task.choices is not None and "multiple_choice" not in kind.metrics:
        raise ConfigError(f"task kind '{kind.name}' scores no multiple-choice questions; remove task.choices",
                          file=file, key="task.choices")
    if cfg.task.windows > 1 and not kind.supports_windows:
        raise ConfigError(f"task kind '{kind.name}' takes each example's first max_length tokens only; remove "
                          "task.windows", file=file, key="task.windows")
    kind.check(cfg, file)
    return kind
