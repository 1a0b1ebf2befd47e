"""Weight-only int8 and group-wise int4 Linears: their numbers, their bytes, a plan that uses them, and a round trip."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save
from torch import nn
from transformers.pytorch_utils import Conv1D

from autocompress.models.adapters import adapter_for
from autocompress.ops import apply_bits_, apply_plan, apply_structure_, simulated_widths
from autocompress.ops import weight_only
from autocompress.ops.pack import packed_tensors, unpack_
from autocompress.ops.quantize import Int8Embedding, bits_summary
from autocompress.ops.size import model_size
from autocompress.ops.weight_only import GROUP_SIZE, WeightOnlyLinear, weight_only_kernel
from autocompress.schema.plan import CompressionPlan, LayerPlan


def _module(kind: str, n_in: int, n_out: int, bias: bool) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(n_in, n_out, bias=bias)
    conv = Conv1D(n_out, n_in)  # GPT-2's projection: weight (in, out), always a bias
    with torch.no_grad():
        conv.weight.normal_(0, 0.2)
        conv.bias.normal_(0, 0.1)
    return conv


def _float_weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().T if isinstance(module, Conv1D) else module.weight.detach()


def _reference(x: torch.Tensor, q: WeightOnlyLinear) -> torch.Tensor:
    """What the kernels compute: bfloat16 inputs times the dequantised weight, the product in bfloat16, plus the bias."""
    y = F.linear(x.to(torch.bfloat16).float(), q.dequantized_weight()).to(torch.bfloat16).float()
    return y if q.bias is None else y + q.bias


# ----------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize(("kind", "bias"), [("linear", True), ("linear", False), ("conv1d", True)])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", [(96, 64), (50, 40), (32, 3)])  # (in, out): kernel-friendly, padded inputs, few outputs
def test_a_weight_only_linear_computes_its_dequantised_weight(kind: str, bias: bool, bits: int, shape) -> None:
    n_in, n_out = shape
    module = _module(kind, n_in, n_out, bias)
    q = WeightOnlyLinear.from_float(module, bits)
    x = torch.randn(2, 5, n_in, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, expected, exact = q(x), _reference(x, q), module(x)
    assert got.shape == (2, 5, n_out) and got.dtype == torch.float32
    # the product is rounded to bfloat16 (8 significant bits) by the kernel and by the reference
    assert (got - expected).abs().max() <= 2**-7 * expected.abs().max()
    weight = _float_weight(module)
    if bits == 8:  # symmetric per output channel: codes -127..127, within half a step of the float weight
        codes, step = q.codes(), q.scales.float()[:, None]
        assert codes.dtype == torch.int8 and codes.abs().max() <= 127
    else:  # min-max per group of 32 inputs: codes 0..15, within half a step
        codes = q.codes()
        assert codes.min() >= 0 and codes.max() <= 15 and codes.shape == (n_out, n_in)
        step = q.scales_and_zeros[..., 0].float().T.repeat_interleave(GROUP_SIZE, dim=1)[:, :n_in]
    assert ((q.dequantized_weight() - weight).abs() <= step / 2 + 2e-3 * weight.abs().max()).all()
    assert (got - exact).abs().max() < (0.02 if bits == 8 else 0.1) * exact.abs().max()


def test_the_input_dtype_comes_back_and_the_kernel_is_named() -> None:
    q = WeightOnlyLinear.from_float(_module("linear", 64, 32, True), 4)
    x = torch.randn(3, 64)
    assert q(x.to(torch.bfloat16)).dtype == torch.bfloat16 and q(x).dtype == torch.float32
    if hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        assert q.kernel == weight_only_kernel(4, "cpu") == "aten._weight_int4pack_mm_for_cpu"
    if hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        assert weight_only_kernel(8, "cpu") == "aten._weight_int8pack_mm"


@pytest.mark.parametrize("bits", [8, 4])
def test_without_a_kernel_it_computes_the_same_with_its_dequantised_weight(bits: int, monkeypatch) -> None:
    q = WeightOnlyLinear.from_float(_module("linear", 50, 40, True), bits)
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        kernel = q(x)
    monkeypatch.setattr(weight_only, "_kernel_runs", lambda bits, device_type: False)
    assert weight_only_kernel(bits, "cpu") is None and q.kernel is None
    with torch.no_grad():
        fallback = q(x)
    assert (fallback - kernel).abs().max() <= 2**-7 * kernel.abs().max()
    assert bits_summary(CompressionPlan.uniform(2, bits=bits, weight_scheme="weight_only"))["kernels"] == {str(bits): None}


def test_changing_the_codes_is_seen_by_the_next_call() -> None:
    q = WeightOnlyLinear.from_float(_module("linear", 64, 16, False), 8)
    x = torch.randn(2, 64)
    before = q(x)
    with torch.no_grad():
        q.weight_int8.neg_()
    assert torch.allclose(q(x), -before, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("bits", [8, 4])
def test_the_kernel_layout_is_made_once_not_on_every_call(bits: int, monkeypatch) -> None:
    q = WeightOnlyLinear.from_float(_module("linear", 40, 20, False), bits)  # padded on both sides at 4 bits
    made = []
    original = weight_only._aligned
    monkeypatch.setattr(weight_only, "_aligned", lambda t: made.append(t.shape) or original(t))
    x = torch.randn(1, 40)
    first = q(x)
    per_call = len(made)  # the input is aligned on every call; the weight and its scales only once
    assert torch.equal(q(x), first) and torch.equal(q(x), first)
    assert len(made) == per_call + 2 and per_call == 3


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("offset", [1, 8])
def test_state_read_at_any_offset_computes_the_same(bits: int, offset: int) -> None:
    # a tensor read from a file (safetensors) can start anywhere in its buffer; the kernels read aligned blocks
    q = WeightOnlyLinear.from_float(_module("linear", 64, 96, True), bits)
    x = torch.randn(1024, 64)  # enough rows for the kernel's blocked path
    expected = q(x)
    for name, t in list(q._buffers.items()):
        if t is None:
            continue
        raw = t.contiguous().view(torch.uint8).reshape(-1)
        buf = torch.zeros(raw.numel() + offset, dtype=torch.uint8)
        buf[offset:] = raw
        q._buffers[name] = buf[offset:].view(t.dtype).view(t.shape) if offset % t.element_size() == 0 else \
            torch.frombuffer(bytearray(buf[offset:].numpy().tobytes()), dtype=t.dtype).view(t.shape)
    x_moved = torch.zeros(x.numel() + 1)[1:].view(x.shape)
    x_moved.copy_(x)
    assert torch.equal(q(x_moved), expected)


# -------------------------------------------------------------------------------------- bytes
def test_an_int4_layer_ships_as_half_a_byte_a_weight_plus_a_scale_and_zero_per_group() -> None:
    n_in, n_out = 256, 128
    float_layer = nn.Sequential(nn.Linear(n_in, n_out))
    packed = {}
    for bits in (32, 8, 4):
        layer = copy.deepcopy(float_layer)
        if bits < 32:
            weight_only.quantize_weight_only_(layer, bits)
        tensors, _ = packed_tensors(layer)
        packed[bits] = sum(t.numel() * t.element_size() for t in tensors.values())
    bias = 4 * n_out
    assert packed[32] == 4 * n_in * n_out + bias
    assert packed[8] == n_in * n_out + 2 * n_out + bias  # int8 codes, a bfloat16 scale per channel
    assert packed[4] == n_in * n_out // 2 + (n_in // GROUP_SIZE) * n_out * 2 * 2 + bias  # nibbles, bf16 scale + zero a group
    assert packed[4] / packed[32] < 1 / 6  # an eighth of the fp32 bytes, plus the scales and zeros


# --------------------------------------------------------------------------------------- plans
def _weight_only(module: nn.Module) -> dict[str, int]:
    return {name: m.bits for name, m in module.named_modules() if isinstance(m, WeightOnlyLinear)}


def test_a_weight_only_plan_gives_every_linear_of_a_layer_and_the_head_its_width(lively_bert) -> None:
    model = lively_bert(layers=4)
    plan = CompressionPlan(layers=(LayerPlan(bits=8), LayerPlan(bits=4), LayerPlan(bits=32), LayerPlan(bits=2)),
                           head_bits=4, weight_scheme="weight_only")
    student = apply_plan(model, plan)
    layers = adapter_for(student).layers(student)
    assert set(_weight_only(layers[0]).values()) == {8} and len(_weight_only(layers[0])) == 6
    assert set(_weight_only(layers[1]).values()) == {4} and len(_weight_only(layers[1])) == 6
    assert _weight_only(layers[2]) == {} and _weight_only(layers[3]) == {}  # float, and simulated 2 bits
    assert isinstance(student.classifier, WeightOnlyLinear) and student.classifier.bits == 4
    assert isinstance(student.bert.pooler.dense, WeightOnlyLinear)
    assert simulated_widths(student, plan) == {"bert.encoder.layer.3": 2}
    summary = bits_summary(plan)
    assert summary["weight_only_layers"] == {"0": 8, "1": 4} and summary["simulated_layers"] == {"3": 2}
    assert summary["kernels"] == {"8": weight_only_kernel(8), "4": weight_only_kernel(4)}
    ids = torch.randint(5, 31, (16, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        eight = apply_plan(model, CompressionPlan.uniform(4, bits=8, head_bits=8, weight_scheme="weight_only"))(input_ids=ids).logits
        four = apply_plan(model, CompressionPlan.uniform(4, bits=4, head_bits=4, weight_scheme="weight_only"))(input_ids=ids).logits
    err8, err4 = (eight - reference).abs().mean(), (four - reference).abs().mean()
    assert err8 < err4 < 0.25 * reference.abs().mean()


def test_the_dynamic_scheme_is_unchanged_by_weight_only(lively_bert) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    student = apply_plan(lively_bert(layers=2), CompressionPlan.uniform(2, bits=8, head_bits=8))
    assert _weight_only(student) == {} and isinstance(student.classifier, DynamicInt8Linear)
    plan = CompressionPlan.uniform(2, bits=4)
    assert simulated_widths(apply_plan(lively_bert(layers=2), plan), plan) == {"bert.encoder.layer.0": 4,
                                                                                 "bert.encoder.layer.1": 4}


# ---------------------------------------------------------------------------------- round trip
def _plan(n: int, **settings) -> CompressionPlan:
    raw = CompressionPlan.uniform(n, heads=0.5, ffn=0.75, weight_scheme="weight_only", **settings).to_dict()
    for i, bits in enumerate([8, 4, 2, 32][:n]):
        raw["layers"][i]["bits"] = bits
    return CompressionPlan.from_dict(raw)


def test_a_packed_weight_only_model_unpacks_into_one_that_computes_exactly_the_same(lively_bert) -> None:
    model = lively_bert(layers=4).eval()
    plan = _plan(4, head_bits=4, embedding_bits=8)
    compressed = copy.deepcopy(model)
    apply_structure_(compressed, plan)
    apply_bits_(compressed, plan)
    tensors, meta = packed_tensors(compressed)
    fresh = copy.deepcopy(model)
    apply_structure_(fresh, plan)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    ids = torch.randint(0, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, compressed(input_ids=ids).logits)
    assert _weight_only(fresh) == _weight_only(compressed) and len(_weight_only(fresh)) == 14
    assert tensors["bert.encoder.layer.1.attention.self.query.weight_int4"].dtype == torch.uint8
    assert model_size(compressed).shipped_bytes == len(save(tensors, metadata=meta))


def test_layers_sharing_weight_only_linears_ship_them_once(lively_bert) -> None:
    model = lively_bert(layers=2).eval()
    raw = CompressionPlan.uniform(2, bits=4, weight_scheme="weight_only").to_dict()
    raw["share"] = [[0, 1]]
    plan = CompressionPlan.from_dict(raw)
    compressed = apply_plan(model, plan)
    tensors, meta = packed_tensors(compressed)
    assert not any(k.startswith("bert.encoder.layer.1.") for k in tensors)
    fresh = copy.deepcopy(model)
    apply_structure_(fresh, plan)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    layers = fresh.bert.encoder.layer
    assert layers[0] is layers[1] and isinstance(layers[1].output.dense, WeightOnlyLinear)
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, compressed(input_ids=ids).logits)


def test_an_exported_weight_only_model_loads_back_computing_exactly_the_same(lively_bert, tmp_path) -> None:
    from autocompress.export.saved import load as load_export
    from autocompress.export.saved import save_student
    from autocompress.tasks.kind import task_kind

    model = lively_bert(layers=3).eval()
    plan = _plan(3, head_bits=4)
    student = apply_plan(model, plan)
    save_student(tmp_path, student, plan, model.config, ["a", "b", "c"], task_kind("sequence-classification"))
    loaded = load_export(tmp_path)
    ids = torch.randint(0, model.config.vocab_size, (4, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, student(input_ids=ids).logits)
    assert _weight_only(loaded) == _weight_only(student)
    assert (tmp_path / "model.safetensors").stat().st_size == model_size(student).shipped_bytes


# -------------------------------------------------------------------------------------- decoders
def _tiny_llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tied,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    try:
        adapter_for(model)
    except Exception as exc:  # the decoder adapters are not there yet
        pytest.skip(f"no adapter for llama: {exc}")
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_a_llama_with_int4_layers_and_an_int8_head_generates_and_keeps_its_embedding(tied: bool) -> None:
    model = _tiny_llama(tied)
    table = model.get_input_embeddings().weight.detach().clone()
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    plan = CompressionPlan.uniform(2, bits=4, head_bits=8, weight_scheme="weight_only")
    student = apply_plan(model, plan)
    assert isinstance(student.lm_head, WeightOnlyLinear) and student.lm_head.bits == 8
    assert set(_weight_only(student.model.layers).values()) == {4} and len(_weight_only(student.model.layers)) == 14
    assert torch.equal(student.get_input_embeddings().weight, table)  # the tied table is not rounded
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = student.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
        reference = model(input_ids=ids).logits
        logits = student(input_ids=ids).logits
    assert out.shape == (2, 11)
    assert (logits - reference).abs().mean() < 0.25 * reference.abs().mean()
    tensors, meta = packed_tensors(student)
    fresh = copy.deepcopy(model)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, logits)


@pytest.mark.parametrize("tied", [True, False])
def test_a_decoders_token_table_can_be_8_bit_while_its_head_stays_float(tied: bool) -> None:
    model = _tiny_llama(tied)
    head = model.lm_head.weight.detach().clone()
    plan = CompressionPlan.uniform(2, embedding_bits=8)
    student = apply_plan(model, plan)
    assert isinstance(student.get_input_embeddings(), Int8Embedding)
    assert type(student.lm_head) is nn.Linear and torch.equal(student.lm_head.weight, head)
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    tensors, meta = packed_tensors(student)
    fresh = copy.deepcopy(model)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, student(input_ids=ids).logits)


def test_a_tied_4_bit_table_ships_once_for_the_table_and_its_head() -> None:
    model = _tiny_llama(tied=True)
    plan = CompressionPlan.uniform(2, embedding_bits=4)
    student = apply_plan(model, plan)
    tensors, meta = packed_tensors(student)
    assert "lm_head.weight" not in tensors and "model.embed_tokens.weight.codes4" in tensors
    fresh = copy.deepcopy(model)
    unpack_(fresh, load(save(tensors, metadata=meta)), meta)
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(fresh(input_ids=ids).logits, student(input_ids=ids).logits)


def test_a_gpt2s_conv1d_projections_and_tied_head_go_weight_only() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=32)).eval()
    try:
        adapter_for(model)
    except Exception as exc:
        pytest.skip(f"no adapter for gpt2: {exc}")
    table = model.transformer.wte.weight.detach().clone()
    plan = CompressionPlan.uniform(2, bits=4, head_bits=4, weight_scheme="weight_only")
    student = apply_plan(model, plan)
    assert not any(isinstance(m, Conv1D) for m in student.modules())
    assert set(_weight_only(student).values()) == {4} and len(_weight_only(student)) == 2 * 4 + 1
    assert torch.equal(student.transformer.wte.weight, table)
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, logits = model(input_ids=ids).logits, student(input_ids=ids).logits
    assert (logits - reference).abs().mean() < 0.25 * reference.abs().mean()


@pytest.mark.parametrize("tied", [True, False])
def test_an_exported_weight_only_llama_loads_back_computing_exactly_the_same(tied: bool, tmp_path) -> None:
    from autocompress.errors import UnknownNameError
    from autocompress.export.saved import load as load_export
    from autocompress.export.saved import save_student
    from autocompress.tasks.kind import task_kind

    try:
        kind = task_kind("causal-lm")
    except UnknownNameError as exc:
        pytest.skip(f"no causal-lm task kind: {exc}")
    model = _tiny_llama(tied)
    plan = CompressionPlan.uniform(2, bits=4, head_bits=4, weight_scheme="weight_only")
    student = apply_plan(model, plan)
    save_student(tmp_path, student, plan, model.config, [], kind)
    loaded = load_export(tmp_path)
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, student(input_ids=ids).logits)
    assert isinstance(loaded.lm_head, WeightOnlyLinear) and _weight_only(loaded) == _weight_only(student)
