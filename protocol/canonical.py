"""The canonical wire form of events, recognised by one regular expression per event type instead of parsing.

Every device encodes events the same way (`codec.encode_event`): compact JSON, the common fields in their fixed
order, then the type's own fields in the order the contract declares them, optional fields present as `null`.
For each event type this module compiles one expression that matches exactly that form, checking every field's
syntax on the way, and nothing else. A message made only of canonical events becomes `EventRecord`s, ready to
store, at about a sixth of the cost of strict parsing, validation and re-encoding (see bench/bus.py's backlog).

The strict codec stays the authority: `scan_events` returns None for anything it does not recognise, and the
caller then decodes with `codec.decode_event_message`, which accepts or refuses with a precise reason. So the
scanner must never accept what the codec refuses, and what it returns must equal what the codec would give:
tests/test_canonical.py checks both, on every event type and on thousands of mutated payloads. Duplicate keys,
NaN, escapes, lone surrogates, other key orders and whitespace all fall outside the expressions by
construction; the few checks a regular expression cannot make (a real calendar day, a number's range) are made
here in Python.
"""

from __future__ import annotations

import re
from datetime import date
from functools import partial
from typing import Any, NamedTuple

from protocol.codec import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, dumps_text, event_to_dict
from protocol.events import EVENT_TYPES, Event
from protocol.fields import IDENTIFIER, Spec
from protocol.ids import UUID7, VISIT_ID


class EventRecord(NamedTuple):
    """One valid event as stored, in the column order of the hub's `events` table."""

    event_id: str
    type: str
    schema_version: int
    site_id: str
    device_id: str
    occurred_at: str
    """In the wire format (`YYYY-MM-DDTHH:MM:SS.mmmZ`), which sorts as the instants do."""
    visit_id: str | None
    fields: str
    """The type's own fields as compact JSON."""


# The scanner makes thousands of records a second: tuple.__new__ skips the named tuple's Python-level __new__.
_new_record = partial(tuple.__new__, EventRecord)

_BATCH_OPEN = '{"batch":['
_TYPE_OFFSET = len('{"event_id":"') + 36 + len('","type":"')
"""Where the type name starts in a canonical event: event ids are 36 characters."""

_NUMBER = r"((?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)"
"""A non-negative JSON number as Python's float repr writes it (lower-case e); captured for its range check."""

_INSTANT = r"(([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z)"


def _body(pattern: re.Pattern[str]) -> str:
    """A field pattern `^…\\Z` as a fragment to embed, its groups made non-capturing."""
    source = pattern.pattern
    if not (source.startswith("^") and source.endswith("\\Z")) or "\\(" in source or "\\d" in source:
        raise AssertionError(f"cannot embed pattern {source!r}")
    return re.sub(r"\((?!\?)", "(?:", source[1:-2])


def _value(spec: Spec) -> tuple[str, bool]:
    """(the canonical JSON text of a value the spec accepts, whether it captures a number to range-check)."""
    kind = spec.kind
    numeric = False
    if kind == "choice":
        fragment = '"(?:' + "|".join(re.escape(choice) for choice in spec.choices) + ')"'
    elif kind == "text":
        # No escapes at all: a text with a quote, a backslash or a control character goes the strict way.
        fragment = r'"[^"\\\x00-\x1f]{0,' + str(spec.max_length) + '}"'
    elif kind == "flag":
        fragment = "(?:true|false)"
    elif kind in ("count", "number"):
        fragment, numeric = _NUMBER, True
        if kind == "count":
            fragment = r"(0|[1-9][0-9]{0,17})"
    else:
        assert spec.pattern is not None
        fragment = '"' + _body(spec.pattern) + '"'
    if spec.optional:
        fragment = f"(?:null|{fragment})"
    return fragment, numeric


class _Form:
    """One event type's canonical form: its expression and the checks the expression leaves to Python."""

    def __init__(self, cls: type[Event]) -> None:
        self.name = cls.type
        self.version = cls.schema_version
        visit = {"required": f'"({_body(VISIT_ID)})"',
                 # A group that can never take part, so that every form has the same groups in the same places.
                 "forbidden": "(?:null|(?!)())",
                 "optional": f'(?:null|"({_body(VISIT_ID)})")'}[cls.visit_policy]
        own: list[str] = []
        self.number_specs: list[Spec] = []
        for name, spec in cls.specs:
            fragment, numeric = _value(spec)
            own.append(f'"{name}":{fragment}')
            if numeric:
                self.number_specs.append(spec)
        identifier = f'"({_body(IDENTIFIER)})"'
        source = ('\\{"event_id":"(' + _body(UUID7) + ')","type":"' + re.escape(self.name) + '","schema_version":'
                  + str(self.version) + ',"site_id":' + identifier + ',"device_id":' + identifier
                  + ',"occurred_at":"' + _INSTANT + '","visit_id":' + visit + ",(" + ",".join(own) + ")\\}")
        # Every bounded repetition here runs up to a character its class excludes (a quote, a comma, a brace), so
        # making it possessive changes nothing it matches and spares the engine its backtracking bookkeeping.
        self.pattern = re.compile(re.sub(r"(\{\d+,\d+\})(?![+?])", r"\1+", source))

    def numbers_valid(self, texts: list[str | None]) -> bool:
        """Range checks, and that each number is written as the codec would write it back."""
        for spec, text in zip(self.number_specs, texts, strict=True):
            if text is None:  # an optional number given as null
                continue
            whole = text.isdigit()
            value: Any = int(text) if whole else float(text)
            if not whole and (spec.kind == "count" or repr(value) != text):
                return False
            if (spec.minimum is not None and value < spec.minimum) or (
                    spec.maximum is not None and value > spec.maximum):
                return False
        return True


_FORMS: dict[str, _Form] = {name: _Form(cls) for name, cls in EVENT_TYPES.items()}
_LONGEST_TYPE = max(len(name) for name in _FORMS)

_KNOWN_DAYS_LIMIT = 4096
_known_days: set[str] = set()


def _real_day(day: str) -> bool:
    """Whether `YYYY-MM-DD` is a day of the calendar (the expression only checks its digits). A real one joins
    `_known_days`, which the scanner looks in first: a hub sees the same few days all day long."""
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    if len(_known_days) >= _KNOWN_DAYS_LIMIT:
        _known_days.clear()
    _known_days.add(day)
    return True


def scan_events(payload: bytes) -> list[EventRecord] | None:
    """The events of an events-topic payload in canonical form, or None: then use `codec.decode_event_message`.

    None does not mean invalid, only "not recognised": the strict codec decides."""
    if len(payload) > MAX_MESSAGE_BYTES:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    batch = text.startswith(_BATCH_OPEN)
    pos = len(_BATCH_OPEN) if batch else 0
    end = len(text)
    records: list[EventRecord] = []
    append = records.append
    forms = _FORMS
    known_days = _known_days
    while True:
        name_start = pos + _TYPE_OFFSET
        name_end = text.find('"', name_start, name_start + _LONGEST_TYPE + 1)
        form = forms.get(text[name_start:name_end]) if name_end > 0 else None
        if form is None:
            return None
        match = form.pattern.match(text, pos)
        if match is None:
            return None
        if form.number_specs:
            event_id, site_id, device_id, occurred_at, day, visit_id, own, *numbers = match.groups()
            if not form.numbers_valid(numbers):
                return None
        else:
            event_id, site_id, device_id, occurred_at, day, visit_id, own = match.groups()
        if day not in known_days and not _real_day(day):
            return None
        append(_new_record((event_id, form.name, form.version, site_id, device_id, occurred_at, visit_id,
                            "{" + own + "}")))
        pos = match.end()
        if not batch:
            return records if pos == end else None
        if pos < end and text[pos] == ",":
            pos += 1
            continue
        if pos == end - 2 and text.endswith("]}") and len(records) <= MAX_BATCH_EVENTS:
            return records
        return None


def event_record(event: Event) -> EventRecord:
    """The record of an event decoded by the strict codec: equal to what `scan_events` gives for its wire form."""
    wire = event_to_dict(event)
    return EventRecord(wire["event_id"], wire["type"], wire["schema_version"], wire["site_id"], wire["device_id"],
                       wire["occurred_at"], wire["visit_id"], dumps_text(event.own_fields()))


__all__ = ["EventRecord", "event_record", "scan_events"]
