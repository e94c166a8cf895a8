"""RSSI smoothing, distance, and tags at artworks through the whole station pipeline: hysteresis, timeouts, dwell,
and the room rule between stations of different zones (sightings exchanged as the runtime does).

Adverts are real Eddystone-UID bytes; time is only the adverts' `at` and the `now` given to tick/peer."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bus.config import BrokerSettings, ClientConfig
from hardware.advert import EDDYSTONE_SERVICE_UUID, Advert
from hardware.pipeline import StationPipeline
from hardware.settings import StationSettings
from hardware.smoothing import RssiKalman, distance_m, rssi_at
from protocol.codec import decode_sightings, encode_sightings
from protocol.events import ProximityEntered, ProximityLeft
from protocol.messages import MAX_SIGHTINGS, Sightings

T0 = 1_700_000_000.0
NAMESPACE = "6d757365756d2d746167"
POWER_1M = -59  # the tags below send tx power at 0 m of -18 dBm: -59 dBm at 1 m


def uid(instance: int, tx_power_0m: int = -18) -> bytes:
    """Eddystone-UID service data: frame type, tx power at 0 m, namespace (10), instance (6), RFU (2)."""
    return bytes([0x00, tx_power_0m & 0xFF]) + bytes.fromhex(NAMESPACE) + instance.to_bytes(6, "big") + b"\0\0"


def tag_advert(at: float, instance: int, distance: float, noise: float = 0.0) -> Advert:
    rssi = round(rssi_at(distance, POWER_1M, 2.0) + noise)
    return Advert(at, f"C0:00:00:00:{instance >> 8:02X}:{instance & 0xFF:02X}", rssi,
                  service_data=((EDDYSTONE_SERVICE_UUID, uid(instance)),))


def station(zone: str = "room-a", device: str = "gw-a", **gateway: Any) -> tuple[StationPipeline, list[Any]]:
    """A station watching "monet", and the events it emits (without its occupancy counts, one a minute)."""
    table = {"zone_id": zone, "tag_namespace": NAMESPACE, "artworks": [{"id": "monet"}], **gateway}
    config = ClientConfig("demo", device, "gateway", BrokerSettings("127.0.0.1", 1883, device, "x"),
                          extra={"gateway": table})
    events: list[Any] = []

    def emit(event: Any) -> None:
        if event.type != "occupancy.counted":
            events.append(event)

    return StationPipeline(StationSettings.from_config(config, Path("station.toml")), site_id="demo",
                           device_id=device, emit=emit), events


def walk(pipeline: StationPipeline, path: list[tuple[float, float]], *, instance: int = 42, rate: float = 4.0,
         sigma: float = 0.0, seed: int = 1) -> None:
    """Feed a tag moving along (seconds from T0, distance) segments at `rate` adverts/s, ticking every second."""
    rng = random.Random(seed)
    for (start, distance), (end, _) in itertools.pairwise(path):
        steps = round((end - start) * rate)
        for step in range(steps):
            at = T0 + start + step / rate
            pipeline.feed(tag_advert(at, instance, distance, rng.gauss(0, sigma) if sigma else 0.0))
            if step % round(rate) == 0:
                pipeline.tick(at)


def kinds(events: list[Any]) -> list[str]:
    return [event.type for event in events]





# --- smoothing and distance --------------------------------------------------------------------------------

def test_distance_follows_the_log_distance_model():
    assert distance_m(-59, -59, 2.0) == pytest.approx(1.0)
    assert distance_m(-79, -59, 2.0) == pytest.approx(10.0)
    assert distance_m(-89, -59, 3.0) == pytest.approx(10.0)
    assert distance_m(rssi_at(2.7, -61, 2.4), -61, 2.4) == pytest.approx(2.7)


@pytest.mark.parametrize(("rate", "factor", "within"), [(1.0, 2.2, 8), (10.0, 3.8, 23)])
def test_kalman_reduces_4_db_noise_and_follows_a_step(rate, factor, within):
    """The figures of hardware/smoothing.py's docstring: noise σ 4 dB reduced ≥ `factor`×; a 15 dB step 90 %
    followed within `within` samples."""
    rng = random.Random(3)
    kalman = RssiKalman(-60, T0)
    smoothed = [kalman.update(-60 + rng.gauss(0, 4), T0 + i / rate) for i in range(1, 5001)][100:]
    assert statistics.pstdev(smoothed) < 4 / factor
    assert abs(statistics.fmean(smoothed) + 60) < 0.3  # no bias

    kalman = RssiKalman(-60, T0)
    for i in range(1, 50):
        kalman.update(-60, T0 + i / rate)
    samples = next(n for n in range(1, 1000) if kalman.update(-75, T0 + (49 + n) / rate) <= -73.5)
    assert samples <= within


def test_kalman_trusts_a_sample_after_a_gap_more_than_one_in_a_burst():
    dense, gap = RssiKalman(-60, T0), RssiKalman(-60, T0)
    for i in range(1, 20):
        dense.update(-60, T0 + i * 0.1)
        gap.update(-60, T0 + i * 0.1)
    burst = dense.update(-80, T0 + 1.95) - -60
    after_gap = gap.update(-80, T0 + 31.9) - -60
    assert after_gap < burst < 0  # moved further towards -80 after 30 s of silence
    before = gap.variance
    gap.update(-60, gap.last_at - 5)  # a late sample still counts, but no time passes
    assert gap.last_at == T0 + 31.9 and gap.variance < before


# --- enter and leave ----------------------------------------------------------------------------------------

def test_enter_then_leave_by_range_with_dwell():
    pipeline, events = station()
    walk(pipeline, [(0, 6.0), (10, 1.0), (70, 6.0), (100, 6.0)])
    assert kinds(events) == ["proximity.entered", "proximity.left"]
    entered, left = events
    assert isinstance(entered, ProximityEntered) and isinstance(left, ProximityLeft)
    assert (entered.artwork_id, entered.zone_id, entered.tag_id, entered.visit_id) == ("monet", "room-a",
                                                                                    "t-00000000002a", None)
    assert left.tag_id == "t-00000000002a" and left.visit_id is None
    # The smoothed distance needs a few samples to cross each line: the visit is ~60 s, within a few seconds.
    assert entered.occurred_at >= datetime.fromtimestamp(T0 + 10, UTC)
    assert 55 <= left.dwell_s <= 65
    assert left.dwell_s == pytest.approx((left.occurred_at - entered.occurred_at).total_seconds(), abs=0.002)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_no_flapping_at_the_boundary_under_noise(seed):
    """A visitor lingering right at enter_m, σ 4 dB noise, 4 adverts/s for 5 minutes: one visit, no flapping,
    although the raw readings cross the leave distance again and again."""
    pipeline, events = station()
    walk(pipeline, [(0, 6.0), (10, 1.5), (310, 1.5)], sigma=4.0, seed=seed)
    assert kinds(events) == ["proximity.entered"]
    rng = random.Random(seed)
    raw_out = sum(distance_m(round(rssi_at(1.5, POWER_1M, 2.0) + rng.gauss(0, 4)), POWER_1M, 2.0) > 2.5
                  for _ in range(1200))
    assert raw_out > 50  # without smoothing and hysteresis this would be dozens of leaves


def test_timeout_leave_ends_the_visit_when_last_heard():
    pipeline, events = station()
    walk(pipeline, [(0, 1.0), (30, 1.0)])  # heard until T0 + 29.75
    last_heard = T0 + 29.75
    for second in range(30, 49):  # leave_after_s is 20: not yet
        pipeline.tick(T0 + second)
    assert kinds(events) == ["proximity.entered"]
    pipeline.tick(T0 + 50)
    assert kinds(events) == ["proximity.entered", "proximity.left"]
    entered, left = events
    assert left.occurred_at == datetime.fromtimestamp(last_heard, UTC)
    assert left.dwell_s == pytest.approx(last_heard - entered.occurred_at.timestamp(), abs=0.002)
    assert entered.occurred_at == datetime.fromtimestamp(T0, UTC)  # near from the first advert
    assert pipeline.stats.tags_tracked == 0  # forgotten


def test_a_walk_by_shorter_than_min_dwell_is_no_visit():
    pipeline, events = station(proximity={"min_dwell_s": 5})
    walk(pipeline, [(0, 8.0), (20, 0.8), (23, 8.0), (60, 8.0)])
    assert events == []
    pipeline, events = station(proximity={"min_dwell_s": 0})
    walk(pipeline, [(0, 8.0), (20, 0.8), (23, 8.0), (60, 8.0)])
    assert kinds(events) == ["proximity.entered", "proximity.left"]


def test_each_artwork_has_its_own_range_and_zone():
    pipeline, events = station(artworks=[{"id": "near-one"}, {"id": "wide-one", "enter_m": 4, "leave_m": 6,
                                                             "zone_id": "room-b"}])
    walk(pipeline, [(0, 10.0), (10, 3.0), (40, 3.0)])
    assert [(e.type, e.artwork_id, e.zone_id) for e in events] == [("proximity.entered", "wide-one", "room-b")]


def test_tracked_tags_are_bounded_and_the_stalest_goes_first():
    pipeline, events = station(proximity={"max_tags": 10, "min_dwell_s": 0})
    for instance in range(25):
        pipeline.feed(tag_advert(T0 + instance, instance, 1.0))
    stats = pipeline.stats
    assert stats.tags_tracked == 10 and stats.tags_evicted == 15
    # Each evicted tag was inside: its visit ended when it was last heard, not left open.
    left = [e for e in events if e.type == "proximity.left"]
    assert [e.tag_id for e in left] == [f"t-{i:012x}" for i in range(15)]
    assert all(e.dwell_s == 0 for e in left)


# --- rooms: the nearest station wins ------------------------------------------------------------------------

def exchange(stations: list[StationPipeline], now: float) -> None:
    views = [s.sightings(now) for s in stations]
    for view in views:
        if view is not None:
            decoded = decode_sightings(encode_sightings(view))  # as on the wire
            for other in stations:
                other.peer(decoded, now)


def two_rooms(path_a: list[tuple[float, float]], path_b: list[tuple[float, float]], *, same_zone: bool = False,
              exchange_views: bool = True, until: float = 120.0) -> tuple[list[Any], list[Any], StationPipeline]:
    a, events_a = station("room-a", "gw-a")
    b, events_b = station("room-a" if same_zone else "room-b", "gw-b")

    def distance(path: list[tuple[float, float]], t: float) -> float:
        return [d for start, d in path if start <= t][-1]

    rng = random.Random(9)
    for quarter in range(int(until * 4)):
        t = quarter / 4
        a.feed(tag_advert(T0 + t, 42, distance(path_a, t), rng.gauss(0, 2)))
        b.feed(tag_advert(T0 + t + 0.01, 42, distance(path_b, t), rng.gauss(0, 2)))
        if quarter % 4 == 3:
            a.tick(T0 + t)
            b.tick(T0 + t)
            if exchange_views:
                exchange([a, b], T0 + t)
    return events_a, events_b, b


def test_only_the_nearer_station_of_another_room_enters():
    events_a, events_b, b = two_rooms([(0, 8.0), (10, 0.8)], [(0, 8.0), (10, 1.2)])
    assert kinds(events_a) == ["proximity.entered"]
    assert events_b == []
    assert b.stats.enters_suppressed >= 1
    # Without the shared sightings both would have entered.
    events_a, events_b, _ = two_rooms([(0, 8.0), (10, 0.8)], [(0, 8.0), (10, 1.2)], exchange_views=False)
    assert kinds(events_a) == kinds(events_b) == ["proximity.entered"]


def test_stations_of_the_same_zone_do_not_suppress_each_other():
    events_a, events_b, _ = two_rooms([(0, 8.0), (10, 0.8)], [(0, 8.0), (10, 1.2)], same_zone=True)
    assert kinds(events_a) == kinds(events_b) == ["proximity.entered"]


def test_a_tag_moving_to_the_other_room_leaves_here_and_enters_there():
    events_a, events_b, _ = two_rooms([(0, 0.8), (60, 4.0)], [(0, 1.3), (60, 0.7)])
    assert kinds(events_a) == ["proximity.entered", "proximity.left"]
    assert kinds(events_b) == ["proximity.entered"]
    moved = datetime.fromtimestamp(T0 + 60, UTC)
    assert events_a[1].occurred_at >= moved and events_b[0].occurred_at >= moved  # B only once A is farther


def test_a_clearly_nearer_peer_pushes_a_tag_inside_out_of_this_room():
    b, events = station("room-b", "gw-b")
    walk(b, [(0, 1.2), (20, 1.2)])
    assert kinds(events) == ["proximity.entered"]
    now = T0 + 20
    b.peer(Sightings("gw-a", "room-a", datetime.fromtimestamp(now, UTC), (("t-00000000002a", 1.1),)), now)
    assert kinds(events) == ["proximity.entered"]  # not clearly nearer (ROOM_MARGIN): no doorway flapping
    b.peer(Sightings("gw-a", "room-a", datetime.fromtimestamp(now, UTC), (("t-00000000002a", 0.4),)), now)
    assert kinds(events) == ["proximity.entered", "proximity.left"]
    assert events[1].dwell_s == pytest.approx(20, abs=0.5)


def test_stale_and_own_sightings_are_ignored():
    b, events = station("room-b", "gw-b")
    now = T0 + 20
    b.peer(Sightings("gw-a", "room-a", datetime.fromtimestamp(now - 6, UTC), (("t-00000000002a", 0.1),)), now)
    b.peer(Sightings("gw-b", "room-a", datetime.fromtimestamp(now, UTC), (("t-00000000002a", 0.1),)), now)
    walk(b, [(20, 1.0), (40, 1.0)])
    assert kinds(events) == ["proximity.entered"]
    assert b.stats.peers_stale == 1 and b.stats.own_sightings == 1


def test_peers_are_bounded():
    b, _ = station("room-b", "gw-b")
    now = T0
    many = tuple((f"t-{i:012x}", 1.0) for i in range(MAX_SIGHTINGS + 500))
    for peer in range(70):
        b.peer(Sightings(f"gw-{peer}", "room-a", datetime.fromtimestamp(now, UTC), many), now)
    stats = b.stats
    assert stats.peers_dropped == 70 - 64 and stats.errors == 0


# --- this station's sightings ---------------------------------------------------------------------------------

def test_sightings_only_when_changed_rate_limited_and_kept_alive():
    pipeline, _ = station(device="gw-a")
    assert pipeline.sightings(T0) is None  # nothing heard
    for i in range(8):
        pipeline.feed(tag_advert(T0 + i / 8, 42, 3.0))
    first = pipeline.sightings(T0 + 1)
    assert first is not None and first.device_id == "gw-a" and first.zone_id == "room-a"
    assert [tag for tag, _ in first.tags] == ["t-00000000002a"]
    assert first.tags[0][1] == pytest.approx(3.0, rel=0.1)
    assert decode_sightings(encode_sightings(first)) == first
    pipeline.feed(tag_advert(T0 + 1.2, 42, 3.0))
    assert pipeline.sightings(T0 + 1.5) is None  # interval_s
    assert pipeline.sightings(T0 + 2.5) is None  # unchanged
    assert pipeline.sightings(T0 + 3.6) is not None  # resent after half the peers' TTL: it must not expire there
    for i in range(8):
        pipeline.feed(tag_advert(T0 + 4 + i / 8, 42, 3.05))
    assert pipeline.sightings(T0 + 5) is None  # 5 cm is noise
    for i in range(20):
        pipeline.feed(tag_advert(T0 + 5 + i / 8, 42, 1.0))
    moved = pipeline.sightings(T0 + 8)
    assert moved is not None and moved.tags[0][1] < 2.0
    gone = pipeline.sightings(T0 + 14)  # not heard for more than peer_ttl_s: no longer in the view
    assert gone is not None and gone.tags == ()
    assert pipeline.sightings(T0 + 20) is None


def test_sightings_are_capped_at_the_nearest_max_sightings():
    pipeline, _ = station(proximity={"max_tags": 5000})
    for instance in range(MAX_SIGHTINGS + 100):
        pipeline.feed(tag_advert(T0 + instance / 1000, instance, 1.0 + instance / 100))
    view = pipeline.sightings(T0 + 3)
    assert view is not None and len(view.tags) == MAX_SIGHTINGS
    assert max(distance for _, distance in view.tags) < 1.0 + (MAX_SIGHTINGS + 1) / 100
    assert math.isfinite(view.tags[-1][1])
