"""The canonical scanner is a shortcut, never a second authority: whatever it accepts, the strict codec accepts
too, with the very same record; everything else it leaves to the codec (returns None)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from test_contract import TYPE_NAMES, VARIANTS, make_event, wire

from protocol.canonical import EventRecord, event_record, scan_events
from protocol.codec import MAX_BATCH_EVENTS, ContractError, decode_event_message, encode_batch, encode_event
from protocol.events import EVENT_TYPES, DeviceStatus, KioskSessionEnded, OccupancyCounted


def strict_records(payload: bytes) -> list[EventRecord] | None:
    """What the codec makes of a payload, as records; None when it refuses any part of it."""
    try:
        decoded = decode_event_message(payload)
    except ContractError:
        return None
    if decoded.rejected:
        return None
    return [event_record(event) for event in decoded.events]


def every_kind_of_event() -> list[bytes]:
    return [encode_event(make_event(EVENT_TYPES[name], **VARIANTS[variant]))
            for name in TYPE_NAMES for variant in sorted(VARIANTS)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_what_devices_send_is_recognised_as_the_codec_reads_it(type_name: str, variant: str) -> None:
    event = make_event(EVENT_TYPES[type_name], **VARIANTS[variant])
    assert scan_events(encode_event(event)) == [event_record(event)]


def test_a_batch_of_every_kind_is_recognised_whole() -> None:
    events = every_kind_of_event()
    payload = encode_batch(events)
    records = scan_events(payload)
    assert records is not None and len(records) == len(events)
    assert records == strict_records(payload)


@pytest.mark.parametrize("value", [0, 7, 0.5, 12.25, 1e-05, 86400, 86400.0])
def test_numbers_written_as_python_writes_them_are_recognised(value: float) -> None:
    event = KioskSessionEnded.create(site_id="demo", device_id="kiosk-01", session_id="0" * 8 + "-0000-4000-8000-"
                                     + "0" * 12, duration_s=value, reason="visitor")
    assert scan_events(encode_event(event)) == [event_record(event)]


def text_of(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def canonical_text(cls: type = OccupancyCounted) -> str:
    return encode_event(make_event(cls)).decode()


def with_status_text(old: str, new: str) -> bytes:
    text = encode_event(make_event(DeviceStatus)).decode()
    assert old in text
    return text.replace(old, new, 1).encode()


# Each is either invalid, or valid but not canonical: the scanner must leave every one to the codec.
NOT_CANONICAL: dict[str, Any] = {
    "whitespace after a colon": lambda: canonical_text().replace('"type":', '"type": ').encode(),
    "keys in another order": lambda: text_of(dict(reversed(list(wire().items())))).encode(),
    "an optional field left out": lambda: text_of(wire(visit_id=...)).encode(),
    "a duplicate key": lambda: canonical_text().replace('"count":', '"count":1,"count":').encode(),
    "an unknown field": lambda: canonical_text().replace("}", ',"extra":1}').encode(),
    "an unknown type": lambda: canonical_text().replace("occupancy.counted", "occupancy.guessed").encode(),
    "a newer schema version": lambda: canonical_text().replace('"schema_version":1', '"schema_version":2').encode(),
    "NaN": lambda: canonical_text().replace('"window_s":', '"window_s":NaN,"x":').encode(),
    "a count too big": lambda: text_of(wire(count=100_001)).encode(),
    "a count written as a float": lambda: text_of(wire(count=12.0)).encode(),
    "a number not written as Python writes it": lambda: text_of(wire()).replace('"window_s":0.5',
                                                                               '"window_s":0.50').encode(),
    "a number with an exponent in capitals": lambda: text_of(wire()).replace('"window_s":0.5',
                                                                            '"window_s":5E-1').encode(),
    "a negative number": lambda: text_of(wire(window_s=-1)).encode(),
    "an overflowing number": lambda: text_of(wire()).replace('"window_s":0.5', '"window_s":1e400').encode(),
    "the 30th of February": lambda: text_of(wire(occurred_at="2026-02-30T10:00:00.000Z")).encode(),
    "hour 24": lambda: text_of(wire(occurred_at="2026-02-03T24:00:00.000Z")).encode(),
    "year 0": lambda: text_of(wire(occurred_at="0000-01-01T10:00:00.000Z")).encode(),
    "an escape in a text": lambda: with_status_text('"kind":"q', '"kind":"\\u0071'),
    "a quote escaped in a text": lambda: encode_event(make_event(EVENT_TYPES["command.result"],
                                                                 detail='say "hi"')),
    "a text too long": lambda: encode_event(make_event(EVENT_TYPES["command.result"])).replace(  # at its limit
        b'"detail":"', b'"detail":"x', 1),
    "a lone surrogate": lambda: canonical_text().replace('"zone_id":"', '"zone_id":"\\ud800').encode(),
    "invalid UTF-8": lambda: canonical_text().encode().replace(b"x-zone-id", b"x-zone\xff-id"),
    "an upper-case event id": lambda: text_of(wire(event_id=wire()["event_id"].upper())).encode(),
    "a visit id on a count": lambda: text_of(wire()).replace('"visit_id":null',
                                                            '"visit_id":"Abc_def-GHI0123456789z"').encode(),
    "trailing bytes": lambda: canonical_text().encode() + b" ",
    "a trailing newline": lambda: canonical_text().encode() + b"\n",
    "an empty batch": lambda: b'{"batch":[]}',
    "a batch with a trailing comma": lambda: b'{"batch":[' + canonical_text().encode() + b",]}",
    "a batch over the limit": lambda: encode_batch([canonical_text().encode()] * (MAX_BATCH_EVENTS + 1)),
    "a batch with a second key": lambda: b'{"batch":[' + canonical_text().encode() + b'],"more":1}',
    "nothing": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(NOT_CANONICAL))
def test_anything_else_is_left_to_the_codec(case: str) -> None:
    payload = NOT_CANONICAL[case]()
    assert scan_events(payload) is None


def test_the_codec_still_reads_valid_non_canonical_forms() -> None:
    """The fallback is not a refusal: these are stored, through the codec."""
    for case in ("whitespace after a colon", "keys in another order", "an optional field left out",
                 "a number not written as Python writes it", "an escape in a text", "a quote escaped in a text"):
        assert strict_records(NOT_CANONICAL[case]()), case


def mutate(payload: bytes, rng: random.Random) -> bytes:
    data = bytearray(payload)
    position = rng.randrange(len(data))
    match rng.randrange(5):
        case 0:  # flip to a character that means something in JSON or in our fields
            data[position] = ord(rng.choice('0123456789abcdefABCDEF-.:",{}[]eE+ \\nul7'))
        case 1:
            del data[position]
        case 2:
            data.insert(position, ord(rng.choice('0123456789-",: ')))
        case 3:
            data[position] = rng.randrange(256)
        case _:  # move a slice: reorders keys, merges fields
            end = min(len(data), position + rng.randrange(1, 40))
            piece = data[position:end]
            del data[position:end]
            target = rng.randrange(len(data) + 1)
            data[target:target] = piece
    return bytes(data)


def test_mutated_payloads_are_recognised_only_when_the_codec_agrees() -> None:
    rng = random.Random(20261125)
    originals = [*every_kind_of_event(), encode_batch(every_kind_of_event()[:5])]
    recognised = 0
    for _ in range(6000):
        payload = rng.choice(originals)
        for _ in range(rng.randrange(1, 3)):
            payload = mutate(payload, rng)
        records = scan_events(payload)
        if records is not None:
            recognised += 1
            assert records == strict_records(payload), payload
    assert recognised > 100, "the mutations should leave some payloads canonical (a changed digit, say)"
