"""PostgreSQL for the companion store, through psycopg 3: the one module of ours that imports psycopg.

`PgBackend` gives `companion_api.store.Store` transactions from a small bounded pool of connections (every piece of
state lives in the database, so replicas need nothing else in common). Statements arrive with SQLite's `?`
placeholders and leave with psycopg's `%s`.

Locks: `Tx.lock(name)` is a transaction-level advisory lock on a 64-bit hash of the name. The store uses them so
that each site's seqs (erasures, phone events) are handed out in commit order — an identity gives numbers in the
order transactions ask, not the order they commit, and a site that has read seq 11 must never see 10 appear
later — and so that an erasure never interleaves with a transaction adding rows of the visit it erases.

Bulk analytics: COPY straight into `analytics` under a savepoint; when a uid is already stored (a batch sent again
after a lost response), the savepoint is rolled back and the rows go through a temporary table and
`INSERT … SELECT … ON CONFLICT DO NOTHING`. A first sending — nearly every batch — costs one COPY.

Also here, for tests and the benchmark (which must not import psycopg themselves): `unreachable`,
`create_database`, `drop_database` and `copy_rows`.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, pq, sql

from companion_api.migrations import ANALYTICS_COLUMNS, Dialect
from companion_api.model import PACK_CHUNK, AnalyticsRow, StoreError, pack_chunks

__all__ = ["PgBackend", "copy_rows", "create_database", "drop_database", "unreachable"]

CONNECT_TIMEOUT_S = 10
ACQUIRE_TIMEOUT_S = 30.0
IDLE_CHECK_S = 30.0
"""A connection idle longer than this is checked before use (the server may have restarted meanwhile)."""
_ANALYTICS_COLUMNS = ", ".join(ANALYTICS_COLUMNS)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


def where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reason(error: psycopg.Error) -> str:
    """libpq's first line without its preamble: `Connection refused`, `FATAL: database "x" does not exist`."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return " ".join(first.rsplit("failed: ", 1)[-1].split())


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as error:
        reason = _reason(error)
        raise StoreError(f"cannot connect to PostgreSQL at {where(url)} ({reason}); check the store URL and that "
                         "the server runs") from None


_placeholders: dict[str, str] = {}


def _pg(statement: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (the store's statements hold no `?` or `%` of their own)."""
    converted = _placeholders.get(statement)
    if converted is None:
        converted = statement.replace("%", "%%").replace("?", "%s")
        if len(_placeholders) < 1024:
            _placeholders[statement] = converted
    return converted


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(b"companion-store\x00" + name.encode()).digest()[:8], "big", signed=True)


class _Pool:
    """At most `size` connections, handed to one thread at a time; a thread waits for one when all are out."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = max(1, size)
        self._idle: list[tuple[psycopg.Connection[Any], float]] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self) -> psycopg.Connection[Any]:
        deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
        while True:
            conn: psycopg.Connection[Any] | None = None
            idle_since = 0.0
            with self._cond:
                while True:
                    if self._closed:
                        raise StoreError(f"the store at {where(self._url)} is closed")
                    if self._idle:
                        conn, idle_since = self._idle.pop()
                        break
                    if self._count < self._size:
                        self._count += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StoreError(f"all {self._size} connections to {where(self._url)} stayed busy for "
                                         f"{ACQUIRE_TIMEOUT_S:.0f} s")
                    self._cond.wait(remaining)
            if conn is None:
                try:
                    return _connect(self._url)
                except BaseException:
                    self._discard(None)
                    raise
            if not conn.closed and (time.monotonic() - idle_since < IDLE_CHECK_S or self._alive(conn)):
                return conn
            self._discard(conn)  # dead while idle: try the next one, or a new one

    @staticmethod
    def _alive(conn: psycopg.Connection[Any]) -> bool:
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self, conn: psycopg.Connection[Any]) -> None:
        reusable = not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE
        with self._cond:
            if reusable and not self._closed:
                self._idle.append((conn, time.monotonic()))
                self._cond.notify()
                return
        self._discard(conn)

    def _discard(self, conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                conn.close()


class PgBackend:
    """The store's transactions on PostgreSQL (see the module's docstring)."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self._pool = _Pool(url, pool_size)
        self._pool.release(self._pool.acquire())  # fail now, with a clear line, if the server is away

    @contextlib.contextmanager
    def _transaction(self, *, read_only: bool) -> Iterator[PgTx]:
        conn = self._pool.acquire()
        try:
            with conn.transaction():
                if read_only:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield PgTx(conn)
        finally:
            self._pool.release(conn)

    def write(self) -> contextlib.AbstractContextManager[PgTx]:
        return self._transaction(read_only=False)

    def read(self) -> contextlib.AbstractContextManager[PgTx]:
        return self._transaction(read_only=True)

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, errors.DeadlockDetected | errors.SerializationFailure)

    def close(self) -> None:
        self._pool.close()


class PgTx:
    """One transaction on one pooled connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._cur = conn.cursor()

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(_pg(statement), params)
        return self._cur.rowcount

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        self._cur.executemany(_pg(statement), rows)
        return self._cur.rowcount

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(_pg(statement), params)
        return self._cur.fetchall()

    def lock(self, name: str, *, shared: bool = False) -> None:
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self._cur.execute(f"SELECT {function}(%s)", (_lock_key(name),))

    def insert_analytics(self, rows: Sequence[AnalyticsRow], received_at: str) -> int:
        try:
            with self._conn.transaction():  # a savepoint
                self._copy("analytics", rows, received_at)
            return len(rows)
        except errors.UniqueViolation:
            pass
        # ON COMMIT DELETE ROWS: the connection goes back to the pool with an empty table, kept for the next time.
        self._cur.execute("CREATE TEMP TABLE IF NOT EXISTS analytics_in (LIKE analytics) ON COMMIT DELETE ROWS")
        self._copy("analytics_in", rows, received_at)
        self._cur.execute(f"INSERT INTO analytics ({_ANALYTICS_COLUMNS}) SELECT {_ANALYTICS_COLUMNS} "
                          "FROM analytics_in ON CONFLICT DO NOTHING")
        return self._cur.rowcount

    def _copy(self, table: str, rows: Sequence[AnalyticsRow], received_at: str) -> None:
        with self._cur.copy(f"COPY {table} ({_ANALYTICS_COLUMNS}) FROM STDIN") as copy:
            write_row = copy.write_row
            for row in rows:
                write_row((*row, received_at))

    def write_pack(self, site_id: str, sha256: str, pack_id: str, pack_version: int, received_at: str,
                   path: Path, size: int) -> None:
        self.lock(f"pack:{site_id}")
        self._cur.execute("DELETE FROM packs WHERE site_id = %s", (site_id,))
        # Binary COPY, written by hand so that the body streams from the file in chunks instead of being one
        # bytes object of up to 512 MiB in this process.
        with self._cur.copy("COPY packs (site_id, sha256, pack_id, pack_version, body, received_at) "
                            "FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_SIGNATURE + struct.pack("!h", 6) + _text(site_id) + _text(sha256) + _text(pack_id)
                       + struct.pack("!iq", 8, pack_version) + struct.pack("!i", size))
            for chunk in pack_chunks(path, size):
                copy.write(chunk)
            copy.write(_text(received_at) + _COPY_TRAILER)

    def read_pack(self, site_id: str, sha256: str, dest: Path) -> bool:
        rows = self.query("SELECT length(body) FROM packs WHERE site_id = ? AND sha256 = ?", (site_id, sha256))
        if not rows:
            return False
        size = int(rows[0][0])
        with dest.open("wb") as out:
            # One slice at a time (the body is stored uncompressed, so substring reads only that slice); the read
            # transaction's snapshot keeps every slice from the same pack.
            for start in range(1, size + 1, PACK_CHUNK):
                self._cur.execute("SELECT substring(body FROM %s FOR %s) FROM packs WHERE site_id = %s",
                                  (start, PACK_CHUNK, site_id))
                out.write(self._cur.fetchone()[0])  # type: ignore[index]
        return True

    def table_names(self) -> list[str]:
        self._cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                          "AND table_type = 'BASE TABLE'")
        return [row[0] for row in self._cur.fetchall()]


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!i", len(data)) + data


# --- for tests and the benchmark --------------------------------------------------------------------------------


def unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at `url` cannot be used, or None when it answers."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as error:
        return f"PostgreSQL at {where(url)}: {_reason(error)}"


def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url`; the URL of the new database."""
    with _connect(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (closing whatever connections are still in it)."""
    with _connect(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def copy_rows(url: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """A plain COPY of `rows` into `table` in one transaction on a connection of its own: the benchmark's baseline
    for the store's ingest. The number of rows copied."""
    count = 0
    with _connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        with cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    return count
