"""Quantisation-aware training: the float model inside ``rounded`` computes what the shipped quantised
model computes, gradients reach the float weights, and the model comes out as it went in."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.ops import apply_bits_, apply_plan
from autocompress.ops.quantize import kernel_roundings
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.train.quant_aware import rounded, straight_through

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ops"))
from tiny_decoders import decoder_batch, tiny_decoder  # noqa: E402

ENCODER_PLANS = {
    "dynamic int8, head too": CompressionPlan.uniform(4, bits=8, head_bits=8),
    "weight-only int8": CompressionPlan.uniform(4, bits=8, weight_scheme="weight_only"),
    "weight-only int4, int8 head": CompressionPlan.uniform(4, bits=4, weight_scheme="weight_only", head_bits=8),
    "mixed, simulated 2 bits, 8-bit tables": CompressionPlan(
        layers=(LayerPlan(bits=8), LayerPlan(bits=32), LayerPlan(bits=2), LayerPlan(bits=4)), embedding_bits=8),
}


def _ids(batch: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 30, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ENCODER_PLANS))
def test_the_float_model_computes_as_the_quantised_one_inside_the_block(lively_bert, name):
    """Rows one at a time: the dynamic kernel takes each example's own activation range."""
    plan = ENCODER_PLANS[name]
    model = lively_bert(layers=4)
    shipped = apply_plan(model, plan)
    roundings = kernel_roundings(model, plan)
    assert roundings
    ids = _ids()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        want = torch.cat([shipped(input_ids=ids[i : i + 1]).logits for i in range(len(ids))])
        with rounded(model, roundings):
            got = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    # the weight-only kernels round their products to bfloat16, which training leaves out
    tolerance, closer = (2e-2, 3) if "weight-only" in name else (1e-4, 100)
    assert (got - want).abs().max() <= tolerance * want.abs().max()
    assert (plain - want).abs().max() > closer * (got - want).abs().max(), "the rounding changed nothing"
    assert torch.equal(after, plain), "the model is float again after the block"


@pytest.mark.parametrize("scheme,bits", [("dynamic", 8), ("weight_only", 8), ("weight_only", 4)])
def test_a_decoder_with_a_tied_head_rounds_head_and_table_each_its_own_way(scheme, bits):
    model = tiny_decoder("llama", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    plan = CompressionPlan.uniform(3, bits=bits, weight_scheme=scheme, head_bits=8, embedding_bits=8)
    shipped = apply_plan(model, plan)
    roundings = kernel_roundings(model, plan)
    assert {"lm_head", "model.embed_tokens"} <= {r.module for r in roundings}
    ids = decoder_batch()["input_ids"][:1]
    with torch.no_grad():
        want = shipped(input_ids=ids).logits
        with rounded(model, roundings):
            got = model(input_ids=ids).logits
    assert (got - want).abs().max() <= 3e-2 * want.abs().max()
    assert model.lm_head.weight is model.model.embed_tokens.weight, "still tied afterwards"


def test_gpt2_conv1d_projections_round_per_output_column():
    model = tiny_decoder("gpt2")
    plan = CompressionPlan.uniform(3, bits=8)
    shipped = apply_plan(model, plan)
    ids = decoder_batch()["input_ids"][:1]
    with torch.no_grad():
        want = shipped(input_ids=ids).logits
        with rounded(model, kernel_roundings(model, plan)):
            got = model(input_ids=ids).logits
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_gradients_pass_straight_through_to_the_same_float_parameters(lively_bert):
    model = lively_bert(layers=2)
    plan = CompressionPlan.uniform(2, bits=8)
    before = {name: p for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in before.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rounded(model, kernel_roundings(model, plan)):
        loss = model(input_ids=_ids()).logits.pow(2).mean()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), "the optimiser's parameters are the model's"
    q = "bert.encoder.layer.0.attention.self.query.weight"
    assert before[q].grad is not None and before[q].grad.abs().sum() > 0
    assert not torch.equal(after[q], values[q]), "the float weight was trained"
    assert type(model.bert.encoder.layer[0].attention.self.query) is nn.Linear


def test_straight_through_is_the_rounding_forward_and_the_identity_backward():
    x = torch.tensor([0.2, 0.7, 1.4], requires_grad=True)
    y = straight_through(x, torch.round)
    assert y.tolist() == [0.0, 1.0, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_a_float_plan_rounds_nothing(lively_bert):
    assert kernel_roundings(lively_bert(layers=2), CompressionPlan.uniform(2)) == []


def test_shared_and_dropped_layers_round_each_kept_module_once(lively_bert):
    model = lively_bert(layers=4)
    plan = CompressionPlan.uniform(4, bits=8, keep=[0, 2])
    student = copy.deepcopy(model)
    from autocompress.ops import apply_structure_

    apply_structure_(student, plan)
    roundings = kernel_roundings(student, plan)
    assert len({r.module for r in roundings}) == len(roundings) == 2 * 6  # q, k, v, o, FFN in and out per layer
    quantised = copy.deepcopy(student)
    apply_bits_(quantised, plan)
    with torch.no_grad():
        want = torch.cat([quantised(input_ids=_ids()[i : i + 1]).logits for i in range(3)])
        with rounded(student, roundings):
            got = student(input_ids=_ids()).logits
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
