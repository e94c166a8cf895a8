"""The entrance QR reader (hardware.qr_station, hardware.qr_cli) as a whole.

Generated camera frames (codes 90–320 px in 1280×720 cluttered scenes, rotated, noisy, some blurred) go the real
way: a pretend webcam (qr.synthetic.SyntheticV4L2Device) sends them as YUYV or MJPEG buffers → qr.camera's
conversion → the decoding strategy → the debouncer → classification and pairing → events through
bus.device.DeviceClient → a real Mosquitto → the hub in a thread → its database. The reader's clock is set by the
pretend webcam as each buffer goes out, so the pairing window is decided by the script, never by how fast this
machine runs; faults (an unplugged webcam, a device node gone) happen at known buffers.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, HubThread
from support import wait_until

from broker.site import Site, enroll_device
from bus.backoff import Backoff
from bus.config import ClientConfig
from bus.outbox import Outbox
from hardware.qr_station import QrReaderRuntime, QrReaderSettings, QrStation
from protocol.codec import encode_event
from protocol.events import Event, TagReturned, VisitLinked
from protocol.ids import new_visit_id, visit_id_for
from qr import synthetic
from qr.camera import CameraMissing, V4L2Camera
from qr.decode import make_decoder
from qr.frames import Decoded, Frame

WAIT_S = 60.0
SITE = "test-site"
BASE = "https://visit.example.org"
T0 = float(math.floor(time.time()) - 600)
"""Ten minutes ago: well inside what the hub accepts."""
FAST = Backoff(base_s=0.01, cap_s=0.02)


def code(text: str, seed: int, side: int = 200, angle: float = 20, sigma: float = 12, blur: float = 0.0) -> Frame:
    return synthetic.render(text, seed=seed, side=side, angle=angle, sigma=sigma, blur=blur).frame


def visit_text(token: str) -> str:
    return f"{BASE}/v/{token}"


def tag_text(tag_id: str, site_id: str = SITE) -> str:
    return f"MUSEUM-TAG:{site_id}:{tag_id}"


class Script:
    """Frames and the reader's clock: buffer n goes out at `times[n]` (seconds after T0)."""

    def __init__(self, shots: Sequence[tuple[float, Frame]]) -> None:
        self.times = [T0 + at for at, _ in shots]
        self.frames = [frame for _, frame in shots]
        self.now = T0
        self.sent = 0

    def clock(self) -> float:
        return self.now

    def on_buffer(self, number: int) -> None:
        self.sent += 1
        self.now = self.times[self.sent - 1]


# --- settings ----------------------------------------------------------------------------------------------

def config_with(table: object) -> ClientConfig:
    from bus.config import BrokerSettings

    extra = {} if table is None else {"qr_reader": table}
    return ClientConfig(site_id=SITE, client_id="entrance", kind="qr_reader",
                        broker=BrokerSettings("127.0.0.1", 1883, "entrance", "x"), extra=extra)


def test_settings_defaults_and_values(tmp_path: Path) -> None:
    path = tmp_path / "entrance.toml"
    assert QrReaderSettings.from_config(config_with(None), path) == QrReaderSettings(path)
    settings = QrReaderSettings.from_config(config_with({"camera": "v4l2:/dev/video2", "decoder": "zbar",
                                                         "repeat_s": 5, "pair_window_s": 30, "width": 640,
                                                         "height": 480}), path)
    assert (settings.camera, settings.decoder, settings.repeat_s, settings.pair_window_s, settings.width,
            settings.height) == ("v4l2:/dev/video2", "zbar", 5.0, 30.0, 640, 480)


@pytest.mark.parametrize("table, message", [
    ({"camera": "webcam"}, 'camera must be "picamera2" or "v4l2:/dev/videoN"'),
    ({"decoder": "opencv"}, "decoder must be one of zxing, zbar"),
    ({"repeat_s": -1}, "repeat_s must be a number of seconds from 0 to 60"),
    ({"repeat_s": True}, "repeat_s must be a number"),
    ({"pair_window_s": 1}, "pair_window_s must be a number of seconds from 5 to 600"),
    ({"width": 10}, "width must be a whole number of pixels"),
    ({"height": 720.5}, "height must be a whole number of pixels"),
    ({"companion_base_url": "https://x"}, "unknown setting(s) companion_base_url"),
    ("picamera2", "qr_reader must be a table"),
])
def test_bad_settings_are_one_line_naming_the_file(tmp_path: Path, table: object, message: str) -> None:
    path = tmp_path / "entrance.toml"
    with pytest.raises(ValueError) as caught:
        QrReaderSettings.from_config(config_with(table), path)
    assert message in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


# --- the station's logic, events collected ---------------------------------------------------------------------

def test_frames_to_events(tmp_path: Path) -> None:
    token, other = new_visit_id(), new_visit_id()
    events: list[Event] = []
    station = QrStation(QrReaderSettings(tmp_path / "c.toml"), site_id=SITE, device_id="entrance",
                        emit=events.append)
    visit, tag = code(visit_text(token), 1, side=160, angle=50, sigma=20), code(tag_text("t-00000000002a"), 2)
    script = [(0, visit), (1, visit), (2.5, visit), (3, tag), (4, tag),          # held in view: read once each
              (10, code(tag_text("t-0000000000ff", "other-site"), 3)),         # another site's tag: foreign
              (11, code("https://www.example.com/expo?" + "x" * 200, 4)),       # foreign, long
              (20, code(tag_text("t-0102abcd"), 5)),                            # a tag alone: returned
              (90, synthetic.empty_frame(6)),
              (91, code(visit_text(other), 7, side=300, angle=85, sigma=28, blur=1.0)),  # a visit alone
              (95, synthetic.empty_frame(8))]
    for at, frame in script:
        station.process(frame, T0 + at)
    station.tick(T0 + 200)
    assert [type(e) for e in events] == [VisitLinked, TagReturned, VisitLinked]
    linked, returned, alone = events
    assert isinstance(linked, VisitLinked) and isinstance(returned, TagReturned) and isinstance(alone, VisitLinked)
    assert (linked.visit_id, linked.tag_id, linked.channel) == (visit_id_for(token), "t-00000000002a", "entrance_qr")
    assert linked.occurred_at.timestamp() == T0 + 3
    assert (returned.tag_id, returned.visit_id, returned.occurred_at.timestamp()) == ("t-0102abcd", None, T0 + 20)
    assert (alone.visit_id, alone.tag_id, alone.occurred_at.timestamp()) == (visit_id_for(other), None, T0 + 91)
    stats = station.stats
    assert (stats.visits, stats.tags, stats.links, stats.returns, stats.lone_visits) == (2, 2, 1, 1, 1)
    assert stats.repeats == 3 and dict(stats.foreign) == {"another site's tag": 1, "not a museum code": 1}
    wire = b"".join(encode_event(e) for e in events)
    assert token.encode() not in wire and other.encode() not in wire  # only visit_id_for(token) leaves


def test_a_stopping_station_records_the_waiting_code(tmp_path: Path) -> None:
    events: list[Event] = []
    station = QrStation(QrReaderSettings(tmp_path / "c.toml"), site_id=SITE, device_id="entrance",
                        emit=events.append)
    station.process(code(tag_text("t-00000000002a"), 1), T0)
    assert events == []
    station.close()
    assert [(type(e), e.tag_id) for e in events] == [(TagReturned, "t-00000000002a")]  # type: ignore[attr-defined]


class FlakyDecoder:
    """A decoder with a bug: it raises on its `fail_on`-th call (the real decoders never raise)."""

    name = "flaky"

    def __init__(self, fail_on: set[int]) -> None:
        self.inner = make_decoder("zxing")
        self.fail_on = fail_on
        self.calls = 0
        self.errors = 0
        self.last_error: str | None = None

    def decode(self, frame: Frame) -> list[Decoded]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("decoder bug")
        return self.inner.decode(frame)


def test_a_failing_decoder_costs_a_frame_not_the_reader(tmp_path: Path) -> None:
    token = new_visit_id()
    events: list[Event] = []
    station = QrStation(QrReaderSettings(tmp_path / "c.toml"), site_id=SITE, device_id="entrance",
                        emit=events.append, decoder=FlakyDecoder({1}))
    visit = code(visit_text(token), 1, side=300, angle=10, sigma=5)
    station.process(visit, T0)  # the decoder's first call raises: this frame is lost
    assert events == [] and station.strategy.stats.failures == 1 and station.stats.visits == 0
    station.process(visit, T0 + 0.1)
    station.process(code(tag_text("t-00000000002a"), 2), T0 + 1)
    assert [(type(e), e.visit_id) for e in events] == [(VisitLinked, visit_id_for(token))]


# --- through the bus to the hub --------------------------------------------------------------------------------

def stored(site: Site, device_id: str) -> list[dict[str, Any]]:
    path = site.hub_database
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT type, occurred_at, visit_id, fields FROM events WHERE device_id = ? "
                              "AND type IN ('visit.linked', 'tag.returned') ORDER BY occurred_at", (device_id,))
            return [{**dict(row), "fields": json.loads(row["fields"])} for row in rows]
        except sqlite3.OperationalError:
            return []


def reader_config(site: Site, device_id: str, table: str = "") -> Path:
    path = enroll_device(site, device_id, "qr_reader")
    with path.open("a") as handle:
        handle.write(f"\n[qr_reader]\ncamera = \"v4l2:/dev/video0\"\n{table}")
    return path


@pytest.fixture
def reader(site: Site, broker: object) -> Iterator[Callable[..., QrReaderRuntime]]:
    """Start a reader on a pretend webcam in a thread of its own, with the hub running; stopped at the end."""
    started: list[tuple[QrReaderRuntime, threading.Event, threading.Thread]] = []
    with HubThread(site):

        def start(device_id: str, factory: Callable[[str], Any], clock: Callable[[], float]) -> QrReaderRuntime:
            path = reader_config(site, device_id)
            config = ClientConfig.load(path)
            settings = QrReaderSettings.from_config(config, path)
            runtime = QrReaderRuntime(config, settings, camera=V4L2Camera("/dev/video0", device_factory=factory),
                                      clock=clock, backoff=Backoff(base_s=FAST.base_s, cap_s=FAST.cap_s))
            runtime.open_camera()
            stop = threading.Event()
            thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
            thread.start()
            started.append((runtime, stop, thread))
            return runtime

        yield start
        for _runtime, stop, thread in started:
            stop.set()
            thread.join(15)
            assert not thread.is_alive()


def expect(site: Site, device_id: str, count: int) -> list[dict[str, Any]]:
    assert wait_until(lambda: len(stored(site, device_id)) >= count, WAIT_S), stored(site, device_id)
    return stored(site, device_id)


def check_linked(row: dict[str, Any], visit_id: str, tag_id: str | None, at: float) -> None:
    assert row["type"] == "visit.linked" and row["fields"]["channel"] == "entrance_qr"
    assert row["visit_id"] == visit_id
    assert row["occurred_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)))
    # The hub resolves tags to visits itself and keeps tag_id back from what it stores (None or absent).
    assert row["fields"].get("tag_id") in (None, tag_id)


def test_camera_frames_reach_the_hub_as_links_and_returns(site: Site, reader: Callable[..., QrReaderRuntime]) -> None:
    token, other = new_visit_id(), new_visit_id()
    script = Script([
        (0, code(visit_text(token), 11, side=120, angle=35, sigma=18)),
        (1, code(visit_text(token), 12, side=120, angle=40, sigma=22)),     # the same showing
        (2, code(tag_text("t-00000000002a"), 13, side=250, angle=75, sigma=25, blur=1.1)),
        (3, synthetic.empty_frame(14)),
        (10, code(tag_text("t-0000000000ff"), 15, side=95, angle=5, sigma=6)),   # a tag brought back
        (11, code("WIFI:S:Museum-Guest;T:WPA;P:secret;;", 16)),
        (80, synthetic.empty_frame(17)),                                       # its window ends: returned
        (81, code(visit_text(other), 18, side=320, angle=90, sigma=30)),
        (150, synthetic.empty_frame(19)),                                      # a visit without a tag
    ])
    device = synthetic.SyntheticV4L2Device(script.frames, "YUYV", on_buffer=script.on_buffer)
    runtime = reader("entrance", lambda _path: device, script.clock)
    rows = expect(site, "entrance", 3)
    assert [row["type"] for row in rows] == ["visit.linked", "tag.returned", "visit.linked"]
    check_linked(rows[0], visit_id_for(token), "t-00000000002a", T0 + 2)
    assert rows[1]["fields"].get("tag_id") in (None, "t-0000000000ff")
    check_linked(rows[2], visit_id_for(other), None, T0 + 81)
    assert wait_until(lambda: runtime.stats.frames == len(script.frames), WAIT_S)
    stats = runtime.stats
    assert (stats.links, stats.returns, stats.lone_visits, stats.repeats) == (1, 1, 1, 1)
    assert dict(stats.foreign) == {"not a museum code": 1} and stats.camera_faults == 0
    outbox = runtime.device.config.outbox
    assert outbox is not None
    for path in outbox.path.parent.glob(outbox.path.name + "*"):  # the database and its journal files
        assert token.encode() not in path.read_bytes()


def test_an_unplugged_webcam_is_opened_again_and_nothing_is_lost(site: Site,
                                                                  reader: Callable[..., QrReaderRuntime]) -> None:
    token = new_visit_id()
    first = Script([(0, code(visit_text(token), 21, side=140, angle=60, sigma=15)), (1, synthetic.empty_frame(22))])
    second = Script([(5, code(tag_text("t-00000000002a"), 23, side=180, angle=10, sigma=10)),
                     (6, code(tag_text("t-0000000000ff"), 24, side=220, angle=30, sigma=20)),
                     (100, synthetic.empty_frame(25))])
    clock = [T0]
    devices: list[object] = [
        synthetic.SyntheticV4L2Device(first.frames, "MJPG", lost_at=2,
                                      on_buffer=lambda n: clock.__setitem__(0, first.times[n])),
        CameraMissing("/dev/video0 does not exist"),  # the node is gone for a moment after the unplug
        CameraMissing("/dev/video0 does not exist"),
        synthetic.SyntheticV4L2Device(second.frames, "MJPG",
                                      on_buffer=lambda n: clock.__setitem__(0, second.times[n])),
    ]
    opened: list[object] = []

    def factory(_path: str) -> object:
        device = devices.pop(0) if len(devices) > 1 else devices[0]
        opened.append(device)
        if isinstance(device, Exception):
            raise device
        return device

    runtime = reader("entrance-2", factory, lambda: clock[0])
    rows = expect(site, "entrance-2", 2)
    # The visit shown before the fault waited through it and was paired with the tag shown after.
    check_linked(rows[0], visit_id_for(token), "t-00000000002a", T0 + 5)
    assert rows[1]["type"] == "tag.returned" and rows[1]["fields"].get("tag_id") in (None, "t-0000000000ff")
    stats = runtime.stats
    assert stats.camera_faults == 3 and stats.camera_opens == 2 and len(opened) == 4
    assert "does not exist" in (stats.last_camera_fault or "")


# --- the command ---------------------------------------------------------------------------------------------

def qr_reader(*args: str | Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    program = "from hardware.qr_cli import qr_reader; qr_reader(prog_name='museum qr-reader')"
    return subprocess.run([sys.executable, "-c", program, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def assert_operator_error(result: subprocess.CompletedProcess[str], *names: str | Path) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


def test_operator_mistakes_are_one_line_and_exit_2(site: Site, tmp_path: Path) -> None:
    assert_operator_error(qr_reader("run", "--config", tmp_path / "none.toml"), tmp_path / "none.toml")
    kiosk = enroll_device(site, "kiosk-1", "kiosk")
    assert_operator_error(qr_reader("run", "--config", kiosk), kiosk, "not 'qr_reader'")
    bad = reader_config(site, "reader-bad", "pair_window_s = 0\n")
    assert_operator_error(qr_reader("run", "--config", bad), bad, "pair_window_s")
    missing = enroll_device(site, "reader-missing", "qr_reader")
    with missing.open("a") as handle:
        handle.write('\n[qr_reader]\ncamera = "v4l2:/dev/video-none"\n')
    assert_operator_error(qr_reader("run", "--config", missing), missing, "/dev/video-none", "[qr_reader] camera")
    pi = enroll_device(site, "reader-pi", "qr_reader")  # camera = "picamera2" by default: not on this machine
    assert_operator_error(qr_reader("run", "--config", pi), pi, "picamera2", "[qr_reader] camera")
    assert_operator_error(qr_reader("run", "--config", pi, "--frames", tmp_path / "nowhere"), "nowhere")


def test_the_command_reads_a_folder_of_images_and_stops_on_sigterm(site: Site, broker: object,
                                                                   tmp_path: Path) -> None:
    token = new_visit_id()
    folder = tmp_path / "frames"
    folder.mkdir()
    code(visit_text(token), 31, side=170, angle=25, sigma=14).image().save(folder / "01-visit.png")
    code(tag_text("t-00000000002a"), 32, side=210, angle=65, sigma=10).image().save(folder / "02-tag.pgm")
    synthetic.empty_frame(33).image().save(folder / "03-nothing.png")
    code(tag_text("t-0000000000ff"), 34, side=150, angle=0, sigma=5).image().save(folder / "04-tag.png")
    config = reader_config(site, "entrance-cli")
    log = tmp_path / "reader.log"
    with HubThread(site), log.open("w") as output:
        program = "from hardware.qr_cli import qr_reader; qr_reader(prog_name='museum qr-reader')"
        process = subprocess.Popen([sys.executable, "-c", program, "run", "--config", str(config), "--frames",
                                    str(folder), "--fps", "20"], cwd=ROOT, stdout=subprocess.PIPE, stderr=output,
                                   text=True)
        try:
            rows = expect(site, "entrance-cli", 1)
            assert rows[0]["type"] == "visit.linked" and rows[0]["visit_id"] == visit_id_for(token)
            # The last tag waits for a visit; the reader is stopped first, and records it as returned.
            assert wait_until(lambda: "tag t-0000000000ff read" in log.read_text(), WAIT_S), log.read_text()
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, log.read_text()
        assert "entrance-cli: stopped;" in out and "1 tags lent, 1 returned" in out
        rows = expect(site, "entrance-cli", 2)  # the outbox keeps it: sent now, or at the next start
    assert [row["type"] for row in rows] == ["visit.linked", "tag.returned"]
    assert "Traceback" not in log.read_text() and token not in log.read_text()
    outbox = Outbox(ClientConfig.load(config).outbox.path)  # type: ignore[union-attr]
    assert outbox.stats().pending == 0
