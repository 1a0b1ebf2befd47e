"""Studies: where they are stored, how they are created, run, warm-started, shared and listed.

One module per job, the way Optuna splits its storages and samplers: :mod:`~.create` (creating or
continuing one), :mod:`~.runner` (the trial loop), :mod:`~.warm_start`, :mod:`~.workers` (one
teacher for every worker), :mod:`~.listing` and :mod:`~.session` (a whole run, as the CLI starts
it). Where studies are stored is :mod:`autocompress.store.storage`.
"""

from autocompress.search.samplers import SAMPLERS, make_sampler, with_sampler
from autocompress.study.create import check_can_continue, continued_config, create_or_load, record_teacher
from autocompress.study.listing import BestSoFar, StudySummary, best_so_far, list_studies, metric_name
from autocompress.study.runner import RunResult, completed, fail_orphaned_trials, run, run_trials, study_sampler, trial_states
from autocompress.study.session import (
    StudyInterrupted,
    StudyProgress,
    StudyRequest,
    StudyRun,
    resume_request,
    run_request,
    run_study,
)
from autocompress.study.workers import prepare_worker
from autocompress.store.storage import (
    DEFAULT_CACHE,
    DEFAULT_ROOT,
    default_output,
    default_storage,
    load,
    local_study_urls,
    open_storage,
    retry_stale_trial,
    stored_config,
)
from autocompress.study.warm_start import WarmStart, open_warm_start_source, warm_start
from autocompress.store.urls import mask_url

__all__ = [
    "DEFAULT_CACHE",
    "DEFAULT_ROOT",
    "SAMPLERS",
    "BestSoFar",
    "RunResult",
    "StudyInterrupted",
    "StudyProgress",
    "StudyRequest",
    "StudyRun",
    "StudySummary",
    "WarmStart",
    "best_so_far",
    "check_can_continue",
    "continued_config",
    "completed",
    "create_or_load",
    "default_output",
    "default_storage",
    "fail_orphaned_trials",
    "list_studies",
    "load",
    "local_study_urls",
    "make_sampler",
    "metric_name",
    "mask_url",
    "open_storage",
    "open_warm_start_source",
    "prepare_worker",
    "record_teacher",
    "resume_request",
    "run_request",
    "retry_stale_trial",
    "run",
    "run_study",
    "run_trials",
    "study_sampler",
    "stored_config",
    "trial_states",
    "warm_start",
    "with_sampler",
]
