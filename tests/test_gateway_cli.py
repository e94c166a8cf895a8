"""`museum gateway run|record|replay` as an operator runs them: real processes, from an enrolled gateway's file with a
[gateway] table, against a real Mosquitto and the hub (in this process).

This machine has no Bluetooth adapter and no BlueZ (no system D-Bus): `run` and `record` meet exactly that, and
must say so in a line staff can act on; `replay` plays a recording through bleak's scanner on a pretend adapter.
Every wait is on the hub's database, a file or the process's exit, with generous timeouts."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, HubThread, device_config
from support import wait_until

from broker.site import Site, enroll_device
from bus.config import ClientConfig
from hardware.advert import Advert
from hardware.gallery import DEFAULT_BEACON_NAMESPACE, DEFAULT_NAMESPACE, busy_gallery
from hardware.pipeline import StationPipeline
from hardware.recording import RecordingWriter
from hardware.settings import StationSettings
from protocol.events import Event

WAIT_S = 60.0
T0 = float(math.floor(time.time()) - 900)
"""A quarter of an hour ago: the hub accepts events that old."""
DEVICE = "gw-cli"


def gateway_table(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "zone_id": "room-a",
        "tag_namespace": DEFAULT_NAMESPACE.hex(),
        "artworks": [{"id": "monet", "enter_m": 2.0, "leave_m": 3.0}],
        # Two of the gallery's museum beacons: the first has a low battery.
        "beacons": [{"id": f"beacon-{n:02d}", "eddystone": f"{DEFAULT_BEACON_NAMESPACE.hex()}:{n + 1:012x}"}
                    for n in range(2)],
        "proximity": {"min_dwell_s": 3, "leave_after_s": 10},
        "occupancy": {"window_s": 15},
    }
    table.update(changes)
    return table


def write_config(site: Site, folder: Path, table: dict[str, Any] | None = None, *, kind: str = "gateway",
                 device_id: str = DEVICE) -> Path:
    path = folder / f"{device_id}.toml"
    extra = {"gateway": gateway_table() if table is None else table} if kind == "gateway" else {
        "kiosk": {"state_dir": str(folder / "state"), "home_room": "room-a"}}
    replace(device_config(site, device_id, kind), extra=extra).save(path)
    return path


def museum(*args: str) -> list[str]:
    return [sys.executable, "-m", "museum", "gateway", *args]


def finished(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(museum(*args), cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S * 2)


def stored(site: Site, kind: str, device_id: str = DEVICE) -> list[dict[str, Any]]:
    if not site.hub_database.exists():
        return []
    with sqlite3.connect(site.hub_database) as db:
        try:
            rows = db.execute("SELECT fields FROM events WHERE device_id = ? AND type = ? ORDER BY event_id",
                              (device_id, kind)).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []
    return [json.loads(row[0]) for row in rows]


def stored_types(site: Site, device_id: str = DEVICE) -> dict[str, int]:
    with sqlite3.connect(site.hub_database) as db:
        return dict(db.execute("SELECT type, COUNT(*) FROM events WHERE device_id = ? GROUP BY type",
                               (device_id,)).fetchall())


@pytest.fixture
def hub(site: Site, broker: object) -> Iterator[HubThread]:
    with HubThread(site) as running:
        yield running


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # teardown: whatever a failed test left running, by its own pid
        if process.poll() is None:
            process.kill()
            process.wait(WAIT_S)


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- run ----------------------------------------------------------------------------------------------------------

def test_run_without_bluetooth_keeps_running_reports_why_and_stops_cleanly_on_sigterm(site, hub, processes,
                                                                                        tmp_path) -> None:
    config = write_config(site, tmp_path)
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        process = subprocess.Popen(museum("run", "--config", str(config)), cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=err, text=True)
    processes.append(process)

    assert wait_until(lambda: stored(site, "scanner.status") or process.poll() is not None, WAIT_S)
    assert process.poll() is None, log.read_text()
    status = stored(site, "scanner.status")[0]
    assert status["state"] == "recovering" and status["adapter"] == "hci0"
    # No system D-Bus here: the reason says what is missing and what to do, in words.
    assert "no Bluetooth" in status["reason"] and "bluetooth" in status["reason"].split(":", 1)[1], status
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=WAIT_S)

    assert process.returncode == 0, log.read_text()
    assert out.strip().splitlines() == [out.strip()] and out.startswith(f"{DEVICE}: stopped; "), out
    text = log.read_text()
    assert "Traceback" not in text
    assert "scanner recovering on hci0" in text


# --- replay -------------------------------------------------------------------------------------------------------

BAD_LINES = {3: "this is not JSON\n", 40: '{"at": 1767000000.5, "address": "AA:BB:CC:DD:EE:01"}\n'}
"""Line number → a bad line: not JSON at all; an advert without its RSSI."""


def write_recording(path: Path, adverts: list[Advert]) -> None:
    """The adverts as `museum gateway record` writes them, with the bad lines put in at their line numbers."""
    with RecordingWriter(path) as writer:
        for advert in adverts:
            assert writer.write(advert)
    lines = path.read_text().splitlines(keepends=True)
    for number in sorted(BAD_LINES):
        lines.insert(number - 1, BAD_LINES[number])
    path.write_text("".join(lines))


def replayed_by_the_pipeline(settings: StationSettings, adverts: list[Advert]) -> list[Event]:
    """What the station must make of a recording: the pipeline ticked as the replay ticks it (before the first
    advert past each second of the recording's time), and closed at the end."""
    events: list[Event] = []
    pipeline = StationPipeline(settings, site_id="test-site", device_id=DEVICE, emit=events.append)
    latest, next_tick = None, -math.inf
    for advert in adverts:
        if latest is None or advert.at > latest:
            latest = advert.at
            if advert.at >= next_tick:
                next_tick = advert.at + 1.0
                pipeline.tick(advert.at)
        pipeline.feed(advert)
    assert latest is not None
    pipeline.tick(latest)
    pipeline.close(latest)
    return events


def test_replay_plays_a_recording_to_the_hub_and_names_its_bad_lines(site, hub, tmp_path) -> None:
    config = write_config(site, tmp_path)
    adverts = busy_gallery(3, tags=12, phones=40, beacons=2, duration_s=90, start=T0)
    recording = tmp_path / "gallery.jsonl"
    write_recording(recording, adverts)

    done = finished("replay", str(recording), "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for number in BAD_LINES:
        assert f"{recording}: line {number}: " in done.stderr, done.stderr
    summary = done.stdout.strip()
    assert summary.startswith(f"{DEVICE}: replayed {len(adverts)} adverts from {recording}; 2 bad lines skipped "
                              "(lines 3, 40); "), summary
    # Everything the pipeline makes of these adverts reached the hub (the replay waits for its outbox to drain).
    settings = StationSettings.from_config(ClientConfig.load(config), config)
    expected: dict[str, int] = {}
    for event in replayed_by_the_pipeline(settings, adverts):
        expected[event.type] = expected.get(event.type, 0) + 1
    assert {"proximity.entered", "proximity.left", "occupancy.counted", "beacon.health", "beacon.alert"} <= set(
        expected), expected
    found = stored_types(site)
    assert {kind: found.get(kind, 0) for kind in expected} == expected
    assert "waiting in the outbox" not in summary
    assert found.get("scanner.status") == 1  # scanning; the end of a recording is no fault


def test_replay_of_a_missing_recording_is_one_line(site, tmp_path) -> None:
    config = write_config(site, tmp_path)
    missing = tmp_path / "nothing.jsonl"
    one_line_error(finished("replay", str(missing), "--config", str(config)), str(missing), "check the path")


# --- record -------------------------------------------------------------------------------------------------------

def test_record_without_bluetooth_ends_after_its_duration_with_a_private_file(site, tmp_path) -> None:
    config = write_config(site, tmp_path)
    out = tmp_path / "heard.jsonl"

    done = finished("record", "--config", str(config), "--out", str(out), "--duration", "1")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    line, = done.stdout.strip().splitlines()
    assert line.startswith(f"{DEVICE}: 0 adverts recorded in {out}; the scanner never ran: no Bluetooth"), line
    assert out.exists() and out.stat().st_size == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_record_to_a_folder_that_does_not_exist_is_one_line(site, tmp_path) -> None:
    config = write_config(site, tmp_path)
    out = tmp_path / "no-such-folder" / "heard.jsonl"
    one_line_error(finished("record", "--config", str(config), "--out", str(out), "--duration", "1"),
                   str(out), "folder exists")


# --- operator mistakes ----------------------------------------------------------------------------------------------

COMMANDS = {
    "run": lambda config, tmp: ["run", "--config", str(config)],
    "record": lambda config, tmp: ["record", "--config", str(config), "--out", str(tmp / "r.jsonl"),
                                   "--duration", "1"],
    "replay": lambda config, tmp: ["replay", str(tmp / "r.jsonl"), "--config", str(config)],
}


@pytest.fixture(params=sorted(COMMANDS))
def command(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    (tmp_path / "r.jsonl").write_text("")
    return lambda config: COMMANDS[request.param](config, tmp_path)


def test_a_missing_configuration_file_is_one_line(command, tmp_path) -> None:
    missing = tmp_path / "station.toml"
    one_line_error(finished(*command(missing)), str(missing), "does not exist", "museum device enroll")


# The three commands read the file alike (above); the mistakes in it are shown through `run`.

def test_a_bad_gateway_setting_is_one_line_naming_the_file_and_the_setting(site, tmp_path) -> None:
    config = write_config(site, tmp_path, gateway_table(scan_mode="loud"))
    one_line_error(finished("run", "--config", str(config)), str(config), "scan_mode", '"passive" or "active"')


def test_a_kiosk_configuration_is_refused_in_one_line(site, tmp_path) -> None:
    config = write_config(site, tmp_path, kind="kiosk", device_id="kiosk-1")
    one_line_error(finished("run", "--config", str(config)), str(config), "'kiosk'", "--kind gateway")


def test_a_configuration_without_a_gateway_table_says_what_to_add(site, tmp_path) -> None:
    path = enroll_device(site, "gw-bare", "gateway")
    one_line_error(finished("run", "--config", str(path)), str(path), "[gateway]", "zone_id")


def test_an_outbox_that_cannot_be_opened_is_one_line(site, tmp_path) -> None:
    config = write_config(site, tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the outbox's folder should be")
    loaded = ClientConfig.load(config)
    assert loaded.outbox is not None
    replace(loaded, outbox=replace(loaded.outbox, path=blocked / "outbox.sqlite")).save(config)
    one_line_error(finished("run", "--config", str(config)), str(config), "outbox", str(blocked))


def test_the_help_lists_the_three_commands() -> None:
    done = subprocess.run(museum("--help"), cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0
    commands = done.stdout.split("Commands:", 1)[1].split()
    assert {"run", "record", "replay"} <= set(commands), done.stdout


@pytest.mark.parametrize(("word", "usage"), [("gateway", "Usage: museum gateway"),
                                             ("qr-reader", "Usage: museum qr-reader")])
def test_a_station_loads_its_own_commands_only(word: str, usage: str) -> None:
    """A station runs for months on a Pi: it imports neither the other roles nor Kivy."""
    code = (f"import sys\nsys.argv = ['museum', {word!r}, '--help']\nfrom museum.launch import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('broker', 'demo', 'kiosk', 'kivy', 'cryptography', 'museum.cli') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert usage in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
