"""The sync's side of the hub database (broker.sync_store) and the hub's refusal of erased visits: reading in
event_id order up to the horizon, the late rows the hub records below it (each interleaving of the hub's commit and
the horizon's raise at a known point, on two connections), one transaction per reply, phone events checked as the
hub checks a device's."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import ClassVar

import pytest

from broker import sync_store
from broker.hub_store import HubStore
from broker.sync_store import Cursor
from protocol.canonical import EventRecord, event_record
from protocol.codec import event_to_dict
from protocol.events import ArtworkViewed, Event, ProximityLeft, VisitLinked
from protocol.ids import event_id_at, event_id_floor, format_instant, new_visit_id, utc_now, visit_id_for

SITE = "demo"
WAIT_S = 30.0
"""A generous deadline for a thread to reach a known point: never reached unless something is broken."""


def visit() -> str:
    return visit_id_for(new_visit_id())


def viewed(visit_id: str | None = None, at: datetime | None = None, device: str = "kiosk-1") -> ArtworkViewed:
    at = at or utc_now()
    return ArtworkViewed(event_id=event_id_at(at), site_id=SITE, device_id=device, occurred_at=at,
                         visit_id=visit_id, artwork_id="work-1", source="kiosk", language="fr")


def records(*events: Event) -> list[EventRecord]:
    return [event_record(event) for event in events]


def wire(event: Event) -> dict[str, object]:
    """The event as a wire JSON object, as a sync reply carries it."""
    return event_to_dict(event)


@pytest.fixture
def hub(tmp_path):
    store = HubStore(tmp_path / "hub.sqlite")
    yield store
    store.close()


@pytest.fixture
def conn(hub):
    connection = sync_store.open_hub_db(hub.path)
    yield connection
    connection.close()


START = Cursor()


def apply(conn, *, erasures=(), events=(), cursor=START, tombstones_sent=0, events_after=0, erasures_after=0,
          target="upstream", now=None):
    return sync_store.apply_down(conn, target, erasures=list(erasures), events=list(events), cursor=cursor,
                                 tombstones_sent=tombstones_sent, events_after=events_after,
                                 erasures_after=erasures_after, now=now or utc_now(), site_id=SITE)


def drain(conn, cursor=START, limit=3) -> tuple[list[str], Cursor]:
    """What a target reads from `cursor` until nothing more waits, and its cursor then."""
    ids: list[str] = []
    while True:
        batch = sync_store.read_batch(conn, cursor, limit)
        ids += [record.event_id for record in batch.records]
        cursor = batch.cursor
        if not batch.records and not batch.more:
            return ids, cursor


def late_rows(hub: HubStore) -> list[str]:
    return [row[0] for row in hub.db.execute("SELECT event_id FROM late_events ORDER BY seq")]


def test_events_are_stored_with_the_rounds_time(hub):
    now = utc_now()
    for at in (now, now, now - timedelta(hours=1)):
        hub.commit_round(records(viewed()), [], [], at)
    stamps = [row[0] for row in hub.db.execute("SELECT received_at FROM events ORDER BY event_id")]
    assert sorted(stamps) == sorted([format_instant(now)] * 2 + [format_instant(now - timedelta(hours=1))])


def test_the_main_range_is_read_in_event_id_order_up_to_the_horizon(hub, conn):
    now = utc_now()
    old = [viewed(at=now - timedelta(minutes=m)) for m in range(10, 15)]
    fresh = [viewed(at=now - timedelta(seconds=s)) for s in (1, 2)]
    hub.commit_round(records(*old, *fresh), [], [], now)
    assert drain(conn) == ([], START), "nothing before a sync raised the horizon"
    assert sync_store.raise_horizon(conn, now) == event_id_floor(now - timedelta(seconds=120))
    seen, cursor = drain(conn)
    assert seen == sorted(e.event_id for e in old)  # the fresh ones wait for the horizon
    assert sync_store.backlog(conn, cursor) == 2 and sync_store.backlog(conn, START) == 7
    sync_store.raise_horizon(conn, now + timedelta(minutes=5))
    more, cursor = drain(conn, cursor)
    assert more == sorted(e.event_id for e in fresh) and sync_store.backlog(conn, cursor) == 0
    assert late_rows(hub) == []


def test_the_horizon_never_goes_down_nor_past_the_newest_event_and_a_quiet_site_is_not_written(hub, conn):
    now = utc_now()
    assert sync_store.raise_horizon(conn, now) is None  # no event: nothing to read, nothing written
    newest = viewed(at=now - timedelta(hours=1))
    hub.commit_round(records(newest), [], [], now)
    assert sync_store.raise_horizon(conn, now) == newest.event_id  # not beyond what is stored
    changes = conn.total_changes
    assert sync_store.raise_horizon(conn, now + timedelta(minutes=10)) == newest.event_id
    assert conn.total_changes == changes, "nothing new to read: no write"
    hub.commit_round(records(viewed(at=now)), [], [], now)
    raised = sync_store.raise_horizon(conn, now + timedelta(hours=1))
    assert raised is not None and raised > newest.event_id
    assert sync_store.raise_horizon(conn, now - timedelta(days=1)) == raised  # a clock set back lowers nothing


def test_an_event_stored_below_the_horizon_after_the_raise_goes_once_through_the_late_path(hub, conn):
    now = utc_now()
    live = [viewed(at=now - timedelta(minutes=m)) for m in range(3, 9)]
    hub.commit_round(records(*live), [], [], now)
    sync_store.raise_horizon(conn, now)
    seen, cursor = drain(conn)
    assert sorted(seen) == sorted(e.event_id for e in live)
    # A device drains its outbox after an outage: an event created an hour ago arrives now.
    late = viewed(visit(), at=now - timedelta(hours=1))
    assert hub.commit_round(records(late), [], [], now).inserted == 1
    assert late_rows(hub) == [late.event_id]
    assert sync_store.backlog(conn, cursor) == 1
    more, cursor = drain(conn, cursor)
    assert more == [late.event_id]
    assert drain(conn, cursor) == ([], cursor) and sync_store.backlog(conn, cursor) == 0
    # A target whose main range has not reached it yet (one added later) reads it there, once, not twice.
    assert sorted(drain(conn)[0]) == sorted([*seen, late.event_id])


def test_a_resend_or_a_copied_id_below_the_horizon_makes_no_late_row(hub, conn):
    now = utc_now()
    event = viewed(at=now - timedelta(hours=1))
    hub.commit_round(records(event, viewed(at=now - timedelta(minutes=5))), [], [], now)
    sync_store.raise_horizon(conn, now)
    _, cursor = drain(conn)
    # The device did not get its ack and sends the event again, in a round of its own and beside a new one; and
    # another device sends an event with the same id (quarantined as a conflict).
    new = viewed(at=now - timedelta(minutes=30))
    copied = event_record(viewed(at=now - timedelta(hours=1), device="kiosk-2"))._replace(event_id=event.event_id)
    assert hub.commit_round(records(event), [], [], now).inserted == 0
    outcome = hub.commit_round([*records(event, new, new), copied], [], [], now)
    assert (outcome.inserted, len(outcome.conflicts)) == (1, 1)
    assert late_rows(hub) == [new.event_id]
    assert drain(conn, cursor)[0] == [new.event_id]


def test_the_late_rows_of_an_erased_visit_are_skipped_and_its_later_events_make_none(hub, conn):
    now = utc_now()
    hub.commit_round(records(viewed(at=now - timedelta(minutes=10))), [], [], now)
    sync_store.raise_horizon(conn, now)
    _, cursor = drain(conn)
    gone, kept = visit(), visit()
    hub.commit_round(records(viewed(gone, now - timedelta(hours=1)), viewed(kept, now - timedelta(hours=2))), [],
                     [], now)
    assert len(late_rows(hub)) == 2
    result = apply(conn, erasures=[gone], cursor=cursor)
    assert result.events_deleted == 1
    batch = sync_store.read_batch(conn, cursor, 10)
    assert [record.visit_id for record in batch.records] == [kept]
    assert batch.cursor.late_seq == 2, "the skipped row is read past all the same"
    # Later events of the erased visit are refused, so none makes a late row.
    outcome = hub.commit_round(records(viewed(gone, now - timedelta(hours=1))), [], [], now)
    assert (outcome.inserted, outcome.refused_erased) == (0, 1) and len(late_rows(hub)) == 2


def test_live_operation_makes_no_late_row(hub, conn):
    # A realistic burst: ten devices, events created as they happen, stored in rounds a few milliseconds later,
    # and the sync raising its horizon (with its default slack) between the rounds, as it does at every batch.
    devices = [f"kiosk-{n}" for n in range(10)]
    hub.commit_round(records(*(ArtworkViewed.create(site_id=SITE, device_id=device, visit_id=visit(),
                                                    artwork_id="work-1", source="kiosk", language="fr")
                               for device in devices)), [], [], utc_now())
    sync_store.raise_horizon(conn, utc_now() + timedelta(hours=1))  # a horizon exists, as at a running site
    stored = 10
    statements: list[str] = []
    for n in range(200):
        burst = [ArtworkViewed.create(site_id=SITE, device_id=devices[i % 10], visit_id=visit(), artwork_id="work-2",
                                      source="kiosk", language="fr") for i in range(n % 7 + 1)]
        hub.db.conn.set_trace_callback(statements.append)
        stored += hub.commit_round(records(*burst), [], [], utc_now()).inserted
        hub.db.conn.set_trace_callback(None)
        if n % 20 == 0:
            sync_store.raise_horizon(conn, utc_now())
    assert hub.count_events() == stored and stored > 800
    assert late_rows(hub) == []
    # The hub's only addition to a live round: one read of the horizon (and of whether any visit is erased).
    assert not [sql for sql in statements if "late_events" in sql or "json_each" in sql]
    assert sum("sync_horizon" in sql for sql in statements) == 200


def test_a_raise_waits_for_the_hubs_commit_under_way_then_reads_its_event(hub, conn):
    """The hub holds its write transaction (paused inside it, after the insert): the raise cannot begin its own
    until the commit ends, so the event, created below the new horizon, is in the main range, not late."""
    now = utc_now()
    hub.commit_round(records(viewed(at=now - timedelta(hours=3)), viewed(at=now)), [], [], now)
    sync_store.raise_horizon(conn, now - timedelta(hours=2))
    _, cursor = drain(conn)
    event = viewed(at=now - timedelta(hours=1))
    with paused_inside(hub.db.conn, "events", ("INSERT",)) as hub_paused:
        hub_thread = Step(lambda: hub.commit_round(records(event), [], [], now))
        assert hub_paused.reached.wait(WAIT_S)
        beginning = began(conn)
        raise_thread = Step(lambda: sync_store.raise_horizon(conn, now, slack_s=0))
        assert beginning.wait(WAIT_S)  # the raise asks for the write lock the hub holds...
        assert not raise_thread.done.is_set() and sync_store.horizon(Reader.of(hub)) < event.event_id
        hub_paused.release.set()  # ...and gets it once the hub's commit ends
        hub_thread.join()
        raised = raise_thread.join()
    assert raised is not None and raised > event.event_id
    assert late_rows(hub) == []
    assert drain(conn, cursor)[0] == [event.event_id]


def test_a_commit_waits_for_the_raise_under_way_then_records_its_event_late(hub, conn):
    """The raise holds its write transaction (paused after writing the new horizon): the hub's commit waits for
    it, then reads the raised horizon, so the event created below it is recorded late. A read made between the
    raise and the hub's commit passes the event's id without seeing it: the late row brings it, once."""
    now = utc_now()
    hub.commit_round(records(viewed(at=now - timedelta(hours=3)), viewed(at=now - timedelta(minutes=30)),
                             viewed(at=now)), [], [], now)
    sync_store.raise_horizon(conn, now - timedelta(hours=2))
    first, cursor = drain(conn)
    event = viewed(at=now - timedelta(hours=1))
    with paused_inside(conn, "sync_horizon", ("INSERT", "UPDATE")) as raise_paused, \
            paused_inside(hub.db.conn, "events", ("INSERT",)) as hub_paused:
        raise_thread = Step(lambda: sync_store.raise_horizon(conn, now, slack_s=0))
        assert raise_paused.reached.wait(WAIT_S)
        beginning = began(hub.db.conn)
        hub_thread = Step(lambda: hub.commit_round(records(event), [], [], now))
        assert beginning.wait(WAIT_S)  # the hub asks for the write lock the raise holds...
        assert not hub_thread.done.is_set() and not hub_paused.reached.is_set()
        raise_paused.release.set()  # ...and gets it once the raise's commit ends
        raised = raise_thread.join()
        assert raised is not None and raised > event.event_id
        assert hub_paused.reached.wait(WAIT_S)  # the hub has stored the event, not committed it yet
        between, cursor = drain(Reader.of(hub), cursor)
        assert event.event_id < cursor.event_id and between == [cursor.event_id]  # past it, without it
        hub_paused.release.set()
        assert hub_thread.join().inserted == 1
    assert late_rows(hub) == [event.event_id]
    last, cursor = drain(conn, cursor)
    assert last == [event.event_id] and drain(conn, cursor)[0] == []
    assert len(first) == 1


class Pause:
    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> int:
        self.reached.set()
        if not self.release.wait(WAIT_S):
            raise RuntimeError("never released")
        return 0


class Reader:
    """Third connections: what any reader sees meanwhile (committed rows only); closed after each test."""

    opened: ClassVar[list[sqlite3.Connection]] = []

    @classmethod
    def of(cls, hub: HubStore) -> sqlite3.Connection:
        connection = sqlite3.connect(hub.path, isolation_level=None, check_same_thread=False)
        cls.opened.append(connection)
        return connection


@pytest.fixture(autouse=True)
def _close_readers() -> Iterator[None]:
    yield
    while Reader.opened:
        Reader.opened.pop().close()


class Step(threading.Thread):
    """One call in a thread of its own; `join` returns its result or raises its error."""

    def __init__(self, call) -> None:
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:  # re-raised in the test's thread
            self.error = error
        finally:
            self.done.set()

    def join(self, timeout: float | None = WAIT_S):  # type: ignore[override]
        super().join(timeout)
        assert self.done.is_set(), "the thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


class paused_inside:
    """A temporary trigger on `table` of `connection` that blocks (in a SQL function) until released: the
    connection's write transaction is then under way, holding the database's write lock."""

    def __init__(self, connection: sqlite3.Connection, table: str, operations: tuple[str, ...]) -> None:
        self.connection, self.table, self.operations = connection, table, operations
        self.pause = Pause()

    def __enter__(self) -> Pause:
        self.connection.create_function("pause_here", 0, self.pause)
        for operation in self.operations:
            self.connection.execute(f"CREATE TEMP TRIGGER pause_{operation.lower()} AFTER {operation} ON {self.table} "
                                    "BEGIN SELECT pause_here(); END")
        return self.pause

    def __exit__(self, *_: object) -> None:
        self.pause.release.set()
        for operation in self.operations:
            self.connection.execute(f"DROP TRIGGER IF EXISTS pause_{operation.lower()}")


def began(connection: sqlite3.Connection) -> threading.Event:
    """Set when `connection` starts its next BEGIN IMMEDIATE (it may then wait for the lock)."""
    event = threading.Event()

    def trace(sql: str) -> None:
        if sql == "BEGIN IMMEDIATE":
            event.set()

    connection.set_trace_callback(trace)
    return event


def test_an_erasure_deletes_the_visit_its_links_and_refuses_its_later_events(hub, conn):
    gone, kept = visit(), visit()
    lend = VisitLinked.create(site_id=SITE, device_id="reader-1", visit_id=gone, channel="entrance_qr",
                              tag_id="tag-7")
    hub.commit_round(records(viewed(gone), viewed(gone), viewed(kept)), [], [], utc_now(), records(lend))
    assert hub.count_links() == 1
    result = apply(conn, erasures=[gone, gone])
    assert (result.visits_erased, result.events_deleted, result.links_deleted) == (1, 3, 1)
    assert {row[0] for row in hub.db.execute("SELECT visit_id FROM events")} == {kept}
    assert [t.visit_id for t in sync_store.tombstones_after(conn, 0, 10)] == [gone]
    # From a device's outbox, by both ways in: plain and tagged (a lending to the erased visit makes no link).
    late_lend = VisitLinked.create(site_id=SITE, device_id="reader-1", visit_id=gone, channel="entrance_qr",
                                   tag_id="tag-8")
    outcome = hub.commit_round(records(viewed(gone), viewed(kept)), [], [], utc_now(), records(late_lend))
    assert (outcome.inserted, outcome.refused_erased, outcome.conflicts) == (1, 2, [])
    assert hub.count_links() == 0
    assert {row[0] for row in hub.db.execute("SELECT visit_id FROM events")} == {kept}
    # Applied again (a reply delivered twice): nothing more happens, no second tombstone.
    again = apply(conn, erasures=[gone])
    assert (again.visits_erased, again.events_deleted) == (0, 0)
    assert len(sync_store.tombstones_after(conn, 0, 10)) == 1


@pytest.mark.parametrize("meanwhile", ["above the horizon", "late", "no horizon yet"])
def test_an_erasure_also_deletes_what_was_stored_while_the_visit_was_being_searched(hub, conn, meanwhile):
    gone = visit()
    now = utc_now()
    hub.commit_round(records(viewed(gone, now - timedelta(hours=2)), viewed(visit(), now - timedelta(minutes=5))),
                     [], [], now)
    if meanwhile != "no horizon yet":
        sync_store.raise_horizon(conn, now)
    # The hub stores more events of the visit between the sync's read pass and its write transaction: a known
    # point, reached through the statement that opens the write transaction. A live one (above the horizon) or
    # one from a device's backlog (below it: a late row).
    at = now - timedelta(hours=1) if meanwhile == "late" else now
    real_execute = sqlite3.Connection.execute

    class Interposed(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql == "BEGIN IMMEDIATE" and not getattr(self, "done", False):
                self.done = True
                hub.commit_round(records(viewed(gone, at), viewed(gone, at)), [], [], now)
            return real_execute(self, sql, *args)

    interposed = sqlite3.connect(hub.path, isolation_level=None, factory=Interposed)
    try:
        result = apply(interposed, erasures=[gone])
    finally:
        interposed.close()
    assert len(late_rows(hub)) == (2 if meanwhile == "late" else 0)
    assert result.events_deleted == 3
    assert hub.count_events() == 1


def test_a_failure_inside_the_transaction_leaves_nothing_applied(hub, conn):
    gone = visit()
    hub.commit_round(records(viewed(gone)), [], [], utc_now())
    phone = viewed(visit(), device="companion")
    # The last statement of the transaction fails: the erasure and the phone event must not stay either.
    conn.execute("CREATE TEMP TRIGGER injected BEFORE INSERT ON sync_targets BEGIN SELECT RAISE(ABORT, 'injected'); "
                 "END")
    with pytest.raises(sqlite3.IntegrityError, match="injected"):
        apply(conn, erasures=[gone], events=[wire(phone)], cursor=Cursor("x", 3), events_after=4)
    assert hub.count_events() == 1 and sync_store.tombstones_after(conn, 0, 10) == []
    assert sync_store.target_state(conn, "upstream").events_after == 0
    conn.execute("DROP TRIGGER injected")
    apply(conn, erasures=[gone], events=[wire(phone)], cursor=Cursor("x", 3), events_after=4)
    assert hub.event_ids() == {phone.event_id}
    state = sync_store.target_state(conn, "upstream")
    assert (state.cursor, state.events_after) == (Cursor("x", 3), 4)


def test_phone_events_are_checked_as_the_hub_checks_a_devices(hub, conn):
    good = viewed(visit(), device="companion")
    erased = visit()
    apply(conn, erasures=[erased])
    too_old = viewed(visit(), at=utc_now() - timedelta(days=40), device="companion")
    other_site = {**wire(viewed(visit(), device="companion")), "site_id": "elsewhere"}
    tagged = wire(VisitLinked.create(site_id=SITE, device_id="companion", visit_id=visit(), channel="artwork_qr",
                                     tag_id="tag-1"))
    unknown_field = {**wire(viewed(visit(), device="companion")), "mac": "aa:bb:cc:dd:ee:ff"}
    result = apply(conn, events=[wire(good), wire(good), wire(too_old), other_site, tagged, unknown_field,
                                 "not an event", {"nan": float("nan")}, wire(viewed(erased, device="companion"))])
    assert (result.stored, result.duplicates, result.invalid, result.refused_erased) == (1, 1, 6, 1)
    assert len(result.reasons) == sync_store.MAX_REASONS
    assert hub.event_ids() == {good.event_id}
    assert apply(conn, events=[wire(good)]).duplicates == 1  # delivered again later
    # As the hub stores it: the same record the codec makes of it.
    row = hub.db.execute("SELECT * FROM events").fetchone()
    assert tuple(row[:8]) == tuple(event_record(good))


def test_tombstone_seqs_are_never_reused_once_a_target_acknowledged_them(hub, conn):
    first, second = visit(), visit()
    apply(conn, erasures=[first], now=utc_now() - timedelta(days=500))
    apply(conn, tombstones_sent=1)
    assert sync_store.purge_tombstones(conn, utc_now(), days=395) == 1
    apply(conn, erasures=[second], tombstones_sent=1)
    assert [(t.seq, t.visit_id) for t in sync_store.tombstones_after(conn, 0, 10)] == [(2, second)]


def test_invalid_erasures_are_skipped_and_counted(hub, conn):
    result = apply(conn, erasures=["short", "x" * 100])
    assert (result.visits_erased, result.invalid) == (0, 2)


def test_a_phone_event_below_the_horizon_is_recorded_late_like_a_devices(hub, conn):
    now = utc_now()
    hub.commit_round(records(viewed(at=now - timedelta(minutes=10))), [], [], now)
    sync_store.raise_horizon(conn, now)
    _, cursor = drain(conn)
    saved = viewed(visit(), at=now - timedelta(minutes=20), device="companion")  # made on a phone a while ago
    apply(conn, events=[wire(saved), wire(saved)], cursor=cursor)
    assert late_rows(hub) == [saved.event_id]
    assert drain(conn, cursor)[0] == [saved.event_id]


def test_late_rows_go_once_every_target_has_read_them_or_their_event_is_gone(hub, conn):
    now = utc_now()
    hub.commit_round(records(viewed(at=now - timedelta(minutes=10))), [], [], now)
    sync_store.raise_horizon(conn, now)
    _, cursor = drain(conn)
    apply(conn, cursor=cursor, target="upstream")
    apply(conn, cursor=cursor, target="local")
    late = [viewed(at=now - timedelta(hours=h)) for h in (1, 2, 3)]
    for event in late:
        hub.commit_round(records(event), [], [], now)
    assert sync_store.purge_late(conn) == 0, "no target has read them"
    upstream = sync_store.read_batch(conn, cursor, 2).cursor
    apply(conn, cursor=upstream, target="upstream")
    assert sync_store.purge_late(conn) == 0, "local has not read them"
    apply(conn, cursor=sync_store.read_batch(conn, cursor, 1).cursor, target="local")
    assert sync_store.purge_late(conn) == 1 and late_rows(hub) == [e.event_id for e in late[1:]]
    # Retention took the last one's event: its row goes too, whatever the targets have read.
    hub.db.execute("DELETE FROM events WHERE event_id = ?", (late[2].event_id,))
    assert sync_store.purge_late(conn) == 1 and late_rows(hub) == [late[1].event_id]
    # Seqs are never given again, even when the newest rows went: the cursors count on it.
    apply(conn, cursor=Cursor(cursor.event_id, 3), target="upstream")
    apply(conn, cursor=Cursor(cursor.event_id, 3), target="local")
    assert sync_store.purge_late(conn) == 1 and late_rows(hub) == []
    again = viewed(at=now - timedelta(hours=4))
    hub.commit_round(records(again), [], [], now)
    assert drain(conn, Cursor(cursor.event_id, 3))[0] == [again.event_id]


def test_tagged_events_resolve_no_visit_once_the_visit_is_erased(hub, conn):
    gone = visit()
    lend = VisitLinked.create(site_id=SITE, device_id="reader-1", visit_id=gone, channel="entrance_qr",
                              tag_id="tag-3")
    hub.commit_round([], [], [], utc_now(), records(lend))
    apply(conn, erasures=[gone])
    left = ProximityLeft.create(site_id=SITE, device_id="station-1", artwork_id="work-1", zone_id="room-1",
                                dwell_s=12.0, tag_id="tag-3")
    outcome = hub.commit_round([], [], [], utc_now(), records(left))
    assert outcome.inserted == 1
    assert hub.db.execute("SELECT visit_id FROM events").fetchone()[0] is None
