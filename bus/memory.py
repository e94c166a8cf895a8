"""Giving freed C heap back to the system: shared by the long-running processes (the hub, the kiosk)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    except OSError:
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim); elsewhere, nothing to do. glibc
    keeps memory freed by Python and C libraries for reuse, so a burst (a flood at the hub, textures of many sizes
    at the kiosk) leaves the process's RSS high though nothing leaks."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
