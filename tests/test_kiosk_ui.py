"""The kiosk app rendered for real, offscreen (EGL on Mesa with DISPLAY unset), driven with Kivy's UnitTestTouch
through `kiosk.ui.KioskHarness`, on the sample content pack and the real controller.

Kivy makes one window per process: every test here shares it (the session fixture `harness`) and gets a fresh
app and controller (`kiosk`). Time is the controller's injected clock: the idle timeout is reached by moving that
clock, never by sleeping. Events are created with the real event classes (so a field the controller gets wrong
fails here) and collected in a list; the end-to-end check against a real broker and hub is elsewhere.

Screenshots of every screen (FR and EN, normal and high contrast) are written to a temporary folder, or to
$KIOSK_SCREENSHOTS_DIR when set (how the docs' pictures are made), and each is checked not to be blank.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import assert_not_blank

from content.pack import build_pack
from content.sample import SAMPLE_MUSEUM_PATH
from kiosk import texts, theme
from kiosk.controller import KioskController
from kiosk.pack_store import InstalledPack, PackStore
from protocol.events import (
    AccessibilityModeChanged,
    ArtworkCollected,
    ArtworkViewed,
    Event,
    KioskSessionEnded,
    KioskSessionStarted,
    LanguageChanged,
)
from qr.frames import Frame
from qr.zbar import ZbarDecoder

HOME = "impressionnisme"
IDLE_S = 90.0
COUNTDOWN_S = 10.0
BASE_URL = "https://visit.example.org"
WAIT_S = 15.0
# Works outside the home room (the attract loop shows the home room's titles, whoever visited).
AV_WORK = "vermeer-milkmaid"          # audio description FR/EN and an LSF video with captions
OTHER_WORK = "botticelli-birth-of-venus"


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Kiosk:
    harness: Any
    controller: KioskController
    clock: FakeClock
    events: list[Event] = field(default_factory=list)

    def types(self) -> list[type[Event]]:
        return [type(event) for event in self.events]


# --- fixtures -------------------------------------------------------------------------------------------------

# The window itself (`harness`), `sample_pack` and `kiosk_work_dir` are session fixtures of conftest.py: every
# module that renders the kiosk shares Kivy's one window.

@pytest.fixture(scope="session")
def shots(kiosk_work_dir: Path) -> Path:
    folder = Path(os.environ.get("KIOSK_SCREENSHOTS_DIR") or kiosk_work_dir / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _controller(events: list[Event], clock: FakeClock, pack: InstalledPack | None) -> KioskController:
    def emit(event_class: type[Event], visit_id: str | None = None, **fields: Any) -> Event:
        event = event_class.create(site_id="test-site", device_id="kiosk-ui", visit_id=visit_id, **fields)
        events.append(event)
        return event

    controller = KioskController(emit=emit, home_zone=HOME, companion_base_url=BASE_URL, idle_timeout_s=IDLE_S,
                                 countdown_s=COUNTDOWN_S, default_language="fr", clock=clock)
    controller.show_pack(pack)
    return controller


@pytest.fixture
def kiosk(harness: Any, sample_pack: InstalledPack) -> Iterator[Kiosk]:
    clock, events = FakeClock(), []
    controller = _controller(events, clock, sample_pack)
    harness.reset(controller)
    yield Kiosk(harness, controller, clock, events)
    controller.shutdown()


# --- helpers --------------------------------------------------------------------------------------------------

def shoot(kiosk: Kiosk, shots: Path, name: str) -> Path:
    path = kiosk.harness.screenshot(shots / f"{name}.png")
    assert path == (shots / f"{name}.png").absolute() and path.exists()
    assert_not_blank(path)
    return path


def shoot_variants(kiosk: Kiosk, shots: Path, name: str) -> None:
    """The current screen in FR and EN, normal and high contrast; leaves the kiosk in FR, normal."""
    harness, controller = kiosk.harness, kiosk.controller
    for high in (False, True):
        if ("high_contrast" in controller.view.modes) != high:
            harness.tap("mode:high_contrast")
        for language in ("fr", "en"):
            if controller.view.language != language:
                harness.tap(f"lang:{language}")
            path = shoot(kiosk, shots, f"{name}-{language}-{'high-contrast' if high else 'normal'}")
            if high:
                with Image.open(path) as image:
                    black = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
                assert dict((colour, count) for count, colour in black).get((0, 0, 0), 0) > 0.3 * 1280 * 800
    harness.tap("lang:fr")
    harness.tap("mode:high_contrast")
    assert controller.view.language == "fr" and "high_contrast" not in controller.view.modes


def title(kiosk: Kiosk, artwork_id: str, language: str) -> str:
    museum = kiosk.controller.view.museum
    assert museum is not None
    return museum.artwork(artwork_id).title[language]


def detail(kiosk: Kiosk) -> Any:
    return kiosk.harness.root.screens["detail"]


def wait(kiosk: Kiosk, condition: Any, what: str) -> None:
    assert kiosk.harness.run_until(condition, WAIT_S), f"timed out waiting for {what}"


def qr_of(path: Path) -> list[str]:
    with Image.open(path) as image:
        return [code.text for code in ZbarDecoder().decode(Frame.from_image(image.convert("L")))]


# --- the guard against rendering nothing ------------------------------------------------------------------------

def test_frames_are_really_rendered(kiosk: Kiosk, shots: Path) -> None:
    """KIVY_GL_BACKEND=mock (or a broken GL) would let every other test pass on nothing: this one fails then."""
    from kiosk.ui import kivy_settings

    assert kivy_settings()["window"]["gl_backend"] != "mock"
    before = kiosk.harness.frames_rendered
    kiosk.harness.tap((640, 400))
    kiosk.harness.step(3)
    assert kiosk.harness.frames_rendered > before > 0
    assert_not_blank(shoot(kiosk, shots, "frames-check"), min_colours=32)
    png = kiosk.harness.capture_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) <= 480 * 1024


# --- the visitor's journey ------------------------------------------------------------------------------------

def test_a_visit_from_attract_to_timeout(kiosk: Kiosk, shots: Path) -> None:
    harness, view = kiosk.harness, lambda: kiosk.controller.view

    # Attract loop: the home room's works and the bilingual invitation; any touch starts a visit.
    assert view().screen == "attract"
    shown = harness.texts()
    assert "Touchez pour commencer" in shown and "Touch to start" in shown
    shoot(kiosk, shots, "attract")
    harness.tap((200, 150))
    assert view().screen == "browse" and kiosk.types() == [KioskSessionStarted]
    assert view().zone_id == HOME
    shoot_variants(kiosk, shots, "browse")

    # Another room, then a work with an audio description and an LSF video.
    harness.tap("room:siecle-d-or")
    assert view().zone_id == "siecle-d-or"
    harness.tap(f"artwork:{AV_WORK}")
    assert view().screen == "detail" and view().artwork_id == AV_WORK
    viewed = [e for e in kiosk.events if isinstance(e, ArtworkViewed)]
    assert len(viewed) == 1 and viewed[0].session_id == view().session_id and viewed[0].artwork_id == AV_WORK
    assert title(kiosk, AV_WORK, "fr") in harness.texts()
    shoot_variants(kiosk, shots, "detail")

    # Audio description: play, progress, pause keeps the position.
    screen = detail(kiosk)
    harness.tap("audio")
    assert screen.audio.playing
    wait(kiosk, lambda: screen.audio.position > 0.5 and screen.audio_progress > 0, "the audio to progress")
    harness.tap("audio")
    assert not screen.audio.playing
    paused_at = screen.audio.position
    assert paused_at > 0.5 and screen.audio_label == "Reprendre"
    harness.step(5)
    assert screen.audio.position == paused_at

    # LSF video with captions drawn under it.
    harness.tap("lsf")
    assert screen.video_shown
    wait(kiosk, lambda: screen._video.loaded and screen._video.position > 0.3 and screen.caption,
         "the LSF video to play with a caption")
    assert screen.caption in harness.texts()
    shoot(kiosk, shots, "detail-lsf-fr-normal")
    harness.tap("lsf")
    assert not screen.video_shown and screen.caption == ""

    # Full-screen picture, closed by any touch.
    harness.tap("picture")
    assert harness.exists("close_viewer")
    shoot(kiosk, shots, "picture-viewer")
    harness.tap((100, 100))
    assert not harness.exists("close_viewer")

    # Take it home: the first one creates the visit's token.
    harness.tap("take_home")
    assert view().collected == (AV_WORK,) and view().take_home_url
    collected = [e for e in kiosk.events if isinstance(e, ArtworkCollected)]
    assert len(collected) == 1 and collected[0].visit_id
    assert "Dans ma visite" in harness.texts() and "Ma visite (1)" in harness.texts()
    harness.tap("take_home")  # twice is still once
    assert view().collected == (AV_WORK,)

    # Language and high contrast persist across screens.
    harness.tap("lang:en")
    assert view().language == "en" and title(kiosk, AV_WORK, "en") in harness.texts()
    assert "In my visit" in harness.texts() and "My visit (1)" in harness.texts()
    harness.tap("mode:high_contrast")
    assert "high_contrast" in view().modes
    shoot(kiosk, shots, "detail-collected-en-high-contrast")
    harness.tap("back")
    assert view().screen == "browse" and "high_contrast" in view().modes
    harness.tap("room:renaissance")
    harness.tap(f"artwork:{OTHER_WORK}")
    harness.tap("take_home")
    assert view().collected == (AV_WORK, OTHER_WORK)

    # My visit: the works and the QR code of the take-home URL, readable from the screenshot.
    harness.tap("my_visit")
    assert view().screen == "my_visit"
    url = view().take_home_url
    assert url and url.startswith(f"{BASE_URL}/v/")
    shown = harness.texts()
    assert url in shown
    assert any(title(kiosk, AV_WORK, "en") in text for text in shown)
    assert any(title(kiosk, OTHER_WORK, "en") in text for text in shown)
    qr = harness.root.screens["my_visit"].ids.qr
    assert qr.side >= 300
    assert qr_of(shoot(kiosk, shots, "my-visit-en-high-contrast")) == [url]
    harness.tap("mode:high_contrast")
    harness.tap("lang:fr")
    assert qr_of(shoot(kiosk, shots, "my-visit-fr-normal")) == [url]
    shoot_variants(kiosk, shots, "my-visit")
    types = set(kiosk.types())
    assert {LanguageChanged, AccessibilityModeChanged} <= types

    # Idle: the countdown appears after the timeout, "I'm still here" cancels it.
    kiosk.clock.advance(IDLE_S + 0.5)
    wait(kiosk, lambda: view().countdown_s is not None, "the countdown")
    assert "Êtes-vous toujours là\u202f?" in harness.texts()
    shoot(kiosk, shots, "still-there-fr")
    harness.tap("still_here")
    assert view().countdown_s is None and view().screen == "my_visit"
    assert not harness.exists("still_here")

    # Then nobody: the visit ends with reason timeout and every trace of the visitor is gone.
    token = url.rsplit("/", 1)[1]
    kiosk.clock.advance(IDLE_S + 0.5)
    wait(kiosk, lambda: view().countdown_s is not None, "the countdown again")
    kiosk.clock.advance(COUNTDOWN_S + 0.5)
    wait(kiosk, lambda: view().screen == "attract", "the attract loop after the timeout")
    ended = kiosk.events[-1]
    assert isinstance(ended, KioskSessionEnded) and ended.reason == "timeout"
    assert view().collected == () and view().take_home_url is None and view().language == "fr"
    harness.step(3)
    everything = "\n".join(harness.texts(all_screens=True))
    for work in (AV_WORK, OTHER_WORK):
        for language in ("fr", "en"):
            assert title(kiosk, work, language) not in everything
    assert token not in everything and BASE_URL not in everything
    assert "Ma visite (1)" not in everything and "Ma visite (2)" not in everything
    assert harness.root.screens["my_visit"].ids.qr.side == 0
    assert not detail(kiosk).audio.playing and not detail(kiosk).video_shown
    assert all(token not in json.dumps(vars(e), default=str) for e in kiosk.events)  # only its derivation
    shoot(kiosk, shots, "attract-after-timeout")


def test_end_my_visit_returns_to_attract(kiosk: Kiosk) -> None:
    harness = kiosk.harness
    harness.tap((640, 400))
    harness.tap(f"artwork:{title_id(kiosk)}")
    harness.tap("take_home")
    harness.tap("end_visit")
    assert kiosk.controller.view.screen == "attract"
    ended = kiosk.events[-1]
    assert isinstance(ended, KioskSessionEnded) and ended.reason == "visitor"
    harness.tap((640, 400))
    assert "Ma visite (0)" in harness.texts()


def title_id(kiosk: Kiosk) -> str:
    museum = kiosk.controller.view.museum
    assert museum is not None
    return museum.artworks_in(HOME)[0].artwork_id


def test_the_touch_that_starts_a_visit_presses_nothing_else(kiosk: Kiosk) -> None:
    harness = kiosk.harness
    harness.tap((640, 400))
    card = harness.find(f"artwork:{title_id(kiosk)}")
    where = card.to_window(*card.center)
    harness.tap("end_visit")
    assert kiosk.controller.view.screen == "attract"
    harness.tap(where)  # where a card is on browse: on attract it only starts the visit
    assert kiosk.controller.view.screen == "browse"
    assert isinstance(kiosk.events[-1], KioskSessionStarted)
    assert not any(isinstance(e, ArtworkViewed) for e in kiosk.events)


def test_modes_from_the_accessibility_bar(kiosk: Kiosk, shots: Path) -> None:
    harness, view = kiosk.harness, lambda: kiosk.controller.view
    harness.tap((640, 400))
    harness.tap("mode:large_text")
    assert harness.app.font["body"] == pytest.approx(22 * 1.4)
    harness.step(2)
    shoot(kiosk, shots, "browse-fr-large-text")
    assert all(w >= 64 and h >= 64 for _, w, h in harness.touch_targets())
    harness.tap("mode:sign_language")
    harness.tap(f"artwork:{title_id(kiosk)}")  # Monet: has an LSF video, shown at once in sign-language mode
    screen = detail(kiosk)
    assert screen.video_shown
    wait(kiosk, lambda: bool(screen.caption), "a caption")
    shoot(kiosk, shots, "detail-fr-large-text-sign-language")
    harness.tap("mode:audio_description")
    assert screen.audio.playing
    assert "Description de l’image" in screen.picture_note
    harness.tap("back")
    assert not screen.audio.playing and not screen.video_shown
    assert view().modes == {"large_text", "sign_language", "audio_description"}


def assert_in_look(kiosk: Kiosk, palette: theme.Palette, scale: float, language: str) -> None:
    """Every label shown, in the frame just drawn, has the palette's colours, the text sizes of `scale` and the
    chrome of `language`, and its texture was drawn with them (none left stale or waiting for a later frame)."""
    from kiosk import ui

    harness = kiosk.harness
    colours = {theme.rgba(colour) for colour in palette.colours().values()}
    sizes = set(theme.font_sizes(scale).values())
    labels = [w for w in harness.walk() if isinstance(w, ui.Label) and w.text and harness.visible(w)]
    assert len(labels) >= 8
    for label in labels:
        assert tuple(label.color) in colours, (label.text, tuple(label.color), palette.name)
        assert label.font_size in sizes, (label.text, label.font_size, scale)
        assert label not in ui._stale_labels and not label._trigger_texture.is_triggered, label.text
        assert label._label.text == label.text and label.texture is not None, label.text
    background = "attract" if kiosk.controller.view.screen == "attract" else "background"
    assert tuple(harness.window.clearcolor) == theme.rgba(palette.colours()[background])
    shown = harness.texts()
    other = "fr" if language == "en" else "en"
    for key in ("end_visit", "back") if kiosk.controller.view.screen == "my_visit" else ("end_visit",):
        assert texts.STRINGS[key][language] in shown and texts.STRINGS[key][other] not in shown, key


def test_a_screen_shown_after_a_toggle_is_in_the_new_look_in_its_first_frame(kiosk: Kiosk, shots: Path) -> None:
    """Only the screen shown follows a toggle or a language switch at once; another screen catches up before it
    appears: already right in the frame that shows it."""
    harness, view = kiosk.harness, lambda: kiosk.controller.view
    harness.tap((640, 400))
    harness.tap(f"artwork:{title_id(kiosk)}")
    assert view().screen == "detail"
    assert_in_look(kiosk, theme.NORMAL, 1.0, "fr")
    for name in ("mode:high_contrast", "mode:large_text", "lang:en"):
        harness.tap(name)
    assert_in_look(kiosk, theme.HIGH_CONTRAST, theme.LARGE_TEXT_SCALE, "en")

    harness.tap("my_visit")  # never shown yet in this app: built in French, normal
    assert view().screen == "my_visit"
    assert_in_look(kiosk, theme.HIGH_CONTRAST, theme.LARGE_TEXT_SCALE, "en")
    assert texts.STRINGS["my_visit_title"]["en"] in harness.texts()
    path = shoot(kiosk, shots, "my_visit-en-high-contrast-large-text-after-toggle")
    with Image.open(path) as image:
        black = dict((colour, count) for count, colour in image.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert black.get((0, 0, 0), 0) > 0.3 * 1280 * 800

    harness.tap("back")  # to browse, last shown in French and normal
    assert view().screen == "browse"
    assert_in_look(kiosk, theme.HIGH_CONTRAST, theme.LARGE_TEXT_SCALE, "en")
    assert texts.STRINGS["rooms"]["en"] in harness.texts()
    shoot(kiosk, shots, "browse-en-high-contrast-large-text-after-toggle")

    harness.tap("mode:high_contrast")
    harness.tap("lang:fr")
    harness.tap("mode:large_text")
    harness.tap(f"artwork:{title_id(kiosk)}")  # the detail screen, last shown in English, high contrast
    assert view().screen == "detail"
    assert_in_look(kiosk, theme.NORMAL, 1.0, "fr")
    shoot(kiosk, shots, "detail-fr-normal-after-toggle")


def test_every_button_is_a_large_enough_target_on_every_screen(kiosk: Kiosk) -> None:
    harness = kiosk.harness
    seen: dict[str, int] = {}

    def check(screen: str) -> None:
        targets = harness.touch_targets()
        small = [(name, w, h) for name, w, h in targets if w < 64 or h < 64]
        assert not small, f"{screen}: {small}"
        seen[screen] = len(targets)

    harness.tap((640, 400))
    check("browse")
    harness.tap("room:siecle-d-or")
    harness.tap(f"artwork:{AV_WORK}")
    check("detail")
    harness.tap("take_home")
    harness.tap("my_visit")
    check("my_visit")
    assert seen["browse"] >= 10 and seen["detail"] >= 10


def test_no_content_screen_when_there_is_no_pack(harness: Any, shots: Path) -> None:
    clock, events = FakeClock(), []
    controller = _controller(events, clock, None)
    harness.reset(controller)
    assert controller.view.screen == "no_content"
    shown = harness.texts()
    assert "Le contenu arrive" in shown and "Content is on its way" in shown
    path = harness.screenshot(shots / "no-content.png")
    assert_not_blank(path, max_share=0.995)  # text on a plain background
    harness.tap((640, 400))
    assert controller.view.screen == "no_content" and events == []


def test_a_new_pack_in_an_unknown_language_shows_english_chrome(kiosk: Kiosk, kiosk_work_dir: Path,
                                                                 shots: Path) -> None:
    work_dir = kiosk_work_dir
    source = work_dir / "german-source"
    if not source.exists():
        shutil.copytree(SAMPLE_MUSEUM_PATH.parent, source)
        data = json.loads((source / "museum.json").read_text("utf-8"))
        data["pack_version"] += 1
        data["languages"] = ["de", "en"]

        def german(value: Any) -> Any:
            if isinstance(value, dict) and "audio" in value:
                value = {**value, "audio": {"en": value["audio"]["en"]}}  # an English recording only
            if isinstance(value, dict) and set(value) == {"fr", "en"}:
                return {"de": f"DE {value['en']}", "en": value["en"]}
            if isinstance(value, dict):
                return {k: german(v) for k, v in value.items() if not (k == "fr" and "en" in value)}
            if isinstance(value, list):
                return [german(v) for v in value]
            return value

        data = german(data)
        (source / "museum.json").write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        build_pack(source, work_dir / "german.pack")
    pack = PackStore(work_dir / "german-packs").install(work_dir / "german.pack")

    harness, controller = kiosk.harness, kiosk.controller
    assert controller.offer_pack(pack)  # idle: applied now
    harness.step(2)
    assert controller.view.languages == ("de", "en") and controller.view.language == "de"
    harness.tap((640, 400))
    shown = harness.texts()
    assert "Deutsch" in shown and "English" in shown
    assert "End my visit" in shown and "Rooms" in shown  # the chrome in English
    assert any(text.startswith("DE ") for text in shown)  # the content in German
    shoot(kiosk, shots, "browse-de")


def test_a_storm_of_touches_on_every_screen(kiosk: Kiosk) -> None:
    harness, controller = kiosk.harness, kiosk.controller
    rng = random.Random(7)
    screens = set()
    for i in range(600):
        # ten touches a frame: about 600 a second at 60 frames a second
        harness.tap((rng.uniform(0, 1279), rng.uniform(0, 799)), wait=False)
        screens.add(controller.view.screen)
        if i % 10 == 9:
            harness.step(1)
        if i % 97 == 0:
            kiosk.clock.advance(IDLE_S + 1)  # the countdown shows up in the middle of the storm
            harness.step(20)
        if i % 151 == 0 and controller.view.screen == "browse":
            harness.tap(f"artwork:{AV_WORK}" if harness.exists(f"artwork:{AV_WORK}") else (640, 400))
    assert {"browse", "detail"} <= screens
    harness.step(3)
    # Still answering, whatever state the storm left (the app's own clock runs in real time, so which screen,
    # overlay or picture is up is not fixed): each of these touches changes the screen, and is drawn.
    if controller.view.countdown_s is not None:
        harness.tap("still_here")
    if harness.root.viewer.parent is not None:
        harness.tap("close_viewer")
    if controller.idle:
        harness.tap((640, 400))
        assert controller.view.screen == "browse"
    frames = harness.frames_rendered
    harness.tap("end_visit")
    assert harness.frames_rendered > frames
    assert controller.view.screen == "attract"


def test_kiosk_mode_settings() -> None:
    from kiosk.ui import kivy_config

    kiosk = kivy_config(fullscreen=True, kiosk_mode=True)
    assert kiosk["graphics"]["fullscreen"] == "auto"
    assert kiosk["graphics"]["borderless"] == "1"
    assert kiosk["graphics"]["show_cursor"] == "0"
    assert kiosk["kivy"]["exit_on_escape"] == "0"
    assert kiosk["kivy"]["log_enable"] == "0"
    assert list(kiosk["input"]) == ["mouse"]  # one provider: no probesysfs/hidinput/mtdev doubling touches
    desk = kivy_config(fullscreen=False, kiosk_mode=False)
    assert desk["graphics"]["fullscreen"] == "0" and desk["kivy"]["exit_on_escape"] == "1"


def test_the_effective_kivy_settings_are_ours(harness: Any, kiosk_work_dir: Path) -> None:
    from kiosk.ui import kivy_config, kivy_settings

    work_dir = kiosk_work_dir
    settings = kivy_settings()
    wanted = kivy_config(fullscreen=False, kiosk_mode=False)
    for section in ("graphics", "kivy", "input"):
        assert settings[section] == wanted[section], section
    env = settings["env"]
    assert env["KIVY_LOG_MODE"] == "PYTHON" and env["KIVY_NO_ARGS"] == "1" and env["KIVY_NO_CONFIG"] == "1"
    assert env["KIVY_NO_FILELOG"] == "1" and env["KIVY_VIDEO"] == "ffpyplayer"
    assert Path(settings["kivy_home"]["dir"]) == work_dir / "state" / "kivy"
    assert settings["window"]["size"] == "1280x800"
    assert not list((work_dir / "state" / "kivy").iterdir())  # Kivy wrote nothing there (no config, no logs)


def test_a_kiosk_mode_app_refuses_to_close(harness: Any, sample_pack: InstalledPack) -> None:
    controller = _controller([], FakeClock(), sample_pack)
    harness.reset(controller, kiosk_mode=True)
    try:
        assert harness.window.dispatch("on_request_close") is True
        assert harness.window.dispatch("on_request_close", source="keyboard") is True
        frames = harness.frames_rendered
        harness.tap((640, 400))
        assert harness.frames_rendered > frames
    finally:
        harness.reset(_controller([], FakeClock(), sample_pack))


def test_a_capture_too_big_for_a_message_is_made_at_half_scale(kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch) -> None:
    from io import BytesIO

    from kiosk import ui

    full = kiosk.harness.capture_png()
    assert len(full) <= ui.MAX_CAPTURE_BYTES
    monkeypatch.setattr(ui, "MAX_CAPTURE_BYTES", len(full) - 1)
    small = kiosk.harness.capture_png()
    with Image.open(BytesIO(small)) as image:
        assert image.size == (640, 400)
        colours = image.convert("RGBA").getcolors(maxcolors=1 << 20) or []
    assert len(colours) >= 16
    # the background is painted in, not left transparent
    assert (0, 0, 0, 0) not in {colour for count, colour in colours if count > 0.5 * 640 * 400}


KIOSK_MODE_RUN = """
import json, sys
from kiosk import ui
from kiosk.controller import KioskController

ui.prepare_kivy(sys.argv[1], fullscreen=True, kiosk_mode=True)
controller = KioskController(emit=lambda *a, **k: None, companion_base_url="https://visit.example.org")
controller.show_pack(None)
app = ui.KioskApp(controller, kiosk_mode=True)
result = {}

def after_escape():
    result["alive_after_escape"] = True
    app.stop()

def check():
    window = app.root_window
    result["settings"] = ui.kivy_settings()
    result["close_refused"] = window.dispatch("on_request_close")
    window.dispatch("on_keyboard", 27, 41, None, [])
    ui.ui_call(after_escape)

app.bind(on_start=lambda *_: ui.ui_call(check))
app.run()
print(json.dumps(result))
"""


def test_a_kiosk_mode_window_is_fullscreen_borderless_and_cannot_be_closed(tmp_path: Path) -> None:
    """In its own process (a window's mode is fixed when it is created): the real App.run path."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", KIOSK_MODE_RUN, str(tmp_path / "state")], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    window = result["settings"]["window"]
    assert window["fullscreen"] == "auto" and window["borderless"] == "1" and window["show_cursor"] == "0"
    assert result["settings"]["kivy"]["exit_on_escape"] == "0"
    assert result["settings"]["input"] == {"mouse": "mouse,disable_multitouch,disable_hover"}
    assert result["close_refused"] is True and result["alive_after_escape"] is True
    assert not (tmp_path / "state" / "kivy").exists() or not list((tmp_path / "state" / "kivy").iterdir())


class SilentSound:
    """A Sound whose provider reports no position (Kivy's SDL2 provider): the player's clock must take over."""

    length = 30.0

    def __init__(self) -> None:
        self.state = "stop"
        self.seeks: list[float] = []

    def play(self) -> None:
        self.state = "play"

    def stop(self) -> None:
        self.state = "stop"

    def seek(self, position: float) -> None:
        self.seeks.append(position)

    def get_pos(self) -> float:
        return 0.0

    def bind(self, **_kwargs: Any) -> None:
        pass

    def unbind(self, **_kwargs: Any) -> None:
        pass

    def unload(self) -> None:
        pass


def test_audio_progress_comes_from_a_clock_when_the_provider_reports_no_position(kiosk: Kiosk) -> None:
    harness = kiosk.harness
    harness.tap((640, 400))
    harness.tap("room:siecle-d-or")
    harness.tap(f"artwork:{AV_WORK}")
    screen = detail(kiosk)
    sound = SilentSound()
    screen.audio.sound = sound  # as if loaded by a provider without positions
    harness.tap("audio")
    assert sound.state == "play"
    wait(kiosk, lambda: screen.audio_progress > 0 and screen.audio_time.startswith("0:0"), "the clocked progress")
    harness.tap("audio")
    paused_at = screen.audio.position
    assert sound.state == "stop" and paused_at > 0
    harness.tap("audio")  # resumes where it was
    assert sound.seeks and sound.seeks[-1] == pytest.approx(paused_at)


def test_a_countdown_tick_redraws_the_overlay_only(kiosk: Kiosk) -> None:
    harness, controller = kiosk.harness, kiosk.controller
    harness.tap((640, 400))
    browse = harness.root.screens["browse"]
    fills: list[int] = []
    original = browse._fill
    browse._fill = lambda *args: (fills.append(1), original(*args))
    kiosk.clock.advance(IDLE_S + 0.5)
    wait(kiosk, lambda: controller.view.countdown_s == 10, "the countdown")
    kiosk.clock.advance(3)
    wait(kiosk, lambda: controller.view.countdown_s == 7, "the countdown to go on")
    assert harness.root.overlay.seconds == 7 and "7" in harness.texts()
    assert fills == []
