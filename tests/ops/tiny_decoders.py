"""Tiny random causal language models of each decoder family, and a padded token batch for them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

VOCAB = 100
DECODERS = ["llama", "qwen2", "qwen3", "mistral", "gpt2"]


def tiny_decoder(family: str = "llama", *, layers: int = 3, heads: int = 8, kv_heads: int = 2, hidden: int = 64,
                 ffn: int = 96, head_dim: int | None = None, seed: int = 0, attn: str = "eager", **extra):
    """A ``family`` causal LM with large random weights (std 0.2: every head and neuron visibly moves
    the logits); GPT-2 gives every head its own keys and values, so ``kv_heads`` is ignored there."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if family == "gpt2":
        dims = dict(n_layer=layers, n_head=heads, n_embd=hidden, n_inner=ffn, n_positions=64)
    else:
        dims = dict(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                    hidden_size=hidden, intermediate_size=ffn, head_dim=head_dim or hidden // heads,
                    max_position_embeddings=64)
    cfg = AutoConfig.for_model(family, vocab_size=VOCAB, initializer_range=0.2, attn_implementation=attn,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0, **dims, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms and biases away from their 1/0 start, so that a slicing mistake shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def decoder_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Three sequences of 10 tokens; row 1 is padded at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def next_token_loss(output, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token (labels padded with -100)."""
    logits = output.logits
    width = logits.shape[1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:width].reshape(-1),
                           ignore_index=-100)
