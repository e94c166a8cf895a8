"""Beacon and tag health through the station pipeline: Eddystone-TLM attributed by sender, reports rate-limited,
low-battery and not-heard alerts each once, heard_again, and no not_heard for tags or while the scanner is deaf.

Frames are real bytes: Eddystone-UID and TLM (version 0: battery mV, temperature 8.8, advert count, uptime 0.1 s)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from bus.config import BrokerSettings, ClientConfig
from hardware.advert import EDDYSTONE_SERVICE_UUID, Advert
from hardware.pipeline import StationPipeline
from hardware.settings import StationSettings
from protocol.events import BeaconAlert, BeaconHealth

T0 = 1_700_000_000.0
TAG_NS = "6d757365756d2d746167"
BEACON_NS = "6d757365756d2d62636e"
DOOR = "E0:00:00:00:00:A1"
TAG = "C0:00:00:00:00:2A"


def uid(at: float, address: str, namespace: str, instance: int) -> Advert:
    data = bytes([0x00, 0xEE]) + bytes.fromhex(namespace) + instance.to_bytes(6, "big") + b"\0\0"
    return Advert(at, address, -70, service_data=((EDDYSTONE_SERVICE_UUID, data),))


def tlm(at: float, address: str, battery_mv: int, *, temperature: float = 21.5, count: int = 1000,
        uptime_s: float = 3600.0) -> Advert:
    data = struct.pack(">BBHhII", 0x20, 0x00, battery_mv, round(temperature * 256), count, round(uptime_s * 10))
    return Advert(at, address, -70, service_data=((EDDYSTONE_SERVICE_UUID, data),))


def station(**health: Any) -> tuple[StationPipeline, list[Any]]:
    table = {"zone_id": "room-a", "tag_namespace": TAG_NS, "silence_s": 60,
             "beacons": [{"id": "door", "eddystone": f"{BEACON_NS}:0000000000a1"},
                         {"id": "window", "eddystone": f"{BEACON_NS}:0000000000a2"}],
             "health": {"report_every_s": 600, "not_heard_s": 300, **health}}
    config = ClientConfig("demo", "gw-a", "gateway", BrokerSettings("127.0.0.1", 1883, "gw-a", "x"),
                          extra={"gateway": table})
    events: list[Any] = []

    def emit(event: Any) -> None:
        if event.type.startswith("beacon."):
            events.append(event)

    return StationPipeline(StationSettings.from_config(config, Path("station.toml")), site_id="demo",
                           device_id="gw-a", emit=emit), events


def run(pipeline: StationPipeline, start: float, end: float, *, door: int | None = None, tag: int | None = None,
        window: bool = True, every: float = 10.0) -> None:
    """From `start` to `end` seconds after T0, every `every` s: UID frames of the beacons heard, a TLM with the
    given battery (mV) from `door` and the tag, and a tick each second."""
    second = start
    while second < end:
        at = T0 + second
        if window:
            pipeline.feed(uid(at, "E0:00:00:00:00:A2", BEACON_NS, 0xA2))
        if door is not None:
            pipeline.feed(uid(at, DOOR, BEACON_NS, 0xA1))
            pipeline.feed(tlm(at + 0.1, DOOR, door, count=int(second)))
        if tag is not None:
            pipeline.feed(uid(at, TAG, TAG_NS, 42))
            pipeline.feed(tlm(at + 0.1, TAG, tag))
        for tick in range(int(every)):
            pipeline.tick(at + tick + 0.5)
        second += every


def alerts(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.beacon_id, e.alert) for e in events if isinstance(e, BeaconAlert)]


def reports(events: list[Any]) -> list[BeaconHealth]:
    return [e for e in events if isinstance(e, BeaconHealth)]


def test_health_is_reported_at_most_once_per_period_from_the_latest_tlm():
    pipeline, events = station()
    run(pipeline, 0, 1300, door=3000)
    found = reports(events)
    assert [r.beacon_id for r in found] == ["door"] * 3  # at 0, 600 and 1200 s
    assert [r.occurred_at.timestamp() for r in found] == [T0 + 0.1, T0 + 600.1, T0 + 1200.1]
    first = found[0]
    assert (first.battery_mv, first.temperature_c, first.uptime_s, first.adverts, first.visit_id) == (
        3000, 21.5, 3600.0, 0, None)
    assert found[1].adverts == 600  # the latest telemetry, not the first


def test_low_battery_alerts_once_and_again_only_after_recovery():
    pipeline, events = station()
    run(pipeline, 0, 100, door=2600)
    run(pipeline, 100, 300, door=2400)  # low: one alert for 20 frames
    run(pipeline, 300, 400, door=2550)  # back above, but within the 100 mV margin: battery noise
    run(pipeline, 400, 500, door=2450)
    assert alerts(events) == [("door", "low_battery")]
    assert "2400 mV" in next(e for e in events if isinstance(e, BeaconAlert)).detail
    run(pipeline, 500, 600, door=2700)  # recovered (new batteries)
    run(pipeline, 600, 700, door=2300)
    assert alerts(events) == [("door", "low_battery"), ("door", "low_battery")]


def test_a_silent_museum_beacon_alerts_once_then_heard_again():
    pipeline, events = station()
    run(pipeline, 0, 100, door=3000)
    run(pipeline, 100, 1000)  # only the window beacon is heard: the station itself hears fine
    assert alerts(events) == [("door", "not_heard")]
    alert = next(e for e in events if isinstance(e, BeaconAlert))
    assert alert.occurred_at.timestamp() == pytest.approx(T0 + 90 + 300, abs=1.0)
    run(pipeline, 1000, 1100, door=3000)
    assert alerts(events) == [("door", "not_heard"), ("door", "heard_again")]
    again = [e for e in events if isinstance(e, BeaconAlert)][1]
    assert again.occurred_at.timestamp() == T0 + 1000 and "heard again after" in again.detail


def test_a_beacon_never_heard_alerts_after_not_heard_from_the_start():
    pipeline, events = station()
    run(pipeline, 0, 400, window=False, door=3000)  # "window" is never heard
    assert alerts(events) == [("window", "not_heard")]


def test_tags_get_health_and_low_battery_but_never_not_heard():
    pipeline, events = station()
    run(pipeline, 0, 100, tag=2400)
    run(pipeline, 100, 5000)  # the tag is back in its drawer
    assert [r.beacon_id for r in reports(events)] == ["t-00000000002a"]
    # The checks did run (the never-heard "door" beacon got its alert); the silent tag got none.
    assert alerts(events) == [("t-00000000002a", "low_battery"), ("door", "not_heard")]


def test_no_not_heard_while_the_scanner_is_deaf_and_a_fresh_period_after():
    pipeline, events = station()
    run(pipeline, 0, 100, door=3000)
    for second in range(100, 2000):  # nothing at all is heard: the scanner's fault, reported elsewhere
        pipeline.tick(T0 + second)
    assert alerts(events) == []
    run(pipeline, 2000, 2200, window=True)  # hearing again; "door" gets a full not_heard_s from now
    assert alerts(events) == []
    run(pipeline, 2200, 2400, window=True)
    assert alerts(events) == [("door", "not_heard")]


def test_tlm_without_a_known_sender_is_counted_not_guessed():
    pipeline, events = station()
    pipeline.feed(tlm(T0, "F0:00:00:00:00:01", 2000))
    assert events == [] and pipeline.stats.tlm_unattributed == 1
    # A beacon that does not measure its battery (0 mV) is reported without it, and raises no alert.
    pipeline.feed(uid(T0 + 1, DOOR, BEACON_NS, 0xA1))
    pipeline.feed(tlm(T0 + 2, DOOR, 0))
    assert [(r.beacon_id, r.battery_mv) for r in reports(events)] == [("door", None)]
    assert alerts(events) == []
