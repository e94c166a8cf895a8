"""The upstream sync against a real HTTP upstream (tests/sync_upstream.py), each fault at a known point: whatever
happens between the hub and the upstream, every event arrives and is stored once, and nothing of an erased visit
leaves or comes back."""

from __future__ import annotations

import io
import json
import os
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from broker import sync_store
from broker.hub_store import HubStore
from broker.processes import free_port
from broker.upstream_policy import upstream_records, visit_pseudonym
from broker.upstream_sync import (
    EXAMPLE_CONFIG,
    SyncConfig,
    Syncer,
    TargetConfig,
    load_config,
    pseudonym_key,
    read_site_key,
    read_status,
)
from protocol.canonical import EventRecord, event_record
from protocol.codec import event_to_dict
from protocol.events import (
    ArtworkCollected,
    ArtworkViewed,
    DeviceStatus,
    Event,
    ProximityLeft,
    VisitJoined,
)
from protocol.ids import event_id_at, event_id_time, new_visit_id, utc_now, visit_id_for
from tests.sync_upstream import SyncUpstream

SITE = "demo"
KEY = "demo.c2l0ZS1rZXktZm9yLXRlc3Rz"
PSEUDONYM = bytes(range(32))


class FakeClock:
    """Time that only moves when the sync sleeps, so no test waits; `on_sleep(n)` runs at the n-th sleep (a
    known point between two attempts)."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None, *, wall: datetime | None = None) -> None:
        """`wall`: `now` at the start, moving with the sleeps (None: `now` is the real clock's)."""
        self.t = 0.0
        self.wall = wall
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))

    def now(self) -> datetime:
        return utc_now() if self.wall is None else self.wall + timedelta(seconds=self.t)


def visit() -> str:
    return visit_id_for(new_visit_id())


def day_of_events(visits: int = 12, per_visit: int = 5) -> list[Event]:
    events: list[Event] = []
    ids = [visit() for _ in range(visits)]
    for n, visit_id in enumerate(ids):
        for i in range(per_visit):
            events.append(ArtworkViewed.create(site_id=SITE, device_id="kiosk-1", visit_id=visit_id,
                                               artwork_id=f"work-{i}", source="kiosk", language="fr"))
        events.append(ArtworkCollected.create(site_id=SITE, device_id="kiosk-1", visit_id=visit_id,
                                              artwork_id="work-1", source="kiosk"))
        events.append(ProximityLeft.create(site_id=SITE, device_id="station-1", visit_id=visit_id,
                                           artwork_id="work-2", zone_id="room-1", dwell_s=42.0))
        if n:
            events.append(VisitJoined.create(site_id=SITE, device_id="kiosk-1", visit_id=visit_id,
                                             other_visit_id=ids[n - 1]))
    events.append(DeviceStatus.create(site_id=SITE, device_id="kiosk-1", kind="kiosk", software_version="1.0.0",
                                      uptime_s=5.0, outbox_pending=0, outbox_dropped=0))  # stays on the site
    return events


def expected_uids(records: list[EventRecord], key: bytes = PSEUDONYM) -> set[str]:
    uids = set()
    for record in records:
        analytics, _ = upstream_records(record, key)
        if analytics is not None:
            uids.add(analytics.uid)
    return uids


@pytest.fixture
def hub(tmp_path):
    store = HubStore(tmp_path / "hub.sqlite")
    yield store
    store.close()


@pytest.fixture
def upstream():
    server = SyncUpstream({KEY: SITE})
    server.start()
    yield server
    server.stop()


def key_file(tmp_path: Path, key: str = KEY) -> Path:
    path = tmp_path / "upstream.key"
    path.write_text(key + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def config(tmp_path: Path, url: str, *, batch_size: int = 25, timeout_s: float = 10.0,
           horizon_slack_s: float = 120.0) -> SyncConfig:
    target = TargetConfig("upstream", url, key_file(tmp_path), None, timeout_s, batch_size, 10.0)
    return SyncConfig(tmp_path / "sync.toml", (target,), horizon_slack_s=horizon_slack_s)


def syncer(hub: HubStore, tmp_path: Path, url: str, clock: FakeClock | None = None, **options) -> Syncer:
    settings = {key: options.pop(key) for key in ("batch_size", "timeout_s", "horizon_slack_s") if key in options}
    return Syncer(hub.path, SITE, config(tmp_path, url, **settings), PSEUDONYM, clock=clock or FakeClock(),
                  rng=random.Random(7), status_file=tmp_path / "status.json", **options)


def store_day(hub: HubStore) -> list[EventRecord]:
    records = [event_record(event) for event in day_of_events()]
    hub.commit_round(records, [], [], utc_now())
    return records


def assert_stored_once(upstream: SyncUpstream, records: list[EventRecord]) -> None:
    assert upstream.stored_uids() == expected_uids(records)


def test_everything_arrives_once_after_the_upstream_was_down(hub, tmp_path):
    records = store_day(hub)
    port = free_port()
    server = SyncUpstream({KEY: SITE}, port=port)
    clock = FakeClock(on_sleep=lambda n: server.start() if n == 3 else None)  # up after three refusals
    try:
        with syncer(hub, tmp_path, f"http://127.0.0.1:{port}", clock) as sync:
            result = sync.run_once()
        assert result.problems == {}
        assert_stored_once(server, records)
        assert max(server.received_uids.values()) == 1
        # Backoff: full jitter under 1 s, 2 s, 4 s.
        assert len(clock.sleeps) == 3 and all(s <= 2 ** i for i, s in enumerate(clock.sleeps))
        assert "Connection" in (read_status(tmp_path / "status.json")["upstream"].last_error or "")
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["500_after_store", "close_after_store", "close_before_store"])
def test_a_batch_answered_badly_is_sent_again_and_stored_once(hub, tmp_path, upstream, fault):
    records = store_day(hub)
    upstream.fail_next(fault)
    with syncer(hub, tmp_path, upstream.url) as sync:
        assert sync.run_once().problems == {}
    assert_stored_once(upstream, records)
    first_batch = {uid for uid, times in upstream.received_uids.items() if times == 2}
    assert len(first_batch) == (0 if fault == "close_before_store" else 25)
    assert sync_store.backlog(hub.db.conn, sync_store.target_state(hub.db.conn, "upstream").cursor) == 0


def test_a_timeout_on_a_stored_batch_sends_it_again_and_it_is_stored_once(hub, tmp_path, upstream):
    records = store_day(hub)
    upstream.fail_next("hang_after_store")  # stored, then no answer until released: the client times out first
    try:
        with syncer(hub, tmp_path, upstream.url, timeout_s=1.0) as sync:
            assert sync.run_once().problems == {}
        assert upstream.hanging.is_set()
        assert_stored_once(upstream, records)
        assert 2 in upstream.received_uids.values()
    finally:
        upstream.release.set()


def test_a_crash_between_the_reply_and_applying_it_resends_the_batch(hub, tmp_path, upstream):
    records = store_day(hub)
    gone = records[0].visit_id
    upstream.add_erasure(SITE, gone)

    def crash(target: str) -> None:
        raise RuntimeError("the sync process dies here")

    with syncer(hub, tmp_path, upstream.url, after_post=crash) as sync, pytest.raises(RuntimeError):
        sync.run_once()
    assert hub.count_events() == len(records)  # nothing of the reply applied: the erasure comes again
    with syncer(hub, tmp_path, upstream.url) as sync:
        assert sync.run_once().problems == {}
    survivors = [record for record in records if record.visit_id != gone]
    assert upstream.stored_uids() == expected_uids(survivors)
    assert hub.count_events() == len(survivors)
    assert max(upstream.received_uids.values()) == 2


def test_an_erasure_deletes_the_visit_at_the_site_and_its_later_events_are_refused(hub, tmp_path, upstream):
    records = store_day(hub)
    with syncer(hub, tmp_path, upstream.url) as sync:
        sync.run_once()
    gone = records[0].visit_id
    assert gone is not None
    upstream.add_erasure(SITE, gone)
    with syncer(hub, tmp_path, upstream.url) as sync:
        sync.run_once()
    assert hub.db.execute("SELECT COUNT(*) FROM events WHERE visit_id = ?", (gone,)).fetchone()[0] == 0
    # The tombstone went back up with the visit's pseudonym, so its analytics went too; the ack emptied the queue.
    assert [gone, visit_pseudonym(gone, PSEUDONYM)] in upstream.erasure_rows
    assert not any(row[5] == visit_pseudonym(gone, PSEUDONYM) for row in upstream.analytics.values())
    assert upstream.down_erasures == []
    # An event of the visit still in a device's outbox reaches the hub: refused, acknowledged, never sent.
    late = event_record(ArtworkViewed.create(site_id=SITE, device_id="kiosk-1", visit_id=gone, artwork_id="work-9",
                                             source="kiosk", language="fr"))
    outcome = hub.commit_round([late], [], [], utc_now())
    assert (outcome.inserted, outcome.refused_erased) == (0, 1)
    with syncer(hub, tmp_path, upstream.url) as sync:
        sync.run_once()
    assert upstream_records(late, PSEUDONYM)[0].uid not in upstream.received_uids


def test_events_of_a_visit_erased_meanwhile_never_leave_even_when_read_ahead(hub, tmp_path, upstream):
    first = [event_record(event) for event in day_of_events(visits=3)]
    hub.commit_round(first, [], [], utc_now())
    later = [event_record(event) for event in day_of_events(visits=6)]
    hub.commit_round(later, [], [], utc_now())
    gone = later[-3].visit_id
    assert gone is not None
    upstream.add_erasure(SITE, gone)  # comes down with the first reply, while the second batch is read ahead
    with syncer(hub, tmp_path, upstream.url, batch_size=len(first)) as sync:
        assert sync.run_once().problems == {}
    never = {upstream_records(record, PSEUDONYM)[0].uid for record in later if record.visit_id == gone}
    assert never and not never & set(upstream.received_uids)
    assert not any(key[0] == gone for key in upstream.take_home)


def test_an_event_arriving_below_the_horizon_after_the_sync_passed_it_goes_up_once(hub, tmp_path, upstream):
    records = store_day(hub)
    with syncer(hub, tmp_path, upstream.url) as sync:
        assert sync.run_once().problems == {}
    # A device's outbox, drained after an outage: an event made an hour ago reaches the hub now.
    an_hour_ago = utc_now() - timedelta(hours=1)
    late = event_record(ArtworkViewed(event_id=event_id_at(an_hour_ago), site_id=SITE, device_id="kiosk-2",
                                      occurred_at=an_hour_ago, visit_id=visit(), artwork_id="work-4", source="kiosk",
                                      language="fr"))
    assert hub.commit_round([late], [], [], utc_now()).inserted == 1
    assert hub.db.execute("SELECT COUNT(*) FROM late_events").fetchone()[0] == 1
    state = sync_store.target_state(hub.db.conn, "upstream")
    assert late.event_id < state.cursor.event_id and sync_store.backlog(hub.db.conn, state.cursor) == 1
    with syncer(hub, tmp_path, upstream.url) as sync:
        assert sync.run_once().problems == {}
        sync.run_once()
    assert_stored_once(upstream, [*records, late])
    assert max(upstream.received_uids.values()) == 1
    state = sync_store.target_state(hub.db.conn, "upstream")
    assert state.cursor.late_seq == 1 and sync_store.backlog(hub.db.conn, state.cursor) == 0
    # Read by every target: the hourly purge lets the row go.
    assert sync_store.purge_late(hub.db.conn) == 1


def test_events_go_up_once_the_horizon_passes_them(hub, tmp_path, upstream):
    """`run` keeps the horizon `horizon_slack_s` behind the clock: a live event goes at the first poll after that,
    and none makes a late row."""
    records = store_day(hub)
    stop = threading.Event()
    sent_at: list[int] = []
    # The clock starts 1 ms after the newest of the events was made.
    clock = FakeClock(wall=event_id_time(max(record.event_id for record in records)) + timedelta(milliseconds=1))

    def poll(n: int) -> None:
        if upstream.stored_uids() and not sent_at:
            sent_at.append(n)
        if n == 20:
            stop.set()

    clock.on_sleep = poll
    with syncer(hub, tmp_path, upstream.url, clock, horizon_slack_s=60.0, batch_size=1000) as sync:
        assert sync.run(stop) == 0
    assert sent_at == [7], "at the first poll (one each 10 s) 60 s after the events were made"
    assert_stored_once(upstream, records)
    assert hub.db.execute("SELECT COUNT(*) FROM late_events").fetchone()[0] == 0


def test_phone_events_coming_down_are_stored_once_even_when_delivered_twice(hub, tmp_path, upstream):
    saved = ArtworkCollected.create(site_id=SITE, device_id="companion", visit_id=visit(), artwork_id="work-3",
                                    source="companion")
    upstream.add_phone_event(SITE, event_to_dict(saved))
    upstream.add_phone_event(SITE, event_to_dict(saved))
    upstream.add_phone_event(SITE, {"type": "artwork.viewed", "junk": True})  # skipped, counted
    with syncer(hub, tmp_path, upstream.url) as sync:
        assert sync.run_once().problems == {}
    assert hub.event_ids() == {saved.event_id}
    # Delivered again (as if the companion had not seen the site's acknowledgement).
    upstream.add_phone_event(SITE, event_to_dict(saved))
    with syncer(hub, tmp_path, upstream.url) as sync:
        sync.run_once()
    assert hub.event_ids() == {saved.event_id}
    # And it goes up like any event of the site, once.
    assert upstream.stored_uids() == expected_uids([event_record(saved)])
    assert upstream.down_events == []
    assert upstream.requests[-1].events_after == 4


def test_a_refused_key_stops_the_target_with_one_clear_line_and_no_retry(hub, tmp_path, upstream, caplog):
    store_day(hub)
    upstream.fail_next("401")
    clock = FakeClock()
    with syncer(hub, tmp_path, upstream.url, clock) as sync:
        result = sync.run_once()
    line = result.problems["upstream"]
    assert "401" in line and str(tmp_path / "upstream.key") in line and "museum companion enroll-site demo" in line
    assert upstream.refused == [401] and upstream.requests == [] and clock.sleeps == []
    assert read_status(tmp_path / "status.json")["upstream"].stopped == line
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [line]
    # Nothing was skipped: the next run sends the whole day.
    assert sync_store.target_state(hub.db.conn, "upstream").updated_at is None


def test_too_many_requests_waits_at_least_what_the_upstream_asks(hub, tmp_path, upstream):
    records = store_day(hub)
    upstream.fail_next("429", "500")
    clock = FakeClock()
    with syncer(hub, tmp_path, upstream.url, clock) as sync:
        assert sync.run_once().problems == {}
    assert clock.sleeps[0] >= 7 and clock.sleeps[1] <= 2
    assert_stored_once(upstream, records)


def test_an_event_the_policy_does_not_know_stops_the_target_without_skipping_it(hub, tmp_path, upstream):
    hub.db.execute("INSERT INTO events VALUES ('01890000-0000-7000-8000-000000000000', 'future.type', 1, 'demo', "
                   "'kiosk-1', '2026-01-01T00:00:00.000Z', NULL, '{}', '2026-01-01T00:00:00.000Z')")
    with syncer(hub, tmp_path, upstream.url) as sync:
        result = sync.run_once()
    assert "future.type" in result.problems["upstream"] and "upstream policy" in result.problems["upstream"]
    assert upstream.requests == []


def test_the_current_pack_is_sent_when_the_target_lacks_it(hub, tmp_path, upstream):
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "demo-museum-3.tar").write_bytes(b"pack bytes")
    with syncer(hub, tmp_path, upstream.url, packs_dir=packs) as sync:
        sync.run_once()
        sync.run_once()
    assert upstream.pack_puts == 1 and upstream.requests[0].pack["pack_version"] == 3
    assert upstream.packs[SITE] == upstream.requests[-1].pack["sha256"]


def test_a_large_backlog_draws_a_progress_line(hub, tmp_path, upstream):
    records = store_day(hub)
    out = io.StringIO()
    with syncer(hub, tmp_path, upstream.url, progress=out, batch_size=10) as sync:
        sync.run_once()
        assert sync.read_ahead_used == len(records) // 10  # every batch but the first was read ahead
    assert f"{len(records):,}/{len(records):,} events" in out.getvalue() and out.getvalue().endswith("\n")


def test_run_stops_when_asked_and_polls_every_interval(hub, tmp_path, upstream):
    stop = threading.Event()
    clock = FakeClock(on_sleep=lambda n: stop.set() if n == 3 else None)
    with syncer(hub, tmp_path, upstream.url, clock) as sync:
        assert sync.run(stop) == 0
    assert clock.sleeps == [10.0, 10.0, 10.0] and len(upstream.requests) == 3


def test_configuration_mistakes_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text('[[targets]]\nname = "up"\nurl = "http://companion.example.org"\nkey_file = "k"\n')
    with pytest.raises(ValueError, match=r"sync.toml: target 'up' url .* plain HTTP"):
        load_config(path)
    path.write_text('[[targets]]\nname = "up"\nurl = "https://companion.example.org"\nkey_file = "k"\n'
                    'batch_size = 9000\n')
    with pytest.raises(ValueError, match=r"batch_size must be a number of events from 1 to 5000"):
        load_config(path)
    path.write_text('[[targets]]\nname = "up"\nurl = "https://companion.example.org/"\nkey_file = "k"\n'
                    'ca_file = "tls/ca.crt"\n')
    loaded = load_config(path)
    target = loaded.targets[0]
    assert (target.batch_url, target.ca_file, target.key_file) == (
        "https://companion.example.org/sync/v1/batch", tmp_path / "tls" / "ca.crt", tmp_path / "k")
    with pytest.raises(ValueError, match=r"no such file.*enroll-site demo"):
        read_site_key(target, SITE)
    path.write_text('[[targets]]\nname = "local"\nurl = "http://127.0.0.1:8000"\n')
    assert load_config(path).targets[0].key_file == tmp_path / "sync" / "local.key"  # the default
    path.write_text(EXAMPLE_CONFIG)  # what `museum sync run --help` shows to start from
    assert load_config(path).targets[0].url == "https://companion.example.org"
    assert load_config(path).horizon_slack_s == 120.0
    path.write_text('horizon_slack_s = 5\n[[targets]]\nname = "local"\nurl = "http://127.0.0.1:8000"\n')
    assert load_config(path).horizon_slack_s == 5.0
    path.write_text('horizon_slack_s = -1\n[[targets]]\nname = "local"\nurl = "http://127.0.0.1:8000"\n')
    with pytest.raises(ValueError, match=r"sync.toml: horizon_slack_s must be a number of seconds from 0 to 86400"):
        load_config(path)
    (tmp_path / "k").write_text(KEY)
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_site_key(target, SITE)
    os.chmod(tmp_path / "k", 0o600)
    with pytest.raises(ValueError, match="key of site 'demo', this site is 'other'"):
        read_site_key(target, "other")
    assert read_site_key(target, SITE) == KEY


def test_the_pseudonym_key_is_made_once_and_private(tmp_path):
    path = tmp_path / "sync" / "pseudonym.key"
    key = pseudonym_key(path)
    assert len(key) == 32 and pseudonym_key(path) == key
    assert os.stat(path).st_mode & 0o077 == 0
    path.write_text("zz")
    with pytest.raises(ValueError, match="restore it from the site's backup"):
        pseudonym_key(path)


def test_the_body_is_the_wire_format(hub, tmp_path, upstream):
    """Checked here against the wire's own description, field by field, for one event of each kind."""
    records = store_day(hub)
    captured: list[bytes] = []
    real = SyncUpstream.store

    def keep(self, site_id, batch):
        captured.append(json.dumps(batch).encode())
        return real(self, site_id, batch)

    SyncUpstream.store = keep  # type: ignore[method-assign]
    try:
        with syncer(hub, tmp_path, upstream.url, batch_size=1000) as sync:
            sync.run_once()
    finally:
        SyncUpstream.store = real  # type: ignore[method-assign]
    batch = json.loads(captured[0])
    assert set(batch) == {"v", "site_id", "analytics", "take_home", "joins", "erasures", "events_after",
                          "erasures_after", "pack"}
    viewed = next(record for record in records if record.type == "artwork.viewed")
    analytics, item = upstream_records(viewed, PSEUDONYM)
    assert analytics is not None and item is not None
    assert [analytics.uid, analytics.type, analytics.schema_version, analytics.device_id, analytics.period,
            analytics.visitor, analytics.fields] in batch["analytics"]
    assert [item.visit_id, item.artwork_id, item.kind, item.day, item.dwell_s] in batch["take_home"]
    assert len(batch["joins"]) == 11 and all(len(row) == 3 for row in batch["joins"])
    assert not any(row[1] == "device.status" for row in batch["analytics"])


def test_the_commands_drain_once_and_report_each_target(make_site, upstream):
    from click.testing import CliRunner

    from broker.sync_cli import sync

    site = make_site(site_id=SITE)
    store = HubStore(site.hub_database)
    try:
        records = store_day(store)
    finally:
        store.close()
    (site.root / "sync").mkdir()
    key_file(site.root / "sync")
    (site.root / "sync.toml").write_text(f'[[targets]]\nname = "upstream"\nurl = "{upstream.url}"\n'
                                         'batch_size = 40\n')
    runner = CliRunner()
    waiting = runner.invoke(sync, ["status", "--site", str(site.root), "--json"])
    assert waiting.exit_code == 0, waiting.output
    assert json.loads(waiting.output)["targets"]["upstream"]["backlog"] == len(records)
    assert json.loads(waiting.output)["horizon"] is None
    ran = runner.invoke(sync, ["run", "--site", str(site.root), "--once", "--no-progress"])
    assert ran.exit_code == 0, ran.output
    assert f"upstream: {len(records):,} events sent" in ran.output
    assert upstream.stored_uids() == expected_uids(records, pseudonym_key(site.root / "sync" / "pseudonym.key"))
    assert max(upstream.received_uids.values()) == 1
    status = runner.invoke(sync, ["status", "--site", str(site.root)])
    assert status.exit_code == 0 and "backlog:      0 events" in status.output and "never" not in status.output
    assert "Horizon: events created up to 20" in status.output  # `--once` read everything made until it ran
    # An operator mistake: one line, no traceback.
    os.chmod(site.root / "sync" / "upstream.key", 0o644)
    refused = runner.invoke(sync, ["run", "--site", str(site.root), "--once"])
    assert refused.exit_code == 1 and "chmod 600" in refused.output and "Traceback" not in refused.output

