"""`museum demo`: the whole museum on one machine, every part a real process talking MQTT to a real Mosquitto.

    museum demo
    ├── museum companion run --config SITE/demo/companion/companion.toml --host 127.0.0.1 --port <port>
    │                                                     → the phones' pages, http://127.0.0.1:<port>/
    ├── museum broker run --site SITE --no-advertise      → mosquitto -c SITE/mosquitto/mosquitto.conf
    ├── museum hub run --site SITE                        → SITE/hub/hub.sqlite, SITE/hub/stats.json
    ├── museum content serve --site SITE --bind 127.0.0.1 → https://127.0.0.1:<port>/packs/
    ├── museum sync run --site SITE                       → the hub's events, anonymised, to that companion
    ├── museum kiosk run --config SITE/devices/kiosk-app.toml --windowed --screenshots …  (the real kiosk)
    ├── museum simulate kiosk --config SITE/devices/kiosk-01.toml --zone …      (one per simulated kiosk)
    └── museum simulate gateway --config SITE/devices/gateway-<room>.toml …     (one per room: a real BLE
                                                                                  station on a simulated radio)

The site is set up the way staff would set one up, with `museum site init`, `museum device enroll`, `museum
content build`, `museum content publish` and `museum companion enroll-site` run as commands, and the live figures
come from the hub's stats file: the demo holds no broker or hub code and never opens the hub's database, so what
it shows is what the platform does on its own.

The simulated kiosks' visitors who collect a work "keep the QR code": their take-home URLs go to a small file
(`TAKE_HOME_FILE`, demo.simulated_device.TakeHomeFile), and once the companion shows one of those visits the
demo prints its URL, for a person to open in a browser.

Every child runs in its own session, so a Ctrl-C on the terminal reaches only the demo, which then stops the
museum in order: devices first, the real kiosk included (they say goodbye and hand over what they hold), then
the sync, then the hub, the pack server and the companion service, then the broker.
Children are also told by the kernel (PR_SET_PDEATHSIG) to stop if the demo dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from broker.processes import accepts, free_ports, runs_with_argument
from broker.site import SiteLayout
from broker.upstream_sync import SyncPaths, read_status
from bus.config import ClientConfig
from content.model import Museum
from content.sample import SAMPLE_MUSEUM_PATH, load_sample_museum
from demo.dashboard import LiveView, dashboard_lines, read_hub_figures
from demo.radio import OCCUPANCY_WINDOW_S, demo_gateway_table
from demo.simulated_device import StopFlag, read_take_home_file
from hardware.settings import StationSettings
from kiosk.settings import KioskSettings

SITE_ID = "demo"
DEFAULT_KIOSKS = 6
DEFAULT_SPEED = 20.0
DEFAULT_SEED = 2026
MOSQUITTO_FALLBACK = Path("/usr/sbin/mosquitto")
BROKER_READY_S = 20.0
HUB_READY_S = 15.0
PACKS_READY_S = 15.0
KIOSK_APP_READY_S = 60.0
"""How long the real kiosk may take to its first frame before the demo carries on without it (a start takes
about a second; the margin is for a loaded machine rendering in software)."""
KIOSK_APP_ID = "kiosk-app"
KIOSK_SCREEN_EVERY_S = 5.0
COMPANION_READY_S = 30.0
SYNC_READY_S = 30.0
SYNC_TARGET = "local"
"""The companion on the site server, as the sync's configuration names it."""
SYNC_INTERVAL_S = 2.0
"""How often the sync polls its companion when nothing waits: short, so a take-home page fills as one watches
(a site server's default is 10 s)."""
SYNC_HORIZON_SLACK_S = 2.0
"""How long after its creation an event may go up (a site server's default is 120 s, for devices that deliver
late): the demo's devices are on this machine and deliver at once, and a take-home page should fill within
seconds. An event that still comes later only costs the hub a "late" row."""
TAKE_HOME_FILE = "take-home.txt"
"""In the demo's folder: the take-home URLs the simulated visitors keep (the only place their tokens are)."""
PROBE_TIMEOUT_S = 2.0
SAMPLE_CONTENT_DIR = SAMPLE_MUSEUM_PATH.parent
FIRST_FRAME_LINE = "first frame on screen"
"""What `museum kiosk run` logs once its window shows something (kiosk/cli.py)."""
APP_CRASHED_LINE = "kiosk app crashed"
"""What its supervisor logs when the app exits unexpectedly (kiosk/supervisor.py); it then starts it again."""
# Stop timeouts. The broker's is the longest: `broker run` gives Mosquitto 10 s to save its persistence.
DEVICES_STOP_S = 8.0
HUB_STOP_S = 6.0
BROKER_STOP_S = 15.0
SYNC_STOP_S = 6.0
GOODBYES_S = 3.0
"""After the devices stop, how long to let the hub record their offline statuses before stopping it."""
_PR_SET_PDEATHSIG = 1


class DemoError(RuntimeError):
    """The demo cannot start or a part of it failed; the message says what to do."""


class DemoInterrupted(DemoError):
    """Stopped by a signal while still setting up."""


# --- the plan --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    kind: str
    """Its kind at enrollment (`museum device enroll --kind`)."""
    zone_id: str
    app: bool = False
    """The real kiosk app (`museum kiosk run`) rather than a simulated device (`museum simulate`)."""


def plan_devices(museum: Museum, kiosks: int, *, kiosk_app: bool = True) -> list[DeviceSpec]:
    """The real kiosk app in the first room (unless `kiosk_app` is false), `kiosks` simulated kiosks dealt round
    the rooms in order, and one gateway per room."""
    if kiosks < 0:
        raise ValueError(f"the number of kiosks cannot be negative, got {kiosks}")
    rooms = museum.zone_ids
    plan = [DeviceSpec(KIOSK_APP_ID, "kiosk", rooms[0], app=True)] if kiosk_app else []
    plan += [DeviceSpec(f"kiosk-{number:02d}", "kiosk", rooms[(number - 1) % len(rooms)])
             for number in range(1, kiosks + 1)]
    plan += [DeviceSpec(f"gateway-{zone_id}"[:63].rstrip("-"), "gateway", zone_id) for zone_id in rooms]
    return plan


def kiosk_table(spec: DeviceSpec, state_dir: Path, companion_url: str) -> dict[str, object]:
    """The `[kiosk]` settings (kiosk/settings.py) of the demo's real kiosk: its room, the demo's companion
    service (where its "My visit" QR codes lead), and its state (packs, Kivy's home) among the demo's own files
    rather than beside every device's file."""
    return {"home_room": spec.zone_id, "companion_base_url": companion_url, "state_dir": str(state_dir)}


def companion_toml(base_url: str) -> str:
    """The demo companion's configuration (companion_api/settings.py): its store and cache beside the file."""
    return ("# The demo's companion service (docs/companion.md): the phones' pages, on this machine only.\n"
            'store = "companion.sqlite"\n'
            'data_dir = "data"\n'
            f"base_url = {_toml_string(base_url)}\n")


def sync_toml(companion_url: str, key_file: str) -> str:
    """The site's sync configuration (broker/upstream_sync.py): one target, the demo's companion."""
    return ("# museum sync: the demo's companion service on this machine (docs/demo.md).\n"
            f"horizon_slack_s = {SYNC_HORIZON_SLACK_S}\n"
            "[[targets]]\n"
            f'name = "{SYNC_TARGET}"\n'
            f"url = {_toml_string(companion_url)}\n"
            f"key_file = {_toml_string(key_file)}\n"
            f"interval_s = {SYNC_INTERVAL_S}\n"
            "timeout_s = 10.0\n")


def _toml_string(text: str) -> str:
    # A TOML basic string is a JSON string for what the demo writes (ASCII paths and URLs).
    return json.dumps(text)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Straight to 127.0.0.1, whatever http_proxy the environment names."""


def answers_ok(url: str, timeout: float = PROBE_TIMEOUT_S) -> bytes | None:
    """The body of a 200 answer to a GET of `url`, or None (any other status, or no answer)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return response.read(1 << 20) if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_problem(log_text: str, limit: int = 4) -> str:
    """Why a kiosk app did not start, from its output: its last error lines (Kivy's, the supervisor's, ours),
    or its last lines when none says it."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines
              if any(mark in line for mark in (" CRITICAL ", " ERROR ", "error:", "Error:", "Traceback"))]
    chosen = (errors or lines)[-limit:]
    return "\n".join(line if len(line) <= 300 else line[:299] + "~" for line in chosen) or "(no output)"


# --- processes -------------------------------------------------------------------------------------------

def mosquitto_installed() -> bool:
    # /usr/sbin is often not on a non-root PATH, and that is where Debian puts the broker.
    return shutil.which("mosquitto") is not None or MOSQUITTO_FALLBACK.exists()


def museum_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "museum", *args]


def museum_hint(*args: str) -> str:
    """A `museum` command line that works as typed: `make demo` runs in a venv that is not on the PATH, so the
    hint names the console script beside this interpreter, or the interpreter itself when there is none."""
    script = Path(sys.executable).parent / "museum"
    program = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "museum"]
    return shlex.join([*program, *args])


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn asking the kernel to SIGTERM the child when the demo dies, however it dies."""

    # Loaded before the fork: the child should do as little as possible between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def arrange() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            # The demo may have died between fork and prctl; then nobody would ever send the signal.
            if os.getppid() != parent:
                os._exit(1)

    return arrange


@dataclass
class Child:
    name: str
    role: str        # "broker", "hub", "packs" (the pack server), "companion", "sync" or "device"
    process: subprocess.Popen[bytes]
    log_path: Path
    dropped: bool = False
    """Given up on (the real kiosk could not start here): the demo runs on without it."""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def stop_processes(children: Sequence[Child], timeout: float) -> list[str]:
    """SIGTERM each, wait up to `timeout` in all, then SIGKILL the process group of any straggler. Returns the
    names of those that had to be killed."""
    for child in children:
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(child.name)
            # Its own session made it a group leader: the group holds whatever it started itself.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    return killed


# --- the demo --------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, site_dir: Path, devices: Sequence[DeviceSpec], *, speed: float, seed: int,
                 stop: StopFlag, out: IO[str], museum: Museum | None = None) -> None:
        self.site = site_dir.absolute()
        self.museum = museum or load_sample_museum()
        self.layout = SiteLayout(self.site)
        self.devices = list(devices)
        self.speed = speed
        self.seed = seed
        self.stop = stop
        self.out = out
        self.children: list[Child] = []
        self.killed: list[str] = []
        self.plain_port = 0
        self.content_port = 0
        self.companion_port = 0
        self.take_home_shown: tuple[str, str] | None = None
        """(take-home URL, a work it collected) once printed."""
        self._stopped = False

    @property
    def work_dir(self) -> Path:
        """The demo's own files: children's output and the list of their pids."""
        return self.site / "demo"

    @property
    def pids_file(self) -> Path:
        return self.work_dir / "pids"

    @property
    def stats_file(self) -> Path:
        return self.layout.hub_stats_file

    @property
    def database(self) -> Path:
        return self.layout.hub_database

    def device_config(self, device_id: str) -> Path:
        return self.layout.device_config(device_id)

    @property
    def pack_file(self) -> Path:
        """The sample pack as `museum content build` writes it; publishing copies it into the site."""
        return self.work_dir / "sample-museum.tar"

    @property
    def kiosk_screen(self) -> Path:
        """Where the real kiosk writes its screen every few seconds, with or without a window."""
        return self.work_dir / "kiosk-screen.png"

    def kiosk_state_dir(self, device_id: str) -> Path:
        return self.work_dir / f"{device_id}-state"

    @property
    def companion_dir(self) -> Path:
        """The companion service's configuration, its SQLite store and its content cache."""
        return self.work_dir / "companion"

    @property
    def companion_config(self) -> Path:
        return self.companion_dir / "companion.toml"

    @property
    def companion_store(self) -> Path:
        return self.companion_dir / "companion.sqlite"

    @property
    def companion_url(self) -> str:
        return f"http://127.0.0.1:{self.companion_port}"

    @property
    def sync_paths(self) -> SyncPaths:
        return SyncPaths(self.site)

    @property
    def sync_key_file(self) -> Path:
        """Where the sync's configuration expects the site key of the demo's companion."""
        return self.sync_paths.folder / f"{SYNC_TARGET}.key"

    @property
    def take_home_file(self) -> Path:
        return self.work_dir / TAKE_HOME_FILE

    @property
    def kiosk_apps(self) -> list[DeviceSpec]:
        return [spec for spec in self.devices if spec.app]

    @property
    def _app_ids(self) -> set[str]:
        return {spec.device_id for spec in self.kiosk_apps}

    @property
    def running_devices(self) -> list[str]:
        """The devices the figures count: every one enrolled but a real kiosk the demo gave up on."""
        dropped = {child.name for child in self.children if child.dropped}
        return [spec.device_id for spec in self.devices if spec.device_id not in dropped]

    def say(self, text: str) -> None:
        if self.out.isatty():
            # Wrapped between words, not cut mid-word by the terminal; paths and commands stay whole.
            width = shutil.get_terminal_size().columns - 1
            text = "\n".join(line if len(line) <= width else
                             textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
                             for line in text.split("\n"))
        self.out.write(text + "\n")
        self.out.flush()

    # --- setting up -----------------------------------------------------------------------------------

    def _run_setup(self, *args: str) -> str:
        return self._finish_setup(self._start_setup(*args))

    def _start_setup(self, *args: str) -> subprocess.Popen[str]:
        """A set-up command started, for `_finish_setup` to wait for (meanwhile, others can run)."""
        if self.stop.requested:
            raise DemoInterrupted(f"stopped by {self.stop.signal_name} while setting up")
        # Own session: a Ctrl-C now stops the demo between two steps, not a step half-way.
        return subprocess.Popen(museum_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, stdin=subprocess.DEVNULL)

    def _finish_setup(self, process: subprocess.Popen[str]) -> str:
        """Its standard output once it has succeeded; DemoError with what it said if it failed."""
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            command = process.args if isinstance(process.args, list) else []  # [python, -m, museum, ...]
            raise DemoError(f"`museum {' '.join(str(arg) for arg in command[3:])}` failed:\n"
                            f"{(stderr or stdout).strip()}")
        return stdout

    def set_up(self) -> None:
        tls_port, plain_port, content_port, companion_port = free_ports(4)
        # --hostname 127.0.0.1: the packs' announced URLs name the broker's first host name, and a kiosk on this
        # machine must reach the pack server there (the site certificate names 127.0.0.1 too).
        self._run_setup("site", "init", str(self.site), "--site-id", SITE_ID, "--tls-port", str(tls_port),
                        "--bind", "127.0.0.1", "--plain-loopback-port", str(plain_port), "--content-port",
                        str(content_port), "--hostname", "127.0.0.1")
        self.plain_port, self.content_port, self.companion_port = plain_port, content_port, companion_port
        self.work_dir.mkdir(mode=0o700, exist_ok=True)
        # The companion's enrollment runs while the devices are enrolled: it needs nothing of theirs.
        enrolling = self._enroll_at_companion()
        try:
            for spec in self.devices:
                self._run_setup("device", "enroll", spec.device_id, "--kind", spec.kind, "--site", str(self.site))
                if not self.device_config(spec.device_id).is_file():
                    raise DemoError(f"`museum device enroll` wrote no {self.device_config(spec.device_id)}")
                if spec.app:
                    self._add_kiosk_settings(spec)
                elif spec.kind == "gateway":
                    self._add_gateway_settings(spec)
            self._run_setup("content", "build", str(SAMPLE_CONTENT_DIR), str(self.pack_file))
        except BaseException:
            enrolling.kill()
            enrolling.communicate()
            raise
        self._install_site_key(self._finish_setup(enrolling).strip())
        self.say(f"Site {SITE_ID!r} in {self.site}: broker on 127.0.0.1:{plain_port} (plain, loopback only) and "
                 f"127.0.0.1:{tls_port} (TLS); {len(self.devices)} devices enrolled; the sample content pack "
                 f"built ({self.pack_file}); the site enrolled at the demo's companion service "
                 f"({self.companion_config}), its key in {self.sync_key_file}.")

    def _enroll_at_companion(self) -> subprocess.Popen[str]:
        """The companion service's configuration written and `museum companion enroll-site` started, as an IT
        team would set up a companion on the site server."""
        self.companion_dir.mkdir(mode=0o700, exist_ok=True)
        self.companion_config.write_text(companion_toml(self.companion_url), encoding="utf-8")
        return self._start_setup("companion", "enroll-site", SITE_ID, "--config", str(self.companion_config))

    def _install_site_key(self, key: str) -> None:
        """The key enrollment printed, where the sync's configuration (written here too) expects it, 0600."""
        if not key.startswith(f"{SITE_ID}.") or len(key.splitlines()) != 1:
            raise DemoError(f"`museum companion enroll-site {SITE_ID}` printed no site key on its standard output")
        try:
            self.sync_paths.folder.mkdir(mode=0o700, exist_ok=True)
            descriptor = os.open(self.sync_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(key + "\n")
            key_file = self.sync_key_file.relative_to(self.sync_paths.config_file.parent)
            self.sync_paths.config_file.write_text(sync_toml(self.companion_url, str(key_file)), encoding="utf-8")
        except OSError as error:
            raise DemoError(f"cannot write the sync's configuration in {self.site}: {error}") from None

    def _add_kiosk_settings(self, spec: DeviceSpec) -> None:
        """Add the `[kiosk]` table to the real kiosk's file as staff would, keeping what enrollment wrote (on a
        demo site: the plain loopback listener, no discovery) and the file's 0600."""
        path = self.device_config(spec.device_id)
        try:
            config = ClientConfig.load(path)
            config = dataclasses.replace(config, extra={
                **config.extra, "kiosk": kiosk_table(spec, self.kiosk_state_dir(spec.device_id),
                                                     self.companion_url)})
            KioskSettings.from_config(config, path)
            config.save(path)
        except (OSError, ValueError) as error:
            raise DemoError(f"cannot set up the real kiosk's settings: {error}") from None

    def _add_gateway_settings(self, spec: DeviceSpec) -> None:
        """Add the `[gateway]` table to a station's file as staff would (demo.radio.demo_gateway_table: beside its
        room's featured work, the demo's tag namespace, short timings)."""
        path = self.device_config(spec.device_id)
        try:
            config = ClientConfig.load(path)
            config = dataclasses.replace(config, extra={
                **config.extra, "gateway": demo_gateway_table(self.museum, spec.zone_id)})
            StationSettings.from_config(config, path)
            config.save(path)
        except (OSError, ValueError) as error:
            raise DemoError(f"cannot set up the settings of station {spec.device_id}: {error}") from None

    # --- starting -------------------------------------------------------------------------------------

    def _spawn(self, name: str, role: str, args: Sequence[str]) -> Child:
        if self.stop.requested:
            raise DemoInterrupted(f"stopped by {self.stop.signal_name} while starting")
        log_path = self.work_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(museum_command(*args), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=_die_with_parent(os.getpid()),
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        child = Child(name, role, process, log_path)
        self.children.append(child)
        self._write_pids()
        return child

    def _write_pids(self) -> None:
        temporary = self.pids_file.with_suffix(".tmp")
        temporary.write_text("".join(f"{c.process.pid} {c.name}\n" for c in self.children), encoding="ascii")
        os.replace(temporary, self.pids_file)

    def _wait_for(self, child: Child, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not child.alive:
                raise DemoError(f"{child.name} exited with status {child.process.returncode} while starting (before "
                                f"it could {what}); its output ({child.log_path}):\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"{child.name} did not {what} within {timeout:g} s; its output ({child.log_path}):\n"
                                f"{child.log_tail()}")
            if self.stop.wait(0.1):
                raise DemoInterrupted(f"stopped by {self.stop.signal_name} while starting")

    def start(self) -> None:
        site = str(self.site)
        # The companion first: it needs nothing of the others, and is the slowest to start (its web framework).
        companion = self._spawn("companion", "companion", [
            "companion", "run", "--config", str(self.companion_config), "--host", "127.0.0.1", "--port",
            str(self.companion_port)])
        broker = self._spawn("broker", "broker", ["broker", "run", "--site", site, "--no-advertise"])
        self._wait_for(broker, "accept connections", lambda: accepts("127.0.0.1", self.plain_port), BROKER_READY_S)

        hub = self._spawn("hub", "hub", ["hub", "run", "--site", site])
        # Started beside the hub, and serving before the pack is announced: a kiosk that hears of the pack finds
        # it there at its first attempt.
        packs = self._spawn("packs", "packs", ["content", "serve", "--site", site, "--bind", "127.0.0.1",
                                               "--port", str(self.content_port)])

        def hub_connected() -> bool:
            figures = read_hub_figures(self.stats_file)
            return figures is not None and figures.connected

        self._wait_for(hub, "connect to the broker", hub_connected, HUB_READY_S)
        self._wait_for(packs, "accept connections", lambda: accepts("127.0.0.1", self.content_port), PACKS_READY_S)
        self._wait_for(companion, "answer /healthz", lambda: answers_ok(f"{self.companion_url}/healthz") is not None,
                       COMPANION_READY_S)
        self._run_setup("content", "publish", str(self.pack_file), "--site", site)
        # After the publication: its first batch names the pack, which the companion then asks for.
        sync = self._spawn("sync", "sync", ["sync", "run", "--site", site, "--no-progress", "-v"])

        # The real kiosk first: its window comes up while the simulated devices start.
        apps = [self._spawn(spec.device_id, "device", self._kiosk_app_args(spec)) for spec in self.kiosk_apps]
        for spec in self.devices:
            if not spec.app:
                self._spawn(spec.device_id, "device", self._simulated_args(spec))
        self._wait_for(sync, "send its first batch to the companion", self._synced_once, SYNC_READY_S)
        for app in apps:
            self._wait_for_kiosk_app(app)
        simulated = [spec for spec in self.devices if not spec.app]
        rooms = len({spec.zone_id for spec in self.devices})
        kiosks = sum(spec.kind == "kiosk" for spec in simulated)
        gateways = len(simulated) - kiosks
        real = [app for app in apps if not app.dropped]
        missing = " (no real kiosk: see above)" if len(real) < len(apps) else ""
        real_text = f"{_count(len(real), 'real kiosk')}, " if real else ""
        self.say(f"Running: broker, hub, pack server, companion service, sync, {real_text}"
                 f"{_count(kiosks, 'simulated kiosk')} and "
                 f"{_count(gateways, 'gateway')} in {_count(rooms, 'room')}{missing}, museum time x{self.speed:g}, "
                 f"seed {self.seed}. Ctrl-C stops.")
        if gateways:
            self.say(f"The gateways are real BLE stations on simulated radios: they hear visitors' phones and lent "
                     f"tags in real time, {self.speed:g} times as many visitors as at x1, and count each room every "
                     f"{OCCUPANCY_WINDOW_S:g} s.")
        for app in real:
            self.say(self._kiosk_app_text(app))
        self.say(f"The companion service serves visitors' phones at {self.companion_url}/ (on this machine only). "
                 f"`museum sync run` sends it the hub's events, anonymised, every {SYNC_INTERVAL_S:g} s, with the "
                 "content pack, and brings back what phones did there (a forgotten visit, a saved work)"
                 + (". The real kiosk's \"My visit\" QR codes lead there." if real else ".")
                 + " Once a simulated visit that collected a work reaches it, the demo shows its take-home page.")

    def _synced_once(self) -> bool:
        status = read_status(self.sync_paths.status_file).get(SYNC_TARGET)
        if status is not None and status.stopped:
            raise DemoError(f"the sync stopped: {status.stopped}")
        return status is not None and status.last_success is not None

    def _simulated_args(self, spec: DeviceSpec) -> list[str]:
        args = ["simulate", spec.kind, "--config", str(self.device_config(spec.device_id)), "--zone", spec.zone_id,
                "--speed", f"{self.speed:g}", "--seed", str(self.seed)]
        if spec.kind == "kiosk":
            args += ["--take-home-file", str(self.take_home_file), "--companion-url", self.companion_url]
        return args

    def _kiosk_app_args(self, spec: DeviceSpec) -> list[str]:
        return ["kiosk", "run", "--config", str(self.device_config(spec.device_id)), "--windowed",
                "--screenshots", str(self.kiosk_screen), "--screenshot-every", f"{KIOSK_SCREEN_EVERY_S:g}"]

    def _wait_for_kiosk_app(self, child: Child) -> None:
        """Until the real kiosk shows its first frame. One that cannot start here (no display and no EGL, for
        instance) is given up on: the demo says why and runs on without it, since the rest of the museum does
        not need it."""
        deadline = time.monotonic() + KIOSK_APP_READY_S
        while True:
            text = _read_text(child.log_path)
            if FIRST_FRAME_LINE in text:
                return
            if APP_CRASHED_LINE in text or not child.alive:
                problem = start_problem(text)
                break
            if time.monotonic() > deadline:
                problem = f"no first frame within {KIOSK_APP_READY_S:g} s; its last lines:\n{start_problem(text)}"
                break
            if self.stop.wait(0.1):
                raise DemoInterrupted(f"stopped by {self.stop.signal_name} while starting")
        child.dropped = True
        self.killed += stop_processes([child], DEVICES_STOP_S)
        hint = ("unset DISPLAY to run it offscreen (`DISPLAY= make demo`), or install"
                if os.environ.get("DISPLAY") else "check that `make demo` could install")
        self.say(f"The real kiosk {child.name} (`museum kiosk run`) could not start here, so the demo runs "
                 f"without it:\n{textwrap.indent(problem, '  ')}\n"
                 f"Its whole output: {child.log_path}. To have it, {hint} the offscreen OpenGL libraries (libegl1, "
                 "libgles2, libgbm1, libgl1-mesa-dri).")

    def _kiosk_app_text(self, child: Child) -> str:
        display = os.environ.get("DISPLAY")
        # SDL falls back to rendering offscreen when it cannot open the display: the window is not certain.
        where = (f"in a window on display {display} (offscreen if it cannot open that display)" if display else
                 "offscreen (no DISPLAY: it renders without a window)")
        return (f"The real kiosk {child.name} runs the kiosk app {where}; it shows the sample pack, downloaded "
                f"over HTTPS from the pack server (https://127.0.0.1:{self.content_port}/packs/). Its screen is "
                f"saved every {KIOSK_SCREEN_EVERY_S:g} s to {self.kiosk_screen}. Nobody touches it, so it adds "
                "few events to the figures (content.pack_applied, device.status) and counts among the devices "
                "online beside the simulated ones.")

    # --- running --------------------------------------------------------------------------------------

    def watch(self, duration: float | None) -> None:
        """Show the figures once a second until `duration` has passed or a stop is requested."""
        view = LiveView(self.out)
        enrolled = self.running_devices
        real_kiosks = [spec.device_id for spec in self.kiosk_apps if spec.device_id in enrolled]
        started = time.monotonic()
        end = started + duration if duration is not None else None
        tick = started
        shown = 0
        try:
            while True:
                self._check_children()
                if self.take_home_shown is None and self._find_take_home():
                    if view.tty and shown:
                        # The message takes the live block's place, which is drawn again below it.
                        self.out.write(f"\x1b[{shown}F\x1b[J")
                    view.finish()
                    self.say(self._take_home_text())
                now = time.monotonic()
                # Asked every time: the terminal may have been resized. The last column stays free, where some
                # terminals wrap a line that fills it.
                columns, rows = shutil.get_terminal_size()
                lines = dashboard_lines(self.museum, read_hub_figures(self.stats_file), elapsed_s=now - started,
                                        speed=self.speed, enrolled=enrolled, width=columns - 1,
                                        height=rows if view.tty else None, real_kiosks=real_kiosks)
                view.show(lines)
                shown = len(lines)
                if end is not None and now >= end:
                    return
                tick += 1.0
                if self.stop.wait(max(0.0, min(tick, end or tick) - time.monotonic())):
                    return
        finally:
            view.finish()

    def _find_take_home(self) -> bool:
        """Whether the companion now shows the oldest visit the simulated visitors kept (its take-home page
        answers 200); it is then remembered in `take_home_shown`. The oldest: the likeliest to have been synced,
        and one probe a second is far below the companion's rate limit."""
        kept = read_take_home_file(self.take_home_file)
        if not kept:
            return False
        url, artwork_id = kept[0]
        if answers_ok(url) is None:
            return False
        self.take_home_shown = (url, artwork_id)
        return True

    def _take_home_text(self) -> str:
        assert self.take_home_shown is not None
        url, artwork_id = self.take_home_shown
        try:
            artwork = self.museum.artwork(artwork_id)
            title = f"\"{artwork.title.get('en') or artwork.title.texts[0][1]}\""
        except (KeyError, IndexError):
            title = artwork_id
        return (f"A simulated visitor's take-home page: {url}\n"
                f"  (what their \"My visit\" QR code opens: the works they collected, opened and lingered at, from "
                f"the companion service on this machine; its token is kept only in {self.take_home_file})\n"
                f"The page the QR code next to {title} opens on a phone: "
                f"{self.companion_url}/a/{SITE_ID}/{artwork_id}")

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive and not child.dropped:
                raise DemoError(f"{child.name} exited unexpectedly with status {child.process.returncode}; "
                                f"its output ({child.log_path}):\n{child.log_tail()}")

    # --- stopping -------------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Stop everything this demo started, devices first; safe to call more than once (atexit calls it too)."""
        if self._stopped:
            return
        self._stopped = True
        by_role = {role: [c for c in self.children if c.role == role]
                   for role in ("device", "sync", "hub", "packs", "companion", "broker")}
        if any(child.alive for child in self.children):
            real = " (the real kiosk too)" if any(c.alive for c in by_role["device"] if c.name in self._app_ids) \
                else ""
            self.say(f"Stopping the devices{real}, then the sync, then the hub, the pack server and the companion "
                     "service, then the broker...")
        self.killed += stop_processes(by_role["device"], DEVICES_STOP_S)
        if any(child.alive for child in by_role["hub"]):
            self._let_hub_record_goodbyes()
        # The sync before the companion it talks to: its last exchange ends, rather than failing half-way.
        self.killed += stop_processes(by_role["sync"], SYNC_STOP_S)
        self.killed += stop_processes(by_role["hub"] + by_role["packs"] + by_role["companion"], HUB_STOP_S)
        self.killed += stop_processes(by_role["broker"], BROKER_STOP_S)
        self._stop_stray_broker()
        if self.killed:
            self.say(f"Had to kill (no clean stop in time): {', '.join(self.killed)}")

    def _let_hub_record_goodbyes(self) -> None:
        deadline = time.monotonic() + GOODBYES_S
        while time.monotonic() < deadline:
            figures = read_hub_figures(self.stats_file)
            if figures is not None and not figures.devices_online:
                return
            time.sleep(0.2)

    def _stop_stray_broker(self) -> None:
        """Mosquitto runs in a session of its own under `broker run`; should that have been killed, its
        Mosquitto is still running. The pid file names it; the command line proves it is this site's."""
        pid_file = self.layout.pid_file
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return
        config = self.layout.mosquitto_conf
        if not runs_with_argument(pid, config):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while runs_with_argument(pid, config) and time.monotonic() < deadline:
            time.sleep(0.1)
        if runs_with_argument(pid, config):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.killed.append(f"mosquitto (pid {pid})")

    def summary(self) -> str:
        result = subprocess.run(museum_command("hub", "stats", "--site", str(self.site)), capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, check=False)
        return (result.stdout or result.stderr).rstrip()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# --- the whole run ---------------------------------------------------------------------------------------

def prepare_site_dir(site_dir: Path | None) -> tuple[Path, bool]:
    """The directory to create the site in, and whether the demo made it (a temporary one)."""
    if site_dir is None:
        # Mosquitto, started as root, drops privileges to user `mosquitto`: it must be able to walk down to
        # the site's files, which a 0700 temporary directory would forbid.
        base = Path(tempfile.mkdtemp(prefix="museum-demo-"))
        os.chmod(base, 0o711)
        return base / "site", True
    site_dir = site_dir.absolute()
    if site_dir.exists() and (not site_dir.is_dir() or any(site_dir.iterdir())):
        raise DemoError(f"{site_dir} is not an empty directory; the demo creates a fresh site, so give it a new "
                        "or empty directory (or no --site-dir for a temporary one)")
    return site_dir, False


def run_demo(*, duration: float | None, devices: Sequence[DeviceSpec], speed: float, seed: int,
             site_dir: Path | None, stop: StopFlag, out: IO[str], register_cleanup: Callable[[Callable[[], None]],
                                                                                              object]) -> int:
    """Set up, run and stop the demo; returns the exit status. Errors are DemoError, raised after cleanup."""
    if not mosquitto_installed():
        raise DemoError("Mosquitto is not installed. Run `make demo`, which installs it, or "
                        "`apt-get install mosquitto`, then try again.")
    site, temporary = prepare_site_dir(site_dir)
    demo = Demo(site, devices, speed=speed, seed=seed, stop=stop, out=out)
    register_cleanup(demo.stop_all)
    failure: DemoError | None = None
    try:
        demo.set_up()
        demo.start()
        demo.watch(duration)
        if stop.requested:
            demo.say(f"{stop.signal_name} received.")
    except DemoInterrupted as interrupted:
        demo.say(str(interrupted))
    except DemoError as error:
        failure = error
    finally:
        demo.stop_all()
    if demo.database.exists():
        demo.say("")
        demo.say(demo.summary())
    if demo.database.exists():
        demo.say(f"Site: {site} (hub database {demo.database}, the companion's {demo.companion_store}, the "
                 f"processes' output in {demo.work_dir}).")
        if demo.kiosk_screen.exists():
            demo.say(f"The real kiosk's last screen: {demo.kiosk_screen}")
        if demo.take_home_shown is not None:
            # The pages stopped with the demo, but the companion's store stays with the site.
            command = museum_hint("companion", "run", "--config", str(demo.companion_config), "--port",
                                  str(demo.companion_port))
            demo.say(f"The take-home page shown above stopped with the demo; `{command}` serves it again, at the "
                     "same address.")
        demo.say(f"Look again with `{museum_hint('hub', 'stats', '--site', str(site))}`"
                 + (f"; remove it with `{shlex.join(['rm', '-r', str(site.parent)])}`." if temporary else "."))
    elif temporary and site.parent.exists():
        demo.say(f"The demo's temporary directory is {site.parent}.")
    if failure is not None:
        raise failure
    return 0
