"""Tokenised examples and the batches built from them (dynamic padding)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from autocompress.data import Examples

__all__ = ["Encoded", "encode"]


@dataclass(frozen=True)
class Encoded:
    """Token ids per example (unpadded) and their labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor  # (n,) int64
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int) -> "Encoded":
        """The first ``n`` examples."""
        if n >= len(self):
            return self
        types = self.token_type_ids[:n] if self.token_type_ids else None
        return Encoded(self.input_ids[:n], types, self.labels[:n], self.pad_id)

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
        return Encoded(self.input_ids, self.token_type_ids, labels, self.pad_id)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, by_length: bool = False
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Yield ``(indices, inputs)`` padded to the longest example of each batch.

        ``by_length`` groups similar lengths (fast evaluation); ``shuffle`` is for training.
        """
        order = list(range(len(self)))
        if by_length:
            order.sort(key=lambda i: len(self.input_ids[i]))
        elif shuffle:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
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
