"""One simulated device (a kiosk or a room's BLE gateway) as a real client of the site: the visitor simulator's
events, emitted in real time through the same `bus.device.DeviceClient` a real kiosk uses.

Pacing: the simulator plans events on its own clock, starting at the moment the device starts. An event planned
`t` simulated seconds after that start is emitted `t / speed` real seconds after it, then re-stamped to the
instant it is really emitted, so no event is ever dated in the future and the hub sees the compressed timeline
it would see from a busier museum. Durations carried inside events (a session's `duration_s`, a stop's
`dwell_s`, an occupancy count's `window_s`) stay in simulated time.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from types import FrameType
from typing import Literal

from bus.config import ClientConfig
from bus.device import DeviceClient
from content.model import Museum
from demo.simulation import VISITORS_PER_HOUR, gateway_events, kiosk_events
from protocol.events import Event
from protocol.ids import new_event_id, utc_now

SimulatedKind = Literal["kiosk", "gateway"]
SIMULATED_KINDS: tuple[SimulatedKind, ...] = ("kiosk", "gateway")
MAX_SPEED = 1000.0
DRAIN_ON_STOP_S = 3.0
"""On stop, how long to wait for the hub to acknowledge what was already emitted before disconnecting."""
_STOP_CHECK_S = 0.2


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

    def events(self, config: ClientConfig, start: datetime) -> Iterator[tuple[datetime, Event]]:
        rng = self.rng(config.client_id)
        if self.kind == "kiosk":
            return kiosk_events(rng, self.museum, config.site_id, config.client_id, self.zone_id, start)
        return gateway_events(rng, self.museum, config.site_id, config.client_id, self.zone_id, start,
                              visitors_per_hour=self.visitors_per_hour)


def check_config(config: ClientConfig, simulation: Simulation) -> None:
    if config.kind != simulation.kind:
        raise ValueError(f"{config.client_id} is enrolled as a {config.kind}, not a {simulation.kind}")
    if config.outbox is None:
        raise ValueError(f"{config.client_id}: the configuration has no [outbox] path")
    if simulation.zone_id not in simulation.museum.zone_ids:
        raise ValueError(f"zone {simulation.zone_id!r} is not a room of {simulation.museum.site_id} "
                         f"(rooms: {', '.join(simulation.museum.zone_ids)})")
    check_speed(simulation.speed)


def run_device(config: ClientConfig, simulation: Simulation, stop: StopFlag,
               on_event: Callable[[Event], None] | None = None) -> int:
    """Run until `stop` is requested; returns how many events were emitted. Emitted events the hub has not yet
    acknowledged when the device stops stay in its outbox and go out on its next start."""
    check_config(config, simulation)
    client = DeviceClient(config)
    client.start()
    emitted = 0
    try:
        started = time.monotonic()
        sim_start = utc_now()
        for event in paced(simulation.events(config, sim_start), sim_start, simulation.speed,
                           elapsed=lambda: time.monotonic() - started, wait=stop.wait):
            client.emit(event)
            emitted += 1
            if on_event is not None:
                on_event(event)
    finally:
        client.wait_drained(DRAIN_ON_STOP_S)
        client.stop()
    return emitted
