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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from protocol.events import Event
from protocol.ids import format_instant

QUARANTINE_RAW_BYTES = 64 * 1024


def _v1(db: sqlite_utils.Database) -> None:
    db["events"].create({"event_id": str, "type": str, "schema_version": int, "site_id": str, "device_id": str,
                         "occurred_at": str, "visit_id": str, "fields": str, "received_at": str},
                        pk="event_id", not_null={"type", "schema_version", "site_id", "device_id", "occurred_at",
                                                 "fields", "received_at"})
    db["events"].create_index(["type"])
    db["events"].create_index(["device_id", "occurred_at"])
    db["events"].create_index(["visit_id"])
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


@dataclass(frozen=True)
class DeviceSeen:
    device_id: str
    kind: str | None = None
    software_version: str | None = None
    state: str | None = None
    state_since: datetime | None = None


@dataclass(frozen=True)
class HubStats:
    events_total: int
    events_by_type: dict[str, int]
    quarantined_total: int
    quarantined_by_code: dict[str, int]
    devices_online: list[str]
    devices_known: int


def _row(event: Event, received_at: str) -> tuple[Any, ...]:
    return (event.event_id, event.type, event.schema_version, event.site_id, event.device_id,
            format_instant(event.occurred_at), event.visit_id,
            json.dumps(event.own_fields(), ensure_ascii=False, separators=(",", ":")), received_at)


class HubStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The hub builds its store in one thread and runs it in another; it never uses it from two at once.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.migrate()

    def migrate(self) -> int:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.conn:
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
        return len(MIGRATIONS)

    def commit_group(self, events: Sequence[Event], quarantined: Sequence[QuarantineEntry],
                     devices: Iterable[DeviceSeen], received_at: datetime) -> int:
        """Store one group in one transaction; returns how many events were new (the rest were resends)."""
        when = format_instant(received_at)
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = 0
            if events:
                cursor = conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                          [_row(event, when) for event in events])
                inserted = cursor.rowcount
            if quarantined:
                conn.executemany(
                    "INSERT INTO quarantine (received_at, topic, device_id, event_id, code, reason, raw, raw_size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(when, q.topic[:500], q.device_id, q.event_id, q.code, q.reason[:2000],
                      q.raw[:QUARANTINE_RAW_BYTES], len(q.raw)) for q in quarantined])
            for seen in devices:
                conn.execute(
                    "INSERT INTO devices (device_id, kind, software_version, state, state_since, last_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET "
                    "kind = COALESCE(excluded.kind, kind), "
                    "software_version = COALESCE(excluded.software_version, software_version), "
                    "state = COALESCE(excluded.state, state), "
                    "state_since = COALESCE(excluded.state_since, state_since), last_seen = excluded.last_seen",
                    (seen.device_id, seen.kind, seen.software_version, seen.state,
                     format_instant(seen.state_since) if seen.state_since else None, when))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return inserted

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
        self.db.conn.close()
