"""The station's radio path without a radio: bleak's real BleakScanner driven by hardware.ble's fake backend, the
ScanLoop under its supervisor with faults injected at known points, the pure supervisor at explicit times, and the
real BlueZ backend on this machine (no adapter, no D-Bus)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakDBusError, BleakError
from dbus_fast import BusType, Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusDict, DBusInt16, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from hardware import ble
from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert
from hardware.scan_supervisor import (
    Decision,
    PowerCycle,
    RetryPolicy,
    ScanStatus,
    ScanSupervisor,
    StartScan,
    StopScan,
    Wait,
)
from hardware.scanning import ScanLoop

NAMESPACE = bytes.fromhex("00112233445566778899")
IBEACON_UUID = bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")


# --- real frames --------------------------------------------------------------------------------------------------

def eddystone_uid(n: int, at: float = 1767000000.0, rssi: int = -61) -> Advert:
    frame = bytes([0x00, 0xEE]) + NAMESPACE + n.to_bytes(6, "big") + b"\x00\x00"
    return Advert(at=at, address=f"C0:00:00:00:00:{n:02X}", rssi=rssi, service_data=((EDDYSTONE_SERVICE_UUID, frame),),
                  service_uuids=("0000feaa-0000-1000-8000-00805f9b34fb",))


def eddystone_tlm(at: float = 1767000000.5) -> Advert:
    frame = bytes([0x20, 0x00]) + struct.pack(">HhII", 2950, 22 * 256, 1234, 56789)
    return Advert(at=at, address="C0:00:00:00:00:01", rssi=-70, service_data=((EDDYSTONE_SERVICE_UUID, frame),))


def ibeacon(major: int, minor: int, at: float = 1767000001.0) -> Advert:
    data = b"\x02\x15" + IBEACON_UUID + struct.pack(">HHb", major, minor, -59)
    return Advert(at=at, address="D0:00:00:00:00:01", rssi=-55, manufacturer_data=((APPLE_COMPANY_ID, data),),
                  tx_power=-4)


def phone(at: float = 1767000002.0) -> Advert:
    # A random private address, Apple "nearby info" plus Microsoft CDP data: two companies in one advert.
    return Advert(at=at, address="5A:11:22:33:44:55", rssi=-80,
                  manufacturer_data=((0x0006, bytes.fromhex("0109200211223344")),
                                     (APPLE_COMPANY_ID, bytes.fromhex("1005031c1a2b3c"))),
                  local_name="Pixel 8")


def numbered(n: int) -> Advert:
    return eddystone_uid(n, at=1767000000.0 + n)


# --- helpers ------------------------------------------------------------------------------------------------------

async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Let the loop run until `condition` holds (generous timeout: outcomes never depend on it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


class Clock:
    """Real monotonic time plus a jump the test controls: faults by silence happen when the test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


FAST = RetryPolicy(base_s=0.001, cap_s=0.002, jitter=0.2, power_cycle_after=3, failing_after=8, silence_s=120.0,
                   start_timeout_s=600.0, healthy_s=0.0)


def make_loop(radio: ble.FakeRadio, *, policy: RetryPolicy = FAST, clock: Callable[[], float] = time.monotonic,
              on_advert: Callable[[Advert], None] | None = None, mode: str = "passive",
              **kwargs: object) -> tuple[ScanLoop, list[Advert], list[tuple[str, str, int]]]:
    adverts: list[Advert] = []
    statuses: list[tuple[str, str, int]] = []
    loop = ScanLoop("hci0", mode, on_advert or adverts.append, lambda *status: statuses.append(status),
                    backend=ble.fake_backend(radio), power_cycle=radio.power_cycle, clock=clock,
                    wall_clock=radio.wall_clock, rng=random.Random(7), policy=policy, tick_s=0.005, **kwargs)
    return loop, adverts, statuses


# --- the fake backend under bleak's own BleakScanner ----------------------------------------------------------------

def test_bleak_scanner_on_the_fake_backend_sees_bleak_objects_with_the_bytes() -> None:
    radio = ble.FakeRadio()
    seen: list[tuple[BLEDevice, AdvertisementData]] = []

    async def main() -> None:
        scanner = BleakScanner(lambda device, data: seen.append((device, data)), backend=ble.fake_backend(radio))
        assert scanner.backend_id == "FakeRadioScanner"
        await scanner.start()
        radio.put(ibeacon(7, 42))
        radio.put(phone())
        await until(lambda: len(seen) == 2)
        await scanner.stop()

    asyncio.run(main())
    device, data = seen[0]
    assert isinstance(device, BLEDevice) and isinstance(data, AdvertisementData)
    assert device.address == "D0:00:00:00:00:01"
    assert data.manufacturer_data == {APPLE_COMPANY_ID: ibeacon(7, 42).manufacturer_data[0][1]}
    assert data.tx_power == -4 and data.rssi == -55
    assert seen[1][0].name == "Pixel 8" and set(seen[1][1].manufacturer_data) == {0x0006, APPLE_COMPANY_ID}
    assert radio.stops == 1


def test_scan_delivers_our_adverts_with_the_same_bytes_and_times() -> None:
    radio = ble.FakeRadio()
    sent = [eddystone_uid(1), eddystone_tlm(), ibeacon(1, 300), phone()]
    got: list[Advert] = []
    details: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        radio.put_many(sent)
        radio.end()
        await ble.scan("hci0", "passive", got.append, stop, backend=ble.fake_backend(radio),
                       on_started=details.append, wall_clock=radio.wall_clock)

    asyncio.run(main())
    assert got == sent  # bytes, sorted tuples, tx power, name and recorded times survive bleak's objects
    assert details == ["passive scan on hci0"]
    start = radio.starts[0]
    assert (start.adapter, start.mode) == ("hci0", "passive")
    patterns = {(p[0], int(p[1]), bytes(p[2])) for p in start.or_patterns}
    assert (0, 0x16, b"\xaa\xfe") in patterns  # Eddystone service data
    assert (0, 0xFF, b"\x4c\x00") in patterns  # Apple manufacturer data (iBeacon)
    assert (0, 0x01, b"\x06") in patterns and (0, 0x01, b"\x1a") in patterns  # phones, by their Flags


def test_bleak_objects_become_a_sorted_immutable_advert() -> None:
    # As BlueZ hands them over: dicts in whatever order the device properties had, UUIDs in upper case.
    data = AdvertisementData(local_name=None, manufacturer_data={76: b"\x10\x05", 6: bytearray(b"\x01\x09")},
                             service_data={"0000FEAA-0000-1000-8000-00805F9B34FB": b"\x20\x00",
                                           "0000fe2c-0000-1000-8000-00805f9b34fb": b"\x00"},
                             service_uuids=["0000FEAA-0000-1000-8000-00805F9B34FB"], tx_power=None, rssi=-70,
                             platform_data=("/org/bluez/hci0/dev_5A_11_22_33_44_55", {}))
    advert = ble.to_advert(BLEDevice("5A:11:22:33:44:55", None, {}), data, 12.5)
    assert advert == Advert(at=12.5, address="5A:11:22:33:44:55", rssi=-70,
                            manufacturer_data=((6, b"\x01\x09"), (76, b"\x10\x05")),
                            service_data=(("0000fe2c-0000-1000-8000-00805f9b34fb", b"\x00"),
                                          (EDDYSTONE_SERVICE_UUID, b"\x20\x00")),
                            service_uuids=(EDDYSTONE_SERVICE_UUID,))
    assert type(advert.manufacturer_data[0][1]) is bytes
    hash(advert)


def test_scan_stamps_reception_time_unless_the_source_keeps_its_own() -> None:
    radio = ble.FakeRadio(keep_time=False)
    got: list[Advert] = []

    async def main() -> None:
        radio.put(eddystone_uid(1, at=5.0))
        radio.end()
        await ble.scan("hci0", "active", got.append, asyncio.Event(), backend=ble.fake_backend(radio),
                       wall_clock=lambda: 1234.5)

    asyncio.run(main())
    assert [a.at for a in got] == [1234.5]
    assert radio.starts[0].mode == "active" and radio.starts[0].or_patterns == ()


def test_passive_refused_falls_back_to_active_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    radio = ble.FakeRadio()
    radio.refuse_passive()
    details: list[str] = []
    ble._passive_refusals_told.discard("hci7")

    async def main() -> None:
        for _ in range(2):
            radio.put(numbered(1))
            radio.end()
            await ble.scan("hci7", "passive", lambda advert: None, asyncio.Event(), backend=ble.fake_backend(radio),
                           on_started=details.append)

    with caplog.at_level(logging.WARNING, logger="hardware.ble"):
        asyncio.run(main())
    assert [s.mode for s in radio.starts] == ["active", "active"]
    assert details == ["active scan on hci7 (passive scanning refused: needs BlueZ experimental features)"] * 2
    told = [r for r in caplog.records if "passive scanning refused" in r.getMessage()]
    assert len(told) == 1 and "Experimental = true" in told[0].getMessage()


@pytest.mark.parametrize(("fault", "kind", "words"), [
    ("in_progress", "in_progress", "busy"),
    ("not_ready", "not_ready", "rfkill"),
    ("failed", "failed", "could not scan"),
    ("no_dbus", "no_adapter", "D-Bus is not running"),
    ("no_adapter", "no_adapter", "adapter hci0 not found"),
    ("no_bluetooth", "no_adapter", "plug one in"),
    ("powered_off", "not_ready", "switched off"),
])
def test_start_faults_come_out_as_scan_faults_with_one_readable_line(fault: str, kind: str, words: str) -> None:
    radio = ble.FakeRadio()
    radio.fail_next_start(fault)
    with pytest.raises(ble.ScanFault) as caught:
        asyncio.run(ble.scan("hci0", "passive", lambda advert: None, asyncio.Event(),
                             backend=ble.fake_backend(radio)))
    assert caught.value.kind == kind
    assert words in caught.value.reason and "\n" not in caught.value.reason
    assert "Traceback" not in str(caught.value) and len(str(caught.value)) <= 300
    assert not radio.starts


def test_scan_with_the_real_bluez_backend_here_is_a_no_adapter_fault() -> None:
    if Path("/sys/class/bluetooth/hci0").exists():
        pytest.skip("this machine has a Bluetooth adapter")
    with pytest.raises(ble.ScanFault) as caught:
        asyncio.run(asyncio.wait_for(ble.scan("hci0", "passive", lambda advert: None, asyncio.Event()), 30))
    assert caught.value.kind == "no_adapter"
    assert "\n" not in caught.value.reason and ("D-Bus" in caught.value.reason or "hci0" in caught.value.reason)
    with pytest.raises(ble.ScanFault) as cycle:
        asyncio.run(asyncio.wait_for(ble.power_cycle("hci0", settle_s=0), 30))
    assert cycle.value.kind == "no_adapter" and cycle.value.reason.startswith("cannot power-cycle hci0: ")


def test_classify_names_each_bluez_and_dbus_failure() -> None:
    def kind(exc: BaseException) -> str:
        fault = ble.classify(exc, "hci0")
        assert fault.reason and "\n" not in fault.reason
        return fault.kind

    assert kind(BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"])) == "in_progress"
    assert kind(BleakError("org.bluez.Error.InProgress")) == "in_progress"
    assert kind(BleakDBusError("org.bluez.Error.NotReady", [])) == "not_ready"
    assert kind(BleakDBusError("org.bluez.Error.Failed", ["No discovery started"])) == "failed"
    assert kind(DBusError("org.bluez.Error.Failed", "Blocked through rfkill")) == "failed"
    assert kind(BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", ["org.bluez"])) == "no_adapter"
    assert kind(BleakDBusError("org.freedesktop.DBus.Error.UnknownObject", [])) == "removed"
    assert kind(BleakError("adapter 'hci1' not found")) == "no_adapter"
    assert kind(BleakBluetoothNotAvailableError("No Bluetooth adapters found.",
                                                BleakBluetoothNotAvailableReason.NO_BLUETOOTH)) == "no_adapter"
    assert kind(FileNotFoundError(2, "No such file or directory")) == "no_adapter"
    assert kind(EOFError()) == "removed"
    assert kind(BleakDBusError("org.freedesktop.DBus.Error.AccessDenied", ["policy"])) == "other"
    assert kind(RuntimeError("something\nelse")) == "other"
    long = ble.classify(RuntimeError("x" * 5000), "hci0").reason
    assert len(long) <= 300


def test_adapter_events_on_the_dbus_tell_removal_and_power_off() -> None:
    def signal(member: str, path: str, interface: str, signature: str, body: list[object]) -> Message:
        return Message(message_type=MessageType.SIGNAL, path=path, interface=interface, member=member,
                       signature=signature, body=body)

    removed = signal("InterfacesRemoved", "/", "org.freedesktop.DBus.ObjectManager", "oas",
                     ["/org/bluez/hci0", ["org.bluez.Adapter1", "org.bluez.GattManager1"]])
    other_adapter = signal("InterfacesRemoved", "/", "org.freedesktop.DBus.ObjectManager", "oas",
                           ["/org/bluez/hci1", ["org.bluez.Adapter1"]])
    device_gone = signal("InterfacesRemoved", "/", "org.freedesktop.DBus.ObjectManager", "oas",
                         ["/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF", ["org.bluez.Device1"]])
    off = signal("PropertiesChanged", "/org/bluez/hci0", "org.freedesktop.DBus.Properties", "sa{sv}as",
                 ["org.bluez.Adapter1", {"Powered": Variant("b", False)}, []])
    on = signal("PropertiesChanged", "/org/bluez/hci0", "org.freedesktop.DBus.Properties", "sa{sv}as",
                ["org.bluez.Adapter1", {"Powered": Variant("b", True)}, []])
    daemon_gone = signal("NameOwnerChanged", "/org/freedesktop/DBus", "org.freedesktop.DBus", "sss",
                         ["org.bluez", ":1.4", ""])
    fault = ble.adapter_event(removed, "hci0")
    assert fault is not None and fault.kind == "removed" and "hci0" in fault.reason
    assert ble.adapter_event(other_adapter, "hci0") is None
    assert ble.adapter_event(device_gone, "hci0") is None
    off_fault = ble.adapter_event(off, "hci0")
    assert off_fault is not None and off_fault.kind == "not_ready"
    assert ble.adapter_event(on, "hci0") is None
    gone = ble.adapter_event(daemon_gone, "hci0")
    assert gone is not None and gone.kind == "removed" and "bluetoothd" in gone.reason


# --- the scan loop: faults at known points ---------------------------------------------------------------------

def test_scan_loop_recovers_from_each_fault_and_keeps_delivering() -> None:
    radio = ble.FakeRadio()
    clock = Clock()
    loop, adverts, statuses = make_loop(radio, clock=clock)
    for fault in ("in_progress", "not_ready", "no_dbus", "failed"):
        radio.fail_next_start(fault)
    first, second, third = [numbered(n) for n in (1, 2, 3)], [numbered(n) for n in (4, 5)], [numbered(6)]
    radio.put_many(first)
    radio.remove_adapter()  # mid-scan, after the first three
    radio.put_many(second)
    radio.go_silent()  # after the next two: the scanner is stuck until restarted
    radio.put_many(third)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: len(adverts) == 5)
        assert statuses[-1][0] == "scanning"
        clock.offset += 121.0  # two minutes of silence, from the scanner's point of view
        await until(lambda: len(adverts) == 6)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    assert adverts == first + second + third
    expected = [
        ("recovering", "busy with another scan", 1),
        ("recovering", "is not ready", 2),
        ("recovering", "D-Bus is not running", 3),
        ("recovering", "could not scan", 4),
        ("scanning", "passive scan on hci0", 4),
        ("recovering", "disappeared", 1),  # the first adverts proved the scanner healthy (healthy_s=0)
        ("scanning", "passive scan on hci0", 1),
        ("recovering", "no advert heard for 120 s", 1),
        ("scanning", "passive scan on hci0", 1),
    ]
    assert [(state, attempts) for state, _, attempts in statuses] == [(s, a) for s, _, a in expected]
    for (_, reason, _), (_, words, _) in zip(statuses, expected, strict=True):
        assert words in reason
    # No power cycle for a missing adapter; the fourth failure in a row (three since none) power-cycles it.
    assert list(radio.power_cycles) == ["hci0"]
    assert loop.stats.power_cycles == 1 and loop.stats.starts == 7 and loop.stats.faults == 5
    assert radio.stops == len(radio.starts) == 3  # every scanner that started was stopped


def test_scan_loop_goes_failing_but_never_gives_up() -> None:
    radio = ble.FakeRadio()
    loop, adverts, statuses = make_loop(radio)
    for _ in range(9):
        radio.fail_next_start("no_dbus")
    radio.put(numbered(1))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: len(adverts) == 1)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    # Nine identical faults are three status changes, not nine reports.
    assert [(state, attempts) for state, _, attempts in statuses] == [("recovering", 1), ("failing", 8),
                                                                      ("scanning", 9)]
    assert not radio.power_cycles  # nothing to power-cycle without an adapter
    assert loop.stats.starts == 10


def test_power_cycle_failure_does_not_stop_the_next_start() -> None:
    radio = ble.FakeRadio()
    loop, adverts, statuses = make_loop(radio)
    for _ in range(3):
        radio.fail_next_start("in_progress")
    radio.fail_next_power_cycle("failed", "Blocked through rfkill")
    radio.put(numbered(1))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: len(adverts) == 1)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    assert list(radio.power_cycles) == ["hci0"] and loop.stats.power_cycle_failures == 1
    assert [s[0] for s in statuses] == ["recovering", "scanning"]


def test_a_hung_start_is_given_up_after_the_start_timeout() -> None:
    radio = ble.FakeRadio()
    clock = Clock()
    loop, adverts, statuses = make_loop(radio, clock=clock, stop_grace_s=0.01)
    radio.hang_next_start()
    radio.put(numbered(1))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: radio.start_calls == 1)  # the start is inside the radio, hanging
        clock.offset += FAST.start_timeout_s + 1
        await until(lambda: len(adverts) == 1)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    assert statuses[0][0] == "recovering" and "did not start within" in statuses[0][1]
    assert statuses[-1][0] == "scanning" and loop.stats.starts == 2


def test_a_raising_callback_does_not_stop_the_scan() -> None:
    radio = ble.FakeRadio()
    kept: list[Advert] = []

    def on_advert(advert: Advert) -> None:
        if int(advert.at) % 2:
            raise RuntimeError("consumer bug")
        kept.append(advert)

    loop, _, statuses = make_loop(radio, on_advert=on_advert)
    sent = [numbered(n) for n in range(1, 11)]
    radio.put_many(sent)
    radio.end()

    async def main() -> None:
        await asyncio.wait_for(loop.run(asyncio.Event()), 20)  # returns when the source ends

    asyncio.run(main())
    assert kept == sent[1::2]
    assert loop.stats.callback_errors == 5 and loop.stats.adverts == 10
    assert loop.stats.starts == 1 and statuses == [("scanning", "passive scan on hci0", 0)]


def test_scan_loop_stops_cleanly_while_scanning_and_while_waiting() -> None:
    scanning = ble.FakeRadio()
    loop, adverts, _ = make_loop(scanning)
    scanning.put(numbered(1))

    waiting = ble.FakeRadio()
    slow = RetryPolicy(base_s=3600.0, cap_s=3600.0, start_timeout_s=600.0)
    idle_loop, _, idle_statuses = make_loop(waiting, policy=slow)
    waiting.fail_next_start("no_dbus")

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(loop.run(stop)), asyncio.create_task(idle_loop.run(stop))]
        await until(lambda: len(adverts) == 1 and len(idle_statuses) == 1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)  # the hour-long backoff does not hold it

    asyncio.run(main())
    assert scanning.stops == 1 and scanning._scanner is None
    assert idle_statuses == [("recovering", idle_statuses[0][1], 1)] and not waiting.starts


def test_scan_loop_refuses_a_bad_mode_in_one_line() -> None:
    with pytest.raises(ValueError, match="scan mode must be one of"):
        ScanLoop("hci0", "aggressive", print, print)


def test_fake_radio_bounds_what_waits_for_a_scanner() -> None:
    radio = ble.FakeRadio(max_pending=10)
    radio.put_many(numbered(n) for n in range(25))
    assert radio.pending == 10 and radio.dropped == 15
    with pytest.raises(ValueError, match="unknown fake start fault"):
        radio.fail_next_start("gremlins")


# --- the supervisor, at explicit times ----------------------------------------------------------------------------

class FixedRng(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_supervisor_starts_reports_scanning_and_restarts_a_silent_scanner() -> None:
    supervisor = ScanSupervisor(RetryPolicy(silence_s=120.0), rng=FixedRng(0.5))
    assert supervisor.tick(0.0).actions == (StartScan(),)
    assert supervisor.tick(0.5).actions == ()  # still starting
    decision = supervisor.started(1.0, "passive scan on hci0")
    assert decision.status == ScanStatus("scanning", "passive scan on hci0", 0)
    supervisor.advert(60.0)
    assert supervisor.tick(179.0).actions == ()  # 119 s since the last advert
    silent = supervisor.tick(180.0)
    assert isinstance(silent.actions[0], StopScan) and silent.actions[1:] == (Wait(2.0),)
    assert silent.status is not None and silent.status.state == "recovering"
    assert "no advert heard for 120 s" in silent.status.reason
    assert supervisor.tick(181.0).actions == (Wait(1.0),)
    assert supervisor.tick(182.0).actions == (StartScan(),)
    assert supervisor.started(182.5, "passive scan on hci0").status is not None


def test_supervisor_backoff_grows_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=60.0, jitter=0.2)
    for value, factor in ((0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)):
        supervisor = ScanSupervisor(policy, rng=FixedRng(value))
        delays = [supervisor.delay_for(n) for n in range(1, 9)]
        expected = [min(60.0, min(60.0, 2.0 * 2 ** (n - 1)) * factor) for n in range(1, 9)]
        assert delays == pytest.approx(expected, rel=1e-5)
    seeded = [ScanSupervisor(policy, rng=random.Random(3)).delay_for(4) for _ in range(2)]
    assert seeded[0] == seeded[1] and 12.8 <= seeded[0] <= 19.2
    assert ScanSupervisor(policy).delay_for(10_000) <= 60.0


def fail_once(supervisor: ScanSupervisor, kind: str, now: float) -> float:
    """Start at `now` and fail with `kind` at once: returns when the next start is due."""
    assert supervisor.tick(now).actions[-1] == StartScan()
    wait = supervisor.fault(kind, f"{kind} happened", now).actions[-1]
    assert isinstance(wait, Wait)
    return now + wait.seconds


def test_supervisor_power_cycles_after_three_failures_except_without_an_adapter() -> None:
    supervisor = ScanSupervisor(RetryPolicy(power_cycle_after=3), rng=FixedRng(0.5))
    kinds = ["in_progress"] * 3 + ["no_adapter"] * 3 + ["failed"] * 4
    cycles = []
    now = 0.0
    for kind in kinds:
        decision = supervisor.tick(now)
        assert decision.actions[-1] == StartScan()
        cycles.append(PowerCycle() in decision.actions)
        wait = supervisor.fault(kind, kind, now).actions[-1]
        assert isinstance(wait, Wait)
        now += wait.seconds
    cycles.append(PowerCycle() in supervisor.tick(now).actions)
    # 3 in_progress → a cycle before start 4; three no_adapter (nothing to cycle) count on, so the first failure
    # after them (the 4th since the cycle) → a cycle before start 8; three more → before start 11.
    assert cycles == [False, False, False, True, False, False, False, True, False, False, True]


def test_supervisor_goes_failing_after_eight_and_reports_only_changes() -> None:
    supervisor = ScanSupervisor(RetryPolicy(failing_after=8, cap_s=60.0), rng=FixedRng(0.5))
    reported = []
    now = 0.0
    for _ in range(40):
        assert supervisor.tick(now).actions[-1] == StartScan()
        decision = supervisor.fault("no_adapter", "no Bluetooth adapter found", now)
        if decision.status is not None:
            reported.append((decision.status.state, decision.status.attempts))
        wait = decision.actions[-1]
        assert isinstance(wait, Wait) and wait.seconds <= 60.0
        now += wait.seconds
    assert reported == [("recovering", 1), ("failing", 8)]
    assert supervisor.status == ScanStatus("failing", "no Bluetooth adapter found", 40)
    assert supervisor.tick(now).actions == (StartScan(),)  # still trying after 40
    changed = supervisor.fault("not_ready", "adapter hci0 is not ready", now)
    assert changed.status == ScanStatus("failing", "adapter hci0 is not ready", 41)


def test_supervisor_resets_failures_once_a_scanner_is_healthy() -> None:
    supervisor = ScanSupervisor(RetryPolicy(healthy_s=30.0, base_s=2.0), rng=FixedRng(0.5))
    now = 0.0
    for _ in range(5):
        now = fail_once(supervisor, "failed", now)
    assert supervisor.failures == 5
    assert supervisor.tick(now).actions == (StartScan(),)
    supervisor.started(now, "passive scan on hci0")
    supervisor.advert(now + 10.0)
    assert supervisor.failures == 5  # delivering, but not for long yet
    supervisor.advert(now + 30.0)
    assert supervisor.failures == 0
    decision = supervisor.fault("removed", "adapter gone", now + 31.0)
    assert decision.actions == (Wait(2.0),) and decision.status == ScanStatus("recovering", "adapter gone", 1)


def test_supervisor_gives_up_a_hung_start_and_ignores_stale_reports() -> None:
    supervisor = ScanSupervisor(RetryPolicy(start_timeout_s=30.0), rng=FixedRng(0.5))
    supervisor.tick(0.0)
    assert supervisor.tick(29.0).actions == ()
    hung = supervisor.tick(30.0)
    assert isinstance(hung.actions[0], StopScan) and hung.status is not None
    assert "did not start within 30 s" in hung.status.reason
    assert supervisor.fault("in_progress", "late", 30.5) == Decision()  # no scanner: stale
    assert supervisor.started(30.6, "late start").actions == () and supervisor.phase == "waiting"


def test_retry_policy_refuses_nonsense() -> None:
    for bad in ({"base_s": 0}, {"cap_s": float("inf")}, {"jitter": 1.0}, {"power_cycle_after": 0},
                {"silence_s": -1}, {"healthy_s": float("nan")}):
        with pytest.raises(ValueError, match="RetryPolicy"):
            RetryPolicy(**bad)  # type: ignore[arg-type]


# --- the real BlueZ backend against a fake bluetoothd on a private D-Bus -------------------------------------------
# bleak's own BlueZ code (manager, D-Bus signals, SetDiscoveryFilter/StartDiscovery, RegisterMonitor) and ours
# (the adapter watch, power_cycle) talk over a real dbus-daemon to a small org.bluez service made with dbus-fast.

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:abstract={name}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/>
    <allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/>
    <allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon standing in for the system bus (DBUS_SYSTEM_BUS_ADDRESS points at it)."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("needs dbus-daemon (apt install dbus-daemon)")
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(name=f"museum-test-{uuid.uuid4().hex}"))
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert daemon.stdout is not None
        address = daemon.stdout.readline().strip()
        assert address.startswith("unix:abstract="), address
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


StrList = Annotated[list[str], DBusSignature("as")]
ManufacturerDict = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
# D-Bus methods without a reply have no return annotation: dbus-fast would read "None" as a signature.


class FakeAdapter(ServiceInterface):
    def __init__(self, bluez: FakeBluez) -> None:
        super().__init__("org.bluez.Adapter1")
        self._bluez = bluez
        self._powered = True

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict):
        self._bluez.calls.append("SetDiscoveryFilter")

    @dbus_method()
    def StartDiscovery(self):
        self._bluez.calls.append("StartDiscovery")
        if self._bluez.start_errors:
            raise DBusError(self._bluez.start_errors.pop(0), "refused by the fake bluetoothd")
        if not self._powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")

    @dbus_method()
    def StopDiscovery(self):
        self._bluez.calls.append("StopDiscovery")

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self._powered

    @Powered.setter
    def Powered(self, value: DBusBool):
        self._powered = value
        self._bluez.powered.append(value)
        self.emit_properties_changed({"Powered": value})

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> StrList:
        return ["central", "peripheral"]


class FakeMonitorManager(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.AdvertisementMonitorManager1")

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath):
        pass

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath):
        pass


class FakeDevice(ServiceInterface):
    """org.bluez.Device1 as bluetoothd shows a device it hears: its advertising data as properties."""

    def __init__(self, advert: Advert) -> None:
        super().__init__("org.bluez.Device1")
        self.advert = advert

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.advert.address

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.advert.address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return "/org/bluez/hci0"

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.advert.rssi

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> ManufacturerDict:
        return {company: Variant("ay", data) for company, data in self.advert.manufacturer_data}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusDict:
        return {uuid: Variant("ay", data) for uuid, data in self.advert.service_data}

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> StrList:
        return list(self.advert.service_uuids)


class FakeDeviceWithTx(FakeDevice):
    @dbus_property(access=PropertyAccess.READ)
    def TxPower(self) -> DBusInt16:
        return self.advert.tx_power


class FakeDeviceWithName(FakeDevice):
    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.advert.local_name

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.advert.local_name


def fake_device(advert: Advert) -> FakeDevice:
    """BlueZ shows TxPower and Name only for devices that sent them."""
    assert advert.tx_power is None or advert.local_name is None, "one optional property at a time"
    if advert.tx_power is not None:
        return FakeDeviceWithTx(advert)
    if advert.local_name is not None:
        return FakeDeviceWithName(advert)
    return FakeDevice(advert)


class FakeBluez:
    """Just enough of bluetoothd for a scanner: hci0 with Adapter1 (and, if asked, AdvertisementMonitorManager1),
    devices appearing and re-advertising as Device1 objects, the adapter removed and plugged back."""

    def __init__(self, *, monitor: bool) -> None:
        self.calls: list[str] = []
        self.powered: list[bool] = []
        self.start_errors: list[str] = []
        self.monitors: list[tuple[str, str]] = []  # (client's bus name, monitor path) from RegisterMonitor
        self._monitor = monitor
        self._devices: dict[str, FakeDevice] = {}
        self.bus: MessageBus | None = None
        self.client: str | None = None

    async def start(self) -> None:
        bus = self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()

        def snoop(message: Message) -> None:
            if message.member == "RegisterMonitor":
                self.monitors.append((str(message.sender), str(message.body[0])))
            if message.member in ("StartDiscovery", "RegisterMonitor"):
                self.client = str(message.sender)

        bus.add_message_handler(snoop)
        self.plug_adapter()
        await bus.request_name("org.bluez")

    def plug_adapter(self) -> None:
        assert self.bus is not None
        self.bus.export("/org/bluez/hci0", FakeAdapter(self))
        if self._monitor:
            self.bus.export("/org/bluez/hci0", FakeMonitorManager())

    async def synced(self) -> None:
        """Returns once the scanning client has handled every signal sent so far: D-Bus keeps one sender's
        messages to one receiver in order, and the client answers a Ping only after what came before it."""
        assert self.bus is not None and self.client is not None
        reply = await self.bus.call(Message(destination=self.client, path="/", interface="org.freedesktop.DBus.Peer",
                                            member="Ping"))
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN

    def unplug_adapter(self) -> None:
        assert self.bus is not None
        for path in list(self._devices):
            self.bus.unexport(path)
        self._devices.clear()
        self.bus.unexport("/org/bluez/hci0")

    def advertise(self, advert: Advert) -> None:
        assert self.bus is not None
        path = "/org/bluez/hci0/dev_" + advert.address.replace(":", "_")
        device = self._devices.get(path)
        if device is None:
            self._devices[path] = fake_device(advert)
            self.bus.export(path, self._devices[path])  # InterfacesAdded with every property
        else:
            device.advert = advert
            device.emit_properties_changed({"RSSI": advert.rssi})

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()


def same_but_time(heard: list[Advert], sent: list[Advert]) -> bool:
    return [dataclasses.replace(a, at=0.0) for a in heard] == [dataclasses.replace(a, at=0.0) for a in sent]


def test_real_bluez_backend_passive_scan_registers_our_patterns_and_hears_adverts(system_bus: str) -> None:
    bluez = FakeBluez(monitor=True)
    heard: list[Advert] = []
    details: list[str] = []
    patterns: list[tuple[int, int, bytes]] = []
    sent = [eddystone_uid(1), ibeacon(2, 3), eddystone_uid(1, rssi=-48)]

    async def main() -> None:
        await bluez.start()
        stop = asyncio.Event()
        task = asyncio.create_task(ble.scan("hci0", "passive", heard.append, stop, on_started=details.append))
        await until(lambda: bool(details) or task.done())
        assert details == ["passive scan on hci0"]
        sender, path = bluez.monitors[0]
        assert bluez.bus is not None
        reply = await bluez.bus.call(Message(destination=sender, path=path, member="Get",
                                             interface="org.freedesktop.DBus.Properties", signature="ss",
                                             body=["org.bluez.AdvertisementMonitor1", "Patterns"]))
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
        patterns.extend((start, kind, bytes(content)) for start, kind, content in reply.body[0].value)
        for advert in sent:
            bluez.advertise(advert)
        await until(lambda: len(heard) == 3)
        stop.set()
        await asyncio.wait_for(task, 20)
        bluez.stop()

    asyncio.run(main())
    assert same_but_time(heard, sent)  # the bytes went through BlueZ's D-Bus properties and came out the same
    assert patterns == [(p.start_position, int(p.ad_data_type), p.content_of_pattern) for p in ble.PASSIVE_OR_PATTERNS]
    assert "StartDiscovery" not in bluez.calls  # passive: no discovery, no scan requests


def test_real_bluez_backend_without_advertisement_monitor_falls_back_to_active(system_bus: str) -> None:
    bluez = FakeBluez(monitor=False)
    heard: list[Advert] = []
    details: list[str] = []

    async def main() -> None:
        await bluez.start()
        stop = asyncio.Event()
        task = asyncio.create_task(ble.scan("hci0", "passive", heard.append, stop, on_started=details.append))
        await until(lambda: bool(details) or task.done())
        bluez.advertise(phone())
        await until(lambda: len(heard) == 1)
        stop.set()
        await asyncio.wait_for(task, 20)
        bluez.stop()

    asyncio.run(main())
    assert details[0].startswith("active scan on hci0 (passive scanning refused")
    assert bluez.calls == ["SetDiscoveryFilter", "StartDiscovery", "StopDiscovery", "SetDiscoveryFilter"]
    assert same_but_time(heard, [phone()])


def test_real_bluez_scan_loop_power_cycles_and_survives_an_unplugged_adapter(system_bus: str) -> None:
    bluez = FakeBluez(monitor=False)
    bluez.start_errors = ["org.bluez.Error.InProgress"] * 3
    clock = Clock()
    heard: list[Advert] = []
    statuses: list[tuple[str, str, int]] = []
    # Backoffs of 100 s that only pass when the test moves the clock: each retry happens when the test says so.
    policy = RetryPolicy(base_s=100.0, cap_s=100.0, jitter=0.0, power_cycle_after=3, healthy_s=0.0)
    loop = ScanLoop("hci0", "active", heard.append, lambda *status: statuses.append(status), clock=clock,
                    power_cycle=functools.partial(ble.power_cycle, settle_s=0.0), policy=policy, tick_s=0.005)

    async def main() -> None:
        await bluez.start()
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        for failures in (1, 2, 3):
            # Only once the loop has taken the failure (and set its deadline) may the clock move on.
            await until(lambda n=failures: loop.stats.faults == n)  # type: ignore[misc]
            clock.offset += 100.0
        await until(lambda: bool(statuses) and statuses[-1][0] == "scanning")
        bluez.advertise(eddystone_uid(1))
        bluez.advertise(ibeacon(7, 8))
        await until(lambda: len(heard) == 2)
        bluez.unplug_adapter()
        await bluez.synced()  # bleak, too, has seen the adapter go (our watch may see it first)
        await until(lambda: statuses[-1][0] == "recovering")
        clock.offset += 100.0
        await until(lambda: "not found" in statuses[-1][1])  # retried while the adapter is away
        bluez.plug_adapter()
        await bluez.synced()  # bleak has seen the adapter come back before the next start
        clock.offset += 100.0
        await until(lambda: statuses[-1][0] == "scanning")
        bluez.advertise(eddystone_uid(9))
        await until(lambda: len(heard) == 3)
        stop.set()
        await asyncio.wait_for(task, 20)
        bluez.stop()

    asyncio.run(main())
    assert same_but_time(heard, [eddystone_uid(1), ibeacon(7, 8), eddystone_uid(9)])
    assert bluez.powered == [False, True]  # the real power_cycle, over D-Bus, after three InProgress
    kinds = [(state, reason.split(" ")[0:2]) for state, reason, _ in statuses]
    assert [state for state, _ in kinds] == ["recovering", "scanning", "recovering", "recovering", "scanning"]
    assert "busy" in statuses[0][1] and "disappeared" in statuses[2][1] and "not found" in statuses[3][1]
    assert [s[2] for s in statuses] == [1, 3, 1, 2, 2]
    assert bluez.calls.count("StopDiscovery") >= 1


def test_real_power_cycle_switches_the_adapter_off_and_on(system_bus: str) -> None:
    bluez = FakeBluez(monitor=False)

    async def main() -> None:
        await bluez.start()
        await ble.power_cycle("hci0", settle_s=0.0)
        with pytest.raises(ble.ScanFault) as caught:
            await ble.power_cycle("hci5", settle_s=0.0)
        assert caught.value.reason.startswith("cannot power-cycle hci5") or "hci5" in caught.value.reason
        bluez.stop()

    asyncio.run(main())
    assert bluez.powered == [False, True]
