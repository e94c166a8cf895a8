"""The demo's radio: the visitors of one room as the BLE adverts a station beside the room's featured work hears.

`museum simulate gateway` feeds these adverts to a real station (hardware.runtime.GatewayRuntime on a
hardware.ble.FakeRadio), so the demo's proximity and occupancy events come from the station's own code.

- Who: visitors arrive at random (Poisson, `visitors_per_hour`) and walk through the room as the visit simulator
  walks them (`demo.simulation.room_walk`: the works in a random order, popular ones stopped at more often and
  longer, a log-normal dwell of median about 40 s). Each carries a phone; TAG_SHARE of them also carry a lent
  visitor tag, taken from the room's share of the museum's tags (`room_tags`) and handed back when they leave, so
  a tag is never in two hands at once (nor in two rooms: the pool is dealt round the rooms).
- Where: the station stands beside the featured work (the room's most popular). A visitor stopping at it is NEAR_M
  from the station; stopping at another work or walking between works, ELSEWHERE_M; once gone, silent.
- What it hears: a tag sends Eddystone-UID under the tag namespace about once a second; a phone sends non-beacon
  frames (Apple "nearby", Google Fast Pair, Samsung: hardware.gallery's builders) from a random private address
  every 1.5–2.5 s. RSSI follows the log-distance model with Gaussian noise; a few adverts are lost.

Deterministic: everything is drawn from `random.Random`s seeded by `seed`, on a clock in seconds from the `start`
given to `adverts`. Bounded: at most `max_present` visitors at once (a room guard turns the others away, counted
in `turned_away`), and adverts are made as they are consumed, from a heap of one entry per device present.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from content.model import Artwork, Museum
from demo.simulation import TAG_POOL, room_walk, tag_id_of
from hardware.advert import EDDYSTONE_SERVICE_UUID, Advert
from hardware.gallery import ADV_DELAY_S, DEFAULT_NAMESPACE, PHONE_POWER_1M, TAG_TX_0M, phone_payload, random_address

DEMO_TAG_NAMESPACE = DEFAULT_NAMESPACE
"""The Eddystone namespace of the demo's visitor tags ("MUSEUM-TAG" in ASCII), in every demo station's table."""
TAG_SHARE = 0.4
"""Visitors carrying a lent tag (when the room's share of the pool has one free)."""
TAG_INTERVAL_S = 1.0
PHONE_INTERVAL_S = (1.5, 2.5)
PHONE_MODELS = (("iphone", 55), ("fastpair", 25), ("samsung", 20))
"""Phones only: a lost-item tracker is an object, and the station rightly does not count it."""
_MODELS = [model for model, _ in PHONE_MODELS]
_WEIGHTS = [weight for _, weight in PHONE_MODELS]
NEAR_M = (0.5, 1.1)
"""A visitor looking at the featured work, from the station beside it (drawn per stop)."""
ELSEWHERE_M = (3.0, 8.0)
"""A visitor at another work of the room or walking between works (drawn per stop and per walk)."""
TAG_POWER_1M = TAG_TX_0M - 41
"""A tag's RSSI at 1 m, as its frames say (-59 dBm)."""
PATH_LOSS_EXPONENT = 2.0
"""The station's default: its distance estimates are then right on average."""
NOISE_SD_DB = 3.0
MIN_DISTANCE_M = 0.3
LOSS_SHARE = 0.03
ROOM_SHARE = 0.6
"""Visitors let in at once, as a share of the room's capacity: a lively room, not an overcrowded one."""
MAX_PRESENT = 500

# The [gateway] table of a demo station: short timings, so that things happen within a demo minute.
ENTER_M = 1.5
LEAVE_M = 2.5
LEAVE_AFTER_S = 10.0
OCCUPANCY_WINDOW_S = 30.0


def featured_work(museum: Museum, zone_id: str) -> Artwork:
    """The room's most popular work (the first of them in the museum's order on a tie)."""
    works = museum.artworks_in(zone_id)
    if not works:
        raise ValueError(f"room {zone_id!r} of {museum.site_id} has no work for a station to stand beside")
    return max(works, key=lambda artwork: artwork.popularity)


def room_tags(museum: Museum, zone_id: str) -> tuple[int, ...]:
    """The numbers of the tags lent in this room: the museum's TAG_POOL dealt round its rooms."""
    rooms = museum.zone_ids
    if zone_id not in rooms:
        raise ValueError(f"zone {zone_id!r} is not a room of {museum.site_id} (rooms: {', '.join(rooms)})")
    index = rooms.index(zone_id)
    return tuple(number for number in range(1, TAG_POOL + 1) if (number - 1) % len(rooms) == index)


def demo_gateway_table(museum: Museum, zone_id: str) -> dict[str, object]:
    """The `[gateway]` table (hardware.settings) of the demo's station in `zone_id`, beside its featured work."""
    return {"zone_id": zone_id, "tag_namespace": DEMO_TAG_NAMESPACE.hex(),
            "artworks": [{"id": featured_work(museum, zone_id).artwork_id, "enter_m": ENTER_M, "leave_m": LEAVE_M}],
            "proximity": {"leave_after_s": LEAVE_AFTER_S}, "occupancy": {"window_s": OCCUPANCY_WINDOW_S}}


@dataclass(frozen=True, slots=True)
class Spell:
    """A stretch of a visit at one distance from the station: [start, end) in seconds from the radio's start."""

    start: float
    end: float
    distance_m: float
    artwork_id: str | None
    """The work the visitor stops at; None while walking between works."""


@dataclass(frozen=True, slots=True)
class RoomVisitor:
    """One visitor's pass through the room (the simulation's ground truth, for tests)."""

    number: int
    arrived: float
    left: float
    phone_model: str
    tag_number: int | None
    spells: tuple[Spell, ...]
    """Contiguous, from `arrived` to `left`."""

    @property
    def tag_id(self) -> str | None:
        return None if self.tag_number is None else tag_id_of(self.tag_number)

    def distance_at(self, at: float) -> float | None:
        """How far from the station the visitor is at `at`; None when not in the room."""
        if not self.arrived <= at < self.left or not self.spells:
            return None
        spell = self.spells[max(0, bisect_right([s.start for s in self.spells], at) - 1)]
        return spell.distance_m

    def stops_at(self, artwork_id: str) -> list[Spell]:
        return [spell for spell in self.spells if spell.artwork_id == artwork_id]


class _Sender:
    """One device a visitor carries, advertising from its first instant until the visitor leaves."""

    __slots__ = ("address", "interval", "left", "manufacturer", "next_at", "power_1m", "radio", "service", "uuids",
                 "visitor")

    def __init__(self, visitor: RoomVisitor, rng: random.Random, radio: random.Random, interval: float,
                 address: str, power_1m: float, manufacturer: tuple[tuple[int, bytes], ...],
                 service: tuple[tuple[str, bytes], ...], uuids: tuple[str, ...]) -> None:
        self.visitor = visitor
        self.left = visitor.left
        self.radio = radio
        self.interval = interval
        self.next_at = visitor.arrived + rng.uniform(0.0, interval)
        self.address = address
        self.power_1m = power_1m
        self.manufacturer = manufacturer
        self.service = service
        self.uuids = uuids

    def advert(self, start: float) -> Advert | None:
        """What the station hears of the emission at `next_at` (None: lost), and the emission after it planned."""
        at = self.next_at
        self.next_at = at + self.interval + self.radio.uniform(0.0, ADV_DELAY_S)
        distance = self.visitor.distance_at(at)
        if distance is None or self.radio.random() < LOSS_SHARE:
            return None
        rssi = (self.power_1m - 10 * PATH_LOSS_EXPONENT * math.log10(max(MIN_DISTANCE_M, distance))
                + self.radio.gauss(0.0, NOISE_SD_DB))
        return Advert(at=round(start + at, 6), address=self.address, rssi=round(rssi),
                      manufacturer_data=self.manufacturer, service_data=self.service, service_uuids=self.uuids)


class RoomRadio:
    """One room's visitors and what a station beside `near_artwork_id` (default: the featured work) hears of them."""

    def __init__(self, museum: Museum, zone_id: str, *, seed: int | str, visitors_per_hour: float,
                 near_artwork_id: str | None = None, tag_namespace: bytes = DEMO_TAG_NAMESPACE,
                 tag_numbers: Sequence[int] | None = None, tag_share: float = TAG_SHARE,
                 max_present: int | None = None) -> None:
        if isinstance(visitors_per_hour, bool) or not 0 < visitors_per_hour < math.inf:
            raise ValueError(f"visitors_per_hour must be a positive number, got {visitors_per_hour!r}")
        if len(tag_namespace) != 10:
            raise ValueError("an Eddystone namespace is 10 bytes")
        self.museum = museum
        self.zone_id = zone_id
        self.works = museum.artworks_in(zone_id)
        self.near = near_artwork_id or featured_work(museum, zone_id).artwork_id
        if self.near not in {artwork.artwork_id for artwork in self.works}:
            raise ValueError(f"artwork {self.near!r} is not in room {zone_id!r}")
        self.seed = seed
        self.visitors_per_hour = float(visitors_per_hour)
        self.tag_namespace = tag_namespace
        self.tag_numbers = tuple(room_tags(museum, zone_id) if tag_numbers is None else tag_numbers)
        self.tag_share = tag_share
        capacity = museum.room(zone_id).capacity
        self.max_present = max_present if max_present is not None else min(
            MAX_PRESENT, max(1, round(ROOM_SHARE * capacity)))
        self.turned_away = 0
        """Visitors who found the room full (in the last `visitors()` iteration)."""

    def visitors(self) -> Iterator[RoomVisitor]:
        """The room's visitors for ever, in the order they arrive, from an empty room at 0 s."""
        rng = random.Random(f"{self.seed}:visitors")
        mean_gap = 3600.0 / self.visitors_per_hour
        free = list(self.tag_numbers)
        present: list[tuple[float, int, int | None]] = []  # (left, number, tag) heap
        self.turned_away = 0
        at = 0.0
        for number in itertools.count(1):
            at += rng.expovariate(1 / mean_gap)
            while present and present[0][0] <= at:
                _, _, returned = heapq.heappop(present)
                if returned is not None:
                    free.append(returned)
            if len(present) >= self.max_present:
                self.turned_away += 1
                continue
            walk = room_walk(rng, self.works, "", round(at * 1000))
            tag = free.pop(rng.randrange(len(free))) if rng.random() < self.tag_share and free else None
            visitor = RoomVisitor(number, walk.arrived_ms / 1000, walk.left_ms / 1000,
                                  rng.choices(_MODELS, _WEIGHTS)[0], tag,
                                  self._spells(rng, walk.arrived_ms, walk.left_ms, walk.stops))
            heapq.heappush(present, (visitor.left, number, tag))
            yield visitor

    def adverts(self, start: float, visitors: Iterable[RoomVisitor] | None = None) -> Iterator[Advert]:
        """What the station hears, in time order, `at` = `start` + the simulation's seconds; of `visitors` (default:
        `visitors()`, for ever), which must come in the order they arrive."""
        source = iter(self.visitors() if visitors is None else visitors)
        upcoming = next(source, None)
        heap: list[tuple[float, int, _Sender]] = []
        order = itertools.count()
        while True:
            if upcoming is not None and (not heap or upcoming.arrived <= heap[0][0]):
                for sender in self._senders(upcoming):
                    if sender.next_at < sender.left:
                        heapq.heappush(heap, (sender.next_at, next(order), sender))
                upcoming = next(source, None)
                continue
            if not heap:
                return
            _, _, sender = heapq.heappop(heap)
            advert = sender.advert(start)
            if sender.next_at < sender.left:
                heapq.heappush(heap, (sender.next_at, next(order), sender))
            if advert is not None:
                yield advert

    # --- the model ----------------------------------------------------------------------------------------

    def _spells(self, rng: random.Random, arrived_ms: int, left_ms: int,
                stops: tuple[tuple[Artwork, int, int], ...]) -> tuple[Spell, ...]:
        spells: list[Spell] = []
        cursor = arrived_ms
        for artwork, begin, end in stops:
            if begin > cursor:
                spells.append(Spell(cursor / 1000, begin / 1000, rng.uniform(*ELSEWHERE_M), None))
            near = artwork.artwork_id == self.near
            spells.append(Spell(begin / 1000, end / 1000, rng.uniform(*(NEAR_M if near else ELSEWHERE_M)),
                                artwork.artwork_id))
            cursor = end
        if left_ms > cursor:
            spells.append(Spell(cursor / 1000, left_ms / 1000, rng.uniform(*ELSEWHERE_M), None))
        return tuple(spells)

    def _senders(self, visitor: RoomVisitor) -> list[_Sender]:
        rng = random.Random(f"{self.seed}:visitor:{visitor.number}")
        manufacturer, service, uuids = phone_payload(visitor.phone_model, rng)
        senders = [_Sender(visitor, rng, random.Random(f"{self.seed}:visitor:{visitor.number}:phone"),
                           rng.uniform(*PHONE_INTERVAL_S), random_address(rng, 0b01), rng.uniform(*PHONE_POWER_1M),
                           manufacturer, service, uuids)]
        if visitor.tag_number is not None:
            uid = (bytes((0x00,)) + TAG_TX_0M.to_bytes(1, "big", signed=True) + self.tag_namespace
                   + visitor.tag_number.to_bytes(6, "big") + bytes(2))
            # A tag is one physical device: the same static address whoever carries it.
            address = random_address(random.Random(f"tag:{visitor.tag_number}"), 0b11)
            senders.append(_Sender(visitor, rng, random.Random(f"{self.seed}:visitor:{visitor.number}:tag"),
                                   TAG_INTERVAL_S, address, float(TAG_POWER_1M), (),
                                   ((EDDYSTONE_SERVICE_UUID, uid),), (EDDYSTONE_SERVICE_UUID,)))
        return senders


__all__ = ["DEMO_TAG_NAMESPACE", "RoomRadio", "RoomVisitor", "Spell", "demo_gateway_table", "featured_work",
           "room_tags"]
