"""Page views written in groups (`companion_api.phone_events.ViewQueue`), on a real SQLite store: each view is
stored once, a flush or a close leaves none behind, a full queue makes the page write its own view, and a view
naming a forgotten visit still counts, without the visit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from companion_api.phone_events import ViewQueue, record_view
from companion_api.store import Store, open_store
from protocol.ids import new_visit_id, visit_id_for

SITE = "demo"
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(str(tmp_path / "companion.sqlite"))
    store.migrate()
    yield store
    store.close()


def stored(store: Store) -> list[dict[str, object]]:
    down = store.pending_down(SITE, events_after=0, erasures_after=0, limit=100_000)
    return [json.loads(event.event) for event in down.events]


def view(queue: ViewQueue, artwork: str, visit_id: str | None = None) -> None:
    record_view(queue, device_id="companion", site_id=SITE, artwork_id=artwork, language="fr", visit_id=visit_id,
                now=NOW)


def test_every_view_is_stored_once_and_close_writes_the_last(store: Store) -> None:
    queue = ViewQueue(store, flush_every_s=3600, max_batch=100_000)  # the thread never writes on its own
    for n in range(1_200):
        view(queue, f"work-{n % 7}")
    assert stored(store) == []
    queue.flush()
    assert len(stored(store)) == 1_200
    view(queue, "work-last")
    queue.close()
    events = stored(store)
    assert len(events) == 1_201 and len({e["event_id"] for e in events}) == 1_201
    assert events[-1]["artwork_id"] == "work-last"


def test_a_full_queue_makes_the_page_write_its_own_view(store: Store) -> None:
    queue = ViewQueue(store, flush_every_s=3600, max_batch=100_000, max_pending=2)
    try:
        for n in range(3):
            view(queue, f"work-{n}")
        assert [e["artwork_id"] for e in stored(store)] == ["work-2"]  # the third did not wait
    finally:
        queue.close()
    assert len(stored(store)) == 3


def test_the_thread_writes_a_full_batch_without_a_flush(store: Store) -> None:
    queue = ViewQueue(store, flush_every_s=3600, max_batch=10)
    try:
        for n in range(10):  # the tenth wakes the thread
            view(queue, f"work-{n}")
        with queue._flushing:  # once the thread has let go of its batch, it is stored
            pass
        deadline = 0
        while len(stored(store)) < 10 and deadline < 2_000:
            deadline += 1
            queue._wake.wait(0.005)
        assert len(stored(store)) == 10
    finally:
        queue.close()


def test_a_view_of_a_forgotten_visit_counts_without_the_visit(store: Store) -> None:
    visit = visit_id_for(new_visit_id())
    queue = ViewQueue(store, flush_every_s=3600, max_batch=100_000)
    view(queue, "work-1", visit)
    queue.flush()
    assert store.visit(visit) is not None  # the view made it an "opened" work of the visit
    store.forget(visit)
    view(queue, "work-2", visit)
    queue.close()
    late = [e for e in stored(store) if e["artwork_id"] == "work-2"]
    assert len(late) == 1 and late[0]["visit_id"] is None
    assert store.visit(visit) is None
