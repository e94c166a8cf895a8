"""The site directory: everything one museum's broker and hub need, created once by `museum site init`.

    <root>/
      site.toml              site settings and the list of enrolled devices (the source the ACL is built from)
      hub.toml               the hub's MQTT client configuration (holds its password: 0600)
      publisher.toml         the MQTT account `museum content publish` announces packs with (0600; its own
                             account, because the broker's client id is the username and the hub's would be
                             taken over)
      operator.toml          the MQTT account `museum device command` sends commands with (0600; made on its first
                             use; its own account for the same reason, allowed to write the devices' commands
                             topics and nothing else)
      operator.lock          taken by `museum device command` while it is connected to the broker
      screenshots/<device>/<command_id>.png   screenshots devices sent, the newest few per device (the hub)
      content/packs/<pack_id>-<version>.tar   published content packs, the newest few (`museum content serve`)
      hub/                   the hub's data (its SQLite store)
      devices/<id>.toml      one client configuration per enrolled device, to copy onto it (0600)
      tls/ca.crt, ca.key     the site CA: every client trusts this certificate and nothing else
      tls/server.crt, .key   the broker's certificate, signed by the site CA
      mosquitto/mosquitto.conf, passwd, acl, mosquitto.log (+ .1 … rotated), mosquitto.pid, data/ (persistence)
      site.lock              taken by `museum device enroll` around its read-modify-write of site.toml, passwd, acl
      hub/hub.lock           held by the running `museum hub run`, so a second hub for the site is refused
"""

from __future__ import annotations

import os
import secrets
import shutil
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from broker import passwords, tls
from broker.locks import exclusive_lock
from broker.mosquitto import reload_running
from bus.config import BrokerSettings, ClientConfig, OutboxSettings
from protocol.codec import MAX_MESSAGE_BYTES
from protocol.events import DEVICE_KINDS
from protocol.fields import IDENTIFIER
from protocol.topics import (
    acks_topic,
    all_devices,
    commands_topic,
    content_topic,
    events_topic,
    screenshots_topic,
    sightings_topic,
    status_topic,
)

HUB_USERNAME = "hub"
PUBLISHER_USERNAME = "publisher"
OPERATOR_USERNAME = "operator"
RESERVED_USERNAMES = (HUB_USERNAME, PUBLISHER_USERNAME, OPERATOR_USERNAME)
DEFAULT_CONTENT_PORT = 8443
DEFAULT_MAX_QUEUED_MESSAGES = 10_000
DEFAULT_AUTOSAVE_INTERVAL = 10
MAX_QUEUED_BYTES = 128 * 1024 * 1024
MAX_INFLIGHT_MESSAGES = 100
MAX_PACKET_SIZE = 2 * MAX_MESSAGE_BYTES
DEVICE_OUTBOX_PATH = Path("/var/lib/museum/outbox.sqlite")
SITE_FILE = "site.toml"


@dataclass(frozen=True)
class SiteLayout:
    """Where each file of a site directory lives: the one definition every command, the demo, the benchmark
    and the tests use. Needs nothing but the directory, so it can name files before they exist."""

    root: Path

    @property
    def site_file(self) -> Path:
        return self.root / SITE_FILE

    @property
    def lock_file(self) -> Path:
        """Serialises the commands that rewrite site.toml, passwd and acl (read, modify, write)."""
        return self.root / "site.lock"

    @property
    def mosquitto_dir(self) -> Path:
        return self.root / "mosquitto"

    @property
    def mosquitto_conf(self) -> Path:
        return self.mosquitto_dir / "mosquitto.conf"

    @property
    def password_file(self) -> Path:
        return self.mosquitto_dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.mosquitto_dir / "acl"

    @property
    def persistence_dir(self) -> Path:
        return self.mosquitto_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.mosquitto_dir / "mosquitto.log"

    @property
    def pid_file(self) -> Path:
        return self.mosquitto_dir / "mosquitto.pid"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.tls_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.tls_dir / "server.key"

    @property
    def hub_config(self) -> Path:
        return self.root / "hub.toml"

    @property
    def publisher_config(self) -> Path:
        return self.root / "publisher.toml"

    @property
    def operator_config(self) -> Path:
        return self.root / "operator.toml"

    @property
    def operator_lock_file(self) -> Path:
        """Held by `museum device command` while it is connected: two connections of the one operator account
        would take the session from each other."""
        return self.root / "operator.lock"

    @property
    def screenshots_dir(self) -> Path:
        """Where the hub writes the screenshots devices send: `<device_id>/<command_id>.png`, bounded."""
        return self.root / "screenshots"

    def screenshot_file(self, device_id: str, command_id: str) -> Path:
        return self.screenshots_dir / device_id / f"{command_id}.png"

    @property
    def packs_dir(self) -> Path:
        """The only folder `museum content serve` serves from."""
        return self.root / "content" / "packs"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    @property
    def hub_data_dir(self) -> Path:
        return self.root / "hub"

    @property
    def hub_database(self) -> Path:
        return self.hub_data_dir / "hub.sqlite"

    @property
    def hub_lock_file(self) -> Path:
        """Held by the running hub: two hubs on one account would take the session from each other."""
        return self.hub_data_dir / "hub.lock"

    @property
    def hub_stats_file(self) -> Path:
        """Live figures the hub rewrites every second, for watchers that must not open its database."""
        return self.hub_data_dir / "stats.json"

    def device_config(self, device_id: str) -> Path:
        return self.devices_dir / f"{device_id}.toml"


@dataclass(frozen=True)
class Site(SiteLayout):
    """A site directory with its settings (`site.toml`)."""

    site_id: str
    tls_port: int
    bind: str
    plain_loopback_port: int | None
    hostnames: tuple[str, ...] = ()
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES
    autosave_interval: int = DEFAULT_AUTOSAVE_INTERVAL
    content_port: int = DEFAULT_CONTENT_PORT

    @property
    def broker_host(self) -> str:
        """The name devices use for the broker when discovery finds nothing."""
        return self.hostnames[0] if self.hostnames else tls.broker_hostname(self.site_id)


# --- creating and loading --------------------------------------------------------------------------------

def init_site(root: Path, site_id: str, *, tls_port: int = 8883, bind: str = "0.0.0.0",
              plain_loopback_port: int | None = None, hostnames: Iterable[str] = (),
              max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
              autosave_interval: int = DEFAULT_AUTOSAVE_INTERVAL,
              content_port: int = DEFAULT_CONTENT_PORT) -> Site:
    """Create a new site directory: settings, TLS material, Mosquitto configuration and the hub's credentials."""
    root = Path(root).absolute()
    site = Site(root=root, site_id=site_id, tls_port=tls_port, bind=bind, plain_loopback_port=plain_loopback_port,
                hostnames=tuple(hostnames), max_queued_messages=max_queued_messages,
                autosave_interval=autosave_interval, content_port=content_port)
    _check_settings(site)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not empty; a site directory is created once, "
                              "into a new or empty directory (load an existing one instead of re-initialising it)")
    root.mkdir(parents=True, exist_ok=True)
    try:
        _populate(site)
    except BaseException:
        # Leave the directory as it was (empty), so the same command can simply be run again once corrected.
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        raise
    return site


def _populate(site: Site) -> None:
    # The keys in tls/ protect themselves (0600); the directory stays open so Mosquitto, once it has dropped
    # privileges, can reach its own certificate and key. devices/ holds every device's password.
    for directory, mode in ((site.tls_dir, 0o755), (site.devices_dir, 0o700), (site.hub_data_dir, 0o700),
                            (site.mosquitto_dir, 0o755), (site.persistence_dir, 0o700)):
        directory.mkdir(mode=mode, exist_ok=True)
        os.chmod(directory, mode)

    tls.create_ca(site.site_id, site.ca_file, site.ca_key)
    tls.create_server_certificate(site.site_id, site.ca_file, site.ca_key, site.server_cert, site.server_key,
                                  site.hostnames)
    _write_site_file(site, {})
    site.mosquitto_conf.write_text(mosquitto_config(site), encoding="utf-8")

    hub_password = secrets.token_urlsafe(24)
    passwords.write_password_file(site.password_file, {HUB_USERNAME: passwords.hash_password(hub_password)})
    write_acl(site)
    _client_config(site, HUB_USERNAME, hub_password).save(site.hub_config)
    _create_publisher(site)


def _client_config(site: Site, username: str, password: str) -> ClientConfig:
    """An MQTT client configuration for a program running beside the broker (the hub, the publisher)."""
    loopback = site.plain_loopback_port is not None
    # Loopback, unless the TLS listener is bound to one address only.
    host = "127.0.0.1" if loopback or site.bind in ("0.0.0.0", "::", "127.0.0.1") else site.bind
    port = site.tls_port if site.plain_loopback_port is None else site.plain_loopback_port
    return ClientConfig(site_id=site.site_id, client_id=username, kind="hub",
                        broker=BrokerSettings(host=host, port=port, username=username, password=password,
                                              tls=not loopback, ca_file=site.ca_file, discover=False))


def _create_publisher(site: Site) -> None:
    password = secrets.token_urlsafe(24)
    _client_config(site, PUBLISHER_USERNAME, password).save(site.publisher_config)
    passwords.set_password(site.password_file, PUBLISHER_USERNAME, password)


def ensure_publisher(site: Site) -> bool:
    """Give a site made before the publisher account existed its account, ACL and configuration (under the site
    lock, with a reload of a running broker). True if it was created now."""
    with exclusive_lock(site.lock_file):
        if site.publisher_config.exists():
            return False
        _create_publisher(site)
        write_acl(site)
        reload_running(site)
        return True


def _create_operator(site: Site) -> None:
    password = secrets.token_urlsafe(24)
    _client_config(site, OPERATOR_USERNAME, password).save(site.operator_config)
    passwords.set_password(site.password_file, OPERATOR_USERNAME, password)


def ensure_operator(site: Site) -> bool:
    """Make sure the operator account `museum device command` uses exists (it is made on first use) and that the
    ACL has this version's rules (a site made by an older version lacks the screenshot rules), with a reload of a
    running broker when anything changed. Under the site lock. True if anything changed (the broker may then
    refuse the new account for the moment it takes to reload)."""
    with exclusive_lock(site.lock_file):
        created = False
        if not site.operator_config.exists():
            if OPERATOR_USERNAME in enrolled_devices(site):
                raise ValueError(f"a device named {OPERATOR_USERNAME!r} is enrolled at site {site.site_id!r}: that "
                                 "name is now the account `museum device command` uses; enroll the device anew "
                                 "under another name and remove it from [devices] in site.toml")
            _create_operator(site)
            created = True
        changed = _refresh_acl_locked(site)
        if created and not changed:
            reload_running(site)  # the new password must be read even though the ACL was already current
        return created or changed


def refresh_acl(site: Site) -> bool:
    """Rewrite the ACL if it differs from what this version generates for the site (a site made by an older
    version: e.g. without the screenshot rules), and make a running broker reload it. True if it was rewritten."""
    with exclusive_lock(site.lock_file):
        return _refresh_acl_locked(site)


def _refresh_acl_locked(site: Site) -> bool:
    wanted = acl_text(site.site_id, enrolled_devices(site))
    try:
        if site.acl_file.read_text(encoding="utf-8") == wanted:
            return False
    except FileNotFoundError:
        pass
    write_acl(site)
    reload_running(site)
    return True


def load_site(root: Path) -> Site:
    """The site whose directory is `root` (as written by `init_site`)."""
    root = Path(root).absolute()
    data = _read_site_file(root)
    path = root / SITE_FILE
    try:
        hostnames = _setting(data, "hostnames", list, [])
        if not all(isinstance(name, str) for name in hostnames):
            raise ValueError(f"hostnames must be a list of strings, not {hostnames!r}")
        loopback = _setting(data, "plain_loopback_port", int, None)
        site = Site(root=root, site_id=_setting(data, "site_id", str), tls_port=_setting(data, "tls_port", int),
                    bind=_setting(data, "bind", str), plain_loopback_port=loopback, hostnames=tuple(hostnames),
                    max_queued_messages=_setting(data, "max_queued_messages", int, DEFAULT_MAX_QUEUED_MESSAGES),
                    autosave_interval=_setting(data, "autosave_interval", int, DEFAULT_AUTOSAVE_INTERVAL),
                    content_port=_setting(data, "content_port", int, DEFAULT_CONTENT_PORT))
        _check_settings(site)
    except KeyError as missing:
        raise ValueError(f"{path}: missing setting {missing}; add it, or compare with a new site made by "
                         "`museum site init`") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}; correct the setting (see docs/broker.md)") from None
    return site


_REQUIRED: Any = object()


def _setting(data: Mapping[str, Any], key: str, kind: type, default: Any = _REQUIRED) -> Any:
    if key not in data:
        if default is _REQUIRED:
            raise KeyError(key)
        return default
    value = data[key]
    # bool is an int to Python, never a port or a count to us.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = {int: "an integer", str: "a string", list: "a list"}.get(kind, kind.__name__)
        raise ValueError(f"{key} must be {wanted}, not {value!r}")
    return value


def enrolled_devices(site: Site) -> dict[str, str]:
    """device_id → kind of every device enrolled at the site."""
    return dict(_read_site_file(site.root).get("devices", {}))


def enroll_device(site: Site, device_id: str, kind: str) -> Path:
    """Give a new device credentials and its ACL; returns the path of the client configuration to copy onto it.

    A running broker is told to reload (SIGHUP), so the device can connect at once without a restart.
    """
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device kind {kind!r} is unknown; it must be one of {', '.join(DEVICE_KINDS)}")
    if not isinstance(device_id, str) or IDENTIFIER.match(device_id) is None:
        raise ValueError(f"device id {device_id!r} is not an identifier (lowercase letters, digits and '-', "
                         "at most 63, not starting with '-')")
    if device_id in RESERVED_USERNAMES:
        owner = {HUB_USERNAME: "hub", PUBLISHER_USERNAME: "content publisher",
                 OPERATOR_USERNAME: "command sender (`museum device command`)"}[device_id]
        raise ValueError(f"device id {device_id!r} is reserved for the {owner}'s own MQTT account")
    # Two enrollments at once would each read the same site.toml and passwd and write back their own version,
    # and one device would vanish from them: the lock makes each read-modify-write whole.
    with exclusive_lock(site.lock_file):
        return _enroll_locked(site, device_id, kind)


def _enroll_locked(site: Site, device_id: str, kind: str) -> Path:
    devices = enrolled_devices(site)
    if device_id in devices:
        raise ValueError(f"device {device_id!r} is already enrolled at site {site.site_id!r} "
                         f"(as a {devices[device_id]}); pick another id")

    password = secrets.token_urlsafe(24)
    loopback = site.plain_loopback_port is not None
    if loopback:
        # A demo or test site: the device runs on this machine and uses the plain loopback listener.
        broker = BrokerSettings(host="127.0.0.1", port=site.plain_loopback_port or 0, username=device_id,
                                password=password, tls=False, ca_file=site.ca_file, discover=False)
        outbox = OutboxSettings(site.devices_dir / f"{device_id}.outbox.sqlite")
    else:
        broker = BrokerSettings(host=site.broker_host, port=site.tls_port, username=device_id, password=password,
                                tls=True, ca_file=site.ca_file, discover=True)
        outbox = OutboxSettings(DEVICE_OUTBOX_PATH)
    config = ClientConfig(site_id=site.site_id, client_id=device_id, kind=kind, broker=broker, outbox=outbox)
    path = site.device_config(device_id)
    config.save(path)

    passwords.set_password(site.password_file, device_id, password)
    _write_site_file(site, {**devices, device_id: kind})
    write_acl(site)
    reload_running(site)
    return path


# --- the broker's certificate ----------------------------------------------------------------------------

def renew_server_certificate(site: Site) -> datetime:
    """Issue the broker a new certificate from the site CA (same names); returns when it expires. Devices trust
    the CA, not the certificate, so they need nothing. A running broker reloads it on SIGHUP (Mosquitto 2.0
    re-reads its certificates then), and connected clients stay connected."""
    with exclusive_lock(site.lock_file):
        tls.create_server_certificate(site.site_id, site.ca_file, site.ca_key, site.server_cert, site.server_key,
                                      site.hostnames)
        reload_running(site)
    return tls.expires_at(site.server_cert)


def certificate_warnings(site: Site, now: datetime | None = None) -> list[str]:
    """One line per certificate of the site that has expired or is about to: the broker's within
    `tls.EXPIRY_WARNING`, the CA's within `tls.CA_EXPIRY_WARNING` (replacing it means visiting every device)."""
    found = [
        tls.expiry_warning("the broker's certificate", site.server_cert,
                           f"run `museum site renew-certificate --site {site.root}`", now),
        tls.expiry_warning("the site CA", site.ca_file,
                           "every device must be given a new site CA before then (see 'When the site CA "
                           "expires' in docs/broker.md)", now, within=tls.CA_EXPIRY_WARNING),
    ]
    return [line for line in found if line is not None]


# --- generated files -------------------------------------------------------------------------------------

GATEWAY_KIND = "gateway"
"""The BLE stations: the only devices that share what they hear (their sightings) with each other."""


def acl_text(site_id: str, devices: Mapping[str, str]) -> str:
    """The whole ACL: the hub's rights, then one block per device (device_id → kind, as `enrolled_devices` gives)
    confined to its own topics; a station (kind gateway) also publishes its sightings and reads the others'."""
    lines = [
        "# Generated by `museum site init` / `museum device enroll`; rewritten as a whole on every enrollment,",
        "# so edit the site (site.toml), not this file. Lines before the first `user` would apply to anonymous",
        "# clients: there are none, and anonymous clients are refused anyway.",
        "",
        "# The hub reads every device's events, status and screenshots, answers with acks and commands, owns the",
        "# content.",
        f"user {HUB_USERNAME}",
        f"topic read {all_devices(site_id, 'events')}",
        f"topic read {all_devices(site_id, 'status')}",
        f"topic read {all_devices(site_id, 'screenshots')}",
        f"topic write {all_devices(site_id, 'acks')}",
        f"topic write {all_devices(site_id, 'commands')}",
        f"topic readwrite {content_topic(site_id)}",
        "",
        "# `museum content publish` announces content packs, and only that.",
        f"user {PUBLISHER_USERNAME}",
        f"topic readwrite {content_topic(site_id)}",
        "",
        "# `museum device command` sends commands to devices, and only that (their answers reach the hub).",
        f"user {OPERATOR_USERNAME}",
        f"topic write {all_devices(site_id, 'commands')}",
    ]
    for device_id in sorted(devices):
        lines += [
            "",
            f"user {device_id}",
            f"topic write {events_topic(site_id, device_id)}",
            # readwrite: the device publishes its retained status and sees it back, to know it stuck.
            f"topic readwrite {status_topic(site_id, device_id)}",
            f"topic read {commands_topic(site_id, device_id)}",
            f"topic read {acks_topic(site_id, device_id)}",
            f"topic write {screenshots_topic(site_id, device_id)}",
            f"topic read {content_topic(site_id)}",
        ]
        if devices[device_id] == GATEWAY_KIND:
            # Stations combine their views of a tag (which station hears it best); no other kind may publish or
            # read sightings, so a kiosk's compromised account learns nothing of where tags are.
            lines += [f"topic write {sightings_topic(site_id, device_id)}",
                      f"topic read {all_devices(site_id, 'sightings')}"]
    return "\n".join(lines) + "\n"


def write_acl(site: Site) -> None:
    passwords.replace_file(site.acl_file, acl_text(site.site_id, enrolled_devices(site)), mode=0o600)


def mosquitto_config(site: Site) -> str:
    """The broker's configuration, every setting with the reason it is set."""
    text = f"""\
# Mosquitto configuration of museum site {site.site_id!r}, generated by `museum site init`.
# Regenerate rather than edit: the site directory is the source of truth.

# One set of authentication and ACL rules for every listener, so the loopback listener (when there is one)
# is exactly as strict as the network one. With this false, the auth settings below are global.
per_listener_settings false
# Every client has an account: devices and the hub alike. Nobody may connect without one.
allow_anonymous false
password_file {site.password_file}
acl_file {site.acl_file}

# The hub's persistent session (its queue of device events) must survive a broker restart.
persistence true
persistence_location {site.persistence_dir}
# Mosquitto writes its database only at shutdown or every autosave_interval seconds, so a kill -9 or power
# cut loses what the hub's session queued since the last save. Keep the window short; devices resend
# anything the hub has not acknowledged, so a lost window is a delay, not a loss.
autosave_interval {site.autosave_interval}

# The broker's queue is a buffer, not storage: the devices' outboxes are the storage, and each device keeps
# only a bounded window of messages in flight until the hub acknowledges them. These bounds keep a hub that is
# down for hours from filling the broker's memory; anything dropped here is still in an outbox and resent.
max_queued_messages {site.max_queued_messages}
max_queued_bytes {MAX_QUEUED_BYTES}
max_inflight_messages {MAX_INFLIGHT_MESSAGES}
# The largest payload the contract allows (protocol.codec.MAX_MESSAGE_BYTES). Mosquitto 2.0 drops a larger
# PUBLISH silently (a QoS 1 one is still PUBACKed, nothing is logged at our log levels) and keeps the client
# connected: no device running our client ever sends one (it sends at most DeliveryTuning.batch_max_bytes), so
# only a broken or hostile sender loses anything, and the hub never has to hold such a message in memory.
message_size_limit {MAX_MESSAGE_BYTES}
# Any packet larger than this (twice the payload limit: room for the topic and headers) makes the broker drop the
# connection, so one client cannot make it buffer an arbitrary packet.
max_packet_size {MAX_PACKET_SIZE}
# Send each packet at once. With Nagle's algorithm a small acknowledgement waits for the peer's delayed ACK,
# which put ~100 ms on every event's round trip in our benchmark.
set_tcp_nodelay true

log_dest file {site.log_file}
log_type error
log_type warning
log_type notice
log_type information
# Connections and refusals are what staff need to see when a device does not show up.
connection_messages true
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S

# The network listener: TLS only. Clients verify this certificate against the site CA.
listener {site.tls_port} {site.bind}
cafile {site.ca_file}
certfile {site.server_cert}
keyfile {site.server_key}
tls_version tlsv1.2
# The client id is the username, so a device cannot take over (disconnect) another device's session.
use_username_as_clientid true
"""
    if site.plain_loopback_port is not None:
        text += f"""
# Plain MQTT on the loopback interface only, for the demo and the tests, where every client runs on this
# machine. Never on a production site: reachable only from this host, but unencrypted.
listener {site.plain_loopback_port} 127.0.0.1
use_username_as_clientid true
"""
    return text


# --- site.toml -------------------------------------------------------------------------------------------

def _write_site_file(site: Site, devices: Mapping[str, str]) -> None:
    data: dict[str, Any] = {"site_id": site.site_id, "tls_port": site.tls_port, "bind": site.bind}
    if site.plain_loopback_port is not None:
        data["plain_loopback_port"] = site.plain_loopback_port
    data |= {"hostnames": list(site.hostnames), "max_queued_messages": site.max_queued_messages,
             "autosave_interval": site.autosave_interval, "content_port": site.content_port,
             "devices": dict(sorted(devices.items()))}
    header = ("# Site settings, written by `museum site init`; `museum device enroll` adds to [devices].\n"
              "# The Mosquitto configuration, passwd and ACL are generated from this file.\n")
    passwords.replace_file(site.site_file, header + tomli_w.dumps(data), mode=0o644)


def _read_site_file(root: Path) -> dict[str, Any]:
    path = root / SITE_FILE
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} is not a site directory (no {SITE_FILE}); give the directory made by "
                                "`museum site init`, or create one with it") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"{root} is not a directory; give the site directory made by "
                                "`museum site init`") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML ({error}); correct the file") from None


def _check_settings(site: Site) -> None:
    if IDENTIFIER.match(site.site_id) is None:
        raise ValueError(f"site id {site.site_id!r} is not an identifier (lowercase letters, digits and '-', "
                         "at most 63)")
    ports = [site.tls_port] + ([site.plain_loopback_port] if site.plain_loopback_port is not None else [])
    if not 1 <= site.content_port <= 65535 or site.content_port in ports:
        raise ValueError(f"content_port {site.content_port} must be between 1 and 65535 and differ from the "
                         "broker's ports")
    for port in ports:
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
    if len(set(ports)) != len(ports):
        raise ValueError(f"the TLS port and the plain loopback port must differ (both {site.tls_port})")
    # Mosquitto's configuration splits values on whitespace: a path or name with a space cannot be written.
    for value in (str(site.root), site.bind, *site.hostnames):
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} cannot contain whitespace (Mosquitto's configuration cannot express it)")
    for name in site.hostnames:
        if not name.isascii():
            raise ValueError(f"host name {name!r} must be ASCII (write an internationalised name as xn--…)")
    if site.max_queued_messages < 1:
        raise ValueError("max_queued_messages must be at least 1 (0 would mean an unbounded queue)")
    if site.autosave_interval < 1:
        raise ValueError("autosave_interval must be at least 1 second (0 would save only at shutdown)")
