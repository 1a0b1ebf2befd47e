"""The compression plan: the one object that flows through every stage.

A :class:`CompressionPlan` says, for each layer of the *base* model, whether the student keeps
it, which fraction of its attention heads and FFN neurons it keeps, and the bit-width of its
Linear layers. It is frozen, validated, versioned, and round-trips losslessly through
:meth:`CompressionPlan.to_dict` / :meth:`CompressionPlan.from_dict` (and YAML), so the plan
stored with a trial is enough to rebuild that trial's model from the base model.
"""

from __future__ import annotations

from typing import Any, Literal

import json

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from autocompress.errors import PlanError

__all__ = ["SCHEMA_VERSION", "REAL_BITS", "SIMULATED_BITS", "LayerPlan", "ExitPlan", "CompressionPlan"]

SCHEMA_VERSION = 1
#: Bit-widths executed with real kernels (32 = float, 8 = int8: dynamic quantisation, or weight-only
#: under ``weight_scheme: weight_only``).
REAL_BITS = (32, 8)
#: Bit-widths only simulated (fake-quantised weights): they count for quality and size, not speed.
#: Under ``weight_scheme: weight_only`` 4 bits are real (group-wise int4, see ``ops.weight_only``).
SIMULATED_BITS = (4, 2)
Bits = Literal[32, 8, 4, 2]
#: How 8- and 4-bit Linear weights compute: ``dynamic`` (int8 weights and activations quantised per
#: call; 4 bits simulated) or ``weight_only`` (int8 or group-wise int4 weights, activations in 16-bit
#: float: what decoding, which reads every weight once per token, gains from)
WeightScheme = Literal["dynamic", "weight_only"]


class LayerPlan(BaseModel):
    """What happens to one encoder layer of the base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep: StrictBool = True  # False: the layer is dropped from the student
    heads: float = Field(1.0, gt=0.0, le=1.0)  # fraction of attention (query) heads kept
    # fraction of key/value groups kept (grouped-query attention: each group's query heads go with it);
    # 1.0 for models whose every head has its own keys and values
    kv: float = Field(1.0, gt=0.0, le=1.0)
    ffn: float = Field(1.0, gt=0.0, le=1.0)  # fraction of FFN (intermediate) neurons kept
    bits: Bits = 32  # bit-width of the layer's Linear weights

    @field_validator("heads", "kv", "ffn", mode="before")
    @classmethod
    def _int_ratio_is_float(cls, v: Any) -> Any:
        # YAML writes 1.0 back as 1: accept ints as ratios, but nothing else that is not a float.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number in (0, 1], got {v!r}")
        return float(v)

    @field_validator("bits", mode="before")
    @classmethod
    def _bits_are_ints(cls, v: Any) -> Any:
        return _require_int(v)


class ExitPlan(BaseModel):
    """Early exits: a small classifier after each of the base model's layers ``after`` (kept
    layers, the student's last excluded: its own head is the last exit), and the confidence (the
    largest softmax probability) at or above which an input stops at an exit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after: tuple[int, ...] = Field(min_length=1)
    threshold: float = Field(gt=0.0, le=1.0)
    # what an exit head reads: the first token's state (first; plans stored without the key), or
    # the mean of the real tokens' states (mean)
    pooling: Literal["first", "mean"] = "first"

    @field_validator("after", mode="before")
    @classmethod
    def _indices(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            for x in v:
                _require_int(x)
        return v

    @field_validator("threshold", mode="before")
    @classmethod
    def _confidence(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a confidence in (0, 1], got {v!r}")
        return float(v)


class CompressionPlan(BaseModel):
    """A full compression plan for a model with ``len(layers)`` encoder layers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    layers: tuple[LayerPlan, ...] = Field(min_length=1)
    # embeddings stay float unless asked: 8 = 8-bit codes per row (real); 4 = rows rounded to 16
    # levels (simulated: shipped as 4-bit codes, computed in float)
    embedding_bits: Literal[32, 8, 4] = 32
    head_bits: Literal[32, 8, 4] = 32  # the head: pooler + classifier, or a language model's output projection (4: weight-only)
    weight_scheme: WeightScheme = "dynamic"  # how 8- and 4-bit weights compute (see WeightScheme)
    exits: ExitPlan | None = None  # early exits (dynamic inference); absent: every input runs every layer
    # vocabulary pruning: keep the word-embedding rows of the tokens the vocabulary corpus uses at
    # least this often (special tokens always); the others read as [UNK]. Absent: every row
    vocab_min_count: int | None = Field(None, ge=1)
    # cross-layer parameter sharing: each group lists kept base layers (two or more, in order) that
    # run one set of weights, the first member's; the others must be shaped and quantised the same
    share: tuple[tuple[int, ...], ...] | None = None

    @field_validator("schema_version", "embedding_bits", "head_bits", "vocab_min_count", mode="before")
    @classmethod
    def _ints_are_ints(cls, v: Any) -> Any:
        return v if v is None else _require_int(v)

    @field_validator("layers")
    @classmethod
    def _at_least_one_layer_kept(cls, layers: tuple[LayerPlan, ...]) -> tuple[LayerPlan, ...]:
        if not any(layer.keep for layer in layers):
            raise ValueError("the plan keeps no layer; keep at least one")
        return layers

    @model_validator(mode="after")
    def _four_bit_head_is_weight_only(self) -> "CompressionPlan":
        if self.head_bits == 4 and self.weight_scheme != "weight_only":
            raise ValueError("head_bits 4 is a weight-only width: set weight_scheme: weight_only (or head_bits 8 or 32)")
        return self

    @model_validator(mode="after")
    def _exits_after_kept_layers(self) -> "CompressionPlan":
        if self.exits is None:
            return self
        kept = [i for i, layer in enumerate(self.layers) if layer.keep]
        after = list(self.exits.after)
        if after != sorted(set(after)) or any(a not in kept[:-1] for a in after):
            raise ValueError(f"exits.after must list distinct kept layers in order, before the last kept one "
                             f"({kept[-1]}); got {after} with kept layers {kept}")
        return self

    @model_validator(mode="after")
    def _sharing_groups_of_kept_alike_layers(self) -> "CompressionPlan":
        if self.share is None:
            return self
        seen: set[int] = set()
        for group in self.share:
            members = list(group)
            if len(members) < 2 or members != sorted(set(members)):
                raise ValueError(f"a sharing group lists two or more distinct layers in order; got {members}")
            for i in members:
                if not 0 <= i < len(self.layers):
                    raise ValueError(f"sharing group {members} names layer {i}; the plan has layers 0-{len(self.layers) - 1}")
                if not self.layers[i].keep:
                    raise ValueError(f"sharing group {members} spans layer {i}, which the plan drops: "
                                     "share only kept layers (or keep that layer)")
                if i in seen:
                    raise ValueError(f"layer {i} is in two sharing groups; a layer shares one set of weights")
                seen.add(i)
                first, this = self.layers[members[0]], self.layers[i]
                if (this.heads, this.kv, this.ffn, this.bits) != (first.heads, first.kv, first.ffn, first.bits):
                    raise ValueError(f"layer {i} shares layer {members[0]}'s weights, so it needs the same heads, kv, "
                                     f"ffn and bits ({first.heads:g}, {first.kv:g}, {first.ffn:g}, {first.bits}); got "
                                     f"({this.heads:g}, {this.kv:g}, {this.ffn:g}, {this.bits})")
        return self

    # ---------------------------------------------------------------- constructors
    @classmethod
    def uniform(
        cls,
        num_layers: int,
        *,
        heads: float = 1.0,
        ffn: float = 1.0,
        bits: int = 32,
        keep: list[int] | None = None,
        kv: float = 1.0,
        **settings: Any,
    ) -> "CompressionPlan":
        """The same treatment for every layer; ``keep`` lists the kept layer indices (default all);
        ``settings`` are whole-model settings (``head_bits``, ``weight_scheme``, ...)."""
        kept = set(range(num_layers)) if keep is None else set(keep)
        return cls.model_validate(
            {
                "layers": [
                    {"keep": i in kept, "heads": heads, "kv": kv, "ffn": ffn, "bits": bits}
                    for i in range(num_layers)
                ],
                **settings,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressionPlan":
        """Rebuild a plan from :meth:`to_dict` output; rejects unknown versions and bad values."""
        if not isinstance(data, dict):
            raise PlanError(f"a plan must be a mapping, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise PlanError(
                f"plan schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PlanError(_one_line(exc)) from None

    @classmethod
    def from_yaml(cls, text: str) -> "CompressionPlan":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"plan is not valid YAML: {exc}") from None
        return cls.from_dict(data)

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for key in ("exits", "vocab_min_count", "share"):  # a plan without them is stored as before they existed
            if data[key] is None:
                del data[key]
        if data["weight_scheme"] == "dynamic":
            del data["weight_scheme"]
        for layer in data["layers"]:
            if layer["kv"] == 1.0:
                del layer["kv"]
        if data.get("exits") and data["exits"]["pooling"] == "first":
            del data["exits"]["pooling"]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---------------------------------------------------------------- queries
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def kept_layers(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.keep]

    @property
    def simulated(self) -> bool:
        """True when some weights are only fake-quantised (their speed is not measured)."""
        return self.embedding_bits in SIMULATED_BITS or any(
            layer.keep and self.bits_simulated(layer.bits) for layer in self.layers)

    def bits_simulated(self, bits: int) -> bool:
        """True when a Linear at ``bits`` bits is only fake-quantised under this plan's weight scheme."""
        real = (32, 8, 4) if self.weight_scheme == "weight_only" else REAL_BITS
        return bits not in real

    @property
    def changes_structure(self) -> bool:
        """True when the plan drops layers, prunes or shares weights (what distillation can recover from)."""
        return self.share is not None or any(
            (not lp.keep) or lp.heads < 1.0 or lp.kv < 1.0 or lp.ffn < 1.0 for lp in self.layers)

    @property
    def quantises(self) -> bool:
        """True when some kept weights, the embedding tables or the head are below 32 bits."""
        return any(lp.keep and lp.bits != 32 for lp in self.layers) or self.head_bits != 32 or self.embedding_bits != 32

    @property
    def exit_positions(self) -> list[int]:
        """The exits as indices among the student's own layers (what :class:`~autocompress.ops.exits.EarlyExit` takes)."""
        if self.exits is None:
            return []
        kept = self.kept_layers
        return [kept.index(a) for a in self.exits.after]

    @property
    def shared_positions(self) -> dict[int, int]:
        """For each student layer that runs another's weights, the student layer whose weights it runs."""
        if self.share is None:
            return {}
        kept = self.kept_layers
        return {kept.index(i): kept.index(group[0]) for group in self.share for i in group[1:]}

    def check_fits(self, num_layers: int) -> None:
        """Raise :class:`PlanError` unless the plan describes a model with ``num_layers`` layers."""
        if self.num_layers != num_layers:
            raise PlanError(
                f"the plan describes {self.num_layers} layers but the model has {num_layers}; "
                "a plan must list every layer of the base model"
            )

    def key(self) -> tuple[int, str]:
        """A hashable identity: (layers kept, the plan's JSON). Equal plans build the same model."""
        return len(self.kept_layers), json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        """A short human summary, e.g. ``'4/6 layers · heads 75% · ffn 50% · int8 ×4'``."""
        kept = [self.layers[i] for i in self.kept_layers]
        heads = sum(layer.heads for layer in kept) / len(kept)
        kv = sum(layer.kv for layer in kept) / len(kept)
        ffn = sum(layer.ffn for layer in kept) / len(kept)
        parts = [f"{len(kept)}/{self.num_layers} layers"]
        if heads < 1.0:
            parts.append(f"heads {heads:.0%}")
        if kv < 1.0:
            parts.append(f"kv groups {kv:.0%}")
        if ffn < 1.0:
            parts.append(f"ffn {ffn:.0%}")
        weight_only = " weight-only" if self.weight_scheme == "weight_only" else ""
        for bits in (8, 4, 2):
            n = sum(1 for layer in kept if layer.bits == bits)
            if n:
                label = f"{bits}-bit (simulated)" if self.bits_simulated(bits) else f"int{bits}{weight_only}"
                parts.append(f"{label} ×{n}")
        if self.head_bits < 32:
            parts.append(f"int{self.head_bits}{weight_only} head")
        if self.embedding_bits == 8:
            parts.append("int8 embeddings")
        elif self.embedding_bits == 4:
            parts.append("4-bit embeddings (simulated)")
        if self.vocab_min_count is not None:
            parts.append("task vocabulary" + (f" (≥{self.vocab_min_count}×)" if self.vocab_min_count > 1 else ""))
        if self.share is not None:
            kept_ids = self.kept_layers
            groups = "; ".join("+".join(str(kept_ids.index(i) + 1) for i in g) for g in self.share)
            parts.append(f"shared layers {groups}")
        if self.exits is not None:
            after = ", ".join(str(p + 1) for p in self.exit_positions)
            pooled = " (mean-pooled)" if self.exits.pooling == "mean" else ""
            parts.append(f"exits after {after} @ {self.exits.threshold:g}{pooled}")
        if len(parts) == 1 and len(kept) == self.num_layers:
            parts.append("uncompressed")
        return " · ".join(parts)


def _require_int(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be a whole number, got {v!r}")
    return v


def _one_line(exc: ValidationError) -> str:
    """Turn pydantic's multi-line report into one line naming each bad field."""
    bits = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        bits.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "invalid plan: " + "; ".join(bits)
