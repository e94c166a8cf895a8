"""hardware.beacons against the published layouts: Apple's iBeacon, the AltBeacon specification and
google/eddystone's protocol specification (UID, URL, TLM, EID), byte by byte, plus malformed and random input."""

from __future__ import annotations

import random

import pytest

from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert
from hardware.beacons import (
    URL_EXPANSIONS,
    URL_SCHEMES,
    AltBeacon,
    EddystoneEID,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    IBeacon,
    Rejected,
    frame_tx_power_1m,
    parse_advert,
    parse_eddystone,
    parse_manufacturer,
)

FRAMES = (IBeacon, AltBeacon, EddystoneUID, EddystoneURL, EddystoneTLM, EddystoneEID)

# Apple's layout, with the AirLocate sample UUID: 0x02 0x15, UUID, major 0x0001, minor 0x0102, power 0xC5.
IBEACON = bytes.fromhex("0215" "e2c56db5dffb48d2b060d0f5a71096e0" "0001" "0102" "c5")
# AltBeacon specification, company 0x0118: 0xBEAC, a 20-byte beacon id, reference RSSI 0xC5, reserved 0x00.
ALTBEACON_ID = bytes.fromhex("2f234454cf6d4a0fadf2f4911ba9ffa6" "00010002")
ALTBEACON = bytes.fromhex("beac") + ALTBEACON_ID + bytes.fromhex("c500")
# Eddystone-UID: frame 0x00, tx power -16 dBm at 0 m (0xF0), namespace, instance, two RFU bytes.
NAMESPACE = bytes.fromhex("edd1ebeac04e5defa017")
INSTANCE = bytes.fromhex("0bdb87539b67")
UID = bytes.fromhex("00f0") + NAMESPACE + INSTANCE + bytes(2)


def advert(manufacturer=(), service=()) -> Advert:
    return Advert(at=1.0, address="C0:00:00:00:00:01", rssi=-60, manufacturer_data=tuple(manufacturer),
                  service_data=tuple(service))


def tlm(battery: int, temperature: int, count: int, tenths: int) -> bytes:
    return bytes.fromhex("2000") + battery.to_bytes(2, "big") + temperature.to_bytes(2, "big") + \
        count.to_bytes(4, "big") + tenths.to_bytes(4, "big")


# --- the formats --------------------------------------------------------------------------------------------

def test_ibeacon_fields():
    frame = parse_manufacturer(APPLE_COMPANY_ID, IBEACON)
    assert frame == IBeacon(uuid=bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0"), major=1, minor=0x0102,
                            measured_power=-59)
    assert frame_tx_power_1m(frame) == -59


def test_ibeacon_extremes_of_major_minor_and_power():
    data = bytes.fromhex("0215") + bytes(16) + bytes.fromhex("ffff" "ffff" "7f")
    assert parse_manufacturer(APPLE_COMPANY_ID, data) == IBeacon(bytes(16), 0xFFFF, 0xFFFF, 127)
    data = data[:-1] + b"\x80"
    assert parse_manufacturer(APPLE_COMPANY_ID, data).measured_power == -128


def test_ibeacon_only_under_apple():
    assert parse_manufacturer(0x0059, IBEACON) is None


def test_altbeacon_fields_under_any_company():
    assert parse_manufacturer(0x0118, ALTBEACON) == AltBeacon(company_id=0x0118, beacon_id=ALTBEACON_ID,
                                                              measured_power=-59, reserved=0)
    assert parse_manufacturer(APPLE_COMPANY_ID, ALTBEACON).company_id == APPLE_COMPANY_ID
    assert frame_tx_power_1m(parse_manufacturer(0x0118, ALTBEACON)) == -59


@pytest.mark.parametrize("rfu", [b"", b"\x00\x00"], ids=["18 bytes", "20 bytes"])
def test_eddystone_uid_with_and_without_rfu(rfu):
    frame = parse_eddystone(UID[:18] + rfu)
    assert frame == EddystoneUID(namespace=NAMESPACE, instance=INSTANCE, tx_power_0m=-16)
    # The specification's conversion: 41 dBm lost over the first metre.
    assert frame_tx_power_1m(frame) == -57


def test_eddystone_url_from_the_specification():
    # "https://goo.gl/S6zT6P": scheme 0x03, then plain bytes.
    frame = parse_eddystone(bytes.fromhex("10eb03") + b"goo.gl/S6zT6P")
    assert frame == EddystoneURL(url="https://goo.gl/S6zT6P", tx_power_0m=-21)
    assert frame_tx_power_1m(frame) == -62
    # "http://www.google.com/": scheme 0x00, "google", expansion 0x00 (".com/").
    assert parse_eddystone(bytes.fromhex("10ba00") + b"google\x00").url == "http://www.google.com/"


@pytest.mark.parametrize("scheme", range(4))
def test_every_url_scheme(scheme):
    frame = parse_eddystone(bytes((0x10, 0x00, scheme)) + b"museum.example")
    assert frame.url == URL_SCHEMES[scheme] + "museum.example"
    assert URL_SCHEMES == ("http://www.", "https://www.", "http://", "https://")


@pytest.mark.parametrize(("code", "text"), list(enumerate([".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/",
                                                            ".gov/", ".com", ".org", ".edu", ".net", ".info",
                                                            ".biz", ".gov"])))
def test_every_url_expansion(code, text):
    assert URL_EXPANSIONS[code] == text
    frame = parse_eddystone(bytes((0x10, 0xF4, 0x03)) + b"museum" + bytes((code,)) + b"x")
    assert frame.url == "https://museum" + text + "x"


def test_url_of_seventeen_bytes_and_all_printable():
    assert parse_eddystone(bytes.fromhex("100002") + b"a" * 17).url == "http://" + "a" * 17
    printable = bytes(range(0x21, 0x7F))
    for start in range(0, len(printable), 17):
        chunk = printable[start:start + 17]
        assert parse_eddystone(bytes.fromhex("100002") + chunk).url == "http://" + chunk.decode()


@pytest.mark.parametrize(("raw", "celsius"), [(0x1980, 25.5), (0xFE80, -1.5), (0x0100, 1.0), (0xFF00, -1.0),
                                              (0x0080, 0.5), (0x0000, 0.0), (0x7FFF, 127 + 255 / 256),
                                              (0x8001, -128 + 1 / 256)])
def test_tlm_temperature_is_signed_8_8(raw, celsius):
    assert parse_eddystone(tlm(3000, raw, 0, 0)).temperature_c == celsius


def test_tlm_fields():
    frame = parse_eddystone(tlm(0x0BB8, 0x1980, 0x01020304, 0x00000064))
    assert frame == EddystoneTLM(version=0, battery_mv=3000, temperature_c=25.5, adv_count=0x01020304,
                                 uptime_s=10.0)
    assert frame_tx_power_1m(frame) is None
    big = parse_eddystone(tlm(0xFFFF, 0, 0xFFFFFFFF, 0xFFFFFFFF))
    assert (big.battery_mv, big.adv_count, big.uptime_s) == (65535, 0xFFFFFFFF, 0xFFFFFFFF / 10)


def test_tlm_unsupported_battery_and_temperature_are_none():
    frame = parse_eddystone(tlm(0, 0x8000, 5, 7))
    assert (frame.battery_mv, frame.temperature_c, frame.adv_count, frame.uptime_s) == (None, None, 5, 0.7)


def test_eid():
    frame = parse_eddystone(bytes.fromhex("30e7" "0102030405060708"))
    assert frame == EddystoneEID(eid=bytes.fromhex("0102030405060708"), tx_power_0m=-25)
    assert frame_tx_power_1m(frame) == -66


# --- malformed input ----------------------------------------------------------------------------------------

MALFORMED_EDDYSTONE = [
    (b"", "truncated"),
    (bytes.fromhex("40"), "unknown_eddystone_frame"),
    (bytes.fromhex("50f0") + bytes(16), "unknown_eddystone_frame"),
    (bytes.fromhex("ff"), "unknown_eddystone_frame"),
    (UID[:1], "truncated"),
    (UID[:17], "truncated"),
    (UID[:19], "bad_length"),
    (UID + b"\x00", "bad_length"),
    (bytes.fromhex("10"), "truncated"),
    (bytes.fromhex("10f0"), "truncated"),
    (bytes.fromhex("10f003"), "truncated"),  # a scheme and no URL: the specification asks for 1–17 bytes
    (bytes.fromhex("10f004") + b"museum", "bad_url_scheme"),
    (bytes.fromhex("10f0ff") + b"museum", "bad_url_scheme"),
    (bytes.fromhex("10f003") + b"a" * 18, "bad_length"),
    (bytes.fromhex("10f003") + b"mus\x0eeum", "bad_url_byte"),  # the first reserved code
    (bytes.fromhex("10f003") + b"mus eum", "bad_url_byte"),  # 0x20: reserved, not a space
    (bytes.fromhex("10f003") + b"mus\x7feum", "bad_url_byte"),
    (bytes.fromhex("10f003") + b"mus\xc3\xa9um", "bad_url_byte"),
    (bytes.fromhex("20"), "truncated"),
    (bytes.fromhex("2001") + bytes(16), "encrypted_tlm"),
    (bytes.fromhex("2001"), "encrypted_tlm"),
    (bytes.fromhex("2002") + bytes(12), "unknown_tlm_version"),
    (tlm(3000, 0, 0, 0)[:13], "truncated"),
    (bytes.fromhex("2000"), "truncated"),
    (tlm(3000, 0, 0, 0) + b"\x00", "bad_length"),
    (bytes.fromhex("30f0") + bytes(7), "truncated"),
    (bytes.fromhex("30f0") + bytes(9), "bad_length"),
]


@pytest.mark.parametrize(("data", "code"), MALFORMED_EDDYSTONE, ids=[f"{d.hex()[:12]}-{c}" for d, c in
                                                                     MALFORMED_EDDYSTONE])
def test_malformed_eddystone(data, code):
    result = parse_eddystone(data)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert result.detail
    assert parse_advert(advert(service=[(EDDYSTONE_SERVICE_UUID, data)])) == result


MALFORMED_MANUFACTURER = [
    (APPLE_COMPANY_ID, bytes.fromhex("02"), "truncated"),
    (APPLE_COMPANY_ID, IBEACON[:22], "truncated"),
    (APPLE_COMPANY_ID, IBEACON + b"\x00", "bad_length"),
    (APPLE_COMPANY_ID, bytes.fromhex("0214") + IBEACON[2:22], "bad_length"),
    (APPLE_COMPANY_ID, bytes.fromhex("0216") + IBEACON[2:] + b"\x00", "bad_length"),
    (0x0118, ALTBEACON[:23], "truncated"),
    (0x0118, ALTBEACON[:2], "truncated"),
    (0x0118, ALTBEACON + b"\x00", "bad_length"),
]


@pytest.mark.parametrize(("company", "data", "code"), MALFORMED_MANUFACTURER,
                         ids=[f"{c:04x}-{d.hex()[:8]}-{len(d)}" for c, d, _ in MALFORMED_MANUFACTURER])
def test_malformed_manufacturer(company, data, code):
    result = parse_manufacturer(company, data)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert parse_advert(advert(manufacturer=[(company, data)])) == result


# --- adverts ------------------------------------------------------------------------------------------------

PHONES = [
    advert(),
    advert(manufacturer=[(APPLE_COMPANY_ID, bytes.fromhex("10051b1c8f2bbb"))]),  # Apple "nearby"
    advert(manufacturer=[(APPLE_COMPANY_ID, bytes.fromhex("1219") + bytes(25))]),  # Find My
    advert(manufacturer=[(APPLE_COMPANY_ID, b"")]),
    advert(manufacturer=[(0x0006, bytes.fromhex("01092002") + bytes(23))]),  # Microsoft
    advert(service=[("0000fe2c-0000-1000-8000-00805f9b34fb", bytes.fromhex("00600102030405061101"))]),
    advert(service=[("0000feab-0000-1000-8000-00805f9b34fb", UID)]),  # not 0xFEAA
]


@pytest.mark.parametrize("phone", PHONES)
def test_phones_are_not_beacons(phone):
    assert parse_advert(phone) is None


def test_manufacturer_data_comes_first():
    both = advert(manufacturer=[(APPLE_COMPANY_ID, IBEACON)], service=[(EDDYSTONE_SERVICE_UUID, UID)])
    assert isinstance(parse_advert(both), IBeacon)


def test_a_wellformed_frame_wins_over_a_malformed_one():
    mixed = advert(manufacturer=[(APPLE_COMPANY_ID, IBEACON[:5]), (0x0006, b"\x01")],
                   service=[("0000fe2c-0000-1000-8000-00805f9b34fb", b"\x00"), (EDDYSTONE_SERVICE_UUID, UID)])
    assert isinstance(parse_advert(mixed), EddystoneUID)
    two_bad = advert(manufacturer=[(APPLE_COMPANY_ID, IBEACON[:5])], service=[(EDDYSTONE_SERVICE_UUID, b"\x40")])
    assert parse_advert(two_bad).code == "truncated"  # the first malformed one


def test_frames_are_frozen_and_hashable():
    frame = parse_eddystone(UID)
    with pytest.raises(AttributeError):
        frame.instance = b"x"  # type: ignore[misc]
    assert len({frame, parse_eddystone(UID[:18])}) == 1
    assert {type(f).kind for f in (parse_eddystone(UID), parse_manufacturer(APPLE_COMPANY_ID, IBEACON))} == \
        {"eddystone_uid", "ibeacon"}


def test_random_bytes_never_raise():
    """Any bytes: a frame, a Rejected with a code, or None; never an exception. The prefixes are biased
    towards the beacon formats so that the length and field checks behind them are reached."""
    rng = random.Random(20261201)
    prefixes = [b"", b"\x02", b"\x02\x15", b"\xbe\xac", b"\x00", b"\x10", b"\x10\x00", b"\x20", b"\x20\x00",
                b"\x20\x01", b"\x30", b"\x40"]
    codes = set()
    kinds = set()
    for _ in range(30_000):
        manufacturer = [(rng.choice([APPLE_COMPANY_ID, rng.randrange(0x10000)]),
                         rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 30)))
                        for _ in range(rng.randrange(0, 3))]
        service = [(rng.choice([EDDYSTONE_SERVICE_UUID, "0000fe2c-0000-1000-8000-00805f9b34fb"]),
                    rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 30)))
                   for _ in range(rng.randrange(0, 3))]
        result = parse_advert(advert(manufacturer, service))
        assert result is None or isinstance(result, (*FRAMES, Rejected))
        if isinstance(result, Rejected):
            assert result.code and result.detail
            codes.add(result.code)
        elif result is not None:
            kinds.add(type(result))
            assert frame_tx_power_1m(result) is None or -128 - 41 <= frame_tx_power_1m(result) <= 127
    # The random walk did reach every check (else this test would prove little).
    assert codes == {"truncated", "bad_length", "bad_url_scheme", "bad_url_byte", "encrypted_tlm",
                     "unknown_tlm_version", "unknown_eddystone_frame"}
    assert kinds >= {EddystoneTLM, EddystoneEID}


@pytest.mark.parametrize("prefix", [b"\x02\x15", b"\xbe\xac", b"\x00", b"\x10", b"\x20\x00", b"\x30", b""])
def test_every_length_of_every_format(prefix):
    for size in range(0, 40):
        data = (prefix + bytes(range(0x61, 0x61 + 40)))[:size]
        for result in (parse_manufacturer(APPLE_COMPANY_ID, data), parse_manufacturer(0x0118, data),
                       parse_eddystone(data)):
            assert result is None or isinstance(result, (*FRAMES, Rejected))
