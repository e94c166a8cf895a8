"""`DeviceClient.publish_latest` and `listen=`: the state a BLE station shares with its peers (QoS 0, newest only),
through a real Mosquitto with the site's ACL."""

from __future__ import annotations

import threading
from pathlib import Path

from harness import device_config, start_device
from support import wait_until

from broker.site import Site
from bus.device import DeviceClient
from bus.mqtt import Received
from protocol import topics
from protocol.codec import decode_sightings, encode_sightings
from protocol.ids import utc_now
from protocol.messages import Sightings


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.lock = threading.Lock()

    def __call__(self, message: Received) -> None:
        with self.lock:
            self.messages.append(message)

    def sightings(self) -> list[Sightings]:
        with self.lock:
            return [decode_sightings(m.payload) for m in self.messages]


def sightings(device_id: str, distance: float) -> bytes:
    return encode_sightings(Sightings(device_id, "room-a", utc_now(), (("t-00000000002a", distance),)))


def test_a_station_hears_only_the_latest_state_of_a_peer_that_was_offline(site: Site, broker: object,
                                                                          tmp_path: Path) -> None:
    inbox = Inbox()
    listener = start_device(site, "gateway-b", kind="gateway", listen=[topics.all_devices(site.site_id, "sightings")],
                            on_message=inbox)
    publisher = None
    try:
        assert wait_until(lambda: listener._link is not None and listener._link.subscribed, 30)
        publisher = DeviceClient(device_config(site, "gateway-a", "gateway"))
        topic = topics.sightings_topic(site.site_id, "gateway-a")
        for distance in (4.0, 3.0, 1.25):  # set before the connection exists: only the last is kept
            publisher.publish_latest(topic, sightings("gateway-a", distance))
        publisher.start()
        assert wait_until(lambda: inbox.sightings(), 30)
        publisher.publish_latest(topic, sightings("gateway-a", 0.5))
        assert wait_until(lambda: len(inbox.sightings()) >= 2, 30)
        received = inbox.sightings()
        assert [s.tags for s in received] == [(("t-00000000002a", 1.25),), (("t-00000000002a", 0.5),)]
        assert {s.device_id for s in received} == {"gateway-a"}
    finally:
        listener.stop()
        if publisher is not None:
            publisher.stop()
