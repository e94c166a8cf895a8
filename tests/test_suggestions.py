"""Take-home content in the pack (periods, techniques, staff events and suggestions) and "keep exploring"."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import pytest

from companion_api.suggestions import (
    EVENT,
    KINDS,
    NEARBY,
    PERIOD,
    POPULAR,
    STAFF,
    TECHNIQUE,
    Suggestion,
    keep_exploring,
)
from content.model import Museum, MuseumEvent, StaffSuggestion, museum_to_dict, parse_museum
from content.sample import SAMPLE_MUSEUM_PATH, load_sample_museum

TODAY = date(2026, 11, 30)
NBSP = "\u00a0"


@dataclass(frozen=True)
class Item:
    artwork_id: str
    kind: str


@pytest.fixture(scope="module")
def sample() -> Museum:
    return load_sample_museum()


def sample_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE_MUSEUM_PATH.read_text("utf-8"))
    return data


def texts(what: str, languages: tuple[str, ...] = ("fr", "en")) -> dict[str, str]:
    return {lang: f"{what} ({lang})" for lang in languages}


def small_museum(languages: tuple[str, ...] = ("fr", "en"), **take_home: Any) -> Museum:
    """Two rooms; works with a given period, technique and popularity, to make each rule visible."""
    def work(artwork_id: str, zone: str, popularity: int, period: str | None, technique: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "artwork_id": artwork_id, "zone_id": zone, "artist": f"Artist {artwork_id}", "year": "1900",
            "title": texts(f"title {artwork_id}", languages), "text": texts("text", languages),
            "accessibility": {"lsf_video": False}, "popularity": popularity}
        if period is not None:
            data["period"] = texts(period, languages)
        if technique is not None:
            data["technique"] = texts(technique, languages)
        return data

    data: dict[str, Any] = {
        "site_id": "test-site", "pack_id": "test-museum", "pack_version": 1, "name": texts("Musée", languages),
        "languages": list(languages),
        "rooms": [{"zone_id": zone, "name": texts(f"room {zone}", languages), "capacity": 30} for zone in "ab"],
        "artworks": [
            work("a1", "a", 5, "p1", "oil"),
            work("a2", "a", 9, "p1", "oil"),
            work("a3", "a", 7, "p2", "ink"),
            work("a4", "a", 7, "p2", "oil"),
            work("b1", "b", 3, "p3", "oil"),
            work("b2", "b", 8, "p3", "fresco"),
            work("b3", "b", 2, None, None),
        ]}
    if take_home:
        data["take_home"] = take_home
    return parse_museum(data)


def event(event_id: str, starts_on: str, ends_on: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"event_id": event_id, "title": texts(f"event {event_id}"), "text": texts("what"),
                            "starts_on": starts_on}
    if ends_on is not None:
        data["ends_on"] = ends_on
    return data


def staff(suggestion_id: str, artwork_ids: list[str] | None = None, zone_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"suggestion_id": suggestion_id, "title": texts(f"tip {suggestion_id}"),
                            "text": texts("tip")}
    if artwork_ids is not None:
        data["artwork_ids"] = artwork_ids
    if zone_id is not None:
        data["zone_id"] = zone_id
    return data


def of_kind(suggestions: list[Suggestion], kind: str) -> list[Suggestion]:
    return [suggestion for suggestion in suggestions if suggestion.kind == kind]


# --- the content model ---------------------------------------------------------------------------------------

def test_the_sample_has_a_period_and_a_technique_for_every_work_and_take_home_content(sample: Museum) -> None:
    for artwork in sample.artworks:
        assert artwork.period is not None and artwork.technique is not None, artwork.artwork_id
        assert artwork.period.languages == artwork.technique.languages == ("fr", "en")
    assert len({artwork.period for artwork in sample.artworks}) >= 6
    assert len({artwork.technique for artwork in sample.artworks}) >= 4
    events = sample.take_home.events
    assert 2 <= len(events) <= 3
    assert all(date(2026, 12, 1) <= event.starts_on <= date(2027, 12, 31) for event in events)
    assert any(event.ends_on is not None and event.ends_on > event.starts_on for event in events)
    assert 2 <= len(sample.take_home.suggestions) <= 3
    for text in [event.text for event in events] + [tip.text for tip in sample.take_home.suggestions]:
        assert " :" not in text["fr"] and text["fr"] != text["en"]


def test_the_sample_round_trips_with_its_new_keys(sample: Museum) -> None:
    assert museum_to_dict(sample) == sample_data()
    assert parse_museum(museum_to_dict(sample)) == sample


def test_periods_techniques_and_take_home_are_optional() -> None:
    data = sample_data()
    del data["take_home"]
    for artwork in data["artworks"]:
        del artwork["period"], artwork["technique"]
    museum = parse_museum(data)
    assert museum.take_home.events == () and museum.take_home.suggestions == ()
    assert all(artwork.period is None and artwork.technique is None for artwork in museum.artworks)
    assert "take_home" not in museum_to_dict(museum) and parse_museum(museum_to_dict(museum)) == museum
    only_events = parse_museum({**data, "take_home": {"events": [event("talk", "2027-01-05")]}})
    assert only_events.take_home.events == (
        MuseumEvent("talk", only_events.take_home.events[0].title, only_events.take_home.events[0].text,
                    date(2027, 1, 5)),)
    assert parse_museum(museum_to_dict(only_events)) == only_events
    tip = parse_museum({**data, "take_home": {"suggestions": [staff("tip")]}}).take_home.suggestions[0]
    assert isinstance(tip, StaffSuggestion) and tip.artwork_ids == () and tip.zone_id is None


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            if isinstance(key, str) and key.startswith("@"):
                target = next(item for item in target if item["artwork_id"] == key[1:])
            else:
                target = target[key]
        target[path[-1]] = value
    return mutate


def _append(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path:
            target = target[key]
        target.append(copy.deepcopy(value))
    return mutate


BAD_TAKE_HOME = [
    pytest.param(_set(("artworks", "@klimt-the-kiss", "period"), "Sécession"),
                 r"artworks\[25\] \(klimt-the-kiss\): period must be an object with one text per language",
                 id="period-string"),
    pytest.param(_set(("artworks", "@klimt-the-kiss", "technique"), {"fr": "Huile"}),
                 r"\(klimt-the-kiss\): technique has no 'en' version", id="technique-en"),
    pytest.param(_set(("take_home",), []), r"take_home must be a JSON object, got a list", id="take-home-list"),
    pytest.param(_set(("take_home", "news"), []), r"take_home has unknown field\(s\) news", id="unknown-list"),
    pytest.param(_set(("take_home", "events"), {}), r"take_home\.events must be a JSON list, got an object",
                 id="events-object"),
    pytest.param(_set(("take_home", "events", 1, "starts_on"), "23/01/2027"),
                 r"take_home\.events\[1\] \(vagues-et-montagnes\): starts_on must be a date written YYYY-MM-DD, "
                 r"got '23/01/2027'", id="day-format"),
    pytest.param(_set(("take_home", "events", 1, "starts_on"), "20270123"),
                 r"starts_on must be a date written YYYY-MM-DD, got '20270123'", id="day-basic-iso"),
    pytest.param(_set(("take_home", "events", 0, "starts_on"), "2027-02-30"),
                 r"take_home\.events\[0\] \(nocturne-decembre\): starts_on must be a date written YYYY-MM-DD, "
                 r"got '2027-02-30'", id="day-impossible"),
    pytest.param(_set(("take_home", "events", 1, "ends_on"), "2027-01-01"),
                 r"take_home\.events\[1\] \(vagues-et-montagnes\): ends_on 2027-01-01 is before starts_on "
                 r"2027-01-23", id="ends-before"),
    pytest.param(_set(("take_home", "events", 1, "ends_on"), None),
                 r"\(vagues-et-montagnes\): ends_on must be a date written YYYY-MM-DD, got null", id="ends-null"),
    pytest.param(_set(("take_home", "events", 0, "event_id"), "Nocturne"),
                 r"take_home\.events\[0\]\.event_id must be an identifier", id="event-id"),
    pytest.param(_set(("take_home", "events", 2, "text"), {"fr": "Visite", "en": " "}),
                 r"take_home\.events\[2\] \(visite-lsf-vermeer\): text\.en must be non-empty text", id="blank"),
    pytest.param(_set(("take_home", "events", 0, "place"), "hall"),
                 r"take_home\.events\[0\] has unknown field\(s\) place", id="event-unknown-field"),
    pytest.param(_append(("take_home", "events"), event("nocturne-decembre", "2027-03-01")),
                 r"take_home\.events: event_id 'nocturne-decembre' appears twice", id="event-twice"),
    pytest.param(_set(("take_home", "suggestions", 1, "artwork_ids"), ["bruegel-tower-of-babel", "mona-lisa"]),
                 r"take_home\.suggestions\[1\] \(details-de-bruegel\): artwork_ids\[1\] 'mona-lisa' is not an "
                 r"artwork of this museum", id="unknown-work"),
    pytest.param(_set(("take_home", "suggestions", 1, "artwork_ids"), ["bruegel-tower-of-babel"] * 2),
                 r"\(details-de-bruegel\): artwork_ids: artwork_id 'bruegel-tower-of-babel' appears twice",
                 id="work-twice"),
    pytest.param(_set(("take_home", "suggestions", 1, "artwork_ids"), "bruegel-tower-of-babel"),
                 r"\(details-de-bruegel\): artwork_ids must be a JSON list, got a string", id="works-string"),
    pytest.param(_set(("take_home", "suggestions", 0, "zone_id"), "salle-99"),
                 r"take_home\.suggestions\[0\] \(lumiere-de-vermeer\): zone_id 'salle-99' is not a room of this "
                 r"museum", id="unknown-room"),
    pytest.param(_set(("take_home", "suggestions", 2, "title"), {"fr": "Dessiner", "en": "Sketch", "de": "Zeichnen"}),
                 r"\(dessiner-au-musee\): title has a version in de", id="extra-language"),
    pytest.param(_append(("take_home", "suggestions"), staff("dessiner-au-musee")),
                 r"take_home\.suggestions: suggestion_id 'dessiner-au-musee' appears twice", id="tip-twice"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_TAKE_HOME)
def test_bad_take_home_content_is_rejected_precisely(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = sample_data()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        parse_museum(data)


# --- keep exploring: the rules -------------------------------------------------------------------------------

def test_nearby_works_are_the_missed_ones_of_an_engaged_room_most_popular_first() -> None:
    museum = small_museum()
    result = keep_exploring(museum, [Item("a1", "opened")], "en", today=TODAY, limit=20)
    nearby = of_kind(result, NEARBY)
    assert [s.artwork_id for s in nearby][:1] == ["a2"]  # 9 beats 7; a3 and a4 may go to other kinds
    assert all(museum.artwork(s.artwork_id or "").zone_id == "a" for s in nearby)
    assert nearby[0].reason == "In the same room as “title a1 (en)”"
    assert nearby[0].title == "title a2 (en)" and nearby[0].text == "Artist a2, 1900 · room a (en)"


def test_nearby_is_said_to_be_near_the_work_the_visitor_cared_most_about() -> None:
    museum = small_museum()
    items = [Item("a1", "opened"), Item("a3", "collected"), Item("a1", "lingered")]
    nearby = of_kind(keep_exploring(museum, items, "fr", today=TODAY, limit=20), NEARBY)
    assert nearby[0].reason == f"Dans la même salle que «{NBSP}title a3 (fr){NBSP}»"


def test_periods_and_techniques_not_seen_are_suggested_by_their_best_work() -> None:
    museum = small_museum()
    result = keep_exploring(museum, [Item("a1", "collected")], "en", today=TODAY, limit=20)
    # Dealt in turn: nearby a2 (9), then p3 by its best work b2 (8, before p2's 7), then a technique other than oil:
    # fresco's only work is b2, taken, so ink's a3; then nearby a4, which leaves p2 with no work not yet suggested.
    assert [(s.kind, s.artwork_id, s.reason) for s in result] == [
        (NEARBY, "a2", "In the same room as “title a1 (en)”"),
        (PERIOD, "b2", "A period you have not explored yet: p3 (en)"),
        (TECHNIQUE, "a3", "A technique you have not seen yet: ink (en)"),
        (NEARBY, "a4", "In the same room as “title a1 (en)”")]
    seen_oil_only = keep_exploring(museum, [Item("a4", "opened")], "en", today=TODAY, limit=20)
    assert {s.reason for s in of_kind(seen_oil_only, TECHNIQUE)} <= {
        "A technique you have not seen yet: ink (en)", "A technique you have not seen yet: fresco (en)"}
    assert of_kind(seen_oil_only, TECHNIQUE)


def test_staff_suggestions_about_missed_works_or_rooms_come_first() -> None:
    museum = small_museum(suggestions=[staff("general"), staff("seen-work", ["a1"], "a"),
                                       staff("missed-room", zone_id="b"), staff("missed-work", ["a1", "a2"])])
    result = keep_exploring(museum, [Item("a1", "collected")], "en", today=TODAY, limit=30)
    tips = of_kind(result, STAFF)
    assert [s.title for s in tips] == ["tip missed-room (en)", "tip missed-work (en)", "tip general (en)",
                                       "tip seen-work (en)"]
    by_title = {s.title: s for s in tips}
    assert by_title["tip missed-room (en)"].reason == \
        "A suggestion from the museum’s team, in a room you did not visit: room b (en)"
    assert by_title["tip missed-work (en)"].reason == \
        "A suggestion from the museum’s team, about a work you did not see"
    assert by_title["tip general (en)"].reason == "A suggestion from the museum’s team"
    assert by_title["tip seen-work (en)"].artwork_id is None  # its only work is in the visit
    assert by_title["tip missed-work (en)"].artwork_id is None  # a2 came first as "nearby": one work, one link


@pytest.mark.parametrize(("today", "expected"), [
    pytest.param(date(2026, 11, 30), ["one-day", "season", "later"], id="before-all"),
    pytest.param(date(2026, 12, 11), ["one-day", "season", "later"], id="on-the-day"),
    pytest.param(date(2026, 12, 12), ["season", "later"], id="day-after"),
    pytest.param(date(2027, 2, 1), ["season", "later"], id="running"),
    pytest.param(date(2027, 4, 25), ["season", "later"], id="last-day"),
    pytest.param(date(2027, 4, 26), ["later"], id="season-over"),
    pytest.param(date(2028, 1, 1), [], id="all-over"),
])
def test_events_are_those_not_finished_soonest_first(today: date, expected: list[str]) -> None:
    museum = small_museum(events=[event("later", "2027-06-01"), event("season", "2027-01-23", "2027-04-25"),
                                  event("one-day", "2026-12-11", "2026-12-11")])
    events = of_kind(keep_exploring(museum, [Item("a1", "opened")], "en", today=today, limit=30), EVENT)
    assert [s.title for s in events] == [f"event {name} (en)" for name in expected]
    assert all(s.artwork_id is None and s.starts_on is not None for s in events)


@pytest.mark.parametrize(("language", "today", "starts_on", "ends_on", "reason"), [
    ("en", date(2026, 11, 30), "2026-12-11", None, "Coming up at the museum: 11 December 2026"),
    ("fr", date(2026, 11, 30), "2026-12-11", None, f"À venir au musée{NBSP}: le 11 décembre 2026"),
    ("fr", date(2026, 11, 30), "2027-01-01", "2027-01-01", f"À venir au musée{NBSP}: le 1er janvier 2027"),
    ("en", date(2026, 11, 30), "2027-01-23", "2027-04-25", "Coming up at the museum: 23 January to 25 April 2027"),
    ("fr", date(2026, 11, 30), "2027-01-23", "2027-04-25",
     f"À venir au musée{NBSP}: du 23 janvier au 25 avril 2027"),
    ("en", date(2026, 11, 30), "2026-12-20", "2027-01-03",
     "Coming up at the museum: 20 December 2026 to 3 January 2027"),
    ("en", date(2027, 2, 1), "2027-01-23", "2027-04-25", "On now at the museum, until 25 April 2027"),
    ("fr", date(2027, 2, 1), "2027-01-23", "2027-04-25", "En ce moment au musée, jusqu’au 25 avril 2027"),
    ("en", date(2026, 12, 11), "2026-12-11", None, "Today at the museum"),
    ("fr", date(2026, 12, 11), "2026-12-11", None, "Aujourd’hui au musée"),
])
def test_event_dates_read_naturally(language: str, today: date, starts_on: str, ends_on: str | None,
                                    reason: str) -> None:
    museum = small_museum(events=[event("e", starts_on, ends_on)])
    (found,) = of_kind(keep_exploring(museum, [], language, today=today), EVENT)
    assert found.reason == reason


def test_an_empty_visit_gets_highlights_across_periods_and_events(sample: Museum) -> None:
    result = keep_exploring(sample, [], "en", today=TODAY)
    assert [s.kind for s in result] == [POPULAR, EVENT, STAFF, POPULAR, EVENT, STAFF]
    popular = of_kind(keep_exploring(sample, [], "en", today=TODAY, limit=40), POPULAR)
    periods = [sample.artwork(s.artwork_id or "").period for s in popular]
    assert len(periods) == len(set(periods)) == len({artwork.period for artwork in sample.artworks})
    assert [sample.artwork(s.artwork_id or "").popularity for s in popular][:2] == [10, 10]
    assert popular[0].reason == "A highlight of the collection: Dutch Golden Age"


def test_a_visit_the_pack_does_not_know_counts_as_empty_but_its_works_are_still_never_suggested() -> None:
    museum = small_museum()
    result = keep_exploring(museum, [Item("a2", "opened"), Item("gone-from-the-pack", "collected")], "en",
                            today=TODAY, limit=30)
    assert "a2" not in {s.artwork_id for s in result} and of_kind(result, NEARBY)
    unknown_only = keep_exploring(museum, [Item("gone-from-the-pack", "collected")], "en", today=TODAY)
    assert unknown_only == keep_exploring(museum, [], "en", today=TODAY)


def test_works_without_a_period_are_grouped_by_room_for_highlights() -> None:
    museum = small_museum()
    popular = of_kind(keep_exploring(museum, [], "fr", today=TODAY, limit=30), POPULAR)
    assert [s.artwork_id for s in popular] == ["a2", "b2", "a3", "b3"]
    assert popular[-1].reason == f"Un temps fort de la collection{NBSP}: room b (fr)"


# --- keep exploring: guarantees over many visits --------------------------------------------------------------

def random_visits(museum: Museum, count: int) -> list[list[Item]]:
    rng = random.Random(9)
    ids = [artwork.artwork_id for artwork in museum.artworks]
    return [[Item(rng.choice(ids), rng.choice(("collected", "opened", "lingered")))
             for _ in range(rng.randint(0, 12))] for _ in range(count)]


@pytest.mark.parametrize("limit", [1, 4, 6, 12])
def test_never_a_visited_work_never_one_twice_diverse_and_deterministic(sample: Museum, limit: int) -> None:
    for items in random_visits(sample, 150):
        result = keep_exploring(sample, items, "fr", today=TODAY, limit=limit)
        assert 1 <= len(result) <= limit
        works = [s.artwork_id for s in result if s.artwork_id is not None]
        assert not set(works) & {item.artwork_id for item in items}
        assert len(works) == len(set(works))
        assert max(Counter(s.kind for s in result[:4]).values()) <= 2
        assert all(s.kind in KINDS and s.title and s.text and s.reason for s in result)
        assert keep_exploring(sample, items, "fr", today=TODAY, limit=limit) == result


def test_the_same_visit_gives_the_same_suggestions(sample: Museum) -> None:
    items = [Item("monet-impression-sunrise", "collected"), Item("vermeer-milkmaid", "lingered")]
    first = keep_exploring(sample, items, "en", today=TODAY)
    assert keep_exploring(sample, tuple(items), "en", today=TODAY) == first
    assert keep_exploring(sample, iter(items), "en", today=TODAY) == first
    assert [s.kind for s in first] == [NEARBY, PERIOD, STAFF, TECHNIQUE, EVENT, NEARBY]


def test_a_visit_that_saw_everything_still_gets_staff_content_and_events(sample: Museum) -> None:
    items = [Item(artwork.artwork_id, "opened") for artwork in sample.artworks]
    result = keep_exploring(sample, items, "en", today=TODAY, limit=10)
    assert {s.kind for s in result} == {STAFF, EVENT}
    assert all(s.artwork_id is None for s in result)


@pytest.mark.parametrize("limit", [0, -3])
def test_no_room_no_suggestion(sample: Museum, limit: int) -> None:
    assert keep_exploring(sample, [Item("vermeer-milkmaid", "opened")], "en", today=TODAY, limit=limit) == []


def test_any_object_with_the_two_attributes_is_a_visit_item(sample: Museum) -> None:
    class Row(NamedTuple):
        visit_id: str
        artwork_id: str
        kind: str

    rows = [Row("v", "vermeer-milkmaid", "collected")]
    assert keep_exploring(sample, rows, "en", today=TODAY) == \
        keep_exploring(sample, [Item("vermeer-milkmaid", "collected")], "en", today=TODAY)


# --- languages -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("language", "content", "ours"), [
    pytest.param("fr", "fr", "fr", id="fr"),
    pytest.param("en", "en", "en", id="en"),
    pytest.param("fr-CA", "fr", "fr", id="regional"),
    pytest.param("de", "fr", "fr", id="unknown-falls-back-to-the-museum's-first"),
])
def test_texts_are_in_the_visitor_language_or_the_museum_first(sample: Museum, language: str, content: str,
                                                              ours: str) -> None:
    result = keep_exploring(sample, [Item("klimt-the-kiss", "opened")], language, today=TODAY)
    nearby = of_kind(result, NEARBY)[0]
    assert nearby.title == sample.artwork(nearby.artwork_id or "").title[content]
    assert nearby.reason.startswith({"fr": "Dans la même salle", "en": "In the same room"}[ours])
    (first_event, *_) = of_kind(result, EVENT)
    assert first_event.title == sample.take_home.events[0].title[content]


def test_a_museum_in_languages_we_do_not_write_gets_english_reasons() -> None:
    museum = small_museum(languages=("de", "it"), events=[])
    result = keep_exploring(museum, [Item("a1", "opened")], "it", today=TODAY)
    assert result[0].title == "title a2 (it)" and result[0].reason == "In the same room as “title a1 (it)”"
    assert keep_exploring(museum, [Item("a1", "opened")], "es", today=TODAY)[0].title == "title a2 (de)"
