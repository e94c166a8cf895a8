"""The demo's radio (demo.radio): the visit simulator's visitors as BLE adverts, and the real station they feed.

First the radio alone (deterministic for a seed, real frame bytes, the right devices, tags near the featured work
exactly while visitors stop at it, as the station's own pipeline judges); then `museum simulate gateway`'s station
(`run_station`: hardware.runtime.GatewayRuntime on a FakeRadio) against a real Mosquitto and hub."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import sqlite3
import statistics
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from harness import HubThread, device_config, start_device, stored_types
from support import wait_until

from broker.site import Site
from bus.config import ClientConfig
from content.model import Museum
from content.sample import load_sample_museum
from demo.radio import (
    DEMO_TAG_NAMESPACE,
    NEAR_M,
    RoomRadio,
    RoomVisitor,
    Spell,
    demo_gateway_table,
    featured_work,
    room_tags,
)
from demo.simulated_device import Simulation, StopFlag, feed_radio, run_station, station_settings
from demo.simulation import LINK_SHARE, TAG_POOL, random_visit_id, simulate_kiosk_session, tag_id_of
from hardware.advert import Advert
from hardware.beacons import EddystoneUID, parse_advert
from hardware.ble import FakeRadio
from hardware.occupancy import is_tracker
from hardware.pipeline import StationPipeline
from hardware.settings import StationSettings
from protocol.events import Event, ProximityEntered, ProximityLeft, VisitLinked

START = 1_767_000_000.0
SESSION_START = datetime(2026, 5, 17, 9, 30, tzinfo=UTC)
ZONE = "renaissance"
BUSY = 1200.0
"""Visitors per hour: the demo's default (60 an hour, x20)."""


@pytest.fixture(scope="module")
def museum() -> Museum:
    return load_sample_museum()


def radio(museum: Museum, seed: int | str = 3, *, zone: str = ZONE, per_hour: float = BUSY) -> RoomRadio:
    return RoomRadio(museum, zone, seed=seed, visitors_per_hour=per_hour)


def until(adverts: Any, end_s: float) -> list[Advert]:
    return list(itertools.takewhile(lambda advert: advert.at < START + end_s, adverts))


def config_with(tmp_path: Path, table: dict[str, object] | None) -> tuple[ClientConfig, Path]:
    raw: dict[str, Any] = {"site_id": "demo", "client_id": "gateway-renaissance", "kind": "gateway",
                           "broker": {"host": "127.0.0.1", "port": 1883, "username": "gateway-renaissance",
                                      "password": "x", "tls": False, "discover": False},
                           "outbox": {"path": str(tmp_path / "outbox.sqlite")}}
    if table is not None:
        raw["gateway"] = table
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return ClientConfig.load(path), path


def demo_settings(tmp_path: Path, museum: Museum, zone: str = ZONE) -> StationSettings:
    config, path = config_with(tmp_path, demo_gateway_table(museum, zone))
    return StationSettings.from_config(config, path)


# --- the radio alone --------------------------------------------------------------------------------------------

def test_a_seed_gives_the_same_adverts_and_another_seed_others(museum: Museum) -> None:
    first = until(radio(museum, 5).adverts(START), 300)
    assert len(first) > 1000
    assert first == until(radio(museum, 5).adverts(START), 300)
    assert first != until(radio(museum, 6).adverts(START), 300)
    # The clock start only shifts the times.
    later = until(radio(museum, 5).adverts(START + 1000), 1300)
    assert [dataclasses.replace(advert, at=round(advert.at - 1000, 6)) for advert in later] == first
    assert all(a.at <= b.at for a, b in itertools.pairwise(first))


def test_every_advert_is_a_tag_of_the_room_or_a_phone_that_counts(museum: Museum) -> None:
    adverts = until(radio(museum).adverts(START), 600)
    tags = {tag_id_of(number) for number in room_tags(museum, ZONE)}
    kinds: dict[str, str] = {}
    for advert in adverts:
        frame = parse_advert(advert)
        if frame is None:
            assert not is_tracker(advert), advert  # a phone: the station counts it
            kind = "phone"
        else:
            assert isinstance(frame, EddystoneUID), frame
            assert frame.namespace == DEMO_TAG_NAMESPACE
            assert "t-" + frame.instance.hex() in tags
            kind = "tag:" + frame.instance.hex()
        assert kinds.setdefault(advert.address, kind) == kind, "one address, one device"
        assert -100 < advert.rssi < -40
    assert {"phone"} < set(kinds.values())


def test_the_tags_are_dealt_round_the_rooms_and_never_in_two_hands(museum: Museum) -> None:
    dealt = [room_tags(museum, zone) for zone in museum.zone_ids]
    assert sorted(itertools.chain.from_iterable(dealt)) == list(range(1, TAG_POOL + 1))
    visitors = list(itertools.islice(radio(museum).visitors(), 400))
    holding: dict[int, list[RoomVisitor]] = {}
    for visitor in visitors:
        if visitor.tag_number is not None:
            holding.setdefault(visitor.tag_number, []).append(visitor)
    for held in holding.values():
        for before, after in itertools.pairwise(held):
            assert before.left <= after.arrived, "a tag handed on before it came back"
    carried = sum(visitor.tag_number is not None for visitor in visitors) / len(visitors)
    assert 0.3 <= carried <= 0.5


def test_each_visitor_is_one_phone_and_each_lent_tag_is_heard(museum: Museum) -> None:
    room = radio(museum, 11)
    visitors = list(itertools.takewhile(lambda v: v.arrived < 600, room.visitors()))
    adverts = list(room.adverts(START, visitors))
    assert START + 600 < adverts[-1].at <= START + max(visitor.left for visitor in visitors)
    phones = {a.address for a in adverts if parse_advert(a) is None}
    heard_tags = {"t-" + frame.instance.hex() for a in adverts if isinstance(frame := parse_advert(a), EddystoneUID)}
    assert len(phones) == len(visitors)
    assert heard_tags == {visitor.tag_id for visitor in visitors if visitor.tag_id is not None}
    for visitor in visitors:
        assert visitor.spells[0].start == visitor.arrived and visitor.spells[-1].end == visitor.left
        assert all(a.end == b.start for a, b in itertools.pairwise(visitor.spells))


def test_speed_brings_more_visitors_but_the_room_guard_bounds_them(museum: Museum) -> None:
    def present_at(room: RoomRadio, hours: float) -> tuple[int, list[RoomVisitor]]:
        visitors = list(itertools.takewhile(lambda v: v.arrived < hours * 3600, room.visitors()))
        peak = max(sum(1 for v in visitors if v.arrived <= t < v.left) for t in range(0, int(hours * 3600), 10))
        return peak, visitors

    quiet = radio(museum, per_hour=60)
    peak, visitors = present_at(quiet, 3)
    assert 120 <= len(visitors) <= 240 and quiet.turned_away == 0
    assert peak < quiet.max_present
    busy = radio(museum, per_hour=BUSY)
    peak, visitors = present_at(busy, 0.5)
    assert busy.max_present == round(0.6 * museum.room(ZONE).capacity)
    assert peak == busy.max_present and busy.turned_away > 0


def tag_carrier(visitors: list[RoomVisitor], tag_number: int, at: float) -> RoomVisitor:
    (visitor,) = [v for v in visitors if v.tag_number == tag_number and v.arrived <= at < v.left]
    return visitor


def test_tags_are_near_the_featured_work_exactly_during_its_stops(museum: Museum, tmp_path: Path) -> None:
    room = radio(museum, 3)
    featured = featured_work(museum, ZONE).artwork_id
    assert room.near == featured
    visitors = list(itertools.takewhile(lambda v: v.arrived < 900, room.visitors()))
    adverts = list(room.adverts(START, visitors))
    near_rssi: list[int] = []
    far_rssi: list[int] = []
    for advert in adverts:
        frame = parse_advert(advert)
        if not isinstance(frame, EddystoneUID):
            continue
        at = advert.at - START
        visitor = tag_carrier(visitors, int.from_bytes(frame.instance, "big"), at)
        stopping = any(s.start <= at < s.end for s in visitor.stops_at(featured))
        distance = visitor.distance_at(at)
        assert distance is not None and (distance <= NEAR_M[1]) == stopping
        (near_rssi if stopping else far_rssi).append(advert.rssi)
    assert statistics.mean(near_rssi) > -60 > -67 > statistics.mean(far_rssi)

    # The station's own pipeline, on the same adverts, sees exactly those stops.
    events: list[Event] = []
    pipeline = StationPipeline(demo_settings(tmp_path, museum), site_id="demo", device_id="gateway-renaissance",
                               emit=events.append)
    tick = START
    for advert in adverts:
        while tick <= advert.at:
            pipeline.tick(tick)
            tick += 1.0
        pipeline.feed(advert)
    for _ in range(30):
        pipeline.tick(tick)
        tick += 1.0
    stops = [(v.tag_id, s) for v in visitors if v.tag_id for s in v.stops_at(featured)]
    entered = [e for e in events if isinstance(e, ProximityEntered)]
    left = [e for e in events if isinstance(e, ProximityLeft)]
    assert len(stops) >= 8 and len(entered) == len(left)
    matched = 0
    for tag_id, stop in stops:
        began = [e for e in entered if e.tag_id == tag_id and
                 START + stop.start <= e.occurred_at.timestamp() <= START + stop.start + 8]
        ended = [e for e in left if e.tag_id == tag_id and
                 START + stop.end <= e.occurred_at.timestamp() <= START + stop.end + 15]
        assert len(began) == len(ended) <= 1, (tag_id, stop)
        assert began or stop.end - stop.start < 15, ("a long stop the station missed", tag_id, stop)
        matched += len(began)
    assert matched == len(entered), "every visit the station saw is a stop at its work"
    assert all(e.artwork_id == featured and e.zone_id == ZONE for e in [*entered, *left])


def test_the_demo_table_is_a_valid_station_beside_each_featured_work(museum: Museum, tmp_path: Path) -> None:
    for zone in museum.zone_ids:
        settings = demo_settings(tmp_path, museum, zone)
        assert settings.zone_id == zone and settings.tag_namespace == DEMO_TAG_NAMESPACE
        (watch,) = settings.artworks
        assert (watch.artwork_id, watch.zone_id, watch.enter_m, watch.leave_m) == (
            featured_work(museum, zone).artwork_id, zone, 1.5, 2.5)
        assert watch.artwork_id == max(museum.artworks_in(zone), key=lambda a: a.popularity).artwork_id
        assert (settings.proximity.leave_after_s, settings.occupancy.window_s) == (10.0, 30.0)


def test_a_station_uses_its_files_table_in_its_room_or_else_the_demos(museum: Museum, tmp_path: Path) -> None:
    simulation = Simulation("gateway", ZONE, museum)
    config, path = config_with(tmp_path, None)
    assert station_settings(config, path, simulation).artworks[0].artwork_id == "botticelli-birth-of-venus"
    own = {"zone_id": ZONE, "tag_namespace": "00112233445566778899", "artworks": [{"id": "durer-young-hare"}]}
    config, path = config_with(tmp_path, own)
    settings = station_settings(config, path, simulation)
    room = simulation.radio("gateway-renaissance", settings)
    assert (room.near, room.tag_namespace) == ("durer-young-hare", bytes.fromhex("00112233445566778899"))
    config, path = config_with(tmp_path, {**own, "zone_id": "realisme"})
    with pytest.raises(ValueError, match=r"^\S+gateway.toml: \[gateway\] zone_id is 'realisme' but the simulated "
                                         r"room is 'renaissance'; give --zone realisme or correct the file$"):
        station_settings(config, path, simulation)


def test_kiosks_lend_tags_of_the_pool_with_some_links(museum: Museum) -> None:
    links = [event for seed in range(600) for event in simulate_kiosk_session(
        random.Random(seed), museum, "demo", "kiosk-01", ZONE, SESSION_START) if isinstance(event, VisitLinked)]
    assert 0.25 <= len(links) / 600 <= LINK_SHARE + 0.1
    lent = [link.tag_id for link in links if link.tag_id is not None]
    assert 0.35 <= len(lent) / len(links) <= 0.65
    assert set(lent) <= {tag_id_of(number) for number in range(1, TAG_POOL + 1)}
    again = [e.tag_id for e in simulate_kiosk_session(random.Random(7), museum, "demo", "kiosk-01", ZONE,
                                                      SESSION_START) if isinstance(e, VisitLinked)]
    assert again == [e.tag_id for e in simulate_kiosk_session(random.Random(7), museum, "demo", "kiosk-01", ZONE,
                                                              SESSION_START) if isinstance(e, VisitLinked)]


def test_the_pacer_hands_adverts_over_in_order_and_skips_what_nobody_heard() -> None:
    adverts = [Advert(at=START + offset, address=f"C0:00:00:00:00:0{n}", rssi=-60)
               for n, offset in enumerate((0.0, 2.0, 3.0))]
    now = iter([100.0, *[103.5] * 10])  # started at 100, then 3.5 s late for every advert

    class Heard(FakeRadio):
        def __init__(self) -> None:
            super().__init__(keep_time=False)
            self.heard: list[str] = []

        def put(self, advert: Advert) -> None:
            self.heard.append(advert.address)
            super().put(advert)

    async def run(stop_first: bool) -> tuple[tuple[int, int], list[str]]:
        fake = Heard()
        stop = asyncio.Event()
        if stop_first:
            stop.set()
        counts = await feed_radio(fake, iter(adverts), START, stop, clock=lambda: next(now))
        return counts, fake.heard

    # 3.5 s late: the first (over RADIO_LATE_S late) is skipped, the others go at once, in order.
    assert asyncio.run(run(False)) == ((2, 1), ["C0:00:00:00:00:01", "C0:00:00:00:00:02"])
    now = iter([100.0, *[100.0] * 10])
    assert asyncio.run(run(True)) == ((0, 0), [])


# --- a demo station, for real -----------------------------------------------------------------------------------

def test_a_demo_station_reports_stops_and_counts_to_the_hub(site: Site, broker: object, museum: Museum) -> None:
    featured = featured_work(museum, ZONE).artwork_id
    # One visitor, on a script: 1 s in the room, 4 s at the featured work, 4 s at another, gone; a phone and tag 1.
    visitor = RoomVisitor(1, 0.0, 9.0, "iphone", 1, (Spell(0.0, 1.0, 6.0, None), Spell(1.0, 5.0, 0.8, featured),
                                                     Spell(5.0, 9.0, 6.0, "durer-young-hare")))
    simulation = Simulation("gateway", ZONE, museum, seed=7)
    config = device_config(site, "gateway-renaissance", "gateway")
    table: dict[str, Any] = {**demo_gateway_table(museum, ZONE), "proximity": {"leave_after_s": 3, "min_dwell_s": 0},
                             "occupancy": {"window_s": 10}}
    config = dataclasses.replace(config, extra={**config.extra, "gateway": table})
    settings = station_settings(config, site.device_config("gateway-renaissance"), simulation)
    scripted = list(simulation.radio(config.client_id, settings).adverts(START, [visitor]))
    tag_near = [a for a in scripted if a.service_data and a.at < START + 5 and a.rssi >= -62]
    assert tag_near, "the script must put the tag within enter_m, or the station has nothing to see"

    seen: list[Event] = []
    stop = StopFlag()
    with HubThread(site):
        # A kiosk lends tag 1 to a visit first: the hub gives the station's events that visit.
        kiosk = start_device(site, "kiosk-01")
        try:
            kiosk.emit(VisitLinked.create(site_id=site.site_id, device_id="kiosk-01", visit_id=random_visit_id(
                random.Random(1)), channel="kiosk_qr", tag_id=tag_id_of(1)))
            assert kiosk.wait_drained(30)
        finally:
            kiosk.stop()
        station = threading.Thread(target=run_station, args=(config, settings, simulation, stop, seen.append),
                                   kwargs={"visitors": [visitor]})
        station.start()
        try:
            assert wait_until(lambda: {"proximity.entered", "proximity.left"} <= set(
                stored_types(site, "gateway-renaissance")) and one_counted(site), 90), stored_types(
                site, "gateway-renaissance")
        finally:
            stop.requested = True
            station.join(30)
        assert not station.is_alive()

    rows = events_of(site, "gateway-renaissance")
    (linked,) = [row for row in events_of(site, "kiosk-01") if row["type"] == "visit.linked"]
    visits = [row for row in rows if row["type"].startswith("proximity.")]
    assert [row["type"] for row in visits] == ["proximity.entered", "proximity.left"]
    for row in visits:
        assert row["fields"]["artwork_id"] == featured and row["fields"]["tag_id"] is None
        assert row["visit_id"] == linked["visit_id"]
    assert visits[1]["fields"]["dwell_s"] > 0
    assert {row["fields"]["count"] for row in rows if row["type"] == "occupancy.counted"} <= {0, 1}
    assert any(e.type == "scanner.status" and getattr(e, "state", None) == "scanning" for e in seen)
    assert {e.type for e in seen} <= {"scanner.status", "proximity.entered", "proximity.left", "occupancy.counted"}


def one_counted(site: Site) -> bool:
    return any(row["type"] == "occupancy.counted" and row["fields"]["count"] == 1
               for row in events_of(site, "gateway-renaissance"))


def events_of(site: Site, device_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(site.hub_database) as db:
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT type, visit_id, fields FROM events WHERE device_id = ? ORDER BY occurred_at",
                              (device_id,)).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []
    return [{"type": row["type"], "visit_id": row["visit_id"], "fields": json.loads(row["fields"])} for row in rows]


