"""Advisory file locks (flock) that the kernel releases when their holder dies, even by kill -9: a lock never
outlives the process that took it, so no stale lock file ever has to be cleaned up by hand."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class AlreadyLocked(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; without `wait`, raise `AlreadyLocked`
    at once if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise AlreadyLocked(str(path)) from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases the lock
