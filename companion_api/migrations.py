"""The companion store's schema: one list of steps for SQLite and PostgreSQL alike.

Each step is a list of statements written once, with a few words that differ between the engines in braces
(`DIALECTS`). `Store.migrate` applies the steps a database lacks, in one transaction, and records each in
`schema_version`. Steps are never edited once released: a change is a new step.

Every time is TEXT in the wire's instant format (`2026-11-25T17:00:00.000Z`) or a day (`2026-11-25`), on both
engines, so the same comparisons (retention, cursors) work the same everywhere.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

ANALYTICS_COLUMNS = ("uid", "site_id", "type", "schema_version", "device_id", "period", "visitor", "fields",
                     "received_at")
"""The columns of `analytics`, in their stored order: a `model.AnalyticsRow` then the time it arrived."""

DIALECTS: dict[Dialect, dict[str, str]] = {
    # AUTOINCREMENT: SQLite would otherwise hand out again the seq of a deleted last row, and a site whose cursor
    # is past it would never receive the new row. PostgreSQL's identity never goes back.
    "sqlite": {"seq": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL",
               "without_rowid": " WITHOUT ROWID"},
    "postgresql": {"seq": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "blob": "BYTEA",
                   "real": "DOUBLE PRECISION", "without_rowid": ""},
}

_V1 = [
    """CREATE TABLE sites (
        site_id TEXT PRIMARY KEY,
        key_sha256 TEXT NOT NULL,
        enrolled_at TEXT NOT NULL
    )""",
    # Keyed on the uid without a rowid on SQLite: one B-tree instead of two for the table that takes the volume.
    # The partial index on visitor leaves out the (many) records without one: an erasure looks up a pseudonym.
    """CREATE TABLE analytics (
        uid TEXT PRIMARY KEY,
        site_id TEXT NOT NULL,
        type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        device_id TEXT NOT NULL,
        period TEXT NOT NULL,
        visitor TEXT,
        fields TEXT NOT NULL,
        received_at TEXT NOT NULL
    ){without_rowid}""",
    "CREATE INDEX analytics_period ON analytics (period)",
    "CREATE INDEX analytics_visitor ON analytics (visitor) WHERE visitor IS NOT NULL",
    """CREATE TABLE take_home (
        visit_id TEXT NOT NULL,
        artwork_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        site_id TEXT NOT NULL,
        day TEXT NOT NULL,
        dwell_s {real},
        PRIMARY KEY (visit_id, artwork_id, kind)
    ){without_rowid}""",
    "CREATE INDEX take_home_day ON take_home (day)",
    """CREATE TABLE visit_joins (
        visit_id TEXT NOT NULL,
        other_visit_id TEXT NOT NULL,
        site_id TEXT NOT NULL,
        day TEXT NOT NULL,
        PRIMARY KEY (visit_id, other_visit_id)
    ){without_rowid}""",
    "CREATE INDEX visit_joins_other ON visit_joins (other_visit_id)",
    "CREATE INDEX visit_joins_day ON visit_joins (day)",
    # Tombstones and the queue of erasures going down to each site: one row per (site, visit).
    """CREATE TABLE erasures (
        seq {seq},
        site_id TEXT NOT NULL,
        visit_id TEXT NOT NULL,
        erased_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX erasures_site_visit ON erasures (site_id, visit_id)",
    "CREATE INDEX erasures_visit ON erasures (visit_id)",
    "CREATE INDEX erasures_site_seq ON erasures (site_id, seq)",
    "CREATE INDEX erasures_erased_at ON erasures (erased_at)",
    # The queue of events made on phones going down to each site, until the site acknowledges them.
    """CREATE TABLE phone_events (
        seq {seq},
        site_id TEXT NOT NULL,
        visit_id TEXT,
        event TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX phone_events_site_seq ON phone_events (site_id, seq)",
    "CREATE INDEX phone_events_visit ON phone_events (visit_id) WHERE visit_id IS NOT NULL",
    "CREATE INDEX phone_events_created_at ON phone_events (created_at)",
    """CREATE TABLE packs (
        site_id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        pack_version BIGINT NOT NULL,
        body {blob} NOT NULL,
        received_at TEXT NOT NULL
    )""",
]

_V1_POSTGRESQL = [
    # A pack is media in a tar: compressing it again gains nothing, and uncompressed out-of-line storage lets
    # `substring` read one slice of it without the rest (the store reads a pack in chunks).
    "ALTER TABLE packs ALTER COLUMN body SET STORAGE EXTERNAL",
]

STEPS: list[tuple[list[str], dict[Dialect, list[str]]]] = [
    (_V1, {"postgresql": _V1_POSTGRESQL}),
]
"""The schema's history: step N (from 1) is STEPS[N-1]: statements for both engines, then per-engine ones."""

LATEST = len(STEPS)

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)"""


def statements(version: int, dialect: Dialect) -> list[str]:
    """The statements of step `version` (from 1) for `dialect`."""
    common, specific = STEPS[version - 1]
    words = DIALECTS[dialect]
    return [sql.format(**words) for sql in common] + list(specific.get(dialect, []))
