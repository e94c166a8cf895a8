"""The kiosk's supervisor: what it decides after the app exits (`next_step`, pure), and a real supervised
`museum kiosk run` whose app is killed: a new app opens on the attract loop, and SIGTERM stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from support import wait_until
from test_kiosk_cli import WAIT_S, gone, start_kiosk, write_config

from kiosk.supervisor import (
    EXIT_CONFIG,
    EXIT_RESTART,
    FIRST_DELAY_S,
    MAX_DELAY_S,
    STABLE_AFTER_S,
    next_step,
    supervise,
)

__all__ = ["start_kiosk"]  # the fixture, shared with test_kiosk_cli.py


@pytest.mark.parametrize(("returncode", "ran_for_s", "previous_delay_s", "action", "delay_s", "exit_code", "reason"), [
    (0, 5.0, 0.0, "stop", 0.0, 0, "stopped"),                      # SIGTERM, Ctrl-C: stopped on purpose
    (0, 5.0, 8.0, "stop", 0.0, 0, "stopped"),
    (EXIT_CONFIG, 0.5, 0.0, "give_up", 0.0, 1, "configuration error"),  # explained on stderr; looping helps nobody
    (EXIT_CONFIG, 0.5, 4.0, "give_up", 0.0, 1, "configuration error"),
    (EXIT_RESTART, 0.5, 0.0, "restart", 0.0, 0, "restart requested"),   # the hub's `restart`: at once
    (EXIT_RESTART, 0.5, 16.0, "restart", 0.0, 0, "restart requested"),
    (1, 2.0, 0.0, "restart", FIRST_DELAY_S, 0, "crashed (exited with status 1)"),
    (-signal.SIGKILL, 2.0, 0.0, "restart", FIRST_DELAY_S, 0, "crashed (killed by signal 9)"),
    (-signal.SIGSEGV, 2.0, 1.0, "restart", 2.0, 0, "crashed (killed by signal 11)"),  # crashes keep coming
    (1, 2.0, 4.0, "restart", 8.0, 0, "crashed (exited with status 1)"),
    (1, 2.0, 16.0, "restart", MAX_DELAY_S, 0, "crashed (exited with status 1)"),  # capped
    (1, 2.0, MAX_DELAY_S, "restart", MAX_DELAY_S, 0, "crashed (exited with status 1)"),
    (1, STABLE_AFTER_S, 16.0, "restart", FIRST_DELAY_S, 0, "crashed (exited with status 1)"),  # ran well: from 1 s
    (70, STABLE_AFTER_S + 3600, MAX_DELAY_S, "restart", FIRST_DELAY_S, 0, "crashed (exited with status 70)"),
])
def test_next_step(returncode, ran_for_s, previous_delay_s, action, delay_s, exit_code, reason) -> None:
    step = next_step(returncode, ran_for_s, previous_delay_s)
    assert (step.action, step.delay_s, step.exit_code, step.reason) == (action, delay_s, exit_code, reason)


def test_a_killed_app_comes_back_on_the_attract_loop_and_sigterm_stops_all(site, sample_pack_file, start_kiosk,
                                                                           tmp_path) -> None:
    config = write_config(site, tmp_path, pack=sample_pack_file)
    supervisor = start_kiosk(config)
    supervisor.wait_log(lambda k: k.first_frames() == ["attract"], "the first app's first frame")
    first, = supervisor.children()

    os.kill(first, signal.SIGKILL)

    supervisor.wait_log(lambda k: k.first_frames() == ["attract", "attract"], "a new app's first frame")
    assert "crashed (killed by signal 9); starting it again" in supervisor.text()
    assert wait_until(lambda: gone(first), WAIT_S), "the killed app was not reaped"
    second, = supervisor.children()
    assert second != first and supervisor.process.poll() is None

    assert supervisor.terminate() == 0
    assert wait_until(lambda: gone(second), WAIT_S), "the app outlived its supervisor"
    assert supervisor.text().count("Traceback") == 0


def test_a_stop_that_comes_while_the_app_is_starting_still_stops_it() -> None:
    """SIGTERM between the loop's check and the new child being known to the handler (here: set from
    `on_start`, a known point just after the start) must still reach that child, or the supervisor would wait
    on an app that nobody asked to stop."""
    stop = threading.Event()
    started: list[subprocess.Popen[bytes]] = []

    def starting(child: subprocess.Popen[bytes]) -> None:
        started.append(child)
        stop.set()  # as the SIGTERM handler does, too late to signal a child it did not know yet

    # Unstopped, the app would sleep its WAIT_S out and exit 0: the test would fail, late but never hang.
    code = supervise([sys.executable, "-c", f"import time; time.sleep({WAIT_S})"], stop=stop, on_start=starting)

    assert code == 0
    assert started[0].returncode == -signal.SIGTERM, "the app was not told to stop"
