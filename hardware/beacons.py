"""Beacon frames from the bytes of one advertisement: iBeacon, AltBeacon and Eddystone (UID, URL, TLM, EID).

Pure functions over `Advert` fields. Any bytes give a frame, a `Rejected` with a stable code, or None (not a beacon
format: a phone, a watch); nothing here raises. Layouts, by offset in the bytes bleak hands over (the manufacturer
data after the 2-byte company id, the service data after the UUID):

- iBeacon (Apple, company 0x004C): 0x02 0x15, proximity UUID (16), major (2, BE), minor (2, BE), measured power at
  1 m (1, signed): 23 bytes.
- AltBeacon (any company): beacon code 0xBE 0xAC, beacon id (20), reference RSSI at 1 m (1, signed), reserved (1):
  24 bytes (AltBeacon Protocol Specification v1.0).
- Eddystone (service data of UUID 0xFEAA), by frame type (google/eddystone protocol-specification):
  UID 0x00: tx power at 0 m, namespace (10), instance (6), 2 RFU bytes that some beacons omit: 18 or 20 bytes.
  URL 0x10: tx power, scheme prefix, 1–17 encoded bytes. TLM 0x20: version 0x00 (plain: battery mV, temperature
  8.8, advert count, uptime in 0.1 s: 14 bytes) or 0x01 (encrypted: refused, we hold no key). EID 0x30: tx
  power, ephemeral id (8): 10 bytes.

Codes of `Rejected`: "truncated" (shorter than the format), "bad_length" (longer, or a wrong length byte),
"bad_url_scheme", "bad_url_byte", "encrypted_tlm", "unknown_tlm_version", "unknown_eddystone_frame".

Speed matters (a busy gallery is thousands of adverts a second on a Pi): one dict lookup per Eddystone frame, one
precompiled `struct` call per frame, no regex, and nothing allocated but the result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert

EDDYSTONE_UID = 0x00
EDDYSTONE_URL = 0x10
EDDYSTONE_TLM = 0x20
EDDYSTONE_EID = 0x30

ALTBEACON_CODE = b"\xbe\xac"
IBEACON_PREFIX = 0x02
IBEACON_LENGTH = 0x15
"""The iBeacon's second byte: the 21 bytes that follow it."""

EDDYSTONE_TO_1M_DB = 41
"""Eddystone frames carry the power received at 0 m; the specification (eddystone-uid.md, "Tx Power") gives 41 dBm
as the loss over the first metre, so the calibrated power at 1 m, comparable with iBeacon's, is 41 dBm lower."""

URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
                  ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov")
URL_MAX_ENCODED = 17


@dataclass(frozen=True, slots=True)
class IBeacon:
    kind: ClassVar[str] = "ibeacon"
    uuid: bytes
    major: int
    minor: int
    measured_power: int
    """dBm at 1 m."""


@dataclass(frozen=True, slots=True)
class AltBeacon:
    kind: ClassVar[str] = "altbeacon"
    company_id: int
    beacon_id: bytes
    measured_power: int
    """dBm at 1 m."""
    reserved: int


@dataclass(frozen=True, slots=True)
class EddystoneUID:
    kind: ClassVar[str] = "eddystone_uid"
    namespace: bytes
    instance: bytes
    tx_power_0m: int


@dataclass(frozen=True, slots=True)
class EddystoneURL:
    kind: ClassVar[str] = "eddystone_url"
    url: str
    tx_power_0m: int


@dataclass(frozen=True, slots=True)
class EddystoneTLM:
    kind: ClassVar[str] = "eddystone_tlm"
    version: int
    battery_mv: int | None
    """None: the beacon does not measure it (it sent 0)."""
    temperature_c: float | None
    """None: the beacon does not measure it (it sent 0x8000)."""
    adv_count: int
    """Adverts sent since power-up or reboot."""
    uptime_s: float
    """Time since power-up or reboot."""


@dataclass(frozen=True, slots=True)
class EddystoneEID:
    kind: ClassVar[str] = "eddystone_eid"
    eid: bytes
    tx_power_0m: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A beacon-shaped payload that breaks its format: `code` is stable (for counters), `detail` is for people."""

    code: str
    detail: str


Frame = IBeacon | AltBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneEID

_IBEACON = struct.Struct(">2x16sHHb")
_ALTBEACON = struct.Struct(">2x20sbB")
_UID = struct.Struct(">xb10s6s")
_TLM = struct.Struct(">2xHhII")
_EID = struct.Struct(">xb8s")
_TLM_NO_TEMPERATURE = -0x8000
"""0x8000 read as a signed 16-bit number."""

_URL_VALID = bytes(range(len(URL_EXPANSIONS))) + bytes(range(0x21, 0x7F))
"""Bytes an encoded URL may hold: the expansion codes and printable ASCII; 0x0E–0x20 and 0x7F–0xFF are reserved."""
_URL_TEXT = URL_EXPANSIONS + tuple("\0" * (0x21 - len(URL_EXPANSIONS))) + tuple(chr(code) for code in range(0x21, 0x80))
"""Each valid byte's text (the placeholders below 0x21 are never used: such bytes are refused first)."""


def parse_manufacturer(company_id: int, data: bytes) -> IBeacon | AltBeacon | Rejected | None:
    """A beacon frame from manufacturer-specific data (the bytes after the company id), or None if it is none."""
    if data.startswith(ALTBEACON_CODE):
        if len(data) != 24:
            return _length("AltBeacon", len(data), 24)
        beacon_id, power, reserved = _ALTBEACON.unpack_from(data)
        return AltBeacon(company_id, beacon_id, power, reserved)
    if company_id == APPLE_COMPANY_ID and data and data[0] == IBEACON_PREFIX:
        # Apple's data is a list of typed records; type 0x02 is the iBeacon, always of length 0x15.
        if len(data) == 23 and data[1] == IBEACON_LENGTH:
            uuid, major, minor, power = _IBEACON.unpack_from(data)
            return IBeacon(uuid, major, minor, power)
        if len(data) >= 2 and data[1] != IBEACON_LENGTH:
            return Rejected("bad_length", f"iBeacon length byte 0x{data[1]:02x}, not 0x15")
        return _length("iBeacon", len(data), 23)
    return None


def parse_eddystone(data: bytes) -> Frame | Rejected:
    """An Eddystone frame from the service data of UUID 0xFEAA."""
    if not data:
        return Rejected("truncated", "Eddystone service data without a frame type")
    parser = _EDDYSTONE.get(data[0])
    if parser is None:
        return Rejected("unknown_eddystone_frame", f"Eddystone frame type 0x{data[0]:02x}")
    return parser(data)


def parse_advert(advert: Advert) -> Frame | Rejected | None:
    """The advert's beacon frame: the first well-formed one (manufacturer data first, then Eddystone service data),
    else the first malformed one as a Rejected, else None (no beacon format at all: a phone, a watch)."""
    rejected: Rejected | None = None
    for company_id, data in advert.manufacturer_data:
        found = parse_manufacturer(company_id, data)
        if found is not None:
            if not isinstance(found, Rejected):
                return found
            rejected = rejected or found
    for uuid, data in advert.service_data:
        if uuid == EDDYSTONE_SERVICE_UUID:
            eddystone = parse_eddystone(data)
            if not isinstance(eddystone, Rejected):
                return eddystone
            rejected = rejected or eddystone
    return rejected


def frame_tx_power_1m(frame: Frame) -> int | None:
    """The frame's calibrated power at 1 m in dBm, for distance estimates; None for TLM (it carries none)."""
    if isinstance(frame, IBeacon | AltBeacon):
        return frame.measured_power
    if isinstance(frame, EddystoneUID | EddystoneURL | EddystoneEID):
        return frame.tx_power_0m - EDDYSTONE_TO_1M_DB
    return None


def _length(name: str, got: int, expected: int) -> Rejected:
    if got < expected:
        return Rejected("truncated", f"{name} of {got} bytes, expected {expected}")
    return Rejected("bad_length", f"{name} of {got} bytes, expected {expected}")


def _uid(data: bytes) -> EddystoneUID | Rejected:
    size = len(data)
    if size != 20 and size != 18:
        if size < 18:
            return Rejected("truncated", f"Eddystone-UID of {size} bytes, expected 18 or 20")
        return Rejected("bad_length", f"Eddystone-UID of {size} bytes, expected 18 or 20")
    power, namespace, instance = _UID.unpack_from(data)
    return EddystoneUID(namespace, instance, power)


def _url(data: bytes) -> EddystoneURL | Rejected:
    size = len(data)
    if size < 4:
        return Rejected("truncated", f"Eddystone-URL of {size} bytes, at least 4 needed")
    if size > 3 + URL_MAX_ENCODED:
        return Rejected("bad_length", f"Eddystone-URL of {size - 3} encoded bytes, at most {URL_MAX_ENCODED}")
    scheme = data[2]
    if scheme >= len(URL_SCHEMES):
        return Rejected("bad_url_scheme", f"Eddystone-URL scheme prefix 0x{scheme:02x}")
    body = data[3:]
    invalid = body.translate(None, _URL_VALID)
    if invalid:
        return Rejected("bad_url_byte", f"Eddystone-URL byte 0x{invalid[0]:02x}")
    power = data[1] - 256 if data[1] > 127 else data[1]
    return EddystoneURL(URL_SCHEMES[scheme] + "".join(map(_URL_TEXT.__getitem__, body)), power)


def _tlm(data: bytes) -> EddystoneTLM | Rejected:
    size = len(data)
    if size < 2:
        return Rejected("truncated", "Eddystone-TLM without a version")
    version = data[1]
    if version != 0:
        if version == 1:
            return Rejected("encrypted_tlm", "encrypted Eddystone-TLM (version 0x01)")
        return Rejected("unknown_tlm_version", f"Eddystone-TLM version 0x{version:02x}")
    if size != 14:
        return _length("Eddystone-TLM", size, 14)
    battery, temperature, count, tenths = _TLM.unpack_from(data)
    return EddystoneTLM(0, battery or None,
                        None if temperature == _TLM_NO_TEMPERATURE else temperature / 256, count, tenths / 10)


def _eid(data: bytes) -> EddystoneEID | Rejected:
    if len(data) != 10:
        return _length("Eddystone-EID", len(data), 10)
    power, eid = _EID.unpack_from(data)
    return EddystoneEID(eid, power)


_EDDYSTONE = {EDDYSTONE_UID: _uid, EDDYSTONE_URL: _url, EDDYSTONE_TLM: _tlm, EDDYSTONE_EID: _eid}
