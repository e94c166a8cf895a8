"""Visitor tags at the hub: each tagged event gets its tag's visit and is stored without the tag; the links go when
the tag is returned or grows old; only stations share sightings through the broker."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import HubThread, device_config, start_device, stored_ids
from support import wait_until

from broker.hub_store import HubStore
from broker.mosquitto import MosquittoProcess, reload_running
from broker.site import Site, acl_text, enroll_device, enrolled_devices, refresh_acl
from broker.tag_links import carries_tag
from bus.config import ClientConfig
from bus.device import DeviceClient
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol import topics
from protocol.canonical import event_record
from protocol.codec import decode_ack, encode_sightings, event_to_dict
from protocol.events import BeaconHealth, Event, ProximityEntered, ProximityLeft, TagReturned, VisitLinked
from protocol.ids import new_visit_id, utc_now, visit_id_for
from protocol.messages import Sightings

WAIT_S = 60.0
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
VISIT_A, VISIT_B, VISIT_C = (visit_id_for(new_visit_id()) for _ in range(3))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def linked(tag: str, visit: str, when: datetime, device: str = "reader-1") -> VisitLinked:
    return VisitLinked.create(site_id="demo", device_id=device, visit_id=visit, occurred_at=when,
                              channel="entrance_qr", tag_id=tag)


def entered(tag: str | None, when: datetime, device: str = "station-1") -> ProximityEntered:
    return ProximityEntered.create(site_id="demo", device_id=device, occurred_at=when, artwork_id="work-1",
                                   zone_id="room-1", tag_id=tag)


def left(tag: str | None, when: datetime, device: str = "station-1") -> ProximityLeft:
    return ProximityLeft.create(site_id="demo", device_id=device, occurred_at=when, artwork_id="work-1",
                                zone_id="room-1", dwell_s=12.5, tag_id=tag)


def returned(tag: str, when: datetime, device: str = "reader-1") -> TagReturned:
    return TagReturned.create(site_id="demo", device_id=device, occurred_at=when, tag_id=tag)


def commit(store: HubStore, *events: Event) -> int:
    """One round as the hub makes it: the tagged events apart, in order."""
    records = [event_record(event) for event in events]
    return store.commit_round([r for r in records if not carries_tag(r)], [], [], T0,
                              [r for r in records if carries_tag(r)]).inserted


def row(store: HubStore, event: Event) -> dict[str, object] | None:
    cursor = store.db.execute("SELECT * FROM events WHERE event_id = ?", (event.event_id,))
    found = cursor.fetchone()
    return None if found is None else dict(zip([column[0] for column in cursor.description], found, strict=True))


def column_of(store: HubStore, event: Event, column: str) -> object:
    stored = row(store, event)
    assert stored is not None, event
    return stored[column]


def visit_of(store: HubStore, event: Event) -> object:
    return column_of(store, event, "visit_id")


def links(store: HubStore) -> dict[str, tuple[str, str]]:
    return {tag: (visit, since) for tag, visit, since in store.db.execute("SELECT * FROM tag_links")}


@pytest.fixture
def store(tmp_path: Path):
    hub_store = HubStore(tmp_path / "hub.sqlite")
    yield hub_store
    hub_store.close()


# --- the store --------------------------------------------------------------------------------------------

def test_only_a_tag_present_marks_a_record_for_resolution() -> None:
    assert carries_tag(event_record(entered("t-00000000002a", T0)))
    assert carries_tag(event_record(returned("t-00000000002a", T0)))
    assert not carries_tag(event_record(entered(None, T0)))
    assert not carries_tag(event_record(replace(linked("t-1", VISIT_A, T0), tag_id=None)))
    health = BeaconHealth.create(site_id="demo", device_id="station-1", beacon_id="t-00000000002a")
    assert not carries_tag(event_record(health))


def test_a_linked_tag_gives_its_visit_and_no_event_keeps_the_tag(store: HubStore) -> None:
    link, inside, outside = linked("t-1", VISIT_A, at(0)), entered("t-1", at(5)), left("t-1", at(20))
    assert commit(store, link, inside, outside) == 3
    assert links(store) == {"t-1": (VISIT_A, "2026-11-25T10:00:00.000Z")}
    assert (visit_of(store, inside), visit_of(store, outside)) == (VISIT_A, VISIT_A)
    assert column_of(store, link, "fields") == '{"channel":"entrance_qr","artwork_id":null,"tag_id":null}'
    assert column_of(store, outside, "fields") == ('{"artwork_id":"work-1","zone_id":"room-1","dwell_s":12.5,'
                                                   '"tag_id":null}')
    assert visit_of(store, link) == VISIT_A


def test_in_a_round_the_order_received_decides(store: HubStore) -> None:
    before_link, link, after_link = entered("t-1", at(1)), linked("t-1", VISIT_A, at(0)), entered("t-1", at(2))
    commit(store, before_link, link, after_link)
    assert (visit_of(store, before_link), visit_of(store, after_link)) == (None, VISIT_A)


def test_an_event_older_than_the_lending_and_an_unlinked_tag_get_no_visit(store: HubStore) -> None:
    commit(store, linked("t-1", VISIT_A, at(10)))
    earlier, stranger, untagged = entered("t-1", at(9)), entered("t-2", at(11)), entered(None, at(12))
    commit(store, earlier, stranger, untagged)
    assert [visit_of(store, e) for e in (earlier, stranger, untagged)] == [None, None, None]
    assert column_of(store, untagged, "fields") == column_of(store, stranger, "fields")


def test_a_return_ends_the_link_and_a_new_lending_replaces_it(store: HubStore) -> None:
    first = [linked("t-1", VISIT_A, at(0)), entered("t-1", at(1)), returned("t-1", at(2))]
    gap = entered("t-1", at(3))
    second = [linked("t-1", VISIT_B, at(4)), left("t-1", at(5))]
    third = [linked("t-1", VISIT_C, at(6)), entered("t-1", at(7))]  # lent again without a return: replaces
    commit(store, *first)
    assert links(store) == {}
    commit(store, gap, *second, *third)
    assert [visit_of(store, e) for e in (*first, gap, *second, *third)] == [
        VISIT_A, VISIT_A, VISIT_A, None, VISIT_B, VISIT_B, VISIT_C, VISIT_C]
    assert links(store) == {"t-1": (VISIT_C, "2026-11-25T10:00:06.000Z")}


def test_a_return_of_an_unlinked_tag_or_from_before_the_lending_changes_nothing(store: HubStore) -> None:
    commit(store, linked("t-1", VISIT_B, at(10)))
    stray, late = returned("t-2", at(11)), returned("t-1", at(9))  # the second: the return of an earlier lending
    commit(store, stray, late)
    assert (visit_of(store, stray), visit_of(store, late)) == (None, None)
    assert set(links(store)) == {"t-1"}


def test_a_late_copy_of_an_older_lending_does_not_replace_a_newer_one(store: HubStore) -> None:
    newer, older = linked("t-1", VISIT_B, at(10)), linked("t-1", VISIT_A, at(0))
    commit(store, newer)
    commit(store, older)
    assert links(store) == {"t-1": (VISIT_B, "2026-11-25T10:00:10.000Z")}
    assert visit_of(store, older) == VISIT_A  # the event itself is stored as it is, without its tag


def test_a_resent_lending_after_the_return_does_not_bring_the_link_back(store: HubStore) -> None:
    link = linked("t-1", VISIT_A, at(0))
    commit(store, link)
    commit(store, returned("t-1", at(5)))
    assert commit(store, link) == 0  # the ack was lost and the device sent it again
    assert links(store) == {}


def test_another_devices_copy_of_a_tagged_event_is_quarantined_without_its_tag(store: HubStore) -> None:
    mine = entered("t-00000000002a", at(1))
    copy = replace(mine, device_id="station-2")
    commit(store, linked("t-00000000002a", VISIT_A, at(0)), mine)
    records = [event_record(copy)]
    result = store.commit_round([], [], [], T0, records)
    assert (result.inserted, [r.device_id for r in result.conflicts]) == (0, ["station-2"])
    (quarantined,) = store.quarantine_rows()
    assert quarantined["code"] == "event_id_conflict" and b"t-00000000002a" not in quarantined["raw"]


def test_old_links_are_purged(store: HubStore) -> None:
    commit(store, linked("t-old", VISIT_A, at(0)), linked("t-new", VISIT_B, at(3600)))
    assert store.purge_tag_links(at(13 * 3600 - 1), max_hours=12) == 1
    assert set(links(store)) == {"t-new"}
    assert store.purge_tag_links(at(13 * 3600 + 1), max_hours=12) == 1
    assert store.count_links() == 0


def test_a_failed_commit_leaves_neither_the_link_nor_the_event(store: HubStore) -> None:
    commit(store, *(entered(None, at(n)) for n in range(50)))
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    link = linked("t-1", VISIT_A, at(100))
    bulk = [entered(None, at(101)) for _ in range(500)]
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        commit(store, *bulk, link)
    assert links(store) == {} and row(store, link) is None
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert commit(store, *bulk, link) == 501
    assert set(links(store)) == {"t-1"}


# --- the hub, through a real broker --------------------------------------------------------------------------

class RawDevice:
    """A device sending hand-written JSON with its own credentials: the hub's strict path."""

    def __init__(self, config: ClientConfig) -> None:
        broker = config.broker
        self.config = config
        self.link = MqttLink(config.client_id, Endpoint(broker.host, broker.port),
                             Credentials(broker.username, broker.password),
                             subscriptions=[(topics.acks_topic(config.site_id, config.client_id), 1)])
        self.received: list[Received] = []
        assert self.link.wait_connected(WAIT_S)

    def send(self, event: Event) -> None:
        # Spaces and sorted keys: valid JSON the canonical scanner does not recognise.
        payload = json.dumps(event_to_dict(event), sort_keys=True, indent=1).encode()
        assert self.link.publish(topics.events_topic(self.config.site_id, self.config.client_id), payload)

    def committed(self, event_id: str) -> bool:
        self.received.extend(self.link.poll(0.05))
        return any(event_id in decode_ack(message.payload).committed for message in self.received)


def scan_for(db_path: Path, needles: list[str]) -> dict[str, list[str]]:
    """Where each needle appears in the database: every table, every column, every row, as text."""
    found: dict[str, list[str]] = {needle: [] for needle in needles}
    with sqlite3.connect(db_path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in [*tables, "sqlite_master"]:
            for values in db.execute(f'SELECT * FROM "{table}"'):
                for value in values:
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    for needle in needles:
                        if needle in text:
                            found[needle].append(f"{table}: {text[:120]}")
    return {needle: where for needle, where in found.items() if where}


def stored_visits(site: Site) -> dict[str, str | None]:
    with sqlite3.connect(site.hub_database) as db:
        return dict(db.execute("SELECT event_id, visit_id FROM events"))


def test_the_hub_resolves_tags_and_keeps_none(make_site, make_broker) -> None:
    site = make_site(site_id="demo")
    make_broker(site)
    tag_1, tag_2, tag_3 = "t-00000000002a", "t-00000000002b", "t-0001002a"
    with HubThread(site):
        reader = start_device(site, "reader-1", kind="qr_reader")
        station = start_device(site, "station-1", kind="gateway")
        other_station = RawDevice(device_config(site, "station-2", "gateway"))
        try:
            def send(device: DeviceClient, *events: Event) -> None:
                # Each step stored before the next: events of two devices reach the hub in no promised order.
                device.emit_many(list(events))
                ids = {event.event_id for event in events}
                assert wait_until(lambda: ids <= stored_ids(site), WAIT_S)

            lend_1 = linked(tag_1, VISIT_A, utc_now())
            send(reader, lend_1, linked(tag_3, VISIT_C, utc_now()))
            assert scan_for(site.hub_database, [tag_1]), "the scan finds a tag where there is one"
            first = [entered(tag_1, utc_now(), "station-1"), left(tag_1, utc_now(), "station-1")]
            unlinked = [entered(tag_2, utc_now(), "station-1"), left(tag_2, utc_now(), "station-1")]
            send(station, *first, *unlinked)
            strict = entered(tag_3, utc_now(), "station-2")
            other_station.send(strict)
            assert wait_until(lambda: other_station.committed(strict.event_id), WAIT_S)
            return_1 = returned(tag_1, utc_now())
            send(reader, return_1)
            between = entered(tag_1, utc_now(), "station-1")
            send(station, between)
            send(reader, linked(tag_1, VISIT_B, utc_now()))
            second = [entered(tag_1, utc_now(), "station-1"), left(tag_1, utc_now(), "station-1")]
            send(station, *second)
            returns = [returned(tag_1, utc_now()), returned(tag_3, utc_now()), returned(tag_2, utc_now())]
            send(reader, *returns)
            # Acknowledged as committed: the devices forget every event.
            assert reader.wait_drained(WAIT_S) and station.wait_drained(WAIT_S)
        finally:
            reader.stop()
            station.stop()
            other_station.link.close()

    visits = stored_visits(site)
    assert [visits[e.event_id] for e in first] == [VISIT_A, VISIT_A]
    assert [visits[e.event_id] for e in second] == [VISIT_B, VISIT_B]
    assert [visits[e.event_id] for e in (*unlinked, between)] == [None, None, None]
    assert visits[strict.event_id] == VISIT_C
    assert [visits[e.event_id] for e in (return_1, *returns)] == [VISIT_A, VISIT_B, VISIT_C, None]
    assert visits[lend_1.event_id] == VISIT_A
    assert scan_for(site.hub_database, [tag_1, tag_2, tag_3]) == {}
    # Nor in the file's bytes: the deleted links were overwritten (secure_delete), once the WAL is folded in.
    with sqlite3.connect(site.hub_database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files = [site.hub_database, site.hub_database.with_name(site.hub_database.name + "-wal")]
    content = b"".join(path.read_bytes() for path in files if path.exists())
    assert not [tag for tag in (tag_1, tag_2, tag_3) if tag.encode() in content]


# --- sightings: stations only -------------------------------------------------------------------------------

def sightings_of(device_id: str, n: int) -> bytes:
    return encode_sightings(Sightings(device_id, "room-1", utc_now(), (("t-00000000002a", 1.0 + n),)))


def test_stations_share_sightings_and_no_other_device_may(site: Site, broker: MosquittoProcess) -> None:
    heard: list[Received] = []
    every_station = topics.all_devices(site.site_id, "sightings")
    station_a = DeviceClient(device_config(site, "station-a", "gateway"))
    station_b = DeviceClient(device_config(site, "station-b", "gateway"), listen=[every_station],
                             on_message=heard.append)
    kiosk_config = device_config(site, "kiosk-01", "kiosk")
    kiosk = MqttLink("kiosk-01", Endpoint("127.0.0.1", site.plain_loopback_port or 0),
                     Credentials("kiosk-01", kiosk_config.broker.password),
                     subscriptions=[(every_station, 1), (topics.acks_topic(site.site_id, "kiosk-01"), 1)])
    hub = ClientConfig.load(site.hub_config)
    hub_link = MqttLink("hub", Endpoint("127.0.0.1", site.plain_loopback_port or 0),
                        Credentials("hub", hub.broker.password))
    kiosk_heard: list[Received] = []
    station_a.start()
    station_b.start()
    try:
        assert kiosk.wait_connected(WAIT_S) and hub_link.wait_connected(WAIT_S)

        def b_hears(payload: bytes) -> bool:
            return any(message.payload == payload for message in heard)

        def deliver(publish, payload: bytes) -> bool:
            """Publish until station B has it (QoS 0: a copy sent before B's subscription was live is lost). The
            pause only paces the copies; no verdict depends on it."""
            for _ in range(int(WAIT_S / 0.5)):
                publish(payload)
                if wait_until(lambda: b_hears(payload), 0.5):
                    return True
            return False

        own_a = topics.sightings_topic(site.site_id, "station-a")
        assert deliver(lambda p: station_a.publish_latest(own_a, p), sightings_of("station-a", 0))
        # A kiosk publishing sightings, as itself or as a station: QoS 1, so once the broker has answered, it
        # has routed or dropped the message, before the next one from station A.
        forged = [(topics.sightings_topic(site.site_id, "kiosk-01"), sightings_of("kiosk-01", 1)),
                  (own_a, sightings_of("station-a", 2))]
        for topic, payload in forged:
            assert kiosk.publish(topic, payload, qos=1)
        assert kiosk.flush(WAIT_S)
        # Nor may one station speak for another.
        station_b.publish_latest(own_a, sightings_of("station-b", 3))
        after = sightings_of("station-a", 4)
        assert deliver(lambda p: station_a.publish_latest(own_a, p), after)
        assert {message.topic for message in heard} == {own_a}
        assert not any(b_hears(payload) for _, payload in forged) and not b_hears(sightings_of("station-b", 3))
        # The kiosk reads nothing of the stations: by the time a message the hub sends it after station A's last
        # one arrives, any sightings for it would have arrived first.
        acks = topics.acks_topic(site.site_id, "kiosk-01")
        assert hub_link.publish(acks, b"sync", qos=1)
        assert wait_until(lambda: kiosk_heard.extend(kiosk.poll(0.05)) or
                          any(m.topic == acks for m in kiosk_heard), WAIT_S)
        assert {message.topic for message in kiosk_heard} == {acks}
    finally:
        station_a.stop()
        station_b.stop()
        kiosk.close()
        hub_link.close()


def test_a_site_made_before_sightings_gets_the_rules_when_its_acl_is_refreshed(site: Site,
                                                                               broker: MosquittoProcess) -> None:
    enroll_device(site, "station-a", "gateway")
    enroll_device(site, "station-b", "gateway")
    enroll_device(site, "kiosk-01", "kiosk")
    older = "".join(line for line in acl_text(site.site_id, enrolled_devices(site)).splitlines(keepends=True)
                    if "sightings" not in line)
    site.acl_file.write_text(older, encoding="utf-8")
    assert reload_running(site)

    assert refresh_acl(site)  # what `museum broker run` does at start, and `museum device command` on its way
    text = site.acl_file.read_text(encoding="utf-8")
    assert text == acl_text(site.site_id, enrolled_devices(site)) and text.count("sightings") == 4
    assert not refresh_acl(site)
    heard: list[Received] = []
    station_a = DeviceClient(ClientConfig.load(site.device_config("station-a")).with_broker(discover=False))
    station_b = DeviceClient(ClientConfig.load(site.device_config("station-b")).with_broker(discover=False),
                             listen=[topics.all_devices(site.site_id, "sightings")], on_message=heard.append)
    station_a.start()
    station_b.start()
    try:
        payload = sightings_of("station-a", 0)
        own_a = topics.sightings_topic(site.site_id, "station-a")
        for _ in range(int(WAIT_S / 0.5)):  # the copies are paced, as above; the reload took effect when one passes
            station_a.publish_latest(own_a, payload)
            if wait_until(lambda: any(message.payload == payload for message in heard), 0.5):
                break
        assert any(message.payload == payload for message in heard)
    finally:
        station_a.stop()
        station_b.stop()
