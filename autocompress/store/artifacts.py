"""State that the workers of one study share: a lock per study, and the teacher's cache.

Workers of a study may run on machines that share nothing but the database. The fine-tuned
teacher (with its logits and importance scores) is prepared by the first worker, under a lock
that the others wait on, and published as an Optuna artifact; the others download it instead of
fine-tuning their own (which would also give a slightly different teacher).

* The lock is a PostgreSQL advisory lock keyed by the study name (held on its own connection),
  or a file lock beside a SQLite database (whose workers are on one machine by construction).
* The artifact store keeps blobs in one table of the study's own database, so nothing beyond the
  database URL is needed; Optuna's artifact metadata (on the study) stays the source of truth
  for which blob is what. Written by hand: Optuna ships file-system and S3/GCS stores only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import optuna
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from autocompress.errors import StorageError
from autocompress.store import study_record
from autocompress.store.locks import file_lock
from autocompress.store.urls import mask_url, sqlite_path

__all__ = ["DBArtifactStore", "artifact_store_for", "fetch_teacher_cache", "publish_teacher_cache", "study_lock"]

log = logging.getLogger(__name__)

def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a study name."""
    return int.from_bytes(hashlib.sha256(f"autocompress:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(url: str, name: str, fallback_dir: Path | None = None) -> Iterator[None]:
    """Hold the study's exclusive lock across every worker that shares ``url``."""
    path = sqlite_path(url)
    if path is not None:
        with file_lock(path.with_name(path.name + f".{name}.lock")):
            yield
        return
    if url.startswith("postgresql"):
        engine = sa.create_engine(url, poolclass=NullPool)
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot reach {mask_url(url)} to take the study lock: {mask_url(str(exc).splitlines()[0])}") from None
        try:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
            try:
                yield
            finally:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
        finally:
            conn.close()
            engine.dispose()
        return
    # other databases: a lock on this machine only
    with file_lock(Path(fallback_dir or tempfile.gettempdir()) / f"autocompress-study-{_lock_key(name)}.lock"):
        yield


_META = sa.MetaData()
_BLOBS = sa.Table(
    "autocompress_artifacts",
    _META,
    sa.Column("artifact_id", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


class DBArtifactStore:
    """An Optuna artifact store (``open_reader`` / ``write`` / ``remove``) in a SQL table."""

    def __init__(self, url: str) -> None:
        self._engine = sa.create_engine(url, poolclass=NullPool)
        _META.create_all(self._engine, checkfirst=True)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_BLOBS.c.data).where(_BLOBS.c.artifact_id == artifact_id)).first()
        if row is None:
            from optuna.artifacts.exceptions import ArtifactNotFound

            raise ArtifactNotFound(f"artifact {artifact_id} is not in the database")
        return io.BytesIO(row[0])

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        with self._engine.begin() as conn:
            conn.execute(_BLOBS.insert().values(artifact_id=artifact_id, data=content_body.read()))

    def remove(self, artifact_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(_BLOBS.delete().where(_BLOBS.c.artifact_id == artifact_id))


def artifact_store_for(url: str) -> DBArtifactStore | None:
    """The store that shares cache entries between machines; ``None`` for SQLite (one machine)."""
    if sqlite_path(url) is not None:
        return None
    return DBArtifactStore(url)


def fetch_teacher_cache(study: optuna.Study, store: DBArtifactStore, cache_dir: Path) -> list[str]:
    """Download into ``cache_dir`` every shared entry this machine lacks; returns their names."""
    fetched = []
    for name, artifact_id in study_record.read(study).teacher_cache.items():
        target = Path(cache_dir) / name
        if target.exists():
            continue
        log.info("downloading the shared cache entry %s", name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            archive = Path(tmp) / "entry.tar"
            optuna.artifacts.download_artifact(artifact_store=store, file_path=str(archive), artifact_id=artifact_id)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            (Path(tmp) / name).rename(target)  # whole entry appears at once
        fetched.append(name)
    return fetched


def publish_teacher_cache(study: optuna.Study, store: DBArtifactStore, entry: Path) -> bool:
    """Upload the cache directory ``entry`` for the study's other workers, once; True if uploaded."""
    if entry.name in study_record.read(study).teacher_cache:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{entry.name}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(entry, arcname=entry.name)
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(archive), study_or_trial=study, mimetype="application/x-tar"
        )
    study_record.add_cache_entry(study, entry.name, artifact_id)
    log.info("published %s to the study's storage (%s)", entry.name, artifact_id)
    return True
