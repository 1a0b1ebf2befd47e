from __future__ import annotations

import copy

import pytest
import torch

from autocompress.errors import PlanError
from autocompress.ops.size import model_size
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_bits_, apply_plan, apply_structure_


def _shared(n: int, share: list[list[int]], keep: list[int] | None = None, **kw) -> CompressionPlan:
    raw = CompressionPlan.uniform(n, keep=keep, **kw).to_dict()
    raw["share"] = share
    return CompressionPlan.from_dict(raw)


def test_a_sharing_group_runs_its_first_layers_module_at_every_member(lively_bert, token_batch) -> None:
    model = lively_bert(layers=4).eval()
    plan = _shared(4, [[0, 2, 3]], heads=0.5)
    student = apply_plan(model, plan)
    layers = student.bert.encoder.layer
    assert layers[0] is layers[2] is layers[3] and layers[1] is not layers[0]
    assert plan.shared_positions == {2: 0, 3: 0}
    # the shared student computes what the model computes with layer 0 repeated in place of 2 and 3
    repeated = apply_plan(model, CompressionPlan.uniform(4, heads=0.5))
    repeated.bert.encoder.layer[2] = repeated.bert.encoder.layer[0]
    repeated.bert.encoder.layer[3] = repeated.bert.encoder.layer[0]
    with torch.inference_mode():
        assert torch.equal(student(**token_batch).logits, repeated(**token_batch).logits)
    # size counts the shared weights once
    alone = model_size(apply_plan(model, CompressionPlan.uniform(4, heads=0.5)))
    layer_bytes = sum(p.numel() * 4 for p in layers[1].parameters())
    assert model_size(student).shipped_bytes == pytest.approx(alone.shipped_bytes - 2 * layer_bytes, abs=4000)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_shared_int8_layer_is_quantised_once_and_packed_once(lively_bert, token_batch) -> None:
    from safetensors.torch import load, save

    from autocompress.ops.pack import packed_tensors, unpack_

    model = lively_bert(layers=4).eval()
    plan = _shared(4, [[0, 1], [2, 3]], bits=8)
    student = apply_plan(model, plan)
    layers = student.bert.encoder.layer
    assert layers[0] is layers[1] and layers[2] is layers[3]
    tensors, meta = packed_tensors(student)
    assert not any(k.startswith(("bert.encoder.layer.1.", "bert.encoder.layer.3.")) for k in tensors)
    fresh = copy.deepcopy(model)
    apply_structure_(fresh, plan)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    assert fresh.bert.encoder.layer[0] is fresh.bert.encoder.layer[1]
    with torch.inference_mode():
        assert torch.equal(fresh(**token_batch).logits, student(**token_batch).logits)


def test_training_a_shared_layer_moves_every_position_together(lively_bert, token_batch) -> None:
    model = lively_bert(layers=2)
    student = copy.deepcopy(model)
    apply_structure_(student, _shared(2, [[0, 1]]))
    params = list(student.parameters())
    assert len(params) < len(list(model.parameters()))  # one set of weights for both layers
    opt = torch.optim.SGD(params, lr=0.1)
    student.train()
    student(**token_batch).logits.sum().backward()
    opt.step()
    layers = student.bert.encoder.layer
    assert layers[0] is layers[1]
    assert not torch.equal(layers[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)


@pytest.mark.parametrize(("share", "keep", "message"), [
    ([[0, 1]], [0, 2, 3], "spans layer 1, which the plan drops"),
    ([[0]], None, "two or more distinct layers"),
    ([[2, 0]], None, "two or more distinct layers in order"),
    ([[0, 1], [1, 2]], None, "layer 1 is in two sharing groups"),
    ([[0, 7]], None, "names layer 7"),
])
def test_a_sharing_group_that_cannot_be_built_is_refused(share, keep, message) -> None:
    with pytest.raises(PlanError, match=message):
        _shared(4, share, keep=keep)


def test_a_follower_must_be_shaped_like_its_leader() -> None:
    raw = CompressionPlan.uniform(3).to_dict()
    raw["layers"][1]["heads"] = 0.5
    raw["share"] = [[0, 1]]
    with pytest.raises(PlanError, match="layer 1 shares layer 0's weights, so it needs the same heads"):
        CompressionPlan.from_dict(raw)


def test_a_plan_without_sharing_is_stored_as_before_and_one_with_it_says_so() -> None:
    assert "share" not in CompressionPlan.uniform(3).to_dict()
    plan = _shared(6, [[0, 2], [4, 5]], keep=[0, 2, 4, 5])
    assert CompressionPlan.from_yaml(plan.to_yaml()) == plan
    assert "shared layers 1+2; 3+4" in plan.describe()


def test_bits_after_sharing_leave_one_quantised_module(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    plan = _shared(2, [[0, 1]], bits=4)
    student = copy.deepcopy(model)
    apply_structure_(student, plan)
    before = student.bert.encoder.layer[0].output.dense.weight.clone()
    apply_bits_(student, plan)
    once = copy.deepcopy(model)
    apply_structure_(once, CompressionPlan.uniform(2, bits=4))
    apply_bits_(once, CompressionPlan.uniform(2, bits=4))
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight, once.bert.encoder.layer[0].output.dense.weight)
    assert not torch.equal(before, student.bert.encoder.layer[0].output.dense.weight)


def test_sharing_layers_of_a_decoder_is_refused() -> None:
    """Each decoder layer is one key/value-cache slot: two positions running one module would share it."""
    from tiny_decoders import tiny_decoder

    model = tiny_decoder("llama", layers=3)
    with pytest.raises(PlanError, match="layer sharing .* not supported for llama decoders: shared layers would write "
                                        "one key/value-cache slot"):
        apply_plan(model, _shared(3, [[0, 2]]))
