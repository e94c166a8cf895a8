"""Who a beacon frame is: one of the site's visitor tags, one of its museum beacons, or neither.

A tag advertises Eddystone-UID under the site's namespace (id `t-` + the 6-byte instance in hex) or iBeacon under
the site's UUID (id `t-` + major and minor as 4 hex digits each), so the two forms never collide. The text of the
QR code printed on a tag is `qr.codes.tag_qr_text`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hardware.beacons import EddystoneUID, Frame, IBeacon

if TYPE_CHECKING:
    from hardware.settings import MuseumBeacon, StationSettings



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


__all__ = ["Identities", "tag_id_for"]
