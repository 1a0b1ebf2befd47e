"""The search dimensions: the only code that calls a trial's ``suggest_*``.

Parameters (all categorical unless noted; a dimension with one choice is not suggested):

* ``depth`` (int, ``space.depth.min`` … ``max``) and ``selection`` (which layers are kept). The
  selection is suggested in every trial whose depth range goes below the full model, even when
  the trial keeps every layer, so that the search space is the same in every trial: Optuna's
  model-based samplers only model the parameters that all trials share.
* how each layer's heads / FFN keep ratios and bit-width are set, by ``space.schedule``:

  - ``per_layer``: ``heads_i``, ``ffn_i``, ``bits_i`` for every layer ``i`` (full freedom,
    3 × layers dimensions);
  - ``shared``: ``heads``, ``ffn``, ``bits`` for all layers (3 dimensions);
  - ``linear``: ``heads_start`` / ``heads_end`` and ``ffn_start`` / ``ffn_end``, interpolated
    linearly over the base model's depth and snapped to the nearest choice (so ratios change
    monotonically from the bottom layer to the top one), and ``bits_first`` / ``bits_last``
    with ``bits_switch`` (int, 0 … layers): the layers below it take ``bits_first``, the others
    ``bits_last`` (7 dimensions, whatever the depth of the model).

* ``head_bits`` and ``embedding_bits`` (the classifier head and the embeddings, float by default).
* ``vocab_min_count`` (``space.vocabulary``): 0 for the full word-embedding table, else the
  occurrences in the vocabulary corpus a token needs to keep its row.
* ``sharing`` (``space.sharing``: none, pairs, all): groups of kept layers that run one set of
  weights (:func:`share_groups`); each follower takes its group leader's heads, FFN and bits.
* ``exits`` (``space.exits.schedule``: none, middle, every) and ``exit_threshold``: early exits after
  kept layers (:func:`exit_after`) and the confidence at which an input stops. Both are suggested
  in every trial when the space offers exits; a plan with no place for an exit (one kept layer)
  has none, and a plan without exits stands with the ``exit_threshold`` of the first choice.

Dropped layers keep the neutral values (1.0, 1.0, 32) in the plan, so two trials that build the
same model have the same plan. :func:`params_for_plan` inverts :func:`suggest_plan`: the trial
parameters that make it return a given plan (to enqueue baselines and earlier studies' plans).
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from autocompress.schema.config import SpaceConfig
from autocompress.errors import ConfigError, PlanError
from autocompress.models.adapters import ArchInfo
from autocompress.schema.plan import CompressionPlan, ExitPlan, LayerPlan

__all__ = [
    "SCHEDULES",
    "Schedule",
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

#: (heads keep ratio, FFN keep ratio, bit-width) of one layer
Values = tuple[float, float, int]


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
    """Reject a space that cannot fit the model (cross-field check needing the architecture)."""
    lo, hi = _depth_bounds(space, arch)
    if hi > arch.num_layers:
        raise ConfigError(
            f"{hi} exceeds the model's {arch.num_layers} layers; set it to at most {arch.num_layers}",
            file=file,
            key="space.depth.max",
        )
    if lo > arch.num_layers:
        raise ConfigError(f"{lo} exceeds the model's {arch.num_layers} layers", file=file, key="space.depth.min")


def _choose(trial: optuna.Trial, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def _member(value: float, choices: tuple[Any, ...]) -> Any | None:
    """The choice equal to ``value`` (floats compared with a tolerance), or None."""
    return next((c for c in choices if math.isclose(float(c), float(value), rel_tol=1e-9, abs_tol=1e-12)), None)


def _put(params: dict[str, Any], name: str, value: Any, choices: tuple[Any, ...], what: str) -> None:
    """Record ``name = value`` as a parameter (when the dimension is searched) or raise PlanError."""
    choice = _member(value, choices)
    if choice is None:
        raise PlanError(f"{what} {value:g} is not among this space's choices {list(choices)}")
    if len(choices) > 1:
        params[name] = choice


# ------------------------------------------------------------------------------------------ schedules
class Schedule(ABC):
    """How a few trial parameters become each layer's (heads, ffn, bits) — and back.

    ``suggest`` must suggest the same parameters whatever ``kept`` is (a fixed search space);
    ``params`` must return parameters for which ``suggest`` gives back ``values`` on every kept
    layer, or raise :class:`PlanError` saying why the schedule cannot express them.
    """

    @abstractmethod
    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        """Values for every layer of the base model (those of dropped layers are ignored)."""

    @abstractmethod
    def params(self, space: SpaceConfig, num_layers: int, values: dict[int, Values]) -> dict[str, Any]:
        """Trial parameters giving ``values`` (kept layer index → values) on the kept layers."""


#: schedules by the name ``space.schedule`` gives them
SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str) -> Callable[[type[Schedule]], type[Schedule]]:
    def add(cls: type[Schedule]) -> type[Schedule]:
        SCHEDULES[name] = cls()
        return cls

    return add


@register_schedule("per_layer")
class _PerLayer(Schedule):
    """Every layer its own three values: full freedom."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        return [
            (_choose(trial, f"heads_{i}", space.heads), _choose(trial, f"ffn_{i}", space.ffn),
             _choose(trial, f"bits_{i}", space.bits))
            for i in range(num_layers)
        ]

    def params(self, space: SpaceConfig, num_layers: int, values: dict[int, Values]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kept = sorted(values)
        for i in range(num_layers):
            # a dropped layer's parameters do not matter; give it its nearest kept neighbour's
            # values, so that a uniform plan has uniform parameters
            h, f, b = values[min(kept, key=lambda k: (abs(k - i), k))]
            which = f"layer {i}" if i in values else f"layer {i} (dropped)"
            _put(out, f"heads_{i}", h, space.heads, f"{which}: heads keep ratio")
            _put(out, f"ffn_{i}", f, space.ffn, f"{which}: FFN keep ratio")
            _put(out, f"bits_{i}", b, space.bits, f"{which}: bit-width")
        return out


@register_schedule("shared")
class _Shared(Schedule):
    """One set of values for all layers."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        shared = (_choose(trial, "heads", space.heads), _choose(trial, "ffn", space.ffn), _choose(trial, "bits", space.bits))
        return [shared] * num_layers

    def params(self, space: SpaceConfig, num_layers: int, values: dict[int, Values]) -> dict[str, Any]:
        distinct = set(values.values())
        if len(distinct) > 1:
            raise PlanError("its kept layers differ, and the 'shared' schedule gives them all the same values")
        (h, f, b), = distinct
        out: dict[str, Any] = {}
        _put(out, "heads", h, space.heads, "heads keep ratio")
        _put(out, "ffn", f, space.ffn, "FFN keep ratio")
        _put(out, "bits", b, space.bits, "bit-width")
        return out


def _snap(x: float, choices: tuple[float, ...]) -> float:
    """The choice nearest to ``x``; a tie goes to the larger keep ratio."""
    return min(choices, key=lambda c: (abs(c - x), -c))


def _interpolate(start: float, end: float, num_layers: int, choices: tuple[float, ...]) -> list[float]:
    if num_layers == 1:
        return [_snap(start, choices)]
    return [_snap(start + (end - start) * i / (num_layers - 1), choices) for i in range(num_layers)]


@register_schedule("linear")
class _Linear(Schedule):
    """Keep ratios linear in depth (start → end, snapped to the choices); one bit-width switch."""

    def suggest(self, trial: optuna.Trial, space: SpaceConfig, num_layers: int) -> list[Values]:
        heads = _interpolate(_choose(trial, "heads_start", space.heads), _choose(trial, "heads_end", space.heads),
                             num_layers, space.heads)
        ffn = _interpolate(_choose(trial, "ffn_start", space.ffn), _choose(trial, "ffn_end", space.ffn),
                           num_layers, space.ffn)
        first, last = _choose(trial, "bits_first", space.bits), _choose(trial, "bits_last", space.bits)
        switch = 0 if len(space.bits) == 1 else trial.suggest_int("bits_switch", 0, num_layers)
        return [(heads[i], ffn[i], first if i < switch else last) for i in range(num_layers)]

    @staticmethod
    def _ends(choices: tuple[Any, ...], wanted: dict[int, float], num_layers: int) -> tuple[Any, Any] | None:
        pairs = sorted(itertools.product(choices, choices), key=lambda p: p[0] != p[1])  # constant first
        for start, end in pairs:
            line = _interpolate(start, end, num_layers, choices)
            if all(math.isclose(line[i], v) for i, v in wanted.items()):
                return start, end
        return None

    def params(self, space: SpaceConfig, num_layers: int, values: dict[int, Values]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, slot, choices in (("heads", 0, space.heads), ("ffn", 1, space.ffn)):
            wanted = {i: v[slot] for i, v in values.items()}
            for i, v in wanted.items():
                if _member(v, choices) is None:
                    raise PlanError(f"layer {i}: {key} keep ratio {v:g} is not among this space's choices {list(choices)}")
            ends = self._ends(choices, wanted, num_layers)
            if ends is None:
                raise PlanError(f"its {key} keep ratios {[wanted[i] for i in sorted(wanted)]} do not follow a line "
                                "over depth, which the 'linear' schedule requires")
            if len(choices) > 1:
                out[f"{key}_start"], out[f"{key}_end"] = ends
        bits = {i: v[2] for i, v in values.items()}
        for i, b in bits.items():
            if b not in space.bits:
                raise PlanError(f"layer {i}: bit-width {b} is not among this space's choices {list(space.bits)}")
        if len(space.bits) > 1:
            found = next(
                ((first, last, switch)
                 for first, last in sorted(itertools.product(space.bits, space.bits), key=lambda p: p[0] != p[1])
                 for switch in range(num_layers + 1)
                 if all(b == (first if i < switch else last) for i, b in bits.items())),
                None,
            )
            if found is None:
                raise PlanError(f"its bit-widths {[bits[i] for i in sorted(bits)]} change more than once over depth; "
                                "the 'linear' schedule has one switch")
            out["bits_first"], out["bits_last"], out["bits_switch"] = found
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
    layers = tuple(
        LayerPlan(keep=True, heads=values[i][0], ffn=values[i][1], bits=values[i][2]) if i in kept else LayerPlan(keep=False)
        for i in range(n)
    )
    head_bits = _choose(trial, "head_bits", space.head_bits)
    embedding_bits = _choose(trial, "embedding_bits", space.embedding_bits)
    exits = None
    if space.exits.offered:
        after = exit_after(kept, _choose(trial, "exits", space.exits.schedule))
        threshold = _choose(trial, "exit_threshold", space.exits.threshold)
        exits = ExitPlan(after=after, threshold=threshold, pooling=space.exits.pooling) if after else None
    vocab = _choose(trial, "vocab_min_count", space.vocabulary.choices) or None  # 0: the full vocabulary
    return CompressionPlan(layers=layers, head_bits=head_bits, embedding_bits=embedding_bits, exits=exits,
                           vocab_min_count=vocab, share=groups or None)


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

    Raises :class:`PlanError` saying why when this space cannot express the plan (another
    number of layers, a value outside the choices, a layer set no offered selection keeps, a
    schedule that cannot give those per-layer values). ``selection`` forces the layer selection
    recorded for a plan that several selections would build.
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
    values = {i: (plan.layers[i].heads, plan.layers[i].ffn, plan.layers[i].bits) for i in kept
              if space.schedule != "linear" or i not in followers}
    params.update(SCHEDULES[space.schedule].params(space, n, values))
    _put(params, "head_bits", plan.head_bits, space.head_bits, "classifier-head bit-width")
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
    space: SpaceConfig, arch: ArchInfo, *, depth: int, selection: str, heads: float, ffn: float, bits: int
) -> dict[str, Any] | None:
    """The trial parameters that make :func:`suggest_plan` return this uniform plan.

    ``None`` when the space cannot express it (a value not among the choices). The head and the
    embeddings stay in float.
    """
    lo, hi = _depth_bounds(space, arch)
    if not lo <= depth <= hi or selection not in space.depth.selection and depth != arch.num_layers:
        return None
    keep = select_layers(arch.num_layers, depth, "even" if depth == arch.num_layers else selection)
    plan = CompressionPlan.uniform(arch.num_layers, heads=heads, ffn=ffn, bits=bits, keep=keep)
    try:
        return params_for_plan(plan, space, arch, selection=selection)
    except PlanError:
        return None


def baseline_plans(space: SpaceConfig, arch: ArchInfo) -> dict[str, dict[str, Any]]:
    """Trial parameters of the uniform baselines the space can express, by name.

    The uncompressed teacher, uniform int8, uniform 50 % heads+FFN, and half depth (every other
    layer, the DistilBERT recipe).
    """
    n = arch.num_layers
    recipes = {
        "teacher": dict(depth=n, selection="even", heads=1.0, ffn=1.0, bits=32),
        "int8": dict(depth=n, selection="even", heads=1.0, ffn=1.0, bits=8),
        "prune50": dict(depth=n, selection="even", heads=0.5, ffn=0.5, bits=32),
        "half_depth": dict(depth=max(1, n // 2), selection="even", heads=1.0, ffn=1.0, bits=32),
    }
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
    plan) take fixed values: a dropped layer its nearest kept neighbour's, a full-depth plan the
    ``even`` selection. Two parameter sets that build the same model have the same canonical form.
    """
    plan = suggest_plan(optuna.trial.FixedTrial(params), space, arch, layer_ranking)
    return plan, params_for_plan(plan, space, arch, layer_ranking)
