"""Storage wear (bench/writes.py measures the bytes; these check the behaviour that saves them stays right): what
the hub writes to its device registry per round (only what changed, `last_seen` at most once a minute per device),
how a device gathers events into messages at a low rate, and how small its outbox stores them."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime

from harness import HubThread, start_device, stored_ids
from support import wait_until

from broker.hub import _RegistryWrites
from broker.hub_store import DeviceSeen
from bus.device import DeliveryTuning
from bus.outbox import Outbox
from protocol.codec import encode_event
from protocol.events import ArtworkViewed

SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EVERY = _RegistryWrites.LAST_SEEN_EVERY_S


def committed(registry: _RegistryWrites, sightings: list[DeviceSeen], now: float) -> list[DeviceSeen]:
    needed = registry.needed(sightings, now)
    registry.written(needed, now)
    return needed


def test_an_unchanged_device_is_written_at_most_once_a_minute() -> None:
    registry = _RegistryWrites()
    assert committed(registry, [DeviceSeen("kiosk-1")], 0.0) == [DeviceSeen("kiosk-1")]
    assert committed(registry, [DeviceSeen("kiosk-1")], 1.0) == []
    assert committed(registry, [DeviceSeen("kiosk-1")], EVERY - 0.1) == []
    assert committed(registry, [DeviceSeen("kiosk-1")], EVERY) == [DeviceSeen("kiosk-1")]


def test_a_change_of_state_kind_or_version_is_written_at_once() -> None:
    registry = _RegistryWrites()
    online = DeviceSeen("kiosk-1", "kiosk", "1.0.0", "online", SINCE)
    committed(registry, [online], 0.0)
    assert committed(registry, [DeviceSeen("kiosk-1", "kiosk", "1.0.0")], 1.0) == []
    offline = DeviceSeen("kiosk-1", state="offline", state_since=SINCE.replace(minute=5))
    assert committed(registry, [offline], 2.0) == [offline]
    upgraded = DeviceSeen("kiosk-1", "kiosk", "1.1.0")
    assert committed(registry, [upgraded], 3.0) == [upgraded]
    assert committed(registry, [DeviceSeen("kiosk-2")], 3.0) == [DeviceSeen("kiosk-2")]


def test_a_sighting_whose_commit_failed_is_written_again() -> None:
    registry = _RegistryWrites()
    assert registry.needed([DeviceSeen("kiosk-1")], 0.0)  # the commit failed: `written` was not called
    assert registry.needed([DeviceSeen("kiosk-1")], 1.0) == [DeviceSeen("kiosk-1")]


def test_a_replayed_status_does_not_count_as_a_sign_of_life() -> None:
    registry = _RegistryWrites()
    replayed = DeviceSeen("kiosk-1", "kiosk", "1.0.0", "offline", SINCE, replayed=True)
    assert committed(registry, [replayed], 0.0) == [replayed]  # first learnt from the replay
    assert committed(registry, [replayed], 1.0) == []
    # The first live message writes last_seen, though the row was written a moment ago.
    assert committed(registry, [DeviceSeen("kiosk-1")], 2.0) == [DeviceSeen("kiosk-1")]


def _view(site_id: str, device_id: str, i: int, **extra: object) -> ArtworkViewed:
    return ArtworkViewed.create(site_id=site_id, device_id=device_id, artwork_id=f"work-{i % 26}", source="kiosk",
                                language="fr", **extra)


def test_with_nothing_in_flight_a_device_gathers_events_into_one_message(site, broker):
    # gather_s is so long that only the count can release the gathered events, whatever the machine's speed. The
    # device's first heartbeat (an event too) may come at any moment: at most one joins these.
    with HubThread(site):
        client = start_device(site, "kiosk-gather", DeliveryTuning(gather_events=4, gather_s=3600))
        try:
            assert wait_until(lambda: client.stats().connected, 30)
            views = [_view(site.site_id, "kiosk-gather", i) for i in range(4)]
            client.emit(views[0])
            # The known point: the worker has looked at the outbox since (it holds the event back, or, without
            # gathering, has sent it).
            assert wait_until(lambda: client.stats().messages_sent >= 1
                              or getattr(client, "_unsent_since", None) is not None, 30)
            client.emit(views[1])
            assert client.stats().messages_sent == 0, "two events (three with a heartbeat) wait for a fourth"
            client.emit_many(views[2:])
            assert client.wait_drained(30), client.stats()
            stats = client.stats()
            assert stats.messages_sent == 1 and stats.events_sent in (4, 5), stats
        finally:
            client.stop()
    assert {view.event_id for view in views} <= stored_ids(site, "kiosk-gather")


def test_gathering_one_event_sends_each_event_at_once(site, broker):
    with HubThread(site):
        client = start_device(site, "kiosk-alone", DeliveryTuning(gather_events=1, gather_s=3600))
        try:
            assert wait_until(lambda: client.stats().connected, 30)
            event = client.record(ArtworkViewed, artwork_id="work-1", source="kiosk", language="fr")
            assert wait_until(lambda: event.event_id in stored_ids(site, "kiosk-alone"), 30)
            assert client.stats().messages_sent == 1
        finally:
            client.stop()


def test_a_kiosks_pending_events_fit_in_the_outbox_root_page(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    # As many as a message gathers at a kiosk's pace (DeliveryTuning.gather_events), each with a visit token
    # (random: it does not compress); the worker deletes them as soon as their ack arrives.
    views = [_view("louvre-lens", "kiosk-hall-2", i, visit_id=secrets.token_urlsafe(16))
             for i in range(DeliveryTuning().gather_events)]
    for view in views:
        outbox.append([(view.event_id, encode_event(view))])
    assert outbox._db.execute("PRAGMA page_count").fetchone()[0] == pages, "no page allocated: one page per commit"
    rows = outbox.pending_after(0, limit=100, max_bytes=1 << 20)
    assert [(row.event_id, row.payload) for row in rows] == [(v.event_id, encode_event(v)) for v in views]
    assert outbox.remove([views[0].event_id]) == 1, "found by the id inside its payload"
    assert outbox.event_ids() == {view.event_id for view in views[1:]}
    outbox.close()


def test_an_outbox_written_by_the_previous_version_is_read_and_emptied(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    old = _view("site", "kiosk-old", 1)
    with sqlite3.connect(path) as db:  # a row as the previous version stored it: the JSON as is, the id beside
        db.execute("INSERT INTO outbox VALUES (1, ?, ?, 1700000000.5)", (old.event_id, encode_event(old)))
    db.close()
    outbox = Outbox(path)
    new = _view("site", "kiosk-old", 2)
    outbox.append([(new.event_id, encode_event(new)), ("not-in-the-payload", b'{"n":1}')])
    rows = outbox.pending_after(0, limit=10, max_bytes=1 << 20)
    assert [(row.seq, row.event_id, row.payload) for row in rows] == [
        (1, old.event_id, encode_event(old)), (2, new.event_id, encode_event(new)),
        (3, "not-in-the-payload", b'{"n":1}')]
    stored = dict(outbox._db.execute("SELECT seq, length(payload) FROM outbox").fetchall())
    assert stored[1] == len(encode_event(old)) and stored[2] < len(encode_event(new)) / 2, "the new row is compact"
    assert outbox.remove([old.event_id, new.event_id, "not-in-the-payload"]) == 3
    assert outbox.pending == 0
    outbox.close()
