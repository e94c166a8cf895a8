"""Impersonation and eavesdropping, end to end: a real Mosquitto with the site's ACL and TLS, the hub storing.

A device holds credentials that let it speak only for itself. Whatever it publishes on another device's topics
must be dropped before it reaches the hub (nothing stored, no registry row for the victim), it must not read
another device's acks or commands, clients without an account or with a wrong password or an untrusted CA must
not connect, and a device set up for TLS must not be lured onto a plaintext broker by a zeroconf advertisement.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from harness import HubThread, device_config, devices, quarantine, stored_ids
from support import wait_until

from broker import tls
from broker.site import Site
from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from bus.discovery import BrokerEndpoint, advertise_broker, resolve_broker
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol.codec import decode_ack, decode_command, encode_command, encode_content, encode_event, encode_presence
from protocol.events import ArtworkViewed, Event
from protocol.ids import utc_now
from protocol.messages import Command, ContentAnnouncement, Presence
from protocol.topics import acks_topic, all_devices, commands_topic, content_topic, events_topic, status_topic

LOOPBACK = ["127.0.0.1"]


def plain(site: Site) -> Endpoint:
    assert site.plain_loopback_port is not None
    return Endpoint("127.0.0.1", site.plain_loopback_port)


def secure(site: Site, ca_file: Path | None = None) -> Endpoint:
    return Endpoint("127.0.0.1", site.tls_port, ca_file or site.ca_file)


def credentials(config: ClientConfig) -> Credentials:
    return Credentials(config.broker.username, config.broker.password)


class Client:
    """One MQTT connection under some account, keeping everything it receives."""

    def __init__(self, client_id: str, endpoint: Endpoint, creds: Credentials | None,
                 subscriptions: Sequence[str] = ()) -> None:
        self.link = MqttLink(client_id, endpoint, creds, subscriptions=[(topic, 1) for topic in subscriptions])
        self.received: list[Received] = []
        self.markers: set[bytes] = set()

    def __enter__(self) -> Client:
        assert self.link.wait_connected(60), self.link.last_refusal or self.link.last_error
        return self

    def __exit__(self, *_: object) -> None:
        self.link.close()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self.link.publish(topic, payload, qos=1, retain=retain)
        assert self.link.flush(60), "the broker did not PUBACK"

    def pump(self) -> None:
        self.received.extend(self.link.poll(0.05))

    def on(self, topic: str) -> list[bytes]:
        return [message.payload for message in self.received if message.topic == topic]

    def echo(self, site_id: str) -> None:
        """A known point in what the broker sends this device, instead of a pause: it publishes its own presence
        (a status, which a device may write and read back; the client must subscribe to it) until a copy comes
        back. The broker sends a client its messages in the order it routed them, so whatever it routed here
        before that copy (retained messages on subscribing, earlier publications) has arrived by then, and the
        copy proves the subscriptions, all made in one SUBSCRIBE, are live."""
        topic = status_topic(site_id, self.link.client_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            marker = encode_presence(Presence(self.link.client_id, "online", "kiosk", "1.0.0", utc_now()))
            self.markers.add(marker)
            self.publish(topic, marker)
            # 0.5 s only paces the copies: one sent before the subscription was live is dropped.
            if wait_until(lambda: self.pump() or marker in self.on(topic), 0.5, interval=0.0):  # noqa: B023
                return
        raise AssertionError(f"{self.link.client_id} never received its own status back")

    def others(self) -> list[Received]:
        """What it received, apart from its own markers."""
        return [message for message in self.received if message.payload not in self.markers]


def viewed(site_id: str, device_id: str) -> Event:
    return ArtworkViewed.create(site_id=site_id, device_id=device_id, artwork_id="work-1", source="kiosk",
                                language="fr")


def deliver_until_acked(client: Client, site_id: str, device_id: str, event: Event, timeout: float = 60.0) -> None:
    """Publish an event as its device does, again until the hub's ack names it (the hub may still be starting)."""
    acks = acks_topic(site_id, device_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.publish(events_topic(site_id, device_id), encode_event(event))
        if wait_until(lambda: client.pump() or any(event.event_id in decode_ack(payload).committed
                                                   for payload in client.on(acks)), 1.0, interval=0.0):
            return
    raise AssertionError(f"{event.event_id} never acknowledged")


# --- another device's topics --------------------------------------------------------------------------------

def test_events_and_presence_forged_for_another_device_never_reach_the_hub(make_site, make_broker) -> None:
    site = make_site()
    attacker = device_config(site, "kiosk-a")
    victim = device_config(site, "kiosk-b")  # enrolled, never connected: any row for it would be forged
    make_broker(site)
    forged = viewed(site.site_id, "kiosk-b")
    with HubThread(site), Client("kiosk-a", plain(site), credentials(attacker),
                                 [acks_topic(site.site_id, "kiosk-a")]) as client:
        deliver_until_acked(client, site.site_id, "kiosk-a", viewed(site.site_id, "kiosk-a"))
        # Mosquitto PUBACKs a denied publish from an MQTT 3.1.1 client: the sender cannot tell it was dropped.
        client.publish(events_topic(site.site_id, "kiosk-b"), encode_event(forged))
        client.publish(status_topic(site.site_id, "kiosk-b"),
                       encode_presence(Presence("kiosk-b", "online", "kiosk", "6.6.6", utc_now())), retain=True)
        # Published after the forgeries on the same connection: had the broker passed them on, the hub would
        # have had them first, so they would be committed by the time this one is acknowledged.
        control = viewed(site.site_id, "kiosk-a")
        deliver_until_acked(client, site.site_id, "kiosk-a", control)

    stored = stored_ids(site)
    assert control.event_id in stored and forged.event_id not in stored
    assert "kiosk-a" in devices(site) and "kiosk-b" not in devices(site)
    assert not [row for row in quarantine(site) if "kiosk-b" in row["topic"]]
    # Nor did the broker keep the forged presence as the victim's retained status: it would have been sent on
    # subscribing, before the owner's own status came back.
    with Client("kiosk-b", plain(site), credentials(victim), [status_topic(site.site_id, "kiosk-b")]) as owner:
        owner.echo(site.site_id)
    assert owner.others() == []


def test_a_device_cannot_read_another_devices_acks(make_site, make_broker) -> None:
    site = make_site()
    snoop_config = device_config(site, "kiosk-a")
    owner_config = device_config(site, "kiosk-b")
    make_broker(site)
    # "#" also covers the snoop's own status, on which it echoes.
    wanted = [acks_topic(site.site_id, "kiosk-b"), all_devices(site.site_id, "acks"), f"museum/v1/{site.site_id}/#",
              "#"]
    with HubThread(site), Client("kiosk-a", plain(site), credentials(snoop_config), wanted) as snoop, \
            Client("kiosk-b", plain(site), credentials(owner_config), [acks_topic(site.site_id, "kiosk-b")]) as owner:
        snoop.echo(site.site_id)  # its subscriptions are live before any ack goes out
        deliver_until_acked(owner, site.site_id, "kiosk-b", viewed(site.site_id, "kiosk-b"))
        deliver_until_acked(owner, site.site_id, "kiosk-b", viewed(site.site_id, "kiosk-b"))
        snoop.echo(site.site_id)  # routed after the acks the owner has: a copy of one would have come first
    assert len(owner.on(acks_topic(site.site_id, "kiosk-b"))) >= 2, "the hub's acks did go out"
    assert snoop.others() == []


def test_a_device_cannot_read_or_send_another_devices_commands(make_site, make_broker) -> None:
    site = make_site()
    snoop_config = device_config(site, "kiosk-a")
    owner_config = device_config(site, "kiosk-b")
    hub_config = ClientConfig.load(site.hub_config)
    make_broker(site)
    topic = commands_topic(site.site_id, "kiosk-b")
    real = Command(str(uuid.uuid4()), "ping", utc_now())
    forged = Command(str(uuid.uuid4()), "reboot", utc_now())
    # The hub's account is the only one that may send commands; the hub itself does not send any yet.
    snoop_wants = [topic, all_devices(site.site_id, "commands"), status_topic(site.site_id, "kiosk-a")]
    with Client("hub", plain(site), credentials(hub_config)) as hub, \
            Client("kiosk-a", plain(site), credentials(snoop_config), snoop_wants) as snoop, \
            Client("kiosk-b", plain(site), credentials(owner_config), [topic, status_topic(site.site_id, "kiosk-b")]) \
            as owner:
        snoop.echo(site.site_id)
        owner.echo(site.site_id)
        snoop.publish(topic, encode_command(forged))  # PUBACKed, so routed (or dropped) before the real one
        hub.publish(topic, encode_command(real))
        # Had the forged command passed, it would have reached the owner before the real one.
        assert wait_until(lambda: owner.pump() or bool(owner.on(topic)), 60, interval=0.0)
        snoop.echo(site.site_id)  # after both commands were routed
    assert [decode_command(payload) for payload in owner.on(topic)] == [real]
    assert snoop.others() == []


def test_only_the_hub_announces_content(make_site, make_broker) -> None:
    site = make_site()
    attacker = device_config(site, "kiosk-a")
    reader = device_config(site, "kiosk-b")
    hub_config = ClientConfig.load(site.hub_config)
    make_broker(site)
    topic = content_topic(site.site_id)
    fake = ContentAnnouncement("malware", "6.6.6", "0" * 64, utc_now(), "https://evil.example/packs/malware-6.tar", 1)
    real = ContentAnnouncement("spring-2026", "2026.3.1", "a" * 64, utc_now(),
                               f"https://{site.broker_host}:{site.content_port}/packs/spring-2026-3.tar", 1024)
    with Client("kiosk-a", plain(site), credentials(attacker)) as client:
        client.publish(topic, encode_content(fake), retain=True)
    with Client("kiosk-b", plain(site), credentials(reader), [topic, status_topic(site.site_id, "kiosk-b")]) as device:
        device.echo(site.site_id)  # a retained announcement is sent on subscribing, so before this
        assert device.others() == [], "a device's announcement was retained"
        with Client("hub", plain(site), credentials(hub_config)) as hub:
            hub.publish(topic, encode_content(real), retain=True)
        assert wait_until(lambda: device.pump() or bool(device.on(topic)), 60, interval=0.0)
    assert device.on(topic) == [encode_content(real)]


# --- who may connect ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_anonymous_connection_is_refused(site, broker, listener: str) -> None:
    endpoint = plain(site) if listener == "plain" else secure(site)
    link = MqttLink("anonymous", endpoint, None)
    try:
        assert not link.wait_connected(60)  # a refusal ends the wait at once
        assert link.last_refusal is not None and "authori" in link.last_refusal.lower(), link.last_refusal
    finally:
        link.close()


def test_wrong_password_is_refused(make_site, make_broker) -> None:
    site = make_site()
    own = device_config(site, "kiosk-a")
    other = device_config(site, "kiosk-b")
    make_broker(site)
    attempts = [Credentials("kiosk-a", "not-the-password"), Credentials("kiosk-a", other.broker.password),
                Credentials("hub", own.broker.password), Credentials("kiosk-a", "")]
    for creds in attempts:
        link = MqttLink("kiosk-a", plain(site), creds)
        try:
            # A refusal ends the wait at once; the bound is for a machine slow to connect.
            assert not link.wait_connected(60), f"{creds.username} got in with a wrong password"
            assert link.last_refusal is not None
        finally:
            link.close()
    with Client("kiosk-a", plain(site), credentials(own)) as client:
        assert client.link.connected


# --- TLS ----------------------------------------------------------------------------------------------------

def test_a_tls_device_delivers_to_the_hub(site, broker) -> None:
    config = device_config(site, "kiosk-tls", tls=True)
    assert (config.broker.tls, config.broker.port, config.broker.ca_file) == (True, site.tls_port, site.ca_file)
    with HubThread(site):
        client = DeviceClient(config)
        client.start()
        try:
            sent = {client.record(ArtworkViewed, artwork_id=f"work-{i}", source="kiosk", language="fr").event_id
                    for i in range(20)}
            assert client.wait_drained(60), client.stats()
        finally:
            client.stop()
    assert sent <= stored_ids(site, "kiosk-tls")


def test_a_device_trusting_another_ca_cannot_connect(site, broker, sites_base) -> None:
    foreign = sites_base / f"foreign-ca-{uuid.uuid4().hex}"
    tls.create_ca("elsewhere", foreign / "ca.crt", foreign / "ca.key")
    misled = device_config(site, "kiosk-misled", tls=True).with_broker(ca_file=foreign / "ca.crt")
    trusting = device_config(site, "kiosk-trusting", tls=True)
    with HubThread(site):
        clients = [DeviceClient(misled), DeviceClient(trusting)]
        for client in clients:
            client.start()
        try:
            lost = clients[0].record(ArtworkViewed, artwork_id="work-1", source="kiosk", language="fr")
            clients[1].record(ArtworkViewed, artwork_id="work-1", source="kiosk", language="fr")
            assert clients[1].wait_drained(60), "the hub is not storing: the test proves nothing"
            assert not clients[0].stats().connected
            assert clients[0].outbox.pending == 1, "the event must wait in the outbox, not be dropped"
        finally:
            for client in clients:
                client.stop()
    assert lost.event_id not in stored_ids(site)
    link = MqttLink("kiosk-misled", secure(site, foreign / "ca.crt"), credentials(misled))
    try:
        # The attempt's outcome, whenever it comes: a handshake that fails, never a connection.
        assert wait_until(lambda: link.wait_connected(0.05) or "CERTIFICATE_VERIFY_FAILED" in (link.last_error or ""),
                          30), link.last_error
        assert not link.connected and link.connections == 0
    finally:
        link.close()


# --- zeroconf -----------------------------------------------------------------------------------------------

# Random, so another test run advertising on this host's loopback at the same time cannot answer for our site.
ZEROCONF_SITE = f"t-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("site", [{"site_id": ZEROCONF_SITE}], indirect=True)
def test_a_tls_device_ignores_a_plaintext_advertisement_for_its_site(site, broker, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bus.discovery")
    config = device_config(site, "kiosk-zc", tls=True).with_broker(discover=True)
    configured = BrokerEndpoint("127.0.0.1", site.tls_port, True, site.site_id, "config")
    with socket.socket() as decoy:
        # Whoever advertises plaintext MQTT for the site would receive the device's password in clear.
        decoy.bind(("127.0.0.1", 0))
        decoy.listen(8)
        decoy.setblocking(False)
        decoy_port = decoy.getsockname()[1]
        refusal = f"ignoring 127.0.0.1:{decoy_port} found by zeroconf because it advertises tls=False"
        with advertise_broker(site.site_id, decoy_port, tls=False, interfaces=LOOPBACK):
            # Returns as soon as the advertisement answers: the long timeout only bounds a slow machine.
            chosen = resolve_broker(site.site_id, configured, discover=True, timeout=30.0, interfaces=LOOPBACK)
            assert chosen == configured
            assert refusal in caplog.text, "the advertisement was never seen: the test proves nothing"
            caplog.clear()
            with HubThread(site):
                client = DeviceClient(config, tuning=DeliveryTuning(discovery_timeout_s=30.0),
                                      discovery_interfaces=LOOPBACK)
                client.start()
                try:
                    assert refusal in caplog.text
                    event = client.record(ArtworkViewed, artwork_id="work-1", source="kiosk", language="fr")
                    assert client.wait_drained(60), client.stats()
                finally:
                    client.stop()
        assert event.event_id in stored_ids(site, "kiosk-zc")
        with pytest.raises(BlockingIOError):
            decoy.accept()  # nobody ever connected to the decoy
