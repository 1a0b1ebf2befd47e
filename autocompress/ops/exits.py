"""Early exit: classifiers after some of a student's layers, and the model that stops at the first confident one.

:class:`EarlyExit` wraps a student. A batch of one input runs layer by layer and returns at the
first exit whose softmax confidence (the largest probability) reaches ``threshold``, skipping the
layers after it: that is the latency a deployment sees. A larger batch runs every layer and
gives each example the logits of the exit it would have taken alone (the accuracy that
deployment sees, computed in one pass). The exit heads are trained by
:func:`autocompress.train.exits.train_exits_`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from autocompress.tasks.batches import Encoded
from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan

__all__ = ["EarlyExit", "ExitHead", "attach_exits", "choose_exits", "exit_predictions", "exit_shares", "exits_summary", "pool",
           "static_part", "with_exits"]

def pool(state: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """What an exit head reads of a layer's ``state`` (batch, tokens, hidden): the first token's
    vector (``first``) or the mean over the real tokens (``mean``; ``attention_mask`` 1 for them)."""
    if how == "first":
        return state[:, 0]
    if attention_mask is None:
        return state.mean(dim=1)
    mask = attention_mask.to(state.dtype).unsqueeze(-1)
    return (state * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class ExitHead(nn.Module):
    """A small classifier on one layer's pooled state: dense, tanh, linear (the shape of BERT's
    pooler and classifier)."""

    def __init__(self, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.dense(first_token)))


class _Exited(Exception):  # noqa: N818 - control flow, not an error: carries the exit's logits
    def __init__(self, logits: torch.Tensor, position: int) -> None:
        super().__init__()
        self.logits, self.position = logits, position


def choose_exits(exit_logits: list[torch.Tensor], final: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the logits of the first exit whose confidence reaches ``threshold`` (else the
    final layer's) and the index of that exit (``len(exit_logits)`` for the final layer)."""
    n = final.shape[0]
    taken = torch.full((n,), len(exit_logits), dtype=torch.long)
    out = final.clone()
    undecided = torch.ones(n, dtype=torch.bool)
    for i, logits in enumerate(exit_logits):
        confident = undecided & (logits.softmax(-1).max(-1).values >= threshold)
        out[confident] = logits[confident].to(out.dtype)
        taken[confident] = i
        undecided &= ~confident
    return out, taken


class EarlyExit(nn.Module):
    """``model`` with exit heads after its layers ``positions`` (indices among the student's own
    layers, ascending, the last layer excluded: the model's own head is the last exit)."""

    def __init__(self, model: nn.Module, positions: list[int], threshold: float, pooling: str = "first") -> None:
        super().__init__()
        layers = adapter_for(model).layers(model)
        if list(positions) != sorted(set(positions)) or not positions or positions[-1] >= len(layers) - 1 or positions[0] < 0:
            raise PlanError(f"exits must be distinct layers before the last of the student's {len(layers)}, "
                            f"got {list(positions)}")
        if not 0.0 < threshold <= 1.0:
            raise PlanError(f"an exit threshold is a confidence in (0, 1], got {threshold}")
        self.model = model
        self.config = model.config
        self.positions = list(positions)
        self.threshold = float(threshold)
        if pooling not in ("first", "mean"):
            raise PlanError(f"an exit reads the first token's state or the mean of the tokens' (first, mean), got {pooling!r}")
        self.pooling = pooling
        self._mask: torch.Tensor | None = None  # the attention mask of the batch of one being run
        hidden, labels = int(model.config.hidden_size), int(model.config.num_labels)
        self.heads = nn.ModuleList(ExitHead(hidden, labels) for _ in positions)
        self.num_layers = len(layers)
        self.last_exit: int | None = None  # the exit the last batch of one took (len(positions): none)

    @property
    def device(self) -> torch.device:
        """Where the student's weights are (what ``transformers.pipeline`` asks a model)."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _hook(self, head_i: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            state = output[0] if isinstance(output, tuple) else output
            logits = self.heads[head_i](pool(state, self._mask, self.pooling))
            if logits.softmax(-1).max().item() >= self.threshold:
                raise _Exited(logits, head_i)

        return hook

    def exit_logits(self, **inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every exit's logits and the final layer's, for a batch (all layers run)."""
        out = self.model(**inputs, output_hidden_states=True)
        states = out.hidden_states  # embeddings, then each layer's output
        mask = inputs.get("attention_mask")
        return [head(pool(states[pos + 1], mask, self.pooling))
                for head, pos in zip(self.heads, self.positions, strict=True)], out.logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        if input_ids.shape[0] == 1 and not self.training:
            # hooks only for this call: a copy of this module (deepcopy) must not call back into the original
            layers = adapter_for(self.model).layers(self.model)
            handles = [layers[pos].register_forward_hook(self._hook(i)) for i, pos in enumerate(self.positions)]
            self._mask = attention_mask
            try:
                logits = self.model(**inputs).logits
                self.last_exit = len(self.positions)
            except _Exited as exited:
                logits, self.last_exit = exited.logits, exited.position
            finally:
                self._mask = None
                for handle in handles:
                    handle.remove()
            return SequenceClassifierOutput(logits=logits)
        exits, final = self.exit_logits(**inputs)
        logits, _ = choose_exits(exits, final, self.threshold)
        return SequenceClassifierOutput(logits=logits)


def static_part(model: nn.Module) -> nn.Module:
    """The student inside an :class:`EarlyExit` (every layer, no exits), or ``model`` itself."""
    return model.model if isinstance(model, EarlyExit) else model


def with_exits(student: nn.Module, positions: list[int], threshold: float, *, seed: int = 0,
               pooling: str = "first") -> EarlyExit:
    """``student`` with fresh exit heads after its layers ``positions``, initialised from ``seed``
    (the same plan and seed give the same heads)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EarlyExit(student, positions, threshold, pooling)


@torch.inference_mode()
def exit_predictions(model: EarlyExit, data: Encoded, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example's logits at the exit it takes, and the index of that exit (``len(positions)``:
    the model's own last layer), in the examples' order: accuracy and exit shares from one pass."""
    model.eval()
    logits_out: torch.Tensor | None = None
    taken_out = torch.empty(len(data), dtype=torch.long)
    for idx, inputs in data.batches(batch_size, by_length=True):
        exits, final = model.exit_logits(**inputs)
        logits, taken = choose_exits(exits, final, model.threshold)
        if logits_out is None:
            logits_out = torch.empty((len(data), logits.shape[-1]))
        logits_out[idx], taken_out[idx] = logits.float().cpu(), taken
    if logits_out is None:
        raise ValueError("no examples to evaluate")
    return logits_out, taken_out


def exit_shares(model: EarlyExit, taken: torch.Tensor) -> list[float]:
    """The share of examples that stop at each exit of ``model`` (``taken``: each one's exit index,
    as :func:`exit_predictions` gives it), the model's own last layer last."""
    counts = torch.bincount(taken, minlength=len(model.positions) + 1).float()
    return (counts / max(1, taken.numel())).tolist()


def attach_exits(model: nn.Module, plan: CompressionPlan, *, seed: int = 0) -> nn.Module:
    """``model`` (shaped by ``plan``) with the plan's exit heads, untrained and initialised from
    ``seed``; ``model`` itself when the plan has no exits."""
    if plan.exits is None:
        return model
    return with_exits(model, plan.exit_positions, plan.exits.threshold, seed=seed, pooling=plan.exits.pooling)


def exits_summary(plan: CompressionPlan) -> dict[str, Any] | None:
    """What an exported model's exits are, in words a deployer reads (``None`` without exits)."""
    if plan.exits is None:
        return None
    return {
        "after_student_layers": [p + 1 for p in plan.exit_positions],
        "threshold": plan.exits.threshold,
        "pooling": plan.exits.pooling,
        "how": "a batch of one input stops at the first exit whose largest softmax probability reaches the "
        "threshold; a larger batch runs every layer and gives each input the exit it would take alone",
    }
