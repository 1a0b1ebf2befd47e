"""The samplers ``search.sampler`` names, and the name of the sampler a study runs with.

TPE, NSGA-II and GP read the accuracy-drop constraint that the objective records with
``trial.set_constraint`` (Optuna 5 samplers take it from the trial itself; their
``constraints_func`` argument is deprecated and would only copy it) and prefer feasible plans;
random sampling ignores it.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autocompress.config import SearchConfig, StudyConfig
from autocompress.errors import UnknownNameError

__all__ = ["SAMPLERS", "make_sampler", "sampler_name", "with_sampler"]

_REGISTRY: dict[str, tuple[type[optuna.samplers.BaseSampler], Callable[[int], optuna.samplers.BaseSampler]]] = {
    # multivariate: the per-layer choices interact (depth × pruning × bits)
    "tpe": (optuna.samplers.TPESampler,
            lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)),
    # small population: studies here run tens of trials, not thousands
    "nsga2": (optuna.samplers.NSGAIISampler, lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=16)),
    # Gaussian process with (constrained) expected hypervolume improvement; categorical dimensions
    # are handled by its kernel
    "gp": (optuna.samplers.GPSampler, lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)),
    "random": (optuna.samplers.RandomSampler, lambda seed: optuna.samplers.RandomSampler(seed=seed)),
}
#: name → a factory of the seeded sampler
SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {name: f for name, (_, f) in _REGISTRY.items()}


def make_sampler(search: SearchConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``search.seed + offset`` (offset: trials already run)."""
    if search.sampler not in SAMPLERS:
        raise UnknownNameError("sampler", search.sampler, SAMPLERS)
    return SAMPLERS[search.sampler](search.seed + offset)


def sampler_name(sampler: optuna.samplers.BaseSampler) -> str:
    """The registry name of ``sampler`` (what a trial records as its sampler), or its class name."""
    return next((name for name, (cls, _) in _REGISTRY.items() if type(sampler) is cls), type(sampler).__name__)


def with_sampler(cfg: StudyConfig, sampler: str | None) -> StudyConfig:
    """``cfg`` with ``search.sampler`` replaced (validated), or ``cfg`` itself for ``None``."""
    if sampler is None or sampler == cfg.search.sampler:
        return cfg
    if sampler not in SAMPLERS:
        raise UnknownNameError("sampler", sampler, SAMPLERS)
    search = SearchConfig.model_validate({**cfg.search.model_dump(), "sampler": sampler})
    return cfg.model_copy(update={"search": search})
