"""Who a beacon frame is: one of the site's visitor tags, one of its museum beacons, or neither; and the text of
the QR code printed on a tag.

A tag advertises Eddystone-UID under the site's namespace (id `t-` + the 6-byte instance in hex) or iBeacon under
the site's UUID (id `t-` + major and minor as 4 hex digits each), so the two forms never collide. Its QR code
reads `MUSEUM-TAG:<site_id>:<tag_id>`, e.g. `MUSEUM-TAG:demo:t-00000000002a`.

`tag_qr_text` and `parse_tag_qr` are pure and use only `re` (the QR reader imports them); the module's one other
import, `hardware.beacons`, is pure standard-library code too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hardware.beacons import EddystoneUID, Frame, IBeacon

if TYPE_CHECKING:
    from hardware.settings import MuseumBeacon, StationSettings

TAG_QR_PREFIX = "MUSEUM-TAG:"
TAG_ID = re.compile(r"^t-(?:[0-9a-f]{8}|[0-9a-f]{12})\Z")
_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")  # protocol.fields.IDENTIFIER, kept local: no imports here
_MAX_QR_TEXT = 200


def tag_id_for(frame: Frame, settings: StationSettings) -> str | None:
    """The visitor tag `frame` comes from, or None if it is not one of the site's tags."""
    if type(frame) is EddystoneUID:
        if settings.tag_namespace is not None and frame.namespace == settings.tag_namespace:
            return "t-" + frame.instance.hex()
    elif type(frame) is IBeacon and settings.tag_ibeacon_uuid is not None and frame.uuid == settings.tag_ibeacon_uuid:
        return f"t-{frame.major:04x}{frame.minor:04x}"
    return None


class Identities:
    """Tag and museum-beacon lookup by frame, built once from the settings (dictionary lookups only)."""

    __slots__ = ("_by_eddystone", "_by_ibeacon", "_tag_namespace", "_tag_uuid")

    def __init__(self, settings: StationSettings) -> None:
        self._tag_namespace = settings.tag_namespace
        self._tag_uuid = settings.tag_ibeacon_uuid
        self._by_eddystone: dict[tuple[bytes, bytes], MuseumBeacon] = {}
        self._by_ibeacon: dict[tuple[bytes, int, int], MuseumBeacon] = {}
        for beacon in settings.beacons:
            if beacon.eddystone is not None:
                self._by_eddystone[beacon.eddystone] = beacon
            if beacon.ibeacon is not None:
                self._by_ibeacon[beacon.ibeacon] = beacon

    def tag_id(self, frame: Frame) -> str | None:
        if type(frame) is EddystoneUID:
            if frame.namespace == self._tag_namespace:
                return "t-" + frame.instance.hex()
        elif type(frame) is IBeacon and frame.uuid == self._tag_uuid:
            return f"t-{frame.major:04x}{frame.minor:04x}"
        return None

    def beacon(self, frame: Frame) -> MuseumBeacon | None:
        """The configured museum beacon that sent `frame`, if any."""
        if type(frame) is EddystoneUID:
            return self._by_eddystone.get((frame.namespace, frame.instance))
        if type(frame) is IBeacon:
            return self._by_ibeacon.get((frame.uuid, frame.major, frame.minor))
        return None


def tag_qr_text(site_id: str, tag_id: str) -> str:
    """The text of the QR code printed on a tag."""
    if _SITE_ID.match(site_id) is None or TAG_ID.match(tag_id) is None:
        raise ValueError(f"not a site id and tag id: {site_id!r}, {tag_id!r}")
    return f"{TAG_QR_PREFIX}{site_id}:{tag_id}"


def parse_tag_qr(text: str) -> tuple[str, str] | None:
    """(site_id, tag_id) from a tag's QR text, or None if it is not one.

    Upper case is accepted and lowered: a QR encoder may upper-case everything to use the compact alphanumeric
    mode, and ids are lower case by definition, so nothing is lost."""
    if not isinstance(text, str) or len(text) > _MAX_QR_TEXT:
        return None
    text = text.strip()
    if text[:len(TAG_QR_PREFIX)].upper() != TAG_QR_PREFIX:
        return None
    parts = text[len(TAG_QR_PREFIX):].lower().split(":")
    if len(parts) != 2:
        return None
    site_id, tag_id = parts
    if _SITE_ID.match(site_id) is None or TAG_ID.match(tag_id) is None:
        return None
    return site_id, tag_id


__all__ = ["TAG_ID", "TAG_QR_PREFIX", "Identities", "parse_tag_qr", "tag_id_for", "tag_qr_text"]
