"""The search dimensions: the only code that calls a trial's ``suggest_*``.

Parameters (all categorical unless noted; a dimension with one choice is not suggested, so a study
made before a dimension existed keeps its parameters and their distributions):

* ``depth`` (int, ``space.depth.min`` … ``max``) and ``selection`` (which layers are kept). The
  selection is suggested in every trial whose depth range goes below the full model, even when
  the trial keeps every layer, so that the search space is the same in every trial: Optuna's
  model-based samplers only model the parameters that all trials share.
* how each layer's heads / key-value groups / FFN keep ratios and bit-width are set, by
  ``space.schedule``:

  - ``per_layer``: ``heads_i``, ``kv_i``, ``ffn_i``, ``bits_i`` for every layer ``i`` (full
    freedom, 3 or 4 × layers dimensions);
  - ``shared``: ``heads``, ``kv``, ``ffn``, ``bits`` for all layers (3 or 4 dimensions);
  - ``linear``: ``heads_start`` / ``heads_end``, ``kv_start`` / ``kv_end`` and ``ffn_start`` /
    ``ffn_end``, interpolated linearly over the base model's depth and snapped to the nearest
    choice (so ratios change monotonically from the bottom layer to the top one), and
    ``bits_first`` / ``bits_last`` with ``bits_switch`` (int, 0 … layers): the layers below it take
    ``bits_first``, the others ``bits_last`` (7 or 9 dimensions, whatever the depth of the model).

  ``kv`` (``space.kv``, the fraction of key/value groups kept) is offered to grouped-query
  attention only (:func:`check_space`). There a layer cannot keep every (heads, kv) pair exactly:
  it keeps whole groups with equal query heads in each, and the plan records the shape it keeps
  (:func:`autocompress.models.gqa.canonical_attention`), so that two draws that build the same
  model are one plan (``space.strict: true`` refuses such pairs instead). Where every head has its
  own keys and values the heads ratio is recorded as drawn and ``kv`` is 1.0.
* ``weight_scheme`` (``space.weight_scheme``: dynamic, weight_only): how the 8- and 4-bit weights
  of the whole model compute. A plan with no 8- or 4-bit Linear (in a kept layer or the head) is
  the same model under either, and stands with ``dynamic``.
* ``head_bits`` and ``embedding_bits`` (the head and the embeddings, float by default; a 4-bit head
  is weight-only).
* ``vocab_min_count`` (``space.vocabulary``): 0 for the full word-embedding table, else the
  occurrences in the vocabulary corpus a token needs to keep its row.
* ``sharing`` (``space.sharing``: none, pairs, all): groups of kept layers that run one set of
  weights (:func:`share_groups`); each follower takes its group leader's heads, kv, FFN and bits.
* ``exits`` (``space.exits.schedule``: none, middle, every) and ``exit_threshold``: early exits after
  kept layers (:func:`exit_after`) and the confidence at which an input stops. Both are suggested
  in every trial when the space offers exits; a plan with no place for an exit (one kept layer)
  has none, and a plan without exits stands with the ``exit_threshold`` of the first choice.

Dropped layers keep the neutral values (1.0, 1.0, 1.0, 32) in the plan, so two trials that build
the same model have the same plan. :func:`params_for_plan` inverts :func:`suggest_plan`: the trial
parameters that make it return a given plan (to enqueue baselines and earlier studies' plans).
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from autocompress.schema.config import SpaceConfig
from autocompress.errors import ConfigError, PlanError
from autocompress.models.adapters import ArchInfo
from autocompress.models.gqa import canonical_attention, honoured
from autocompress.schema.plan import CompressionPlan, ExitPlan, LayerPlan

__all__ = [
    "SCHEDULES",
    "Schedule",
    "Values",
    "Attention",
    "select_layers",
    "exit_after",
    "share_groups",
    "suggest_plan",
    "params_for_plan",
    "plan_params",
    "baseline_plans",
    "check_space",
    "distributions",
    "canonical",
]

log = logging.getLogger(__name__)

class Values(NamedTuple):
    """One layer's keep ratios and bit-width."""

    heads: float  # fraction of query heads kept
    kv: float  # fraction of key/value groups kept
    ffn: float  # fraction of FFN neurons kept
    bits: int  # bit-width of the layer's Linear weights


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


@dataclass(frozen=True)
class Attention:
    """What a model's attention keeps of a drawn (heads, kv) pair of keep ratios."""

    num_heads: int  # query heads per layer
    num_kv_heads: int  # key/value heads (groups) per layer

    @classmethod
    def of(cls, arch: ArchInfo) -> "Attention":
        return cls(arch.num_heads, arch.num_kv_heads)

    @property
    def grouped(self) -> bool:
        """True for grouped-query attention (fewer key/value groups than query heads)."""
        return self.num_kv_heads < self.num_heads

    def describe(self) -> str:
        if not self.grouped:
            return f"{self.num_heads} heads, each with its own keys and values"
        return (f"{self.num_heads} query heads in {self.num_kv_heads} key/value groups "
                f"of {self.num_heads // self.num_kv_heads}")

    def keeps(self, heads: float, kv: float) -> tuple[float, float]:
        """The ``(heads, kv)`` a layer records for the drawn pair: under grouped-query attention the
        shape it can take (:func:`~autocompress.models.gqa.canonical_attention`); where every head has
        its own keys and values, ``heads`` as drawn (the build rounds it to whole heads, as it always
        has) and ``kv`` 1.0 (nothing of its own to prune)."""
        if not self.grouped:
            return heads, 1.0
        return canonical_attention(self.num_heads, self.num_kv_heads, heads, kv)

    def drawn(self, heads: float, kv: float, space: SpaceConfig, what: str) -> tuple[float, float]:
        """The pair of ``space``'s choices that :meth:`keeps` as ``(heads, kv)`` (the pair itself
        when it is one, else the first in the order of the choices); :class:`PlanError` if none."""
        fits = [(h, k) for h in space.heads for k in space.kv
                if all(map(_close, self.keeps(h, k), (heads, kv)))]
        exact = [(h, k) for h, k in fits if _close(h, heads) and _close(k, kv)]
        if exact or fits:
            return (exact or fits)[0]
        if not self.grouped:
            if not _close(kv, 1.0):
                raise PlanError(f"{what}: kv keep ratio {kv:g} prunes key/value groups, and this model has "
                                f"{self.describe()}")
            raise PlanError(f"{what}: heads keep ratio {heads:g} is not among this space's choices {list(space.heads)}")
        raise PlanError(f"{what}: heads {heads:.4g} with kv {kv:.4g} is not what this model's {self.describe()} "
                        f"keep of any pair of this space's choices (heads {list(space.heads)}, kv {list(space.kv)})")


def select_layers(num_layers: int, depth: int, how: str, ranking: Sequence[float] | None = None) -> list[int]:
    """Indices of the ``depth`` layers kept out of ``num_layers`` by strategy ``how``.

    ``even``: evenly spaced from the bottom (6 → 3 keeps 0, 2, 4, as DistilBERT does);
    ``first``: the bottom ``depth`` layers; ``last``: the top ones; ``importance``: the
    ``depth`` layers with the highest ``ranking`` (one score per layer), in their original order.
    """
    if not 1 <= depth <= num_layers:
        raise ValueError(f"depth {depth} is outside 1..{num_layers}")
    if how == "even":
        return sorted({(i * num_layers) // depth for i in range(depth)})
    if how == "first":
        return list(range(depth))
    if how == "last":
        return list(range(num_layers - depth, num_layers))
    if how == "importance":
        if ranking is None or len(ranking) != num_layers:
            raise ValueError("layer selection 'importance' needs one score per layer")
        order = sorted(range(num_layers), key=lambda i: (-ranking[i], i))
        return sorted(order[:depth])
    raise ValueError(f"unknown layer selection '{how}'")


def exit_after(kept: Sequence[int], how: str) -> tuple[int, ...]:
    """The kept layers (base-model indices, ascending) an exit schedule puts exits after: ``none``
    none, ``middle`` the one halfway up (after ⌈k/2⌉ of k layers), ``every`` each but the last."""
    kept = sorted(kept)
    if how == "none" or len(kept) < 2:
        return ()
    if how == "middle":
        return (kept[math.ceil(len(kept) / 2) - 1],)
    return tuple(kept[:-1])


def _depth_bounds(space: SpaceConfig, arch: ArchInfo) -> tuple[int, int]:
    hi = arch.num_layers if space.depth.max is None else space.depth.max
    return space.depth.min, hi


def check_space(space: SpaceConfig, arch: ArchInfo, file: str | None = None) -> None:
    """Reject a space that cannot fit the model (cross-field checks needing the architecture)."""
    lo, hi = _depth_bounds(space, arch)
    if hi > arch.num_layers:
        raise ConfigError(
            f"{hi} exceeds the model's {arch.num_layers} layers; set it to at most {arch.num_layers}",
            file=file,
            key="space.depth.max",
        )
    if lo > arch.num_layers:
        raise ConfigError(f"{lo} exceeds the model's {arch.num_layers} layers", file=file, key="space.depth.min")
    attention = Attention.of(arch)
    if not attention.grouped and any(not _close(k, 1.0) for k in space.kv):
        raise ConfigError(
            f"{list(space.kv)} offers key/value groups to prune, and this model has {attention.describe()}: "
            "prune them with space.heads and set space.kv: [1.0]",
            file=file,
            key="space.kv",
        )
    if 4 in space.head_bits and tuple(space.weight_scheme) != ("weight_only",):
        raise ConfigError(
            f"{list(space.head_bits)} offers a 4-bit head, which is weight-only, and space.weight_scheme offers "
            f"{list(space.weight_scheme)}: set space.weight_scheme: [weight_only], or drop 4 from space.head_bits",
            file=file,
            key="space.head_bits",
        )
    if space.strict:
        _check_honoured(space, attention, file)


def _nearest(value: float, works: Sequence[float]) -> str:
    """The ratios in ``works`` just below and just above ``value``, for a message."""
    below = [w for w in works if w < value]
    above = [w for w in works if w > value]
    near = ([max(below)] if below else []) + ([min(above)] if above else [])
    return " or ".join(f"{w:.4g}" for w in near)


def _check_honoured(space: SpaceConfig, attention: Attention, file: str | None) -> None:
    """Under ``space.strict``, refuse a (heads, kv) pair of choices (every schedule can combine any
    two) that the model's attention cannot keep exactly."""
    h_n, g_n = attention.num_heads, attention.num_kv_heads
    fix = "; or set space.strict: false to round each pair to the nearest shape the model can take"
    if not attention.grouped:
        for heads in space.heads:
            if not honoured(h_n, g_n, heads):
                raise ConfigError(
                    f"heads {heads:g} asks for {heads * h_n:g} of this model's {attention.describe()}, and only "
                    f"whole heads can be kept: use {_nearest(heads, [m / h_n for m in range(1, h_n + 1)])}{fix}",
                    file=file,
                    key="space.heads",
                )
        return
    for kv in space.kv:
        if not _close(canonical_attention(h_n, g_n, 1.0, kv)[1], kv):
            raise ConfigError(
                f"kv {kv:g} asks for {kv * g_n:g} of the key/value groups of this model's {attention.describe()}, "
                f"and only whole groups can be kept: use {_nearest(kv, [g / g_n for g in range(1, g_n + 1)])}{fix}",
                file=file,
                key="space.kv",
            )
    per_group = h_n // g_n
    for kv in space.kv:
        groups = round(kv * g_n)
        for heads in space.heads:
            if not honoured(h_n, g_n, heads, kv):
                works = [groups * m / h_n for m in range(1, per_group + 1)]
                raise ConfigError(
                    f"heads {heads:g} with kv {kv:g} asks for {heads * h_n:g} query heads in {groups} key/value "
                    f"group(s), and this model's {attention.describe()} keeps the same whole number (1 to "
                    f"{per_group}) in each kept group: with kv {kv:g} use heads {_nearest(heads, works)}{fix}",
                    file=file,
                    key="space.heads",
                )


def _choose(trial: optuna.Trial, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def _member(value: float, choices: tuple[Any, ...]) -> Any | None:
    """The choice equal to ``value`` (floats compared with a tolerance), or None."""
    return next((c for c in choices if _close(c, value)), None)


def _pick(value: Any, choices: tuple[Any, ...], what: str) -> Any:
    """The choice equal to ``value``, or :class:`PlanError` saying it is not offered."""
    choice = _member(value, choices)
    if choice is None:
        raise PlanError(f"{what} {value:g} is not among this space's choices {list(choices)}")
    return choice


def _record(params: dict[str, Any], name: str, choice: Any, choices: tuple[Any, ...]) -> None:
    """Record ``name = choice`` as a parameter when the dimension is searched (more than one choice)."""
    if len(choices) > 1:
        params[name] = choice


def _put(params: dict[str, Any], name: str, value: Any, choices: tuple[Any, ...], what: str) -> None:
    """Record ``name = value`` as a parameter (when the dimension is searched) or raise PlanError."""
    _record(params, name, _pick(value, choices, what), choices)


# ------------------------------------------------------------------------------------------ schedules
class Schedule(ABC):
    """How a few trial parameters become each layer's (heads, kv, ffn, bits) — and back.

    ``suggest`` must suggest the same parameters whatever ``kept`` is (a fixed search space), and
    returns the drawn choices; a layer records what the model's attention keeps of its drawn
    (heads, kv) pair (:meth:`Attention.keeps`). ``params`` must return parameters for which
    ``suggest``, so kept, gives back ``values`` on every kept layer, or raise :class:`PlanError`
    saying why the schedule cannot express them.
    """

    @abstractmethod
    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        """Drawn values for every layer of the base model (those of dropped layers are ignored)."""

    @abstractmethod
    def params(
        self, space: SpaceConfig, num_layers: int, values: dict[int, Values], attention: Attention
    ) -> dict[str, Any]:
        """Trial parameters giving ``values`` (kept layer index → values) on the kept layers."""


#: schedules by the name ``space.schedule`` gives them
SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str) -> Callable[[type[Schedule]], type[Schedule]]:
    def add(cls: type[Schedule]) -> type[Schedule]:
        SCHEDULES[name] = cls()
        return cls

    return add


def _drawn(v: Values, space: SpaceConfig, attention: Attention, which: str) -> Values:
    """The choices that give one kept layer's ``v``."""
    heads, kv = attention.drawn(v.heads, v.kv, space, which)
    return Values(heads, kv, _pick(v.ffn, space.ffn, f"{which}: FFN keep ratio"),
                  _pick(v.bits, space.bits, f"{which}: bit-width"))


@register_schedule("per_layer")
class _PerLayer(Schedule):
    """Every layer its own values: full freedom."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        return [
            Values(_choose(trial, f"heads_{i}", space.heads), _choose(trial, f"kv_{i}", space.kv),
                   _choose(trial, f"ffn_{i}", space.ffn), _choose(trial, f"bits_{i}", space.bits))
            for i in range(num_layers)
        ]

    def params(
        self, space: SpaceConfig, num_layers: int, values: dict[int, Values], attention: Attention
    ) -> dict[str, Any]:
        drawn = {i: _drawn(v, space, attention, f"layer {i}") for i, v in sorted(values.items())}
        kept = sorted(drawn)
        out: dict[str, Any] = {}
        for i in range(num_layers):
            # a dropped layer's parameters do not matter; give it its nearest kept neighbour's
            # choices, so that a uniform plan has uniform parameters
            v = drawn[min(kept, key=lambda k: (abs(k - i), k))]
            _record(out, f"heads_{i}", v.heads, space.heads)
            _record(out, f"kv_{i}", v.kv, space.kv)
            _record(out, f"ffn_{i}", v.ffn, space.ffn)
            _record(out, f"bits_{i}", v.bits, space.bits)
        return out


@register_schedule("shared")
class _Shared(Schedule):
    """One set of values for all layers."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        shared = Values(_choose(trial, "heads", space.heads), _choose(trial, "kv", space.kv),
                        _choose(trial, "ffn", space.ffn), _choose(trial, "bits", space.bits))
        return [shared] * num_layers

    def params(
        self, space: SpaceConfig, num_layers: int, values: dict[int, Values], attention: Attention
    ) -> dict[str, Any]:
        distinct = set(values.values())
        if len(distinct) > 1:
            raise PlanError("its kept layers differ, and the 'shared' schedule gives them all the same values")
        v = _drawn(Values(*distinct.pop()), space, attention, "all layers")
        out: dict[str, Any] = {}
        _record(out, "heads", v.heads, space.heads)
        _record(out, "kv", v.kv, space.kv)
        _record(out, "ffn", v.ffn, space.ffn)
        _record(out, "bits", v.bits, space.bits)
        return out


def _snap(x: float, choices: tuple[float, ...]) -> float:
    """The choice nearest to ``x``; a tie goes to the larger keep ratio."""
    return min(choices, key=lambda c: (abs(c - x), -c))


def _interpolate(start: float, end: float, num_layers: int, choices: tuple[float, ...]) -> list[float]:
    if num_layers == 1:
        return [_snap(start, choices)]
    return [_snap(start + (end - start) * i / (num_layers - 1), choices) for i in range(num_layers)]


def _lines(choices: tuple[float, ...], num_layers: int) -> list[tuple[tuple[float, float], list[float]]]:
    """Every (start, end) of ``choices`` with the line it draws over depth, constant lines first."""
    ends = sorted(itertools.product(choices, choices), key=lambda p: p[0] != p[1])
    return [(e, _interpolate(*e, num_layers, choices)) for e in ends]


@register_schedule("linear")
class _Linear(Schedule):
    """Keep ratios linear in depth (start → end, snapped to the choices); one bit-width switch."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        heads = _interpolate(_choose(trial, "heads_start", space.heads), _choose(trial, "heads_end", space.heads),
                             num_layers, space.heads)
        kv = _interpolate(_choose(trial, "kv_start", space.kv), _choose(trial, "kv_end", space.kv),
                          num_layers, space.kv)
        ffn = _interpolate(_choose(trial, "ffn_start", space.ffn), _choose(trial, "ffn_end", space.ffn),
                           num_layers, space.ffn)
        first, last = _choose(trial, "bits_first", space.bits), _choose(trial, "bits_last", space.bits)
        switch = 0 if len(space.bits) == 1 else trial.suggest_int("bits_switch", 0, num_layers)
        return [Values(heads[i], kv[i], ffn[i], first if i < switch else last) for i in range(num_layers)]

    @staticmethod
    def _attention_ends(
        space: SpaceConfig, num_layers: int, wanted: dict[int, tuple[float, float]], attention: Attention
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The heads and kv (start, end) whose lines the model keeps as ``wanted`` on every kept
        layer; lines constant in more dimensions first."""
        pairs = sorted(itertools.product(_lines(space.heads, num_layers), _lines(space.kv, num_layers)),
                       key=lambda p: (p[0][0][0] != p[0][0][1]) + (p[1][0][0] != p[1][0][1]))
        for (heads_ends, heads), (kv_ends, kv) in pairs:
            if all(all(map(_close, attention.keeps(heads[i], kv[i]), w)) for i, w in wanted.items()):
                return heads_ends, kv_ends
        return None

    def params(
        self, space: SpaceConfig, num_layers: int, values: dict[int, Values], attention: Attention
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, v in values.items():
            _drawn(v, space, attention, f"layer {i}")  # each layer's values are offered at all
        attention_wanted = {i: (v.heads, v.kv) for i, v in values.items()}
        found = self._attention_ends(space, num_layers, attention_wanted, attention)
        if found is None:
            shown = [f"{values[i].heads:.4g}" + (f"/{values[i].kv:.4g}" if attention.grouped else "") for i in sorted(values)]
            what = "heads/kv keep ratios" if attention.grouped else "heads keep ratios"
            raise PlanError(f"its {what} [{', '.join(shown)}] do not follow a line over depth, which the 'linear' "
                            "schedule requires")
        (heads_start, heads_end), (kv_start, kv_end) = found
        if len(space.heads) > 1:
            out["heads_start"], out["heads_end"] = heads_start, heads_end
        if len(space.kv) > 1:
            out["kv_start"], out["kv_end"] = kv_start, kv_end
        ffn = {i: v.ffn for i, v in values.items()}
        ffn_ends = next((e for e, line in _lines(space.ffn, num_layers)
                         if all(_close(line[i], f) for i, f in ffn.items())), None)
        if ffn_ends is None:
            raise PlanError(f"its ffn keep ratios {[ffn[i] for i in sorted(ffn)]} do not follow a line "
                            "over depth, which the 'linear' schedule requires")
        if len(space.ffn) > 1:
            out["ffn_start"], out["ffn_end"] = ffn_ends
        bits = {i: v.bits for i, v in values.items()}
        if len(space.bits) > 1:
            found_bits = next(
                ((first, last, switch)
                 for first, last in sorted(itertools.product(space.bits, space.bits), key=lambda p: p[0] != p[1])
                 for switch in range(num_layers + 1)
                 if all(b == (first if i < switch else last) for i, b in bits.items())),
                None,
            )
            if found_bits is None:
                raise PlanError(f"its bit-widths {[bits[i] for i in sorted(bits)]} change more than once over depth; "
                                "the 'linear' schedule has one switch")
            out["bits_first"], out["bits_last"], out["bits_switch"] = found_bits
        return out


# ------------------------------------------------------------------------------------------ plans
def _suggests_selection(space: SpaceConfig, arch: ArchInfo) -> bool:
    return _depth_bounds(space, arch)[0] < arch.num_layers and len(space.depth.selection) > 1


def suggest_plan(
    trial: optuna.Trial, space: SpaceConfig, arch: ArchInfo, layer_ranking: Sequence[float] | None = None
) -> CompressionPlan:
    """Sample one :class:`CompressionPlan` from ``space`` for a model shaped like ``arch``.

    ``layer_ranking`` (one importance score per layer) is needed when the space offers the
    ``importance`` layer selection.
    """
    n = arch.num_layers
    lo, hi = _depth_bounds(space, arch)
    depth = lo if lo == hi else trial.suggest_int("depth", lo, hi)
    how = _choose(trial, "selection", space.depth.selection) if _suggests_selection(space, arch) else space.depth.selection[0]
    kept = set(select_layers(n, depth, "even" if depth == n else how, layer_ranking))
    values = SCHEDULES[space.schedule].suggest(trial, space, n)
    groups = share_groups(sorted(kept), _choose(trial, "sharing", space.sharing))
    for group in groups:  # a follower runs its leader's weights: it has the leader's shape and bits
        for i in group[1:]:
            values[i] = values[group[0]]
    attention = Attention.of(arch)
    layers = tuple(_layer(values[i], attention) if i in kept else LayerPlan(keep=False) for i in range(n))
    weight_scheme = _choose(trial, "weight_scheme", space.weight_scheme)
    head_bits = _choose(trial, "head_bits", space.head_bits)
    embedding_bits = _choose(trial, "embedding_bits", space.embedding_bits)
    exits = None
    if space.exits.offered:
        after = exit_after(kept, _choose(trial, "exits", space.exits.schedule))
        threshold = _choose(trial, "exit_threshold", space.exits.threshold)
        exits = ExitPlan(after=after, threshold=threshold, pooling=space.exits.pooling) if after else None
    vocab = _choose(trial, "vocab_min_count", space.vocabulary.choices) or None  # 0: the full vocabulary
    return CompressionPlan(layers=layers, head_bits=head_bits, embedding_bits=embedding_bits, exits=exits,
                           vocab_min_count=vocab, share=groups or None,
                           weight_scheme=weight_scheme if _scheme_matters(layers, head_bits) else "dynamic")


def _layer(v: Values, attention: Attention) -> LayerPlan:
    """A kept layer drawn as ``v``: with the heads and kv the model's attention keeps of them."""
    heads, kv = attention.keeps(v.heads, v.kv)
    return LayerPlan(keep=True, heads=heads, kv=kv, ffn=v.ffn, bits=v.bits)


def _scheme_matters(layers: Sequence[LayerPlan], head_bits: int) -> bool:
    """True when some Linear computes at 8 or 4 bits (of a kept layer, or the head), so the weight
    scheme changes the model; a plan without one (float, or 2 bits simulated alike under every
    scheme) is one model under every scheme."""
    return head_bits != 32 or any(lp.keep and lp.bits in (8, 4) for lp in layers)


def share_groups(kept: Sequence[int], how: str) -> tuple[tuple[int, ...], ...]:
    """The sharing groups of the kept layers ``kept`` (in order) under ``how``: ``none``; ``pairs``
    (1st+2nd, 3rd+4th, ...; an odd last layer keeps its own weights); ``all`` (one group)."""
    kept = list(kept)
    if how == "pairs":
        return tuple(tuple(kept[i:i + 2]) for i in range(0, len(kept) - 1, 2))
    if how == "all" and len(kept) > 1:
        return (tuple(kept),)
    return ()


def params_for_plan(
    plan: CompressionPlan,
    space: SpaceConfig,
    arch: ArchInfo,
    layer_ranking: Sequence[float] | None = None,
    *,
    selection: str | None = None,
) -> dict[str, Any]:
    """The trial parameters that make :func:`suggest_plan` return ``plan``.

    Several draws can build one plan (a heads/kv pair grouped-query attention rounds to the same
    shape); the parameters returned are one of them, the drawn pair equal to the recorded one
    where there is such a pair. Raises :class:`PlanError` saying why when this space cannot
    express the plan (another number of layers, a value outside the choices, a heads/kv pair
    that no pair of choices keeps, a layer set no offered selection keeps, a schedule that cannot
    give those per-layer values, a weight scheme named on a plan it does not change).
    ``selection`` forces the layer selection recorded for a plan that several selections would build.
    """
    n = arch.num_layers
    if plan.num_layers != n:
        raise PlanError(f"the plan has {plan.num_layers} layers and this model {n}")
    params: dict[str, Any] = {}
    kept = plan.kept_layers
    depth = len(kept)
    lo, hi = _depth_bounds(space, arch)
    if not lo <= depth <= hi:
        raise PlanError(f"it keeps {depth} layers, outside this space's depth {lo}..{hi}")
    if lo != hi:
        params["depth"] = depth
    candidates = [selection] if selection is not None else list(space.depth.selection)
    if depth < n:
        fits = [
            how for how in candidates
            if how in space.depth.selection
            and (how != "importance" or layer_ranking is not None)
            and select_layers(n, depth, how, layer_ranking) == kept
        ]
        if not fits:
            raise PlanError(f"it keeps layers {kept}, which no layer selection of this space "
                            f"({', '.join(space.depth.selection)}) keeps")
        how = fits[0]
    else:
        how = selection if selection in space.depth.selection else ("even" if "even" in space.depth.selection else space.depth.selection[0])
    if _suggests_selection(space, arch):
        params["selection"] = how
    groups = plan.share or ()
    fits_share = [how for how in space.sharing if share_groups(kept, how) == tuple(groups)]
    if not fits_share:
        raise PlanError(f"its sharing groups {[list(g) for g in groups]} are not what any sharing choice of this space "
                        f"({', '.join(space.sharing)}) makes of its kept layers")
    if len(space.sharing) > 1:
        params["sharing"] = fits_share[0]
    followers = {i for g in groups for i in g[1:]}
    # a follower's values are its leader's whatever was drawn for it; a linear schedule fits the leaders only
    values = {i: Values(plan.layers[i].heads, plan.layers[i].kv, plan.layers[i].ffn, plan.layers[i].bits) for i in kept
              if space.schedule != "linear" or i not in followers}
    params.update(SCHEDULES[space.schedule].params(space, n, values, Attention.of(arch)))
    params.update(_weight_scheme_params(plan, space))
    _put(params, "head_bits", plan.head_bits, space.head_bits, "head bit-width")
    _put(params, "embedding_bits", plan.embedding_bits, space.embedding_bits, "embedding bit-width")
    params.update(_exit_params(plan, space))
    vocab = plan.vocab_min_count or 0
    if vocab not in space.vocabulary.choices:
        raise PlanError("it keeps the tokens seen at least {vocab} times, and this space offers {offered}".format(
            vocab=vocab, offered="only the full vocabulary (space.vocabulary.keep: [all])" if not space.vocabulary.offered
            else f"vocabulary minimum counts {list(space.vocabulary.min_count)}") if vocab else
            "it keeps the full vocabulary and this space prunes it always (space.vocabulary.keep: [task])")
    if len(space.vocabulary.choices) > 1:
        params["vocab_min_count"] = vocab
    return params


def _weight_scheme_params(plan: CompressionPlan, space: SpaceConfig) -> dict[str, Any]:
    """The ``weight_scheme`` parameter that gives ``plan``'s: its own when it has an 8- or 4-bit
    Linear, else the first choice (every scheme gives such a plan, which stands with ``dynamic``)."""
    if _scheme_matters(plan.layers, plan.head_bits):
        if plan.weight_scheme not in space.weight_scheme:
            raise PlanError(f"its quantised weights compute {plan.weight_scheme} and this space offers "
                            f"{', '.join(space.weight_scheme)} (space.weight_scheme)")
        scheme = plan.weight_scheme
    elif plan.weight_scheme != "dynamic":
        raise PlanError(f"it has no 8- or 4-bit Linear and names weight_scheme {plan.weight_scheme}: such a plan is "
                        "the same model under every scheme and stands with weight_scheme dynamic")
    else:
        scheme = space.weight_scheme[0]
    return {"weight_scheme": scheme} if len(space.weight_scheme) > 1 else {}


def _exit_params(plan: CompressionPlan, space: SpaceConfig) -> dict[str, Any]:
    """The ``exits`` and ``exit_threshold`` parameters that give ``plan``'s exits."""
    if not space.exits.offered:
        if plan.exits is not None:
            raise PlanError("it has early exits and this space offers none (space.exits.schedule: [none])")
        return {}
    after = plan.exits.after if plan.exits is not None else ()
    fits = [how for how in space.exits.schedule if exit_after(plan.kept_layers, how) == tuple(after)]
    if not fits:
        raise PlanError(f"its exits after layers {list(after)} are where no exit schedule of this space "
                        f"({', '.join(space.exits.schedule)}) puts them")
    if plan.exits is not None and plan.exits.pooling != space.exits.pooling:
        raise PlanError(f"its exits read the {plan.exits.pooling} token state(s) and this space's exits "
                        f"{space.exits.pooling} (space.exits.pooling)")
    params: dict[str, Any] = {}
    if len(space.exits.schedule) > 1:
        params["exits"] = fits[0]
    threshold = plan.exits.threshold if plan.exits is not None else space.exits.threshold[0]
    _put(params, "exit_threshold", threshold, space.exits.threshold, "exit threshold")
    return params


def plan_params(
    space: SpaceConfig,
    arch: ArchInfo,
    *,
    depth: int,
    selection: str,
    heads: float,
    ffn: float,
    bits: int,
    kv: float = 1.0,
    weight_scheme: str = "dynamic",
    head_bits: int = 32,
) -> dict[str, Any] | None:
    """The trial parameters that make :func:`suggest_plan` return this uniform plan.

    ``heads`` and ``kv`` are drawn ratios: each kept layer takes what the model's attention keeps of
    them. ``None`` when the space cannot express the plan (a value not among the choices). The
    embeddings stay in float; the head at ``head_bits``.
    """
    lo, hi = _depth_bounds(space, arch)
    if not lo <= depth <= hi or selection not in space.depth.selection and depth != arch.num_layers:
        return None
    keep = select_layers(arch.num_layers, depth, "even" if depth == arch.num_layers else selection)
    heads, kv = Attention.of(arch).keeps(heads, kv)
    layers = CompressionPlan.uniform(arch.num_layers, heads=heads, kv=kv, ffn=ffn, bits=bits, keep=keep).layers
    scheme = weight_scheme if _scheme_matters(layers, head_bits) else "dynamic"
    try:
        plan = CompressionPlan(layers=layers, weight_scheme=scheme, head_bits=head_bits)
        return params_for_plan(plan, space, arch, selection=selection)
    except (PlanError, ValueError):
        return None


def baseline_plans(space: SpaceConfig, arch: ArchInfo) -> dict[str, dict[str, Any]]:
    """Trial parameters of the uniform baselines the space can express, by name.

    The uncompressed teacher, uniform int8, uniform weight-only int8 and int4 (where the space
    offers weight-only weights: every kept layer, and the head when ``space.head_bits`` offers that
    width), uniform 50 % heads+FFN, and half depth (every other layer, the DistilBERT recipe).
    """
    n = arch.num_layers
    recipes: dict[str, dict[str, Any]] = {
        "teacher": dict(depth=n, selection="even", heads=1.0, ffn=1.0, bits=32),
        "int8": dict(depth=n, selection="even", heads=1.0, ffn=1.0, bits=8),
    }
    if "weight_only" in space.weight_scheme:
        for bits in (8, 4):
            if bits in space.bits:
                recipes[f"int{bits}_weight_only"] = dict(depth=n, selection="even", heads=1.0, ffn=1.0, bits=bits,
                                                         weight_scheme="weight_only",
                                                         head_bits=bits if bits in space.head_bits else 32)
    recipes.update({
        "prune50": dict(depth=n, selection="even", heads=0.5, ffn=0.5, bits=32),
        "half_depth": dict(depth=max(1, n // 2), selection="even", heads=1.0, ffn=1.0, bits=32),
    })
    out = {}
    for name, recipe in recipes.items():
        params = plan_params(space, arch, **recipe)
        if params is None:
            log.info("baseline %s is outside the search space; not seeded", name)
        else:
            out[name] = params
    return out


class _DistributionProbe:
    """A stand-in trial that notes each parameter's distribution and returns its first value."""

    def __init__(self) -> None:
        self.distributions: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.distributions[name] = CategoricalDistribution(list(choices))
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.distributions[name] = IntDistribution(low, high)
        return low


def distributions(space: SpaceConfig, arch: ArchInfo, layer_ranking: Sequence[float] | None = None) -> dict[str, BaseDistribution]:
    """Every trial parameter of ``space`` with its distribution (the same in every trial)."""
    probe = _DistributionProbe()
    suggest_plan(probe, space, arch, layer_ranking)  # type: ignore[arg-type]
    return probe.distributions


def canonical(
    params: dict[str, Any], space: SpaceConfig, arch: ArchInfo, layer_ranking: Sequence[float] | None = None
) -> tuple[CompressionPlan, dict[str, Any]]:
    """The plan ``params`` build, and the one set of parameters that stands for it.

    Parameters that the plan ignores (those of dropped layers, the layer selection of a full-depth
    plan, the weight scheme of a plan without 8- or 4-bit Linears) take fixed values: a dropped
    layer its nearest kept neighbour's, a full-depth plan the ``even`` selection, the scheme the
    first choice; a heads/kv pair that grouped-query attention rounds to the same shape, one pair.
    Two parameter sets that build the same model have the same canonical form.
    """
    plan = suggest_plan(optuna.trial.FixedTrial(params), space, arch, layer_ranking)
    return plan, params_for_plan(plan, space, arch, layer_ranking)
