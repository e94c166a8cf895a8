"""Remote commands and screenshots, end to end: `send_command` and `museum device command` through a real
Mosquitto, a device (`DeviceClient`) answering from its `on_command` handler, and the hub (in a thread) storing
the `command.result` and writing screenshots as files."""

from __future__ import annotations

import sqlite3
import stat
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness import HubThread, device_config, devices, quarantine, start_device
from support import wait_until

from broker.commands import CommandError, CommandReply, parse_args, send_command
from broker.hub_store import HubStore, find_command_result, open_reader
from broker.mosquitto import reload_running
from broker.screenshots import ScreenshotLimits, ScreenshotStore
from broker.site import OPERATOR_USERNAME, Site, acl_text, enrolled_devices
from bus.config import ClientConfig
from bus.device import DeviceClient
from bus.mqtt import Credentials, Endpoint, MqttLink
from museum.cli import main
from protocol.codec import (
    MAX_SCREENSHOT_PNG_BYTES,
    PNG_SIGNATURE,
    decode_screenshot,
    encode_presence,
    encode_screenshot,
)
from protocol.errors import ContractError
from protocol.ids import utc_now
from protocol.messages import Command, Presence, Screenshot
from protocol.topics import all_devices, screenshots_topic, status_topic

WAIT_S = 60.0
TIMEOUT_S = 60.0  # for answers that will come: generous, never reached when all goes well


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (200, 30, 30), *,
             padding: int = 0) -> bytes:
    """A real PNG, written by hand (an 8-bit RGB image of one colour); `padding` adds a text chunk of that size."""
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    extra = chunk(b"tEXt", b"pad\x00" + b"x" * padding) if padding else b""
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + extra
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@dataclass
class Kiosk:
    """A device whose handler answers like a kiosk would, and records what it was asked."""

    site: Site
    device_id: str = "kiosk-01"
    received: list[Command] = field(default_factory=list)
    png: bytes = field(default_factory=make_png)
    client: DeviceClient | None = None

    def handle(self, command: Command) -> tuple[bool, str]:
        self.received.append(command)
        if command.name == "set-language":
            return True, f"default language is now {command.args['language']}"
        if command.name == "restart":
            return False, "a visitor is using the kiosk; try again later"
        if command.name == "screenshot":
            assert self.client is not None
            self.client.send_screenshot(command.command_id, self.png)  # a ValueError becomes the failed result
            return True, f"screenshot of {len(self.png)} bytes sent"
        if command.name == "burst":  # many screenshots at once, for the retention bound
            assert self.client is not None
            for number in range(int(command.args["count"])):
                self.client.send_screenshot(str(uuid.UUID(int=number + 1)), make_png(rgb=(number, 0, 0)))
            return True, "sent"
        return False, f"unknown command {command.name!r}"

    def start(self) -> DeviceClient:
        self.client = start_device(self.site, self.device_id, on_command=self.handle)
        return self.client


@pytest.fixture
def hub(site: Site, broker) -> Iterator[HubThread]:
    with HubThread(site) as running:
        yield running


@pytest.fixture
def kiosk(site: Site, hub: HubThread) -> Iterator[Kiosk]:
    device = Kiosk(site)
    client = device.start()
    # A known point: the hub has seen the device (its retained status), so it will take its screenshots.
    assert wait_until(lambda: device.device_id in devices(site), WAIT_S)
    yield device
    client.stop()


def events_of(site: Site, device_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(site.hub_database) as db:
        return db.execute("SELECT type, fields FROM events WHERE device_id = ?", (device_id,)).fetchall()


def device_link(site: Site, device_id: str) -> MqttLink:
    """A bare MQTT connection with a device's account: no status published, no outbox."""
    config = ClientConfig.load(site.device_config(device_id))
    link = MqttLink(device_id, Endpoint("127.0.0.1", config.broker.port),
                    Credentials(config.broker.username, config.broker.password))
    assert link.wait_connected(30)
    return link


# --- the library ----------------------------------------------------------------------------------------------

def test_a_command_round_trips_with_its_arguments(site: Site, kiosk: Kiosk) -> None:
    reply = send_command(site, "kiosk-01", "set-language", {"language": "en", "count": 3, "force": True},
                         timeout_s=TIMEOUT_S)

    assert reply == CommandReply(reply.command_id, "kiosk-01", "set-language", True, "default language is now en")
    assert kiosk.received[-1].command_id == reply.command_id
    assert kiosk.received[-1].args == {"language": "en", "count": 3, "force": True}


def test_a_refused_and_an_unknown_command_come_back_as_failed(site: Site, kiosk: Kiosk) -> None:
    refused = send_command(site, "kiosk-01", "restart", {}, timeout_s=TIMEOUT_S)
    unknown = send_command(site, "kiosk-01", "dance", {}, timeout_s=TIMEOUT_S)

    assert (refused.ok, refused.detail) == (False, "a visitor is using the kiosk; try again later")
    assert (unknown.ok, unknown.detail) == (False, "unknown command 'dance'")
    assert send_command(site, "kiosk-01", "ping", {}, timeout_s=TIMEOUT_S).detail == "pong"  # the client's own


def test_a_device_not_enrolled_is_refused_before_anything_is_sent(site: Site, hub: HubThread) -> None:
    with pytest.raises(CommandError, match="'kiosk-77' is not enrolled at site 'test-site'"):
        send_command(site, "kiosk-77", "ping", {}, timeout_s=TIMEOUT_S)


def test_a_screenshot_lands_as_a_file_and_never_as_an_event(site: Site, kiosk: Kiosk, hub: HubThread) -> None:
    reply = send_command(site, "kiosk-01", "screenshot", {}, timeout_s=TIMEOUT_S)

    assert reply.ok, reply.detail
    assert reply.screenshot == site.screenshot_file("kiosk-01", reply.command_id)
    assert reply.screenshot.read_bytes() == kiosk.png
    assert stat.S_IMODE(reply.screenshot.stat().st_mode) == 0o640
    assert not list(reply.screenshot.parent.glob(".*"))  # no temporary file left beside it
    assert hub.hub.screenshots_saved == 1
    assert kiosk.client is not None and kiosk.client.wait_drained(WAIT_S)
    stored = events_of(site, "kiosk-01")
    assert {kind for kind, _ in stored} <= {"command.result", "device.status"}
    assert all(len(fields) < 1000 and "PNG" not in fields for _, fields in stored)


def test_the_device_refuses_to_send_what_is_not_a_png_or_too_large(site: Site, kiosk: Kiosk) -> None:
    kiosk.png = b"GIF89a not a png"
    not_png = send_command(site, "kiosk-01", "screenshot", {}, timeout_s=TIMEOUT_S)
    kiosk.png = make_png(padding=MAX_SCREENSHOT_PNG_BYTES)
    too_large = send_command(site, "kiosk-01", "screenshot", {}, timeout_s=TIMEOUT_S)

    assert not not_png.ok and "PNG signature" in not_png.detail and not_png.detail.startswith("ValueError")
    assert not too_large.ok and "scale the picture down" in too_large.detail
    assert (not_png.screenshot, too_large.screenshot) == (None, None)
    assert not site.screenshots_dir.exists() or not list(site.screenshots_dir.glob("*/*"))


def test_the_hub_quarantines_invalid_screenshots_and_writes_none(site: Site, kiosk: Kiosk, hub: HubThread) -> None:
    # Bare connections with the accounts of two more devices (another device's account would take its session).
    valid = encode_screenshot(Screenshot(str(uuid.uuid4()), utc_now(), make_png()))
    header, _, png = valid.partition(b"\n")
    frames = {
        "kiosk-03": [header + b"\n" + b"GIF89a" + png[6:],      # not a PNG
                     png,                                        # no header line
                     header + b"\n" + png[:-1]],                 # shorter than its header says
        "kiosk-02": [valid],                                     # from a device the hub has never seen
    }
    for device_id in frames:
        device_config(site, device_id)
    links = {device_id: device_link(site, device_id) for device_id in frames}
    try:
        presence = Presence("kiosk-03", "online", "kiosk", "0.1.0", utc_now())
        assert links["kiosk-03"].publish(status_topic(site.site_id, "kiosk-03"), encode_presence(presence), retain=True)
        assert wait_until(lambda: "kiosk-03" in devices(site), WAIT_S)
        for device_id, payloads in frames.items():
            for payload in payloads:
                assert links[device_id].publish(screenshots_topic(site.site_id, device_id), payload, qos=1)
            assert links[device_id].flush(30)

        assert wait_until(lambda: hub.hub.screenshots_refused == 4, WAIT_S), hub.hub.screenshots_refused
    finally:
        for link in links.values():
            link.close()
    assert wait_until(lambda: len(quarantine(site)) == 4, WAIT_S)
    rows = quarantine(site)
    assert sorted((row["device_id"], row["code"]) for row in rows) == [
        ("kiosk-02", "unknown_device"), ("kiosk-03", "invalid_frame"), ("kiosk-03", "invalid_frame"),
        ("kiosk-03", "not_png")]
    assert hub.hub.screenshots_saved == 0
    assert not site.screenshots_dir.exists() or not list(site.screenshots_dir.glob("*/*"))
    # The hub carries on: a valid one is written after them.
    assert send_command(site, "kiosk-01", "screenshot", {}, timeout_s=TIMEOUT_S).screenshot is not None


def test_only_the_newest_twenty_screenshots_of_a_device_are_kept(site: Site, kiosk: Kiosk, hub: HubThread) -> None:
    assert send_command(site, "kiosk-01", "burst", {"count": 25}, timeout_s=TIMEOUT_S).ok

    assert wait_until(lambda: hub.hub.screenshots_saved == 25, WAIT_S), hub.hub.screenshots_saved
    kept = {path.stem for path in (site.screenshots_dir / "kiosk-01").glob("*.png")}
    assert kept == {str(uuid.UUID(int=number + 1)) for number in range(5, 25)}


def test_the_byte_bound_removes_the_oldest_screenshots_of_any_device(tmp_path: Path) -> None:
    png = make_png(padding=1000)
    store = ScreenshotStore(tmp_path / "shots", ScreenshotLimits(per_device=20, total_bytes=5 * len(png)))
    saved = [store.save(f"kiosk-{n % 2}", Screenshot(str(uuid.uuid4()), utc_now(), png)) for n in range(8)]

    assert sorted(path for path in (tmp_path / "shots").glob("*/*.png")) == sorted(saved[-5:])
    assert store.usage() == (5, 5 * len(png))


def older_acl(site: Site) -> str:
    """The ACL an earlier version wrote for the site: no screenshot rules, no operator account."""
    blocks = acl_text(site.site_id, enrolled_devices(site)).split("\n\n")
    text = "\n\n".join(block for block in blocks if f"user {OPERATOR_USERNAME}" not in block)
    return "".join(line for line in text.splitlines(keepends=True) if "screenshots" not in line)


def test_a_site_made_before_screenshots_gets_its_rules_on_the_first_command(make_site, make_broker) -> None:
    site = make_site()
    make_broker(site)
    with HubThread(site):
        device = Kiosk(site)
        client = device.start()
        try:
            assert wait_until(lambda: "kiosk-01" in devices(site), WAIT_S)
            # As on a site upgraded in place: the ACL of the earlier version, loaded by the running broker.
            site.acl_file.write_text(older_acl(site), encoding="utf-8")
            assert "screenshots" not in site.acl_file.read_text(encoding="utf-8")
            assert reload_running(site)
            assert not site.operator_config.exists()

            reply = send_command(site, "kiosk-01", "screenshot", {}, timeout_s=TIMEOUT_S)
        finally:
            client.stop()
    assert site.operator_config.exists()
    assert f"topic read {all_devices(site.site_id, 'screenshots')}" in site.acl_file.read_text(encoding="utf-8")
    assert reply.screenshot is not None and reply.screenshot.read_bytes() == device.png


# --- no answer ------------------------------------------------------------------------------------------------

def test_a_device_that_never_connected_gets_a_clear_error(site: Site, hub: HubThread) -> None:
    device_config(site, "kiosk-09")
    with pytest.raises(CommandError, match=r"no answer from kiosk-09 to ping .* within 2 s: the hub has never "
                                           r"seen kiosk-09 connected; .* the command is dropped"):
        send_command(site, "kiosk-09", "ping", {}, timeout_s=2)


def test_an_offline_device_runs_the_command_when_it_reconnects(site: Site, hub: HubThread) -> None:
    device = Kiosk(site)
    client = device.start()
    # Online: it has subscribed to its commands (before publishing its status, on the same connection).
    assert wait_until(lambda: devices(site).get("kiosk-01", {}).get("state") == "online", WAIT_S)
    client.stop()  # its session, subscription included, stays at the broker
    assert wait_until(lambda: devices(site)["kiosk-01"]["state"] == "offline", WAIT_S)

    with pytest.raises(CommandError, match=r"the device is offline .* the broker keeps the command for it and the "
                                           r"device will run it when it reconnects") as raised:
        send_command(site, "kiosk-01", "set-language", {"language": "de"}, timeout_s=2)

    command_id = raised.value.command_id
    assert command_id is not None
    again = DeviceClient(ClientConfig.load(site.device_config("kiosk-01")).with_broker(discover=False),
                         on_command=device.handle)
    again.start()
    try:
        reader = open_reader(site.hub_database)
        try:
            assert wait_until(lambda: find_command_result(reader, "kiosk-01", command_id,
                                                          created_after=utc_now().replace(year=2000)) is not None,
                              WAIT_S)
        finally:
            reader.close()
    finally:
        again.stop()
    assert [command.args for command in device.received] == [{"language": "de"}]


def test_without_a_hub_database_or_a_broker_the_errors_say_what_to_start(site: Site) -> None:
    device_config(site, "kiosk-01")
    with pytest.raises(CommandError, match=r"no hub database at .*museum hub run --site"):
        send_command(site, "kiosk-01", "ping", {}, timeout_s=5)
    HubStore(site.hub_database).close()
    with pytest.raises(CommandError, match=r"cannot send the command through the broker at .*museum broker run"):
        send_command(site, "kiosk-01", "ping", {}, timeout_s=5)


# --- the command line -----------------------------------------------------------------------------------------

def run_cli(site: Site, *words: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["device", "command", *words, "--site", str(site.root),
                                       "--timeout", str(TIMEOUT_S)])
    return result.exit_code, result.output


def test_the_cli_prints_the_answer_and_the_screenshot_path(site: Site, kiosk: Kiosk) -> None:
    code, output = run_cli(site, "kiosk-01", "set-language", "language=en", "seconds=90", "ratio=0.5", "on=true")
    assert (code, output) == (0, "ok: default language is now en\n")
    assert kiosk.received[-1].args == {"language": "en", "seconds": 90, "ratio": 0.5, "on": True}

    code, output = run_cli(site, "kiosk-01", "screenshot")
    assert code == 0, output
    ok_line, shot_line = output.splitlines()
    assert ok_line == f"ok: screenshot of {len(kiosk.png)} bytes sent"
    assert Path(shot_line.removeprefix("screenshot: ")).read_bytes() == kiosk.png

    code, output = run_cli(site, "kiosk-01", "restart")
    assert (code, output) == (1, "failed: a visitor is using the kiosk; try again later\n")


def test_the_cli_errors_are_one_line(site: Site) -> None:
    code, output = run_cli(site, "kiosk-01", "ping", "language")
    assert code == 1 and output == "Error: argument 'language' is not KEY=VALUE\n"
    code, output = run_cli(site, "nobody", "ping")
    assert code == 1 and output.count("\n") == 1 and "not enrolled" in output


def test_values_are_read_as_booleans_numbers_or_text() -> None:
    assert parse_args(["a=true", "b=False", "c=12", "d=-1.5", "e=fr", "f=", "g=x=y", "h=nan"]) == {
        "a": True, "b": False, "c": 12, "d": -1.5, "e": "fr", "f": "", "g": "x=y", "h": "nan"}
    with pytest.raises(ValueError, match="given twice"):
        parse_args(["a=1", "a=2"])


# --- the frame ------------------------------------------------------------------------------------------------

def test_the_screenshot_frame_round_trips_and_refuses_what_is_not_one() -> None:
    shot = Screenshot(str(uuid.uuid4()), utc_now(), make_png())
    assert decode_screenshot(encode_screenshot(shot)) == shot
    for payload, code in ((b"", "invalid_frame"), (b"{}\n" + make_png(), "missing_field"),
                          (encode_screenshot(shot)[:-12], "invalid_frame"),
                          (b"x" * (MAX_SCREENSHOT_PNG_BYTES + 1024), "too_large")):
        with pytest.raises(ContractError) as raised:
            decode_screenshot(payload)
        assert raised.value.code == code

