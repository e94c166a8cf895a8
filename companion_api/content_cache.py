"""The museums the service shows, from each site's current content pack in the store.

The sync uploads a site's pack into the store (`PUT /sync/v1/pack`); this unpacks it once into
`<data_dir>/cache/packs/<site>/<sha256>/` and keeps the loaded `Museum` in memory. The folder is only a cache:
its content is checked by `content.pack.unpack_pack` (every file against the manifest) and it appears whole or
not at all, so a replica, a restart or an operator deleting it just rebuilds it. Which pack is current is asked
of the store at most every `recheck_s` seconds per site, so a new pack shows within seconds on every replica
without one database query per page. At most `keep` versions stay unpacked per site: the current one, and the
previous one for the pages still open on phones when it changed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from content.model import Museum, load_museum
from content.pack import file_sha256, unpack_pack
from content.source import MUSEUM_FILE, ContentError
from protocol.fields import IDENTIFIER

if TYPE_CHECKING:
    from companion_api.store import Store

log = logging.getLogger("companion.content")

MEDIA_DIR = "media"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class LoadedMuseum:
    """A site's museum as its current pack describes it; media files lie under `media_dir`."""

    site_id: str
    museum: Museum
    sha256: str
    media_dir: Path

    @property
    def root(self) -> Path:
        """The unpacked pack: museum.json and the media/ folder, which museum.json's paths start with."""
        return self.media_dir.parent


@dataclass
class _Site:
    lock: threading.Lock
    loaded: LoadedMuseum | None = None
    checked_at: float | None = None


class Catalog:
    """Thread-safe; one per process. `clock` is monotonic seconds (tests pass their own)."""

    def __init__(self, store: Store, cache_dir: Path, *, recheck_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, keep: int = 2) -> None:
        self._store = store
        self._packs = Path(cache_dir) / "packs"
        self._recheck_s = recheck_s
        self._clock = clock
        self._keep = max(1, keep)
        self._sites: dict[str, _Site] = {}
        self._sites_lock = threading.Lock()
        self._refused: set[tuple[str, str]] = set()
        """(site, sha256) of packs that failed to unpack: not tried again at every recheck."""

    def museum(self, site_id: str) -> LoadedMuseum | None:
        """The site's museum, or None when the site is unknown, has no pack yet, or its pack is unusable."""
        if not isinstance(site_id, str) or IDENTIFIER.match(site_id) is None:
            return None
        entry = self._entry(site_id)
        with entry.lock:
            now = self._clock()
            fresh = entry.checked_at is not None and now - entry.checked_at < self._recheck_s
            if fresh and (entry.loaded is None or entry.loaded.media_dir.parent.is_dir()):
                return entry.loaded
            entry.loaded = self._refresh(site_id, entry.loaded)
            entry.checked_at = now
            return entry.loaded

    def media_file(self, site_id: str, sha256: str, relative_path: str) -> Path | None:
        """The file `relative_path` of pack `sha256` of the site, as museum.json names it (`media/…`; a path
        without that prefix is taken inside the media folder), or None: not unpacked here, missing, or any path
        that would leave the media folder (absolute, `..`, a link pointing out)."""
        if (not isinstance(site_id, str) or IDENTIFIER.match(site_id) is None or not isinstance(sha256, str)
                or _SHA256.match(sha256) is None or not isinstance(relative_path, str)):
            return None
        parts = relative_path.split("/")
        if parts and parts[0] == MEDIA_DIR:
            parts = parts[1:]
        if (not parts or any(part in ("", ".", "..") for part in parts) or "\\" in relative_path
                or ":" in relative_path or any(ord(c) < 32 for c in relative_path)):
            return None
        media = self._packs / site_id / sha256 / MEDIA_DIR
        if not media.is_dir():
            current = self.museum(site_id)  # an empty cache on this replica: the page came from another one
            if current is None or current.sha256 != sha256 or not media.is_dir():
                return None
        try:
            candidate = media.joinpath(*parts).resolve(strict=True)
            inside = candidate.is_relative_to(media.resolve(strict=True))
        except (OSError, RuntimeError):
            return None
        return candidate if inside and candidate.is_file() else None

    # --- internals ----------------------------------------------------------------------------------------

    def _entry(self, site_id: str) -> _Site:
        with self._sites_lock:
            entry = self._sites.get(site_id)
            if entry is None:
                entry = self._sites[site_id] = _Site(threading.Lock())
            return entry

    def _refresh(self, site_id: str, loaded: LoadedMuseum | None) -> LoadedMuseum | None:
        try:
            info = self._store.pack_info(site_id)
        except Exception as error:  # the database is away: keep showing what we have
            log.warning("content of %s: cannot ask the store for its pack (%s); keeping the cached one",
                        site_id, type(error).__name__)
            return loaded
        if info is None:
            return None
        sha256 = info.sha256
        if loaded is not None and loaded.sha256 == sha256 and loaded.root.is_dir():
            return loaded
        if (site_id, sha256) in self._refused:
            return loaded
        try:
            result = self._load(site_id, sha256)
        except (ContentError, ValueError) as error:
            self._refused.add((site_id, sha256))
            log.error("content of %s: pack %s is unusable (%s); still showing the previous one", site_id,
                      sha256[:12], _first_line(error))
            return loaded
        except Exception as error:  # a full disk, the database away: tried again at the next recheck
            log.warning("content of %s: cannot unpack pack %s yet (%s); still showing the previous one", site_id,
                        sha256[:12], _first_line(error))
            return loaded
        self._trim(site_id, keep=result.root)
        return result

    def _load(self, site_id: str, sha256: str) -> LoadedMuseum:
        site_dir = self._packs / site_id
        target = site_dir / sha256
        if not (target / MUSEUM_FILE).is_file():
            site_dir.mkdir(parents=True, exist_ok=True)
            download = site_dir / f".download-{secrets.token_hex(8)}.pack"
            try:
                if not self._store.pack_body(site_id, sha256, download):
                    raise ContentError([f"the store no longer holds pack {sha256[:12]} of {site_id}"])
                if file_sha256(download) != sha256:
                    raise ContentError([f"pack {sha256[:12]} of {site_id}: the stored body does not match its hash"])
                try:
                    unpack_pack(download, target)
                except (ContentError, OSError):
                    if not (target / MUSEUM_FILE).is_file():  # another process unpacked it first: fine
                        raise
            finally:
                download.unlink(missing_ok=True)
        museum = load_museum(target / MUSEUM_FILE)
        with contextlib.suppress(OSError):
            target.touch()  # the newest use first when trimming
        return LoadedMuseum(site_id, museum, sha256, target / MEDIA_DIR)

    def _trim(self, site_id: str, *, keep: Path) -> None:
        site_dir = self._packs / site_id
        try:
            entries = list(site_dir.iterdir())
            versions = [p for p in entries if p.is_dir() and _SHA256.match(p.name) and p != keep]
            versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in versions[self._keep - 1:]:
            shutil.rmtree(old, ignore_errors=True)
        remove_stale(entries, prefix=".")  # downloads and unpacking left by a process killed midway


STALE_AFTER_S = 86400.0
"""A temporary file or folder this old belongs to no running process (a pack is fetched in minutes)."""


def remove_stale(paths: list[Path], *, prefix: str = "") -> None:
    """Delete the files and folders among `paths` (named with `prefix`) untouched for `STALE_AFTER_S`."""
    cutoff = time.time() - STALE_AFTER_S
    for path in paths:
        try:
            if path.name.startswith(prefix) and path.lstat().st_mtime < cutoff:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        except OSError:
            continue


def _first_line(error: BaseException) -> str:
    if isinstance(error, ContentError) and error.errors:
        return str(error.errors[0])
    return str(error).splitlines()[0] if str(error) else type(error).__name__
