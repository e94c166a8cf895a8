"""The device's durable outbox: every event is committed here before it is published, and leaves only when the
hub says it has committed it (or quarantined it).

SQLite in WAL mode with `synchronous=NORMAL`: a committed event survives the process being killed at any point;
after a power cut the last few hundred milliseconds of events may be lost, but the file is never corrupt. Pass
`synchronous="FULL"` to trade speed for those too.

Bounds (explicit, documented in docs/devices.md): at most `max_events` rows and nothing older than
`max_age_days`. When a bound is hit the *oldest* events are dropped (the newest describe the visit in
progress) and counted in `dropped_total`, which the device reports in every heartbeat. The defaults (2,000,000
events, 30 days) hold well over a week of a busy kiosk: at one event a second for twelve hours a day, a week
is about 300,000 events, some 100 MB.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    event_id: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dropped_total: int
    oldest_age_s: float


class Outbox:
    """Thread-safe: the application appends from its own thread while the device client's worker reads and
    removes. One connection behind a lock keeps the pending count exact without a query per append."""

    def __init__(self, path: Path, *, max_events: int = 2_000_000, max_age_days: float = 30.0,
                 synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_days * 86400
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        self._pending = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def append(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Commit events (id, encoded JSON) durably, in order. Returns once they survive a crash."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.executemany("INSERT OR IGNORE INTO outbox (event_id, payload, created_at) VALUES (?, ?, ?)",
                                        [(event_id, payload, now) for event_id, payload in events])
                self._pending += cursor.rowcount
                if self._pending > self.max_events:
                    self._drop_locked("SELECT seq FROM outbox ORDER BY seq LIMIT ?", (self._pending - self.max_events,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                raise

    def _drop_locked(self, select_sql: str, params: tuple[object, ...]) -> int:
        cursor = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({select_sql})", params)
        dropped = cursor.rowcount
        if dropped:
            self._pending -= dropped
            self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped_total', ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (dropped,))
        return dropped

    def expire(self, now: float | None = None) -> int:
        """Drop events older than the age bound; returns how many."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            dropped = self._drop_locked("SELECT seq FROM outbox WHERE created_at < ?", (cutoff,))
            self._db.execute("COMMIT")
        return dropped

    def pending_after(self, seq: int, *, limit: int, max_bytes: int) -> list[PendingEvent]:
        """The oldest events after `seq`, at most `limit` of them and about `max_bytes` of payload."""
        with self._lock:
            rows = self._db.execute("SELECT seq, event_id, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
        result: list[PendingEvent] = []
        size = 0
        for row_seq, event_id, payload in rows:
            size += len(payload) + 1
            if result and size > max_bytes:
                break
            result.append(PendingEvent(row_seq, event_id, bytes(payload)))
        return result

    def remove(self, event_ids: Iterable[str]) -> int:
        """Forget events the hub has acknowledged. Unknown ids (already removed) are ignored."""
        ids = [(event_id,) for event_id in event_ids]
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.executemany("DELETE FROM outbox WHERE event_id = ?", ids)
            self._db.execute("COMMIT")
            self._pending -= cursor.rowcount
            return cursor.rowcount

    def stats(self) -> OutboxStats:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created_at) FROM outbox").fetchone()[0]
            dropped = self._db.execute("SELECT value FROM counters WHERE name = 'dropped_total'").fetchone()
            pending = self._pending
        return OutboxStats(pending, dropped[0] if dropped else 0, 0.0 if oldest is None else time.time() - oldest)

    @property
    def pending(self) -> int:
        return self._pending

    def event_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT event_id FROM outbox")}

    def close(self) -> None:
        with self._lock:
            self._db.close()
