"""The upstream sync's side of the hub database: what it reads, and what it applies there.

The sync (`broker.upstream_sync`, `museum sync run`) is a process of its own beside the hub. It opens the hub's
database with a connection of its own: WAL lets it read while the hub writes, and the two take turns to write
(each commit is short; `BUSY_TIMEOUT_MS` covers the other's).

- Reading, per target, in two parts (`read_batch`), each with its cursor (`Cursor`):
  - the main range: events in `event_id` order (the primary key: UUIDv7s, ordered by creation time) after the
    target's `after_event_id`, but never beyond the **horizon** (`sync_horizon`, one row), which the sync raises
    (`raise_horizon`) to a little before now (`HORIZON_SLACK_S`), never lowering it;
  - the late rows (`late_events`) after the target's `after_late_seq`: the hub, in the write transaction that
    stores a round, reads the horizon and records each event it stores at or below it (a device's outbox drained
    after an outage). Raising the horizon is a write transaction too, so the two are serialised: an event was
    either committed before the raise, and any read after the raise finds it in the main range, or after, and the
    hub saw the raised horizon and recorded it as late. No clock is trusted for that; the slack only keeps late
    rows rare (a live event is stored within seconds of its creation, long before the horizon reaches its id).
  A late row whose event the target's main range has not reached yet is skipped (the main range sends it), so
  each event goes once; one whose event is gone (purged, erased) is skipped too. The hub writes nothing more
  in live operation: no index, one read of the horizon per commit.
- Applying what a target's reply brought down, in ONE transaction with that target's cursors (`apply_down`):
  erasures (the visit's events and tag links deleted, a tombstone in `erased_visits` so that nothing of the visit
  is ever stored again) and phone events (validated as the hub validates a device's). A crash before the commit
  leaves nothing applied and the cursors where they were: the target sends the batch again, and the reply brings
  the same things down again; every step is idempotent.

Finding an erased visit's events needs a pass over the events table (no index on visit_id: it would cost the hub
on every event, see `hub_store._v1`). That pass is a read, made before the write transaction, so the hub keeps
storing meanwhile; the write transaction then deletes the rows found by their key, and looks again only where a
row stored since the pass can be: above the horizon the pass saw (a range of the primary key: the last minutes),
or in the late rows added since.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from broker.hub import TimeWindow
from broker.hub_store import (
    FUTURE_TOLERANCE_DAYS,
    PAST_TOLERANCE_DAYS,
    HubStore,
    erased_among,
    late_candidates,
    record_late,
)
from broker.tag_links import carries_tag
from protocol.canonical import EventRecord, event_record
from protocol.codec import decode_event, dumps_strict
from protocol.errors import ContractError
from protocol.ids import event_id_floor, format_instant, is_visit_id

BUSY_TIMEOUT_MS = 10_000
"""How long a statement waits for the hub's write to end before failing: a hub commit takes milliseconds."""
MAX_REASONS = 5
"""Reasons kept per `apply_down` for the phone events it refused: enough to diagnose, bounded whatever comes."""
HORIZON_SLACK_S = 120.0
"""How far behind the clock the sync keeps its horizon by default: far more than a live event takes to reach the
hub (milliseconds to seconds), so that live events never make late rows; only a device's backlog does."""


@dataclass(frozen=True)
class Cursor:
    """Where a target's reading has got to. `Cursor()` is the start."""

    event_id: str = ""
    """The main range: every event up to this id (and at or below the horizon when it was read) was sent."""
    late_seq: int = 0
    """The late path: every late row up to this seq was read."""


@dataclass(frozen=True)
class TargetState:
    name: str
    cursor: Cursor
    tombstones_sent: int
    """The highest `erased_visits.seq` the target has acknowledged receiving."""
    events_after: int
    """The highest phone-event seq of this target the site has stored."""
    erasures_after: int
    """The highest erasure seq of this target the site has applied."""
    updated_at: str | None
    """When the target last acknowledged a batch (None: never)."""


@dataclass(frozen=True)
class Batch:
    records: list[EventRecord]
    """The late events first (ascending seq), then the main range (ascending event_id)."""
    cursor: Cursor
    """After the last row read: where the next batch starts (the given cursor when nothing was read)."""
    more: bool = False
    """As many rows were read as the limit allowed: more may wait right after `cursor`."""


@dataclass(frozen=True)
class Tombstone:
    seq: int
    visit_id: str


@dataclass(frozen=True)
class DownResult:
    visits_erased: int
    """Visits newly erased (the others had a tombstone already)."""
    events_deleted: int
    links_deleted: int
    stored: int
    """Phone events stored now."""
    duplicates: int
    """Phone events stored before (a reply delivered again)."""
    invalid: int
    """Phone events or erasures refused as invalid, skipped."""
    refused_erased: int
    """Phone events of an erased visit: not stored."""
    reasons: list[str] = field(default_factory=list)
    """Why the first few invalid ones were refused."""


def open_hub_db(path: Path) -> sqlite3.Connection:
    """A writing connection to the hub's database, migrated first (so the sync may start before the hub ever
    ran the version that added its tables). OSError or sqlite3.Error if it cannot be opened."""
    HubStore(path).close()  # creates it 0600 and migrates, as the hub would
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # what a target is told is stored must survive a power cut
    conn.execute("PRAGMA secure_delete=ON")  # erased events must be gone from the file too
    return conn


def target_state(conn: sqlite3.Connection, name: str) -> TargetState:
    """A target's cursors (all at the start for a target never synced)."""
    row = conn.execute("SELECT after_event_id, after_late_seq, tombstones_sent, events_after, erasures_after, "
                       "updated_at FROM sync_targets WHERE name = ?", (name,)).fetchone()
    if row is None:
        return TargetState(name, Cursor(), 0, 0, 0, None)
    return TargetState(name, Cursor(row[0], row[1]), row[2], row[3], row[4], row[5])


def target_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM sync_targets ORDER BY name")]


# --- the horizon --------------------------------------------------------------------------------------------------

def horizon(conn: sqlite3.Connection) -> str | None:
    """The sync's horizon: the highest event_id its main range may read (None: no sync has run yet)."""
    row = conn.execute("SELECT event_id FROM sync_horizon WHERE id = 1").fetchone()
    return None if row is None else row[0]


def raise_horizon(conn: sqlite3.Connection, now: datetime, *, slack_s: float = HORIZON_SLACK_S) -> str | None:
    """Raise the horizon to the first id of `now - slack_s`, or to the newest stored event if that is lower (an
    event stored later with an id above it is then no late row), never lowering it; returns the horizon.

    Writes only when that moves it (a quiet site is not written to), in a short write transaction of its own: the
    hub's commits and this one are serialised, which is what makes every event either visible to a read made
    after this returns or recorded late by the hub (see the module's docstring)."""
    wanted_sql = ("SELECT MIN(?, (SELECT MAX(event_id) FROM events)) WHERE (SELECT MAX(event_id) FROM events) "
                  "> COALESCE((SELECT event_id FROM sync_horizon WHERE id = 1), '') AND ? > "
                  "COALESCE((SELECT event_id FROM sync_horizon WHERE id = 1), '')")
    floor = event_id_floor(now - timedelta(seconds=slack_s))
    if conn.execute(wanted_sql, (floor, floor)).fetchone() is None:
        return horizon(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(wanted_sql, (floor, floor)).fetchone()  # again, under the write lock
        if row is not None:
            conn.execute("INSERT INTO sync_horizon (id, event_id) VALUES (1, ?) "
                         "ON CONFLICT(id) DO UPDATE SET event_id = excluded.event_id", (row[0],))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return horizon(conn)


# --- reading ------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so that what several statements read is one state of the database."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        _rollback(conn)


_COLUMNS = "event_id, type, schema_version, site_id, device_id, occurred_at, visit_id, fields"


def read_batch(conn: sqlite3.Connection, cursor: Cursor, limit: int) -> Batch:
    """Up to `limit` events after `cursor`: the late ones first (in the order the hub recorded them), then the
    main range up to the horizon, in event_id order. Nothing from the main range before a horizon exists."""
    new = tuple.__new__
    # One snapshot for both parts: a late row skipped for the main range has its event visible to that range's
    # read here (committed together), so it is read now or by a later batch, never by neither.
    with _snapshot(conn):
        late = conn.execute(
            f"SELECT late_events.seq, {', '.join('events.' + c for c in _COLUMNS.split(', '))} FROM late_events "
            "LEFT JOIN events ON events.event_id = late_events.event_id WHERE late_events.seq > ? "
            "ORDER BY late_events.seq LIMIT ?", (cursor.late_seq, limit)).fetchall()
        # A late event the main range has not reached yet goes with the main range; a gone one, nowhere.
        records = [new(EventRecord, row[1:]) for row in late if row[1] is not None and row[1] <= cursor.event_id]
        late_seq = late[-1][0] if late else cursor.late_seq
        room = limit - len(records)
        main = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE event_id > ? AND event_id <= "
            "(SELECT event_id FROM sync_horizon WHERE id = 1) ORDER BY event_id LIMIT ?",
            (cursor.event_id, room)).fetchall() if room > 0 else []
    records += [new(EventRecord, row) for row in main]
    event_id = main[-1][0] if main else cursor.event_id
    return Batch(records, Cursor(event_id, late_seq), len(late) >= limit or len(main) >= room)


def backlog(conn: sqlite3.Connection, cursor: Cursor) -> int:
    """How many events wait after `cursor`: every event after its main range (also those above the horizon, not
    readable yet), and the late ones it has not read (counts over key ranges: fast enough for a status, not per
    event)."""
    return conn.execute(
        "SELECT (SELECT COUNT(*) FROM events WHERE event_id > ?) + (SELECT COUNT(*) FROM late_events "
        "JOIN events ON events.event_id = late_events.event_id WHERE late_events.seq > ? "
        "AND late_events.event_id <= ?)", (cursor.event_id, cursor.late_seq, cursor.event_id)).fetchone()[0]


def tombstones_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[Tombstone]:
    """The erased visits after `seq`, in order: what a target has not acknowledged yet."""
    return [Tombstone(row[0], row[1]) for row in conn.execute(
        "SELECT seq, visit_id FROM erased_visits WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _phone_records(events: Iterable[object], site_id: str, now: datetime,
                   reasons: list[str]) -> tuple[list[EventRecord], int]:
    """The valid phone events as the hub would store them, and how many were not. Each is checked as the hub
    checks a device's event in its strict path: the codec (`decode_event`, from its canonical bytes), the site,
    the time window; and it may carry no visitor tag (only the hub's own devices lend tags)."""
    window = TimeWindow.around(now, PAST_TOLERANCE_DAYS, FUTURE_TOLERANCE_DAYS)
    records: list[EventRecord] = []
    invalid = 0
    for obj in events:
        try:
            record = event_record(decode_event(dumps_strict(obj)))
            if record.site_id != site_id:
                raise ContractError("site_mismatch", f"event says site {record.site_id}, this hub serves {site_id}",
                                    event_id=record.event_id)
            if carries_tag(record):
                raise ContractError("invalid_field", "a phone event carries a visitor tag", event_id=record.event_id)
            if not window.admits(record):
                raise window.refusal(record)
        except ContractError as error:
            invalid += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(f"{error.code}: {error.detail}"[:300])
            continue
        except (ValueError, TypeError, RecursionError) as error:  # not even JSON-encodable (NaN, a set, ...)
            invalid += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(f"not an event: {type(error).__name__}: {error}"[:300])
            continue
        records.append(record)
    return records, invalid


def _in_list(values: Iterable[str]) -> str:
    return json.dumps(list(values))


def apply_down(conn: sqlite3.Connection, target: str, *, erasures: Sequence[str], events: Sequence[object],
               cursor: Cursor, tombstones_sent: int, events_after: int, erasures_after: int, now: datetime,
               site_id: str) -> DownResult:
    """Apply one reply of `target` and advance its cursors, all in one transaction.

    `erasures`: visit ids to erase (in the target's order); `events`: phone events as the wire's JSON objects.
    Erasing deletes the visit's events and tag links and records a tombstone (with the next `seq`, unless the
    visit has one already). Phone events are stored (`received_at` = `now`, and a late row if at or below the
    horizon, as the hub does) unless invalid, of an erased visit, or stored before; none of these stops the
    others. sqlite3.Error if the database fails: then nothing is applied."""
    reasons: list[str] = []
    visits = list(dict.fromkeys(erasures))
    fresh_input = [visit for visit in visits if is_visit_id(visit)]
    invalid = len(visits) - len(fresh_input)
    reasons += [f"erasure of {str(visit)[:80]!r}: not a visit id" for visit in visits if not is_visit_id(visit)][:2]
    records, invalid_events = _phone_records(events, site_id, now, reasons)
    invalid += invalid_events

    # The pass over the table, in a read transaction of its own: the hub goes on storing meanwhile. A row it
    # stores after this snapshot has an id above the horizon seen here, or a late row after the last seen here
    # (the horizon only rises, and the hub records late rows in the commit that stores them).
    doomed: list[tuple[str]] = []
    seen_horizon, seen_late = "", 0
    fresh: list[str] = []
    if fresh_input:
        with _snapshot(conn):
            already = erased_among(conn, fresh_input)
            fresh = [visit for visit in fresh_input if visit not in already]
            if fresh:
                seen_horizon = horizon(conn) or ""
                seen_late = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM late_events").fetchone()[0]
                doomed = conn.execute("SELECT event_id FROM events WHERE visit_id IN (SELECT value FROM json_each(?))",
                                      (_in_list(fresh),)).fetchall()

    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = links = erased_now = 0
        if fresh:
            listed = _in_list(fresh)
            deleted = conn.executemany("DELETE FROM events WHERE event_id = ?", doomed).rowcount
            deleted += conn.execute("DELETE FROM events WHERE event_id > ? AND visit_id IN "
                                    "(SELECT value FROM json_each(?))", (seen_horizon, listed)).rowcount
            deleted += conn.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM late_events "
                                    "WHERE seq > ?) AND visit_id IN (SELECT value FROM json_each(?))",
                                    (seen_late, listed)).rowcount
            links = conn.execute("DELETE FROM tag_links WHERE visit_id IN (SELECT value FROM json_each(?))",
                                 (listed,)).rowcount
            # Never a seq a target may already have acknowledged, even once older tombstones are purged.
            seq = conn.execute("SELECT MAX(COALESCE((SELECT MAX(seq) FROM erased_visits), 0), "
                               "COALESCE((SELECT MAX(tombstones_sent) FROM sync_targets), 0))").fetchone()[0]
            when = format_instant(now)
            for visit in fresh:
                added = conn.execute("INSERT OR IGNORE INTO erased_visits (visit_id, seq, erased_at) VALUES (?, ?, ?)",
                                     (visit, seq + 1, when)).rowcount
                seq += added
                erased_now += added
        stored = duplicates = refused = 0
        if records:
            erased = erased_among(conn, [record.visit_id for record in records])
            kept = [record for record in records if record.visit_id not in erased]
            refused = len(records) - len(kept)
            if kept:
                late = late_candidates(conn, horizon(conn), (record.event_id for record in kept))
                stamp = format_instant(now)
                stored = conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                          [(*record, stamp) for record in kept]).rowcount
                duplicates = len(kept) - stored
                record_late(conn, late)
        conn.execute(
            "INSERT INTO sync_targets (name, after_event_id, after_late_seq, tombstones_sent, events_after, "
            "erasures_after, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "after_event_id = excluded.after_event_id, after_late_seq = excluded.after_late_seq, "
            "tombstones_sent = excluded.tombstones_sent, events_after = excluded.events_after, "
            "erasures_after = excluded.erasures_after, updated_at = excluded.updated_at",
            (target, cursor.event_id, cursor.late_seq, tombstones_sent, events_after, erasures_after,
             format_instant(now)))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return DownResult(erased_now, deleted, links, stored, duplicates, invalid, refused, reasons)


def purge_tombstones(conn: sqlite3.Connection, now: datetime, *, days: float) -> int:
    """Delete tombstones older than `days` (far longer than any device keeps an event, so nothing of the visit
    can still arrive); returns how many."""
    cutoff = format_instant(now - timedelta(days=days))
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM erased_visits WHERE erased_at < ?", (cutoff,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return deleted


def purge_late(conn: sqlite3.Connection) -> int:
    """Delete the late rows every target has read (seq at or below the lowest `after_late_seq`: no batch, sent or
    read ahead, starts below its target's stored cursor), and those whose event is gone (purged by retention,
    erased), which no target could send: so the table never outgrows the events it points to, even with the row
    of a target no longer configured holding the first rule back. Returns how many rows went."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute(
            "DELETE FROM late_events WHERE seq <= (SELECT MIN(after_late_seq) FROM sync_targets) "
            "OR NOT EXISTS (SELECT 1 FROM events WHERE events.event_id = late_events.event_id)").rowcount
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return deleted


__all__ = ["BUSY_TIMEOUT_MS", "HORIZON_SLACK_S", "Batch", "Cursor", "DownResult", "TargetState", "Tombstone",
           "apply_down", "backlog", "horizon", "open_hub_db", "purge_late", "purge_tombstones", "raise_horizon",
           "read_batch", "target_names", "target_state", "tombstones_after"]
