"""Tokenised examples and the batches built from them (dynamic padding)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from autocompress.tasks.data import Examples

__all__ = ["Encoded", "encode", "length_grouped", "random_token_batch"]


@dataclass(frozen=True)
class Encoded:
    """Token ids per example (unpadded) and their labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor  # (n,) int64
    pad_id: int
    groups: tuple[int, ...] | None = None  # rows scored together (a multiple-choice question's choices): its number
    sizes: tuple[int, ...] | None = None  # with groups: each row's scored text in UTF-8 bytes (a choice's length)


    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int) -> "Encoded":
        """The first ``n`` examples."""
        if n >= len(self):
            return self
        types = self.token_type_ids[:n] if self.token_type_ids else None
        return Encoded(self.input_ids[:n], types, self.labels[:n], self.pad_id,
                       None if self.groups is None else self.groups[:n], None if self.sizes is None else self.sizes[:n])

    def concat(self, other: "Encoded") -> "Encoded":
        """These examples followed by ``other``'s (same tokenizer)."""
        if (self.token_type_ids is None) != (other.token_type_ids is None):
            a = self.token_type_ids or [[0] * len(x) for x in self.input_ids]
            b = other.token_type_ids or [[0] * len(x) for x in other.input_ids]
        else:
            a, b = self.token_type_ids, other.token_type_ids
        types = None if a is None else a + b
        return Encoded(self.input_ids + other.input_ids, types, torch.cat([self.labels, other.labels]), self.pad_id)

    def with_labels(self, labels: torch.Tensor) -> "Encoded":
        return Encoded(self.input_ids, self.token_type_ids, labels, self.pad_id, self.groups, self.sizes)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, by_length: bool = False
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Yield ``(indices, inputs)`` padded to the longest example of each batch.

        ``by_length`` alone sorts every example by length (fast evaluation). ``shuffle`` is for
        training: a new random order each seed; with ``by_length`` too, each batch holds examples
        of similar length (less padding) while which examples share a batch, and the order of the
        batches, stay random (see :func:`length_grouped`).
        """
        order = list(range(len(self)))
        if shuffle and by_length:
            groups = length_grouped([len(x) for x in self.input_ids], batch_size, seed)
        else:
            if by_length:
                order.sort(key=lambda i: len(self.input_ids[i]))
            elif shuffle:
                random.Random(seed).shuffle(order)
            groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        for idx in groups:
            width = max(len(self.input_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            types = torch.zeros((len(idx), width), dtype=torch.long) if self.token_type_ids else None
            for row, i in enumerate(idx):
                n = len(self.input_ids[i])
                ids[row, :n] = torch.tensor(self.input_ids[i])
                mask[row, :n] = 1
                if types is not None:
                    types[row, :n] = torch.tensor(self.token_type_ids[i])
            inputs = {"input_ids": ids, "attention_mask": mask}
            if types is not None:
                inputs["token_type_ids"] = types
            yield torch.tensor(idx), inputs


#: batches per chunk that :func:`length_grouped` sorts by length
GROUP_CHUNK = 50
#: how far :func:`length_grouped` lets a length stray when sorting (a fraction of it)
GROUP_JITTER = 0.2


def length_grouped(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Training batches of similar lengths in a random order.

    The examples are shuffled, cut into chunks of ``GROUP_CHUNK`` batches, each chunk is sorted by
    length and cut into batches, and the batches are shuffled: every example is used once per
    call, padding is what similar lengths leave, and the examples a batch mixes change with the
    seed (as in Hugging Face's length-grouped sampler). The sort key is each length times a random
    factor within ``1 ± GROUP_JITTER``, so that a batch is not made of one length alone: where the
    length tells the label (short neutral texts, say), exact sorting would give batches of one
    class, and training on them fails.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    key = {i: lengths[i] * rng.uniform(1 - GROUP_JITTER, 1 + GROUP_JITTER) for i in order}
    chunk = batch_size * GROUP_CHUNK
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=key.__getitem__)
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def encode(tokenizer, examples: Examples, max_length: int) -> Encoded:
    """Tokenise ``examples`` (truncated to ``max_length`` tokens)."""
    out = tokenizer(
        examples.texts,
        examples.pairs,
        truncation=True,
        max_length=max_length,
        padding=False,
    )
    types = out.get("token_type_ids")
    if types is not None and not any(any(t) for t in types):
        types = None  # all zeros: the model's default, no need to pass them
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(list(out["input_ids"]), types, torch.tensor(examples.labels, dtype=torch.long), pad)


def random_token_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of one batch shape with a full attention mask (their content does not change the speed)."""
    g = torch.Generator().manual_seed(seed)
    low = min(100, vocab_size // 2)  # skip the special tokens at the start of most vocabularies
    ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
