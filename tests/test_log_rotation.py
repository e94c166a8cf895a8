"""mosquitto.log is rotated, with a bound on disk use, under a real running Mosquitto that goes on logging into
the new file (it reopens its log on SIGHUP); `museum broker run` does it from its supervision loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support import wait_until

from broker.mosquitto import LOG_MAX_BYTES, MosquittoProcess, rotated_log, running_pid
from broker.processes import accepts
from broker.site import Site

ROOT = Path(__file__).resolve().parent.parent


def log_files(site: Site) -> list[str]:
    return sorted(path.name for path in site.mosquitto_dir.iterdir() if path.name.startswith("mosquitto.log"))


def make_the_broker_log_a_connection_after_its_reload(site: Site) -> None:
    # Mosquitto logs "Reloading config." into the file it is leaving, then reopens its log in the same turn of its
    # loop: a connection made after that line is logged in the new file.
    assert wait_until(lambda: b"Reloading config." in rotated_log(site, 1).read_bytes(), 30)
    assert site.plain_loopback_port is not None
    assert accepts("127.0.0.1", site.plain_loopback_port)  # Mosquitto logs "New connection from …"


def test_rotation_keeps_n_logs_and_mosquitto_writes_to_the_new_one(site: Site, broker: MosquittoProcess) -> None:
    owner = site.log_file.stat()
    for turn in range(1, 5):
        # At least the line "New connection from …" of the turn before (or the start-up lines) is in the log.
        assert broker.rotate_log_if_needed(max_bytes=10, keep=2), f"turn {turn}: the log was not rotated"
        assert (site.log_file.stat().st_uid, site.log_file.stat().st_mode) == (owner.st_uid, owner.st_mode)
        make_the_broker_log_a_connection_after_its_reload(site)
        assert wait_until(lambda: b"New connection" in site.log_file.read_bytes(), 30), \
            f"turn {turn}: Mosquitto did not reopen its log"
        assert log_files(site) == ["mosquitto.log", "mosquitto.log.1", "mosquitto.log.2"][:turn + 1]
    # Below the limit nothing happens.
    assert not broker.rotate_log_if_needed(max_bytes=10_000_000, keep=2)
    assert b"running" not in rotated_log(site, 2).read_bytes(), "the oldest log must have been dropped"


def test_broker_run_rotates_its_log_past_the_limit(site: Site) -> None:
    command = [sys.executable, "-m", "museum", "broker", "run", "--site", str(site.root), "--no-advertise"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        assert process.stdout is not None
        assert "is running" in process.stdout.readline().decode()
        # Grow the log past the limit as a long-running broker would, then wait for the loop to rotate it.
        with site.log_file.open("ab") as log:
            log.write(b"x" * (LOG_MAX_BYTES + 1) + b"\n")
        assert wait_until(lambda: rotated_log(site, 1).exists(), 30), log_files(site)
        assert rotated_log(site, 1).stat().st_size > LOG_MAX_BYTES
        make_the_broker_log_a_connection_after_its_reload(site)
        assert wait_until(lambda: b"New connection" in site.log_file.read_bytes(), 30)
        assert site.log_file.stat().st_size < 10_000
        assert running_pid(site) is not None
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(30)
