"""Hostile input against a running hub, end to end: a real device's credentials, a real Mosquitto, the hub's
real database.

Each case sends a valid event, one bad input, then another valid event, all from an enrolled device on its own
topics. The hub must store both valid events, quarantine the bad input with its code, a bounded raw copy and
the reason, tell the device which event it refused when it could read the event's id, and keep running: the
parametrised cases all go to ONE hub process (`museum hub run`), which must survive every one of them.

Then: a resend is stored once and acknowledged each time; `museum hub stats` reports what the database holds;
and what the hub sends back (acks) and records again (replayed retained status) stays within bounds whatever a
device sends.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, HubProcess, HubThread, device_config, devices, hub_db, quarantine, stored_ids
from support import free_ports, wait_until

from broker.hub import Hub, HubSettings
from broker.hub_store import QUARANTINE_RAW_BYTES
from broker.mosquitto import MosquittoProcess
from broker.site import MAX_PACKET_SIZE, Site, init_site
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol.codec import MAX_MESSAGE_BYTES, decode_ack, dumps_strict, encode_batch, encode_event, encode_presence
from protocol.codec import event_to_dict as wire_form
from protocol.errors import ContractError
from protocol.events import ArtworkViewed, Event, KioskSessionEnded, KioskSessionStarted
from protocol.ids import event_id_at, utc_now
from protocol.messages import Presence, Rejection
from protocol.topics import DeviceChannel, acks_topic, device_topic, events_topic, status_topic


class DeviceLink:
    """An enrolled device's own MQTT connection (its real credentials, plain loopback listener) that also reads
    the hub's acks on the device's acks topic."""

    def __init__(self, site: Site, config: ClientConfig) -> None:
        assert site.plain_loopback_port is not None
        self.site_id = site.site_id
        self.device_id = config.client_id
        self.events_topic = events_topic(site.site_id, self.device_id)
        self.acks_topic = acks_topic(site.site_id, self.device_id)
        self.link = MqttLink(self.device_id, Endpoint("127.0.0.1", site.plain_loopback_port),
                             Credentials(config.broker.username, config.broker.password),
                             subscriptions=[(self.acks_topic, 1)])
        self.committed: list[str] = []
        self.rejections: list[Rejection] = []
        self.unreadable: list[ContractError] = []  # acks this device's own codec refuses, as a device would

    def __enter__(self) -> DeviceLink:
        assert self.link.wait_connected(60), self.link.last_refusal or self.link.last_error
        return self

    def __exit__(self, *_: object) -> None:
        self.link.close()

    @property
    def rejected(self) -> set[str]:
        return {rejection.event_id for rejection in self.rejections}

    def event(self, cls: type[Event] = ArtworkViewed, **own: Any) -> Event:
        fields = own or {"artwork_id": "work-1", "source": "kiosk", "language": "fr"}
        return cls.create(site_id=self.site_id, device_id=self.device_id, **fields)

    def publish(self, payload: bytes, topic: str | None = None, *, retain: bool = False) -> None:
        assert self.link.publish(topic or self.events_topic, payload, qos=1, retain=retain)
        assert self.link.flush(60), "the broker did not PUBACK"

    def receive(self) -> None:
        for message in self.link.poll(0.05):
            assert message.topic == self.acks_topic, message.topic
            try:
                ack = decode_ack(message.payload)
            except ContractError as error:
                self.unreadable.append(error)
                continue
            self.committed.extend(ack.committed)
            self.rejections.extend(ack.rejected)

    def wait_for(self, committed: Iterable[str], rejected: Iterable[str] = (), timeout: float = 60.0) -> bool:
        wanted, refused = set(committed), set(rejected)

        def arrived() -> bool:
            self.receive()
            return wanted <= set(self.committed) and refused <= self.rejected

        return wait_until(arrived, timeout, interval=0.0)

    def wait_acked_times(self, event_id: str, times: int, timeout: float = 60.0) -> bool:
        return wait_until(lambda: self.receive() or self.committed.count(event_id) == times, timeout, interval=0.0)

    def send_until_acked(self, event: Event, timeout: float = 60.0) -> None:
        """Publish like a device does: again and again until the hub acknowledges. The first event of a test
        also waits for the hub to start and subscribe (before that, the broker has no session to queue for).
        How many copies that takes depends on the machine's speed, and each copy that arrives is acknowledged:
        never count the acks of an event sent this way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish(encode_event(event))
            if self.wait_for({event.event_id}, timeout=1.0):
                return
        raise AssertionError(f"{event.event_id} never acknowledged by the hub")


# --- the hostile inputs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    payload: bytes
    rejected_id: str | None = None  # the event the hub can name back to the sender
    raw: bytes | None = None  # what the quarantine must hold, when it is not the whole payload
    good_ids: frozenset[str] = frozenset()  # valid events travelling in the same message


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    build: Callable[[DeviceLink], Sent]
    channel: DeviceChannel = "events"
    retained: bool = False

    @property
    def device_id(self) -> str:
        return f"q-{self.name}"


def wire(link: DeviceLink, **changes: Any) -> dict[str, Any]:
    """A valid event of this device in its wire form, with some fields changed."""
    return {**wire_form(link.event()), **changes}


def refused_by_id(data: dict[str, Any]) -> Sent:
    return Sent(dumps_strict(data), rejected_id=data["event_id"])


def retimed(link: DeviceLink, *, strict: bool = False, **changes: Any) -> Sent:
    """A valid event of this device claiming another time; `strict` writes it in a form the canonical scanner
    leaves to the codec (a space after the opening brace)."""
    event = replace(link.event(), **changes)
    canonical = encode_event(event)
    return Sent(b"{ " + canonical[1:] if strict else canonical, rejected_id=event.event_id, raw=canonical)


FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def with_nan(link: DeviceLink) -> Sent:
    ended = link.event(KioskSessionEnded, session_id=str(uuid.uuid4()), duration_s=12.5, reason="visitor")
    return Sent(json.dumps({**wire_form(ended), "duration_s": math.nan}).encode())


def other_device(link: DeviceLink) -> Sent:
    forged = ArtworkViewed.create(site_id=link.site_id, device_id="kiosk-elsewhere", artwork_id="work-1",
                                  source="kiosk", language="fr")
    return Sent(encode_event(forged), rejected_id=forged.event_id)


def other_site(link: DeviceLink) -> Sent:
    foreign = ArtworkViewed.create(site_id="another-site", device_id=link.device_id, artwork_id="work-1",
                                   source="kiosk", language="fr")
    return Sent(encode_event(foreign), rejected_id=foreign.event_id)


def batch_with_one_bad(link: DeviceLink) -> Sent:
    good = [link.event(), link.event()]
    bad = wire(link, source="telepathy")
    payload = encode_batch([encode_event(good[0]), dumps_strict(bad), encode_event(good[1])])
    return Sent(payload, rejected_id=bad["event_id"], raw=dumps_strict(bad),
                good_ids=frozenset(event.event_id for event in good))


def duplicate_key(link: DeviceLink) -> Sent:
    return Sent(encode_event(link.event())[:-1] + b',"language":"en"}')


def presence_of_another(link: DeviceLink) -> Sent:
    return Sent(encode_presence(Presence("kiosk-elsewhere", "online", "kiosk", "1.0.0", utc_now())))


CASES = [
    Hostile("garbage", "invalid_json", lambda link: Sent(b"\x00\x13 not json <<>> {]\x7f")),
    # Exactly the message limit, which is also the broker's message_size_limit: delivered, and refused.
    Hostile("at-the-limit", "invalid_json", lambda link: Sent(b"{" + b"?" * (MAX_MESSAGE_BYTES - 1))),
    Hostile("occurred-2099", "time_out_of_range", lambda link: retimed(link, occurred_at=FAR_FUTURE)),
    Hostile("occurred-2099-strict", "time_out_of_range",
            lambda link: retimed(link, strict=True, occurred_at=FAR_FUTURE)),
    Hostile("id-far-future", "time_out_of_range", lambda link: retimed(link, event_id=event_id_at(FAR_FUTURE))),
    Hostile("id-1970", "time_out_of_range",
            lambda link: retimed(link, event_id=event_id_at(datetime(1970, 1, 2, tzinfo=UTC)))),
    Hostile("id-1970-strict", "time_out_of_range",
            lambda link: retimed(link, strict=True, event_id=event_id_at(datetime(1970, 1, 2, tzinfo=UTC)))),
    Hostile("occurred-36-days-ago", "time_out_of_range",
            lambda link: retimed(link, occurred_at=utc_now() - timedelta(days=36))),
    Hostile("invalid-utf8", "invalid_utf8",
            lambda link: Sent(encode_event(link.event()).replace(b'"work-1"', b'"work-\xff\xfe1"'))),
    Hostile("deep-nesting", "nesting_too_deep", lambda link: Sent(b"[" * 100_000)),
    Hostile("nan", "non_finite_number", with_nan),
    Hostile("unknown-type", "unknown_type", lambda link: refused_by_id(wire(link, type="artwork.stolen"))),
    Hostile("future-schema", "unsupported_schema_version", lambda link: refused_by_id(wire(link, schema_version=99))),
    Hostile("unknown-field", "unknown_field",
            lambda link: refused_by_id(wire(link, visitor_email="someone@example.org"))),
    Hostile("other-device", "device_mismatch", other_device),
    Hostile("other-site", "site_mismatch", other_site),
    Hostile("batch", "invalid_field", batch_with_one_bad),
    Hostile("duplicate-key", "duplicate_key", duplicate_key),
    Hostile("not-an-object", "not_an_object", lambda link: Sent(b'"just a string"')),
    Hostile("empty", "invalid_json", lambda link: Sent(b"")),
    Hostile("status-garbage", "invalid_json", lambda link: Sent(b"{online!"), channel="status", retained=True),
    Hostile("status-of-another", "device_mismatch", presence_of_another, channel="status", retained=True),
]


@dataclass
class HostileSite:
    site: Site
    hub: HubProcess
    configs: dict[str, ClientConfig] = field(default_factory=dict)


@pytest.fixture(scope="module")
def hostile_site(sites_base: Path) -> Iterator[HostileSite]:
    """One site, its broker and ONE hub process for every case, every case's device enrolled beforehand."""
    parent = Path(tempfile.mkdtemp(dir=sites_base))
    os.chmod(parent, 0o711)
    tls_port, plain_port = free_ports(2)
    site = init_site(parent / "site", "test-site", tls_port=tls_port, bind="127.0.0.1",
                     plain_loopback_port=plain_port)
    configs = {case.device_id: device_config(site, case.device_id) for case in CASES}
    broker = MosquittoProcess.start(site)
    try:
        broker.wait_ready(60)
        hub = HubProcess(site).start()
        try:
            yield HostileSite(site, hub, configs)
        finally:
            hub.stop()
    finally:
        broker.stop(timeout=5)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_input_is_quarantined_and_the_hub_carries_on(hostile_site: HostileSite, case: Hostile) -> None:
    site, hub = hostile_site.site, hostile_site.hub
    topic = device_topic(site.site_id, case.device_id, case.channel)
    with DeviceLink(site, hostile_site.configs[case.device_id]) as link:
        before = link.event()
        link.send_until_acked(before)
        sent = case.build(link)
        link.publish(sent.payload, topic, retain=case.retained)
        after = link.event()
        link.publish(encode_event(after))
        valid = {before.event_id, after.event_id} | sent.good_ids
        expected_rejected = {sent.rejected_id} if sent.rejected_id else set()
        # The hub handles one device's messages in order and acks after each commit, so once `after` is
        # acknowledged, whatever the hub did with the bad input is committed and acknowledged too.
        assert link.wait_for(valid, expected_rejected), (link.committed, link.rejections, link.unreadable)

    assert hub.process is not None and hub.process.poll() is None, "the hub process died"
    assert stored_ids(site, case.device_id) == valid
    if sent.rejected_id is not None:
        assert sent.rejected_id not in stored_ids(site)

    rows = [row for row in quarantine(site) if row["topic"] == topic]
    assert len(rows) == 1, rows
    (row,) = rows
    raw = sent.payload if sent.raw is None else sent.raw
    assert row["code"] == case.code, row["reason"]
    assert row["raw"] == raw[:QUARANTINE_RAW_BYTES] and row["raw_size"] == len(raw)
    assert len(row["raw"]) == min(len(raw), 64 * 1024)
    assert isinstance(row["reason"], str) and len(row["reason"]) > 10
    assert (row["device_id"], row["event_id"]) == (case.device_id, sent.rejected_id)
    assert row["received_at"]

    assert link.rejected == expected_rejected
    for rejection in link.rejections:
        assert rejection.reason.startswith(f"{case.code}: ")
    # Nobody else's registry row comes out of a forged event or presence.
    assert "kiosk-elsewhere" not in devices(site)


# --- resends and stats ----------------------------------------------------------------------------------------

def test_a_resent_event_is_stored_once_and_acknowledged_each_time(make_site, make_broker) -> None:
    site = make_site()
    config = device_config(site, "kiosk-resend")
    make_broker(site)
    with HubThread(site) as running, DeviceLink(site, config) as link:
        first = link.event()
        link.send_until_acked(first)
        event = link.event()
        payload = encode_event(event)
        for times in (1, 2):
            link.publish(payload)
            assert link.wait_acked_times(event.event_id, times), f"ack number {times} never came"
        assert running.hub.stored_total == 2, "a resend counted as a new event"
        assert running.thread.is_alive()
    assert link.rejections == []
    assert stored_ids(site, "kiosk-resend") == {first.event_id, event.event_id}
    with sqlite3.connect(hub_db(site)) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def run_museum(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "museum", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hub_stats_reports_what_the_database_holds(make_site, make_broker) -> None:
    site = make_site()
    config = device_config(site, "kiosk-stats")
    make_broker(site)
    stats_file = site.hub_stats_file
    with HubThread(site) as running, DeviceLink(site, config) as link:
        first = link.event()
        link.send_until_acked(first)
        sessions = [link.event(KioskSessionStarted, session_id=str(uuid.uuid4()), language="fr") for _ in range(2)]
        views = [link.event() for _ in range(2)]
        for event in [*sessions, *views]:
            link.publish(encode_event(event))
        link.publish(b"garbage")
        link.publish(b"")
        unknown = wire(link, type="artwork.stolen")
        link.publish(dumps_strict(unknown))
        last = link.event()
        link.publish(encode_event(last))
        valid = {event.event_id for event in [first, *sessions, *views, last]}
        assert link.wait_for(valid, {unknown["event_id"]})

        def figures() -> dict[str, Any]:
            return json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.exists() else {}

        assert wait_until(lambda: figures().get("stored_total") == 6 and figures().get("quarantined_total") == 3,
                          60), figures()
        live = figures()
        assert live["site_id"] == site.site_id and live["connected"] is True
        assert {"updated_at", "events_per_s", "devices_online"} <= live.keys()
        assert running.thread.is_alive()

    with sqlite3.connect(hub_db(site)) as db:
        by_type = dict(db.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        by_code = dict(db.execute("SELECT code, COUNT(*) FROM quarantine GROUP BY code").fetchall())
    assert by_type == {"artwork.viewed": 4, "kiosk.session_started": 2}
    assert by_code == {"invalid_json": 2, "unknown_type": 1}

    reported = json.loads(run_museum("hub", "stats", "--site", str(site.root), "--json"))
    assert reported["events_by_type"] == by_type and reported["events_total"] == 6
    assert reported["quarantined_by_code"] == by_code and reported["quarantined_total"] == 3
    # The link never published presence: the device is known from its events but not online.
    assert reported["devices_known"] == 1 and reported["devices_online"] == []

    table = run_museum("hub", "stats", "--site", str(site.root))
    assert re.search(r"^Events stored: 6$", table, re.M), table
    assert re.search(r"^Quarantined: 3$", table, re.M), table
    for name, count in [*by_type.items(), *by_code.items()]:
        assert re.search(rf"^\s+{re.escape(name)}\s+{count}$", table, re.M), (name, table)
    assert re.search(r"^Devices online: 0 of 1 known$", table, re.M), table


# --- what the hub sends back must stay within the contract's limits --------------------------------------------

# A string holding both kinds of quote: its repr escapes every ', and the ack's JSON escapes each backslash again,
# so N bytes of input become about 3N bytes of rejection reason.
QUOTES = "'" * 450_000 + '"'

def wait_subscribed(hub: Hub, link: DeviceLink) -> str:
    """Return once the broker passes the device's messages on to `hub` (its subscriptions go in one SUBSCRIBE, so
    they are all live at once): the device publishes a probe, an empty status, until one reaches the hub. Returns
    the probe's topic: a copy may still be on its way, for the caller to leave out of its round."""
    probe = status_topic(link.site_id, link.device_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        link.publish(b"", probe)
        # 0.5 s only paces the copies; nothing else has been published yet, so what the hub polls is dropped.
        if wait_until(lambda: any(message.topic == probe for message in hub.link.poll(0.05)), 0.5):
            return probe
    raise AssertionError("the broker never passed the device's messages on to the hub")


def one_round(site: Site, link: DeviceLink, payloads: list[bytes]) -> Hub:
    """Deliver `payloads` through the broker to a hub and process them as ONE round, as `Hub.run` does with
    whatever one poll brings (collected first here, so that they surely make one round)."""
    hub = Hub(HubSettings(ClientConfig.load(site.hub_config), hub_db(site)))
    assert hub.link.wait_connected(60)
    probe = wait_subscribed(hub, link)
    for payload in payloads:
        link.publish(payload)
    delivered: list[Received] = []
    assert wait_until(lambda: delivered.extend(m for m in hub.link.poll(0.05) if m.topic != probe)
                      or len(delivered) >= len(payloads), 60)
    hub.process(delivered)
    # Every ack PUBACKed: the broker has read them all, and took none for an oversize packet (which it answers by
    # closing the connection, never with a PUBACK).
    assert hub.link.flush(60), "the broker did not PUBACK every ack: did it disconnect the hub?"
    return hub


@pytest.mark.parametrize("field_name", ["source", "occurred_at"])
def test_a_rejection_reason_is_bounded(make_site, make_broker, field_name: str) -> None:
    site = make_site()
    config = device_config(site, "kiosk-long")
    make_broker(site)
    with HubThread(site), DeviceLink(site, config) as link:
        link.send_until_acked(link.event())
        bad = wire(link, **{field_name: QUOTES})
        link.publish(dumps_strict(bad))
        assert link.wait_for((), {bad["event_id"]}), (link.rejections, link.unreadable)
    assert len(quarantine(site)[0]["reason"]) <= 2000
    assert link.unreadable == [], "the device's codec refuses the hub's ack"
    (rejection,) = link.rejections
    assert len(rejection.reason) <= 2000, f"a {len(rejection.reason)}-character reason"


def test_one_device_cannot_knock_the_hub_off_the_broker(make_site, make_broker) -> None:
    site = make_site()
    config = device_config(site, "kiosk-burst")
    make_broker(site)
    with DeviceLink(site, config) as link:
        hub = one_round(site, link, [dumps_strict(wire(link, source=QUOTES)) for _ in range(2)])
        try:
            # one_round returned once the broker PUBACKed every ack: it has read them all, so had it cut the hub
            # off for one, it would have done so (and logged it) by now.
            assert "oversize packet" not in site.log_file.read_text(encoding="utf-8")
            assert hub.link.connected and hub.link.connections == 1, "the broker disconnected the hub"
        finally:
            hub.link.close()
            hub.store.close()


def test_every_ack_of_a_round_is_small_enough_for_the_device_to_read(make_site, make_broker) -> None:
    site = make_site()
    config = device_config(site, "kiosk-many")
    make_broker(site)
    with DeviceLink(site, config) as link:
        long_name = "x" * 220
        items = [[dumps_strict(wire(link, **{long_name: 1})) for _ in range(1000)] for _ in range(2)]
        hub = one_round(site, link, [encode_batch(batch) for batch in items])
        try:
            refused = {json.loads(item)["event_id"] for batch in items for item in batch}
            assert link.wait_for((), refused), f"{len(link.rejected)} of {len(refused)} rejections arrived"
        finally:
            hub.link.close()
            hub.store.close()
    assert link.unreadable == [], f"the device's codec refused {len(link.unreadable)} acks: {link.unreadable[0]}"
    assert link.rejected == refused


def test_a_hub_restart_records_nothing_new_from_retained_status(make_site, make_broker) -> None:
    site = make_site()
    quiet = device_config(site, "kiosk-quiet")
    noisy = device_config(site, "kiosk-noisy")
    make_broker(site)
    with DeviceLink(site, quiet) as link:
        offline = Presence("kiosk-quiet", "offline", "kiosk", "1.0.0", utc_now())
        link.publish(encode_presence(offline), status_topic(site.site_id, "kiosk-quiet"), retain=True)
    with DeviceLink(site, noisy) as link:
        link.publish(b"{garbage", status_topic(site.site_id, "kiosk-noisy"), retain=True)
    with HubThread(site):
        assert wait_until(lambda: "kiosk-quiet" in devices(site) and len(quarantine(site)) == 1, 60)
    seen = devices(site)["kiosk-quiet"]["last_seen"]
    again = HubThread(site)
    processed: list[Received] = []
    process = again.hub.process

    def process_and_note(messages: list[Received], received_at: datetime | None = None) -> Any:
        batch = process(messages, received_at)
        processed.extend(messages)  # after the round's commit
        return batch

    again.hub.process = process_and_note  # type: ignore[method-assign]
    replayed = {status_topic(site.site_id, "kiosk-quiet"), status_topic(site.site_id, "kiosk-noisy")}
    with again:
        # A known point: both retained statuses have been replayed to the restarted hub and their round committed.
        assert wait_until(lambda: {m.topic for m in list(processed) if m.retained} >= replayed, 60), processed
    assert devices(site)["kiosk-quiet"]["last_seen"] == seen
    assert len(quarantine(site)) == 1


# --- what the broker refuses for the hub ----------------------------------------------------------------------

def test_the_broker_drops_a_message_over_the_contract_limit(make_site, make_broker) -> None:
    """Mosquitto's message_size_limit is the contract's MAX_MESSAGE_BYTES: a larger message never reaches the hub
    (nor its memory). Mosquitto 2.0 drops it silently but still PUBACKs it and keeps the sender connected, so the
    sender's next events go through; only a broken or hostile sender can make one."""
    site = make_site()
    config = device_config(site, "kiosk-oversize")
    make_broker(site)
    with HubThread(site) as running, DeviceLink(site, config) as link:
        link.send_until_acked(link.event())
        oversize = b"[" + b" " * MAX_MESSAGE_BYTES
        assert len(oversize) < MAX_PACKET_SIZE - 1024
        link.publish(oversize)  # PUBACKed
        after = link.event()
        link.publish(encode_event(after))
        assert link.wait_for({after.event_id})
        assert link.link.connected and link.link.connections == 1
        assert running.hub.quarantined_total == 0
    assert quarantine(site) == []


# --- an event id is its device's -------------------------------------------------------------------------------

def test_an_event_id_another_device_stored_is_refused_not_acked_as_committed(make_site, make_broker) -> None:
    site = make_site()
    first_config, second_config = device_config(site, "kiosk-first"), device_config(site, "kiosk-second")
    make_broker(site)
    with HubThread(site), DeviceLink(site, first_config) as first, DeviceLink(site, second_config) as second:
        # Warm-ups: the hub is subscribed once they are acknowledged. `original` is then sent once, so that its
        # acks can be counted (send_until_acked sends as many copies as the hub's start takes).
        first.send_until_acked(first.event())
        second.send_until_acked(second.event())
        original = first.event()
        first.publish(encode_event(original))
        assert first.wait_acked_times(original.event_id, 1)
        copy = replace(second.event(), event_id=original.event_id)
        second.publish(encode_event(copy))
        assert second.wait_for((), {original.event_id})
        first.publish(encode_event(original))  # the owner's resend is still committed
        assert first.wait_acked_times(original.event_id, 2)
    assert original.event_id not in second.committed
    (rejection,) = second.rejections
    assert rejection.reason.startswith("event_id_conflict: ")
    with sqlite3.connect(hub_db(site)) as db:
        assert db.execute("SELECT device_id FROM events WHERE event_id = ?", (original.event_id,)).fetchall() == [
            ("kiosk-first",)]
    (row,) = [row for row in quarantine(site) if row["code"] == "event_id_conflict"]
    assert (row["device_id"], row["event_id"]) == ("kiosk-second", original.event_id)
    assert row["raw"] == encode_event(copy)


def test_two_devices_using_one_event_id_in_the_same_round(make_site, make_broker) -> None:
    site = make_site()
    first_config, second_config = device_config(site, "kiosk-one"), device_config(site, "kiosk-two")
    make_broker(site)
    with DeviceLink(site, first_config) as first, DeviceLink(site, second_config) as second:
        hub = Hub(HubSettings(ClientConfig.load(site.hub_config), hub_db(site)))
        try:
            assert hub.link.wait_connected(60)
            probe = wait_subscribed(hub, first)
            mine = first.event()
            theirs = replace(second.event(), event_id=mine.event_id)
            first.publish(encode_event(mine))
            second.publish(encode_event(theirs))
            delivered: list[Received] = []
            assert wait_until(lambda: delivered.extend(m for m in hub.link.poll(0.05) if m.topic != probe)
                              or len(delivered) >= 2, 60)
            hub.process(delivered)  # one round, the first device's event first
            assert hub.link.flush(60)
            assert first.wait_for({mine.event_id})
            assert second.wait_for((), {mine.event_id})
        finally:
            hub.link.close()
            hub.store.close()
    assert second.committed == []
    assert stored_ids(site) == {mine.event_id} and stored_ids(site, "kiosk-one") == {mine.event_id}
