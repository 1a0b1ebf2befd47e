"""Importance scores decide which heads, neurons and layers go."""

from __future__ import annotations

import pytest
import torch

from autocompress.tasks.batches import Encoded, encode
from autocompress.tasks.data import Examples
from autocompress.ops.importance import layer_importance, unit_importance
from autocompress.models.adapters import adapter_for
from autocompress.ops.prune import ffn_magnitude, head_magnitude
from conftest import sentiment_rows, tiny_bert
from tiny_decoders import VOCAB, next_token_loss, tiny_decoder


def _calibration(tiny_model_dir):
    from transformers import AutoTokenizer

    rows = sentiment_rows(64, seed=3)
    names = ["negative", "neutral", "positive"]
    ex = Examples([r["sentence"] for r in rows], [names.index(r["sentiment"]) for r in rows])
    return encode(AutoTokenizer.from_pretrained(tiny_model_dir), ex, 16)


def test_magnitude_scores_are_the_l1_criterion():
    model = tiny_bert()
    scores = unit_importance(model, "magnitude")
    adapter = adapter_for(model)
    for i, layer in enumerate(adapter.layers(model)):
        assert torch.equal(scores.heads[i], head_magnitude(adapter.attention(layer)))
        assert torch.equal(scores.ffn[i], ffn_magnitude(adapter.ffn(layer)))


def test_taylor_scores_a_dead_head_and_neuron_zero_and_leaves_the_model_alone(tiny_model_dir):
    model = tiny_bert()
    adapter = adapter_for(model)
    att = adapter.attention(adapter.layers(model)[1])
    ffn = adapter.ffn(adapter.layers(model)[2])
    h = att.head_size
    with torch.no_grad():  # head 2 of layer 1 and neuron 5 of layer 2 contribute nothing
        att.out.weight[:, 2 * h : 3 * h] = 0
        att.value.weight[2 * h : 3 * h] = 0
        att.query.weight[2 * h : 3 * h] = 0
        att.key.weight[2 * h : 3 * h] = 0
        ffn.up.weight[5] = 0
        ffn.down.weight[:, 5] = 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = unit_importance(model, "taylor", _calibration(tiny_model_dir))
    assert scores.heads[1].shape == (4,) and scores.ffn[2].shape == (64,)
    assert scores.heads[1][2] == 0 and scores.heads[1].argmin() == 2
    assert scores.ffn[2][5] == 0
    assert (scores.heads[0] > 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "scoring must not train the model"
    assert all(p.grad is None for p in model.parameters())


def test_layer_importance_is_the_loss_increase_when_the_layer_is_skipped(tiny_model_dir):
    import copy

    import torch.nn.functional as F

    model = tiny_bert()
    data = _calibration(tiny_model_dir)
    scores = layer_importance(model, data)
    assert scores.shape == (4,)
    assert len(adapter_for(model).layers(model)) == 4, "the model keeps all its layers"

    def loss(m):
        with torch.no_grad():
            return sum(
                F.cross_entropy(m(**inp).logits, data.labels[idx], reduction="sum").item() for idx, inp in data.batches(64)
            ) / len(data)

    skipped = copy.deepcopy(model)
    adapter = adapter_for(skipped)
    layers = list(adapter.layers(skipped))
    adapter.set_layers_(skipped, layers[:2] + layers[3:])
    assert scores[2].item() == pytest.approx(loss(skipped) - loss(model), abs=1e-5)


# ------------------------------------------------------------------------------------ decoders
def _documents(n: int = 12, length: int = 10, max_length: int = 12, seed: int = 0) -> Encoded:
    """Token documents as a causal LM task encodes them: labels are the tokens, padded with -100."""
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, VOCAB, (length - i % 3,), generator=g).tolist() for i in range(n)]
    labels = torch.full((n, max_length), -100, dtype=torch.long)
    for i, row in enumerate(ids):
        labels[i, : len(row)] = torch.tensor(row)
    return Encoded(ids, None, labels, 0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_taylor_scores_a_decoder_with_the_next_token_loss(family: str) -> None:
    model = tiny_decoder(family, layers=2, heads=8, kv_heads=2, hidden=64, ffn=96)
    adapter = adapter_for(model)
    parts = adapter.attention(adapter.layers(model)[1])
    per = parts.num_heads // parts.num_kv_heads
    d = parts.head_size
    dead = list(range(per))  # the query heads of the first group (GPT-2: head 0), with that group's keys and values
    q, k, v, o = parts.matrices()
    with torch.no_grad():
        for m in (q[: per * d], k[:d], v[:d], o[:, : per * d]):
            m.zero_()
        adapter.ffn(adapter.layers(model)[0]).matrices()[2][:, 7] = 0  # neuron 7's output column
        adapter.ffn(adapter.layers(model)[0]).matrices()[0][7] = 0
    before = {name: t.clone() for name, t in model.state_dict().items()}
    scores = unit_importance(model, "taylor", _documents(), batch_size=5, loss=next_token_loss)
    assert [s.shape for s in scores.heads.values()] == [(8,)] * 2
    assert [s.shape for s in scores.ffn.values()] == [(96,)] * 2
    assert (scores.heads[1][dead] == 0).all() and (scores.heads[1][per:] > 0).all()
    assert scores.ffn[0][7] == 0 and (scores.heads[0] > 0).all()
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items()), "scoring must not train the model"
    assert all(p.grad is None for p in model.parameters())


def test_layer_importance_of_a_decoder_is_its_next_token_loss_increase() -> None:
    model = tiny_decoder("qwen2", layers=3)
    data = _documents()
    scores = layer_importance(model, data, batch_size=5, loss=next_token_loss)
    assert scores.shape == (3,) and len(adapter_for(model).layers(model)) == 3

    def loss(m) -> float:
        with torch.no_grad():
            return sum(next_token_loss(m(**inp), data.labels[idx]).item() * len(idx)
                       for idx, inp in data.batches(5, by_length=True)) / len(data)

    import copy

    skipped = copy.deepcopy(model)
    adapter = adapter_for(skipped)
    layers = list(adapter.layers(skipped))
    adapter.set_layers_(skipped, layers[:1] + layers[2:])
    assert scores[1].item() == pytest.approx(loss(skipped) - loss(model), abs=1e-5)
