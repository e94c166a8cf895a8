"""The sample museum and the visitor simulator: content that validates, visits that look like visits."""

from __future__ import annotations

import copy
import itertools
import json
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from content.model import Museum, load_museum, museum_to_dict, parse_museum
from content.sample import SAMPLE_MUSEUM_PATH, load_sample_museum
from demo.simulation import (
    Visitor,
    gateway_events,
    kiosk_events,
    new_visitor,
    random_token,
    random_visit_id,
    simulate_gateway_activity,
    simulate_kiosk_session,
)
from protocol.codec import decode_event, encode_event, event_to_dict
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
from protocol.fields import IDENTIFIER
from protocol.ids import is_visit_id, visit_id_for

START = datetime(2026, 5, 17, 9, 30, tzinfo=UTC)
SITE = "demo"


@pytest.fixture(scope="module")
def museum() -> Museum:
    return load_sample_museum()


def fingerprint(events: list[Event]) -> list[dict[str, Any]]:
    """Everything about the events except their ids, which are the one part not drawn from the rng."""
    result = []
    for event in events:
        data = event_to_dict(event)
        del data["event_id"]
        result.append(data)
    return result


def kiosk_session(museum: Museum, seed: int, zone_id: str = "siecle-d-or", **kwargs: Any) -> list[Event]:
    return simulate_kiosk_session(random.Random(seed), museum, SITE, "kiosk-1", zone_id, START, **kwargs)


def many_sessions(museum: Museum, count: int, seed: int = 2026) -> list[tuple[str, list[Event]]]:
    """(kiosk room, session) for `count` sessions on kiosks spread over every room."""
    rng = random.Random(seed)
    zones = museum.zone_ids
    result = []
    for i in range(count):
        zone_id = zones[i % len(zones)]
        start = START + timedelta(minutes=7 * i)
        result.append((zone_id, simulate_kiosk_session(rng, museum, SITE, f"kiosk-{zone_id}", zone_id, start)))
    return result


# --- the sample museum ------------------------------------------------------------------------------------

def test_sample_museum_loads_and_is_complete(museum: Museum) -> None:
    assert museum.site_id == "demo"
    assert museum.name["fr"] == "Musée des Beaux-Arts de Démo"
    assert museum.name["en"] == "Demo Museum of Fine Arts"
    assert museum.languages == ("fr", "en")
    assert len(museum.rooms) >= 3
    assert len(museum.artworks) >= 20
    zone_ids = [room.zone_id for room in museum.rooms]
    artwork_ids = [artwork.artwork_id for artwork in museum.artworks]
    assert len(set(zone_ids)) == len(zone_ids)
    assert len(set(artwork_ids)) == len(artwork_ids)
    for identifier in (museum.site_id, *zone_ids, *artwork_ids):
        assert IDENTIFIER.match(identifier), identifier
    for room in museum.rooms:
        assert room.name.languages == ("fr", "en")
        assert room.capacity > 0
        assert len(museum.artworks_in(room.zone_id)) >= 3, f"room {room.zone_id} is nearly empty"
    for artwork in museum.artworks:
        assert artwork.zone_id in zone_ids
        assert artwork.title.languages == artwork.text.languages == ("fr", "en")
        assert artwork.artist.strip() and artwork.year.strip()
        assert 1 <= artwork.popularity <= 10
    assert 2 <= sum(artwork.lsf_video for artwork in museum.artworks) < len(museum.artworks)


def test_sample_texts_read_like_written_texts(museum: Museum) -> None:
    for artwork in museum.artworks:
        fr, en = artwork.text["fr"], artwork.text["en"]
        assert fr != en
        for language, text in (("fr", fr), ("en", en)):
            sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-ZÀ-Ý«“])", text) if s]
            assert 2 <= len(sentences) <= 4, f"{artwork.artwork_id} {language}: {len(sentences)} sentences"
            assert text.endswith("."), f"{artwork.artwork_id} {language}"
    french = " ".join(artwork.text["fr"] for artwork in museum.artworks)
    # Accented French, not ASCII transliteration, and French spacing before high punctuation.
    assert all(letter in french for letter in "éèàçêô")
    assert " :" not in french and " ;" not in french and "« " not in french


def test_sample_file_is_utf8_json_and_round_trips(museum: Museum) -> None:
    raw = SAMPLE_MUSEUM_PATH.read_bytes()
    data = json.loads(raw.decode("utf-8"))
    assert parse_museum(data, min_rooms=3, min_artworks=20) == museum
    assert parse_museum(museum_to_dict(museum)) == museum
    assert museum.artwork("vermeer-milkmaid").zone_id == "siecle-d-or"
    with pytest.raises(KeyError, match="no artwork 'mona-lisa'"):
        museum.artwork("mona-lisa")


def _parent(data: dict[str, Any], path: tuple[Any, ...]) -> Any:
    """The container of the last key of `path`; "@id" picks the artwork with that id out of a list."""
    target: Any = data
    for key in path[:-1]:
        if isinstance(key, str) and key.startswith("@"):
            target = next(item for item in target if item["artwork_id"] == key[1:])
        else:
            target = target[key]
    return target


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        _parent(data, path)[path[-1]] = value
    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        del _parent(data, path)[path[-1]]
    return mutate


def _duplicate_artwork(data: dict[str, Any]) -> None:
    data["artworks"].append(copy.deepcopy(data["artworks"][0]))


def _duplicate_room(data: dict[str, Any]) -> None:
    data["rooms"].append(copy.deepcopy(data["rooms"][1]))


def _two_rooms(data: dict[str, Any]) -> None:
    kept = {room["zone_id"] for room in data["rooms"][:2]}
    data["rooms"] = data["rooms"][:2]
    data["artworks"] = [a for a in data["artworks"] if a["zone_id"] in kept]


def _few_artworks(data: dict[str, Any]) -> None:
    data["artworks"] = data["artworks"][:19]


BAD_MUSEUMS = [
    pytest.param(_set(("artworks", "@vermeer-milkmaid", "artwork_id"), "Vermeer_Milkmaid"),
                 r"artworks\[8\]\.artwork_id must be an identifier .*got 'Vermeer_Milkmaid'", id="artwork-id"),
    pytest.param(_set(("artworks", "@vermeer-milkmaid", "zone_id"), "salle-99"),
                 r"artworks\[8\] \(vermeer-milkmaid\): zone_id 'salle-99' is not a room of this museum", id="zone"),
    pytest.param(_delete(("artworks", "@vermeer-milkmaid", "text", "en")),
                 r"artworks\[8\] \(vermeer-milkmaid\): text has no 'en' version", id="text-en"),
    pytest.param(_delete(("artworks", "@klimt-the-kiss", "title", "fr")),
                 r"\(klimt-the-kiss\): title has no 'fr' version", id="title-fr"),
    pytest.param(_set(("artworks", "@klimt-the-kiss", "title", "de"), "Der Kuss"),
                 r"\(klimt-the-kiss\): title has a version in de, which the museum's languages \(fr, en\) do not",
                 id="extra-language"),
    pytest.param(_set(("artworks", "@klimt-the-kiss", "text", "fr"), "   "),
                 r"\(klimt-the-kiss\): text\.fr must be non-empty text", id="blank-text"),
    pytest.param(_set(("rooms", 0, "name"), "Renaissance"),
                 r"rooms\[0\] \(renaissance\): name must be an object with one text per language \(fr, en\), "
                 r"got a string", id="room-name"),
    pytest.param(_set(("rooms", 2, "capacity"), 0),
                 r"rooms\[2\] \(realisme\): capacity must be a whole number of people, at least 1, got 0",
                 id="capacity"),
    pytest.param(_duplicate_room, r"rooms: zone_id 'siecle-d-or' appears twice", id="duplicate-room"),
    pytest.param(_duplicate_artwork, r"artworks: artwork_id 'botticelli-birth-of-venus' appears twice",
                 id="duplicate-artwork"),
    pytest.param(_set(("artworks", "@durer-young-hare", "popularity"), 11),
                 r"\(durer-young-hare\): popularity must be a whole number from 1 to 10, got 11", id="popularity"),
    pytest.param(_set(("artworks", "@durer-young-hare", "popularity"), True),
                 r"popularity must be a whole number from 1 to 10, got a boolean", id="popularity-bool"),
    pytest.param(_set(("artworks", "@durer-young-hare", "accessibility"), {"lsf_video": "yes"}),
                 r"\(durer-young-hare\): accessibility\.lsf_video must be true or false, got 'yes'", id="lsf"),
    pytest.param(_set(("artworks", "@durer-young-hare", "year"), 1502),
                 r"\(durer-young-hare\): year must be non-empty text, got 1502", id="year-number"),
    pytest.param(_set(("artworks", "@durer-young-hare", "audio"), "hare.mp3"),
                 r"artworks\[1\] has unknown field\(s\) audio", id="unknown-field"),
    pytest.param(_delete(("artworks", "@durer-young-hare", "artist")), r"artworks\[1\] lacks artist",
                 id="missing-field"),
    pytest.param(_set(("site_id",), "Demo Site"), r"site_id must be an identifier", id="site-id"),
    pytest.param(_set(("languages",), []), r"languages must list at least one language", id="no-language"),
    pytest.param(_set(("languages",), ["fr", "english"]), r"languages: 'english' is not a language tag",
                 id="bad-language"),
    pytest.param(_set(("languages",), ["fr", "fr"]), r"languages: language 'fr' appears twice", id="language-twice"),
    pytest.param(_set(("rooms",), {}), r"rooms must be a JSON list, got an object", id="rooms-object"),
    pytest.param(_two_rooms, r"rooms: 2 room\(s\), at least 3 required", id="two-rooms"),
    pytest.param(_few_artworks, r"artworks: 19 artwork\(s\), at least 20 required", id="nineteen-artworks"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_MUSEUMS)
def test_bad_museum_files_are_rejected_precisely(tmp_path: Path, mutate: Callable[[dict[str, Any]], None],
                                                 message: str) -> None:
    data = json.loads(SAMPLE_MUSEUM_PATH.read_text("utf-8"))
    mutate(data)
    path = tmp_path / "museum.json"
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        load_museum(path, min_rooms=3, min_artworks=20)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("raw", "message"), [
    pytest.param(b'{"site_id": "demo",', r"not valid JSON: Expecting property name enclosed in double quotes at line 1",
                 id="truncated"),
    pytest.param(b'{"site_id": "demo", "site_id": "other"}', r"key 'site_id' appears twice in one object",
                 id="duplicate-key"),
    pytest.param('{"name": "Musée"}'.encode("latin-1"), r"byte 13 is not valid UTF-8", id="latin-1"),
    pytest.param(b'{"popularity": NaN}', r"NaN is not a JSON number", id="nan"),
    pytest.param(b"[]", r"the museum file must be a JSON object, got a list", id="list"),
    pytest.param(b'{"site_id": "demo"}', r"the museum file lacks name, languages, rooms, artworks", id="empty"),
])
def test_unreadable_museum_files_are_rejected(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "museum.json"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        load_museum(path)


def test_missing_museum_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere\.json: cannot read the file: No such file"):
        load_museum(tmp_path / "nowhere.json")


def test_a_small_museum_is_fine_outside_the_sample(tmp_path: Path) -> None:
    data = json.loads(SAMPLE_MUSEUM_PATH.read_text("utf-8"))
    _two_rooms(data)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(data), "utf-8")
    small = load_museum(path)
    assert len(small.rooms) == 2


# --- kiosk sessions ---------------------------------------------------------------------------------------

def check_session(museum: Museum, events: list[Event], zone_id: str, idle_timeout_s: float = 120.0) -> None:
    """Every invariant a real kiosk session keeps."""
    started, ended = events[0], events[-1]
    assert isinstance(started, KioskSessionStarted)
    assert isinstance(ended, KioskSessionEnded)
    assert sum(isinstance(e, KioskSessionStarted | KioskSessionEnded) for e in events) == 2
    session_id = started.session_id
    visit_id = started.visit_id
    assert is_visit_id(visit_id)
    for earlier, later in itertools.pairwise(events):
        assert earlier.occurred_at <= later.occurred_at
    for event in events:
        assert (event.site_id, event.device_id, event.visit_id) == (SITE, "kiosk-1", visit_id)
        if hasattr(event, "session_id"):
            assert event.session_id == session_id
    assert ended.duration_s == (ended.occurred_at - started.occurred_at).total_seconds()
    assert ended.reason in ("visitor", "timeout")
    if ended.reason == "timeout":
        assert ended.occurred_at - events[-2].occurred_at == timedelta(seconds=idle_timeout_s)

    language = started.language
    viewed: list[str] = []
    collected: list[str] = []
    for event in events[1:-1]:
        if isinstance(event, LanguageChanged):
            assert event.from_language == language != event.to_language
            language = event.to_language
        elif isinstance(event, ArtworkViewed):
            assert (event.source, event.language) == ("kiosk", language)
            assert event.artwork_id not in viewed
            viewed.append(event.artwork_id)
        elif isinstance(event, ArtworkCollected):
            assert event.source == "kiosk"
            assert event.artwork_id == viewed[-1], "collected right after viewing it"
            collected.append(event.artwork_id)
        elif isinstance(event, AccessibilityModeChanged):
            assert not viewed, "accessibility is set up before browsing"
        else:
            assert isinstance(event, VisitLinked)
            assert (event.channel, event.artwork_id) == ("kiosk_qr", None)
    assert 2 <= len(viewed) <= 8
    assert set(collected) <= set(viewed)
    assert all(museum.artwork(artwork_id) for artwork_id in viewed)
    assert sum(isinstance(e, VisitLinked) for e in events) <= 1
    assert sum(isinstance(e, LanguageChanged) for e in events) <= 1


def test_a_kiosk_session_is_a_well_formed_visit(museum: Museum) -> None:
    for seed in range(300):
        zone_id = museum.zone_ids[seed % len(museum.zone_ids)]
        check_session(museum, kiosk_session(museum, seed, zone_id), zone_id)


def test_session_with_a_given_visitor_and_timeout(museum: Museum) -> None:
    visitor = Visitor(random_visit_id(random.Random(1)), "en", ("large_text", "sign_language"))
    sessions = [kiosk_session(museum, seed, visitor=visitor, idle_timeout_s=45) for seed in range(60)]
    for events in sessions:
        check_session(museum, events, "siecle-d-or", idle_timeout_s=45)
        assert events[0].visit_id == visitor.visit_id
        assert events[0].language == "en"
        modes = [(e.mode, e.enabled) for e in events if isinstance(e, AccessibilityModeChanged)]
        assert modes == [("large_text", True), ("sign_language", True)]
    assert any(events[-1].reason == "timeout" for events in sessions)


def test_every_simulated_event_survives_the_codec(museum: Museum) -> None:
    events = [e for _, session in many_sessions(museum, 100) for e in session]
    rng = random.Random(5)
    visitors = [new_visitor(rng, museum) for _ in range(30)]
    events += simulate_gateway_activity(rng, museum, SITE, "gateway-1", "modernites", START, 1800, visitors)
    assert {type(e) for e in events} >= {KioskSessionStarted, KioskSessionEnded, ArtworkViewed, ArtworkCollected,
                                         LanguageChanged, AccessibilityModeChanged, VisitLinked, ProximityEntered,
                                         ProximityLeft, OccupancyCounted}
    for event in events:
        assert decode_event(encode_event(event)) == event


def test_same_seed_same_visits(museum: Museum) -> None:
    first = [e for _, session in many_sessions(museum, 40, seed=7) for e in session]
    again = [e for _, session in many_sessions(museum, 40, seed=7) for e in session]
    other = [e for _, session in many_sessions(museum, 40, seed=8) for e in session]
    assert fingerprint(first) == fingerprint(again)
    assert [e.event_id for e in first] != [e.event_id for e in again]
    assert fingerprint(first) != fingerprint(other)

    def gateway(seed: int) -> list[Event]:
        rng = random.Random(seed)
        visitors = [new_visitor(rng, museum) for _ in range(25)]
        return simulate_gateway_activity(rng, museum, SITE, "gateway-1", "renaissance", START, 3600, visitors)

    assert fingerprint(gateway(3)) == fingerprint(gateway(3)) != fingerprint(gateway(4))


def test_the_clock_start_only_shifts_the_visit(museum: Museum) -> None:
    base = kiosk_session(museum, 11)
    later_start = START + timedelta(hours=5, microseconds=250)  # sub-millisecond part dropped, as on the wire
    later = simulate_kiosk_session(random.Random(11), museum, SITE, "kiosk-1", "siecle-d-or", later_start)
    assert [e.occurred_at - base[0].occurred_at for e in base] == [e.occurred_at - later[0].occurred_at for e in later]
    assert later[0].occurred_at == START + timedelta(hours=5)
    assert [e.own_fields() for e in base] == [e.own_fields() for e in later]


def test_kiosk_stream_runs_session_after_session(museum: Museum) -> None:
    stream = kiosk_events(random.Random(99), museum, SITE, "kiosk-1", "impressionnisme", START)
    items = list(itertools.islice(stream, 3000))
    assert items[0][0] > START
    sessions: list[list[Event]] = []
    for (at, event), (next_at, _) in itertools.pairwise(items):
        assert at == event.occurred_at <= next_at
    for _, event in items:
        if isinstance(event, KioskSessionStarted):
            sessions.append([])
        sessions[-1].append(event)
    complete = sessions[:-1]
    assert len(complete) > 200
    for session in complete:
        check_session(museum, session, "impressionnisme")
    assert len({session[0].visit_id for session in complete}) == len(complete)
    same = list(itertools.islice(kiosk_events(random.Random(99), museum, SITE, "kiosk-1", "impressionnisme",
                                              START), 3000))
    assert fingerprint([e for _, e in items]) == fingerprint([e for _, e in same])


def test_five_hundred_sessions_have_believable_statistics(museum: Museum) -> None:
    sessions = many_sessions(museum, 500)
    n = len(sessions)

    def share(predicate: Callable[[list[Event]], bool]) -> float:
        return sum(predicate(events) for _, events in sessions) / n

    def has(cls: type[Event]) -> Callable[[list[Event]], bool]:
        return lambda events: any(isinstance(e, cls) for e in events)

    assert 0.54 <= share(lambda events: events[0].language == "fr") <= 0.68
    assert 0.25 <= share(has(VisitLinked)) <= 0.45
    assert 0.05 <= share(has(LanguageChanged)) <= 0.16
    assert 0.09 <= share(lambda events: events[-1].reason == "timeout") <= 0.22
    assert 0.04 <= share(lambda events: any(isinstance(e, AccessibilityModeChanged) and e.mode == "large_text"
                                            and e.enabled for e in events)) <= 0.14
    assert share(has(AccessibilityModeChanged)) <= 0.25

    views = [(zone, e) for zone, events in sessions for e in events if isinstance(e, ArtworkViewed)]
    collected = [e for _, events in sessions for e in events if isinstance(e, ArtworkCollected)]
    assert 0.24 <= len(collected) / len(views) <= 0.36
    per_session = [sum(isinstance(e, ArtworkViewed) for e in events) for _, events in sessions]
    assert min(per_session) == 2 and max(per_session) == 8
    assert 3.5 <= statistics.mean(per_session) <= 5.5
    local = sum(museum.artwork(e.artwork_id).zone_id == zone for zone, e in views) / len(views)
    assert 0.65 <= local <= 0.9

    popularity = {a.artwork_id: a.popularity for a in museum.artworks}
    counts = Counter(e.artwork_id for _, e in views)
    famous = statistics.mean(counts[a] for a, p in popularity.items() if p >= 9)
    obscure = statistics.mean(counts[a] for a, p in popularity.items() if p <= 4)
    assert famous > 1.6 * obscure

    gaps = [(b.occurred_at - a.occurred_at).total_seconds() for _, events in sessions
            for a, b in itertools.pairwise([e for e in events if isinstance(e, ArtworkViewed)])]
    assert min(gaps) >= 5 and 15 <= statistics.median(gaps) <= 45
    durations = [events[-1].duration_s for _, events in sessions]
    assert 60 <= statistics.median(durations) <= 300


# --- gateways ---------------------------------------------------------------------------------------------

def presence_intervals(events: list[Event]) -> list[tuple[str, str, datetime, datetime]]:
    """(visit_id, artwork_id, entered, left) for every Entered/Left pair, checking they pair up exactly."""
    open_: dict[str, ProximityEntered] = {}
    intervals = []
    for event in events:
        if isinstance(event, ProximityEntered):
            assert event.visit_id not in open_, "a visitor stands at one work at a time"
            open_[event.visit_id] = event
        elif isinstance(event, ProximityLeft):
            entered = open_.pop(event.visit_id)
            assert (entered.artwork_id, entered.zone_id) == (event.artwork_id, event.zone_id)
            assert event.dwell_s == (event.occurred_at - entered.occurred_at).total_seconds() > 0
            intervals.append((event.visit_id, event.artwork_id, entered.occurred_at, event.occurred_at))
    assert not open_, "every Entered has its Left"
    return intervals


def check_counts(events: list[Event], window_s: float, zone_id: str) -> list[OccupancyCounted]:
    counts = [e for e in events if isinstance(e, OccupancyCounted)]
    intervals = presence_intervals(events)
    window = timedelta(seconds=window_s)
    for count in counts:
        assert count.visit_id is None
        assert (count.zone_id, count.window_s) == (zone_id, window_s)
        seen = {visit for visit, _, entered, left in intervals
                if entered <= count.occurred_at and left > count.occurred_at - window}
        assert count.count >= len(seen), "everyone standing at a work is in the room"
    return counts


def test_gateway_activity_over_an_hour(museum: Museum) -> None:
    rng = random.Random(17)
    visitors = [new_visitor(rng, museum) for _ in range(80)]
    events = simulate_gateway_activity(rng, museum, SITE, "gateway-2", "impressionnisme", START, 3600, visitors)
    assert all(e.device_id == "gateway-2" and e.site_id == SITE for e in events)
    for earlier, later in itertools.pairwise(events):
        assert earlier.occurred_at <= later.occurred_at
    in_room = {a.artwork_id for a in museum.artworks_in("impressionnisme")}
    proximity = [e for e in events if isinstance(e, ProximityEntered | ProximityLeft)]
    assert {e.artwork_id for e in proximity} <= in_room
    assert {e.zone_id for e in proximity} == {"impressionnisme"}
    assert {e.visit_id for e in proximity} <= {v.visit_id for v in visitors}
    assert len({e.visit_id for e in proximity}) > 60
    assert all(START <= e.occurred_at < START + timedelta(hours=1) for e in proximity)

    counts = check_counts(events, 60.0, "impressionnisme")
    assert [c.occurred_at for c in counts] == [START + timedelta(minutes=m) for m in range(1, 61)]
    assert all(c.count <= len(visitors) for c in counts)
    assert max(c.count for c in counts) >= 3
    # 80 people spread over an hour, a few minutes each: the room is never empty for long, never packed.
    assert 2 <= statistics.mean(c.count for c in counts) <= 15


def test_gateway_watching_one_work(museum: Museum) -> None:
    rng = random.Random(4)
    visitors = [new_visitor(rng, museum) for _ in range(40)]
    events = simulate_gateway_activity(rng, museum, SITE, "gateway-3", "siecle-d-or", START, 1800, visitors,
                                       artwork_ids=["vermeer-milkmaid"], window_s=300)
    assert {e.artwork_id for e in events if isinstance(e, ProximityEntered)} == {"vermeer-milkmaid"}
    assert len(check_counts(events, 300.0, "siecle-d-or")) == 6


def test_dwell_times_look_like_people_looking(museum: Museum) -> None:
    dwell: list[ProximityLeft] = []
    for zone_id in museum.zone_ids:
        stream = gateway_events(random.Random(23), museum, SITE, "gateway-4", zone_id, START,
                                visitors_per_hour=120, window_s=30)
        dwell += [e for _, e in itertools.islice(stream, 3000) if isinstance(e, ProximityLeft)]
    assert 32 <= statistics.median(e.dwell_s for e in dwell) <= 48
    assert min(e.dwell_s for e in dwell) >= 3
    assert 300 <= max(e.dwell_s for e in dwell) <= 900, "a long tail, but nobody stays all day"
    popularity = {a.artwork_id: a.popularity for a in museum.artworks}
    popular = statistics.median(e.dwell_s for e in dwell if popularity[e.artwork_id] >= 9)
    quiet = statistics.median(e.dwell_s for e in dwell if popularity[e.artwork_id] <= 5)
    assert popular > 1.2 * quiet


def test_gateway_stream_counts_every_window(museum: Museum) -> None:
    stream = gateway_events(random.Random(8), museum, SITE, "gateway-5", "realisme", START, window_s=60)
    items = list(itertools.islice(stream, 4000))
    for (at, event), (next_at, _) in itertools.pairwise(items):
        assert at == event.occurred_at <= next_at
    events = [e for _, e in items]
    last = max(i for i, e in enumerate(events) if isinstance(e, OccupancyCounted))
    # Up to the last count everything is known; pairs still open after it may close later.
    counts = check_counts(events[: last + 1] + _closing(events[last + 1:], events[: last + 1]), 60.0, "realisme")
    assert [c.occurred_at for c in counts] == [START + timedelta(minutes=m) for m in range(1, len(counts) + 1)]
    hours = len(counts) / 60
    visits = len({e.visit_id for e in events if isinstance(e, ProximityEntered)})
    assert 35 <= visits / hours <= 85, "about 60 visitors an hour by default"
    assert statistics.mean(c.count for c in counts) >= 1


def _closing(rest: list[Event], done: list[Event]) -> list[Event]:
    """The Left events in `rest` that close pairs still open at the end of `done`."""
    open_: set[str | None] = set()
    for event in done:
        if isinstance(event, ProximityEntered):
            open_.add(event.visit_id)
        elif isinstance(event, ProximityLeft):
            open_.discard(event.visit_id)
    closing = []
    for event in rest:
        if isinstance(event, ProximityLeft) and event.visit_id in open_:
            open_.discard(event.visit_id)
            closing.append(event)
    return closing


# --- inputs -----------------------------------------------------------------------------------------------

def test_visit_tokens_are_reproducible_and_well_formed() -> None:
    tokens = [random_token(random.Random(seed)) for seed in range(500)]
    assert all(len(token) == 22 and is_visit_id(token) for token in tokens)
    assert len(set(tokens)) == 500
    assert random_token(random.Random(3)) == random_token(random.Random(3))
    # What events carry is the token's derivation, as at a real kiosk, drawn from the same bits.
    assert random_visit_id(random.Random(3)) == visit_id_for(random_token(random.Random(3)))


def test_events_carry_the_derivation_of_the_visitors_token_never_the_token(museum: Museum) -> None:
    visitors: list[Visitor] = []
    stream = kiosk_events(random.Random(11), museum, SITE, "kiosk-1", "renaissance", START,
                          on_visitor=visitors.append)
    events = [event for _, event in itertools.islice(stream, 200)]
    sessions = [e for e in events if isinstance(e, KioskSessionStarted)]
    assert len(visitors) >= len(sessions) > 5
    assert [e.visit_id for e in sessions] == [v.visit_id for v in visitors[:len(sessions)]]
    assert all(v.visit_id == visit_id_for(v.token) for v in visitors)
    wire = b"".join(encode_event(e) for e in events).decode()
    assert not [v.token for v in visitors if v.token in wire]
    # The same visits as without the callback: it draws nothing from the rng.
    plain = kiosk_events(random.Random(11), museum, SITE, "kiosk-1", "renaissance", START)
    assert fingerprint([e for _, e in itertools.islice(plain, 200)]) == fingerprint(events)


def test_bad_arguments_are_refused(museum: Museum) -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match=r"zone 'cafeteria' is not a room of demo \(rooms: renaissance, "):
        simulate_kiosk_session(rng, museum, SITE, "kiosk-1", "cafeteria", START)
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        simulate_kiosk_session(rng, museum, SITE, "kiosk-1", "realisme", datetime(2026, 5, 17, 9, 30))
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        kiosk_events(rng, museum, SITE, "kiosk-1", "realisme", datetime(2026, 5, 17, 9, 30))
    with pytest.raises(ValueError, match=r"idle_timeout_s must be a number of seconds of at least 0\.001, got 0"):
        simulate_kiosk_session(rng, museum, SITE, "kiosk-1", "realisme", START, idle_timeout_s=0)
    with pytest.raises(ValueError, match=r"artwork\(s\) klimt-the-kiss are not in room 'realisme'"):
        simulate_gateway_activity(rng, museum, SITE, "gw", "realisme", START, 60, [], artwork_ids=["klimt-the-kiss"])
    with pytest.raises(ValueError, match=r"duration_s must be a number of seconds"):
        simulate_gateway_activity(rng, museum, SITE, "gw", "realisme", START, -5, [])
    with pytest.raises(ValueError, match=r"visitors_per_hour must be a positive number, got 0"):
        gateway_events(rng, museum, SITE, "gw", "realisme", START, visitors_per_hour=0)
