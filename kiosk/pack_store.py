"""The content packs kept on a kiosk: `<packs>/current` is a symlink to the unpacked pack being shown.

Layout of the packs folder:

    current -> demo-museum-4        the pack the kiosk shows (a relative symlink)
    demo-museum-4/                  unpacked, verified: manifest-listed files only
    demo-museum-3/                  the previous one, kept (at most `keep_old` old packs)
    downloads/                      packs being fetched (`*.tar.part`), removed once installed or refused

A new pack is unpacked and verified beside the others (`content.pack.unpack_pack` writes it under a temporary
name and renames it only when every file checked out), then `current` is switched by renaming a new symlink
over it: a reader, or a power cut, sees the old pack or the new one, never a mix. A pack that fails is refused
with its reason and nothing the kiosk shows changes. Pure file logic: no network, no threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from content.model import Museum, decode_json, parse_museum
from content.pack import unpack_pack
from content.source import MUSEUM_FILE, ContentError

log = logging.getLogger(__name__)

CURRENT = "current"
DOWNLOADS = "downloads"
REPORTED = "reported"
"""The name (`<pack_id>-<version>`) of the last pack the kiosk reported as shown (`content.pack_applied`)."""
KEEP_OLD = 1
"""Old packs kept besides the current one: the previous pack stays until a newer one has been shown."""

_PACK_DIR = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}-[0-9]{1,12}\Z")
_STAGING_PREFIX = ".unpacking-"
_LINK_PREFIX = ".current-"


@dataclass(frozen=True)
class InstalledPack:
    museum: Museum
    path: Path
    """The unpacked pack's folder: media paths in `museum` are relative to it."""

    @property
    def pack_id(self) -> str:
        return self.museum.pack_id

    @property
    def pack_version(self) -> int:
        return self.museum.pack_version


class PackRefused(Exception):
    """A pack that is not installed; `reason` is one line for the hub and the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PackStore:
    def __init__(self, root: str | Path, *, keep_old: int = KEEP_OLD) -> None:
        self.root = Path(root)
        self.keep_old = keep_old
        self.root.mkdir(parents=True, exist_ok=True)
        self.downloads.mkdir(exist_ok=True)
        self._pinned: frozenset[str] = frozenset()
        self._clear_leftovers()

    def pin(self, *folders: Path | None) -> None:
        """Never prune these pack folders (replacing the previous pins). The pack on screen is not always
        `current`: one installed during a visit is shown only once the kiosk is idle, and the app pins the one
        it shows (and the one waiting) so that more installs meanwhile cannot delete it. Any thread."""
        self._pinned = frozenset(Path(folder).name for folder in folders if folder is not None)

    def reported(self) -> str | None:
        """The pack last reported as shown, or None."""
        try:
            return (self.root / REPORTED).read_text("ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def mark_reported(self, pack: InstalledPack) -> None:
        """Remember that `content.pack_applied` was recorded for `pack` (a few bytes, once per pack)."""
        temporary = self.root / f".{REPORTED}-{uuid.uuid4().hex}"
        temporary.write_text(f"{pack.path.name}\n", "ascii")
        os.replace(temporary, self.root / REPORTED)

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS

    def download_path(self, pack_id: str, pack_version: int | str) -> Path:
        return self.downloads / f"{pack_id}-{pack_version}.tar"

    def current(self) -> InstalledPack | None:
        """The pack being shown, or None when there is none yet (the app then says content is on its way)."""
        link = self.root / CURRENT
        try:
            target = os.readlink(link)
        except OSError:
            return None
        folder = self.root / target
        try:
            museum = parse_museum(decode_json((folder / MUSEUM_FILE).read_bytes()))
        except (OSError, ValueError) as error:
            # Verified at install, so only the kiosk's own storage can have damaged it.
            log.error("%s: the current pack cannot be read (%s)", folder, error)
            return None
        return InstalledPack(museum, folder)

    def install(self, tar_path: str | Path, *, expected_id: str | None = None,
                expected_version: int | str | None = None) -> InstalledPack:
        """Verify and unpack a pack, then make it current. PackRefused (current untouched) if it fails."""
        staging = self.root / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            pack = unpack_pack(tar_path, staging)
        except ContentError as error:
            more = f" (and {len(error.errors) - 1} more)" if len(error.errors) > 1 else ""
            raise PackRefused(f"{error.errors[0]}{more}") from None
        except OSError as error:
            raise PackRefused(f"{tar_path}: cannot unpack: {error}") from None
        try:
            wanted = (expected_id, None if expected_version is None else str(expected_version))
            if wanted != (None, None) and wanted != (pack.pack_id, str(pack.pack_version)):
                raise PackRefused(f"{tar_path}: holds {pack.pack_id} version {pack.pack_version}, announced as "
                                  f"{expected_id} version {expected_version}")
            name = f"{pack.pack_id}-{pack.pack_version}"
            final = self.root / name
            if self._current_name() == name:
                return InstalledPack(pack.museum, final)  # already shown: nothing to switch
            if not (name in self._pinned and final.is_dir()):  # a pinned one is on screen: the same pack, kept
                if final.exists():  # an older copy of the same name, not shown: the verified new one wins
                    shutil.rmtree(final)
                os.rename(staging, final)
            os.utime(final)  # its age among the old packs counts from when it was installed
            self._switch(name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune()
        return InstalledPack(pack.museum, final)

    def _current_name(self) -> str | None:
        try:
            return os.readlink(self.root / CURRENT)
        except OSError:
            return None

    def _switch(self, name: str) -> None:
        link = self.root / f"{_LINK_PREFIX}{uuid.uuid4().hex}"
        os.symlink(name, link)
        try:
            os.replace(link, self.root / CURRENT)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            raise
        _fsync_dir(self.root)

    def installed(self) -> list[Path]:
        """Unpacked pack folders, the most recently installed first."""
        folders = [p for p in self.root.iterdir() if _PACK_DIR.match(p.name) and p.is_dir() and not p.is_symlink()]
        return sorted(folders, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)

    def _prune(self) -> None:
        current = self._current_name()
        pinned = self._pinned
        old = [folder for folder in self.installed() if folder.name != current and folder.name not in pinned]
        for folder in old[self.keep_old:]:
            shutil.rmtree(folder, ignore_errors=True)

    def _clear_leftovers(self) -> None:
        # What a crash mid-install leaves: half-unpacked folders and unswitched links, never shown.
        for path in self.root.iterdir():
            if path.name.startswith((_LINK_PREFIX, f".{REPORTED}-")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            elif path.name.startswith((_STAGING_PREFIX, f".{_STAGING_PREFIX}")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["KEEP_OLD", "InstalledPack", "PackRefused", "PackStore"]
