"""The hub's database: events stored once each, quarantined input with its reason, the device registry.

sqlite-utils owns the schema (created and migrated by `MIGRATIONS`, tracked in `PRAGMA user_version`); the hot
path inserts with one `executemany` per group commit. The database is in WAL mode with `synchronous=FULL`:
the hub acknowledges an event only after the commit, and the device then forgets it, so the commit must
survive a power cut, not only a crash.

What each table keeps and why (also in docs/hub.md):
- `events`: every valid event, keyed on `event_id` so a resend is ignored. `fields` holds the type's own fields
  as JSON. `visit_id` is the pseudonymous visit token; it never leaves the site as is.
- `quarantine`: input that broke the contract: the topic, at most `QUARANTINE_RAW_BYTES` of the raw payload,
  the error code and detail, when. For staff to diagnose a faulty or hostile device.
- `devices`: one row per device seen: kind, software version, online/offline, last seen.

Retention (`purge`, run hourly by the hub): events are deleted `events_days` (default 90) after they occurred
(and were created: see `purge`), quarantine rows `quarantine_days` (default 30) after they arrived. Device
rows hold no personal data and stay.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from bus.checkpointer import Checkpointer
from protocol.canonical import EventRecord
from protocol.ids import event_id_floor, format_instant

QUARANTINE_RAW_BYTES = 64 * 1024
PAGE_BYTES = 4096  # SQLite's default page size, which the hub's database keeps
ROWS_PER_PAGE = 10
"""About how many stored events fill one page: it paces the background checkpoints."""


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
    db["quarantine"].create({"id": int, "received_at": str, "topic": str, "device_id": str, "event_id": str,
                             "code": str, "reason": str, "raw": bytes, "raw_size": int},
                            pk="id", not_null={"received_at", "topic", "code", "reason", "raw", "raw_size"})
    db["quarantine"].create_index(["code"])
    db["devices"].create({"device_id": str, "kind": str, "software_version": str, "state": str,
                          "state_since": str, "last_seen": str}, pk="device_id")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]


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


class HubStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The hub builds its store in one thread and runs it in another; it never uses it from two at once.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # Purged events must really be gone from the file, not merely unlinked from the tree (privacy).
        self.db.execute("PRAGMA secure_delete=ON")
        self.migrate()
        self._checkpointer = Checkpointer(self.path, conn)

    def migrate(self) -> int:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.conn:
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
        return len(MIGRATIONS)

    def commit_group(self, events: Sequence[EventRecord], quarantined: Sequence[QuarantineEntry],
                     devices: Iterable[DeviceSeen], received_at: datetime) -> int:
        """Store one group of valid events (as `protocol.canonical` records them) in one transaction; returns how
        many were new (the rest were resends)."""
        when = format_instant(received_at)
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = 0
            if events:
                cursor = conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                          [(*record, when) for record in events])
                inserted = cursor.rowcount
            for q in quarantined:
                # A replayed retained message is quarantined once, not again at every reconnection of the hub.
                conn.execute(
                    "INSERT INTO quarantine (received_at, topic, device_id, event_id, code, reason, raw, raw_size) "
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT ? OR NOT EXISTS "
                    "(SELECT 1 FROM quarantine WHERE topic = ? AND raw = ? AND raw_size = ?)",
                    (when, q.topic[:500], q.device_id, q.event_id, q.code, q.reason[:2000],
                     q.raw[:QUARANTINE_RAW_BYTES], len(q.raw), q.replayed, q.topic[:500],
                     q.raw[:QUARANTINE_RAW_BYTES], len(q.raw)))
            quarantined_bytes = sum(min(len(q.raw), QUARANTINE_RAW_BYTES) for q in quarantined)
            pages = 1 + len(events) // ROWS_PER_PAGE + quarantined_bytes // PAGE_BYTES
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
            conn.execute("ROLLBACK")
            raise
        self._checkpointer.wrote(pages)
        return inserted

    def purge(self, now: datetime, *, events_days: float, quarantine_days: float) -> tuple[int, int]:
        """Delete events and quarantined input past their retention; returns (events, quarantine rows) deleted.

        Quarantine rows age by `received_at`. Events age by `occurred_at`, and the search is bounded by the
        primary key: an event goes once both its `occurred_at` and its creation (the instant in its UUIDv7
        `event_id`, a day's grace) are past the cutoff, which for an event a device records as it happens is the
        same thing. Without the bound, every hourly purge would read the whole table."""
        cutoff = now - timedelta(days=events_days)
        events_cutoff = format_instant(cutoff)
        id_bound = event_id_floor(cutoff + timedelta(days=1))
        quarantine_cutoff = format_instant(now - timedelta(days=quarantine_days))
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            events = conn.execute("DELETE FROM events WHERE event_id < ? AND occurred_at < ?",
                                  (id_bound, events_cutoff)).rowcount
            quarantined = conn.execute("DELETE FROM quarantine WHERE received_at < ?", (quarantine_cutoff,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._checkpointer.wrote(1 + (events + quarantined) // ROWS_PER_PAGE)
        return events, quarantined

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

    def stats(self) -> HubStats:
        by_type = dict(self.db.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type").fetchall())
        by_code = dict(self.db.execute("SELECT code, COUNT(*) FROM quarantine GROUP BY code ORDER BY code").fetchall())
        online = [row[0] for row in self.db.execute(
            "SELECT device_id FROM devices WHERE state = 'online' ORDER BY device_id")]
        known = self.db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
        return HubStats(sum(by_type.values()), by_type, sum(by_code.values()), by_code, online, known)

    def close(self) -> None:
        self._checkpointer.close()
        self.db.conn.close()
