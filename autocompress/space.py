"""The search dimensions: the only code that calls a trial's ``suggest_*``.

Parameters (all categorical unless noted; a dimension with one choice is not suggested):

* ``depth`` (int, ``space.depth.min`` … ``max``) and ``selection`` (which layers are kept);
* per layer ``i`` (``space.per_layer``): ``heads_i``, ``ffn_i``, ``bits_i`` — or shared
  ``heads``, ``ffn``, ``bits`` for all layers;
* ``head_bits`` and ``embedding_bits`` (the classifier head and the embeddings, float by default).

Dropped layers keep the neutral values (1.0, 1.0, 32) in the plan, so two trials that build the
same model have the same plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna

from autocompress.config import SpaceConfig
from autocompress.errors import ConfigError
from autocompress.models import ArchInfo
from autocompress.plan import CompressionPlan, LayerPlan

__all__ = ["select_layers", "suggest_plan", "plan_params", "baseline_plans", "check_space"]

log = logging.getLogger(__name__)


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
    how = "even" if depth == n else _choose(trial, "selection", space.depth.selection)
    kept = set(select_layers(n, depth, how, layer_ranking))
    layers = []
    shared: dict[str, Any] = {}
    if not space.per_layer:
        shared = {
            "heads": _choose(trial, "heads", space.heads),
            "ffn": _choose(trial, "ffn", space.ffn),
            "bits": _choose(trial, "bits", space.bits),
        }
    for i in range(n):
        if space.per_layer:
            values = {
                "heads": _choose(trial, f"heads_{i}", space.heads),
                "ffn": _choose(trial, f"ffn_{i}", space.ffn),
                "bits": _choose(trial, f"bits_{i}", space.bits),
            }
        else:
            values = shared
        if i in kept:
            layers.append(LayerPlan(keep=True, heads=values["heads"], ffn=values["ffn"], bits=values["bits"]))
        else:
            layers.append(LayerPlan(keep=False))
    return CompressionPlan(
        layers=tuple(layers),
        head_bits=_choose(trial, "head_bits", space.head_bits),
        embedding_bits=_choose(trial, "embedding_bits", space.embedding_bits),
    )


def plan_params(
    space: SpaceConfig, arch: ArchInfo, *, depth: int, selection: str, heads: float, ffn: float, bits: int
) -> dict[str, Any] | None:
    """The trial parameters that make :func:`suggest_plan` return this uniform plan.

    ``None`` when the space cannot express it (a value not among the choices).
    """
    lo, hi = _depth_bounds(space, arch)
    if not lo <= depth <= hi or heads not in space.heads or ffn not in space.ffn or bits not in space.bits:
        return None
    params: dict[str, Any] = {}
    if lo != hi:
        params["depth"] = depth
    if depth != arch.num_layers and len(space.depth.selection) > 1:
        if selection not in space.depth.selection:
            return None
        params["selection"] = selection
    elif depth != arch.num_layers and space.depth.selection[0] != selection:
        return None
    for key, choices in (("head_bits", space.head_bits), ("embedding_bits", space.embedding_bits)):
        if 32 not in choices:
            return None  # the baselines keep the head and the embeddings in float
        if len(choices) > 1:
            params[key] = 32
    names = [f"{{}}_{i}" for i in range(arch.num_layers)] if space.per_layer else ["{}"]
    for template in names:
        for key, value, choices in (("heads", heads, space.heads), ("ffn", ffn, space.ffn), ("bits", bits, space.bits)):
            if len(choices) > 1:
                params[template.format(key)] = value
    return params


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
