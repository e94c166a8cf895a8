"""Anonymous occupancy through the station pipeline: distinct devices per window, keys that rotate with the
window, what is not counted (beacons, tags, trackers, weak signals), the saturation bound, and no address out.

Adverts carry real payload bytes: Apple Nearby Info and Find My records, Eddystone-UID, iBeacon, Tile service data."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.config import BrokerSettings, ClientConfig
from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert
from hardware.occupancy import OccupancyCounter, is_tracker
from hardware.pipeline import StationPipeline
from hardware.settings import OccupancySettings, StationSettings
from protocol.codec import encode_event
from protocol.events import OccupancyCounted

T0 = 1_700_000_040.0  # not on a minute boundary: windows start with the station, not the clock
NAMESPACE = "6d757365756d2d746167"
BEACON_NS = "6d757365756d2d62636e"
TILE = "0000feed-0000-1000-8000-00805f9b34fb"


def address(rng: random.Random) -> str:
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(6))


def phone(at: float, addr: str, rssi: int = -60, seed: int = 0) -> Advert:
    """An iPhone's Nearby Info record (Apple type 0x10): its bytes change from advert to advert."""
    return Advert(at, addr, rssi, manufacturer_data=((APPLE_COMPANY_ID, bytes([0x10, 0x05, 0x01, 0x18, seed & 0xFF,
                                                                              0x2A, 0x6B])),))


def watch(at: float, addr: str) -> Advert:
    """A device with Google Fast Pair service data and a name: no beacon format."""
    return Advert(at, addr, -70, service_data=(("0000fe2c-0000-1000-8000-00805f9b34fb", b"\x00\x01\x02"),),
                  local_name="Watch")


def airtag(at: float, addr: str) -> Advert:
    """Apple Find My (offline finding, type 0x12, length 0x19): an object, not a person."""
    return Advert(at, addr, -55, manufacturer_data=((APPLE_COMPANY_ID, bytes([0x12, 0x19, 0x10]) + bytes(22) +
                                                     b"\x01\x00"),))


def tile(at: float, addr: str) -> Advert:
    return Advert(at, addr, -55, service_data=((TILE, bytes(10)),))


def eddystone(at: float, addr: str, namespace: str, instance: int) -> Advert:
    data = bytes([0x00, 0xEE]) + bytes.fromhex(namespace) + instance.to_bytes(6, "big") + b"\0\0"
    return Advert(at, addr, -60, service_data=((EDDYSTONE_SERVICE_UUID, data),))


def ibeacon(at: float, addr: str) -> Advert:
    """Somebody else's iBeacon (a shop's): a beacon, not a person."""
    data = bytes([0x02, 0x15]) + bytes(range(16)) + (1).to_bytes(2, "big") + (2).to_bytes(2, "big") + b"\xc5"
    return Advert(at, addr, -60, manufacturer_data=((APPLE_COMPANY_ID, data),))


def station(**occupancy: Any) -> tuple[StationPipeline, list[Any]]:
    table = {"zone_id": "room-a", "tag_namespace": NAMESPACE, "artworks": [{"id": "monet"}],
             "beacons": [{"id": "door", "eddystone": f"{BEACON_NS}:0000000000a1"}],
             "occupancy": {"window_s": 60, **occupancy}}
    config = ClientConfig("demo", "gw-a", "gateway", BrokerSettings("127.0.0.1", 1883, "gw-a", "x"),
                          extra={"gateway": table})
    events: list[Any] = []
    return StationPipeline(StationSettings.from_config(config, Path("station.toml")), site_id="demo",
                           device_id="gw-a", emit=events.append), events


def counts(events: list[Any]) -> list[OccupancyCounted]:
    return [event for event in events if isinstance(event, OccupancyCounted)]


def test_counts_distinct_devices_per_window_with_rotating_keys():
    rng = random.Random(5)
    pipeline, events = station()
    phones = [address(rng) for _ in range(40)]
    watches = [address(rng) for _ in range(6)]
    fed: list[str] = []

    def feed(advert: Advert) -> None:
        fed.append(advert.address)
        pipeline.feed(advert)

    # Window 1 (T0 .. T0+60): 30 phones and 6 watches, each heard many times with changing bytes, and what must
    # not count: a tag, a museum beacon, a shop's iBeacon, an AirTag, a Tile, and phones too far away.
    for second in range(60):
        at = T0 + second
        for n, addr in enumerate(phones[:30]):
            feed(phone(at + n / 100, addr, seed=second * 31 + n))
        for addr in watches:
            feed(watch(at + 0.5, addr))
        feed(eddystone(at + 0.6, "C0:00:00:00:00:2A", NAMESPACE, 42))
        feed(eddystone(at + 0.6, "C0:00:00:00:00:A1", BEACON_NS, 0xA1))
        feed(ibeacon(at + 0.7, "D0:00:00:00:00:01"))
        feed(airtag(at + 0.7, "D0:00:00:00:00:02"))
        feed(tile(at + 0.7, "D0:00:00:00:00:03"))
        feed(phone(at + 0.8, phones[39], rssi=-85))  # below min_rssi -80
        pipeline.tick(at + 0.9)
    pipeline.tick(T0 + 60)
    # Window 2: phones 25..34 (5 of them also in window 1): each counts once in this window too.
    for second in range(60, 120):
        for n, addr in enumerate(phones[25:35]):
            feed(phone(T0 + second + n / 100, addr, seed=second + n))
        pipeline.tick(T0 + second + 0.5)
    pipeline.tick(T0 + 120)
    # Window 3: nobody.
    pipeline.tick(T0 + 180)

    found = counts(events)
    assert [(c.count, c.window_s, c.zone_id, c.visit_id) for c in found] == [(36, 60, "room-a", None),
                                                                              (10, 60, "room-a", None),
                                                                              (0, 60, "room-a", None)]
    assert [c.occurred_at for c in found] == [datetime.fromtimestamp(T0 + 60 * n, UTC) for n in (1, 2, 3)]
    stats = pipeline.stats
    assert stats.by_class["tracker"] == 120 and stats.by_class["other_beacon"] == 60
    assert stats.by_class["tag"] == 60 and stats.by_class["museum_beacon"] == 60
    assert stats.occupancy_windows == 3 and stats.occupancy_overflow == 0

    # Nothing emitted carries an address, in any form.
    wire = b"\n".join(encode_event(event) for event in events).decode().lower()
    for addr in set(fed):
        assert addr.lower() not in wire and addr.replace(":", "").lower() not in wire


def test_the_key_and_the_set_are_dropped_at_each_window():
    results: list[Any] = []
    keys = iter([b"\x01" * 32, b"\x02" * 32, b"\x03" * 32])
    counter = OccupancyCounter("room-a", OccupancySettings(window_s=60), results.append,
                               random_bytes=lambda size: next(keys))
    counter.roll(T0)
    first = counter.pseudonym("AA:BB:CC:DD:EE:FF")
    assert first == counter.pseudonym("AA:BB:CC:DD:EE:FF") and len(first) == 8
    assert first != counter.pseudonym("AA:BB:CC:DD:EE:FE")
    counter.observe(first, -50)
    counter.observe(first, -50)
    assert counter.roll(T0 + 59.9) is False
    assert counter.roll(T0 + 60) is True
    second = counter.pseudonym("AA:BB:CC:DD:EE:FF")
    assert second != first  # the same device cannot be linked across windows
    counter.observe(second, -50)
    counter.roll(T0 + 120)
    assert [(r.count, r.at) for r in results] == [(1, T0 + 60), (1, T0 + 120)]


def test_real_keys_are_random_per_window():
    counter = OccupancyCounter("room-a", OccupancySettings(), lambda count: None)
    seen = set()
    for window in range(5):
        counter.roll(T0 + 60 * window)
        seen.add(counter.pseudonym("AA:BB:CC:DD:EE:FF"))
    assert len(seen) == 5


def test_the_set_is_bounded_and_the_count_saturates():
    rng = random.Random(8)
    pipeline, events = station(max_devices=10)
    for n in range(25):
        pipeline.feed(phone(T0 + n, address(rng)))
    pipeline.tick(T0 + 60)
    assert [c.count for c in counts(events)] == [10]
    assert pipeline.stats.occupancy_overflow == 15


def test_a_stalled_station_starts_a_new_window_when_it_resumes():
    pipeline, events = station()
    pipeline.feed(phone(T0, "AA:00:00:00:00:01"))
    pipeline.tick(T0 + 600)  # nothing ran for ten minutes
    pipeline.feed(phone(T0 + 601, "AA:00:00:00:00:02"))
    pipeline.feed(phone(T0 + 602, "AA:00:00:00:00:03"))
    pipeline.tick(T0 + 659)
    pipeline.tick(T0 + 660)
    assert [(c.count, c.occurred_at.timestamp()) for c in counts(events)] == [(1, T0 + 60), (2, T0 + 660)]


def test_trackers_are_recognised_by_their_frames():
    assert is_tracker(airtag(T0, "D0:00:00:00:00:02"))
    assert is_tracker(tile(T0, "D0:00:00:00:00:03"))
    assert not is_tracker(phone(T0, "D0:00:00:00:00:04"))
    assert not is_tracker(Advert(T0, "D0:00:00:00:00:05", -60, manufacturer_data=((APPLE_COMPANY_ID, b""),)))
