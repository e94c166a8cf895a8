"""The kiosk's Kivy app: renders `KioskController.view` and turns touches into controller calls. The only module
of the project that imports Kivy.

Kivy reads its environment once, when first imported, so importing this module first sets it (see
`_set_environment`): no command-line parsing (the `museum` CLI owns argv), no `config.ini` read or written
(every setting is ours, applied by `prepare_kivy`), Kivy's logs sent to Python logging (KIVY_LOG_MODE=PYTHON:
Kivy neither installs its own handlers, nor writes log files, nor hijacks stderr), video through ffpyplayer, and a
dummy SDL audio driver when the machine has no sound card (a test machine), so sounds still load and play.
Then `prepare_kivy()` sets the window and input configuration; it must run before the first window exists (one
window per process: Kivy cannot make a second).

Decisions live in the controller; this module binds and renders. A new view re-renders only what changed: each
screen remembers the key of what it shows (pack, room, work, language, page) and skips work when the key is the
same, so a countdown tick touches only the overlay. `KioskHarness` drives the app without `App.run` for the tests,
the benchmark and the demo's offscreen kiosk.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bus.memory import release_freed_memory
from kiosk import captions, texts, theme
from kiosk.take_home import qr_matrix, qr_side_px
from protocol.codec import MAX_SCREENSHOT_PNG_BYTES

if TYPE_CHECKING:
    from content.model import Artwork, Localized, Museum
    from kiosk.controller import View

log = logging.getLogger(__name__)

KV_DIR = Path(__file__).parent / "screens"
KV_FILES = ("common.kv", "no_content.kv", "attract.kv", "browse.kv", "detail.kv", "my_visit.kv")
TICK_S = 0.25
"""How often the controller's idle timer is checked: the countdown's seconds change on time to a quarter second."""
ATTRACT_CYCLE_S = 5.0
TRIM_EVERY_CYCLES = 12
AUDIO_REFRESH_S = 0.25
QR_PREPARE_DELAY_S = 0.5
"""How long after the first "Take it home" of a visit its QR code is made, ready for "My visit"."""
MAX_CAPTURE_BYTES = MAX_SCREENSHOT_PNG_BYTES
"""A screenshot sent to the hub must fit its message; a bigger PNG (photographs on screen) is made again at half
scale."""
ERRORS_BEFORE_EXIT = 50
"""Errors in Kivy callbacks tolerated per minute before the app gives up and lets its supervisor restart it into
the attract loop: an error on every frame would otherwise fill the logs while showing a broken screen."""


# --- Kivy's environment: set before Kivy is imported --------------------------------------------------------

def has_sound_device() -> bool:
    """Whether ALSA lists a playback device (a Pi with HDMI or a headphone jack has one; a CI machine does not)."""
    return bool(glob.glob("/dev/snd/pcmC*D*p"))


def _set_environment() -> None:
    forced = {
        "KIVY_NO_ARGS": "1",          # `museum kiosk run --config F`: Kivy must not parse (and reject) our argv
        "KIVY_LOG_MODE": "PYTHON",    # Kivy logs through Python logging, which the service configures
        "KIVY_NO_CONSOLELOG": "1",
        "KIVY_NO_FILELOG": "1",       # no log files of its own on the SD card
        "KIVY_NO_CONFIG": "1",        # no ~/.kivy/config.ini read or written: prepare_kivy sets everything
    }
    os.environ.update(forced)
    os.environ.setdefault("KIVY_WINDOW", "sdl2")
    # SDL2_image reads the packs' PNG, JPEG and WebP; the other loaders (PIL, ffpyplayer) would only cost memory.
    os.environ.setdefault("KIVY_IMAGE", "sdl2")
    os.environ.setdefault("KIVY_VIDEO", "ffpyplayer")
    # ffpyplayer plays the packs' Opus audio descriptions (SDL_mixer needs libopusfile, often absent) and reports
    # the position; SDL2 stays as the fallback for WAV/OGG/MP3.
    os.environ.setdefault("KIVY_AUDIO", "ffpyplayer,sdl2")
    if not has_sound_device():
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


_set_environment()

import kivy  # noqa: E402  (after _set_environment, on purpose)
from kivy.app import App  # noqa: E402
from kivy.cache import Cache  # noqa: E402
from kivy.clock import Clock  # noqa: E402
from kivy.config import Config  # noqa: E402
from kivy.event import EventDispatcher  # noqa: E402
from kivy.lang import Builder  # noqa: E402
from kivy.properties import (  # noqa: E402
    BooleanProperty,
    DictProperty,
    NumericProperty,
    ObjectProperty,
    StringProperty,
)
from kivy.uix.behaviors import ButtonBehavior  # noqa: E402
from kivy.uix.boxlayout import BoxLayout  # noqa: E402
from kivy.uix.floatlayout import FloatLayout  # noqa: E402
from kivy.uix.image import Image  # noqa: E402
from kivy.uix.label import Label  # noqa: E402
from kivy.uix.screenmanager import NoTransition, Screen, ScreenManager  # noqa: E402
from kivy.uix.widget import Widget  # noqa: E402

_ENV_KEYS = ("KIVY_NO_ARGS", "KIVY_LOG_MODE", "KIVY_NO_CONSOLELOG", "KIVY_NO_FILELOG", "KIVY_NO_CONFIG",
             "KIVY_HOME", "KIVY_WINDOW", "KIVY_IMAGE", "KIVY_VIDEO", "KIVY_AUDIO", "KIVY_GL_BACKEND",
             "SDL_AUDIODRIVER", "SDL_VIDEODRIVER")


# --- Kivy's configuration: kiosk mode -----------------------------------------------------------------------

def kivy_config(*, fullscreen: bool, kiosk_mode: bool, width: int = 1280,
                height: int = 800) -> dict[str, dict[str, str]]:
    """The Kivy Config sections `prepare_kivy` applies (pure: the tests check the kiosk-mode values here).

    Input: exactly one provider, `mouse`, fed by the SDL2 window. On Linux, SDL2 turns the touchscreen's touches
    into pointer events itself (it reads evdev; with kmsdrm there is no X server in between) and Kivy ignores SDL's
    own finger events, so the window's pointer is the one source of touches. Kivy's default config also adds
    `probesysfs` (hidinput/mtdev reading /dev/input directly): with both, every tap arrives twice, the known
    "double touch" fault of Kivy on a Raspberry Pi, and a "Take it home" toggles twice. The price is single touch
    (no pinch): the picture has a full-screen view instead."""
    graphics = {
        "width": str(width), "height": str(height),
        "fullscreen": "auto" if fullscreen else "0",
        "borderless": "1" if kiosk_mode else "0",
        "show_cursor": "0" if kiosk_mode else "1",
        "resizable": "0" if kiosk_mode else "1",
        "allow_screensaver": "0" if kiosk_mode else "1",
        "maxfps": "60",
        "multisamples": "0",  # flat UI: multisampling would only cost the Pi's GPU
        "window_state": "visible",
    }
    kivy_section = {
        "exit_on_escape": "0" if kiosk_mode else "1",
        "pause_on_minimize": "0",
        "log_enable": "0",
        "log_maxfiles": "5",   # if anyone turns Kivy's file log back on, it still cannot pile up
        "log_level": "info",
        "desktop": "0" if kiosk_mode else "1",
        "keyboard_mode": "system",
    }
    pointer = "mouse,disable_multitouch,disable_hover" if kiosk_mode else "mouse,disable_multitouch"
    return {"graphics": graphics, "kivy": kivy_section, "input": {"mouse": pointer}}


@dataclass(frozen=True)
class _Prepared:
    state_dir: Path
    config: dict[str, dict[str, str]]


_prepared: _Prepared | None = None


def _window_exists() -> bool:
    window_module = sys.modules.get("kivy.core.window")
    return window_module is not None and getattr(window_module, "Window", None) is not None


def prepare_kivy(state_dir: str | Path, *, fullscreen: bool, kiosk_mode: bool, width: int = 1280,
                 height: int = 800) -> dict[str, dict[str, str]]:
    """Configure Kivy for this process before its window exists; returns `kivy_settings()`.

    Calling it again with the same arguments is harmless (tests share one window); asking for a different
    configuration once the window exists is a RuntimeError, since Kivy cannot recreate its window."""
    global _prepared
    if os.environ.get("KIVY_GL_BACKEND") == "mock":
        raise RuntimeError("KIVY_GL_BACKEND=mock renders nothing (no frame, no screenshot): unset it")
    wanted = _Prepared(Path(state_dir), kivy_config(fullscreen=fullscreen, kiosk_mode=kiosk_mode, width=width,
                                                    height=height))
    if _window_exists():
        if _prepared is not None and _prepared.config == wanted.config:
            return kivy_settings()
        raise RuntimeError("prepare_kivy() must run before Kivy's window exists, and only once per process")
    home = wanted.state_dir / "kivy"
    home.mkdir(parents=True, exist_ok=True)
    # Kivy read KIVY_HOME when imported; with KIVY_NO_CONFIG it writes nothing there. Pointing it (and what Kivy
    # derived from it) at the kiosk's state keeps any future Kivy file there, not in the service user's home.
    os.environ["KIVY_HOME"] = str(home)
    kivy.kivy_home_dir = str(home)
    kivy.kivy_config_fn = str(home / "config.ini")
    kivy.kivy_usermodules_dir = str(home / "mods")
    for name, _ in Config.items("input"):
        Config.remove_option("input", name)
    for section, values in wanted.config.items():
        for key, value in values.items():
            Config.set(section, key, value)
    _prepared = wanted
    return kivy_settings()


def kivy_settings() -> dict[str, dict[str, str]]:
    """What Kivy is actually configured with: our Config sections as Kivy holds them, the environment Kivy read,
    and the window's own state once it exists."""
    wanted = _prepared.config if _prepared is not None else kivy_config(fullscreen=False, kiosk_mode=False)
    settings: dict[str, dict[str, str]] = {
        section: {key: Config.get(section, key) for key in values if Config.has_option(section, key)}
        for section, values in wanted.items() if section != "input"}
    settings["input"] = dict(Config.items("input"))
    settings["env"] = {key: os.environ[key] for key in _ENV_KEYS if key in os.environ}
    settings["kivy_home"] = {"dir": kivy.kivy_home_dir}
    if _window_exists():
        from kivy.core.window import Window
        from kivy.graphics.cgl import cgl_get_backend_name
        settings["window"] = {"size": f"{Window.width}x{Window.height}", "fullscreen": str(Window.fullscreen),
                              "borderless": str(int(bool(Window.borderless))),
                              "show_cursor": str(int(bool(Window.show_cursor))),
                              "gl_backend": cgl_get_backend_name()}
    return settings


def ui_call(function: Callable[..., object], *args: object) -> None:
    """Run `function(*args)` on the UI thread at the next frame: how other threads (the bus worker, the pack
    worker) reach the controller. Kivy's Clock accepts schedules from any thread."""
    Clock.schedule_once(lambda _dt: function(*args), 0)


# --- the controller as the UI sees it ------------------------------------------------------------------------

class ControllerLike(Protocol):
    @property
    def view(self) -> View: ...
    on_change: Callable[[View], None] | None
    def touch(self) -> None: ...
    def open_room(self, zone_id: str) -> None: ...
    def open_artwork(self, artwork_id: str) -> None: ...
    def back(self) -> None: ...
    def set_language(self, language: str) -> None: ...
    def toggle(self, mode: str) -> None: ...
    def collect(self, artwork_id: str) -> None: ...
    def open_my_visit(self) -> None: ...
    def end_visit(self) -> None: ...
    def still_here(self) -> None: ...
    def tick(self) -> None: ...
    def dismiss_message(self) -> None: ...


def _local(text: Localized, language: str) -> str:
    """A content text in the language shown, or in the pack's first language if it lacks that one."""
    found = text.get(language)
    return found if found is not None else text.texts[0][1]


def _media_path(view: View, relative: str | None) -> str:
    if relative is None or view.pack_path is None:
        return ""
    return str(view.pack_path / relative)


def _artwork_image(view: View, artwork: Artwork) -> str:
    return _media_path(view, artwork.media.image.file if artwork.media.image is not None else None)


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# --- widgets ------------------------------------------------------------------------------------------------

_stale_labels: weakref.WeakSet[Label] = weakref.WeakSet()
"""Labels whose look or text changed while out of the window (a hidden screen), drawn again once shown."""


_WHITE = (1.0, 1.0, 1.0, 1.0)
_TINTED = frozenset({"color", "disabled_color", "disabled"})


class ScreenLabel(Label):
    """A Label that lays out and renders its text only while in the window. A hidden screen's labels still change
    (a visit ends and they are emptied; a screen catches up with the look just before it is shown): a hidden label
    is marked stale instead of rendered, and redrawn when its screen is shown (`refresh_stale_labels`). An emptied
    label is cleared at once, wherever it is: no trace of a visitor stays in a texture."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label.options["color"] = _WHITE

    def _trigger_texture_update(self, name: str | None = None, source: Any = None, value: Any = None) -> None:
        # Kivy bakes a label's colour into its texture: a high-contrast toggle, or a finger pressing a button,
        # would lay out and render the text again for a colour alone. The text is rendered white instead and the
        # canvas tints it (common.kv's <-ScreenLabel>): the same pixels, and a colour change is only a uniform.
        if source and name in _TINTED:
            return
        super()._trigger_texture_update(name, source, value)

    def texture_update(self, *largs: Any) -> None:
        if self.text and self.get_root_window() is None:
            _stale_labels.add(self)
            return
        _stale_labels.discard(self)
        super().texture_update(*largs)


def refresh_stale_labels() -> None:
    """Redraw, in the coming frame, the stale labels that are in the window again (their screen is shown)."""
    for label in list(_stale_labels):
        if label.get_root_window() is not None:
            _stale_labels.discard(label)
            label._trigger_texture()


# --- the look: each screen has its own -------------------------------------------------------------------

def look_values(language: str, modes: frozenset[str]) -> tuple[dict[str, str], dict[str, Any], dict[str, float]]:
    """(chrome strings, palette as RGBA, text sizes) for a language and a set of modes."""
    palette = theme.palette_for(modes)
    return (texts.strings_for(language), {name: theme.rgba(colour) for name, colour in palette.colours().items()},
            theme.font_sizes(theme.font_scale_for(modes)))


class Look(EventDispatcher):
    """What kv rules bind to for colours (`pal`), text sizes (`font`) and chrome strings (`tr`): one per screen,
    one for the overlay, one for the picture viewer. A toggle or a language switch updates only the look of what
    is shown, so only the rules of the visible screen fire in the frame that answers the tap (every rule of all
    five screens did when they all bound to the app). A hidden screen's look is brought up to date (`sync`) just
    before it is shown, in the same frame. `version` is the app's look version this look holds."""

    tr = DictProperty()
    pal = DictProperty()
    font = DictProperty()

    def __init__(self, **kwargs: Any) -> None:
        self.version = -1
        super().__init__(**kwargs)
        app = App.get_running_app()
        if isinstance(app, KioskApp):
            self.sync(app)
        else:
            self.tr, self.pal, self.font = look_values("en", frozenset())

    def sync(self, app: KioskApp) -> None:
        """Take the app's current look, if this one is older: nothing happens (no rule fires) when it is not."""
        if self.version == app.look_version:
            return
        self.version = app.look_version
        # DictProperty compares the new dict with the old one: only what changed dispatches (a language switch
        # fires the rules bound to `tr`, not those bound to `pal` or `font`).
        self.tr, self.pal, self.font = app.tr, app.pal, app.font


_looks_building: list[Look] = []
"""The look of the themed widget being built: kv makes a rule's children inside their parent's constructor, and
each themed child takes the look of what it is built in (its screen's)."""


class Themed:
    """A widget whose kv rule binds to `root.look`: its screen's look, given at construction (`look=`) or taken
    from the themed widget it is built inside (or, built alone, the app's own look, which is always current)."""

    look = ObjectProperty(None)

    def __init__(self, **kwargs: Any) -> None:
        look = kwargs.setdefault("look", _current_look())
        _looks_building.append(look)
        try:
            super().__init__(**kwargs)
        finally:
            _looks_building.pop()


def _current_look() -> Look:
    if _looks_building:
        return _looks_building[-1]
    app = App.get_running_app()
    return app.look if isinstance(app, KioskApp) else Look()


class KioskLabel(Themed, ScreenLabel):
    pass


class KioskButton(Themed, ButtonBehavior, ScreenLabel):
    key = StringProperty("")
    """A stable name for the tests and the benchmark (`KioskHarness.find`): "take_home", "artwork:<id>"…"""
    selected = BooleanProperty(False)


class WrapButton(KioskButton):
    pass


class BarButton(KioskButton):
    pass


class PictureButton(ButtonBehavior, Image):
    key = StringProperty("")


class AudioProgress(Themed, Widget):
    value = NumericProperty(0.0)


class ArtworkCard(Themed, ButtonBehavior, BoxLayout):
    key = StringProperty("")
    artwork_id = StringProperty("")
    image = StringProperty("")
    title = StringProperty("")

    def on_release(self) -> None:
        App.get_running_app().controller.open_artwork(self.artwork_id)


class RoomButton(WrapButton):
    zone_id = StringProperty("")

    def on_release(self) -> None:
        App.get_running_app().controller.open_room(self.zone_id)


class LanguageButton(BarButton):
    language = StringProperty("")

    def on_release(self) -> None:
        App.get_running_app().controller.set_language(self.language)


_lsf_video_class: Any = None


def _make_video(**kwargs: Any) -> Any:
    """An LSF video widget. Kivy's video and audio modules load ffpyplayer (its codecs: tens of MB), so they are
    imported the first time a visitor plays something, not at start."""
    global _lsf_video_class
    if _lsf_video_class is None:
        from kivy.uix.video import Video

        class LsfVideo(Video):
            def texture_update(self, *largs: Any) -> None:
                # Video shows `preview` until the first frame, else tries to load the video file as a picture
                # (and logs an error); with no preview it shows nothing.
                if self.preview:
                    super().texture_update(*largs)

        _lsf_video_class = LsfVideo
    return _lsf_video_class(**kwargs)


class QRCode(Widget):
    """A QR code drawn as one texture of one texel per module, magnified with nearest-neighbour sampling to whole
    pixels per module (sharp edges), dark on white whatever the palette (the matrix carries its own quiet zone).
    One textured rectangle instead of hundreds of rectangles: a software renderer draws it in one pass. Drawn
    `module_px` per module, or fewer if its box is too small for that; `side` is the side actually drawn."""

    module_px = NumericProperty(1)
    side = NumericProperty(0)

    def __init__(self, **kwargs: Any) -> None:
        self._texture: Any = None
        self._modules = 0
        self._rectangle: Any = None
        super().__init__(**kwargs)
        self.bind(pos=self._place, size=self._place, module_px=self._place)

    def show(self, matrix: list[list[bool]]) -> None:
        self.show_texture(qr_texture(matrix), len(matrix))

    def show_texture(self, texture: Any, modules: int) -> None:
        """Show a texture made by `qr_texture` (of a code `modules` modules wide)."""
        from kivy.graphics import Color, Rectangle

        self._texture, self._modules = texture, modules
        self.canvas.clear()
        with self.canvas:
            Color(1, 1, 1, 1)
            self._rectangle = Rectangle(texture=texture)
        self._place()

    def clear(self) -> None:
        self._texture, self._modules, self._rectangle = None, 0, None
        self.side = 0
        self.canvas.clear()

    def _place(self, *_args: Any) -> None:
        if self._rectangle is None or not self._modules:
            return
        n = self._modules
        module = max(1, min(int(self.module_px), int(min(self.width, self.height)) // n))
        side = self.side = n * module
        # whole-pixel origin: every module edge falls on a pixel edge
        self._rectangle.pos = (round(self.x + (self.width - side) / 2), round(self.y + (self.height - side) / 2))
        self._rectangle.size = (side, side)


def qr_texture(matrix: list[list[bool]]) -> Any:
    """The code as a luminance texture, one texel per module, sampled nearest (no blur between modules)."""
    from kivy.graphics.texture import Texture

    n = len(matrix)
    # GL's first row is the bottom one. Rows are tightly packed: Kivy sets GL's unpack alignment from the width.
    pixels = b"".join(bytes(0 if dark else 255 for dark in row) for row in reversed(matrix))
    texture = Texture.create(size=(n, n), colorfmt="luminance", bufferfmt="ubyte")
    texture.mag_filter = texture.min_filter = "nearest"
    texture.blit_buffer(pixels, colorfmt="luminance", bufferfmt="ubyte")
    return texture


class TopBar(Themed, BoxLayout):
    museum_name = StringProperty("")
    count = NumericProperty(0)
    screen = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        self._language_buttons: list[LanguageButton] = []
        super().__init__(**kwargs)

    def render(self, view: View) -> None:
        self.museum_name = _local(view.museum.name, view.language) if view.museum is not None else ""
        self.count = len(view.collected)
        self.screen = view.screen
        box = self.ids.languages
        while len(self._language_buttons) < len(view.languages):
            self._language_buttons.append(LanguageButton(look=self.look))
        if len(box.children) != len(view.languages):
            box.clear_widgets()
            for button in self._language_buttons[:len(view.languages)]:
                box.add_widget(button)
        for button, language in zip(self._language_buttons, view.languages, strict=False):
            button.language = language
            button.key = f"lang:{language}"
            button.text = texts.language_name(language)
            button.selected = language == view.language

    def clear(self) -> None:
        self.count = 0
        self.screen = ""
        for button in self._language_buttons:
            button.selected = False


class ModeBar(Themed, BoxLayout):
    modes = ObjectProperty(frozenset())

    def render(self, view: View) -> None:
        self.modes = view.modes

    def clear(self) -> None:
        self.modes = frozenset()


class StillThereOverlay(Themed, FloatLayout):
    seconds = NumericProperty(0)

    def on_touch_down(self, touch: Any) -> bool:
        super().on_touch_down(touch)
        return True  # modal: nothing under it reacts

    def on_touch_up(self, touch: Any) -> bool:
        super().on_touch_up(touch)
        return True


class MessageBanner(Themed, ButtonBehavior, BoxLayout):
    """The message a QR code shown to the camera brings up (`View.message`), over whatever screen is up, under
    the top bar; the controller takes it down after a few seconds, a tap on it at once. It takes the touches on
    it: a finger closing it must not press what lies under it."""

    key = StringProperty("message")
    text = StringProperty("")

    def on_release(self) -> None:
        App.get_running_app().controller.dismiss_message()


class ImageViewer(Themed, FloatLayout):
    """The full-screen view of a work's picture; any touch closes it."""

    source = StringProperty("")
    closer: Callable[[], None] | None = None

    def on_touch_down(self, touch: Any) -> bool:
        if self.closer is not None:
            self.closer()
        return True


# --- screens ------------------------------------------------------------------------------------------------

class KioskScreen(Themed, Screen):
    """A screen renders a view; `render` is called for every view while the screen is current (it skips what is
    unchanged) and `forget` when a visit ends (no trace of the visitor may stay in any widget). Its widgets bind
    to its own `look`, which `KioskRoot` keeps current while it is shown and brings up to date before it is."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("look", Look())
        super().__init__(**kwargs)

    def render(self, view: View) -> None:
        pass

    def shown(self) -> None:
        pass

    def hidden(self) -> None:
        pass

    def forget(self) -> None:
        for bar in ("top_bar", "mode_bar"):
            if bar in self.ids:
                self.ids[bar].clear()

    def _bars(self, view: View) -> None:
        if "top_bar" in self.ids:
            self.ids.top_bar.render(view)
        if "mode_bar" in self.ids:
            self.ids.mode_bar.render(view)


class NoContentScreen(KioskScreen):
    title_fr = StringProperty(texts.STRINGS["no_content_title"]["fr"])
    title_en = StringProperty(texts.STRINGS["no_content_title"]["en"])
    body_fr = StringProperty(texts.STRINGS["no_content_body"]["fr"])
    body_en = StringProperty(texts.STRINGS["no_content_body"]["en"])


class AttractScreen(KioskScreen):
    museum_name = StringProperty("")
    image = StringProperty("")
    work_title = StringProperty("")
    start_fr = StringProperty(texts.STRINGS["touch_to_start"]["fr"])
    start_en = StringProperty(texts.STRINGS["touch_to_start"]["en"])

    def __init__(self, **kwargs: Any) -> None:
        self._key: tuple[object, ...] | None = None
        self._loop: list[tuple[str, str]] = []
        self._index = 0
        self._cycle: Any = None
        super().__init__(**kwargs)

    def render(self, view: View) -> None:
        key = (view.pack_path, id(view.museum), view.zone_id, view.language)
        if key == self._key:
            return
        self._key = key
        museum = view.museum
        self._loop = []
        self._index = 0
        if museum is not None:
            self.museum_name = _local(museum.name, view.language)
            works = museum.artworks_in(view.zone_id) if view.zone_id else ()
            works = tuple(a for a in works if a.media.image is not None) or tuple(
                a for a in museum.artworks if a.media.image is not None)
            self._loop = [(_artwork_image(view, a), _local(a.title, view.language)) for a in works]
        self._show()

    def _show(self) -> None:
        if not self._loop:
            self.image, self.work_title = "", ""
            return
        self.image, self.work_title = self._loop[self._index % len(self._loop)]

    def _next(self, _dt: float) -> None:
        self._index += 1
        self._show()
        if self._index % TRIM_EVERY_CYCLES == 0:
            release_memory()

    def shown(self) -> None:
        if self._cycle is None:
            self._cycle = Clock.schedule_interval(self._next, ATTRACT_CYCLE_S)
        Clock.schedule_once(release_memory, 1.0)  # a visit just ended, or the kiosk started: nobody is waiting

    def hidden(self) -> None:
        if self._cycle is not None:
            self._cycle.cancel()
            self._cycle = None


class BrowseScreen(KioskScreen):
    room_title = StringProperty("")
    columns = NumericProperty(4)
    page = NumericProperty(0)
    pages = NumericProperty(1)
    room_page = NumericProperty(0)
    room_pages = NumericProperty(1)

    def __init__(self, **kwargs: Any) -> None:
        self._key: tuple[object, ...] | None = None
        self._view: View | None = None
        self._cards: list[ArtworkCard] = []
        self._room_buttons: list[RoomButton] = []
        self._fillers: list[Widget] = []
        self._zone: tuple[str | None, bool] | None = None
        super().__init__(**kwargs)

    def render(self, view: View) -> None:
        self._view = view
        self._bars(view)
        large = "large_text" in view.modes
        if (view.zone_id, large) != self._zone:
            # a new room, or a text size that changes how many rooms fit: show the page with the current room
            if view.zone_id != (self._zone[0] if self._zone else None):
                self.page = 0
            self._zone = (view.zone_id, large)
            self.room_page = self._room_page_of(view)
        key = (view.pack_path, id(view.museum), view.zone_id, view.language, large, self.page, self.room_page)
        if key == self._key:
            return
        self._key = key
        self._fill(view, large)

    def _room_page_of(self, view: View) -> int:
        if view.museum is None or view.zone_id not in view.museum.zone_ids:
            return 0
        return view.museum.zone_ids.index(view.zone_id) // self._rooms_per_page(view)

    @staticmethod
    def _rooms_per_page(view: View) -> int:
        return 3 if "large_text" in view.modes else 5  # what fits in the column at each text size

    def _fill(self, view: View, large: bool) -> None:
        museum = view.museum
        if museum is None:
            return
        self.columns = 3 if large else 4
        per_page = self.columns * 2
        works = museum.artworks_in(view.zone_id) if view.zone_id else ()
        self.pages = max(1, -(-len(works) // per_page))
        self.page = min(self.page, self.pages - 1)
        shown = works[self.page * per_page:(self.page + 1) * per_page]
        self.room_title = _local(museum.room(view.zone_id).name, view.language) if view.zone_id else ""
        grid = self.ids.grid
        while len(self._cards) < len(shown):
            self._cards.append(ArtworkCard(look=self.look))
        grid.clear_widgets()
        for card, artwork in zip(self._cards, shown, strict=False):
            card.artwork_id = artwork.artwork_id
            card.key = f"artwork:{artwork.artwork_id}"
            card.image = _artwork_image(view, artwork)
            card.title = _local(artwork.title, view.language)
            grid.add_widget(card)
        while len(self._fillers) < per_page - len(shown):
            self._fillers.append(Widget())
        for filler in self._fillers[:per_page - len(shown)]:  # keep card sizes the same on a short last page
            grid.add_widget(filler)

        rooms_per_page = self._rooms_per_page(view)
        self.room_pages = max(1, -(-len(museum.rooms) // rooms_per_page))
        self.room_page = min(self.room_page, self.room_pages - 1)
        rooms = museum.rooms[self.room_page * rooms_per_page:(self.room_page + 1) * rooms_per_page]
        box = self.ids.rooms
        while len(self._room_buttons) < len(rooms):
            button = RoomButton(look=self.look)
            button.size_hint_y = None
            self._room_buttons.append(button)
        box.clear_widgets()
        app = App.get_running_app()
        font = self.look.font
        for button, room in zip(self._room_buttons, rooms, strict=False):
            button.zone_id = room.zone_id
            button.key = f"room:{room.zone_id}"
            button.text = _local(room.name, view.language)
            button.selected = room.zone_id == view.zone_id
            button.height = max(app.touch_px, font["button"] * 3.6)
            box.add_widget(button)

    def turn_page(self, step: int) -> None:
        self.page = max(0, min(self.pages - 1, self.page + step))
        if self._view is not None:
            self.render(self._view)
        refresh_stale_labels()  # cards put back in the grid

    def turn_room_page(self, step: int) -> None:
        self.room_page = max(0, min(self.room_pages - 1, self.room_page + step))
        if self._view is not None:
            self.render(self._view)
        refresh_stale_labels()

    def forget(self) -> None:
        super().forget()
        self.page = 0
        self._zone = None
        self._key = None
        self.room_title = ""
        self.ids.grid.clear_widgets()
        self.ids.rooms.clear_widgets()
        for card in self._cards:
            card.title = card.image = card.artwork_id = card.key = ""
        self._view = None


class AudioPlayer:
    """One audio description: loaded on first play, paused by remembering the position (Kivy's Sound has no
    pause), progress from the provider's position or, when it reports none (SDL2), from a clock."""

    def __init__(self, on_update: Callable[[], None]) -> None:
        self._on_update = on_update
        self.path = ""
        self.sound: Any = None
        self.playing = False
        self.failed = False
        self._offset = 0.0
        self._started = 0.0
        self._stopping = False
        self._refresh: Any = None

    def set_source(self, path: str) -> None:
        if path == self.path:
            return
        self.unload()
        self.path = path
        self.failed = False
        self._offset = 0.0

    def toggle(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def play(self) -> None:
        if not self.path or self.playing:
            return
        if self.sound is None:
            self.sound = _load_sound(self.path)
            if self.sound is None:
                self.failed = True
                self._on_update()
                return
            self.sound.bind(on_stop=self._on_sound_stop)
        if self.length > 0 and self._offset >= self.length - 0.2:
            self._offset = 0.0  # played to the end: start again
        self.sound.play()
        if self._offset > 0:
            self.sound.seek(self._offset)
        self._started = time.monotonic()
        self.playing = True
        if self._refresh is None:
            self._refresh = Clock.schedule_interval(lambda _dt: self._on_update(), AUDIO_REFRESH_S)
        self._on_update()

    def pause(self) -> None:
        if not self.playing:
            return
        self._offset = self.position
        self._halt()
        self._on_update()

    def _halt(self) -> None:
        self.playing = False
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self.sound is not None:
            self._stopping = True
            try:
                self.sound.stop()
            finally:
                self._stopping = False

    def _on_sound_stop(self, *_args: Any) -> None:
        if self._stopping or not self.playing:
            return
        # the provider reached the end of the file
        self.playing = False
        self._offset = 0.0
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        self._on_update()

    @property
    def length(self) -> float:
        if self.sound is None:
            return 0.0
        try:
            return max(0.0, float(self.sound.length or 0.0))
        except (TypeError, ValueError):
            return 0.0

    @property
    def position(self) -> float:
        if not self.playing:
            return self._offset
        reported = 0.0
        try:
            reported = float(self.sound.get_pos() or 0.0)
        except (TypeError, ValueError):
            reported = 0.0
        clocked = self._offset + time.monotonic() - self._started
        position = reported if reported > 0 else clocked
        return min(position, self.length) if self.length > 0 else position

    def unload(self) -> None:
        self._halt()
        if self.sound is not None:
            self.sound.unbind(on_stop=self._on_sound_stop)
            self.sound.unload()
            self.sound = None
        self.path = ""
        self._offset = 0.0


def _load_sound(path: str) -> Any:
    """A loaded Sound, or None. SoundLoader picks a provider by file extension, and no provider lists ".opus"
    though ffpyplayer plays it: so each provider is also tried directly."""
    from kivy.core.audio import SoundLoader

    try:
        sound = SoundLoader.load(path)
        if sound is not None:
            return sound
        for provider in getattr(SoundLoader, "_classes", ()):
            candidate = provider(source=path)
            candidate.load()
            if candidate.length and candidate.length > 0:
                return candidate
            candidate.unload()
    except Exception:  # a broken file must not take the detail screen down
        log.exception("%s: cannot load the audio description", path)
    return None


class DetailScreen(KioskScreen):
    artwork_id = StringProperty("")
    image = StringProperty("")
    title = StringProperty("")
    byline = StringProperty("")
    body = StringProperty("")
    picture_note = StringProperty("")
    collected = BooleanProperty(False)
    has_audio = BooleanProperty(False)
    audio_playing = BooleanProperty(False)
    audio_label = StringProperty("")
    audio_progress = NumericProperty(0.0)
    audio_time = StringProperty("")
    has_lsf = BooleanProperty(False)
    video_shown = BooleanProperty(False)
    caption = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        self._key: tuple[object, ...] | None = None
        self._view: View | None = None
        self._lsf_requested = False
        self._video: Any = None
        self._video_path = ""
        self._cues: tuple[captions.Cue, ...] = ()
        self._modes: frozenset[str] = frozenset()
        self.audio = AudioPlayer(self._audio_changed)
        super().__init__(**kwargs)

    def render(self, view: View) -> None:
        self._view = view
        self._bars(view)
        if view.museum is None or view.artwork_id is None:
            return
        try:
            artwork = view.museum.artwork(view.artwork_id)
        except KeyError:
            return
        key = (view.pack_path, id(view.museum), view.artwork_id, view.language)
        turned_on = view.modes - self._modes
        self._modes = view.modes
        if key != self._key:
            new_work = self._key is None or self._key[:3] != key[:3]
            self._key = key
            self._fill(view, artwork, new_work)
            if "audio_description" in view.modes:
                self.audio.play()
        elif "audio_description" in turned_on:
            self.audio.play()
        self.collected = view.artwork_id in view.collected
        self._update_note(view, artwork)
        self._update_video(view, artwork)

    def _fill(self, view: View, artwork: Artwork, new_work: bool) -> None:
        language = view.language
        self.artwork_id = artwork.artwork_id
        self.image = _artwork_image(view, artwork)
        self.title = _local(artwork.title, language)
        self.byline = f"{artwork.artist}, {artwork.year}"
        self.body = _local(artwork.text, language)
        self.ids.text_scroll.scroll_y = 1
        audio = dict(artwork.media.audio)
        path = audio.get(language) or (audio.get(artwork.media.audio[0][0]) if artwork.media.audio else None)
        self.audio.set_source(_media_path(view, path))
        self.has_audio = bool(self.audio.path)
        self.has_lsf = artwork.media.lsf is not None
        if new_work:
            self._lsf_requested = False
            self._cues = ()
            if artwork.media.lsf is not None:
                self._cues = captions.load_vtt(_media_path(view, artwork.media.lsf.captions))
        self._audio_changed()

    def _update_note(self, view: View, artwork: Artwork) -> None:
        if "audio_description" in view.modes and artwork.media.image is not None:
            self.picture_note = texts.text("image_alt", view.language,
                                           alt=_local(artwork.media.image.alt, view.language))
        elif self.image:
            self.picture_note = texts.text("enlarge_hint", view.language)
        else:
            self.picture_note = ""

    def _update_video(self, view: View, artwork: Artwork) -> None:
        lsf = artwork.media.lsf
        want = lsf is not None and ("sign_language" in view.modes or self._lsf_requested)
        if want and lsf is not None:
            path = _media_path(view, lsf.video)
            if self._video is None:
                self._video = _make_video(fit_mode="contain", options={"eos": "loop"})
                self._video.bind(position=self._on_video_position)
            if self._video.parent is None:
                self.ids.media.add_widget(self._video)
            if self._video_path != path:
                self._video_path = path
                self._video.preview = self.image
                self._video.source = path
            self._video.state = "play"
            self.video_shown = True
        else:
            self._stop_video()

    def _stop_video(self) -> None:
        self.video_shown = False
        self.caption = ""
        if self._video is not None:
            self._video.state = "stop"
            self._video.source = ""  # unloads the decoder: a video only runs while shown
            self._video_path = ""
            if self._video.parent is not None:
                self._video.parent.remove_widget(self._video)

    def _on_video_position(self, _video: Any, position: float) -> None:
        self.caption = captions.caption_at(self._cues, position) if self.video_shown else ""

    def toggle_lsf(self) -> None:
        if self._view is None or not self.has_lsf:
            return
        view = self._view
        if self.video_shown and "sign_language" in view.modes:
            # the mode asks for the video on every work: turning it off here is the mode's toggle
            App.get_running_app().controller.toggle("sign_language")
            self._lsf_requested = False
            return
        self._lsf_requested = not self.video_shown
        if view.museum is not None and view.artwork_id is not None:
            self._update_video(view, view.museum.artwork(view.artwork_id))

    def toggle_audio(self) -> None:
        self.audio.toggle()

    def _audio_changed(self) -> None:
        language = self._view.language if self._view is not None else "en"
        player = self.audio
        self.audio_playing = player.playing
        if player.failed:
            self.audio_label = texts.text("audio_failed", language)
        elif player.playing:
            self.audio_label = texts.text("audio_pause", language)
        elif player.position > 0:
            self.audio_label = texts.text("audio_resume", language)
        else:
            self.audio_label = texts.text("audio_play", language)
        length = player.length
        position = player.position
        self.audio_progress = position / length if length > 0 else 0.0
        self.audio_time = f"{_clock_text(position)} / {_clock_text(length)}" if length > 0 else _clock_text(position)

    def open_viewer(self) -> None:
        if self.image and not self.video_shown:
            root = self.manager.parent if self.manager is not None else None
            if isinstance(root, KioskRoot):
                root.open_viewer(self.image)

    def hidden(self) -> None:
        self.audio.unload()
        self._stop_video()
        self._key = None
        self._lsf_requested = False

    def forget(self) -> None:
        super().forget()
        self.hidden()
        self.artwork_id = self.image = self.title = self.byline = self.body = self.picture_note = ""
        self.caption = ""
        self.collected = False
        self._cues = ()
        self._modes = frozenset()
        self._view = None


class MyVisitScreen(KioskScreen):
    url = StringProperty("")
    qr_side = NumericProperty(300)

    def __init__(self, **kwargs: Any) -> None:
        self._key: tuple[object, ...] | None = None
        self._labels: list[KioskLabel] = []
        self._qr_url = ""
        self._qr_ready: tuple[str, Any, int] | None = None
        super().__init__(**kwargs)

    def prepare_qr(self, url: str) -> None:
        """Encode the visit's code and make its texture (segno takes some 10 ms of Python): done once per visit,
        at the frame after the first "Take it home", so that the tap on "My visit" only has to show it."""
        if self._qr_ready is None or self._qr_ready[0] != url:
            matrix = qr_matrix(url)
            self._qr_ready = (url, qr_texture(matrix), len(matrix))

    def render(self, view: View) -> None:
        self._bars(view)
        key = (id(view.museum), view.collected, view.take_home_url, view.language)
        if key == self._key:
            return
        self._key = key
        box = self.ids.works
        box.clear_widgets()
        museum = view.museum
        works = [museum.artwork(a) for a in view.collected if museum is not None and a in _ids(museum)]
        while len(self._labels) < len(works):
            self._labels.append(KioskLabel(look=self.look))
        for label, artwork in zip(self._labels, works, strict=False):
            label.text = f"{_local(artwork.title, view.language)} — {artwork.artist}, {artwork.year}"
            box.add_widget(label)
        for label in self._labels[len(works):]:
            label.text = ""
        self.url = view.take_home_url or ""
        qr = self.ids.qr
        if not view.take_home_url:
            qr.clear()
            self._qr_url = ""
        elif view.take_home_url != self._qr_url:  # the same code in every language: drawn once per visit
            self._qr_url = view.take_home_url
            self.prepare_qr(view.take_home_url)
            assert self._qr_ready is not None
            _, texture, modules = self._qr_ready
            self.qr_side = qr_side_px(modules)
            qr.module_px = self.qr_side // modules
            qr.show_texture(texture, modules)

    def forget(self) -> None:
        super().forget()
        self.ids.qr.clear()
        self._qr_url = ""
        self._qr_ready = None
        self.url = ""
        self.ids.works.clear_widgets()
        for label in self._labels:
            label.text = ""
        self._key = None


def _ids(museum: Museum) -> set[str]:
    return {artwork.artwork_id for artwork in museum.artworks}


# --- the root and the app -----------------------------------------------------------------------------------

class InstantTransition(NoTransition):
    """Swap screens within the call. Kivy's NoTransition still runs a zero-length animation: for one frame both
    screens are in the tree and drawn (twice the fill work in the frame that answers the tap), and the old one
    goes only at the next clock tick."""

    def start(self, manager: Any) -> None:
        self.manager = manager
        self.add_screen(self.screen_in)
        self.screen_in.pos = manager.pos
        self.screen_in.dispatch("on_pre_enter")
        self.screen_out.dispatch("on_pre_leave")
        self.remove_screen(self.screen_out)
        self.screen_in.dispatch("on_enter")
        self.screen_out.dispatch("on_leave")

    def stop(self) -> None:
        self.is_active = False


class KioskRoot(FloatLayout):
    """The screens, plus the picture viewer and the countdown overlay above them when shown. The screens draw no
    background of their own: the window's clear colour is the background (a full-screen rectangle would cost a
    whole extra fill per frame, which a software renderer feels)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = ScreenManager(transition=InstantTransition())
        self.screens: dict[str, KioskScreen] = {
            "no_content": NoContentScreen(), "attract": AttractScreen(), "browse": BrowseScreen(),
            "detail": DetailScreen(), "my_visit": MyVisitScreen()}
        for screen in self.screens.values():
            self.manager.add_widget(screen)
        self.add_widget(self.manager)
        self.overlay = StillThereOverlay(look=Look())
        self.viewer = ImageViewer(look=Look())
        self.banner = MessageBanner(look=Look())
        self.viewer.closer = self.close_viewer
        self._view: View | None = None

    def render(self, view: View) -> None:
        previous, self._view = self._view, view
        app = App.get_running_app()
        if previous is None or (previous.language, previous.modes) != (view.language, view.modes):
            app.apply_look(view.language, view.modes)
        # Only what is shown follows the look now; the screen about to be shown catches up before it renders.
        self.screens[view.screen].look.sync(app)
        if self.viewer.parent is not None:
            self.viewer.look.sync(app)
        if previous is not None and (previous.pack_path != view.pack_path or previous.museum is not view.museum):
            _clear_image_cache()
        if previous is None or previous.session_id != view.session_id:
            self.close_viewer()
            for screen in self.screens.values():
                if screen.name != view.screen:
                    screen.forget()
        if previous is not None and previous.screen != view.screen:
            self.close_viewer()
            self.screens[previous.screen].hidden()
        screen = self.screens[view.screen]
        screen.render(view)
        if self.manager.current != view.screen:
            self.manager.current = view.screen
        self.paint_background(view.screen)
        if previous is None or previous.screen != view.screen:
            screen.shown()
        self._show_countdown(view.countdown_s)
        self._show_message(view)
        refresh_stale_labels()
        url = view.take_home_url
        if url and (previous is None or previous.take_home_url != url):
            # At an idle moment: after the collected event has been stored (some 15 ms), before a finger can reach
            # "My visit". Encoding is pure Python and holds the GIL: done at once, it would delay that event.
            Clock.schedule_once(lambda _dt: self._prepare_qr(url), QR_PREPARE_DELAY_S)

    def _prepare_qr(self, url: str) -> None:
        if self._view is not None and self._view.take_home_url == url:
            self.screens["my_visit"].prepare_qr(url)

    def paint_background(self, screen: str | None = None) -> None:
        from kivy.core.window import Window

        name = "attract" if (screen or self.manager.current) in ("attract", "no_content") else "background"
        Window.clearcolor = App.get_running_app().pal[name]

    def _show_countdown(self, seconds: int | None) -> None:
        if seconds is None:
            if self.overlay.parent is not None:
                self.remove_widget(self.overlay)
            return
        self.overlay.seconds = seconds
        self.overlay.look.sync(App.get_running_app())
        if self.overlay.parent is None:
            self.add_widget(self.overlay)

    def _show_message(self, view: View) -> None:
        banner = self.banner
        if view.message is None:
            if banner.parent is not None:
                self.remove_widget(banner)
            banner.text = ""
            return
        if view.screen in ("attract", "no_content"):
            # Nobody has chosen a language yet (a foreign code shown to the attract loop): both, as that screen.
            text = "\n".join(texts.bilingual(view.message))
        else:
            text = texts.text(view.message, view.language)
        banner.look.sync(App.get_running_app())
        banner.text = text
        if banner.parent is None:
            # Above the screens and the picture viewer, under "Are you still there?" (which is modal).
            self.add_widget(banner, index=1 if self.overlay.parent is not None else 0)

    def open_viewer(self, source: str) -> None:
        self.viewer.look.sync(App.get_running_app())
        self.viewer.source = source
        if self.viewer.parent is None:
            self.add_widget(self.viewer, index=1 if self.overlay.parent is not None else 0)
        refresh_stale_labels()

    def close_viewer(self) -> None:
        if self.viewer.parent is not None:
            self.remove_widget(self.viewer)
        self.viewer.source = ""

    def stop_media(self) -> None:
        for screen in self.screens.values():
            screen.hidden()


def release_memory(*_args: Any) -> None:
    """Give the C heap's free pages back at an idle moment (a Clock callback). Label and image textures are freed
    and reallocated in many sizes as screens change; without a trim RSS creeps up by megabytes per thousand taps
    although nothing leaks (measured: a trim brings it back to the same figure every time); ~4 ms."""
    release_freed_memory()


def _clear_image_cache() -> None:
    # A new pack's files have new paths: the old pack's images would only sit in memory until they time out.
    Cache.remove("kv.image")
    Cache.remove("kv.texture")


_kv_loaded = False


def load_kv() -> None:
    """Load the screens' .kv files once per process (Kivy keeps rules globally; loading twice doubles them)."""
    global _kv_loaded
    if _kv_loaded:
        return
    for name in KV_FILES:
        Builder.load_file(str(KV_DIR / name))
    _kv_loaded = True


class KioskApp(App):
    """Renders `controller.view`; every button calls a controller method; every touch calls `controller.touch()`.

    `tr` (chrome strings of the language shown), `pal` (the palette as RGBA) and `font` (text sizes, scaled by
    large-text mode) are the current look, numbered `look_version`; kv binds to each screen's copy (`Look`), and
    to `touch_px` (the minimum touch target). `look` is the app's own copy, always current, for a themed widget
    built outside any screen."""

    tr = DictProperty()
    pal = DictProperty()
    font = DictProperty()
    touch_px = NumericProperty(theme.TOUCH_TARGET_PX)
    view = ObjectProperty(None, allownone=True)

    def __init__(self, controller: ControllerLike, *, kiosk_mode: bool = False,
                 on_first_frame: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        """`on_first_frame(screen)` is called once, when the first frame has been shown (`museum kiosk run` logs
        it: the benchmark's start time, and a Pi that takes long to show anything is visible in its log)."""
        self.controller = controller
        self._on_first_frame = on_first_frame
        self._finish_drawing = _gil_free_gl_finish()
        self.kiosk_mode = kiosk_mode
        self.kiosk_root: KioskRoot | None = None
        self._tick_event: Any = None
        self._window: Any = None
        self._screenshots: Any = None
        super().__init__(**kwargs)
        self.title = "Museum kiosk"
        self.look_version = 0
        self.apply_look(controller.view.language, controller.view.modes)
        self.look = Look()

    def apply_look(self, language: str, modes: frozenset[str]) -> None:
        """Make this the current look. Screens take it with `Look.sync`: KioskRoot.render syncs the one shown."""
        values = look_values(language, modes)
        if values != (self.tr, self.pal, self.font):
            self.tr, self.pal, self.font = values
            self.look_version += 1
        if getattr(self, "look", None) is not None:
            self.look.sync(self)
        if self.kiosk_root is not None:
            self.kiosk_root.paint_background()

    def build(self) -> KioskRoot:
        from kivy.base import ExceptionManager
        from kivy.core.window import Window

        load_kv()
        root = self.kiosk_root = KioskRoot()
        self._window = Window
        Window.bind(on_touch_down=self._on_any_touch, on_request_close=self._on_request_close)
        self.controller.on_change = self._on_view
        self._tick_event = Clock.schedule_interval(self._tick, TICK_S)
        global _error_budget
        if self.kiosk_mode and _error_budget is None:
            _error_budget = _ErrorBudget()
            ExceptionManager.add_handler(_error_budget)
        root.render(self.controller.view)
        if self._on_first_frame is not None:
            Window.bind(on_flip=self._first_flip)
        if self._finish_drawing is not None:
            Window.bind(on_flip=self._finish_drawing)
        self.view = self.controller.view
        return root

    def _first_flip(self, window: Any) -> None:
        window.unbind(on_flip=self._first_flip)
        if self._on_first_frame is not None:
            self._on_first_frame(self.controller.view.screen)

    def _on_view(self, view: View) -> None:
        self.view = view
        if self.kiosk_root is not None:
            self.kiosk_root.render(view)

    def _tick(self, _dt: float) -> None:
        self.controller.tick()

    def _on_any_touch(self, _window: Any, touch: Any) -> bool:
        before = self.controller.view
        root = self.kiosk_root
        if before.countdown_s is not None and root is not None and root.overlay.parent is not None:
            # The first touch on "Are you still there?" answers it, wherever it lands; it must not also press
            # whatever lies under the overlay, which disappears in this very touch.
            self.controller.still_here()
            return True
        self.controller.touch()
        # The touch that starts a visit must not also press the button that appears under the finger.
        return before.screen in ("attract", "no_content")

    def _on_request_close(self, *_args: Any, **_kwargs: Any) -> bool:
        return bool(self.kiosk_mode)  # True keeps the window: no Alt-F4, no window-manager close in a gallery

    def on_stop(self) -> None:
        self.detach()

    def detach(self) -> None:
        """Stop ticking, release media and unbind from the window (the harness's reset; App.stop calls it)."""
        if self._tick_event is not None:
            self._tick_event.cancel()
            self._tick_event = None
        if self._screenshots is not None:
            self._screenshots.cancel()
            self._screenshots = None
        if self._window is not None:
            self._window.unbind(on_touch_down=self._on_any_touch, on_request_close=self._on_request_close)
            if self._finish_drawing is not None:
                self._window.unbind(on_flip=self._finish_drawing)
        if getattr(self.controller, "on_change", None) == self._on_view:
            self.controller.on_change = None
        if self.kiosk_root is not None:
            self.kiosk_root.stop_media()
            self.kiosk_root.close_viewer()

    def capture_png(self) -> bytes:
        """The screen as a PNG (≤ MAX_CAPTURE_BYTES if possible): for the `screenshot` command. UI thread only.

        The take-home QR code and link are left out: they are the visitor's key to their visit page, and a staff
        screenshot is kept on the site server, which must never hold a token it could open (docs/privacy.md)."""
        hidden = [widget for widget in self._take_home_widgets() if widget.opacity]
        for widget in hidden:
            widget.opacity = 0
        try:
            return capture_png(self.kiosk_root)
        finally:
            for widget in hidden:
                widget.opacity = 1

    def _take_home_widgets(self) -> list[Widget]:
        if self.kiosk_root is None:
            return []
        return [screen.ids[name] for screen in self.kiosk_root.walk(restrict=True)
                if isinstance(screen, MyVisitScreen) for name in ("qr", "url")]

    def write_screenshots(self, path: str | Path, every_s: float) -> None:
        """Write the screen to `path` every `every_s` seconds (the demo's offscreen kiosk), replacing it."""
        target = Path(path)

        def write(_dt: float) -> None:
            try:
                data = self.capture_png()
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                os.replace(partial, target)
            except OSError as error:
                log.warning("%s: cannot write the screenshot: %s", target, error)

        if self._screenshots is not None:
            self._screenshots.cancel()
        self._screenshots = Clock.schedule_interval(write, every_s)


def _gil_free_gl_finish() -> Callable[..., None] | None:
    """`glFinish` called through ctypes, which lets go of Python's GIL while the GL driver finishes the frame.

    Kivy swaps buffers, and calls GL, holding the GIL. With Mesa's software renderer (llvmpipe) the frame's pixels
    are drawn during that call, 10-20 ms at 1280×800 here, during which the event writer and the device client's
    threads cannot run: a "take it home" waited for the frame that answered it before its event could even be
    committed. Finishing the frame first, outside the GIL, lets them work meanwhile, and the swap that follows has
    nothing left to draw. On a Pi's GPU it waits for the GPU the same way. Found through EGL's loader (libglvnd
    dispatches it to the current context, EGL's or GLX's); None, and nothing changes, where it cannot be found."""
    import ctypes

    try:
        egl = ctypes.CDLL("libEGL.so.1")
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        address = egl.eglGetProcAddress(b"glFinish")
    except (OSError, AttributeError):
        return None
    if not address:
        return None
    finish = ctypes.CFUNCTYPE(None)(address)

    def finish_drawing(*_args: Any) -> None:
        finish()

    return finish_drawing


class _ErrorBudget:
    """Kivy ExceptionHandler: log an error in a callback and keep running, unless errors keep coming."""

    def __init__(self) -> None:
        self._errors: list[float] = []

    def handle_exception(self, exception: BaseException) -> Any:
        from kivy.base import ExceptionManager

        now = time.monotonic()
        self._errors[:] = [t for t in self._errors if now - t < 60] + [now]
        if isinstance(exception, KeyboardInterrupt | SystemExit) or len(self._errors) > ERRORS_BEFORE_EXIT:
            return ExceptionManager.RAISE
        log.error("error in the kiosk UI (carrying on)", exc_info=exception)
        return ExceptionManager.PASS


_error_budget: _ErrorBudget | None = None


# --- screenshots --------------------------------------------------------------------------------------------

def save_screenshot(path: str | Path) -> Path:
    """Save the window as a PNG exactly at `path` (Kivy's `Window.screenshot` appends a counter to the name it is
    given: the file is renamed to what was asked). Draws a fresh frame first so the file shows the current state."""
    from kivy.core.window import Window

    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiosk-shot-", dir=target.parent) as folder:
        pattern = os.path.join(folder, "shot.png").replace("{", "{{").replace("}", "}}")
        Window.dispatch("on_draw")  # render into the back buffer, which glReadPixels reads
        written = Window.screenshot(name=pattern)
        if not written:
            raise RuntimeError("Kivy wrote no screenshot")
        os.replace(written, target)
    return target


def capture_png(root: Widget | None = None) -> bytes:
    """The window as PNG bytes; when larger than MAX_CAPTURE_BYTES, the root widget exported at half scale."""
    with tempfile.TemporaryDirectory(prefix="museum-kiosk-capture-") as folder:
        data = save_screenshot(Path(folder) / "screen.png").read_bytes()
        if len(data) > MAX_CAPTURE_BYTES and root is not None:
            from kivy.core.window import Window
            from kivy.graphics import Color, InstructionGroup, Rectangle

            small = Path(folder) / "small.png"
            # The export draws the widget alone: paint the window's clear colour (the background) under it.
            background = InstructionGroup()
            background.add(Color(*Window.clearcolor))
            background.add(Rectangle(pos=root.pos, size=root.size))
            root.canvas.before.add(background)
            try:
                root.export_to_png(str(small), scale=0.5)
            finally:
                root.canvas.before.remove(background)
            data = small.read_bytes()
    return data


# --- the driver for tests, benchmark and demo ---------------------------------------------------------------

class KioskHarness:
    """The kiosk app in this process's one window, driven frame by frame without `App.run` (like Kivy's
    GraphicUnitTest): build it, `tap` widgets with UnitTestTouch, `step` frames, take screenshots.

        harness = KioskHarness(controller, state_dir=tmp)      # prepares Kivy (non-kiosk window) if needed
        harness.tap("take_home"); harness.tap("artwork:monet-impression-sunrise"); harness.screenshot(path)
        harness.reset(other_controller)                         # a fresh app in the same window
        harness.close()

    Names for `find`/`tap`: a widget's `key` ("take_home", "back", "audio", "lsf", "picture", "my_visit",
    "end_visit", "end_visit_here", "still_here", "close_viewer", "message", "artwork:<id>", "room:<zone>",
    "lang:<code>", "mode:<mode>", "page:next"…) or an id in a screen's .kv file.
    """

    def __init__(self, controller: ControllerLike, *, state_dir: str | Path, width: int = 1280, height: int = 800,
                 kiosk_mode: bool = False) -> None:
        from kivy.base import EventLoop
        from kivy.graphics.cgl import cgl_get_backend_name

        if _prepared is None:  # else the process already chose (the demo may have prepared a kiosk window)
            prepare_kivy(state_dir, fullscreen=False, kiosk_mode=False, width=width, height=height)
        EventLoop.ensure_window()
        if cgl_get_backend_name() == "mock":
            raise RuntimeError("Kivy's GL backend is 'mock': nothing would be rendered; unset KIVY_GL_BACKEND")
        from kivy.graphics.opengl import glFinish

        self._gl_finish = glFinish
        self.window = EventLoop.window
        self.frames_rendered = 0
        self._last_flip = 0.0
        self.window.bind(on_flip=self._on_flip)
        self.app: KioskApp
        self.root: KioskRoot
        self._attach(controller, kiosk_mode)

    def _on_flip(self, *_args: Any) -> None:
        # Wait for the frame's pixels: Mesa's software renderer (llvmpipe, offscreen here) otherwise rasterises a
        # frame only when a later GL call needs it, so its cost would land in the next frame's first texture
        # upload, and a tap's measured latency would carry the previous frame's drawing.
        self._gl_finish()
        self.frames_rendered += 1
        self._last_flip = time.perf_counter()

    def _attach(self, controller: ControllerLike, kiosk_mode: bool) -> None:
        self.app = KioskApp(controller, kiosk_mode=kiosk_mode)
        self.root = self.app.build()
        self.app.root = self.root
        self.window.add_widget(self.root)
        self.app.dispatch("on_start")
        self.step(2)

    @property
    def controller(self) -> ControllerLike:
        return self.app.controller

    def reset(self, controller: ControllerLike, *, kiosk_mode: bool = False) -> None:
        """Replace the app with a fresh one for `controller` (the window stays: Kivy has only one)."""
        self._detach()
        self._attach(controller, kiosk_mode)

    def _detach(self) -> None:
        from kivy.base import EventLoop

        # on_stop also makes kv's `app` forget this app (Kivy's ProxyApp caches the running app until then)
        self.app.dispatch("on_stop")
        if self.root.parent is not None:
            self.window.remove_widget(self.root)
        EventLoop.touches.clear()

    def close(self) -> None:
        self._detach()
        self.window.unbind(on_flip=self._on_flip)
        self.step(1)

    def step(self, frames: int = 1) -> None:
        """Run `frames` iterations of Kivy's loop: clock, input, layout, and a drawn frame when anything changed."""
        from kivy.base import EventLoop

        for _ in range(frames):
            EventLoop.idle()

    def run_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Step frames until `condition()` holds (True) or `timeout_s` of wall time pass (False)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() >= deadline:
                return False
            self.step(1)
        return True

    # --- finding and touching widgets ---

    def _layers(self) -> Iterator[Widget]:
        # what is on top first: the overlay, the picture viewer, then the current screen
        yield from reversed(self.root.children)

    def walk(self, *, all_screens: bool = False) -> Iterator[Widget]:
        """Every widget shown (or, with all_screens, every widget of every screen, shown or not)."""
        roots: list[Widget] = [self.root]
        if all_screens:
            roots += [s for s in self.root.screens.values() if s.parent is None]
            roots += [w for w in (self.root.overlay, self.root.viewer, self.root.banner) if w.parent is None]
        for top in roots:
            yield from top.walk(restrict=True)

    @staticmethod
    def visible(widget: Widget) -> bool:
        """Whether the widget is in the window and neither it nor a parent is fully transparent."""
        if widget.get_root_window() is None:
            return False
        node = widget
        while node is not None and node is not node.parent:
            if node.opacity <= 0:
                return False
            node = node.parent
        return True

    def find(self, name: str) -> Widget:
        """The shown widget whose `key` or kv id is `name` (LookupError if none)."""
        for layer in self._layers():
            for widget in layer.walk(restrict=True):
                if getattr(widget, "key", None) == name and self.visible(widget):
                    return widget
                ids = getattr(widget, "ids", None)
                if ids and name in ids and self.visible(ids[name]):
                    return ids[name]
        raise LookupError(f"no shown widget named {name!r} on {self.controller.view.screen}")

    def exists(self, name: str) -> bool:
        try:
            self.find(name)
        except LookupError:
            return False
        return True

    def tap(self, target: str | Widget | tuple[float, float], *, wait: bool = True) -> float:
        """Touch down and up on a widget (its centre), a name for `find`, or window coordinates.

        With `wait` (the default) the touch is delivered the way an input provider delivers it, at the start of a
        frame (after the clock's wait for the frame's slot), and that frame is run: input, layout, drawing, buffer
        swap. Returns the seconds from the touch to the end of the frame that shows its answer (later frames are
        run if the first had nothing to draw). Without `wait`, the touch is only dispatched (many can land in one
        frame, as in a storm of touches) and 0 is returned."""
        from kivy.tests.common import UnitTestTouch

        if isinstance(target, tuple):
            x, y = target
        else:
            widget = self.find(target) if isinstance(target, str) else target
            x, y = widget.to_window(*widget.center)
        if wait:
            Clock.tick()  # the frame starts: Kivy reads its input providers right after this
        frames = self.frames_rendered
        started = time.perf_counter()
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        touch.touch_up()
        if not wait:
            return 0.0
        self._finish_frame()
        for _ in range(10):
            if self.frames_rendered > frames:
                return time.perf_counter() - started
            self.step(1)
        return time.perf_counter() - started

    def _finish_frame(self) -> None:
        """The rest of `EventLoop.idle()` after its `Clock.tick()`: input, layout, draw and swap if needed."""
        from kivy.base import EventLoop

        EventLoop.dispatch_input()
        Builder.sync()
        Clock.tick_draw()
        Builder.sync()
        if self.window.canvas.needs_redraw:
            self.window.dispatch("on_draw")
            self.window.dispatch("on_flip")

    def redraw(self) -> float:
        """Draw the current frame again with nothing changed, and return the seconds it took (draw, swap, wait for
        the pixels): the floor under any tap's frame on this screen, what the renderer alone costs."""
        self.window.canvas.ask_update()
        started = time.perf_counter()
        self._finish_frame()
        return time.perf_counter() - started

    def touch_targets(self) -> list[tuple[str, float, float]]:
        """(name, width, height) of every button shown and enabled: what a finger can press now."""
        return [(getattr(w, "key", "") or type(w).__name__, w.width, w.height) for w in self.walk()
                if isinstance(w, ButtonBehavior) and not w.disabled and self.visible(w)]

    def texts(self, *, all_screens: bool = False) -> list[str]:
        """The text of every label shown (or held by any screen, with all_screens)."""
        return [w.text for w in self.walk(all_screens=all_screens) if isinstance(w, Label) and w.text]

    # --- pictures ---

    def screenshot(self, path: str | Path) -> Path:
        """The window as a PNG at exactly `path` (returned)."""
        self.step(1)
        return save_screenshot(path)

    def capture_png(self) -> bytes:
        """What the `screenshot` command sends (take-home QR and link masked)."""
        self.step(1)
        return self.app.capture_png()


__all__ = [
    "ControllerLike", "KioskApp", "KioskHarness", "capture_png", "has_sound_device",
    "kivy_config", "kivy_settings", "load_kv", "prepare_kivy", "release_memory", "save_screenshot", "ui_call",
]
