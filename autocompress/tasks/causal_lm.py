"""Causal language modelling: the decoder task kind.

Data are documents of a text corpus (:mod:`autocompress.tasks.corpus`), each tokenised to its
first ``task.max_length`` tokens (training documents to up to ``task.windows`` consecutive windows
of that many); the targets of an example are its own tokens (``labels``: an
``(n, max_length)`` tensor of token ids, −100 past each document's end). The teacher is trained
(or fine-tuned) on next-token cross-entropy; students distil the teacher's distribution over its
:data:`TOP_K` likeliest next tokens at a temperature, plus next-token cross-entropy.

What a model "outputs" here is, for every position of every document, a row of
:data:`COLUMNS` numbers: the log-probability of the true next token, the likeliest token, whether
the position counts, and the log-probabilities of :data:`TOP_K` tokens with their ids (the
model's own likeliest ones, or, given the teacher's outputs as ``reference``, the teacher's).
That is enough for every metric, computed per document so that intervals resample documents:

* ``perplexity`` — ``value`` is the teacher's perplexity over the candidate's (1: as good as the
  teacher), ``natural`` the perplexity itself;
* ``next_token_accuracy`` — the share of positions whose likeliest token is the true one;
* ``kl`` — the forward KL divergence from the teacher (its top-:data:`TOP_K` tokens and the rest
  of its mass as one bucket: a lower bound of the full KL), ``value`` = exp(−KL);
* ``multiple_choice`` — on the questions of ``task.choices`` instead of documents (each choice a
  row after its context, only its tokens targets): the share of questions whose right choice has
  the highest log-likelihood (``multiple_choice_norm``: per byte of the choice).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.errors import ConfigError, DataError
from autocompress.models.adapters import adapter_for, load_causal_lm, register_bundled_model, resolve_model_source
from autocompress.models.scratch import LLAMA_BBC, decoder_to_train, initialised
from autocompress.schema.config import StudyConfig, TaskConfig
from autocompress.tasks.batches import Encoded
from autocompress.tasks.corpus import load_corpus
from autocompress.tasks.data import BUNDLED_DATASETS, Examples, TaskData
from autocompress.tasks.evaluate import Accuracy, Metric
from autocompress.tasks.kind import TaskKind, register_task_kind

__all__ = ["COLUMNS", "TOP_K", "CausalLM", "encode_choices", "encode_documents", "lm_distillation_loss", "lm_outputs",
           "multiple_choice", "next_token_loss"]

#: the teacher tokens per position whose probabilities are kept (distillation targets, KL)
TOP_K = 16
_TARGET, _ARGMAX, _VALID, _LOGP = 0, 1, 2, 3
#: numbers per position in a model's outputs: target log-prob, argmax id, valid, TOP_K log-probs, TOP_K ids
COLUMNS = 3 + 2 * TOP_K
_SAMPLES = 1000  # bootstrap draws


def encode_documents(tokenizer: Any, examples: Examples, max_length: int, windows: int = 1) -> Encoded:
    """Each document's first ``max_length`` tokens; its labels are those tokens (−100 beyond). With
    ``windows`` > 1, also the document's next ``max_length`` tokens, and so on, up to that many
    consecutive windows (the last one shorter; none of fewer than two tokens, which predict nothing):
    every document's first window, then every second window, and so on, so that the first ``n`` rows
    are those a single window would give."""
    ids = tokenizer(examples.texts, truncation=True, max_length=max_length * windows, padding=False)["input_ids"]
    if windows > 1:
        ids = [row[k * max_length : (k + 1) * max_length] for k in range(windows) for row in ids
               if k == 0 or len(row) - k * max_length >= 2]
    labels = torch.full((len(ids), max_length), -100, dtype=torch.long)
    for i, row in enumerate(ids):
        labels[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return Encoded([list(r) for r in ids], None, labels, int(pad))


def encode_choices(tokenizer: Any, examples: Examples, max_length: int) -> Encoded:
    """Multiple-choice questions (:func:`autocompress.tasks.corpus.load_choices`): each choice after its
    question's context, a space between them as lm-evaluation-harness puts it (none where either side
    has one); only the choice's tokens are targets, so that a row's summed target log-probabilities
    are the choice's log-likelihood. A long context loses its beginning, never the choice."""
    assert examples.pairs is not None
    rows, starts, sizes = [], [], []
    for context, choice in zip(examples.texts, examples.pairs):
        gap = "" if not context or context[-1].isspace() or choice[:1].isspace() else " "
        sizes.append(len((gap + choice).encode("utf-8")))
        whole = tokenizer(context + gap + choice)["input_ids"]
        head = tokenizer(context)["input_ids"]
        start = 0
        while start < min(len(head), len(whole)) and head[start] == whole[start]:
            start += 1  # the choice's tokens begin where the context's stop matching
        if len(whole) - start >= max_length:
            raise DataError(f"a choice of {len(whole) - start} tokens ('{choice[:40]}') leaves no room for its "
                            f"context in task.max_length = {max_length}; raise max_length or shorten the choice")
        cut = max(0, len(whole) - max_length)
        rows.append(whole[cut:])
        starts.append(max(1, start - cut))
    labels = torch.full((len(rows), max_length), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts)):
        labels[i, start : len(row)] = torch.tensor(row[start:], dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return Encoded(rows, None, labels, int(pad), tuple(examples.labels), tuple(sizes))


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token (``labels``: token ids, −100 ignored)."""
    width = logits.shape[1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:width].reshape(-1),
                           ignore_index=-100)


def lm_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                         temperature: float, alpha: float) -> torch.Tensor:
    """α·T²·KL(teacher ‖ student) over the teacher's top-:data:`TOP_K` tokens at temperature T, plus
    (1 − α) times the next-token cross-entropy. ``student``: logits ``(b, w, vocab)``; ``teacher``: its
    outputs ``(b, ≥w, COLUMNS)`` (:func:`lm_outputs`); ``labels``: token ids ``(b, ≥w)``."""
    width = student.shape[1]
    rows = teacher[:, : width - 1].to(student.device)
    valid = rows[..., _VALID] > 0
    ids = rows[..., _LOGP + TOP_K :].long()
    t = temperature
    picked = student[:, :-1].gather(-1, ids) / t
    target = F.log_softmax(rows[..., _LOGP : _LOGP + TOP_K] / t, dim=-1)
    kl = (target.exp() * (target - F.log_softmax(picked, dim=-1))).sum(-1)
    soft = (kl * valid).sum() / valid.sum().clamp_min(1)
    hard = next_token_loss(student, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


@torch.inference_mode()
def lm_outputs(model: nn.Module, data: Encoded, reference: torch.Tensor | None = None,
               batch_tokens: int = 2**22) -> torch.Tensor:
    """``(n, max_length, COLUMNS)`` per-position figures of ``model`` on ``data`` (see the module
    docstring); with ``reference`` (the teacher's), the log-probabilities are taken at its top tokens."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    length = int(data.labels.shape[1])
    out = torch.zeros((len(data), length, COLUMNS))
    vocab = int(model.config.vocab_size)
    batch = max(1, min(32, batch_tokens // max(1, length * vocab // 64)))
    for idx, inputs in data.batches(batch, by_length=True):
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float()
        width = logits.shape[1]
        logp = F.log_softmax(logits[:, :-1], dim=-1)
        target = data.labels[idx][:, 1:width].to(device)
        valid = target != -100
        rows = torch.zeros((len(idx), width - 1, COLUMNS), device=device)
        rows[..., _TARGET] = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0] * valid
        rows[..., _ARGMAX] = logp.argmax(-1).float()
        rows[..., _VALID] = valid.float()
        if reference is None:
            top = logp.topk(TOP_K, dim=-1)
            values, ids = top.values, top.indices
        else:
            ids = reference[idx, : width - 1, _LOGP + TOP_K :].long().to(device)
            values = logp.gather(-1, ids)
        rows[..., _LOGP : _LOGP + TOP_K] = values
        rows[..., _LOGP + TOP_K :] = ids.float()
        out[idx, : width - 1] = rows.cpu()
    return out


def _per_document(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of ``values`` over each document's valid positions, and the positions counted."""
    return (values * valid).sum(1), valid.sum(1)


def _draws(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, n, (_SAMPLES, n), generator=torch.Generator().manual_seed(seed))


def _interval(samples: torch.Tensor) -> tuple[float, float]:
    return torch.quantile(samples, 0.025).item(), torch.quantile(samples, 0.975).item()


def _coarse_kl(outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per position, KL(teacher ‖ student) over the teacher's top tokens and one bucket for the rest."""
    t = reference[..., _LOGP : _LOGP + TOP_K].double()
    s = outputs[..., _LOGP : _LOGP + TOP_K].double()
    rest_t = (1 - t.exp().sum(-1)).clamp_min(1e-12)
    rest_s = (1 - s.exp().sum(-1)).clamp_min(1e-12)
    return ((t.exp() * (t - s)).sum(-1) + rest_t * (rest_t.log() - rest_s.log())).clamp_min(0).float()


def _need_reference(name: str, reference: torch.Tensor | None) -> torch.Tensor:
    if reference is None:
        raise ValueError(f"the {name} metric compares with the teacher: give its outputs as the reference")
    return reference


def perplexity(outputs: torch.Tensor, reference: torch.Tensor) -> Metric:
    """Perplexity on the documents, relative to the teacher's on the same ones, with paired intervals."""
    valid = outputs[..., _VALID]
    own, count = _per_document(-outputs[..., _TARGET], valid)
    theirs, _ = _per_document(-reference[..., _TARGET], valid)
    tokens = count.sum().clamp_min(1)
    draws = _draws(len(count))
    n_draw = count[draws].sum(1).clamp_min(1)
    own_ppl = torch.exp(own[draws].sum(1) / n_draw)
    relative = torch.exp((theirs[draws].sum(1) - own[draws].sum(1)) / n_draw)
    lo, hi = _interval(relative)
    nlo, nhi = _interval(own_ppl)
    return Metric(name="perplexity", value=math.exp((theirs.sum() - own.sum()).item() / tokens.item()), ci_low=lo,
                  ci_high=hi, n=len(count), natural=math.exp(own.sum().item() / tokens.item()), natural_low=nlo,
                  natural_high=nhi, teacher_natural=math.exp(theirs.sum().item() / tokens.item()))


def multiple_choice(outputs: torch.Tensor, data: Encoded, *, per_byte: bool = False) -> Metric:
    """The share of questions whose right choice (each question's first row, :func:`encode_choices`)
    is likelier than every other, by its summed log-probability (lm-evaluation-harness's ``acc``),
    or ``per_byte`` by that sum over the choice's length in bytes (its ``acc_norm``, which does not
    favour choices of fewer tokens); a tie counts as wrong, and the interval resamples questions."""
    name = "multiple_choice_norm" if per_byte else "multiple_choice"
    if data.groups is None or data.sizes is None:
        raise ValueError(f"{name} is computed on questions (task.choices), not on documents")
    loglik = outputs[..., _TARGET].double().sum(1)
    if per_byte:
        loglik = loglik / torch.tensor(data.sizes, dtype=torch.float64).clamp_min(1)
    groups = torch.tensor(data.groups)
    first = torch.ones(len(groups), dtype=torch.bool)
    first[1:] = groups[1:] != groups[:-1]
    question = torch.cumsum(first.long(), 0) - 1
    count = int(first.sum())
    best_other = torch.full((count,), -math.inf, dtype=torch.float64)
    best_other = best_other.scatter_reduce(0, question[~first], loglik[~first], reduce="amax")
    correct = (loglik[first] > best_other).double()
    draws = _draws(count)
    lo, hi = _interval(correct[draws].mean(1))
    return Metric(name=name, value=correct.mean().item(), ci_low=lo, ci_high=hi, n=count)


def next_token_accuracy(outputs: torch.Tensor, data: Encoded) -> Metric:
    """The share of positions whose likeliest token is the true next one (interval over documents)."""
    valid = outputs[..., _VALID]
    width = outputs.shape[1]
    target = torch.cat([data.labels[:, 1:], torch.full((len(data), 1), -100)], 1)[:, :width]
    correct = (outputs[..., _ARGMAX].long() == target).float()
    hits, count = _per_document(correct, valid)
    draws = _draws(len(count))
    lo, hi = _interval(hits[draws].sum(1) / count[draws].sum(1).clamp_min(1))
    return Metric(name="next_token_accuracy", value=(hits.sum() / count.sum().clamp_min(1)).item(), ci_low=lo,
                  ci_high=hi, n=len(count))


def kl_divergence(outputs: torch.Tensor, reference: torch.Tensor) -> Metric:
    """Mean per-token KL divergence from the teacher; ``value`` = exp(−KL)."""
    valid = outputs[..., _VALID]
    kl, count = _per_document(_coarse_kl(outputs, reference), valid)
    draws = _draws(len(count))
    mean = kl[draws].sum(1) / count[draws].sum(1).clamp_min(1)
    nlo, nhi = _interval(mean)
    value = (kl.sum() / count.sum().clamp_min(1)).item()
    return Metric(name="kl", value=math.exp(-value), ci_low=math.exp(-nhi), ci_high=math.exp(-nlo), n=len(count),
                  natural=value, natural_low=nlo, natural_high=nhi, teacher_natural=0.0)


@register_bundled_model("llama-bbc")
def _llama_bbc() -> str:
    """A ~6 M-parameter Llama-architecture decoder with a tokenizer of the BBC News articles, to train from scratch."""
    return decoder_to_train("llama-bbc", LLAMA_BBC, lambda: BUNDLED_DATASETS["bundled:bbc"]()["text"])


@register_task_kind("causal-lm")
class CausalLM(TaskKind):
    """Documents of a text corpus → the next token at every position."""

    auto_class = "AutoModelForCausalLM"
    pipeline = "text-generation"
    metrics = ("perplexity", "next_token_accuracy", "kl", "multiple_choice", "multiple_choice_norm")
    supports_exits = False
    supports_vocabulary = False
    supports_sharing = False
    supports_windows = True
    generates = True

    def load_data(self, cfg: TaskConfig) -> TaskData:
        return load_corpus(cfg)

    def encode(self, tokenizer: Any, examples: Examples, max_length: int) -> Encoded:
        if examples.pairs is not None:  # questions of task.choices
            return encode_choices(tokenizer, examples, max_length)
        return encode_documents(tokenizer, examples, max_length)

    def encode_training(self, tokenizer: Any, examples: Examples, max_length: int, windows: int) -> Encoded:
        return encode_documents(tokenizer, examples, max_length, windows)

    def load_model(self, source: str, data: TaskData | int, *, trust_remote_code: bool = False) -> nn.Module:
        model = initialised(resolve_model_source(source))  # a decoder the study trains from scratch
        if model is None:
            return load_causal_lm(source, trust_remote_code=trust_remote_code)
        adapter_for(model)
        return model

    def outputs(self, model: nn.Module, data: Encoded, reference: torch.Tensor | None = None) -> torch.Tensor:
        return lm_outputs(model, data, reference)

    def metric(self, name: str, outputs: torch.Tensor, data: Encoded, reference: torch.Tensor | None = None) -> Metric:
        if name == "perplexity":
            return perplexity(outputs, _need_reference(name, reference))
        if name == "next_token_accuracy":
            return next_token_accuracy(outputs, data)
        if name == "kl":
            return kl_divergence(outputs, _need_reference(name, reference))
        if name in ("multiple_choice", "multiple_choice_norm"):
            return multiple_choice(outputs, data, per_byte=name == "multiple_choice_norm")
        raise ValueError(f"metric '{name}' is not computed from a corpus's outputs")

    def accuracy(self, outputs: torch.Tensor, data: Encoded) -> Accuracy:
        m = next_token_accuracy(outputs, data)
        return Accuracy(value=m.value, ci_low=m.ci_low, ci_high=m.ci_high, n=m.n)

    def agreement(self, outputs: torch.Tensor, reference: torch.Tensor) -> float:
        valid = outputs[..., _VALID] > 0
        same = outputs[..., _ARGMAX] == reference[..., _ARGMAX]
        return (same & valid).sum().item() / max(1, int(valid.sum()))

    def pseudo_labelled(self, data: Encoded, outputs: torch.Tensor) -> Encoded:
        return data  # a document's targets are its own tokens

    def training_loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        return next_token_loss(output.logits, targets)

    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                          temperature: float, alpha: float) -> torch.Tensor:
        return lm_distillation_loss(student, teacher, targets, temperature, alpha)

    def check(self, cfg: StudyConfig, file: str | None = None) -> None:
        questions = cfg.task.metric.startswith("multiple_choice")
        if questions and cfg.task.choices is None:
            raise ConfigError(f"task.metric {cfg.task.metric} scores questions: set task.choices to a .jsonl file with "
                              "context, choices and answer on each line", file=file, key="task.choices")
        if cfg.task.choices is not None and not questions:
            raise ConfigError(f"task.choices is scored only with task.metric: multiple_choice or multiple_choice_norm "
                              f"(it is {cfg.task.metric}); set the metric or remove task.choices", file=file,
                              key="task.choices")
        for i, profile in enumerate(cfg.all_profiles):
            key = "profile" if i == 0 else f"report_profiles.{i - 1}"
            if not getattr(profile, "new_tokens", 0):
                raise ConfigError(f"a language model is timed generating text: set new_tokens (e.g. 64) in profile "
                                  f"'{profile.name}', or use the bundled profile cpu-2t-chat", file=file,
                                  key=f"{key}.new_tokens")
        super().check(cfg, file)
