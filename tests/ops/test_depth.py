"""Student depth: exactly the planned layers survive, in their original order, and still compute."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan
from autocompress.ops.depth import drop_layers_


@pytest.mark.parametrize("keep", [[0, 2, 4], [0, 1, 2], [3, 4, 5], [5], [1, 3, 4, 5]])
def test_drop_layers_keeps_the_planned_layer_objects_in_order(keep: list[int]) -> None:
    model = tiny_bert(layers=6)
    adapter = adapter_for(model)
    originals = list(adapter.layers(model))
    drop_layers_(model, CompressionPlan.uniform(6, keep=keep), adapter)
    remaining = list(adapter.layers(model))
    assert len(remaining) == len(keep)
    assert all(got is originals[i] for got, i in zip(remaining, keep, strict=True))
    assert model.config.num_hidden_layers == len(keep)
    # cache indices are renumbered to the new positions
    assert [layer.attention.self.layer_idx for layer in remaining] == list(range(len(keep)))


def test_apply_plan_student_layers_equal_the_kept_base_layers() -> None:
    model = tiny_bert(layers=6)
    student = apply_plan(model, CompressionPlan.uniform(6, keep=[1, 2, 5]))
    base_layers = adapter_for(model).layers(model)
    student_layers = adapter_for(student).layers(student)
    assert len(student_layers) == 3
    for got, i in zip(student_layers, [1, 2, 5], strict=True):
        expected = base_layers[i].state_dict()
        assert got.state_dict().keys() == expected.keys()
        assert all(torch.equal(got.state_dict()[k], expected[k]) for k in expected)
    # a layer that was dropped is not among them (weights of random layers differ)
    assert not torch.equal(student_layers[0].output.dense.weight, base_layers[0].output.dense.weight)


def test_student_computes_the_kept_layers_in_sequence(token_batch) -> None:
    model = tiny_bert(layers=6)
    keep = [0, 3, 4]
    student = apply_plan(model, CompressionPlan.uniform(6, keep=keep))
    ids = token_batch["input_ids"][:1, :8]  # one unpadded row: layers can be called without a mask
    with torch.no_grad():
        out = student(input_ids=ids, output_hidden_states=True)
        hidden = model.bert.embeddings(input_ids=ids)
        for i in keep:
            hidden = model.bert.encoder.layer[i](hidden)
    assert len(out.hidden_states) == len(keep) + 1
    assert torch.allclose(out.hidden_states[-1], hidden, atol=1e-5)


def test_dropped_model_runs_on_a_padded_batch(token_batch) -> None:
    model = tiny_bert(layers=4)
    student = apply_plan(model, CompressionPlan.uniform(4, keep=[1]))
    with torch.no_grad():
        logits = student(**token_batch).logits
    assert logits.shape == (4, 3)
    assert torch.isfinite(logits).all()


def test_keeping_every_layer_changes_nothing(token_batch) -> None:
    model = tiny_bert(layers=4)
    student = apply_plan(model, CompressionPlan.uniform(4))
    with torch.no_grad():
        assert torch.equal(student(**token_batch).logits, model(**token_batch).logits)


def test_drop_layers_rejects_a_plan_for_another_depth() -> None:
    model = tiny_bert(layers=4)
    before = list(adapter_for(model).layers(model))
    with pytest.raises(PlanError, match="6 layers"):
        drop_layers_(model, CompressionPlan.uniform(6, keep=[0, 2]), adapter_for(model))
    assert list(adapter_for(model).layers(model)) == before


def test_dropping_layers_leaves_the_saved_config_loadable(tmp_path) -> None:
    model = tiny_bert(layers=4)
    student = apply_plan(model, CompressionPlan.uniform(4, keep=[0, 2]))
    student.save_pretrained(tmp_path)
    reloaded = type(student).from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
    assert model.config.num_hidden_layers == 4  # the base model's config is not touched
