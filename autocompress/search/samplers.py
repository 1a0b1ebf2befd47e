"""The samplers ``search.sampler`` names, the name of the sampler a study runs with, and
:class:`OnePlanOnce`, which every study's sampler runs inside.

TPE, NSGA-II and GP read the accuracy-drop constraint that the objective records with
``trial.set_constraint`` (Optuna 5 samplers take it from the trial itself; their
``constraints_func`` argument is deprecated and would only copy it) and prefer feasible plans;
random sampling ignores it.

:class:`OnePlanOnce` makes every trial count: the sampler is told about candidates stopped
before the full fidelity (as complete trials that break the accuracy constraint, with what the
screen measured), it proposes plans in their canonical form (the parameters of dropped layers do
not make a new point), and a plan the study already holds is replaced by a new one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.schema.config import SearchConfig, SpaceConfig, StudyConfig
from autocompress.errors import PlanError, UnknownNameError
from autocompress.models.adapters import ArchInfo
from autocompress.search.space import canonical, distributions

__all__ = ["OnePlanOnce", "SAMPLERS", "make_sampler", "sampler_name", "with_sampler"]

log = logging.getLogger(__name__)

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
    if isinstance(sampler, OnePlanOnce):
        sampler = sampler.inner
    return next((name for name, (cls, _) in _REGISTRY.items() if type(sampler) is cls), type(sampler).__name__)


def with_sampler(cfg: StudyConfig, sampler: str | None) -> StudyConfig:
    """``cfg`` with ``search.sampler`` replaced (validated), or ``cfg`` itself for ``None``."""
    if sampler is None or sampler == cfg.search.sampler:
        return cfg
    if sampler not in SAMPLERS:
        raise UnknownNameError("sampler", sampler, SAMPLERS)
    search = SearchConfig.model_validate({**cfg.search.model_dump(), "sampler": sampler})
    return cfg.model_copy(update={"search": search})


#: how many random plans a repeated proposal is replaced from
_REDRAWS = 64


class OnePlanOnce(optuna.samplers.BaseSampler):
    """``inner`` as the study's sampler, so that every trial teaches it something new.

    * **Told about stopped candidates.** The inner sampler reads the study through a view in which
      a candidate stopped before the full fidelity is a complete trial with the figures its screen
      measured (:func:`autocompress.store.record.told`): accuracy at the rung it reached, latency, size,
      and an accuracy constraint it breaks. Optuna's samplers would otherwise ignore it (they skip
      pruned trials of a multi-objective study) and propose the stopped region again.
    * **Canonical plans.** Every parameter is sampled together (the space's parameters are the same
      in every trial) and the proposal is rewritten to its canonical form
      (:func:`autocompress.search.space.canonical`) before the trial stores it, so the sampler's history
      holds one point per plan.
    * **One plan once.** A proposal whose plan the study already holds (complete, stopped or
      running) is replaced by a random plan it does not hold, from the depth tried least so far:
      depth is the lever the model-based samplers explore least.

    Queued trials (baselines, warm starts, retries) keep their parameters.
    """

    def __init__(
        self,
        inner: optuna.samplers.BaseSampler,
        space: SpaceConfig,
        arch: ArchInfo,
        layer_ranking: Sequence[float] | None,
        *,
        teacher_percent: float,
        max_accuracy_drop: float | None,
        seed: int,
    ) -> None:
        self.inner = inner
        self._space, self._arch, self._ranking = space, arch, layer_ranking
        self._teacher_percent, self._max_drop = teacher_percent, max_accuracy_drop
        self._distributions = distributions(space, arch, layer_ranking)
        self._random = optuna.samplers.RandomSampler(seed=seed)

    # --------------------------------------------------------------------------------- views
    def _told(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        out = []
        for t in trials:
            if record.REFINES in t.user_attrs:
                continue  # the sampler models the study's own recovery; a refinement's longer one would skew it
            told = record.told(t, self._teacher_percent, self._max_drop) if t.state == TrialState.PRUNED else None
            out.append(told if told is not None else t)
        return out

    def view(self, study: optuna.Study) -> optuna.Study:
        """``study`` as the inner sampler reads it."""
        return compat.StudyView(study, self._told)  # type: ignore[return-value]

    def _key(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            plan, _ = canonical(params, self._space, self._arch, self._ranking)
        except (PlanError, ValueError):
            return None
        return plan.key()

    # --------------------------------------------------------------------------------- sampler API
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or compat.queued_params(trial):
            return {}
        view = self.view(study)
        inner_space = self.inner.infer_relative_search_space(view, trial)
        proposal = dict(self.inner.sample_relative(view, trial, inner_space)) if inner_space else {}
        for name, dist in search_space.items():
            if name not in proposal:
                proposal[name] = self.inner.sample_independent(view, trial, name, dist)
        plan, params = canonical(proposal, self._space, self._arch, self._ranking)
        held = self._held(study, trial.number)
        key = plan.key()
        if key not in held:
            return params
        depths = Counter(k[0] for k in held)
        fresh = []
        for _ in range(_REDRAWS):
            drawn = {name: self._random.sample_independent(study, trial, name, d) for name, d in search_space.items()}
            plan, candidate = canonical(drawn, self._space, self._arch, self._ranking)
            if plan.key() not in held:
                fresh.append((depths[plan.key()[0]], len(fresh), candidate))
        if not fresh:
            log.info("trial %d: the sampler proposed a plan the study holds, and no new plan was found", trial.number)
            return params
        log.info("trial %d: the sampler proposed the plan of trial %d; a new plan drawn at random instead",
                 trial.number, held[key])
        return min(fresh, key=lambda f: (f[0], f[1]))[2]

    def _held(self, study: optuna.Study, number: int) -> dict[tuple[Any, ...], int]:
        """The plans the study holds (in trials that did not fail), each with its first trial's number."""
        held: dict[tuple[Any, ...], int] = {}
        for t in study.get_trials(deepcopy=False):
            if t.number == number or t.state == TrialState.FAIL:
                continue
            params = t.params or compat.queued_params(t)
            key = self._key(params) if params else None
            if key is not None:
                held.setdefault(key, t.number)
        return held

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.inner.sample_independent(self.view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(self.view(study), trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.inner.after_trial(self.view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._random.reseed_rng()
