"""The entrance QR reader (device kind `qr_reader`): a camera at the entrance desk reads visitors' take-home QR
codes and the QR codes printed on lent tags, and records the links between them.

    camera ─ Frame ─▶ Strategy (qr.decode) ─ texts ─▶ Debouncer ─▶ classify (qr.codes) ─▶ EntrancePairing
        ─ outcomes ─▶ visit.linked (channel entrance_qr, tag_id when a tag was lent) / tag.returned
        ─▶ DeviceClient outbox ─▶ hub

Settings: the `[qr_reader]` table of the device's configuration file (`museum device enroll --kind qr_reader`):

    [qr_reader]
    camera = "picamera2"          # the Raspberry Pi camera, or "v4l2:/dev/video0" for a USB webcam
    decoder = "zxing"             # or "zbar" (slower and reads fewer codes: see bench/qr.py)
    repeat_s = 3                  # the same code again within this many seconds is the same showing
    pair_window_s = 60            # a visit QR and a tag QR shown within this window are paired
    width = 1280                  # the resolution asked of the camera
    height = 720

One loop on the caller's thread: read a frame, decode it, tick the pairing. A camera that fails while running is
closed and opened again with backoff, for ever; a frame or a decoder that fails is counted and skipped. Nothing
any frame holds can grow memory: the debouncer and the pairing are bounded (qr.decode, qr.codes), the outbox has
its own bounds (bus.outbox). A visit token is turned into its visit_id as soon as it is read and never logged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.backoff import Backoff
from bus.config import ClientConfig, number_setting, settings_table, whole_number_setting
from bus.device import DeliveryTuning, DeviceClient
from protocol.events import Event, TagReturned, VisitLinked
from qr.camera import Camera, CameraError, make_camera, parse_camera
from qr.codes import EntrancePairing, ForeignCode, Link, Outcome, Return, TagCode, VisitCode, classify, shown
from qr.decode import DECODERS, DEFAULT_DECODER, Debouncer, Decoder, Strategy, make_decoder
from qr.frames import Frame

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5
"""How long one read waits for a frame: also how soon a stop request is noticed."""
STATS_EVERY_S = 300.0
_KEYS = ("camera", "decoder", "repeat_s", "pair_window_s", "width", "height")


@dataclass(frozen=True)
class QrReaderSettings:
    config_path: Path
    camera: str = "picamera2"
    decoder: str = DEFAULT_DECODER
    repeat_s: float = 3.0
    pair_window_s: float = 60.0
    width: int = 1280
    height: int = 720

    @classmethod
    def from_config(cls, config: ClientConfig, config_path: Path) -> QrReaderSettings:
        """The `[qr_reader]` table of `config` (read from `config_path`); ValueError, one line, for a bad value."""
        config_path = Path(config_path)
        raw = settings_table(config, config_path, "qr_reader", _KEYS)
        where = f"{config_path}: [qr_reader]"
        camera = raw.get("camera", cls.camera)
        try:
            parse_camera(camera)
        except ValueError as error:
            raise ValueError(f"{where} camera {error}; correct the setting") from None
        decoder = raw.get("decoder", cls.decoder)
        if decoder not in DECODERS:
            raise ValueError(f"{where} decoder must be one of {', '.join(DECODERS)}, got {decoder!r}; "
                             "correct the setting")
        repeat_s = number_setting(raw, "repeat_s", cls.repeat_s, (0.0, 60.0), where)
        pair_window_s = number_setting(raw, "pair_window_s", cls.pair_window_s, (5.0, 600.0), where)
        width = _pixels(raw, "width", cls.width, where)
        height = _pixels(raw, "height", cls.height, where)
        return cls(config_path=config_path, camera=camera, decoder=decoder, repeat_s=repeat_s,
                   pair_window_s=pair_window_s, width=width, height=height)


def _pixels(raw: dict[str, Any], name: str, default: int, where: str) -> int:
    return whole_number_setting(raw, name, default, (160, 4096), where, "a whole number of pixels")


@dataclass
class StationStats:
    frames: int = 0
    codes_read: int = 0
    """Texts read, repeats included."""
    repeats: int = 0
    """Texts read again within repeat_s (the same showing)."""
    visits: int = 0
    tags: int = 0
    foreign: Counter[str] = field(default_factory=Counter)
    """Foreign codes by reason (a fixed set of reasons: the counter cannot grow with input)."""
    links: int = 0
    lone_visits: int = 0
    returns: int = 0
    events: int = 0
    camera_opens: int = 0
    camera_faults: int = 0
    last_camera_fault: str | None = None
    loop_errors: int = 0


class QrStation:
    """Frames in, events out: the reader's logic without its camera or its bus. Time is given, never read."""

    def __init__(self, settings: QrReaderSettings, *, site_id: str, device_id: str,
                 emit: Callable[[Event], None], decoder: Decoder | None = None) -> None:
        self.settings = settings
        self.site_id = site_id
        self.device_id = device_id
        self._emit = emit
        self.decoder = decoder or make_decoder(settings.decoder)
        self.strategy = Strategy(self.decoder)
        self.debouncer = Debouncer(settings.repeat_s)
        self.pairing = EntrancePairing(settings.pair_window_s)
        self.stats = StationStats()

    def process(self, frame: Frame, now: float) -> None:
        """Read `frame` (seen at `now`, UNIX seconds) and record what it settles. Never raises."""
        self.stats.frames += 1
        try:
            for decoded in self.strategy.read(frame):
                self.stats.codes_read += 1
                if not self.debouncer.admit(decoded.text, now):
                    self.stats.repeats += 1
                    continue
                self._code(decoded.text, now)
        except Exception:  # a bug here must cost one frame, not the reader
            self.stats.loop_errors += 1
            log.exception("%s: a frame could not be processed", self.device_id)
        self.tick(now)

    def _code(self, text: str, now: float) -> None:
        code = classify(text, self.site_id)
        if isinstance(code, ForeignCode):
            reason = "another site's tag" if code.reason.startswith("a tag of another site") else code.reason
            self.stats.foreign[reason] += 1
            log.info("%s: ignored a QR code that is not this site's (%s)", self.device_id, reason)
            log.debug("%s: the ignored code reads %s", self.device_id, shown(code.text))
            return
        if isinstance(code, VisitCode):
            self.stats.visits += 1
            log.info("%s: visit QR code read", self.device_id)
        elif isinstance(code, TagCode):
            self.stats.tags += 1
            log.info("%s: tag %s read", self.device_id, code.tag_id)
        self._record(self.pairing.feed(code, now))

    def tick(self, now: float) -> None:
        """Record the lone code whose wait has ended, if any. Never raises."""
        try:
            self._record(self.pairing.tick(now))
        except Exception:
            self.stats.loop_errors += 1
            log.exception("%s: the pairing could not be ticked", self.device_id)

    def close(self) -> None:
        """The reader stops: a code waiting for its partner is recorded alone rather than lost."""
        self._record(self.pairing.flush())

    def _record(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            at = datetime.fromtimestamp(outcome.at, UTC)
            event: Event
            if isinstance(outcome, Link):
                event = VisitLinked.create(site_id=self.site_id, device_id=self.device_id, occurred_at=at,
                                           visit_id=outcome.visit_id, channel="entrance_qr", tag_id=outcome.tag_id)
                if outcome.tag_id is None:
                    self.stats.lone_visits += 1
                else:
                    self.stats.links += 1
                    log.info("%s: tag %s lent to a visit", self.device_id, outcome.tag_id)
            elif isinstance(outcome, Return):
                event = TagReturned.create(site_id=self.site_id, device_id=self.device_id, occurred_at=at,
                                           tag_id=outcome.tag_id)
                self.stats.returns += 1
                log.info("%s: tag %s returned", self.device_id, outcome.tag_id)
            else:  # pragma: no cover - Outcome has two kinds
                continue
            self._emit(event)
            self.stats.events += 1

    def summary(self) -> str:
        s = self.stats
        strategy = self.strategy.stats
        return (f"{s.frames} frames, {strategy.frames_read} with a code ({dict(strategy.by_stage)}), "
                f"{s.visits} visit codes, {s.tags} tag codes, {sum(s.foreign.values())} foreign, {s.repeats} repeats; "
                f"{s.links} tags lent, {s.returns} returned, {s.lone_visits} visits without a tag; "
                f"camera faults {s.camera_faults}, decoder errors {self.decoder.errors}, "
                f"frame failures {strategy.failures + s.loop_errors}")


class QrReaderRuntime:
    """The reader's camera loop and its device client."""

    def __init__(self, config: ClientConfig, settings: QrReaderSettings, *, camera: Camera | None = None,
                 decoder: Decoder | None = None, tuning: DeliveryTuning | None = None,
                 discovery_interfaces: list[str] | None = None, clock: Callable[[], float] = time.time,
                 backoff: Backoff | None = None) -> None:
        """`camera`: instead of the configured one (a folder of images, a test's fake). `clock`: UNIX seconds
        for events and the pairing window. Raises ValueError (one line) when the outbox cannot be opened, and
        qr.decode.DecoderUnavailable when the decoder is not installed."""
        self.config = config
        self.settings = settings
        self.camera = camera or make_camera(settings.camera, settings.width, settings.height)
        self.clock = clock
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=30.0)
        try:
            self.device = DeviceClient(config, tuning=tuning, discovery_interfaces=discovery_interfaces)
        except ValueError as error:  # no [outbox] table
            raise ValueError(f"{settings.config_path}: {error}") from None
        except (OSError, sqlite3.Error) as error:
            assert config.outbox is not None
            raise ValueError(f"{settings.config_path}: cannot open the reader's outbox {config.outbox.path} "
                             f"({error}); correct the [outbox] path, or make its folder writable") from None
        self.station = QrStation(settings, site_id=config.site_id, device_id=config.client_id,
                                 emit=self.device.emit, decoder=decoder)
        self._open = False

    @property
    def stats(self) -> StationStats:
        return self.station.stats

    def open_camera(self) -> None:
        """Open the camera now: CameraError (one line naming the setting) if it cannot be. The command calls
        this before `run`, so a reader set up wrongly says so at once instead of retrying for ever."""
        self.camera.open()
        self._open = True
        self.stats.camera_opens += 1

    def run(self, stop: threading.Event, *, drain_s: float = 0.0) -> None:
        """Read frames until `stop` is set. Camera faults are retried with backoff, for ever. On the way out a code
        still waiting for its partner is recorded alone, and up to `drain_s` seconds are given to the outbox to
        reach the hub (what is left is sent at the next start)."""
        self.device.start()
        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not stop.is_set():
                if not self._open and not self._reopen(stop):
                    continue
                try:
                    frame = self.camera.read(READ_TIMEOUT_S)
                except CameraError as error:
                    self._fault(error, stop)
                    continue
                except Exception as error:  # an unexpected camera failure is a fault like any other
                    self.stats.loop_errors += 1
                    self._fault(error, stop)
                    continue
                now = self.clock()
                if frame is not None:
                    if self.backoff.failures:  # the camera works again: the next fault starts from a short wait
                        self.backoff.reset()
                    self.station.process(frame, now)
                else:
                    self.station.tick(now)
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY_S
                    log.info("%s: %s", self.config.client_id, self.station.summary())
        finally:
            self._close_camera()
            self.station.close()
            if drain_s > 0 and self.device.outbox.pending:
                self.device.wait_drained(drain_s)
            self.device.stop()
            log.info("%s: stopped; %s", self.config.client_id, self.station.summary())

    def _reopen(self, stop: threading.Event) -> bool:
        try:
            self.open_camera()
        except Exception as error:  # mid-run even a "missing" camera is waited for: it may come back
            self.stats.camera_faults += 1
            self.stats.last_camera_fault = str(error)[:300]
            delay = self.backoff.next_delay()
            if self.backoff.failures in (1, 5) or self.backoff.failures % 50 == 0:
                log.warning("%s: the camera cannot be opened (%s); attempt %d, next in %.1f s",
                            self.config.client_id, error, self.backoff.failures, delay)
            stop.wait(delay)
            return False
        log.info("%s: camera %s open", self.config.client_id, self.camera.description)
        return True

    def _fault(self, error: Exception, stop: threading.Event) -> None:
        self.stats.camera_faults += 1
        self.stats.last_camera_fault = str(error)[:300]
        log.warning("%s: camera %s failed (%s); opening it again", self.config.client_id,
                    self.camera.description, error)
        self._close_camera()
        stop.wait(self.backoff.next_delay())

    def _close_camera(self) -> None:
        self._open = False
        try:
            self.camera.close()
        except Exception:  # closing a camera that failed must not fail the reader
            log.debug("closing the camera failed", exc_info=True)


__all__ = ["QrReaderRuntime", "QrReaderSettings", "QrStation", "StationStats"]
