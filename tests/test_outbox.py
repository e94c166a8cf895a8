"""The device outbox on its own: durability across reopen, its bounds and their counter, bulk acknowledgement."""

from __future__ import annotations

import random
import sqlite3
import stat
import threading
import time
from typing import Any

import pytest
from support import wait_until

from bus.backoff import Backoff
from bus.checkpointer import Checkpointer
from bus.outbox import Outbox
from protocol.codec import encode_event
from protocol.events import ArtworkViewed
from protocol.ids import new_event_id


def events(count: int) -> list[tuple[str, bytes]]:
    return [(new_event_id(), f'{{"n":{i}}}'.encode()) for i in range(count)]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "outbox.sqlite"


def test_events_come_back_in_order_after_reopening(path):
    outbox = Outbox(path)
    first = events(3)
    for item in first:
        outbox.append([item])
    outbox.append(events(2))
    outbox.close()
    reopened = Outbox(path)
    rows = reopened.pending_after(0, limit=10, max_bytes=10_000)
    assert [row.event_id for row in rows[:3]] == [event_id for event_id, _ in first]
    assert [row.seq for row in rows] == sorted(row.seq for row in rows)
    assert reopened.pending == 5
    reopened.close()


def test_sequence_keeps_growing_after_a_reopen(path):
    outbox = Outbox(path)
    outbox.append(events(3))
    outbox.close()
    reopened = Outbox(path)
    reopened.append(events(1))
    seqs = [row.seq for row in reopened.pending_after(0, limit=10, max_bytes=10_000)]
    assert seqs == [1, 2, 3, 4]
    reopened.close()


def test_batches_are_cut_by_count_and_by_bytes(path):
    outbox = Outbox(path)
    outbox.append([(new_event_id(), b"x" * 100) for _ in range(10)])
    assert len(outbox.pending_after(0, limit=4, max_bytes=10_000)) == 4
    assert len(outbox.pending_after(0, limit=10, max_bytes=350)) == 3
    assert len(outbox.pending_after(0, limit=10, max_bytes=1)) == 1, "one event always goes, however large"
    outbox.close()


def test_a_full_outbox_drops_the_oldest_and_counts_them(path):
    outbox = Outbox(path, max_events=100)
    batch = events(150)
    for start in range(0, 150, 10):
        outbox.append(batch[start:start + 10])
    stats = outbox.stats()
    assert (stats.pending, stats.dropped_total) == (100, 50)
    kept = outbox.event_ids()
    assert {event_id for event_id, _ in batch[:50]}.isdisjoint(kept)
    assert {event_id for event_id, _ in batch[50:]} == kept
    (one,) = events(1)
    outbox.append([one])  # one event into a full outbox: the single-event path must respect the bound too
    assert (outbox.pending, outbox.stats().dropped_total) == (100, 51)
    assert one[0] in outbox.event_ids() and batch[50][0] not in outbox.event_ids()
    outbox.close()
    assert Outbox(path, max_events=100).stats().dropped_total == 51, "the counter survives a restart"


def test_events_past_the_age_bound_are_dropped_and_counted(path):
    outbox = Outbox(path, max_age_days=1)
    old = events(5)
    outbox.append(old)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET created_at = ?", (time.time() - 2 * 86400,))
    fresh = events(3)
    outbox.append(fresh)
    assert outbox.expire() == 5
    assert outbox.event_ids() == {event_id for event_id, _ in fresh}
    assert outbox.stats().dropped_total == 5
    outbox.close()


def test_acknowledged_events_stop_counting_at_once_and_go_in_bulk(path):
    outbox = Outbox(path)
    outbox.append(events(10))
    rows = outbox.pending_after(0, limit=10, max_bytes=10_000)
    outbox.acknowledge([row.seq for row in rows[:4]])
    assert outbox.pending == 6
    assert len(outbox.event_ids()) == 10, "deleted later, in bulk"
    assert outbox.flush_acknowledged(older_than_s=60) == 0, "not old enough yet"
    assert outbox.flush_acknowledged() == 4
    assert outbox.event_ids() == {row.event_id for row in rows[4:]}
    assert outbox.pending == 6
    outbox.close()


def test_closing_deletes_what_was_acknowledged(path):
    outbox = Outbox(path)
    outbox.append(events(3))
    outbox.acknowledge([1, 2])
    outbox.close()
    assert Outbox(path).pending == 1


def test_removal_by_id_and_by_seq_ignores_what_is_already_gone(path):
    outbox = Outbox(path)
    batch = events(6)
    outbox.append(batch)
    assert outbox.remove([batch[0][0], new_event_id()], [2, 3, 99]) == 3
    assert outbox.remove([batch[0][0]], [2]) == 0
    assert outbox.pending == 3
    outbox.close()


def test_backoff_grows_to_its_cap_with_jitter_and_resets():
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[4:]}) > 1, "capped delays still differ: jitter"
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_a_new_outbox_uses_small_pages(path):
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 1024
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pending_after_keeps_to_the_byte_budget_but_always_returns_one(path):
    outbox = Outbox(path)
    outbox.append([(new_event_id(), b"x" * 100) for _ in range(10)])
    assert len(outbox.pending_after(0, limit=10, max_bytes=303)) == 3, "101 bytes each, counting a separator"
    assert len(outbox.pending_after(0, limit=10, max_bytes=50)) == 1, "an event larger than the budget still goes"
    assert len(outbox.pending_after(0, limit=4, max_bytes=10_000)) == 4
    outbox.close()


class GatedCheckpointer(Checkpointer):
    """A Checkpointer whose background thread starts its work only when the test opens `gate`: until then no
    wake-up can be consumed, so whether one is due can be read at any moment, whatever the machine's speed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gate = threading.Event()
        super().__init__(*args, **kwargs)

    def _run(self) -> None:
        self.gate.wait()
        super()._run()

    def due(self) -> bool:
        return self._wake.is_set()

    def close(self) -> None:
        self.gate.set()
        super().close()


def test_checkpoints_happen_in_the_background_not_in_the_writers_commit(path):
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, payload BLOB)")
    checkpointer = GatedCheckpointer(path, writer, every_pages=20)
    try:
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 200, "the writer's is a safety net"
        size_before = path.stat().st_size
        for n in range(19):
            writer.execute("INSERT INTO t VALUES (?, ?)", (n, b"x" * 3000))  # one page each, at least
            checkpointer.wrote(1)
            assert not checkpointer.due(), f"a checkpoint asked for after {n + 1} pages, not yet 20"
        # Nothing but the writer can have checkpointed so far: the file shows its commits did not.
        assert path.stat().st_size == size_before, "the writer's commit checkpointed"
        writer.execute("INSERT INTO t VALUES (?, ?)", (19, b"x" * 3000))
        checkpointer.wrote(1)
        assert checkpointer.due(), "20 pages written: a checkpoint is due"
        checkpointer.gate.set()
        assert wait_until(lambda: checkpointer.checkpoints == 1, 30)
        assert not checkpointer.due()
        assert path.stat().st_size >= 20 * 3000, "the rows were copied from the log into the database file"
    finally:
        checkpointer.close()
        writer.close()


def test_an_outbox_left_readable_by_others_is_made_private_when_opened(tmp_path):
    # As an older version left it: created under umask 022, the log and shared memory files beside it.
    path = tmp_path / "old" / "outbox.sqlite"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.execute("INSERT INTO t VALUES (1)")
    old.commit()
    files = [path, path.with_name("outbox.sqlite-wal"), path.with_name("outbox.sqlite-shm")]
    for file in files:
        file.chmod(0o644)
    outbox = Outbox(path)
    try:
        assert {file.name: stat.S_IMODE(file.stat().st_mode) for file in files} == dict.fromkeys(
            (file.name for file in files), 0o600)
    finally:
        outbox.close()
        old.close()


def test_events_are_removed_by_id_however_they_are_stored(path):
    # Canonical events keep their id inside the compressed payload; other payloads keep it in its own column. An
    # ack for events an earlier process sent names them by id only: both kinds must be found.
    canonical = [ArtworkViewed.create(site_id="s", device_id="d", artwork_id=f"w-{i}", source="kiosk",
                                      language="fr") for i in range(6)]
    other = events(3)
    outbox = Outbox(path)
    outbox.append([(event.event_id, encode_event(event)) for event in canonical] + other)
    stored_ids = {row[0] for row in sqlite3.connect(path).execute("SELECT event_id FROM outbox")}
    assert "" in stored_ids, "canonical events are stored with their id inside the payload"
    gone = [canonical[0].event_id, canonical[4].event_id, other[1][0], new_event_id()]
    assert outbox.remove(gone) == 3
    assert outbox.event_ids() == ({event.event_id for event in canonical} | {event_id for event_id, _ in other}) \
        - set(gone)
    rows = outbox.pending_after(0, limit=100, max_bytes=1_000_000)
    assert [row.payload for row in rows if row.event_id == canonical[1].event_id] == [encode_event(canonical[1])]
    outbox.close()
