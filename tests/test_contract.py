"""The contract, proven: every event type round-trips, and every way of breaking the wire format is refused
with the right `ContractError.code` and a detail that names the problem."""

from __future__ import annotations

import base64
import itertools
import json
import re
import stat
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bus.config import BrokerSettings, ClientConfig, OutboxSettings
from protocol import topics
from protocol.codec import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    decode_ack,
    decode_command,
    decode_content,
    decode_event,
    decode_event_message,
    decode_presence,
    dumps_strict,
    encode_ack,
    encode_batch,
    encode_command,
    encode_content,
    encode_event,
    encode_presence,
    event_to_dict,
)
from protocol.errors import ContractError
from protocol.events import (
    COMMON_FIELDS,
    EVENT_TYPES,
    ArtworkCollected,
    ArtworkViewed,
    CommandResult,
    Event,
    OccupancyCounted,
    VisitLinked,
)
from protocol.fields import Spec
from protocol.ids import (
    event_id_time,
    format_instant,
    is_event_id,
    is_visit_id,
    new_event_id,
    new_visit_id,
    parse_instant,
    utc_now,
)
from protocol.messages import Ack, Command, ContentAnnouncement, Presence, Rejection

SITE = "demo"
DEVICE = "kiosk-01"
VISIT = "Abc_def-GHI0123456789z"
AT = datetime(2026, 11, 25, 17, 0, 0, 123000, tzinfo=UTC)
TYPE_NAMES = sorted(EVENT_TYPES)


# --- building valid events --------------------------------------------------------------------------------

def sample_value(name: str, spec: Spec) -> Any:
    """A value the spec accepts, chosen independently of the reference generator."""
    match spec.kind:
        case "identifier":
            return "x-" + name.replace("_", "-")
        case "language":
            return "fr-CA"
        case "version":
            return "2.0.1+build.7"
        case "uuid":
            return str(uuid.uuid4())
        case "visit":
            return "V" * 22 + "-_9"
        case "choice":
            return spec.choices[-1]
        case "text":
            return "é" * spec.max_length
        case "flag":
            return False
        case "count":
            return int(spec.maximum if spec.maximum is not None else 7)
        case "number":
            return 0.5
    raise AssertionError(f"unknown kind {spec.kind}")


def make_event(cls: type[Event], *, with_optional: bool = True, with_visit: bool = True,
               **overrides: Any) -> Event:
    visit = {"required": True, "forbidden": False, "optional": with_visit}[cls.visit_policy]
    own = {name: sample_value(name, spec) for name, spec in cls.specs if with_optional or not spec.optional}
    own.update(overrides)
    return cls(event_id=new_event_id(), site_id=SITE, device_id=DEVICE, occurred_at=AT,
               visit_id=VISIT if visit else None, **own)


def wire(cls: type[Event] = OccupancyCounted, **changes: Any) -> dict[str, Any]:
    """The wire dict of a valid event, with changes; a change to `...` removes the key."""
    data = event_to_dict(make_event(cls))
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def payload(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def refused(call: Callable[[], Any], code: str, *fragments: str) -> ContractError:
    with pytest.raises(ContractError) as info:
        call()
    error = info.value
    assert error.code == code, f"expected {code}, got {error.code}: {error.detail}"
    for fragment in fragments:
        assert fragment in error.detail, f"{fragment!r} not in detail {error.detail!r}"
    return error


# --- round trips ------------------------------------------------------------------------------------------

VARIANTS = {
    "full": {"with_optional": True, "with_visit": True},
    "minimal": {"with_optional": False, "with_visit": False},
    "optional-fields-no-visit": {"with_optional": True, "with_visit": False},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_round_trip(type_name: str, variant: str) -> None:
    event = make_event(EVENT_TYPES[type_name], **VARIANTS[variant])
    encoded = encode_event(event)
    assert decode_event(encoded) == event
    message = decode_event_message(encoded)
    assert message.events == [event]
    assert message.rejected == []


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_wire_keys_are_common_then_own_fields(type_name: str) -> None:
    cls = EVENT_TYPES[type_name]
    for event in (make_event(cls), make_event(cls, with_optional=False, with_visit=False)):
        data = event_to_dict(event)
        assert list(data) == [*COMMON_FIELDS, *(name for name, _ in cls.specs)]
        assert data["type"] == type_name
        assert data["schema_version"] == cls.schema_version


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_optional_fields_may_be_absent_on_the_wire(type_name: str) -> None:
    event = make_event(EVENT_TYPES[type_name], with_optional=False, with_visit=False)
    data = {key: value for key, value in event_to_dict(event).items() if value is not None}
    assert decode_event(payload(data)) == event


def test_batch_of_every_type_round_trips() -> None:
    events = [make_event(EVENT_TYPES[name], with_optional=i % 2 == 0) for i, name in enumerate(TYPE_NAMES * 3)]
    message = decode_event_message(encode_batch([encode_event(event) for event in events]))
    assert message.events == events
    assert message.rejected == []


def test_batch_at_the_event_limit_is_accepted() -> None:
    # Empty objects keep the envelope under the byte limit; each one is refused on its own.
    message = decode_event_message(b'{"batch":[' + b",".join([b"{}"] * MAX_BATCH_EVENTS) + b"]}")
    assert message.events == []
    assert len(message.rejected) == MAX_BATCH_EVENTS
    assert {item.error.code for item in message.rejected} == {"missing_field"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_the_fast_writer_writes_what_the_json_encoder_writes(type_name: str, variant: str) -> None:
    event = make_event(EVENT_TYPES[type_name], **VARIANTS[variant])
    assert encode_event(event) == dumps_strict(event_to_dict(event))


@pytest.mark.parametrize("detail", ['say "hi"', "back\\slash", "tab\tnew\nline\x00\x1f", "Œuvre « déplacée »",
                                    "emoji 🖼️", "\u2028 and \u2029", "</script>", ""])
def test_the_fast_writer_escapes_text_as_the_json_encoder_does(detail: str) -> None:
    event = make_event(CommandResult, detail=detail)
    assert encode_event(event) == dumps_strict(event_to_dict(event))
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("value", [0, 7, 0.1, 1e-05, 5e-324, 12.0, 86_399.999, 3600])
def test_the_fast_writer_writes_numbers_as_the_json_encoder_does(value: float) -> None:
    event = make_event(OccupancyCounted, window_s=value, count=int(value))
    assert encode_event(event) == dumps_strict(event_to_dict(event))


def test_encoding_is_compact_utf8() -> None:
    event = make_event(CommandResult, detail="Œuvre « déplacée »")
    encoded = encode_event(event)
    assert "Œuvre « déplacée »".encode() in encoded
    assert b": " not in encoded and b", " not in encoded


# --- rejections: the payload as a whole -------------------------------------------------------------------

def _valid() -> bytes:
    return payload(wire(window_s=60))


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


PAYLOAD_REJECTIONS: list[tuple[str, Callable[[], bytes], str, tuple[str, ...]]] = [
    ("garbage", lambda: b"hello, museum", "invalid_json", ("Expecting value", "line 1 column 1")),
    ("binary-garbage", lambda: b"\x00\x01\x02{", "invalid_json", ("line 1",)),
    ("invalid-utf8", lambda: _valid().replace(b'"demo"', b'"d\xffmo"'), "invalid_utf8", ("not valid UTF-8",)),
    ("truncated-utf8", lambda: _valid()[:-1] + b"\xc3", "invalid_utf8", ("byte",)),
    ("bom", lambda: b"\xef\xbb\xbf" + _valid(), "invalid_json", ("BOM",)),
    ("empty", lambda: b"", "invalid_json", ("Expecting value",)),
    ("whitespace-only", lambda: b"  \n", "invalid_json", ("Expecting value",)),
    ("trailing-data", lambda: _valid() + b"{}", "invalid_json", ("Extra data",)),
    ("array-top-level", lambda: payload([wire()]), "not_an_object", ("list",)),
    ("string-top-level", lambda: b'"event"', "not_an_object", ("str",)),
    ("nan", lambda: _valid().replace(b'"window_s": 60', b'"window_s": NaN'), "non_finite_number", ("NaN",)),
    ("infinity", lambda: _valid().replace(b'"window_s": 60', b'"window_s": Infinity'), "non_finite_number",
     ("Infinity",)),
    ("minus-infinity", lambda: _valid().replace(b'"window_s": 60', b'"window_s": -Infinity'), "non_finite_number",
     ("-Infinity",)),
    ("duplicate-key", lambda: _valid()[:-1] + b', "site_id": "other"}', "duplicate_key", ("site_id",)),
    ("duplicate-key-nested", lambda: b'{"batch": [{"a": 1, "a": 2}]}', "duplicate_key", ("'a'",)),
    ("nesting-100000", lambda: _deep(100_000), "nesting_too_deep", ("nested",)),
    ("nesting-objects", lambda: b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nesting_too_deep", ("nested",)),
    ("one-megabyte", lambda: _valid()[:-1] + b', "pad": "' + b"x" * (1 << 20) + b'"}', "too_large",
     (str(MAX_MESSAGE_BYTES),)),
    ("not-bytes", lambda: _valid().decode(), "invalid_json", ("expected bytes",)),
]


def _case_id(case: tuple[Any, ...]) -> str:
    return case[0]


@pytest.mark.parametrize("case", PAYLOAD_REJECTIONS, ids=_case_id)
def test_message_refused(case: tuple[str, Callable[[], bytes], str, tuple[str, ...]]) -> None:
    _, build, code, fragments = case
    refused(lambda: decode_event_message(build()), code, *fragments)


def test_limits_hold_at_the_boundary() -> None:
    base = _valid()
    at_limit = base[:-1] + b" " * (MAX_EVENT_BYTES - len(base)) + b"}"
    assert len(at_limit) == MAX_EVENT_BYTES
    assert decode_event(at_limit).type == "occupancy.counted"
    refused(lambda: decode_event(at_limit[:-1] + b" }"), "too_large", str(MAX_EVENT_BYTES + 1),
            str(MAX_EVENT_BYTES))
    envelope = b'{"batch":[' + _valid() + b"]}"
    big = envelope[:-1] + b" " * (MAX_MESSAGE_BYTES - len(envelope)) + b"}"
    assert len(decode_event_message(big).events) == 1
    refused(lambda: decode_event_message(big + b" "), "too_large", str(MAX_MESSAGE_BYTES))


def test_single_event_decoder_applies_the_event_limit() -> None:
    refused(lambda: decode_event(_deep(100_000)), "too_large", str(MAX_EVENT_BYTES))


# --- rejections: one event --------------------------------------------------------------------------------

V4 = str(uuid.UUID(int=uuid.uuid4().int))
EVENT_REJECTIONS: list[tuple[str, Callable[[], dict[str, Any]], str, tuple[str, ...]]] = [
    ("unknown-type", lambda: wire(type="artwork.liked"), "unknown_type", ("artwork.liked",)),
    ("type-not-string", lambda: wire(type=7), "missing_field", ("type",)),
    ("schema-version-future", lambda: wire(schema_version=2), "unsupported_schema_version", ("newer", "2")),
    ("schema-version-0", lambda: wire(schema_version=0), "unsupported_schema_version", ("no longer accepted",)),
    ("schema-version-negative", lambda: wire(schema_version=-1), "unsupported_schema_version", ("-1",)),
    ("schema-version-bool", lambda: wire(schema_version=True), "missing_field", ("schema_version",)),
    ("schema-version-string", lambda: wire(schema_version="1"), "missing_field", ("schema_version",)),
    ("schema-version-float", lambda: wire(schema_version=1.0), "missing_field", ("schema_version",)),
    *[(f"missing-{name}", lambda name=name: wire(**{name: ...}), "missing_field", (name,))
      for name in COMMON_FIELDS if name != "visit_id"],
    ("missing-own-field", lambda: wire(zone_id=...), "missing_field", ("zone_id",)),
    ("null-own-field", lambda: wire(zone_id=None), "invalid_field", ("zone_id", "required")),
    ("unknown-field", lambda: wire(colour="blue"), "unknown_field", ("colour",)),
    ("field-of-other-type", lambda: wire(artwork_id="water-lilies"), "unknown_field", ("artwork_id",)),
    ("count-as-string", lambda: wire(count="3"), "invalid_field", ("count", "number", "str")),
    ("count-as-float", lambda: wire(count=3.5), "invalid_field", ("count", "whole number")),
    ("count-as-integral-float", lambda: wire(count=3.0), "invalid_field", ("count", "whole number")),
    ("count-negative", lambda: wire(count=-1), "invalid_field", ("count", "at least 0")),
    ("count-over-maximum", lambda: wire(count=100_001), "invalid_field", ("count", "at most")),
    ("number-as-bool", lambda: wire(window_s=True), "invalid_field", ("window_s", "number", "bool")),
    ("count-as-bool", lambda: wire(count=False), "invalid_field", ("count", "bool")),
    ("number-as-list", lambda: wire(window_s=[60]), "invalid_field", ("window_s", "list")),
    ("seconds-negative", lambda: wire(window_s=-0.5), "invalid_field", ("window_s", "at least 0")),
    ("seconds-too-long", lambda: wire(window_s=86_401), "invalid_field", ("window_s", "at most")),
    ("seconds-huge", lambda: wire(window_s=1e300), "invalid_field", ("window_s", "at most")),
    ("flag-as-string", lambda: wire(CommandResult, ok="true"), "invalid_field", ("ok", "true or false")),
    ("flag-as-int", lambda: wire(CommandResult, ok=1), "invalid_field", ("ok", "true or false")),
    ("text-too-long", lambda: wire(CommandResult, detail="x" * 501), "invalid_field", ("detail", "500")),
    ("text-as-number", lambda: wire(CommandResult, detail=5), "invalid_field", ("detail", "string")),
    ("uuid-uppercase", lambda: wire(CommandResult, command_id=V4.upper()), "invalid_field", ("command_id",)),
    ("event-id-not-uuid", lambda: wire(event_id="evt-1"), "invalid_field", ("event_id", "UUIDv7")),
    ("event-id-uppercase", lambda: wire(event_id=new_event_id().upper()), "invalid_field", ("event_id", "UUIDv7")),
    ("event-id-v4", lambda: wire(event_id=V4), "invalid_field", ("event_id", "UUIDv7")),
    ("event-id-no-dashes", lambda: wire(event_id=new_event_id().replace("-", "")), "invalid_field",
     ("event_id",)),
    ("event-id-number", lambda: wire(event_id=12), "invalid_field", ("event_id",)),
    ("site-uppercase", lambda: wire(site_id="Demo"), "invalid_field", ("site_id", "identifier")),
    ("site-too-long", lambda: wire(site_id="s" * 64), "invalid_field", ("site_id", "at most 63")),
    ("site-empty", lambda: wire(site_id=""), "invalid_field", ("site_id",)),
    ("site-leading-dash", lambda: wire(site_id="-demo"), "invalid_field", ("site_id",)),
    ("device-uppercase", lambda: wire(device_id="Kiosk-01"), "invalid_field", ("device_id", "identifier")),
    ("device-too-long", lambda: wire(device_id="d" * 64), "invalid_field", ("device_id",)),
    ("device-empty", lambda: wire(device_id=""), "invalid_field", ("device_id",)),
    ("device-with-slash", lambda: wire(device_id="kiosk/01"), "invalid_field", ("device_id",)),
    ("occurred-at-offset", lambda: wire(occurred_at="2026-11-25T17:00:00.123+00:00"), "invalid_field",
     ("occurred_at",)),
    ("occurred-at-no-ms", lambda: wire(occurred_at="2026-11-25T17:00:00Z"), "invalid_field", ("occurred_at",)),
    ("occurred-at-microseconds", lambda: wire(occurred_at="2026-11-25T17:00:00.123456Z"), "invalid_field",
     ("occurred_at",)),
    ("occurred-at-naive", lambda: wire(occurred_at="2026-11-25T17:00:00.123"), "invalid_field",
     ("occurred_at",)),
    ("occurred-at-space", lambda: wire(occurred_at="2026-11-25 17:00:00.123Z"), "invalid_field",
     ("occurred_at",)),
    ("occurred-at-impossible-date", lambda: wire(occurred_at="2026-13-45T17:00:00.123Z"), "invalid_field",
     ("occurred_at",)),
    ("occurred-at-number", lambda: wire(occurred_at=1764090000123), "invalid_field", ("occurred_at",)),
    ("visit-id-too-short", lambda: wire(ArtworkViewed, visit_id="abc"), "invalid_field", ("visit_id", "22")),
    ("visit-id-bad-chars", lambda: wire(ArtworkViewed, visit_id="a" * 21 + "="), "invalid_field", ("visit_id",)),
    ("visit-id-number", lambda: wire(ArtworkViewed, visit_id=12345), "invalid_field", ("visit_id",)),
    ("visit-id-on-occupancy", lambda: wire(OccupancyCounted, visit_id=VISIT), "invalid_field",
     ("occupancy.counted", "visit_id")),
    ("visit-id-missing-collected", lambda: wire(ArtworkCollected, visit_id=...), "invalid_field",
     ("artwork.collected", "requires a visit_id")),
    ("visit-id-null-collected", lambda: wire(ArtworkCollected, visit_id=None), "invalid_field",
     ("artwork.collected", "requires a visit_id")),
    ("visit-id-missing-linked", lambda: wire(VisitLinked, visit_id=...), "invalid_field",
     ("visit.linked", "requires a visit_id")),
    ("language-word", lambda: wire(ArtworkViewed, language="french"), "invalid_field", ("language",)),
    ("language-uppercase", lambda: wire(ArtworkViewed, language="FR"), "invalid_field", ("language",)),
    ("language-region-lowercase", lambda: wire(ArtworkViewed, language="fr-ca"), "invalid_field", ("language",)),
    ("language-underscore", lambda: wire(ArtworkViewed, language="fr_CA"), "invalid_field", ("language",)),
    ("choice-unknown", lambda: wire(ArtworkViewed, source="telepathy"), "invalid_field",
     ("source", "one of", "telepathy")),
    ("choice-wrong-case", lambda: wire(ArtworkViewed, source="Kiosk"), "invalid_field", ("source",)),
    ("choice-null", lambda: wire(ArtworkViewed, source=None), "invalid_field", ("source",)),
    ("optional-uuid-invalid", lambda: wire(ArtworkViewed, session_id="session-1"), "invalid_field",
     ("session_id",)),
]


@pytest.mark.parametrize("case", EVENT_REJECTIONS, ids=_case_id)
def test_event_refused(case: tuple[str, Callable[[], dict[str, Any]], str, tuple[str, ...]]) -> None:
    _, build, code, fragments = case
    data = build()
    error = refused(lambda: decode_event(payload(data)), code, *fragments)
    # The id is reported whenever it could be read, so the sender learns which event was refused.
    readable = data.get("event_id") if is_event_id(data.get("event_id")) else None
    assert error.event_id == readable
    again = refused(lambda: decode_event_message(payload(data)), code, *fragments)
    assert again.event_id == readable


def test_event_decoder_refuses_a_batch() -> None:
    refused(lambda: decode_event(encode_batch([_valid()])), "invalid_envelope", "batch")


# --- rejections: batch envelopes --------------------------------------------------------------------------

BATCH_REJECTIONS: list[tuple[str, Callable[[], bytes], str, tuple[str, ...]]] = [
    ("empty-batch", lambda: b'{"batch": []}', "invalid_envelope", ("at least one",)),
    ("extra-key", lambda: b'{"batch": [' + _valid() + b'], "device": "kiosk-01"}', "invalid_envelope",
     ('{"batch"',)),
    ("batch-object", lambda: b'{"batch": {}}', "invalid_envelope", ('{"batch"',)),
    ("batch-string", lambda: b'{"batch": "events"}', "invalid_envelope", ('{"batch"',)),
    ("batch-null", lambda: b'{"batch": null}', "invalid_envelope", ('{"batch"',)),
    ("too-many-events", lambda: b'{"batch":[' + b",".join([b"{}"] * (MAX_BATCH_EVENTS + 1)) + b"]}",
     "invalid_envelope", (str(MAX_BATCH_EVENTS + 1), str(MAX_BATCH_EVENTS))),
]


@pytest.mark.parametrize("case", BATCH_REJECTIONS, ids=_case_id)
def test_batch_refused(case: tuple[str, Callable[[], bytes], str, tuple[str, ...]]) -> None:
    _, build, code, fragments = case
    refused(lambda: decode_event_message(build()), code, *fragments)


def test_batch_keeps_valid_events_and_rejects_the_invalid_one() -> None:
    first, third = make_event(OccupancyCounted), make_event(ArtworkViewed)
    bad = wire(count=-1)
    unreadable = wire(event_id="not-an-id")
    not_object = ["not", "an", "event"]
    envelope = payload({"batch": [event_to_dict(first), bad, event_to_dict(third), unreadable, not_object]})
    message = decode_event_message(envelope)
    assert message.events == [first, third]
    assert [item.error.code for item in message.rejected] == ["invalid_field", "invalid_field", "not_an_object"]
    bad_item, unreadable_item, not_object_item = message.rejected
    assert json.loads(bad_item.raw) == bad
    assert bad_item.error.event_id == bad["event_id"]
    assert "count" in bad_item.error.detail
    assert json.loads(unreadable_item.raw) == unreadable
    assert unreadable_item.error.event_id is None
    assert json.loads(not_object_item.raw) == not_object


def test_single_invalid_event_message_raises() -> None:
    refused(lambda: decode_event_message(payload(wire(count=-1))), "invalid_field", "count")


# --- contract bugs found and fixed: kept as regressions -----------------------------------------------------

@pytest.mark.parametrize("field", ["event_id", "site_id", "device_id"])
def test_trailing_newline_in_identifiers_is_refused(field: str) -> None:
    data = wire()
    data[field] += "\n"
    refused(lambda: decode_event(payload(data)), "invalid_field", field)


def test_huge_integer_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        decode_event(_valid().replace(b'"count": ', b'"count": ' + b"9" * 5000))


def test_overflowing_number_refuses_the_message_like_nan() -> None:
    # 1e400 is infinity to a float parser: strict JSON refuses it where it stands, as it refuses NaN.
    envelope = payload({"batch": [wire(window_s=60)]}).replace(b'"window_s": 60', b'"window_s": 1e400')
    refused(lambda: decode_event_message(envelope), "non_finite_number", "1e400")


def test_lone_surrogate_is_refused() -> None:
    # json.dumps escapes the surrogate as \ud800, which is what a sender's bytes would carry.
    raw = json.dumps(wire(CommandResult, detail="\ud800")).encode("ascii")
    with pytest.raises(ContractError):
        encode_event(decode_event(raw))


# --- identifiers and instants -----------------------------------------------------------------------------

def test_new_event_id_is_uuid7() -> None:
    event_id = new_event_id()
    assert is_event_id(event_id)
    parsed = uuid.UUID(event_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == event_id


def test_event_ids_strictly_increase() -> None:
    made = [new_event_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(made))
    assert len(set(made)) == len(made)
    assert all(is_event_id(event_id) for event_id in made)


def test_event_id_time_is_now() -> None:
    before = utc_now()
    event_id = new_event_id()
    after = utc_now()
    assert before <= event_id_time(event_id) <= after + timedelta(milliseconds=1)
    assert event_id_time("01890a5d-ac96-7b2c-8f3e-000000000001") == datetime(2023, 6, 30, 3, 34, 18, 518000, UTC)


@pytest.mark.parametrize("value", ["", "evt", V4, "01890A5D-AC96-7B2C-8F3E-000000000001",
                                   "01890a5d-ac96-7b2c-cf3e-000000000001", "01890a5dac967b2c8f3e000000000001",
                                   None, 7, uuid.UUID("01890a5d-ac96-7b2c-8f3e-000000000001")],
                         ids=repr)
def test_is_event_id_refuses(value: object) -> None:
    assert not is_event_id(value)


def test_new_visit_id() -> None:
    made = {new_visit_id() for _ in range(1000)}
    assert len(made) == 1000
    for visit in made:
        assert len(visit) == 22
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", visit)
        assert len(base64.urlsafe_b64decode(visit + "==")) * 8 >= 128
        assert is_visit_id(visit)


@pytest.mark.parametrize("value", ["a" * 21, "a" * 65, "a" * 21 + "+", None, 12], ids=repr)
def test_is_visit_id_refuses(value: object) -> None:
    assert not is_visit_id(value)


@pytest.mark.parametrize("instant", [
    datetime(2026, 11, 25, 17, 0, 0, 123000, UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999000, UTC),
    datetime(2026, 3, 29, 3, 30, 0, 7000, tzinfo=timezone(timedelta(hours=2))),
], ids=str)
def test_instant_round_trip(instant: datetime) -> None:
    text = format_instant(instant)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    assert parse_instant(text) == instant
    assert parse_instant(text).tzinfo == UTC
    assert format_instant(parse_instant(text)) == text


def test_format_instant_truncates_to_ms() -> None:
    assert format_instant(datetime(2026, 1, 1, 0, 0, 0, 999999, UTC)) == "2026-01-01T00:00:00.999Z"


@pytest.mark.parametrize("text", [
    "2026-11-25T17:00:00.123+00:00", "2026-11-25T17:00:00Z", "2026-11-25T17:00:00.12Z",
    "2026-11-25T17:00:00.123456Z", "2026-11-25T17:00:00.123", "2026-11-25 17:00:00.123Z",
    "2026-11-25t17:00:00.123z", "20261125T170000.123Z", "2026-11-25", "", "2026-02-30T00:00:00.000Z",
])
def test_parse_instant_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


@pytest.mark.parametrize("value", [None, 1764090000123, datetime(2026, 1, 1, tzinfo=UTC)], ids=repr)
def test_parse_instant_refuses_non_strings(value: Any) -> None:
    with pytest.raises(ValueError, match="expected an instant"):
        parse_instant(value)


# --- event construction -----------------------------------------------------------------------------------

def test_construction_converts_to_utc_and_truncates() -> None:
    paris = timezone(timedelta(hours=1))
    event = OccupancyCounted(event_id=new_event_id(), site_id=SITE, device_id=DEVICE,
                             occurred_at=datetime(2026, 11, 25, 18, 0, 0, 123456, paris), zone_id="room-1",
                             count=3, window_s=60)
    assert event.occurred_at == datetime(2026, 11, 25, 17, 0, 0, 123000, UTC)
    assert event.occurred_at.tzinfo is UTC
    assert decode_event(encode_event(event)) == event


def test_construction_refuses_naive_datetime() -> None:
    event_id = new_event_id()
    error = refused(lambda: OccupancyCounted(event_id=event_id, site_id=SITE, device_id=DEVICE,
                                             occurred_at=datetime(2026, 11, 25, 17, 0), zone_id="room-1", count=3,
                                             window_s=60),
                    "invalid_field", "occurred_at", "timezone-aware")
    assert error.event_id == event_id


def test_construction_refuses_invalid_fields_with_the_event_id() -> None:
    event_id = new_event_id()
    error = refused(lambda: OccupancyCounted(event_id=event_id, site_id=SITE, device_id=DEVICE, occurred_at=AT,
                                             zone_id="room-1", count=-5, window_s=60),
                    "invalid_field", "count")
    assert error.event_id == event_id


def test_create_stamps_a_fresh_id_and_now() -> None:
    before = utc_now()
    first = ArtworkViewed.create(site_id=SITE, device_id=DEVICE, artwork_id="water-lilies", source="qr",
                                 language="fr")
    second = ArtworkViewed.create(site_id=SITE, device_id=DEVICE, artwork_id="water-lilies", source="qr",
                                  language="fr")
    assert first.event_id < second.event_id
    assert before <= first.occurred_at <= utc_now()
    assert first.occurred_at.microsecond % 1000 == 0
    assert first.visit_id is None
    assert first.own_fields() == {"artwork_id": "water-lilies", "source": "qr", "language": "fr",
                                  "session_id": None}


def test_events_are_frozen() -> None:
    event = make_event(OccupancyCounted)
    with pytest.raises(AttributeError):
        event.count = 4  # type: ignore[misc]


# --- topics -----------------------------------------------------------------------------------------------

NAMED_BUILDERS = {"events": topics.events_topic, "status": topics.status_topic,
                  "commands": topics.commands_topic, "acks": topics.acks_topic,
                  "screenshots": topics.screenshots_topic, "sightings": topics.sightings_topic}


@pytest.mark.parametrize("channel", topics.DEVICE_CHANNELS)
def test_device_topic_round_trip(channel: str) -> None:
    topic = topics.device_topic(SITE, DEVICE, channel)  # type: ignore[arg-type]
    assert topic == f"museum/v1/{SITE}/devices/{DEVICE}/{channel}"
    assert NAMED_BUILDERS[channel](SITE, DEVICE) == topic
    assert topics.parse_topic(topic) == topics.Topic(SITE, channel, DEVICE)


def test_content_topic_round_trip() -> None:
    topic = topics.content_topic(SITE)
    assert topic == "museum/v1/demo/content"
    assert topics.parse_topic(topic) == topics.Topic(SITE, "content", None)


@pytest.mark.parametrize("channel", topics.DEVICE_CHANNELS)
def test_wildcard_builder(channel: str) -> None:
    pattern = topics.all_devices(SITE, channel)  # type: ignore[arg-type]
    assert pattern == f"museum/v1/{SITE}/devices/+/{channel}"
    assert pattern.replace("+", DEVICE) == topics.device_topic(SITE, DEVICE, channel)  # type: ignore[arg-type]


@pytest.mark.parametrize(("topic", "fragment"), [
    ("other/v1/demo/content", "not under museum/"),
    ("museum/v2/demo/content", "'v2'"),
    ("museum/v2/demo/devices/kiosk-01/events", "'v2'"),
    ("museum/v1/Demo/content", "site 'Demo'"),
    ("museum/v1/demo/devices/Kiosk-01/events", "device 'Kiosk-01'"),
    ("museum/v1/demo/devices/+/events", "device '+'"),
    ("museum/v1/demo/devices//events", "device ''"),
    ("museum/v1/demo", "too short"),
    ("museum/v1/demo/devices/kiosk-01", "not a topic of scheme v1"),
    ("museum/v1/demo/devices/kiosk-01/events/extra", "not a topic of scheme v1"),
    ("museum/v1/demo/content/extra", "not a topic of scheme v1"),
    ("museum/v1/demo/devices/kiosk-01/telemetry", "not a topic of scheme v1"),
    ("museum/v1/demo/gadgets/kiosk-01/events", "not a topic of scheme v1"),
    ("/museum/v1/demo/content", "not under museum/"),
    ("", "not under museum/"),
])
def test_parse_topic_refuses(topic: str, fragment: str) -> None:
    refused(lambda: topics.parse_topic(topic), "invalid_topic", fragment)


@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: topics.device_topic(SITE, DEVICE, "telemetry"), "telemetry"),  # type: ignore[arg-type]
    (lambda: topics.events_topic("Demo", DEVICE), "site"),
    (lambda: topics.events_topic(SITE, "kiosk/01"), "device"),
    (lambda: topics.content_topic("#"), "site"),
    (lambda: topics.all_devices("+", "events"), "site"),
], ids=["bad-channel", "bad-site", "bad-device", "content-wildcard-site", "wildcard-site"])
def test_topic_builders_refuse(build: Callable[[], str], fragment: str) -> None:
    refused(build, "invalid_topic", fragment)


def test_wildcard_builder_refuses_unknown_channel() -> None:
    refused(lambda: topics.all_devices(SITE, "telemetry"), "invalid_topic")  # type: ignore[arg-type]


# --- other messages ---------------------------------------------------------------------------------------

COMMAND_ID = str(uuid.uuid4())
SHA = "0123456789abcdef" * 4
PACK_URL = "https://louvre-lens-broker.local:8443/packs/spring-2026-3.tar"

MESSAGE_ROUND_TRIPS: list[tuple[str, Any, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
    ("presence-online", Presence(DEVICE, "online", "kiosk", "1.4.2", AT), encode_presence, decode_presence),
    ("presence-offline", Presence("gateway-02", "offline", "qr_reader", "2.0.0-rc.1", AT), encode_presence,
     decode_presence),
    ("ack-empty", Ack(), encode_ack, decode_ack),
    ("ack-full", Ack((new_event_id(), new_event_id()), (Rejection(new_event_id(), "invalid_field: count"),)),
     encode_ack, decode_ack),
    ("command-no-args", Command(COMMAND_ID, "reload-content", AT), encode_command, decode_command),
    ("command-args", Command(COMMAND_ID, "set-volume", AT, {"level": 7, "ratio": 0.5, "mute": False,
                                                             "label": "salle 3"}), encode_command, decode_command),
    ("content", ContentAnnouncement("spring-2026", "2026.3.1", SHA, AT, PACK_URL, 4_718_592), encode_content,
     decode_content),
]


@pytest.mark.parametrize("case", MESSAGE_ROUND_TRIPS, ids=_case_id)
def test_message_round_trip(case: tuple[str, Any, Callable[[Any], bytes], Callable[[bytes], Any]]) -> None:
    _, message, encode, decode = case
    encoded = encode(message)
    assert decode(encoded) == message
    assert encode(decode(encoded)) == encoded


def _presence(**changes: Any) -> bytes:
    data = json.loads(encode_presence(Presence(DEVICE, "online", "kiosk", "1.4.2", AT)))
    data.update(changes)
    return payload({k: v for k, v in data.items() if v is not ...})


def _command(**changes: Any) -> bytes:
    data = json.loads(encode_command(Command(COMMAND_ID, "reload-content", AT, {"force": True})))
    data.update(changes)
    return payload({k: v for k, v in data.items() if v is not ...})


def _content(**changes: Any) -> bytes:
    data = json.loads(encode_content(ContentAnnouncement("spring-2026", "2026.3.1", SHA, AT, PACK_URL, 4_718_592)))
    data.update(changes)
    return payload({k: v for k, v in data.items() if v is not ...})


MESSAGE_REJECTIONS: list[tuple[str, Callable[[], Any], str, tuple[str, ...]]] = [
    ("presence-bad-state", lambda: decode_presence(_presence(state="sleeping")), "invalid_field",
     ("state", "sleeping")),
    ("presence-state-not-string", lambda: decode_presence(_presence(state=["online"])), "invalid_field",
     ("state",)),
    ("presence-bad-device", lambda: decode_presence(_presence(device_id="Kiosk")), "invalid_field",
     ("device_id",)),
    ("presence-bad-kind", lambda: decode_presence(_presence(kind="Kiosk 2")), "invalid_field", ("kind",)),
    ("presence-bad-version", lambda: decode_presence(_presence(software_version="")), "invalid_field",
     ("software_version",)),
    ("presence-bad-since", lambda: decode_presence(_presence(since="2026-11-25T17:00:00Z")), "invalid_field",
     ("since",)),
    ("presence-missing", lambda: decode_presence(_presence(kind=...)), "missing_field", ("kind",)),
    ("presence-extra", lambda: decode_presence(_presence(battery=80)), "unknown_field", ("battery",)),
    ("presence-array", lambda: decode_presence(b"[]"), "not_an_object", ("presence",)),
    ("presence-nan", lambda: decode_presence(b'{"since": NaN}'), "non_finite_number", ("NaN",)),
    ("ack-committed-not-ids", lambda: decode_ack(b'{"committed": ["x"], "rejected": []}'), "invalid_field",
     ("committed",)),
    ("ack-committed-not-list", lambda: decode_ack(b'{"committed": "x", "rejected": []}'), "invalid_field",
     ("committed",)),
    ("ack-committed-not-strings", lambda: decode_ack(payload({"committed": [new_event_id(), 12], "rejected": []})),
     "invalid_field", ("committed",)),
    ("ack-committed-id-with-newline", lambda: decode_ack(payload({"committed": [new_event_id() + "\n"],
                                                                  "rejected": []})), "invalid_field", ("committed",)),
    ("ack-rejected-shape", lambda: decode_ack(payload({"committed": [], "rejected": [{"event_id": new_event_id()}]})),
     "invalid_field", ("rejected",)),
    ("ack-rejected-extra", lambda: decode_ack(payload({"committed": [], "rejected": [
        {"event_id": new_event_id(), "reason": "x", "code": "y"}]})), "invalid_field", ("rejected",)),
    ("ack-rejected-reason-number", lambda: decode_ack(payload({"committed": [], "rejected": [
        {"event_id": new_event_id(), "reason": 3}]})), "invalid_field", ("rejected",)),
    ("ack-missing", lambda: decode_ack(b'{"committed": []}'), "missing_field", ("rejected",)),
    ("command-args-nested", lambda: decode_command(_command(args={"volume": {"level": 3}})), "invalid_field",
     ("args",)),
    ("command-args-list", lambda: decode_command(_command(args={"levels": [1, 2]})), "invalid_field", ("args",)),
    ("command-args-null-value", lambda: decode_command(_command(args={"level": None})), "invalid_field",
     ("args",)),
    ("command-args-not-object", lambda: decode_command(_command(args=["force"])), "invalid_field", ("args",)),
    ("command-bad-id", lambda: decode_command(_command(command_id="cmd-1")), "invalid_field", ("command_id",)),
    ("command-bad-name", lambda: decode_command(_command(name="Reload Content")), "invalid_field", ("name",)),
    ("command-bad-issued-at", lambda: decode_command(_command(issued_at="yesterday")), "invalid_field",
     ("issued_at",)),
    ("command-missing-args", lambda: decode_command(_command(args=...)), "missing_field", ("args",)),
    ("content-sha-uppercase", lambda: decode_content(_content(sha256=SHA.upper())), "invalid_field", ("sha256",)),
    ("content-sha-short", lambda: decode_content(_content(sha256=SHA[:-1])), "invalid_field", ("sha256",)),
    ("content-sha-not-hex", lambda: decode_content(_content(sha256="g" * 64)), "invalid_field", ("sha256",)),
    ("content-sha-number", lambda: decode_content(_content(sha256=5)), "invalid_field", ("sha256",)),
    ("content-bad-pack", lambda: decode_content(_content(pack_id="Spring 2026")), "invalid_field", ("pack_id",)),
    ("content-bad-version", lambda: decode_content(_content(pack_version="v 1")), "invalid_field",
     ("pack_version",)),
    ("content-extra", lambda: decode_content(_content(mirror="https://x/p")), "unknown_field", ("mirror",)),
    ("content-missing-url", lambda: decode_content(_content(url=...)), "missing_field", ("url",)),
    ("content-missing-size", lambda: decode_content(_content(size=...)), "missing_field", ("size",)),
    ("content-url-http", lambda: decode_content(_content(url="http://broker.local/packs/a-1.tar")),
     "invalid_field", ("url", "https")),
    ("content-url-no-host", lambda: decode_content(_content(url="https:///packs/a-1.tar")), "invalid_field",
     ("url",)),
    ("content-url-credentials", lambda: decode_content(_content(url="https://u:p@broker.local/a-1.tar")),
     "invalid_field", ("url", "credentials")),
    ("content-url-space", lambda: decode_content(_content(url="https://broker.local/a 1.tar")), "invalid_field",
     ("url",)),
    ("content-url-long", lambda: decode_content(_content(url="https://b.local/" + "a" * 2048)), "invalid_field",
     ("url",)),
    ("content-url-number", lambda: decode_content(_content(url=7)), "invalid_field", ("url",)),
    ("content-url-bad-port", lambda: decode_content(_content(url="https://b.local:99999/a-1.tar")),
     "invalid_field", ("url",)),
    ("content-size-zero", lambda: decode_content(_content(size=0)), "invalid_field", ("size",)),
    ("content-size-huge", lambda: decode_content(_content(size=2**40)), "invalid_field", ("size",)),
    ("content-size-bool", lambda: decode_content(_content(size=True)), "invalid_field", ("size",)),
    ("content-size-float", lambda: decode_content(_content(size=10.5)), "invalid_field", ("size",)),
    ("content-invalid-utf8", lambda: decode_content(b'{"pack_id": "\xff"}'), "invalid_utf8", ()),
]


@pytest.mark.parametrize("case", MESSAGE_REJECTIONS, ids=_case_id)
def test_message_decoder_refuses(case: tuple[str, Callable[[], Any], str, tuple[str, ...]]) -> None:
    _, call, code, fragments = case
    refused(call, code, *fragments)


@pytest.mark.parametrize(("message", "encode", "keys"), [
    (Presence(DEVICE, "online", "kiosk", "1.4.2", AT), encode_presence,
     ["device_id", "state", "kind", "software_version", "since"]),
    (Ack(), encode_ack, ["committed", "rejected"]),
    (Command(COMMAND_ID, "reload-content", AT), encode_command, ["command_id", "name", "issued_at", "args"]),
    (ContentAnnouncement("spring-2026", "2026.3.1", SHA, AT, PACK_URL, 4_718_592), encode_content,
     ["pack_id", "pack_version", "sha256", "announced_at", "url", "size"]),
], ids=["presence", "ack", "command", "content"])
def test_message_wire_keys(message: Any, encode: Callable[[Any], bytes], keys: list[str]) -> None:
    assert list(json.loads(encode(message))) == keys


def test_dumps_strict_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        dumps_strict({"x": float("nan")})


# --- client configuration ---------------------------------------------------------------------------------

def _config(tmp_path: Path, **changes: Any) -> ClientConfig:
    broker = BrokerSettings(host="museum-hub.local", port=8883, username=DEVICE, password="s3cr3t-é",
                            tls=True, ca_file=tmp_path / "ca.crt", discover=False)
    values: dict[str, Any] = {"site_id": SITE, "client_id": DEVICE, "kind": "kiosk", "broker": broker,
                              "outbox": OutboxSettings(tmp_path / "outbox.sqlite", 5000, 2.5), "heartbeat_s": 15.0,
                              "extra": {"screen": {"width": 1920}, "artwork_ids": ["a", "b"]}}
    values.update(changes)
    return ClientConfig(**values)


@pytest.mark.parametrize("variant", ["full", "no-outbox-no-ca"])
def test_config_round_trip(tmp_path: Path, variant: str) -> None:
    config = _config(tmp_path)
    if variant == "no-outbox-no-ca":
        config = _config(tmp_path, outbox=None, extra={}).with_broker(ca_file=None, tls=False)
    path = tmp_path / "nested" / "kiosk.toml"
    config.save(path)
    assert ClientConfig.load(path) == config


def test_config_relative_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "kiosk.toml").write_text(
        'site_id = "demo"\nclient_id = "kiosk-01"\nkind = "kiosk"\n\n'
        '[broker]\nhost = "hub"\nport = 8883\nusername = "kiosk-01"\npassword = "pw"\nca_file = "tls/ca.crt"\n\n'
        '[outbox]\npath = "../var/outbox.sqlite"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = ClientConfig.load(Path("../etc/kiosk.toml"))
    assert config.broker.ca_file == folder.resolve() / "tls" / "ca.crt"
    assert config.outbox is not None
    assert config.outbox.path.resolve() == (tmp_path / "var" / "outbox.sqlite").resolve()
    assert config.outbox.max_events == 2_000_000
    assert config.broker.tls is True and config.broker.discover is True
    assert config.heartbeat_s == 60.0


def test_config_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    _config(tmp_path, outbox=OutboxSettings(Path("/var/lib/museum/outbox.sqlite"))).save(path)
    loaded = ClientConfig.load(path)
    assert loaded.outbox is not None
    assert loaded.outbox.path == Path("/var/lib/museum/outbox.sqlite")


def test_config_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    _config(tmp_path).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.toml"
    _config(tmp_path).save(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


@pytest.mark.parametrize("missing", ["site_id", "client_id", "kind", "broker", "host", "port", "username",
                                     "password"])
def test_config_missing_setting(tmp_path: Path, missing: str) -> None:
    text = _config(tmp_path, outbox=None, extra={}).to_toml()
    if missing == "broker":
        text = text.split("[broker]")[0]
    else:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{missing} ="))
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"missing setting '{missing}'") as info:
        ClientConfig.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("field", ["site_id", "client_id"])
def test_config_refuses_bad_identifiers(tmp_path: Path, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _config(tmp_path, **{field: "Not An Id"})


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_create_takes_the_fast_way_with_or_without_optional_fields(type_name: str, monkeypatch) -> None:
    cls = EVENT_TYPES[type_name]
    calls = []
    monkeypatch.setattr(cls, "__post_init__", lambda self: calls.append(self))  # runs only on the dataclass way
    visit = VISIT if cls.visit_policy == "required" else None
    for with_optional in (True, False):
        own = {name: sample_value(name, spec) for name, spec in cls.specs if with_optional or not spec.optional}
        event = cls.create(site_id=SITE, device_id=DEVICE, visit_id=visit, **own)
        assert all(getattr(event, name) is None for name, spec in cls.specs if spec.optional and name not in own)
        assert decode_event(encode_event(event)) == event
    assert calls == []


def test_create_still_refuses_an_unknown_field_when_an_optional_one_is_left_out() -> None:
    with pytest.raises(TypeError):
        ArtworkViewed.create(site_id=SITE, device_id=DEVICE, artwork_id="w-1", source="kiosk", language="fr",
                             colour="red")
