"""The hub's database: events stored once each, quarantined input with its reason, the device registry.

sqlite-utils owns the schema (created and migrated by `MIGRATIONS`, tracked in `PRAGMA user_version`); the hot
path inserts with one `executemany` per group commit. The database is in WAL mode with `synchronous=FULL`:
the hub acknowledges an event only after the commit, and the device then forgets it, so the commit must
survive a power cut, not only a crash.

What each table keeps and why (also in docs/hub.md):
- `events`: every valid event, keyed on `event_id` so a resend is ignored. `fields` holds the type's own fields
  as JSON. `visit_id` is the pseudonymous visit token; it never leaves the site as is.
- `quarantine`: input that broke the contract: the topic, at most `QUARANTINE_RAW_BYTES` of the raw payload,
  the error code and detail, when. For staff to diagnose a faulty or hostile device. Bounded per device and in
  total by `QuarantineLimits`; past a bound what arrives is only counted.
- `quarantine_counts`: how much quarantined input arrived per device and code, and how much of it was not kept
  (over a bound): a few small rows, so the count goes on when the copies stop.
- `devices`: one row per device seen: kind, software version, online/offline, last seen.
- `tag_links`: which visit each lent visitor tag belongs to now (`broker.tag_links`): the only place a tag and a
  visit meet; stored events carry no tag.
- `erased_visits`: the tombstones of visits their visitor asked to forget (`broker.sync_store` applies them): the
  visit's events are deleted and every later one is refused (counted, not stored), whichever way it comes.
- `sync_targets`, `sync_horizon`, `late_events`: the upstream sync's cursors (`broker.sync_store`). The sync reads
  events in `event_id` order up to its horizon; an event stored at or below the horizon after the sync raised it
  (a device's outbox drained after an outage) gets a row in `late_events` in the same transaction
  (`late_candidates`, `record_late`), so the sync sends it all the same. No index for the sync: live events are
  above the horizon, and the hub's only extra work per commit is reading the horizon's row.

Retention (`purge`, run hourly by the hub): events are deleted `events_days` (default 90) after they occurred
or after the hub received them, whichever comes first (see `purge`), quarantine rows `quarantine_days` (default
30) after they arrived. Device rows and counters hold no personal data and stay. A tag's link goes when the tag
is returned, or `tag_link_max_hours` (default 12) after it was lent (`purge_tag_links`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from broker import tag_links
from bus.checkpointer import Checkpointer
from protocol.canonical import EventRecord
from protocol.ids import event_id_floor, event_id_time, format_instant, parse_instant
from protocol.topics import events_topic

QUARANTINE_RAW_BYTES = 64 * 1024
PAGE_BYTES = 4096  # SQLite's default page size, which the hub's database keeps
ROWS_PER_PAGE = 10
"""About how many stored events fill one page: it paces the background checkpoints."""
QUARANTINE_ROW_OVERHEAD = 100
"""Bytes a quarantine row takes besides its raw copy, reason and topic (its other columns, the index entry):
only for the byte bounds, so an estimate is enough."""
PAST_TOLERANCE_DAYS = 35.0
"""How far before the hub's clock an event may say it occurred (or was created): devices keep an unsent event 30
days in their outbox (`OutboxSettings.max_age_days`), and a few more days cover a drifting clock."""
FUTURE_TOLERANCE_DAYS = 1.0
"""How far after the hub's clock an event may say it occurred (or was created): a device clock a little ahead."""


@dataclass(frozen=True)
class QuarantineLimits:
    """How much quarantined input the database keeps, per device (per MQTT account; input on a topic outside the
    scheme counts as one more device) and in all. Past a bound the newest input is refused: counted in
    `quarantine_counts`, not stored. The defaults keep a few hundred full raw copies of one broken device's input,
    enough to diagnose it, and bound the whole quarantine to a small share of a site server's disk."""

    device_rows: int = 2_000
    device_bytes: int = 8 * 1024 * 1024
    total_rows: int = 50_000
    total_bytes: int = 128 * 1024 * 1024


@dataclass
class _Usage:
    rows: int = 0
    bytes: int = 0


def _v1(db: sqlite_utils.Database) -> None:
    # Keyed on the time-ordered event_id without a rowid, so new events append to the end of one B-tree and old
    # ones sit at its start, where retention finds them. Every other index costs the hub on every event (one on
    # visit_id or type halved its throughput, one on device_id a tenth); features that need such a lookup add
    # it in a migration of their own.
    db.execute("""
        CREATE TABLE events (
            event_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            site_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            visit_id TEXT,
            fields TEXT NOT NULL,
            received_at TEXT NOT NULL
        ) WITHOUT ROWID""")
    db.table("quarantine").create({"id": int, "received_at": str, "topic": str, "device_id": str, "event_id": str,
                             "code": str, "reason": str, "raw": bytes, "raw_size": int},
                            pk="id", not_null={"received_at", "topic", "code", "reason", "raw", "raw_size"})
    db.table("quarantine").create_index(["code"])
    db.table("devices").create({"device_id": str, "kind": str, "software_version": str, "state": str,
                          "state_since": str, "last_seen": str}, pk="device_id")


def _v2(db: sqlite_utils.Database) -> None:
    # device_id is '' for input on a topic outside the scheme, so that the key has no NULL in it.
    db.execute("""
        CREATE TABLE quarantine_counts (
            device_id TEXT NOT NULL,
            code TEXT NOT NULL,
            arrived INTEGER NOT NULL,
            not_stored INTEGER NOT NULL,
            last_at TEXT NOT NULL,
            PRIMARY KEY (device_id, code)
        ) WITHOUT ROWID""")


def _v3(db: sqlite_utils.Database) -> None:
    """Delete the events stored before the hub checked their times: those whose `occurred_at` or id timestamp is
    outside the default tolerances of when the hub received them. Retention's bounded search relies on every
    stored row being within them (see `HubStore.purge`). One pass over the table, once."""
    past, future = timedelta(days=PAST_TOLERANCE_DAYS), timedelta(days=FUTURE_TOLERANCE_DAYS)
    doomed = []
    for event_id, occurred_at, received_at in db.execute("SELECT event_id, occurred_at, received_at FROM events"):
        received = parse_instant(received_at)
        earliest, latest = format_instant(received - past), format_instant(received + future)
        if not (earliest <= occurred_at <= latest and received - past <= event_id_time(event_id) <= received + future):
            doomed.append((event_id,))
    db.conn.executemany("DELETE FROM events WHERE event_id = ?", doomed)


def _v4(db: sqlite_utils.Database) -> None:
    # Keyed on the tag, without a rowid: the hub looks a tag up for each tagged event. No index on `since`: the
    # hourly purge reads a table of a few thousand rows at most (one per tag lent within the last hours). IF NOT
    # EXISTS: a database whose user_version was set back (a restored copy, a test) migrates again without failing.
    db.execute("""
        CREATE TABLE IF NOT EXISTS tag_links (
            tag_id TEXT PRIMARY KEY,
            visit_id TEXT NOT NULL,
            since TEXT NOT NULL
        ) WITHOUT ROWID""")


def _v5(db: sqlite_utils.Database) -> None:
    # The upstream sync's tables (`broker.sync_store`). No index on events: the sync reads them by the primary key,
    # in event_id order up to its horizon, and the hub pays only a read of `sync_horizon` per commit (an index on
    # received_at wrote one more page per commit: 3.2 → 4.6 KB per event, past the storage-wear target).
    # seq orders the tombstones for forwarding them to each sync target (`sync_targets.tombstones_sent`).
    db.execute("""
        CREATE TABLE IF NOT EXISTS erased_visits (
            visit_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL UNIQUE,
            erased_at TEXT NOT NULL
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE IF NOT EXISTS sync_targets (
            name TEXT PRIMARY KEY,
            after_event_id TEXT NOT NULL DEFAULT '',
            after_late_seq INTEGER NOT NULL DEFAULT 0,
            tombstones_sent INTEGER NOT NULL DEFAULT 0,
            events_after INTEGER NOT NULL DEFAULT 0,
            erasures_after INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT
        ) WITHOUT ROWID""")
    # One row once a sync has run: no event at or below it is read by the sync's main range any more.
    db.execute("""
        CREATE TABLE IF NOT EXISTS sync_horizon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            event_id TEXT NOT NULL
        )""")
    # AUTOINCREMENT: a seq is never given twice, even after the purge deleted the newest rows, since the targets'
    # `after_late_seq` cursors count on it. Its extra write happens only with a late row, which is rare.
    db.execute("""
        CREATE TABLE IF NOT EXISTS late_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL
        )""")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5]


def round_guards(conn: sqlite3.Connection) -> tuple[str | None, bool]:
    """(the sync's horizon, or None while no sync has run; whether any visit is erased at all), for a commit that
    stores events: one statement over two one-row lookups. While no visit is erased (the usual case), nothing else
    needs checking for erasures."""
    horizon, erased = conn.execute("SELECT (SELECT event_id FROM sync_horizon WHERE id = 1), "
                                   "EXISTS (SELECT 1 FROM erased_visits)").fetchone()
    return horizon, bool(erased)


def late_candidates(conn: sqlite3.Connection, horizon: str | None, event_ids: Iterable[str]) -> list[str]:
    """The ids at or below the sync's `horizon` that are not stored yet: those of this commit that may become
    late rows. Call it inside the write transaction, before inserting. Nothing is read when there is no horizon or
    no id is at or below it: live events are newer than the horizon (it trails the clock by minutes)."""
    if horizon is None:
        return []
    below = list(dict.fromkeys(event_id for event_id in event_ids if event_id <= horizon))
    if not below:
        return []
    return [row[0] for row in conn.execute(
        "SELECT value FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_id = value)",
        (json.dumps(below),))]


def record_late(conn: sqlite3.Connection, candidates: Sequence[str]) -> int:
    """After inserting, in the same transaction: a `late_events` row for each of `late_candidates` stored now
    (one the commit refused, of an erased visit, gets none). Returns how many rows."""
    if not candidates:
        return 0
    return conn.execute("INSERT INTO late_events (event_id) SELECT value FROM json_each(?) "
                        "WHERE EXISTS (SELECT 1 FROM events WHERE event_id = value)",
                        (json.dumps(list(candidates)),)).rowcount


def erased_among(conn: sqlite3.Connection, visit_ids: Iterable[str | None]) -> set[str]:
    """Which of these visits are erased (have a tombstone). One statement whatever their number (the visits go
    as one JSON array), so SQLite prepares it once per connection."""
    wanted = {visit for visit in visit_ids if visit is not None}
    if not wanted:
        return set()
    return {row[0] for row in conn.execute(
        "SELECT value FROM json_each(?) WHERE value IN (SELECT visit_id FROM erased_visits)",
        (json.dumps(list(wanted)),))}


def _conflict_entry(record: EventRecord) -> QuarantineEntry:
    return QuarantineEntry(events_topic(record.site_id, record.device_id), record_payload(record), "event_id_conflict",
                           f"event_id {record.event_id} is already stored for another device; each device makes "
                           "its own ids (protocol.ids.new_event_id), so this one was copied", record.device_id,
                           record.event_id)


def record_payload(record: EventRecord) -> bytes:
    """The canonical wire form of a stored record (what `codec.encode_event` made of it): every value in a record
    is an identifier, an instant, a number or already JSON, so nothing needs escaping."""
    visit = "null" if record.visit_id is None else f'"{record.visit_id}"'
    own = "}" if record.fields == "{}" else "," + record.fields[1:]
    return (f'{{"event_id":"{record.event_id}","type":"{record.type}","schema_version":{record.schema_version},'
            f'"site_id":"{record.site_id}","device_id":"{record.device_id}","occurred_at":"{record.occurred_at}",'
            f'"visit_id":{visit}{own}').encode()


@dataclass(frozen=True)
class QuarantineEntry:
    topic: str
    raw: bytes
    code: str
    reason: str
    device_id: str | None = None
    event_id: str | None = None
    replayed: bool = False  # a retained message the broker delivers again on every subscription


@dataclass(frozen=True)
class DeviceSeen:
    device_id: str
    kind: str | None = None
    software_version: str | None = None
    state: str | None = None
    state_since: datetime | None = None
    replayed: bool = False  # from a retained status the broker replays: not a sign of life now


@dataclass(frozen=True)
class HubStats:
    events_total: int
    events_by_type: dict[str, int]
    quarantined_total: int
    quarantined_by_code: dict[str, int]
    devices_online: list[str]
    devices_known: int
    quarantine_not_stored_total: int = 0
    """Quarantined input that arrived past a `QuarantineLimits` bound: counted, not kept."""
    quarantine_not_stored_by_device: dict[str, int] = field(default_factory=dict)
    attention: list[Attention] = field(default_factory=list)
    """What staff should look at: scanners not scanning, beacons with a recent alert."""


@dataclass(frozen=True)
class Attention:
    """One thing a device reported that staff should look at: a BLE station whose scanner is not `scanning`
    (its latest `scanner.status`), or a beacon's latest `beacon.alert` of the last day (unless `heard_again`)."""

    device_id: str
    subject: str
    """`scanner` or the beacon's id."""
    state: str
    detail: str
    since: str


ALERT_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    """New events (the rest were resends, or conflicts)."""
    conflicts: list[EventRecord]
    """Events refused because another device's event with the same `event_id` is stored: quarantined as
    `event_id_conflict` in the same transaction, and never to be acknowledged as committed."""
    quarantine_stored: int
    quarantine_not_stored: int
    refused_erased: int = 0
    """Events of erased visits (`erased_visits`): not stored, yet acknowledged, so the device forgets them."""


class HubStore:
    def __init__(self, path: Path, limits: QuarantineLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or QuarantineLimits()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # It holds visit tokens: only its owner may read it. SQLite gives the -wal and -shm files the database
        # file's mode, so creating the file first, 0600, covers them too.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for made_before in (self.path, self.path.with_name(self.path.name + "-wal"),
                            self.path.with_name(self.path.name + "-shm")):
            with contextlib.suppress(OSError):  # absent, or not ours to change (a reader such as `hub stats`)
                if made_before.stat().st_mode & 0o077:
                    os.chmod(made_before, 0o600)
        # The hub builds its store in one thread and runs it in another; it never uses it from two at once.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # Purged events must really be gone from the file, not merely unlinked from the tree (privacy).
        self.db.execute("PRAGMA secure_delete=ON")
        self.migrate()
        self._checkpointer = Checkpointer(self.path, conn)
        self._usage: dict[str, _Usage] = {}
        self._load_quarantine_usage()

    def _load_quarantine_usage(self) -> None:
        self._usage = {device: _Usage(rows, size) for device, rows, size in self.db.execute(
            "SELECT COALESCE(device_id, ''), COUNT(*), "
            f"SUM(length(raw) + length(reason) + length(topic) + {QUARANTINE_ROW_OVERHEAD}) "
            "FROM quarantine GROUP BY 1")}

    def migrate(self) -> int:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.conn:
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
        return len(MIGRATIONS)

    def commit_round(self, events: Sequence[EventRecord], quarantined: Sequence[QuarantineEntry],
                     devices: Iterable[DeviceSeen], received_at: datetime,
                     tagged: Sequence[EventRecord] = ()) -> CommitResult:
        """Store one group of valid events (as `protocol.canonical` records them), quarantined input (within
        `limits`) and registry updates in one transaction.

        `events` carry no visitor tag; `tagged` are the records that do (`tag_links.carries_tag`), in the order
        received: each is stored with its tag resolved to a visit and removed, and the tag links change with
        them, in this same transaction (`tag_links.store_tagged`).

        An event of an erased visit is not stored, only counted (`CommitResult.refused_erased`). An event stored
        now at or below the sync's horizon also gets a `late_events` row (`late_candidates`), so that the sync,
        whose reading has passed its id, still sends it."""
        when = format_instant(received_at)
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = refused = 0
            conflicts: list[EventRecord] = []
            erased: set[str] = set()
            late: list[str] = []
            if events or tagged:
                horizon, any_erased = round_guards(conn)
                if any_erased:
                    erased = erased_among(conn, itertools.chain((record.visit_id for record in events),
                                                                (record.visit_id for record in tagged)))
                if erased:
                    kept = [record for record in events if record.visit_id not in erased]
                    refused, events = len(events) - len(kept), kept
                late = late_candidates(conn, horizon, itertools.chain((record.event_id for record in events),
                                                                      (record.event_id for record in tagged)))
            if events:
                cursor = conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                          [(*record, when) for record in events])
                inserted = cursor.rowcount
            if tagged:
                tags = tag_links.store_tagged(conn, tagged, when, erased)
                inserted += tags.inserted
                refused += tags.refused_erased
                events = [*events, *tags.stored]
            record_late(conn, late)
            if inserted < len(events):  # resends, the common reason, or another device's id
                conflicts = self._conflicts(events)
            if conflicts:
                quarantined = [*quarantined, *(_conflict_entry(record) for record in conflicts)]
            usage, stored_bytes, not_stored = self._quarantine(conn, quarantined, when)
            # A late row writes its table's page and the AUTOINCREMENT counter's.
            pages = 1 + len(events) // ROWS_PER_PAGE + stored_bytes // PAGE_BYTES + bool(tagged) + 2 * bool(late)
            for seen in devices:
                pages += 1
                since = format_instant(seen.state_since) if seen.state_since else None
                # A replayed status says nothing about now: it keeps last_seen (a new device gets the status's own
                # time), and no status overrides a newer one already recorded.
                conn.execute(
                    "INSERT INTO devices (device_id, kind, software_version, state, state_since, last_seen) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?7 THEN COALESCE(?5, ?6) ELSE ?6 END) "
                    "ON CONFLICT(device_id) DO UPDATE SET "
                    "kind = COALESCE(excluded.kind, kind), "
                    "software_version = COALESCE(excluded.software_version, software_version), "
                    "state = CASE WHEN excluded.state IS NOT NULL AND (state_since IS NULL "
                    "  OR excluded.state_since >= state_since) THEN excluded.state ELSE state END, "
                    "state_since = CASE WHEN excluded.state_since IS NOT NULL AND (state_since IS NULL "
                    "  OR excluded.state_since >= state_since) THEN excluded.state_since ELSE state_since END, "
                    "last_seen = CASE WHEN ?7 THEN last_seen ELSE excluded.last_seen END",
                    (seen.device_id, seen.kind, seen.software_version, seen.state, since, when, seen.replayed))
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        stored = sum(u.rows for u in usage.values()) - sum(u.rows for u in self._usage.values())
        self._usage = usage
        self._checkpointer.wrote(pages)
        return CommitResult(inserted, conflicts, stored, not_stored, refused)

    def _rollback(self) -> None:
        # A failed statement can end the transaction itself (SQLITE_FULL, SQLITE_IOERR, a failed COMMIT): then a
        # ROLLBACK would only add "cannot rollback - no transaction is active" to the real error.
        conn = self.db.conn
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the real error is the one being raised
                conn.execute("ROLLBACK")

    def _conflicts(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """The events of this group whose `event_id` is stored for another device (by an earlier group, or by
        an earlier event of this one, which the insert kept)."""
        owners: dict[str, str] = {}
        ids = list({record.event_id for record in events})
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            owners.update(self.db.conn.execute(
                f"SELECT event_id, device_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk))
        conflicts: dict[tuple[str, str], EventRecord] = {}  # one row and one rejection, however often it came
        for record in events:
            if owners.get(record.event_id, record.device_id) != record.device_id:
                conflicts.setdefault((record.device_id, record.event_id), record)
        return list(conflicts.values())

    def _quarantine(self, conn: sqlite3.Connection, quarantined: Sequence[QuarantineEntry],
                    when: str) -> tuple[dict[str, _Usage], int, int]:
        """Insert what the bounds allow; count everything. Returns the usage after (kept apart until the commit
        succeeds), the bytes stored and how many entries were not stored."""
        if not quarantined:
            return self._usage, 0, 0
        limits = self.limits
        usage = {device: _Usage(u.rows, u.bytes) for device, u in self._usage.items()}
        total_rows = sum(u.rows for u in usage.values())
        total_bytes = sum(u.bytes for u in usage.values())
        counts: dict[tuple[str, str], list[int]] = {}
        stored_bytes = not_stored = 0
        for q in quarantined:
            device = q.device_id or ""
            raw, topic, reason = q.raw[:QUARANTINE_RAW_BYTES], q.topic[:500], q.reason[:2000]
            cost = len(raw) + len(reason.encode()) + len(topic.encode()) + QUARANTINE_ROW_OVERHEAD
            mine = usage.setdefault(device, _Usage())
            # Refuse the newest rather than drop the oldest: the first rows show how a fault began, and keeping
            # them costs nothing, where making room would delete (and, with secure_delete, overwrite) a row for
            # every row a flood brings.
            if (mine.rows >= limits.device_rows or mine.bytes + cost > limits.device_bytes
                    or total_rows >= limits.total_rows or total_bytes + cost > limits.total_bytes):
                if q.replayed:
                    continue  # already counted when it first arrived, or as good as
                not_stored += 1
                counts.setdefault((device, q.code), [0, 0])[1] += 1
            else:
                # A replayed retained message is quarantined once, not again at every reconnection of the hub.
                added = conn.execute(
                    "INSERT INTO quarantine (received_at, topic, device_id, event_id, code, reason, raw, raw_size) "
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT ? OR NOT EXISTS "
                    "(SELECT 1 FROM quarantine WHERE topic = ? AND raw = ? AND raw_size = ?)",
                    (when, topic, q.device_id, q.event_id, q.code, reason, raw, len(q.raw), q.replayed, topic, raw,
                     len(q.raw))).rowcount
                if not added:
                    continue
                mine.rows += 1
                mine.bytes += cost
                total_rows += 1
                total_bytes += cost
                stored_bytes += len(raw)
            counts.setdefault((device, q.code), [0, 0])[0] += 1
        conn.executemany(
            "INSERT INTO quarantine_counts (device_id, code, arrived, not_stored, last_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(device_id, code) DO UPDATE SET arrived = arrived + excluded.arrived, "
            "not_stored = not_stored + excluded.not_stored, last_at = excluded.last_at",
            [(device, code, arrived, refused, when) for (device, code), (arrived, refused) in counts.items()])
        return usage, stored_bytes, not_stored

    def purge(self, now: datetime, *, events_days: float, quarantine_days: float,
              past_tolerance_days: float = PAST_TOLERANCE_DAYS,
              future_tolerance_days: float = FUTURE_TOLERANCE_DAYS) -> tuple[int, int]:
        """Delete events and quarantined input past their retention; returns (events, quarantine rows) deleted.

        Quarantine rows age by `received_at`. An event goes once its `occurred_at` OR its `received_at` is past
        the cutoff: kept no longer than the retention after it happened, nor after it arrived, whatever it
        claims. The search is a range of the primary key, found without an index on either time:

        The hub stores an event only if, at its `received_at` R, its occurred_at O >= R - past and its id's
        instant I <= R + future (the tolerances, `Hub._collect_events`; migration `_v3` for older rows). So a row
        with R < cutoff has I <= R + future < cutoff + future; and a row with O < cutoff has R <= O + past
        < cutoff + past, hence I < cutoff + past + future. Every row to delete has I < cutoff + past + future
        (plus a second for rounding to the millisecond), which is an upper bound of `event_id` as text. The
        tolerances must be those the rows were stored under, or larger.

        Without the bound, every hourly purge would read the whole table; with it, the purge reads the rows
        created before the last `past + future` days before the cutoff (36 by default)."""
        cutoff = now - timedelta(days=events_days)
        events_cutoff = format_instant(cutoff)
        id_bound = event_id_floor(cutoff + timedelta(days=past_tolerance_days + future_tolerance_days, seconds=1))
        quarantine_cutoff = format_instant(now - timedelta(days=quarantine_days))
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            events = conn.execute("DELETE FROM events WHERE event_id < ? AND (occurred_at < ? OR received_at < ?)",
                                  (id_bound, events_cutoff, events_cutoff)).rowcount
            quarantined = conn.execute("DELETE FROM quarantine WHERE received_at < ?", (quarantine_cutoff,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if quarantined:
            self._load_quarantine_usage()
        self._checkpointer.wrote(1 + (events + quarantined) // ROWS_PER_PAGE)
        return events, quarantined

    def purge_tag_links(self, now: datetime, *, max_hours: float) -> int:
        """Delete the links of tags lent more than `max_hours` before `now` and never returned; returns how many.
        A visit with a lent tag does not outlast the museum's opening day."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = tag_links.purge(conn, format_instant(now - timedelta(hours=max_hours)))
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._checkpointer.wrote(1 + deleted // ROWS_PER_PAGE)
        return deleted

    def count_links(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM tag_links").fetchone()[0]

    def count_events(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def count_quarantined(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]

    def event_ids(self, device_id: str | None = None) -> set[str]:
        if device_id is None:
            return {row[0] for row in self.db.execute("SELECT event_id FROM events")}
        return {row[0] for row in self.db.execute("SELECT event_id FROM events WHERE device_id = ?", (device_id,))}

    def quarantine_rows(self) -> list[dict[str, Any]]:
        return list(self.db["quarantine"].rows_where(order_by="id"))

    def devices(self) -> list[dict[str, Any]]:
        return list(self.db["devices"].rows_where(order_by="device_id"))

    def quarantine_not_stored(self) -> dict[str, int]:
        """Per device ('' for input on a topic outside the scheme): quarantined input counted but not kept."""
        return dict(self.db.execute("SELECT device_id, SUM(not_stored) FROM quarantine_counts GROUP BY device_id "
                                    "HAVING SUM(not_stored) > 0 ORDER BY device_id").fetchall())

    def stats(self) -> HubStats:
        by_type = dict(self.db.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type").fetchall())
        by_code = dict(self.db.execute("SELECT code, COUNT(*) FROM quarantine GROUP BY code ORDER BY code").fetchall())
        online = [row[0] for row in self.db.execute(
            "SELECT device_id FROM devices WHERE state = 'online' ORDER BY device_id")]
        known = self.db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
        not_stored = self.quarantine_not_stored()
        return HubStats(sum(by_type.values()), by_type, sum(by_code.values()), by_code, online, known,
                        sum(not_stored.values()), not_stored, self.attention(datetime.now(UTC)))

    def attention(self, now: datetime) -> list[Attention]:
        """Scanners that are not scanning now, and beacons whose latest alert of the last day is not resolved.
        Reads only these two event types (each station reports a change of state, not a heartbeat)."""
        scanners: dict[str, Attention] = {}
        for device_id, fields, occurred_at in self.db.execute(
                "SELECT device_id, fields, occurred_at FROM events WHERE type = 'scanner.status' ORDER BY event_id"):
            own = json.loads(fields)
            scanners[device_id] = Attention(device_id, "scanner", own["state"],
                                            f"{own['reason']} (adapter {own['adapter']}, {own['attempts']} attempts)",
                                            occurred_at)
        beacons: dict[str, Attention] = {}
        for device_id, fields, occurred_at in self.db.execute(
                "SELECT device_id, fields, occurred_at FROM events WHERE type = 'beacon.alert' AND occurred_at >= ? "
                "ORDER BY event_id", (format_instant(now - ALERT_WINDOW),)):
            own = json.loads(fields)
            beacons[own["beacon_id"]] = Attention(device_id, own["beacon_id"], own["alert"], own["detail"], occurred_at)
        return ([item for _, item in sorted(scanners.items()) if item.state != "scanning"]
                + [item for _, item in sorted(beacons.items()) if item.state != "heard_again"])

    def close(self) -> None:
        self._checkpointer.close()
        self.db.conn.close()

    def recent_activity(self, since: datetime, max_events: int) -> RecentActivity:
        """What visitors did lately, for the stats file: among the newest `max_events` events created since `since`,
        the views per (artwork, language) and each zone's latest occupancy count.

        Both bounds hold the cost whatever the table's size: the range is read by the time-ordered primary key,
        newest first, and stops after `max_events` rows, so no index is needed on `type` (see `_v1`)."""
        recent = ("(SELECT event_id, type, occurred_at, fields FROM events WHERE event_id >= ? "
                  "ORDER BY event_id DESC LIMIT ?)")
        bounds = (event_id_floor(since), max_events)
        views = [(str(artwork), str(language), int(count)) for artwork, language, count in self.db.execute(
            "SELECT json_extract(fields, '$.artwork_id'), json_extract(fields, '$.language'), COUNT(*) "
            f"FROM {recent} WHERE type = 'artwork.viewed' GROUP BY 1, 2", bounds)]
        # SQLite takes the bare columns of an aggregate query with MAX() from the row holding the maximum.
        occupancy = [(str(zone), int(count), str(at)) for zone, count, at in self.db.execute(
            "SELECT json_extract(fields, '$.zone_id'), json_extract(fields, '$.count'), MAX(occurred_at) "
            f"FROM {recent} WHERE type = 'occupancy.counted' GROUP BY 1", bounds)]
        events, oldest = self.db.execute(f"SELECT COUNT(*), MIN(event_id) FROM {recent}", bounds).fetchone()
        return RecentActivity(views, occupancy, int(events), event_id_time(oldest) if oldest else None)


@dataclass(frozen=True)
class RecentActivity:
    """`HubStore.recent_activity`: (artwork_id, language, views) and (zone_id, count, occurred_at) rows, how many
    events were read, and when the oldest of them was created (None if none was)."""

    views: list[tuple[str, str, int]]
    occupancy: list[tuple[str, int, str]]
    events: int
    oldest: datetime | None


# --- reading beside the running hub ---------------------------------------------------------------------------

def open_reader(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A read-only connection to the hub's database, for a process beside the running hub (WAL lets it read
    while the hub writes). sqlite3.Error if there is no database there. `check_same_thread=False`: for a
    connection made in one thread and used in another (never in two at once)."""
    conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.execute("PRAGMA query_only=ON")
    return conn


@dataclass(frozen=True)
class StoredCommandResult:
    """A `command.result` event as the hub stored it."""

    event_id: str
    device_id: str
    command_id: str
    command: str
    ok: bool
    detail: str
    occurred_at: str


def find_command_result(conn: sqlite3.Connection, device_id: str, command_id: str, *,
                        created_after: datetime) -> StoredCommandResult | None:
    """The first stored `command.result` of `device_id` answering `command_id`, among the events the device
    created after `created_after` (by the instant in their time-ordered `event_id`, which bounds the search to a
    range of the primary key: there is no index on type). A result from another device is never taken, whatever
    its payload says."""
    row = conn.execute(
        "SELECT event_id, occurred_at, fields FROM events WHERE event_id >= ? AND type = 'command.result' "
        "AND device_id = ? AND json_extract(fields, '$.command_id') = ? ORDER BY event_id LIMIT 1",
        (event_id_floor(created_after), device_id, command_id)).fetchone()
    if row is None:
        return None
    event_id, occurred_at, fields = row
    own = json.loads(fields)
    return StoredCommandResult(event_id, device_id, command_id, str(own["command"]), bool(own["ok"]),
                               str(own["detail"]), occurred_at)


def device_row(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    """The registry's row of one device (kind, state, state_since, last_seen), or None if never seen."""
    cursor = conn.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,))
    row = cursor.fetchone()
    return None if row is None else dict(zip([column[0] for column in cursor.description], row, strict=True))
