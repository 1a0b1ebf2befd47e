"""Vocabulary pruning: keep only the word-embedding rows of the tokens a task's texts use.

The tokenizer is left as it is. The model keeps a lookup from every id of the full vocabulary to
a row of its smaller table (:class:`KeptVocabulary`); an id whose row was dropped takes the
fallback row, the ``[UNK]`` token's. So the ids the study scores are exactly the ids a deployment
feeds (any tokenizer, fast or slow, gives the same ids as before), and a dropped token behaves as
``[UNK]`` does. The lookup costs 4 bytes per id of the full vocabulary (122 KB for BERT's 30,522)
against the 1,536 bytes of a 384-wide float row it saves per dropped token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan

__all__ = ["KeptShape", "KeptVocabulary", "VocabularyChoice", "VocabularyCorpus", "choose_vocabulary", "keep_vocabulary_",
           "kept_table_like_", "padding_from_lookup_", "prune_vocabulary_", "token_counts", "word_embeddings"]


def token_counts(sequences: Iterable[list[int]], vocab_size: int) -> torch.Tensor:
    """How often each id of a ``vocab_size`` vocabulary occurs in ``sequences`` (unpadded token ids)."""
    flat = torch.as_tensor([i for ids in sequences for i in ids], dtype=torch.long)  # one count over every token
    return torch.bincount(flat, minlength=vocab_size)[:vocab_size]


@dataclass(frozen=True)
class VocabularyChoice:
    """The ids a student keeps (ascending) and the id dropped ones fall back to."""

    kept: torch.Tensor  # (k,) int64, ascending ids of the full vocabulary
    fallback: int  # an id in ``kept``: the token dropped ids behave as ([UNK])

    def lookup(self, vocab_size: int) -> torch.Tensor:
        """For every id of the full vocabulary, its row in the kept table (dropped ids: the fallback's row)."""
        table = torch.full((vocab_size,), int(torch.searchsorted(self.kept, self.fallback)), dtype=torch.int32)
        table[self.kept] = torch.arange(len(self.kept), dtype=torch.int32)
        return table

    def dropped_share(self, sequences: Iterable[list[int]], vocab_size: int) -> float:
        """The share of the tokens in ``sequences`` whose id was dropped (they read as the fallback)."""
        counts = token_counts(sequences, vocab_size)
        total = int(counts.sum())
        return 0.0 if total == 0 else 1.0 - int(counts[self.kept].sum()) / total


def choose_vocabulary(counts: torch.Tensor, min_count: int, always: Iterable[int], fallback: int) -> VocabularyChoice:
    """The ids occurring at least ``min_count`` times (``counts``: per id, over the vocabulary corpus),
    with the ids in ``always`` (special tokens) and ``fallback`` kept whatever their count."""
    if min_count < 1:
        raise PlanError(f"a vocabulary's minimum count is at least 1, got {min_count}")
    keep = counts >= min_count
    for i in (*always, fallback):
        if 0 <= i < len(counts):
            keep[i] = True
    if not 0 <= fallback < len(counts):
        raise PlanError(f"the fallback token id {fallback} is outside the vocabulary of {len(counts)}")
    return VocabularyChoice(kept=keep.nonzero().flatten(), fallback=fallback)


class KeptVocabulary(nn.Embedding):
    """Word embeddings for a kept vocabulary, called with ids of the full one: an ``nn.Embedding``
    of the kept rows (so whatever handles embeddings handles it) with the lookup in front."""

    def __init__(self, weight: torch.Tensor, lookup: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__(int(weight.shape[0]), int(weight.shape[1]), padding_idx=padding_idx, _weight=weight)
        self.register_buffer("lookup", lookup.to(torch.int32))

    @property
    def full_vocab_size(self) -> int:
        return int(self.lookup.shape[0])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.lookup[input_ids].long(), self.weight, self.padding_idx, self.max_norm,
                           self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} of {self.full_vocab_size} rows, {self.embedding_dim}"


def word_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding table of ``model`` (an ``nn.Embedding`` or a :class:`KeptVocabulary`)."""
    emb = adapter_for(model).embeddings(model)
    table = getattr(emb, "word_embeddings", None)
    if table is None:
        raise PlanError(f"{type(emb).__name__} has no word_embeddings table to prune")
    return table


def prune_vocabulary_(model: nn.Module, choice: VocabularyChoice) -> KeptVocabulary:
    """Replace ``model``'s word embeddings, in place, by the rows ``choice`` keeps; returns the new table."""
    emb = adapter_for(model).embeddings(model)
    table = word_embeddings(model)
    if isinstance(table, KeptVocabulary):
        raise PlanError("the model's vocabulary is pruned already")
    vocab = int(table.weight.shape[0])
    if int(choice.kept.max()) >= vocab:
        raise PlanError(f"the kept vocabulary has ids up to {int(choice.kept.max())}, the model only {vocab}")
    lookup = choice.lookup(vocab)
    pad = table.padding_idx
    new = KeptVocabulary(table.weight.detach()[choice.kept].clone(), lookup,
                         None if pad is None or not bool((choice.kept == pad).any()) else int(lookup[pad]))
    emb.word_embeddings = new
    return new


@dataclass(frozen=True)
class KeptShape:
    """A kept vocabulary's shape alone (rows kept of a full table): the rows and lookup come later,
    with the weights of a model being loaded."""

    rows: int
    full_rows: int


def keep_vocabulary_(model: nn.Module, plan: CompressionPlan, vocabulary: VocabularyChoice | KeptShape | None) -> None:
    """Give ``model``, in place, the kept vocabulary the plan asks for (nothing when it keeps every
    row): the rows ``vocabulary`` chose, or a table of ``vocabulary``'s shape to load weights into."""
    if plan.vocab_min_count is None:
        return
    if vocabulary is None:
        raise PlanError("the plan keeps part of the vocabulary (vocab_min_count) but no vocabulary choice was "
                        "given: pass the ids to keep (Selection(vocabulary=...)), or a plan that keeps every row")
    if isinstance(vocabulary, KeptShape):
        kept_table_like_(model, vocabulary.rows, vocabulary.full_rows)
    else:
        prune_vocabulary_(model, vocabulary)


def kept_table_like_(model: nn.Module, rows: int, full_rows: int) -> KeptVocabulary:
    """Give ``model``, in place, a kept-vocabulary table of ``rows`` rows for a ``full_rows``
    vocabulary, its weights and lookup zero (to be loaded); returns it."""
    emb = adapter_for(model).embeddings(model)
    table = word_embeddings(model)
    new = KeptVocabulary(torch.zeros(rows, int(table.weight.shape[1])), torch.zeros(full_rows, dtype=torch.int32))
    new.full_padding_idx = table.padding_idx  # becomes a row index once the lookup is loaded: see ``padding_from_lookup_``
    emb.word_embeddings = new
    return new


def padding_from_lookup_(table: KeptVocabulary) -> None:
    """Point ``table``'s padding row at the full vocabulary's padding id, as its loaded lookup maps it."""
    pad = getattr(table, "full_padding_idx", None)
    if pad is not None and 0 <= pad < table.full_vocab_size:
        row = int(table.lookup[pad])
        fallback_rows = int((table.lookup == row).sum())
        table.padding_idx = row if fallback_rows == 1 else None  # a dropped padding id reads as [UNK]


@dataclass(frozen=True)
class VocabularyCorpus:
    """How often each token id occurs in the texts a study prunes its vocabulary to, and the ids
    every kept vocabulary holds: the tokenizer's special tokens, and ``fallback`` ([UNK])."""

    counts: torch.Tensor  # (vocab,) int64
    always: tuple[int, ...]
    fallback: int
    source: str  # where the counts come from, for the record

    def choice(self, min_count: int) -> VocabularyChoice:
        return choose_vocabulary(self.counts, min_count, self.always, self.fallback)

    def facts(self, choice: VocabularyChoice, min_count: int, eval_ids: Iterable[list[int]]) -> dict[str, object]:
        """What ``choice`` (this corpus's choice at ``min_count``) is, for a trial's record: rows kept
        of the full table, and the share of the eval split's tokens that read as the fallback
        because their row was dropped."""
        return {"kept_rows": len(choice.kept), "full_rows": len(self.counts), "min_count": min_count,
                "eval_tokens_dropped": choice.dropped_share(eval_ids, len(self.counts)), "corpus": self.source}
