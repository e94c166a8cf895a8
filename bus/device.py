"""The durable device client, used by kiosks, BLE gateways and QR readers alike.

    app thread ── emit(event) ──▶ outbox (SQLite, committed) ──wake──▶ worker thread ──QoS 1──▶ broker ──▶ hub
                                       ▲                                    │
                                       └──── remove(ids) ◀── hub's ack ◀────┘

- `emit()` returns once the event is committed to the outbox: from then on it is the device's to deliver.
- The worker publishes the oldest unacknowledged events, one per message or, when there is a backlog, many per
  batch envelope, keeping at most `window` messages unacknowledged by the hub. At a low rate it gathers a few
  events per message (`DeliveryTuning.gather_events`, `gather_s`): each message costs the hub a synced commit.
- An event leaves the outbox only on the hub's acknowledgement. A PUBACK means nothing here: Mosquitto drops
  QoS 1 messages to a slow subscriber once its queue is full and still PUBACKs the publisher.
- Go-back: after a reconnect, a restart, or `ack_timeout_s` without an acknowledgement for the oldest message
  in flight, everything unacknowledged is sent again from the oldest, in order. The hub stores idempotently on
  `event_id`, so a resend costs bandwidth, never a duplicate.
- A dead path (no PUBACK, or no reply to a keepalive ping, within `reply_timeout_s`) is noticed here, not left to
  the broker's keepalive, and a refusal by the broker (bad password, not authorised) is logged as an ERROR once
  per reason and retried slowly: see docs/devices.md, "Failures".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeVar

from bus.backoff import Backoff
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink, Received, Will
from bus.outbox import Outbox, PendingEvent
from protocol import SOFTWARE_VERSION, topics
from protocol.codec import (
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    decode_ack,
    decode_command,
    decode_content,
    encode_batch,
    encode_event,
    encode_presence,
    encode_screenshot,
)
from protocol.errors import ContractError
from protocol.events import CommandResult, DeviceStatus, Event
from protocol.ids import utc_now
from protocol.messages import Command, ContentAnnouncement, Presence, Screenshot

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
CommandHandler = Callable[[Command], tuple[bool, str]]


SEQ_MAP_LIMIT = 100_000
# Acknowledged events are deleted in bulk while messages are in flight: once the oldest has waited ACK_FLUSH_S
# (+ one loop), so that a busy device commits one delete for many acks; or as soon as ACK_FLUSH_EVENTS are waiting,
# so that a draining backlog deletes a little after each ack instead of stalling the sender for one long delete.
# With nothing in flight they are deleted at once.
ACK_FLUSH_S = 0.2
ACK_FLUSH_EVENTS = 500


@dataclass(frozen=True)
class DeliveryTuning:
    """How the worker paces delivery. The defaults suit a kiosk on a museum LAN."""

    window: int = 2                       # messages sent but not yet acknowledged by the hub
    batch_max_events: int = 1000          # fewer, fuller messages drain a backlog faster: see bench/bus.py
    batch_max_bytes: int = MAX_MESSAGE_BYTES // 2
    ack_timeout_s: float = 10.0
    expire_every_s: float = 300.0
    discovery_timeout_s: float = 3.0
    rediscover_after_failures: int = 5
    # A dead path is noticed within keepalive_s + reply_timeout_s (+ one worker pass) while idle, and within
    # reply_timeout_s of a publish while sending. reply_timeout_s must stay below keepalive_s, or paho's own
    # keepalive (a whole keepalive after its ping) acts first. docs/devices.md has the arithmetic.
    keepalive_s: int = 10
    reply_timeout_s: float = 5.0
    # Gathering, when nothing is in flight (Nagle's algorithm, for events): a message goes at once if it holds
    # `gather_events`, otherwise once its oldest event has waited `gather_s`. At a kiosk's pace every message
    # costs the hub a synced commit (three to six 4 KiB blocks of its disk) and the device a delete: at 20
    # events/s the hub wrote 11.4 KB per event with one event per message, 4.5 KB with four, 3.1 KB with eight
    # (bench/writes.py). A busy device gathers eight within milliseconds (at 1,000 events/s p99 latency went from
    # about 3 to 10 ms, the target being 20); a quiet one delays an event by up to gather_s. Events that waited
    # behind a message in flight have been gathered by that wait: they go as soon as the window has room.
    gather_events: int = 8
    gather_s: float = 0.5


@dataclass(frozen=True)
class DeviceStats:
    connected: bool
    pending: int
    dropped_total: int
    in_flight_messages: int
    messages_sent: int
    events_sent: int
    events_acked: int
    resends: int
    invalid_messages: int
    disconnects: int = 0                  # connections lost since this start (not counting refusals)
    last_disconnect: str | None = None    # why the last one was lost; "dead path: …" when noticed here
    refusals: int = 0                     # connection attempts the broker refused (credentials, authorisation)
    last_refusal: str | None = None       # the broker's reason for the last refusal, until a connection succeeds


@dataclass
class _InFlight:
    sent_at: float
    remaining: int


class DeviceClient:
    def __init__(self, config: ClientConfig, *, tuning: DeliveryTuning | None = None,
                 software_version: str = SOFTWARE_VERSION, discovery_interfaces: list[str] | None = None,
                 on_command: CommandHandler | None = None,
                 on_content: Callable[[ContentAnnouncement], None] | None = None,
                 on_acked: Callable[[list[str]], None] | None = None,
                 listen: Sequence[str] = (), on_message: Callable[[Received], None] | None = None,
                 backoff: Backoff | None = None, refusal_backoff: Backoff | None = None) -> None:
        if config.outbox is None:
            raise ValueError(f"{config.client_id}: a device needs an [outbox] path in its configuration")
        self.config = config
        self.site_id = config.site_id
        self.device_id = config.client_id
        self.tuning = tuning or DeliveryTuning()
        self.software_version = software_version
        self._interfaces = discovery_interfaces
        self._on_command = on_command
        self._on_content = on_content
        self._on_acked = on_acked
        # Topic filters of other devices' state this device follows (a BLE station its peers' sightings); each
        # message goes to `on_message` on the worker thread, which must only hand it on.
        self._listen = tuple(listen)
        self._on_message = on_message
        # The latest state to publish per topic (QoS 0): a newer one replaces one not yet sent. Set from any
        # thread under the lock, sent by the worker.
        self._latest: dict[str, bytes] = {}
        self._latest_lock = threading.Lock()
        self.outbox = Outbox(config.outbox.path, max_events=config.outbox.max_events,
                             max_age_days=config.outbox.max_age_days)
        self.content: ContentAnnouncement | None = None
        self._events_topic = topics.events_topic(self.site_id, self.device_id)
        self._status_topic = topics.status_topic(self.site_id, self.device_id)
        self._acks_topic = topics.acks_topic(self.site_id, self.device_id)
        self._commands_topic = topics.commands_topic(self.site_id, self.device_id)
        self._screenshots_topic = topics.screenshots_topic(self.site_id, self.device_id)
        self._content_topic = topics.content_topic(self.site_id)
        self._backoff = backoff
        self._refusal_backoff = refusal_backoff
        self._refusal_logged: str | None = None  # the reason last logged, so a retry refused alike stays quiet
        self._disconnects = 0
        self._link: MqttLink | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started_at = time.monotonic()
        self._connected_at = utc_now()
        # worker state (touched only by the worker thread)
        self._cursor = 0
        self._in_flight: dict[int, _InFlight] = {}
        self._batch_of: dict[str, int] = {}  # event_id → the message it is in flight in
        # event_id → outbox seq, for every event sent and not yet acknowledged. Kept across go-backs, so a late
        # ack for an event sent before one still finds it by seq; bounded by what one window can send again.
        self._seq_of: dict[str, int] = {}
        self._twins: dict[str, list[int]] = {}  # event_id → seqs of earlier copies of an event emitted twice
        self._batch_no = 0
        self._reset_needed = True
        # True while the worker has room in its window and has found nothing to send. It is set before the
        # worker's last look at the outbox and read after the emitter's commit, so no event can slip between.
        self._idle = False
        # Gathering: when the worker first saw the unsent events it holds back, and when it must send them anyway.
        self._unsent_since: float | None = None
        # Set when unsent events were waiting behind a message in flight: events come faster than the hub's round
        # trip, so the device is busy, and the next message goes as soon as the window has room (no gathering).
        self._arrived_in_flight = False
        self._gather_until: float | None = None
        self._messages_sent = self._events_sent = self._events_acked = self._resends = self._invalid = 0

    # --- application side ---------------------------------------------------------------------------------

    def record(self, event_class: type[E], *, visit_id: str | None = None, **fields: Any) -> E:
        """Create an event of this device, happening now, and emit it."""
        event = event_class.create(site_id=self.site_id, device_id=self.device_id, visit_id=visit_id, **fields)
        self.emit(event)
        return event

    def emit(self, event: Event) -> None:
        self.emit_many([event])

    def emit_many(self, events: list[Event]) -> None:
        """Commit events to the outbox; when this returns they will reach the hub, whatever happens next."""
        encoded = []
        for event in events:
            if event.site_id != self.site_id or event.device_id != self.device_id:
                raise ValueError(f"event {event.event_id} is for {event.site_id}/{event.device_id}, "
                                 f"not this device ({self.site_id}/{self.device_id})")
            encoded.append((event.event_id, encode_event(event)))
        self.outbox.append(encoded)
        # Wake the worker only when it is waiting for events. A busy worker (window full, or sending) finds these
        # rows on its next look, and a wake per event would cost a syscall and a worker loop per event.
        if self._idle and self._link is not None:
            self._idle = False
            self._link.wake()

    def publish_latest(self, topic: str, payload: bytes) -> None:
        """Publish a state that only matters while it is the newest (QoS 0, not retained, never in the outbox):
        if the previous one for `topic` is not sent yet, this one replaces it, and while the device is offline
        only the last is kept. Any thread may call it; the worker sends it on its next turn."""
        with self._latest_lock:
            self._latest[topic] = payload
        if self._link is not None:
            self._link.wake()

    def _send_latest(self, link: MqttLink) -> None:
        if not self._latest:  # every worker turn of every device passes here: no lock when there is nothing
            return  # (one set just now woke the link, so the next turn sends it)
        with self._latest_lock:
            if not self._latest:
                return
            latest, self._latest = self._latest, {}
        for topic, payload in latest.items():
            if not link.publish(topic, payload, qos=0):
                with self._latest_lock:  # keep it for the next connection, unless a newer one came meanwhile
                    self._latest.setdefault(topic, payload)
                return

    def send_screenshot(self, command_id: str, png: bytes) -> None:
        """Publish a PNG of the screen (QoS 1) on this device's screenshots topic, for the `screenshot` command
        `command_id`. Call it from the `on_command` handler, which runs on the worker thread that owns the MQTT
        link; the handler's answer then follows as the usual `command.result` event.

        A screenshot never enters the outbox: a picture of a screen is worth something only now, and a backlog of
        them would crowd out the events. So it is sent once, over the link as it is: ValueError if `png` is not a
        PNG or is over `protocol.codec.MAX_SCREENSHOT_PNG_BYTES`, ConnectionError if the device is not connected
        to the broker (the handler's exception then becomes the command's failed result), RuntimeError if called
        from another thread."""
        link = self._link
        if link is None or self._thread is None:
            raise RuntimeError(f"{self.device_id}: send_screenshot before start()")
        if threading.current_thread() is not self._thread:
            raise RuntimeError(f"{self.device_id}: send_screenshot must be called from the on_command handler (the "
                               "device's worker thread, which owns the MQTT link)")
        try:
            frame = encode_screenshot(Screenshot(command_id, utc_now(), png))
        except ContractError as error:
            raise ValueError(f"{self.device_id}: cannot send this screenshot: {error.detail}") from None
        if not link.publish(self._screenshots_topic, frame, qos=1):
            raise ConnectionError(f"{self.device_id}: not connected to the broker; the screenshot was not sent")

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._link = self._make_link(self._resolve_endpoint())
        self._thread = threading.Thread(target=self._run, name=f"device-{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye (retained offline status), disconnect cleanly, close the outbox. Pending events stay in
        the outbox for the next start."""
        self._stopping.set()
        if self._link is not None:
            self._link.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self.outbox.close()

    def wait_drained(self, timeout: float) -> bool:
        """Block until the outbox is empty (every event acknowledged by the hub)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.pending == 0:
                return True
            time.sleep(0.005)
        return self.outbox.pending == 0

    def stats(self) -> DeviceStats:
        outbox = self.outbox.stats()
        link = self._link
        return DeviceStats(bool(link and link.connected), outbox.pending, outbox.dropped_total,
                           len(self._in_flight), self._messages_sent, self._events_sent, self._events_acked,
                           self._resends, self._invalid, self._disconnects,
                           link.last_disconnect if link else None, link.refusals if link else 0,
                           link.last_refusal if link else None)

    # --- connection ---------------------------------------------------------------------------------------

    def _resolve_endpoint(self) -> Endpoint:
        """The broker to use: zeroconf's answer for this site when discovery is on, else the configured one.
        `resolve_broker` refuses an advertised broker whose TLS setting differs from ours, so nobody on the LAN
        can lure a device into sending its password in clear."""
        from bus import discovery

        broker = self.config.broker
        configured = discovery.BrokerEndpoint(broker.host, broker.port, broker.tls, self.site_id, "config")
        chosen = discovery.resolve_broker(self.site_id, configured, discover=broker.discover,
                                          timeout=self.tuning.discovery_timeout_s, interfaces=self._interfaces)
        return Endpoint(chosen.host, chosen.port, broker.ca_file if broker.tls else None)

    def _presence(self, state: str, since: Any) -> bytes:
        return encode_presence(Presence(self.device_id, state, self.config.kind,  # type: ignore[arg-type]
                                        self.software_version, since))

    def _make_link(self, endpoint: Endpoint) -> MqttLink:
        broker = self.config.broker
        return MqttLink(
            self.device_id, endpoint, Credentials(broker.username, broker.password),
            clean_session=False,
            will=Will(self._status_topic, self._presence("offline", utc_now())),
            subscriptions=[(self._acks_topic, 1), (self._commands_topic, 1), (self._content_topic, 1),
                           *((topic, 0) for topic in self._listen)],
            on_connected=self._connected, on_disconnected=self._disconnected, backoff=self._backoff,
            keepalive=self.tuning.keepalive_s, reply_timeout_s=self.tuning.reply_timeout_s,
            refusal_backoff=self._refusal_backoff, on_refused=self._refused)

    def _connected(self) -> None:
        assert self._link is not None
        self._connected_at = utc_now()
        self._link.publish(self._status_topic, self._presence("online", self._connected_at), retain=True)
        self._reset_needed = True
        if self._refusal_logged is not None:
            log.warning("%s: the broker accepts this device again", self.device_id)
            self._refusal_logged = None

    def _disconnected(self, reason: str) -> None:
        self._disconnects += 1
        log.info("%s: disconnected (%s); will resend everything unacknowledged", self.device_id, reason)
        self._reset_needed = True

    def _refused(self, reason: str, retry_in_s: float) -> None:
        """Only an operator can mend this, so say it where they look, once per reason rather than per retry."""
        if reason == self._refusal_logged:
            return
        self._refusal_logged = reason
        assert self._link is not None
        log.error("%s: the broker at %s refused this device (%s): check the password (and username) in this "
                  "device's configuration file against those `museum device enroll` wrote for it; "
                  "next attempt in %.0f s", self.device_id, self._link.endpoint, reason, retry_in_s)

    # --- the worker ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        link = self._link
        assert link is not None
        next_heartbeat = time.monotonic() + 5.0
        next_expire = time.monotonic()
        failures_seen = 0
        try:
            while not self._stopping.is_set():
                timeout = 0.5 if not self._in_flight else 0.1
                if self._gather_until is not None and link.connected:  # wake when gathered events are due
                    timeout = min(timeout, max(0.0, self._gather_until - time.monotonic()))
                for message in link.poll(timeout):
                    self._handle(message)
                now = time.monotonic()
                if link.connected:
                    failures_seen = 0
                    if self._reset_needed:
                        self._go_back()
                    self._check_ack_timeout(now)
                    self._send_available()
                    self._send_latest(link)
                elif link.backoff.failures >= failures_seen + self.tuning.rediscover_after_failures \
                        and self.config.broker.discover:
                    failures_seen = link.backoff.failures
                    link.set_endpoint(self._resolve_endpoint())
                # After sending: the hub works on the next message while the acknowledged rows are deleted here.
                # With nothing in flight the delete holds nothing up, and doing it at once keeps a kiosk's outbox
                # within its root page (see bus/outbox.py): one page written per delete, none allocated or freed.
                self.outbox.flush_acknowledged(older_than_s=ACK_FLUSH_S if self._in_flight else 0.0,
                                               at_least=ACK_FLUSH_EVENTS)
                if now >= next_heartbeat:
                    next_heartbeat = now + self.config.heartbeat_s
                    self._heartbeat()
                if now >= next_expire:
                    next_expire = now + self.tuning.expire_every_s
                    if dropped := self.outbox.expire():
                        log.warning("%s: dropped %d events older than the outbox age bound", self.device_id, dropped)
            if link.connected:
                link.publish(self._status_topic, self._presence("offline", utc_now()), retain=True)
                link.flush(2.0)
        except Exception:  # a bug here must not take the kiosk UI down silently; log it loudly
            log.exception("%s: device worker crashed", self.device_id)
            raise
        finally:
            link.close()

    def _go_back(self) -> None:
        self.outbox.flush_acknowledged()  # so that nothing already acknowledged is sent again
        if self._in_flight:
            self._resends += 1
        self._cursor = 0
        self._in_flight.clear()
        self._batch_of.clear()
        if len(self._seq_of) > SEQ_MAP_LIMIT:  # the outbox dropped events under its bounds: forget, look up by id
            self._seq_of.clear()
            self._twins.clear()
        self._reset_needed = False

    def _check_ack_timeout(self, now: float) -> None:
        if self._in_flight:
            oldest = self._in_flight[min(self._in_flight)]
            if now - oldest.sent_at > self.tuning.ack_timeout_s:
                log.info("%s: no acknowledgement for %.0f s; resending from the oldest unacknowledged event",
                         self.device_id, now - oldest.sent_at)
                self._go_back()

    def _send_available(self) -> None:
        link = self._link
        assert link is not None
        tuning = self.tuning
        limit = min(tuning.batch_max_events, MAX_BATCH_EVENTS)
        self._gather_until = None
        while len(self._in_flight) < tuning.window:
            rows = self.outbox.pending_after(self._cursor, limit=limit, max_bytes=tuning.batch_max_bytes)
            if self._gathering(rows, limit):
                # Idle, or gathering: an emit() must wake the worker, to be sent or to complete the gathering.
                self._idle = True
                rows = self.outbox.pending_after(self._cursor, limit=limit, max_bytes=tuning.batch_max_bytes)
                if self._gathering(rows, limit):
                    return
                self._idle = False
            payload = rows[0].payload if len(rows) == 1 else encode_batch([row.payload for row in rows])
            if self._in_flight and len(rows) < limit and len(payload) < tuning.batch_max_bytes // 2:
                # Only a full batch may join a message already in flight. A partial one waits for that message's
                # ack and gathers what is emitted meanwhile: a busy kiosk then sends fewer, fuller messages, the
                # per-message costs (a commit at the hub, an ack, a query here) stay small beside the events, and
                # a backlog still streams with the window full.
                if self._unsent_since is None:
                    self._unsent_since = time.monotonic()
                self._arrived_in_flight = True
                return
            if not link.publish(self._events_topic, payload, qos=1):
                return
            self._unsent_since = None
            self._arrived_in_flight = False
            self._batch_no += 1
            self._in_flight[self._batch_no] = _InFlight(time.monotonic(), len(rows))
            batch_no = self._batch_no
            ids = [row.event_id for row in rows]
            unique = set(ids)
            if len(unique) == len(ids) and self._seq_of.keys().isdisjoint(unique):
                # The common case, every event sent for the first time: recorded in bulk (a backlog sends
                # thousands a second, and these maps are touched for each of them).
                self._seq_of.update(zip(ids, [row.seq for row in rows], strict=True))
                self._batch_of.update(dict.fromkeys(ids, batch_no))
            else:
                for row in rows:
                    event_id = row.event_id
                    earlier = self._seq_of.get(event_id)
                    if earlier is not None and earlier != row.seq:
                        self._twin(event_id, earlier)
                    self._batch_of[event_id] = batch_no
                    self._seq_of[event_id] = row.seq
            self._cursor = rows[-1].seq
            self._messages_sent += 1
            self._events_sent += len(rows)

    def _gathering(self, rows: list[PendingEvent], limit: int) -> bool:
        """Whether to hold these rows back: there are none; or nothing is in flight and they are too few, too
        small and too recent for a message of their own (see `DeliveryTuning.gather_events`). Sets
        `_gather_until`, the moment the worker must look again, which `_run` turns into its poll timeout."""
        self._gather_until = None
        if not rows:
            self._unsent_since = None
            return True
        tuning = self.tuning
        if self._in_flight or self._arrived_in_flight or len(rows) >= min(tuning.gather_events, limit) \
                or sum(len(row.payload) for row in rows) >= tuning.batch_max_bytes // 2:
            return False
        now = time.monotonic()
        if self._unsent_since is None:
            self._unsent_since = now  # when the worker first saw them: no clock of another process involved
        if now - self._unsent_since >= tuning.gather_s:
            return False
        self._gather_until = self._unsent_since + tuning.gather_s
        return True

    def _twin(self, event_id: str, earlier_seq: int) -> None:
        """The same event was emitted twice and both copies are in flight: the hub's one acknowledgement of
        the id must settle both rows, and the earlier message must not wait for an ack that names the later."""
        self._twins.setdefault(event_id, []).append(earlier_seq)
        self._settle(self._batch_of.get(event_id))

    def _settle(self, batch: int | None, count: int = 1) -> None:
        """`count` more events of message `batch` are acknowledged; the message leaves the window with its last."""
        if batch is None:
            return
        entry = self._in_flight.get(batch)
        if entry is None:
            return
        entry.remaining -= count
        if entry.remaining <= 0:
            del self._in_flight[batch]

    def _handle(self, message: Received) -> None:
        try:
            if message.topic == self._acks_topic:
                ack = decode_ack(message.payload)
                done = list(ack.committed) + [rejection.event_id for rejection in ack.rejected]
                for rejection in ack.rejected:
                    log.error("%s: hub quarantined event %s: %s", self.device_id, rejection.event_id,
                              rejection.reason)
                seqs: list[int] = []
                unknown: list[str] = []
                if self._twins:
                    for event_id in done:
                        seq = self._seq_of.pop(event_id, None)
                        if seq is None:
                            unknown.append(event_id)  # sent by an earlier process: only its id finds it
                        else:
                            seqs.append(seq)
                            seqs += self._twins.pop(event_id, ())
                        self._settle(self._batch_of.pop(event_id, None))
                else:  # the same, in bulk: an ack of a draining backlog names a thousand events or more
                    popped = list(map(self._seq_of.pop, done, repeat(None)))
                    seqs = [seq for seq in popped if seq is not None]
                    if len(seqs) < len(popped):
                        unknown = [event_id for event_id, seq in zip(done, popped, strict=True) if seq is None]
                    for batch, count in Counter(map(self._batch_of.pop, done, repeat(None))).items():
                        self._settle(batch, count)
                self.outbox.acknowledge(seqs)
                self._events_acked += len(seqs) + (self.outbox.remove(unknown) if unknown else 0)
                if self._on_acked is not None:
                    self._call_back(self._on_acked, done)
            elif message.topic == self._commands_topic:
                self._run_command(decode_command(message.payload))
            elif message.topic == self._content_topic:
                self.content = decode_content(message.payload)
                if self._on_content is not None:
                    self._call_back(self._on_content, self.content)
            elif self._on_message is not None:
                self._call_back(self._on_message, message)
        except ContractError as error:
            self._invalid += 1
            log.warning("%s: ignoring invalid message on %s: %s", self.device_id, message.topic, error)

    def _call_back(self, callback: Callable[[Any], None], argument: Any) -> None:
        try:
            callback(argument)
        except Exception:  # the application's bug must not stop delivery of everyone's events
            log.exception("%s: callback %r failed", self.device_id, callback)

    def _run_command(self, command: Command) -> None:
        if command.name == "ping":
            ok, detail = True, "pong"
        elif command.name == "heartbeat":
            self._heartbeat()
            ok, detail = True, "heartbeat sent"
        elif self._on_command is not None:
            try:
                ok, detail = self._on_command(command)
            except Exception as error:  # the handler's failure is the command's result, not the device's end
                log.exception("%s: command %s failed", self.device_id, command.name)
                ok, detail = False, f"{type(error).__name__}: {error}"[:500]
        else:
            ok, detail = False, f"this device does not handle {command.name!r}"
        self.record(CommandResult, command_id=command.command_id, command=command.name, ok=ok, detail=detail[:500])

    def _heartbeat(self) -> None:
        outbox = self.outbox.stats()
        if self.config.kind not in ("kiosk", "gateway", "qr_reader"):
            return
        self.record(DeviceStatus, kind=self.config.kind, software_version=self.software_version,
                    uptime_s=round(time.monotonic() - self._started_at, 3), outbox_pending=outbox.pending,
                    outbox_dropped=outbox.dropped_total)
