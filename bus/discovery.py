"""Finding a site's MQTT broker on the museum network with zeroconf (mDNS / DNS-SD): the only module that imports
zeroconf.

The site server's `museum broker run` advertises one `_mqtt._tcp` service per site, named `museum-<site_id>`,
whose TXT record says which site it serves (`site`), whether the port speaks TLS (`tls`, "1" or "0") and which
topic scheme it uses (`v`). A device browses for `_mqtt._tcp`, keeps the first service of its own site, and
otherwise uses the broker in its config file (`resolve_broker`). Nothing from zeroconf leaves this module: callers
get `BrokerEndpoint`s and an `Advertisement` handle.

Every call makes its own short-lived `Zeroconf` instance, whose sockets and thread zeroconf owns. A device
therefore never answers from a cache filled before the broker moved, and no asyncio loop of ours is involved.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import ifaddr
from zeroconf import (
    DNSQuestionType,
    Error,
    InterfaceChoice,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from protocol.errors import ContractError
from protocol.fields import IDENTIFIER
from protocol.topics import VERSION

log = logging.getLogger(__name__)

SERVICE_TYPE = "_mqtt._tcp.local."
TXT_SITE = "site"
TXT_TLS = "tls"
TXT_VERSION = "v"
TOPIC_SCHEME = VERSION.removeprefix("v")

Source = Literal["zeroconf", "config"]

# DNS labels are at most 63 bytes. The instance and host names only need to be readable (devices match on the TXT
# `site`), so a long site id is cut rather than refused.
_LABEL_MAX = 63
# One slow or half-answered service must not hold up the others that are already complete in the cache; if it
# completes later the browser reports it again as updated.
_RESOLVE_WAIT_S = 1.0


class DiscoveryError(RuntimeError):
    """Zeroconf could not advertise or browse (name taken by another responder, event loop stuck, ...)."""


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    tls: bool
    site_id: str
    source: Source

    def __post_init__(self) -> None:
        _check_site(self.site_id)
        _check_port(self.port)
        if not self.host:
            raise ValueError("broker host may not be empty")
        if self.source not in ("zeroconf", "config"):
            raise ValueError(f"broker source {self.source!r} is neither 'zeroconf' nor 'config'")


class Advertisement:
    """A registered broker service; `close()` withdraws it (goodbye packets) and stops zeroconf."""

    def __init__(self, zc: Zeroconf, info: ServiceInfo, site_id: str, port: int, tls: bool,
                 addresses: tuple[str, ...]) -> None:
        self._zc = zc
        self._info = info
        self.site_id = site_id
        self.port = port
        self.tls = tls
        self.addresses = addresses
        self.service_name = info.name
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._zc.unregister_service(self._info)
        except Error as error:
            # Peers will then drop the service when its TTL runs out; closing must still release the sockets.
            log.warning("could not withdraw %s cleanly: %r", self.service_name, error)
        finally:
            self._zc.close()
        log.info("stopped advertising %s", self.service_name)

    def __enter__(self) -> Advertisement:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Advertisement({self.service_name!r}, port={self.port}, tls={self.tls}, {state})"


def advertise_broker(site_id: str, port: int, *, tls: bool, interfaces: list[str] | None = None,
                     host_address: str | None = None) -> Advertisement:
    """Advertise the site broker listening on `port` until the returned handle is closed.

    The service carries the machine's addresses: those of `interfaces` when given, else every non-loopback
    address, or only `host_address` when given. Raises DiscoveryError when another responder already holds the
    name (a second broker for the same site).
    """
    _check_site(site_id)
    _check_port(port)
    addresses = _advertised_addresses(interfaces, host_address)
    instance = f"museum-{site_id}"[:_LABEL_MAX]
    # The same name broker.tls puts in the server certificate, so `<site>-broker.local` resolves to this server.
    server = f"{site_id}-broker"[:_LABEL_MAX] + ".local."
    info = ServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=port, server=server,
                       properties={TXT_SITE: site_id, TXT_TLS: "1" if tls else "0", TXT_VERSION: TOPIC_SCHEME},
                       parsed_addresses=list(addresses))
    zc = _open(interfaces)
    try:
        zc.register_service(info)
    except NonUniqueNameException:
        zc.close()
        raise DiscoveryError(f"another responder on the network already advertises {instance!r}: is a second "
                             f"broker running for site {site_id!r}?") from None
    except Error as error:
        zc.close()
        raise DiscoveryError(f"could not advertise {instance!r}: {error!r}") from error
    except BaseException:
        zc.close()
        raise
    log.info("advertising %s on port %d (tls=%s) at %s", instance, port, tls, ", ".join(addresses))
    return Advertisement(zc, info, site_id, port, tls, addresses)


def discover_broker(site_id: str, *, timeout: float = 3.0,
                    interfaces: list[str] | None = None) -> BrokerEndpoint | None:
    """The first broker advertised for `site_id`, or None when none answers within `timeout` seconds.

    Services of other sites, services without our TXT keys and malformed records are skipped, never raised on.
    """
    _check_site(site_id)
    deadline = time.monotonic() + timeout
    names: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put(name)

    zc = _open(interfaces)
    browser: ServiceBrowser | None = None
    try:
        # zeroconf's first query would ask for a unicast reply (QU). When hub and device share a host (the demo,
        # the tests) several sockets are bound to 5353 and the kernel hands that reply to only one of them, often
        # not ours, so the answer would wait for the next query a second later. Multicast questions reach all.
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                name = names.get(timeout=remaining)
            except queue.Empty:
                break
            endpoint = _lookup(zc, site_id, name, deadline)
            if endpoint is not None:
                log.info("zeroconf: %s serves site %s at %s:%d (tls=%s)", name, site_id, endpoint.host,
                         endpoint.port, endpoint.tls)
                return endpoint
    except Error as error:
        raise DiscoveryError(f"zeroconf browsing failed: {error!r}") from error
    finally:
        if browser is not None:
            browser.cancel()
        zc.close()
    log.info("zeroconf: no broker for site %s answered within %.1f s", site_id, timeout)
    return None


def resolve_broker(site_id: str, configured: BrokerEndpoint, *, discover: bool, timeout: float = 3.0,
                   interfaces: list[str] | None = None) -> BrokerEndpoint:
    """The broker a device should connect to: one found by zeroconf when `discover`, else `configured`.

    A discovered broker whose TLS setting differs from the configured one is refused: anyone on the network can
    advertise, and following a plaintext advertisement would hand the device's password to whoever sent it.
    """
    if configured.site_id != site_id:
        raise ValueError(f"configured broker is for site {configured.site_id!r}, not {site_id!r}")
    target = f"{configured.host}:{configured.port}"
    if not discover:
        log.info("broker for site %s: %s from the configuration (discovery is off)", site_id, target)
        return configured
    try:
        found = discover_broker(site_id, timeout=timeout, interfaces=interfaces)
    except (OSError, DiscoveryError) as error:
        log.warning("broker for site %s: %s from the configuration, zeroconf failed: %s", site_id, target, error)
        return configured
    if found is None:
        log.info("broker for site %s: %s from the configuration, nothing found by zeroconf within %.1f s",
                 site_id, target, timeout)
        return configured
    if found.tls != configured.tls:
        log.warning("broker for site %s: %s from the configuration; ignoring %s:%d found by zeroconf because it "
                    "advertises tls=%s but the configuration says tls=%s", site_id, target, found.host, found.port,
                    found.tls, configured.tls)
        return configured
    log.info("broker for site %s: %s:%d found by zeroconf (configured fallback %s)", site_id, found.host,
             found.port, target)
    return found


def parse_service(site_id: str, txt: Mapping[bytes, bytes | None], port: int | None,
                  addresses: Sequence[str]) -> BrokerEndpoint | None:
    """The endpoint a resolved `_mqtt._tcp` service offers `site_id`, or None when it is not ours or malformed.

    This is the boundary where network data becomes our type, so it checks everything and raises nothing.
    """
    try:
        values = {key.decode("ascii").lower(): None if value is None else value.decode("utf-8")
                  for key, value in txt.items()}
    except UnicodeDecodeError:
        log.debug("skipping a service whose TXT record is not text")
        return None
    if values.get(TXT_SITE) != site_id:
        return None
    version, tls = values.get(TXT_VERSION), values.get(TXT_TLS)
    if version != TOPIC_SCHEME:
        log.info("skipping a broker of site %s that speaks topic scheme %r, not %r", site_id, version, TOPIC_SCHEME)
        return None
    if tls not in ("0", "1"):
        log.debug("skipping a broker of site %s with tls=%r", site_id, tls)
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        log.debug("skipping a broker of site %s with port %r", site_id, port)
        return None
    ranked = _rank_addresses(addresses)
    if not ranked:
        log.debug("skipping a broker of site %s without a usable address in %r", site_id, list(addresses))
        return None
    return BrokerEndpoint(host=ranked[0], port=port, tls=tls == "1", site_id=site_id, source="zeroconf")


def _lookup(zc: Zeroconf, site_id: str, name: str, deadline: float) -> BrokerEndpoint | None:
    wait_ms = max(1, int(min(_RESOLVE_WAIT_S, deadline - time.monotonic()) * 1000))
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=wait_ms, question_type=DNSQuestionType.QM)
        if info is None:
            log.debug("no complete answer for %s yet", name)
            return None
        return parse_service(site_id, info.properties, info.port, info.parsed_scoped_addresses())
    except Exception as error:
        # Whatever a stranger on the network sends, a device must go on looking and then fall back to its config.
        log.debug("skipping %s: %r", name, error)
        return None


def _rank_addresses(addresses: Sequence[str]) -> list[str]:
    """Usable addresses, best first: IPv4 on a network this machine is on, other IPv4, then IPv6.

    A hub often has addresses a device cannot reach (a container bridge, a second VLAN), and a device on the
    museum network shares a subnet with the one it can.
    """
    local = _local_ipv4_networks()
    ranked: list[tuple[int, int, str]] = []
    for position, text in enumerate(addresses):
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if address.is_unspecified or address.is_multicast:
            continue
        if isinstance(address, ipaddress.IPv4Address):
            rank = 0 if any(address in network for network in local) else 1
        else:
            rank = 2
        ranked.append((rank, position, text))
    return [text for _, _, text in sorted(ranked)]


def _local_ipv4_networks() -> list[ipaddress.IPv4Network]:
    networks = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str):
                networks.append(ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False))
    return networks


def _advertised_addresses(interfaces: list[str] | None, host_address: str | None) -> tuple[str, ...]:
    if host_address is not None:
        return (_parse_address(host_address, "host_address"),)
    if interfaces is not None:
        return tuple(_parse_address(text, "interface") for text in interfaces)
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text)
            # Loopback is useless to other machines; IPv6 link-local needs a scope only the sender knows.
            if address.is_loopback or (address.version == 6 and address.is_link_local):
                continue
            found.append(str(address))
    if not found:
        raise DiscoveryError("this machine has no network address to advertise (only loopback)")
    # IPv4 first: devices prefer it, and the order is what they see.
    return tuple(sorted(dict.fromkeys(found), key=lambda text: ":" in text))


def _open(interfaces: list[str] | None) -> Zeroconf:
    if interfaces is None:
        return Zeroconf(interfaces=InterfaceChoice.All)
    if not interfaces:
        raise ValueError("interfaces must name at least one address, or be None for all interfaces")
    return Zeroconf(interfaces=[_parse_address(text, "interface") for text in interfaces])


def _parse_address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IP address") from None


def _check_site(site_id: str) -> None:
    if not isinstance(site_id, str) or IDENTIFIER.match(site_id) is None:
        raise ContractError("invalid_field", f"site_id {site_id!r} is not an identifier "
                            "(lowercase letters, digits and '-', at most 63)")


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
