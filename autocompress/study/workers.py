"""Preparing a worker of a study that others may share: one teacher for every worker and machine."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from autocompress.schema.config import StudyConfig
from autocompress.tasks.data import TaskData
from autocompress.train.distill import Progress
from autocompress.store.artifacts import artifact_store_for, fetch_teacher_cache, publish_teacher_cache, study_lock
from autocompress.study.create import record_teacher
from autocompress.search.workbench import Workbench, prepare

__all__ = ["prepare_worker"]

log = logging.getLogger(__name__)


def prepare_worker(
    study: optuna.Study,
    url: str,
    cfg: StudyConfig,
    cache_dir: Path,
    *,
    progress: Progress | None = None,
    config_file: str | None = None,
    task: TaskData | None = None,
) -> Workbench:
    """:func:`~autocompress.search.workbench.prepare` the workbench as one of possibly many workers of ``study``.

    Under the study's lock (so that two workers starting together do not both fine-tune): fetch
    the teacher another machine published, prepare (a no-op for a cached teacher), publish it
    if this worker made it, and record the teacher's figures on the study once.
    """
    with study_lock(url, study.study_name, cache_dir):
        store = artifact_store_for(url)
        if store is not None:
            fetched = fetch_teacher_cache(study, store, cache_dir)
            if fetched:
                log.info("using the teacher shared by another worker: %s", ", ".join(fetched))
        bench = prepare(cfg, cache_dir, progress=progress, config_file=config_file, task=task)
        if store is not None:
            publish_teacher_cache(study, store, bench.teacher.cache)
        record_teacher(study, bench)
    return bench
