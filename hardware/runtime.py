"""A BLE station's moving parts, wired together: the scanner, the station pipeline and the device client.

    radio ─ bleak callback ─ Advert ─▶ queue (bounded; the callback only enqueues)
    consumer ─ queue ─▶ StationPipeline.feed ─ emit ─▶ DeviceClient outbox ─▶ hub
    ticker (1 s) ─▶ StationPipeline.tick (timeouts, windows, health) ; sightings ─▶ publish_latest ─▶ peers
    bus worker ─ peers' sightings ─▶ deque (only enqueues) ─ ticker ─▶ StationPipeline.peer
    ScanLoop ─ state changes ─▶ scanner.status event

Everything but the bus worker runs on the asyncio loop of the process's main thread (bleak needs asyncio; paho
keeps to its own thread inside DeviceClient, never an asyncio loop in a side thread).

The station's clock: the system's, or, on a pretend radio that keeps its adverts' times (`FakeRadio(keep_time=
True)`: a replay, a simulation, a test), the latest time heard in an advert. Time then stands still between
adverts, and the pipeline is ticked by the adverts themselves (before the first advert past each `TICK_S`), never
by the ticker, so a replay gives the same events however fast it is played and however the machine schedules
its tasks (peers' sightings, which arrive when they arrive, aside).

Bounds: the advert queue (`QUEUE_LIMIT`, then adverts are dropped and counted), the peers' inbox
(`PEER_INBOX_LIMIT`, oldest dropped), the pretend radio's own `max_pending`, the pipeline's (hardware.pipeline) and
the outbox's (bus.outbox).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from bus.mqtt import Received
from hardware.advert import Advert
from hardware.ble import FakeRadio, RateLimitedLog, fake_backend
from hardware.pipeline import StationPipeline
from hardware.scan_supervisor import RetryPolicy
from hardware.scanning import ScanLoop
from hardware.settings import StationSettings
from protocol import topics
from protocol.codec import decode_sightings, encode_sightings
from protocol.errors import ContractError
from protocol.events import Event, ScannerStatus

log = logging.getLogger(__name__)

QUEUE_LIMIT = 20_000
"""Adverts waiting for the consumer: a busy gallery sends a few hundred a second, so this is a minute of backlog
on a Pi that stalled (an SD card commit, say). Past it, adverts are dropped and counted: they are samples of a
signal, and the next ones carry the same information."""
PEER_INBOX_LIMIT = 1_000
TICK_S = 1.0
SCAN_STOP_GRACE_S = 10.0
"""How long a stopping station waits for its scanner to stop before cancelling it (ScanLoop gives a hung start 5 s)."""
_PLAUSIBLE_TIME = (0.0, 1e11)
"""An advert's time outside this (a corrupt recording) is fed (the pipeline counts it) but never moves the clock."""


@dataclass
class RuntimeStats:
    adverts_queued: int = 0
    adverts_dropped: int = 0
    """Adverts the full queue refused (the consumer fell behind by QUEUE_LIMIT)."""
    peer_messages: int = 0
    """Sightings messages received, this station's own echo included."""
    peer_sightings: int = 0
    """Other stations' sightings handed to the pipeline."""
    peer_invalid: int = 0
    events: int = 0
    loop_errors: int = 0
    """Unexpected failures in the consumer or the ticker (logged; the loop goes on)."""


class GatewayRuntime:
    def __init__(self, config: ClientConfig, settings: StationSettings, *, radio: FakeRadio | None = None,
                 discovery_interfaces: list[str] | None = None, tuning: DeliveryTuning | None = None,
                 on_event: Callable[[Event], None] | None = None, scan_policy: RetryPolicy | None = None) -> None:
        """`radio`: a pretend adapter (`hardware.ble.FakeRadio`: a recording, a simulation, a test) heard through
        bleak's own scanner instead of the system's Bluetooth; with `keep_time`, the station's clock is the
        time recorded in its adverts, so a replay behaves as the day it was recorded. `on_event` sees every
        event the station records (tests, the demo). `scan_policy`: the scanner's retry policy (tests shorten its
        backoff); `settings.silence_s` overrides its silence_s. Raises ValueError (one line) when the device's
        outbox cannot be opened."""
        self.config = config
        self.settings = settings
        self.stats = RuntimeStats()
        self.radio = radio
        self._on_event = on_event
        self._scan_policy = scan_policy
        self._keep_time = radio is not None and radio.keep_time
        self._latest_at: float | None = None
        self._next_tick = float("-inf")
        self._sightings_topic = topics.sightings_topic(config.site_id, config.client_id)
        self._peers: collections.deque[Received] = collections.deque(maxlen=PEER_INBOX_LIMIT)
        self._errors = RateLimitedLog(f"{config.client_id}: the station loop")
        try:
            self.device = DeviceClient(config, tuning=tuning, discovery_interfaces=discovery_interfaces,
                                       listen=[topics.all_devices(config.site_id, "sightings")],
                                       on_message=self._peers.append)
        except ValueError as error:  # no [outbox] table
            raise ValueError(f"{settings.config_path}: {error}") from None
        except (OSError, sqlite3.Error) as error:
            assert config.outbox is not None
            raise ValueError(f"{settings.config_path}: cannot open the station's outbox {config.outbox.path} "
                             f"({error}); correct the [outbox] path, or make its folder writable") from None
        self.pipeline = StationPipeline(settings, site_id=config.site_id, device_id=config.client_id,
                                        emit=self._emit)
        self.scan_loop: ScanLoop | None = None
        self._queue: asyncio.Queue[Advert] | None = None

    @property
    def now(self) -> float | None:
        """The station's clock (UNIX seconds); None on a time-keeping radio before its first advert."""
        return self._latest_at if self._keep_time else time.time()

    # --- callbacks: they only hand on ---------------------------------------------------------------------

    def _enqueue(self, advert: Advert) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(advert)
            self.stats.adverts_queued += 1
        except asyncio.QueueFull:
            self.stats.adverts_dropped += 1

    def _emit(self, event: Event) -> None:
        self.device.emit(event)
        self.stats.events += 1
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as error:  # an observer's bug must not stop the station (the event is recorded)
                self._failed(error)

    def _scanner_status(self, state: str, reason: str, attempts: int) -> None:
        level = logging.INFO if state == "scanning" else logging.WARNING
        log.log(level, "%s: scanner %s on %s: %s", self.config.client_id, state, self.settings.adapter, reason)
        self._emit(ScannerStatus.create(site_id=self.config.site_id, device_id=self.config.client_id, state=state,
                                        adapter=self.settings.adapter[:40], reason=reason[:500], attempts=attempts))

    def _failed(self, error: Exception) -> None:
        self.stats.loop_errors += 1
        self._errors(error)

    # --- the loop -----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, drain_s: float = 0.0) -> None:
        """Run the station until `stop` is set (or a pretend radio's stream ends); every fault is retried, none
        ends this. On the way out the visits in progress are ended, and up to `drain_s` seconds are given to the
        outbox to reach the hub (what is left is sent at the next start)."""
        self._queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.device.start()
        radio = self.radio
        scan_loop = ScanLoop(self.settings.adapter, self.settings.scan_mode, self._enqueue, self._scanner_status,
                             backend=fake_backend(radio) if radio is not None else None,
                             power_cycle=radio.power_cycle if radio is not None else None,
                             wall_clock=radio.wall_clock if radio is not None else time.time,
                             policy=self._scan_policy, silence_s=self.settings.silence_s)
        self.scan_loop = scan_loop
        scanning = asyncio.create_task(scan_loop.run(stop), name="scan")
        # A recording's end (FakeRadio.end) ends the scan loop, and so the station.
        scanning.add_done_callback(lambda _task: stop.set())
        others = [asyncio.create_task(self._consume(stop), name="consume"),
                  asyncio.create_task(self._tick(stop), name="tick")]
        try:
            await stop.wait()
        finally:
            # The scan loop stops its scanner itself once `stop` is set; cancel it only if that hangs.
            await asyncio.wait({scanning}, timeout=SCAN_STOP_GRACE_S)
            for task in (scanning, *others):
                task.cancel()
            for outcome in await asyncio.gather(scanning, *others, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("%s: a station task failed: %r", self.config.client_id, outcome)
            self._drain()
            now = self.now
            if now is not None:
                self.pipeline.tick(now)
                # A station that stops ends the visits in progress (as a kiosk ends its session with reason
                # shutdown): otherwise the hub would hold a proximity.entered that nothing ever closes.
                self.pipeline.close(now)
            if drain_s > 0 and self.device.outbox.pending:
                await asyncio.to_thread(self.device.wait_drained, drain_s)
            self.device.stop()

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self._queue is not None
        queue = self._queue
        take = self._take_timed if self._keep_time else self.pipeline.feed
        while not stop.is_set():
            advert = await queue.get()
            try:
                take(advert)
                # A burst is fed without going back to the loop for each advert.
                while not queue.empty():
                    take(queue.get_nowait())
            except Exception as error:  # the pipeline never raises; a bug here must not end the station
                self._failed(error)

    def _take_timed(self, advert: Advert) -> None:
        """An advert on a time-keeping radio: it moves the clock, and ticks the pipeline each TICK_S it passes."""
        at = advert.at
        low, high = _PLAUSIBLE_TIME
        if low <= at <= high and (self._latest_at is None or at > self._latest_at):
            self._latest_at = at
            if at >= self._next_tick:
                self._next_tick = at + TICK_S
                self.pipeline.tick(at)
        self.pipeline.feed(advert)

    def _drain(self) -> None:
        assert self._queue is not None
        take = self._take_timed if self._keep_time else self.pipeline.feed
        while not self._queue.empty():
            take(self._queue.get_nowait())

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
            now = self.now
            if now is None:
                continue  # no time yet: peers' sightings wait in their (bounded) inbox
            try:
                self._take_peers(now)
                if not self._keep_time:  # else the adverts tick it (_take_timed), so a replay is deterministic
                    self.pipeline.tick(now)
                sightings = self.pipeline.sightings(now)
                if sightings is not None:
                    self.device.publish_latest(self._sightings_topic, encode_sightings(sightings))
            except Exception as error:
                self._failed(error)

    def _take_peers(self, now: float) -> None:
        own = self.config.client_id
        while self._peers:
            message = self._peers.popleft()
            self.stats.peer_messages += 1
            try:
                sightings = decode_sightings(message.payload)
                if topics.parse_topic(message.topic).device_id != sightings.device_id:
                    raise ContractError("device_mismatch", "sightings name another device than their topic")
            except ContractError as error:
                self.stats.peer_invalid += 1
                log.warning("%s: ignoring invalid sightings on %s: %s", own, message.topic, error)
                continue
            if sightings.device_id != own:
                self.stats.peer_sightings += 1
                self.pipeline.peer(sightings, now)
