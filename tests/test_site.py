"""The site directory and its Mosquitto: generated files, enrollment, and the rules a real broker enforces."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from support import free_port, wait_until

from broker import passwords, tls
from broker.cli import COMMANDS
from broker.mosquitto import MosquittoError, MosquittoProcess, reload_running, running_pid
from broker.site import (
    DEVICE_OUTBOX_PATH,
    MAX_PACKET_SIZE,
    Site,
    enroll_device,
    enrolled_devices,
    init_site,
    load_site,
)
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink, Received
from protocol.codec import MAX_MESSAGE_BYTES
from protocol.topics import acks_topic, all_devices, content_topic, events_topic

ROOT = os.geteuid() == 0


# --- helpers ---------------------------------------------------------------------------------------------

class Client:
    """An MqttLink and everything it has received so far."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.received: list[Received] = []

    def poll(self) -> None:
        self.received.extend(self.link.poll(0.01))

    def got(self, topic: str, payload: bytes) -> bool:
        return any(m.topic == topic and m.payload == payload for m in self.received)

    def topics(self) -> set[str]:
        return {m.topic for m in self.received}


def pump(clients: list[Client], until: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for client in clients:
            client.poll()
        if until():
            return True
    return False


def deliver(sender: Client, topic: str, payload: bytes, receiver: Client, clients: list[Client],
            timeout: float = 30.0) -> bool:
    """Publish until `receiver` has it: the first delivery also proves the receiver's subscriptions are live.
    The 0.3 s between copies only paces the retries (a copy sent before the subscription was live is dropped);
    no verdict depends on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert sender.link.publish(topic, payload)
        if pump(clients, lambda: receiver.got(topic, payload), timeout=0.3):
            return True
    return False


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """connect(config, subscriptions=(), endpoint=None, password=None, client_id=None) → a connected Client."""
    opened: list[MqttLink] = []

    def make(config: ClientConfig, subscriptions: tuple[tuple[str, int], ...] = (), *,
             endpoint: Endpoint | None = None, password: str | None = None, client_id: str | None = None,
             clean_session: bool = True, must_connect: bool = True) -> Client:
        link = MqttLink(client_id or config.client_id, endpoint or endpoint_of(config),
                        Credentials(config.broker.username, password or config.broker.password),
                        subscriptions=subscriptions, clean_session=clean_session)
        opened.append(link)
        if must_connect:
            assert link.wait_connected(30.0), f"{config.client_id}: {link.last_refusal or link.last_error}"
        return Client(link)

    yield make
    for link in opened:
        link.close()


def endpoint_of(config: ClientConfig) -> Endpoint:
    return Endpoint(config.broker.host, config.broker.port, config.broker.ca_file if config.broker.tls else None)


def hub_of(site: Site) -> ClientConfig:
    return ClientConfig.load(site.hub_config)


def device_of(site: Site, device_id: str) -> ClientConfig:
    return ClientConfig.load(site.device_config(device_id))


def refused(endpoint: Endpoint, credentials: Credentials | None, client_id: str = "probe") -> str | None:
    """The broker's refusal reason for a connection attempt, or None if it was accepted (a refusal ends the wait at
    once, so the long bound only matters to a machine that is slow to connect)."""
    link = MqttLink(client_id, endpoint, credentials)
    try:
        connected = link.wait_connected(30.0)
        return None if connected else (link.last_refusal or link.last_error or "timed out")
    finally:
        link.close()


def acl_rules(text: str) -> dict[str | None, set[tuple[str, str]]]:
    rules: dict[str | None, set[tuple[str, str]]] = {None: set()}
    user: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "user":
            user = rest
            rules[user] = set()
        else:
            assert keyword == "topic", line
            access, topic = rest.split(" ")
            rules[user].add((access, topic))
    return rules


def config_sections(text: str) -> list[dict[str, list[str]]]:
    """The global section, then one per listener: option → values."""
    sections: list[dict[str, list[str]]] = [{}]
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        option, _, value = line.partition(" ")
        if option == "listener":
            sections.append({})
        sections[-1].setdefault(option, []).append(value)
    return sections


# --- passwords -------------------------------------------------------------------------------------------

HASH_FORMAT = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")


def test_password_hash_has_mosquitto_format_and_verifies() -> None:
    encoded = passwords.hash_password("s3cret")
    assert HASH_FORMAT.match(encoded)
    assert passwords.verify_password(encoded, "s3cret")
    assert not passwords.verify_password(encoded, "s3cret ")
    assert passwords.hash_password("s3cret") != encoded  # a fresh salt every time


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None and not Path("/usr/bin/mosquitto_passwd").exists(),
                    reason="mosquitto_passwd is not installed")
def test_hashes_of_mosquitto_passwd_verify(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(path), "alice", "wonder land"], check=True, capture_output=True)
    subprocess.run([binary, "-b", str(path), "bob", "b0b"], check=True, capture_output=True)
    entries = passwords.read_password_file(path)
    assert set(entries) == {"alice", "bob"}
    assert all(HASH_FORMAT.match(encoded) for encoded in entries.values())
    assert passwords.verify_password(entries["alice"], "wonder land")
    assert passwords.verify_password(entries["bob"], "b0b")
    assert not passwords.verify_password(entries["bob"], "wonder land")


def test_set_password_adds_and_replaces_one_user(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    passwords.set_password(path, "hub", "one")
    passwords.set_password(path, "kiosk-01", "two")
    hub_before = passwords.read_password_file(path)["hub"]
    passwords.set_password(path, "kiosk-01", "three")
    entries = passwords.read_password_file(path)
    assert list(entries) == ["hub", "kiosk-01"]
    assert entries["hub"] == hub_before
    assert passwords.verify_password(entries["kiosk-01"], "three")
    assert not passwords.verify_password(entries["kiosk-01"], "two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("username", ["", "a:b", "a\nb"])
def test_password_file_refuses_usernames_that_break_it(tmp_path: Path, username: str) -> None:
    with pytest.raises(ValueError, match="password file"):
        passwords.set_password(tmp_path / "passwd", username, "x")


def test_malformed_password_file_is_reported_with_its_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        passwords.parse_password_file("hub:$7$x\nno-separator\n")


# --- the generated files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "per_listener_settings false",
    "allow_anonymous false",
    "password_file {s.password_file}",
    "acl_file {s.acl_file}",
    "persistence true",
    "persistence_location {s.persistence_dir}",
    "autosave_interval 10",
    "max_queued_messages 10000",
    "max_queued_bytes 134217728",
    "max_inflight_messages 100",
    f"max_packet_size {MAX_PACKET_SIZE}",
    f"message_size_limit {MAX_MESSAGE_BYTES}",
    "log_dest file {s.log_file}",
    "connection_messages true",
    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    "listener {s.tls_port} 127.0.0.1",
    "cafile {s.ca_file}",
    "certfile {s.server_cert}",
    "keyfile {s.server_key}",
    "tls_version tlsv1.2",
    "listener {s.plain_loopback_port} 127.0.0.1",
])
def test_mosquitto_config_sets(site: Site, line: str) -> None:
    assert line.format(s=site) in site.mosquitto_conf.read_text().splitlines()


def test_mosquitto_config_structure(site: Site) -> None:
    general, tls_listener, plain_listener = config_sections(site.mosquitto_conf.read_text())
    assert general["log_type"] == ["error", "warning", "notice", "information"]
    # The broker drops what the contract never allows (message_size_limit), and cuts off larger packets still.
    assert general["message_size_limit"] == [str(MAX_MESSAGE_BYTES)]
    assert MAX_PACKET_SIZE > MAX_MESSAGE_BYTES
    # use_username_as_clientid is a listener option: every listener needs it, or one would allow take-overs.
    for listener in (tls_listener, plain_listener):
        assert listener["use_username_as_clientid"] == ["true"]
    assert "certfile" not in plain_listener
    assert all(option not in listener for listener in (tls_listener, plain_listener)
               for option in ("password_file", "acl_file", "allow_anonymous"))


@pytest.mark.parametrize("site", [{"max_queued_messages": 5, "autosave_interval": 2}], indirect=True)
def test_limits_are_settings_of_the_site(site: Site, broker: MosquittoProcess) -> None:
    lines = site.mosquitto_conf.read_text().splitlines()
    assert "max_queued_messages 5" in lines
    assert "autosave_interval 2" in lines
    assert load_site(site.root) == site
    assert broker.alive


def test_site_without_plain_listener_has_only_tls(make_site: Callable[..., Site]) -> None:
    site = make_site(plain_loopback_port=None, bind="0.0.0.0")
    sections = config_sections(site.mosquitto_conf.read_text())
    assert [s["listener"] for s in sections[1:]] == [[f"{site.tls_port} 0.0.0.0"]]
    hub = hub_of(site)
    assert (hub.broker.host, hub.broker.port, hub.broker.tls) == ("127.0.0.1", site.tls_port, True)
    assert hub.broker.ca_file == site.ca_file


def test_acl_confines_hub_and_each_device(site: Site) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    enroll_device(site, "gw-02", "gateway")
    base = "museum/v1/test-site"
    device_rules = {
        d: {("write", f"{base}/devices/{d}/events"), ("readwrite", f"{base}/devices/{d}/status"),
            ("read", f"{base}/devices/{d}/commands"), ("read", f"{base}/devices/{d}/acks"),
            ("read", f"{base}/content"), ("write", f"{base}/devices/{d}/screenshots")}
        for d in ("kiosk-01", "gw-02")
    }
    device_rules["gw-02"] |= {("write", f"{base}/devices/gw-02/sightings"), ("read", f"{base}/devices/+/sightings")}
    assert acl_rules(site.acl_file.read_text()) == {
        None: set(),
        "hub": {("read", f"{base}/devices/+/events"), ("read", f"{base}/devices/+/status"),
                ("read", f"{base}/devices/+/screenshots"),
                ("write", f"{base}/devices/+/acks"), ("write", f"{base}/devices/+/commands"),
                ("readwrite", f"{base}/content")},
        "publisher": {("readwrite", f"{base}/content")},
        "operator": {("write", f"{base}/devices/+/commands")},
        **device_rules,
    }


def test_acl_is_rebuilt_from_the_site_not_appended(site: Site) -> None:
    site.acl_file.write_text("user intruder\ntopic readwrite #\n")
    enroll_device(site, "kiosk-01", "kiosk")
    assert set(acl_rules(site.acl_file.read_text())) == {None, "hub", "publisher", "operator", "kiosk-01"}


def test_password_file_holds_the_hub_and_enrolled_devices(site: Site) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    entries = passwords.read_password_file(site.password_file)
    assert list(entries) == ["hub", "publisher", "kiosk-01"]
    assert passwords.verify_password(entries["hub"], hub_of(site).broker.password)
    assert passwords.verify_password(entries["kiosk-01"], device_of(site, "kiosk-01").broker.password)
    assert stat.S_IMODE(site.password_file.stat().st_mode) == 0o600


def test_hub_config(site: Site) -> None:
    hub = hub_of(site)
    assert (hub.site_id, hub.client_id, hub.kind, hub.outbox) == ("test-site", "hub", "hub", None)
    assert hub.broker.host == "127.0.0.1"
    assert (hub.broker.port, hub.broker.tls) == (site.plain_loopback_port, False)
    assert (hub.broker.username, hub.broker.discover, hub.broker.ca_file) == ("hub", False, site.ca_file)
    assert len(hub.broker.password) >= 32
    assert stat.S_IMODE(site.hub_config.stat().st_mode) == 0o600


def test_device_config_of_a_loopback_site(site: Site) -> None:
    path = enroll_device(site, "kiosk-01", "kiosk")
    assert path == site.devices_dir / "kiosk-01.toml"
    device = ClientConfig.load(path)
    assert (device.site_id, device.client_id, device.kind) == ("test-site", "kiosk-01", "kiosk")
    assert (device.broker.host, device.broker.port, device.broker.tls) == ("127.0.0.1", site.plain_loopback_port,
                                                                           False)
    assert device.broker.username == "kiosk-01"
    assert device.outbox is not None and device.outbox.path == site.devices_dir / "kiosk-01.outbox.sqlite"
    assert device.broker.password != hub_of(site).broker.password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("hostnames", "expected_host"), [((), "museum-broker.local"),
                                                          (("hub.example.org", "10.0.0.5"), "hub.example.org")])
def test_device_config_of_a_production_site(make_site: Callable[..., Site], hostnames: tuple[str, ...],
                                            expected_host: str) -> None:
    site = make_site(site_id="museum", plain_loopback_port=None, hostnames=hostnames)
    device = ClientConfig.load(enroll_device(site, "qr-01", "qr_reader"))
    assert device.kind == "qr_reader"
    assert (device.broker.host, device.broker.port, device.broker.tls) == (expected_host, site.tls_port, True)
    assert (device.broker.ca_file, device.broker.discover) == (site.ca_file, True)
    assert device.outbox is not None and device.outbox.path == DEVICE_OUTBOX_PATH


def test_load_site_reads_what_init_wrote(make_site: Callable[..., Site]) -> None:
    site = make_site(hostnames=("hub.example.org",), max_queued_messages=50)
    enroll_device(site, "kiosk-01", "kiosk")
    assert load_site(site.root) == site
    assert enrolled_devices(site) == {"kiosk-01": "kiosk"}


def test_load_site_of_a_plain_directory_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="museum site init"):
        load_site(tmp_path)


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        init_site(tmp_path / "site", "test-site")
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["notes.txt"]


def test_init_accepts_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    assert init_site(tmp_path / "site", "test-site").site_file.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"site_id": "Test Site"}, "not an identifier"),
    ({"tls_port": 0}, "between 1 and 65535"),
    ({"tls_port": 9000, "plain_loopback_port": 9000}, "must differ"),
    ({"hostnames": ("bad name",)}, "whitespace"),
    ({"hostnames": ("musée.local",)}, "ASCII"),
    ({"max_queued_messages": 0}, "at least 1"),
])
def test_init_refuses_bad_settings(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    site_id = str(kwargs.pop("site_id", "test-site"))
    with pytest.raises(ValueError, match=message):
        init_site(tmp_path / "site", site_id, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "site").exists()


def test_a_failed_init_leaves_the_directory_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_certificate(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tls, "create_server_certificate", no_certificate)
    with pytest.raises(OSError, match="disk full"):
        init_site(tmp_path / "site", "test-site")
    assert list((tmp_path / "site").iterdir()) == []
    monkeypatch.undo()
    assert init_site(tmp_path / "site", "test-site").server_cert.exists()


# --- TLS material ----------------------------------------------------------------------------------------

def test_ca_and_server_certificate(make_site: Callable[..., Site]) -> None:
    site = make_site(hostnames=("hub.example.org", "10.1.2.3"))
    ca = x509.load_pem_x509_certificate(site.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(site.server_cert.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert 3650 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 3653
    assert 729 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 731
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", socket.gethostname(),
                                                            "test-site-broker.local", "hub.example.org"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a)
                                                              for a in ("127.0.0.1", "::1", "10.1.2.3")}
    for key in (site.ca_key, site.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


# --- enrollment errors -----------------------------------------------------------------------------------

def test_enrolling_twice_is_refused(site: Site) -> None:
    first = enroll_device(site, "kiosk-01", "kiosk")
    password = device_of(site, "kiosk-01").broker.password
    with pytest.raises(ValueError, match="already enrolled"):
        enroll_device(site, "kiosk-01", "gateway")
    assert first.exists() and device_of(site, "kiosk-01").broker.password == password
    assert enrolled_devices(site) == {"kiosk-01": "kiosk"}


@pytest.mark.parametrize("device_id", ["Kiosk-01", "-kiosk", "kiosk_01", "kiosk 01", "", "k" * 64])
def test_enrolling_a_bad_id_is_refused(site: Site, device_id: str) -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        enroll_device(site, device_id, "kiosk")
    assert list(passwords.read_password_file(site.password_file)) == ["hub", "publisher"]


def test_the_hub_name_cannot_be_enrolled(site: Site) -> None:
    hub_password = hub_of(site).broker.password
    with pytest.raises(ValueError, match="reserved for the hub"):
        enroll_device(site, "hub", "kiosk")
    assert passwords.verify_password(passwords.read_password_file(site.password_file)["hub"], hub_password)


def test_the_publisher_name_cannot_be_enrolled(site: Site) -> None:
    with pytest.raises(ValueError, match="reserved for the content publisher"):
        enroll_device(site, "publisher", "kiosk")
    assert site.publisher_config.exists()


def test_an_unknown_kind_is_refused(site: Site) -> None:
    with pytest.raises(ValueError, match="kiosk, gateway, qr_reader"):
        enroll_device(site, "screen-01", "screen")
    assert not site.device_config("screen-01").exists()


# --- against a real Mosquitto ----------------------------------------------------------------------------

def plain(site: Site) -> Endpoint:
    assert site.plain_loopback_port is not None
    return Endpoint("127.0.0.1", site.plain_loopback_port)


def test_device_with_its_credentials_connects(site: Site, broker: MosquittoProcess,
                                              connect: Callable[..., Client]) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    client = connect(device_of(site, "kiosk-01"))
    assert client.link.connected


@pytest.mark.parametrize("who", ["wrong password", "unknown user", "anonymous"])
def test_bad_credentials_are_refused(site: Site, broker: MosquittoProcess, who: str) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    credentials = {"wrong password": Credentials("kiosk-01", "not-the-password"),
                   "unknown user": Credentials("kiosk-99", "whatever"),
                   "anonymous": None}[who]
    reason = refused(plain(site), credentials)
    assert reason is not None and "authoriz" in reason.lower()


def test_a_device_cannot_take_over_another_devices_session(site: Site, broker: MosquittoProcess,
                                                           connect: Callable[..., Client]) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    enroll_device(site, "kiosk-02", "kiosk")
    acks = acks_topic(site.site_id, "kiosk-02")
    hub = connect(hub_of(site))
    victim = connect(device_of(site, "kiosk-02"), ((acks, 1),))
    connect(device_of(site, "kiosk-01"), client_id="kiosk-02")  # the broker makes its client id "kiosk-01"
    # A takeover would have closed the victim's connection before the impostor's CONNACK, so before this message
    # was published: were it taken over, the victim could only get it on a second connection.
    assert deliver(hub, acks, b"after the impostor", victim, [hub, victim])
    assert victim.link.connected and victim.link.connections == 1


def test_a_device_cannot_read_another_devices_acks(site: Site, broker: MosquittoProcess,
                                                   connect: Callable[..., Client]) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    enroll_device(site, "kiosk-02", "kiosk")
    own, other = acks_topic(site.site_id, "kiosk-01"), acks_topic(site.site_id, "kiosk-02")
    hub = connect(hub_of(site))
    snoop = connect(device_of(site, "kiosk-01"), ((own, 1), (other, 1)))
    owner = connect(device_of(site, "kiosk-02"), ((other, 1),))
    clients = [hub, snoop, owner]
    assert deliver(hub, own, b"sync", snoop, clients)
    assert deliver(hub, other, b"for kiosk-02 only", owner, clients)
    assert deliver(hub, own, b"after", snoop, clients)
    assert snoop.topics() == {own}


def test_a_device_cannot_publish_as_another_device(site: Site, broker: MosquittoProcess,
                                                   connect: Callable[..., Client]) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    enroll_device(site, "kiosk-02", "kiosk")
    own, other = events_topic(site.site_id, "kiosk-01"), events_topic(site.site_id, "kiosk-02")
    hub = connect(hub_of(site), ((all_devices(site.site_id, "events"), 1),))
    device = connect(device_of(site, "kiosk-01"))
    clients = [hub, device]
    assert deliver(device, own, b"sync", hub, clients)
    assert device.link.publish(other, b"forged")
    assert deliver(device, own, b"after", hub, clients)
    assert hub.topics() == {own}


def test_devices_read_the_content_the_hub_publishes(site: Site, broker: MosquittoProcess,
                                                    connect: Callable[..., Client]) -> None:
    enroll_device(site, "gw-01", "gateway")
    hub = connect(hub_of(site))
    assert hub.link.publish(content_topic(site.site_id), b'{"pack": 1}', retain=True)
    assert hub.link.flush(30.0)
    device = connect(device_of(site, "gw-01"), ((content_topic(site.site_id), 1),))
    assert pump([device], lambda: device.got(content_topic(site.site_id), b'{"pack": 1}'))


def test_tls_client_trusting_the_site_ca_connects(site: Site, broker: MosquittoProcess,
                                                  connect: Callable[..., Client]) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    client = connect(device_of(site, "kiosk-01"), endpoint=Endpoint("127.0.0.1", site.tls_port, site.ca_file))
    assert client.link.connected


def test_tls_client_trusting_another_ca_fails(site: Site, broker: MosquittoProcess, sites_base: Path) -> None:
    enroll_device(site, "kiosk-01", "kiosk")
    device = device_of(site, "kiosk-01")
    foreign = sites_base / f"foreign-{uuid.uuid4().hex}"
    tls.create_ca("elsewhere", foreign / "ca.crt", foreign / "ca.key")
    link = MqttLink("kiosk-01", Endpoint("127.0.0.1", site.tls_port, foreign / "ca.crt"),
                    Credentials("kiosk-01", device.broker.password))
    try:
        # The attempt's outcome, whenever it comes: a handshake that fails, never a connection.
        assert wait_until(lambda: link.wait_connected(0.05) or "CERTIFICATE_VERIFY_FAILED" in (link.last_error or ""),
                          30), link.last_error
        assert not link.connected and link.connections == 0
    finally:
        link.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "test-site-broker.local", socket.gethostname()])
def test_server_certificate_covers_the_names_of_the_broker(site: Site, broker: MosquittoProcess, name: str) -> None:
    context = ssl.create_default_context(cafile=site.ca_file)
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as wrapped:
        assert wrapped.version() in ("TLSv1.2", "TLSv1.3")


def test_server_certificate_does_not_cover_other_names(site: Site, broker: MosquittoProcess) -> None:
    context = ssl.create_default_context(cafile=site.ca_file)
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        context.wrap_socket(raw, server_hostname="other.example.org")


def test_enrolling_while_the_broker_runs_takes_effect_without_restart(site: Site, broker: MosquittoProcess,
                                                                      connect: Callable[..., Client]) -> None:
    hub = connect(hub_of(site), ((all_devices(site.site_id, "events"), 1),))
    enroll_device(site, "late-01", "kiosk")
    device_config = device_of(site, "late-01")
    # The broker reloads on SIGHUP asynchronously: allow it a moment, then it must accept the new device.
    assert wait_until(lambda: refused(plain(site), Credentials("late-01", device_config.broker.password),
                                      "late-01") is None, timeout=60.0)
    device = connect(device_config)
    assert deliver(device, events_topic(site.site_id, "late-01"), b"hello", hub, [hub, device])
    assert broker.alive and broker.pid == running_pid(site)
    if ROOT:  # the rewrite kept the files readable by the unprivileged broker
        owner = site.password_file.stat().st_uid
        assert owner != 0 and site.acl_file.stat().st_uid == owner


def test_queued_messages_survive_a_broker_restart(site: Site, make_broker: Callable[[Site], MosquittoProcess],
                                                  connect: Callable[..., Client]) -> None:
    first = make_broker(site)
    enroll_device(site, "kiosk-01", "kiosk")
    events = all_devices(site.site_id, "events")
    hub = connect(hub_of(site), ((events, 1),), clean_session=False)
    device = connect(device_of(site, "kiosk-01"))
    topic = events_topic(site.site_id, "kiosk-01")
    assert deliver(device, topic, b"sync", hub, [hub, device])
    hub.link.close()
    for n in range(3):
        assert device.link.publish(topic, f"queued-{n}".encode())
    assert device.link.flush(30.0)
    first.stop()
    make_broker(site)
    # Not through wait_connected(): the queued messages arrive with the CONNACK and poll() must return them.
    hub = connect(hub_of(site), ((events, 1),), clean_session=False, must_connect=False)
    expected = [f"queued-{n}".encode() for n in range(3)]
    assert pump([hub], lambda: [m.payload for m in hub.received] == expected)


# --- the process -----------------------------------------------------------------------------------------

def test_process_writes_and_removes_its_pid_file(site: Site) -> None:
    process = MosquittoProcess.start(site)
    try:
        process.wait_ready(60.0)
        assert int(site.pid_file.read_text()) == process.pid == running_pid(site)
        with pytest.raises(MosquittoError, match="already running"):
            MosquittoProcess.start(site)
    finally:
        process.kill()
    assert not process.alive and not site.pid_file.exists()
    assert running_pid(site) is None and not reload_running(site)


def test_a_stale_pid_file_is_not_signalled(site: Site) -> None:
    site.pid_file.write_text(f"{os.getpid()}\n")  # a live process, but not this site's broker
    assert running_pid(site) is None
    assert not reload_running(site)


def test_wait_ready_reports_a_port_in_use_with_the_log(site: Site) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", site.tls_port))
        squatter.listen()
        process = MosquittoProcess.start(site)
        try:
            # Mosquitto exits on the failed bind, which ends the wait at once: the bound is for a slow start.
            with pytest.raises(MosquittoError, match="Address already in use"):
                process.wait_ready(60.0)
        finally:
            process.kill()
    assert not site.pid_file.exists()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch, site: Site) -> None:
    import broker.mosquitto as module

    monkeypatch.setattr(module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(module, "_FALLBACK_BINARY", site.root / "no-such-mosquitto")
    with pytest.raises(MosquittoError, match="apt-get install mosquitto"):
        MosquittoProcess.start(site)


@pytest.mark.skipif(not ROOT, reason="privileges are only dropped when Mosquitto starts as root")
def test_as_root_the_broker_files_belong_to_the_mosquitto_user(site: Site, broker: MosquittoProcess) -> None:
    import pwd

    account = pwd.getpwnam("mosquitto")
    for path, mode in ((site.password_file, 0o600), (site.acl_file, 0o600), (site.server_key, 0o600),
                       (site.persistence_dir, 0o700), (site.log_file, 0o640)):
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.pw_uid, mode), path
    info = site.ca_key.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


@pytest.mark.skipif(not ROOT, reason="privileges are only dropped when Mosquitto starts as root")
def test_as_root_a_site_the_mosquitto_user_cannot_reach_is_refused(sites_base: Path) -> None:
    private = sites_base / f"private-{uuid.uuid4().hex}"
    private.mkdir(mode=0o700)
    site = init_site(private / "site", "test-site", tls_port=free_port(), bind="127.0.0.1")
    with pytest.raises(MosquittoError, match=f"cannot enter {private}"):
        MosquittoProcess.start(site)
    assert not site.pid_file.exists()


# --- the commands ----------------------------------------------------------------------------------------

def museum(*args: str) -> tuple[int, str]:
    import click

    group = click.Group(commands={command.name or "": command for command in COMMANDS})
    result = CliRunner().invoke(group, list(args))
    return result.exit_code, result.output


def test_cli_site_init_and_device_enroll(sites_base: Path) -> None:
    root = sites_base / f"cli-{uuid.uuid4().hex}" / "site"
    port = free_port()
    code, output = museum("site", "init", str(root), "--site-id", "cli-site", "--tls-port", str(port),
                          "--hostname", "hub.example.org", "--hostname", "10.0.0.5")
    assert code == 0, output
    site = load_site(root)
    assert (site.site_id, site.tls_port, site.bind, site.plain_loopback_port) == ("cli-site", port, "0.0.0.0", None)
    assert site.hostnames == ("hub.example.org", "10.0.0.5")

    code, output = museum("device", "enroll", "kiosk-01", "--kind", "kiosk", "--site", str(root))
    assert code == 0, output
    assert str(site.device_config("kiosk-01")) in output and "scp" in output
    assert device_of(site, "kiosk-01").broker.host == "hub.example.org"

    code, output = museum("device", "enroll", "kiosk-01", "--kind", "kiosk", "--site", str(root))
    assert code == 1 and "already enrolled" in output
    code, output = museum("site", "init", str(root), "--site-id", "cli-site")
    assert code == 1 and "not empty" in output


def test_cli_broker_run_stops_mosquitto_cleanly_on_sigterm(site: Site) -> None:
    command = [str(Path(sys.executable).parent / "museum"), "broker", "run", "--site", str(site.root),
               "--no-advertise"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    broker_pid: int | None = None
    try:
        assert wait_until(lambda: running_pid(site) is not None and refused(
            plain(site), Credentials("hub", hub_of(site).broker.password), "hub") is None, timeout=60.0)
        broker_pid = running_pid(site)
        cli.send_signal(signal.SIGTERM)
        output, _ = cli.communicate(timeout=60)
        assert cli.returncode == 0, output.decode()
        assert b"Mosquitto stopped." in output
        assert not site.pid_file.exists()
        assert broker_pid is not None and not Path(f"/proc/{broker_pid}").exists()
        assert b"terminating" in site.log_file.read_bytes()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        if broker_pid is not None and running_pid(site) == broker_pid:
            os.kill(broker_pid, signal.SIGKILL)


def test_cli_broker_run_advertises_the_broker_while_it_runs(make_site: Callable[..., Site]) -> None:
    from bus.discovery import discover_broker

    # A random site id: other runs on this host may be advertising on loopback at the same time.
    site = make_site(site_id=f"adv-{uuid.uuid4().hex[:8]}")
    command = [str(Path(sys.executable).parent / "museum"), "broker", "run", "--site", str(site.root),
               "--interface", "127.0.0.1"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        found = discover_broker(site.site_id, timeout=60.0, interfaces=["127.0.0.1"])
        assert found is not None and (found.port, found.tls) == (site.tls_port, True)
        cli.send_signal(signal.SIGINT)
        output, _ = cli.communicate(timeout=60)
        assert cli.returncode == 0, output.decode()
        assert b"Advertised" in output and not site.pid_file.exists()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        pid = running_pid(site)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
