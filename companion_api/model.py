"""What a site sends in a sync batch, and what the companion store returns: plain immutable values, no I/O.

`parse_batch` turns the decoded JSON body of `POST /sync/v1/batch` (docs: design of issue 9, "Wire") into a
`SyncBatch`, or raises `BatchError` with the HTTP status and a message naming the part at fault: 400 for a body
of the wrong shape, 413 for too many rows, 422 for a bad row (its list and index, and why). One bad row refuses
the whole batch, so a site never believes a half-stored batch was stored.

The rows of the hot path (`AnalyticsRow`) are named tuples, ready for `executemany` and `COPY` as they are: a
batch holds up to 20,000 of them and the store's ingest is measured against a bare `executemany`. The other
values are frozen dataclasses.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from protocol.codec import MAX_EVENT_BYTES
from protocol.fields import IDENTIFIER, matches
from protocol.ids import VISIT_ID

BATCH_VERSION = 1
MAX_COMPRESSED_BYTES = 16 * 1024 * 1024
"""Largest gzip body the sync endpoint reads."""
MAX_DECOMPRESSED_BYTES = 128 * 1024 * 1024
"""Largest body once decompressed (the endpoint stops decompressing there: a gzip bomb stays small)."""
MAX_ANALYTICS = 20_000
MAX_TAKE_HOME = 20_000
MAX_JOINS = 5_000
MAX_ERASURES = 5_000
MAX_FIELDS_CHARS = MAX_EVENT_BYTES
"""Longest `fields` of one analytics row, as compact JSON: no more than a whole event may carry."""
MAX_PACK_BYTES = 512 * 1024 * 1024
"""Largest content pack the store keeps for a site."""
MAX_SEQ = 2**63 - 1
MAX_DWELL_S = 7 * 24 * 3600.0
TAKE_HOME_KINDS = ("collected", "opened", "lingered")

EVENT_TYPE = re.compile(r"^[a-z][a-z_]{0,30}\.[a-z][a-z_]{0,30}\Z")
"""An event type such as `artwork.viewed` (two `protocol.fields.KIND`s joined by a dot). Not checked against this
build's list of types: a hub newer than the companion may send a type it does not know yet, and figures should not
stop for that."""
DAY = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\Z")
INSTANT = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                     r"\.[0-9]{3}Z\Z")
"""An instant as the wire writes it (`protocol.ids.format_instant`), ASCII digits only."""
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
DIGEST = VISIT_ID
"""A keyed digest made at the site (an analytics uid, a visitor pseudonym): 24 URL-safe characters, the same
alphabet and range as a visit id."""

_TOP_KEYS = frozenset({"v", "site_id", "analytics", "take_home", "joins", "erasures", "events_after",
                       "erasures_after", "pack"})
_PACK_KEYS = frozenset({"sha256", "pack_id", "pack_version"})


_STRICT_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _encode_fields(value: dict[str, Any]) -> str:
    """A row's fields as compact JSON text, in their order. orjson refuses a lone surrogate and an integer over 64
    bits (TypeError), and writes UTF-8: the text any SQLite or PostgreSQL database can hold. It writes NaN and
    Infinity as null, though: a null (rare: the sites leave empty fields out) is checked again by the standard
    encoder, which refuses them (ValueError)."""
    text = orjson.dumps(value).decode("utf-8")
    if "null" in text:
        _STRICT_ENCODE(value)
    return text


def fast_json(raw: bytes) -> Any:
    """JSON bytes parsed by orjson; ValueError (its JSONDecodeError) for anything that is not strict JSON."""
    return orjson.loads(raw)




class StoreError(Exception):
    """The store cannot work as configured (database unreachable, folder missing, schema newer than this
    software): one line naming what and the fix, for an operator."""


class BatchError(Exception):
    """A batch the service refuses: `status` is the HTTP status to answer, `message` says what and where."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AnalyticsRow(NamedTuple):
    """One analytics record, in the column order of the store's `analytics` table (without `received_at`)."""

    uid: str
    site_id: str
    type: str
    schema_version: int
    device_id: str
    period: str
    visitor: str | None
    fields: str
    """The record's own fields as compact JSON text."""


@dataclass(frozen=True, slots=True)
class TakeHomeRow:
    """A work a visit collected, opened or lingered at: one item of its take-home page."""

    visit_id: str
    artwork_id: str
    kind: str
    site_id: str
    day: str
    dwell_s: float | None = None


@dataclass(frozen=True, slots=True)
class JoinRow:
    """Two visits that became one: the take-home page of either shows the works of both."""

    visit_id: str
    other_visit_id: str
    site_id: str
    day: str


@dataclass(frozen=True, slots=True)
class ErasureRow:
    """A visit the site erased, with the pseudonym its analytics carry (made with the site's key)."""

    visit_id: str
    visitor: str


@dataclass(frozen=True, slots=True)
class PackRef:
    """The content pack a site runs now."""

    sha256: str
    pack_id: str
    pack_version: int


@dataclass(frozen=True)
class SyncBatch:
    """One validated sync batch of a site."""

    site_id: str
    analytics: tuple[AnalyticsRow, ...] = ()
    take_home: tuple[TakeHomeRow, ...] = ()
    joins: tuple[JoinRow, ...] = ()
    erasures: tuple[ErasureRow, ...] = ()
    events_after: int = 0
    """The site holds every phone event of this target up to this seq: the companion may delete them."""
    erasures_after: int = 0
    """The site has applied every erasure of this target up to this seq."""
    pack: PackRef | None = None


@dataclass(frozen=True)
class IngestResult:
    """What one batch changed. A row already stored (or a take-home row that changes nothing) is a duplicate; a
    take-home or join row of an erased visit is refused (`refused_erased`), not stored."""

    analytics: int
    take_home: int
    joins: int
    erasures: int
    duplicates: int
    refused_erased: int
    events_acked: int
    """Phone events deleted because the site acknowledged them (`events_after`)."""
    pack_wanted: bool
    """The batch names a pack the store does not hold for the site: the site should PUT it."""

    def stored(self) -> dict[str, int]:
        """The response's `stored` object."""
        return {"analytics": self.analytics, "take_home": self.take_home, "joins": self.joins,
                "erasures": self.erasures}


@dataclass(frozen=True, slots=True)
class DownErasure:
    seq: int
    visit_id: str


@dataclass(frozen=True, slots=True)
class DownEvent:
    seq: int
    event: str
    """The event as wire JSON text (`protocol.codec.encode_event`)."""


@dataclass(frozen=True)
class Down:
    """What goes down to a site in a sync response, oldest first."""

    erasures: tuple[DownErasure, ...]
    events: tuple[DownEvent, ...]
    more: bool
    """More erasures or events wait beyond these."""


@dataclass(frozen=True)
class VisitView:
    """A visit's take-home items, with those of every visit joined to it."""

    items: list[TakeHomeRow]
    visit_ids: list[str]
    """The visit asked for first, then the visits joined to it, nearest first."""


@dataclass(frozen=True)
class PurgeResult:
    """Rows deleted by retention, per table."""

    take_home: int
    joins: int
    phone_events: int
    erasures: int
    analytics: int


@dataclass(frozen=True)
class PackInfo:
    """The content pack a store holds for a site (the latest one the site sent)."""

    site_id: str
    sha256: str
    pack_id: str
    pack_version: int
    size: int
    received_at: str


# --- parsing ------------------------------------------------------------------------------------------------


def parse_batch(obj: Any) -> SyncBatch:
    """Validate a decoded batch body; `BatchError` (400, 413 or 422) names the first fault found."""
    if not isinstance(obj, dict):
        raise BatchError(400, "the batch must be a JSON object")
    unknown = obj.keys() - _TOP_KEYS
    if unknown:
        raise BatchError(400, f"unknown field(s) in the batch: {', '.join(sorted(str(k)[:40] for k in unknown))}")
    version = obj.get("v")
    if type(version) is not int or version != BATCH_VERSION:
        raise BatchError(400, f"unsupported batch version {str(version)[:20]!r}: this service reads v {BATCH_VERSION}")
    site_id = obj.get("site_id")
    if type(site_id) is not str or not matches(IDENTIFIER, site_id):
        raise BatchError(400, "site_id must be an identifier (lowercase letters, digits and '-', at most 63)")
    analytics = _rows(obj, "analytics", MAX_ANALYTICS)
    take_home = _rows(obj, "take_home", MAX_TAKE_HOME)
    joins = _rows(obj, "joins", MAX_JOINS)
    erasures = _rows(obj, "erasures", MAX_ERASURES)
    return SyncBatch(site_id, _analytics(analytics, site_id), _take_home(take_home, site_id),
                     _joins(joins, site_id), _erasures(erasures), _seq(obj, "events_after"),
                     _seq(obj, "erasures_after"), _pack(obj.get("pack")))


def _rows(obj: dict[str, Any], name: str, limit: int) -> list[Any]:
    rows = obj.get(name, [])
    if type(rows) is not list:
        raise BatchError(400, f"{name} must be a list of rows")
    if len(rows) > limit:
        raise BatchError(413, f"{name} has {len(rows)} rows; a batch may hold at most {limit}: send smaller batches")
    return rows


def _seq(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise BatchError(400, f"{name} must be a whole number from 0 to {MAX_SEQ}")
    return value


def _pack(value: Any) -> PackRef | None:
    if value is None:
        return None
    if (not isinstance(value, dict) or value.keys() != _PACK_KEYS or type(value["sha256"]) is not str
            or SHA256.match(value["sha256"]) is None or type(value["pack_id"]) is not str
            or not matches(IDENTIFIER, value["pack_id"]) or type(value["pack_version"]) is not int
            or not 0 <= value["pack_version"] <= 2**31 - 1):
        raise BatchError(400, "pack must be null or {\"sha256\": 64 lowercase hex digits, \"pack_id\": an identifier, "
                              "\"pack_version\": a whole number ≥ 0}")
    return PackRef(value["sha256"], value["pack_id"], value["pack_version"])


def _analytics(rows: list[Any], site_id: str) -> tuple[AnalyticsRow, ...]:
    # The fast path: one expression of cheap tests per row; the slow path (`_analytics_fault`) only runs to word
    # the refusal. uids are all different, so they skip `matches`' cache of known-good values.
    # A batch repeats a few types, devices and quarter hours thousands of times, and a visitor tens of times: each
    # value is checked once per batch, then found in a set (a call to `matches` per value would cost more).
    out: list[AnalyticsRow] = []
    append, make, encode, uid_match = out.append, AnalyticsRow._make, _encode_fields, DIGEST.match
    good_types: set[str] = set()
    good_devices: set[str] = set()
    good_periods: set[str] = set()
    good_visitors: set[str] = set()
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != 7:
            raise _row_fault("analytics", index, "must be a list of 7 values [uid, type, schema_version, device_id, "
                                                 "period, visitor, fields]")
        uid, type_, version, device_id, period, visitor, fields = row
        if not (type(uid) is str and uid_match(uid) is not None and type(version) is int and 0 < version <= 1000
                and type(fields) is dict
                and type(type_) is str and (type_ in good_types or _checked(type_, EVENT_TYPE, good_types))
                and type(device_id) is str
                and (device_id in good_devices or _checked(device_id, IDENTIFIER, good_devices))
                and type(period) is str and (period in good_periods or _checked(period, INSTANT, good_periods))
                and (visitor is None or (type(visitor) is str
                                         and (visitor in good_visitors or _checked(visitor, DIGEST, good_visitors))))):
            raise _row_fault("analytics", index, _analytics_fault(row))
        try:
            text = encode(fields)
        except (ValueError, TypeError, RecursionError):
            raise _row_fault("analytics", index, "fields must be plain JSON (no NaN or Infinity)") from None
        if len(text) > MAX_FIELDS_CHARS:
            raise _row_fault("analytics", index, f"fields are longer than {MAX_FIELDS_CHARS} characters as JSON")
        append(make((uid, site_id, type_, version, device_id, period, visitor, text)))
    return tuple(out)


def _checked(value: str, pattern: re.Pattern[str], good: set[str]) -> bool:
    """Whether `value` matches `pattern`; remembered in `good` when it does."""
    if pattern.match(value) is not None:
        good.add(value)
        return True
    return False


def _analytics_fault(row: list[Any]) -> str:
    uid, type_, version, device_id, period, visitor, fields = row
    for reason in (_digest_fault("uid", uid, optional=False),
                   None if type(type_) is str and EVENT_TYPE.match(type_) else
                   f"type must be an event type such as artwork.viewed; got {_show(type_)}",
                   None if type(version) is int and 0 < version <= 1000 else
                   f"schema_version must be a whole number from 1 to 1000; got {_show(version)}",
                   _identifier_fault("device_id", device_id),
                   None if type(period) is str and INSTANT.match(period) else
                   f"period must be an instant such as 2026-11-25T17:00:00.000Z; got {_show(period)}",
                   _digest_fault("visitor", visitor, optional=True),
                   None if type(fields) is dict else f"fields must be a JSON object; got {_show(fields)}"):
        if reason is not None:
            return reason
    return "is invalid"  # pragma: no cover - the fast path and this list test the same things


def _take_home(rows: list[Any], site_id: str) -> tuple[TakeHomeRow, ...]:
    out: list[TakeHomeRow] = []
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != 5:
            raise _row_fault("take_home", index, "must be a list of 5 values [visit_id, artwork_id, kind, day, "
                                                 "dwell_s]")
        visit_id, artwork_id, kind, day, dwell_s = row
        reason = (_visit_fault("visit_id", visit_id) or _identifier_fault("artwork_id", artwork_id)
                  or (None if type(kind) is str and kind in TAKE_HOME_KINDS else
                      f"kind must be one of {', '.join(TAKE_HOME_KINDS)}; got {_show(kind)}")
                  or _day_fault(day) or _dwell_fault(dwell_s))
        if reason is not None:
            raise _row_fault("take_home", index, reason)
        out.append(TakeHomeRow(visit_id, artwork_id, kind, site_id, day, None if dwell_s is None else float(dwell_s)))
    return tuple(out)


def _joins(rows: list[Any], site_id: str) -> tuple[JoinRow, ...]:
    out: list[JoinRow] = []
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != 3:
            raise _row_fault("joins", index, "must be a list of 3 values [visit_id, other_visit_id, day]")
        visit_id, other, day = row
        reason = _visit_fault("visit_id", visit_id) or _visit_fault("other_visit_id", other) or _day_fault(day)
        if reason is not None:
            raise _row_fault("joins", index, reason)
        out.append(JoinRow(visit_id, other, site_id, day))
    return tuple(out)


def _erasures(rows: list[Any]) -> tuple[ErasureRow, ...]:
    out: list[ErasureRow] = []
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != 2:
            raise _row_fault("erasures", index, "must be a list of 2 values [visit_id, visitor_pseudonym]")
        visit_id, visitor = row
        reason = _visit_fault("visit_id", visit_id) or _digest_fault("visitor_pseudonym", visitor, optional=False)
        if reason is not None:
            raise _row_fault("erasures", index, reason)
        out.append(ErasureRow(visit_id, visitor))
    return tuple(out)


def _row_fault(name: str, index: int, reason: str) -> BatchError:
    return BatchError(422, f"{name}[{index}]: {reason}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:80])
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _visit_fault(name: str, value: Any) -> str | None:
    if type(value) is str and matches(VISIT_ID, value):
        return None
    return f"{name} must be a visit id (URL-safe, 22 to 64 characters); got {_show(value)}"


def _digest_fault(name: str, value: Any, *, optional: bool) -> str | None:
    if (optional and value is None) or (type(value) is str and DIGEST.match(value) is not None):
        return None
    null = "null or " if optional else ""
    return f"{name} must be {null}a digest (URL-safe, 22 to 64 characters); got {_show(value)}"


def _identifier_fault(name: str, value: Any) -> str | None:
    if type(value) is str and matches(IDENTIFIER, value):
        return None
    return f"{name} must be an identifier (lowercase letters, digits and '-', at most 63); got {_show(value)}"


def _day_fault(value: Any) -> str | None:
    if type(value) is str and matches(DAY, value):
        return None
    return f"day must be a date such as 2026-11-25; got {_show(value)}"


def _dwell_fault(value: Any) -> str | None:
    if value is None or ((type(value) is int or (type(value) is float and math.isfinite(value)))
                         and 0 <= value <= MAX_DWELL_S):
        return None
    return f"dwell_s must be null or a number of seconds from 0 to {int(MAX_DWELL_S)}; got {_show(value)}"


PACK_CHUNK = 4 * 1024 * 1024
"""Bytes of a pack file read at a time while it is stored: a pack of hundreds of megabytes never sits in memory."""


def pack_chunks(path: Path, size: int) -> Iterator[bytes]:
    """The first `size` bytes of the file at `path`, in chunks; ValueError if the file is shorter by then (it
    changed while it was being stored)."""
    with path.open("rb") as source:
        remaining = size
        while remaining:
            chunk = source.read(min(PACK_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"{path} became shorter while it was being stored")
            yield chunk
            remaining -= len(chunk)
