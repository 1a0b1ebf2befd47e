"""Teacher fine-tuning and knowledge-distillation recovery of compressed students.

Both train on CUDA when it is available and on the CPU otherwise; the model is returned to the
CPU afterwards (latency is measured there).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.ops.quantize import Rounding
from autocompress.tasks.batches import Encoded
from autocompress.schema.config import RecoveryConfig, TrainConfig
from autocompress.tasks.classification import SequenceClassification
from autocompress.train.quant_aware import rounded

__all__ = [
    "TeacherStates",
    "TrainingRun",
    "distillation",
    "fine_tune_",
    "hidden_loss",
    "hidden_targets",
    "recover_",
    "teacher_states",
    "train_device",
]

log = logging.getLogger(__name__)

#: the loss defaults of callers that give none: the first task kind's (a kind's methods keep no state)
SEQUENCE_CLASSIFICATION = SequenceClassification()

#: Called as ``progress(step, total_steps, loss)`` during training.
Progress = Callable[[int, int, float], None]
#: ``loss(student_outputs, teacher_outputs, targets, temperature, alpha)``: a task kind's distillation loss
OutputLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]
#: ``loss(model_output, targets)``: a task kind's fine-tuning loss
TrainingLoss = Callable[[object, torch.Tensor], torch.Tensor]
#: ``loss(output, indices, labels, attention_mask)`` of one training batch (``output``: the model's
#: output, with ``hidden_states`` when the run asks for them).
LossFn = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class TeacherStates:
    """The teacher's hidden states on a distillation set, without padding: ``layers[l]`` holds
    ``hidden_states[l]`` (what layer ``l`` reads; ``l = n`` is the encoder's output) for every
    token of every example, example after example, in half precision."""

    layers: dict[int, torch.Tensor]  # index -> (total tokens, hidden)
    offsets: torch.Tensor  # (examples + 1,): where each example's tokens start
    num_layers: int  # the teacher's

    def batch(self, layer: int, idx: torch.Tensor, width: int) -> torch.Tensor:
        """``(len(idx), width, hidden)`` float states of examples ``idx``, zero past each one's end."""
        packed = self.layers[layer]
        out = torch.zeros(len(idx), width, packed.shape[1])
        for row, i in enumerate(idx.tolist()):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            out[row, : end - start] = packed[start:end].float()
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers.values())


def teacher_states(teacher: nn.Module, data: Encoded, layers: Sequence[int], batch_size: int = 64) -> TeacherStates:
    """The teacher's ``hidden_states[l]`` for each ``l`` in ``layers`` on every example of ``data``."""
    lengths = [len(x) for x in data.input_ids]
    offsets = torch.tensor([0, *itertools.accumulate(lengths)])
    hidden = teacher.config.hidden_size
    packed = {layer: torch.empty(int(offsets[-1]), hidden, dtype=torch.float16) for layer in layers}
    teacher.eval()
    with torch.inference_mode():
        for idx, inputs in data.batches(batch_size, by_length=True):
            states = teacher(**inputs, output_hidden_states=True).hidden_states
            for row, i in enumerate(idx.tolist()):
                start, n = int(offsets[i]), lengths[i]
                for layer in layers:
                    packed[layer][start : start + n] = states[layer][row, :n].to(torch.float16)
    return TeacherStates(packed, offsets, teacher.config.num_hidden_layers)


def hidden_targets(kept: Sequence[int], num_layers: int) -> list[int]:
    """The teacher state each kept layer's output is distilled towards: what the teacher's next kept
    layer reads (the layers dropped in between are absorbed), and the encoder's output for the last."""
    return [*kept[1:], num_layers]


def hidden_loss(
    student_states: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error between each kept layer's output and its teacher state, over real tokens
    (not padding), averaged over hidden units and layers."""
    weight = mask.unsqueeze(-1).to(student_states[0].dtype)
    count = weight.sum() * student_states[0].shape[-1]
    losses = [(((s - t) ** 2) * weight).sum() / count for s, t in zip(student_states, targets, strict=True)]
    return torch.stack(losses).mean()


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class TrainingRun:
    """One AdamW run with linear warm-up and decay, which can stop after any step and go on later.

    ``run_to(step)`` trains up to ``step`` of ``total_steps``; the same steps run in one call or
    in several give the same model (the schedule is fixed by ``total_steps`` and the random state
    is kept between calls), so a candidate scored part-way through its recovery and then finished
    is the model that one uninterrupted recovery builds.

    ``freeze_word_embeddings`` leaves the word-embedding table (the largest tensor of a small
    encoder) as it is: AdamW neither updates nor keeps moments for it. ``group_by_length`` batches
    examples of similar length together (see :func:`~autocompress.tasks.batches.length_grouped`).
    ``epoch_examples`` is how many examples an epoch counts (default: all of ``data``; fewer where
    extra examples widen what the steps draw from without adding steps). With ``roundings``, the
    named modules compute through them while training
    (:func:`~autocompress.train.quant_aware.rounded`): quantisation-aware training.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Encoded,
        *,
        epochs: float,
        lr: float,
        batch_size: int,
        weight_decay: float,
        warmup_ratio: float,
        seed: int,
        loss_fn: LossFn,
        freeze_word_embeddings: bool = False,
        group_by_length: bool = False,
        hidden_states: bool = False,
        roundings: Sequence[Rounding] = (),
        epoch_examples: int | None = None,
    ) -> None:
        self.roundings = tuple(roundings)
        self.model, self.data, self.batch_size, self.seed, self.loss_fn = model, data, batch_size, seed, loss_fn
        self.group_by_length, self.hidden_states = group_by_length, hidden_states
        self.device = train_device()
        steps_per_epoch = math.ceil((epoch_examples or len(data)) / batch_size)
        self.total_steps = max(1, math.ceil(steps_per_epoch * epochs))
        self.step = 0
        self.recent: list[float] = []
        self.seconds = 0.0
        self._frozen: list[nn.Parameter] = []
        if freeze_word_embeddings:
            table = model.get_input_embeddings()
            if table is not None and table.weight.requires_grad:
                self._frozen = [table.weight]
        torch.manual_seed(seed)
        self._rng = _rng_state(self.device)
        self._trained = [p for p in model.parameters() if p.requires_grad and all(p is not f for f in self._frozen)]
        self._opt = torch.optim.AdamW(self._trained, lr=lr, weight_decay=weight_decay)
        warmup, total = int(self.total_steps * warmup_ratio), self.total_steps
        self._sched = torch.optim.lr_scheduler.LambdaLR(
            self._opt,
            lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
        )
        self._batches = self._stream()

    def _stream(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        epoch = 0
        while True:
            yield from self.data.batches(
                self.batch_size, shuffle=True, seed=self.seed + epoch, by_length=self.group_by_length
            )
            epoch += 1

    @property
    def loss(self) -> float:
        """The mean loss of the last 50 steps (nan before the first)."""
        return sum(self.recent) / len(self.recent) if self.recent else math.nan

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def run_to(self, step: int, progress: Progress | None = None) -> float:
        """Train up to ``step`` (at most ``total_steps``); returns :attr:`loss`. The model is on the
        CPU in eval mode afterwards, as it was found otherwise."""
        step = min(step, self.total_steps)
        if step <= self.step:
            return self.loss
        start = time.perf_counter()
        outside = _rng_state(self.device)
        _set_rng_state(self.device, self._rng)  # dropout draws continue where the last call left them
        for p in self._frozen:
            p.requires_grad_(False)
        self.model.to(self.device).train()
        try:
            with rounded(self.model, self.roundings):
                self._train_to(step, progress)
        finally:
            for p in self._frozen:
                p.requires_grad_(True)
            self._rng = _rng_state(self.device)
            _set_rng_state(self.device, outside)
            self.model.to("cpu").eval()
            self.seconds += time.perf_counter() - start
        return self.loss

    def _train_to(self, step: int, progress: Progress | None) -> None:
        while self.step < step:
            idx, inputs = next(self._batches)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            out = self.model(**inputs, output_hidden_states=True) if self.hidden_states else self.model(**inputs)
            loss = self.loss_fn(out, idx, self.data.labels[idx].to(self.device), inputs["attention_mask"])
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self._trained, 1.0)
            self._opt.step()
            self._sched.step()
            self.step += 1
            self.recent = (self.recent + [loss.item()])[-50:]
            if progress is not None:
                progress(self.step, self.total_steps, self.recent[-1])


def fine_tune_(model: nn.Module, data: Encoded, cfg: TrainConfig, progress: Progress | None = None, *,
               loss: TrainingLoss = SEQUENCE_CLASSIFICATION.training_loss) -> float:
    """Fine-tune ``model`` on ``data`` with the task kind's ``loss``; returns the final loss."""
    log.info("fine-tuning the teacher: %d examples, %.2g epochs, on %s", len(data), cfg.epochs, train_device())
    run = TrainingRun(
        model,
        data,
        epochs=cfg.epochs,
        lr=cfg.learning_rate,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        seed=cfg.seed,
        loss_fn=lambda out, idx, y, mask: loss(out, y),
        freeze_word_embeddings=cfg.freeze_word_embeddings,
        group_by_length=cfg.group_by_length,
    )
    return run.run_to(run.total_steps, progress)


def distillation(
    student: nn.Module,
    teacher_logits: torch.Tensor,
    data: Encoded,
    cfg: RecoveryConfig,
    *,
    epochs: float | None = None,
    states: TeacherStates | None = None,
    kept: Sequence[int] | None = None,
    output_loss: OutputLoss = SEQUENCE_CLASSIFICATION.distillation_loss,
    roundings: Sequence[Rounding] = (),
    epoch_examples: int | None = None,
) -> TrainingRun:
    """The distillation of ``teacher_logits`` (precomputed on ``data``) into ``student``, not yet
    started: ``epochs`` (default ``cfg.epochs``) of ``data``, on the task kind's ``output_loss``.

    With ``cfg.hidden_weight`` above 0, each kept layer's output is also distilled towards the
    teacher's state it replaces (:func:`hidden_targets`; ``kept`` lists the teacher layers the
    student keeps, ``states`` holds the teacher's states on ``data``). With ``roundings`` (the
    student's plan quantises, :func:`~autocompress.ops.quantize.kernel_roundings`), the student
    trains through its kernels' rounding."""
    if teacher_logits.shape[0] != len(data):
        raise ValueError(f"{teacher_logits.shape[0]} teacher logits for {len(data)} examples")
    device = train_device()
    targets = teacher_logits.to(device)
    t, a, beta = cfg.temperature, cfg.alpha, cfg.hidden_weight
    layers: list[int] = []
    if beta > 0:
        if states is None or kept is None:
            raise ValueError("hidden-state distillation needs the teacher's states and the kept layers")
        layers = hidden_targets(kept, states.num_layers)
        missing = [layer for layer in layers if layer not in states.layers]
        if missing:
            raise ValueError(f"the teacher's states lack layers {missing}")

    def loss(out: object, idx: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        value = output_loss(out.logits, targets[idx.to(device)], y, t, a)  # type: ignore[attr-defined]
        if layers:
            assert states is not None
            width = mask.shape[1]
            wanted = [states.batch(layer, idx, width).to(device) for layer in layers]
            value = value + beta * hidden_loss(out.hidden_states[1:], wanted, mask)  # type: ignore[attr-defined]
        return value

    return TrainingRun(
        student,
        data,
        epochs=cfg.epochs if epochs is None else epochs,
        lr=cfg.learning_rate,
        batch_size=cfg.batch_size,
        weight_decay=0.0,
        warmup_ratio=0.0,
        seed=cfg.seed,
        loss_fn=loss,
        freeze_word_embeddings=cfg.freeze_word_embeddings,
        group_by_length=cfg.group_by_length,
        hidden_states=bool(layers),
        roundings=roundings,
        epoch_examples=epoch_examples,
    )


def recover_(
    student: nn.Module,
    teacher_logits: torch.Tensor,
    data: Encoded,
    cfg: RecoveryConfig,
    progress: Progress | None = None,
    *,
    epochs: float | None = None,
) -> float:
    """Distil ``teacher_logits`` (precomputed on ``data``) into ``student`` in one go; returns the final loss."""
    run = distillation(student, teacher_logits, data, cfg, epochs=epochs)
    return run.run_to(run.total_steps, progress)
