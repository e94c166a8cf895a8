"""The kiosk without its window: runtime, event writer, settings, commands, packs, with the real things.

A real Mosquitto, the real hub in a thread (tests/harness.py), the real HTTPS pack server, real packs, the real
DeviceClient and outbox. Only the UI is missing: `ui_call` puts functions on a queue that the test thread pumps,
so the test thread is the kiosk's UI thread and calls the controller directly, as the Kivy app does."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import HubThread, device_config, devices
from support import UiQueue, wait_until
from test_content import _flip_byte, png_bytes
from test_content_publish import build, sha256

from broker.commands import CommandReply, send_command
from broker.pack_server import PackServer
from broker.packs import announce, pack_file_name
from broker.site import Site
from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from bus.outbox import Outbox
from content.pack import verify_pack
from kiosk.event_writer import EventWriter
from kiosk.pack_store import PackStore
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from protocol.events import ArtworkViewed, Event, KioskSessionStarted
from protocol.messages import ContentAnnouncement

DEVICE = "kiosk-01"
WAIT_S = 60


class Kiosk:
    def __init__(self, site: Site, tmp: Path, *, capture_png: Callable[[], bytes] | None = None) -> None:
        self.site = site
        self.ui = UiQueue()
        self.recorded: list[Event] = []
        enrolled = site.device_config(DEVICE)
        config = (ClientConfig.load(enrolled).with_broker(discover=False) if enrolled.exists()
                  else device_config(site, DEVICE))  # a second start of the same kiosk
        settings = replace(KioskSettings.from_config(config, site.device_config(DEVICE)), packs_dir=tmp / "packs")
        self.runtime = KioskRuntime(config, settings, ui_call=self.ui, capture_png=capture_png,
                                    tuning=DeliveryTuning(gather_s=0.05), on_recorded=self.recorded.append)
        self.controller = self.runtime.controller
        self.exits: list[int] = []
        self.runtime.on_exit_requested = self.exits.append

    def wait(self, condition: Callable[[], object]) -> bool:
        return wait_until(lambda: self.ui.pump() or bool(condition()), WAIT_S)

    def recorded_ids(self, *types: str) -> set[str]:
        return {event.event_id for event in self.recorded if not types or event.type in types}

    def command(self, name: str, **args: Any) -> CommandReply:
        """`museum device command`, in a thread of its own while this one keeps the UI turning."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(send_command, self.site, DEVICE, name, args, timeout_s=WAIT_S)
            assert self.wait(future.done), f"no answer to {name}"
            return future.result()


def stored(site: Site) -> dict[str, tuple[str, dict[str, Any]]]:
    """The hub's events of the kiosk: id → (type, own fields)."""
    if not site.hub_database.exists():
        return {}
    with sqlite3.connect(site.hub_database) as db:
        try:
            rows = db.execute("SELECT event_id, type, fields FROM events WHERE device_id = ?", (DEVICE,)).fetchall()
        except sqlite3.OperationalError:  # the hub has not created its tables yet
            return {}
    return {event_id: (kind, json.loads(fields)) for event_id, kind, fields in rows}


def stored_of(site: Site, kind: str) -> list[dict[str, Any]]:
    return [fields for event_type, fields in stored(site).values() if event_type == kind]


@pytest.fixture
def hub(site: Site, broker: object) -> Iterator[HubThread]:
    with HubThread(site) as running:
        yield running


@pytest.fixture
def make_kiosk(site: Site, hub: HubThread, tmp_path: Path) -> Iterator[Callable[..., Kiosk]]:
    made: list[Kiosk] = []

    def make(**kwargs: Any) -> Kiosk:
        kiosk = Kiosk(site, tmp_path, **kwargs)
        made.append(kiosk)
        return kiosk

    yield make
    for kiosk in made:
        kiosk.runtime.stop()


class Publisher:
    """Packs of the test museum, stored on the site, served over HTTPS and announced (retained) to devices."""

    def __init__(self, site: Site, tmp: Path, port: int) -> None:
        self.site, self.tmp, self.port = site, tmp, port

    def pack(self, version: int) -> Path:
        built = self.tmp / f"built-{version}"
        return built / "pack.tar" if (built / "pack.tar").exists() else build(built, version)

    def publish(self, version: int, *, corrupt: bool = False) -> ContentAnnouncement:
        pack = self.pack(version)
        pack_id = verify_pack(pack).pack_id
        name = pack_file_name(pack_id, version)
        target = self.site.packs_dir / name
        shutil.copyfile(pack, target)
        if corrupt:
            _flip_byte(target)  # a byte of a member's content: the file's hash is announced, the manifest's fails
        announcement = ContentAnnouncement(pack_id, str(version), sha256(target), datetime.now(UTC),
                                           f"https://localhost:{self.port}/packs/{name}", target.stat().st_size)
        announce(self.site, announcement)
        return announcement


@pytest.fixture
def publisher(site: Site, tmp_path: Path) -> Iterator[Publisher]:
    site.packs_dir.mkdir(parents=True, exist_ok=True)
    server = PackServer(site.packs_dir, site.server_cert, site.server_key, "127.0.0.1", 0, timeout_s=60.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Publisher(site, tmp_path, server.port)
    server.shutdown()
    server.server_close()
    thread.join(30)


# --- the runtime with the real broker and hub --------------------------------------------------------------

def test_a_visit_on_a_fresh_kiosk_reaches_the_hub_event_for_event(make_kiosk, publisher, site) -> None:
    kiosk = make_kiosk()
    controller = kiosk.controller
    kiosk.runtime.start()
    kiosk.ui.pump()
    assert controller.view.screen == "no_content"
    controller.touch()
    assert controller.idle, "no pack, no visit"

    publisher.publish(3)
    assert kiosk.wait(lambda: controller.view.screen == "attract"), "the published pack is shown when idle"
    pack = controller.view.museum
    assert pack is not None and pack.pack_version == 3
    controller.touch()
    controller.open_room(pack.rooms[-1].zone_id)
    work = pack.artworks_in(pack.rooms[-1].zone_id)[0].artwork_id
    controller.open_artwork(work)
    controller.set_language("en")
    controller.toggle("high_contrast")
    controller.collect(work)
    controller.open_my_visit()
    controller.end_visit()

    types = ["content.pack_applied", "kiosk.session_started", "artwork.viewed", "visitor.language_changed",
             "visitor.accessibility_changed", "artwork.collected", "kiosk.session_ended"]
    assert [event.type for event in kiosk.recorded] == types
    assert kiosk.wait(lambda: kiosk.recorded_ids() <= stored(site).keys())
    ours = {event_id for event_id, (kind, _) in stored(site).items() if kind in types}
    assert ours == kiosk.recorded_ids(), "every event the kiosk recorded is stored, and nothing else of its kind"
    applied, = stored_of(site, "content.pack_applied")
    assert (applied["pack_id"], applied["pack_version"]) == (pack.pack_id, "3")


def test_a_pack_published_during_a_visit_is_shown_once_the_visit_ends(make_kiosk, publisher, site,
                                                                      tmp_path) -> None:
    store = PackStore(tmp_path / "packs")
    store.mark_reported(store.install(publisher.pack(3)))  # the last good pack, shown before a restart
    kiosk = make_kiosk()
    controller = kiosk.controller
    kiosk.runtime.start()
    kiosk.ui.pump()
    shown = controller.shown_pack
    assert shown is not None and shown.pack_version == 3 and controller.view.screen == "attract"
    controller.touch()
    work = shown.museum.artworks[0].artwork_id
    controller.open_artwork(work)

    for version in (4, 5):  # two installs during the visit: the pack on screen must survive both
        publisher.publish(version)
        assert kiosk.wait(lambda v=version: (pending := controller.pending_pack) and pending.pack_version == v)

    assert (controller.view.screen, controller.view.artwork_id) == ("detail", work)
    assert controller.view.museum == shown.museum and shown.path.is_dir(), "the pack on screen is kept"
    current = kiosk.runtime.store.current()
    assert current is not None and current.pack_version == 5
    assert [event.type for event in kiosk.recorded].count("content.pack_applied") == 0

    controller.end_visit()

    assert controller.view.screen == "attract" and controller.view.museum == current.museum
    assert kiosk.wait(lambda: stored_of(site, "content.pack_applied"))
    assert [fields["pack_version"] for fields in stored_of(site, "content.pack_applied")] == ["5"]
    assert kiosk.wait(lambda: stored_of(site, "kiosk.session_ended"))


def test_a_pack_installed_but_never_shown_is_reported_at_the_next_start(make_kiosk, publisher, site,
                                                                         tmp_path) -> None:
    # What a kiosk stopped during a visit leaves: the new pack is `current` but was never on screen.
    store = PackStore(tmp_path / "packs")
    store.mark_reported(store.install(publisher.pack(3)))
    store.install(publisher.pack(4))
    kiosk = make_kiosk()
    kiosk.runtime.start()
    kiosk.ui.pump()

    assert kiosk.controller.shown_pack is not None and kiosk.controller.shown_pack.pack_version == 4
    assert kiosk.wait(lambda: stored_of(site, "content.pack_applied"))
    assert [fields["pack_version"] for fields in stored_of(site, "content.pack_applied")] == ["4"]
    assert store.reported() == kiosk.controller.shown_pack.path.name
    kiosk.runtime.stop()

    again = make_kiosk()  # the same packs folder: nothing new to report
    again.runtime.start()
    again.ui.pump()
    again.runtime.stop()
    assert [event.type for event in again.recorded].count("content.pack_applied") == 0


def test_a_corrupted_pack_is_refused_and_reported_and_the_old_one_stays(make_kiosk, publisher, site,
                                                                       tmp_path) -> None:
    PackStore(tmp_path / "packs").install(publisher.pack(3))
    kiosk = make_kiosk()
    kiosk.runtime.start()
    kiosk.ui.pump()

    bad = publisher.publish(4, corrupt=True)

    assert kiosk.wait(lambda: stored_of(site, "content.pack_refused"))
    refused, = stored_of(site, "content.pack_refused")
    assert (refused["pack_id"], refused["pack_version"]) == (bad.pack_id, "4")
    assert "SHA-256" in refused["reason"]
    shown = kiosk.controller.shown_pack
    assert shown is not None and shown.pack_version == 3
    current = kiosk.runtime.store.current()
    assert current is not None and current.pack_version == 3

    reply = kiosk.command("reload-content")  # tried again on request, and refused again

    assert reply.ok, reply.detail
    assert kiosk.wait(lambda: len(stored_of(site, "content.pack_refused")) == 2)


def test_commands_are_answered_and_stored_at_the_hub(make_kiosk, publisher, site) -> None:
    kiosk = make_kiosk(capture_png=png_bytes)
    controller = kiosk.controller
    kiosk.runtime.start()
    publisher.publish(3)
    assert kiosk.wait(lambda: controller.view.screen == "attract")
    assert kiosk.wait(lambda: devices(site).get(DEVICE, {}).get("state") == "online")

    language = kiosk.command("set-language", language="en")
    timeout = kiosk.command("set-idle-timeout", seconds=120)
    too_short = kiosk.command("set-idle-timeout", seconds=5)
    not_in_pack = kiosk.command("set-language", language="de")
    unknown = kiosk.command("make-coffee")
    extra = kiosk.command("reload-content", force=True)
    screenshot = kiosk.command("screenshot")
    restart = kiosk.command("restart")

    assert (language.ok, controller.view.language, controller.default_language) == (True, "en", "en")
    assert (timeout.ok, controller.idle_timeout_s) == (True, 120)
    assert not too_short.ok and "15" in too_short.detail and "3600" in too_short.detail
    assert not not_in_pack.ok and "'de'" in not_in_pack.detail
    assert not unknown.ok and "unknown command 'make-coffee'" in unknown.detail
    assert not extra.ok and "force" in extra.detail
    assert screenshot.ok and screenshot.screenshot is not None
    assert screenshot.screenshot.read_bytes() == png_bytes()
    assert restart.ok and kiosk.exits == [75] and kiosk.runtime.exit_code == 75
    results = {fields["command_id"]: fields for fields in stored_of(site, "command.result")}
    for reply in (language, timeout, too_short, not_in_pack, unknown, extra, screenshot, restart):
        assert (results[reply.command_id]["ok"], results[reply.command_id]["detail"]) == (reply.ok, reply.detail)
    controller.touch()
    assert kiosk.recorded[-1].type == "kiosk.session_started" and kiosk.recorded[-1].language == "en"


def test_a_kiosk_without_a_screen_or_an_announcement_says_so(make_kiosk, site) -> None:
    kiosk = make_kiosk()
    kiosk.runtime.start()
    kiosk.ui.pump()
    assert kiosk.wait(lambda: devices(site).get(DEVICE, {}).get("state") == "online")

    screenshot = kiosk.command("screenshot")
    reload = kiosk.command("reload-content")
    language = kiosk.command("set-language", language="en")

    assert not screenshot.ok and "without a screen" in screenshot.detail
    assert not reload.ok and "museum content publish" in reload.detail
    assert language.ok and kiosk.controller.view.screen == "no_content"


def test_stopping_mid_visit_ends_the_session_and_keeps_every_event(make_kiosk, publisher, site, tmp_path) -> None:
    PackStore(tmp_path / "packs").install(publisher.pack(3))
    kiosk = make_kiosk()
    kiosk.runtime.start()
    kiosk.ui.pump()
    kiosk.controller.touch()
    kiosk.controller.open_artwork(kiosk.controller.view.museum.artworks[0].artwork_id)

    kiosk.runtime.stop()

    assert [event.type for event in kiosk.recorded][-1] == "kiosk.session_ended"
    assert kiosk.recorded[-1].reason == "shutdown"
    config = ClientConfig.load(site.device_config(DEVICE))
    assert config.outbox is not None
    outbox = Outbox(config.outbox.path)
    in_outbox = {row.event_id for row in outbox.pending_after(0, limit=1000, max_bytes=10**7)}
    outbox.close()
    assert kiosk.recorded_ids() <= in_outbox | stored(site).keys(), "each one in the outbox or at the hub"


def test_a_device_without_the_site_ca_is_refused_in_one_line(site, tmp_path) -> None:
    config = device_config(site, DEVICE).with_broker(ca_file=None)
    settings = KioskSettings.from_config(config, tmp_path / "kiosk.toml")

    with pytest.raises(ValueError) as raised:
        KioskRuntime(config, settings, ui_call=UiQueue())

    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "kiosk.toml") in message and "ca_file" in message


# --- the event writer --------------------------------------------------------------------------------------

class GatedDevice:
    """A real DeviceClient's outbox behind a gate: each commit can be held, or made to fail, at a known point."""

    def __init__(self, device: DeviceClient) -> None:
        self.device = device
        self.site_id, self.device_id = device.site_id, device.device_id
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failures_left = 0
        self.batches: list[int] = []

    def emit_many(self, events: list[Event]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        if self.failures_left:
            self.failures_left -= 1
            raise sqlite3.OperationalError("database or disk is full")
        self.device.emit_many(events)
        self.batches.append(len(events))


@pytest.fixture
def outbox_device(site: Site) -> Iterator[GatedDevice]:
    device = DeviceClient(device_config(site, DEVICE))  # not started: only its outbox is used
    yield GatedDevice(device)
    device.stop()


def viewed(writer: EventWriter, n: int) -> list[Event]:
    return [writer.record(ArtworkViewed, artwork_id=f"work-{i}", source="kiosk", language="fr") for i in range(n)]


def test_the_writer_commits_what_queued_meanwhile_in_one_batch(outbox_device) -> None:
    writer = EventWriter(outbox_device)
    writer.start()
    outbox_device.gate.clear()
    first = viewed(writer, 1)
    assert outbox_device.entered.wait(WAIT_S), "the first commit has begun and is held"

    rest = viewed(writer, 50)  # returns at once: the taps do not wait for the disk
    assert writer.pending == 51
    outbox_device.gate.set()

    assert writer.flush(WAIT_S)
    assert outbox_device.batches == [1, 50]
    rows = outbox_device.device.outbox.pending_after(0, limit=100, max_bytes=10**7)
    assert [row.event_id for row in rows] == [event.event_id for event in first + rest], "in order"
    writer.stop()


def test_a_failing_disk_is_retried_and_nothing_is_lost(outbox_device) -> None:
    outbox_device.failures_left = 3
    writer = EventWriter(outbox_device)
    writer.start()

    events = viewed(writer, 20)

    assert writer.flush(WAIT_S)
    assert writer.failures == 3 and writer.last_error is None
    rows = outbox_device.device.outbox.pending_after(0, limit=100, max_bytes=10**7)
    assert [row.event_id for row in rows] == [event.event_id for event in events]
    writer.stop()


def test_stop_drains_the_queue_then_refuses_new_events(outbox_device) -> None:
    writer = EventWriter(outbox_device)
    writer.start()
    events = viewed(writer, 200)

    assert writer.stop(WAIT_S)

    assert outbox_device.device.outbox.pending == len(events)
    with pytest.raises(RuntimeError, match="stopped"):
        viewed(writer, 1)


def test_stop_gives_up_on_a_dead_disk_and_says_how_many_were_lost(outbox_device, caplog) -> None:
    outbox_device.failures_left = 10**9
    writer = EventWriter(outbox_device)
    writer.start()
    viewed(writer, 5)

    assert not writer.stop(0.5)

    assert "5 kiosk events could not be written" in caplog.text


def test_an_event_with_bad_fields_is_refused_to_its_caller(outbox_device) -> None:
    writer = EventWriter(outbox_device)
    with pytest.raises(ValueError, match="language"):
        writer.record(KioskSessionStarted, session_id="8d7f1f2e-8d1f-4c5e-9b7a-2f1d0c3b4a59", language="French")


# --- the pack store keeps the pack on screen ------------------------------------------------------------------

def test_a_pinned_pack_survives_pruning_until_unpinned(publisher, tmp_path) -> None:
    store = PackStore(tmp_path / "store", keep_old=1)
    shown = store.install(publisher.pack(3))
    store.pin(shown.path)

    store.install(publisher.pack(4))
    store.install(publisher.pack(5))

    assert shown.path.is_dir(), "pinned: kept beyond keep_old"
    assert len(store.installed()) == 3

    store.pin(None)
    store.install(publisher.pack(6))
    assert not shown.path.exists()
    assert len(store.installed()) == 2


def test_reinstalling_the_pinned_pack_keeps_its_folder(publisher, tmp_path) -> None:
    store = PackStore(tmp_path / "store")
    shown = store.install(publisher.pack(3))
    store.pin(shown.path)
    store.install(publisher.pack(4))
    marker = shown.path / "museum.json"
    inode = marker.stat().st_ino

    again = store.install(publisher.pack(3))

    assert again.path == shown.path and marker.stat().st_ino == inode, "not deleted and unpacked again under it"
    current = store.current()
    assert current is not None and current.pack_version == 3


# --- settings ----------------------------------------------------------------------------------------------

def config_with(kiosk: Any, tmp_path: Path) -> tuple[ClientConfig, Path]:
    from bus.config import BrokerSettings

    config = ClientConfig("test-site", DEVICE, "kiosk", BrokerSettings("127.0.0.1", 1883, DEVICE, "secret"),
                          extra={} if kiosk is None else {"kiosk": kiosk})
    return config, tmp_path / "conf" / "kiosk-01.toml"


def test_settings_default_beside_the_configuration_file(tmp_path) -> None:
    config, path = config_with(None, tmp_path)

    settings = KioskSettings.from_config(config, path)

    assert settings.state_dir == path.parent.resolve() / "kiosk-state"
    assert settings.packs_dir == settings.state_dir / "packs"
    assert (settings.home_room, settings.companion_base_url, settings.idle_timeout_s, settings.countdown_s,
            settings.default_language, settings.fullscreen) == \
        (None, "https://visit.example.org", 90, 10, "fr", True)


def test_settings_are_read_from_the_kiosk_table_of_the_file(site, tmp_path) -> None:
    path = site.device_config(DEVICE)
    device_config(site, DEVICE)
    path.write_text(path.read_text("utf-8") + '\n[kiosk]\nhome_room = "salle-3"\nidle_timeout_s = 120\n'
                    'companion_base_url = "https://visite.musee.example/"\nstate_dir = "state"\n'
                    'default_language = "en"\nfullscreen = false\ncountdown_s = 15\n', "utf-8")

    settings = KioskSettings.from_config(ClientConfig.load(path), path)

    assert (settings.home_room, settings.idle_timeout_s, settings.countdown_s, settings.default_language,
            settings.fullscreen) == ("salle-3", 120, 15, "en", False)
    assert settings.companion_base_url == "https://visite.musee.example"
    assert settings.state_dir == path.parent.resolve() / "state"
    assert settings.packs_dir == path.parent.resolve() / "state" / "packs"


@pytest.mark.parametrize(("kiosk", "setting"), [
    ("yes", "kiosk"),
    ({"idle_timout_s": 90}, "idle_timout_s"),
    ({"home_room": "Salle 3"}, "home_room"),
    ({"companion_base_url": "http://visit.example.org"}, "companion_base_url"),
    ({"companion_base_url": "visit.example.org"}, "companion_base_url"),
    ({"companion_base_url": "https://visit.example.org/?x=1"}, "companion_base_url"),
    ({"idle_timeout_s": 5}, "idle_timeout_s"),
    ({"idle_timeout_s": "90"}, "idle_timeout_s"),
    ({"idle_timeout_s": float("nan")}, "idle_timeout_s"),
    ({"idle_timeout_s": True}, "idle_timeout_s"),
    ({"countdown_s": 0}, "countdown_s"),
    ({"default_language": "french"}, "default_language"),
    ({"fullscreen": "no"}, "fullscreen"),
    ({"state_dir": ""}, "state_dir"),
    ({"packs_dir": 3}, "packs_dir"),
])
def test_a_bad_setting_is_one_line_naming_the_file_and_the_setting(tmp_path, kiosk, setting) -> None:
    config, path = config_with(kiosk, tmp_path)

    with pytest.raises(ValueError) as raised:
        KioskSettings.from_config(config, path)

    message = str(raised.value)
    assert "\n" not in message and str(path) in message and setting in message, message


def test_plain_http_is_allowed_for_a_companion_on_this_machine(tmp_path) -> None:
    config, path = config_with({"companion_base_url": "http://localhost:8000"}, tmp_path)
    assert KioskSettings.from_config(config, path).companion_base_url == "http://localhost:8000"
