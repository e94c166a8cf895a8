"""Device → broker → hub, end to end against a real Mosquitto: every event stored exactly once."""

from __future__ import annotations

import os
import signal
import stat
from dataclasses import replace
from typing import Any

from harness import HubProcess, HubThread, device_config, devices, start_device, stored_ids, stored_types
from support import wait_until

from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from bus.mqtt import Credentials, Endpoint, MqttLink
from protocol.events import ArtworkViewed, DeviceStatus
from protocol.ids import new_visit_id
from protocol.topics import all_devices, events_topic


def _views(client: DeviceClient, count: int) -> set[str]:
    visit = new_visit_id()
    return {client.record(ArtworkViewed, visit_id=visit, artwork_id=f"work-{i % 20}", source="kiosk",
                          language="fr").event_id for i in range(count)}


def test_events_are_stored_once_and_leave_the_outbox(site, broker):
    with HubThread(site):
        client = start_device(site, "kiosk-01")
        try:
            sent = _views(client, 500)
            assert client.wait_drained(30), client.stats()
            assert client.stats().events_acked >= len(sent)
        finally:
            client.stop()
    assert sent <= stored_ids(site, "kiosk-01")


def test_backlog_built_while_hub_is_down_drains_in_batches(site, broker):
    client = start_device(site, "kiosk-02", DeliveryTuning(batch_max_events=200))
    try:
        sent = _views(client, 3000)
        assert client.outbox.pending >= 3000
        with HubThread(site):
            assert client.wait_drained(60), client.stats()
        stats = client.stats()
        assert stats.messages_sent < stats.events_sent, "a backlog must travel in batch envelopes"
    finally:
        client.stop()
    assert sent <= stored_ids(site, "kiosk-02")


def watch_the_worker(client: DeviceClient) -> list[int | None]:
    """What the device's worker does with its outbox, in order: the number of unsent rows each look found, and
    None for the end of each pass (the worker flushes acknowledged rows after deciding what to send). Once a look
    is followed by a None, whatever that look led to (a publish, or holding back) is done."""
    seen: list[int | None] = []
    outbox = client.outbox
    look, flush = outbox.pending_after, outbox.flush_acknowledged

    def pending_after(*args: Any, **kwargs: Any) -> Any:
        rows = look(*args, **kwargs)
        seen.append(len(rows))
        return rows

    def flush_acknowledged(*args: Any, **kwargs: Any) -> Any:
        seen.append(None)
        return flush(*args, **kwargs)

    outbox.pending_after = pending_after  # type: ignore[method-assign]
    outbox.flush_acknowledged = flush_acknowledged  # type: ignore[method-assign]
    return seen


def a_pass_ended_after_a_look_at(seen: list[int | None], rows: int) -> bool:
    looks = [index for index, found in enumerate(list(seen)) if found == rows]
    return bool(looks) and None in seen[looks[0]:]


def test_only_a_full_batch_joins_a_message_in_flight(site, broker):
    # No hub: nothing is acknowledged, so what is sent shows how the window is used.
    client = start_device(site, "kiosk-pace", DeliveryTuning(window=2, batch_max_events=10, ack_timeout_s=600))
    seen = watch_the_worker(client)
    try:
        assert wait_until(lambda: client.stats().connected, 30)
        _views(client, 1)
        assert wait_until(lambda: client.stats().messages_sent == 1, 30)
        _views(client, 9)  # a partial batch: it waits for the first message's ack, gathering more
        # A known point, not a pause: the worker has seen all nine and finished the pass in which it decided.
        assert wait_until(lambda: a_pass_ended_after_a_look_at(seen, 9), 30), seen
        assert client.stats().messages_sent == 1, client.stats()
        _views(client, 1)  # now ten are waiting: a full batch takes the window's second place
        assert wait_until(lambda: client.stats().messages_sent == 2, 30), client.stats()
        assert client.stats().events_sent == 11
    finally:
        client.stop()


def test_outbox_survives_a_restart_of_the_device(site, broker):
    config = device_config(site, "kiosk-03")
    first = DeviceClient(config)  # never started: no broker contact at all
    sent = _views(first, 50)
    first.stop()
    with HubThread(site):
        second = DeviceClient(config)
        second.start()
        try:
            assert second.wait_drained(30)
        finally:
            second.stop()
    assert sent <= stored_ids(site, "kiosk-03")


def test_heartbeat_and_presence_fill_the_device_registry(site, broker):
    def registered(state: str) -> bool:
        row = devices(site).get("gateway-01")
        return row is not None and row["state"] == state and row["kind"] == "gateway"

    with HubThread(site):
        client = start_device(site, "gateway-01", kind="gateway")
        try:
            client.record(DeviceStatus, kind="gateway", software_version="9.9.9", uptime_s=1.0, outbox_pending=0,
                          outbox_dropped=0)
            assert wait_until(lambda: registered("online"), 30)
            assert wait_until(lambda: devices(site)["gateway-01"]["software_version"] == "9.9.9", 30)
        finally:
            client.stop()
        assert wait_until(lambda: registered("offline"), 30)
    assert DeviceStatus.type in stored_types(site, "gateway-01")


def test_messages_queued_for_a_persistent_session_survive_wait_connected(site, broker):
    hub_config = ClientConfig.load(site.hub_config)
    endpoint = Endpoint("127.0.0.1", site.plain_loopback_port)
    credentials = Credentials(hub_config.broker.username, hub_config.broker.password)
    subscriptions = [(all_devices(site.site_id, "events"), 1)]
    hub = MqttLink("hub", endpoint, credentials, clean_session=False, subscriptions=subscriptions)
    assert hub.wait_connected(30)
    hub.close()  # the session stays on the broker, which now queues for it

    device = device_config(site, "kiosk-q")
    sender = MqttLink("kiosk-q", endpoint, Credentials(device.broker.username, device.broker.password))
    assert sender.wait_connected(30)
    for i in range(5):
        assert sender.publish(events_topic(site.site_id, "kiosk-q"), f"queued {i}".encode())
    assert sender.flush(30)
    sender.close()

    again = MqttLink("hub", endpoint, credentials, clean_session=False, subscriptions=subscriptions)
    assert again.wait_connected(30)
    received = []
    assert wait_until(lambda: received.extend(again.poll(0.05)) or len(received) >= 5, 30)
    again.close()
    assert sorted(m.payload for m in received) == [f"queued {i}".encode() for i in range(5)]


def test_an_event_emitted_twice_is_stored_once_without_stalling_delivery(site, broker):
    # Both copies leave in separate messages, both in flight at once. The hub acknowledges the id twice; each
    # message must be settled, or one waits for the (patient) ack timeout, holding a window slot until then. The
    # waits below are far shorter than that timeout, so only a settled message lets them succeed.
    with HubThread(site):
        # One event per message: each is a full batch, so the second copy joins the first in flight.
        client = start_device(site, "kiosk-twice", DeliveryTuning(ack_timeout_s=600, window=2, batch_max_events=1))
        try:
            event = ArtworkViewed.create(site_id=site.site_id, device_id="kiosk-twice", artwork_id="work-1",
                                         source="kiosk", language="fr")
            assert wait_until(lambda: client.stats().connected, 30)
            client.emit(event)
            client.emit(event)
            later = _views(client, 20)
            assert client.wait_drained(60), client.stats()
            assert wait_until(lambda: client.stats().in_flight_messages == 0, 60), client.stats()
            assert wait_until(lambda: client.outbox.event_ids() == set(), 60), "acknowledged rows are deleted"
        finally:
            client.stop()
    assert stored_ids(site, "kiosk-twice") >= later | {event.event_id}


def test_a_device_writes_its_outbox_readable_by_itself_only(site, broker):
    # Visit tokens sit in the outbox: no other local user of a kiosk may read them, whatever the umask says.
    config = device_config(site, "kiosk-private")
    assert config.outbox is not None
    path = site.root.parent / "kiosk-private-state" / "outbox.sqlite"
    config = replace(config, outbox=replace(config.outbox, path=path))
    previous = os.umask(0o022)  # the usual default, under which SQLite alone would make every file 0644
    try:
        with HubThread(site):
            client = DeviceClient(config)
            client.start()
            try:
                _views(client, 20)
                assert client.wait_drained(30), client.stats()
                files = [path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")]
                modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in files}
                assert modes == dict.fromkeys(modes, 0o600), modes
                assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            finally:
                client.stop()
    finally:
        os.umask(previous)


def test_events_that_waited_behind_a_message_in_flight_are_not_gathered_again(site, broker):
    # Gathering holds back a few events when the device is quiet. Events that queued behind a message in flight
    # have waited already: once its ack comes they go at once, even with a gathering time out of reach (600 s).
    tuning = DeliveryTuning(gather_events=100, gather_s=600, ack_timeout_s=600)
    config = replace(device_config(site, "kiosk-busy"), heartbeat_s=3600.0)
    hub = HubProcess(site).start()
    client = DeviceClient(config, tuning=tuning)
    seen = watch_the_worker(client)
    try:
        # Another device, resending as usual until its event is stored, shows the hub's session is subscribed.
        warm_up = start_device(site, "kiosk-warm", DeliveryTuning(ack_timeout_s=2.0))
        try:
            shown = _views(warm_up, 1)
            assert wait_until(lambda: shown <= stored_ids(site, "kiosk-warm"), 60), warm_up.stats()
        finally:
            warm_up.stop()
        client.start()
        hub.signal(signal.SIGSTOP)  # a known point: from now on no ack comes until SIGCONT
        first = _views(client, 100)
        assert wait_until(lambda: client.stats().in_flight_messages == 1, 60), client.stats()
        behind = _views(client, 1)
        # The worker has looked at the one event while the message was in flight, and finished that pass.
        assert wait_until(lambda: a_pass_ended_after_a_look_at(seen, 1), 60), seen
        hub.signal(signal.SIGCONT)
        assert wait_until(lambda: first | behind <= stored_ids(site, "kiosk-busy"), 60), client.stats()
    finally:
        hub.stop()
        client.stop()
