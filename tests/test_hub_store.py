"""The hub's store on its own: idempotent group commits, quarantine, registry, retention, migrations."""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.hub_store import (
    MIGRATIONS,
    QUARANTINE_RAW_BYTES,
    DeviceSeen,
    HubStore,
    QuarantineEntry,
    QuarantineLimits,
    _v3,
)
from protocol.canonical import EventRecord, event_record
from protocol.events import ArtworkViewed, BeaconAlert, Event, OccupancyCounted, ScannerStatus
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
    assert store.commit_round(records(*events), [], [], NOW).inserted == 10
    extra = viewed()
    assert store.commit_round(records(*events[5:], extra), [], [], NOW).inserted == 1
    assert store.event_ids() == {e.event_id for e in events} | {extra.event_id}


def test_own_fields_are_kept_as_json(store):
    event = OccupancyCounted.create(site_id="demo", device_id="gw-1", zone_id="room-1", count=12, window_s=60)
    store.commit_round(records(event), [], [], NOW)
    row = store.db["events"].get(event.event_id)
    assert row["type"] == "occupancy.counted" and row["visit_id"] is None
    assert row["fields"] == '{"zone_id":"room-1","count":12,"window_s":60}'


def test_quarantine_keeps_a_bounded_copy_and_the_reason(store):
    raw = b"x" * (QUARANTINE_RAW_BYTES + 10)
    store.commit_round([], [QuarantineEntry("museum/v1/demo/devices/k/events", raw, "too_large", "big")], [], NOW)
    (row,) = store.quarantine_rows()
    assert row["raw_size"] == len(raw) and len(row["raw"]) == QUARANTINE_RAW_BYTES
    assert (row["code"], row["reason"]) == ("too_large", "big")
    assert store.stats().quarantined_by_code == {"too_large": 1}


def test_registry_merges_what_each_message_tells(store):
    store.commit_round([], [], [DeviceSeen("kiosk-1", "kiosk", "1.0.0", "online", NOW)], NOW)
    store.commit_round([], [], [DeviceSeen("kiosk-1")], NOW + timedelta(seconds=5))
    (device,) = store.devices()
    assert (device["kind"], device["software_version"], device["state"]) == ("kiosk", "1.0.0", "online")
    assert device["last_seen"] == "2026-11-25T12:00:05.000Z"
    assert store.stats().devices_online == ["kiosk-1"]


def test_retention_deletes_only_what_is_past_its_time(store):
    old, recent = viewed(days_ago=91), viewed(days_ago=89)
    store.commit_round(records(old, recent), [], [], NOW)
    store.commit_round([], [QuarantineEntry("t", b"?", "invalid_json", "x")], [], NOW - timedelta(days=31))
    store.commit_round([], [QuarantineEntry("t", b"?", "invalid_json", "y")], [], NOW - timedelta(days=29))
    assert store.purge(NOW, events_days=90, quarantine_days=30) == (1, 1)
    assert store.event_ids() == {recent.event_id}
    assert [row["reason"] for row in store.quarantine_rows()] == ["y"]


def test_retention_waits_for_an_event_back_dated_within_the_tolerance(store):
    # Recorded now, claiming to be 30 days old (within the 35 days the hub accepts): it goes when it is 90 days
    # past what it claims, before 90 days past its arrival.
    backdated = replace(viewed(), occurred_at=NOW - timedelta(days=30))
    store.commit_round(records(backdated), [], [], NOW)
    assert store.purge(NOW + timedelta(days=59), events_days=90, quarantine_days=30) == (0, 0)
    assert store.purge(NOW + timedelta(days=61), events_days=90, quarantine_days=30) == (1, 0)


def test_retention_also_counts_from_when_the_hub_received_an_event(store):
    # Stored as the hub stores them, whatever they claim: each goes 90 days after it arrived at the latest.
    claims = [replace(viewed(), occurred_at=datetime(2099, 1, 1, tzinfo=UTC)),
              replace(viewed(), event_id=event_id_at(datetime(1970, 1, 2, tzinfo=UTC))),
              replace(viewed(), event_id=event_id_at(NOW + timedelta(hours=23)),
                      occurred_at=NOW + timedelta(hours=23)),
              viewed()]
    store.commit_round(records(*claims), [], [], NOW)
    assert store.purge(NOW + timedelta(days=89), events_days=90, quarantine_days=30) == (0, 0)
    assert store.purge(NOW + timedelta(days=90, seconds=1), events_days=90, quarantine_days=30) == (4, 0)


def test_with_the_clock_ten_years_on_nothing_is_left(store):
    arrivals = [NOW - timedelta(days=days) for days in (0, 10, 100)]
    for at in arrivals:
        store.commit_round(records(replace(viewed(), occurred_at=datetime(2099, 1, 1, tzinfo=UTC)),
                                   replace(viewed(), event_id=event_id_at(at + timedelta(hours=12)))), [], [], at)
    assert store.count_events() == 6
    store.purge(NOW + timedelta(days=3653), events_days=90, quarantine_days=30)
    assert store.count_events() == 0


def test_a_migration_removes_events_stored_outside_the_time_tolerance(tmp_path):
    path = tmp_path / "hub.sqlite"
    store = HubStore(path)
    good = replace(viewed(), occurred_at=NOW - timedelta(days=34))
    outside = [replace(viewed(), occurred_at=datetime(2099, 1, 1, tzinfo=UTC)),
               replace(viewed(), occurred_at=NOW - timedelta(days=36)),
               replace(viewed(), event_id=event_id_at(datetime(2099, 1, 1, tzinfo=UTC))),
               replace(viewed(), event_id=event_id_at(datetime(1970, 1, 2, tzinfo=UTC)))]
    store.commit_round(records(good, *outside), [], [], NOW)
    version = MIGRATIONS.index(_v3)
    store.db.execute(f"PRAGMA user_version = {version}")  # as a database made before the migration
    store.close()
    store = HubStore(path)
    try:
        assert store.event_ids() == {good.event_id}
        store.purge(NOW + timedelta(days=3653), events_days=90, quarantine_days=30)
        assert store.count_events() == 0
    finally:
        store.close()


def test_the_database_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "hub.sqlite"
    store = HubStore(path)
    try:
        store.commit_round(records(viewed()), [], [], NOW)
        for file in (path, path.with_name("hub.sqlite-wal"), path.with_name("hub.sqlite-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        store.close()


def test_quarantine_past_its_bounds_is_counted_not_stored(tmp_path):
    limits = QuarantineLimits(device_rows=3, device_bytes=10_000, total_rows=5, total_bytes=1_000_000)
    store = HubStore(tmp_path / "hub.sqlite", limits)
    try:
        def bad(device: str, size: int = 10) -> QuarantineEntry:
            return QuarantineEntry(f"museum/v1/demo/devices/{device}/events", b"x" * size, "invalid_json", "r",
                                   device)

        result = store.commit_round([], [bad("k1") for _ in range(10)], [], NOW)
        assert (result.quarantine_stored, result.quarantine_not_stored) == (3, 7)
        # Bytes too: one large copy fills k2's share; the others still have theirs.
        assert store.commit_round([], [bad("k2", 9_000), bad("k2", 9_000)], [], NOW).quarantine_not_stored == 1
        assert store.commit_round([], [bad("k3"), bad("k3")], [], NOW).quarantine_not_stored == 1  # total: 5 rows
        assert store.stats().quarantine_not_stored_by_device == {"k1": 7, "k2": 1, "k3": 1}
        assert store.count_quarantined() == 5
        store.purge(NOW + timedelta(days=31), events_days=90, quarantine_days=30)
        assert store.commit_round([], [bad("k1")], [], NOW + timedelta(days=31)).quarantine_stored == 1
    finally:
        store.close()
    reopened = HubStore(tmp_path / "hub.sqlite", limits)  # the usage is counted again from the rows
    try:
        assert reopened.commit_round([], [bad("k1") for _ in range(3)], [], NOW).quarantine_not_stored == 1
        assert reopened.stats().quarantine_not_stored_by_device["k1"] == 8
    finally:
        reopened.close()


def test_an_event_id_stored_for_another_device_is_a_conflict(store):
    mine = viewed()
    theirs = replace(mine, device_id="kiosk-2")
    first = store.commit_round(records(mine, theirs, mine), [], [], NOW)
    assert (first.inserted, [r.device_id for r in first.conflicts]) == (1, ["kiosk-2"])
    again = store.commit_round(records(mine, theirs), [], [], NOW)
    assert (again.inserted, [r.device_id for r in again.conflicts]) == (0, ["kiosk-2"])
    assert [(row["code"], row["device_id"]) for row in store.quarantine_rows()] == [
        ("event_id_conflict", "kiosk-2")] * 2
    assert store.db["events"].get(mine.event_id)["device_id"] == "kiosk-1"


def test_a_full_disk_fails_the_commit_with_its_own_error_and_nothing_else(store):
    store.commit_round(records(*(viewed() for _ in range(50))), [], [], NOW)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    batch = [viewed() for _ in range(500)]
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.commit_round(records(*batch), [], [], NOW)
    assert not store.db.conn.in_transaction
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert store.commit_round(records(*batch), [], [], NOW).inserted == 500


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


def test_attention_lists_scanners_not_scanning_and_unresolved_beacon_alerts(store):
    at = NOW - timedelta(hours=2)

    def scanner(device: str, state: str, minutes: int) -> ScannerStatus:
        return ScannerStatus.create(site_id="test-site", device_id=device, occurred_at=at + timedelta(minutes=minutes),
                                    state=state, adapter="hci0", reason=f"{state} reason", attempts=3)

    def alert(beacon: str, what: str, minutes: int, days_ago: float = 0) -> BeaconAlert:
        return BeaconAlert.create(site_id="test-site", device_id="gw-1", beacon_id=beacon, alert=what,
                                  detail=f"{what} detail",
                                  occurred_at=at + timedelta(minutes=minutes) - timedelta(days=days_ago))

    events = [scanner("gw-1", "recovering", 0), scanner("gw-1", "scanning", 1),  # recovered: nothing to see
              scanner("gw-2", "scanning", 0), scanner("gw-2", "failing", 5),
              alert("entrance-left", "not_heard", 0), alert("entrance-left", "heard_again", 3),
              alert("t-00000000002a", "low_battery", 4), alert("room-2", "not_heard", 0, days_ago=1.5)]
    store.commit_round(records(*events), [], [], NOW)
    attention = store.attention(NOW)
    assert [(a.device_id, a.subject, a.state) for a in attention] == [
        ("gw-2", "scanner", "failing"), ("gw-1", "t-00000000002a", "low_battery")]
    assert "failing reason (adapter hci0, 3 attempts)" in attention[0].detail
    assert store.stats().attention[0] == attention[0]  # stats() reads the clock: the alerts are days old by now
