"""The kiosk's camera: a thread that reads frames, finds QR codes in them (qr.decode's strategy) and hands each
new text to the controller on the UI thread. The thread decides nothing: `KioskController.scanned` does.

    camera ── frame ──▶ Strategy.read ──▶ Debouncer.admit ──▶ ui_call(controller.scanned, text)

Everything slow happens here, never on the UI thread: waiting for a frame, converting it, decoding it. The
decoders are native code that lets go of Python's GIL while it works (measured: docs/kiosk.md), so the frames on
screen go on meanwhile.

A camera missing at start, or unplugged later, is logged once (and once more when it is back) and opened again
with backoff (1 s doubling up to 30 s): the kiosk keeps working by touch meanwhile. The camera and decoder
libraries are reached only through qr/ (qr.camera, qr.decode), and imported only when the thread starts.

Bounds: the debouncer holds a digest (never the text) of at most `MAX_TEXTS` codes seen in the last `REPEAT_S`
seconds; at most `MAX_PENDING` texts wait for a busy UI thread (more are dropped and counted), so a frozen UI
cannot make the scanner pile up codes; a text is held only until the controller has taken it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bus.backoff import Backoff

if TYPE_CHECKING:
    from qr.decode import Debouncer, Strategy
    from qr.frames import Frame

log = logging.getLogger(__name__)

REPEAT_S = 3.0
"""A code still in view (or shown again within this many seconds of its last sighting) is not handed on again."""
MAX_TEXTS = 256
MAX_PENDING = 8
"""Texts handed to the UI thread and not yet taken by the controller; past this the newest are dropped."""
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
MAX_FPS = 10.0
"""Frames decoded per second at most. A visitor holds a code up for a second or more and the strategy reads most
codes in one frame, so more would only cost CPU and Python's GIL, which the screen needs too: bench figures in
docs/kiosk.md. Frames the camera takes meanwhile wait in its buffers or are dropped by its driver."""
START_DELAY_S = 2.0
"""The thread waits this long before it loads the decoder and opens the camera: those imports (Pillow, the
decoder, some 80 ms of Python holding the GIL) would otherwise compete with the app's first frame."""
FRAME_TIMEOUT_S = 1.0
"""How long one wait for a frame lasts: the longest `stop()` waits for the thread to notice it."""
STOP_TIMEOUT_S = 5.0


class CameraLike(Protocol):
    """What the scanner needs of a camera (qr.camera's): frames, and closing."""

    def read(self, timeout: float) -> Frame | None: ...

    def close(self) -> None: ...


OpenCamera = Callable[[], CameraLike]
UiCall = Callable[[Callable[[], None]], None]
"""Runs a function on the UI thread soon, from any thread (kiosk.ui.ui_call)."""


@dataclass(frozen=True)
class ScannerStats:
    frames: int
    texts: int
    """Texts handed to the controller (after debouncing)."""
    repeats: int
    """Sightings of a text already handed on within REPEAT_S."""
    dropped: int
    """Texts dropped because MAX_PENDING were waiting for the UI thread."""
    camera_failures: int
    """Times the camera could not be opened, or stopped delivering."""
    camera_open: bool


class QrScanner:
    """`start()` the thread, `stop()` it (closes the camera). `deliver(text)` is called on the UI thread through
    `ui_call` (kiosk.ui.ui_call), once per new code."""

    def __init__(self, *, open_camera: OpenCamera, strategy: Callable[[], Strategy], deliver: Callable[[str], None],
                 ui_call: UiCall, clock: Callable[[], float] = time.monotonic, repeat_s: float = REPEAT_S,
                 backoff: Backoff | None = None, max_fps: float = MAX_FPS,
                 start_delay_s: float = START_DELAY_S) -> None:
        """`open_camera()` opens the camera or raises (an OSError or qr.camera's error); `strategy()` makes the
        decoding strategy (its decoder's library is imported then, in the scanner's thread). `clock` is the
        debounce's time; `max_fps` (0: no limit) paces the frames on the real one."""
        self._open_camera = open_camera
        self._make_strategy = strategy
        self._deliver = deliver
        self._ui_call = ui_call
        self._clock = clock
        self._repeat_s = repeat_s
        self._frame_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._start_delay_s = start_delay_s
        self._backoff = backoff or Backoff(base_s=RETRY_FIRST_S, cap_s=RETRY_MAX_S)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._frames = self._texts = self._dropped = self._camera_failures = 0
        self._repeats = 0
        self._camera_open = False
        self._outage: str | None = None
        """Why the camera is not delivering, from the first failure until a frame comes again."""

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="kiosk-qr-scanner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop reading and close the camera; returns once the thread has ended (or `timeout` has passed: a
        camera driver stuck in a read, and the daemon thread is left to the process's end)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the QR scanner did not stop within %.0f s (a camera read that hangs?)", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ScannerStats:
        with self._lock:
            return ScannerStats(frames=self._frames, texts=self._texts, repeats=self._repeats,
                                dropped=self._dropped, camera_failures=self._camera_failures,
                                camera_open=self._camera_open)

    # --- the scanner's thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        if self._stopping.wait(self._start_delay_s):
            return
        try:
            strategy = self._make_strategy()
        except Exception as error:  # the decoder cannot load: the kiosk goes on without a camera
            log.error("QR codes cannot be read: %s", error)
            return
        from qr.decode import Debouncer

        debouncer = Debouncer(self._repeat_s, MAX_TEXTS)
        while not self._stopping.is_set():
            try:
                camera = self._open_camera()
            except Exception as error:  # a missing camera, a driver error: retried, never fatal
                self._camera_down(f"cannot be opened ({_reason(error)})")
                continue
            with self._lock:
                self._camera_open = True
            try:
                self._read_frames(camera, strategy, debouncer)
            except Exception as error:  # unplugged, or the driver failed: open it again
                self._camera_down(f"stopped delivering frames ({_reason(error)})")
            finally:
                with self._lock:
                    self._camera_open = False
                _close(camera)
        log.debug("QR scanner stopped")

    def _read_frames(self, camera: CameraLike, strategy: Strategy, debouncer: Debouncer) -> None:
        frames_before_reset = 10
        next_at = 0.0
        while not self._stopping.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):
                break
            frame = camera.read(FRAME_TIMEOUT_S)
            if frame is None:
                continue
            next_at = time.monotonic() + self._frame_interval
            with self._lock:
                self._frames += 1
            if frames_before_reset:
                if frames_before_reset == 10:
                    # Only frames end an outage: a camera that opens and fails at once is still down.
                    back = self._outage is not None
                    self._outage = None
                    log.info("the camera %s; QR codes are read", "works again" if back else "works")
                frames_before_reset -= 1
                if not frames_before_reset:
                    self._backoff.reset()  # a camera failing right after it opens keeps backing off
            for decoded in strategy.read(frame):
                if debouncer.admit(decoded.text, self._clock()):
                    self._hand_on(decoded.text)
                else:
                    with self._lock:
                        self._repeats += 1

    def _hand_on(self, text: str) -> None:
        with self._lock:
            if self._pending >= MAX_PENDING:
                self._dropped += 1
                return
            self._pending += 1
            self._texts += 1
        self._ui_call(lambda: self._on_ui_thread(text))

    def _on_ui_thread(self, text: str) -> None:
        with self._lock:
            self._pending -= 1
        if self._stopping.is_set():
            return
        self._deliver(text)

    def _camera_down(self, reason: str) -> None:
        """Log the first failure of an outage (a camera left unplugged would fill the log otherwise), wait."""
        with self._lock:
            self._camera_failures += 1
        if self._outage is None:
            log.warning("the camera %s; the kiosk works by touch, and the camera is tried again with backoff "
                        "(up to every %.0f s)", reason, self._backoff.cap_s)
        else:
            log.debug("the camera %s", reason)
        self._outage = reason
        self._stopping.wait(self._backoff.next_delay())


def _reason(error: BaseException) -> str:
    """The error in one line; long enough for qr.camera's messages, which end with the setting to change."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _close(camera: CameraLike) -> None:
    try:
        camera.close()
    except Exception:  # closing an unplugged camera may fail; it is gone either way
        log.debug("closing the camera failed", exc_info=True)


__all__ = ["MAX_FPS", "MAX_PENDING", "REPEAT_S", "CameraLike", "QrScanner", "ScannerStats"]
