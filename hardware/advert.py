"""One BLE advertisement as a station heard it: our own frozen type, made from bleak's objects at the boundary
(`hardware.ble`) or read back from a recording (`hardware.recording`), so that everything after the radio works
the same on live, recorded and simulated input."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Advert:
    at: float
    """When it was heard: UNIX time in seconds."""
    address: str
    """The sender's Bluetooth address as BlueZ reports it ("AA:BB:CC:DD:EE:FF"), often a random private address
    for phones. It stays in the station's memory only (see hardware.occupancy and docs/privacy.md)."""
    rssi: int
    """Received signal strength in dBm."""
    manufacturer_data: tuple[tuple[int, bytes], ...] = ()
    """(Bluetooth SIG company id, the bytes after the id), as in bleak's `AdvertisementData.manufacturer_data`."""
    service_data: tuple[tuple[str, bytes], ...] = ()
    """(128-bit service UUID in lowercase, e.g. "0000feaa-0000-1000-8000-00805f9b34fb", the data)."""
    service_uuids: tuple[str, ...] = ()
    tx_power: int | None = None
    """The advertised TX power level in dBm, when the advert carries one."""
    local_name: str | None = None


EDDYSTONE_SERVICE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
APPLE_COMPANY_ID = 0x004C
