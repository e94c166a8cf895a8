"""Messages that are not events: presence, acknowledgements, commands, content announcements, screenshots,
BLE stations' sightings.

They travel on their own topics (see `protocol.topics`) and are encoded by `protocol.codec` like events:
strict JSON objects with exactly the fields below. A screenshot is the one binary message: a one-line JSON header,
then the PNG bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

PresenceState = Literal["online", "offline"]


@dataclass(frozen=True)
class Presence:
    """Retained on a device's status topic: `online` when it connects, `offline` (its MQTT will, or a clean
    stop) when it goes away. `since` is when the state was set (for a will: when the connection was made)."""

    device_id: str
    state: PresenceState
    kind: str
    software_version: str
    since: datetime


@dataclass(frozen=True)
class Rejection:
    event_id: str
    reason: str


@dataclass(frozen=True)
class Ack:
    """The hub's end-to-end acknowledgement: `committed` events are stored durably (or were already);
    `rejected` ones were quarantined with their reason. Either way the device may forget them."""

    committed: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()


ArgValue = str | int | float | bool


@dataclass(frozen=True)
class Command:
    """An instruction from the hub to one device; the device answers with a `command.result` event."""

    command_id: str
    name: str
    issued_at: datetime
    args: dict[str, ArgValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ContentAnnouncement:
    """Retained on the site's content topic: the content pack every device should be showing, and where to fetch
    it. `url` is an https URL on the site server (`museum content serve`), `size` the pack file's length in bytes
    and `sha256` its digest: a device resumes a download up to `size` and keeps it only if the digest matches."""

    pack_id: str
    pack_version: str
    sha256: str
    announced_at: datetime
    url: str
    size: int


@dataclass(frozen=True)
class Screenshot:
    """A device's PNG picture of its screen, sent in answer to a `screenshot` command on the device's own
    screenshots topic, never with its events. The frame is a one-line strict JSON header `{"command_id",
    "taken_at", "png_bytes"}`, a newline, then exactly `png_bytes` bytes of PNG (signature, IHDR first, IEND last),
    at most `MAX_MESSAGE_BYTES` in all. Who sent it is the device segment of the topic, never the payload."""

    command_id: str
    taken_at: datetime
    png: bytes = field(repr=False)


MAX_SIGHTINGS = 2_000
"""Tags one sightings message may carry: more than any room holds, few enough to bound a peer's memory."""


@dataclass(frozen=True)
class Sightings:
    """A BLE station's latest view of the visitor tags it hears, for the other stations of the site: each tag's
    smoothed distance in metres. Stations use it to decide, when several hear one tag, which room it is in (the
    nearest station wins). Sent at most about once a second and only when it changed (QoS 0, not retained): it is
    a state, not a log, and the site server stores none of it. `at` is when the station computed it; a peer
    ignores sightings older than a few seconds. At most `MAX_SIGHTINGS` tags."""

    device_id: str
    zone_id: str
    at: datetime
    tags: tuple[tuple[str, float], ...] = ()
