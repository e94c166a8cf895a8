"""The station pipeline as a whole: classification of real frame bytes, malformed frames counted by code, any
input survived, nothing emitted that carries an address, deterministic replays, the bounded caches; and the tag
identities and tag QR text."""

from __future__ import annotations

import math
import random
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hardware.pipeline as pipeline_module
from bus.config import BrokerSettings, ClientConfig
from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert
from hardware.beacons import EddystoneUID, IBeacon
from hardware.pipeline import StationPipeline
from hardware.settings import StationSettings
from hardware.tags import tag_id_for
from protocol.codec import decode_event, encode_event, encode_sightings
from protocol.messages import Sightings
from qr.codes import parse_tag_text, tag_qr_text

T0 = 1_700_000_000.0
TAG_NS = "6d757365756d2d746167"
TAG_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
BEACON_NS = "6d757365756d2d62636e"
EDDY = EDDYSTONE_SERVICE_UUID


def uid_data(namespace: str, instance: int, tx_power_0m: int = -18) -> bytes:
    return bytes([0x00, tx_power_0m & 0xFF]) + bytes.fromhex(namespace) + instance.to_bytes(6, "big") + b"\0\0"


def ibeacon_data(uuid: str, major: int, minor: int, power: int = -59) -> bytes:
    return (bytes([0x02, 0x15]) + bytes.fromhex(uuid.replace("-", "")) + struct.pack(">HHb", major, minor, power))


def tlm_data(battery_mv: int) -> bytes:
    return struct.pack(">BBHhII", 0x20, 0x00, battery_mv, 20 * 256, 5000, 36000)


def settings_for(device: str = "gw-a", **gateway: Any) -> StationSettings:
    table = {"zone_id": "room-a", "tag_namespace": TAG_NS, "tag_ibeacon_uuid": TAG_UUID,
             "artworks": [{"id": "monet"}],
             "beacons": [{"id": "door", "eddystone": f"{BEACON_NS}:0000000000a1"},
                         {"id": "stairs", "ibeacon": "e2c56db5-dffb-48d2-b060-d0f5a71096e1:1:7"}],
             "proximity": {"min_dwell_s": 2}, **gateway}
    config = ClientConfig("demo", device, "gateway", BrokerSettings("127.0.0.1", 1883, device, "x"),
                          extra={"gateway": table})
    return StationSettings.from_config(config, Path("station.toml"))


def station(device: str = "gw-a", emit: Any = None, **gateway: Any) -> tuple[StationPipeline, list[Any]]:
    events: list[Any] = []
    return StationPipeline(settings_for(device, **gateway), site_id="demo", device_id=device,
                           emit=emit or events.append), events


def gallery(seconds: int, seed: int = 11) -> tuple[list[Advert], set[str]]:
    """A busy minute or more: tags walking up to the work and away, museum beacons with TLM, phones with changing
    payloads and rotating addresses, AirTags, a shop's iBeacon, and some malformed frames."""
    rng = random.Random(seed)
    adverts: list[Advert] = []

    def mac() -> str:
        return ":".join(f"{rng.randrange(256):02X}" for _ in range(6))

    tags = [(mac(), n, rng.uniform(0.5, 6.0)) for n in range(12)]
    phones = [mac() for _ in range(40)]
    for second in range(seconds):
        at = T0 + second
        for addr, instance, distance in tags:
            near = distance if (second // 30 + instance) % 2 else 8.0
            rssi = round(-59 - 20 * math.log10(near) + rng.gauss(0, 3))
            adverts.append(Advert(at + rng.random(), addr, rssi, service_data=((EDDY, uid_data(TAG_NS, instance)),)))
        adverts.append(Advert(at + 0.1, "E0:00:00:00:00:A1", -70,
                              service_data=((EDDY, uid_data(BEACON_NS, 0xA1)),)))
        if second % 10 == 0:
            adverts.append(Advert(at + 0.2, "E0:00:00:00:00:A1", -70, service_data=((EDDY, tlm_data(2400)),)))
            adverts.append(Advert(at + 0.3, "C1:00:00:00:00:07", -65, manufacturer_data=(
                (APPLE_COMPANY_ID, ibeacon_data(TAG_UUID, 0, 7)),)))
        if second % 45 == 0:
            phones[rng.randrange(len(phones))] = mac()  # an address rotation
        for addr in rng.sample(phones, 20):
            adverts.append(Advert(at + rng.random(), addr, rng.randint(-90, -50), manufacturer_data=(
                (APPLE_COMPANY_ID, bytes([0x10, 0x05, rng.randrange(256), 0x1C, 0x11, 0x22, 0x33])),)))
        adverts.append(Advert(at + 0.4, "D0:00:00:00:00:02", -50, manufacturer_data=(
            (APPLE_COMPANY_ID, bytes([0x12, 0x19, 0x10]) + bytes(24)),)))
        adverts.append(Advert(at + 0.5, "D0:00:00:00:00:03", -60, service_data=((EDDY, b"\x20\x01" + bytes(16)),)))
    adverts.sort(key=lambda advert: advert.at)
    return adverts, {advert.address for advert in adverts}


def replay(pipeline: StationPipeline, adverts: list[Advert]) -> list[Sightings]:
    views = []
    next_tick = adverts[0].at
    for advert in adverts:
        while advert.at >= next_tick:
            pipeline.tick(next_tick)
            view = pipeline.sightings(next_tick)
            if view is not None:
                views.append(view)
            next_tick += 1.0
        pipeline.feed(advert)
    pipeline.tick(next_tick + 120)
    return views


# --- classification ---------------------------------------------------------------------------------------

def test_every_kind_of_advert_is_classified_and_counted():
    pipeline, _ = station()
    feed = pipeline.feed
    feed(Advert(T0, "A1", -60, service_data=((EDDY, uid_data(TAG_NS, 42)),)))                    # tag (Eddystone)
    feed(Advert(T0, "A2", -60, manufacturer_data=((APPLE_COMPANY_ID, ibeacon_data(TAG_UUID, 1, 2)),)))  # tag
    feed(Advert(T0, "A3", -60, service_data=((EDDY, uid_data(BEACON_NS, 0xA1)),)))               # museum beacon
    feed(Advert(T0, "A4", -60, manufacturer_data=(
        (APPLE_COMPANY_ID, ibeacon_data("e2c56db5-dffb-48d2-b060-d0f5a71096e1", 1, 7)),)))      # museum beacon
    feed(Advert(T0, "A5", -60, service_data=((EDDY, uid_data("00112233445566778899", 1)),)))     # another's
    feed(Advert(T0, "A6", -60, service_data=((EDDY, b"\x10\xee\x01abc\x07"),)))                  # Eddystone-URL
    feed(Advert(T0, "A3", -60, service_data=((EDDY, tlm_data(3000)),)))                          # TLM
    feed(Advert(T0, "A7", -60, manufacturer_data=((0x0006, b"\x03\x00\x80" + bytes(20)),)))      # a PC
    feed(Advert(T0, "A8", -60, manufacturer_data=((APPLE_COMPANY_ID, b"\x12\x19\x10" + bytes(24)),)))  # AirTag
    stats = pipeline.stats
    assert stats.by_class == {"device": 1, "tracker": 1, "tag": 2, "museum_beacon": 2, "tlm": 1, "other_beacon": 2,
                              "rejected": 0}
    assert stats.frames == {"eddystone_uid": 3, "ibeacon": 2, "eddystone_url": 1, "eddystone_tlm": 1, "none": 2}
    assert stats.tags_tracked == 2 and stats.errors == 0


def test_malformed_frames_are_counted_by_code():
    pipeline, events = station()
    bad = [
        ((), ((EDDY, uid_data(TAG_NS, 1)[:12]),)),                                       # truncated UID
        ((), ((EDDY, uid_data(TAG_NS, 1) + b"\0"),)),                                    # bad_length
        ((), ((EDDY, b"\x50\x00\x00"),)),                                                # unknown_eddystone_frame
        ((), ((EDDY, b"\x20\x01" + bytes(16)),)),                                        # encrypted_tlm
        ((), ((EDDY, b"\x20\x01" + bytes(16)),)),                                        # encrypted_tlm, again
        ((), ((EDDY, b"\x10\xee\x09abc"),)),                                             # bad_url_scheme
        (((APPLE_COMPANY_ID, ibeacon_data(TAG_UUID, 1, 2)[:20]),), ()),                  # truncated iBeacon
        (((APPLE_COMPANY_ID, b"\x02\x16" + bytes(21)),), ()),                            # bad_length iBeacon
    ]
    for n, (manufacturer, service) in enumerate(bad):
        pipeline.feed(Advert(T0 + n, f"F0:00:00:00:00:{n:02X}", -60, manufacturer, service))
    stats = pipeline.stats
    assert stats.rejected == {"truncated": 2, "bad_length": 2, "unknown_eddystone_frame": 1, "encrypted_tlm": 2,
                              "bad_url_scheme": 1}
    assert stats.by_class["rejected"] == 8 and stats.errors == 0
    assert [e.type for e in events] == []


def test_ibeacon_tags_and_the_tag_power_override():
    pipeline, events = station(tag_measured_power=-70)
    for n in range(20):  # RSSI -65 with -70 at 1 m: well inside 1.5 m; with the frame's -59 it would be 2 m
        pipeline.feed(Advert(T0 + n / 4, "C1:00:00:00:00:07", -65, manufacturer_data=(
            (APPLE_COMPANY_ID, ibeacon_data(TAG_UUID, 0x12, 0x3456)),)))
    assert [(e.type, e.tag_id) for e in events] == [("proximity.entered", "t-00123456")]


def test_tag_ids_and_museum_beacons_from_frames():
    config_settings = settings_for()
    uid = EddystoneUID(bytes.fromhex(TAG_NS), bytes.fromhex("00000000002a"), -18)
    assert tag_id_for(uid, config_settings) == "t-00000000002a"
    assert tag_id_for(replace(uid, namespace=bytes(10)), config_settings) is None
    beacon = IBeacon(bytes.fromhex(TAG_UUID.replace("-", "")), 0xBEEF, 1, -59)
    assert tag_id_for(beacon, config_settings) == "t-beef0001"
    assert tag_id_for(replace(beacon, uuid=bytes(16)), config_settings) is None
    no_tags = replace(config_settings, tag_namespace=None, tag_ibeacon_uuid=None)
    assert tag_id_for(uid, no_tags) is None and tag_id_for(beacon, no_tags) is None


# --- tag QR text ------------------------------------------------------------------------------------------

def test_tag_qr_text_round_trips():
    text = tag_qr_text("demo", "t-00000000002a")
    assert text == "MUSEUM-TAG:demo:t-00000000002a"
    assert parse_tag_text(text) == ("demo", "t-00000000002a")
    assert parse_tag_text(" MUSEUM-TAG:DEMO:T-00000000002A\n") == ("demo", "t-00000000002a")  # alphanumeric QR mode
    assert parse_tag_text(tag_qr_text("site-2", "t-beef0001")) == ("site-2", "t-beef0001")
    with pytest.raises(ValueError):
        tag_qr_text("demo", "00000000002a")


@pytest.mark.parametrize("text", [
    "", "MUSEUM-TAG:", "MUSEUM-TAG:demo", "MUSEUM-TAG:demo:", "MUSEUM-TAG:demo:t-2a", "MUSEUM-TAG:demo:t-00000000002g",
    "MUSEUM-TAG:demo:x-00000000002a", "MUSEUM-TAG:demo:t-00000000002a:extra", "MUSEUM-TAG::t-00000000002a",
    "MUSEUM-TAG:-demo:t-00000000002a", "MUSEUM:demo:t-00000000002a", "https://example.org/v/abc",
    "MUSEUM-TAG:demo:t-00000000002a" + " " * 300, "MUSEUM-TAG:dé:t-00000000002a",
])
def test_tag_qr_parse_refuses_anything_else(text):
    assert parse_tag_text(text) is None


# --- any input ----------------------------------------------------------------------------------------------

def test_feed_tick_and_peer_never_raise_on_any_input():
    pipeline, _events = station()
    odd: list[Any] = [
        None, "advert", Advert(float("nan"), "A1", -60), Advert(float("inf"), "A1", -60), Advert(-5.0, "A1", -60),
        Advert(T0, "A1", 127), Advert(T0, "A1", float("nan")), Advert(T0, "A1", "-60"),  # type: ignore[arg-type]
        Advert(T0, None, -60), Advert(T0, "A1", -60, manufacturer_data=None),  # type: ignore[arg-type]
        Advert(T0, "A1", -60, manufacturer_data=((APPLE_COMPANY_ID, None),)),  # type: ignore[arg-type]
        Advert(T0, "A1", -60, service_data=((EDDY, "text"),)),  # type: ignore[arg-type]
        Advert(T0, "A1", -60, service_data=((None, b"\x00"),)),  # type: ignore[arg-type]
    ]
    for advert in odd:
        pipeline.feed(advert)
    rng = random.Random(4)
    for n in range(3000):  # random bytes in every place a beacon could be
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        choice = n % 3
        advert = Advert(T0 + n / 100, f"F1:00:00:00:{n >> 8:02X}:{n & 0xFF:02X}", rng.randint(-100, -30),
                        manufacturer_data=(((APPLE_COMPANY_ID, payload),) if choice == 0 else
                                           ((rng.randrange(65536), payload),) if choice == 1 else ()),
                        service_data=((EDDY, payload),) if choice == 2 else ())
        pipeline.feed(advert)
    for now in (float("nan"), float("inf"), T0 + 100, None):
        pipeline.tick(now)  # type: ignore[arg-type]
    pipeline.peer(None, T0)  # type: ignore[arg-type]
    pipeline.peer(Sightings("gw-b", "room-b", datetime.fromtimestamp(T0, UTC), None), T0)  # type: ignore[arg-type]
    pipeline.sightings(T0 + 100)
    stats = pipeline.stats
    assert stats.adverts == len(odd) + 3000
    assert stats.bad_time == 3 + 2 and stats.bad_rssi == 2
    assert stats.errors >= 7 and ":" in stats.last_error
    assert stats.frames  # the random bytes did go through the parsers


def test_an_emit_that_fails_is_counted_and_the_station_goes_on():
    calls: list[Any] = []

    def failing(event: Any) -> None:
        calls.append(event)
        raise OSError("outbox full")

    pipeline, _ = station(emit=failing, proximity={"min_dwell_s": 0})
    for n in range(8):
        pipeline.feed(Advert(T0 + n, "C0:00:00:00:00:2A", -55, service_data=((EDDY, uid_data(TAG_NS, 42)),)))
    pipeline.tick(T0 + 60)
    stats = pipeline.stats
    assert sorted(e.type for e in calls) == ["occupancy.counted", "proximity.entered", "proximity.left"]
    assert stats.event_errors == 3 and stats.events == 0 and stats.errors == 0
    # The visit did end (the state machine finished its transition): the tag coming back is a new visit.
    pipeline.feed(Advert(T0 + 70, "C0:00:00:00:00:2A", -55, service_data=((EDDY, uid_data(TAG_NS, 42)),)))
    assert calls[-1].type == "proximity.entered"


# --- privacy and determinism ------------------------------------------------------------------------------

def test_nothing_emitted_or_published_carries_an_address():
    pipeline, events = station()
    adverts, addresses = gallery(200)
    views = replay(pipeline, adverts)
    kinds = {event.type for event in events}
    assert {"proximity.entered", "proximity.left", "occupancy.counted", "beacon.health", "beacon.alert"} <= kinds
    assert views
    wire = (b"\n".join(encode_event(event) for event in events) + b"\n".join(map(encode_sightings, views))
            + repr(pipeline.stats).encode()).decode().lower()
    for address in addresses:
        for form in (address.lower(), address.replace(":", "").lower(), address.replace(":", "-").lower()):
            assert form not in wire
    for event in events:  # and every event is valid on the wire
        assert decode_event(encode_event(event)) == event


def test_a_replay_gives_the_same_events():
    adverts, _ = gallery(150, seed=2)
    runs = []
    for _ in range(2):
        pipeline, events = station()
        replay(pipeline, adverts)
        runs.append([{k: v for k, v in vars(e).items() if k != "event_id"} for e in events])
    assert runs[0] == runs[1] and len(runs[0]) > 10


def test_the_frame_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(pipeline_module, "MAX_ADDRESSES", 100)
    pipeline, events = station()
    for n in range(250):
        pipeline.feed(Advert(T0 + n / 10, f"F2:00:00:00:{n >> 8:02X}:{n & 0xFF:02X}", -60,
                             manufacturer_data=((0x0006, b"\x03\x00\x80" + bytes(20)),)))
    pipeline.tick(T0 + 60)
    assert pipeline.stats.cache_resets == 2
    assert [e.count for e in events if e.type == "occupancy.counted"] == [250]  # counting is not affected
