"""A BLE station's `[gateway]` settings: the documented example loads as documented, the defaults, and every
mistake is one line naming the file, the setting and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import hardware.settings
from bus.config import BrokerSettings, ClientConfig
from hardware.settings import StationSettings

PATH = Path("/etc/museum/gw-a.toml")
NS = "6d757365756d2d746167"


def config(gateway: Any = None, **extra: Any) -> ClientConfig:
    if gateway is not None:
        extra["gateway"] = gateway
    return ClientConfig("demo", "gw-a", "gateway", BrokerSettings("127.0.0.1", 1883, "gw-a", "x"), extra=extra)


def base(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"zone_id": "room-a", "tag_namespace": NS, "artworks": [{"id": "monet"}]}
    table.update(changes)
    return {key: value for key, value in table.items() if value is not None}


def documented_example() -> str:
    """The indented TOML of hardware/settings.py's docstring."""
    doc = hardware.settings.__doc__ or ""
    return textwrap.dedent("\n".join(line for line in doc.splitlines() if line.startswith("    ") or not line.strip()))


def test_the_documented_example_loads_from_a_real_file(tmp_path):
    path = tmp_path / "gw-a.toml"
    path.write_text(config().to_toml() + "\n" + documented_example() + "\n", encoding="utf-8")
    settings = StationSettings.from_config(ClientConfig.load(path), path)
    assert settings.config_path == path
    assert (settings.zone_id, settings.adapter, settings.scan_mode) == ("impressionnisme", "hci0", "passive")
    assert settings.tag_namespace == bytes.fromhex("6d757365756d2d746167")
    assert settings.tag_ibeacon_uuid == bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")
    assert settings.tag_measured_power == -59 and settings.path_loss_exponent == 2.0 and settings.silence_s == 120
    [artwork] = settings.artworks
    assert (artwork.artwork_id, artwork.zone_id, artwork.enter_m, artwork.leave_m) == (
        "monet-impression-sunrise", "impressionnisme", 1.5, 2.5)
    [beacon] = settings.beacons
    assert beacon.beacon_id == "entrance-left" and beacon.ibeacon is None and beacon.measured_power is None
    assert beacon.eddystone == (bytes.fromhex("6d757365756d2d62636e"), bytes.fromhex("0000000000a1"))
    assert (settings.proximity.leave_after_s, settings.proximity.min_dwell_s, settings.proximity.max_tags) == (
        20, 3, 5000)
    assert (settings.occupancy.window_s, settings.occupancy.min_rssi, settings.occupancy.max_devices) == (
        60, -80, 10000)
    assert (settings.health.report_every_s, settings.health.low_battery_mv, settings.health.not_heard_s) == (
        3600, 2500, 1800)
    assert (settings.sightings.interval_s, settings.sightings.peer_ttl_s) == (1, 5)


def test_only_the_zone_is_required_and_the_rest_has_defaults():
    settings = StationSettings.from_config(config({"zone_id": "hall"}), PATH)
    assert settings == StationSettings(config_path=PATH, zone_id="hall")
    assert settings.adapter == "hci0" and settings.scan_mode == "passive" and settings.artworks == ()


def test_identities_in_their_other_spellings():
    settings = StationSettings.from_config(config(base(
        tag_namespace=NS.upper(), tag_ibeacon_uuid="E2C56DB5DFFB48D2B060D0F5A71096E0",
        artworks=[{"id": "monet", "enter_m": 3, "zone_id": "orangerie"}],
        beacons=[{"id": "stairs", "ibeacon": "e2c56db5-dffb-48d2-b060-d0f5a71096e1:0:65535", "measured_power": -62}],
        sightings={"interval_s": 4})), PATH)
    assert settings.tag_namespace == bytes.fromhex(NS)
    assert settings.artworks[0].zone_id == "orangerie" and settings.artworks[0].leave_m == 3.5
    assert settings.beacons[0].ibeacon == (bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e1"), 0, 65535)
    assert settings.beacons[0].measured_power == -62
    assert settings.sightings.peer_ttl_s == 12  # follows a longer interval unless set


BAD = [
    (config(), "no [gateway] table"),
    (config(5), "gateway must be a table"),
    (config(base(zone_id=None)), "has no zone_id"),
    (config(base(zone_id="Room A")), "zone_id must be"),
    (config(base(zone="room-a")), "unknown setting(s) zone"),
    (config(base(adapter="bluetooth0")), "adapter must be"),
    (config(base(scan_mode="aggressive")), "scan_mode must be"),
    (config(base(tag_namespace="6d75")), "tag_namespace must be"),
    (config(base(tag_namespace="zz757365756d2d746167")), "tag_namespace must be"),
    (config(base(tag_ibeacon_uuid="not-a-uuid")), "tag_ibeacon_uuid must be"),
    (config(base(tag_measured_power=5)), "tag_measured_power must be"),
    (config(base(tag_measured_power=-59.5)), "tag_measured_power must be"),
    (config(base(path_loss_exponent=1.0)), "path_loss_exponent must be"),
    (config(base(path_loss_exponent="2")), "path_loss_exponent must be"),
    (config(base(path_loss_exponent=True)), "path_loss_exponent must be"),
    (config(base(silence_s=0)), "silence_s must be"),
    (config(base(artworks={"id": "monet"})), "artworks must be a list"),
    (config(base(artworks=["monet"])), "[[gateway.artworks]] #1 must be a table"),
    (config(base(artworks=[{"enter_m": 1}])), "[[gateway.artworks]] #1 has no id"),
    (config(base(artworks=[{"id": "Monet!"}])), "id must be"),
    (config(base(artworks=[{"id": "monet", "range_m": 2}])), "(monet) has unknown setting(s) range_m"),
    (config(base(artworks=[{"id": "monet", "enter_m": 2, "leave_m": 2}])), "leave_m (2) must be more than enter_m"),
    (config(base(artworks=[{"id": "monet", "enter_m": 0}])), "enter_m must be"),
    (config(base(artworks=[{"id": "monet", "zone_id": ""}])), "zone_id must be"),
    (config(base(artworks=[{"id": "monet"}, {"id": "monet"}])), "#2 (monet) is listed twice"),
    (config(base(artworks=[{"id": f"a{n}"} for n in range(40)])), "lists 40 artworks, at most 32"),
    (config(base(tag_namespace=None)), "watches artworks but names no visitor tags"),
    (config(base(beacons=[{"id": "door"}])), "needs exactly one of eddystone"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}:{'2' * 12}", "ibeacon": "x"}])),
     "needs exactly one of eddystone"),
    (config(base(beacons=[{"eddystone": f"{'1' * 20}:{'2' * 12}"}])), "[[gateway.beacons]] #1 has no id"),
    (config(base(beacons=[{"id": "door", "eddystone": "1111:2222"}])), "(door) eddystone must be"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}{'2' * 12}"}])), "(door) eddystone must be"),
    (config(base(beacons=[{"id": "door", "ibeacon": "e2c56db5-dffb-48d2-b060-d0f5a71096e1:1:70000"}])),
     "(door) ibeacon must be"),
    (config(base(beacons=[{"id": "door", "ibeacon": "e2c56db5-dffb-48d2-b060-d0f5a71096e1:1"}])),
     "(door) ibeacon must be"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{NS}:{'2' * 12}"}])), "uses tag_namespace"),
    (config(base(tag_ibeacon_uuid="e2c56db5-dffb-48d2-b060-d0f5a71096e1",
                 beacons=[{"id": "door", "ibeacon": "e2c56db5-dffb-48d2-b060-d0f5a71096e1:1:7"}])),
     "uses tag_ibeacon_uuid"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}:{'2' * 12}", "measured_power": -150}])),
     "measured_power must be"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}:{'2' * 12}", "power": -60}])),
     "unknown setting(s) power"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}:{'2' * 12}"},
                          {"id": "door", "eddystone": f"{'1' * 20}:{'3' * 12}"}])), "id is used twice"),
    (config(base(beacons=[{"id": "door", "eddystone": f"{'1' * 20}:{'2' * 12}"},
                          {"id": "hall", "eddystone": f"{'1' * 20}:{'2' * 12}"}])), "same identity"),
    (config(base(proximity="fast")), "proximity must be a table"),
    (config(base(proximity={"leave_after": 20})), "[gateway.proximity] has unknown setting(s) leave_after"),
    (config(base(proximity={"leave_after_s": 1})), "leave_after_s must be"),
    (config(base(proximity={"min_dwell_s": -1})), "min_dwell_s must be"),
    (config(base(proximity={"max_tags": 5.5})), "max_tags must be"),
    (config(base(occupancy={"window_s": 5})), "window_s must be"),
    (config(base(occupancy={"min_rssi": -20})), "min_rssi must be"),
    (config(base(occupancy={"max_devices": 10**6})), "max_devices must be"),
    (config(base(occupancy={"size": 1})), "[gateway.occupancy] has unknown setting(s) size"),
    (config(base(health={"report_every_s": 10})), "report_every_s must be"),
    (config(base(health={"low_battery_mv": 100})), "low_battery_mv must be"),
    (config(base(health={"not_heard_s": "long"})), "not_heard_s must be"),
    (config(base(sightings={"interval_s": 3, "peer_ttl_s": 5})), "peer_ttl_s (5) must be at least twice"),
    (config(base(sightings={"interval_s": 0})), "interval_s must be"),
    (config(base(sightings={"ttl": 5})), "[gateway.sightings] has unknown setting(s) ttl"),
]


@pytest.mark.parametrize(("cfg", "expected"), BAD, ids=[expected for _, expected in BAD])
def test_every_mistake_is_one_line_naming_the_file_the_setting_and_the_fix(cfg, expected):
    with pytest.raises(ValueError) as caught:
        StationSettings.from_config(cfg, PATH)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{PATH}: ")
    assert expected in message
    _, _, fix = message.rpartition("; ")
    # The part after the last "; " tells what to do (or, for an unknown name, which names there are).
    assert fix.split()[0] in {"add", "correct", "the", "make", "give", "keep", "raise", "list", "set"}, message
