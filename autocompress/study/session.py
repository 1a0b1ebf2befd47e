"""Running a study end to end, as ``autocompress run`` and ``resume`` do: one call, progress told to a listener.

Checks come first (model, space, token budget, data, an existing study's settings, the warm-start
source), before minutes of teacher preparation; then the teacher is prepared (shared with the
study's other workers), the warm-start plans queued, and trials run to the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from autocompress.schema.config import StudyConfig
from autocompress.tasks.evaluate import Metric
from autocompress.search.refine import refine_until
from autocompress.search.samplers import with_sampler
from autocompress.study.create import check_can_continue, continued_config, create_or_load
from autocompress.study.runner import RunResult, completed, run, typical_trial_seconds
from autocompress.study.workers import prepare_worker
from autocompress.store import study_record
from autocompress.store.storage import DEFAULT_CACHE, default_storage, load, open_storage, stored_config
from autocompress.study.warm_start import WarmStart, open_warm_start_source, warm_start
from autocompress.search.workbench import check_inputs

__all__ = ["StudyRequest", "StudyProgress", "StudyRun", "StudyInterrupted", "resume_request", "run_request", "run_study"]


@dataclass(frozen=True)
class StudyRequest:
    """What to run: a config, where its study lives, and how far to take it."""

    config: StudyConfig
    name: str  # the study's name in its storage
    url: str  # the storage URL
    trials: int  # complete trials to reach
    timeout: float | None = None  # stop starting trials after this many seconds
    cache_dir: Path = DEFAULT_CACHE  # where fine-tuned teachers are cached
    config_file: str | None = None  # the YAML the config came from (named in errors)
    warm_from: tuple[str, str] | None = None  # (study name, storage URL) to queue front plans from


class StudyProgress:
    """Told what a running study does; every method is optional (the base does nothing)."""

    def started(self, request: StudyRequest) -> None:
        """Checks passed; the teacher is being prepared."""

    def teacher_step(self, step: int, total: int, loss: float) -> None:
        """One step of the teacher's fine-tuning."""

    def teacher_ready(self, metric: Metric, from_cache: bool, fine_tune_seconds: float) -> None:
        """The teacher is ready: its task metric, whether it came from the cache, how long it trained."""

    def warm_started(self, result: WarmStart) -> None:
        """The warm-start source's front plans were queued (or skipped, with reasons)."""

    def trials_started(self, study: optuna.Study, target: int) -> None:
        """Trials begin; ``study`` already holds those of earlier runs."""

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial ended (complete, stopped or failed)."""

    def refining(self, study: optuna.Study, seconds: float) -> None:
        """The trials are done; front members are refined for up to ``seconds``."""

    def refined(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A refinement was added (its ``refines`` names the trial it rebuilt)."""


@dataclass(frozen=True)
class StudyRun:
    study: optuna.Study
    result: RunResult
    refined: tuple[int, ...] = ()  # the refinements this run added, by trial number


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C during the trials: the running trial was recorded as failed; the study can be resumed."""

    def __init__(self, completed: int, target: int) -> None:
        super().__init__(f"{completed}/{target} trials complete")
        self.completed, self.target = completed, target


def run_request(
    cfg: StudyConfig, *, name: str | None = None, storage: str | None = None, trials: int | None = None,
    timeout: float | None = None, cache_dir: Path = DEFAULT_CACHE, config_file: str | None = None,
    sampler: str | None = None, warm_start: str | None = None, warm_start_storage: str | None = None,
) -> StudyRequest:
    """The request that creates ``cfg``'s study (or continues the one of the same name): named
    ``name`` or ``cfg.name``, in ``storage`` or its default SQLite file, run to ``trials`` or
    ``search.trials``; ``warm_start`` names a study (in ``warm_start_storage``, else ``storage``,
    else its own default file) whose front plans are queued first."""
    cfg = with_sampler(cfg, sampler)
    name = name or cfg.name
    warm_from = None
    if warm_start is not None:
        warm_from = (warm_start, warm_start_storage or storage or default_storage(warm_start))
    return StudyRequest(config=cfg, name=name, url=storage or default_storage(name), trials=trials or cfg.search.trials,
                        timeout=timeout, cache_dir=cache_dir, config_file=config_file, warm_from=warm_from)


def resume_request(
    name: str, url: str, *, trials: int | None = None, timeout: float | None = None,
    cache_dir: Path = DEFAULT_CACHE, sampler: str | None = None,
) -> StudyRequest:
    """The request that continues study ``name`` with its stored config, to ``trials`` or the target it
    was run to."""
    existing = load(name, open_storage(url, must_exist=True))
    cfg = with_sampler(stored_config(existing), sampler)
    target = trials or study_record.read(existing).target_trials or cfg.search.trials
    return StudyRequest(config=cfg, name=name, url=url, trials=int(target), timeout=timeout, cache_dir=cache_dir)


def run_study(request: StudyRequest, progress: StudyProgress | None = None) -> StudyRun:
    """Create or continue the study and run it to ``request.trials`` complete trials.

    Raises :class:`StudyInterrupted` on Ctrl-C during the trials (what ran is stored), and an
    :class:`~autocompress.errors.AutocompressError` for any input that cannot work, before
    anything slow.
    """
    started = time.monotonic()  # search.time_budget counts from here: teacher preparation included
    progress = progress or StudyProgress()
    cfg, name, url = request.config, request.name, request.url
    kind, _ = check_inputs(cfg, request.config_file)  # before a study is created in the storage
    task_data = kind.load_data(cfg.task)
    cfg = continued_config(cfg, url, name)  # a study made before a training setting keeps its own
    check_can_continue(cfg, url, name)  # before minutes of teacher preparation
    source = open_warm_start_source(*request.warm_from, cfg) if request.warm_from else None
    progress.started(request)
    study = create_or_load(cfg, open_storage(url), name)
    bench = prepare_worker(study, url, cfg, request.cache_dir, progress=progress.teacher_step,
                           config_file=request.config_file, task=task_data)
    progress.teacher_ready(bench.teacher_metric, bench.teacher.from_cache, bench.teacher.fine_tune_seconds)
    study_record.write_target(study, request.trials)  # what `resume` aims for
    if source is not None:
        progress.warm_started(warm_start(study, source, bench))
    progress.trials_started(study, request.trials)
    search = cfg.search
    budget_end = started + search.time_budget if search.time_budget is not None else None
    trials_end = budget_end - search.refine_seconds if budget_end is not None else None

    def stop(s: optuna.Study) -> bool:  # no trial starts that would likely run into the refinements' time
        return trials_end is not None and time.monotonic() + typical_trial_seconds(s) > trials_end
    try:
        result = run(study, bench, n_trials=request.trials, timeout=request.timeout, callbacks=[progress.trial_done],
                     stop=stop)
        refined: list[int] = []
        if search.refine_seconds > 0 and not result.gave_up:
            end = budget_end if budget_end is not None else time.monotonic() + search.refine_seconds
            progress.refining(study, max(0.0, end - time.monotonic()))
            refined = refine_until(study, bench, end, on_refined=progress.refined)
    except KeyboardInterrupt:
        raise StudyInterrupted(completed(study), request.trials) from None
    return StudyRun(study, result, tuple(refined))
