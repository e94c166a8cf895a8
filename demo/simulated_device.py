"""One simulated device as a real client of the site.

- A kiosk: the visitor simulator's events, emitted in real time through the same `bus.device.DeviceClient` a real
  kiosk uses. Pacing: the simulator plans events on its own clock, starting at the moment the device starts. An
  event planned `t` simulated seconds after that start is emitted `t / speed` real seconds after it, then
  re-stamped to the instant it is really emitted, so no event is ever dated in the future and the hub sees the
  compressed timeline it would see from a busier museum. Durations carried inside events (a session's
  `duration_s`) stay in simulated time.
- A room's BLE gateway: a REAL station (hardware.runtime.GatewayRuntime, its `[gateway]` settings, pipeline and
  device client) whose Bluetooth adapter is a `hardware.ble.FakeRadio` fed with the room's simulated adverts
  (demo.radio). A station measures real time, so its radio runs at real pace whatever the speed: `speed` instead
  multiplies how many visitors walk in per hour.

For the demo, a simulated kiosk can also play a visitor who keeps the "My visit" QR code: the take-home URL of
each visit that collected a work goes to a small file (`TakeHomeFile`), so that the demo can show a person one
simulated visit's take-home page. A demo convenience only: a real kiosk writes a token nowhere.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from bus.config import ClientConfig
from bus.device import DeviceClient
from content.model import Museum
from demo.radio import DEMO_TAG_NAMESPACE, RoomRadio, RoomVisitor, demo_gateway_table
from demo.simulation import VISITORS_PER_HOUR, Visitor, kiosk_events
from hardware.advert import Advert
from hardware.settings import StationSettings
from kiosk.take_home import take_home_url
from protocol.events import ArtworkCollected, Event
from protocol.ids import new_event_id, utc_now

if TYPE_CHECKING:
    from hardware.ble import FakeRadio

SimulatedKind = Literal["kiosk", "gateway"]
SIMULATED_KINDS: tuple[SimulatedKind, ...] = ("kiosk", "gateway")
MAX_SPEED = 1000.0
DRAIN_ON_STOP_S = 3.0
"""On stop, how long to wait for the hub to acknowledge what was already emitted before disconnecting."""
RADIO_PENDING = 10_000
"""Adverts the pretend adapter holds for a station that does not take them (minutes of a lively room's adverts);
beyond, the oldest are dropped, as a real radio misses what nobody listens to."""
RADIO_LATE_S = 2.0
"""An advert this much later than its time is skipped rather than handed over (see feed_radio)."""
_STOP_CHECK_S = 0.2
TAKE_HOME_KEPT = 20
"""Take-home URLs the simulated visitors keep in the demo's file: the latest ones only."""
_RECENT_VISITORS = 8

log = logging.getLogger(__name__)


# --- pacing (pure: no clock of its own) --------------------------------------------------------------------

def check_speed(speed: float) -> float:
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= MAX_SPEED:
        raise ValueError(f"speed must be a number above 0 and at most {MAX_SPEED:g}, got {speed!r}")
    return float(speed)


def due_after_s(sim_start: datetime, occurred_at: datetime, speed: float) -> float:
    """Real seconds after the device's start at which an event planned for `occurred_at` is emitted."""
    return (occurred_at - sim_start).total_seconds() / speed


def sleep_before(due_s: float, elapsed_s: float) -> float:
    """How long to wait before emitting an event due `due_s` after the start, `elapsed_s` after it. Late events
    (the device was busy or suspended) go out at once rather than catching up by bunching later ones."""
    return max(0.0, due_s - elapsed_s)


def restamp(event: Event, emitted_at: datetime) -> Event:
    """The event as emitted now. The id is minted again too: the simulator mints ids when it plans a whole
    session, minutes of simulated time early, and a UUIDv7 carries the instant it was made."""
    return replace(event, occurred_at=emitted_at, event_id=new_event_id())


def paced(stream: Iterator[tuple[datetime, Event]], sim_start: datetime, speed: float, *,
          elapsed: Callable[[], float], wait: Callable[[float], bool],
          now: Callable[[], datetime] = utc_now) -> Iterator[Event]:
    """Each event of `stream` when its moment comes, re-stamped. `elapsed()` gives real seconds since the start;
    `wait(s)` sleeps up to `s` seconds (0: only looks) and returns True when a stop was requested, which ends
    the iteration."""
    speed = check_speed(speed)
    for occurred_at, event in stream:
        if wait(sleep_before(due_after_s(sim_start, occurred_at, speed), elapsed())):
            return
        yield restamp(event, now())


# --- stopping on a signal --------------------------------------------------------------------------------

class StopFlag:
    """Set from a signal handler. A plain attribute, not a threading.Event: Event.set() takes a lock the
    interrupted main thread may be holding inside Event.wait(), and would deadlock."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def request(self, signum: int, _frame: FrameType | None = None) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def install(self, *signals: signal.Signals) -> None:
        for number in signals:
            signal.signal(number, self.request)

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early on a request; returns whether one was made."""
        deadline = time.monotonic() + timeout
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _STOP_CHECK_S))
        return self.requested


# --- the visitors who keep their QR code (demo only) --------------------------------------------------------

class TakeHomeFile:
    """A file of the take-home URLs of the latest visits that collected a work, one line each: the URL, a space,
    the first work collected. At most TAKE_HOME_KEPT lines, mode 0600; several simulated kiosks share it, each
    rewriting it under an exclusive flock. It holds visit tokens: the demo's only copy of them."""

    def __init__(self, path: Path, companion_base_url: str, *, keep: int = TAKE_HOME_KEPT) -> None:
        take_home_url(companion_base_url, "A" * 22)  # ValueError now for a base URL that cannot make links
        self.path = Path(path)
        self.base = companion_base_url
        self.keep = keep
        self._tokens: dict[str, str] = {}
        """visit_id → token of the latest sessions (only the current one matters: it is the one emitting)."""
        self._kept: set[str] = set()
        self._failed = False

    def visitor(self, visitor: Visitor) -> None:
        """A new session's visitor (`kiosk_events(on_visitor=…)`): remember its token until its visit collects."""
        self._tokens[visitor.visit_id] = visitor.token
        while len(self._tokens) > _RECENT_VISITORS:
            del self._tokens[next(iter(self._tokens))]

    def emitted(self, event: Event) -> None:
        """An event the kiosk has emitted: the first collection of a visit writes its take-home URL."""
        if not isinstance(event, ArtworkCollected) or event.visit_id is None or event.visit_id in self._kept:
            return
        token = self._tokens.get(event.visit_id)
        if token is None:
            return
        self._kept.add(event.visit_id)
        if len(self._kept) > _RECENT_VISITORS:
            self._kept = {event.visit_id}
        try:
            self._append(f"{take_home_url(self.base, token)} {event.artwork_id}")
        except OSError as error:
            if not self._failed:  # said once: the simulation goes on without it
                log.warning("cannot write the take-home URLs to %s: %s", self.path, error)
            self._failed = True

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "r+", encoding="ascii") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            os.fchmod(handle.fileno(), 0o600)
            lines = [*handle.read().splitlines(), line][-self.keep:]
            handle.seek(0)
            handle.truncate()
            handle.write("".join(f"{text}\n" for text in lines))


def read_take_home_file(path: Path, *, limit: int = TAKE_HOME_KEPT) -> list[tuple[str, str]]:
    """(take-home URL, a work that visit collected) of the lines of a `TakeHomeFile`, oldest first; empty when
    there is none yet. Malformed lines are skipped."""
    try:
        with path.open(encoding="ascii", errors="replace") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            text = handle.read(64 * 1024)
    except FileNotFoundError:
        return []
    pairs = [tuple(line.split(" ")) for line in text.splitlines()[-limit:]]
    return [(pair[0], pair[1]) for pair in pairs if len(pair) == 2 and "/v/" in pair[0]]


# --- the device ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulation:
    kind: SimulatedKind
    zone_id: str
    museum: Museum
    speed: float = 1.0
    seed: int = 2026
    visitors_per_hour: float = VISITORS_PER_HOUR

    def rng(self, device_id: str) -> random.Random:
        # Per device, so adding a kiosk to a demo does not change what the others do.
        return random.Random(f"{self.seed}:{device_id}")

    def events(self, config: ClientConfig, start: datetime,
               on_visitor: Callable[[Visitor], None] | None = None) -> Iterator[tuple[datetime, Event]]:
        """A kiosk's planned events (a gateway's come from its station: see `run_station`)."""
        if self.kind != "kiosk":
            raise ValueError("a simulated gateway is a real station on a simulated radio: run it with run_station")
        return kiosk_events(self.rng(config.client_id), self.museum, config.site_id, config.client_id, self.zone_id,
                            start, on_visitor=on_visitor)

    def radio(self, device_id: str, settings: StationSettings) -> RoomRadio:
        """The room's simulated adverts for a station with `settings`: beside the first work it watches in its
        room (else the room's featured work), its tags under its tag namespace, `speed` times the visitors."""
        near = next((watch.artwork_id for watch in settings.artworks if watch.zone_id == self.zone_id), None)
        return RoomRadio(self.museum, self.zone_id, seed=f"{self.seed}:{device_id}",
                         visitors_per_hour=self.visitors_per_hour * self.speed, near_artwork_id=near,
                         tag_namespace=settings.tag_namespace or DEMO_TAG_NAMESPACE)


def check_config(config: ClientConfig, simulation: Simulation) -> None:
    if config.kind != simulation.kind:
        raise ValueError(f"{config.client_id} is enrolled as a {config.kind}, not a {simulation.kind}")
    if config.outbox is None:
        raise ValueError(f"{config.client_id}: the configuration has no [outbox] path")
    if simulation.zone_id not in simulation.museum.zone_ids:
        raise ValueError(f"zone {simulation.zone_id!r} is not a room of {simulation.museum.site_id} "
                         f"(rooms: {', '.join(simulation.museum.zone_ids)})")
    check_speed(simulation.speed)


def station_settings(config: ClientConfig, config_path: Path, simulation: Simulation) -> StationSettings:
    """The simulated station's settings: its file's `[gateway]` table, which must be in the simulated room, or
    the demo's (demo.radio.demo_gateway_table) when the file has none. ValueError, one line, for a bad table."""
    if "gateway" in config.extra:
        settings = StationSettings.from_config(config, config_path)
        if settings.zone_id != simulation.zone_id:
            raise ValueError(f"{config_path}: [gateway] zone_id is {settings.zone_id!r} but the simulated room is "
                             f"{simulation.zone_id!r}; give --zone {settings.zone_id} or correct the file")
        return settings
    table = demo_gateway_table(simulation.museum, simulation.zone_id)
    return StationSettings.from_config(replace(config, extra={**config.extra, "gateway": table}), config_path)


def run_device(config: ClientConfig, simulation: Simulation, stop: StopFlag,
               on_event: Callable[[Event], None] | None = None, *, take_home: TakeHomeFile | None = None) -> int:
    """Run a simulated kiosk until `stop` is requested; returns how many events were emitted. Emitted events the
    hub has not yet acknowledged when the device stops stay in its outbox and go out on its next start.
    `take_home`: where its visitors who collected a work keep their take-home URL (the demo's)."""
    check_config(config, simulation)
    client = DeviceClient(config)
    client.start()
    emitted = 0
    try:
        started = time.monotonic()
        sim_start = utc_now()
        planned = simulation.events(config, sim_start, take_home.visitor if take_home is not None else None)
        for event in paced(planned, sim_start, simulation.speed, elapsed=lambda: time.monotonic() - started,
                           wait=stop.wait):
            client.emit(event)
            emitted += 1
            if take_home is not None:
                take_home.emitted(event)
            if on_event is not None:
                on_event(event)
    finally:
        client.wait_drained(DRAIN_ON_STOP_S)
        client.stop()
    return emitted


# --- a gateway: a real station on a simulated radio ---------------------------------------------------------------

def run_station(config: ClientConfig, settings: StationSettings, simulation: Simulation, stop: StopFlag,
                on_event: Callable[[Event], None] | None = None, *,
                visitors: Iterable[RoomVisitor] | None = None) -> int:
    """Run the station until `stop` is requested; returns how many events it recorded. Its radio hears the room's
    simulated adverts at real pace; on stop the station ends the visits in progress and says goodbye.
    `visitors`: these instead of the room's random ones (a test's script), in the order they arrive."""
    check_config(config, simulation)
    # Here rather than at the top: a simulated kiosk needs neither bleak nor the station's code.
    from hardware.ble import FakeRadio
    from hardware.runtime import GatewayRuntime

    # keep_time=False: the station stamps each advert with the instant bleak's callback hands it over, as a live
    # station does, so a pacer running late (a busy machine) makes adverts late, never dated in the past.
    radio = FakeRadio(keep_time=False, max_pending=RADIO_PENDING)
    runtime = GatewayRuntime(config, settings, radio=radio, on_event=on_event)
    origin = time.time()
    adverts = simulation.radio(config.client_id, settings).adverts(origin, visitors)

    async def main() -> None:
        station_stop = asyncio.Event()
        helpers = [asyncio.create_task(_watch_flag(stop, station_stop), name="stop-flag"),
                   asyncio.create_task(feed_radio(radio, adverts, origin, station_stop), name="radio")]
        try:
            # Like a simulated kiosk, it gives the hub a moment to acknowledge the last events (the visits it ended).
            await runtime.run(station_stop, drain_s=DRAIN_ON_STOP_S)
        finally:
            station_stop.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    asyncio.run(main())
    return runtime.stats.events


async def _watch_flag(flag: StopFlag, stop: asyncio.Event) -> None:
    # The flag is set by a plain signal handler (installed before the loop existed, so that an early signal is
    # not lost); the loop only has to look at it.
    while not flag.requested:
        await asyncio.sleep(_STOP_CHECK_S)
    stop.set()


async def feed_radio(radio: FakeRadio, adverts: Iterator[Advert], origin: float, stop: asyncio.Event, *,
                     clock: Callable[[], float] = time.monotonic) -> tuple[int, int]:
    """Hand each advert to `radio` `advert.at - origin` real seconds after this call. A late advert (the loop was
    busy) goes at once, without delaying the next ones; one later than RADIO_LATE_S is skipped, as a station that
    was not listening then never heard it (after a suspend, say). Returns (handed over, skipped) once `adverts`
    ends or `stop` is set."""
    started = clock()
    handed = skipped = 0
    for advert in adverts:
        delay = (advert.at - origin) - (clock() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -RADIO_LATE_S:
            skipped += 1
            if skipped % 256 == 0:
                await asyncio.sleep(0)  # catching up: let the station run meanwhile
            continue
        if stop.is_set():
            break
        radio.put(advert)
        handed += 1
    return handed, skipped
