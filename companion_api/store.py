"""The companion's database: what sites sync up, what phones record, and the privacy lifecycle of visits.

`open_store("postgresql://…")` stores in PostgreSQL (through `companion_api.pg`, for a group of museums and
several replicas behind a load balancer: every piece of state is in the database); any other string is the path
of a SQLite file (the default, one museum). The schema and every query are the same on both
(`companion_api.migrations`); what differs (connections, locks, bulk insertion, large values) sits behind the small
`Tx` interface below.

Tables (columns in their stored order; times are TEXT instants `2026-11-25T17:00:00.000Z`, days `2026-11-25`):
- `analytics(uid, site_id, type, schema_version, device_id, period, visitor, fields, received_at)`: anonymised
  records from the sites, keyed on `uid`. A benchmark's baseline inserts the same rows with
  `executemany("INSERT INTO analytics VALUES (?,?,?,?,?,?,?,?,?)", rows)` on SQLite, or with
  `companion_api.pg.copy_rows(url, "analytics", ANALYTICS_COLUMNS, rows)` on PostgreSQL, where each row is a
  `model.AnalyticsRow` plus `received_at`.
- `take_home(visit_id, artwork_id, kind, site_id, day, dwell_s)`: the items of take-home pages.
- `visit_joins(visit_id, other_visit_id, site_id, day)`: visits that became one.
- `erasures(seq, site_id, visit_id, erased_at)`: tombstones of erased visits, one per (site, visit) (site '' when
  no site knew the visit), and the queue of erasures going down to each site.
- `phone_events(seq, site_id, visit_id, event, created_at)`: events made on phones, going down to each site
  until the site acknowledges them.
- `packs(site_id, sha256, pack_id, pack_version, body, received_at)`: each site's current content pack.
- `sites(site_id, key_sha256, enrolled_at)`, `schema_version(version, applied_at)`.

Every method is thread-safe (FastAPI runs sync endpoints in a thread pool): SQLite gets one connection per
thread, PostgreSQL a small bounded pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from companion_api.migrations import ANALYTICS_COLUMNS, LATEST, VERSION_TABLE, Dialect, statements
from companion_api.model import (
    INSTANT,
    MAX_PACK_BYTES,
    PACK_CHUNK,
    SHA256,
    AnalyticsRow,
    Down,
    DownErasure,
    DownEvent,
    IngestResult,
    JoinRow,
    PackInfo,
    PurgeResult,
    StoreError,
    SyncBatch,
    TakeHomeRow,
    VisitView,
    pack_chunks,
)
from protocol.fields import IDENTIFIER
from protocol.ids import format_instant, utc_now

__all__ = ["ANALYTICS_COLUMNS", "PhoneEvent", "Store", "StoreError", "Tx", "open_store"]


@dataclass(frozen=True)
class PhoneEvent:
    """One event made on a phone, for `Store.record_phone_events`."""

    site_id: str
    event_json: str
    visit_id: str | None
    take_home: TakeHomeRow | None = None

    def visits(self) -> set[str]:
        found = {self.visit_id} if self.visit_id is not None else set()
        if self.take_home is not None:
            found.add(self.take_home.visit_id)
        return found

BUSY_TIMEOUT_MS = 5000
WRITER_CACHE_KIB = 64 * 1024
"""The writer connection's page cache (SQLite's default is 2 MiB)."""
MAX_KEY_CHARS = 200
IN_CHUNK = 500
"""Values per `IN (…)` list: far below either engine's limit on parameters."""
PURGE_CHUNK = 10_000
"""Analytics rows deleted per transaction by retention: other writers get their turn between chunks."""
TRANSIENT_RETRIES = 3

T = TypeVar("T")

_TAKE_HOME_UPSERT = """
    INSERT INTO take_home (visit_id, artwork_id, kind, site_id, day, dwell_s) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (visit_id, artwork_id, kind) DO UPDATE SET
        day = CASE WHEN excluded.day < take_home.day THEN excluded.day ELSE take_home.day END,
        dwell_s = CASE WHEN take_home.dwell_s IS NULL OR excluded.dwell_s > take_home.dwell_s
                       THEN excluded.dwell_s ELSE take_home.dwell_s END
    WHERE excluded.day < take_home.day OR excluded.dwell_s > take_home.dwell_s
       OR (take_home.dwell_s IS NULL AND excluded.dwell_s IS NOT NULL)"""
"""A take-home item keeps its first day and its longest dwell. A row that changes neither touches nothing, so it
counts as a duplicate (the row count of an upsert counts only rows written)."""

_JOIN_UPSERT = """
    INSERT INTO visit_joins (visit_id, other_visit_id, site_id, day) VALUES (?, ?, ?, ?)
    ON CONFLICT (visit_id, other_visit_id) DO UPDATE SET day = excluded.day WHERE excluded.day < visit_joins.day"""

_TOMBSTONE = "INSERT INTO erasures (site_id, visit_id, erased_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


class Tx(Protocol):
    """One transaction on one connection; SQL uses `?` placeholders on both engines."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row; the number of rows changed in all."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""

    def lock(self, name: str, *, shared: bool = False) -> None:
        """Hold a named lock until the transaction ends (PostgreSQL's advisory locks; SQLite's writers are already
        one at a time). Taken in this order only: `erasures` first, then one other."""

    def insert_analytics(self, rows: Sequence[AnalyticsRow], received_at: str) -> int:
        """Insert analytics rows, ignoring uids already stored; how many were new."""

    def write_pack(self, site_id: str, sha256: str, pack_id: str, pack_version: int, received_at: str,
                   path: Path, size: int) -> None:
        """Make the `size` bytes of the file at `path` the site's pack, replacing the previous one."""

    def read_pack(self, site_id: str, sha256: str, dest: Path) -> bool:
        """Write the site's pack to `dest` if it is the one with `sha256`; False (and no file) otherwise."""

    def table_names(self) -> list[str]:
        """The database's tables."""


class Backend(Protocol):
    dialect: Dialect

    def write(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-write transaction (committed when the block ends without an exception)."""

    def read(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-only transaction on one snapshot."""

    def is_transient(self, error: BaseException) -> bool:
        """Whether running the transaction again may succeed (a deadlock, a serialization failure)."""

    def close(self) -> None:
        """Close every connection."""


def open_store(url_or_path: str | Path, *, clock: Callable[[], datetime] = utc_now, pool_size: int = 8) -> Store:
    """The store at `url_or_path`: `postgresql://…` (or `postgres://…`) for PostgreSQL, else a SQLite file path
    (its folder must exist). Connects once to fail early with a `StoreError` an operator can act on. Call
    `migrate()` before using it. `clock` stamps rows (enrollment, erasure, phone events, arrival)."""
    text = str(url_or_path)
    backend: Backend
    if text.startswith(("postgresql://", "postgres://")):
        from companion_api.pg import PgBackend  # only PostgreSQL users need psycopg

        backend = PgBackend(text, pool_size=pool_size)
    else:
        backend = SqliteBackend(Path(text))
    return Store(backend, clock=clock)


class Store:
    """The companion's storage (see the module's docstring)."""

    def __init__(self, backend: Backend, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._backend = backend
        self._clock = clock
        self.dialect: Dialect = backend.dialect

    def close(self) -> None:
        """Close the store's connections."""
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> str:
        return format_instant(self._clock())

    def _write(self, work: Callable[[Tx], T]) -> T:
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                with self._backend.write() as tx:
                    return work(tx)
            except Exception as error:
                if attempt == TRANSIENT_RETRIES or not self._backend.is_transient(error):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- schema -------------------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema up to date; the version it is at. Safe on every start, and from several replicas at
        once: the steps run under a lock, in one transaction."""
        def work(tx: Tx) -> int:
            tx.lock("migrate")
            tx.execute(VERSION_TABLE)
            current = tx.query("SELECT MAX(version) FROM schema_version")[0][0] or 0
            if current > LATEST:
                raise StoreError(f"the companion database is at schema version {current}, newer than this software "
                                 f"knows ({LATEST}): run the newer version of the museum platform")
            for version in range(current + 1, LATEST + 1):
                for sql in statements(version, self.dialect):
                    tx.execute(sql)
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, self._now()))
            return LATEST
        return self._write(work)

    def schema_version(self) -> int:
        """The schema version of the database (0 before the first `migrate`)."""
        with self._backend.read() as tx:
            if "schema_version" not in tx.table_names():
                return 0
            return int(tx.query("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    # --- sites --------------------------------------------------------------------------------------------

    def enroll_site(self, site_id: str) -> str:
        """Enroll a site, or give it a new key: returns the key `<site_id>.<secret>` (shown once; only its SHA-256
        is stored). The previous key of the site stops working."""
        if not isinstance(site_id, str) or IDENTIFIER.match(site_id) is None:
            raise ValueError(f"site id {str(site_id)[:80]!r} is not an identifier (lowercase letters, digits and '-', "
                             "at most 63)")
        key = f"{site_id}.{secrets.token_urlsafe(32)}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        self._write(lambda tx: tx.execute(
            "INSERT INTO sites (site_id, key_sha256, enrolled_at) VALUES (?, ?, ?) ON CONFLICT (site_id) DO UPDATE "
            "SET key_sha256 = excluded.key_sha256, enrolled_at = excluded.enrolled_at", (site_id, digest, self._now())))
        return key

    def site_for_key(self, key: str) -> str | None:
        """The site a key belongs to, or None (unknown site, wrong or malformed key)."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or "." not in key:
            return None
        site_id = key.split(".", 1)[0]
        if IDENTIFIER.match(site_id) is None:
            return None
        with self._backend.read() as tx:
            rows = tx.query("SELECT key_sha256 FROM sites WHERE site_id = ?", (site_id,))
        if not rows:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        return site_id if hmac.compare_digest(digest, str(rows[0][0])) else None

    def sites(self) -> list[str]:
        """The enrolled sites."""
        with self._backend.read() as tx:
            return [row[0] for row in tx.query("SELECT site_id FROM sites ORDER BY site_id")]

    # --- sync ---------------------------------------------------------------------------------------------

    def ingest(self, site_id: str, batch: SyncBatch) -> IngestResult:
        """Store one batch of the site in one transaction: analytics (new uids only), erasures (each deletes the
        visit's rows and the analytics of its pseudonym, and adds a tombstone), take-home items and joins (dropped
        when either visit is erased), and the acknowledgement of the phone events up to `events_after`."""
        if batch.site_id != site_id:
            raise ValueError(f"the batch is for site {batch.site_id!r}, not {site_id!r}")
        received_at = self._now()

        def work(tx: Tx) -> IngestResult:
            # Erasures delete what other transactions may be adding: they wait for them, and they for an erasure.
            tx.lock("erasures", shared=not batch.erasures)
            # One batch of a site at a time, so each site's seqs are given out in commit order.
            tx.lock(f"site:{site_id}")
            analytics = tx.insert_analytics(batch.analytics, received_at) if batch.analytics else 0
            erasures = 0
            if batch.erasures:
                tx.executemany("DELETE FROM analytics WHERE visitor = ?", [(row.visitor,) for row in batch.erasures])
                _delete_visits(tx, [row.visit_id for row in batch.erasures])
                erasures = tx.executemany(_TOMBSTONE, [(site_id, row.visit_id, received_at) for row in batch.erasures])
            visits = {row.visit_id for row in batch.take_home}
            for join in batch.joins:
                visits.update((join.visit_id, join.other_visit_id))
            erased = _erased_among(tx, visits)
            take_home = sorted((row.visit_id, row.artwork_id, row.kind, row.site_id, row.day, row.dwell_s)
                               for row in batch.take_home if row.visit_id not in erased)
            joins = sorted((row.visit_id, row.other_visit_id, row.site_id, row.day) for row in batch.joins
                           if row.visit_id not in erased and row.other_visit_id not in erased)
            refused = len(batch.take_home) - len(take_home) + len(batch.joins) - len(joins)
            if refused:
                # The visit was erased where this site did not know it yet (or before it sent this): the site
                # hears of the erasure too, through its own tombstone.
                refused_visits = sorted(erased & visits)
                tx.executemany(_TOMBSTONE, [(site_id, visit, received_at) for visit in refused_visits])
            stored_take_home = tx.executemany(_TAKE_HOME_UPSERT, take_home) if take_home else 0
            stored_joins = tx.executemany(_JOIN_UPSERT, joins) if joins else 0
            acked = 0
            if batch.events_after > 0:
                acked = tx.execute("DELETE FROM phone_events WHERE site_id = ? AND seq <= ?",
                                   (site_id, batch.events_after))
            pack_wanted = False
            if batch.pack is not None:
                pack_wanted = not tx.query("SELECT 1 FROM packs WHERE site_id = ? AND sha256 = ?",
                                           (site_id, batch.pack.sha256))
            duplicates = (len(batch.analytics) - analytics + len(batch.erasures) - erasures
                          + len(take_home) - stored_take_home + len(joins) - stored_joins)
            return IngestResult(analytics, stored_take_home, stored_joins, erasures, duplicates, refused, acked,
                                pack_wanted)
        return self._write(work)

    def pending_down(self, site_id: str, *, events_after: int, erasures_after: int, limit: int = 1000) -> Down:
        """What goes down to the site: its erasures after `erasures_after` and its phone events after
        `events_after`, oldest first, at most `limit` of each; `more` when either has more."""
        with self._backend.read() as tx:
            erasures = tx.query("SELECT seq, visit_id FROM erasures WHERE site_id = ? AND seq > ? ORDER BY seq "
                                "LIMIT ?", (site_id, erasures_after, limit + 1))
            events = tx.query("SELECT seq, event FROM phone_events WHERE site_id = ? AND seq > ? ORDER BY seq "
                              "LIMIT ?", (site_id, events_after, limit + 1))
        return Down(tuple(DownErasure(int(seq), visit) for seq, visit in erasures[:limit]),
                    tuple(DownEvent(int(seq), event) for seq, event in events[:limit]),
                    len(erasures) > limit or len(events) > limit)

    # --- phones -------------------------------------------------------------------------------------------

    def record_phone_event(self, site_id: str, event_json: str, visit_id: str | None, *,
                           take_home: TakeHomeRow | None = None, join: JoinRow | None = None) -> int:
        """Queue an event made on a phone for the site (with the take-home item or join it makes, so the visit's
        page shows it at once); its seq. Returns 0 and stores nothing when a visit it names is erased."""
        visits = {visit_id} if visit_id is not None else set()
        if take_home is not None:
            visits.add(take_home.visit_id)
        if join is not None:
            visits.update((join.visit_id, join.other_visit_id))
        created_at = self._now()

        def work(tx: Tx) -> int:
            tx.lock("erasures", shared=True)
            # A site's phone events get their seqs in commit order: a site that has read seq N must never see a
            # smaller one appear later (another replica's transaction committing late).
            tx.lock(f"phone:{site_id}")
            if visits and _erased_among(tx, visits):
                return 0
            seq = int(tx.query("INSERT INTO phone_events (site_id, visit_id, event, created_at) VALUES (?, ?, ?, ?) "
                               "RETURNING seq", (site_id, visit_id, event_json, created_at))[0][0])
            if take_home is not None:
                tx.execute(_TAKE_HOME_UPSERT, (take_home.visit_id, take_home.artwork_id, take_home.kind,
                                               take_home.site_id, take_home.day, take_home.dwell_s))
            if join is not None:
                tx.execute(_JOIN_UPSERT, (join.visit_id, join.other_visit_id, join.site_id, join.day))
            return seq
        return self._write(work)

    def record_phone_events(self, items: Sequence[PhoneEvent]) -> list[int]:
        """`record_phone_event` for many events in one transaction (the page views of a moment, gathered by
        `phone_events.ViewQueue`): their seqs, 0 for each refused because a visit it names is erased."""
        if not items:
            return []
        visits = {visit for item in items for visit in item.visits()}
        created_at = self._now()

        def work(tx: Tx) -> list[int]:
            tx.lock("erasures", shared=True)
            for site_id in sorted({item.site_id for item in items}):
                tx.lock(f"phone:{site_id}")
            erased = _erased_among(tx, visits) if visits else set()
            seqs: list[int] = []
            for item in items:
                if erased.intersection(item.visits()):
                    seqs.append(0)
                    continue
                seqs.append(int(tx.query(
                    "INSERT INTO phone_events (site_id, visit_id, event, created_at) VALUES (?, ?, ?, ?) "
                    "RETURNING seq", (item.site_id, item.visit_id, item.event_json, created_at))[0][0]))
                if item.take_home is not None:
                    row = item.take_home
                    tx.execute(_TAKE_HOME_UPSERT, (row.visit_id, row.artwork_id, row.kind, row.site_id, row.day,
                                                   row.dwell_s))
            return seqs
        return self._write(work)

    # --- visits -------------------------------------------------------------------------------------------

    def visit(self, visit_id: str, *, max_visits: int = 32) -> VisitView | None:
        """The take-home items of the visit and of every visit joined to it (either way, nearest first, at most
        `max_visits` visits); None when there are none, so an unknown, expired and erased visit look alike."""
        with self._backend.read() as tx:
            visits = _joined(tx, visit_id, max_visits)
            rows: list[tuple[Any, ...]] = []
            for chunk in _chunks(visits):
                rows += tx.query("SELECT visit_id, artwork_id, kind, site_id, day, dwell_s FROM take_home "
                                 f"WHERE visit_id IN ({_marks(chunk)})", chunk)
        if not rows:
            return None
        rows.sort(key=lambda r: (r[4], r[1], r[2], r[0]))
        return VisitView([TakeHomeRow(v, a, k, s, d, None if w is None else float(w)) for v, a, k, s, d, w in rows],
                         visits)

    def forget(self, visit_id: str, *, max_visits: int = 32) -> int:
        """Erase the visit and every visit joined to it (at most `max_visits`): their take-home items, joins and
        queued phone events go, and each gets a tombstone per site that knew it (site '' when none did), so no
        site stores it again and each site hears of the erasure. Returns the number of visits erased."""
        erased_at = self._now()

        def work(tx: Tx) -> int:
            tx.lock("erasures")
            visits = _joined(tx, visit_id, max_visits)
            known: set[tuple[str, str]] = set()
            for chunk in _chunks(visits):
                marks = _marks(chunk)
                for site, visit in tx.query(
                        f"SELECT site_id, visit_id FROM take_home WHERE visit_id IN ({marks}) "
                        f"UNION SELECT site_id, visit_id FROM visit_joins WHERE visit_id IN ({marks}) "
                        f"UNION SELECT site_id, other_visit_id FROM visit_joins WHERE other_visit_id IN ({marks}) "
                        f"UNION SELECT site_id, visit_id FROM phone_events WHERE visit_id IN ({marks})", chunk * 4):
                    known.add((site, visit))
            _delete_visits(tx, visits)
            with_site = {visit for _, visit in known}
            tombstones = sorted(known) + [("", visit) for visit in visits
                                          if visit not in with_site and not _erased_among(tx, {visit})]
            tx.executemany(_TOMBSTONE, [(site, visit, erased_at) for site, visit in tombstones])
            return len(visits)
        return self._write(work)

    def is_erased(self, visit_id: str) -> bool:
        """Whether the visit has a tombstone (erased, here or at a site, within `visit_days`)."""
        with self._backend.read() as tx:
            return bool(tx.query("SELECT 1 FROM erasures WHERE visit_id = ? LIMIT 1", (visit_id,)))

    # --- retention ----------------------------------------------------------------------------------------

    def purge(self, now: datetime, *, visit_days: int, analytics_days: int) -> PurgeResult:
        """Delete what retention no longer allows: take-home items and joins of a day more than `visit_days` ago,
        phone events and tombstones made more than `visit_days` ago, analytics of a period more than
        `analytics_days` ago. A row exactly at the limit stays."""
        if now.tzinfo is None:
            raise ValueError("purge needs a timezone-aware now")
        now = now.astimezone(UTC)
        visit_cut = now - timedelta(days=visit_days)
        day, instant = visit_cut.date().isoformat(), format_instant(visit_cut)
        analytics_cut = format_instant(now - timedelta(days=analytics_days))

        def visits(tx: Tx) -> tuple[int, int, int, int]:
            return (tx.execute("DELETE FROM take_home WHERE day < ?", (day,)),
                    tx.execute("DELETE FROM visit_joins WHERE day < ?", (day,)),
                    tx.execute("DELETE FROM phone_events WHERE created_at < ?", (instant,)),
                    tx.execute("DELETE FROM erasures WHERE erased_at < ?", (instant,)))
        take_home, joins, phone_events, erasures = self._write(visits)
        analytics = 0
        while True:
            deleted = self._write(lambda tx: tx.execute(
                "DELETE FROM analytics WHERE uid IN (SELECT uid FROM analytics WHERE period < ? LIMIT ?)",
                (analytics_cut, PURGE_CHUNK)))
            analytics += deleted
            if deleted < PURGE_CHUNK:
                break
        return PurgeResult(take_home, joins, phone_events, erasures, analytics)

    # --- content packs ------------------------------------------------------------------------------------

    def put_pack(self, site_id: str, sha256: str, pack_id: str, pack_version: int, path_to_file: Path) -> None:
        """Make the file the site's current pack (the caller has checked its hash and contents)."""
        path = Path(path_to_file)
        size = path.stat().st_size
        if size > MAX_PACK_BYTES:
            raise ValueError(f"{path}: a pack of {size} bytes is larger than the {MAX_PACK_BYTES} the store keeps")
        if SHA256.match(sha256) is None or IDENTIFIER.match(site_id) is None or IDENTIFIER.match(pack_id) is None:
            raise ValueError("put_pack needs a site id, a lowercase hex SHA-256 and a pack id")
        received_at = self._now()
        self._write(lambda tx: tx.write_pack(site_id, sha256, pack_id, pack_version, received_at, path, size))

    def pack_info(self, site_id: str) -> PackInfo | None:
        """The site's current pack, or None."""
        with self._backend.read() as tx:
            rows = tx.query("SELECT site_id, sha256, pack_id, pack_version, length(body), received_at FROM packs "
                            "WHERE site_id = ?", (site_id,))
        if not rows:
            return None
        site, sha256, pack_id, version, size, received_at = rows[0]
        return PackInfo(site, sha256, pack_id, int(version), int(size), received_at)

    def pack_body(self, site_id: str, sha256: str, dest: Path) -> bool:
        """Write the site's pack to `dest` when it is still the one with `sha256`; False (no file) otherwise."""
        with self._backend.read() as tx:
            return tx.read_pack(site_id, sha256, Path(dest))

    # --- reading, for tests and tools ---------------------------------------------------------------------

    def analytics_count(self, site_id: str | None = None) -> int:
        """How many analytics records are stored (of one site, or of all)."""
        with self._backend.read() as tx:
            if site_id is None:
                return int(tx.query("SELECT COUNT(*) FROM analytics")[0][0])
            return int(tx.query("SELECT COUNT(*) FROM analytics WHERE site_id = ?", (site_id,))[0][0])

    def table_names(self) -> list[str]:
        """The tables of the database, sorted."""
        with self._backend.read() as tx:
            return sorted(tx.table_names())

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of one table, in its column order, sorted (for tests and inspection: the whole table)."""
        with self._backend.read() as tx:
            if table not in tx.table_names():
                raise ValueError(f"no table {table!r}")
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in tx.query(f"SELECT * FROM {table} ORDER BY 1, 2")]


# --- shared queries -------------------------------------------------------------------------------------------


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield list(values[start:start + IN_CHUNK])


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _erased_among(tx: Tx, visits: Iterable[str]) -> set[str]:
    """Which of these visits have a tombstone."""
    erased: set[str] = set()
    for chunk in _chunks(sorted(visits)):
        erased.update(row[0] for row in tx.query(
            f"SELECT DISTINCT visit_id FROM erasures WHERE visit_id IN ({_marks(chunk)})", chunk))
    return erased


def _delete_visits(tx: Tx, visits: Sequence[str]) -> None:
    """Delete the take-home items, joins (either side) and queued phone events of these visits."""
    rows = [(visit,) for visit in visits]
    tx.executemany("DELETE FROM take_home WHERE visit_id = ?", rows)
    tx.executemany("DELETE FROM visit_joins WHERE visit_id = ?", rows)
    tx.executemany("DELETE FROM visit_joins WHERE other_visit_id = ?", rows)
    tx.executemany("DELETE FROM phone_events WHERE visit_id = ?", rows)


def _joined(tx: Tx, visit_id: str, max_visits: int) -> list[str]:
    """The visit and the visits joined to it, directly or through others, either way: breadth first, at most
    `max_visits` (a join graph grown by accident or on purpose stays a bounded amount of work)."""
    visits, seen, frontier = [visit_id], {visit_id}, [visit_id]
    while frontier and len(visits) < max_visits:
        found: set[str] = set()
        for chunk in _chunks(frontier):
            marks = _marks(chunk)
            found.update(row[0] for row in tx.query(
                f"SELECT other_visit_id FROM visit_joins WHERE visit_id IN ({marks}) "
                f"UNION SELECT visit_id FROM visit_joins WHERE other_visit_id IN ({marks})", chunk * 2))
        frontier = sorted(found - seen)[:max_visits - len(visits)]
        visits += frontier
        seen.update(frontier)
    return visits


# --- SQLite ---------------------------------------------------------------------------------------------------


class SqliteBackend:
    """One SQLite file in WAL mode, one connection per thread.

    `synchronous=NORMAL` in WAL mode: a commit is durable once it is in the WAL file, which survives the companion
    process crashing or being killed at any point; only a power cut or kernel crash can lose the transactions
    committed since the last checkpoint's fsync (never corrupt the database). That is the right trade for a
    companion: FULL would fsync on every commit, and what the companion holds is a copy of what the sites hold
    (analytics and take-home records the hub keeps and can sync again) plus page views and saves made on phones,
    whose loss in a power cut costs a few counts and a save, not an obligation. The hub, which acknowledges
    devices' events and lets them forget, uses FULL.
    """

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here rather than on SQLite's busy handler, which sleeps 1, 2, 5, 10 ms …
        # between retries: under a burst of page views the threads would spend most of their time asleep.
        # Another process (a second worker) still waits through busy_timeout.
        self._writer = threading.Lock()
        self._write_conn: sqlite3.Connection | None = None
        self._closed = False
        if not path.parent.is_dir():
            raise StoreError(f"{path}: the folder {path.parent} does not exist; create it or correct the store "
                             "setting")
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open()
        self._local.conn = conn
        return conn

    def _open(self, cache_kib: int | None = None) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"{self._path}: the store is closed")
        try:
            # check_same_thread=False only so that close() may close every connection; each is used by one thread
            # (or, for the writer's, under `_writer`).
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if cache_kib is not None:
                conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        except sqlite3.Error as error:
            raise StoreError(f"{self._path}: cannot open the SQLite database ({error}); check the path and its "
                             "permissions") from None
        with self._lock:
            self._all.append(conn)
        return conn

    def _writer_connection(self) -> sqlite3.Connection:
        """The one connection this process writes through (under `_writer`), with a large page cache: a batch
        inserts thousands of rows at keys spread over the tables (take-home items are keyed by visit), and a
        cache that holds the tables' upper levels saves most of the reads of a large batch."""
        if self._write_conn is None:
            self._write_conn = self._open(WRITER_CACHE_KIB)
        return self._write_conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        with self._writer:
            conn = self._writer_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
                conn.commit()
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            yield _SqliteTx(conn)
        finally:
            conn.rollback()

    def is_transient(self, error: BaseException) -> bool:
        return False  # the writers queue on BEGIN IMMEDIATE (busy_timeout): nothing to retry

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._all = self._all, []
            self._write_conn = None
        for conn in connections:
            conn.close()
        self._local = threading.local()


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        return self._conn.executemany(sql, rows).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def lock(self, name: str, *, shared: bool = False) -> None:
        pass  # BEGIN IMMEDIATE: one writer at a time already

    def insert_analytics(self, rows: Sequence[AnalyticsRow], received_at: str) -> int:
        # received_at is one value for the whole batch: written into the statement (it is our own instant, checked
        # below) rather than appended to each of 20,000 rows.
        if INSTANT.match(received_at) is None:
            raise ValueError(f"not an instant: {received_at!r}")
        return self._conn.executemany(
            f"INSERT INTO analytics ({', '.join(ANALYTICS_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{received_at}') "
            "ON CONFLICT DO NOTHING", rows).rowcount

    def write_pack(self, site_id: str, sha256: str, pack_id: str, pack_version: int, received_at: str,
                   path: Path, size: int) -> None:
        rowid = self._conn.execute(
            "INSERT INTO packs (site_id, sha256, pack_id, pack_version, body, received_at) "
            "VALUES (?, ?, ?, ?, zeroblob(?), ?) ON CONFLICT (site_id) DO UPDATE SET sha256 = excluded.sha256, "
            "pack_id = excluded.pack_id, pack_version = excluded.pack_version, body = excluded.body, "
            "received_at = excluded.received_at RETURNING rowid",
            (site_id, sha256, pack_id, pack_version, size, received_at)).fetchone()[0]
        # Streamed through an incremental blob handle: a pack of hundreds of megabytes never sits in memory. Other
        # writers wait meanwhile (a second or so for the largest pack, within busy_timeout); readers do not.
        with self._conn.blobopen("packs", "body", rowid) as blob:
            for chunk in pack_chunks(path, size):
                blob.write(chunk)

    def read_pack(self, site_id: str, sha256: str, dest: Path) -> bool:
        row = self._conn.execute("SELECT rowid FROM packs WHERE site_id = ? AND sha256 = ?",
                                 (site_id, sha256)).fetchone()
        if row is None:
            return False
        with self._conn.blobopen("packs", "body", row[0], readonly=True) as blob, dest.open("wb") as out:
            while chunk := blob.read(PACK_CHUNK):
                out.write(chunk)
        return True

    def table_names(self) -> list[str]:
        return [row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
