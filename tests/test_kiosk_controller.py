"""The kiosk's decisions, driven without a window: a fake clock, and `emit` collecting what would be recorded.

The controller is the only place that decides screens, sessions, timeouts and events, so these tests cover what a
visitor can do and what a gallery throws at it (stale buttons, touch storms, a pack arriving mid-visit)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from content.model import parse_museum
from kiosk.controller import MODES, KioskController, View
from kiosk.pack_store import InstalledPack
from kiosk.take_home import take_home_url
from protocol.events import (
    AccessibilityModeChanged,
    ArtworkCollected,
    ArtworkViewed,
    ContentPackApplied,
    Event,
    KioskSessionEnded,
    KioskSessionStarted,
    LanguageChanged,
)
from protocol.ids import VISIT_ID, visit_id_for

BASE = "https://visit.example.org"
ROOMS = ("room-a", "room-b", "room-c")


def make_pack(tmp: Path, version: int = 1, languages: tuple[str, ...] = ("fr", "en"),
              rooms: tuple[str, ...] = ROOMS, per_room: int = 3) -> InstalledPack:
    def texts(what: str) -> dict[str, str]:
        return {lang: f"{what} ({lang})" for lang in languages}

    data: dict[str, Any] = {
        "site_id": "test-site", "pack_id": "test-museum", "pack_version": version, "name": texts("Musée"),
        "languages": list(languages),
        "rooms": [{"zone_id": zone, "name": texts(zone), "capacity": 30} for zone in rooms],
        "artworks": [{"artwork_id": f"{zone}-work-{i}", "zone_id": zone, "artist": "Anon", "year": "1900",
                      "title": texts(f"work {i}"), "text": texts("text"), "accessibility": {"lsf_video": False},
                      "popularity": 5} for zone in rooms for i in range(per_room)],
    }
    folder = tmp / f"test-museum-{version}"
    folder.mkdir(exist_ok=True)
    return InstalledPack(parse_museum(data), folder)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Stands for EventWriter.record: builds the real event (so field errors surface) and keeps it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event_class: type[Event], visit_id: str | None = None, **fields: Any) -> Event:
        event = event_class.create(site_id="test-site", device_id="kiosk-01", visit_id=visit_id, **fields)
        self.events.append(event)
        return event

    def of(self, event_class: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, event_class)]

    def types(self) -> list[str]:
        return [event.type for event in self.events]


class Kiosk:
    def __init__(self, tmp: Path, *, pack: bool = True, **kwargs: Any) -> None:
        self.clock = Clock()
        self.emitted = Recorder()
        self.views: list[View] = []
        settings: dict[str, Any] = {"companion_base_url": BASE, "idle_timeout_s": 90, "countdown_s": 10}
        settings.update(kwargs)
        self.controller = KioskController(emit=self.emitted, clock=self.clock, on_change=self.views.append,
                                          **settings)
        self.pack = make_pack(tmp) if pack else None
        self.controller.show_pack(self.pack)

    @property
    def view(self) -> View:
        return self.controller.view

    def start(self) -> KioskController:
        self.controller.touch()
        assert self.view.screen == "browse"
        return self.controller


@pytest.fixture
def kiosk(tmp_path: Path) -> Kiosk:
    return Kiosk(tmp_path)


# --- no content, attract, sessions ------------------------------------------------------------------------

def test_without_a_pack_the_kiosk_says_content_is_coming_and_ignores_touches(tmp_path) -> None:
    kiosk = Kiosk(tmp_path, pack=False)
    controller = kiosk.controller

    for action in (controller.touch, lambda: controller.open_room("room-a"), controller.open_my_visit,
                   lambda: controller.collect("room-a-work-0"), controller.end_visit, controller.tick):
        action()

    assert kiosk.view.screen == "no_content" and kiosk.view.museum is None
    assert kiosk.view.languages == ("fr", "en") and controller.idle
    assert kiosk.emitted.events == []


def test_a_touch_on_the_attract_loop_starts_a_session_in_the_home_room(tmp_path) -> None:
    kiosk = Kiosk(tmp_path, home_zone="room-b")
    assert kiosk.view.screen == "attract" and kiosk.view.zone_id == "room-b" and kiosk.view.session_id is None

    kiosk.controller.touch()

    view = kiosk.view
    assert (view.screen, view.zone_id, view.language) == ("browse", "room-b", "fr")
    started, = kiosk.emitted.events
    assert isinstance(started, KioskSessionStarted)
    assert (started.session_id, started.language, started.visit_id) == (view.session_id, "fr", None)


@pytest.mark.parametrize(("home_zone", "shown"), [(None, "room-a"), ("room-c", "room-c"), ("gone", "room-a")])
def test_a_home_room_missing_from_the_pack_falls_back_to_the_first_room(tmp_path, home_zone, shown) -> None:
    kiosk = Kiosk(tmp_path, home_zone=home_zone)
    assert kiosk.view.zone_id == shown
    assert kiosk.start() and kiosk.view.zone_id == shown


def test_a_touch_storm_starts_one_session_and_redraws_nothing(kiosk) -> None:
    kiosk.start()
    views = len(kiosk.views)

    for _ in range(1000):
        kiosk.controller.touch()

    assert kiosk.emitted.types() == ["kiosk.session_started"]
    assert len(kiosk.views) == views, "a touch that changes nothing on screen makes no new view"


def test_browsing_rooms_and_works_emits_a_view_per_detail_with_the_session(kiosk) -> None:
    controller = kiosk.start()

    controller.open_room("room-b")
    assert (kiosk.view.screen, kiosk.view.zone_id) == ("browse", "room-b")
    controller.open_artwork("room-c-work-1")
    assert (kiosk.view.screen, kiosk.view.artwork_id, kiosk.view.zone_id) == ("detail", "room-c-work-1", "room-c")
    controller.back()
    assert (kiosk.view.screen, kiosk.view.artwork_id, kiosk.view.zone_id) == ("browse", None, "room-c")

    viewed, = kiosk.emitted.of(ArtworkViewed)
    assert (viewed.artwork_id, viewed.source, viewed.language) == ("room-c-work-1", "kiosk", "fr")
    assert viewed.session_id == kiosk.view.session_id and viewed.visit_id is None


def test_views_are_new_objects_with_growing_generations(kiosk) -> None:
    controller = kiosk.start()
    before = kiosk.view
    controller.open_room("room-b")
    assert kiosk.view is not before and kiosk.view.generation > before.generation
    assert kiosk.views[-1] is kiosk.view
    generations = [view.generation for view in kiosk.views]
    assert generations == sorted(set(generations))


# --- the idle timeout -------------------------------------------------------------------------------------

def test_the_countdown_shows_after_the_idle_timeout_and_a_touch_cancels_it(kiosk) -> None:
    controller = kiosk.start()
    kiosk.clock.advance(89.9)
    controller.tick()
    assert kiosk.view.countdown_s is None

    kiosk.clock.advance(0.1)
    controller.tick()
    assert kiosk.view.countdown_s == 10
    kiosk.clock.advance(3.5)
    controller.tick()
    assert kiosk.view.countdown_s == 7

    controller.touch()
    assert kiosk.view.countdown_s is None and kiosk.view.screen == "browse"
    kiosk.clock.advance(89)
    controller.tick()
    assert kiosk.view.countdown_s is None, "the idle timer counts from the last touch"
    assert kiosk.emitted.types() == ["kiosk.session_started"]


@pytest.mark.parametrize("answer", ["still_here", "touch", "open_my_visit"])
def test_any_answer_to_the_countdown_keeps_the_visit(kiosk, answer) -> None:
    controller = kiosk.start()
    kiosk.clock.advance(95)
    controller.tick()
    assert kiosk.view.countdown_s == 5

    getattr(controller, answer)()

    assert kiosk.view.countdown_s is None and not controller.idle
    kiosk.clock.advance(60)
    controller.tick()
    assert not controller.idle


@pytest.mark.parametrize("late_by", [0.0, 0.2, 3600.0])
def test_the_countdown_running_out_ends_the_session_at_that_moment(kiosk, late_by) -> None:
    controller = kiosk.start()
    kiosk.clock.advance(30)
    controller.open_room("room-b")  # an action is a touch too: the timer restarts here
    started = kiosk.emitted.of(KioskSessionStarted)[0]

    kiosk.clock.advance(90 + 10 + late_by)  # a tick may come late (a busy UI): the session ended at 0 anyway
    controller.tick()

    ended, = kiosk.emitted.of(KioskSessionEnded)
    assert (ended.reason, ended.session_id) == ("timeout", started.session_id)
    assert math.isclose(ended.duration_s, 30 + 90 + 10)
    assert kiosk.view.screen == "attract" and controller.idle


def test_a_new_idle_timeout_applies_to_the_running_session(kiosk) -> None:
    controller = kiosk.start()
    assert controller.set_idle_timeout(20)
    kiosk.clock.advance(20)
    controller.tick()
    assert kiosk.view.countdown_s == 10
    assert not controller.set_idle_timeout(0) and not controller.set_idle_timeout(float("nan"))
    assert controller.idle_timeout_s == 20


# --- ending a visit forgets the visitor -------------------------------------------------------------------

def test_ending_the_visit_forgets_everything_about_the_visitor(kiosk) -> None:
    controller = kiosk.start()
    controller.set_language("en")
    controller.toggle("high_contrast")
    controller.open_room("room-c")
    controller.open_artwork("room-c-work-2")
    controller.collect("room-c-work-2")
    controller.open_my_visit()
    url = kiosk.view.take_home_url
    assert url is not None
    token = url.rsplit("/", 1)[1]
    kiosk.clock.advance(42)

    controller.end_visit()

    ended, = kiosk.emitted.of(KioskSessionEnded)
    assert (ended.reason, ended.duration_s) == ("visitor", 42)
    assert ended.visit_id == visit_id_for(token)
    view = kiosk.view
    assert (view.screen, view.language, view.modes, view.zone_id, view.artwork_id, view.collected,
            view.take_home_url, view.session_id, view.countdown_s) == \
        ("attract", "fr", frozenset(), "room-a", None, (), None, None, None)
    assert token not in repr(vars(controller)), "the token is gone from the controller's memory"
    assert controller.idle


def test_the_next_visitor_starts_afresh(kiosk) -> None:
    controller = kiosk.start()
    controller.collect("room-a-work-0")
    first = kiosk.emitted.of(ArtworkCollected)[0].visit_id
    controller.end_visit()

    kiosk.start().collect("room-a-work-0")

    second = kiosk.emitted.of(ArtworkCollected)[1].visit_id
    assert first != second
    sessions = {event.session_id for event in kiosk.emitted.of(KioskSessionStarted)}
    assert len(sessions) == 2


def test_shutdown_ends_the_visit_and_nothing_starts_after_it(kiosk) -> None:
    controller = kiosk.start()
    kiosk.clock.advance(5)

    controller.shutdown()
    controller.touch()
    controller.shutdown()

    assert kiosk.emitted.types() == ["kiosk.session_started", "kiosk.session_ended"]
    assert kiosk.emitted.of(KioskSessionEnded)[0].reason == "shutdown"


def test_shutdown_when_idle_emits_nothing(kiosk) -> None:
    kiosk.controller.shutdown()
    assert kiosk.emitted.events == []


# --- language and accessibility ---------------------------------------------------------------------------

def test_language_changes_are_events_and_the_same_language_is_not(kiosk) -> None:
    controller = kiosk.start()

    controller.set_language("en")
    controller.set_language("en")
    controller.open_artwork("room-a-work-0")

    changed, = kiosk.emitted.of(LanguageChanged)
    assert (changed.from_language, changed.to_language) == ("fr", "en")
    assert kiosk.emitted.of(ArtworkViewed)[0].language == "en"


@pytest.mark.parametrize("mode", MODES)
def test_each_accessibility_mode_toggles_on_and_off(kiosk, mode) -> None:
    controller = kiosk.start()

    controller.toggle(mode)
    assert kiosk.view.modes == {mode}
    controller.toggle(mode)
    assert kiosk.view.modes == frozenset()

    changes = [(event.mode, event.enabled) for event in kiosk.emitted.of(AccessibilityModeChanged)]
    assert changes == [(mode, True), (mode, False)]


def test_modes_persist_across_screens_of_the_session(kiosk) -> None:
    controller = kiosk.start()
    controller.toggle("large_text")
    controller.open_artwork("room-a-work-1")
    controller.open_my_visit()
    controller.back()
    assert kiosk.view.modes == {"large_text"}


def test_the_default_language_applies_now_when_idle_and_to_the_next_visit_otherwise(kiosk) -> None:
    controller = kiosk.controller
    assert controller.set_default_language("en")
    assert kiosk.view.language == "en"
    kiosk.start()
    assert kiosk.emitted.of(KioskSessionStarted)[0].language == "en"

    assert controller.set_default_language("fr")
    assert kiosk.view.language == "en", "the visitor's language is not changed under them"
    controller.end_visit()
    assert kiosk.view.language == "fr"
    assert not controller.set_default_language("de") and controller.default_language == "fr"


def test_a_default_language_the_pack_lacks_starts_visits_in_its_first_language(tmp_path) -> None:
    kiosk = Kiosk(tmp_path, default_language="de")
    assert kiosk.view.language == "fr"


# --- take it home -----------------------------------------------------------------------------------------

def test_collecting_creates_one_token_and_events_carry_only_its_derivation(kiosk) -> None:
    controller = kiosk.start()
    controller.open_artwork("room-a-work-0")
    assert kiosk.view.take_home_url is None

    controller.collect("room-a-work-0")
    url = kiosk.view.take_home_url
    controller.collect("room-a-work-0")
    controller.collect("room-b-work-1")
    controller.open_artwork("room-b-work-1")
    controller.set_language("en")
    controller.toggle("sign_language")
    controller.end_visit()

    assert url is not None and url.startswith(f"{BASE}/v/")
    token = url.rsplit("/", 1)[1]
    assert url == take_home_url(BASE, token)
    assert VISIT_ID.match(token) and len(token) >= 22
    collected = kiosk.emitted.of(ArtworkCollected)
    assert [event.artwork_id for event in collected] == ["room-a-work-0", "room-b-work-1"], "twice is once"
    assert {event.visit_id for event in collected} == {visit_id_for(token)}
    assert all(event.source == "kiosk" for event in collected)
    after = kiosk.emitted.events[kiosk.emitted.events.index(collected[0]):]
    # Language and accessibility events say only that someone at this kiosk used them (docs/privacy.md): a
    # mode such as sign language can hint at a disability, so it is never tied to a visit.
    private = (LanguageChanged, AccessibilityModeChanged)
    assert all(event.visit_id is None for event in after if isinstance(event, private))
    assert all(event.visit_id == visit_id_for(token) for event in after if not isinstance(event, private))
    assert kiosk.emitted.of(ArtworkViewed)[0].visit_id is None, "no visit id before the first collect"
    for event in kiosk.emitted.events:
        assert token not in repr(event), f"{event.type} carries the token"


def test_my_visit_lists_the_collected_works_in_order(kiosk) -> None:
    controller = kiosk.start()
    for work in ("room-b-work-0", "room-a-work-2", "room-b-work-0"):
        controller.collect(work)
    controller.open_my_visit()
    assert kiosk.view.screen == "my_visit"
    assert kiosk.view.collected == ("room-b-work-0", "room-a-work-2")
    controller.back()
    assert kiosk.view.screen == "browse"


# --- content packs ----------------------------------------------------------------------------------------

def test_a_pack_offered_while_idle_is_shown_at_once(tmp_path) -> None:
    kiosk = Kiosk(tmp_path, pack=False)
    pack = make_pack(tmp_path, version=2)

    assert kiosk.controller.offer_pack(pack)

    assert kiosk.view.screen == "attract" and kiosk.view.museum == pack.museum and kiosk.view.pack_path == pack.path
    applied, = kiosk.emitted.of(ContentPackApplied)
    assert (applied.pack_id, applied.pack_version, applied.items) == ("test-museum", "2", 9)


@pytest.mark.parametrize("screen", ["browse", "detail", "my_visit"])
def test_a_pack_offered_during_a_visit_waits_until_the_visit_ends(kiosk, tmp_path, screen) -> None:
    controller = kiosk.start()
    controller.open_artwork("room-a-work-0")
    if screen == "browse":
        controller.back()
    elif screen == "my_visit":
        controller.open_my_visit()
    newer = make_pack(tmp_path, version=2, languages=("fr", "en", "de"), rooms=("hall",), per_room=2)

    assert not controller.offer_pack(newer)

    assert kiosk.view.screen == screen and kiosk.view.museum == kiosk.pack.museum
    assert controller.pending_pack == newer and controller.shown_pack == kiosk.pack
    assert kiosk.emitted.of(ContentPackApplied) == []
    controller.open_artwork("room-b-work-0")  # the visitor goes on with the old pack's works
    assert kiosk.view.artwork_id == "room-b-work-0"

    controller.end_visit()

    assert kiosk.view.museum == newer.museum and kiosk.view.screen == "attract"
    assert (kiosk.view.zone_id, kiosk.view.languages) == ("hall", ("fr", "en", "de"))
    assert controller.pending_pack is None
    assert kiosk.emitted.types()[-2:] == ["kiosk.session_ended", "content.pack_applied"]


def test_a_pack_waiting_is_applied_when_the_visit_times_out(kiosk, tmp_path) -> None:
    controller = kiosk.start()
    controller.offer_pack(make_pack(tmp_path, version=2))
    controller.offer_pack(newest := make_pack(tmp_path, version=3))
    kiosk.clock.advance(100)
    controller.tick()
    assert kiosk.view.museum == newest.museum
    assert [event.pack_version for event in kiosk.emitted.of(ContentPackApplied)] == ["3"]


# --- what a gallery throws at it ---------------------------------------------------------------------------

BAD_INPUTS = [
    ("open_room", "no-such-room"), ("open_room", None), ("open_artwork", "no-such-work"), ("open_artwork", 42),
    ("set_language", "de"), ("set_language", None), ("toggle", "easy_read"), ("toggle", "dance"),
    ("collect", "no-such-work"), ("collect", None),
]


@pytest.mark.parametrize(("method", "argument"), BAD_INPUTS)
def test_invalid_input_is_ignored(kiosk, method, argument) -> None:
    controller = kiosk.start()
    before = kiosk.view

    getattr(controller, method)(argument)

    assert kiosk.view.screen == before.screen and kiosk.view.collected == () and kiosk.view.modes == frozenset()
    assert kiosk.emitted.types() == ["kiosk.session_started"]


@pytest.mark.parametrize(("method", "argument"), [("open_room", "room-b"), ("open_artwork", "room-a-work-0"),
                                                  ("collect", "room-a-work-0"), ("set_language", "en"),
                                                  ("toggle", "high_contrast"), ("open_my_visit", None),
                                                  ("back", None), ("end_visit", None), ("still_here", None)])
def test_a_stale_button_on_the_attract_loop_does_nothing(kiosk, method, argument) -> None:
    args = () if argument is None else (argument,)
    getattr(kiosk.controller, method)(*args)
    assert kiosk.view.screen == "attract" and kiosk.controller.idle
    assert kiosk.emitted.events == []


def test_a_failing_emit_or_redraw_does_not_break_the_kiosk(tmp_path) -> None:
    def broken_emit(*_: object, **__: object) -> None:
        raise OSError("disk on fire")

    def broken_redraw(_: View) -> None:
        raise RuntimeError("widget bug")

    controller = KioskController(emit=broken_emit, companion_base_url=BASE, on_change=broken_redraw)
    controller.show_pack(make_pack(tmp_path))
    controller.touch()
    controller.collect("room-a-work-0")
    controller.end_visit()
    assert controller.view.screen == "attract"


def test_a_bad_companion_url_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="companion base URL"):
        KioskController(emit=Recorder(), companion_base_url="ftp://visit.example.org")
