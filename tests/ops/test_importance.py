"""Importance scores decide which heads, neurons and layers go."""

from __future__ import annotations

import pytest
import torch

from autocompress.tasks.batches import encode
from autocompress.tasks.data import Examples
from autocompress.ops.importance import layer_importance, unit_importance
from autocompress.models.adapters import adapter_for
from autocompress.ops.prune import ffn_magnitude, head_magnitude
from conftest import sentiment_rows, tiny_bert


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
