"""`museum kiosk run` as the service will run it: a real process, offscreen (DISPLAY unset: EGL), from an enrolled
device's file, with no broker and no hub anywhere (a kiosk must show what it has on its own).

Each run is waited for on its log lines (the first frame on screen), never on a duration; a Kivy start under a
loaded CI machine can take seconds, so every wait is generous."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, device_config
from support import assert_not_blank, wait_until

from broker.site import Site
from kiosk.pack_store import PackStore

DEVICE = "kiosk-cli"
HOME = "impressionnisme"
WAIT_S = 30.0
FIRST_FRAME = "first frame on screen "


def write_config(site: Site, folder: Path, *, pack: Path | None = None, kiosk: dict[str, Any] | None = None) -> Path:
    """The device's file (pointed at the site's plain loopback listener) with a [kiosk] table; `pack` is
    installed in its packs folder beforehand, as the last good pack of an earlier run."""
    state = folder / "state"
    settings = {"state_dir": str(state), "home_room": HOME, **(kiosk or {})}
    path = folder / "kiosk.toml"
    replace(device_config(site, DEVICE), extra={"kiosk": settings}).save(path)
    if pack is not None:
        PackStore(state / "packs").install(pack)
    return path


def kiosk_env() -> dict[str, str]:
    hidden = ("DISPLAY", "WAYLAND_DISPLAY", "KIVY_GL_BACKEND", "MUSEUM_KIOSK_SUPERVISED")
    return {key: value for key, value in os.environ.items() if key not in hidden}


class KioskProcess:
    """One `museum kiosk run`, its stdout and stderr in one log file."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "museum", "kiosk", "run", "--config", str(config),
                                             *args], stdout=out, stderr=out, cwd=ROOT, env=kiosk_env())
        self.pid = self.process.pid

    def text(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def first_frames(self) -> list[str]:
        """The screen of every first frame logged so far (one per app started)."""
        return [line.split(FIRST_FRAME, 1)[1].split(",", 1)[0] for line in self.text().splitlines()
                if FIRST_FRAME in line]

    def wait_log(self, condition: Callable[[KioskProcess], bool], what: str) -> None:
        if not wait_until(lambda: condition(self) or self.process.poll() is not None, WAIT_S) \
                or not condition(self):
            raise AssertionError(f"{what}: not in the log (exit status {self.process.poll()}):\n{self.text()[-3000:]}")

    def children(self) -> list[int]:
        """The pids of this process's children (the supervised app)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT_S)

    def kill(self) -> None:
        """Teardown: whatever is left of this run, by pid (its app child first)."""
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT_S)


def gone(pid: int) -> bool:
    """No such process any more (a zombie not yet reaped counts as still there)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def start_kiosk(tmp_path: Path) -> Iterator[Callable[..., KioskProcess]]:
    started: list[KioskProcess] = []

    def start(config: Path, *args: str) -> KioskProcess:
        run = KioskProcess(config, tmp_path / f"kiosk-{len(started)}.log", *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


# --- starting ------------------------------------------------------------------------------------------------

def test_with_no_broker_and_no_hub_the_last_good_pack_is_shown(site, sample_pack_file, start_kiosk,
                                                                tmp_path) -> None:
    config = write_config(site, tmp_path, pack=sample_pack_file)
    screenshots = tmp_path / "screen.png"

    kiosk = start_kiosk(config, "--screenshots", str(screenshots), "--screenshot-every", "0.5")

    kiosk.wait_log(lambda k: k.first_frames() == ["attract"], "the first frame on the attract loop")
    assert wait_until(screenshots.exists, WAIT_S), "no screenshot written"
    assert_not_blank(screenshots, size=None)
    assert kiosk.process.poll() is None
    assert kiosk.terminate() == 0
    assert "Traceback" not in kiosk.text()
    assert not screenshots.with_suffix(".part").exists()


def test_with_no_pack_at_all_it_says_content_is_on_its_way(site, start_kiosk, tmp_path) -> None:
    config = write_config(site, tmp_path)

    kiosk = start_kiosk(config, "--no-supervise")

    kiosk.wait_log(lambda k: k.first_frames() == ["no_content"], "the first frame on the no-content screen")
    assert kiosk.terminate() == 0
    assert "Traceback" not in kiosk.text()


@pytest.mark.parametrize("supervised", [True, False], ids=["supervised", "no-supervise"])
def test_a_bad_kiosk_setting_is_one_line_naming_the_file(site, tmp_path, supervised: bool) -> None:
    config = write_config(site, tmp_path, kiosk={"idle_timeout_s": 5})

    done = subprocess.run([sys.executable, "-m", "museum", "kiosk", "run", "--config", str(config),
                           *([] if supervised else ["--no-supervise"])], cwd=ROOT, env=kiosk_env(),
                          capture_output=True, text=True, timeout=WAIT_S * 2)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(config) in lines[0] and "idle_timeout_s" in lines[0] and "Traceback" not in done.stderr


def test_museum_kiosk_loads_the_kiosk_commands_only() -> None:
    """The supervisor and the app are two long-lived processes on a Pi: neither imports the other roles."""
    code = ("import sys\nsys.argv = ['museum', 'kiosk', '--help']\nfrom museum.launch import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('broker', 'demo', 'cryptography', 'museum.cli') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "Usage: museum kiosk" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
