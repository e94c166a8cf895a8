"""The whole kiosk, end to end: the Kivy app rendered for real (offscreen) and driven with UnitTestTouch through
`kiosk.ui.KioskHarness`, on a REAL `KioskRuntime` (its controller, event writer, outbox, DeviceClient, pack
worker and commands), a real Mosquitto, the real hub in a thread and the real HTTPS pack server.

The test thread is the kiosk's UI thread: the runtime reaches the controller through `kiosk.ui.ui_call` (Kivy's
Clock), which runs when the harness steps frames. A call that blocks (`send_command`) runs in a helper thread while
this one keeps stepping. The controller's clock is a fake one: the idle timeout is reached by moving it, never by
sleeping. Kivy's one window is the session fixture `harness` of conftest.py, shared with tests/test_kiosk_ui.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import sqlite3
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import HubThread, device_config, devices
from PIL import Image
from support import assert_not_blank, wait_until
from sync_support import CompanionProcess, configure_sync, place_pack, sample_pack_for, sync_once

from broker.commands import CommandReply, send_command
from broker.hub_store import open_reader
from broker.pack_server import PackServer
from broker.packs import announce, pack_file_name, publish_pack
from broker.site import Site
from content.pack import build_pack, file_sha256, verify_pack
from content.sample import SAMPLE_MUSEUM_PATH
from kiosk.pack_store import PackStore
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from protocol.codec import encode_event
from protocol.events import Event
from protocol.ids import visit_id_for
from protocol.messages import ContentAnnouncement
from qr.frames import Frame
from qr.zbar import ZbarDecoder

DEVICE = "kiosk-e2e"
HOME = "impressionnisme"
BASE_URL = "https://visit.example.org"
IDLE_S = 90.0
COUNTDOWN_S = 10.0
WAIT_S = 30.0
AV_WORK = "vermeer-milkmaid"          # outside the home room: audio description FR/EN, LSF video with captions
OTHER_WORK = "botticelli-birth-of-venus"
DEVICE_OWN_TYPES = {"device.status", "command.result"}
"""Events the DeviceClient records by itself (heartbeats, command answers), not the kiosk's."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LiveKiosk:
    """A KioskRuntime shown in the harness's window, its controller on a fake clock."""

    def __init__(self, site: Site, harness: Any, packs_dir: Path, state_dir: Path) -> None:
        from kiosk.ui import ui_call

        self.site, self.harness = site, harness
        self.clock = FakeClock()
        self.recorded: list[Event] = []
        self.exits: list[int] = []
        self.config = device_config(site, DEVICE)
        settings = replace(KioskSettings.from_config(self.config, site.device_config(DEVICE)), state_dir=state_dir,
                           packs_dir=packs_dir, home_room=HOME, companion_base_url=BASE_URL, idle_timeout_s=IDLE_S,
                           countdown_s=COUNTDOWN_S, default_language="fr")
        self.runtime = KioskRuntime(self.config, settings, ui_call=ui_call,
                                    capture_png=lambda: harness.app.capture_png(),
                                    on_recorded=self.recorded.append, clock=self.clock)
        self.runtime.on_exit_requested = self.exits.append
        self.controller = self.runtime.controller
        harness.reset(self.controller)
        self.runtime.start()

    @property
    def view(self) -> Any:
        return self.controller.view

    def step_until(self, condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
        assert self.harness.run_until(lambda: bool(condition()), timeout), f"timed out waiting for {what}"

    def recorded_ids(self) -> set[str]:
        return {event.event_id for event in list(self.recorded)}

    def command(self, name: str, **args: Any) -> CommandReply:
        """`museum device command` in a helper thread, while this (the UI) thread keeps stepping frames."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(send_command, self.site, DEVICE, name, args, timeout_s=WAIT_S)
            self.step_until(future.done, f"the answer to {name}", WAIT_S + 10)
            return future.result()

    def title(self, artwork_id: str, language: str) -> str:
        museum = self.view.museum
        assert museum is not None
        return str(museum.artwork(artwork_id).title[language])


# --- reading the hub's store ----------------------------------------------------------------------------------

def stored_rows(site: Site) -> list[dict[str, Any]]:
    """Every event the hub stored for the kiosk, as stored (read-only, beside the running hub)."""
    if not site.hub_database.exists():
        return []
    conn = open_reader(site.hub_database)
    try:
        cursor = conn.execute("SELECT * FROM events WHERE device_id = ?", (DEVICE,))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except sqlite3.OperationalError:  # the hub has not created its tables yet
        return []
    finally:
        conn.close()


def kiosk_ids(site: Site) -> set[str]:
    return {row["event_id"] for row in stored_rows(site) if row["type"] not in DEVICE_OWN_TYPES}


def stored_of(site: Site, kind: str) -> list[dict[str, Any]]:
    return [json.loads(row["fields"]) for row in stored_rows(site) if row["type"] == kind]


def quarantined_raw(site: Site) -> list[bytes]:
    conn = open_reader(site.hub_database)
    try:
        return [bytes(row[0]) for row in conn.execute("SELECT raw FROM quarantine")]
    finally:
        conn.close()


def file_bytes(database: Path) -> bytes:
    """A SQLite database as it lies on disk, its write-ahead log included."""
    return b"".join(path.read_bytes() for path in (database, Path(f"{database}-wal")) if path.exists())


# --- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture
def hub(site: Site, broker: object) -> Iterator[HubThread]:
    with HubThread(site) as running:
        yield running


@pytest.fixture
def make_kiosk(site: Site, hub: HubThread, harness: Any, tmp_path: Path) -> Iterator[Callable[..., LiveKiosk]]:
    made: list[LiveKiosk] = []

    def make(*, preinstall: Path | None = None) -> LiveKiosk:
        packs = tmp_path / "kiosk-packs"
        if preinstall is not None:
            PackStore(packs).install(preinstall)  # its last good pack, from before a restart
        kiosk = LiveKiosk(site, harness, packs, tmp_path / "kiosk-state")
        made.append(kiosk)
        return kiosk

    yield make
    for kiosk in made:
        kiosk.runtime.stop()
    harness.step(2)


class Publisher:
    """`museum content publish` (broker.packs.publish_pack) to a site whose pack server runs here, on 127.0.0.1."""

    def __init__(self, site: Site, port: int, tmp: Path) -> None:
        # The site certificate names localhost: the announced URL must name it for the kiosk's TLS check.
        self.site = replace(site, hostnames=("localhost",), content_port=port)
        self.tmp = tmp

    def publish(self, pack: Path) -> ContentAnnouncement:
        return publish_pack(self.site, pack).announcement

    def announce_broken(self, pack: Path, *, damage: str) -> ContentAnnouncement:
        """Store `pack` on the site damaged ("member": a byte of a media file changed, the file's own hash
        announced, so the download succeeds and the pack's verification fails; "hash": intact, announced with a
        wrong SHA-256), then announce it: the damage is in place before any kiosk can fetch it."""
        built = verify_pack(pack)
        target = self.site.packs_dir / pack_file_name(built.pack_id, built.pack_version)
        self.site.packs_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pack, target)
        digest = file_sha256(target)
        if damage == "member":
            flip_media_byte(target)
            digest = file_sha256(target)
        elif damage == "hash":
            digest = "0" * 64
        announcement = ContentAnnouncement(built.pack_id, str(built.pack_version), digest, datetime.now(UTC),
                                           f"https://localhost:{self.site.content_port}/packs/{target.name}",
                                           target.stat().st_size)
        announce(self.site, announcement)
        return announcement

    def sample_version(self, version: int, *, title: tuple[str, str] | None = None) -> Path:
        """The sample museum as pack `version`, with one work's French title changed (`(artwork_id, title)`)."""
        source = self.tmp / f"sample-{version}"
        shutil.copytree(SAMPLE_MUSEUM_PATH.parent, source)
        museum = source / "museum.json"
        data = json.loads(museum.read_text("utf-8"))
        data["pack_version"] = version
        if title is not None:
            artwork_id, new_title = title
            work, = (work for work in data["artworks"] if work["artwork_id"] == artwork_id)
            work["title"]["fr"] = new_title
        museum.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        out = self.tmp / f"sample-{version}.pack"
        build_pack(source, out)
        return out


def flip_media_byte(pack: Path) -> None:
    """Change one byte in the middle of the pack's largest member's content (not a tar header)."""
    with tarfile.open(pack) as tar:
        largest = max((member for member in tar.getmembers() if member.isfile()), key=lambda m: m.size)
    raw = bytearray(pack.read_bytes())
    raw[largest.offset_data + largest.size // 2] ^= 0x01
    pack.write_bytes(bytes(raw))


@pytest.fixture
def publisher(site: Site, tmp_path: Path) -> Iterator[Publisher]:
    site.packs_dir.mkdir(parents=True, exist_ok=True)
    server = PackServer(site.packs_dir, site.server_cert, site.server_key, "127.0.0.1", 0, timeout_s=60.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Publisher(site, server.port, tmp_path)
    server.shutdown()
    server.server_close()
    thread.join(30)


# --- helpers on the screen ------------------------------------------------------------------------------------

def qr_codes(path: Path) -> list[str]:
    with Image.open(path) as image:
        return [code.text for code in ZbarDecoder().decode(Frame.from_image(image.convert("L")))]


def shoot(kiosk: LiveKiosk, folder: Path, name: str) -> Path:
    path = kiosk.harness.screenshot(folder / f"{name}.png")
    assert path.exists()
    assert_not_blank(path)
    return path


def shoot_variants(kiosk: LiveKiosk, folder: Path, name: str) -> list[Path]:
    """The screen in FR and EN, normal and high contrast, switched with the visitor's own buttons (so each switch
    is an event too); leaves the kiosk in FR, normal."""
    harness, shots = kiosk.harness, []
    for high in (False, True):
        if ("high_contrast" in kiosk.view.modes) != high:
            harness.tap("mode:high_contrast")
        for language in ("fr", "en"):
            if kiosk.view.language != language:
                harness.tap(f"lang:{language}")
            assert (kiosk.view.language, "high_contrast" in kiosk.view.modes) == (language, high)
            path = shoot(kiosk, folder, f"{name}-{language}-{'high-contrast' if high else 'normal'}")
            if high:  # the high-contrast palette really is on screen: a black background
                with Image.open(path) as image:
                    counts = {colour: count for count, colour in image.convert("RGB").getcolors(1 << 21) or []}
                assert counts.get((0, 0, 0), 0) > 0.3 * 1280 * 800, path.name
            shots.append(path)
    harness.tap("lang:fr")
    harness.tap("mode:high_contrast")
    return shots


# --- 1. a visit, from the attract loop to the idle timeout ----------------------------------------------------

def test_a_visit_end_to_end(make_kiosk, site, sample_pack_file, tmp_path) -> None:
    kiosk = make_kiosk(preinstall=sample_pack_file)
    harness, shots = kiosk.harness, tmp_path / "screens"
    kiosk.step_until(lambda: kiosk.view.screen == "attract", "the last good pack on the attract loop")
    shown = harness.texts()
    assert "Touchez pour commencer" in shown and "Touch to start" in shown
    shoot(kiosk, shots, "attract")

    # Browse: the first touch starts the visit.
    harness.tap((200, 150))
    assert kiosk.view.screen == "browse" and kiosk.view.zone_id == HOME and not kiosk.controller.idle
    shoot_variants(kiosk, shots, "browse")

    # Detail of a work in another room.
    harness.tap("room:siecle-d-or")
    harness.tap(f"artwork:{AV_WORK}")
    assert (kiosk.view.screen, kiosk.view.artwork_id) == ("detail", AV_WORK)
    assert kiosk.title(AV_WORK, "fr") in harness.texts()
    shoot_variants(kiosk, shots, "detail")
    screen = harness.root.screens["detail"]

    # Audio description: plays and progresses, then pauses.
    harness.tap("audio")
    assert screen.audio.playing
    kiosk.step_until(lambda: screen.audio.position > 0.3 and screen.audio_progress > 0, "the audio to progress")
    harness.tap("audio")
    assert not screen.audio.playing

    # The LSF video with its captions.
    harness.tap("lsf")
    assert screen.video_shown
    kiosk.step_until(lambda: screen._video.loaded and screen._video.position > 0.3 and screen.caption,
                     "the LSF video to play with a caption")
    assert screen.caption in harness.texts()
    shoot(kiosk, shots, "detail-lsf-fr-normal")
    harness.tap("lsf")
    assert not screen.video_shown

    # Take it home (twice), then another work: the first one made the visit's token.
    harness.tap("take_home")
    harness.tap("take_home")
    url = kiosk.view.take_home_url
    assert kiosk.view.collected == (AV_WORK,) and url and url.startswith(f"{BASE_URL}/v/")
    token = url.rsplit("/", 1)[1]
    harness.tap("back")
    harness.tap("room:renaissance")
    harness.tap(f"artwork:{OTHER_WORK}")
    harness.tap("take_home")
    assert kiosk.view.collected == (AV_WORK, OTHER_WORK) and kiosk.view.take_home_url == url

    # The language and high contrast, switched on the detail screen, stay for the rest of the visit.
    harness.tap("lang:en")
    harness.tap("mode:high_contrast")
    assert kiosk.view.language == "en" and kiosk.title(OTHER_WORK, "en") in harness.texts()
    shoot(kiosk, shots, "detail-collected-en-high-contrast")

    # My visit: the works, and the QR code of the take-home URL, read back from the screen by pyzbar.
    harness.tap("my_visit")
    assert kiosk.view.screen == "my_visit" and kiosk.view.language == "en" and "high_contrast" in kiosk.view.modes
    assert url in harness.texts()
    assert qr_codes(shoot(kiosk, shots, "my-visit-qr")) == [kiosk.view.take_home_url]
    for path in shoot_variants(kiosk, shots, "my-visit"):
        assert qr_codes(path) == [url], path.name

    # Nobody touches it any more: "Are you still there?", then the visit ends and the attract loop is back.
    kiosk.clock.advance(IDLE_S + 0.5)
    kiosk.step_until(lambda: kiosk.view.countdown_s is not None, "the countdown")
    shoot(kiosk, shots, "still-there")
    kiosk.clock.advance(COUNTDOWN_S + 0.5)
    kiosk.step_until(lambda: kiosk.view.screen == "attract", "the attract loop after the timeout")
    assert kiosk.recorded[-1].type == "kiosk.session_ended" and kiosk.recorded[-1].reason == "timeout"
    harness.step(3)
    shoot(kiosk, shots, "attract-after-timeout")

    # No trace of the visitor on any screen, shown or not.
    everything = "\n".join(harness.texts(all_screens=True))
    for work in (AV_WORK, OTHER_WORK):
        for language in ("fr", "en"):
            assert kiosk.title(work, language) not in everything
    assert token not in everything and BASE_URL not in everything
    assert "Ma visite (2)" not in everything and "My visit (2)" not in everything
    assert harness.root.screens["my_visit"].ids.qr.side == 0
    assert kiosk.view.collected == () and kiosk.view.take_home_url is None and kiosk.view.modes == frozenset()

    # Every event the kiosk recorded is stored at the hub, and the hub has no other event of the kiosk.
    types = {event.type for event in kiosk.recorded}
    assert {"kiosk.session_started", "artwork.viewed", "visitor.language_changed", "visitor.accessibility_changed",
            "artwork.collected", "kiosk.session_ended"} <= types
    assert wait_until(lambda: kiosk.recorded_ids() <= kiosk_ids(site), WAIT_S), "not every event reached the hub"
    assert kiosk_ids(site) == kiosk.recorded_ids()

    # The token is nowhere: only its one-way derivation is, at the hub and in the kiosk's outbox.
    rows = stored_rows(site)
    assert {row["visit_id"] for row in rows if row["type"] == "artwork.collected"} == {visit_id_for(token)}
    assert all(token not in json.dumps(row) for row in rows)
    assert quarantined_raw(site) == [], "the hub refused something the kiosk sent"
    assert token.encode() not in file_bytes(site.hub_database)
    assert all(token.encode() not in encode_event(event) for event in kiosk.recorded), "what the outbox stores"
    assert kiosk.config.outbox is not None
    assert token.encode() not in file_bytes(kiosk.config.outbox.path)

    # Then the sync takes the visit to the companion service (both real processes, as on a site server), and the
    # take-home URL of the kiosk's QR code opens a page that lists both works.
    companion = CompanionProcess(tmp_path / "companion").start()
    try:
        configure_sync(site, companion, companion.enroll(site.site_id))
        place_pack(site, sample_pack_for(site.site_id, tmp_path))
        sync_once(site)
        status, page = companion.get(f"/v/{token}")
        assert status == 200, page
        for work in (AV_WORK, OTHER_WORK):
            assert kiosk.title(work, "fr") in page
        assert token.encode() not in file_bytes(companion.store_path)
    finally:
        companion.stop()


# --- 2. content published while a visitor is there ------------------------------------------------------------

def test_a_pack_published_during_a_visit_waits_for_its_end(make_kiosk, publisher, site, sample_pack_file) -> None:
    kiosk = make_kiosk()
    harness = kiosk.harness
    kiosk.step_until(lambda: kiosk.view.screen == "no_content", "the no-content screen")

    first = publisher.publish(sample_pack_file)
    kiosk.step_until(lambda: kiosk.view.screen == "attract", "the published pack on the attract loop")
    museum = kiosk.view.museum
    assert museum is not None and str(museum.pack_version) == first.pack_version

    work = museum.artworks_in(HOME)[0].artwork_id
    old_title = kiosk.title(work, "fr")
    new_title = "Titre de la version suivante"
    second = publisher.sample_version(museum.pack_version + 1, title=(work, new_title))
    harness.tap((640, 400))
    harness.tap(f"artwork:{work}")
    assert (kiosk.view.screen, kiosk.view.artwork_id) == ("detail", work)

    publisher.publish(second)
    kiosk.step_until(lambda: (pending := kiosk.controller.pending_pack) is not None
                     and pending.pack_version == museum.pack_version + 1, "the new pack to be installed")
    harness.step(3)
    assert (kiosk.view.screen, kiosk.view.artwork_id) == ("detail", work), "the visitor's screen is kept"
    assert kiosk.view.museum == museum and old_title in harness.texts() and new_title not in harness.texts()
    current = kiosk.runtime.store.current()
    assert current is not None and current.pack_version == museum.pack_version + 1

    harness.tap("end_visit")
    assert kiosk.view.screen == "attract" and kiosk.view.museum is not None
    assert kiosk.view.museum.pack_version == museum.pack_version + 1
    harness.tap((640, 400))
    harness.tap(f"artwork:{work}")
    assert new_title in harness.texts() and old_title not in harness.texts()
    harness.tap("end_visit")
    assert wait_until(lambda: sorted(f["pack_version"] for f in stored_of(site, "content.pack_applied"))
                      == sorted([first.pack_version, str(museum.pack_version + 1)]), WAIT_S)

    # A damaged pack, then one announced with a wrong hash: refused, reported, and the pack shown stays.
    shown = kiosk.view.museum
    for damage, version in (("member", museum.pack_version + 2), ("hash", museum.pack_version + 3)):
        bad = publisher.announce_broken(publisher.sample_version(version), damage=damage)
        assert wait_until(lambda v=bad.pack_version: v in [f["pack_version"]
                                                           for f in stored_of(site, "content.pack_refused")],
                          WAIT_S), f"no refusal of the pack with a damaged {damage}"
        refused, = [f for f in stored_of(site, "content.pack_refused") if f["pack_version"] == bad.pack_version]
        assert refused["pack_id"] == bad.pack_id and "SHA-256" in refused["reason"]
        harness.step(3)
        assert kiosk.view.museum == shown and kiosk.view.screen == "attract"
        current = kiosk.runtime.store.current()
        assert current is not None and current.pack_version == museum.pack_version + 1


# --- 3. commands from the hub, through the real broker ----------------------------------------------------------

def test_commands_round_trip_and_the_screenshot_hides_the_take_home_code(make_kiosk, publisher, site,
                                                                         sample_pack_file, tmp_path) -> None:
    kiosk = make_kiosk()
    harness = kiosk.harness
    publisher.publish(sample_pack_file)
    kiosk.step_until(lambda: kiosk.view.screen == "attract", "the published pack")
    kiosk.step_until(lambda: devices(site).get(DEVICE, {}).get("state") == "online", "the kiosk online at the hub")

    language = kiosk.command("set-language", language="en")
    assert language.ok, language.detail
    assert kiosk.controller.default_language == "en" and kiosk.view.language == "en"
    timeout = kiosk.command("set-idle-timeout", seconds=120)
    assert timeout.ok and kiosk.controller.idle_timeout_s == 120
    reload = kiosk.command("reload-content")
    assert reload.ok and "already installed" in reload.detail
    unknown = kiosk.command("polish-the-frames")
    assert not unknown.ok and "unknown command 'polish-the-frames'" in unknown.detail

    # A screenshot while a visitor looks at their take-home code.
    harness.tap((640, 400))
    assert kiosk.view.language == "en", "visits now start in English"
    harness.tap(f"artwork:{kiosk.view.museum.artworks_in(HOME)[0].artwork_id}")
    harness.tap("take_home")
    harness.tap("my_visit")
    url = kiosk.view.take_home_url
    assert kiosk.view.screen == "my_visit" and url
    assert qr_codes(harness.screenshot(tmp_path / "unmasked.png")) == [url], "the code is readable on screen"

    screenshot = kiosk.command("screenshot")

    assert screenshot.ok, screenshot.detail
    path = screenshot.screenshot
    assert path is not None and path.is_file() and path.is_relative_to(site.root)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert_not_blank(path)
    assert qr_codes(path) == [], "the take-home code must not reach the site's screenshots"
    assert kiosk.view.screen == "my_visit" and kiosk.view.take_home_url == url, "the visit goes on"

    restart = kiosk.command("restart")
    assert restart.ok
    kiosk.step_until(lambda: kiosk.exits == [75], "the app asked to exit with 75")
    assert kiosk.runtime.exit_code == 75 and kiosk.runtime.exit_requested.is_set()

    results = {f["command_id"]: f for f in stored_of(site, "command.result")}
    for reply in (language, timeout, reload, unknown, screenshot, restart):
        assert (results[reply.command_id]["ok"], results[reply.command_id]["detail"]) == (reply.ok, reply.detail)
