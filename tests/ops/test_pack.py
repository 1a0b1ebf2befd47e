from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load, save
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from autocompress.errors import ModelError
from autocompress.ops.size import model_size
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_bits_, apply_structure_
from autocompress.ops.pack import _pack_bits, _unpack_bits, packed_tensors, unpack_
from autocompress.ops.quantize import Int8Embedding


def _mixed_plan(n: int) -> CompressionPlan:
    raw = CompressionPlan.uniform(n, heads=0.5, ffn=0.75).to_dict()
    for i, bits in enumerate([8, 4, 2, 32][:n]):
        raw["layers"][i]["bits"] = bits
    raw["embedding_bits"] = 8
    raw["head_bits"] = 8
    return CompressionPlan.from_dict(raw)


def _ids(model) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_codes_pack_into_a_fraction_of_a_byte_each_and_back(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (7, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = _pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-35 * bits // 8)
    assert torch.equal(_unpack_bits(packed, bits, [7, 5]), codes)


def test_a_packed_model_unpacks_into_one_that_computes_exactly_the_same(lively_bert) -> None:
    model = lively_bert(layers=4).eval()
    plan = _mixed_plan(4)
    compressed = copy.deepcopy(model)
    apply_structure_(compressed, plan)
    apply_bits_(compressed, plan)
    tensors, meta = packed_tensors(compressed)
    tensors = load(save(tensors, metadata=meta))  # through the file format itself

    fresh = copy.deepcopy(model)
    apply_structure_(fresh, plan)  # shapes only: the kept units' weights come from the file
    unpack_(fresh, tensors, meta)
    ids = _ids(model)
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, compressed.eval()(input_ids=ids).logits)
    assert isinstance(fresh.bert.encoder.layer[0].attention.self.query, DynamicInt8Linear)
    assert isinstance(fresh.classifier, DynamicInt8Linear)
    assert isinstance(fresh.bert.embeddings.word_embeddings, Int8Embedding)
    assert tensors["bert.encoder.layer.0.attention.self.query.weight.int8"].dtype == torch.int8
    four = tensors["bert.encoder.layer.1.attention.self.query.weight.codes4"]
    two = tensors["bert.encoder.layer.2.attention.self.query.weight.codes2"]
    query = fresh.bert.encoder.layer[1].attention.self.query.weight
    assert four.numel() == query.numel() // 2 and two.numel() == query.numel() // 4


def test_the_shipped_size_is_the_file_and_fewer_bits_ship_fewer_bytes(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    sizes = {}
    for bits in (32, 8, 4, 2):
        student = copy.deepcopy(model)
        plan = CompressionPlan.uniform(2, bits=bits)
        apply_structure_(student, plan)
        apply_bits_(student, plan)
        tensors, meta = packed_tensors(student)
        size = model_size(student)
        assert size.shipped_bytes == len(save(tensors, metadata=meta)) and size.megabytes == size.shipped_bytes / 1e6
        sizes[bits] = size.shipped_bytes
    assert sizes[2] < sizes[4] < sizes[8] < sizes[32]


def test_a_module_shared_by_two_layers_is_stored_once(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    alone = model_size(model).shipped_bytes
    layers = model.bert.encoder.layer
    layers[1] = layers[0]
    tensors, meta = packed_tensors(model)
    assert not any(k.startswith("bert.encoder.layer.1.") for k in tensors)
    assert model_size(model).shipped_bytes < 0.9 * alone
    fresh = lively_bert(layers=2).eval()
    fresh.bert.encoder.layer[1] = fresh.bert.encoder.layer[0]
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    ids = _ids(model)
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_file_that_does_not_fit_the_model_is_refused(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    tensors, meta = packed_tensors(model)
    del tensors["classifier.bias"]
    with pytest.raises(ModelError, match="lacks classifier.bias"):
        unpack_(lively_bert(layers=2), tensors, meta)
    with pytest.raises(ModelError, match="no readable"):
        unpack_(lively_bert(layers=2), tensors, {"format": "pt"})


def test_weights_changed_after_rounding_cannot_ship_as_codes(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    plan = CompressionPlan.uniform(2, bits=4)
    apply_bits_(model, plan)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight.add_(0.01)
    with pytest.raises(ModelError, match="changed after it was rounded"):
        packed_tensors(model)


def test_4_bit_embeddings_are_simulated_in_float_and_ship_as_packed_codes(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    raw = CompressionPlan.uniform(2).to_dict()
    raw["embedding_bits"] = 4
    plan = CompressionPlan.from_dict(raw)
    assert plan.simulated and "4-bit embeddings (simulated)" in plan.describe()
    student = copy.deepcopy(model)
    apply_structure_(student, plan)
    apply_bits_(student, plan)
    table = student.bert.embeddings.word_embeddings
    assert table.weight.dtype == torch.float32 and all(len(row.unique()) <= 16 for row in table.weight)
    tensors, meta = packed_tensors(student)
    codes = tensors["bert.embeddings.word_embeddings.weight.codes4"]
    assert codes.numel() == table.weight.numel() // 2
    tables = [m for m in model.bert.embeddings.modules() if isinstance(m, torch.nn.Embedding)]
    expected = sum(t.weight.numel() * 4 - t.weight.numel() // 2 - t.weight.shape[0] * 8 for t in tables)  # 4 bytes -> half a byte
    saved = model_size(model).shipped_bytes - model_size(student).shipped_bytes
    assert 0.9 * expected < saved <= expected
    fresh = copy.deepcopy(model)
    apply_structure_(fresh, plan)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    ids = _ids(model)
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, student(input_ids=ids).logits)


def test_a_conv1d_rounded_to_4_bits_ships_as_codes_and_comes_back() -> None:
    from transformers.pytorch_utils import Conv1D

    from autocompress.ops.quantize import fake_quantize_

    torch.manual_seed(0)
    block = torch.nn.Sequential(Conv1D(24, 40))  # GPT-2's projection: weight (in, out)
    fake_quantize_(block, 4)
    tensors, meta = packed_tensors(block)
    assert tensors["0.weight.codes4"].numel() == 40 * 24 // 2 and tensors["0.weight.scale"].shape == (1, 24)
    fresh = torch.nn.Sequential(Conv1D(24, 40))
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    assert torch.equal(fresh[0].weight, block[0].weight)
