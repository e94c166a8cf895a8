"""The edge hub: reads every device's events from the site broker, stores them once, and acknowledges them.

One thread does everything, in rounds: take what the broker delivered since the last round, validate it with
the codec, commit it in one transaction (a group commit), and only then tell each device which of its events
are safe. (A two-thread pipeline, validating the next round while SQLite commits the last, measured 25% slower:
the GIL handoffs cost more than the overlap gains.) While a round is being committed, the socket's buffers and
the broker's queue hold what comes next: a slow disk slows the reading down instead of filling memory.

Input that breaks the contract is quarantined with its reason, counted, and acknowledged as rejected so the
device stops resending it; the hub itself never stops on input.

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from broker.hub_store import DeviceSeen, HubStore, QuarantineEntry
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol import topics
from protocol.canonical import EventRecord, event_record, scan_events
from protocol.codec import decode_event_message, decode_presence, encode_ack, encode_event
from protocol.errors import ContractError
from protocol.events import DeviceStatus
from protocol.ids import format_instant, utc_now
from protocol.messages import Ack, Rejection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSettings:
    config: ClientConfig
    db_path: Path
    stats_file: Path | None = None
    stats_interval_s: float = 1.0
    retention_days: float = 90.0
    quarantine_retention_days: float = 30.0
    purge_interval_s: float = 3600.0

    @property
    def endpoint(self) -> Endpoint:
        broker = self.config.broker
        return Endpoint(broker.host, broker.port, broker.ca_file if broker.tls else None)


@dataclass
class _Round:
    """What one round collected, before its commit."""

    events: list[EventRecord] = field(default_factory=list)
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
            reason = f"{error.code}: {error.detail}"[:REASON_MAX_CHARS]
            self.rejected.setdefault(device_id, []).append(Rejection(error.event_id, reason))


ACK_MAX_BYTES = 128 * 1024
"""Encoded size above which a round's acknowledgement to one device is split: a quarter of what the device
accepts (codec.MAX_MESSAGE_BYTES) and far below the broker's packet limit, whatever the reasons say."""

REASON_MAX_CHARS = 500


def _acks(committed: list[str], rejected: list[Rejection]) -> list[Ack]:
    """One round's acknowledgements for one device, split by encoded size so that none outgrows a message."""
    if not rejected and len(committed) * 48 <= ACK_MAX_BYTES:
        return [Ack(tuple(committed), ())]  # the common case, a draining backlog's included: one message
    acks: list[Ack] = []
    ids: list[str] = []
    rejections: list[Rejection] = []
    size = 0
    for item in [*committed, *rejected]:
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
        self.store = HubStore(settings.db_path)
        broker = settings.config.broker
        self.link = MqttLink(
            settings.config.client_id, settings.endpoint, Credentials(broker.username, broker.password),
            clean_session=False,
            subscriptions=[(topics.all_devices(self.site_id, "events"), 1),
                           (topics.all_devices(self.site_id, "status"), 1)])
        self.stored_total = self.store.count_events()
        self.quarantined_total = self.store.count_quarantined()
        self.rounds = 0
        self._last_stats = (time.monotonic(), self.stored_total)

    # --- one round ----------------------------------------------------------------------------------------

    def process(self, messages: list[Received], received_at: datetime | None = None) -> _Round:
        """Validate, commit and acknowledge one group of messages, all in the calling thread."""
        batch = self.collect(messages)
        for topic, ack in self.commit(batch, received_at):
            self.link.publish(topic, ack, qos=1)
        return batch

    def collect(self, messages: list[Received]) -> _Round:
        """Validate one round of messages: what to store, what to quarantine, whom to acknowledge."""
        batch = _Round()
        for message in messages:
            self._collect(message, batch)
        return batch

    def commit(self, batch: _Round, received_at: datetime | None = None) -> list[tuple[str, bytes]]:
        """Store a round; returns the acknowledgements (topic, payload) that its commit has made true."""
        try:
            inserted = self.store.commit_group(batch.events, batch.quarantined, batch.devices.values(),
                                               received_at or utc_now())
        except sqlite3.Error:
            # Nothing is acknowledged, so the devices keep these events and resend them: nothing is lost.
            log.exception("hub: commit failed; %d events not acknowledged, devices will resend", len(batch.events))
            time.sleep(0.5)
            return []
        self.stored_total += inserted
        self.quarantined_total += len(batch.quarantined)
        self.rounds += 1
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

    def _collect_events(self, message: Received, device_id: str, batch: _Round) -> None:
        records = scan_events(message.payload)
        site_id = self.site_id
        if records is not None and all(r.device_id == device_id and r.site_id == site_id for r in records):
            # Canonical and addressed right: every field is already checked (see protocol.canonical).
            batch.see(DeviceSeen(device_id))
            batch.events += records
            batch.committed.setdefault(device_id, []).extend([record.event_id for record in records])
            status = DeviceStatus.type
            for record in records:
                if record.type == status:
                    own = json.loads(record.fields)
                    batch.see(DeviceSeen(device_id, own["kind"], own["software_version"]))
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
                error = ContractError("device_mismatch", f"event says device {event.device_id} but was published "
                                      f"on {device_id}'s topic", event_id=event.event_id)
                batch.quarantine(message.topic, encode_event(event), error, device_id)
            elif event.site_id != self.site_id:
                error = ContractError("site_mismatch", f"event says site {event.site_id}, this hub serves "
                                      f"{self.site_id}", event_id=event.event_id)
                batch.quarantine(message.topic, encode_event(event), error, device_id)
            else:
                batch.events.append(event_record(event))
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
        next_stats = next_purge = time.monotonic()
        try:
            while not stop.is_set():
                messages = self.link.poll(0.2)
                if messages:
                    self.process(messages)
                now = time.monotonic()
                if now >= next_purge:
                    next_purge = now + settings.purge_interval_s
                    self.purge()
                if settings.stats_file is not None and now >= next_stats:
                    next_stats = now + settings.stats_interval_s
                    self.write_stats_file(settings.stats_file)
        finally:
            self.link.flush(2.0)
            self.link.close()
            self.store.close()

    def purge(self) -> None:
        try:
            events, quarantined = self.store.purge(utc_now(), events_days=self.settings.retention_days,
                                                   quarantine_days=self.settings.quarantine_retention_days)
        except sqlite3.Error:
            log.exception("hub: retention purge failed; will try again at the next interval")
            return
        if events or quarantined:
            log.info("hub: retention removed %d events and %d quarantine rows", events, quarantined)
            self.stored_total = self.store.count_events()
            self.quarantined_total = self.store.count_quarantined()

    def write_stats_file(self, path: Path) -> None:
        """Live figures for watchers that must not open the database (the demo's dashboard, monitoring)."""
        now = time.monotonic()
        then, stored_then = self._last_stats
        rate = (self.stored_total - stored_then) / (now - then) if now > then else 0.0
        self._last_stats = (now, self.stored_total)
        online = [row["device_id"] for row in self.store.devices() if row["state"] == "online"]
        figures = {"site_id": self.site_id, "updated_at": format_instant(utc_now()), "connected": self.link.connected,
                   "stored_total": self.stored_total, "events_per_s": round(rate, 1),
                   "quarantined_total": self.quarantined_total, "devices_online": online}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(figures), encoding="utf-8")
        os.replace(temporary, path)
