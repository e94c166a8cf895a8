"""Helpers shared by the tests: `from support import free_port` (pytest puts tests/ on sys.path, as the
directory of a rootless conftest.py)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

from broker.processes import free_port, free_ports

__all__ = ["UiQueue", "assert_not_blank", "free_port", "free_ports", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def assert_not_blank(path: Path, *, size: tuple[int, int] | None = (1280, 800), min_colours: int = 16,
                     max_share: float = 0.95) -> None:
    """A screenshot of the kiosk shows something: at least `min_colours` colours (antialiased text alone gives
    dozens) and no colour over `max_share` of the frame, so a blank, black or single-colour frame fails. `size`:
    the frame's expected size (None: any)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if size is not None:
            assert rgb.size == size, f"{path.name}: {rgb.size}"
        pixels = rgb.size[0] * rgb.size[1]
        colours = rgb.getcolors(maxcolors=pixels) or []
    assert len(colours) >= min_colours, f"{path.name}: only {len(colours)} colours: a blank frame?"
    biggest = max(count for count, _ in colours)
    assert biggest < max_share * pixels, f"{path.name}: one colour covers {biggest} pixels"


class UiQueue:
    """`ui_call` for a kiosk without Kivy: the test thread is the UI thread and runs what is queued."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def __call__(self, function: Callable[[], None]) -> None:
        self.calls.put(function)

    def pump(self) -> bool:
        """Run everything queued; False, so that `wait_until(lambda: ui.pump() or condition)` reads well."""
        while True:
            try:
                function = self.calls.get_nowait()
            except queue.Empty:
                return False
            function()
