"""The upstream anonymisation policy (broker/upstream_policy.py): every event type and field has a decision, and a
simulated day through it leaves no raw identifier and no precise time in what would go upstream."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest

from broker.upstream_policy import (
    FIELD_POLICY,
    SITE_ONLY,
    AnalyticsRecord,
    TakeHomeItem,
    TakeHomeJoin,
    new_pseudonym_key,
    upstream_records,
    visit_pseudonym,
)
from content.sample import load_sample_museum
from demo.simulation import gateway_events, kiosk_events, tag_id_of
from protocol.canonical import EventRecord, event_record
from protocol.events import EVENT_TYPES, ProximityLeft, ScannerStatus, VisitJoined, VisitLinked

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
KEY = bytes(range(32))


def test_every_event_type_and_field_has_a_decision() -> None:
    assert set(FIELD_POLICY).isdisjoint(SITE_ONLY)
    assert set(FIELD_POLICY) | SITE_ONLY == set(EVENT_TYPES), "decide in upstream_policy whether it may leave"
    for name, (_visit_rule, rules) in FIELD_POLICY.items():
        own = {field for field, _spec in EVENT_TYPES[name].specs}
        assert set(rules) == own, f"{name}: the policy must name exactly its own fields"


def simulated_day() -> list[EventRecord]:
    museum = load_sample_museum()
    rng = random.Random(8)
    events = []
    for zone in museum.zone_ids[:2]:
        events += [event for _, event in itertools.islice(
            kiosk_events(rng, museum, "demo", f"kiosk-{zone}"[:63], zone, START), 400)]
        events += [event for _, event in itertools.islice(
            gateway_events(rng, museum, "demo", f"gateway-{zone}"[:63], zone, START), 400)]
    # As a station sends them, before the hub resolves the tag.
    events.append(ProximityLeft.create(site_id="demo", device_id="gateway-x", occurred_at=START, artwork_id="a-1",
                                       zone_id="renaissance", dwell_s=42.3, tag_id=tag_id_of(7)))
    events.append(ScannerStatus.create(site_id="demo", device_id="gateway-x", occurred_at=START, state="failing",
                                       adapter="hci0", reason="no adapter", attempts=9))
    return [event_record(event) for event in events]


def test_a_simulated_day_leaves_no_raw_identifier_and_no_precise_time() -> None:
    records = simulated_day()
    out = [upstream_records(record, KEY) for record in records]
    analytics = [a for a, _ in out if a is not None]
    take_home = [t for _, t in out if t is not None]
    assert len(analytics) > 500 and len(take_home) > 20
    upstream = json.dumps([asdict(a) for a in analytics])
    secrets_in = {r.event_id for r in records} | {r.visit_id for r in records if r.visit_id} | {tag_id_of(7)}
    secrets_in |= {json.loads(r.fields)["session_id"] for r in records if "session_id" in r.fields
                   and json.loads(r.fields).get("session_id")}
    secrets_in |= {r.occurred_at for r in records if not r.occurred_at.endswith((":00:00.000Z", ":15:00.000Z",
                                                                                   ":30:00.000Z", ":45:00.000Z"))}
    assert not [s for s in secrets_in if s in upstream]
    for item in analytics:
        period = datetime.fromisoformat(item.period.replace("Z", "+00:00"))
        assert period.minute % 15 == 0 and period.second == 0 and period.microsecond == 0
    assert {a.type for a in analytics} <= set(FIELD_POLICY)
    assert "scanner.status" not in upstream


def test_take_home_items_are_keyed_by_the_stored_derivation_and_dated_by_day() -> None:
    records = simulated_day()
    stored_visits = {r.visit_id for r in records if r.visit_id}
    items = [t for _, t in (upstream_records(r, KEY) for r in records) if isinstance(t, TakeHomeItem)]
    assert {item.visit_id for item in items} <= stored_visits
    assert {item.kind for item in items} == {"collected", "opened", "lingered"}
    assert {item.day for item in items} <= {(START + timedelta(days=n)).date().isoformat() for n in range(3)}
    assert all(item.dwell_s is not None and item.dwell_s % 5 == 0 for item in items if item.kind == "lingered")


def test_pseudonyms_are_stable_under_one_key_and_unrelated_under_another() -> None:
    linked = event_record(VisitLinked.create(site_id="demo", device_id="kiosk-1", occurred_at=START,
                                             visit_id="A" * 43, channel="kiosk_qr"))
    first, _ = upstream_records(linked, KEY)
    again, _ = upstream_records(linked, KEY)
    other, _ = upstream_records(linked, new_pseudonym_key())
    assert isinstance(first, AnalyticsRecord) and isinstance(other, AnalyticsRecord)
    assert first == again
    assert first.visitor != other.visitor and first.uid != other.uid
    assert first.visitor is not None and "A" * 22 not in first.visitor


def test_language_and_accessibility_lose_their_visit_and_tags_are_dropped() -> None:
    records = simulated_day()
    for record in records:
        analytics, _ = upstream_records(record, KEY)
        if analytics is None:
            continue
        if record.type.startswith("visitor.") or record.type == "occupancy.counted":
            assert analytics.visitor is None
        assert "tag_id" not in analytics.fields


def test_a_field_the_policy_does_not_name_stops_the_sync() -> None:
    record = event_record(ProximityLeft.create(site_id="demo", device_id="gw", occurred_at=START, artwork_id="a",
                                               zone_id="z", dwell_s=3.0))
    smuggled = record._replace(fields=record.fields[:-1] + ',"mac":"AA:BB:CC:DD:EE:FF"}')
    with pytest.raises(KeyError, match="mac"):
        upstream_records(smuggled, KEY)
    with pytest.raises(ValueError, match="16 bytes"):
        upstream_records(record, b"short")



def test_a_joined_visit_goes_up_as_a_join_with_both_sides_pseudonymised_alike() -> None:
    kiosk_visit, phone_visit = "K" * 43, "P" * 43
    joined = event_record(VisitJoined.create(site_id="demo", device_id="companion", occurred_at=START,
                                             visit_id=kiosk_visit, other_visit_id=phone_visit))
    analytics, join = upstream_records(joined, KEY)
    assert join == TakeHomeJoin(kiosk_visit, phone_visit, START.date().isoformat())
    assert isinstance(analytics, AnalyticsRecord)
    # The phone's earlier visit has the pseudonym its own events carry, so the figures see one visit.
    assert analytics.visitor == visit_pseudonym(kiosk_visit, KEY)
    assert analytics.fields == {"other_visit_id": visit_pseudonym(phone_visit, KEY)}
    assert phone_visit not in json.dumps(asdict(analytics))


def test_the_period_cut_from_the_text_is_the_quarter_hour_floor() -> None:
    from broker.upstream_policy import _period_of, floor_period
    from protocol.ids import format_instant

    rng = random.Random(9)
    for _ in range(2_000):
        instant = START + timedelta(milliseconds=rng.randrange(3 * 24 * 3600 * 1000))
        assert _period_of(format_instant(instant)) == format_instant(floor_period(instant))
