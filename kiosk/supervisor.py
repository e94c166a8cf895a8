"""Keeping a kiosk on screen: the app runs as a child process, started again whenever it ends unexpectedly.

A kiosk in a gallery has nobody to restart it. Whatever kills the app (a bug, the kernel's OOM killer, a driver
fault) the supervisor starts it again, and a new app opens on the attract loop with no visitor's data: the
visit lived only in the dead process's memory. systemd (the provisioning issue) restarts the supervisor itself.

    exit 0              the app was stopped on purpose (SIGTERM, Ctrl-C): the supervisor stops too
    exit 75 (restart)   the hub's `restart` command: started again at once
    exit 78 (config)    an operator mistake, already explained on stderr: not restarted, the supervisor exits 1
    anything else       a crash: started again after a pause that doubles from 1 s up to 30 s while crashes
                        keep coming, and starts from 1 s again once an app has run for 60 s

The decision is the pure function `next_step`; `supervise` is the loop around a real child process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Literal

log = logging.getLogger(__name__)

EXIT_RESTART = 75
EXIT_CONFIG = 78
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class Step:
    action: Literal["stop", "restart", "give_up"]
    delay_s: float = 0.0
    exit_code: int = 0
    reason: str = ""


def next_step(returncode: int, ran_for_s: float, previous_delay_s: float) -> Step:
    """What to do once the app exited with `returncode` after running `ran_for_s` seconds."""
    if returncode == 0:
        return Step("stop", reason="stopped")
    if returncode == EXIT_CONFIG:
        return Step("give_up", exit_code=1, reason="configuration error")
    if returncode == EXIT_RESTART:
        return Step("restart", 0.0, reason="restart requested")
    if ran_for_s >= STABLE_AFTER_S or previous_delay_s <= 0:
        delay = FIRST_DELAY_S
    else:
        delay = min(MAX_DELAY_S, previous_delay_s * 2)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return Step("restart", delay, reason=f"crashed ({how})")


def supervise(command: Sequence[str], *, stop: threading.Event | None = None,
              on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> int:
    """Run `command` until it stops on purpose; returns the supervisor's exit status. SIGTERM and SIGINT are
    passed on to the app, which then stops cleanly (its visitor session ends with reason `shutdown`)."""
    stop = stop or threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = 0.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            child = subprocess.Popen(list(command), env={**os.environ, "MUSEUM_KIOSK_SUPERVISED": "1"})
            if on_start is not None:
                on_start(child)
            if stop.is_set() and child.poll() is None:
                # A signal that came while the child was being started found no child to pass it on to.
                child.send_signal(signal.SIGTERM)
            returncode = child.wait()
            if stop.is_set():
                return 0
            step = next_step(returncode, time.monotonic() - started, delay)
            if step.action == "stop":
                return 0
            if step.action == "give_up":
                return step.exit_code
            delay = step.delay_s
            if delay:
                log.error("kiosk app %s; starting it again in %g s", step.reason, delay)
            else:
                log.warning("kiosk app %s; starting it again", step.reason)
            if stop.wait(delay):
                return 0
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["EXIT_CONFIG", "EXIT_RESTART", "Step", "next_step", "supervise"]
