"""More distillation examples from the train examples: tokens swapped for their embedding neighbours.

A task with a few thousand train examples gives a student little to learn the teacher from: a
deep cut distilled for several epochs sees the same examples again and again. Each train example
gives ``copies`` variants in which ``share`` of its tokens (never special tokens) are replaced by
one of their ``neighbours`` nearest rows of the teacher's input token-embedding table by cosine
similarity (TinyBERT's word replacement, at the token level, so a variant needs no detokenising),
among tokens of the same kind (a word piece that continues a word stays one). The teacher labels
the variants; they carry no labels of their own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from autocompress.tasks.batches import Encoded

__all__ = ["Augmented", "augment", "neighbour_table", "token_kinds"]

#: how a tokenizer marks a piece that continues a word (WordPiece) or one that starts one (BPE, SentencePiece)
_CONTINUES = "##"
_STARTS = ("Ġ", "▁")


@dataclass(frozen=True)
class Augmented:
    """The variants made, and what making them did (recorded with the study)."""

    examples: Encoded  # labels -1: the teacher labels them
    kind: str
    copies: int
    share: float
    neighbours: int
    replaced_share: float  # the share of the variants' tokens actually replaced
    seconds: float = 0.0

    def facts(self) -> dict[str, object]:
        return {"kind": self.kind, "copies": self.copies, "share": self.share, "neighbours": self.neighbours,
                "examples": len(self.examples), "replaced_share": round(self.replaced_share, 4),
                "seconds": round(self.seconds, 2)}


def token_kinds(tokens: Sequence[str]) -> list[int]:
    """For each vocabulary entry: 1 when it continues a word or starts none (WordPiece ``##x``; a
    BPE piece without its space mark), 0 otherwise. Where the vocabulary marks neither, all are 0."""
    bpe = sum(t.startswith(_STARTS) for t in tokens) > len(tokens) // 10
    if bpe:
        return [0 if t.startswith(_STARTS) else 1 for t in tokens]
    return [1 if t.startswith(_CONTINUES) else 0 for t in tokens]


@torch.no_grad()
def neighbour_table(embeddings: torch.Tensor, ids: Sequence[int], k: int, kinds: Sequence[int],
                    excluded: set[int]) -> dict[int, list[int]]:
    """For each token id in ``ids``: its ``k`` nearest other rows of ``embeddings`` by cosine
    similarity, of the same kind (``kinds``), never in ``excluded``."""
    table = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    kind = torch.tensor(list(kinds))
    banned = torch.zeros(len(table), dtype=torch.bool)
    if excluded:
        banned[torch.tensor(sorted(i for i in excluded if i < len(table)))] = True
    out: dict[int, list[int]] = {}
    wanted = [i for i in dict.fromkeys(ids) if i not in excluded and i < len(table)]
    for start in range(0, len(wanted), 1024):
        chunk = torch.tensor(wanted[start : start + 1024])
        sims = table[chunk] @ table.T
        sims[:, banned] = -2.0
        sims[torch.arange(len(chunk)), chunk] = -2.0  # not itself
        sims[kind[chunk][:, None] != kind[None, :]] = -2.0
        top = sims.topk(min(k, len(table) - 1), dim=1)
        for i, row, score in zip(chunk.tolist(), top.indices.tolist(), top.values.tolist(), strict=True):
            out[i] = [j for j, s in zip(row, score, strict=True) if s > -2.0]
    return out


def augment(data: Encoded, table: dict[int, list[int]], *, copies: int, share: float, seed: int,
            kind: str = "neighbours", neighbours: int = 0) -> Augmented:
    """``copies`` variants of every example of ``data`` (in that order, copy after copy): each
    token with neighbours in ``table`` is replaced with probability ``share`` by one of them."""
    rng = random.Random(seed)
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if data.token_type_ids is not None else None
    replaced = total = 0
    for _ in range(copies):
        for i, row in enumerate(data.input_ids):
            new = list(row)
            for pos, token in enumerate(row):
                options = table.get(token)
                if options and rng.random() < share:
                    new[pos] = options[rng.randrange(len(options))]
                    replaced += 1
            total += len(row)
            ids.append(new)
            if types is not None:
                types.append(list(data.token_type_ids[i]))  # type: ignore[index]
    labels = torch.full((len(ids),), -1, dtype=torch.long)
    return Augmented(Encoded(ids, types, labels, data.pad_id), kind, copies, share, neighbours,
                     replaced / max(1, total))
