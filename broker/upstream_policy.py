"""What of a stored event may leave the site, and in what form: the anonymisation policy the hub applies before
anything goes upstream. Pure: no I/O, no clock. The upstream sync (issue 9) sends only what `upstream_records`
returns; this module is the one place that decides it, field by field.

Two kinds of record leave the site:

- **Analytics** (`AnalyticsRecord`): the raw material of the museum's figures. The event's id becomes a keyed
  digest (a UUIDv7 carries its millisecond, and upstream needs only a stable key to stay idempotent); its time is
  floored to the quarter hour; a visit id becomes a keyed pseudonym upstream cannot reverse (the key never leaves
  the site); a kiosk session id likewise; durations are rounded to 5 s; tag ids are dropped. Language and
  accessibility events lose their visit altogether: a mode such as sign language hints at a disability, a special
  category of data. Operational types (device health, commands, beacons, tags) stay on the site.
- **Take-home items** (`TakeHomeItem`): what a visit collected, opened and lingered at, for its take-home page,
  keyed by the stored `visit_id`, which is already the one-way derivation of the visitor's token
  (`protocol.ids.visit_id_for`): only the holder of the take-home URL can compute it. Dated by day only.

`FIELD_POLICY` names every own field of every analytics type; `SITE_ONLY` lists the rest. A test fails when an
event type or field is added without a decision here.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from protocol.canonical import EventRecord
from protocol.ids import parse_instant

FieldRule = Literal["keep", "pseudonym", "visit", "round", "drop"]
VisitRule = Literal["pseudonym", "drop"]

PERIOD = timedelta(minutes=15)
"""Analytics times are floored to this: enough for hourly and daily figures, too coarse to single out whoever was
alone in a room at 10:42:17."""
ROUND_S = 5.0
"""Durations (a session's length, a stop's dwell) are rounded to this many seconds."""
KEY_BYTES = 32

FIELD_POLICY: dict[str, tuple[VisitRule, dict[str, FieldRule]]] = {
    "kiosk.session_started": ("pseudonym", {"session_id": "pseudonym", "language": "keep"}),
    "kiosk.session_ended": ("pseudonym", {"session_id": "pseudonym", "duration_s": "round", "reason": "keep"}),
    "artwork.viewed": ("pseudonym", {"artwork_id": "keep", "source": "keep", "language": "keep",
                                     "session_id": "pseudonym"}),
    "artwork.collected": ("pseudonym", {"artwork_id": "keep", "source": "keep"}),
    "visitor.language_changed": ("drop", {"from_language": "keep", "to_language": "keep"}),
    "visitor.accessibility_changed": ("drop", {"mode": "keep", "enabled": "keep"}),
    "visit.linked": ("pseudonym", {"channel": "keep", "artwork_id": "keep", "tag_id": "drop"}),
    "visit.joined": ("pseudonym", {"other_visit_id": "visit"}),
    "proximity.entered": ("pseudonym", {"artwork_id": "keep", "zone_id": "keep", "tag_id": "drop"}),
    "proximity.left": ("pseudonym", {"artwork_id": "keep", "zone_id": "keep", "dwell_s": "round", "tag_id": "drop"}),
    "occupancy.counted": ("drop", {"zone_id": "keep", "count": "keep", "window_s": "keep"}),
}
"""Analytics types: what happens to the visit id, and to each own field. `visit`: a field holding another visit's
id gets the same keyed pseudonym as a `visit_id` would, so joined visits stay joined in the figures."""

SITE_ONLY = frozenset({"tag.returned", "beacon.health", "beacon.alert", "scanner.status", "device.status",
                       "content.pack_applied", "content.pack_refused", "command.result"})
"""Types that never leave the site: device and beacon health, commands, content, and the return of a lent tag
(which says nothing of a visit once the hub has resolved it)."""

TAKE_HOME_KINDS = {"artwork.collected": "collected", "artwork.viewed": "opened", "proximity.left": "lingered"}


@dataclass(frozen=True)
class AnalyticsRecord:
    uid: str
    """The event's quarter hour (YYYYMMDDhhmm) and a keyed digest of its id: the same event always gives the same
    uid (idempotent upstream), and nothing upstream can recover the id from it."""
    type: str
    schema_version: int
    site_id: str
    device_id: str
    """A kiosk or station: museum equipment, never a visitor's."""
    period: str
    """The start of the quarter hour the event happened in."""
    visitor: str | None
    """The keyed pseudonym of the visit, when the policy keeps one."""
    fields: dict[str, Any]


@dataclass(frozen=True)
class TakeHomeItem:
    visit_id: str
    """The stored derivation of the visitor's token (what the companion computes from the take-home URL)."""
    artwork_id: str
    kind: str
    """collected, opened or lingered."""
    day: str
    """The date (UTC) it happened, YYYY-MM-DD."""
    dwell_s: float | None = None


@dataclass(frozen=True)
class TakeHomeJoin:
    """Two visits that became one (`visit.joined`): the take-home page of either shows the works of both. Both
    are stored derivations of tokens, as in `TakeHomeItem`."""

    visit_id: str
    other_visit_id: str
    day: str


def new_pseudonym_key() -> bytes:
    """A site's key for pseudonyms and uids: random, made once, kept on the site server and never sent."""
    return secrets.token_bytes(KEY_BYTES)


def _digest(key: bytes, label: bytes, value: str) -> str:
    mac = hmac.digest(key, label + b"\0" + value.encode(), "sha256")
    return base64.urlsafe_b64encode(mac[:18]).decode()  # 144 bits: 24 characters, no padding


_VISITOR_CACHE_SIZE = 100_000
_visitors: dict[tuple[bytes, str], str] = {}
"""Visit pseudonyms already computed: a visit has tens of events, and the HMAC is most of the policy's cost when a
day's backlog drains. Bounded; cleared when full."""


def _visitor(key: bytes, visit_id: str) -> str:
    found = _visitors.get((key, visit_id))
    if found is None:
        if len(_visitors) >= _VISITOR_CACHE_SIZE:
            _visitors.clear()
        found = _visitors[(key, visit_id)] = _digest(key, b"visit", visit_id)
    return found


def _period_of(occurred_at: str) -> str:
    """`floor_period` on the wire text itself (`2026-11-30T10:42:17.123Z` → `2026-11-30T10:30:00.000Z`): stored
    instants are all in that one UTC form, and cutting the text is several times cheaper than parsing it."""
    minute = int(occurred_at[14:16])
    return f"{occurred_at[:14]}{minute - minute % 15:02d}:00.000Z"


def floor_period(instant: datetime) -> datetime:
    seconds = int(PERIOD.total_seconds())
    epoch = int(instant.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=instant.tzinfo)


def _rounded(value: Any) -> Any:
    return round(float(value) / ROUND_S) * ROUND_S if isinstance(value, int | float) else value


def upstream_records(record: EventRecord,
                     key: bytes) -> tuple[AnalyticsRecord | None, TakeHomeItem | TakeHomeJoin | None]:
    """What may leave the site of one stored event: its analytics record (None for a site-only type) and its
    take-home item (None unless it is something a visit collected, opened or lingered at). KeyError for a type
    the policy does not know: the sync must stop rather than guess."""
    if len(key) < 16:
        raise ValueError("the pseudonym key must be at least 16 bytes (new_pseudonym_key() makes 32)")
    if record.type in SITE_ONLY:
        return None, None
    visit_rule, rules = FIELD_POLICY[record.type]
    own = json.loads(record.fields)
    unknown = own.keys() - rules.keys()
    if unknown:
        raise KeyError(f"{record.type} has field(s) {', '.join(sorted(unknown))} the upstream policy does not name")
    fields: dict[str, Any] = {}
    for name, rule in rules.items():
        value = own.get(name)
        if rule == "drop" or value is None:
            continue
        if rule == "pseudonym":
            fields[name] = _digest(key, name.encode(), str(value))
        elif rule == "visit":
            fields[name] = _digest(key, b"visit", str(value))
        elif rule == "round":
            fields[name] = _rounded(value)
        else:
            fields[name] = value
    occurred_at = record.occurred_at
    if len(occurred_at) != 24:
        parse_instant(occurred_at)  # raises the ValueError that says what is wrong with it
    day = occurred_at[:10]
    visitor = (_visitor(key, record.visit_id)
               if visit_rule == "pseudonym" and record.visit_id is not None else None)
    period = _period_of(occurred_at)
    # The quarter hour first (YYYYMMDDhhmm), then the digest: uids then arrive at the companion nearly in key
    # order (a site sends its events in time order), so its table grows at one end instead of at random pages.
    uid = period[0:4] + period[5:7] + period[8:10] + period[11:13] + period[14:16] + _digest(key, b"event",
                                                                                           record.event_id)
    analytics = AnalyticsRecord(uid, record.type, record.schema_version, record.site_id, record.device_id, period,
                                visitor, fields)
    take_home: TakeHomeItem | TakeHomeJoin | None = None
    if record.type == "visit.joined" and record.visit_id is not None:
        return analytics, TakeHomeJoin(record.visit_id, own["other_visit_id"], day)
    kind = TAKE_HOME_KINDS.get(record.type)
    if kind is not None and record.visit_id is not None:
        dwell = _rounded(own["dwell_s"]) if record.type == "proximity.left" else None
        take_home = TakeHomeItem(record.visit_id, own["artwork_id"], kind, day, dwell)
    return analytics, take_home


def visit_pseudonym(visit_id: str, key: bytes) -> str:
    """The pseudonym analytics records carry for `visit_id`: sent beside an erasure so upstream can delete the
    visit's analytics too, without ever being able to compute it itself."""
    return _visitor(key, visit_id)
