"""Decoders the tool trains itself, and loading a causal language model from any source.

No pretrained decoder ships offline, so ``bundled:llama-bbc`` (registered with the causal-LM task
kind, :mod:`autocompress.tasks.causal_lm`) is made by :func:`decoder_to_train` on first use: a
byte-level BPE tokenizer (4,096 tokens) trained on the bundled BBC News articles and a small
Llama-architecture config (6 blocks, hidden 256, 8 query heads sharing 2 key/value groups,
SwiGLU MLP of 640, untied output layer: about 6 M parameters). The directory holds no weights:
:func:`load_decoder` initialises them from a fixed seed, and the study trains them as its
teacher on the task's documents (cached like any teacher). Written once under
``$AUTOCOMPRESS_HOME`` (default ``~/.cache/autocompress``). :func:`initialised` builds such a
directory's model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import ModelError
from autocompress.store.locks import file_lock

__all__ = ["INITIALISE", "LLAMA_BBC", "decoder_to_train", "home", "initialised"]

log = logging.getLogger(__name__)

#: a model directory holding this file has a config and a tokenizer but no weights: they start from a seed
INITIALISE = "autocompress-initialise.json"
#: the bundled decoder's architecture (a ``transformers.LlamaConfig``'s settings)
LLAMA_BBC = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 640,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
}
_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
_VERSION = 1


def home() -> Path:
    """Where the tool keeps what it makes for itself."""
    return Path(os.environ.get("AUTOCOMPRESS_HOME", "~/.cache/autocompress")).expanduser()


def _train_tokenizer(texts: list[str], vocab_size: int, target: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.save_pretrained(target)


def decoder_to_train(name: str, settings: dict[str, Any], texts: Callable[[], list[str]]) -> str:
    """The directory of a decoder to train from scratch: a Llama config of ``settings`` and a tokenizer
    of its vocabulary size trained on ``texts()``, made once under :func:`home` (a lock keeps two
    processes from making it at once)."""
    from transformers import LlamaConfig

    target = home() / "bundled" / f"{name}-v{_VERSION}"
    if (target / INITIALISE).is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.with_name(target.name + ".lock")):
        if (target / INITIALISE).is_file():
            return str(target)
        tmp = target.with_name(target.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        corpus = texts()
        log.info("training the tokenizer of %s on %d documents", name, len(corpus))
        _train_tokenizer(corpus, settings["vocab_size"], tmp)
        LlamaConfig(**settings).save_pretrained(tmp)
        (tmp / INITIALISE).write_text(json.dumps({"seed": 0, "version": _VERSION}))
        tmp.rename(target)
    return str(target)


def initialised(where: str | Path) -> nn.Module | None:
    """The model a directory made to be trained from scratch (:data:`INITIALISE`) describes, its weights
    initialised from its seed; ``None`` for any other directory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    marker = Path(where) / INITIALISE
    if not marker.is_file():
        return None
    try:
        seed = int(json.loads(marker.read_text())["seed"])
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the model to initialise at '{where}': {exc}") from None
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(state)
