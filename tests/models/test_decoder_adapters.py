"""Decoder families: Llama, Qwen2, Qwen3, Mistral and GPT-2 causal LMs are located through their
adapters (layers, grouped-query attention, gated or plain MLP, embeddings, LM head), read from their
configs alone, loaded, and told apart from encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autocompress.errors import ModelError
from autocompress.models.adapters import (
    SUPPORTED_FAMILIES,
    adapter_for,
    arch_from_config,
    arch_info,
    check_max_length,
    load_causal_lm,
    load_classifier,
    peek_arch,
)

DECODERS = ["llama", "qwen2", "qwen3", "mistral", "gpt2"]
LAYERS, HEADS, KV, HIDDEN, FFN, VOCAB = 2, 4, 2, 32, 48, 100


def _config(family: str, **extra):
    from transformers import AutoConfig

    if family == "gpt2":
        dims = dict(n_layer=LAYERS, n_head=HEADS, n_embd=HIDDEN, n_inner=FFN, n_positions=40)
    else:
        dims = dict(num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV, hidden_size=HIDDEN,
                    intermediate_size=FFN, head_dim=HIDDEN // HEADS, max_position_embeddings=40)
    return AutoConfig.for_model(family, vocab_size=VOCAB, attn_implementation="eager", **{**dims, **extra})


def _model(family: str, **extra):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(_config(family, **extra)).eval()


def test_decoder_families_are_supported() -> None:
    assert {"llama", "qwen2", "qwen3", "mistral", "gpt2"} <= set(SUPPORTED_FAMILIES)


@pytest.mark.parametrize("family", DECODERS)
def test_arch_is_read_from_each_decoder_s_config(family: str) -> None:
    arch = arch_from_config(_config(family))
    kv = HEADS if family == "gpt2" else KV  # GPT-2: every head has its own keys and values
    assert (arch.family, arch.num_layers, arch.num_heads, arch.num_kv_heads) == (family, LAYERS, HEADS, kv)
    assert (arch.intermediate_size, arch.hidden_size, arch.head_size, arch.decoder) == (FFN, HIDDEN, HIDDEN // HEADS, True)
    assert arch_info(_model(family)) == arch


def test_gpt2_without_n_inner_has_four_times_hidden_neurons_and_its_positions_limit_the_length() -> None:
    cfg = _config("gpt2", n_inner=None)
    assert arch_from_config(cfg).intermediate_size == 4 * HIDDEN
    check_max_length(cfg, 40)
    with pytest.raises(ModelError, match="task.max_length is 41 tokens .* at most 40"):
        check_max_length(cfg, 41)


def test_qwen3_head_size_is_its_own_setting() -> None:
    """Qwen3's heads need not split the hidden size: 4 heads of 16 features on a hidden size of 32."""
    model = _model("qwen3", head_dim=16)
    assert arch_info(model).head_size == 16
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    parts = adapter.attention(layer)
    assert (parts.num_heads, parts.num_kv_heads, parts.head_size) == (HEADS, KV, 16)
    assert adapter.kv_features(layer) == KV * 16


@pytest.mark.parametrize("family", DECODERS)
def test_adapter_finds_each_decoder_s_parts(family: str) -> None:
    model = _model(family)
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    assert len(layers) == LAYERS
    kv = HEADS if family == "gpt2" else KV
    for layer in layers:
        parts = adapter.attention(layer)
        q, k, v, o = parts.matrices()
        assert (parts.num_heads, parts.num_kv_heads) == (HEADS, kv)
        assert q.shape == (HIDDEN, HIDDEN) and k.shape == v.shape == (kv * HIDDEN // HEADS, HIDDEN)
        assert o.shape == (HIDDEN, HIDDEN)
        assert adapter.kv_features(layer) == kv * HIDDEN // HEADS
        up, gate, down = adapter.ffn(layer).matrices()
        assert up.shape == (FFN, HIDDEN) and down.shape == (HIDDEN, FFN) and adapter.ffn(layer).width == FFN
        assert (gate is None) == (family == "gpt2")  # Llama-like MLPs are gated (SwiGLU)
    assert adapter.head_modules(model) == ["lm_head"]
    tables = adapter.embedding_tables(model)
    expected = ["transformer.wte", "transformer.wpe"] if family == "gpt2" else ["model.embed_tokens"]
    assert list(tables) == expected
    assert adapter.embeddings(model) is model.get_input_embeddings() is tables[expected[0]]


def test_an_encoder_s_key_features_are_its_key_projection_s_width() -> None:
    from conftest import tiny_bert

    model = tiny_bert(heads=4, hidden=32)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    assert adapter.kv_features(layer) == layer.attention.self.key.out_features == 32
    assert list(adapter.embedding_tables(model)) == ["bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings",
                                                     "bert.embeddings.token_type_embeddings"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_saved_decoder_loads_as_a_causal_lm(tmp_path: Path, family: str) -> None:
    model = _model(family)
    model.save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path)).eval()
    assert arch_info(loaded) == arch_info(model) == peek_arch(str(tmp_path))
    assert next(loaded.parameters()).dtype == torch.float32
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


def test_decoders_and_encoders_are_not_taken_for_each_other(tmp_path: Path) -> None:
    from conftest import tiny_bert

    _model("llama").save_pretrained(tmp_path / "llama")
    with pytest.raises(ModelError, match="is a llama causal language model, not an encoder"):
        load_classifier(str(tmp_path / "llama"), 2)
    tiny_bert().save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelError, match="is a bert encoder, not a causal language model; supported decoders: gpt2, "
                                         "llama, mistral, qwen2, qwen3"):
        load_causal_lm(str(tmp_path / "bert"))


def test_a_missing_decoder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(str(tmp_path / "nowhere" / "x" / "y"))
