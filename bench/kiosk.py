"""The kiosk benchmark: start time beside a bare Kivy app's, memory over a thousand taps, tap → stored at the hub,
tap → frame with a slow disk, and a content pack from publish to screen. Everything real: a temporary site, its
Mosquitto, the hub (`museum hub run`), the HTTPS pack server (`museum content serve`), the sample pack, and the
kiosk rendered offscreen (DISPLAY unset: Mesa's software renderer through EGL).

    python -m bench.kiosk [--quick]

Prints a table, then, last, one JSON line with: bare_kivy_start_s, kiosk_start_s, start_ratio, bare_kivy_rss_mb,
rss_mb, rss_growth_mb, tap_to_stored_p50_ms, tap_to_stored_p99_ms, tap_frame_p99_ms, redraw_floor_p99_ms,
tap_frame_floor_ratio, pack_apply_s.

- Start: process start (this benchmark's Popen, so the interpreter's start counts) to the first frame on screen,
  for a bare Kivy app (a few lines run with `python -c`: nothing of ours imports Kivy there) and for
  `museum kiosk run --no-supervise --windowed` with the sample pack installed (its "first frame on screen
  attract" log line). Each is the best of `TRIALS`, taken in turns: other tenants only ever slow a start down.
- The rest runs in one kiosk process (bench/kiosk_session.py: KioskHarness over a real KioskRuntime): the sample
  pack published → applied and shown; 100+ taps on "take it home" → the hub's ack; then 1,000 scripted taps
  (screens, collect, languages, modes, end of visit) with every outbox commit slowed by 30 ms (an SD card),
  the RSS read after the first 100 and after all 1,000, each on the attract screen after a visit. After every
  other of those taps its screen is drawn once more with nothing changed: redraw_floor_p99_ms is what the software
  renderer alone costs on those screens (the part of tap_frame that no work of ours can remove), and
  tap_frame_floor_ratio is tap_frame_p99_ms over it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.bus import start_hub, stop_hub
from broker.mosquitto import MosquittoProcess
from broker.packs import publish_pack
from broker.processes import free_port
from broker.site import Site, enroll_device, init_site
from content.pack import build_pack
from content.sample import SAMPLE_MUSEUM_PATH
from kiosk.pack_store import PackStore

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"kiosk_start_s": 1.5, "start_ratio": 4.0, "rss_mb": 150.0, "rss_growth_mb": 5.0,
           "tap_to_stored_p99_ms": 50.0, "tap_frame_p99_ms": 33.0}
TRIALS = 3
START_TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Sizes:
    trials: int
    interactions: int
    early: int
    collect: int


FULL = Sizes(trials=TRIALS, interactions=1000, early=100, collect=100)
QUICK = Sizes(trials=1, interactions=200, early=50, collect=30)

# The baseline: a bare Kivy app, run in an interpreter of its own. It gets the kiosk's window (1280×800, no
# multisampling: what `museum kiosk run --windowed` opens) and Kivy's logs and config file kept out of the
# user's home, and nothing else: Kivy's default image, text, video and audio providers. It prints when its first
# frame is flipped, then its RSS a second later, and exits. It has no .kv file (App.load_kv would look for the
# source of a `python -c` program). One statement a line, in quotes: a program, not an import of ours.
BARE_APP = "\n".join((
    "from kivy.config import Config",
    "Config.set('graphics', 'width', '1280')",
    "Config.set('graphics', 'height', '800')",
    "Config.set('graphics', 'multisamples', '0')",
    "from kivy.app import App",
    "from kivy.clock import Clock",
    "from kivy.core.window import Window",
    "from kivy.uix.label import Label",
    "def rss(*_):",
    "    kb = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]",
    "    print('RSS', kb / 1024, flush=True)",
    "    App.get_running_app().stop()",
    "def flip(window):",
    "    window.unbind(on_flip=flip)",
    "    print('FIRST_FRAME', flush=True)",
    "    Clock.schedule_once(rss, 1.0)",
    "class Bare(App):",
    "    def load_kv(self, filename=None):",
    "        return False",
    "    def build(self):",
    "        Window.bind(on_flip=flip)",
    "        return Label(text='Hello')",
    "Bare().run()",
))
FIRST_FRAME = re.compile(r"first frame on screen (\w+), ([0-9.]+) s after start")


def kivy_env(home: Path) -> dict[str, str]:
    """The environment of a Kivy child: offscreen (no DISPLAY: EGL on Mesa), no argv parsing, no config file or
    log file in the user's home (its log lines go to stderr, shown if it fails), a dummy sound driver when there is
    no sound card (as kiosk.ui does)."""
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update({"KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1", "KIVY_NO_FILELOG": "1", "KIVY_HOME": str(home)})
    if not any(Path("/dev/snd").glob("pcmC*D*p")):
        env.setdefault("SDL_AUDIODRIVER", "dummy")
    return env


def status_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def end(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child we started and reap it: SIGTERM, then SIGKILL if it lingers; its pipe is drained meanwhile, so
    a child logging as it stops cannot block on a full pipe."""
    if process.poll() is None:
        process.terminate()
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def read_until(stream: IO[str], pattern: re.Pattern[str],
               process: subprocess.Popen[str]) -> tuple[re.Match[str], float]:
    """The first line matching `pattern`, and when it was read (perf_counter). A child that hangs silently is
    killed by its `watchdog`, which ends the stream."""
    seen: list[str] = []
    for line in stream:
        found = pattern.search(line)
        if found:
            return found, time.perf_counter()
        seen.append(line)
    tail = "".join(seen[-15:])
    raise RuntimeError(f"{pattern.pattern!r} never came from {process.args!r} (exit {process.poll()}):\n{tail}")


def watchdog(process: subprocess.Popen[Any], seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, process.kill)
    timer.daemon = True
    timer.start()
    return timer


# --- the two starts -----------------------------------------------------------------------------------------

def bare_start(home: Path) -> tuple[float, float]:
    """Seconds from Popen to the bare app's first frame, and its RSS a second later."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", BARE_APP], env=kivy_env(home), cwd=home,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = watchdog(process, START_TIMEOUT_S)
    try:
        assert process.stdout is not None
        _, shown = read_until(process.stdout, re.compile(r"^FIRST_FRAME"), process)
        found, _ = read_until(process.stdout, re.compile(r"^RSS ([0-9.]+)"), process)
        return shown - started, float(found.group(1))
    finally:
        timer.cancel()
        end(process)


def kiosk_start(config: Path, home: Path) -> tuple[float, float, float]:
    """Seconds from Popen to `museum kiosk run`'s first frame of the attract loop, the part of them its log line
    counts (from kiosk.cli's import: not the interpreter's start nor the other roles' imports), and its RSS then."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "museum", "kiosk", "run", "--config", str(config),
                                "--no-supervise", "--windowed"], env=kivy_env(home), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = watchdog(process, START_TIMEOUT_S)
    try:
        assert process.stderr is not None
        found, shown = read_until(process.stderr, FIRST_FRAME, process)
        if found.group(1) != "attract":
            raise RuntimeError(f"the kiosk started on {found.group(1)}, not the sample pack's attract loop")
        return shown - started, float(found.group(2)), status_rss_mb(process.pid)
    finally:
        timer.cancel()
        end(process)


# --- the site -----------------------------------------------------------------------------------------------

def make_site(base: Path) -> Site:
    os.chmod(base, 0o711)  # Mosquitto, dropped to its own user, must reach the site files
    # Devices reach the broker on the plain loopback listener (no discovery, no multicast) and the pack server
    # as "localhost", a name the site certificate carries.
    return init_site(base / "site", "bench", tls_port=free_port(), bind="127.0.0.1", plain_loopback_port=free_port(),
                     hostnames=("localhost",), content_port=free_port())


def kiosk_config(site: Site, device_id: str, state_dir: Path) -> Path:
    path = enroll_device(site, device_id, "kiosk")
    with path.open("a") as config:
        config.write(f"\n[kiosk]\nstate_dir = {json.dumps(str(state_dir))}\nfullscreen = false\n")  # a TOML string
    return path


def serve_packs(site: Site) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "museum", "content", "serve", "--site", str(site.root)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("Serving"):
        end(process)
        raise RuntimeError(f"the pack server did not start: {line.strip()}")
    return process


def run_session(site: Site, config: Path, pack: Path, sizes: Sizes, log_path: Path, home: Path) -> dict[str, Any]:
    """bench/kiosk_session.py in a process of its own, the sample pack published (`museum content publish`'s
    library call) once it says READY; its progress and logs go to `log_path`, shown if it fails."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.kiosk_session", "--config", str(config), "--interactions",
             str(sizes.interactions), "--early", str(sizes.early), "--collect", str(sizes.collect)],
            env=kivy_env(home), cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        timer = watchdog(process, SESSION_TIMEOUT_S)
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() == "READY":
                publish_pack(site, pack)
            out, _ = process.communicate()
        finally:
            timer.cancel()
            end(process)
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"the kiosk session failed (exit {process.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    # A CI job cancelled with SIGTERM still stops the broker, the hub and the pack server (the finally below).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer trials and taps, for a smoke test")
    sizes = QUICK if parser.parse_args().quick else FULL
    base = Path(tempfile.mkdtemp(prefix="museum-bench-kiosk-"))
    broker: MosquittoProcess | None = None
    hub: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[str] | None = None
    try:
        site = make_site(base)
        pack = base / "sample.tar"
        build_pack(SAMPLE_MUSEUM_PATH.parent, pack)
        broker = MosquittoProcess.start(site)
        broker.wait_ready(10)
        hub = start_hub(site)
        server = serve_packs(site)
        start_config = kiosk_config(site, "bench-kiosk-start", base / "start-kiosk")
        PackStore(base / "start-kiosk" / "packs").install(pack)
        session_config = kiosk_config(site, "bench-kiosk", base / "kiosk")
        home = base / "kivy-home"
        home.mkdir()

        bare_s: list[float] = []
        bare_rss: list[float] = []
        kiosk_s: list[tuple[float, float, float]] = []
        for _ in range(sizes.trials):
            seconds, rss = bare_start(home)
            bare_s.append(seconds)
            bare_rss.append(rss)
            kiosk_s.append(kiosk_start(start_config, home))
        session = run_session(site, session_config, pack, sizes, base / "session.log", home)
    finally:
        try:
            if server is not None:
                end(server)
            if hub is not None:
                stop_hub(hub)
            if broker is not None:
                broker.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    stored, frames, floor = session["tap_to_stored_ms"], session["tap_frame_ms"], session["redraw_floor_ms"]
    early, late = session["memory_early_mb"], session["memory_mb"]
    start_s, logged_s, start_rss = min(kiosk_s)
    figures = {"bare_kivy_start_s": round(min(bare_s), 3), "kiosk_start_s": round(start_s, 3),
               "start_ratio": round(start_s / min(bare_s), 2), "bare_kivy_rss_mb": round(min(bare_rss), 1),
               "rss_mb": round(late["rss"], 1), "rss_growth_mb": round(late["rss"] - early["rss"], 1),
               "tap_to_stored_p50_ms": round(statistics.median(stored), 1),
               "tap_to_stored_p99_ms": round(percentile(stored, 0.99), 1),
               "tap_frame_p99_ms": round(percentile(frames, 0.99), 1),
               "redraw_floor_p99_ms": round(percentile(floor, 0.99), 1),
               "tap_frame_floor_ratio": round(percentile(frames, 0.99) / percentile(floor, 0.99), 2),
               "pack_apply_s": round(session["pack_apply_s"], 3)}

    slowest = sorted(session["tap_frame_p50_ms_by_kind"].items(), key=lambda item: -item[1])[:3]

    def target(key: str, unit: str) -> str:
        return f"≤ {TARGETS[key]:g}{unit}"

    rows = [
        ("bare Kivy app: process start → first frame (baseline)", f"{min(bare_s):.2f} s",
         f"best of {sizes.trials}", ""),
        ("kiosk, sample pack: process start → attract's first frame", f"{start_s:.2f} s",
         f"{figures['start_ratio']:.2f}× bare", f"{target('kiosk_start_s', ' s')}, {target('start_ratio', '×')}"),
        ("  of which from kiosk.cli's import (its log line)", f"{logged_s:.2f} s", "", ""),
        ("bare Kivy app: RSS a second after its first frame (baseline)", f"{min(bare_rss):.0f} MB", "", ""),
        ("kiosk (museum kiosk run): RSS at its first frame", f"{start_rss:.0f} MB", "", ""),
        (f"kiosk RSS after {sizes.interactions:,} scripted taps", f"{late['rss']:.0f} MB",
         f"{late['rss'] - min(bare_rss):+.0f} MB vs bare", target("rss_mb", " MB")),
        ("  of which its own (RssAnon: heap, objects, textures)", f"{late['anon']:.0f} MB", "", ""),
        ("  of which mapped files (RssFile: libLLVM, libraries)", f"{late['file']:.0f} MB", "", ""),
        (f"kiosk RSS growth, taps {sizes.early} → {sizes.interactions:,}", f"{figures['rss_growth_mb']:+.1f} MB",
         "", target("rss_growth_mb", " MB")),
        (f"tap 'take it home' → committed at the hub, p50 ({len(stored)} taps)",
         f"{figures['tap_to_stored_p50_ms']:.1f} ms", "", ""),
        ("tap 'take it home' → committed at the hub, p99", f"{figures['tap_to_stored_p99_ms']:.1f} ms", "",
         target("tap_to_stored_p99_ms", " ms")),
        (f"tap → end of its frame, outbox commits +30 ms, p99 ({len(frames)} taps)",
         f"{figures['tap_frame_p99_ms']:.1f} ms", f"p50 {statistics.median(frames):.1f} ms",
         target("tap_frame_p99_ms", " ms")),
        (f"  floor: the same screens redrawn with nothing changed, p99 ({len(floor)} frames)",
         f"{figures['redraw_floor_p99_ms']:.1f} ms", f"p50 {statistics.median(floor):.1f} ms",
         f"tap {figures['tap_frame_floor_ratio']:.2f}× floor"),
        ("  slowest kinds of tap, p50: " + ", ".join(f"{kind} {ms:.0f} ms" for kind, ms in slowest), "", "", ""),
        ("sample pack: announced → applied and on screen (HTTPS)", f"{figures['pack_apply_s']:.2f} s", "", ""),
    ]
    print(f"{'measure':<64} {'figure':>10} {'beside':>18} {'target':>16}")
    for name, figure, beside, goal in rows:
        print(f"{name:<64} {figure:>10} {beside:>18} {goal:>16}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
