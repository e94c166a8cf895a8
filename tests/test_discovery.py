"""Broker discovery over real mDNS, confined to the loopback interface.

Every zeroconf instance here is bound to 127.0.0.1 so nothing is multicast on the machine's real network. Site
ids are random so that other test runs on this host, advertising on loopback at the same time, cannot interfere.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from bus.discovery import (
    SERVICE_TYPE,
    Advertisement,
    BrokerEndpoint,
    advertise_broker,
    discover_broker,
    parse_service,
    resolve_broker,
)
from protocol.errors import ContractError

LOOPBACK = ["127.0.0.1"]


def new_site() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def advertised() -> Iterator[Advertisement]:
    with advertise_broker(new_site(), 18883, tls=True, interfaces=LOOPBACK) as advertisement:
        yield advertisement


def configured(site_id: str, tls: bool = True) -> BrokerEndpoint:
    return BrokerEndpoint(host="museum-hub.local", port=8883, tls=tls, site_id=site_id, source="config")


# First in the file, so that it runs before the module's advertisement exists.
def test_nothing_advertised_returns_none_within_the_timeout() -> None:
    started = time.monotonic()
    assert discover_broker(new_site(), timeout=1.0, interfaces=LOOPBACK) is None
    elapsed = time.monotonic() - started
    # The lower bound is the browse's monotonic deadline, which no machine's speed can shorten. The upper one
    # allows the timeout again for opening and closing zeroconf (about 1 ms here, idle or beside a CPU-heavy
    # load): it still fails a browse that outlives its timeout by a resolve wait (1 s) or a second timeout.
    assert 0.9 <= elapsed < 2 * 1.0


def test_advertised_broker_is_discovered_with_its_port_and_tls(advertised: Advertisement) -> None:
    # A responder multicasts a record at most once a second (RFC 6762 §6), and the announcements have just gone
    # out; after that pause the answer to our first question is immediate. The pause starts at a known point:
    # zeroconf's register_service returns once its last announcement is sent, so a slower machine only lengthens it.
    time.sleep(1.1)
    started = time.monotonic()
    found = discover_broker(advertised.site_id, timeout=3.0, interfaces=LOOPBACK)
    elapsed = time.monotonic() - started
    assert found == BrokerEndpoint(host="127.0.0.1", port=18883, tls=True, site_id=advertised.site_id,
                                   source="zeroconf")
    assert advertised.service_name == f"museum-{advertised.site_id}.{SERVICE_TYPE}"
    assert advertised.addresses == ("127.0.0.1",)
    # Were the first question unicast-response (QU), its reply would go astray on a shared host and the answer
    # would only come to the second question. zeroconf's browser asks first 20-120 ms after it starts and again
    # 1 s after that, and a shared record's answer is delayed 20-120 ms more: the answer to the first question
    # comes in well under 0.3 s here, even beside a CPU-heavy load, the answer to the second one never before
    # 1.04 s. The bound is the instant before which only the first question can have been answered.
    assert elapsed < 1.0


def test_another_sites_broker_is_ignored(advertised: Advertisement) -> None:
    ours = new_site()
    with advertise_broker(ours, 1884, tls=False, interfaces=LOOPBACK):
        # The module's broker (another site, already advertised) is browsed too and must be passed over.
        found = discover_broker(ours, timeout=30.0, interfaces=LOOPBACK)
        assert found == BrokerEndpoint(host="127.0.0.1", port=1884, tls=False, site_id=ours, source="zeroconf")


def test_resolve_prefers_zeroconf_and_says_so(advertised: Advertisement, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus.discovery")
    fallback = configured(advertised.site_id)
    chosen = resolve_broker(advertised.site_id, fallback, discover=True, timeout=30.0, interfaces=LOOPBACK)
    assert (chosen.host, chosen.port, chosen.source) == ("127.0.0.1", 18883, "zeroconf")
    assert "found by zeroconf" in caplog.text


def test_resolve_falls_back_to_config_when_nothing_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus.discovery")
    site = new_site()
    fallback = configured(site)
    assert resolve_broker(site, fallback, discover=True, timeout=0.5, interfaces=LOOPBACK) is fallback
    assert "nothing found by zeroconf" in caplog.text


def test_resolve_does_not_browse_when_discovery_is_off(advertised: Advertisement, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="bus.discovery")
    fallback = configured(advertised.site_id)

    def must_not_browse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("resolve_broker browsed although discovery is off")

    # Every browse goes through discover_broker (called by its module name): a browse fails the test at once.
    monkeypatch.setattr("bus.discovery.discover_broker", must_not_browse)
    assert resolve_broker(advertised.site_id, fallback, discover=False, interfaces=LOOPBACK) is fallback
    assert "discovery is off" in caplog.text


def test_resolve_refuses_a_broker_advertising_another_tls_setting(advertised: Advertisement,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The module broker advertises TLS; a device configured for plaintext must not silently switch, and the
    # reverse (TLS configured, plaintext advertised) is how a rogue responder would harvest passwords.
    fallback = configured(advertised.site_id, tls=False)
    assert resolve_broker(advertised.site_id, fallback, discover=True, timeout=30.0, interfaces=LOOPBACK) is fallback
    assert "advertises tls=True" in caplog.text


def test_closed_advertisement_is_no_longer_found() -> None:
    # The longest site id there is: "museum-<site>" exceeds a DNS label and has to be cut to be advertised at all.
    site = f"{new_site()}-".ljust(63, "x")
    advertisement = advertise_broker(site, 2883, tls=True, interfaces=LOOPBACK, host_address="127.0.0.2")
    try:
        found = discover_broker(site, timeout=30.0, interfaces=LOOPBACK)
        assert found is not None and (found.host, found.site_id) == ("127.0.0.2", site)
    finally:
        advertisement.close()
    advertisement.close()
    assert advertisement.closed
    # Had the service outlived close(), the browser's first question (within 0.12 s) would be answered within
    # about 1.2 s, even held back by the one-second rate limit of the answer just given: 4 s is over three times
    # that. A machine twice as slow can only make a wrongly surviving service look withdrawn, never the reverse.
    assert discover_broker(site, timeout=4.0, interfaces=LOOPBACK) is None


TXT = {b"site": b"demo", b"tls": b"1", b"v": b"1"}


@pytest.mark.parametrize(("txt", "port", "addresses"), [
    ({**TXT, b"site": b"other"}, 8883, ["192.0.2.10"]),
    ({b"tls": b"1", b"v": b"1"}, 8883, ["192.0.2.10"]),
    ({b"site": b"demo", b"tls": b"1"}, 8883, ["192.0.2.10"]),
    ({**TXT, b"v": b"2"}, 8883, ["192.0.2.10"]),
    ({**TXT, b"tls": b"yes"}, 8883, ["192.0.2.10"]),
    ({**TXT, b"tls": None}, 8883, ["192.0.2.10"]),
    ({**TXT, b"site": b"\xff\xfe"}, 8883, ["192.0.2.10"]),
    ({**TXT, b"\xff": b"x"}, 8883, ["192.0.2.10"]),
    (TXT, None, ["192.0.2.10"]),
    (TXT, 0, ["192.0.2.10"]),
    (TXT, 70000, ["192.0.2.10"]),
    (TXT, 8883, []),
    (TXT, 8883, ["not-an-address", "0.0.0.0", "224.0.0.251"]),
])
def test_malformed_or_foreign_records_are_skipped(txt: dict[bytes, bytes | None], port: int | None,
                                                  addresses: list[str]) -> None:
    assert parse_service("demo", txt, port, addresses) is None


def test_parse_prefers_an_ipv4_address_on_a_local_network() -> None:
    # 127.0.0.1 is on this machine's loopback network; 198.51.100.7 and the IPv6 address are on none of its.
    found = parse_service("demo", {b"SITE": b"demo", b"TLS": b"0", b"v": b"1"}, 1883,
                          ["2001:db8::1", "198.51.100.7", "127.0.0.1"])
    assert found == BrokerEndpoint(host="127.0.0.1", port=1883, tls=False, site_id="demo", source="zeroconf")
    only_v6 = parse_service("demo", TXT, 8883, ["2001:db8::1", "bogus"])
    assert only_v6 is not None and only_v6.host == "2001:db8::1"


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ContractError, match="site_id"):
        discover_broker("Not A Site", timeout=0.1, interfaces=LOOPBACK)
    with pytest.raises(ValueError, match="TCP port"):
        advertise_broker("demo", 0, tls=True, interfaces=LOOPBACK)
    with pytest.raises(ValueError, match="not an IP address"):
        advertise_broker("demo", 8883, tls=True, interfaces=LOOPBACK, host_address="hub.local")
    with pytest.raises(ValueError, match="at least one address"):
        discover_broker("demo", timeout=0.1, interfaces=[])
    with pytest.raises(ValueError, match="source"):
        BrokerEndpoint(host="h", port=1, tls=False, site_id="demo", source="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="configured broker is for site"):
        resolve_broker("demo", configured("other"), discover=False)
