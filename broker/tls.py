"""The site's own certificate authority and the broker's server certificate.

A site is an island: its broker is reached by a `.local` name or an address on the museum's network, which no
public CA will certify. So each site has its own CA, and every client pins trust to it: a device verifies the
broker's certificate chain against the site CA it was given at enrollment, and nothing else.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.passwords import replace_file

CA_VALIDITY = timedelta(days=3652)
SERVER_VALIDITY = timedelta(days=730)
EXPIRY_WARNING = timedelta(days=30)
"""How long before the broker's certificate expires the hub's log and `museum hub stats` start warning."""
CA_EXPIRY_WARNING = timedelta(days=180)
"""The same for the site CA: longer, since a new CA has to be installed on every device."""
# Tolerates a device whose clock is a little behind the hub's at the moment the certificate is made.
_BACKDATE = timedelta(hours=1)


def broker_hostname(site_id: str) -> str:
    """The mDNS name a site's broker is known by when no other name is configured."""
    return f"{site_id}-broker.local"


def server_names(site_id: str, extra: Iterable[str] = ()) -> list[str]:
    """Every name and address the server certificate covers, without duplicates, in a stable order."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), broker_hostname(site_id), *extra]
    return list(dict.fromkeys(name for name in names if name))


def create_ca(site_id: str, cert_path: Path, key_path: Path, *, validity: timedelta = CA_VALIDITY) -> None:
    """A new site CA (EC P-256, ten years) that can sign certificates and nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Museum platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{site_id} site CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_certificate(cert_path, certificate)


def create_server_certificate(site_id: str, ca_cert_path: Path, ca_key_path: Path, cert_path: Path,
                              key_path: Path, hostnames: Iterable[str] = (), *,
                              validity: timedelta = SERVER_VALIDITY) -> list[str]:
    """A broker certificate (EC P-256, two years) signed by the site CA; returns the names it covers.

    It never outlives the CA (a certificate is worthless once its issuer has expired). The key and the
    certificate are each written beside and renamed over, keeping the owner of the files they replace, so a
    renewal under a running broker that has dropped privileges leaves it able to read them on its reload."""
    ca_certificate = x509.load_pem_x509_certificate(Path(ca_cert_path).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca_key_path).read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key_path} is not the EC key of a site CA")
    if ca_key.public_key() != ca_certificate.public_key():
        raise ValueError(f"{ca_key_path} is not the key of the CA in {ca_cert_path}")
    names = server_names(site_id, hostnames)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    not_after = min(now + validity, ca_certificate.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, broker_hostname(site_id))]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_certificate(cert_path, certificate)
    return names


def expires_at(cert_path: Path) -> datetime:
    """When the certificate in `cert_path` stops being valid (UTC)."""
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except ValueError as error:
        raise ValueError(f"{cert_path} is not a PEM certificate ({error})") from None
    return certificate.not_valid_after_utc


def expiry_warning(what: str, cert_path: Path, fix: str, now: datetime | None = None,
                   within: timedelta = EXPIRY_WARNING) -> str | None:
    """One line saying that `what` (in `cert_path`) has expired or expires within `within`, and `fix`; None while
    it has longer to live."""
    now = now or datetime.now(UTC)
    try:
        expiry = expires_at(cert_path)
    except (OSError, ValueError) as error:
        return f"{what} cannot be read ({error}): {fix}"
    left = expiry - now
    if left > within:
        return None
    day = expiry.strftime("%Y-%m-%d %H:%M UTC")
    if left <= timedelta(0):
        return f"{what} {cert_path} expired on {day}: {fix}"
    return f"{what} {cert_path} expires on {day} (in {left.days} days): {fix}"


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    replace_file(Path(path), pem, mode=0o600)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    replace_file(Path(path), certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)


