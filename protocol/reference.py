"""The event reference page (docs/events.md), generated from the contract itself.

Every table and example below is computed from `protocol.events`, `protocol.codec`, `protocol.topics` and the
source of the modules that raise `ContractError`, so the page cannot drift from what the code accepts: each
example is a real event object encoded by the codec. The output is byte-for-byte deterministic, which lets a
test compare it with the committed page.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import re
import uuid as uuidlib
from collections.abc import Callable, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any

from protocol import codec, events, fields, ids, messages, topics
from protocol.codec import MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_MESSAGE_BYTES
from protocol.errors import ContractError
from protocol.events import COMMON_FIELDS, EVENT_TYPES, Event
from protocol.fields import IDENTIFIER, Spec
from protocol.ids import event_id_time, format_instant, visit_id_for
from protocol.messages import Ack, Command, ContentAnnouncement, Presence, Rejection, Screenshot

EXAMPLE_EVENT_ID = "01890a5d-ac96-7b2c-8f3e-000000000001"
# The example instant is the one the example event_id encodes, so the two never contradict each other.
EXAMPLE_INSTANT: datetime = event_id_time(EXAMPLE_EVENT_ID)
EXAMPLE_SITE = "demo"
EXAMPLE_VISIT = "Zk3v9QmT0xWb7LsR2nYc4A"
EXAMPLE_SOFTWARE = "1.4.2"

# Gateways, not kiosks, see tags and count people: examples of those families come from a gateway.
_EXAMPLE_DEVICES = {"proximity": "gateway-02", "occupancy": "gateway-02"}
_DEFAULT_DEVICE = "kiosk-01"

# Friendlier example values for known field names; a value its spec refuses falls back to a generic one, so a
# new type with a field of the same name can never break the page.
_EXAMPLE_HINTS: dict[str, Any] = {
    "artwork_id": "water-lilies",
    "zone_id": "room-12",
    "language": "fr",
    "from_language": "fr",
    "to_language": "en",
    "duration_s": 184.2,
    "dwell_s": 42.7,
    "count": 14,
    "window_s": 300,
    "software_version": EXAMPLE_SOFTWARE,
    "uptime_s": 86400,
    "outbox_pending": 0,
    "outbox_dropped": 0,
    "pack_id": "spring-2026",
    "pack_version": "2026.3.1",
    "items": 48,
    "command": "reload-content",
    "detail": "Content pack spring-2026 reloaded.",
    "reason": "media/water-lilies.jpg: SHA-256 differs from the manifest",
}

_COMMON_NOTES = {
    "type": "The event type: one of the names below.",
    "schema_version": "The version of that type's schema this event follows.",
}

_VISIT_POLICY_TEXT = {
    "optional": "**optional**: sent when the device knows the visit (the visitor linked their phone), "
                "absent or `null` otherwise.",
    "required": "**required**: this event only means something for one visit (it feeds the visitor's "
                "personal visit page), so an event without a `visit_id` is refused.",
    "forbidden": "**forbidden**: this event describes a device or people in aggregate, never a visitor; a "
                 "`visit_id` is refused so it can never be joined to a visit.",
}

# Meaning of every ContractError code. The codes themselves are read from the source (see
# `contract_error_codes`), and rendering fails when one has no meaning here, so a new code cannot go undocumented.
ERROR_CODES: dict[str, str] = {
    "invalid_json": "The payload is not JSON: a syntax error, an empty payload, a UTF-8 byte order mark, or not "
                    "bytes at all.",
    "invalid_utf8": "The payload is not valid UTF-8.",
    "too_large": f"The payload is over its size limit ({MAX_MESSAGE_BYTES} bytes for a message, "
                 f"{MAX_EVENT_BYTES} for a single event); checked before parsing.",
    "nesting_too_deep": "The JSON nests deeper than the parser allows; no message of the contract nests "
                        "like that.",
    "non_finite_number": "`NaN`, `Infinity` or `-Infinity` appear: they are not JSON numbers.",
    "duplicate_key": "One JSON object names the same key twice.",
    "not_an_object": "The message, or one event of a batch, is not a JSON object.",
    "invalid_envelope": f'A batch envelope is not exactly `{{"batch": [...]}}` with 1 to {MAX_BATCH_EVENTS} '
                        "events, or a batch came where a single event was expected.",
    "missing_field": "A required field is absent, or `type` / `schema_version` is missing or of the wrong "
                     "JSON type.",
    "unknown_field": "The object has a field its type and schema version do not define.",
    "unknown_type": "The event `type` is not part of this contract.",
    "unsupported_schema_version": "The `schema_version` is not the one this build speaks for that type: a "
                                  "newer one is refused rather than guessed at, an older one is no longer "
                                  "accepted.",
    "invalid_field": "A field holds a value its specification refuses: wrong JSON type, out of range, wrong "
                     "format, or a `visit_id` against the type's policy.",
    "invalid_frame": "A screenshot frame is not a JSON header line (at most "
                     f"{codec.MAX_SCREENSHOT_HEADER_BYTES} bytes) followed by exactly the PNG bytes it announces.",
    "not_png": "A screenshot's image is not a whole PNG file: no PNG signature, no IHDR chunk first, or no IEND "
               "chunk last (truncated).",
    "invalid_topic": "A topic is not part of the scheme: wrong root or version, wrong depth, unknown channel, "
                     "or a site or device segment that is not an identifier.",
}

HUB_ERROR_CODES: dict[str, str] = {
    "device_mismatch": "The event's `device_id` differs from the device segment of the topic it was published "
                       "on (which the broker ties to the MQTT username).",
    "site_mismatch": "The event's `site_id` is not the site of the hub that received it.",
    "time_out_of_range": "The event's `occurred_at`, or the instant in its `event_id`, is further from the hub's "
                         "clock than it accepts (by default 35 days before, 1 day after): the device's clock is "
                         "wrong, or the event was kept too long.",
    "unknown_device": "A screenshot came on the topic of a device the hub has never seen (no status, no event): "
                      "only a device that is connected, hence known, can have been asked for one.",
    "event_id_conflict": "Another device's event with this `event_id` is already stored: ids are made by each "
                         "device (`new_event_id`), so this one was copied or forged.",
}

_SCANNED_MODULES: tuple[ModuleType, ...] = (codec, events, fields, ids, messages, topics)


# --- helpers ----------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    """One Markdown table cell: no line breaks, no unescaped column separators."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _doc_markdown(doc: str | None) -> list[str]:
    """A docstring as Markdown: indented paragraphs become code blocks, the rest stays as written."""
    lines: list[str] = []
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        rows = paragraph.split("\n")
        if all(row.startswith("    ") for row in rows):
            lines += ["```text", *(row[4:] for row in rows), "```"]
        else:
            lines += rows
        lines.append("")
    return lines


def _json_block(payload: bytes) -> list[str]:
    """A codec-encoded payload, re-indented for reading (key order and values unchanged)."""
    pretty = json.dumps(codec.loads_strict(payload), indent=2, ensure_ascii=False)
    return ["```json", *pretty.split("\n"), "```"]


def _common_field_notes() -> dict[str, str]:
    """The `- `name`: meaning` bullets of the Event docstring, by field name."""
    notes = dict(_COMMON_NOTES)
    doc = inspect.cleandoc(Event.__doc__ or "")
    for bullet in re.findall(r"^- (.+?)(?=^- |\Z)", doc, re.MULTILINE | re.DOTALL):
        names, _, meaning = bullet.partition(":")
        meaning = " ".join(meaning.split())
        for name in re.findall(r"`(\w+)`", names):
            notes[name] = meaning[:1].upper() + meaning[1:]
    return notes


# --- example values ---------------------------------------------------------------------------------------

def _clamp(value: float, spec: Spec) -> float:
    if spec.minimum is not None:
        value = max(value, spec.minimum)
    if spec.maximum is not None:
        value = min(value, spec.maximum)
    return value


def _generic_value(name: str, spec: Spec) -> Any:
    match spec.kind:
        case "identifier":
            return name.removesuffix("_id").replace("_", "-")[:58] + "-1"
        case "language":
            return "fr"
        case "version":
            return EXAMPLE_SOFTWARE
        case "uuid":
            return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"museum-platform:{name}"))
        case "visit":
            return visit_id_for(f"example-{name}")
        case "choice":
            return spec.choices[0]
        case "text":
            return "Example."[: spec.max_length]
        case "flag":
            return True
        case "count":
            return int(_clamp(3, spec))
        case "number":
            return _clamp(12.5, spec)
    raise AssertionError(f"no example value for spec kind {spec.kind}")


def example_value(name: str, spec: Spec) -> Any:
    """A deterministic value for one field that its spec accepts."""
    if name in _EXAMPLE_HINTS:
        hint = _EXAMPLE_HINTS[name]
        try:
            spec.check(name, hint)
        except ContractError:
            pass
        else:
            return hint
    return _generic_value(name, spec)


def example_event(cls: type[Event]) -> Event:
    """A deterministic, valid instance of an event type, with every optional field set."""
    family = cls.type.split(".", 1)[0]
    return cls(event_id=EXAMPLE_EVENT_ID, site_id=EXAMPLE_SITE,
               device_id=_EXAMPLE_DEVICES.get(family, _DEFAULT_DEVICE), occurred_at=EXAMPLE_INSTANT,
               visit_id=None if cls.visit_policy == "forbidden" else EXAMPLE_VISIT,
               **{name: example_value(name, spec) for name, spec in cls.specs})


# --- error codes ------------------------------------------------------------------------------------------

def contract_error_codes() -> dict[str, tuple[str, ...]]:
    """Every code passed literally to `ContractError(...)` in the contract modules, with the modules using it."""
    found: dict[str, set[str]] = {}
    for module in _SCANNED_MODULES:
        short = module.__name__.rsplit(".", 1)[-1]
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            callee = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            first = node.args[0]
            if callee == "ContractError" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, set()).add(short)
    return {code: tuple(sorted(modules)) for code, modules in sorted(found.items())}


# --- sections ---------------------------------------------------------------------------------------------

def _intro() -> list[str]:
    return [
        "# Event reference",
        "",
        "<!-- Generated from the contract (protocol/) by `museum docs events`. Do not edit by hand. -->",
        "",
        "Every touchpoint in the museum becomes an event: a device (kiosk, BLE gateway, QR reader) publishes it "
        "over MQTT to the site broker and the edge hub stores it. This page is generated from the contract "
        "itself (`protocol/`); every example below is a real event object encoded by `protocol.codec`.",
        "",
        "## Wire format",
        "",
        "An event is **one flat JSON object**: the common fields, then the type's own fields, nothing nested. "
        "It travels alone in one MQTT message, or, when a device has a backlog, with others in a **batch "
        'envelope** `{"batch": [event, event, …]}`: exactly that one key and a non-empty list. In a batch each '
        "event stands or falls alone: the valid ones are stored, the invalid ones are quarantined with their "
        "reason.",
        "",
        "JSON is strict:",
        "",
        "- UTF-8 only, without a byte order mark.",
        "- No `NaN`, `Infinity` or `-Infinity`.",
        "- No key twice in one object.",
        "- The size limit is checked before parsing.",
        "- Exactly the fields the type's schema names: an unknown field is refused, a required one must be "
        "present and not `null`. An optional field may be `null` or absent.",
        f"- Instants are UTC with milliseconds and a `Z`, like `{format_instant(EXAMPLE_INSTANT)}`; no other "
        "form is accepted.",
        "",
        "Limits (`protocol.codec`):",
        "",
        *_table(("Limit", "Value", "Meaning"), [
            ("`MAX_MESSAGE_BYTES`", f"{MAX_MESSAGE_BYTES} bytes",
             "Largest MQTT payload a receiver parses; devices size their batch envelopes below it."),
            ("`MAX_EVENT_BYTES`", f"{MAX_EVENT_BYTES} bytes", "Largest single event."),
            ("`MAX_BATCH_EVENTS`", f"{MAX_BATCH_EVENTS} events", "Most events in one batch envelope."),
        ]),
        "",
        "## Versioning",
        "",
        "Each type carries its own `schema_version`. Adding a field or changing a meaning means a new "
        "`schema_version` for that type. A receiver refuses a version it does not know "
        "(`unsupported_schema_version`): a newer one is never guessed at, an older one is no longer accepted. "
        "`schema_version` is a JSON whole number: `true`, `\"1\"` or `1.0` are refused.",
        "",
    ]


def _common_fields() -> list[str]:
    notes = _common_field_notes()
    identifier = Spec("identifier", "", pattern=IDENTIFIER).describe_type()
    types = {
        "event_id": "a UUIDv7 in lowercase hex with dashes",
        "type": "text: an event type name",
        "schema_version": "a whole number",
        "site_id": identifier,
        "device_id": identifier,
        "occurred_at": f"an instant like `{format_instant(EXAMPLE_INSTANT)}`",
        "visit_id": "a URL-safe token of 22 to 64 characters (`A-Z`, `a-z`, `0-9`, `_`, `-`), or `null`",
    }
    rows = []
    for name in COMMON_FIELDS:
        presence = "per type (see its visit_id policy)" if name == "visit_id" else "required"
        rows.append((f"`{name}`", types.get(name, ""), presence, notes.get(name, "")))
    return ["## Common fields", "", "Every event has these fields:", "",
            *_table(("Field", "Type", "Presence", "Meaning"), rows), ""]


def _topic_scheme() -> list[str]:
    return ["## Topics", "", *_doc_markdown(topics.__doc__)]


def _event_section(cls: type[Event]) -> list[str]:
    rows = [(f"`{name}`", spec.describe_type(), "optional" if spec.optional else "required", spec.description)
            for name, spec in cls.specs]
    event = example_event(cls)
    return [
        f"### `{cls.type}` (schema_version {cls.schema_version})",
        "",
        *_doc_markdown(cls.__doc__),
        f"visit_id: {_VISIT_POLICY_TEXT[cls.visit_policy]}",
        "",
        *_table(("Field", "Type", "Presence", "Meaning"), rows),
        "",
        "Example:",
        "",
        *_json_block(codec.encode_event(event)),
        "",
    ]


def _events() -> list[str]:
    lines = ["## Event types", ""]
    for name in sorted(EVENT_TYPES):
        lines += _event_section(EVENT_TYPES[name])
    return lines


def _message_examples() -> list[tuple[type, str, bytes]]:
    device = _DEFAULT_DEVICE
    first, second, third = (f"01890a5d-ac96-7b2c-8f3e-00000000000{n}" for n in (1, 2, 3))
    command_id = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "museum-platform:command_id"))
    pack_digest = hashlib.sha256(b"spring-2026 2026.3.1").hexdigest()
    encoders: list[tuple[type, str, Callable[[], bytes]]] = [
        (Presence, topics.status_topic(EXAMPLE_SITE, device),
         lambda: codec.encode_presence(Presence(device, "online", "kiosk", EXAMPLE_SOFTWARE, EXAMPLE_INSTANT))),
        (Ack, topics.acks_topic(EXAMPLE_SITE, device),
         lambda: codec.encode_ack(Ack((first, second), (Rejection(third, "invalid_field: count must be at least 0, "
                                                                            "got -1"),)))),
        (Command, topics.commands_topic(EXAMPLE_SITE, device),
         lambda: codec.encode_command(Command(command_id, "reload-content", EXAMPLE_INSTANT, {"force": True}))),
        (ContentAnnouncement, topics.content_topic(EXAMPLE_SITE),
         lambda: codec.encode_content(ContentAnnouncement(
             "spring-2026", "2026.3.1", pack_digest, EXAMPLE_INSTANT,
             f"https://{EXAMPLE_SITE}-broker.local:8443/packs/spring-2026-2026.3.1.tar", 4_718_592))),
    ]
    return [(cls, topic, encode()) for cls, topic, encode in encoders]


def _screenshot() -> list[str]:
    """The binary frame: its header shown as JSON, the PNG part described (it is not text)."""
    command_id = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "museum-platform:command_id"))
    png_bytes = 48_213
    frame = codec.encode_screenshot(Screenshot(command_id, EXAMPLE_INSTANT, _example_png(png_bytes)))
    header = frame[:frame.index(b"\n")]
    keys = ", ".join(f"`{field.name}`" for field in dataclasses.fields(Screenshot))
    return [f"### {Screenshot.__name__}", "", *_doc_markdown(Screenshot.__doc__),
            f"Topic (example): `{topics.screenshots_topic(EXAMPLE_SITE, _DEFAULT_DEVICE)}`", "",
            f"Fields: {keys}.", "",
            f"Limits: the header line at most `MAX_SCREENSHOT_HEADER_BYTES` ({codec.MAX_SCREENSHOT_HEADER_BYTES} "
            f"bytes), the PNG at most `MAX_SCREENSHOT_PNG_BYTES` ({codec.MAX_SCREENSHOT_PNG_BYTES} bytes).", "",
            "Example header line (then a newline and the PNG's bytes):", "", *_json_block(header), ""]


def _example_png(size: int) -> bytes:
    """Bytes shaped like a PNG of `size` bytes (signature, IHDR, filler, IEND): enough for the frame's header."""
    head = codec.PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR" + bytes(17)
    tail = b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return head + bytes(size - len(head) - len(tail)) + tail


def _messages() -> list[str]:
    lines = ["## Other messages", "", *_doc_markdown(messages.__doc__)]
    for cls, topic, payload in _message_examples():
        keys = ", ".join(f"`{field.name}`" for field in dataclasses.fields(cls))
        lines += [f"### {cls.__name__}", "", *_doc_markdown(cls.__doc__), f"Topic (example): `{topic}`", "",
                  f"Fields: {keys}.", "", "Example:", "", *_json_block(payload), ""]
    return lines + _screenshot()


def _errors() -> list[str]:
    found = contract_error_codes()
    undocumented = sorted(set(found) - set(ERROR_CODES))
    if undocumented:
        raise RuntimeError(f"ContractError codes without a meaning in protocol.reference.ERROR_CODES: "
                           f"{', '.join(undocumented)}")
    stale = sorted(set(ERROR_CODES) - set(found))
    if stale:
        raise RuntimeError(f"protocol.reference.ERROR_CODES documents codes no module raises: {', '.join(stale)}")
    rows = [(f"`{code}`", ", ".join(f"`protocol.{m}`" for m in modules), ERROR_CODES[code])
            for code, modules in found.items()]
    rows += [(f"`{code}`", "the hub", meaning) for code, meaning in sorted(HUB_ERROR_CODES.items())]
    return ["## Error codes", "",
            "A refused message or event is reported as a `ContractError` with a stable `code` (the hub counts "
            "and groups on it) and a `detail` saying precisely what is wrong; when the event's `event_id` could "
            "be read, the error carries it so the sender can be told which event was refused.", "",
            *_table(("Code", "Raised by", "Meaning"), sorted(rows)), ""]


def render_event_reference() -> str:
    """The whole docs/events.md page."""
    lines = [*_intro(), *_common_fields(), *_topic_scheme(), *_events(), *_messages(), *_errors()]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


__all__ = ["ERROR_CODES", "EXAMPLE_EVENT_ID", "EXAMPLE_INSTANT", "HUB_ERROR_CODES", "contract_error_codes",
           "example_event", "example_value", "render_event_reference"]
