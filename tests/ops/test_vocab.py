"""Vocabulary pruning: the kept rows answer exactly as before, dropped ids read as the fallback token."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert, tiny_distilbert

from autocompress.errors import PlanError
from autocompress.ops.vocab import (
    KeptVocabulary, choose_vocabulary, prune_vocabulary_, token_counts, word_embeddings,
)

UNK, PAD, CLS, SEP = 1, 0, 2, 3


def test_counts_and_choice_keep_frequent_ids_and_the_special_ones() -> None:
    counts = token_counts([[2, 7, 7, 9, 3], [2, 7, 11, 3], []], vocab_size=16)
    assert counts[7] == 3 and counts[9] == 1 and counts[2] == 2 and counts.sum() == 9
    once = choose_vocabulary(counts, 1, always=[PAD, CLS, SEP], fallback=UNK)
    assert once.kept.tolist() == [0, 1, 2, 3, 7, 9, 11]
    twice = choose_vocabulary(counts, 2, always=[PAD, CLS, SEP], fallback=UNK)
    assert twice.kept.tolist() == [0, 1, 2, 3, 7]
    assert twice.dropped_share([[2, 7, 9, 11, 3]], 16) == pytest.approx(2 / 5)
    lookup = twice.lookup(16)
    assert lookup[7] == 4 and lookup[9] == lookup[UNK] == 1 and lookup[15] == 1
    with pytest.raises(PlanError, match="at least 1"):
        choose_vocabulary(counts, 0, always=[], fallback=UNK)


@pytest.mark.parametrize("make", [tiny_bert, tiny_distilbert])
def test_a_pruned_model_gives_the_same_logits_on_kept_ids_and_unk_for_dropped_ones(make) -> None:
    model = make().eval()
    vocab = int(model.config.vocab_size)
    texts = [[CLS, 5, 6, 7, 8, SEP], [CLS, 9, 5, SEP]]
    choice = choose_vocabulary(token_counts(texts, vocab), 1, always=[PAD, CLS, SEP], fallback=UNK)
    pruned = copy.deepcopy(model)
    table = prune_vocabulary_(pruned, choice)
    assert isinstance(word_embeddings(pruned), KeptVocabulary) and table.num_embeddings == len(choice.kept) == 9
    assert table.full_vocab_size == vocab and pruned.config.vocab_size == vocab  # ids of the full vocabulary go in
    kept = torch.tensor([[CLS, 5, 6, 7, 8, SEP, PAD]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    with torch.inference_mode():
        assert torch.equal(pruned(input_ids=kept, attention_mask=mask).logits, model(input_ids=kept, attention_mask=mask).logits)
        unseen = torch.tensor([[CLS, 5, 20, 21, SEP]])
        as_unk = torch.tensor([[CLS, 5, UNK, UNK, SEP]])
        assert torch.equal(pruned(input_ids=unseen).logits, model(input_ids=as_unk).logits)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with pytest.raises(PlanError, match="pruned already"):
        prune_vocabulary_(pruned, choice)
