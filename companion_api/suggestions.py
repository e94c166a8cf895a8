""""Keep exploring": what a take-home page suggests after a visit, from the content pack alone.

Pure: a museum, what the visit did, a language and today's date in; a short list of suggestions out. Five kinds
widen the visit in different directions and are dealt in turn, so the first suggestions are of different kinds:

- `nearby`: works the visitor missed in a room where they engaged with something, most popular first;
- `period`: a work of a period they saw nothing of (the most popular one of that period);
- `staff`: what staff wrote in the pack's `take_home.suggestions`; those about works or rooms the visitor
  missed come first;
- `technique`: a work in a technique they saw nothing in;
- `event`: an upcoming (or running) event of the museum's `take_home.events`, soonest first.

A visit with nothing the pack knows gets the museum's highlights (`popular`: its most popular work of each
period) with events and staff suggestions. A work of the visit is never suggested, nor one work twice.
Content texts are in the visitor's language when the pack has it, else in the pack's first language; the
`reason` line is ours, in French or English.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from content.model import Artwork, Localized, Museum, MuseumEvent, StaffSuggestion

NEARBY = "nearby"
PERIOD = "period"
TECHNIQUE = "technique"
STAFF = "staff"
EVENT = "event"
POPULAR = "popular"
KINDS = (NEARBY, PERIOD, STAFF, TECHNIQUE, EVENT, POPULAR)

VISIT_ORDER = (NEARBY, PERIOD, STAFF, TECHNIQUE, EVENT)
"""The order kinds are dealt in after a visit: one of each in turn, so at most one of a kind in the first five
(when every kind has something to offer) and never more than two of one in the first four unless fewer than two
kinds have anything left."""
DEFAULT_ORDER = (POPULAR, EVENT, STAFF)
"""The order for a visit with nothing the pack knows."""

ENGAGEMENT = {"collected": 3, "lingered": 2, "opened": 1}
"""How much each kind of visit item says about the visitor's interest: a work they kept beats one they lingered
at, which beats one they only opened. Decides which work a "nearby" suggestion is said to be near."""

REASON_LANGUAGES = ("fr", "en")
_REASONS: dict[str, dict[str, str]] = {
    "fr": {
        NEARBY: "Dans la même salle que «\u00a0{work}\u00a0»",
        PERIOD: "Une période que vous n’avez pas encore explorée\u00a0: {period}",
        TECHNIQUE: "Une technique que vous n’avez pas encore vue\u00a0: {technique}",
        POPULAR: "Un temps fort de la collection\u00a0: {group}",
        "staff": "Une suggestion de l’équipe du musée",
        "staff-work": "Une suggestion de l’équipe du musée, sur une œuvre que vous n’avez pas vue",
        "staff-room": ("Une suggestion de l’équipe du musée, dans une salle que vous n’avez pas visitée\u00a0: "
                      "{room}"),
        "event-day": "À venir au musée\u00a0: le {day}",
        "event-range": "À venir au musée\u00a0: du {start} au {end}",
        "event-today": "Aujourd’hui au musée",
        "event-running": "En ce moment au musée, jusqu’au {end}",
    },
    "en": {
        NEARBY: "In the same room as “{work}”",
        PERIOD: "A period you have not explored yet: {period}",
        TECHNIQUE: "A technique you have not seen yet: {technique}",
        POPULAR: "A highlight of the collection: {group}",
        "staff": "A suggestion from the museum’s team",
        "staff-work": "A suggestion from the museum’s team, about a work you did not see",
        "staff-room": "A suggestion from the museum’s team, in a room you did not visit: {room}",
        "event-day": "Coming up at the museum: {day}",
        "event-range": "Coming up at the museum: {start} to {end}",
        "event-today": "Today at the museum",
        "event-running": "On now at the museum, until {end}",
    },
}
_MONTHS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
}


class VisitItem(Protocol):
    """One thing a visit did: any object with these two attributes (a take-home row, for instance)."""

    @property
    def artwork_id(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class Suggestion:
    """One "keep exploring" entry, its texts already in the page's language."""

    kind: str
    """One of KINDS."""
    title: str
    text: str
    artwork_id: str | None
    """The work it is about, to link to; never one of the visit's works."""
    reason: str
    """Why it is suggested, one short line."""
    starts_on: date | None = None
    """For an event: its first day (and `ends_on` its last, or None for one day), to format as the page likes."""
    ends_on: date | None = None


# A source offers options in its own order; each option tries its candidate works in order and yields nothing
# when all of them have been suggested already (so a period whose best work came up as "nearby" offers its next).
_Option = Callable[[set[str]], "Suggestion | None"]


def keep_exploring(museum: Museum, items: Iterable[VisitItem], language: str, *, today: date,
                   limit: int = 6) -> list[Suggestion]:
    """At most `limit` suggestions after a visit that did `items`, in `language`, deterministic for the same
    input; events already over on `today` are left out."""
    if limit <= 0:
        return []
    texts = _Texts(museum, language)
    seen: dict[str, int] = {}
    order: dict[str, int] = {}
    for index, item in enumerate(items):
        seen[item.artwork_id] = max(seen.get(item.artwork_id, 0), ENGAGEMENT.get(item.kind, 1))
        order.setdefault(item.artwork_id, index)
    engaged = [artwork for artwork in museum.artworks if artwork.artwork_id in seen]
    engaged.sort(key=lambda artwork: (-seen[artwork.artwork_id], order[artwork.artwork_id]))
    unseen = [artwork for artwork in museum.artworks if artwork.artwork_id not in seen]

    sources: dict[str, list[_Option]] = {EVENT: _events(museum.take_home.events, today, texts)}
    kinds: Sequence[str]
    if engaged:
        visited_zones = {artwork.zone_id for artwork in engaged}
        sources[NEARBY] = _nearby(engaged, unseen, museum, texts)
        sources[PERIOD] = _new_groups(unseen, {a.period for a in engaged}, lambda a: a.period, PERIOD, texts)
        sources[TECHNIQUE] = _new_groups(unseen, {a.technique for a in engaged}, lambda a: a.technique,
                                         TECHNIQUE, texts)
        sources[STAFF] = _staff(museum.take_home.suggestions, set(seen), visited_zones, museum, texts)
        kinds = VISIT_ORDER
    else:
        sources[POPULAR] = _highlights(unseen, museum, texts)
        sources[STAFF] = _staff(museum.take_home.suggestions, set(seen), set(), museum, texts)
        kinds = DEFAULT_ORDER
    return _deal(kinds, sources, set(seen), limit)


def _deal(kinds: Sequence[str], sources: dict[str, list[_Option]], seen: set[str], limit: int) -> list[Suggestion]:
    """One viable option of each kind in turn, until `limit` or every source is spent."""
    used = set(seen)
    queues = {kind: list(reversed(sources.get(kind, []))) for kind in kinds}
    result: list[Suggestion] = []
    while len(result) < limit and any(queues.values()):
        for kind in kinds:
            queue = queues[kind]
            while queue:
                suggestion = queue.pop()(used)
                if suggestion is not None:
                    result.append(suggestion)
                    if suggestion.artwork_id is not None:
                        used.add(suggestion.artwork_id)
                    break
            if len(result) == limit:
                break
    return result


# --- sources ---------------------------------------------------------------------------------------------------

def _by_popularity(artworks: Iterable[Artwork], museum_order: dict[str, int]) -> list[Artwork]:
    return sorted(artworks, key=lambda artwork: (-artwork.popularity, museum_order[artwork.artwork_id]))


def _work_option(candidates: Sequence[Artwork], kind: str, texts: _Texts, reason: Callable[[Artwork], str]) -> _Option:
    def pick(used: set[str]) -> Suggestion | None:
        for artwork in candidates:
            if artwork.artwork_id not in used:
                return Suggestion(kind, texts.content(artwork.title), texts.work_line(artwork), artwork.artwork_id,
                                  reason(artwork))
        return None
    return pick


def _always(reason: str) -> Callable[[Artwork], str]:
    return lambda _: reason


def _nearby(engaged: list[Artwork], unseen: list[Artwork], museum: Museum, texts: _Texts) -> list[_Option]:
    # `engaged` is most engaged first: the first work of a room is the one a suggestion there is "near".
    anchor: dict[str, Artwork] = {}
    for artwork in engaged:
        anchor.setdefault(artwork.zone_id, artwork)
    museum_order = {artwork.artwork_id: index for index, artwork in enumerate(museum.artworks)}
    near = _by_popularity((artwork for artwork in unseen if artwork.zone_id in anchor), museum_order)
    return [_work_option([artwork], NEARBY, texts,
                         lambda a: texts.reason(NEARBY, work=texts.content(anchor[a.zone_id].title)))
            for artwork in near]


def _groups(artworks: Iterable[Artwork], key: Callable[[Artwork], Localized | None],
            museum_order: dict[str, int]) -> list[tuple[Localized, list[Artwork]]]:
    """The works of each value of `key`, most popular first; groups by their best work's popularity, then by where
    that work comes in the museum."""
    groups: dict[Localized, list[Artwork]] = {}
    for artwork in artworks:
        value = key(artwork)
        if value is not None:
            groups.setdefault(value, []).append(artwork)
    ranked = [(value, _by_popularity(works, museum_order)) for value, works in groups.items()]
    ranked.sort(key=lambda group: (-group[1][0].popularity, museum_order[group[1][0].artwork_id]))
    return ranked


def _new_groups(unseen: list[Artwork], seen_values: set[Localized | None], key: Callable[[Artwork], Localized | None],
                kind: str, texts: _Texts) -> list[_Option]:
    museum_order = {artwork.artwork_id: index for index, artwork in enumerate(texts.museum.artworks)}
    options: list[_Option] = []
    for value, works in _groups(unseen, key, museum_order):
        if value in seen_values:
            continue
        reason = texts.reason(kind, **{kind: texts.content(value)})
        options.append(_work_option(works, kind, texts, _always(reason)))
    return options


def _highlights(unseen: list[Artwork], museum: Museum, texts: _Texts) -> list[_Option]:
    """The most popular work of each period; works without a period are grouped by room instead."""
    museum_order = {artwork.artwork_id: index for index, artwork in enumerate(museum.artworks)}
    rooms = {room.zone_id: room.name for room in museum.rooms}
    options: list[_Option] = []
    for value, works in _groups(unseen, lambda a: a.period or rooms[a.zone_id], museum_order):
        options.append(_work_option(works, POPULAR, texts, _always(texts.reason(POPULAR, group=texts.content(value)))))
    return options


def _staff(suggestions: Sequence[StaffSuggestion], seen: set[str], visited_zones: set[str], museum: Museum,
           texts: _Texts) -> list[_Option]:
    def missed(suggestion: StaffSuggestion) -> bool:
        return (any(work not in seen for work in suggestion.artwork_ids)
                or (suggestion.zone_id is not None and suggestion.zone_id not in visited_zones))

    def option(suggestion: StaffSuggestion) -> _Option:
        def pick(used: set[str]) -> Suggestion:
            # The link goes to a work the visitor missed and nothing else suggests yet; failing that, nowhere.
            artwork_id = next((work for work in suggestion.artwork_ids if work not in used), None)
            if suggestion.zone_id is not None and suggestion.zone_id not in visited_zones and visited_zones:
                reason = texts.reason("staff-room", room=texts.content(museum.room(suggestion.zone_id).name))
            elif visited_zones and any(work not in seen for work in suggestion.artwork_ids):
                reason = texts.reason("staff-work")
            else:
                reason = texts.reason("staff")
            return Suggestion(STAFF, texts.content(suggestion.title), texts.content(suggestion.text), artwork_id,
                              reason)
        return pick

    # sorted() is stable: within each half, the order staff wrote them in.
    return [option(suggestion) for suggestion in sorted(suggestions, key=lambda s: not missed(s))]


def _events(events: Sequence[MuseumEvent], today: date, texts: _Texts) -> list[_Option]:
    upcoming = sorted((event for event in events if event.last_day >= today),
                      key=lambda event: (event.starts_on, event.last_day))

    def option(event: MuseumEvent) -> _Option:
        def pick(used: set[str]) -> Suggestion:
            return Suggestion(EVENT, texts.content(event.title), texts.content(event.text), None,
                              texts.event_reason(event, today), event.starts_on, event.ends_on)
        return pick

    return [option(event) for event in upcoming]


# --- language --------------------------------------------------------------------------------------------------

class _Texts:
    """The visit's language for content (the pack's) and for our own lines (French or English)."""

    def __init__(self, museum: Museum, language: str) -> None:
        self.museum = museum
        self.language = _pick(language, museum.languages) or museum.languages[0]
        self.ours = (_pick(language, REASON_LANGUAGES) or _pick(museum.languages[0], REASON_LANGUAGES)
                     or REASON_LANGUAGES[-1])
        self.rooms = {room.zone_id: room for room in museum.rooms}

    def content(self, text: Localized) -> str:
        return text.get(self.language) or text.texts[0][1]

    def work_line(self, artwork: Artwork) -> str:
        return f"{artwork.artist}, {artwork.year} · {self.content(self.rooms[artwork.zone_id].name)}"

    def reason(self, key: str, **values: str) -> str:
        return _REASONS[self.ours][key].format(**values)

    def day(self, day: date) -> str:
        if self.ours == "fr":
            return f"{'1er' if day.day == 1 else day.day} {_MONTHS['fr'][day.month - 1]} {day.year}"
        return f"{day.day} {_MONTHS['en'][day.month - 1]} {day.year}"

    def event_reason(self, event: MuseumEvent, today: date) -> str:
        if event.starts_on <= today:
            if event.starts_on == event.last_day:
                return self.reason("event-today")
            return self.reason("event-running", end=self.day(event.last_day))
        if event.ends_on is None or event.ends_on == event.starts_on:
            return self.reason("event-day", day=self.day(event.starts_on))
        start = self.day(event.starts_on)
        if event.starts_on.year == event.last_day.year:
            start = start.rsplit(" ", 1)[0]  # "du 23 janvier au 25 avril 2027": the year once
        return self.reason("event-range", start=start, end=self.day(event.last_day))


def _pick(language: str, available: Sequence[str]) -> str | None:
    """`language` if available, else its primary subtag's (fr-CA → fr), else None."""
    if language in available:
        return language
    primary = language.split("-", 1)[0].lower()
    return next((candidate for candidate in available if candidate == primary), None)
