"""The screenshots devices send, as files staff can open: `<dir>/<device_id>/<command_id>.png`, bounded.

Each file is written beside its final name and renamed into place, so a reader never sees half a picture. The
folder keeps the `per_device` newest screenshots of each device and at most `total_bytes` in all (oldest first
out): whatever devices send, the disk it takes is bounded. "Newest" is the order the hub saved them in, kept in
the files' modification times, which this module makes strictly increasing (two files written within one tick
of the file system's clock would otherwise tie).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.fields import IDENTIFIER, UUID
from protocol.messages import Screenshot

FILE_MODE = 0o640
"""Readable by the group the site's staff share with the hub's user, never by everyone: a screenshot shows
whatever the screen showed."""
DIR_MODE = 0o750


@dataclass(frozen=True)
class ScreenshotLimits:
    per_device: int = 20
    total_bytes: int = 64 * 1024 * 1024


class ScreenshotStore:
    def __init__(self, root: Path, limits: ScreenshotLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or ScreenshotLimits()
        self._last_ns = 0
        for leftover in self.root.glob("*/.*.partial"):  # from a hub killed while writing
            with contextlib.suppress(OSError):
                leftover.unlink()
        for existing in self._files():
            self._last_ns = max(self._last_ns, existing[0])

    def path(self, device_id: str, command_id: str) -> Path:
        return self.root / device_id / f"{command_id}.png"

    def save(self, device_id: str, screenshot: Screenshot) -> Path:
        """Write one screenshot (replacing one with the same command id), then prune. OSError if the disk fails."""
        # Both come from the codec and the topic parser already; checked again because they make a path.
        if IDENTIFIER.match(device_id) is None or UUID.match(screenshot.command_id) is None:
            raise ValueError(f"not a device id and command id: {device_id!r}, {screenshot.command_id!r}")
        folder = self.root / device_id
        for directory in (self.root, folder):
            if not directory.is_dir():
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                os.chmod(directory, DIR_MODE)
        target = self.path(device_id, screenshot.command_id)
        handle, temporary = tempfile.mkstemp(prefix=".", suffix=".partial", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(screenshot.png)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, FILE_MODE)
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            os.utime(temporary, ns=(self._last_ns, self._last_ns))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self.prune()
        return target

    def _files(self) -> list[tuple[int, int, Path]]:
        """(mtime_ns, size, path) of every stored screenshot, newest first."""
        found = []
        for path in self.root.glob("*/*.png"):
            with contextlib.suppress(OSError):  # removed meanwhile
                status = path.stat()
                found.append((status.st_mtime_ns, status.st_size, path))
        found.sort(key=lambda item: item[0], reverse=True)
        return found

    def prune(self) -> list[Path]:
        """Remove what is over the bounds, oldest first; returns what was removed."""
        removed: list[Path] = []
        kept_per_device: dict[Path, int] = {}
        total = 0
        full = False  # once the newest files fill the byte budget, every older one goes
        for _, size, path in self._files():
            kept = kept_per_device.get(path.parent, 0)
            full = full or (kept < self.limits.per_device and total + size > self.limits.total_bytes)
            if full or kept >= self.limits.per_device:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
                continue
            kept_per_device[path.parent] = kept + 1
            total += size
        return removed

    def usage(self) -> tuple[int, int]:
        """(files, bytes) stored now."""
        files = self._files()
        return len(files), sum(size for _, size, _ in files)
