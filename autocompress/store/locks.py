"""Host-wide file locks: exclusive ones (teacher preparation, measurements) and shared ones.

Latency is measured on a quiet machine: a measurement holds the host's measurement lock
exclusively, while training and evaluation of local workers hold it shared, so a candidate is
never timed while another worker on the same host computes. A turnstile gives measurements
priority: once one waits, no new computation starts until it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_lock", "exclusive_lock", "shared_lock"]


@contextlib.contextmanager
def _flock(path: str | Path, mode: int) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block."""
    return _flock(path, fcntl.LOCK_EX)


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Exclusive hold of ``path`` with priority over :func:`shared_lock` holders still to come."""
    path = Path(path)
    with _flock(path.with_name(path.name + ".turnstile"), fcntl.LOCK_EX), _flock(path, fcntl.LOCK_EX):
        yield


@contextlib.contextmanager
def shared_lock(path: str | Path) -> Iterator[None]:
    """Shared hold of ``path``: many at once, none while an :func:`exclusive_lock` is held or waited for."""
    path = Path(path)
    with _flock(path.with_name(path.name + ".turnstile"), fcntl.LOCK_EX):
        pass  # a waiting exclusive holder goes first
    with _flock(path, fcntl.LOCK_SH):
        yield
