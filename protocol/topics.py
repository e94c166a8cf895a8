"""The topic scheme, version 1.

    museum/v1/{site}/devices/{device}/events       device → hub   events, one per message or a batch envelope (QoS 1)
    museum/v1/{site}/devices/{device}/status       device → all   retained presence; the MQTT will sets "offline"
    museum/v1/{site}/devices/{device}/commands     site → device  commands (QoS 1), sent by `museum device command`
    museum/v1/{site}/devices/{device}/acks         hub → device   which events the hub has committed (QoS 1)
    museum/v1/{site}/devices/{device}/screenshots  device → hub   a PNG answering a `screenshot` command (QoS 1)
    museum/v1/{site}/devices/{device}/sightings    station → stations  the tags a BLE station hears now (QoS 0)
    museum/v1/{site}/content                       hub → all      retained announcement of the current content pack

The device segment equals the device's MQTT username, which is how the broker's ACL confines each device to
its own topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from protocol.errors import ContractError
from protocol.fields import IDENTIFIER

ROOT = "museum"
VERSION = "v1"
DeviceChannel = Literal["events", "status", "commands", "acks", "screenshots", "sightings"]
DEVICE_CHANNELS: tuple[DeviceChannel, ...] = ("events", "status", "commands", "acks", "screenshots", "sightings")


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or IDENTIFIER.match(value) is None:
        raise ContractError("invalid_topic", f"{kind} {value!r} is not an identifier "
                            "(lowercase letters, digits and '-', at most 63)")
    return value


def device_topic(site_id: str, device_id: str, channel: DeviceChannel) -> str:
    if channel not in DEVICE_CHANNELS:
        raise ContractError("invalid_topic", f"unknown device channel {channel!r}")
    return f"{ROOT}/{VERSION}/{_check_id('site', site_id)}/devices/{_check_id('device', device_id)}/{channel}"


def events_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "events")


def status_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "status")


def commands_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "commands")


def acks_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "acks")


def screenshots_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "screenshots")


def sightings_topic(site_id: str, device_id: str) -> str:
    return device_topic(site_id, device_id, "sightings")


def content_topic(site_id: str) -> str:
    return f"{ROOT}/{VERSION}/{_check_id('site', site_id)}/content"


def all_devices(site_id: str, channel: DeviceChannel) -> str:
    """Subscription filter for one channel of every device of a site."""
    if channel not in DEVICE_CHANNELS:
        raise ContractError("invalid_topic", f"unknown device channel {channel!r}")
    return f"{ROOT}/{VERSION}/{_check_id('site', site_id)}/devices/+/{channel}"


@dataclass(frozen=True)
class Topic:
    site_id: str
    channel: str
    device_id: str | None = None


def parse_topic(topic: str) -> Topic:
    """Split a topic of this scheme into its parts; anything else raises ContractError('invalid_topic')."""
    parts = topic.split("/")
    if parts[0] != ROOT:
        raise ContractError("invalid_topic", f"{topic[:200]!r} is not under {ROOT}/")
    if len(parts) < 4:
        raise ContractError("invalid_topic", f"{topic[:200]!r} is too short for scheme {VERSION}")
    if parts[1] != VERSION:
        raise ContractError("invalid_topic",
                            f"topic scheme {parts[1]!r} is not supported (this build speaks {VERSION})")
    site = _check_id("site", parts[2])
    if len(parts) == 4 and parts[3] == "content":
        return Topic(site, "content")
    if len(parts) == 6 and parts[3] == "devices" and parts[5] in DEVICE_CHANNELS:
        return Topic(site, parts[5], _check_id("device", parts[4]))
    raise ContractError("invalid_topic", f"{topic[:200]!r} is not a topic of scheme {VERSION}")
