"""Every decision of the kiosk, in plain Python: which screen, when a visit starts and ends, what to emit.

The UI binds touches to these methods and renders `view`; it decides nothing. The controller runs on the UI
thread only, reads time from an injected clock (tests drive it with a fake one) and never blocks: `emit` is
`EventWriter.record`, which only queues. Input it cannot use (an unknown room, a stale button after the pack
changed, a touch storm) is ignored and logged, never raised: a kiosk in a gallery must not crash on a tap.

A visit (kiosk session) starts with the first touch on the attract screen and ends with "End my visit", the idle
timeout, or the kiosk shutting down. Ending it forgets everything about the visitor: the take-home token, the
works collected, the language and accessibility modes chosen, the room they were in, the tags linked.

A QR code shown to the kiosk's camera (`scanned`, docs/kiosk.md "Showing a QR code to the kiosk") joins the visit
to the visitor's existing visit page (a visit QR: the session adopts its token) or links a lent tag to the visit;
anything else gets a friendly message and is only counted.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from content.model import Artwork, Museum
from kiosk.pack_store import InstalledPack
from kiosk.take_home import take_home_url
from protocol.events import (
    ACCESSIBILITY_MODES,
    AccessibilityModeChanged,
    ArtworkCollected,
    ArtworkViewed,
    ContentPackApplied,
    KioskSessionEnded,
    KioskSessionStarted,
    LanguageChanged,
    VisitLinked,
)
from protocol.fields import LANGUAGE
from protocol.ids import new_visit_id, visit_id_for
from qr.codes import ForeignCode, TagCode, VisitCode, classify

log = logging.getLogger(__name__)

Screen = Literal["no_content", "attract", "browse", "detail", "my_visit"]
Emit = Callable[..., object]
"""`EventWriter.record(event_class, visit_id=None, **fields)`."""

MODES = ("large_text", "high_contrast", "sign_language", "audio_description")
assert set(MODES) <= set(ACCESSIBILITY_MODES)
NO_PACK_LANGUAGES = ("fr", "en")
MAX_SESSION_S = 7 * 24 * 3600.0
"""The largest duration `kiosk.session_ended` carries; a longer session (a stuck touch) is reported as this."""
_IDLE_SCREENS = ("no_content", "attract")
MESSAGES = ("qr_visit_found", "qr_tag_linked", "qr_not_ours")
"""The messages a scanned code can bring up (keys of kiosk.texts.STRINGS)."""
MESSAGE_S = 6.0
"""How long a message stays on screen: long enough to read two lines at arm's length, short enough not to hide the
screen's top for long. A tap on it closes it sooner."""
MAX_TAGS_PER_VISIT = 8
"""Tags one visit remembers having linked (a family may borrow several): bounds what a storm of tag codes can make
the session hold. An older tag pushed out of this memory stays linked at the hub; it is only no longer moved along
when the session adopts another visit."""


@dataclass(frozen=True)
class QrStats:
    """What the kiosk did with the codes its camera read, since it started."""

    visits: int = 0
    """Visit QR codes adopted by a session."""
    tags: int = 0
    """Tags of this site linked to a visit."""
    repeats: int = 0
    """The session's own visit, or a tag it already linked, shown again: nothing recorded."""
    not_ours: int = 0
    """Anything that is not a code of this museum (another site's tag included): a message, nothing recorded."""
    ignored: int = 0
    """Read while the kiosk had no content pack or was stopping."""


@dataclass(frozen=True)
class View:
    """Everything the UI renders; replaced (never mutated) after every change."""

    screen: Screen
    language: str
    languages: tuple[str, ...]
    modes: frozenset[str]
    museum: Museum | None
    pack_path: Path | None
    """Media paths in `museum` are relative to it."""
    zone_id: str | None
    artwork_id: str | None
    collected: tuple[str, ...]
    take_home_url: str | None
    countdown_s: int | None
    """Seconds left on "Are you still there?"; None when it is not shown."""
    session_id: str | None
    generation: int
    message: str | None = None
    """A message (one of MESSAGES) shown over whatever screen is up, after a QR code was read; None: none."""


class KioskController:
    def __init__(self, *, emit: Emit, home_zone: str | None = None, companion_base_url: str,
                 idle_timeout_s: float = 90, countdown_s: float = 10, default_language: str = "fr",
                 clock: Callable[[], float] = time.monotonic, on_change: Callable[[View], None] | None = None,
                 site_id: str | None = None) -> None:
        """`site_id`: this site's, whose lent tags the kiosk links to visits (None: every tag code is foreign)."""
        if idle_timeout_s <= 0 or countdown_s <= 0:
            raise ValueError("idle_timeout_s and countdown_s must be positive")
        take_home_url(companion_base_url, "A" * 22)  # a bad base URL fails here, at start, not at the first collect
        self._emit = emit
        self._home_zone = home_zone
        self._base_url = companion_base_url
        self._idle_timeout_s = float(idle_timeout_s)
        self._countdown_total_s = float(countdown_s)
        self._default_language = default_language
        self._clock = clock
        self._site_id = site_id
        self.on_change = on_change
        """Called with every new view (the UI's redraw); may be set after construction."""
        self._observers: list[Callable[[View], None]] = []
        self._closed = False
        self._pack: InstalledPack | None = None
        self._pending: InstalledPack | None = None
        # The visitor's state: all of it is reset by _forget_visitor().
        self._session_id: str | None = None
        self._started_at = 0.0
        self._last_touch = 0.0
        self._token: str | None = None
        self._visit_id: str | None = None
        self._collected: list[str] = []
        self._modes: frozenset[str] = frozenset()
        self._language = default_language
        self._screen: Screen = "no_content"
        self._zone_id: str | None = None
        self._artwork_id: str | None = None
        self._countdown_shown: int | None = None
        self._tags: deque[str] = deque(maxlen=MAX_TAGS_PER_VISIT)
        self._message: str | None = None
        self._message_until = 0.0
        self._qr_counts = dict.fromkeys((f.name for f in fields(QrStats)), 0)
        self._view = self._build(0)

    # --- what the UI reads --------------------------------------------------------------------------------

    @property
    def view(self) -> View:
        return self._view

    @property
    def idle(self) -> bool:
        """No visitor session (attract loop or no content)."""
        return self._session_id is None

    @property
    def pending_pack(self) -> InstalledPack | None:
        """A pack received during a session, shown when the session ends."""
        return self._pending

    @property
    def shown_pack(self) -> InstalledPack | None:
        return self._pack

    @property
    def idle_timeout_s(self) -> float:
        return self._idle_timeout_s

    @property
    def default_language(self) -> str:
        return self._default_language

    @property
    def qr_stats(self) -> QrStats:
        return QrStats(**self._qr_counts)

    def observe(self, callback: Callable[[View], None]) -> None:
        """Also call `callback` with every new view, besides `on_change` (the runtime's own bookkeeping)."""
        self._observers.append(callback)

    # --- content ------------------------------------------------------------------------------------------

    def show_pack(self, pack: InstalledPack | None) -> None:
        """At start: the store's current pack, or None (the "content is on its way" screen). Emits nothing: the
        pack was reported when it was applied. During a session it waits like `offer_pack`."""
        if self._closed:
            return
        if not self.idle:
            if pack is not None:
                self._pending = pack
            return
        self._pack = pack
        self._pending = None
        self._reset_to_idle()
        self._changed()

    def offer_pack(self, pack: InstalledPack) -> bool:
        """A newly installed pack: shown now if nobody is using the kiosk (True), else when the session ends."""
        if self._closed:
            return False
        if not self.idle:
            log.info("pack %s version %s waits for the end of the current visit", pack.pack_id, pack.pack_version)
            self._pending = pack
            return False
        self._apply(pack)
        return True

    def _apply(self, pack: InstalledPack) -> None:
        self._pack = pack
        self._pending = None
        self._reset_to_idle()
        self._changed()
        self._record(ContentPackApplied, pack_id=pack.pack_id, pack_version=str(pack.pack_version),
                     items=len(pack.museum.artworks))

    # --- the visitor's actions ----------------------------------------------------------------------------

    def touch(self) -> None:
        """Every touch anywhere: on attract it starts a session; in a session it resets the idle timer."""
        if self._closed or self._pack is None:
            return
        now = self._clock()
        if self.idle:
            self._start_session(now)
            return
        self._last_touch = now
        if self._countdown_shown is not None:
            self._countdown_shown = None
            self._changed()

    def open_room(self, zone_id: str) -> None:
        museum = self._active("open_room")
        if museum is None:
            return
        if zone_id not in museum.zone_ids:
            log.warning("ignoring open_room(%r): no such room in pack %s", zone_id, museum.pack_id)
            return
        self._screen, self._zone_id, self._artwork_id = "browse", zone_id, None
        self._changed()

    def open_artwork(self, artwork_id: str) -> None:
        museum = self._active("open_artwork")
        if museum is None:
            return
        artwork = _artwork(museum, artwork_id)
        if artwork is None:
            log.warning("ignoring open_artwork(%r): no such work in pack %s", artwork_id, museum.pack_id)
            return
        self._screen, self._zone_id, self._artwork_id = "detail", artwork.zone_id, artwork_id
        self._changed()
        self._record(ArtworkViewed, visit_id=self._visit_id, artwork_id=artwork_id, source="kiosk",
                     language=self._language, session_id=self._session_id)

    def back(self) -> None:
        """detail or my_visit → browse (the room of the work last shown)."""
        if self._active("back") is None or self._screen not in ("detail", "my_visit"):
            return
        self._screen, self._artwork_id = "browse", None
        self._changed()

    def set_language(self, language: str) -> None:
        museum = self._active("set_language")
        if museum is None:
            return
        if language not in museum.languages:
            log.warning("ignoring set_language(%r): pack %s has %s", language, museum.pack_id,
                        ", ".join(museum.languages))
            return
        if language == self._language:
            return
        before, self._language = self._language, language
        self._changed()
        self._record(LanguageChanged, from_language=before, to_language=language)

    def toggle(self, mode: str) -> None:
        if self._active("toggle") is None:
            return
        if mode not in MODES:
            log.warning("ignoring toggle(%r): the modes are %s", mode, ", ".join(MODES))
            return
        enabled = mode not in self._modes
        self._modes = self._modes | {mode} if enabled else self._modes - {mode}
        self._changed()
        self._record(AccessibilityModeChanged, mode=mode, enabled=enabled)

    def collect(self, artwork_id: str) -> None:
        """"Take it home": the first work collected creates the visit's token (and its QR code)."""
        museum = self._active("collect")
        if museum is None:
            return
        if _artwork(museum, artwork_id) is None:
            log.warning("ignoring collect(%r): no such work in pack %s", artwork_id, museum.pack_id)
            return
        if artwork_id in self._collected:
            return
        if self._token is None:
            self._token = new_visit_id()
            self._visit_id = visit_id_for(self._token)
        self._collected.append(artwork_id)
        self._changed()
        self._record(ArtworkCollected, visit_id=self._visit_id, artwork_id=artwork_id, source="kiosk")

    def open_my_visit(self) -> None:
        if self._active("open_my_visit") is None:
            return
        self._screen, self._artwork_id = "my_visit", None
        self._changed()

    def end_visit(self) -> None:
        """"End my visit": the session ends (reason visitor) and the kiosk returns to the attract loop."""
        if self._closed or self.idle:
            return
        self._end_session("visitor", self._clock())

    def still_here(self) -> None:
        """"I'm still here" on the countdown (a stale press after the visit ended starts nothing)."""
        if not self.idle:
            self.touch()

    def scanned(self, text: str) -> None:
        """A code the kiosk's camera read (each code once while it stays in view: kiosk/qr_scanner.py debounces).

        A visit QR (`<base>/v/<token>`) starts a session if none is on and the session adopts its token: what the
        visitor takes home goes to their existing page, which "My visit" now shows. A tag of this site is linked
        to the visit (the token is created if the session has none yet, as "Take it home" does). Each records
        `visit.linked` (channel kiosk_qr) with the token's derivation, never the token. Anything else shows "not
        one of the museum's codes" and is only counted. The session's own visit or a tag it already linked,
        shown again, shows its message again and records nothing."""
        if self._closed or self._pack is None:
            self._count("ignored")
            log.debug("ignoring a QR code: %s", "the kiosk is stopping" if self._closed else "no content yet")
            return
        # Without a site id no tag is this site's ("" is no site's id).
        code = classify(text, self._site_id or "") if isinstance(text, str) else ForeignCode("", "not text")
        if isinstance(code, VisitCode):
            self._scanned_visit(code.token)
        elif isinstance(code, TagCode):
            self._scanned_tag(code.tag_id)
        else:
            # Only why, never the text: a foreign code can carry anything (a name, a phone number, a Wi-Fi key).
            self._count("not_ours")
            log.info("a QR code that is not one of this museum's was shown (%s)", code.reason)
            if not self.idle:
                self._visitor_active()
            self._show_message("qr_not_ours")
            self._changed()

    def dismiss_message(self) -> None:
        """A tap on the message: it goes at once."""
        if self._message is not None:
            self._message = None
            self._changed()

    def tick(self) -> None:
        """Called by the UI a few times a second: shows the countdown, ends the session when it runs out, takes a
        message down when its time is up."""
        if self._closed:
            return
        now = self._clock()
        if self._message is not None and now >= self._message_until:
            self._message = None
            self._changed()
        if self.idle:
            return
        countdown_at = self._last_touch + self._idle_timeout_s
        if now < countdown_at:
            if self._countdown_shown is not None:  # the timeout was raised meanwhile
                self._countdown_shown = None
                self._changed()
            return
        ends_at = countdown_at + self._countdown_total_s
        if now >= ends_at:
            # The session ended when the countdown reached 0, even if this tick comes late (a busy UI).
            self._end_session("timeout", ends_at)
            return
        left = max(1, math.ceil(ends_at - now))
        if left != self._countdown_shown:
            self._countdown_shown = left
            self._changed()

    # --- operations ---------------------------------------------------------------------------------------

    def set_default_language(self, language: str) -> bool:
        """The language each visit starts in; applies now when idle, else from the next visit. False (and no
        change) if the pack shown does not have it."""
        available = self._pack.museum.languages if self._pack is not None else NO_PACK_LANGUAGES
        if not isinstance(language, str) or LANGUAGE.match(language) is None or language not in available:
            log.warning("ignoring default language %r: the pack has %s", language, ", ".join(available))
            return False
        self._default_language = language
        if self.idle and not self._closed:
            self._language = self._start_language()
            self._changed()
        return True

    def set_idle_timeout(self, seconds: float) -> bool:
        """Seconds without a touch before the countdown; the running session uses it from now."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
            log.warning("ignoring idle timeout %r: it must be a positive number of seconds", seconds)
            return False
        self._idle_timeout_s = float(seconds)
        return True

    def shutdown(self) -> None:
        """The kiosk is stopping: a session in progress ends (reason shutdown); nothing starts afterwards."""
        if self._closed:
            return
        if not self.idle:
            self._end_session("shutdown", self._clock())
        self._closed = True

    # --- internals ----------------------------------------------------------------------------------------

    def _active(self, action: str) -> Museum | None:
        """The museum, if a visitor's action makes sense now (a session is on), and resets the idle timer."""
        if self._closed or self._pack is None or self.idle:
            log.debug("ignoring %s: no visit in progress", action)
            return None
        if self._visitor_active():
            self._changed()
        return self._pack.museum

    def _visitor_active(self) -> bool:
        """Someone is at the kiosk: the idle timer starts again. Whether the countdown was taken down."""
        self._last_touch = self._clock()
        if self._countdown_shown is None:
            return False
        self._countdown_shown = None
        return True

    def _start_session(self, now: float, *, show: bool = True) -> None:
        """`show` False: the caller changes more and shows the view once (`_changed`) itself."""
        self._session_id = str(uuid.uuid4())
        self._started_at = self._last_touch = now
        self._language = self._start_language()
        self._screen = "browse"
        self._zone_id = self._home_room()
        if show:
            self._changed()
        self._record(KioskSessionStarted, session_id=self._session_id, language=self._language)

    def _scanned_visit(self, token: str) -> None:
        if self.idle:
            self._start_session(self._clock(), show=False)
        else:
            self._visitor_active()
        if token == self._token:
            self._count("repeats")
            self._show_message("qr_visit_found")
            self._changed()
            return
        had_token = self._token is not None
        self._token, self._visit_id = token, visit_id_for(token)
        self._count("visits")
        self._show_message("qr_visit_found")
        self._changed()
        log.info("a visit QR code was shown: the session continues that visit")
        self._record(VisitLinked, visit_id=self._visit_id, channel="kiosk_qr")
        if had_token:
            # What this session had already collected or linked went to the visit it was on until now; the visitor
            # now sees their own visit's code on "My visit", so those works and tags move to it too.
            for artwork_id in self._collected:
                self._record(ArtworkCollected, visit_id=self._visit_id, artwork_id=artwork_id, source="kiosk")
            for tag_id in self._tags:
                self._record(VisitLinked, visit_id=self._visit_id, channel="kiosk_qr", tag_id=tag_id)

    def _scanned_tag(self, tag_id: str) -> None:
        if self.idle:
            self._start_session(self._clock(), show=False)
        else:
            self._visitor_active()
        if tag_id in self._tags:
            self._count("repeats")
            self._show_message("qr_tag_linked")
            self._changed()
            return
        if self._token is None:
            self._token = new_visit_id()
            self._visit_id = visit_id_for(self._token)
        self._tags.append(tag_id)
        self._count("tags")
        self._show_message("qr_tag_linked")
        self._changed()
        log.info("a visitor tag was linked to the visit")
        self._record(VisitLinked, visit_id=self._visit_id, channel="kiosk_qr", tag_id=tag_id)

    def _show_message(self, message: str) -> None:
        self._message = message
        self._message_until = self._clock() + MESSAGE_S

    def _count(self, what: str) -> None:
        self._qr_counts[what] += 1

    def _end_session(self, reason: str, at: float) -> None:
        session_id, visit_id = self._session_id, self._visit_id
        duration = min(max(0.0, at - self._started_at), MAX_SESSION_S)
        self._forget_visitor()
        pending = self._pending
        if pending is not None:
            self._record(KioskSessionEnded, visit_id=visit_id, session_id=session_id,
                         duration_s=round(duration, 3), reason=reason)
            self._apply(pending)
            return
        self._reset_to_idle()
        self._changed()
        self._record(KioskSessionEnded, visit_id=visit_id, session_id=session_id, duration_s=round(duration, 3),
                     reason=reason)

    def _forget_visitor(self) -> None:
        self._session_id = None
        self._token = None
        self._visit_id = None
        self._collected = []
        self._modes = frozenset()
        self._artwork_id = None
        self._countdown_shown = None
        self._tags.clear()
        self._message = None

    def _reset_to_idle(self) -> None:
        self._forget_visitor()
        self._screen = "no_content" if self._pack is None else "attract"
        self._language = self._start_language()
        self._zone_id = self._home_room()

    def _start_language(self) -> str:
        if self._pack is None:
            return self._default_language
        languages = self._pack.museum.languages
        return self._default_language if self._default_language in languages else languages[0]

    def _home_room(self) -> str | None:
        if self._pack is None:
            return None
        zone_ids = self._pack.museum.zone_ids
        if self._home_zone in zone_ids:
            return self._home_zone
        if self._home_zone is not None:
            log.warning("home room %r is not in pack %s; showing its first room, %s", self._home_zone,
                        self._pack.pack_id, zone_ids[0])
        return zone_ids[0]

    def _build(self, generation: int) -> View:
        pack = self._pack
        return View(
            screen=self._screen, language=self._language,
            languages=pack.museum.languages if pack is not None else NO_PACK_LANGUAGES, modes=self._modes,
            museum=pack.museum if pack is not None else None, pack_path=pack.path if pack is not None else None,
            zone_id=self._zone_id, artwork_id=self._artwork_id, collected=tuple(self._collected),
            take_home_url=take_home_url(self._base_url, self._token) if self._token is not None else None,
            countdown_s=self._countdown_shown, session_id=self._session_id, generation=generation,
            message=self._message)

    def _changed(self) -> None:
        view = self._view = self._build(self._view.generation + 1)
        for callback in (*self._observers, self.on_change):
            if callback is None:
                continue
            try:
                callback(view)
            except Exception:  # a drawing bug must not leave the controller half-updated for the next touch
                log.exception("view callback %r failed", callback)

    def _record(self, event_class: type, *, visit_id: str | None = None, **fields: object) -> None:
        try:
            self._emit(event_class, visit_id=visit_id, **fields)
        except Exception:  # the visitor's screen goes on; the event's loss is logged loudly
            log.exception("could not record %s", getattr(event_class, "type", event_class))


def _artwork(museum: Museum, artwork_id: object) -> Artwork | None:
    if not isinstance(artwork_id, str):
        return None
    try:
        return museum.artwork(artwork_id)
    except KeyError:
        return None


__all__ = ["MAX_TAGS_PER_VISIT", "MESSAGES", "MESSAGE_S", "MODES", "Emit", "KioskController", "QrStats", "Screen",
           "View"]
