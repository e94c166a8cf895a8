"""Anonymous occupancy: how many distinct devices (phones, watches) a station hears per window, as one number.

Each address is replaced, as soon as it is read, by a keyed hash (BLAKE2b, 8 bytes) under a random key drawn
with `secrets` for the window; at the window's end the count is handed on and the set of hashes AND the key are
dropped, so nothing can link a device across windows, and nothing about a device is ever written or sent. The
station's other per-address memory (the pipeline's frame cache, the TLM attribution) is keyed by the same hashes
and dropped with them.

What is counted: adverts that are no beacon format at all (`parse_advert` gives None), at least `min_rssi` strong.
Not counted: museum beacons, visitor tags, other beacons (any iBeacon, AltBeacon or Eddystone frame), malformed
beacon frames, and lost-item trackers, which are objects, not people: Apple Find My / AirTag frames (Apple
manufacturer data of type 0x12; an iPhone that is switched off also sends these), Samsung SmartTag (service
0xFD5A) and Tile (services 0xFEED, 0xFD84).

Limits, for whoever reads the figures: it counts devices, not people (a visitor with a phone and a watch counts
twice, one with no Bluetooth device not at all). Phones change their random address about every 15 minutes, so
a phone whose address rotates during a window counts twice in it; with the default 60 s window that happens to
about 1 phone in 15. The set holds at most `max_devices` hashes: beyond, the count saturates at that number and
the adverts that could not be counted are counted as overflow.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from hardware.advert import APPLE_COMPANY_ID, Advert
from hardware.settings import OccupancySettings

APPLE_FIND_MY = 0x12
"""The type byte of Apple's offline-finding (Find My) record in its manufacturer data."""
TRACKER_SERVICES = frozenset({
    "0000fd5a-0000-1000-8000-00805f9b34fb",  # Samsung SmartTag offline finding
    "0000feed-0000-1000-8000-00805f9b34fb",  # Tile
    "0000fd84-0000-1000-8000-00805f9b34fb",  # Tile
})
KEY_BYTES = 32


def is_tracker(advert: Advert) -> bool:
    """Whether the advert comes from a lost-item tracker (an object, not a person)."""
    for company_id, data in advert.manufacturer_data:
        if company_id == APPLE_COMPANY_ID and data and data[0] == APPLE_FIND_MY:
            return True
    return any(uuid in TRACKER_SERVICES for uuid, _ in advert.service_data)


@dataclass(frozen=True, slots=True)
class Count:
    zone_id: str
    count: int
    window_s: float
    at: float
    """The window's end."""
    saturated: bool


class OccupancyCounter:
    """Distinct devices per window; `pseudonym` is the only way an address enters it."""

    def __init__(self, zone_id: str, settings: OccupancySettings, on_count: Callable[[Count], None], *,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._zone_id = zone_id
        self._window_s = settings.window_s
        self._min_rssi = settings.min_rssi
        self._max = settings.max_devices
        self._on_count = on_count
        self._random_bytes = random_bytes
        self._seen: set[bytes] = set()
        self._keyed = hashlib.blake2b(key=random_bytes(KEY_BYTES), digest_size=8)
        self.window_end = float("inf")
        """When the current window ends (infinity until the first `roll` starts one)."""
        self.overflow = 0
        """Adverts of devices that could not be counted because the set was full (since start)."""
        self.windows = 0

    def pseudonym(self, address: str) -> bytes:
        """The address's hash under this window's key."""
        hashed = self._keyed.copy()
        hashed.update(address.encode())
        return hashed.digest()

    def observe(self, pseudonym: bytes, rssi: int) -> None:
        """A device's advert (not a beacon, not a tracker)."""
        if rssi < self._min_rssi:
            return
        seen = self._seen
        if len(seen) < self._max:
            seen.add(pseudonym)
        elif pseudonym not in seen:
            self.overflow += 1

    def roll(self, now: float) -> bool:
        """Start the first window, or end the current one if `now` is past it: hand on its count, drop the set and
        the key. True when the key changed (every pseudonym made before is now meaningless)."""
        if now < self.window_end:
            if self.window_end == float("inf"):
                self.window_end = now + self._window_s
            return False
        count = len(self._seen)
        end = self.window_end
        self._seen = set()
        self._keyed = hashlib.blake2b(key=self._random_bytes(KEY_BYTES), digest_size=8)
        # After a stall (no tick for a whole window) the next window starts now: nothing was heard in between.
        self.window_end = end + self._window_s if now < end + self._window_s else now + self._window_s
        self.windows += 1
        self._on_count(Count(self._zone_id, count, self._window_s, end, count >= self._max))
        return True


__all__ = ["APPLE_FIND_MY", "TRACKER_SERVICES", "Count", "OccupancyCounter", "is_tracker"]
