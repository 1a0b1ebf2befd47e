"""Warm start: queue an earlier study's Pareto-front plans in a new study on the same base model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import optuna

from autocompress.store import optuna_internals as compat
from autocompress.store import record
from autocompress.schema.config import StudyConfig
from autocompress.errors import ConfigError, PlanError
from autocompress.search.space import params_for_plan
from autocompress.store.storage import load, open_storage, stored_config
from autocompress.search.workbench import Workbench

__all__ = ["WarmStart", "open_warm_start_source", "warm_start"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    """What :func:`warm_start` did with each plan on the source study's front."""

    source: str  # the study warm-started from
    enqueued: tuple[int, ...]  # its trial numbers whose plans were queued here
    present: tuple[int, ...]  # whose plans this study already has (run, running or queued)
    skipped: dict[int, str]  # trial number → why this study's space cannot express its plan


def open_warm_start_source(name: str, url: str, cfg: StudyConfig) -> optuna.Study:
    """The study to warm-start ``cfg``'s study from; refuses one that does not exist, was not made
    by autocompress, or compresses another base model (its plans would mean something else)."""
    source = load(name, open_storage(url, must_exist=True))
    other = stored_config(source)
    if other.model.source != cfg.model.source:
        raise ConfigError(
            f"cannot warm-start from study '{name}': it compresses {other.model.source}, "
            f"this study {cfg.model.source}; warm-start only from a study on the same base model"
        )
    return source


def warm_start(study: optuna.Study, source: optuna.Study, bench: Workbench) -> WarmStart:
    """Queue the plans of ``source``'s Pareto front in ``study`` (feasible, full-fidelity trials).

    Each plan is queued as the trial parameters that make this study's space build it, labelled
    ``warm_start: "<source>#<trial>"``; a plan this space cannot express (another number of
    layers, a value outside the choices, a layer set or per-layer pattern its selections and
    schedule cannot make) is skipped with the reason, and one this study already has is not
    queued twice. Running it again queues nothing new.
    """
    cfg = bench.config
    existing = [compat.queued_params(t) for t in study.get_trials(deepcopy=False)]
    enqueued: list[int] = []
    present: list[int] = []
    skipped: dict[int, str] = {}
    front = [(t, r) for t in record.front(source) if record.is_full(t) and (r := record.read(t)).fidelity == "full"]
    for t, r in sorted(front, key=lambda tr: tr[0].number):
        plan = r.plan
        try:
            if plan is None:  # stored, but not in a form this version reads
                raise PlanError("its stored plan cannot be read by this version")
            params = params_for_plan(plan, cfg.space, bench.arch, bench.layer_ranking)
        except PlanError as exc:
            skipped[t.number] = str(exc)
            log.info("warm start: trial %d of '%s' is not expressible here: %s", t.number, source.study_name, exc)
            continue
        if params in existing:
            present.append(t.number)
            continue
        labels = record.queue_labels(warm_start=f"{source.study_name}#{t.number}")
        study.enqueue_trial(params, user_attrs=labels, skip_if_exists=True)
        existing.append(params)
        enqueued.append(t.number)
    log.info("warm start from '%s': %d plans queued, %d already here, %d skipped",
             source.study_name, len(enqueued), len(present), len(skipped))
    return WarmStart(source.study_name, tuple(enqueued), tuple(present), skipped)
