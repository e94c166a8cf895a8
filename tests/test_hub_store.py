"""The hub's store on its own: idempotent group commits, quarantine, registry, retention, migrations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from broker.hub_store import MIGRATIONS, QUARANTINE_RAW_BYTES, DeviceSeen, HubStore, QuarantineEntry
from protocol.canonical import EventRecord, event_record
from protocol.events import ArtworkViewed, Event, OccupancyCounted
from protocol.ids import event_id_at, event_id_floor

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def viewed(days_ago: float = 0) -> ArtworkViewed:
    """An artwork view recorded `days_ago` days before NOW, as a device records it: created as it happened."""
    at = NOW - timedelta(days=days_ago)
    return ArtworkViewed(event_id=event_id_at(at), site_id="demo", device_id="kiosk-1", occurred_at=at,
                         artwork_id="work-1", source="kiosk", language="fr")


def records(*events: Event) -> list[EventRecord]:
    return [event_record(event) for event in events]


@pytest.fixture
def store(tmp_path):
    hub_store = HubStore(tmp_path / "hub.sqlite")
    yield hub_store
    hub_store.close()


def test_a_resent_event_is_stored_once(store):
    events = [viewed() for _ in range(10)]
    assert store.commit_group(records(*events), [], [], NOW) == 10
    extra = viewed()
    assert store.commit_group(records(*events[5:], extra), [], [], NOW) == 1
    assert store.event_ids() == {e.event_id for e in events} | {extra.event_id}


def test_own_fields_are_kept_as_json(store):
    event = OccupancyCounted.create(site_id="demo", device_id="gw-1", zone_id="room-1", count=12, window_s=60)
    store.commit_group(records(event), [], [], NOW)
    row = store.db["events"].get(event.event_id)
    assert row["type"] == "occupancy.counted" and row["visit_id"] is None
    assert row["fields"] == '{"zone_id":"room-1","count":12,"window_s":60}'


def test_quarantine_keeps_a_bounded_copy_and_the_reason(store):
    raw = b"x" * (QUARANTINE_RAW_BYTES + 10)
    store.commit_group([], [QuarantineEntry("museum/v1/demo/devices/k/events", raw, "too_large", "big")], [], NOW)
    (row,) = store.quarantine_rows()
    assert row["raw_size"] == len(raw) and len(row["raw"]) == QUARANTINE_RAW_BYTES
    assert (row["code"], row["reason"]) == ("too_large", "big")
    assert store.stats().quarantined_by_code == {"too_large": 1}


def test_registry_merges_what_each_message_tells(store):
    store.commit_group([], [], [DeviceSeen("kiosk-1", "kiosk", "1.0.0", "online", NOW)], NOW)
    store.commit_group([], [], [DeviceSeen("kiosk-1")], NOW + timedelta(seconds=5))
    (device,) = store.devices()
    assert (device["kind"], device["software_version"], device["state"]) == ("kiosk", "1.0.0", "online")
    assert device["last_seen"] == "2026-11-25T12:00:05.000Z"
    assert store.stats().devices_online == ["kiosk-1"]


def test_retention_deletes_only_what_is_past_its_time(store):
    old, recent = viewed(days_ago=91), viewed(days_ago=89)
    store.commit_group(records(old, recent), [], [], NOW)
    store.commit_group([], [QuarantineEntry("t", b"?", "invalid_json", "x")], [], NOW - timedelta(days=31))
    store.commit_group([], [QuarantineEntry("t", b"?", "invalid_json", "y")], [], NOW - timedelta(days=29))
    assert store.purge(NOW, events_days=90, quarantine_days=30) == (1, 1)
    assert store.event_ids() == {recent.event_id}
    assert [row["reason"] for row in store.quarantine_rows()] == ["y"]


def test_retention_waits_for_an_event_created_late_with_an_old_occurred_at(store):
    # Imported or back-dated: created now, claiming to be old. It goes when its creation ages too.
    backdated = ArtworkViewed.create(site_id="demo", device_id="kiosk-1", artwork_id="work-1", source="kiosk",
                                     language="fr", occurred_at=NOW - timedelta(days=200))
    store.commit_group(records(backdated), [], [], NOW)
    assert store.purge(NOW, events_days=90, quarantine_days=30) == (0, 0)
    later = datetime.now(UTC) + timedelta(days=92)
    assert store.purge(later, events_days=90, quarantine_days=30) == (1, 0)


def test_event_id_floor_orders_below_every_id_of_its_millisecond_and_above_earlier_ones():
    at = NOW
    assert event_id_floor(at) <= event_id_at(at)
    assert event_id_at(at - timedelta(milliseconds=1)) < event_id_floor(at)


def test_migrations_are_recorded_and_not_rerun(tmp_path):
    path = tmp_path / "hub.sqlite"
    HubStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = HubStore(path)  # would fail creating existing tables if migrations ran twice
    reopened.close()
