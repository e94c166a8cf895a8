"""The content model every role reads: a museum's rooms and artworks, texts in every language, media per work.

A museum file is one UTF-8 JSON object; `content/sample_museum/museum.json` is the reference example:

    {"site_id": "demo", "pack_id": "demo-museum", "pack_version": 1,
     "name": {"fr": …, "en": …}, "languages": ["fr", "en"],
     "rooms": [{"zone_id": "impressionnisme", "name": {"fr": …, "en": …}, "capacity": 60}, …],
     "artworks": [{"artwork_id": "monet-impression-sunrise", "zone_id": "impressionnisme",
                   "artist": "Claude Monet", "year": "1872",
                   "period": {"fr": "Impressionnisme", "en": "Impressionism"},
                   "technique": {"fr": "Huile sur toile", "en": "Oil on canvas"}, "title": {"fr": …, "en": …},
                   "text": {"fr": …, "en": …}, "accessibility": {"lsf_video": true}, "popularity": 8,
                   "media": {"image": {"file": "media/monet.png", "alt": {"fr": …, "en": …}},
                             "audio": {"fr": "media/monet.fr.ogg"},
                             "lsf": {"video": "media/monet-lsf.mp4", "captions": "media/monet-lsf.vtt"}}}, …],
     "take_home": {"events": [{"event_id": "nocturne-decembre", "title": {…}, "text": {…},
                               "starts_on": "2026-12-11", "ends_on": "2026-12-11"}, …],
                   "suggestions": [{"suggestion_id": "lumiere-de-vermeer", "title": {…}, "text": {…},
                                    "artwork_ids": ["vermeer-milkmaid"], "zone_id": "siecle-d-or"}, …]}}

`media`, `period`, `technique` and each part of `media` are optional; so is `take_home`, the content staff write
for the take-home page of a visit (upcoming events; suggestions to see next), and each of its two lists, and an
event's `ends_on` and a suggestion's `artwork_ids` and `zone_id`. This module checks the JSON only; whether the
media files exist and are what they claim is `content.source`'s job. Curators edit these files by hand, so loading
checks everything and the ValueError names the exact place of the first problem (`artworks[3] (vermeer-milkmaid):
text has no 'en' version`) rather than failing later on a kiosk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from protocol.fields import IDENTIFIER, LANGUAGE

MIN_POPULARITY = 1
MAX_POPULARITY = 10
MEDIA_DIR = "media"
"""Every media path is relative to the content folder and lies under this folder (the pack keeps the layout)."""

_MUSEUM_KEYS = ("site_id", "name", "languages", "rooms", "artworks", "pack_id", "pack_version")
_OPTIONAL_MUSEUM_KEYS = ("take_home",)
_ROOM_KEYS = ("zone_id", "name", "capacity")
_ARTWORK_KEYS = ("artwork_id", "zone_id", "artist", "year", "title", "text", "accessibility", "popularity")
_OPTIONAL_ARTWORK_KEYS = ("period", "technique", "media")
_ACCESSIBILITY_KEYS = ("lsf_video",)
_MEDIA_KEYS = ("image", "audio", "lsf")
_IMAGE_KEYS = ("file", "alt")
_LSF_KEYS = ("video", "captions")
_TAKE_HOME_KEYS = ("events", "suggestions")
_EVENT_KEYS = ("event_id", "title", "text", "starts_on")
_OPTIONAL_EVENT_KEYS = ("ends_on",)
_SUGGESTION_KEYS = ("suggestion_id", "title", "text")
_OPTIONAL_SUGGESTION_KEYS = ("artwork_ids", "zone_id")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


@dataclass(frozen=True)
class Localized:
    """One text in each of the museum's languages, in the museum's language order."""

    texts: tuple[tuple[str, str], ...]

    def __getitem__(self, language: str) -> str:
        for lang, text in self.texts:
            if lang == language:
                return text
        raise KeyError(f"no {language!r} version (have {', '.join(self.languages)})")

    def get(self, language: str, default: str | None = None) -> str | None:
        try:
            return self[language]
        except KeyError:
            return default

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(lang for lang, _ in self.texts)

    def as_dict(self) -> dict[str, str]:
        return dict(self.texts)


@dataclass(frozen=True)
class Room:
    zone_id: str
    name: Localized
    capacity: int


@dataclass(frozen=True)
class Image:
    file: str
    alt: Localized
    """What the image shows, for screen readers and the audio-description mode, in every pack language."""


@dataclass(frozen=True)
class LsfVideo:
    """A French Sign Language video and its WebVTT captions."""

    video: str
    captions: str


@dataclass(frozen=True)
class Media:
    """A work's media files, as paths relative to the content folder; every part is optional."""

    image: Image | None = None
    audio: tuple[tuple[str, str], ...] = ()
    """(language, file) for each language that has an audio description, in the pack's language order."""
    lsf: LsfVideo | None = None

    def files(self) -> tuple[tuple[str, str, str], ...]:
        """(place under `media.`, kind, path) of every file: the kind is image, audio, video or captions."""
        found: list[tuple[str, str, str]] = []
        if self.image is not None:
            found.append(("image.file", "image", self.image.file))
        found.extend((f"audio.{lang}", "audio", path) for lang, path in self.audio)
        if self.lsf is not None:
            found.append(("lsf.video", "video", self.lsf.video))
            found.append(("lsf.captions", "captions", self.lsf.captions))
        return tuple(found)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.image is not None:
            result["image"] = {"file": self.image.file, "alt": self.image.alt.as_dict()}
        if self.audio:
            result["audio"] = dict(self.audio)
        if self.lsf is not None:
            result["lsf"] = {"video": self.lsf.video, "captions": self.lsf.captions}
        return result


@dataclass(frozen=True)
class Artwork:
    artwork_id: str
    zone_id: str
    artist: str
    year: str
    title: Localized
    text: Localized
    lsf_video: bool
    popularity: int
    """Relative interest, 1 (rarely looked at) to 10 (the work people come for); drives the simulator."""
    media: Media = field(default_factory=Media)
    period: Localized | None = None
    """The movement or period the work belongs to ("Impressionnisme"); works sharing one share this value."""
    technique: Localized | None = None
    """Medium and support ("Huile sur toile"); works sharing one share this value."""


@dataclass(frozen=True)
class MuseumEvent:
    """An upcoming event staff announce on take-home pages (a late opening, a talk, an exhibition)."""

    event_id: str
    title: Localized
    text: Localized
    starts_on: date
    ends_on: date | None = None
    """The last day, included; None: a one-day event."""

    @property
    def last_day(self) -> date:
        return self.starts_on if self.ends_on is None else self.ends_on


@dataclass(frozen=True)
class StaffSuggestion:
    """Something staff suggest seeing next, optionally about some works or a room."""

    suggestion_id: str
    title: Localized
    text: Localized
    artwork_ids: tuple[str, ...] = ()
    zone_id: str | None = None


@dataclass(frozen=True)
class TakeHomeContent:
    """What staff write for the take-home page of a visit, shipped in the content pack."""

    events: tuple[MuseumEvent, ...] = ()
    suggestions: tuple[StaffSuggestion, ...] = ()


@dataclass(frozen=True)
class Museum:
    """One content pack's worth of museum: what a kiosk shows, identified by pack_id and pack_version."""

    site_id: str
    pack_id: str
    pack_version: int
    name: Localized
    languages: tuple[str, ...]
    rooms: tuple[Room, ...]
    artworks: tuple[Artwork, ...]
    take_home: TakeHomeContent = field(default_factory=TakeHomeContent)

    def room(self, zone_id: str) -> Room:
        for room in self.rooms:
            if room.zone_id == zone_id:
                return room
        raise KeyError(f"{self.site_id} has no room {zone_id!r} (rooms: {', '.join(self.zone_ids)})")

    def artwork(self, artwork_id: str) -> Artwork:
        for artwork in self.artworks:
            if artwork.artwork_id == artwork_id:
                return artwork
        raise KeyError(f"{self.site_id} has no artwork {artwork_id!r}")

    def artworks_in(self, zone_id: str) -> tuple[Artwork, ...]:
        return tuple(artwork for artwork in self.artworks if artwork.zone_id == zone_id)

    @property
    def zone_ids(self) -> tuple[str, ...]:
        return tuple(room.zone_id for room in self.rooms)


# --- loading ----------------------------------------------------------------------------------------------

def load_museum(path: str | Path, *, min_rooms: int = 1, min_artworks: int = 1) -> Museum:
    """Read and validate a museum file; ValueError starting with the path says what is wrong and where."""
    path = Path(path)
    try:
        return parse_museum(_read_json(path), min_rooms=min_rooms, min_artworks=min_artworks)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_museum(data: Any, *, min_rooms: int = 1, min_artworks: int = 1) -> Museum:
    """Validate an already parsed museum object (see the module docstring for the format)."""
    top = _object(data, "the museum file", _MUSEUM_KEYS, _OPTIONAL_MUSEUM_KEYS)
    site_id = _identifier(top["site_id"], "site_id")
    pack_id = _identifier(top["pack_id"], "pack_id")
    pack_version = top["pack_version"]
    if isinstance(pack_version, bool) or not isinstance(pack_version, int) or not 1 <= pack_version < 2**31:
        raise ValueError(f"pack_version must be a whole number from 1 (raise it for each new pack), "
                         f"got {_show(pack_version)}")
    languages = _languages(top["languages"])
    name = _localized(top["name"], "name", languages)

    rooms = tuple(_room(item, f"rooms[{i}]", languages) for i, item in enumerate(_list(top["rooms"], "rooms")))
    _unique((room.zone_id for room in rooms), "rooms", "zone_id")
    if len(rooms) < min_rooms:
        raise ValueError(f"rooms: {len(rooms)} room(s), at least {min_rooms} required")

    zone_ids = {room.zone_id for room in rooms}
    artworks = tuple(_artwork(item, f"artworks[{i}]", languages, zone_ids)
                     for i, item in enumerate(_list(top["artworks"], "artworks")))
    _unique((artwork.artwork_id for artwork in artworks), "artworks", "artwork_id")
    if len(artworks) < min_artworks:
        raise ValueError(f"artworks: {len(artworks)} artwork(s), at least {min_artworks} required")
    take_home = (_take_home(top["take_home"], languages, zone_ids, {artwork.artwork_id for artwork in artworks})
                 if "take_home" in top else TakeHomeContent())
    return Museum(site_id, pack_id, pack_version, name, languages, rooms, artworks, take_home)


def museum_to_dict(museum: Museum) -> dict[str, Any]:
    """The file form of a museum: `parse_museum(museum_to_dict(m)) == m`."""
    result: dict[str, Any] = {
        "site_id": museum.site_id,
        "pack_id": museum.pack_id,
        "pack_version": museum.pack_version,
        "name": museum.name.as_dict(),
        "languages": list(museum.languages),
        "rooms": [{"zone_id": room.zone_id, "name": room.name.as_dict(), "capacity": room.capacity}
                  for room in museum.rooms],
        "artworks": [_artwork_to_dict(a) for a in museum.artworks],
    }
    take_home = _take_home_to_dict(museum.take_home)
    if take_home:
        result["take_home"] = take_home
    return result


def _artwork_to_dict(artwork: Artwork) -> dict[str, Any]:
    result: dict[str, Any] = {
        "artwork_id": artwork.artwork_id, "zone_id": artwork.zone_id, "artist": artwork.artist,
        "year": artwork.year}
    if artwork.period is not None:
        result["period"] = artwork.period.as_dict()
    if artwork.technique is not None:
        result["technique"] = artwork.technique.as_dict()
    result.update({
        "title": artwork.title.as_dict(), "text": artwork.text.as_dict(),
        "accessibility": {"lsf_video": artwork.lsf_video}, "popularity": artwork.popularity})
    media = artwork.media.as_dict()
    if media:
        result["media"] = media
    return result


def _take_home_to_dict(take_home: TakeHomeContent) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if take_home.events:
        result["events"] = [_event_to_dict(event) for event in take_home.events]
    if take_home.suggestions:
        result["suggestions"] = [_suggestion_to_dict(suggestion) for suggestion in take_home.suggestions]
    return result


def _event_to_dict(event: MuseumEvent) -> dict[str, Any]:
    result: dict[str, Any] = {"event_id": event.event_id, "title": event.title.as_dict(),
                              "text": event.text.as_dict(), "starts_on": event.starts_on.isoformat()}
    if event.ends_on is not None:
        result["ends_on"] = event.ends_on.isoformat()
    return result


def _suggestion_to_dict(suggestion: StaffSuggestion) -> dict[str, Any]:
    result: dict[str, Any] = {"suggestion_id": suggestion.suggestion_id, "title": suggestion.title.as_dict(),
                              "text": suggestion.text.as_dict()}
    if suggestion.artwork_ids:
        result["artwork_ids"] = list(suggestion.artwork_ids)
    if suggestion.zone_id is not None:
        result["zone_id"] = suggestion.zone_id
    return result


# --- validation helpers -----------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the file: {error.strerror or error}") from None
    return decode_json(raw)


def decode_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN; ValueError says where it goes wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"byte {error.start} is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        # A hand-edited file with a key twice would otherwise silently keep only the last value.
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _object(value: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {_json_type(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(value) - set(keys) - set(optional))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(keys + optional)})")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a JSON list, got {_json_type(value)}")
    return value


def _identifier(value: Any, where: str) -> str:
    if not isinstance(value, str) or IDENTIFIER.match(value) is None:
        raise ValueError(f"{where} must be an identifier (lowercase letters, digits and '-', starting with a "
                         f"letter or digit, at most 63), got {_show(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be non-empty text, got {_show(value)}")
    return value


def _languages(value: Any) -> tuple[str, ...]:
    items = _list(value, "languages")
    if not items:
        raise ValueError("languages must list at least one language")
    for item in items:
        if not isinstance(item, str) or LANGUAGE.match(item) is None:
            raise ValueError(f"languages: {_show(item)} is not a language tag such as fr, en or fr-CA")
    _unique(items, "languages", "language")
    return tuple(items)


def _localized(value: Any, where: str, languages: tuple[str, ...]) -> Localized:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object with one text per language "
                         f"({', '.join(languages)}), got {_json_type(value)}")
    for lang in languages:
        if lang not in value:
            raise ValueError(f"{where} has no {lang!r} version")
    extra = sorted(set(value) - set(languages))
    if extra:
        raise ValueError(f"{where} has a version in {', '.join(extra)}, which the museum's languages "
                         f"({', '.join(languages)}) do not list")
    return Localized(tuple((lang, _text(value[lang], f"{where}.{lang}")) for lang in languages))


def _room(value: Any, where: str, languages: tuple[str, ...]) -> Room:
    obj = _object(value, where, _ROOM_KEYS)
    zone_id = _identifier(obj["zone_id"], f"{where}.zone_id")
    where = f"{where} ({zone_id})"
    capacity = obj["capacity"]
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"{where}: capacity must be a whole number of people, at least 1, got {_show(capacity)}")
    return Room(zone_id, _localized(obj["name"], f"{where}: name", languages), capacity)


def _artwork(value: Any, where: str, languages: tuple[str, ...], zone_ids: set[str]) -> Artwork:
    obj = _object(value, where, _ARTWORK_KEYS, _OPTIONAL_ARTWORK_KEYS)
    artwork_id = _identifier(obj["artwork_id"], f"{where}.artwork_id")
    where = f"{where} ({artwork_id})"
    zone_id = _identifier(obj["zone_id"], f"{where}: zone_id")
    if zone_id not in zone_ids:
        raise ValueError(f"{where}: zone_id {zone_id!r} is not a room of this museum "
                         f"(rooms: {', '.join(sorted(zone_ids))})")
    accessibility = _object(obj["accessibility"], f"{where}: accessibility", _ACCESSIBILITY_KEYS)
    lsf_video = accessibility["lsf_video"]
    if not isinstance(lsf_video, bool):
        raise ValueError(f"{where}: accessibility.lsf_video must be true or false, got {_show(lsf_video)}")
    popularity = obj["popularity"]
    if (isinstance(popularity, bool) or not isinstance(popularity, int)
            or not MIN_POPULARITY <= popularity <= MAX_POPULARITY):
        raise ValueError(f"{where}: popularity must be a whole number from {MIN_POPULARITY} to {MAX_POPULARITY}, "
                         f"got {_show(popularity)}")
    return Artwork(
        artwork_id=artwork_id,
        zone_id=zone_id,
        artist=_text(obj["artist"], f"{where}: artist"),
        year=_text(obj["year"], f"{where}: year"),
        title=_localized(obj["title"], f"{where}: title", languages),
        text=_localized(obj["text"], f"{where}: text", languages),
        lsf_video=lsf_video,
        popularity=popularity,
        media=_media(obj["media"], f"{where}: media", languages) if "media" in obj else Media(),
        period=_localized(obj["period"], f"{where}: period", languages) if "period" in obj else None,
        technique=_localized(obj["technique"], f"{where}: technique", languages) if "technique" in obj else None,
    )


def _media(value: Any, where: str, languages: tuple[str, ...]) -> Media:
    obj = _object(value, where, (), _MEDIA_KEYS)
    image = None
    if "image" in obj:
        image_obj = _object(obj["image"], f"{where}.image", _IMAGE_KEYS)
        image = Image(_media_path(image_obj["file"], f"{where}.image.file"),
                      _localized(image_obj["alt"], f"{where}.image.alt", languages))
    audio: tuple[tuple[str, str], ...] = ()
    if "audio" in obj:
        audio_obj = _object(obj["audio"], f"{where}.audio", (), languages)
        audio = tuple((lang, _media_path(audio_obj[lang], f"{where}.audio.{lang}"))
                      for lang in languages if lang in audio_obj)
    lsf = None
    if "lsf" in obj:
        lsf_obj = _object(obj["lsf"], f"{where}.lsf", _LSF_KEYS)
        lsf = LsfVideo(_media_path(lsf_obj["video"], f"{where}.lsf.video"),
                       _media_path(lsf_obj["captions"], f"{where}.lsf.captions"))
    return Media(image, audio, lsf)


def _take_home(value: Any, languages: tuple[str, ...], zone_ids: set[str],
               artwork_ids: set[str]) -> TakeHomeContent:
    obj = _object(value, "take_home", (), _TAKE_HOME_KEYS)
    events = tuple(_event(item, f"take_home.events[{i}]", languages)
                   for i, item in enumerate(_list(obj.get("events", []), "take_home.events")))
    _unique((event.event_id for event in events), "take_home.events", "event_id")
    suggestions = tuple(_suggestion(item, f"take_home.suggestions[{i}]", languages, zone_ids, artwork_ids)
                        for i, item in enumerate(_list(obj.get("suggestions", []), "take_home.suggestions")))
    _unique((suggestion.suggestion_id for suggestion in suggestions), "take_home.suggestions", "suggestion_id")
    return TakeHomeContent(events, suggestions)


def _event(value: Any, where: str, languages: tuple[str, ...]) -> MuseumEvent:
    obj = _object(value, where, _EVENT_KEYS, _OPTIONAL_EVENT_KEYS)
    event_id = _identifier(obj["event_id"], f"{where}.event_id")
    where = f"{where} ({event_id})"
    starts_on = _day(obj["starts_on"], f"{where}: starts_on")
    ends_on = _day(obj["ends_on"], f"{where}: ends_on") if "ends_on" in obj else None
    if ends_on is not None and ends_on < starts_on:
        raise ValueError(f"{where}: ends_on {ends_on.isoformat()} is before starts_on {starts_on.isoformat()}")
    return MuseumEvent(event_id, _localized(obj["title"], f"{where}: title", languages),
                       _localized(obj["text"], f"{where}: text", languages), starts_on, ends_on)


def _suggestion(value: Any, where: str, languages: tuple[str, ...], zone_ids: set[str],
                artwork_ids: set[str]) -> StaffSuggestion:
    obj = _object(value, where, _SUGGESTION_KEYS, _OPTIONAL_SUGGESTION_KEYS)
    suggestion_id = _identifier(obj["suggestion_id"], f"{where}.suggestion_id")
    where = f"{where} ({suggestion_id})"
    works: list[str] = []
    for i, item in enumerate(_list(obj.get("artwork_ids", []), f"{where}: artwork_ids")):
        work = _identifier(item, f"{where}: artwork_ids[{i}]")
        if work not in artwork_ids:
            raise ValueError(f"{where}: artwork_ids[{i}] {work!r} is not an artwork of this museum")
        works.append(work)
    _unique(works, f"{where}: artwork_ids", "artwork_id")
    zone_id = None
    if "zone_id" in obj:
        zone_id = _identifier(obj["zone_id"], f"{where}: zone_id")
        if zone_id not in zone_ids:
            raise ValueError(f"{where}: zone_id {zone_id!r} is not a room of this museum "
                             f"(rooms: {', '.join(sorted(zone_ids))})")
    return StaffSuggestion(suggestion_id, _localized(obj["title"], f"{where}: title", languages),
                           _localized(obj["text"], f"{where}: text", languages), tuple(works), zone_id)


def _day(value: Any, where: str) -> date:
    # date.fromisoformat alone would also take "20261211" and week dates: curators get one spelling.
    if isinstance(value, str) and _DAY.match(value) is not None:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{where} must be a date written YYYY-MM-DD, got {_show(value)}")


def _media_path(value: Any, where: str) -> str:
    """A path that cannot leave the content folder however it is joined: relative, '/'-separated, no '..'."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a file path such as {MEDIA_DIR}/work.png, got {_show(value)}")
    parts = value.split("/")
    if (value.startswith("/") or "\\" in value or ":" in value or any(ord(c) < 32 for c in value)
            or any(part in ("", ".", "..") for part in parts)):
        raise ValueError(f"{where}: {value!r} must be a plain relative path inside {MEDIA_DIR}/ "
                         f"(no '..', no absolute path, no backslash)")
    if parts[0] != MEDIA_DIR or len(parts) < 2:
        raise ValueError(f"{where}: {value!r} must lie in the {MEDIA_DIR}/ folder beside museum.json")
    return value


def _unique(values: Iterable[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{where}: {what} {value!r} appears twice")
        seen.add(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:80])
    return _json_type(value) if not isinstance(value, int | float) or isinstance(value, bool) else repr(value)
