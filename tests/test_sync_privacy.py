"""A simulated day of a museum through the hub and the real sync (`museum sync run --once`) to a real companion
service (`museum companion run`), then every table of the companion's database read back: no raw identifier that
entered the site is there.

What entered the site: the visitors' take-home tokens (held by the simulated visitors, as by real ones), the
events' ids (their millisecond says when someone did something), kiosk session ids, visitor tag ids, and the MAC
addresses and IP addresses of the equipment the hub knows. Upstream may hold a visit's id (the one-way derivation
of its token) only where the take-home page needs it, and never beside an analytics row."""

from __future__ import annotations

import itertools
import json
import random
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sync_support import CompanionProcess, configure_sync, place_pack, sample_pack_for, sync_once

from broker import tag_links
from broker.hub_store import HubStore
from broker.site import Site
from broker.upstream_policy import FIELD_POLICY, SITE_ONLY
from content.sample import load_sample_museum
from demo.simulation import Visitor, gateway_events, kiosk_events, tag_id_of
from protocol.canonical import event_record
from protocol.events import ProximityLeft, VisitLinked

MAC = re.compile(r"(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}", re.IGNORECASE)
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


def a_simulated_day(site_id: str, start: datetime) -> tuple[list, list[Visitor], list[str]]:
    """Records of two rooms' kiosks and stations over a day, the visitors (with their tokens), and the tag ids
    lent to some of them (`visit.linked` with a tag, then the tag's stops near works)."""
    museum = load_sample_museum()
    rng = random.Random(9)
    visitors: list[Visitor] = []
    events = []
    for zone in museum.zone_ids[:2]:
        events += [event for _, event in itertools.islice(
            kiosk_events(rng, museum, site_id, f"kiosk-{zone}"[:63], zone, start, on_visitor=visitors.append),
            1_500)]
        events += [event for _, event in itertools.islice(
            gateway_events(rng, museum, site_id, f"gateway-{zone}"[:63], zone, start), 1_500)]
    tags = [tag_id_of(number) for number in range(1, 6)]
    linked = visitors[:5]
    for number, (tag, visitor) in enumerate(zip(tags, linked, strict=True)):
        at = start + timedelta(minutes=number)
        events.append(VisitLinked.create(site_id=site_id, device_id="reader-entrance", occurred_at=at,
                                         visit_id=visitor.visit_id, channel="entrance_qr", tag_id=tag))
        events.append(ProximityLeft.create(site_id=site_id, device_id="gateway-x",
                                           occurred_at=at + timedelta(minutes=3),
                                           artwork_id="monet-impression-sunrise", zone_id="impressionnisme",
                                           dwell_s=42.3, tag_id=tag))
    return [event_record(event) for event in events], visitors, tags


def test_a_simulated_day_leaves_no_raw_identifier_upstream(site: Site, tmp_path: Path) -> None:
    start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    records, visitors, tags = a_simulated_day(site.site_id, start)
    store = HubStore(site.hub_database)
    try:
        plain = [r for r in records if not tag_links.carries_tag(r)]
        tagged = [r for r in records if tag_links.carries_tag(r)]
        store.commit_round(plain, [], [], datetime.now(UTC), tagged=tagged)
        assert store.count_events() == len(records)
    finally:
        store.close()

    companion = CompanionProcess(tmp_path / "companion").start()
    try:
        configure_sync(site, companion, companion.enroll(site.site_id))
        place_pack(site, sample_pack_for(site.site_id, tmp_path))
        sync_once(site)
    finally:
        companion.stop()

    conn = sqlite3.connect(companion.store_path)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    text_by_table = {table: "\n".join(json.dumps(row, default=repr) for row in conn.execute(f"SELECT * FROM {table}"))
                     for table in tables}
    analytics_types = [row[0] for row in conn.execute("SELECT type FROM analytics")]
    conn.close()

    # Everything the policy lets go went, once: one analytics row per analytics event.
    assert len(analytics_types) == sum(r.type in FIELD_POLICY for r in records)
    assert not set(analytics_types) & SITE_ONLY
    assert "lingered" in text_by_table["take_home"] and "collected" in text_by_table["take_home"]

    raw = {visitor.token for visitor in visitors} | set(tags) | {r.event_id for r in records}
    raw |= {json.loads(r.fields)["session_id"] for r in records if json.loads(r.fields).get("session_id")}
    everything = "\n".join(text_by_table.values())
    assert [value for value in raw if value in everything] == []
    assert MAC.findall(everything) == [] and IPV4.findall(everything) == []
    # A visit's id only where a take-home page needs it: never in the figures.
    visit_ids = {r.visit_id for r in records if r.visit_id}
    assert [v for v in visit_ids if v in text_by_table["analytics"]] == []
    # Precise times do not leave: the figures have quarter hours, the take-home items days.
    occurred = {r.occurred_at for r in records if not r.occurred_at.endswith(("00:00.000Z", "15:00.000Z",
                                                                              "30:00.000Z", "45:00.000Z"))}
    assert [instant for instant in occurred if instant in text_by_table["analytics"]
            or instant in text_by_table["take_home"]] == []
