"""A kiosk's moving parts, wired together without any UI: the UI (kiosk/ui.py) or a test drives `controller`.

    bus worker ── on_content ──▶ PackUpdater.offer          (records only)
               ── on_command ──▶ KioskCommands.handle ── ui_call ──▶ controller
    pack worker ── take/process ─ applied ── ui_call ──▶ controller.offer_pack
                                 refused ──▶ content.pack_refused event
    UI thread ── controller ── emit ──▶ EventWriter (queue) ── writer thread ──▶ DeviceClient outbox ──▶ hub
    QR scanner ── a new code ── ui_call ──▶ controller.scanned                  (only with a camera)

Threads: the UI's (the controller lives there; everything reaches it through `ui_call`), the bus worker
(DeviceClient), the pack worker (download and install, which also starts the DeviceClient so that a slow broker
discovery never holds the first frame), the event writer (the outbox commits) and, when `[kiosk] camera` names
one, the QR scanner (kiosk/qr_scanner.py: the camera's frames and their decoding).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from kiosk.commands import KioskCommands, UiCall
from kiosk.controller import KioskController, View
from kiosk.event_writer import EventWriter
from kiosk.pack_store import InstalledPack, PackStore
from kiosk.pack_updates import PackUpdater, UpdateOutcome
from kiosk.qr_scanner import CameraLike, OpenCamera, QrScanner
from kiosk.settings import NO_CAMERA, KioskSettings
from protocol.events import ContentPackApplied, ContentPackRefused, Event
from protocol.messages import ContentAnnouncement

if TYPE_CHECKING:
    from qr.decode import Strategy

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
KIOSK_TUNING = DeliveryTuning(gather_events=1)
"""A kiosk sends each event at once instead of gathering a few per message: a visitor makes a handful of events
a minute, so gathering would save the hub little and would hold a "take it home" up to `gather_s` (0.5 s) before
it reaches the hub (bench/kiosk.py measures tap → stored)."""


class KioskRuntime:
    def __init__(self, config: ClientConfig, settings: KioskSettings, *, ui_call: UiCall,
                 capture_png: Callable[[], bytes] | None = None, discovery_interfaces: list[str] | None = None,
                 tuning: DeliveryTuning | None = None, on_recorded: Callable[[Event], None] | None = None,
                 on_acked: Callable[[list[str]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, open_camera: OpenCamera | None = None) -> None:
        """`ui_call(function)` must run `function` on the UI thread soon (Kivy: Clock.schedule_once), from any
        thread. `on_recorded(event)` sees every event the kiosk records (tests, benchmark); `on_acked(event_ids)`,
        on the bus worker thread, the events the hub has committed (the benchmark's tap → stored).
        `open_camera` replaces the camera `[kiosk] camera` names (a test's or the benchmark's fake camera)."""
        ca_file = config.broker.ca_file
        if ca_file is None or not Path(ca_file).is_file():
            what = "is missing" if ca_file is None else f"{ca_file} does not exist"
            raise ValueError(f"{settings.config_path}: [broker] ca_file {what}: content packs are fetched over "
                             "HTTPS checked against the site CA; copy the site's ca.crt beside the file and set "
                             "ca_file = \"ca.crt\"")
        self.config = config
        self.settings = settings
        self._ui_call = ui_call
        try:
            self.store = PackStore(settings.packs_dir)
        except OSError as error:
            raise ValueError(f"{settings.config_path}: [kiosk] packs_dir {settings.packs_dir} cannot be used "
                             f"({error.strerror or error}); give a writable folder") from None
        self.updater = PackUpdater(self.store, ca_file=ca_file)
        self.exit_code: int | None = None
        self.exit_requested = threading.Event()
        self.on_exit_requested: Callable[[int], None] | None = None
        """Set by the UI: called on the UI thread with the exit code when a `restart` command arrives."""
        self.device = DeviceClient(config, tuning=tuning or KIOSK_TUNING, discovery_interfaces=discovery_interfaces,
                                   on_command=lambda command: self.commands.handle(command),
                                   on_content=self.updater.offer, on_acked=on_acked)
        self.writer = EventWriter(self.device, on_recorded=on_recorded)
        self.controller = KioskController(
            emit=self.writer.record, home_zone=settings.home_room, companion_base_url=settings.companion_base_url,
            idle_timeout_s=settings.idle_timeout_s, countdown_s=settings.countdown_s,
            default_language=settings.default_language, clock=clock, site_id=config.site_id)
        self.controller.observe(self._view_changed)
        self.commands = KioskCommands(controller=self.controller, ui_call=ui_call,
                                      reload_content=self.reload_content, request_exit=self.request_exit,
                                      capture_png=capture_png, send_screenshot=self.device.send_screenshot)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._installed: InstalledPack | None = None  # the latest pack installed, not yet handed to the controller
        self._refused: ContentAnnouncement | None = None
        self._reported: str | None = self.store.reported()
        self._forced: ContentAnnouncement | None = None
        self._pack_thread: threading.Thread | None = None
        self.scanner = self._qr_scanner(open_camera)
        """The camera's QR scanner; None without a camera."""

    def _qr_scanner(self, open_camera: OpenCamera | None) -> QrScanner | None:
        settings = self.settings
        if open_camera is None:
            if settings.camera == NO_CAMERA:
                return None
            open_camera = _settings_camera(settings.camera)
        decoder = settings.qr_decoder
        return QrScanner(open_camera=open_camera, strategy=lambda: _strategy(decoder),
                         deliver=self.controller.scanned, ui_call=self._ui_call)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Show the last good pack (or the no-content screen), then start delivering events and taking packs.
        Returns at once: nothing here waits on the network."""
        if self._pack_thread is not None:
            raise RuntimeError("already started")
        current = self.store.current()
        self.store.pin(current.path if current is not None else None)
        self._ui_call(lambda: self.controller.show_pack(current))
        self.writer.start()
        if current is not None and self._reported != current.path.name:
            # Installed during a visit, and the kiosk stopped before the visit ended: shown only now.
            self.writer.record(ContentPackApplied, pack_id=current.pack_id, pack_version=str(current.pack_version),
                               items=len(current.museum.artworks))
            self._note_reported(current)
        self._pack_thread = threading.Thread(target=self._pack_worker, name="kiosk-packs", daemon=True)
        self._pack_thread.start()
        if self.scanner is not None:
            self.scanner.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End a visit in progress (reason shutdown), commit every event to the outbox, disconnect. Call it on
        the UI thread, or once the UI has stopped: it calls the controller directly."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
        if self.scanner is not None:
            self.scanner.stop()  # a code read now would start a visit the shutdown has to end
        self.controller.shutdown()
        self.updater.stop()
        if self._pack_thread is not None:
            # A download in progress gives up at its own timeout; the thread is a daemon meanwhile.
            self._pack_thread.join(timeout)
        self.writer.stop(timeout)
        self.device.stop()

    def request_exit(self, code: int) -> None:
        """Ask the app to exit with `code` (the `restart` command: 75, and the service manager restarts it)."""
        self.exit_code = code
        self.exit_requested.set()
        callback = self.on_exit_requested
        if callback is not None:
            self._ui_call(lambda: callback(code))

    # --- content ------------------------------------------------------------------------------------------

    def reload_content(self) -> tuple[bool, str]:
        """The `reload-content` command: process the last announcement again, even one refused or given up on."""
        announcement = self.device.content
        if announcement is None:
            return False, "no content announcement received yet; publish a pack with `museum content publish`"
        with self._lock:
            self._forced = announcement
        self.updater.offer(announcement)
        what = f"{announcement.pack_id} version {announcement.pack_version}"
        if not self.updater.is_new(announcement):
            return True, f"{what} is already installed; nothing to fetch"
        return True, f"fetching and applying {what} again"

    def _pack_worker(self) -> None:
        with self._lock:
            start_device = not self._stopping.is_set()
            if start_device:
                try:
                    self.device.start()  # may wait for broker discovery: never on the UI thread
                except Exception:
                    log.exception("kiosk: cannot start the device client; events stay in the outbox")
        while not self._stopping.is_set():
            announcement = self.updater.take(None)
            if announcement is None or self._stopping.is_set():
                continue
            with self._lock:
                forced, self._forced = self._forced == announcement, None
            if announcement == self._refused and not forced:
                # The retained announcement comes again on every reconnection: refused once is enough.
                log.debug("kiosk: %s version %s was refused already; skipped", announcement.pack_id,
                          announcement.pack_version)
                continue
            try:
                outcome = self.updater.process(announcement)
            except Exception:  # a bug must not end content updates for the months the kiosk runs
                log.exception("kiosk: processing pack %s version %s failed", announcement.pack_id,
                              announcement.pack_version)
                continue
            self._handle(outcome)

    def _handle(self, outcome: UpdateOutcome) -> None:
        announcement = outcome.announcement
        what = f"pack {announcement.pack_id} version {announcement.pack_version}"
        if outcome.status == "applied" and outcome.installed is not None:
            log.info("kiosk: %s installed", what)
            with self._lock:
                self._installed = outcome.installed
            self._ui_call(self._offer_installed)
        elif outcome.status == "refused":
            log.warning("kiosk: %s refused: %s", what, outcome.reason)
            self._refused = announcement
            try:
                self.writer.record(ContentPackRefused, pack_id=announcement.pack_id,
                                   pack_version=announcement.pack_version, reason=outcome.reason[:500] or "refused")
            except Exception:
                log.exception("kiosk: could not record the refusal of %s", what)
        elif outcome.status == "failed":
            log.warning("kiosk: %s not fetched after %d attempts (%s); the next announcement, a reload-content "
                        "command or a restart tries again", what, outcome.attempts, outcome.reason)
        else:
            log.debug("kiosk: %s: %s", what, outcome.status)

    def _offer_installed(self) -> None:
        """On the UI thread. Only the latest pack installed is offered: offers queued behind a frozen UI would
        otherwise apply packs that newer installs have already pruned."""
        with self._lock:
            installed, self._installed = self._installed, None
        if installed is not None:
            self.controller.offer_pack(installed)
            self._pin()

    def _view_changed(self, _view: View) -> None:
        self._pin()
        shown = self.controller.shown_pack
        if shown is not None and shown.path.name != self._reported:
            self._note_reported(shown)  # the controller recorded content.pack_applied when it showed it

    def _note_reported(self, pack: InstalledPack) -> None:
        self._reported = pack.path.name
        try:
            self.store.mark_reported(pack)
        except OSError as error:  # at worst the next start reports this pack once more
            log.warning("kiosk: cannot note that %s was reported: %s", pack.path.name, error)

    def _pin(self) -> None:
        shown, pending = self.controller.shown_pack, self.controller.pending_pack
        self.store.pin(shown.path if shown is not None else None, pending.path if pending is not None else None)


CAMERA_SIZE = (1280, 720)
"""Frames asked of the camera: the size qr.decode's strategy and its synthetic hard set are tuned for; more pixels
would cost conversion and decoding time on every frame."""


def _settings_camera(spec: str) -> OpenCamera:
    def open_camera() -> CameraLike:
        # The camera libraries are imported here, in the scanner's thread, and only with a camera.
        from qr.camera import SETTING, CameraError, CameraMissing, make_camera

        camera = make_camera(spec, *CAMERA_SIZE)
        try:
            camera.open()
        except CameraError as error:
            # qr.camera's messages name the entrance reader's setting; a kiosk's operator changes this one.
            raise CameraMissing(str(error).replace(SETTING, "[kiosk] camera")) from None
        return camera

    return open_camera


def _strategy(decoder: str | None) -> Strategy:
    from qr.decode import DEFAULT_DECODER, Strategy, make_decoder

    return Strategy(make_decoder(decoder or DEFAULT_DECODER))


__all__ = ["KioskRuntime"]
