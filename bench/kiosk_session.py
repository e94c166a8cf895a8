"""The kiosk in a process of its own, driven for bench/kiosk.py: `KioskHarness` (the real app, rendered offscreen)
over a real `KioskRuntime` (event writer, outbox, DeviceClient to the site's Mosquitto and hub, pack worker
fetching from the site's HTTPS pack server).

    python -m bench.kiosk_session --config DEVICE.toml [--interactions N] [--early N] [--collect N]

Starts with no pack and prints READY on stdout once connected; the benchmark then publishes the sample pack
(`museum content publish`'s library call, on the site's side as in a museum: this process imports what a kiosk
imports, and no more). Prints progress on stderr and, last on stdout, one JSON line: pack_apply_s,
tap_to_stored_ms, tap_frame_ms and redraw_floor_ms (every sample), memory_early_mb and memory_mb ({rss, anon, file}),
interactions, events, frames and tap_frame_p50_ms_by_kind. A process of its own because Kivy makes one window
per process and because its RSS must be the kiosk's alone, not the benchmark's too.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bus.config import ClientConfig
from bus.outbox import Outbox
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from protocol.events import Event

WAIT_S = 60.0
SLOW_COMMIT_S = 0.03
"""The injected delay per outbox commit for tap_frame: what a Pi's SD card can take for an SQLite commit."""
FLOOR_EVERY = 2
"""Every other scripted tap is followed by a redraw of its screen with nothing changed (`KioskHarness.redraw`):
the floor that the renderer sets under tap_frame, measured on the same screens in the same run."""
TRIM_WAIT_S = 1.2
"""The attract screen gives the C heap's free pages back 1 s after it shows (kiosk.ui.AttractScreen.shown): RSS
is read once that has happened, as it would on a kiosk left alone after a visit."""


def memory_mb() -> dict[str, float]:
    """VmRSS, and its two parts: RssAnon (this process's own memory: heap, Python objects, textures in a software
    renderer) and RssFile (mapped files, mostly shared libraries' code: libLLVM for Mesa's llvmpipe)."""
    wanted = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
    figures: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, *values = line.split()
            if name in wanted:
                figures[wanted[name]] = int(values[0]) / 1024
    return figures


def log(message: str) -> None:
    print(f"kiosk_session: {message}", file=sys.stderr, flush=True)


def slow_down(outbox: Outbox, seconds: float) -> None:
    """Simulates an SD card: every commit of events to the device's outbox takes `seconds` longer. The outbox's
    public `append` is the seam (one SQLite transaction per call); the instance's method is replaced, so only this
    kiosk's outbox is slowed, and the sleep comes before the commit, as a slow write would delay it."""
    append = outbox.append

    def slow_append(events: Any) -> None:
        time.sleep(seconds)
        append(events)

    setattr(outbox, "append", slow_append)  # noqa: B010 - an instance attribute, which mypy forbids as `outbox.append =`


class Events:
    """What the kiosk records (UI thread) and the hub acknowledges (bus worker thread), kept small: this process's
    RSS is the figure, so the benchmark must not itself grow with the taps it counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recorded = 0
        self.latest: dict[str, tuple[Event, int]] = {}
        """Type → its latest event and the frames rendered when it was recorded (the next frame answers it)."""
        self.unacked: dict[str, bool] = {}
        """Event id → whether its ack time is wanted (its type is in `timed_types`)."""
        self.timed_types: set[str] = set()
        self.acked_at: dict[str, float] = {}
        """Event id → when its ack arrived (perf_counter), for events of `timed_types`."""
        self._early: dict[str, float] = {}  # acks that overtook on_recorded (record() calls it after queuing)
        self.frames: Callable[[], int] = lambda: 0

    def on_recorded(self, event: Event) -> None:
        with self.lock:
            self.recorded += 1
            self.latest[event.type] = (event, self.frames())
            acked = self._early.pop(event.event_id, None)
            if acked is None:
                self.unacked[event.event_id] = event.type in self.timed_types
            elif event.type in self.timed_types:
                self.acked_at[event.event_id] = acked

    def on_acked(self, event_ids: list[str]) -> None:
        now = time.perf_counter()
        with self.lock:
            for event_id in event_ids:
                timed = self.unacked.pop(event_id, None)
                if timed:
                    self.acked_at[event_id] = now
                elif timed is None and len(self._early) < 1000:  # or a resent event's second ack: bounded
                    self._early[event_id] = now

    def last(self, kind: str) -> Event | None:
        with self.lock:
            found = self.latest.get(kind)
            return found[0] if found else None

    def acknowledged(self, event_id: str) -> Callable[[], bool]:
        """A condition: the ack of this event (of `timed_types`) has arrived."""
        return lambda: event_id in self.acked_at

    def all_acked(self) -> bool:
        with self.lock:
            return not self.unacked


class Session:
    def __init__(self, harness: Any, runtime: KioskRuntime, events: Events) -> None:
        self.harness = harness
        self.runtime = runtime
        self.controller = runtime.controller
        self.events = events
        self.taps = 0
        self.frame_s: list[float] = []
        self.names: list[str] = []
        self.floor_s: list[float] = []
        self.measure_floor = False

    def tap(self, target: str | tuple[float, float]) -> float:
        """Tap, and return when the touch happened (perf_counter)."""
        took = self.harness.tap(target)
        done = time.perf_counter()
        self.taps += 1
        self.frame_s.append(took)
        self.names.append(target if isinstance(target, str) else "screen")
        if self.measure_floor and self.taps % FLOOR_EVERY == 0:
            self.floor_s.append(self.harness.redraw())
        return done - took

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        if not self.harness.run_until(condition, WAIT_S):
            raise RuntimeError(f"timed out waiting for {what} (screen {self.controller.view.screen})")

    def settle(self) -> None:
        """Until every event recorded so far is committed at the hub: a quiet pipeline before a measured tap."""
        self.wait(lambda: self.runtime.writer.pending == 0 and self.events.all_acked(), "the hub's acks")

    def idle_for(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        self.harness.run_until(lambda: time.monotonic() >= until, seconds + 5)

    # --- moving around ---

    def reveal(self, name: str, pagers: tuple[str, str]) -> None:
        """Turn pages (rooms or works) forward to the last, then back to the first, until `name` is shown."""
        for pager in pagers:
            for _ in range(50):
                if self.harness.exists(name) or not self.usable(pager):
                    break
                self.tap(pager)
        if not self.harness.exists(name):
            raise RuntimeError(f"{name} cannot be reached on {self.controller.view.screen}")

    def usable(self, name: str) -> bool:
        try:
            return not self.harness.find(name).disabled
        except LookupError:
            return False

    def start_visit(self) -> None:
        if self.controller.view.screen != "attract":
            raise RuntimeError(f"a visit starts on attract, not {self.controller.view.screen}")
        self.tap((640, 400))

    def open_room(self, zone_id: str) -> None:
        if self.controller.view.zone_id != zone_id:
            self.reveal(f"room:{zone_id}", ("rooms:next", "rooms:previous"))
            self.tap(f"room:{zone_id}")

    def open_work(self, artwork_id: str) -> None:
        self.reveal(f"artwork:{artwork_id}", ("page:next", "page:previous"))
        self.tap(f"artwork:{artwork_id}")

    def end_visit(self) -> None:
        if self.controller.view.screen != "my_visit":
            self.tap("my_visit")
        self.tap("end_visit_here")
        if self.controller.view.screen != "attract":
            raise RuntimeError(f"the visit did not end: {self.controller.view.screen}")


def works_by_room(runtime: KioskRuntime) -> list[tuple[str, str]]:
    museum = runtime.controller.view.museum
    if museum is None:
        raise RuntimeError("no pack shown")
    return [(room.zone_id, work.artwork_id) for room in museum.rooms for work in museum.artworks_in(room.zone_id)]


# --- the measures -------------------------------------------------------------------------------------------

def pack_apply(session: Session) -> float:
    """The sample pack, published by the benchmark → on screen: from the announcement's time (the publisher takes
    it just before sending) to the end of the first frame showing the pack's attract loop."""
    session.wait(lambda: session.events.last("content.pack_applied") is not None, "content.pack_applied")
    announcement = session.runtime.device.content
    assert announcement is not None
    announced = announcement.announced_at.timestamp()
    applied = session.events.last("content.pack_applied")
    assert applied is not None
    frames = session.events.latest["content.pack_applied"][1]
    session.wait(lambda: session.harness.frames_rendered > frames, "the frame showing the pack")
    shown = time.time()
    if session.controller.view.screen != "attract":
        raise RuntimeError(f"the pack was applied but {session.controller.view.screen} is shown")
    return shown - announced


def tap_to_stored(session: Session, count: int) -> list[float]:
    """A real tap on "take it home" → its artwork.collected committed at the hub (the hub's ack reaching the
    device, which the hub sends after its commit), in ms. Each tap on a quiet pipeline, as a visitor's would be:
    the work is opened, its artwork.viewed acknowledged, then "take it home" is tapped. A work is collected once
    per visit, so the visits go round the pack's works."""
    works = works_by_room(session.runtime)
    samples: list[float] = []
    session.events.timed_types = {"artwork.collected"}
    while len(samples) < count:
        session.start_visit()
        for zone_id, artwork_id in works:
            if len(samples) >= count:
                break
            session.open_room(zone_id)
            session.open_work(artwork_id)
            session.settle()
            touched = session.tap("take_home")
            event = session.events.last("artwork.collected")
            if event is None or getattr(event, "artwork_id", None) != artwork_id:
                raise RuntimeError(f"take_home on {artwork_id} recorded no artwork.collected")
            session.wait(session.events.acknowledged(event.event_id), "the collected event's ack")
            samples.append((session.events.acked_at[event.event_id] - touched) * 1000)
            session.tap("back")
        session.end_visit()
    session.events.timed_types = set()
    session.events.acked_at.clear()
    return samples


def script(works: list[tuple[str, str]]) -> Iterator[tuple[str, ...]]:
    """One visit after another, each different: a work, taken home, in English, high contrast; another work
    (another room mostly), taken home, large text, back to French; "my visit"; end. Steps: ("start",),
    ("work", zone_id, artwork_id) or ("tap", name)."""
    visit = 0
    while True:
        first = works[visit % len(works)]
        second = works[(visit * 7 + 3) % len(works)]
        if second == first:
            second = works[(visit + 1) % len(works)]
        yield ("start",)
        yield ("work", *first)
        yield from (("tap", name) for name in ("take_home", "lang:en", "mode:high_contrast", "back"))
        yield ("work", *second)
        yield from (("tap", name) for name in ("take_home", "mode:large_text", "lang:fr", "my_visit",
                                               "end_visit_here"))
        visit += 1


def run_step(session: Session, step: tuple[str, ...]) -> None:
    if step[0] == "start":
        session.start_visit()
    elif step[0] == "work":
        session.open_room(step[1])
        session.open_work(step[2])
    else:
        session.tap(step[1])


def interactions(session: Session, total: int, early: int) -> tuple[dict[str, float], dict[str, float]]:
    """`total` scripted taps; RSS after the visit during which `early` was passed, and after the one passing
    `total`, each read on the attract screen once the kiosk has settled after the visit."""
    works = works_by_room(session.runtime)
    start = session.taps
    rss_early: dict[str, float] | None = None
    for step in script(works):
        run_step(session, step)
        if session.controller.view.screen != "attract":
            continue
        done = session.taps - start
        if rss_early is None and done >= early:
            session.idle_for(TRIM_WAIT_S)
            rss_early = memory_mb()
        elif done >= total:
            session.idle_for(TRIM_WAIT_S)
            assert rss_early is not None
            return rss_early, memory_mb()
    raise AssertionError("the script is endless")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--interactions", type=int, default=1000)
    parser.add_argument("--early", type=int, default=100)
    parser.add_argument("--collect", type=int, default=100)
    parser.add_argument("--slow-commit-ms", type=float, default=SLOW_COMMIT_S * 1000)
    args = parser.parse_args()
    # Kivy's own lines (kiosk.ui routes them to Python logging) and the kiosk's: the benchmark keeps them in a
    # file and shows its end if the session fails.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from kiosk import ui  # sets Kivy's environment, then imports Kivy

    config = ClientConfig.load(args.config)
    settings = KioskSettings.from_config(config, args.config)
    events = Events()
    runtime = KioskRuntime(config, settings, ui_call=ui.ui_call, on_recorded=events.on_recorded,
                           on_acked=events.on_acked)
    try:
        harness = ui.KioskHarness(runtime.controller, state_dir=settings.state_dir)
    except BaseException:
        runtime.stop()
        raise
    session = Session(harness, runtime, events)
    events.frames = lambda: harness.frames_rendered
    try:
        runtime.start()
        session.wait(lambda: runtime.device.stats().connected, "the broker")
        session.wait(lambda: runtime.controller.view.screen == "no_content", "the no-content screen")
        print("READY", flush=True)
        apply_s = pack_apply(session)
        log(f"pack applied in {apply_s:.2f} s; {args.collect} taps on take-home")
        stored_ms = tap_to_stored(session, args.collect)
        session.frame_s.clear()
        session.names.clear()
        session.measure_floor = True
        if args.slow_commit_ms > 0:
            slow_down(runtime.device.outbox, args.slow_commit_ms / 1000)
        log(f"{args.interactions} scripted taps, outbox commits slowed by {args.slow_commit_ms:g} ms")
        rss_early, rss_late = interactions(session, args.interactions, args.early)
        frame_ms = [s * 1000 for s in session.frame_s]
        floor_ms = [s * 1000 for s in session.floor_s]
        by_kind: dict[str, list[float]] = {}
        for name, ms in zip(session.names, frame_ms, strict=True):
            by_kind.setdefault(name.split(":")[0], []).append(ms)
        session.settle()
        result = {"pack_apply_s": apply_s, "tap_to_stored_ms": stored_ms, "tap_frame_ms": frame_ms,
                  "redraw_floor_ms": floor_ms,
                  "memory_early_mb": rss_early, "memory_mb": rss_late, "interactions": len(frame_ms),
                  "events": events.recorded, "frames": harness.frames_rendered,
                  "tap_frame_p50_ms_by_kind": {kind: round(statistics.median(values), 1)
                                               for kind, values in sorted(by_kind.items())}}
    finally:
        runtime.stop()
        harness.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
