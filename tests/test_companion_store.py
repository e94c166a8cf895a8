"""The companion store on SQLite and PostgreSQL (`store_url`, see companion_support.py): schema, sync ingest and
the down queue, take-home visits, erasure, retention, site keys and packs."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import companion_support
import pytest

from companion_api.migrations import LATEST
from companion_api.model import JoinRow, SyncBatch, TakeHomeRow, parse_batch
from companion_api.store import Store, StoreError, open_store
from protocol.ids import format_instant, visit_id_for

store_url = companion_support.store_url  # the fixture, SQLite and PostgreSQL

START = datetime(2026, 11, 25, 17, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    with open_store(store_url, clock=clock) as opened:
        opened.migrate()
        yield opened


def visit(name: str) -> str:
    return visit_id_for(f"token-{name}")


def digest() -> str:
    return secrets.token_urlsafe(18)


def analytics_row(visitor: str | None = None, period: str = "2026-11-25T17:00:00.000Z",
                  uid: str | None = None) -> list[Any]:
    return [uid or digest(), "artwork.viewed", 1, "kiosk-1", period, visitor, {"artwork_id": "mona-lisa"}]


def batch(site: str = "demo", **parts: Any) -> SyncBatch:
    return parse_batch({"v": 1, "site_id": site, **parts})


def items(store: Store, visit_id: str) -> list[tuple[str, str, str, str, float | None]]:
    view = store.visit(visit_id)
    return [] if view is None else [(i.visit_id, i.artwork_id, i.kind, i.day, i.dwell_s) for i in view.items]


# --- schema ---------------------------------------------------------------------------------------------------


def test_migrate_is_idempotent(store: Store, store_url: str) -> None:
    assert store.schema_version() == LATEST
    assert store.migrate() == LATEST
    assert store.table_names() == ["analytics", "erasures", "packs", "phone_events", "schema_version", "sites",
                                   "take_home", "visit_joins"]
    assert [row[0] for row in store.rows("schema_version")] == list(range(1, LATEST + 1))


def test_replicas_migrate_at_the_same_time(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    results: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: results.append(_migrate(s))) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [LATEST] * 3
    assert [row[0] for row in stores[0].rows("schema_version")] == list(range(1, LATEST + 1))
    for s in stores:
        s.close()


def _migrate(store: Store) -> Any:
    try:
        return store.migrate()
    except Exception as error:  # reported by the assertion, not lost in the thread
        return error


def test_a_newer_schema_is_refused_with_one_line(store: Store, store_url: str) -> None:
    with open_store(store_url) as other:
        other._write(lambda tx: tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                                           (LATEST + 1, "2030-01-01T00:00:00.000Z")))
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1}, newer than this software"):
        store.migrate()


def test_a_missing_folder_or_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist; create it or correct the store setting"):
        open_store(tmp_path / "nowhere" / "companion.sqlite")
    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at postgresql://u@127\.0\.0\.1:1/x") as caught:
        open_store("postgresql://u:secret@127.0.0.1:1/x")
    assert "secret" not in str(caught.value)


# --- ingest ---------------------------------------------------------------------------------------------------


def test_ingest_is_idempotent(store: Store) -> None:
    a, b = visit("a"), visit("b")
    sent = batch(analytics=[analytics_row(digest()) for _ in range(50)],
                 take_home=[[a, "mona-lisa", "collected", "2026-11-25", None],
                            [a, "venus", "lingered", "2026-11-25", 30]],
                 joins=[[a, b, "2026-11-25"]])
    first = store.ingest("demo", sent)
    assert first.stored() == {"analytics": 50, "take_home": 2, "joins": 1, "erasures": 0}
    assert first.duplicates == 0
    again = store.ingest("demo", sent)
    assert again.stored() == {"analytics": 0, "take_home": 0, "joins": 0, "erasures": 0}
    assert again.duplicates == 53
    assert store.analytics_count() == 50 and store.analytics_count("demo") == 50 and store.analytics_count("x") == 0
    assert len(store.rows("take_home")) == 2 and len(store.rows("visit_joins")) == 1


def test_part_of_a_batch_sent_again_stores_only_the_new_rows(store: Store) -> None:
    rows = [analytics_row() for _ in range(20)]
    store.ingest("demo", batch(analytics=rows[:10]))
    result = store.ingest("demo", batch(analytics=rows[5:]))
    assert (result.analytics, result.duplicates) == (10, 5)
    assert store.analytics_count() == 20
    stored = {row[0]: row for row in store.rows("analytics")}
    uid, kind, version, device, period, visitor, _fields = rows[7]
    assert stored[uid] == (uid, "demo", kind, version, device, period, visitor, '{"artwork_id":"mona-lisa"}',
                           "2026-11-25T17:00:00.000Z")


def test_take_home_keeps_the_first_day_and_the_longest_dwell(store: Store) -> None:
    a = visit("a")
    store.ingest("demo", batch(take_home=[[a, "venus", "lingered", "2026-11-26", 30]]))
    assert items(store, a) == [(a, "venus", "lingered", "2026-11-26", 30.0)]
    result = store.ingest("demo", batch(take_home=[[a, "venus", "lingered", "2026-11-25", 10]]))
    assert (result.take_home, result.duplicates) == (1, 0)
    assert items(store, a) == [(a, "venus", "lingered", "2026-11-25", 30.0)]
    result = store.ingest("demo", batch(take_home=[[a, "venus", "lingered", "2026-11-27", 60.5]]))
    assert items(store, a) == [(a, "venus", "lingered", "2026-11-25", 60.5)]
    result = store.ingest("demo", batch(take_home=[[a, "venus", "lingered", "2026-11-27", 5]]))
    assert (result.take_home, result.duplicates) == (0, 1)
    store.ingest("demo", batch(take_home=[[a, "venus", "opened", "2026-11-27", None],
                                          [a, "venus", "opened", "2026-11-28", None]]))
    assert items(store, a)[-1] == (a, "venus", "opened", "2026-11-27", None)
    store.ingest("demo", batch(take_home=[[a, "venus", "opened", "2026-11-28", 12]]))
    assert items(store, a)[-1] == (a, "venus", "opened", "2026-11-27", 12.0)


def test_an_erasure_in_a_batch_deletes_the_visit_and_its_analytics(store: Store) -> None:
    a, b, pseudonym = visit("a"), visit("b"), digest()
    kept = analytics_row(digest())
    store.ingest("demo", batch(analytics=[analytics_row(pseudonym), analytics_row(pseudonym), kept],
                               take_home=[[a, "mona-lisa", "collected", "2026-11-25", None],
                                          [b, "venus", "opened", "2026-11-25", None]],
                               joins=[[b, a, "2026-11-25"]]))
    store.record_phone_event("demo", '{"type": "artwork.viewed"}', a)
    result = store.ingest("demo", batch(erasures=[[a, pseudonym]]))
    assert (result.erasures, result.duplicates) == (1, 0)
    assert [row[0] for row in store.rows("analytics")] == [kept[0]]
    assert store.visit(a) is None
    assert items(store, b) == [(b, "venus", "opened", "2026-11-25", None)]  # the site erases what it chose to
    assert store.rows("visit_joins") == [] and store.rows("phone_events") == []
    assert store.is_erased(a) and not store.is_erased(b)
    again = store.ingest("demo", batch(erasures=[[a, pseudonym]]))
    assert (again.erasures, again.duplicates) == (0, 1)
    assert [(row[1], row[2]) for row in store.rows("erasures")] == [("demo", a)]


def test_an_erased_visit_is_refused_later_and_its_site_hears_of_it(store: Store) -> None:
    a, b = visit("a"), visit("b")
    assert store.forget(a) == 1  # known to no site yet: a tombstone of site ''
    assert [(row[1], row[2]) for row in store.rows("erasures")] == [("", a)]
    result = store.ingest("demo", batch(take_home=[[a, "mona-lisa", "collected", "2026-11-25", None],
                                                   [b, "venus", "opened", "2026-11-25", None]],
                                        joins=[[b, a, "2026-11-25"], [b, visit("c"), "2026-11-25"]]))
    assert (result.take_home, result.joins, result.refused_erased) == (1, 1, 2)
    assert store.visit(a) is None
    assert [v for v in store.visit(b).visit_ids] == [b, visit("c")]  # type: ignore[union-attr]
    down = store.pending_down("demo", events_after=0, erasures_after=0)
    assert [e.visit_id for e in down.erasures] == [a]
    store.ingest("demo", batch(take_home=[[a, "venus", "opened", "2026-11-25", None]]))
    assert len(store.pending_down("demo", events_after=0, erasures_after=0).erasures) == 1
    assert store.pending_down("other", events_after=0, erasures_after=0).erasures == ()


def test_pack_wanted_until_the_site_has_put_it(store: Store, tmp_path: Path) -> None:
    body = tmp_path / "pack.tar"
    body.write_bytes(b"a pack")
    sha = hashlib.sha256(b"a pack").hexdigest()
    pack = {"sha256": sha, "pack_id": "demo-museum", "pack_version": 3}
    assert store.ingest("demo", batch(pack=pack)).pack_wanted
    assert not store.ingest("demo", batch(pack=None)).pack_wanted
    store.put_pack("demo", sha, "demo-museum", 3, body)
    assert not store.ingest("demo", batch(pack=pack)).pack_wanted
    assert store.ingest("other", batch("other", pack=pack)).pack_wanted


# --- the down queue -------------------------------------------------------------------------------------------


def test_phone_events_go_down_in_order_until_acknowledged(store: Store) -> None:
    seqs = [store.record_phone_event("demo", f'{{"n": {n}}}', visit("a") if n % 2 else None) for n in range(5)]
    other = store.record_phone_event("other", '{"n": 99}', None)
    assert seqs == sorted(seqs) and len(set([*seqs, other])) == 6
    down = store.pending_down("demo", events_after=0, erasures_after=0, limit=3)
    assert [(e.seq, e.event) for e in down.events] == [(seqs[n], f'{{"n": {n}}}') for n in range(3)]
    assert down.more and down.erasures == ()
    rest = store.pending_down("demo", events_after=down.events[-1].seq, erasures_after=0, limit=3)
    assert [e.seq for e in rest.events] == seqs[3:] and not rest.more
    result = store.ingest("demo", batch(events_after=seqs[2]))
    assert result.events_acked == 3
    assert [row[0] for row in store.rows("phone_events")] == [*seqs[3:], other]
    assert [e.seq for e in store.pending_down("demo", events_after=0, erasures_after=0).events] == seqs[3:]
    store.ingest("demo", batch(events_after=seqs[-1]))
    assert store.record_phone_event("demo", "{}", None) > seqs[-1]  # a seq is never given twice


def test_erasures_go_down_after_the_cursor(store: Store) -> None:
    visits = [visit(str(n)) for n in range(4)]
    store.ingest("demo", batch(take_home=[[v, "venus", "opened", "2026-11-25", None] for v in visits]))
    for v in visits:
        store.forget(v)
    down = store.pending_down("demo", events_after=0, erasures_after=0, limit=2)
    assert [e.visit_id for e in down.erasures] == visits[:2] and down.more
    later = store.pending_down("demo", events_after=0, erasures_after=down.erasures[-1].seq, limit=2)
    assert [e.visit_id for e in later.erasures] == visits[2:] and not later.more
    assert len(store.rows("erasures")) == 4  # tombstones stay after the site has them


def test_a_phone_event_of_an_erased_visit_is_not_stored(store: Store) -> None:
    a, b = visit("a"), visit("b")
    store.forget(a)
    assert store.record_phone_event("demo", "{}", a) == 0
    assert store.record_phone_event("demo", "{}", b, join=JoinRow(b, a, "demo", "2026-11-25")) == 0
    assert store.rows("phone_events") == [] and store.rows("visit_joins") == []
    seq = store.record_phone_event("demo", "{}", b, take_home=TakeHomeRow(b, "venus", "collected", "demo",
                                                                         "2026-11-25", None))
    assert seq > 0
    assert items(store, b) == [(b, "venus", "collected", "2026-11-25", None)]


def test_phone_events_from_many_threads_get_distinct_seqs(store: Store) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        for i in range(10):
            seq = store.record_phone_event("demo", "{}", visit(f"{n}-{i}"),
                                           take_home=TakeHomeRow(visit(f"{n}-{i}"), "venus", "opened", "demo",
                                                                 "2026-11-25", None))
            with lock:
                seqs.append(seq)
    threads = [threading.Thread(target=record, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(set(seqs)) == 60 and 0 not in seqs
    assert [e.seq for e in store.pending_down("demo", events_after=0, erasures_after=0, limit=100).events] == \
        sorted(seqs)


# --- visits and forgetting ------------------------------------------------------------------------------------


def test_a_visit_shows_the_items_of_every_visit_joined_to_it(store: Store) -> None:
    a, b, c, d = visit("a"), visit("b"), visit("c"), visit("d")
    store.ingest("demo", batch(take_home=[[a, "mona-lisa", "collected", "2026-11-25", None],
                                          [c, "venus", "opened", "2026-11-24", None],
                                          [d, "nike", "opened", "2026-11-25", None]],
                               joins=[[a, b, "2026-11-25"], [c, b, "2026-11-25"]]))
    view = store.visit(b)
    assert view is not None and view.visit_ids == [b, *sorted([a, c])]
    assert [(i.visit_id, i.artwork_id) for i in view.items] == [(c, "venus"), (a, "mona-lisa")]
    assert store.visit(a).visit_ids == [a, b, c]  # type: ignore[union-attr]
    assert store.visit(d).visit_ids == [d]  # type: ignore[union-attr]
    assert store.visit(a, max_visits=2).visit_ids == [a, b]  # type: ignore[union-attr]
    assert store.visit(visit("unknown")) is None


def test_forget_erases_every_visit_joined_to_it(store: Store) -> None:
    a, b, c, d = visit("a"), visit("b"), visit("c"), visit("d")
    store.ingest("demo", batch(take_home=[[a, "mona-lisa", "collected", "2026-11-25", None],
                                          [b, "venus", "opened", "2026-11-25", None],
                                          [d, "nike", "opened", "2026-11-25", None]],
                               joins=[[a, b, "2026-11-25"]]))
    store.ingest("other", batch("other", take_home=[[c, "nike", "collected", "2026-11-26", None]],
                                joins=[[c, b, "2026-11-26"]]))
    store.record_phone_event("demo", "{}", c)
    assert store.forget(a) == 3
    for erased in (a, b, c):
        assert store.visit(erased) is None and store.is_erased(erased)
    assert items(store, d) == [(d, "nike", "opened", "2026-11-25", None)]
    assert store.rows("visit_joins") == [] and store.rows("phone_events") == []
    tombstones = sorted((row[1], row[2]) for row in store.rows("erasures"))
    assert tombstones == sorted([("demo", a), ("demo", b), ("demo", c), ("other", b), ("other", c)])
    assert store.forget(a) == 1  # nothing joined any more; nothing added twice
    assert len(store.rows("erasures")) == 5


def test_forget_is_bounded(store: Store) -> None:
    chain = [visit(str(n)) for n in range(6)]
    store.ingest("demo", batch(take_home=[[v, "venus", "opened", "2026-11-25", None] for v in chain],
                               joins=[[chain[n], chain[n + 1], "2026-11-25"] for n in range(5)]))
    assert store.forget(chain[0], max_visits=4) == 4
    assert [store.is_erased(v) for v in chain] == [True] * 4 + [False] * 2
    assert store.visit(chain[5]).visit_ids == [chain[5], chain[4]]  # type: ignore[union-attr]


# --- retention ------------------------------------------------------------------------------------------------


def test_purge_deletes_exactly_what_is_past_retention(store: Store, clock: Clock) -> None:
    old, edge, new = visit("old"), visit("edge"), visit("new")
    now = START + timedelta(days=10)
    store.ingest("demo", batch(
        analytics=[analytics_row(uid=f"{'a' * 23}{n}", period=format_instant(now - timedelta(days=days, minutes=m)))
                   for n, (days, m) in enumerate([(20, 15), (20, 0), (19, 45)])],
        take_home=[[old, "venus", "opened", "2026-11-24", None], [edge, "venus", "opened", "2026-11-25", None],
                   [new, "venus", "opened", "2026-11-26", None]],
        joins=[[old, new, "2026-11-24"], [edge, new, "2026-11-25"]]))
    clock.now = START - timedelta(milliseconds=1)
    store.record_phone_event("demo", "{}", None)
    store.forget(visit("gone-old"))
    clock.now = START
    store.record_phone_event("demo", "{}", None)
    store.forget(visit("gone-edge"))
    result = store.purge(now, visit_days=10, analytics_days=20)
    assert (result.take_home, result.joins, result.phone_events, result.erasures, result.analytics) == (1, 1, 1, 1, 1)
    assert [row[0] for row in store.rows("take_home")] == sorted([edge, new])
    assert [row[0] for row in store.rows("visit_joins")] == [edge]
    assert [row[4] for row in store.rows("phone_events")] == [format_instant(START)]
    assert [row[2] for row in store.rows("erasures")] == [visit("gone-edge")]
    assert sorted(row[0] for row in store.rows("analytics")) == [f"{'a' * 23}1", f"{'a' * 23}2"]
    assert store.purge(now, visit_days=10, analytics_days=20) == type(result)(0, 0, 0, 0, 0)


# --- sites and packs ------------------------------------------------------------------------------------------


def test_enroll_rotate_and_authenticate(store: Store) -> None:
    key = store.enroll_site("demo")
    site, secret = key.split(".", 1)
    assert site == "demo" and len(secret) >= 43
    assert store.site_for_key(key) == "demo"
    assert store.rows("sites")[0][1] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(store.rows("sites"))
    other = store.enroll_site("other")
    assert store.site_for_key(f"demo.{other.split('.', 1)[1]}") is None
    rotated = store.enroll_site("demo")
    assert store.site_for_key(key) is None and store.site_for_key(rotated) == "demo"
    assert store.sites() == ["demo", "other"]
    for bad in ["", "demo", "demo.", "nosite.abc", "Demo.abc", "." * 300, "demo." + "x" * 300, key + "x"]:
        assert store.site_for_key(bad) is None
    with pytest.raises(ValueError, match="not an identifier"):
        store.enroll_site("Demo Site")


def test_packs_are_stored_replaced_and_read_back(store: Store, tmp_path: Path) -> None:
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    first.write_bytes(secrets.token_bytes(9 * 1024 * 1024 + 7))  # more than two chunks
    second.write_bytes(b"")
    sha1, sha2 = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second))
    assert store.pack_info("demo") is None
    store.put_pack("demo", sha1, "demo-museum", 3, first)
    info = store.pack_info("demo")
    assert info is not None and (info.sha256, info.pack_id, info.pack_version, info.size) == \
        (sha1, "demo-museum", 3, first.stat().st_size)
    out = tmp_path / "out.tar"
    assert store.pack_body("demo", sha1, out) and out.read_bytes() == first.read_bytes()
    store.put_pack("demo", sha2, "demo-museum", 4, second)
    assert store.pack_info("demo").pack_version == 4  # type: ignore[union-attr]
    missing = tmp_path / "missing.tar"
    assert not store.pack_body("demo", sha1, missing) and not missing.exists()
    assert store.pack_body("demo", sha2, out) and out.read_bytes() == b""
    assert store.pack_info("other") is None
