"""Recordings of adverts (JSON Lines): written bounded and private, read back exactly, bad lines reported with
their numbers, replayed with computed pacing, and fed back through the radio path unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hardware import ble
from hardware.advert import APPLE_COMPANY_ID, EDDYSTONE_SERVICE_UUID, Advert
from hardware.recording import (
    MAX_LINE_BYTES,
    RecordingError,
    RecordingWriter,
    advert_from_json,
    advert_to_json,
    read_recording,
    replay,
)
from hardware.scan_supervisor import RetryPolicy
from hardware.scanning import ScanLoop

ROOT = Path(__file__).resolve().parent.parent

UID = bytes([0x00, 0xEE]) + bytes.fromhex("00112233445566778899") + bytes.fromhex("00000000002a") + b"\x00\x00"
IBEACON = b"\x02\x15" + bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0") + bytes.fromhex("0001012cc5")

ADVERTS = [
    Advert(at=1767000000.123, address="C0:00:00:00:00:2A", rssi=-61, service_data=((EDDYSTONE_SERVICE_UUID, UID),),
           service_uuids=(EDDYSTONE_SERVICE_UUID,)),
    Advert(at=1767000000.5, address="D0:00:00:00:00:01", rssi=-55, manufacturer_data=((APPLE_COMPANY_ID, IBEACON),),
           tx_power=-4),
    Advert(at=1767000001.0, address="5A:11:22:33:44:55", rssi=-90,
           manufacturer_data=((6, bytes.fromhex("0109200211")), (APPLE_COMPANY_ID, bytes.fromhex("1005031c"))),
           local_name="Café ☕"),
    Advert(at=1767000001.25, address="7B:00:00:00:00:00", rssi=-100, manufacturer_data=((0xFFFF, b""),)),
]


def test_round_trip_keeps_every_field_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "gallery.jsonl"
    with RecordingWriter(path) as writer:
        assert all(writer.write(advert) for advert in ADVERTS)
    assert list(read_recording(path)) == ADVERTS
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"at": 1767000000.123, "address": "C0:00:00:00:00:2A", "rssi": -61,
                     "svc": {EDDYSTONE_SERVICE_UUID: UID.hex()}, "uuids": [EDDYSTONE_SERVICE_UUID]}
    assert json.loads(advert_to_json(ADVERTS[1]))["mfr"] == {"76": IBEACON.hex()}
    assert advert_from_json(advert_to_json(ADVERTS[2])) == ADVERTS[2]


def test_recording_is_private_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("")
    path.chmod(0o644)
    with RecordingWriter(path) as writer:
        writer.write(ADVERTS[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds Bluetooth addresses
    with RecordingWriter(path) as writer:
        writer.write(ADVERTS[1])
    assert list(read_recording(path)) == ADVERTS[:2]
    new = tmp_path / "new.jsonl"
    RecordingWriter(new).close()
    assert stat.S_IMODE(new.stat().st_mode) == 0o600


def test_recording_stops_at_its_size_limit_with_a_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bounded.jsonl"
    line = len(advert_to_json(ADVERTS[0])) + 1
    with RecordingWriter(path, max_bytes=line * 3 + line // 2) as writer:
        results = [writer.write(ADVERTS[0]) for _ in range(10)]
        assert writer.stopped is not None
    assert results == [True] * 3 + [False] * 7
    assert path.stat().st_size == line * 3
    assert str(path) in writer.stopped and "limit" in writer.stopped
    assert [r.getMessage() for r in caplog.records].count(writer.stopped) == 1  # said once
    with RecordingWriter(path, max_bytes=line) as again:
        assert again.stopped is not None and "already holds" in again.stopped
        assert again.write(ADVERTS[0]) is False
    assert path.stat().st_size == line * 3


def test_recording_to_a_bad_path_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        RecordingWriter(tmp_path / "missing" / "r.jsonl")
    message = str(caught.value)
    assert "missing/r.jsonl" in message and "\n" not in message and "check the path" in message
    with pytest.raises(ValueError, match="cannot read the recording"):
        list(read_recording(tmp_path / "nope.jsonl"))


def test_a_full_disk_stops_recording_without_an_exception(tmp_path: Path) -> None:
    # A real write failure: the OS refuses to grow the file past RLIMIT_FSIZE (EFBIG), in a child process.
    path = tmp_path / "full.jsonl"
    script = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from hardware.advert import Advert
        from hardware.recording import RecordingWriter
        writer = RecordingWriter({str(path)!r})
        advert = Advert(at=1.0, address="AA:BB:CC:DD:EE:FF", rssi=-50, manufacturer_data=((76, bytes(25)),))
        accepted = sum(writer.write(advert) for _ in range(2000))
        writer.close()
        print(accepted, writer.stopped)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    accepted, _, stopped = done.stdout.strip().partition(" ")
    assert "recording stopped: cannot write" in stopped and str(path) in stopped
    assert 0 < int(accepted) < 2000
    read = list(read_recording(path))
    adverts = [item for item in read if isinstance(item, Advert)]
    assert len(adverts) == int(accepted)  # every advert write() accepted is on disk
    assert len(read) - len(adverts) <= 1 and all(isinstance(item, Advert) for item in read[:-1])  # then a cut line


def test_reading_reports_bad_lines_by_number_and_goes_on(tmp_path: Path) -> None:
    good = [advert_to_json(advert) for advert in ADVERTS]
    lines = [
        good[0],                                           # 1
        "{not json",                                       # 2
        "[1, 2]",                                          # 3
        '{"address": "AA", "rssi": -50}',                  # 4 no at
        '{"at": 1, "address": "AA", "rssi": true}',        # 5 bool rssi
        '{"at": 1, "address": "AA", "rssi": -50, "mfr": {"76": "zz"}}',   # 6 not hex
        '{"at": 1, "address": "AA", "rssi": -50, "mfr": {"x": "00"}}',    # 7 bad company
        '{"at": -5, "address": "AA", "rssi": -50}',        # 8 negative time
        '{"at": 1, "address": "AA", "rssi": -50, "extra": 1}',            # 9 unknown key
        "",                                                # 10 blank: skipped
        good[1],                                           # 11
        '{"at": 1, "address": "' + "A" * (MAX_LINE_BYTES + 10) + '", "rssi": -50}',  # 12 overlong
        '{"at": NaN, "address": "AA", "rssi": -50}',       # 13 NaN
        good[2],                                           # 14
    ]
    data = "\n".join(lines).encode() + b"\n" + b"\xff\xfe\n" + good[3].encode()[:-7]  # 15 not UTF-8, 16 cut off
    path = tmp_path / "messy.jsonl"
    path.write_bytes(data)
    items = list(read_recording(path))
    assert [item for item in items if isinstance(item, Advert)] == ADVERTS[:3]
    errors = {item.line: item.reason for item in items if isinstance(item, RecordingError)}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15, 16]
    assert "not JSON" in errors[2] and "'at' is missing" in errors[4] and "'rssi'" in errors[5]
    assert "not hex" in errors[6] and "longer than" in errors[12] and "UTF-8" in errors[15]
    assert "cut off" in errors[16] and "unknown keys" in errors[9]
    assert all("\n" not in reason and len(reason) < 300 for reason in errors.values())
    assert str(RecordingError(2, "x")) == "line 2: x"


def test_replay_paces_by_recorded_time_without_real_sleeping() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    def clock() -> float:
        return now[0]

    times = [10.0, 10.5, 12.0, 11.0, 14.0]  # one out of order
    adverts = [Advert(at=t, address="AA", rssi=-50) for t in times]

    async def collect(speed: float | None) -> list[Advert]:
        slept.clear()
        return [advert async for advert in replay(adverts, speed=speed, sleep=sleep, clock=clock)]

    assert asyncio.run(collect(None)) == adverts and slept == []
    assert asyncio.run(collect(1.0)) == adverts and slept == [0.5, 1.5, 2.0]
    assert asyncio.run(collect(2.0)) == adverts and slept == [0.25, 0.75, 1.0]
    with pytest.raises(ValueError, match="replay speed"):
        asyncio.run(collect(0.0))


def test_a_recording_replays_through_the_radio_path_unchanged(tmp_path: Path) -> None:
    """Record what a station's scan loop hears, replay the file into a fake radio: the same adverts come out."""
    live = ble.FakeRadio()
    live.put_many(ADVERTS)
    live.end()
    path = tmp_path / "station.jsonl"
    policy = RetryPolicy(base_s=0.001, cap_s=0.002)

    async def record() -> None:
        with RecordingWriter(path) as writer:
            loop = ScanLoop("hci0", "passive", writer.write, lambda *status: None, backend=ble.fake_backend(live),
                            wall_clock=live.wall_clock, policy=policy, tick_s=0.005)
            await asyncio.wait_for(loop.run(asyncio.Event()), 20)

    asyncio.run(record())

    replayed = ble.FakeRadio()
    heard: list[Advert] = []

    async def play() -> None:
        async for advert in replay((item for item in read_recording(path) if isinstance(item, Advert)), speed=None):
            replayed.put(advert)
        replayed.end()
        loop = ScanLoop("hci0", "passive", heard.append, lambda *status: None, backend=ble.fake_backend(replayed),
                        wall_clock=replayed.wall_clock, policy=policy, tick_s=0.005)
        await asyncio.wait_for(loop.run(asyncio.Event()), 20)

    asyncio.run(play())
    assert heard == ADVERTS
