"""A BLE station's own settings: the `[gateway]` table of the device's configuration file (`museum device enroll`).

    [gateway]
    zone_id = "impressionnisme"                # required: the room (zone) this station is in
    adapter = "hci0"                           # the Bluetooth adapter to scan with
    scan_mode = "passive"                      # or "active" (asks every device for a scan response: more radio)
    tag_namespace = "6d757365756d2d746167"     # the site's Eddystone namespace for visitor tags: 20 hex digits
    tag_ibeacon_uuid = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"   # and/or the site's iBeacon UUID for tags
    tag_measured_power = -59                   # optional: tags' RSSI at 1 m (dBm) when their frames misstate it
    path_loss_exponent = 2.0                   # 2 in free space; up to 4 in a crowded room with walls
    silence_s = 120                            # restart the scanner after this long without a single advert

    [[gateway.artworks]]                       # the works this station watches (it stands next to them)
    id = "monet-impression-sunrise"
    enter_m = 1.5                              # a tag this near has come to the work
    leave_m = 2.5                              # ... and this far has left it (more than enter_m: no flapping)
    # zone_id = "orangerie"                    # only when the work is in another room than the station

    [[gateway.beacons]]                        # museum beacons whose health this station reports
    id = "entrance-left"
    eddystone = "6d757365756d2d62636e:0000000000a1"    # namespace:instance in hex
    # ibeacon = "e2c56db5-dffb-48d2-b060-d0f5a71096e1:1:7"   # or uuid:major:minor
    # measured_power = -62                     # optional: its RSSI at 1 m (for distances; no event uses it yet)

    [gateway.proximity]
    leave_after_s = 20                         # a tag not heard this long has left
    min_dwell_s = 3                            # in range this long before it counts (walk-bys do not)
    max_tags = 5000                            # tags tracked at once; the stalest is forgotten beyond

    [gateway.occupancy]
    window_s = 60                              # one anonymous head count per window
    min_rssi = -80                             # weaker devices are outside the room
    max_devices = 10000                        # the count saturates here

    [gateway.health]
    report_every_s = 3600                      # one beacon.health per beacon per period at most
    low_battery_mv = 2500                      # beacon.alert low_battery below this
    not_heard_s = 1800                         # beacon.alert not_heard for a configured beacon silent this long

    [gateway.sightings]
    interval_s = 1                             # publish this station's view of the tags at most this often
    peer_ttl_s = 5                             # other stations' views older than this are ignored

Only `zone_id` is required, and a tag namespace or UUID when artworks are watched. List only the beacons this
station can hear: a listed beacon it never hears raises `not_heard`. Every value is checked when the station
starts: a mistake is one line naming the file, the setting and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bus.config import ClientConfig, known_settings, number_setting, whole_number_setting
from protocol.fields import IDENTIFIER

ScanMode = Literal["passive", "active"]

_KEYS = ("zone_id", "adapter", "scan_mode", "tag_namespace", "tag_ibeacon_uuid", "tag_measured_power",
         "path_loss_exponent", "silence_s", "artworks", "beacons", "proximity", "occupancy", "health", "sightings")
_ARTWORK_KEYS = ("id", "enter_m", "leave_m", "zone_id")
_BEACON_KEYS = ("id", "eddystone", "ibeacon", "measured_power")
_ADAPTER = re.compile(r"^hci[0-9]{1,3}\Z")
_HEX = re.compile(r"^[0-9a-f]*\Z")

MAX_ARTWORKS = 32
"""More works than one station can stand next to: a bigger list is a mistake (a whole museum pasted in)."""
MAX_BEACONS = 500


@dataclass(frozen=True)
class ArtworkWatch:
    artwork_id: str
    zone_id: str
    """The artwork's room: the station's own unless the table says otherwise."""
    enter_m: float = 1.5
    leave_m: float = 2.5


@dataclass(frozen=True)
class MuseumBeacon:
    beacon_id: str
    eddystone: tuple[bytes, bytes] | None = None
    """(namespace 10 bytes, instance 6 bytes)."""
    ibeacon: tuple[bytes, int, int] | None = None
    """(proximity UUID 16 bytes, major, minor)."""
    measured_power: int | None = None


@dataclass(frozen=True)
class ProximitySettings:
    leave_after_s: float = 20.0
    min_dwell_s: float = 3.0
    max_tags: int = 5_000


@dataclass(frozen=True)
class OccupancySettings:
    window_s: float = 60.0
    min_rssi: int = -80
    max_devices: int = 10_000


@dataclass(frozen=True)
class HealthSettings:
    report_every_s: float = 3600.0
    low_battery_mv: int = 2500
    not_heard_s: float = 1800.0


@dataclass(frozen=True)
class SightingsSettings:
    interval_s: float = 1.0
    peer_ttl_s: float = 5.0


@dataclass(frozen=True)
class StationSettings:
    config_path: Path
    """The file these came from, named in every error about them."""
    zone_id: str
    adapter: str = "hci0"
    scan_mode: ScanMode = "passive"
    tag_namespace: bytes | None = None
    tag_ibeacon_uuid: bytes | None = None
    tag_measured_power: int | None = None
    path_loss_exponent: float = 2.0
    silence_s: float = 120.0
    artworks: tuple[ArtworkWatch, ...] = ()
    beacons: tuple[MuseumBeacon, ...] = ()
    proximity: ProximitySettings = ProximitySettings()
    occupancy: OccupancySettings = OccupancySettings()
    health: HealthSettings = HealthSettings()
    sightings: SightingsSettings = SightingsSettings()

    @classmethod
    def from_config(cls, config: ClientConfig, config_path: Path) -> StationSettings:
        """The `[gateway]` table of `config` (read from `config_path`); ValueError, one line, for a bad value."""
        config_path = Path(config_path)
        if "gateway" not in config.extra:
            raise ValueError(f"{config_path}: no [gateway] table; add one with at least zone_id = \"<room>\" "
                             "(see hardware/settings.py for every setting)")
        raw = _table(config.extra["gateway"], f"{config_path}: gateway", "[gateway] with settings under it")
        where = f"{config_path}: [gateway]"
        known_settings(raw, _KEYS, where)
        if "zone_id" not in raw:
            raise ValueError(f"{where} has no zone_id; add zone_id = \"<room>\", the zone_id of the room this "
                             "station is in (as in the content pack)")
        zone_id = _identifier(raw["zone_id"], "zone_id", where, "the zone_id of the station's room")

        adapter = raw.get("adapter", cls.adapter)
        if not isinstance(adapter, str) or _ADAPTER.match(adapter) is None:
            raise ValueError(f"{where} adapter must be a Bluetooth adapter name like \"hci0\", got {adapter!r}; "
                             "set it to one of the machine's adapters (`hciconfig` lists them)")
        scan_mode = raw.get("scan_mode", cls.scan_mode)
        if scan_mode not in ("passive", "active"):
            raise ValueError(f"{where} scan_mode must be \"passive\" or \"active\", got {scan_mode!r}; "
                             "correct the setting")

        namespace = _hex_bytes(raw.get("tag_namespace"), "tag_namespace", where, 10,
                               "the site's 10-byte Eddystone namespace as 20 hex digits")
        uuid = _uuid(raw.get("tag_ibeacon_uuid"), "tag_ibeacon_uuid", where)
        tag_power = _power(raw.get("tag_measured_power"), "tag_measured_power", where)
        exponent = number_setting(raw, "path_loss_exponent", cls.path_loss_exponent, (1.5, 4.0), where,
                           "a number (2 in free space, up to 4 in a crowded room)")
        silence = number_setting(raw, "silence_s", cls.silence_s, (10.0, 3600.0), where, "seconds")

        artworks = _artworks(raw.get("artworks", []), zone_id, where)
        if artworks and namespace is None and uuid is None:
            raise ValueError(f"{where} watches artworks but names no visitor tags; add tag_namespace (Eddystone) "
                             "or tag_ibeacon_uuid (iBeacon), as written on the site's tags")
        beacons = _beacons(raw.get("beacons", []), namespace, uuid, where)

        return cls(config_path=config_path, zone_id=zone_id, adapter=adapter, scan_mode=scan_mode,
                   tag_namespace=namespace, tag_ibeacon_uuid=uuid, tag_measured_power=tag_power,
                   path_loss_exponent=exponent, silence_s=silence, artworks=artworks, beacons=beacons,
                   proximity=_proximity(raw.get("proximity", {}), where),
                   occupancy=_occupancy(raw.get("occupancy", {}), where),
                   health=_health(raw.get("health", {}), where),
                   sightings=_sightings(raw.get("sightings", {}), where))


# --- the sub-tables -------------------------------------------------------------------------------------------

def _artworks(value: Any, station_zone: str, where: str) -> tuple[ArtworkWatch, ...]:
    items = _list(value, "artworks", where, "[[gateway.artworks]] tables", MAX_ARTWORKS)
    found: list[ArtworkWatch] = []
    for number, item in enumerate(items, 1):
        place = f"{where.removesuffix(' [gateway]')} [[gateway.artworks]] #{number}"
        raw = _table(item, place, "a table with id, enter_m and leave_m")
        if "id" not in raw:
            raise ValueError(f"{place} has no id; add id = \"<artwork_id>\", as in the content pack")
        artwork_id = _identifier(raw["id"], "id", place, "the artwork_id of the work, as in the content pack")
        place = f"{place} ({artwork_id})"
        known_settings(raw, _ARTWORK_KEYS, place)
        zone = _identifier(raw.get("zone_id", station_zone), "zone_id", place, "the zone_id of the work's room")
        enter = number_setting(raw, "enter_m", ArtworkWatch.enter_m, (0.2, 20.0), place, "metres")
        leave = number_setting(raw, "leave_m", max(ArtworkWatch.leave_m, enter + 0.5), (0.3, 30.0), place, "metres")
        if leave <= enter:
            raise ValueError(f"{place} leave_m ({leave:g}) must be more than enter_m ({enter:g}), or visits "
                             "flap at the boundary; make it at least 0.5 m more")
        if any(other.artwork_id == artwork_id for other in found):
            raise ValueError(f"{place} is listed twice; keep one table per artwork")
        found.append(ArtworkWatch(artwork_id, zone, enter, leave))
    return tuple(found)


def _beacons(value: Any, tag_namespace: bytes | None, tag_uuid: bytes | None, where: str) -> tuple[MuseumBeacon, ...]:
    items = _list(value, "beacons", where, "[[gateway.beacons]] tables", MAX_BEACONS)
    found: list[MuseumBeacon] = []
    identities: dict[tuple[Any, ...], str] = {}
    for number, item in enumerate(items, 1):
        place = f"{where.removesuffix(' [gateway]')} [[gateway.beacons]] #{number}"
        raw = _table(item, place, "a table with id and eddystone or ibeacon")
        if "id" not in raw:
            raise ValueError(f"{place} has no id; add id = \"<name>\", the beacon's name for staff "
                             "(lowercase letters, digits and '-')")
        beacon_id = _identifier(raw["id"], "id", place, "the beacon's name (lowercase letters, digits and '-')")
        place = f"{place} ({beacon_id})"
        known_settings(raw, _BEACON_KEYS, place)
        if ("eddystone" in raw) == ("ibeacon" in raw):
            raise ValueError(f"{place} needs exactly one of eddystone = \"<namespace>:<instance>\" or "
                             "ibeacon = \"<uuid>:<major>:<minor>\"; give the identity the beacon broadcasts")
        eddystone = ibeacon = None
        if "eddystone" in raw:
            eddystone = _eddystone_identity(raw["eddystone"], place)
            if eddystone[0] == tag_namespace:
                raise ValueError(f"{place} eddystone uses tag_namespace, which is for visitor tags; give museum "
                                 "beacons another namespace")
            identity: tuple[Any, ...] = ("eddystone", *eddystone)
        else:
            ibeacon = _ibeacon_identity(raw["ibeacon"], place)
            if ibeacon[0] == tag_uuid:
                raise ValueError(f"{place} ibeacon uses tag_ibeacon_uuid, which is for visitor tags; give museum "
                                 "beacons another UUID")
            identity = ("ibeacon", *ibeacon)
        if any(other.beacon_id == beacon_id for other in found):
            raise ValueError(f"{place} id is used twice; give each beacon its own name")
        if identity in identities:
            raise ValueError(f"{place} has the same identity as {identities[identity]}; correct it: each beacon "
                             "broadcasts its own")
        identities[identity] = beacon_id
        found.append(MuseumBeacon(beacon_id, eddystone, ibeacon,
                                  _power(raw.get("measured_power"), "measured_power", place)))
    return tuple(found)


def _proximity(value: Any, where: str) -> ProximitySettings:
    raw = _table(value, f"{where} proximity", "[gateway.proximity] with settings under it")
    place = where.removesuffix(" [gateway]") + " [gateway.proximity]"
    known_settings(raw, ("leave_after_s", "min_dwell_s", "max_tags"), place)
    return ProximitySettings(
        leave_after_s=number_setting(raw, "leave_after_s", ProximitySettings.leave_after_s, (3.0, 600.0), place,
                                     "seconds"),
        min_dwell_s=number_setting(raw, "min_dwell_s", ProximitySettings.min_dwell_s, (0.0, 120.0), place, "seconds"),
        max_tags=_integer(raw, "max_tags", ProximitySettings.max_tags, (10, 50_000), place))


def _occupancy(value: Any, where: str) -> OccupancySettings:
    raw = _table(value, f"{where} occupancy", "[gateway.occupancy] with settings under it")
    place = where.removesuffix(" [gateway]") + " [gateway.occupancy]"
    known_settings(raw, ("window_s", "min_rssi", "max_devices"), place)
    return OccupancySettings(
        window_s=number_setting(raw, "window_s", OccupancySettings.window_s, (10.0, 3600.0), place, "seconds"),
        min_rssi=_integer(raw, "min_rssi", OccupancySettings.min_rssi, (-110, -30), place, "dBm"),
        # The event's count is at most 100 000; beyond that no room in a museum is plausible either.
        max_devices=_integer(raw, "max_devices", OccupancySettings.max_devices, (10, 100_000), place))


def _health(value: Any, where: str) -> HealthSettings:
    raw = _table(value, f"{where} health", "[gateway.health] with settings under it")
    place = where.removesuffix(" [gateway]") + " [gateway.health]"
    known_settings(raw, ("report_every_s", "low_battery_mv", "not_heard_s"), place)
    return HealthSettings(
        report_every_s=number_setting(raw, "report_every_s", HealthSettings.report_every_s, (60.0, 86_400.0), place,
                               "seconds"),
        low_battery_mv=_integer(raw, "low_battery_mv", HealthSettings.low_battery_mv, (1000, 5000), place,
                                "millivolts"),
        not_heard_s=number_setting(raw, "not_heard_s", HealthSettings.not_heard_s, (60.0, 7 * 86_400.0), place,
                            "seconds"))


def _sightings(value: Any, where: str) -> SightingsSettings:
    raw = _table(value, f"{where} sightings", "[gateway.sightings] with settings under it")
    place = where.removesuffix(" [gateway]") + " [gateway.sightings]"
    known_settings(raw, ("interval_s", "peer_ttl_s"), place)
    interval = number_setting(raw, "interval_s", SightingsSettings.interval_s, (0.2, 30.0), place, "seconds")
    ttl = number_setting(raw, "peer_ttl_s", max(SightingsSettings.peer_ttl_s, 3 * interval), (1.0, 120.0), place,
                  "seconds")
    if ttl < 2 * interval:
        # A peer's view must outlive at least one missed message, or rooms flip whenever one is lost.
        raise ValueError(f"{place} peer_ttl_s ({ttl:g}) must be at least twice interval_s ({interval:g}); "
                         "raise peer_ttl_s or lower interval_s")
    return SightingsSettings(interval, ttl)


# --- values ---------------------------------------------------------------------------------------------------

def _table(value: Any, what: str, shape: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a table ({shape}); correct the file")
    return value


def _list(value: Any, name: str, where: str, shape: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} {name} must be a list of {shape}; correct the file")
    if len(value) > limit:
        raise ValueError(f"{where} lists {len(value)} {name}, at most {limit}; list only this station's")
    return value


def _identifier(value: Any, name: str, where: str, meaning: str) -> str:
    if not isinstance(value, str) or IDENTIFIER.match(value) is None:
        raise ValueError(f"{where} {name} must be {meaning} (lowercase letters, digits and '-', at most 63), "
                         f"got {value!r}; correct the setting")
    return value


def _integer(raw: dict[str, Any], name: str, default: int, bounds: tuple[int, int], where: str,
             unit: str = "a whole number") -> int:
    shown = f"a whole number of {unit}" if unit != "a whole number" else unit
    return whole_number_setting(raw, name, default, bounds, where, shown)


def _power(value: Any, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 0:
        raise ValueError(f"{where} {name} must be the RSSI at 1 m in whole dBm, from -100 to 0 (typically about "
                         f"-60), got {value!r}; correct the setting or remove it to use what the frames say")
    return value


def _hex_bytes(value: Any, name: str, where: str, size: int, meaning: str) -> bytes | None:
    if value is None:
        return None
    text = value.lower() if isinstance(value, str) else None
    if text is None or len(text) != 2 * size or _HEX.match(text) is None:
        raise ValueError(f"{where} {name} must be {meaning}, got {value!r}; correct the setting")
    return bytes.fromhex(text)


def _uuid(value: Any, name: str, where: str) -> bytes | None:
    if value is None:
        return None
    text = value.replace("-", "").lower() if isinstance(value, str) else ""
    if len(text) != 32 or _HEX.match(text) is None:
        raise ValueError(f"{where} {name} must be a UUID like \"e2c56db5-dffb-48d2-b060-d0f5a71096e0\", got "
                         f"{value!r}; correct the setting")
    return bytes.fromhex(text)


def _eddystone_identity(value: Any, where: str) -> tuple[bytes, bytes]:
    parts = value.split(":") if isinstance(value, str) else []
    fix = ("must be \"<namespace>:<instance>\", 20 and 12 hex digits like \"6d757365756d2d62636e:0000000000a1\", "
           f"got {value!r}; correct the setting")
    if len(parts) != 2:
        raise ValueError(f"{where} eddystone {fix}")
    namespace, instance = (part.strip().lower() for part in parts)
    if len(namespace) != 20 or len(instance) != 12 or _HEX.match(namespace + instance) is None:
        raise ValueError(f"{where} eddystone {fix}")
    return bytes.fromhex(namespace), bytes.fromhex(instance)


def _ibeacon_identity(value: Any, where: str) -> tuple[bytes, int, int]:
    parts = value.split(":") if isinstance(value, str) else []
    fix = ("must be \"<uuid>:<major>:<minor>\" like \"e2c56db5-dffb-48d2-b060-d0f5a71096e1:1:7\" (major and minor "
           f"0–65535), got {value!r}; correct the setting")
    if len(parts) != 3:
        raise ValueError(f"{where} ibeacon {fix}")
    text = parts[0].strip().replace("-", "").lower()
    numbers = [part.strip() for part in parts[1:]]
    if (len(text) != 32 or _HEX.match(text) is None or not all(n.isascii() and n.isdigit() for n in numbers)
            or not all(0 <= int(n) <= 0xFFFF for n in numbers)):
        raise ValueError(f"{where} ibeacon {fix}")
    return bytes.fromhex(text), int(numbers[0]), int(numbers[1])


__all__ = ["ArtworkWatch", "HealthSettings", "MuseumBeacon", "OccupancySettings", "ProximitySettings",
           "SightingsSettings", "StationSettings"]
