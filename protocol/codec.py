"""Strict JSON in and out, for events and every other message of the contract.

Strict means: UTF-8 only; no NaN or Infinity; no duplicate keys; a size limit checked before parsing; exactly
the fields the schema names, of the right types. Anything else raises `ContractError` with a stable `code` and
a precise `detail`. A `schema_version` newer than this build knows is refused, never guessed at.

Events travel one per MQTT message, or, when a device has a backlog, many per message in a batch envelope
`{"batch": [event, event, …]}`. In a batch each event stands or falls alone.

A screenshot is the one binary frame: a strict JSON header on one line, a newline, then the PNG bytes (see
`protocol.messages.Screenshot`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from protocol.errors import ContractError
from protocol.events import COMMON_FIELDS, EVENT_TYPES, Event
from protocol.fields import IDENTIFIER, KIND, UUID, VERSION
from protocol.ids import UUID7, format_instant, is_event_id, parse_instant
from protocol.messages import (
    MAX_SIGHTINGS,
    Ack,
    ArgValue,
    Command,
    ContentAnnouncement,
    Presence,
    Rejection,
    Screenshot,
    Sightings,
)

MAX_MESSAGE_BYTES = 512 * 1024
"""Largest MQTT payload a receiver parses. Devices size their batch envelopes below it."""

MAX_EVENT_BYTES = 16 * 1024
"""Largest single event; real ones are a few hundred bytes."""

MAX_BATCH_EVENTS = 2000

MAX_URL_LENGTH = 2048
MAX_ANNOUNCED_PACK_BYTES = 4 * 1024 * 1024 * 1024
"""Largest pack size an announcement may state: well above any valid pack, so a device never reserves more."""

MAX_SCREENSHOT_HEADER_BYTES = 256
"""Largest JSON header line of a screenshot frame, its newline included (a real one is about 110 bytes)."""
MAX_SCREENSHOT_PNG_BYTES = MAX_MESSAGE_BYTES - MAX_SCREENSHOT_HEADER_BYTES
"""Largest PNG a screenshot frame carries, so that the whole frame stays within `MAX_MESSAGE_BYTES` (the broker's
`message_size_limit`). A full-resolution kiosk screen full of pictures can be larger: scale it down first."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = b"\x00\x00\x00\x0dIHDR"  # the first chunk of every PNG: 13 bytes of header
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every PNG, CRC included: always these bytes


@dataclass(frozen=True)
class RejectedEvent:
    """One event of a message that failed, with its own JSON text kept for quarantine."""

    raw: bytes
    error: ContractError


@dataclass(frozen=True)
class DecodedMessage:
    events: list[Event]
    rejected: list[RejectedEvent]


# --- strict JSON ------------------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ContractError("non_finite_number", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ContractError("non_finite_number", f"{text[:40]} overflows to infinity")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ContractError("duplicate_key", f"key {key[:80]!r} appears twice in one object")
            seen.add(key)
    return result


def loads_strict(payload: bytes, *, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse bytes as strict JSON, or raise ContractError."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError("invalid_json", f"expected bytes, got {type(payload).__name__}")
    if len(payload) > limit:
        raise ContractError("too_large", f"{len(payload)} bytes exceeds the {limit}-byte limit")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ContractError("invalid_utf8", f"byte {error.start} is not valid UTF-8 ({error.reason})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         object_pairs_hook=_unique_keys)
    except ContractError:
        raise
    except RecursionError:
        raise ContractError("nesting_too_deep", "JSON is nested deeper than any message of the contract") from None
    except json.JSONDecodeError as error:
        raise ContractError("invalid_json", f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError as error:  # an integer literal longer than Python will convert
        raise ContractError("invalid_json", f"number out of range: {str(error)[:120]}") from None
    if "\\u" in text:
        # A \uD800-style escape can smuggle in a lone surrogate, which no UTF-8 store or encoder accepts.
        try:
            dumps_strict(obj)
        except UnicodeEncodeError:
            raise ContractError("invalid_utf8", "a \\u escape encodes a lone surrogate") from None
    return obj


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""Built once: `json.dumps` with options builds a new encoder per call, a third of the cost of a small event."""


def dumps_text(obj: Any) -> str:
    return _ENCODER.encode(obj)


def dumps_strict(obj: Any) -> bytes:
    return dumps_text(obj).encode("utf-8")


# --- events -----------------------------------------------------------------------------------------------

_wire_cache: dict[type[Event], tuple[frozenset[str], frozenset[str]]] = {}


def _wire_fields(cls: type[Event]) -> tuple[frozenset[str], frozenset[str]]:
    """(every field allowed on the wire, the fields that must be present) for one event type."""
    cached = _wire_cache.get(cls)
    if cached is None:
        allowed = frozenset(COMMON_FIELDS) | {name for name, _ in cls.specs}
        optional = {"visit_id"} | {name for name, spec in cls.specs if spec.optional}
        cached = _wire_cache[cls] = (allowed, allowed - optional)
    return cached


def event_to_dict(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "site_id": event.site_id,
        "device_id": event.device_id,
        "occurred_at": format_instant(event.occurred_at),
        "visit_id": event.visit_id,
    }
    data.update(event.own_fields())
    return data


_escape = json.encoder.encode_basestring
"""The JSON encoder's own string escaping (in C), so that the writers below produce its very bytes."""


def _json_number(value: Any) -> str:
    return float.__repr__(value) if type(value) is float else int.__repr__(value)


def _flag(value: Any) -> str:
    return "true" if value else "false"


def _event_writer(cls: type[Event]) -> Callable[[Event], str]:
    """The canonical JSON text of an event of `cls`, written field by field in wire order: the same text as
    `dumps_text(event_to_dict(event))` (a test holds them equal) for a third of the cost, on a kiosk's hot path."""
    head = f',"type":{_escape(cls.type)},"schema_version":{cls.schema_version},"site_id":'
    writers = {"flag": _flag, "count": _json_number, "number": _json_number}  # every other kind is a string
    own = tuple((f',"{name}":', name, writers.get(spec.kind, _escape)) for name, spec in cls.specs)

    def write(event: Event) -> str:
        values = event.__dict__
        visit = values["visit_id"]
        parts = ['{"event_id":', _escape(values["event_id"]), head, _escape(values["site_id"]), ',"device_id":',
                 _escape(values["device_id"]), ',"occurred_at":"', format_instant(values["occurred_at"]),
                 '","visit_id":', "null" if visit is None else _escape(visit)]
        for key, name, writer in own:
            value = values[name]
            parts += (key, "null" if value is None else writer(value))
        parts.append("}")
        return "".join(parts)

    return write


_writers: dict[type[Event], Callable[[Event], str]] = {}


def encode_event(event: Event) -> bytes:
    cls = type(event)
    writer = _writers.get(cls)
    if writer is None:
        writer = _writers[cls] = _event_writer(cls)
    encoded = writer(event).encode("utf-8")
    if len(encoded) > MAX_EVENT_BYTES:
        raise ContractError("too_large", f"event {event.event_id} encodes to {len(encoded)} bytes, over the "
                            f"{MAX_EVENT_BYTES}-byte limit", event_id=event.event_id)
    return encoded


def encode_batch(encoded_events: list[bytes]) -> bytes:
    """A batch envelope around events already encoded by `encode_event` (no re-encoding)."""
    return b'{"batch":[' + b",".join(encoded_events) + b"]}"


def _readable_id(obj: dict[str, Any]) -> str | None:
    """The event's id, for an error report, when it is a valid one."""
    raw_id = obj.get("event_id")
    return raw_id if is_event_id(raw_id) else None


def event_from_dict(obj: Any) -> Event:
    """Validate one parsed JSON object as an event of a known type and version."""
    if not isinstance(obj, dict):
        raise ContractError("not_an_object", f"an event must be a JSON object, got {type(obj).__name__}")
    type_name = obj.get("type")
    if not isinstance(type_name, str):
        raise ContractError("missing_field", "type is missing or not a string", event_id=_readable_id(obj))
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise ContractError("unknown_type", f"event type {type_name[:80]!r} is not part of the contract",
                            event_id=_readable_id(obj))
    version = obj.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContractError("missing_field", "schema_version is missing or not a whole number",
                            event_id=_readable_id(obj))
    if version != cls.schema_version:
        if version > cls.schema_version:
            detail = (f"{type_name} schema_version {version} is newer than this build understands "
                      f"(up to {cls.schema_version})")
        else:
            detail = f"{type_name} schema_version {version} is no longer accepted (current: {cls.schema_version})"
        raise ContractError("unsupported_schema_version", detail, event_id=_readable_id(obj))
    allowed, required = _wire_fields(cls)
    if not required.issubset(obj):
        missing = sorted(required - obj.keys())
        raise ContractError("missing_field", f"{type_name} lacks {', '.join(missing)}", event_id=_readable_id(obj))
    if not allowed.issuperset(obj):
        unknown = sorted(obj.keys() - allowed)
        raise ContractError("unknown_field", f"{type_name} v{version} has no field {', '.join(unknown)[:200]}",
                            event_id=_readable_id(obj))
    try:
        occurred_at = parse_instant(obj["occurred_at"])
    except ValueError as error:
        raise ContractError("invalid_field", f"occurred_at: {error}", event_id=_readable_id(obj)) from None
    kwargs = obj.copy()
    del kwargs["type"], kwargs["schema_version"]
    kwargs["occurred_at"] = occurred_at
    if len(kwargs) + 2 < len(allowed):
        for name in allowed - obj.keys():  # optional fields left out on the wire
            kwargs[name] = None
    if cls.fast_valid(kwargs):
        return cls.from_valid(kwargs)
    try:
        return cls(**kwargs)
    except TypeError as error:  # a field of the wrong JSON shape reaching the dataclass
        raise ContractError("invalid_field", str(error), event_id=_readable_id(obj)) from None


def decode_event(payload: bytes) -> Event:
    """Exactly one event (not a batch)."""
    obj = loads_strict(payload, limit=MAX_EVENT_BYTES)
    if isinstance(obj, dict) and "batch" in obj:
        raise ContractError("invalid_envelope", "expected a single event, got a batch envelope")
    return event_from_dict(obj)


def decode_event_message(payload: bytes) -> DecodedMessage:
    """An events-topic payload: a single event or a batch envelope.

    Raises ContractError when the message as a whole is unreadable (not JSON, too large, not an object, a bad
    envelope) or when it holds a single invalid event. In a batch, invalid events are returned in `rejected`
    and the valid ones still come back in `events`.
    """
    obj = loads_strict(payload)
    if not isinstance(obj, dict):
        raise ContractError("not_an_object", f"an events message must be a JSON object, got {type(obj).__name__}")
    if "batch" not in obj:
        return DecodedMessage([event_from_dict(obj)], [])
    batch = obj["batch"]
    if len(obj) != 1 or not isinstance(batch, list):
        raise ContractError("invalid_envelope", 'a batch envelope is exactly {"batch": [events…]}')
    if not batch:
        raise ContractError("invalid_envelope", "a batch envelope holds at least one event")
    if len(batch) > MAX_BATCH_EVENTS:
        raise ContractError("invalid_envelope", f"{len(batch)} events in one batch, over {MAX_BATCH_EVENTS}")
    events: list[Event] = []
    rejected: list[RejectedEvent] = []
    for item in batch:
        try:
            events.append(event_from_dict(item))
        except ContractError as error:
            rejected.append(RejectedEvent(dumps_strict(item), error))
    return DecodedMessage(events, rejected)


# --- other messages ---------------------------------------------------------------------------------------

def _object(payload: bytes, what: str, allowed: set[str], required: set[str] | None = None, *,
            limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    obj = loads_strict(payload, limit=limit)
    if not isinstance(obj, dict):
        raise ContractError("not_an_object", f"{what} must be a JSON object")
    required = allowed if required is None else required
    if missing := required - obj.keys():
        raise ContractError("missing_field", f"{what} lacks {', '.join(sorted(missing))}")
    if unknown := obj.keys() - allowed:
        raise ContractError("unknown_field", f"{what} has no field {', '.join(sorted(unknown))[:200]}")
    return obj


def _text(obj: dict[str, Any], key: str, what: str, pattern: Any = None) -> str:
    value = obj[key]
    if not isinstance(value, str) or (pattern is not None and pattern.match(value) is None):
        raise ContractError("invalid_field", f"{what}: {key} is not valid: {str(value)[:80]!r}")
    return value


def _instant(obj: dict[str, Any], key: str, what: str) -> datetime:
    try:
        return parse_instant(obj[key])
    except ValueError as error:
        raise ContractError("invalid_field", f"{what}: {key}: {error}") from None


def encode_presence(presence: Presence) -> bytes:
    return dumps_strict({"device_id": presence.device_id, "state": presence.state, "kind": presence.kind,
                         "software_version": presence.software_version, "since": format_instant(presence.since)})


def decode_presence(payload: bytes) -> Presence:
    what = "presence"
    obj = _object(payload, what, {"device_id", "state", "kind", "software_version", "since"})
    state = obj["state"]
    if state not in ("online", "offline"):
        raise ContractError("invalid_field", f"{what}: state must be online or offline, got {str(state)[:40]!r}")
    return Presence(_text(obj, "device_id", what, IDENTIFIER), state, _text(obj, "kind", what, KIND),
                    _text(obj, "software_version", what, VERSION), _instant(obj, "since", what))


def encode_sightings(sightings: Sightings) -> bytes:
    if len(sightings.tags) > MAX_SIGHTINGS:
        raise ContractError("too_large", f"sightings: {len(sightings.tags)} tags, at most {MAX_SIGHTINGS}")
    return dumps_strict({"device_id": sightings.device_id, "zone_id": sightings.zone_id,
                         "at": format_instant(sightings.at),
                         "tags": {tag: round(distance, 2) for tag, distance in sightings.tags}})


def decode_sightings(payload: bytes) -> Sightings:
    what = "sightings"
    obj = _object(payload, what, {"device_id", "zone_id", "at", "tags"})
    tags = obj["tags"]
    if not isinstance(tags, dict):
        raise ContractError("invalid_field", f"{what}: tags must be an object of tag id → distance in metres")
    if len(tags) > MAX_SIGHTINGS:
        raise ContractError("too_large", f"{what}: {len(tags)} tags, at most {MAX_SIGHTINGS}")
    pairs = []
    for tag, distance in tags.items():
        if IDENTIFIER.match(tag) is None:
            raise ContractError("invalid_field", f"{what}: tag id {tag[:80]!r} is not an identifier")
        if isinstance(distance, bool) or not isinstance(distance, int | float) or not 0 <= distance <= 1000:
            raise ContractError("invalid_field", f"{what}: distance of {tag} must be 0–1000 m, got {distance!r}")
        pairs.append((tag, float(distance)))
    return Sightings(_text(obj, "device_id", what, IDENTIFIER), _text(obj, "zone_id", what, IDENTIFIER),
                     _instant(obj, "at", what), tuple(pairs))


def encode_ack(ack: Ack) -> bytes:
    return dumps_strict({"committed": list(ack.committed),
                         "rejected": [{"event_id": r.event_id, "reason": r.reason} for r in ack.rejected]})


def _all_event_ids(values: Any) -> bool:
    """A list of event ids only (without a Python call per id: an ack can name thousands)."""
    try:
        return isinstance(values, list) and all(map(UUID7.match, values))
    except TypeError:  # not a string
        return False


def decode_ack(payload: bytes) -> Ack:
    what = "ack"
    obj = _object(payload, what, {"committed", "rejected"})
    committed, rejected = obj["committed"], obj["rejected"]
    if not _all_event_ids(committed):
        raise ContractError("invalid_field", f"{what}: committed must be a list of event ids")
    if not isinstance(rejected, list) or not all(
            isinstance(r, dict) and r.keys() == {"event_id", "reason"} and is_event_id(r["event_id"])
            and isinstance(r["reason"], str) for r in rejected):
        raise ContractError("invalid_field", f"{what}: rejected must be a list of {{event_id, reason}}")
    return Ack(tuple(committed), tuple(Rejection(r["event_id"], r["reason"]) for r in rejected))


def encode_command(command: Command) -> bytes:
    return dumps_strict({"command_id": command.command_id, "name": command.name,
                         "issued_at": format_instant(command.issued_at), "args": command.args})


def decode_command(payload: bytes) -> Command:
    what = "command"
    obj = _object(payload, what, {"command_id", "name", "issued_at", "args"})
    args = obj["args"]
    if not isinstance(args, dict) or not all(isinstance(v, ArgValue) for v in args.values()):
        raise ContractError("invalid_field", f"{what}: args must map names to strings, numbers or booleans")
    return Command(_text(obj, "command_id", what, UUID), _text(obj, "name", what, IDENTIFIER),
                   _instant(obj, "issued_at", what), dict(args))


def encode_content(announcement: ContentAnnouncement) -> bytes:
    return dumps_strict({"pack_id": announcement.pack_id, "pack_version": announcement.pack_version,
                         "sha256": announcement.sha256, "announced_at": format_instant(announcement.announced_at),
                         "url": announcement.url, "size": announcement.size})


def _pack_url(obj: dict[str, Any], what: str) -> str:
    """An https URL with a host and a path, nothing a device could be fooled by: no credentials, no fragment,
    no spaces or control characters, bounded in length."""
    url = obj["url"]
    problem = None
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        problem = f"must be a string of 1 to {MAX_URL_LENGTH} characters"
    elif not url.isascii() or any(not c.isprintable() or c.isspace() for c in url):
        problem = "must be printable ASCII without spaces"
    else:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme != "https" or not parts.hostname or not parts.path.startswith("/"):
            problem = "must be an https URL with a host and a path"
        elif parts.username is not None or parts.password is not None or parts.fragment or port == 0:
            problem = "must not carry credentials, a fragment or port 0"
    if problem is not None:
        raise ContractError("invalid_field", f"{what}: url {problem}: {str(url)[:80]!r}")
    return str(url)


def decode_content(payload: bytes) -> ContentAnnouncement:
    what = "content announcement"
    obj = _object(payload, what, {"pack_id", "pack_version", "sha256", "announced_at", "url", "size"})
    sha = _text(obj, "sha256", what)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ContractError("invalid_field", f"{what}: sha256 must be 64 lowercase hex digits")
    size = obj["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_ANNOUNCED_PACK_BYTES:
        raise ContractError("invalid_field", f"{what}: size must be an integer from 1 to "
                                             f"{MAX_ANNOUNCED_PACK_BYTES} bytes, got {str(size)[:40]!r}")
    return ContentAnnouncement(_text(obj, "pack_id", what, IDENTIFIER), _text(obj, "pack_version", what, VERSION),
                               sha, _instant(obj, "announced_at", what), _pack_url(obj, what), size)


def check_png(data: bytes) -> None:
    """Raise ContractError("not_png") unless `data` is shaped like a whole PNG file: the signature, an IHDR chunk
    first and the IEND chunk last (so a truncated file is refused too). Pixels are not decoded."""
    if not isinstance(data, bytes | bytearray):
        raise ContractError("not_png", f"expected PNG bytes, got {type(data).__name__}")
    if not data.startswith(PNG_SIGNATURE):
        raise ContractError("not_png", f"does not start with the PNG signature (starts with {bytes(data[:8])!r})")
    if data[8:16] != _PNG_IHDR or len(data) < len(PNG_SIGNATURE) + 25 + len(_PNG_IEND):
        raise ContractError("not_png", "the PNG signature is not followed by an IHDR chunk")
    if not data.endswith(_PNG_IEND):
        raise ContractError("not_png", "the PNG does not end with an IEND chunk (truncated?)")


def encode_screenshot(screenshot: Screenshot) -> bytes:
    """The screenshot frame; ContractError if the PNG is not one or is over `MAX_SCREENSHOT_PNG_BYTES`."""
    png = screenshot.png
    check_png(png)
    if len(png) > MAX_SCREENSHOT_PNG_BYTES:
        raise ContractError("too_large", f"a {len(png)}-byte PNG exceeds the {MAX_SCREENSHOT_PNG_BYTES}-byte limit "
                            "of a screenshot; scale the picture down")
    if not isinstance(screenshot.command_id, str) or UUID.match(screenshot.command_id) is None:
        raise ContractError("invalid_field", f"screenshot: command_id is not valid: {screenshot.command_id!r:.80}")
    header = dumps_strict({"command_id": screenshot.command_id, "taken_at": format_instant(screenshot.taken_at),
                           "png_bytes": len(png)})
    return header + b"\n" + bytes(png)


def decode_screenshot(payload: bytes) -> Screenshot:
    """A screenshot frame, or ContractError: `too_large`, `invalid_frame` (no header line, or a length that
    differs from the header's), the header's own errors, `not_png`."""
    what = "screenshot"
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError("invalid_frame", f"expected bytes, got {type(payload).__name__}")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ContractError("too_large", f"{len(payload)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    frame = bytes(payload)
    end = frame.find(b"\n", 0, MAX_SCREENSHOT_HEADER_BYTES) if frame.startswith(b"{") else -1
    if end < 0:
        raise ContractError("invalid_frame", f"a {what} starts with a JSON header line of at most "
                            f"{MAX_SCREENSHOT_HEADER_BYTES} bytes, then the PNG; this one does not")
    obj = _object(frame[:end], f"{what} header", {"command_id", "taken_at", "png_bytes"},
                  limit=MAX_SCREENSHOT_HEADER_BYTES)
    declared = obj["png_bytes"]
    if isinstance(declared, bool) or not isinstance(declared, int) or not 0 < declared <= MAX_SCREENSHOT_PNG_BYTES:
        raise ContractError("invalid_field", f"{what} header: png_bytes must be an integer from 1 to "
                                             f"{MAX_SCREENSHOT_PNG_BYTES}, got {str(declared)[:40]!r}")
    png = frame[end + 1:]
    if len(png) != declared:
        raise ContractError("invalid_frame", f"the {what} header announces {declared} PNG bytes, the frame carries "
                                             f"{len(png)}")
    command_id = _text(obj, "command_id", f"{what} header", UUID)
    taken_at = _instant(obj, "taken_at", f"{what} header")
    check_png(png)
    return Screenshot(command_id, taken_at, png)


__all__ = ["MAX_ANNOUNCED_PACK_BYTES", "MAX_MESSAGE_BYTES", "MAX_SCREENSHOT_HEADER_BYTES", "MAX_SCREENSHOT_PNG_BYTES",
           "MAX_URL_LENGTH", "PNG_SIGNATURE", "ContractError", "DecodedMessage", "RejectedEvent", "check_png",
           "decode_ack", "decode_command", "decode_content", "decode_event", "decode_event_message",
           "decode_presence", "decode_screenshot", "dumps_strict", "encode_ack", "encode_batch", "encode_command",
           "encode_content", "encode_event", "encode_presence", "encode_screenshot", "event_from_dict",
           "event_to_dict", "loads_strict"]
