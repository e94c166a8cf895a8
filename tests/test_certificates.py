"""The broker's certificate is renewed by a command, from the same site CA, under a running broker; and an
expiry approaching (the certificate's or the CA's) is warned about in `museum hub stats` and the hub's log."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from harness import device_config
from support import wait_until

from broker import tls
from broker.hub_store import HubStore
from broker.mosquitto import MosquittoProcess
from broker.site import Site, certificate_warnings
from bus.mqtt import Credentials, Endpoint, MqttLink

ROOT = Path(__file__).resolve().parent.parent


def museum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "museum", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def expiring_in(site: Site, days: float) -> None:
    """Give the site's broker a certificate from its own CA that expires in `days`."""
    tls.create_server_certificate(site.site_id, site.ca_file, site.ca_key, site.server_cert, site.server_key,
                                  site.hostnames, validity=timedelta(days=days))


def served_certificate(site: Site) -> x509.Certificate:
    """The certificate the running broker presents on its TLS port, verified against the site CA."""
    context = ssl.create_default_context(cafile=str(site.ca_file))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=10) as raw, \
            context.wrap_socket(raw) as wrapped:
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def tls_device_connects(site: Site, device_id: str) -> bool:
    config = device_config(site, device_id, tls=True)
    link = MqttLink(device_id, Endpoint("127.0.0.1", site.tls_port, site.ca_file),
                    Credentials(config.broker.username, config.broker.password))
    try:
        return link.wait_connected(30)
    finally:
        link.close()


def test_a_new_site_has_nothing_to_warn_about(site: Site) -> None:
    assert certificate_warnings(site) == []


def test_a_broker_certificate_expiring_in_10_days_is_warned_about(site: Site) -> None:
    expiring_in(site, 10)
    warnings = certificate_warnings(site)
    assert len(warnings) == 1
    assert str(site.server_cert) in warnings[0] and "in 9 days" in warnings[0]
    assert f"museum site renew-certificate --site {site.root}" in warnings[0]


def test_an_expired_broker_certificate_is_warned_about(site: Site) -> None:
    expiring_in(site, 10)
    (warning,) = certificate_warnings(site, datetime.now(UTC) + timedelta(days=11))
    assert "expired on" in warning


def test_a_ca_near_its_own_expiry_is_warned_about(site: Site) -> None:
    tls.create_ca(site.site_id, site.ca_file, site.ca_key, validity=timedelta(days=100))
    tls.create_server_certificate(site.site_id, site.ca_file, site.ca_key, site.server_cert, site.server_key)
    # The broker's certificate never outlives its CA, so it is warned about only in the CA's last 30 days.
    assert certificate(site.server_cert).not_valid_after_utc <= certificate(site.ca_file).not_valid_after_utc
    (warning,) = certificate_warnings(site)
    assert "the site CA" in warning and str(site.ca_file) in warning and "new site CA" in warning
    assert len(certificate_warnings(site, datetime.now(UTC) + timedelta(days=80))) == 2


def test_hub_stats_warns_about_a_certificate_about_to_expire(site: Site) -> None:
    HubStore(site.hub_database).close()
    quiet = museum("hub", "stats", "--site", site.root, "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["certificate_warnings"] == [] and "Warning" not in quiet.stderr

    expiring_in(site, 10)
    table = museum("hub", "stats", "--site", site.root)
    assert table.returncode == 0, table.stderr
    assert "Warning: the broker's certificate" in table.stderr and "renew-certificate" in table.stderr
    as_json = museum("hub", "stats", "--site", site.root, "--json")
    assert "renew-certificate" in json.loads(as_json.stdout)["certificate_warnings"][0]


def test_the_hub_log_warns_about_a_certificate_about_to_expire(site: Site, broker: MosquittoProcess,
                                                               tmp_path: Path) -> None:
    expiring_in(site, 10)
    log = tmp_path / "hub.log"
    with log.open("ab") as output:
        hub = subprocess.Popen([sys.executable, "-m", "museum", "hub", "run", "--site", str(site.root)],
                               stdout=output, stderr=output, cwd=ROOT)
    try:
        assert wait_until(lambda: "WARNING broker.hub: hub: the broker's certificate" in log.read_text(), 60), \
            log.read_text()
        assert "renew-certificate" in log.read_text()
    finally:
        hub.terminate()
        hub.wait(10)


def test_renewal_under_a_running_broker_keeps_devices_connecting(site: Site, broker: MosquittoProcess) -> None:
    expiring_in(site, 10)
    broker.reload()
    assert wait_until(lambda: served_certificate(site) == certificate(site.server_cert), 30)
    ca_before = site.ca_file.read_bytes()
    assert tls_device_connects(site, "kiosk-01")

    result = museum("site", "renew-certificate", "--site", site.root)
    assert result.returncode == 0, result.stderr
    assert "reloaded" in result.stdout

    renewed, ca = certificate(site.server_cert), certificate(site.ca_file)
    assert site.ca_file.read_bytes() == ca_before, "devices must keep trusting the same CA"
    renewed.verify_directly_issued_by(ca)
    left = renewed.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=729) < left <= tls.SERVER_VALIDITY
    assert certificate_warnings(site) == []
    # The running broker serves the new certificate without a restart, and a TLS device still connects.
    assert wait_until(lambda: served_certificate(site) == renewed, 30)
    assert broker.alive
    assert tls_device_connects(site, "kiosk-02")
