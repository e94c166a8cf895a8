"""Helpers shared by the tests: `from support import free_port` (pytest puts tests/ on sys.path, as the
directory of a rootless conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from broker.processes import free_port, free_ports

__all__ = ["free_port", "free_ports", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
