"""A BLE station's logic, from adverts to events: parse, classify, then proximity, occupancy and beacon health.

    feed(advert) ─ pseudonym(address) ─ frame cache ─┬─ visitor tag ─▶ smoothing + proximity ─▶ proximity.*
                   (parse_advert on a miss)          ├─ museum beacon ─▶ health (heard) ───────▶ beacon.alert
                                                     ├─ TLM ─ sender's identity ─▶ health ──────▶ beacon.health/alert
                                                     ├─ other device ─▶ occupancy ─────────────▶ occupancy.counted
                                                     └─ tracker, other beacon, malformed: counted only

Time is only the adverts' `at` and the `now` given to `tick`/`peer`/`sightings`, so a replay gives the same events.
`feed` never raises: anything odd is counted in `stats` and the advert dropped.

The hot path (a busy gallery is thousands of adverts a second on a Pi): one keyed hash of the address, one dict
lookup, and the frame is parsed again only when the sender's payload changed since its last advert. That cache,
like every other per-address memory here, is keyed by the occupancy window's pseudonyms and dropped with its key
(see hardware.occupancy), and is cleared when it reaches `MAX_ADDRESSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hardware.advert import Advert
from hardware.beacons import EddystoneTLM, Rejected, frame_tx_power_1m, parse_advert
from hardware.health import Alert, HealthMonitor, Notice
from hardware.occupancy import Count, OccupancyCounter, is_tracker
from hardware.proximity import Entered, ProximityTracker, Transition
from hardware.settings import StationSettings
from hardware.tags import Identities
from protocol.events import (
    BeaconAlert,
    BeaconHealth,
    Event,
    OccupancyCounted,
    ProximityEntered,
    ProximityLeft,
)
from protocol.ids import truncate_ms
from protocol.messages import Sightings

MAX_ADDRESSES = 20_000
"""Senders whose last classification is cached (and whose identity is kept for TLM attribution)."""
DEFAULT_POWER_1M = -59
"""RSSI at 1 m assumed for a tag whose frame gives none usable: the usual calibration of iBeacon tags."""
MIN_RSSI, MAX_RSSI = -126, 10
"""Plausible BLE RSSI; HCI reports 127 for "not available", and nothing received is stronger than +10 dBm."""
_MIN_TIME, _MAX_TIME = 0.0, 1e11
"""Plausible UNIX times; also refuses NaN and infinities, which would poison every timer."""

# What an advert turned out to be.
DEVICE, TRACKER, TAG, MUSEUM_BEACON, TLM, OTHER_BEACON, REJECTED = range(7)
KIND_NAMES = ("device", "tracker", "tag", "museum_beacon", "tlm", "other_beacon", "rejected")


@dataclass(frozen=True)
class PipelineStats:
    adverts: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    """Adverts by what they turned out to be: device, tracker, tag, museum_beacon, tlm, other_beacon, rejected."""
    frames: dict[str, int] = field(default_factory=dict)
    """Adverts by frame kind (ibeacon, eddystone_uid, …; "none" for no beacon format)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Malformed beacon frames by `Rejected.code`."""
    bad_rssi: int = 0
    bad_time: int = 0
    errors: int = 0
    """Unexpected failures while handling one input (the input is dropped, the station goes on)."""
    last_error: str = ""
    tlm_unattributed: int = 0
    """TLM frames from a sender whose identity frame was not heard in the current window."""
    cache_resets: int = 0
    tags_tracked: int = 0
    tags_evicted: int = 0
    enters_suppressed: int = 0
    peers_stale: int = 0
    peers_dropped: int = 0
    own_sightings: int = 0
    occupancy_windows: int = 0
    occupancy_overflow: int = 0
    events: int = 0
    event_errors: int = 0
    """Events that could not be made or handed on (`emit` raised)."""


class _Seen:
    """A sender's last payload and what it was."""

    __slots__ = ("frame", "ident", "kind", "manufacturer_data", "power", "service_data", "slot")

    manufacturer_data: tuple[tuple[int, bytes], ...]
    service_data: tuple[tuple[str, bytes], ...]
    kind: int
    slot: int
    """Index of the advert's label (frame kind or Rejected code) in the pipeline's counters."""
    ident: str
    """The museum beacon's or the tag's id."""
    power: float
    """A tag's RSSI at 1 m."""
    frame: EddystoneTLM | None


class StationPipeline:
    def __init__(self, settings: StationSettings, *, site_id: str, device_id: str,
                 emit: Callable[[Event], None]) -> None:
        self._settings = settings
        self._site_id = site_id
        self._device_id = device_id
        self._emit = emit
        self._identities = Identities(settings)
        self._tag_power = settings.tag_measured_power
        self._proximity = ProximityTracker(settings, self._on_transition)
        self._occupancy = OccupancyCounter(settings.zone_id, settings.occupancy, self._on_count)
        self._health = HealthMonitor(settings.health, tuple(b.beacon_id for b in settings.beacons), self._on_notice)
        self._seen: dict[bytes, _Seen] = {}
        self._owners: dict[bytes, tuple[str, bool]] = {}
        """Sender pseudonym → (beacon or tag id, configured museum beacon?), for TLM attribution."""
        self._roll_at = float("-inf")
        self._label_slots: dict[str, int] = {}
        self._label_counts: list[int] = []
        self._kinds = [0] * len(KIND_NAMES)
        self._adverts = self._bad_rssi = self._bad_time = self._errors = 0
        self._tlm_unattributed = self._cache_resets = self._own_sightings = 0
        self._events = self._event_errors = 0
        self._last_error = ""
        self._heard_at = float("-inf")
        self._adverts_at_tick = 0

    # --- inputs -------------------------------------------------------------------------------------------

    def feed(self, advert: Advert) -> None:
        """One advert, as heard; never raises."""
        try:
            self._adverts += 1
            at = advert.at
            if not _MIN_TIME <= at <= _MAX_TIME:
                self._bad_time += 1
                return
            rssi = advert.rssi
            if not MIN_RSSI <= rssi <= MAX_RSSI:
                self._bad_rssi += 1
                return
            if at >= self._roll_at:
                self._roll(at)
            pseudonym = self._occupancy.pseudonym(advert.address)
            seen = self._seen.get(pseudonym)
            if (seen is None or seen.manufacturer_data != advert.manufacturer_data
                    or seen.service_data != advert.service_data):
                seen = self._classify(pseudonym, advert, seen)
            self._label_counts[seen.slot] += 1
            kind = seen.kind
            self._kinds[kind] += 1
            if kind == TAG:
                self._proximity.sample(seen.ident, rssi, seen.power, at)
            elif kind == DEVICE:
                self._occupancy.observe(pseudonym, rssi)
            elif kind == MUSEUM_BEACON:
                self._health.heard(seen.ident, at)
            elif kind == TLM and seen.frame is not None:
                self._telemetry(pseudonym, seen.frame, at)
        except Exception as error:  # one odd advert must never stop the station
            self._failed("feed", error)

    def tick(self, now: float) -> None:
        """At least once a second: ends occupancy windows, visits that timed out, and checks beacons."""
        try:
            if not _MIN_TIME <= now <= _MAX_TIME:
                self._bad_time += 1
                return
            if self._adverts != self._adverts_at_tick:
                self._adverts_at_tick = self._adverts
                self._heard_at = now
            if now >= self._roll_at:
                self._roll(now)
            self._proximity.tick(now)
            self._health.tick(now, hearing=now - self._heard_at <= self._settings.silence_s)
        except Exception as error:
            self._failed("tick", error)

    def peer(self, sightings: Sightings, now: float) -> None:
        """Another station's latest view of the tags (its own echo is ignored)."""
        try:
            if sightings.device_id == self._device_id:
                self._own_sightings += 1
                return
            self._proximity.peer(sightings, now)
        except Exception as error:
            self._failed("peer", error)

    def sightings(self, now: float) -> Sightings | None:
        """This station's view of the tags to publish, when it changed (see ProximityTracker.changed_view)."""
        try:
            view = self._proximity.changed_view(now)
            if view is None:
                return None
            return Sightings(self._device_id, self._settings.zone_id, _instant(now), view)
        except Exception as error:
            self._failed("sightings", error)
            return None

    def close(self, now: float) -> None:
        """The station stops: end the visits in progress, so that none stays open at the hub."""
        try:
            self._proximity.close(now)
        except Exception as error:
            self._failed("close", error)

    @property
    def stats(self) -> PipelineStats:
        frames: dict[str, int] = {}
        rejected: dict[str, int] = {}
        for label, slot in self._label_slots.items():
            kind, _, name = label.partition(":")
            (rejected if kind == "rejected" else frames)[name] = self._label_counts[slot]
        proximity = self._proximity.counters
        return PipelineStats(
            adverts=self._adverts, by_class=dict(zip(KIND_NAMES, self._kinds, strict=True)), frames=frames,
            rejected=rejected, bad_rssi=self._bad_rssi, bad_time=self._bad_time, errors=self._errors,
            last_error=self._last_error, tlm_unattributed=self._tlm_unattributed, cache_resets=self._cache_resets,
            tags_tracked=self._proximity.tracked, tags_evicted=proximity.tags_evicted,
            enters_suppressed=proximity.enters_suppressed, peers_stale=proximity.peers_stale,
            peers_dropped=proximity.peers_dropped, own_sightings=self._own_sightings,
            occupancy_windows=self._occupancy.windows, occupancy_overflow=self._occupancy.overflow,
            events=self._events, event_errors=self._event_errors)

    # --- classification -----------------------------------------------------------------------------------

    def _classify(self, pseudonym: bytes, advert: Advert, seen: _Seen | None) -> _Seen:
        """What the advert is; updates the sender's cache entry in place (a phone's payload changes often)."""
        result = parse_advert(advert)
        ident: str = ""
        power: float | None = 0.0
        frame: EddystoneTLM | None = None
        if result is None:
            kind, slot = (TRACKER if is_tracker(advert) else DEVICE), self._slot("frame:none")
        elif isinstance(result, Rejected):
            kind, slot = REJECTED, self._slot("rejected:" + result.code)
        else:
            slot = self._slot("frame:" + result.kind)
            if type(result) is EddystoneTLM:
                kind, frame = TLM, result
            elif (beacon := self._identities.beacon(result)) is not None:
                kind, ident = MUSEUM_BEACON, beacon.beacon_id
                self._own(pseudonym, ident, True)
            elif (tag_id := self._identities.tag_id(result)) is not None:
                kind, ident = TAG, tag_id
                power = self._tag_power if self._tag_power is not None else frame_tx_power_1m(result)
                if power is None or not -100 <= power <= 0:  # a tag misconfigured with nonsense
                    power = DEFAULT_POWER_1M
                self._own(pseudonym, ident, False)
            else:
                kind = OTHER_BEACON
        if seen is None:
            cache = self._seen
            if len(cache) >= MAX_ADDRESSES:
                cache.clear()
                self._cache_resets += 1
            seen = cache[pseudonym] = _Seen()
        seen.manufacturer_data = advert.manufacturer_data
        seen.service_data = advert.service_data
        seen.kind, seen.slot, seen.ident, seen.power, seen.frame = kind, slot, ident, float(power or 0.0), frame
        return seen

    def _own(self, pseudonym: bytes, ident: str, configured: bool) -> None:
        owners = self._owners
        if len(owners) >= MAX_ADDRESSES:
            owners.clear()
        owners[pseudonym] = (ident, configured)

    def _slot(self, label: str) -> int:
        slot = self._label_slots.get(label)
        if slot is None:
            # Labels are frame kinds and Rejected codes: a fixed, small set, so this stays bounded.
            slot = self._label_slots[label] = len(self._label_counts)
            self._label_counts.append(0)
        return slot

    def _telemetry(self, pseudonym: bytes, frame: EddystoneTLM, at: float) -> None:
        owner = self._owners.get(pseudonym)
        if owner is None:
            self._tlm_unattributed += 1
            return
        ident, configured = owner
        if configured:
            self._health.heard(ident, at)
        self._health.telemetry(ident, frame, at, configured=configured)

    def _roll(self, at: float) -> None:
        if self._occupancy.roll(at):
            # The old key is gone: every pseudonym made with it is meaningless, and must not outlive it.
            self._seen.clear()
            self._owners.clear()
        self._roll_at = self._occupancy.window_end

    # --- outputs ------------------------------------------------------------------------------------------

    def _on_transition(self, change: Transition) -> None:
        if isinstance(change, Entered):
            self._send(ProximityEntered, change.at, artwork_id=change.artwork_id, zone_id=change.zone_id,
                       tag_id=change.tag_id)
        else:
            self._send(ProximityLeft, change.at, artwork_id=change.artwork_id, zone_id=change.zone_id,
                       tag_id=change.tag_id, dwell_s=round(change.dwell_s, 3))

    def _on_count(self, count: Count) -> None:
        self._send(OccupancyCounted, count.at, zone_id=count.zone_id, count=count.count, window_s=count.window_s)

    def _on_notice(self, notice: Notice) -> None:
        if isinstance(notice, Alert):
            self._send(BeaconAlert, notice.at, beacon_id=notice.beacon_id, alert=notice.alert,
                       detail=notice.detail[:300])
            return
        tlm = notice.telemetry
        battery = tlm.battery_mv if tlm.battery_mv is not None and tlm.battery_mv <= 10_000 else None  # else garbage
        self._send(BeaconHealth, notice.at, beacon_id=notice.beacon_id, battery_mv=battery,
                   temperature_c=tlm.temperature_c, uptime_s=tlm.uptime_s, adverts=tlm.adv_count)

    def _send(self, cls: type[Event], at: float, **fields: Any) -> None:
        try:
            event = cls.create(site_id=self._site_id, device_id=self._device_id, occurred_at=_instant(at), **fields)
            self._emit(event)
            self._events += 1
        except Exception as error:  # the state machines must finish their transition regardless
            self._event_errors += 1
            self._last_error = f"{cls.__name__}: {type(error).__name__}: {error}"[:300]

    def _failed(self, where: str, error: Exception) -> None:
        self._errors += 1
        # The type only: a message could quote the input, and an advert's input includes its address.
        self._last_error = f"{where}: {type(error).__name__}"


def _instant(at: float) -> datetime:
    return truncate_ms(datetime.fromtimestamp(at, UTC))


__all__ = ["DEFAULT_POWER_1M", "MAX_ADDRESSES", "PipelineStats", "StationPipeline"]
