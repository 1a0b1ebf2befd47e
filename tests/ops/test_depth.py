"""Student depth: exactly the planned layers survive, in their original order, and still compute."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert
from tiny_decoders import DECODERS, decoder_batch, tiny_decoder

from autocompress.errors import PlanError
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan, LayerPlan
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


# ------------------------------------------------------------------------------------ decoders
def _greedy_without_cache(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding that recomputes the whole prefix at every step (no key/value cache)."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_shallower_pruned_decoder_generates_with_its_cache_what_it_computes_without(family: str, attn: str) -> None:
    """The cache is indexed by each layer's position: after dropping layers and pruning heads, key/value
    groups and neurons, greedy generation with the cache gives the tokens of recomputing the prefix."""
    model = tiny_decoder(family, layers=4, attn=attn)
    plan = CompressionPlan(layers=(LayerPlan(keep=False), LayerPlan(heads=0.5, kv=0.5, ffn=0.5),
                                   LayerPlan(keep=False), LayerPlan(heads=0.25, ffn=0.75)))
    student = apply_plan(model, plan, bits=False)
    adapter = adapter_for(student)
    assert [adapter.attention(layer).module.layer_idx for layer in adapter.layers(student)] == [0, 1]
    assert adapter.info(student).num_layers == 2
    prompt = torch.tensor([[5, 17, 42, 8, 61], [9, 3, 77, 30, 12]])
    with torch.no_grad():
        cached = student.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(cached, _greedy_without_cache(student, prompt, 12))
    assert not torch.equal(cached, _greedy_without_cache(model, prompt, 12))  # the student is another model


def test_a_decoder_keeps_the_attention_kind_of_each_kept_layer() -> None:
    """Qwen2 picks each layer's mask (full or sliding window) from config.layer_types: the kept layers keep theirs."""
    model = tiny_decoder("qwen2", layers=4, use_sliding_window=True, sliding_window=4, max_window_layers=2)
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    student = apply_plan(model, CompressionPlan.uniform(4, keep=[1, 2]), bits=False)
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    assert student.config.num_hidden_layers == 2
    assert [layer.self_attn.sliding_window for layer in student.model.layers] == [None, 4]
    prompt = torch.tensor([[5, 17, 42, 8, 61, 9, 3]])
    with torch.no_grad():
        cached = student.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(cached, _greedy_without_cache(student, prompt, 8))
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2  # the teacher's untouched


def test_skipping_a_decoder_layer_and_putting_it_back_restores_the_model() -> None:
    """What layer scoring does: set the layers without one, then all of them again."""
    model = tiny_decoder("qwen3", layers=3, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    before = model.config.layer_types
    adapter = adapter_for(model)
    layers = list(adapter.layers(model))
    reference = model(**decoder_batch()).logits.detach()
    adapter.set_layers_(model, layers[:1] + layers[2:])
    assert model.config.layer_types == [before[0], before[2]]
    assert [layer.self_attn.layer_idx for layer in adapter.layers(model)] == [0, 1]
    adapter.set_layers_(model, layers)
    assert model.config.layer_types == before and model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in adapter.layers(model)] == [0, 1, 2]
    assert torch.equal(model(**decoder_batch()).logits.detach(), reference)
