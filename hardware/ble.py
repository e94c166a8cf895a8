"""The station's radio: the only module that imports bleak (and dbus-fast, which bleak depends on).

- `scan()` runs one BleakScanner until told to stop, handing each advertisement on as our frozen `Advert`; any
  failure comes out as `ScanFault(kind, reason)` with one readable line for staff, never a bleak or D-Bus type.
- `power_cycle()` switches a BlueZ adapter off and on over D-Bus.
- `FakeRadio` + `fake_backend()` stand in for a Bluetooth adapter on machines without one: a real bleak backend
  class, so the unchanged `scan()` path (BleakScanner, bleak's detection callbacks, our conversion) runs on
  recordings, the gallery simulator or a test's adverts, with faults injected at known points in the stream.

Passive scanning on Linux needs BlueZ's AdvertisementMonitor API: BlueZ ≥ 5.56 started with experimental
features (`Experimental = true` under `[General]` in /etc/bluetooth/main.conf, or `bluetoothd --experimental`) and
Linux ≥ 5.10. Without it, `scan()` falls back to active scanning and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from hardware.advert import Advert

__all__ = [
    "FAKE_START_FAULTS",
    "FAULT_KINDS",
    "PASSIVE_OR_PATTERNS",
    "SCAN_MODES",
    "AdvertSource",
    "FakeRadio",
    "RateLimitedLog",
    "ScanFault",
    "adapter_event",
    "classify",
    "fake_backend",
    "power_cycle",
    "scan",
]

log = logging.getLogger(__name__)

SCAN_MODES = ("passive", "active")
FAULT_KINDS = ("no_adapter", "in_progress", "not_ready", "failed", "removed", "other")

# BlueZ's passive scanning reports only advertisements that match one of these "or patterns". BlueZ compares a
# pattern with the data of each AD structure of the pattern's type, from `start_position` (0 = the first byte after
# the AD type). So:
# - Eddystone frames are service data (AD 0x16) whose 16-bit UUID 0xFEAA comes first, little-endian: AA FE.
# - iBeacon (and everything else Apple: iPhones, watches) is manufacturer data (AD 0xFF) from company 0x004C,
#   little-endian: 4C 00.
# - AltBeacon is manufacturer data of any company with the beacon code BE AC after the 2-byte company id.
# - Phones and everything else: the Flags AD (0x01) has no "any value" pattern (a pattern needs ≥ 1 byte), so list
#   the flag bytes devices send: 0x02 and 0x06 (LE general discoverable, 0x06 also "BR/EDR not supported"), 0x1A
#   and 0x18 (dual-mode phones and laptops), 0x04 (non-discoverable beacons that still send Flags). Home
#   Assistant's passive scanning uses 0x02/0x06/0x1A the same way. Beacons that send no Flags at all are caught by
#   the first three patterns.
PASSIVE_OR_PATTERNS: tuple[OrPattern, ...] = (
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00"),
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
    *(OrPattern(0, AdvertisementDataType.FLAGS, bytes([flags])) for flags in (0x02, 0x04, 0x06, 0x18, 0x1A)),
)

BLUEZ = "org.bluez"
ADAPTER_INTERFACE = "org.bluez.Adapter1"
_STOP_TIMEOUT_S = 5.0
_POWER_TIMEOUT_S = 10.0
_REASON_MAX = 300


class ScanFault(Exception):
    """Why scanning failed or stopped: `kind` is one of FAULT_KINDS, `reason` one readable line for staff."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = _one_line(reason)
        super().__init__(kind, self.reason)

    def __str__(self) -> str:
        return self.reason


# ---------------------------------------------------------------------------------------------------------------
# Faults


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


_DBUS_ERROR_NAME = re.compile(r"org\.(?:bluez|freedesktop\.DBus)\.Error\.[A-Za-z]+")
_SWITCH_ON = "switch it on (`bluetoothctl power on`) and check `rfkill list`"


def _fault_for_dbus_error(name: str, details: str, adapter: str) -> ScanFault:
    suffix = f": {details}" if details else ""
    short = name.rsplit(".", 1)[-1]
    if short == "InProgress":
        return ScanFault("in_progress", f"adapter {adapter} is busy with another scan or operation ({name})")
    if short == "NotReady":
        return ScanFault("not_ready", f"adapter {adapter} is not ready ({name}): {_SWITCH_ON}")
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ScanFault("no_adapter", "bluetoothd is not running: start it with `sudo systemctl start bluetooth`")
    if name == "org.freedesktop.DBus.Error.UnknownObject":
        return ScanFault("removed", f"adapter {adapter} disappeared from BlueZ (unplugged, or bluetoothd restarted)")
    if short in ("AccessDenied", "NotAuthorized", "NotPermitted"):
        return ScanFault("other", f"not allowed to use Bluetooth over D-Bus ({name}): run the station as a user in "
                                  "the 'bluetooth' group")
    if short in ("NoReply", "Timeout", "TimedOut"):
        return ScanFault("failed", f"bluetoothd did not answer ({name})")
    if short == "Failed":
        return ScanFault("failed", f"bluetoothd could not scan on {adapter} ({name}){suffix}")
    return ScanFault("other", f"BlueZ refused ({name}){suffix}")


def classify(exc: BaseException, adapter: str) -> ScanFault:
    """Turn whatever bleak, dbus-fast or the OS raised into a ScanFault."""
    if isinstance(exc, ScanFault):
        return exc
    if isinstance(exc, BleakBluetoothNotAvailableError):
        reason = exc.reason
        if reason in (BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
                      BleakBluetoothNotAvailableReason.NO_BLE_CENTRAL_ROLE):
            return ScanFault("no_adapter", f"no Bluetooth LE adapter found ({exc.args[0]}): plug one in, or check "
                                           "`bluetoothctl list`")
        if reason is BleakBluetoothNotAvailableReason.POWERED_OFF:
            return ScanFault("not_ready", f"Bluetooth is switched off: {_SWITCH_ON}")
        return ScanFault("other", f"not allowed to use Bluetooth ({exc.args[0]}): run the station as a user in the "
                                  "'bluetooth' group")
    if isinstance(exc, BleakDBusError):
        return _fault_for_dbus_error(exc.dbus_error, exc.dbus_error_details or "", adapter)
    if isinstance(exc, DBusError):
        return _fault_for_dbus_error(exc.type, exc.text, adapter)
    if isinstance(exc, BleakError):
        text = str(exc)
        match = _DBUS_ERROR_NAME.search(text)
        if match:
            return _fault_for_dbus_error(match.group(0), "", adapter)
        if "not found" in text and "adapter" in text:
            return ScanFault("no_adapter", f"Bluetooth adapter {adapter} not found: check the [gateway] adapter "
                                           "setting and `bluetoothctl list`")
        if "No Bluetooth adapters" in text:
            return ScanFault("no_adapter", "no Bluetooth adapter found: plug one in, or check `bluetoothctl list`")
        return ScanFault("other", f"Bluetooth error: {text}")
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        # What bleak raises when there is no system D-Bus at all (measured: a bare FileNotFoundError).
        return ScanFault("no_adapter", "no Bluetooth here: the system D-Bus is not running "
                                       "(/run/dbus/system_bus_socket missing); install bluez and start dbus and "
                                       "bluetooth")
    if isinstance(exc, EOFError | ConnectionResetError | BrokenPipeError):
        return ScanFault("removed", "lost the connection to the system D-Bus (dbus or bluetoothd restarted)")
    if isinstance(exc, PermissionError):
        return ScanFault("other", f"permission denied on the system D-Bus ({exc}): run the station as a user in "
                                  "the 'bluetooth' group")
    if isinstance(exc, TimeoutError):
        return ScanFault("failed", "bluetoothd did not answer in time")
    return ScanFault("other", f"{type(exc).__name__}: {exc}")


_PASSIVE_NEEDS = re.compile(r"passive scanning .*requires BlueZ")


def _passive_refused(exc: BaseException) -> str | None:
    """Why BlueZ cannot scan passively (AdvertisementMonitor missing), or None for any other failure."""
    if isinstance(exc, BleakDBusError) and exc.dbus_error in (
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.bluez.Error.NotSupported",
    ):
        return f"{exc.dbus_error}: BlueZ has no AdvertisementMonitor"
    if isinstance(exc, BleakError) and _PASSIVE_NEEDS.search(str(exc)):
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Scanning


def to_advert(device: BLEDevice, data: AdvertisementData, at: float) -> Advert:
    """bleak's objects → our Advert (sorted, hashable, immutable)."""
    return Advert(
        at=at,
        address=str(device.address),
        rssi=int(data.rssi),
        manufacturer_data=tuple(sorted((int(k), bytes(v)) for k, v in data.manufacturer_data.items())),
        service_data=tuple(sorted((str(k).lower(), bytes(v)) for k, v in data.service_data.items())),
        service_uuids=tuple(str(u).lower() for u in data.service_uuids),
        tx_power=None if data.tx_power is None else int(data.tx_power),
        local_name=data.local_name,
    )


class RateLimitedLog:
    """The first error with its traceback, then one line every `every` errors: a bad callback cannot flood logs."""

    def __init__(self, what: str, every: int = 1000) -> None:
        self.what = what
        self.every = every
        self.count = 0

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        if self.count == 1:
            log.warning("%s failed (counted, scanning goes on)", self.what, exc_info=exc)
        elif self.count % self.every == 0:
            log.warning("%s failed %d times so far; latest: %r", self.what, self.count, exc)


_passive_refusals_told: set[str] = set()


AdapterWatch = Callable[[str], Awaitable["ScanFault | None"]]


async def scan(
    adapter: str,
    mode: str,
    on_advert: Callable[[Advert], None],
    stop: asyncio.Event,
    *,
    backend: type[BaseBleakScanner] | None = None,
    on_started: Callable[[str], None] | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Scan on `adapter` until `stop` is set; raises ScanFault when the scanner cannot start or stops on its own.

    `on_advert` gets each advertisement (it should only enqueue: it runs inside bleak's D-Bus message handling);
    an exception from it is logged and counted, never raised into bleak. `on_started(detail)` is called once the
    scanner runs, with a line like "passive scan on hci0". `backend`: a bleak backend class (None: the platform's,
    BlueZ here). A backend that can end (FakeRadio.end()) makes scan() return without `stop` being set."""
    if mode not in SCAN_MODES:
        raise ValueError(f"scan mode must be one of {SCAN_MODES}, not {mode!r}")
    errors = RateLimitedLog(f"the advert callback on {adapter}")

    def detected(device: BLEDevice, data: AdvertisementData) -> None:
        try:
            on_advert(to_advert(device, data, wall_clock()))
        except Exception as exc:  # raising into bleak would break its D-Bus handling, and the scan
            errors(exc)

    scanner, detail = await _start(adapter, mode, detected, backend)
    watch: AdapterWatch = getattr(backend, "watch_adapter", _never) if backend is not None else _watch_bluez_adapter
    stop_task = asyncio.create_task(stop.wait())
    gone_task = asyncio.create_task(_as_coroutine(watch(adapter)))
    try:
        if on_started is not None:
            on_started(detail)
        await asyncio.wait({stop_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set() and gone_task.done():
            try:
                fault = gone_task.result()
            except Exception as exc:
                raise classify(exc, adapter) from exc
            if fault is not None:
                raise fault
    finally:
        for task in (stop_task, gone_task):
            task.cancel()
        await asyncio.gather(stop_task, gone_task, return_exceptions=True)
        await _stop_quietly(scanner, adapter)


async def _as_coroutine(awaitable: Awaitable[ScanFault | None]) -> ScanFault | None:
    return await awaitable


async def _start(
    adapter: str, mode: str, callback: AdvertisementDataCallback, backend: type[BaseBleakScanner] | None
) -> tuple[BleakScanner, str]:
    def make(scan_mode: Literal["active", "passive"]) -> BleakScanner:
        bluez = BlueZScannerArgs(adapter=adapter)
        if scan_mode == "passive":
            bluez["or_patterns"] = list(PASSIVE_OR_PATTERNS)
        return BleakScanner(callback, None, scan_mode, bluez=bluez, backend=backend)

    try:
        scanner = make("passive" if mode == "passive" else "active")
        await scanner.start()
        return scanner, f"{mode} scan on {adapter}"
    except Exception as exc:
        why = _passive_refused(exc) if mode == "passive" else None
        if why is None:
            raise classify(exc, adapter) from exc
    if adapter not in _passive_refusals_told:
        _passive_refusals_told.add(adapter)
        log.warning("passive scanning refused on %s (%s): scanning actively instead. Passive scanning needs BlueZ "
                    "≥ 5.56 with Experimental = true in /etc/bluetooth/main.conf and Linux ≥ 5.10", adapter, why)
    try:
        scanner = make("active")
        await scanner.start()
    except Exception as exc:
        raise classify(exc, adapter) from exc
    return scanner, f"active scan on {adapter} (passive scanning refused: needs BlueZ experimental features)"


async def _stop_quietly(scanner: BleakScanner, adapter: str) -> None:
    # A scanner whose adapter vanished cannot be stopped cleanly (UnknownObject); that must not hide the fault.
    try:
        async with asyncio.timeout(_STOP_TIMEOUT_S):
            await scanner.stop()
    except Exception as exc:
        log.debug("stopping the scanner on %s: %s", adapter, classify(exc, adapter).reason)


async def _never(adapter: str) -> ScanFault | None:
    await asyncio.Event().wait()
    return None


def adapter_event(message: Message, adapter: str) -> ScanFault | None:
    """The fault a D-Bus signal means for a scan on `adapter`, or None when it is irrelevant."""
    if message.message_type != MessageType.SIGNAL:
        return None
    path = f"/org/bluez/{adapter}"
    body = message.body
    if message.member == "InterfacesRemoved" and len(body) >= 2 and body[0] == path and ADAPTER_INTERFACE in body[1]:
        return ScanFault("removed", f"adapter {adapter} disappeared (unplugged, or bluetoothd restarted)")
    if message.member == "PropertiesChanged" and message.path == path and len(body) >= 2 \
            and body[0] == ADAPTER_INTERFACE:
        powered = body[1].get("Powered")
        if isinstance(powered, Variant) and powered.value is False:
            return ScanFault("not_ready", f"adapter {adapter} was switched off: {_SWITCH_ON}")
    if message.member == "NameOwnerChanged" and len(body) >= 3 and body[0] == BLUEZ and not body[2]:
        return ScanFault("removed", "bluetoothd stopped (org.bluez left the system D-Bus)")
    return None


async def _watch_bluez_adapter(adapter: str) -> ScanFault | None:
    """Returns a fault when the adapter vanishes, is switched off, or bluetoothd or D-Bus goes away mid-scan.
    bleak itself does not tell a scanner any of this: its adverts simply stop. Conservative: anything unexpected
    while watching only stops the watch (a scan that works must not be restarted for it); a stuck scanner is
    still caught by its silence."""
    path = f"/org/bluez/{adapter}"
    rules = (
        f"type='signal',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesRemoved',arg0path='{path}'",
        f"type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',path='{path}'",
        f"type='signal',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BLUEZ}'",
    )
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except Exception as exc:
        log.warning("cannot watch adapter %s for removal: %s", adapter, classify(exc, adapter).reason)
        return await _never(adapter)
    gone: asyncio.Future[ScanFault] = asyncio.get_running_loop().create_future()

    def handler(message: Message) -> None:
        fault = adapter_event(message, adapter)
        if fault is not None and not gone.done():
            gone.set_result(fault)

    bus.add_message_handler(handler)
    disconnected = asyncio.create_task(bus.wait_for_disconnect())
    try:
        try:
            for rule in rules:
                reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                               interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                                               body=[rule]))
                if reply is not None and reply.message_type == MessageType.ERROR:
                    raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", "AddMatch refused")
            # The adapter may have gone between the scanner's start and the subscription.
            reply = await bus.call(Message(destination=BLUEZ, path=path, interface="org.freedesktop.DBus.Properties",
                                           member="Get", signature="ss", body=[ADAPTER_INTERFACE, "Powered"]))
        except Exception as exc:
            log.warning("cannot watch adapter %s for removal: %s", adapter, classify(exc, adapter).reason)
            return await _never(adapter)
        if reply is not None and reply.message_type == MessageType.ERROR:
            if reply.error_name in ("org.freedesktop.DBus.Error.UnknownObject",
                                    "org.freedesktop.DBus.Error.UnknownInterface"):
                return ScanFault("removed", f"adapter {adapter} disappeared (unplugged, or bluetoothd restarted)")
        elif reply is not None and reply.body and isinstance(reply.body[0], Variant) \
                and reply.body[0].value is False:
            return ScanFault("not_ready", f"adapter {adapter} was switched off: {_SWITCH_ON}")
        await asyncio.wait({gone, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            return gone.result()
        return ScanFault("removed", "lost the connection to the system D-Bus (dbus restarted)")
    finally:
        disconnected.cancel()
        bus.disconnect()
        with contextlib.suppress(BaseException):
            await disconnected


async def power_cycle(adapter: str, *, settle_s: float = 1.0) -> None:
    """Switch `adapter` off and on (org.bluez.Adapter1.Powered over D-Bus): clears a controller or bluetoothd
    discovery state that restarts alone do not. Raises ScanFault when it cannot."""
    try:
        async with asyncio.timeout(_POWER_TIMEOUT_S * 2 + settle_s):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            try:
                for powered in (False, True):
                    reply = await bus.call(Message(
                        destination=BLUEZ, path=f"/org/bluez/{adapter}", interface="org.freedesktop.DBus.Properties",
                        member="Set", signature="ssv", body=[ADAPTER_INTERFACE, "Powered", Variant("b", powered)]))
                    if reply is not None and reply.message_type == MessageType.ERROR:
                        details = str(reply.body[0]) if reply.body else ""
                        raise _fault_for_dbus_error(reply.error_name or "", details, adapter)
                    if not powered:
                        # Give the controller a moment off: an immediate on can race the off's completion.
                        await asyncio.sleep(settle_s)
            finally:
                bus.disconnect()
    except ScanFault:
        raise
    except Exception as exc:
        fault = classify(exc, adapter)
        raise ScanFault(fault.kind, f"cannot power-cycle {adapter}: {fault.reason}") from exc
    log.info("power-cycled Bluetooth adapter %s", adapter)


# ---------------------------------------------------------------------------------------------------------------
# The fake radio: a bleak backend fed with our Adverts


@dataclass(frozen=True, slots=True)
class _Marker:
    what: Literal["silent", "remove", "end"]


@dataclass(frozen=True, slots=True)
class FakeStart:
    """One start of a fake scanner, as bleak handed it to the backend."""

    adapter: str | None
    mode: str
    or_patterns: tuple[Any, ...]


_FAULTS_AT_START: dict[str, Callable[[str], BaseException]] = {
    # Each as bleak 3 raises it on a real machine.
    "in_progress": lambda a: BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
    "not_ready": lambda a: BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]),
    "failed": lambda a: BleakDBusError("org.bluez.Error.Failed", ["Failed to start discovery"]),
    "no_dbus": lambda a: FileNotFoundError(2, "No such file or directory"),
    "no_adapter": lambda a: BleakError(f"adapter '{a}' not found"),
    "no_bluetooth": lambda a: BleakBluetoothNotAvailableError(
        "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH),
    "powered_off": lambda a: BleakBluetoothNotAvailableError(
        "No powered Bluetooth adapters found. Turn on Bluetooth and try again.",
        BleakBluetoothNotAvailableReason.POWERED_OFF),
    "passive_refused": lambda a: BleakError(
        "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled and Linux kernel >= 5.10"),
}


class FakeRadio:
    """A pretend adapter: a stream of Adverts and fault markers, delivered in order to the running fake scanner.

    Stream markers, in order with the adverts: `go_silent()` (the scanner stops delivering until it is restarted),
    `remove_adapter()` (the running scan ends with ScanFault "removed"; the next start works again, as after a
    replug), `end()` (the scan returns once the adverts before it are delivered). Start faults, one per start:
    `fail_next_start(kind)` (a kind of FAKE_START_FAULTS, raised as bleak raises it, or an exception instance),
    `hang_next_start()`; and `refuse_passive()`. `power_cycle` is awaitable like `hardware.ble.power_cycle` and
    records its calls (`fail_next_power_cycle()`). Pending items are bounded (`max_pending`, oldest dropped and
    counted in `dropped`), like a radio that misses adverts nobody listens to."""

    def __init__(self, *, max_pending: int = 100_000, max_devices: int = 4096, keep_time: bool = True) -> None:
        self.max_pending = max_pending
        self.max_devices = max_devices
        self.keep_time = keep_time
        self.dropped = 0
        self.delivered = 0
        self.stops = 0
        self.start_calls = 0
        """Starts asked for, including those that failed; `starts` holds the ones that succeeded."""
        self.starts: deque[FakeStart] = deque(maxlen=1000)
        self.power_cycles: deque[str] = deque(maxlen=1000)
        self.refusing_passive = False
        self._items: deque[Advert | _Marker] = deque()
        self._wake = asyncio.Event()
        self._start_faults: deque[str | BaseException] = deque()
        self._power_faults: deque[ScanFault] = deque()
        self._scanner: _FakeScanner | None = None
        self._now: float | None = None

    # The stream
    def put(self, advert: Advert) -> None:
        self._append(advert)

    def put_many(self, adverts: Iterable[Advert]) -> None:
        for advert in adverts:
            self._append(advert)

    def go_silent(self) -> None:
        self._append(_Marker("silent"))

    def remove_adapter(self) -> None:
        self._append(_Marker("remove"))

    def end(self) -> None:
        self._append(_Marker("end"))

    @property
    def pending(self) -> int:
        return len(self._items)

    def _append(self, item: Advert | _Marker) -> None:
        if len(self._items) >= self.max_pending:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wake.set()

    # Faults outside the stream
    def fail_next_start(self, kind: str | BaseException) -> None:
        if isinstance(kind, str) and kind not in _FAULTS_AT_START:
            raise ValueError(f"unknown fake start fault {kind!r}; one of {sorted(_FAULTS_AT_START)}")
        self._start_faults.append(kind)

    def hang_next_start(self) -> None:
        """The next start never returns (bluetoothd not answering a D-Bus call)."""
        self._start_faults.append("hang")

    def refuse_passive(self, refuse: bool = True) -> None:
        self.refusing_passive = refuse

    def fail_next_power_cycle(self, kind: str = "failed", reason: str = "power cycle refused (fake)") -> None:
        self._power_faults.append(ScanFault(kind, reason))

    async def power_cycle(self, adapter: str) -> None:
        self.power_cycles.append(adapter)
        if self._power_faults:
            raise self._power_faults.popleft()

    def wall_clock(self) -> float:
        """The `at` of the advert being delivered (keep_time) so replays keep their recorded times; else now."""
        return self._now if self._now is not None else time.time()

    # Used by the fake scanner
    async def _on_start(self, scanner: _FakeScanner) -> None:
        self.start_calls += 1
        adapter = scanner.adapter or "hci0"
        if self._start_faults:
            fault = self._start_faults.popleft()
            if fault == "hang":
                await asyncio.Event().wait()
            raise _FAULTS_AT_START[fault](adapter) if isinstance(fault, str) else fault
        if scanner.scanning_mode == "passive" and self.refusing_passive:
            raise _FAULTS_AT_START["passive_refused"](adapter)
        self.starts.append(FakeStart(scanner.adapter, scanner.scanning_mode, tuple(scanner.or_patterns)))
        self._scanner = scanner


FAKE_START_FAULTS = tuple(sorted(_FAULTS_AT_START))
AdvertSource = FakeRadio


class _FakeScanner(BaseBleakScanner):
    """bleak backend driven by a FakeRadio; subclassed per radio by fake_backend()."""

    radio: ClassVar[FakeRadio]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        bluez: BlueZScannerArgs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        bluez = bluez or BlueZScannerArgs()
        self.scanning_mode = scanning_mode
        self.adapter = bluez.get("adapter")
        self.or_patterns = list(bluez.get("or_patterns") or [])
        if scanning_mode == "passive" and not self.or_patterns:
            raise BleakError("passive scanning mode requires bluez or_patterns")  # as bleak's BlueZ backend
        self._task: asyncio.Task[None] | None = None
        self._gone: asyncio.Future[ScanFault | None] | None = None

    async def start(self) -> None:
        await self.radio._on_start(self)
        self.seen_devices = {}
        self._gone = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._deliver())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.radio.stops += 1
        if self.radio._scanner is self:
            self.radio._scanner = None

    @classmethod
    async def watch_adapter(cls, adapter: str) -> ScanFault | None:
        scanner = cls.radio._scanner
        if scanner is None or scanner._gone is None:
            return await _never(adapter)
        return await asyncio.shield(scanner._gone)

    async def _deliver(self) -> None:
        radio = self.radio
        items = radio._items
        delivered = 0
        while True:
            if not items:
                radio._wake.clear()
                await radio._wake.wait()
                continue
            item = items.popleft()
            if isinstance(item, Advert):
                self._feed(item)
                delivered += 1
                if delivered % 64 == 0:
                    await asyncio.sleep(0)  # let the loop breathe on long replays
                continue
            if item.what == "silent":
                return  # stuck: nothing more until the next start
            assert self._gone is not None
            if not self._gone.done():
                fault = None if item.what == "end" else ScanFault(
                    "removed", f"adapter {self.adapter or 'hci0'} disappeared (unplugged, or bluetoothd restarted)")
                self._gone.set_result(fault)
            return

    def _feed(self, advert: Advert) -> None:
        """Our Advert → bleak's BLEDevice/AdvertisementData, through bleak's own bookkeeping and callbacks."""
        uuids = list(advert.service_uuids)
        if not self.is_allowed_uuid(uuids):
            return
        data = AdvertisementData(
            local_name=advert.local_name,
            manufacturer_data=dict(advert.manufacturer_data),
            service_data=dict(advert.service_data),
            service_uuids=uuids,
            tx_power=advert.tx_power,
            rssi=advert.rssi,
            platform_data=("fake-radio",),
        )
        if len(self.seen_devices) >= self.radio.max_devices and advert.address not in self.seen_devices:
            # Phones rotate random addresses; BlueZ forgets them after 30 s, this fake after max_devices.
            del self.seen_devices[next(iter(self.seen_devices))]
        device = self.create_or_update_device(advert.address, advert.address, advert.local_name, None, data)
        radio = self.radio
        radio._now = advert.at if radio.keep_time else None
        try:
            self.call_detection_callbacks(device, data)
        finally:
            radio._now = None
        radio.delivered += 1


def fake_backend(source: FakeRadio) -> type[BaseBleakScanner]:
    """A bleak backend class (pass as BleakScanner(backend=...) or scan(backend=...)) fed by `source`."""
    return type("FakeRadioScanner", (_FakeScanner,), {"radio": source})
