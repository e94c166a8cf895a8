"""What no input may exhaust: the hub's database (quarantine bounds), its ability to go on storing (a full disk),
and its memory (a round bounded in bytes). A real Mosquitto, real devices or device accounts, the hub's real
database; the hub is driven round by round in the test's thread, so each fault is set at a known point."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import device_config, quarantine, start_device, stored_ids
from test_quarantine import DeviceLink

from broker.hub import Hub, HubSettings
from broker.hub_store import QuarantineLimits
from broker.site import Site
from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from protocol.codec import MAX_MESSAGE_BYTES, encode_event
from protocol.events import ArtworkViewed, Event

KIB = 1024
MIB = 1024 * KIB


class DrivenHub:
    """A hub whose rounds the test runs itself (`run_until`), as `Hub.run` would, so a fault can be set between
    two rounds."""

    def __init__(self, site: Site, **settings: Any) -> None:
        self.site = site
        self.hub = Hub(HubSettings(ClientConfig.load(site.hub_config), site.hub_database, site.hub_stats_file,
                                   **settings))
        assert self.hub.link.wait_connected(60)
        self.round_bytes: list[int] = []

    def run_until(self, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            messages = self.hub.link.poll(0.05)
            if messages:
                self.round_bytes.append(sum(len(message.payload) for message in messages))
                self.hub.process(messages)
        return True

    def deliver(self, link: DeviceLink, event: Event, timeout: float = 60.0) -> None:
        """Publish like a device, again until acknowledged: the first one also waits for the hub's subscription.
        A copy goes every second of rounds (what is queued before it, a flood, may take longer than that on a slow
        machine); copies are harmless, the hub stores an event once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            link.publish(encode_event(event))
            if self.run_until(lambda: link.receive() or event.event_id in link.committed, timeout=1.0):
                return
        raise AssertionError(f"{event.event_id} never acknowledged")

    def stats_file(self) -> dict[str, Any]:
        assert self.site.hub_stats_file is not None
        self.hub.write_stats_file(self.site.hub_stats_file)
        return json.loads(self.site.hub_stats_file.read_text())

    def close(self) -> None:
        self.hub.link.close()
        self.hub.store.close()


def database_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.parent.glob(path.name + "*"))


def test_a_flood_of_invalid_input_from_one_device_leaves_room_for_the_others(make_site, make_broker) -> None:
    site = make_site()
    flooder_config, other_config = (device_config(site, name) for name in ("kiosk-flood", "kiosk-other"))
    make_broker(site)
    limits = QuarantineLimits(device_rows=1000, device_bytes=256 * KIB, total_rows=1000, total_bytes=1 * MIB)
    driven = DrivenHub(site, quarantine_limits=limits)
    try:
        with DeviceLink(site, flooder_config) as flooder, DeviceLink(site, other_config) as other:
            driven.deliver(flooder, flooder.event())
            garbage = b"{" + b"x" * (70 * KIB)  # invalid JSON, its raw copy cut to 64 KiB
            flood = 300
            for _ in range(flood):
                flooder.publish(garbage)
            last = flooder.event()
            driven.deliver(flooder, last)  # in order: once this is acked, the whole flood went through the hub

            good = [other.event() for _ in range(2)]
            driven.deliver(other, good[0])
            other.publish(b"{not json")
            driven.deliver(other, good[1])
    finally:
        driven.close()

    assert {event.event_id for event in good} == stored_ids(site, "kiosk-other")
    assert last.event_id in stored_ids(site, "kiosk-flood")
    rows = quarantine(site)
    other_rows = [row for row in rows if row["device_id"] == "kiosk-other"]
    assert [row["raw"] for row in other_rows] == [b"{not json"], "the flood took the other device's room"
    kept = sum(1 for row in rows if row["device_id"] == "kiosk-flood")
    assert 1 <= kept <= 4, kept  # 256 KiB of 64 KiB copies
    with sqlite3.connect(site.hub_database) as db:
        counts = db.execute("SELECT arrived, not_stored FROM quarantine_counts "
                            "WHERE device_id = 'kiosk-flood' AND code = 'invalid_json'").fetchone()
    assert counts == (flood, flood - kept)
    # Unbounded, the copies alone would take 300 × 64 KiB (19 MiB).
    assert database_bytes(site.hub_database) < 3 * MIB, database_bytes(site.hub_database)


def views(device: DeviceClient, count: int) -> list[ArtworkViewed]:
    events = [ArtworkViewed.create(site_id=device.config.site_id, device_id=device.config.client_id,
                                   artwork_id=f"work-{i % 7}", source="kiosk", language="fr") for i in range(count)]
    device.emit_many(events)  # type: ignore[arg-type]
    return events


def test_a_full_disk_is_said_once_and_storing_resumes_by_itself(make_site, make_broker, caplog) -> None:
    site = make_site()
    make_broker(site)
    caplog.set_level(logging.INFO, logger="broker.hub")
    driven = DrivenHub(site)
    tuning = DeliveryTuning(ack_timeout_s=1.0)
    first, second = start_device(site, "kiosk-a", tuning), start_device(site, "kiosk-b", tuning)
    hub, conn = driven.hub, driven.hub.store.db.conn
    try:
        before = {event.event_id for event in views(first, 20)}
        assert driven.run_until(lambda: stored_ids(site, "kiosk-a") == before)

        # The disk is full from here: the database may not grow by a single page.
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        during = {event.event_id for event in views(second, 500) + views(first, 20)}
        assert driven.run_until(lambda: hub.storage_failures >= 3)
        assert hub.storage_error is not None and "full" in hub.storage_error
        assert driven.stats_file()["storage_error"] == hub.storage_error
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None, caplog.text
        assert "cannot rollback" not in caplog.text

        conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        assert driven.run_until(lambda: before | during <= stored_ids(site))
        assert hub.storage_error is None and driven.stats_file()["storage_error"] is None
        assert "storing again" in caplog.text
        assert driven.run_until(lambda: first.outbox.pending == 0 and second.outbox.pending == 0)
    finally:
        first.stop()
        second.stop()
        driven.close()


def test_a_round_is_bounded_in_bytes(make_site, make_broker) -> None:
    site = make_site()
    config = device_config(site, "kiosk-big")
    make_broker(site)
    driven = DrivenHub(site, round_max_bytes=1 * MIB)
    try:
        with DeviceLink(site, config) as link:
            driven.deliver(link, link.event())
            big = b"[" + b" " * (MAX_MESSAGE_BYTES - 100)
            for _ in range(20):
                link.publish(big)
            last = link.event()
            link.publish(encode_event(last))
            assert driven.run_until(lambda: link.receive() or last.event_id in link.committed)
    finally:
        driven.close()
    assert sum(1 for row in quarantine(site) if row["device_id"] == "kiosk-big") == 20
    # Whatever the broker had queued, one round read at most the bound plus the message that crossed it.
    assert max(driven.round_bytes) <= 1 * MIB + MAX_MESSAGE_BYTES, driven.round_bytes
