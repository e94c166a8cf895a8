"""Visitor tags ↔ visits, at the hub: the one place a lent tag is tied to the visit it was lent to.

Stations and QR readers only know a tag by its `tag_id`; the entrance reader says which visit a tag is lent to
(`visit.linked` with `tag_id`) and when it comes back (`tag.returned`). The hub keeps that link in its database
(`tag_links`, migration 4 of `broker.hub_store`), gives each tagged event the visit of its tag, and stores the event
with `tag_id` null: no stored event carries a tag, and once the tag is returned (or its link is older than
`HubSettings.tag_link_max_hours`) nothing in the database ties the tag to the visit any more.

Only records of the four types below whose fields hold a non-null `tag_id` are touched (`carries_tag`): every other
event goes the hub's usual way at its usual cost. The link writes happen in the transaction that stores the round
(`HubStore.commit_round`), in the order the events were received, and only for events stored now: a resend of an
event already stored changes no link.

Bound: one row per tag, at most one per `visit.linked` event stored in the last `tag_link_max_hours` (the purge
deletes older ones), each smaller than that event's own row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence, Set
from dataclasses import dataclass

from protocol.canonical import EventRecord
from protocol.codec import dumps_text
from protocol.events import ProximityEntered, ProximityLeft, TagReturned, VisitLinked

LINKED = VisitLinked.type
RETURNED = TagReturned.type
TAGGED_TYPES = frozenset({LINKED, RETURNED, ProximityEntered.type, ProximityLeft.type})
TAG_MARK = '"tag_id":"'
"""How a non-null `tag_id` starts in a record's fields (compact JSON; a `"` inside a string value is escaped, so
only the key itself can match)."""

_INSERT_EVENT = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# A late copy of an older lending (a device's backlog) must not replace a newer link: only a newer `since` wins.
_UPSERT_LINK = ("INSERT INTO tag_links (tag_id, visit_id, since) VALUES (?, ?, ?) ON CONFLICT(tag_id) DO UPDATE "
                "SET visit_id = excluded.visit_id, since = excluded.since WHERE excluded.since >= since")


def carries_tag(record: EventRecord) -> bool:
    """Whether the hub must resolve this record's tag before storing it."""
    return record.type in TAGGED_TYPES and TAG_MARK in record.fields


def without_tag(record: EventRecord) -> tuple[str, EventRecord]:
    """(the record's tag_id, the record with `tag_id` null): the form it is stored in, as the codec would encode
    the event without a tag."""
    own = json.loads(record.fields)
    tag = own["tag_id"]
    own["tag_id"] = None
    return tag, record._replace(fields=dumps_text(own))


@dataclass(frozen=True)
class TaggedResult:
    inserted: int
    """How many of the records were new (the others were resends, or another device's event id)."""
    stored: list[EventRecord]
    """The records as stored (visit resolved, tag removed), in the order given: for conflict checks, whose
    quarantine copy then carries no tag either. Without those refused as of an erased visit."""
    refused_erased: int = 0
    """Records of an erased visit: not stored, and their tag's link unchanged."""


def store_tagged(conn: sqlite3.Connection, records: Sequence[EventRecord], received_at: str,
                 erased: Set[str] = frozenset()) -> TaggedResult:
    """Resolve, store and apply each tagged record in order, inside the caller's transaction.

    - `visit.linked`: stored as is without its tag; the tag is now lent to the event's visit, since its
      `occurred_at` (a tag lent again replaces the old link, unless the old one is newer).
    - `proximity.entered` / `proximity.left`: `visit_id` is the tag's visit if it was lent at `occurred_at` or
      before, else null (a tag lent to no visit, or an event older than the lending: the figures still count it).
    - `tag.returned`: `visit_id` likewise; the link is deleted when it applied.

    A record whose visit is in `erased` (the erased ones among the records' own visits) is refused: a lending to
    an erased visit makes no link. A link never points to an erased visit (the erasure deleted its links in the
    transaction that made the tombstone), so a resolved visit needs no look-up of its own.
    """
    inserted = refused = 0
    stored: list[EventRecord] = []
    for record in records:
        tag, bare = without_tag(record)
        if bare.type == LINKED:
            visit = bare.visit_id
        else:
            row = conn.execute("SELECT visit_id, since FROM tag_links WHERE tag_id = ?", (tag,)).fetchone()
            visit = row[0] if row is not None and row[1] <= bare.occurred_at else None
            bare = bare._replace(visit_id=visit)
        if visit is not None and visit in erased:
            refused += 1
            continue
        stored.append(bare)
        if not conn.execute(_INSERT_EVENT, (*bare, received_at)).rowcount:
            continue  # stored before (or another device's id): its link change was made then, if ever
        inserted += 1
        if bare.type == LINKED:
            conn.execute(_UPSERT_LINK, (tag, visit, bare.occurred_at))
        elif bare.type == RETURNED and visit is not None:
            conn.execute("DELETE FROM tag_links WHERE tag_id = ?", (tag,))
    return TaggedResult(inserted, stored, refused)


def purge(conn: sqlite3.Connection, cutoff: str) -> int:
    """Delete the links lent before `cutoff` (a wire instant), inside the caller's transaction; returns how many."""
    return conn.execute("DELETE FROM tag_links WHERE since < ?", (cutoff,)).rowcount
