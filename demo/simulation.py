"""Simulated visitors: event streams that look like real visits, for demos and load tests.

Everything except `event_id` comes from the `random.Random` passed in and sits on a clock that starts at the
given instant, so a seed and a start reproduce a run exactly. Times are whole milliseconds from that start
(the wire's precision), so a duration always equals the difference of the two instants it spans.

The model, with the shares and timings set by the constants below:

- A visitor has a visit token (128 bits drawn from the rng, like `protocol.ids.new_visit_id`), a preferred
  language and sometimes an accessibility need. As at a real kiosk, the token itself goes in no event: the events
  carry its one-way derivation `protocol.ids.visit_id_for(token)` (`Visitor.visit_id`), and only the holder of the
  token can open the visit's take-home page.
- A kiosk session is one visitor at one kiosk. The kiosk holds the visitor's token for the whole session (it is
  what its "take it home" QR code carries), so every event of the session names its derivation. The visitor picks a
  language on the attract screen, turns on what they need, opens 2–8 works (favouring popular ones, mostly in
  the kiosk's room, a tap every 5–90 s), collects some, sometimes switches language, sometimes scans the QR
  code, then ends the session or walks away and lets it time out. Half the time the QR code links the visit to a
  visitor tag it is lent (`visit.linked` with a `tag_id` of the TAG_POOL tags the demo's stations hear), so that
  the hub can give the stations' tag sightings their visit. Which tag is chosen does not follow which tag the
  stations' simulated visitors carry (they are separate processes): a demo approximation.
- A gateway watches the works of one room. Visitors wander in, stop at some works (popular ones more often and
  for longer: log-normal dwell, median about 40 s) and leave; each stop is a ProximityEntered/Left pair with
  the visitor's token. Every `window_s` the gateway reports how many people were in the room during the window,
  a bare count with no token. (The demo's stations do not emit these streams: demo.radio turns the same walks
  into the BLE adverts a real station hears, and the station's own code makes the events.)
"""

from __future__ import annotations

import base64
import heapq
import itertools
import math
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from content.model import Artwork, Museum
from protocol.events import (
    AccessibilityModeChanged,
    ArtworkCollected,
    ArtworkViewed,
    Event,
    KioskSessionEnded,
    KioskSessionStarted,
    LanguageChanged,
    OccupancyCounted,
    ProximityEntered,
    ProximityLeft,
    VisitLinked,
)
from protocol.ids import truncate_ms, visit_id_for

# --- visitors ---
LANGUAGE_WEIGHTS = {"fr": 0.6, "en": 0.4}
OTHER_LANGUAGE_WEIGHT = 0.1
"""Weight of a museum language missing from LANGUAGE_WEIGHTS (a museum that also offers de, es …)."""
ACCESSIBILITY_NEEDS = (("large_text", 0.08), ("high_contrast", 0.04), ("sign_language", 0.02))

# --- kiosk sessions ---
CURIOUS_TOGGLE_SHARE = 0.03
"""Visitors without a need who try a mode out of curiosity and turn it off again."""
VIEW_COUNT_WEIGHTS = {2: 20, 3: 20, 4: 18, 5: 14, 6: 11, 7: 9, 8: 8}
LOCAL_VIEW_SHARE = 0.8
COLLECT_SHARE = 0.3
LANGUAGE_CHANGE_SHARE = 0.1
LINK_SHARE = 0.35
TAG_LINK_SHARE = 0.5
"""Of those links, the share that also lends the visitor a tag (`visit.linked` with `tag_id`)."""
TAG_POOL = 200
"""The museum's visitor tags: t-000000000001 … t-0000000000c8, shared by the kiosks (which lend them) and the
demo's stations (which hear them, demo.radio)."""
TIMEOUT_SHARE = 0.15
TAP_GAP_MEDIAN_S = 25.0
TAP_GAP_SIGMA = 0.6
TAP_GAP_RANGE_S = (5.0, 90.0)
IDLE_TIMEOUT_S = 120.0
"""How long a kiosk waits without a touch before it ends the session itself."""
IDLE_GAP_MEDIAN_S = 60.0
IDLE_GAP_RANGE_S = (5.0, 1800.0)

# --- gateways ---
DWELL_MEDIAN_S = 40.0
"""Scaled by 0.66 for a work of popularity 1 up to 1.2 for popularity 10: about 40 s over a whole room."""
DWELL_SIGMA = 0.6
DWELL_RANGE_S = (3.0, 900.0)
VISITORS_PER_HOUR = 60.0
WINDOW_S = 60.0

# At one instant, presence events sort before the occupancy count of the window they belong to.
_PRESENCE_RANK = 0
_COUNT_RANK = 1

_Planned = tuple[int, int, int, type[Event], str | None, dict[str, Any]]
"""(milliseconds from the start, rank, sequence number, event class, visit_id, the class's own fields)"""


@dataclass(frozen=True)
class Visitor:
    token: str
    """The visit's take-home token: what the kiosk's QR code carries, never an event field."""
    language: str
    accessibility: tuple[str, ...] = ()

    @property
    def visit_id(self) -> str:
        """What the visit's events carry and every store keeps: the token's derivation."""
        return visit_id_for(self.token)


def random_token(rng: random.Random) -> str:
    """A visit token like `protocol.ids.new_visit_id` (128 bits, base64url, 22 characters), drawn from `rng`."""
    return base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big")).rstrip(b"=").decode("ascii")


def random_visit_id(rng: random.Random) -> str:
    """The stored visit_id of a new visitor: the derivation of a token drawn from `rng` (same draws as
    `random_token`)."""
    return visit_id_for(random_token(rng))


def new_visitor(rng: random.Random, museum: Museum) -> Visitor:
    weights = [LANGUAGE_WEIGHTS.get(lang, OTHER_LANGUAGE_WEIGHT) for lang in museum.languages]
    token = random_token(rng)
    language = rng.choices(museum.languages, weights)[0]
    needs = tuple(mode for mode, share in ACCESSIBILITY_NEEDS if rng.random() < share)
    return Visitor(token, language, needs)


# --- kiosk ------------------------------------------------------------------------------------------------

def simulate_kiosk_session(rng: random.Random, museum: Museum, site_id: str, device_id: str, zone_id: str,
                           start: datetime, *, visitor: Visitor | None = None,
                           idle_timeout_s: float = IDLE_TIMEOUT_S) -> list[Event]:
    """One visitor's session on a kiosk in `zone_id`, starting at `start`: session_started … session_ended."""
    origin = _clock_start(start)
    _check_zone(museum, zone_id)
    timeout_ms = _positive_ms(idle_timeout_s, "idle_timeout_s")
    visitor = visitor or new_visitor(rng, museum)
    steps = _kiosk_steps(rng, museum, zone_id, visitor, timeout_ms)
    return [_create(step, site_id, device_id, origin) for step in steps]


def kiosk_events(rng: random.Random, museum: Museum, site_id: str, device_id: str, zone_id: str,
                 start: datetime, *, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 on_visitor: Callable[[Visitor], None] | None = None) -> Iterator[tuple[datetime, Event]]:
    """A kiosk's events forever: sessions of successive visitors separated by idle spells on the attract screen.

    Yields (occurred_at, event) with occurred_at non-decreasing from `start`. Each session's events are built
    when its first one is asked for; `on_visitor` is then given its visitor (the one place the token shows: the
    events carry only its derivation).
    """
    origin = _clock_start(start)
    _check_zone(museum, zone_id)
    _positive_ms(idle_timeout_s, "idle_timeout_s")
    return _kiosk_stream(rng, museum, site_id, device_id, zone_id, origin, idle_timeout_s, on_visitor)


def _kiosk_stream(rng: random.Random, museum: Museum, site_id: str, device_id: str, zone_id: str,
                  clock: datetime, idle_timeout_s: float,
                  on_visitor: Callable[[Visitor], None] | None) -> Iterator[tuple[datetime, Event]]:
    while True:
        clock += timedelta(milliseconds=_lognormal_ms(rng, IDLE_GAP_MEDIAN_S, 1.0, IDLE_GAP_RANGE_S))
        visitor = new_visitor(rng, museum)
        if on_visitor is not None:
            on_visitor(visitor)
        session = simulate_kiosk_session(rng, museum, site_id, device_id, zone_id, clock, visitor=visitor,
                                         idle_timeout_s=idle_timeout_s)
        for event in session:
            yield event.occurred_at, event
        clock = session[-1].occurred_at


def _kiosk_steps(rng: random.Random, museum: Museum, zone_id: str, visitor: Visitor,
                 timeout_ms: int) -> list[_Planned]:
    seq = itertools.count()
    visit = visitor.visit_id
    steps: list[_Planned] = []

    def add(at_ms: int, cls: type[Event], **fields: Any) -> None:
        steps.append((at_ms, _PRESENCE_RANK, next(seq), cls, visit, fields))

    session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    language = visitor.language
    t = 0
    add(t, KioskSessionStarted, session_id=session_id, language=language)
    for mode in visitor.accessibility:
        t += _ms(rng.uniform(2, 12))
        add(t, AccessibilityModeChanged, mode=mode, enabled=True)
    if not visitor.accessibility and rng.random() < CURIOUS_TOGGLE_SHARE:
        mode = rng.choice([mode for mode, _ in ACCESSIBILITY_NEEDS])
        t += _ms(rng.uniform(2, 12))
        add(t, AccessibilityModeChanged, mode=mode, enabled=True)
        t += _ms(rng.uniform(3, 15))
        add(t, AccessibilityModeChanged, mode=mode, enabled=False)

    count = rng.choices(list(VIEW_COUNT_WEIGHTS), list(VIEW_COUNT_WEIGHTS.values()))[0]
    views = _pick_artworks(rng, museum, zone_id, count)
    others = [lang for lang in museum.languages if lang != language]
    # The switch comes between two views, so the session shows pages in both languages.
    switch_before = (rng.randrange(1, len(views))
                     if rng.random() < LANGUAGE_CHANGE_SHARE and others and len(views) > 1 else None)
    for index, artwork in enumerate(views):
        t += _lognormal_ms(rng, TAP_GAP_MEDIAN_S, TAP_GAP_SIGMA, TAP_GAP_RANGE_S)
        if index == switch_before:
            new_language = rng.choice(others)
            add(t, LanguageChanged, from_language=language, to_language=new_language)
            language = new_language
            t += _ms(rng.uniform(2, 8))
        add(t, ArtworkViewed, artwork_id=artwork.artwork_id, source="kiosk", language=language,
            session_id=session_id)
        if rng.random() < COLLECT_SHARE:
            t += _ms(rng.uniform(3, 15))
            add(t, ArtworkCollected, artwork_id=artwork.artwork_id, source="kiosk")
    if rng.random() < LINK_SHARE:
        t += _ms(rng.uniform(5, 30))
        add(t, VisitLinked, channel="kiosk_qr", tag_id=_lent_tag(session_id))
    if rng.random() < TIMEOUT_SHARE:
        t += timeout_ms
        reason = "timeout"
    else:
        t += _ms(rng.uniform(3, 20))
        reason = "visitor"
    add(t, KioskSessionEnded, session_id=session_id, duration_s=t / 1000, reason=reason)
    return steps


def _lent_tag(session_id: str) -> str | None:
    """The visitor tag lent with this link, if any: drawn from a generator of its own, seeded by the session (itself
    drawn from the kiosk's), so the kiosk's other draws, and thus its visits, are the same with or without tags."""
    lending = random.Random(session_id)
    return tag_id_of(lending.randint(1, TAG_POOL)) if lending.random() < TAG_LINK_SHARE else None


def tag_id_of(number: int) -> str:
    """The id of the demo's visitor tag `number` (1 … TAG_POOL), as a station reads it from its Eddystone-UID frame:
    `t-` and the 6-byte instance in hex."""
    return "t-" + number.to_bytes(6, "big").hex()


def _pick_artworks(rng: random.Random, museum: Museum, zone_id: str, count: int) -> list[Artwork]:
    """`count` distinct works, each from the kiosk's room with LOCAL_VIEW_SHARE, weighted by popularity squared.

    Squared because a room holds only a handful of works and a visitor opens several of them: with plain
    popularity weights the famous work would barely stand out from its neighbours.
    """
    here = list(museum.artworks_in(zone_id))
    elsewhere = [artwork for artwork in museum.artworks if artwork.zone_id != zone_id]
    chosen: list[Artwork] = []
    for _ in range(count):
        local = rng.random() < LOCAL_VIEW_SHARE
        pool = here if (local and here) or not elsewhere else elsewhere
        if not pool:
            break
        artwork = rng.choices(pool, [a.popularity ** 2 for a in pool])[0]
        pool.remove(artwork)
        chosen.append(artwork)
    return chosen


# --- gateway ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Walk:
    """One visitor's pass through a room: in the room over [arrived_ms, left_ms), stopping at some works, each stop
    (artwork, start ms, end ms)."""

    visit_id: str
    arrived_ms: int
    left_ms: int
    stops: tuple[tuple[Artwork, int, int], ...]


def simulate_gateway_activity(rng: random.Random, museum: Museum, site_id: str, device_id: str, zone_id: str,
                              start: datetime, duration_s: float, visitors: Sequence[Visitor], *,
                              artwork_ids: Sequence[str] | None = None, window_s: float = WINDOW_S) -> list[Event]:
    """What a room's gateway reports over [start, start + duration_s) while `visitors` pass through.

    Each visitor arrives at a uniformly random moment of the period; stops still going on at its end are not
    reported. One OccupancyCounted per full window. `artwork_ids` are the works the gateway watches (default:
    every work of the room).
    """
    origin = _clock_start(start)
    _check_zone(museum, zone_id)
    watched = _watched(museum, zone_id, artwork_ids)
    duration_ms = _positive_ms(duration_s, "duration_s")
    window_ms = _positive_ms(window_s, "window_s")
    seq = itertools.count()
    walks: list[Walk] = []
    plan: list[_Planned] = []
    for visitor in visitors:
        walk = _truncated(room_walk(rng, watched, visitor.visit_id, rng.randrange(duration_ms)), duration_ms)
        walks.append(walk)
        plan.extend(_proximity_steps(walk, zone_id, seq))
    for tick in range(window_ms, duration_ms + 1, window_ms):
        plan.append(_count_step(tick, zone_id, _occupancy(walks, tick, window_ms), window_ms, seq))
    plan.sort(key=lambda step: step[:3])
    return [_create(step, site_id, device_id, origin) for step in plan]


def gateway_events(rng: random.Random, museum: Museum, site_id: str, device_id: str, zone_id: str,
                   start: datetime, *, visitors_per_hour: float = VISITORS_PER_HOUR,
                   artwork_ids: Sequence[str] | None = None,
                   window_s: float = WINDOW_S) -> Iterator[tuple[datetime, Event]]:
    """A room gateway's events forever: visitors arriving at random (Poisson, `visitors_per_hour`), their stops
    at the watched works, and an occupancy count every `window_s`. occurred_at is non-decreasing from `start`."""
    origin = _clock_start(start)
    _check_zone(museum, zone_id)
    watched = _watched(museum, zone_id, artwork_ids)
    window_ms = _positive_ms(window_s, "window_s")
    if isinstance(visitors_per_hour, bool) or not isinstance(visitors_per_hour, int | float) \
            or not 0 < visitors_per_hour < math.inf:
        raise ValueError(f"visitors_per_hour must be a positive number, got {visitors_per_hour!r}")
    return _gateway_stream(rng, site_id, device_id, zone_id, origin, watched, window_ms,
                           3_600_000 / visitors_per_hour)


def _gateway_stream(rng: random.Random, site_id: str, device_id: str, zone_id: str, origin: datetime,
                    watched: tuple[Artwork, ...], window_ms: int,
                    mean_gap_ms: float) -> Iterator[tuple[datetime, Event]]:
    seq = itertools.count()
    pending: list[_Planned] = []
    present: list[Walk] = []
    next_arrival = round(rng.expovariate(1 / mean_gap_ms))
    tick = window_ms
    while True:
        # Every visitor who arrives by the end of this window is walked first: only then are all the events
        # up to the tick known, and the count complete.
        while next_arrival <= tick:
            walk = room_walk(rng, watched, random_visit_id(rng), next_arrival)
            present.append(walk)
            for step in _proximity_steps(walk, zone_id, seq):
                heapq.heappush(pending, step)
            next_arrival += round(rng.expovariate(1 / mean_gap_ms))
        while pending and pending[0][0] <= tick:
            event = _create(heapq.heappop(pending), site_id, device_id, origin)
            yield event.occurred_at, event
        count = _occupancy(present, tick, window_ms)
        event = _create(_count_step(tick, zone_id, count, window_ms, seq), site_id, device_id, origin)
        yield event.occurred_at, event
        present = [walk for walk in present if walk.left_ms > tick]
        tick += window_ms


def _watched(museum: Museum, zone_id: str, artwork_ids: Sequence[str] | None) -> tuple[Artwork, ...]:
    in_room = museum.artworks_in(zone_id)
    if artwork_ids is None:
        return in_room
    by_id = {artwork.artwork_id: artwork for artwork in in_room}
    missing = [artwork_id for artwork_id in artwork_ids if artwork_id not in by_id]
    if missing:
        raise ValueError(f"artwork(s) {', '.join(missing)} are not in room {zone_id!r} "
                         f"(it holds {', '.join(by_id) or 'no artwork'})")
    return tuple(by_id[artwork_id] for artwork_id in dict.fromkeys(artwork_ids))


def room_walk(rng: random.Random, watched: Sequence[Artwork], visit_id: str, arrived_ms: int) -> Walk:
    """One visitor's pass through a room from `arrived_ms`: 5–30 s to the first work, then the works of `watched`
    in a random order, each stopped at with a chance growing with its popularity, for a log-normal dwell (median
    about 40 s), 5–40 s between stops. The gateway streams above and the demo's radio (demo.radio) share it."""
    t = arrived_ms + _ms(rng.uniform(5, 30))
    stops: list[tuple[Artwork, int, int]] = []
    for artwork in rng.sample(list(watched), len(watched)):
        if rng.random() < 0.2 + 0.07 * artwork.popularity:
            median = DWELL_MEDIAN_S * (0.6 + 0.06 * artwork.popularity)
            dwell = _lognormal_ms(rng, median, DWELL_SIGMA, DWELL_RANGE_S)
            stops.append((artwork, t, t + dwell))
            t += dwell + _ms(rng.uniform(5, 40))
    return Walk(visit_id, arrived_ms, t, tuple(stops))


def _truncated(walk: Walk, end_ms: int) -> Walk:
    stops = tuple(stop for stop in walk.stops if stop[2] < end_ms)
    return Walk(walk.visit_id, walk.arrived_ms, min(walk.left_ms, end_ms), stops)


def _proximity_steps(walk: Walk, zone_id: str, seq: Iterator[int]) -> list[_Planned]:
    steps: list[_Planned] = []
    for artwork, entered, left in walk.stops:
        where = {"artwork_id": artwork.artwork_id, "zone_id": zone_id}
        steps.append((entered, _PRESENCE_RANK, next(seq), ProximityEntered, walk.visit_id, where))
        steps.append((left, _PRESENCE_RANK, next(seq), ProximityLeft, walk.visit_id,
                      {**where, "dwell_s": (left - entered) / 1000}))
    return steps


def _occupancy(walks: Sequence[Walk], tick_ms: int, window_ms: int) -> int:
    """People in the room at some moment of the window (tick - window, tick]."""
    return sum(1 for walk in walks if walk.arrived_ms <= tick_ms and walk.left_ms > tick_ms - window_ms)


def _count_step(tick_ms: int, zone_id: str, count: int, window_ms: int, seq: Iterator[int]) -> _Planned:
    return (tick_ms, _COUNT_RANK, next(seq), OccupancyCounted, None,
            {"zone_id": zone_id, "count": count, "window_s": window_ms / 1000})


# --- shared -----------------------------------------------------------------------------------------------

def _create(step: _Planned, site_id: str, device_id: str, origin: datetime) -> Event:
    at_ms, _, _, cls, visit_id, fields = step
    return cls.create(site_id=site_id, device_id=device_id, visit_id=visit_id,
                      occurred_at=origin + timedelta(milliseconds=at_ms), **fields)


def _clock_start(start: datetime) -> datetime:
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise ValueError(f"start must be a timezone-aware datetime, got {start!r}")
    return truncate_ms(start.astimezone(UTC))


def _check_zone(museum: Museum, zone_id: str) -> None:
    if zone_id not in museum.zone_ids:
        raise ValueError(f"zone {zone_id!r} is not a room of {museum.site_id} (rooms: {', '.join(museum.zone_ids)})")


def _positive_ms(seconds: float, name: str) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0.001 <= seconds < math.inf:
        raise ValueError(f"{name} must be a number of seconds of at least 0.001, got {seconds!r}")
    return _ms(seconds)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _lognormal_ms(rng: random.Random, median_s: float, sigma: float, bounds_s: tuple[float, float]) -> int:
    low, high = bounds_s
    return _ms(min(high, max(low, rng.lognormvariate(math.log(median_s), sigma))))
