"""From a content announcement to an installed pack: decide, fetch with retries, install, report.

`offer()` is what DeviceClient's `on_content` callback calls: it only records the announcement (the latest
wins, so a burst of announcements holds one slot) and never touches the network or the disk, because the
callback runs on the bus's worker thread. A worker of the app's own calls `take()` and `process()`: plain calls,
which tests drive without threads. The outcome is a value the app turns into `content.pack_applied` or, for a
refusal, a report to the hub.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bus.backoff import Backoff
from kiosk.pack_download import DownloadError, DownloadResult, download, part_path
from kiosk.pack_store import InstalledPack, PackRefused, PackStore
from protocol.messages import ContentAnnouncement

MAX_ATTEMPTS = 5
TIMEOUT_S = 20.0

Status = Literal["applied", "current", "refused", "failed", "superseded", "stopped"]


@dataclass(frozen=True)
class UpdateOutcome:
    """What became of one announcement.

    - applied: installed and now current (emit `content.pack_applied` with `applied_fields()`).
    - current: it was already the pack shown; nothing done.
    - refused: the pack or the announcement is wrong (bad hash, failed verification, HTTP 404...): `reason`.
    - failed: still unreachable after `attempts` tries; the next announcement (or a restart) tries again.
    - superseded: a newer announcement arrived while retrying; that one is processed instead.
    - stopped: the app is stopping.
    """

    announcement: ContentAnnouncement
    status: Status
    reason: str = ""
    attempts: int = 0
    installed: InstalledPack | None = None

    def applied_fields(self) -> dict[str, str | int]:
        """The fields of `content.pack_applied` (protocol.events.ContentPackApplied) for an applied pack."""
        if self.installed is None:
            raise ValueError(f"no pack was applied ({self.status})")
        return {"pack_id": self.installed.pack_id, "pack_version": str(self.installed.pack_version),
                "items": len(self.installed.museum.artworks)}


Fetch = Callable[..., DownloadResult]


class PackUpdater:
    def __init__(self, store: PackStore, *, ca_file: str | Path, max_attempts: int = MAX_ATTEMPTS,
                 timeout_s: float = TIMEOUT_S, backoff: Backoff | None = None,
                 wait: Callable[[float], bool] | None = None, fetch: Fetch = download) -> None:
        """`wait(seconds)` pauses between attempts and returns True if the app is stopping (default: an
        Event's wait, set by `stop()`); `fetch` is `kiosk.pack_download.download`."""
        self.store = store
        self.ca_file = Path(ca_file)
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff(base_s=2.0, cap_s=300.0)
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._fetch = fetch
        self._lock = threading.Lock()
        self._pending: ContentAnnouncement | None = None
        self._has_pending = threading.Event()

    # --- the callback side: cheap, any thread -------------------------------------------------------------

    def offer(self, announcement: ContentAnnouncement) -> None:
        with self._lock:
            self._pending = announcement
        self._has_pending.set()

    def take(self, timeout_s: float | None = 0.0) -> ContentAnnouncement | None:
        """The latest announcement not yet taken, waiting up to timeout_s for one (None: wait forever)."""
        self._has_pending.wait(timeout_s)
        with self._lock:
            announcement, self._pending = self._pending, None
            self._has_pending.clear()
        return announcement

    def stop(self) -> None:
        self._stopping.set()
        self._has_pending.set()

    # --- the worker side ----------------------------------------------------------------------------------

    def is_new(self, announcement: ContentAnnouncement) -> bool:
        current = self.store.current()
        return current is None or (current.pack_id, str(current.pack_version)) != (
            announcement.pack_id, announcement.pack_version)

    def process(self, announcement: ContentAnnouncement) -> UpdateOutcome:
        if not self.is_new(announcement):
            return UpdateOutcome(announcement, "current")
        self.backoff.reset()
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._fetch_and_install(announcement, attempts)
            except DownloadError as error:
                if not error.retryable:
                    return UpdateOutcome(announcement, "refused", error.reason, attempts)
                if attempts >= self.max_attempts:
                    return UpdateOutcome(announcement, "failed", error.reason, attempts)
                reason = error.reason
            if self._wait(self.backoff.next_delay()) or self._stopping.is_set():
                return UpdateOutcome(announcement, "stopped", reason, attempts)
            with self._lock:
                newer = self._pending is not None and self._pending != announcement
            if newer:
                return UpdateOutcome(announcement, "superseded", reason, attempts)

    def _fetch_and_install(self, announcement: ContentAnnouncement, attempts: int) -> UpdateOutcome:
        tar = self.store.download_path(announcement.pack_id, announcement.pack_version)
        self._fetch(announcement.url, tar, ca_file=self.ca_file, expected_size=announcement.size,
                    expected_sha256=announcement.sha256, timeout_s=self.timeout_s)
        try:
            installed = self.store.install(tar, expected_id=announcement.pack_id,
                                           expected_version=announcement.pack_version)
        except PackRefused as error:
            return UpdateOutcome(announcement, "refused", error.reason, attempts)
        except OSError as error:  # the kiosk's own disk (full, read-only): the pack is not at fault
            return UpdateOutcome(announcement, "failed", f"cannot install: {error}", attempts)
        finally:
            for path in (tar, part_path(tar)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return UpdateOutcome(announcement, "applied", attempts=attempts, installed=installed)


__all__ = ["MAX_ATTEMPTS", "PackUpdater", "UpdateOutcome"]
