"""QR codes shown to the kiosk's camera: the controller's decisions (a fake clock, events collected as the real
event classes), the scanner thread against a failing camera, and once through the real path in the real window:
a fake camera feeding a generated 1280×720 frame → the scanner thread → the controller on the UI thread → the
banner on screen and `visit.linked` in a real outbox, with the visit token nowhere in its bytes."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness import device_config
from PIL import Image
from support import UiQueue, assert_not_blank, wait_until
from test_kiosk_controller import BASE, Kiosk

from broker.site import Site
from bus.backoff import Backoff
from bus.config import ClientConfig
from bus.outbox import Outbox
from kiosk import texts
from kiosk.controller import MAX_TAGS_PER_VISIT, MESSAGE_S, KioskController, QrStats
from kiosk.event_writer import EventWriter
from kiosk.pack_store import InstalledPack, PackStore
from kiosk.qr_scanner import MAX_PENDING, QrScanner
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from protocol.codec import decode_event, encode_event
from protocol.events import ArtworkCollected, Event, KioskSessionEnded, KioskSessionStarted, VisitLinked
from protocol.ids import new_visit_id, visit_id_for
from qr import synthetic
from qr.camera import CameraMissing, V4L2Camera
from qr.decode import Strategy, make_decoder
from qr.frames import Frame
from qr.synthetic import SyntheticV4L2Device

SITE = "test-site"
TAG = "t-00000000002a"
OTHER_TAG = "t-0000000000ff"


def visit_qr(token: str, base: str = "https://visit.example.org") -> str:
    return f"{base}/v/{token}"


def tag_qr(tag_id: str = TAG, site_id: str = SITE) -> str:
    return f"MUSEUM-TAG:{site_id}:{tag_id}"


@pytest.fixture
def kiosk(tmp_path: Path) -> Kiosk:
    return Kiosk(tmp_path, site_id=SITE)


def linked(kiosk: Kiosk) -> list[VisitLinked]:
    return kiosk.emitted.of(VisitLinked)


# --- the controller's decisions ------------------------------------------------------------------------------

FOREIGN = [
    pytest.param("https://www.example.com/expo/12?utm_source=poster", id="a web address"),
    pytest.param("WIFI:S:Museum-Guest;T:WPA;P:secret;;", id="wi-fi"),
    pytest.param("BEGIN:VCARD\nVERSION:3.0\nN:Doe;Jane\nEND:VCARD", id="a contact"),
    pytest.param(tag_qr(site_id="other-site"), id="another site's tag"),
    pytest.param(f"MUSEUM-TAG:{SITE}:not-a-tag", id="a broken tag code"),
    pytest.param("https://visit.example.org/v/short", id="a visit address with no token"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("text", FOREIGN)
@pytest.mark.parametrize("in_session", [False, True], ids=["attract", "in a visit"])
def test_a_code_that_is_not_the_museums_gets_a_message_and_records_nothing(kiosk: Kiosk, text: str,
                                                                           in_session: bool) -> None:
    if in_session:
        kiosk.start()
    before = list(kiosk.emitted.events)

    kiosk.controller.scanned(text)

    assert kiosk.emitted.events == before, "nothing recorded, and no visit started"
    assert kiosk.view.message == "qr_not_ours"
    assert kiosk.view.screen == ("browse" if in_session else "attract")
    assert kiosk.view.take_home_url is None
    assert kiosk.controller.qr_stats == QrStats(not_ours=1)


def test_a_visit_qr_on_the_attract_loop_starts_a_visit_that_continues_the_visitors(kiosk: Kiosk) -> None:
    token = new_visit_id()

    kiosk.controller.scanned(visit_qr(token))

    view = kiosk.view
    assert view.screen == "browse" and view.session_id is not None
    assert view.take_home_url == f"{BASE}/v/{token}", "My visit shows the visitor's own page"
    assert view.message == "qr_visit_found"
    started, link = kiosk.emitted.events
    assert isinstance(started, KioskSessionStarted) and started.session_id == view.session_id
    assert isinstance(link, VisitLinked)
    assert (link.channel, link.visit_id, link.tag_id) == ("kiosk_qr", visit_id_for(token), None)

    kiosk.controller.collect("room-a-work-0")
    collected, = kiosk.emitted.of(ArtworkCollected)
    assert collected.visit_id == visit_id_for(token), "what the visitor takes home goes to their visit"
    assert kiosk.controller.qr_stats == QrStats(visits=1)


def test_a_visit_qr_in_a_visit_that_collected_already_takes_its_works_and_tags_along(kiosk: Kiosk) -> None:
    controller = kiosk.start()
    controller.collect("room-a-work-0")
    controller.scanned(tag_qr())
    minted = kiosk.view.take_home_url
    assert minted is not None
    token = new_visit_id()

    controller.scanned(visit_qr(token, base="https://elsewhere.example.net/museum"))

    assert kiosk.view.take_home_url == f"{BASE}/v/{token}" != minted
    assert kiosk.view.collected == ("room-a-work-0",)
    new_visit = visit_id_for(token)
    tail: list[Any] = kiosk.emitted.events[-3:]
    assert [type(e) for e in tail] == [VisitLinked, ArtworkCollected, VisitLinked]
    assert all(e.visit_id == new_visit for e in tail)
    assert tail[0].tag_id is None and tail[2].tag_id == TAG
    assert tail[1].artwork_id == "room-a-work-0"


def test_a_tag_qr_links_the_tag_to_the_visit_minting_its_token_if_needed(kiosk: Kiosk) -> None:
    controller = kiosk.controller
    controller.scanned(tag_qr())

    view = kiosk.view
    assert view.screen == "browse" and view.message == "qr_tag_linked"
    assert view.take_home_url is not None, "the tag's visit has a page, shown on My visit"
    token = view.take_home_url.rsplit("/", 1)[1]
    link, = linked(kiosk)
    assert (link.channel, link.visit_id, link.tag_id) == ("kiosk_qr", visit_id_for(token), TAG)

    controller.collect("room-b-work-1")
    assert kiosk.emitted.of(ArtworkCollected)[0].visit_id == visit_id_for(token)
    controller.scanned(tag_qr(OTHER_TAG))  # a family: a second tag for the same visit
    assert [(e.visit_id, e.tag_id) for e in linked(kiosk)] == [(visit_id_for(token), TAG),
                                                              (visit_id_for(token), OTHER_TAG)]
    assert kiosk.controller.qr_stats == QrStats(tags=2)


def test_a_tag_qr_after_a_visit_qr_links_to_that_visit(kiosk: Kiosk) -> None:
    token = new_visit_id()
    kiosk.controller.scanned(visit_qr(token))
    kiosk.controller.scanned(tag_qr())
    assert [(e.visit_id, e.tag_id) for e in linked(kiosk)] == [(visit_id_for(token), None),
                                                              (visit_id_for(token), TAG)]
    assert kiosk.view.take_home_url == f"{BASE}/v/{token}"


def test_the_same_code_again_shows_its_message_again_and_records_nothing(kiosk: Kiosk) -> None:
    token = new_visit_id()
    controller = kiosk.controller
    controller.scanned(visit_qr(token))
    controller.scanned(tag_qr())
    recorded = len(kiosk.emitted.events)
    controller.dismiss_message()
    assert kiosk.view.message is None

    controller.scanned(visit_qr(token))
    assert kiosk.view.message == "qr_visit_found"
    controller.scanned(tag_qr())
    assert kiosk.view.message == "qr_tag_linked"

    assert len(kiosk.emitted.events) == recorded
    assert controller.qr_stats == QrStats(visits=1, tags=1, repeats=2)


def test_ending_the_visit_forgets_the_visit_and_its_tags(kiosk: Kiosk) -> None:
    token = new_visit_id()
    controller = kiosk.controller
    controller.scanned(visit_qr(token))
    controller.scanned(tag_qr())

    controller.end_visit()

    assert kiosk.view.screen == "attract" and kiosk.view.take_home_url is None and kiosk.view.message is None
    ended = kiosk.emitted.events[-1]
    assert isinstance(ended, KioskSessionEnded) and ended.visit_id == visit_id_for(token)
    assert not controller._tags, "nothing of the visitor is left"

    # The next visitor showing the same tag: a new session and a new visit, linked anew.
    controller.scanned(tag_qr())
    last = linked(kiosk)[-1]
    assert last.tag_id == TAG and last.visit_id != visit_id_for(token)
    assert kiosk.view.take_home_url is not None and token not in kiosk.view.take_home_url
    controller.end_visit()
    controller.scanned(visit_qr(token))
    assert linked(kiosk)[-1].visit_id == visit_id_for(token) and linked(kiosk)[-1].tag_id is None
    assert kiosk.emitted.types().count("kiosk.session_started") == 3


def test_the_message_goes_after_a_few_seconds_on_any_screen(kiosk: Kiosk) -> None:
    controller = kiosk.controller
    controller.scanned("https://www.example.com/")
    assert kiosk.view.message == "qr_not_ours" and controller.idle
    kiosk.clock.advance(MESSAGE_S - 0.1)
    controller.tick()
    assert kiosk.view.message == "qr_not_ours"
    kiosk.clock.advance(0.2)
    controller.tick()
    assert kiosk.view.message is None

    controller.scanned(tag_qr())
    kiosk.clock.advance(MESSAGE_S)
    controller.tick()
    assert kiosk.view.message is None and kiosk.view.screen == "browse"


def test_a_code_shown_during_the_countdown_keeps_the_visit(kiosk: Kiosk) -> None:
    controller = kiosk.start()
    kiosk.clock.advance(95)
    controller.tick()
    assert kiosk.view.countdown_s is not None

    controller.scanned("https://www.example.com/")

    assert kiosk.view.countdown_s is None and kiosk.view.message == "qr_not_ours"
    kiosk.clock.advance(89)
    controller.tick()
    assert not controller.idle and kiosk.view.countdown_s is None


def test_without_content_or_once_stopped_codes_are_ignored(tmp_path: Path) -> None:
    empty = Kiosk(tmp_path, pack=False, site_id=SITE)
    empty.controller.scanned(tag_qr())
    assert empty.emitted.events == [] and empty.view.message is None and empty.view.screen == "no_content"
    assert empty.controller.qr_stats == QrStats(ignored=1)

    stopped = Kiosk(tmp_path, site_id=SITE)
    stopped.controller.shutdown()
    stopped.controller.scanned(visit_qr(new_visit_id()))
    assert stopped.emitted.events == [] and stopped.controller.qr_stats == QrStats(ignored=1)


def test_without_a_site_id_every_tag_is_foreign(tmp_path: Path) -> None:
    kiosk = Kiosk(tmp_path)
    kiosk.controller.scanned(tag_qr())
    assert kiosk.emitted.events == [] and kiosk.view.message == "qr_not_ours"


def test_a_storm_of_tags_is_bounded_in_memory(kiosk: Kiosk) -> None:
    controller = kiosk.controller
    tags = [f"t-{n:012x}" for n in range(MAX_TAGS_PER_VISIT + 3)]
    for tag in tags:
        controller.scanned(tag_qr(tag))
    assert len(controller._tags) == MAX_TAGS_PER_VISIT
    assert [e.tag_id for e in linked(kiosk)] == tags, "every tag is linked at the hub"
    controller.scanned(tag_qr(tags[-1]))
    assert len(linked(kiosk)) == len(tags), "a tag still remembered is a repeat"


def test_the_token_is_never_in_a_log_line_nor_an_event(kiosk: Kiosk, caplog: pytest.LogCaptureFixture) -> None:
    token = new_visit_id()
    foreign = "BEGIN:VCARD\nN:Doe;Jane\nTEL:+33 1 23 45 67 89\nEND:VCARD"
    with caplog.at_level(logging.DEBUG):
        for text in (visit_qr(token), tag_qr(), visit_qr(token), foreign, tag_qr(site_id="other-site")):
            kiosk.controller.scanned(text)
        kiosk.controller.collect("room-a-work-0")
        kiosk.controller.end_visit()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the kiosk says what it did"
    for secret in (token, "Doe", "+33"):
        assert secret not in logged
    assert all(token not in repr(vars(event)) for event in kiosk.emitted.events)


# --- the settings -----------------------------------------------------------------------------------------------

def settings_from(tmp_path: Path, table: str) -> KioskSettings:
    from bus.config import ClientConfig

    path = tmp_path / "kiosk-01.toml"
    path.write_text('site_id = "test-site"\nclient_id = "kiosk-01"\nkind = "kiosk"\n\n[broker]\n'
                    'host = "127.0.0.1"\nport = 8883\nusername = "kiosk-01"\npassword = "x"\n\n[kiosk]\n' + table,
                    "utf-8")
    return KioskSettings.from_config(ClientConfig.load(path), path)


def test_the_camera_is_off_by_default_and_nothing_of_the_decoders_is_loaded(tmp_path: Path) -> None:
    import subprocess
    import sys

    settings = settings_from(tmp_path, "")
    assert settings.camera == "none" and settings.qr_decoder is None
    # In a fresh interpreter: reading the settings of a kiosk without a camera imports no decoder, no Pillow.
    program = ("import sys; from pathlib import Path; from bus.config import ClientConfig; "
               "from kiosk.settings import KioskSettings; import kiosk.runtime; "
               f"p = Path({str(tmp_path / 'kiosk-01.toml')!r}); KioskSettings.from_config(ClientConfig.load(p), p); "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in "
               "('qr', 'zxingcpp', 'pyzbar', 'PIL', 'picamera2', 'linuxpy') and m != 'qr.codes' and m != 'qr'))")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(("table", "camera", "decoder"), [
    ('camera = "picamera2"\n', "picamera2", "zxing"),
    ('camera = "v4l2:/dev/video2"\nqr_decoder = "zbar"\n', "v4l2:/dev/video2", "zbar"),
    ('qr_decoder = "zbar"\n', "none", "zbar"),
])
def test_camera_settings(tmp_path: Path, table: str, camera: str, decoder: str) -> None:
    settings = settings_from(tmp_path, table)
    assert (settings.camera, settings.qr_decoder) == (camera, decoder)


@pytest.mark.parametrize(("table", "words"), [
    ('camera = "usb"\n', "camera is not a camera this kiosk knows"),
    ('camera = "v4l2:"\n', "like v4l2:/dev/video0"),
    ('camera = "v4l2:video0"\n', "like v4l2:/dev/video0"),
    ("camera = true\n", "camera must be text"),
    ('camera = "picamera2"\nqr_decoder = "opencv"\n', "qr_decoder must be one of zxing, zbar"),
    ("qr_decoder = 3\n", "qr_decoder must be one of"),
])
def test_a_bad_camera_setting_is_one_line_naming_the_file_and_the_fix(tmp_path: Path, table: str,
                                                                       words: str) -> None:
    with pytest.raises(ValueError) as caught:
        settings_from(tmp_path, table)
    message = str(caught.value)
    assert "\n" not in message and words in message and str(tmp_path / "kiosk-01.toml") in message


# --- the scanner thread ---------------------------------------------------------------------------------------

def synthetic_camera(frames: list[Frame], **device: Any) -> tuple[V4L2Camera, SyntheticV4L2Device]:
    """qr.camera's V4L2 camera on qr.synthetic's device: real YUYV buffers through the webcam's conversion."""
    fake = SyntheticV4L2Device(frames, **device)
    camera = V4L2Camera("/dev/video-synthetic", frames[0].width, frames[0].height, device_factory=lambda _path: fake)
    return camera, fake


def opened(camera: V4L2Camera) -> V4L2Camera:
    camera.open()
    return camera


class Handed:
    """Stands for ui_call + controller.scanned: runs the call at once (the scanner's thread) and keeps texts."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def ui_call(self, function: Callable[[], None]) -> None:
        function()

    def deliver(self, text: str) -> None:
        with self.lock:
            self.texts.append(text)


def zxing_strategy() -> Strategy:
    return Strategy(make_decoder("zxing"))


def test_a_camera_missing_then_unplugged_is_logged_once_per_outage_and_retried(caplog: pytest.LogCaptureFixture
                                                                              ) -> None:
    code = synthetic.render(tag_qr(), seed=11, side=240, angle=20.0, sigma=8.0, kind="tag").frame
    attempts: list[str] = []
    plugged = threading.Event()

    def open_camera() -> V4L2Camera:
        attempts.append("open")
        if len(attempts) <= 3:  # not plugged in yet
            raise CameraMissing("/dev/video-synthetic does not exist: no webcam is connected there")
        if len(attempts) == 4:  # plugged in: two frames, then pulled out
            return opened(synthetic_camera([code, code], lost_at=2)[0])
        if len(attempts) <= 6:  # a loose cable: it opens, then fails before its first frame
            return opened(synthetic_camera([code], lost_at=0)[0])
        plugged.set()
        return opened(synthetic_camera([code], on_buffer=lambda _n: time.sleep(0.01), repeat=True)[0])

    handed = Handed()
    scanner = QrScanner(open_camera=open_camera, strategy=zxing_strategy, deliver=handed.deliver,
                        ui_call=handed.ui_call, backoff=Backoff(base_s=0.002, cap_s=0.01), start_delay_s=0,
                        clock=lambda: 0.0)  # time stands still: every later sighting is within the repeat time
    with caplog.at_level(logging.DEBUG, logger="kiosk.qr_scanner"):
        scanner.start()
        try:
            assert wait_until(lambda: plugged.is_set() and scanner.stats().frames >= 6, 30)
        finally:
            scanner.stop()
    assert not scanner.running
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One for the missing camera (3 failed opens), one for the unplugging and the loose cable after it.
    assert len(warnings) == 2, warnings
    assert "cannot be opened" in warnings[0] and "kiosk works by touch" in warnings[0]
    assert "stopped delivering frames" in warnings[1]
    back = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    assert len(back) == 2, "frames came back twice"
    stats = scanner.stats()
    assert stats.camera_failures == 6 and not stats.camera_open
    # The same tag, seen in frame after frame across the unplugging, is handed on once.
    assert handed.texts == [tag_qr()] and stats.repeats >= 2


def test_a_ui_thread_that_does_not_take_codes_bounds_what_waits_for_it() -> None:
    frames = [synthetic.render(tag_qr(f"t-{n:012x}"), seed=n, side=220, angle=0.0, sigma=0.0, kind="tag").frame
              for n in range(MAX_PENDING + 4)]
    waiting: list[Callable[[], None]] = []
    delivered: list[str] = []
    camera, fake = synthetic_camera(frames)
    scanner = QrScanner(open_camera=lambda: opened(camera), strategy=zxing_strategy, deliver=delivered.append,
                        ui_call=waiting.append, start_delay_s=0, max_fps=0)
    scanner.start()
    try:
        assert wait_until(lambda: fake.sent == len(frames) and scanner.stats().frames == len(frames), 30)
    finally:
        scanner.stop()
    stats = scanner.stats()
    assert len(waiting) == stats.texts == MAX_PENDING and stats.dropped == 4
    for call in waiting:  # the UI thread comes back, after the scanner stopped: nothing more is decided
        call()
    assert delivered == []


# --- the whole path, in the real window ----------------------------------------------------------------------

class OutboxSink:
    """The DeviceClient's part the EventWriter uses: events committed to a real outbox, as the kiosk does."""

    site_id = synthetic.SITE_ID
    device_id = "kiosk-qr"

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)

    def emit_many(self, events: list[Event]) -> None:
        self.outbox.append([(event.event_id, encode_event(event)) for event in events])


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[OutboxSink]:
    sink = OutboxSink(tmp_path / "outbox.sqlite")
    yield sink
    sink.outbox.close()


def test_a_visit_qr_shown_to_the_camera_links_the_visit_on_screen(harness: Any, sample_pack: InstalledPack,
                                                                  sink: OutboxSink, tmp_path: Path) -> None:
    from kiosk.ui import ui_call

    token = synthetic.visit_token(random.Random(2024))
    shown = synthetic.render(synthetic.visit_url(token), seed=5, side=260, angle=33.0, sigma=14.0, kind="visit")
    frames = [synthetic.empty_frame(1), shown.frame, shown.frame, synthetic.empty_frame(2), shown.frame]
    camera, fake = synthetic_camera(frames, repeat=True, on_buffer=lambda _n: time.sleep(1 / 30))

    writer = EventWriter(sink)
    writer.start()
    controller = KioskController(emit=writer.record, home_zone="impressionnisme", companion_base_url=BASE,
                                 site_id=synthetic.SITE_ID, default_language="fr")
    controller.show_pack(sample_pack)
    harness.reset(controller)
    scanner = QrScanner(open_camera=lambda: opened(camera), strategy=zxing_strategy, deliver=controller.scanned,
                        ui_call=ui_call, start_delay_s=0)
    assert controller.view.screen == "attract"
    scanner.start()
    try:
        assert harness.run_until(lambda: controller.view.message is not None, 30), "no code read"
        # The code stays in view for a while longer: still one visit, one link.
        assert harness.run_until(lambda: fake.sent >= 3 * len(frames), 30)
    finally:
        scanner.stop()
    harness.step(2)

    view = controller.view
    assert (view.screen, view.message) == ("browse", "qr_visit_found")
    assert view.take_home_url == f"{BASE}/v/{token}"
    banner = harness.find("message")
    assert harness.visible(banner) and banner.text == texts.text("qr_visit_found", "fr")
    assert texts.text("qr_visit_found", "fr") in harness.texts()
    assert all(w >= 64 and h >= 64 for _, w, h in harness.touch_targets())
    path = harness.screenshot(tmp_path / "visit-found.png")
    assert_not_blank(path)
    x, y = (int(v) for v in banner.to_window(banner.x, banner.y))
    with Image.open(path) as image:
        region = image.convert("RGB").crop((x, 800 - y - int(banner.height), x + int(banner.width), 800 - y))
        region.save(tmp_path / "banner.png")
    assert_not_blank(tmp_path / "banner.png", size=None, min_colours=8, max_share=0.97)

    # The event, as committed to the outbox: the visit's derivation, never the token.
    assert writer.flush(10)
    payloads = [row.payload for row in sink.outbox.pending_after(0, limit=100, max_bytes=1 << 20)]
    events = [decode_event(payload) for payload in payloads]
    assert [e.type for e in events] == ["kiosk.session_started", "visit.linked"]
    link = events[1]
    assert isinstance(link, VisitLinked) and (link.channel, link.visit_id) == ("kiosk_qr", visit_id_for(token))
    assert all(token.encode() not in payload for payload in payloads)

    # A tap on the banner closes it; ending the visit forgets the visit.
    harness.tap("message")
    assert controller.view.message is None and not harness.exists("message")
    harness.tap("end_visit")
    assert controller.view.take_home_url is None and token not in "\n".join(harness.texts(all_screens=True))
    controller.shutdown()
    assert writer.stop(10)


# --- the runtime starts and stops the scanner -----------------------------------------------------------------

def kiosk_runtime(site: Site, tmp_path: Path, packs: Path | None = None, table: str = "",
                  **kwargs: Any) -> tuple[KioskRuntime, UiQueue, list[Event]]:
    config = device_config(site, "kiosk-01")
    path = site.device_config("kiosk-01")
    if table:
        with path.open("a") as file:
            file.write(f"\n[kiosk]\n{table}")
        config = ClientConfig.load(path).with_broker(discover=False)
    settings = replace(KioskSettings.from_config(config, path), packs_dir=packs or tmp_path / "packs")
    ui, recorded = UiQueue(), list[Event]()
    runtime = KioskRuntime(config, settings, ui_call=ui, on_recorded=recorded.append, **kwargs)
    return runtime, ui, recorded


def test_the_runtime_runs_the_scanner_with_the_app(make_site: Callable[..., Site], sample_pack_file: Path,
                                                    tmp_path: Path) -> None:
    site = make_site()
    PackStore(tmp_path / "packs").install(sample_pack_file)
    tag = tag_qr(site_id=site.site_id)
    frame = synthetic.render(tag, seed=3, side=200, angle=12.0, sigma=6.0, kind="tag").frame
    camera, _ = synthetic_camera([frame], repeat=True, on_buffer=lambda _n: time.sleep(0.02))
    runtime, ui, recorded = kiosk_runtime(site, tmp_path, open_camera=lambda: opened(camera))
    assert runtime.scanner is not None and not runtime.scanner.running
    runtime.start()
    try:
        assert runtime.scanner.running
        assert wait_until(lambda: ui.pump() or any(isinstance(e, VisitLinked) for e in recorded), 30)
    finally:
        runtime.stop()
    assert not runtime.scanner.running
    link, = [e for e in recorded if isinstance(e, VisitLinked)]
    assert (link.channel, link.tag_id, link.site_id) == ("kiosk_qr", TAG, site.site_id)
    ended = recorded[-1]
    assert isinstance(ended, KioskSessionEnded) and ended.reason == "shutdown" and ended.visit_id == link.visit_id


def test_a_kiosk_whose_camera_is_missing_says_so_once_and_works_by_touch(make_site: Callable[..., Site],
                                                                          caplog: pytest.LogCaptureFixture,
                                                                          tmp_path: Path) -> None:
    site = make_site()
    runtime, ui, _ = kiosk_runtime(site, tmp_path, table='camera = "v4l2:/dev/video-not-there"\n')
    assert runtime.settings.camera == "v4l2:/dev/video-not-there" and runtime.settings.qr_decoder == "zxing"
    with caplog.at_level(logging.INFO, logger="kiosk.qr_scanner"):
        runtime.start()
        try:
            assert wait_until(lambda: ui.pump() or (runtime.scanner is not None and
                                                    runtime.scanner.stats().camera_failures >= 1), 30)
            assert runtime.controller.view.screen == "no_content"
        finally:
            runtime.stop()
    warning, = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "/dev/video-not-there does not exist" in warning and "change [kiosk] camera" in warning
    assert "[qr_reader]" not in warning


def test_a_kiosk_without_a_camera_has_no_scanner(make_site: Callable[..., Site], tmp_path: Path) -> None:
    runtime, _, _ = kiosk_runtime(make_site(), tmp_path)
    assert runtime.settings.camera == "none" and runtime.scanner is None


def test_every_message_exists_in_french_and_english() -> None:
    from kiosk.controller import MESSAGES

    for key in MESSAGES:
        assert set(texts.STRINGS[key]) == {"fr", "en"}
        assert texts.text(key, "de") == texts.STRINGS[key]["en"], "another pack language: English"
