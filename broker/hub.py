"""The edge hub: reads every device's events from the site broker, stores them once, and acknowledges them.

One thread does everything, in rounds: take what the broker delivered since the last round, validate it with
the codec, commit it in one transaction (a group commit), and only then tell each device which of its events
are safe. (A two-thread pipeline, validating the next round while SQLite commits the last, measured 25% slower:
the GIL handoffs cost more than the overlap gains.) While a round is being committed, the socket's buffers and
the broker's queue hold what comes next: a slow disk slows the reading down instead of filling memory.

Input that breaks the contract is quarantined with its reason, counted, and acknowledged as rejected so the
device stops resending it; the hub itself never stops on input, and no input grows its memory or its database
without bound: a round is bounded in bytes (`HubSettings.round_max_bytes`) as well as in messages, quarantine per
device and in all (`QuarantineLimits`), and events whose times are far from the hub's clock are refused, so that
retention finds every stored row.

Visitor tags: a tagged event (`visit.linked`, `tag.returned`, `proximity.*` with a `tag_id`) is stored with its
tag resolved to the visit it is lent to and removed (`broker.tag_links`), in the round's commit; the tag links
are deleted when the tag is returned, or `HubSettings.tag_link_max_hours` after the lending.

Screenshots (a device's answer to a `screenshot` command, on its own topic) are not events: the hub writes each
as a file (`broker.screenshots`, bounded) and never stores it in its database; an invalid one is quarantined like
any input.

The hub's MQTT session is persistent (clean_session false), so the broker queues events while the hub
restarts. That queue is bounded and can drop (see docs/hub.md); the devices' outboxes are what guarantees that
nothing is lost.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from broker.hub_store import (
    FUTURE_TOLERANCE_DAYS,
    PAST_TOLERANCE_DAYS,
    DeviceSeen,
    HubStore,
    QuarantineEntry,
    QuarantineLimits,
    record_payload,
)
from broker.screenshots import ScreenshotLimits, ScreenshotStore
from broker.tag_links import TAG_MARK, TAGGED_TYPES, carries_tag, without_tag
from bus.config import ClientConfig
from bus.memory import release_freed_memory
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol import topics
from protocol.canonical import EventRecord, event_record, scan_events
from protocol.codec import decode_event_message, decode_presence, decode_screenshot, encode_ack
from protocol.errors import ContractError
from protocol.events import DeviceStatus
from protocol.ids import event_id_floor, format_instant, utc_now
from protocol.messages import Ack, Rejection

log = logging.getLogger(__name__)

CERTIFICATE_CHECK_INTERVAL_S = 24 * 3600.0

ROUND_MAX_BYTES = 8 * 1024 * 1024
"""What one round reads at most, in payload bytes: 16 messages of the contract's largest size, or 32 of the
largest a device sends (`DeliveryTuning.batch_max_bytes`), thousands of events for one group commit. What is not
read yet waits in the socket and the broker's queue for the hub."""
LARGE_ROUND_BYTES = 2 * 1024 * 1024
"""After a round this large, the hub gives freed memory back to the system once the burst is over."""


@dataclass(frozen=True)
class HubSettings:
    config: ClientConfig
    db_path: Path
    stats_file: Path | None = None
    stats_interval_s: float = 1.0
    retention_days: float = 90.0
    quarantine_retention_days: float = 30.0
    purge_interval_s: float = 3600.0
    tag_link_max_hours: float = 12.0
    """Forget which visit a lent tag belongs to this long after it was lent, if it was never returned (at the
    next purge): a visit with a lent tag does not outlast a museum's opening day."""
    # Lines about certificates that expire soon, logged as warnings at start and every day (the CLI passes the
    # site's check; the hub itself knows nothing of the site's files).
    certificate_warnings: Callable[[], list[str]] | None = None
    past_tolerance_days: float = PAST_TOLERANCE_DAYS
    """Refuse an event whose `occurred_at`, or the instant in its `event_id`, is this long before the hub's clock."""
    future_tolerance_days: float = FUTURE_TOLERANCE_DAYS
    """Refuse an event whose `occurred_at`, or the instant in its `event_id`, is this long after the hub's clock."""
    quarantine_limits: QuarantineLimits = field(default_factory=QuarantineLimits)
    round_max_bytes: int = ROUND_MAX_BYTES
    screenshots_dir: Path | None = None
    """Where devices' screenshots are written (`SiteLayout.screenshots_dir`); None: the hub takes none."""
    screenshot_limits: ScreenshotLimits = field(default_factory=ScreenshotLimits)

    @property
    def endpoint(self) -> Endpoint:
        broker = self.config.broker
        return Endpoint(broker.host, broker.port, broker.ca_file if broker.tls else None)


@dataclass(frozen=True)
class TimeWindow:
    """The instants an event may claim, as of one round: wire instants and event ids both sort as text in time
    order (`protocol.ids.event_id_floor`), so checking a record is four string comparisons."""

    earliest: str
    latest: str
    lowest_id: str
    highest_id: str  # exclusive: the floor of the millisecond after the latest one allowed

    @classmethod
    def around(cls, now: datetime, past_days: float, future_days: float) -> TimeWindow:
        earliest, latest = now - timedelta(days=past_days), now + timedelta(days=future_days)
        return cls(format_instant(earliest), format_instant(latest), event_id_floor(earliest),
                   event_id_floor(latest + timedelta(milliseconds=1)))

    def admits(self, record: EventRecord) -> bool:
        return (self.earliest <= record.occurred_at <= self.latest
                and self.lowest_id <= record.event_id < self.highest_id)

    def refusal(self, record: EventRecord) -> ContractError:
        if not self.earliest <= record.occurred_at <= self.latest:
            what = f"occurred_at {record.occurred_at}"
        else:
            what = f"the instant in event_id {record.event_id}"
        return ContractError("time_out_of_range", f"{what} is outside what the hub accepts now, {self.earliest} "
                             f"to {self.latest}: the device's clock is wrong, or the event was kept too long",
                             event_id=record.event_id)


class _RegistryWrites:
    """Which of a round's sightings the `devices` table needs. Writing every device's row every round wrote one
    more page per commit (a third of what the hub wrote per event at a kiosk's pace, wearing an SD card): now a
    row is written when something in it changes (kind, version, state, its `since`), and otherwise `last_seen`
    moves at most every `LAST_SEEN_EVERY_S`. Known only to this process: after a restart, each device's first
    round writes its row again."""

    LAST_SEEN_EVERY_S = 60.0
    MAX_DEVICES = 10_000  # a bound whatever happens: past it, forget all, which only costs one write each

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[object, ...], float]] = {}

    @staticmethod
    def _fields(seen: DeviceSeen) -> tuple[object, ...]:
        return seen.kind, seen.software_version, seen.state, seen.state_since

    def needed(self, sightings: Iterable[DeviceSeen], now: float) -> list[DeviceSeen]:
        needed = []
        for seen in sightings:
            known = self._known.get(seen.device_id)
            if known is None or (not seen.replayed and now - known[1] >= self.LAST_SEEN_EVERY_S) or any(
                    new is not None and new != old for new, old in zip(self._fields(seen), known[0], strict=True)):
                needed.append(seen)
        return needed

    def written(self, sightings: Iterable[DeviceSeen], now: float) -> None:
        """After the commit that stored `sightings`."""
        if len(self._known) > self.MAX_DEVICES:
            self._known.clear()
        for seen in sightings:
            before, last_seen = self._known.get(seen.device_id, ((None,) * 4, float("-inf")))
            merged = tuple(old if new is None else new for new, old in zip(self._fields(seen), before, strict=True))
            self._known[seen.device_id] = (merged, last_seen if seen.replayed else now)


@dataclass
class _Round:
    """What one round collected, before its commit."""

    received_at: datetime
    window: TimeWindow
    events: list[EventRecord] = field(default_factory=list)
    tagged: list[EventRecord] = field(default_factory=list)
    """Events with a visitor tag to resolve (`tag_links.carries_tag`), in the order received."""
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    devices: dict[str, DeviceSeen] = field(default_factory=dict)
    committed: dict[str, list[str]] = field(default_factory=dict)
    rejected: dict[str, list[Rejection]] = field(default_factory=dict)

    def see(self, seen: DeviceSeen) -> None:
        before = self.devices.get(seen.device_id)
        if before is None:
            self.devices[seen.device_id] = seen
            return
        self.devices[seen.device_id] = DeviceSeen(
            seen.device_id, seen.kind or before.kind, seen.software_version or before.software_version,
            seen.state or before.state, seen.state_since or before.state_since, seen.replayed and before.replayed)

    def quarantine(self, topic: str, raw: bytes, error: ContractError, device_id: str | None, *,
                   replayed: bool = False) -> None:
        self.quarantined.append(QuarantineEntry(topic, raw, error.code, error.detail, device_id, error.event_id,
                                                replayed))
        if device_id is not None and error.event_id is not None:
            self.rejected.setdefault(device_id, []).append(Rejection(error.event_id, _reason(error)))


_WATCHED_TYPES = frozenset({DeviceStatus.type, *TAGGED_TYPES})
"""The types the canonical path looks at more closely: a status updates the registry, a tag is resolved."""

ACK_MAX_BYTES = 128 * 1024
"""Encoded size above which a round's acknowledgement to one device is split: a quarter of what the device
accepts (codec.MAX_MESSAGE_BYTES) and far below the broker's packet limit, whatever the reasons say."""

REASON_MAX_CHARS = 500


def _reason(error: ContractError) -> str:
    return f"{error.code}: {error.detail}"[:REASON_MAX_CHARS]


def _refused_copy(record: EventRecord) -> bytes:
    """What the quarantine keeps of an event the hub itself refused: the event as the codec encodes it, without
    its visitor tag (a refused `visit.linked` would otherwise tie its tag to its visit for the quarantine's days)."""
    return record_payload(without_tag(record)[1] if carries_tag(record) else record)


def _acks(committed: list[str], rejected: list[Rejection]) -> list[Ack]:
    """One round's acknowledgements for one device, split by encoded size so that none outgrows a message."""
    if not rejected and len(committed) * 48 <= ACK_MAX_BYTES:
        return [Ack(tuple(committed), ())]  # the common case, a draining backlog's included: one message
    acks: list[Ack] = []
    ids: list[str] = []
    rejections: list[Rejection] = []
    size = 0
    items: list[str | Rejection] = [*committed, *rejected]
    for item in items:
        # Upper bounds of each item's encoded size (JSON escaping at most doubles, \u escapes at most sextuple).
        cost = 48 if isinstance(item, str) else 96 + 6 * len(item.reason)
        if size + cost > ACK_MAX_BYTES and (ids or rejections):
            acks.append(Ack(tuple(ids), tuple(rejections)))
            ids, rejections, size = [], [], 0
        if isinstance(item, str):
            ids.append(item)
        else:
            rejections.append(item)
        size += cost
    if ids or rejections:
        acks.append(Ack(tuple(ids), tuple(rejections)))
    return acks


class Hub:
    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.site_id = settings.config.site_id
        self.store = HubStore(settings.db_path, settings.quarantine_limits)
        broker = settings.config.broker
        subscriptions = [(topics.all_devices(self.site_id, "events"), 1),
                         (topics.all_devices(self.site_id, "status"), 1)]
        self.screenshots: ScreenshotStore | None = None
        if settings.screenshots_dir is not None:
            self.screenshots = ScreenshotStore(settings.screenshots_dir, settings.screenshot_limits)
            subscriptions.append((topics.all_devices(self.site_id, "screenshots"), 1))
        self.link = MqttLink(
            settings.config.client_id, settings.endpoint, Credentials(broker.username, broker.password),
            clean_session=False, subscriptions=subscriptions, max_bytes_per_poll=settings.round_max_bytes)
        # Devices the hub has seen (a status or an event): only those can have been asked for a screenshot.
        self._known_devices = {row["device_id"] for row in self.store.devices()}
        self.screenshots_saved = 0
        self.screenshots_refused = 0
        """Invalid screenshots: quarantined (within the quarantine's bounds) and counted, never written."""
        self.screenshots_failed = 0
        """Valid screenshots the disk would not take."""
        self.stored_total = self.store.count_events()
        self.quarantined_total = self.store.count_quarantined()
        self.quarantine_not_stored = sum(self.store.quarantine_not_stored().values())
        self.refused_erased = 0
        """Events of erased visits (a device's outbox still held them): acknowledged, not stored."""
        self.storage_error: str | None = None
        """Why the last commit failed (disk full, I/O error), until one succeeds again: in the stats file."""
        self.storage_failures = 0
        self._release_memory = False
        self._registry = _RegistryWrites()
        self.rounds = 0
        self._last_stats = (time.monotonic(), self.stored_total)

    # --- one round ----------------------------------------------------------------------------------------

    def process(self, messages: list[Received], received_at: datetime | None = None) -> _Round:
        """Validate, commit and acknowledge one group of messages, all in the calling thread."""
        batch = self.collect(messages, received_at)
        for topic, ack in self.commit(batch):
            self.link.publish(topic, ack, qos=1)
        self._after_round(sum(len(message.payload) for message in messages))
        return batch

    def collect(self, messages: list[Received], received_at: datetime | None = None) -> _Round:
        """Validate one round of messages: what to store, what to quarantine, whom to acknowledge. The round's
        time is taken first: it both bounds the times events may claim and becomes their `received_at`, which
        is what retention's bounded search relies on (`HubStore.purge`)."""
        now = received_at or utc_now()
        settings = self.settings
        batch = _Round(now, TimeWindow.around(now, settings.past_tolerance_days, settings.future_tolerance_days))
        for message in messages:
            self._collect(message, batch)
        return batch

    def commit(self, batch: _Round) -> list[tuple[str, bytes]]:
        """Store a round; returns the acknowledgements (topic, payload) that its commit has made true."""
        now = time.monotonic()
        sightings = self._registry.needed(batch.devices.values(), now)
        try:
            result = self.store.commit_round(batch.events, batch.quarantined, sightings, batch.received_at,
                                             batch.tagged)
        except sqlite3.Error as error:
            # Nothing is acknowledged, so the devices keep these events and resend them: nothing is lost.
            self._storage_failed(error, len(batch.events) + len(batch.tagged))
            time.sleep(0.5)
            return []
        self._registry.written(sightings, now)
        self._known_devices.update(batch.devices)
        if self.storage_error is not None:
            log.warning("hub: storing again after: %s", self.storage_error)
            self.storage_error = None
        self.stored_total += result.inserted
        self.refused_erased += result.refused_erased
        self.quarantined_total += result.quarantine_stored
        self.quarantine_not_stored += result.quarantine_not_stored
        self.rounds += 1
        for record in result.conflicts:
            # Another device's event holds this id: the sender's is not what is stored, so it is refused.
            committed = batch.committed.get(record.device_id, [])
            if record.event_id in committed:
                batch.committed[record.device_id] = [i for i in committed if i != record.event_id]
            conflict = ContractError("event_id_conflict", f"event_id {record.event_id} is already stored for "
                                     "another device", event_id=record.event_id)
            batch.rejected.setdefault(record.device_id, []).append(Rejection(record.event_id, _reason(conflict)))
        acks = []
        for device_id in batch.committed.keys() | batch.rejected.keys():
            topic = topics.acks_topic(self.site_id, device_id)
            acks += [(topic, encode_ack(ack))
                     for ack in _acks(batch.committed.get(device_id, []), batch.rejected.get(device_id, []))]
        return acks

    def _collect(self, message: Received, batch: _Round) -> None:
        try:
            topic = topics.parse_topic(message.topic)
            if topic.site_id != self.site_id:
                raise ContractError("site_mismatch", f"topic is for site {topic.site_id}, this hub serves "
                                    f"{self.site_id}")
        except ContractError as error:
            batch.quarantine(message.topic, message.payload, error, None)
            return
        device_id = topic.device_id
        if device_id is None:
            return  # site-wide topics are the hub's own output
        if topic.channel == "events":
            self._collect_events(message, device_id, batch)
        elif topic.channel == "status":
            self._collect_presence(message, device_id, batch)
        elif topic.channel == "screenshots" and self.screenshots is not None:
            self._collect_screenshot(message, device_id, batch)

    def _collect_screenshot(self, message: Received, device_id: str, batch: _Round) -> None:
        """Write a valid screenshot at once (it is no part of the round's commit); quarantine an invalid one. The
        device is the one of the topic, which the broker's ACL ties to its account: the payload names none."""
        assert self.screenshots is not None
        try:
            screenshot = decode_screenshot(message.payload)
            if device_id not in self._known_devices and device_id not in batch.devices:
                raise ContractError("unknown_device", f"screenshot from {device_id}, a device this hub has never "
                                    "seen (no status, no event)")
        except ContractError as error:
            self.screenshots_refused += 1
            log.warning("hub: refused a screenshot on %s: %s", message.topic, error)
            batch.quarantine(message.topic, message.payload, error, device_id)
            return
        try:
            path = self.screenshots.save(device_id, screenshot)
        except (OSError, ValueError) as error:
            self.screenshots_failed += 1
            log.error("hub: cannot write the screenshot %s of %s under %s: %s", screenshot.command_id, device_id,
                      self.screenshots.root, error)
            return
        self.screenshots_saved += 1
        log.info("hub: screenshot of %s for command %s saved as %s", device_id, screenshot.command_id, path)

    def _collect_events(self, message: Received, device_id: str, batch: _Round) -> None:
        records = scan_events(message.payload)
        site_id = self.site_id
        window = batch.window
        earliest, latest, lowest_id, highest_id = window.earliest, window.latest, window.lowest_id, window.highest_id
        if records is not None and all(r.device_id == device_id and r.site_id == site_id
                                       and earliest <= r.occurred_at <= latest and lowest_id <= r.event_id < highest_id
                                       for r in records):
            # Canonical, addressed right, and in time: every field is already checked (see protocol.canonical).
            batch.see(DeviceSeen(device_id))
            batch.committed.setdefault(device_id, []).extend([record.event_id for record in records])
            status = DeviceStatus.type
            tagged = False
            for record in records:  # one pass finds both: most events are neither, and pay one set lookup
                kind = record.type
                if kind in _WATCHED_TYPES:
                    if kind == status:
                        own = json.loads(record.fields)
                        batch.see(DeviceSeen(device_id, own["kind"], own["software_version"]))
                    elif TAG_MARK in record.fields:
                        tagged = True
            if tagged:
                for record in records:
                    (batch.tagged if carries_tag(record) else batch.events).append(record)
            else:
                batch.events += records
            return
        self._collect_strictly(message, device_id, batch)

    def _collect_strictly(self, message: Received, device_id: str, batch: _Round) -> None:
        """The codec's way, for anything the canonical scanner did not recognise: accepts what is valid in any
        JSON form, and quarantines the rest with its precise reason."""
        try:
            decoded = decode_event_message(message.payload)
        except ContractError as error:
            batch.quarantine(message.topic, message.payload, error, device_id)
            return
        batch.see(DeviceSeen(device_id))
        for rejected in decoded.rejected:
            batch.quarantine(message.topic, rejected.raw, rejected.error, device_id)
        for event in decoded.events:
            if event.device_id != device_id:
                mismatch = ContractError("device_mismatch", f"event says device {event.device_id} but was "
                                         f"published on {device_id}'s topic", event_id=event.event_id)
                batch.quarantine(message.topic, _refused_copy(event_record(event)), mismatch, device_id)
            elif event.site_id != self.site_id:
                mismatch = ContractError("site_mismatch", f"event says site {event.site_id}, this hub serves "
                                         f"{self.site_id}", event_id=event.event_id)
                batch.quarantine(message.topic, _refused_copy(event_record(event)), mismatch, device_id)
            elif not batch.window.admits(record := event_record(event)):
                batch.quarantine(message.topic, _refused_copy(record), batch.window.refusal(record), device_id)
            else:
                (batch.tagged if carries_tag(record) else batch.events).append(record)
                batch.committed.setdefault(device_id, []).append(event.event_id)
                if isinstance(event, DeviceStatus):
                    batch.see(DeviceSeen(device_id, event.kind, event.software_version))

    def _collect_presence(self, message: Received, device_id: str, batch: _Round) -> None:
        if not message.payload:
            return  # a cleared retained status: nothing to record
        try:
            presence = decode_presence(message.payload)
            if presence.device_id != device_id:
                raise ContractError("device_mismatch", f"status says device {presence.device_id} but was published "
                                    f"on {device_id}'s topic")
        except ContractError as error:
            batch.quarantine(message.topic, message.payload, error, device_id, replayed=message.retained)
            return
        batch.see(DeviceSeen(device_id, presence.kind, presence.software_version, presence.state, presence.since,
                             replayed=message.retained))

    # --- the service --------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("hub: site %s, broker %s, database %s", self.site_id, self.settings.endpoint,
                 self.settings.db_path)
        settings = self.settings
        next_stats = next_purge = next_certificate_check = time.monotonic()
        stats_failing = False
        # Said once per outage at the default level, and again when the broker answers: not once per attempt.
        outage_since: float | None = None
        try:
            while not stop.is_set():
                messages = self.link.poll(0.2)
                if messages:
                    self.process(messages)
                else:
                    self._after_round(0)
                now = time.monotonic()
                if self.link.connected:
                    if outage_since is not None:
                        log.warning("hub: connected to the broker at %s after %.0f s without it",
                                    settings.endpoint, now - outage_since)
                        outage_since = None
                elif outage_since is None and self.link.last_error is not None:
                    outage_since = now
                    log.warning("hub: cannot reach the broker at %s (%s); retrying until it answers",
                                settings.endpoint, self.link.last_error)
                if settings.certificate_warnings is not None and now >= next_certificate_check:
                    next_certificate_check = now + CERTIFICATE_CHECK_INTERVAL_S
                    for line in settings.certificate_warnings():
                        log.warning("hub: %s", line)
                if now >= next_purge:
                    next_purge = now + settings.purge_interval_s
                    self.purge()
                if settings.stats_file is not None and now >= next_stats:
                    next_stats = now + settings.stats_interval_s
                    try:
                        self.write_stats_file(settings.stats_file)
                        stats_failing = False
                    except OSError as error:  # a full disk: the hub carries on, the file is stale meanwhile
                        # Said once per outage, and kept apart from storage_error: events may still be stored.
                        if not stats_failing:
                            log.error("hub: cannot write %s: %s; its figures are stale until it can",
                                      settings.stats_file, error)
                        stats_failing = True
        finally:
            self.link.flush(2.0)
            self.link.close()
            self.store.close()

    def _storage_failed(self, error: sqlite3.Error, events: int) -> None:
        """One line when storing starts failing (or fails differently), not one per round: a full disk fails
        every round until space returns, and each round's events stay with their devices meanwhile."""
        self.storage_failures += 1
        reason = f"{error} (database {self.settings.db_path})"
        if reason != self.storage_error:
            log.error("hub: cannot store: %s; %d events of this round not acknowledged, devices keep them and "
                      "resend; storing resumes by itself once the database can be written", reason, events)
        self.storage_error = reason

    def _after_round(self, payload_bytes: int) -> None:
        """After a burst of large messages, give the memory it took back to the system: Python's allocator keeps
        freed memory for reuse, so a burst would otherwise set the hub's size for good."""
        if payload_bytes >= LARGE_ROUND_BYTES:
            self._release_memory = True
        elif self._release_memory:
            self._release_memory = False
            release_freed_memory()

    def purge(self) -> None:
        settings = self.settings
        # The links first, and apart: a failure of the (larger) events purge must not keep a tag tied to its visit.
        try:
            links = self.store.purge_tag_links(utc_now(), max_hours=settings.tag_link_max_hours)
        except sqlite3.Error as error:
            log.error("hub: purge of old visitor tag links failed (%s); will try again at the next interval", error)
        else:
            if links:
                log.info("hub: forgot the visits of %d visitor tags lent more than %g hours ago and never returned",
                         links, settings.tag_link_max_hours)
        try:
            events, quarantined = self.store.purge(utc_now(), events_days=settings.retention_days,
                                                   quarantine_days=settings.quarantine_retention_days,
                                                   past_tolerance_days=settings.past_tolerance_days,
                                                   future_tolerance_days=settings.future_tolerance_days)
        except sqlite3.Error as error:
            log.error("hub: retention purge failed (%s); will try again at the next interval", error)
            return
        if events or quarantined:
            log.info("hub: retention removed %d events and %d quarantine rows", events, quarantined)
            self.stored_total = self.store.count_events()
            self.quarantined_total = self.store.count_quarantined()

    ACTIVITY_INTERVAL_S = 5.0
    ACTIVITY_WINDOW_S = 3600.0
    ACTIVITY_MAX_EVENTS = 10_000
    """The visitors' figures of the stats file cover the events of the last hour, at most the newest 10,000: a
    bounded read of about 12 ms on a small machine, done at most every 5 s, so a busy hub stays busy storing."""
    _activity: dict[str, object] | None = None
    _next_activity = 0.0

    def write_stats_file(self, path: Path) -> None:
        """Live figures for watchers that must not open the database (the demo's dashboard, monitoring)."""
        now = time.monotonic()
        then, stored_then = self._last_stats
        rate = (self.stored_total - stored_then) / (now - then) if now > then else 0.0
        self._last_stats = (now, self.stored_total)
        devices = self.store.devices()
        online = [row["device_id"] for row in devices if row["state"] == "online"]
        if self._activity is None or now >= self._next_activity:
            self._activity = self._recent_activity()
            # Never more than 1% of the hub's time, whatever the read costs on this machine.
            self._next_activity = now + max(self.ACTIVITY_INTERVAL_S, 100 * (time.monotonic() - now))
        figures = {"site_id": self.site_id, "updated_at": format_instant(utc_now()), "connected": self.link.connected,
                   "stored_total": self.stored_total, "events_per_s": round(rate, 1),
                   "quarantined_total": self.quarantined_total, "devices_online": online,
                   "quarantine_not_stored": self.quarantine_not_stored, "storage_error": self.storage_error,
                   "refused_erased": self.refused_erased,
                   "screenshots_saved": self.screenshots_saved, "screenshots_refused": self.screenshots_refused,
                   "screenshots_failed": self.screenshots_failed,
                   "devices": [{key: row[key] for key in ("device_id", "kind", "state", "last_seen")}
                               for row in devices],
                   **self._activity}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(figures), encoding="utf-8")
        os.replace(temporary, path)

    def _recent_activity(self) -> dict[str, object]:
        """Views per work and per language, and each room's latest occupancy count, over the recent window."""
        computed_at = utc_now()
        try:
            activity = self.store.recent_activity(computed_at - timedelta(seconds=self.ACTIVITY_WINDOW_S),
                                                  self.ACTIVITY_MAX_EVENTS)
        except sqlite3.Error as error:
            log.warning("hub: the stats file goes without the recent activity this time: %s", error)
            return {}
        by_work: Counter[str] = Counter()
        by_language: Counter[str] = Counter()
        for artwork_id, language, views in activity.views:
            by_work[artwork_id] += views
            by_language[language] += views
        # Since when the figures count: the window's start, or later when the newest events filled the bound.
        since = computed_at - timedelta(seconds=self.ACTIVITY_WINDOW_S)
        if activity.events >= self.ACTIVITY_MAX_EVENTS and activity.oldest is not None:
            since = max(since, activity.oldest)
        return {"activity_at": format_instant(computed_at), "activity_since": format_instant(since),
                "top_viewed": [{"artwork_id": work, "views": views} for work, views in by_work.most_common(10)],
                "views_by_language": dict(by_language.most_common()),
                "occupancy": {zone: {"count": count, "at": at} for zone, count, at in sorted(activity.occupancy)}}
