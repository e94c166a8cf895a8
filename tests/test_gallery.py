"""hardware.gallery: the simulated busy gallery has the crowd it says, is the same for a seed, and every frame
in it is real bytes that hardware.beacons reads (the deliberately malformed ones rejected with their codes)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

import pytest

from hardware.beacons import EddystoneTLM, EddystoneUID, IBeacon, Rejected, parse_advert
from hardware.gallery import (
    DEFAULT_BEACON_NAMESPACE,
    DEFAULT_IBEACON_UUID,
    DEFAULT_NAMESPACE,
    MALFORMED,
    STATION,
    adverts_for,
    busy_gallery,
    gallery_devices,
)

START = 1_767_000_000.0
SEED = 11


@pytest.fixture(scope="module")
def gallery():
    return busy_gallery(SEED)


@pytest.fixture(scope="module")
def devices():
    return {device.address: device for device in gallery_devices(SEED) if device.address is not None}


def test_defaults_and_time_order(gallery):
    assert len(gallery) > 30_000
    times = [advert.at for advert in gallery]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + 120
    assert all(-100 <= advert.rssi <= -20 for advert in gallery)


def test_the_crowd_is_all_there(gallery, devices):
    kinds = Counter(device.kind for device in gallery_devices(SEED))
    assert kinds == {"tag": 220, "phone": 320, "beacon": 12, "odd": 5}
    tags: set[int] = set()
    beacons: set[bytes] = set()
    others: set[str] = set()
    for advert in gallery:
        frame = parse_advert(advert)
        if isinstance(frame, EddystoneUID) and frame.namespace == DEFAULT_NAMESPACE:
            tags.add(int.from_bytes(frame.instance, "big"))
        elif isinstance(frame, IBeacon):
            assert (frame.uuid, frame.major) == (DEFAULT_IBEACON_UUID, 1)
            tags.add(frame.minor)
        elif isinstance(frame, EddystoneUID):
            assert frame.namespace == DEFAULT_BEACON_NAMESPACE
            beacons.add(frame.instance)
        elif frame is None:
            others.add(advert.address)
    assert tags == set(range(1, 221))
    assert beacons == {n.to_bytes(6, "big") for n in range(1, 13)}
    # Every phone heard, some twice: their private addresses change about every 15 minutes.
    assert 320 <= len(others) <= 400
    assert not others & devices.keys()
    ibeacons = sum(1 for advert in gallery if isinstance(parse_advert(advert), IBeacon))
    assert 0 < ibeacons < len(gallery) / 4


def test_every_frame_parses_and_only_the_odd_ones_are_rejected(gallery, devices):
    rejected: Counter[str] = Counter()
    for advert in gallery:
        device = devices.get(advert.address)
        result = parse_advert(advert)
        if device is not None and device.kind == "odd":
            assert isinstance(result, Rejected), advert
            rejected[result.code] += 1
        elif device is None:
            assert result is None, advert  # a phone or a watch
        else:
            assert result is not None and not isinstance(result, Rejected), advert
            if device.kind == "tag":
                number = result.minor if isinstance(result, IBeacon) else int.from_bytes(result.instance, "big")
                assert number == device.tag_number
    assert set(rejected) == {code for code, _, _ in MALFORMED}
    share = sum(rejected.values()) / len(gallery)
    assert 0.005 <= share <= 0.02


def test_museum_beacons_interleave_uid_and_tlm_from_one_address(gallery, devices):
    frames: dict[str, Counter[str]] = defaultdict(Counter)
    tlm: dict[str, list[EddystoneTLM]] = defaultdict(list)
    last: dict[str, float] = {}
    for advert in gallery:
        device = devices.get(advert.address)
        if device is None or device.kind != "beacon":
            continue
        frame = parse_advert(advert)
        frames[device.name][type(frame).__name__] += 1
        last[device.name] = advert.at
        if isinstance(frame, EddystoneTLM):
            tlm[device.name].append(frame)
    assert len(frames) == 12
    for name, counts in frames.items():
        assert set(counts) == {"EddystoneUID", "EddystoneTLM"}, name
        assert 2 <= counts["EddystoneUID"] / counts["EddystoneTLM"] <= 4.5, name
        reports = tlm[name]
        assert [r.adv_count for r in reports] == sorted(r.adv_count for r in reports)
        assert [r.uptime_s for r in reports] == sorted(r.uptime_s for r in reports)
    assert {r.battery_mv for r in tlm["beacon-00"]} == {2150}
    assert {(r.battery_mv, r.temperature_c) for r in tlm["beacon-01"]} == {(None, None)}
    assert all(r.battery_mv and r.battery_mv >= 2800 and 19 < r.temperature_c < 24 for r in tlm["beacon-05"])
    assert last["beacon-02"] < START + 61  # goes silent half way
    assert last["beacon-03"] > START + 115


def test_same_seed_same_gallery_other_seed_other_gallery():
    one = busy_gallery(5, tags=20, phones=30, beacons=2, duration_s=30)
    assert one == busy_gallery(5, tags=20, phones=30, beacons=2, duration_s=30)
    assert one != busy_gallery(6, tags=20, phones=30, beacons=2, duration_s=30)
    assert busy_gallery(5, tags=20, phones=30, beacons=2, duration_s=30, start=START + 10)[0].at >= START + 10


def test_the_iterator_is_the_list():
    kwargs = {"tags": 10, "phones": 10, "beacons": 1, "duration_s": 20.0}
    assert list(adverts_for(3, **kwargs)) == busy_gallery(3, **kwargs)


def test_tags_keep_their_course_when_the_station_moves():
    """Moving the station changes what it hears (RSSI, losses), not what the visitors and their tags do."""
    here = busy_gallery(9, tags=30, phones=0, beacons=0, duration_s=30)
    there = busy_gallery(9, tags=30, phones=0, beacons=0, duration_s=30, station=(30.0, 6.0))
    sent_here = {(a.address, a.at) for a in here if parse_advert(a) is not None}
    sent_there = {(a.address, a.at) for a in there if parse_advert(a) is not None}
    both = sent_here & sent_there
    assert len(both) > 0.7 * min(len(sent_here), len(sent_there))
    assert [a.rssi for a in here if (a.address, a.at) in both][:200] != \
        [a.rssi for a in there if (a.address, a.at) in both][:200]


def test_rssi_falls_with_distance(gallery, devices):
    """The path-loss model: a beacon beside the station is heard far louder than one in the other room."""
    by_beacon: dict[str, list[int]] = defaultdict(list)
    for advert in gallery:
        device = devices.get(advert.address)
        if device is not None and device.kind == "beacon":
            by_beacon[device.name].append(advert.rssi)
    near = statistics.mean(by_beacon["beacon-01"])  # at the work beside the station
    far = statistics.mean(by_beacon["beacon-07"])  # the far room's far wall
    assert STATION == (10.0, 3.0)
    assert near - far > 20
    assert statistics.stdev(by_beacon["beacon-01"]) == pytest.approx(4.0, abs=1.0)


def test_phones_rotate_private_addresses():
    adverts = busy_gallery(4, tags=0, phones=15, beacons=0, duration_s=1800)
    addresses = {a.address for a in adverts if parse_advert(a) is None}
    assert len(addresses) > 15 + 5  # 30 minutes: most phones still there changed address at least once
    for address in addresses:
        assert int(address[:2], 16) >> 6 == 0b01  # resolvable private
        assert len(address) == 17 and address == address.upper()


def test_bad_namespace_is_refused():
    with pytest.raises(ValueError, match="10 bytes"):
        busy_gallery(1, namespace=b"short")
