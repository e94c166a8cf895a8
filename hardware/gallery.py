"""A busy gallery, simulated: what one station hears in two rooms full of visitors, as `Advert`s carrying the real
bytes each kind of device sends. Deterministic for a seed, for tests, benchmarks and the demo.

Who is there (`gallery_devices`):
- visitors walking between the works, each with a phone or watch and, for the first `tags` of them, a visitor tag:
  Eddystone-UID under `namespace` (instance = the tag's number), or for one in ten iBeacon under `ibeacon_uuid`
  (major 1, minor = the tag's number);
- phones and watches: Apple "nearby" (0x10) and proximity-pairing frames, Find My frames, Google Fast Pair service
  data, Samsung and Microsoft (0x0006) frames, none a beacon format, each from a random private address that
  changes about every 15 minutes with new payload bytes;
- the museum's own beacons, fixed at the works: Eddystone-UID under `beacon_namespace` with a TLM frame every
  fourth advert from the same address; beacon 0 has a low battery, beacon 1 measures neither battery nor
  temperature, beacon 2 goes silent half way through;
- a few odd gadgets whose every frame is malformed (about 1 % of the adverts), cycling through `MALFORMED`.

What the station hears: the received power follows a log-distance path-loss model with Gaussian noise, a wall
between the rooms, a sensitivity floor and a share of adverts lost to collisions. Each device draws from its own
`random.Random` seeded by the seed and its name (its radio draws also by the station's position), so moving the
station changes what it hears, not what the visitors do, and a different count of phones leaves the tags as they
were.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter

from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert

# --- the model's constants --------------------------------------------------------------------------------------

ROOMS = ((0.0, 0.0, 20.0, 12.0), (20.0, 0.0, 35.0, 12.0))
"""Two rooms side by side (x0, y0, x1, y1) in metres."""
DOOR = (20.0, 6.0)
"""The doorway between them: visitors going to the other room walk through it."""
ENTRANCE = (0.5, 6.0)
"""Where a visitor arriving during the run appears."""
WORKS = ((3.0, 1.5), (10.0, 1.5), (17.0, 1.5), (3.0, 10.5), (10.0, 10.5), (17.0, 10.5),
         (24.0, 1.5), (31.0, 1.5), (24.0, 10.5), (31.0, 10.5))
"""The works visitors stop at (the first six in the first room)."""
STATION = (10.0, 3.0)
"""Default position of the listening station: beside the second work of the first room."""
STAND_OFF_M = 1.0
"""How far from a work a visitor stands looking at it (at most, in each direction)."""
DWELL_MEAN_S = 30.0
"""Mean time a visitor stays at a work (exponential)."""
DWELL_MIN_S = 5.0
"""Nobody stops for less."""
WALK_SPEED_M_S = (0.6, 1.4)
"""Each visitor's walking speed is drawn uniformly from this range."""
PRESENT_SHARE = 0.75
"""Visitors already in the rooms at the start; the others arrive in the first 60 % of the run."""
LEAVE_SHARE = 0.15
"""Visitors present at the start who leave between 30 % and 90 % of the run."""
TAG_INTERVAL_S = 1.0
"""Advertising interval of a visitor tag."""
PHONE_INTERVAL_S = (0.8, 2.0)
"""A phone's advertising interval is drawn uniformly from this range."""
BEACON_INTERVAL_S = 0.5
"""Advertising interval of a museum beacon."""
TLM_EVERY = 4
"""A museum beacon sends a TLM frame every this many adverts, UID frames otherwise."""
ODD_INTERVAL_S = 1.0
"""Advertising interval of a gadget sending malformed frames."""
ADV_DELAY_S = 0.010
"""The Bluetooth Core Specification's random advDelay (0–10 ms) added to every advertising interval."""
ROTATE_S = (780.0, 1020.0)
"""A phone's private address changes every 13–17 min (the usual 15 min, randomised)."""
IBEACON_SHARE = 0.1
"""Share of the visitor tags that are iBeacons."""
SHORT_UID_SHARE = 0.2
"""Share of the Eddystone tags that omit the two RFU bytes (18-byte UID frames)."""
TAG_TX_0M = -18
"""A tag's calibrated power at 0 m (Eddystone) in dBm, -59 dBm at 1 m."""
BEACON_TX_0M = -16
"""A museum beacon's calibrated power at 0 m in dBm."""
PHONE_POWER_1M = (-66.0, -56.0)
"""A phone's received power at 1 m in dBm, drawn uniformly per device (they differ a lot)."""
CALIBRATION_SD_DB = 2.0
"""How far a device's true power at 1 m strays from what its frame says (standard deviation)."""
PATH_LOSS_EXPONENT = 2.2
"""Indoor log-distance path-loss exponent (free space is 2; people and walls add some)."""
NOISE_SD_DB = 4.0
"""Standard deviation of the Gaussian noise on each RSSI reading (fading, bodies, orientation)."""
WALL_LOSS_DB = 6.0
"""Extra loss when the sender and the station are in different rooms."""
MIN_DISTANCE_M = 0.3
"""Closer than this the model's distance is clamped (a tag held against the station)."""
SENSITIVITY_DBM = -100
"""Adverts received weaker than this are not heard."""
LOSS_SHARE = 0.05
"""Share of adverts lost anyway (collisions, the scan window switching channels)."""
ODD_PER_DEVICES = 110
"""One malformed-frame gadget for this many tags and phones: about 1 % of the adverts."""

DEFAULT_NAMESPACE = bytes.fromhex("4d555345554d2d544147")
"""The visitor tags' Eddystone namespace ("MUSEUM-TAG" in ASCII)."""
DEFAULT_IBEACON_UUID = bytes.fromhex("6d757365756d2d746167732d69626561")
"""The visitor tags' iBeacon proximity UUID."""
DEFAULT_BEACON_NAMESPACE = bytes.fromhex("4d555345554d2d424541")
"""The museum beacons' Eddystone namespace ("MUSEUM-BEA")."""

FAST_PAIR_UUID = "0000fe2c-0000-1000-8000-00805f9b34fb"
MICROSOFT_COMPANY_ID = 0x0006
SAMSUNG_COMPANY_ID = 0x0075

MALFORMED: tuple[tuple[str, tuple[tuple[int, bytes], ...], tuple[tuple[str, bytes], ...]], ...] = (
    ("truncated", (), ((EDDYSTONE_SERVICE_UUID, bytes.fromhex("00ee") + bytes(15)),)),  # UID of 17 bytes
    ("bad_url_scheme", (), ((EDDYSTONE_SERVICE_UUID, bytes.fromhex("10ee07") + b"museum"),)),
    ("bad_url_byte", (), ((EDDYSTONE_SERVICE_UUID, bytes.fromhex("10ee03") + b"muse\x19um"),)),
    ("unknown_eddystone_frame", (), ((EDDYSTONE_SERVICE_UUID, bytes.fromhex("50ee0102")),)),
    ("encrypted_tlm", (), ((EDDYSTONE_SERVICE_UUID, bytes.fromhex("2001") + bytes(range(16))),)),
    ("bad_length", ((APPLE_COMPANY_ID, bytes.fromhex("0214") + bytes(20)),), ()),  # iBeacon length byte 0x14
    ("truncated", ((0x0118, bytes.fromhex("beac") + bytes(21)),), ()),  # AltBeacon of 23 bytes
)
"""(the code hardware.beacons gives it, manufacturer data, service data) of each malformed frame."""


# --- people and devices -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Walker:
    """A visitor's path: straight legs, each (start time, x, y, end time, x, y), one after another; present from
    the first leg's start to the last leg's end."""

    legs: tuple[tuple[float, float, float, float, float, float], ...]
    starts: tuple[float, ...]

    @property
    def arrive(self) -> float:
        return self.starts[0]

    @property
    def leave(self) -> float:
        return self.legs[-1][3]

    def position(self, at: float) -> tuple[float, float]:
        t0, x0, y0, t1, x1, y1 = self.legs[max(0, bisect_right(self.starts, at) - 1)]
        if at <= t0:
            return x0, y0
        if at >= t1:
            return x1, y1
        share = (at - t0) / (t1 - t0)
        return x0 + (x1 - x0) * share, y0 + (y1 - y0) * share


@dataclass(frozen=True, slots=True)
class Device:
    """One sender in the simulation (its ground truth, for tests)."""

    kind: str
    """"tag", "phone", "beacon" or "odd" (malformed frames)."""
    name: str
    """e.g. "tag-0042", "phone-0007-iphone", "beacon-03", "odd-01"."""
    address: str | None
    """Its fixed address; None for phones (their private address changes)."""
    tag_number: int | None = None
    """A tag's number: its Eddystone instance or iBeacon minor."""


_Emission = tuple[float, str, tuple[tuple[int, bytes], ...], tuple[tuple[str, bytes], ...], tuple[str, ...]]
"""(time, address, manufacturer data, service data, service UUIDs): one advert as sent."""


@dataclass(frozen=True, slots=True)
class _Sender:
    device: Device
    power_1m: float
    position: Callable[[float], tuple[float, float]]
    emissions: Callable[[random.Random, float, float], Iterator[_Emission]]


def gallery_devices(seed: int, *, tags: int = 220, phones: int = 320, beacons: int = 12) -> list[Device]:
    """Every device of the gallery `busy_gallery` simulates with these arguments."""
    return [sender.device for sender in _senders(seed, tags=tags, phones=phones, beacons=beacons, duration_s=1.0,
                                                 start=0.0, namespace=DEFAULT_NAMESPACE,
                                                 ibeacon_uuid=DEFAULT_IBEACON_UUID,
                                                 beacon_namespace=DEFAULT_BEACON_NAMESPACE)]


def adverts_for(seed: int, *, tags: int = 220, phones: int = 320, beacons: int = 12, duration_s: float = 120,
                start: float = 1_767_000_000.0, namespace: bytes = DEFAULT_NAMESPACE,
                ibeacon_uuid: bytes = DEFAULT_IBEACON_UUID, beacon_namespace: bytes = DEFAULT_BEACON_NAMESPACE,
                station: tuple[float, float] = STATION) -> Iterator[Advert]:
    """The adverts a station at `station` hears from `start` for `duration_s` seconds, in time order, made as
    they are consumed (for a demo that replays them at their pace)."""
    senders = _senders(seed, tags=tags, phones=phones, beacons=beacons, duration_s=duration_s, start=start,
                       namespace=namespace, ibeacon_uuid=ibeacon_uuid, beacon_namespace=beacon_namespace)
    end = start + duration_s
    streams = [_heard(sender, seed, station, start, end) for sender in senders]
    return heapq.merge(*streams, key=attrgetter("at"))


def busy_gallery(seed: int, *, tags: int = 220, phones: int = 320, beacons: int = 12, duration_s: float = 120,
                 start: float = 1_767_000_000.0, namespace: bytes = DEFAULT_NAMESPACE,
                 ibeacon_uuid: bytes = DEFAULT_IBEACON_UUID, beacon_namespace: bytes = DEFAULT_BEACON_NAMESPACE,
                 station: tuple[float, float] = STATION) -> list[Advert]:
    """Everything `adverts_for` yields, as a list sorted by `at`."""
    return list(adverts_for(seed, tags=tags, phones=phones, beacons=beacons, duration_s=duration_s, start=start,
                            namespace=namespace, ibeacon_uuid=ibeacon_uuid, beacon_namespace=beacon_namespace,
                            station=station))


# --- the radio --------------------------------------------------------------------------------------------------

def _room(x: float) -> int:
    return 0 if x < ROOMS[0][2] else 1


def _heard(sender: _Sender, seed: int, station: tuple[float, float], start: float, end: float) -> Iterator[Advert]:
    sent = random.Random(f"{seed}:{sender.device.name}:sent")
    radio = random.Random(f"{seed}:{sender.device.name}:radio:{station[0]}:{station[1]}")
    sx, sy = station
    station_room = _room(sx)
    for at, address, manufacturer, service, uuids in sender.emissions(sent, start, end):
        x, y = sender.position(at)
        distance = max(MIN_DISTANCE_M, math.hypot(x - sx, y - sy))
        rssi = sender.power_1m - 10 * PATH_LOSS_EXPONENT * math.log10(distance) + radio.gauss(0.0, NOISE_SD_DB)
        if _room(x) != station_room:
            rssi -= WALL_LOSS_DB
        lost = radio.random() < LOSS_SHARE
        if rssi < SENSITIVITY_DBM or lost:
            continue
        yield Advert(at=round(at, 6), address=address, rssi=round(rssi), manufacturer_data=manufacturer,
                     service_data=service, service_uuids=uuids)


def _ticks(rng: random.Random, interval: float, start: float, end: float) -> Iterator[float]:
    """Advertising instants: a random phase, then the interval plus advDelay."""
    at = start + rng.uniform(0.0, interval)
    while at < end:
        yield at
        at += interval + rng.uniform(0.0, ADV_DELAY_S)


# --- who is there -----------------------------------------------------------------------------------------------

def random_address(rng: random.Random, top_bits: int) -> str:
    """A random address whose two most significant bits are `top_bits` (0b11 static random, 0b01 resolvable
    private: the kinds tags and phones use)."""
    first = (top_bits << 6) | rng.getrandbits(6)
    return ":".join(f"{byte:02X}" for byte in (first, *rng.randbytes(5)))


def _walker(rng: random.Random, start: float, end: float) -> Walker:
    duration = end - start
    if rng.random() < PRESENT_SHARE:
        arrive = start
        leave = start + rng.uniform(0.3, 0.9) * duration if rng.random() < LEAVE_SHARE else end
        work = rng.randrange(len(WORKS))
        here = _near(rng, WORKS[work])
        dwell = rng.uniform(0.0, DWELL_MEAN_S * 2)  # part of a stay begun before the run
    else:
        arrive = start + rng.uniform(0.0, 0.6) * duration
        leave = end
        work = -1
        here = ENTRANCE
        dwell = 0.0
    speed = rng.uniform(*WALK_SPEED_M_S)
    legs: list[tuple[float, float, float, float, float, float]] = []
    at = arrive
    while at < leave:
        if dwell:
            legs.append((at, *here, at + dwell, *here))
            at += dwell
        work = rng.choice([other for other in range(len(WORKS)) if other != work])
        target = _near(rng, WORKS[work])
        stops = [DOOR, target] if _room(here[0]) != _room(target[0]) else [target]
        for stop in stops:
            walk = math.hypot(stop[0] - here[0], stop[1] - here[1]) / speed
            legs.append((at, *here, at + walk, *stop))
            at += walk
            here = stop
        dwell = max(DWELL_MIN_S, rng.expovariate(1 / DWELL_MEAN_S))
    if not legs:
        legs.append((arrive, *here, leave, *here))
    # The last leg is cut at the time the visitor leaves.
    t0, x0, y0, t1, x1, y1 = legs[-1]
    if t1 > leave:
        share = (leave - t0) / (t1 - t0) if t1 > t0 else 1.0
        legs[-1] = (t0, x0, y0, leave, x0 + (x1 - x0) * share, y0 + (y1 - y0) * share)
    return Walker(tuple(legs), tuple(leg[0] for leg in legs))


def _near(rng: random.Random, spot: tuple[float, float]) -> tuple[float, float]:
    return spot[0] + rng.uniform(-STAND_OFF_M, STAND_OFF_M), spot[1] + rng.uniform(-STAND_OFF_M, STAND_OFF_M)


def _senders(seed: int, *, tags: int, phones: int, beacons: int, duration_s: float, start: float, namespace: bytes,
             ibeacon_uuid: bytes, beacon_namespace: bytes) -> list[_Sender]:
    if len(namespace) != 10 or len(beacon_namespace) != 10 or len(ibeacon_uuid) != 16:
        raise ValueError("an Eddystone namespace is 10 bytes and an iBeacon UUID 16")
    end = start + duration_s
    walkers = [_walker(random.Random(f"{seed}:walker:{i}"), start, end) for i in range(max(tags, phones))]
    senders: list[_Sender] = []
    for i in range(tags):
        senders.append(_tag(random.Random(f"{seed}:tag:{i}"), i + 1, walkers[i], namespace, ibeacon_uuid))
    for i in range(phones):
        senders.append(_phone(random.Random(f"{seed}:phone:{i}"), i, walkers[i]))
    for i in range(beacons):
        senders.append(_beacon(random.Random(f"{seed}:beacon:{i}"), i, beacon_namespace, start, end))
    odd = -(-(tags + phones) // ODD_PER_DEVICES) if tags + phones else 0
    for i in range(odd):
        senders.append(_odd(random.Random(f"{seed}:odd:{i}"), i))
    return senders


def _tag(rng: random.Random, number: int, walker: Walker, namespace: bytes, ibeacon_uuid: bytes) -> _Sender:
    address = random_address(rng, 0b11)
    noise = rng.gauss(0.0, CALIBRATION_SD_DB)
    manufacturer: tuple[tuple[int, bytes], ...] = ()
    service: tuple[tuple[str, bytes], ...] = ()
    uuids: tuple[str, ...] = ()
    if rng.random() < IBEACON_SHARE:
        power = TAG_TX_0M - 41
        data = bytes((0x02, 0x15)) + ibeacon_uuid + (1).to_bytes(2, "big") + number.to_bytes(2, "big") + \
            power.to_bytes(1, "big", signed=True)
        manufacturer = ((APPLE_COMPANY_ID, data),)
    else:
        uid = bytes((0x00,)) + TAG_TX_0M.to_bytes(1, "big", signed=True) + namespace + number.to_bytes(6, "big")
        if rng.random() >= SHORT_UID_SHARE:
            uid += bytes(2)
        service, uuids = ((EDDYSTONE_SERVICE_UUID, uid),), (EDDYSTONE_SERVICE_UUID,)

    def emissions(sent: random.Random, start: float, end: float) -> Iterator[_Emission]:
        for at in _ticks(sent, TAG_INTERVAL_S, max(start, walker.arrive), min(end, walker.leave)):
            yield at, address, manufacturer, service, uuids

    return _Sender(Device("tag", f"tag-{number:04d}", address, number), TAG_TX_0M - 41 + noise, walker.position,
                   emissions)


_PHONE_MODELS = (("iphone", 45), ("watch", 10), ("airpods", 5), ("findmy", 5), ("fastpair", 20), ("samsung", 10),
                 ("windows", 5))
"""Kinds of phone-like device and their weights."""


def phone_payload(model: str, rng: random.Random) -> tuple[tuple[tuple[int, bytes], ...],
                                                             tuple[tuple[str, bytes], ...], tuple[str, ...]]:
    """What a phone of this model advertises until its address changes (then it draws new bytes)."""
    if model in ("iphone", "watch"):
        # Apple "nearby info": type 0x10, length, status flags, action code, then an authentication tag.
        status = 0x1B if model == "iphone" else 0x98
        data = bytes((0x10, 0x05, status, rng.choice((0x18, 0x1C, 0x1E)))) + rng.randbytes(3)
        return ((APPLE_COMPANY_ID, data),), (), ()
    if model == "airpods":
        # Apple proximity pairing: type 0x07, length 0x19, then 25 bytes (model, status, battery, encrypted part).
        return ((APPLE_COMPANY_ID, bytes((0x07, 0x19, 0x01, 0x0E, 0x20)) + rng.randbytes(22)),), (), ()
    if model == "findmy":
        # Apple offline finding: type 0x12, length 0x19, status, 22 bytes of public key, 2 more.
        return ((APPLE_COMPANY_ID, bytes((0x12, 0x19, 0x10)) + rng.randbytes(24)),), (), ()
    if model == "fastpair":
        # Google Fast Pair, not discoverable: flags 0x00, an account key filter (type 0x6, 6 bytes), a salt.
        data = bytes((0x00, 0x60)) + rng.randbytes(6) + bytes((0x11,)) + rng.randbytes(1)
        return (), ((FAST_PAIR_UUID, data),), (FAST_PAIR_UUID,)
    if model == "samsung":
        return ((SAMSUNG_COMPANY_ID, bytes((0x42, 0x04, 0x01, 0x80, 0x60)) + rng.randbytes(19)),), (), ()
    # Microsoft's Connected Devices Platform beacon: scenario 0x01, device type, version, flags, a salt and hash.
    return ((MICROSOFT_COMPANY_ID, bytes((0x01, 0x09, 0x20, 0x02)) + rng.randbytes(23)),), (), ()


def _phone(rng: random.Random, index: int, walker: Walker) -> _Sender:
    models, weights = zip(*_PHONE_MODELS, strict=True)
    model = rng.choices(models, weights)[0]
    interval = rng.uniform(*PHONE_INTERVAL_S)
    period = rng.uniform(*ROTATE_S)
    phase = rng.uniform(0.0, period)

    def emissions(sent: random.Random, start: float, end: float) -> Iterator[_Emission]:
        rotates = start + phase
        address = random_address(sent, 0b01)
        manufacturer, service, uuids = phone_payload(model, sent)
        for at in _ticks(sent, interval, max(start, walker.arrive), min(end, walker.leave)):
            while at >= rotates:
                rotates += period
                address = random_address(sent, 0b01)
                manufacturer, service, uuids = phone_payload(model, sent)
            yield at, address, manufacturer, service, uuids

    return _Sender(Device("phone", f"phone-{index:04d}-{model}", None), rng.uniform(*PHONE_POWER_1M),
                   walker.position, emissions)


def _beacon(rng: random.Random, index: int, namespace: bytes, start: float, end: float) -> _Sender:
    address = "AC:23:3F:" + ":".join(f"{byte:02X}" for byte in rng.randbytes(3))  # a beacon maker's public range
    work = WORKS[index % len(WORKS)]
    spot = (work[0], work[1] + (-0.4 if work[1] > 6 else 0.4) * (1 + index // len(WORKS)))  # on the wall behind
    uid = bytes((0x00,)) + BEACON_TX_0M.to_bytes(1, "big", signed=True) + namespace + (index + 1).to_bytes(6, "big") \
        + bytes(2)
    service_uuids = (EDDYSTONE_SERVICE_UUID,)
    uid_data = ((EDDYSTONE_SERVICE_UUID, uid),)
    battery = 2150 if index == 0 else 0 if index == 1 else 3000 - rng.randrange(0, 200)
    celsius = 21.0 + rng.uniform(-1.0, 2.0)
    booted = start - rng.uniform(3600.0, 30 * 86400.0)
    count0 = rng.randrange(0, 1_000_000)
    stops = start + (end - start) / 2 if index == 2 else end

    def emissions(sent: random.Random, begin: float, finish: float) -> Iterator[_Emission]:
        for n, at in enumerate(_ticks(sent, BEACON_INTERVAL_S, begin, min(finish, stops))):
            if n % TLM_EVERY == TLM_EVERY - 1:
                temperature = -0x8000 if index == 1 else round((celsius + sent.uniform(-0.1, 0.1)) * 256)
                tlm = bytes((0x20, 0x00)) + battery.to_bytes(2, "big") + temperature.to_bytes(2, "big", signed=True) \
                    + ((count0 + n) & 0xFFFFFFFF).to_bytes(4, "big") + int((at - booted) * 10).to_bytes(4, "big")
                yield at, address, (), ((EDDYSTONE_SERVICE_UUID, tlm),), service_uuids
            else:
                yield at, address, (), uid_data, service_uuids

    return _Sender(Device("beacon", f"beacon-{index:02d}", address), BEACON_TX_0M - 41 + rng.gauss(0.0, 1.0),
                   lambda _at: spot, emissions)


def _odd(rng: random.Random, index: int) -> _Sender:
    address = random_address(rng, 0b11)
    spot = (rng.uniform(1.0, 34.0), rng.uniform(1.0, 11.0))

    def emissions(sent: random.Random, start: float, end: float) -> Iterator[_Emission]:
        for n, at in enumerate(_ticks(sent, ODD_INTERVAL_S, start, end)):
            _, manufacturer, service = MALFORMED[(index + n) % len(MALFORMED)]
            yield at, address, manufacturer, service, ()

    return _Sender(Device("odd", f"odd-{index:02d}", address), -59.0, lambda _at: spot, emissions)
