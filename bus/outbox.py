"""The device's durable outbox: every event is committed here before it is published, and leaves only when the
hub says it has committed it (or quarantined it).

SQLite in WAL mode with `synchronous=NORMAL`: a committed event survives the process being killed at any point;
after a power cut, what the kernel had not yet written back may be lost (up to ~30 s with Linux's default
dirty-page expiry), but the file is never corrupt. Pass `synchronous="FULL"` to trade speed for those too.

Bounds (explicit, documented in docs/devices.md): at most `max_events` rows and nothing older than
`max_age_days`. When a bound is hit the *oldest* events are dropped (the newest describe the visit in
progress) and counted in `dropped_total`, which the device reports in every heartbeat. The defaults (2,000,000
events, 30 days) hold well over a week of a busy kiosk: at one event a second for twelve hours a day, a week
is about 300,000 events, some 40 MB (rows are stored compressed: about 95 bytes an event on disk for a 275-byte
event, 130 with a visit token; a full outbox is about 0.3 GB).

The outbox holds visit tokens, so its files are readable by their owner only: the database is created 0600
before SQLite opens it (SQLite gives the -wal, -shm and -journal files the database file's mode), its directory
0700 when the outbox creates it, and an outbox left 0644 by an older version is narrowed when opened.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

from bus.checkpointer import Checkpointer

log = logging.getLogger(__name__)

PAGE_SIZE = 1024


def _pages(rows: int) -> int:
    """About how many pages a commit of `rows` events writes to the log: some eight stored events fill a 1 KiB
    page."""
    return 1 + rows // 8


# How a row is stored (see `_stored` and `_published`). Why: every append is its own commit, which writes whole
# pages to the log, and a table used as a queue allocates and frees a page every few rows, rewriting the file
# header, the free list and the root with it (four more pages). A kiosk's outbox holds a handful of events at a
# time; stored small, they all stay in the table's root page, and an append or a delete writes that one page.
# Measured (bench/writes.py, 20 events/s): 2.5 KB written per event as plain rows, 1.2 KB so.
DEFLATED = 0x01
"""First byte of a payload stored as raw deflate with `DICTIONARY`."""
ID_DEFLATED = 0x02
"""First byte of a payload that started with its own event_id: the id's 16 bytes follow, then the payload without
the id, deflated with `DICTIONARY` (the id's hexadecimal does not compress: this is 18 bytes smaller). A payload
written by an earlier version is the event's JSON as is, which starts with `{`."""

DICTIONARY = (
    b'"command_id":"","command":"","ok":true,"detail":"","pack_id":"","pack_version":"","items":'
    b'"mode":"high_contrast","enabled":false,"channel":"kiosk_qr","entrance_qr","artwork_qr",'
    b'"from_language":"","to_language":"","reason":"visitor","timeout","shutdown","duration_s":'
    b'"zone_id":"","count":,"window_s":,"dwell_s":,"proximity.left","proximity.entered","occupancy.counted",'
    b'"kind":"kiosk","gateway","qr_reader","software_version":"","uptime_s":,"outbox_pending":0,'
    b'"outbox_dropped":0},"device.status","kiosk.session_started","kiosk.session_ended","artwork.collected",'
    b'"language":"en","de","es","it","nl","source":"qr","proximity",'
    b'{"event_id":"","type":"artwork.viewed","schema_version":1,"site_id":"","device_id":"",'
    b'"occurred_at":"2026-01-01T00:00:00.000Z","visit_id":null,"artwork_id":"","source":"kiosk","language":"fr",'
    b'"session_id":null}'
)
"""What events have in common, for deflate to refer to: an event of 270 bytes is stored in about 70. Never
change it: rows written with it must stay readable (a new dictionary needs new marker bytes)."""

_ID_PREFIX = b'{"event_id":"'
_ID_AT = slice(len(_ID_PREFIX), len(_ID_PREFIX) + 36)

# Copied for each payload rather than made anew, which would load the dictionary again each time. A 2 KiB window
# reaches the whole dictionary from an event's first kilobyte; memLevel 4 keeps the copy small (the default, 8,
# made storing an event cost ten times as much).
_COMPRESSOR = zlib.compressobj(6, zlib.DEFLATED, -11, 4, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _id_bytes(event_id: str) -> bytes | None:
    """The 16 bytes of a canonical (lowercase, hyphenated) UUID, or None for any other id."""
    try:
        raw = bytes.fromhex(event_id.replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 16 and _uuid_text(raw) == event_id else None


_ID_MARKER = bytes((ID_DEFLATED,))
_MARKER = bytes((DEFLATED,))


def _stored(event_id: str, payload: bytes) -> tuple[str, bytes]:
    """The row's event_id and payload, compressed. The id is left out of the row ('') when the payload starts with
    it, as every event's canonical JSON does."""
    compressor = _COMPRESSOR.copy()
    if payload[_ID_AT] == event_id.encode() and payload.startswith(_ID_PREFIX) \
            and (raw := _id_bytes(event_id)) is not None:
        compressed = compressor.compress(payload[:_ID_AT.start]) + compressor.compress(payload[_ID_AT.stop:])
        return "", b"".join((_ID_MARKER, raw, compressed, compressor.flush()))
    return event_id, b"".join((_MARKER, compressor.compress(payload), compressor.flush()))


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15, zdict=DICTIONARY).decompress(data)


def _published(stored: bytes) -> bytes:
    """The payload exactly as it was appended."""
    kind = stored[0] if stored else None
    if kind == ID_DEFLATED:
        body = _inflate(stored[17:])
        return body[:_ID_AT.start] + _uuid_text(stored[1:17]).encode() + body[_ID_AT.start:]
    if kind == DEFLATED:
        return _inflate(stored[1:])
    return stored  # written by an earlier version


def _row_id(event_id: str, payload: bytes) -> str:
    if event_id or not payload.startswith(_ID_PREFIX):
        return event_id
    return payload[_ID_AT].decode()

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class PendingEvent(NamedTuple):
    """A tuple, not a dataclass: a sender reads them by the hundred per message."""

    seq: int
    event_id: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dropped_total: int
    oldest_age_s: float


# No index on event_id: it would cost a third of every append. The sender removes acknowledged events by seq;
# only acks meant for an earlier process of this device are looked up by id, in one scan per ack.
_INSERT = "INSERT INTO outbox (seq, event_id, payload, created_at) VALUES (?, ?, ?, ?)"


def _create_private(path: Path) -> None:
    """Make sure the database file exists with mode 0600 (and its -wal and -shm, if an older version left them)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 only if made here, and only the last level
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except OSError as error:  # not our file: say so, the outbox still works
            log.warning("outbox file %s stays readable by others: %s", file, error)


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] → [(1, 3), (7, 8)]"""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class Outbox:
    """Thread-safe: the application appends from its own thread while the device client's worker reads and
    removes. Writes go through one connection behind a lock, which keeps the pending count exact without a query
    per append; the worker reads through a second, read-only one."""

    def __init__(self, path: Path, *, max_events: int = 2_000_000, max_age_days: float = 30.0,
                 synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_days * 86400
        _create_private(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Every append is its own commit, which writes whole pages to the WAL: 1 KiB pages write a quarter of the
        # default's bytes per event (SD cards wear by the byte) and measured 7% faster. Takes effect only on a new
        # file, so it must come before WAL mode is set.
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        # Debian's SQLite already overwrites deleted rows; say so explicitly, whatever the build: an outbox holds
        # visit tokens, which must not linger in free pages after the hub has them.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        self._checkpointer = Checkpointer(self.path, self._db)
        self._pending = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        # Sequence numbers are handed out here rather than by AUTOINCREMENT, which writes sqlite_sequence on every
        # commit (a quarter of the cost of a one-event append). They only need to grow for the life of this
        # object: the sender's cursor starts again from 0 whenever the process does.
        self._last_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        # The sender reads through a connection of its own: in WAL mode a reader never waits for the writer, so
        # an application appending events and the sender reading them do not queue on one lock.
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._reader.execute("PRAGMA query_only=1")
        self._reader_lock = threading.Lock()
        self._acknowledged: list[int] = []  # acknowledged, not yet deleted (see `acknowledge`)
        self._acknowledged_since = 0.0

    def append(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Commit events (id, encoded JSON) durably, in order. Returns once they survive a crash."""
        now = int(time.time())  # whole seconds: four bytes a row instead of eight, for a bound counted in days
        rows = [_stored(event_id, payload) for event_id, payload in events]
        with self._lock:
            db = self._db
            first = self._last_seq + 1
            self._last_seq += len(events)
            if len(events) == 1 and self._pending < self.max_events:
                # The common case, one event from a tap: a single autocommitted statement is its own transaction.
                (event_id, stored), = rows
                self._pending += db.execute(_INSERT, (first, event_id, stored, now)).rowcount
                self._checkpointer.wrote(1)
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.executemany(_INSERT, [(first + i, event_id, stored, now)
                                                  for i, (event_id, stored) in enumerate(rows)])
                self._pending += cursor.rowcount
                if self._pending > self.max_events:
                    dropped = self._drop_locked("SELECT seq FROM outbox ORDER BY seq LIMIT ?",
                                                (self._pending - self.max_events,))
                    log.warning("outbox %s is full (%d events): dropped the %d oldest", self.path, self.max_events,
                                dropped)
                db.execute("COMMIT")
                self._checkpointer.wrote(_pages(len(events)))
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
            self._checkpointer.wrote(_pages(dropped))
        return dropped

    def pending_after(self, seq: int, *, limit: int, max_bytes: int) -> list[PendingEvent]:
        """The oldest events after `seq`, at most `limit` of them and about `max_bytes` of payload."""
        with self._reader_lock:
            rows = self._reader.execute("SELECT seq, event_id, payload FROM outbox WHERE seq > ? ORDER BY seq "
                                        "LIMIT ?", (seq, limit)).fetchall()
        payloads = [_published(stored) for _, _, stored in rows]
        sizes = list(accumulate(len(payload) + 1 for payload in payloads))
        if sizes and sizes[-1] > max_bytes:
            rows = rows[:max(1, bisect_right(sizes, max_bytes))]
        return [PendingEvent(seq, _row_id(event_id, payload), payload)
                for (seq, event_id, _), payload in zip(rows, payloads, strict=False)]

    def acknowledge(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged events, by seq, in bulk: they stop counting as pending at once, and are deleted by
        `flush_acknowledged` (one transaction for many acks). Should the process die in between, they are sent
        again after the restart, which the hub ignores."""
        new = list(seqs)
        if new:
            if not self._acknowledged:
                self._acknowledged_since = time.monotonic()
            self._acknowledged += new

    def flush_acknowledged(self, *, older_than_s: float = 0.0, at_least: int = 0) -> int:
        """Delete what `acknowledge` buffered, if its oldest entry has waited `older_than_s` or if it holds at
        least `at_least` events (when that is not 0)."""
        if not self._acknowledged or (time.monotonic() - self._acknowledged_since < older_than_s
                                      and not 0 < at_least <= len(self._acknowledged)):
            return 0
        seqs, self._acknowledged = self._acknowledged, []
        return self.remove((), seqs)

    def remove(self, event_ids: Iterable[str], seqs: Iterable[int] = ()) -> int:
        """Forget events the hub has acknowledged, by id, or by outbox `seq` when the caller knows it (far
        cheaper: runs of consecutive seqs go as one range). Unknown ones (already removed) are ignored."""
        ids = [(event_id,) for event_id in event_ids]
        ranges = _runs(sorted(seqs))
        if not ids and not ranges:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            removed = 0
            if ranges:
                removed += self._db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", ranges).rowcount
            if ids:
                removed += self._db.execute("DELETE FROM outbox WHERE event_id IN (SELECT value FROM json_each(?))",
                                            (json.dumps([event_id for (event_id,) in ids]),)).rowcount
                # Rows stored with their id inside the payload: its 16 bytes follow the marker, so they are
                # compared as they are, without inflating a row (an outbox may hold a backlog of millions).
                wanted = {_ID_MARKER + raw for (event_id,) in ids if (raw := _id_bytes(event_id)) is not None}
                found = [(seq,) for seq, head in self._db.execute("SELECT seq, substr(payload, 1, 17) FROM outbox "
                                                                    "WHERE event_id = ''")
                         if head in wanted]
                removed += self._db.executemany("DELETE FROM outbox WHERE seq = ?", found).rowcount
            self._db.execute("COMMIT")
            self._checkpointer.wrote(_pages(removed))
            self._pending -= removed
            return removed

    def stats(self) -> OutboxStats:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created_at) FROM outbox").fetchone()[0]
            dropped = self._db.execute("SELECT value FROM counters WHERE name = 'dropped_total'").fetchone()
            pending = self._pending - len(self._acknowledged)
        return OutboxStats(pending, dropped[0] if dropped else 0, 0.0 if oldest is None else time.time() - oldest)

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the hub."""
        return self._pending - len(self._acknowledged)

    def event_ids(self) -> set[str]:
        with self._lock:
            return {_row_id(event_id, _published(stored))
                    for event_id, stored in self._db.execute("SELECT event_id, payload FROM outbox")}

    def close(self) -> None:
        self.flush_acknowledged()
        with self._reader_lock:
            self._reader.close()
        with self._lock:
            self._checkpointer.close()
            self._db.close()
