"""Publishing a content pack: verify it, store it in the site's packs folder, announce it to every device.

The pack is copied under a temporary name, verified again as copied, and renamed into place, so the server
never serves half a file and a pack changed while being copied is refused. The announcement is the retained
`ContentAnnouncement` on the site's content topic, sent with the publisher account and confirmed by the broker's
PUBACK. Publishing the same pack again only announces it again; the same pack_id and version with other content
is refused, because devices cache a pack by its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from broker.site import Site, ensure_publisher
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink
from content.pack import Pack, file_sha256, verify_pack
from content.source import ContentError
from protocol.codec import encode_content
from protocol.messages import ContentAnnouncement
from protocol.topics import content_topic

KEEP_PACKS = 3
"""Published packs kept in the site's packs folder, the one just published included: a device still fetching
the previous one can finish, and the folder stays bounded."""

PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}-[0-9]{1,12}\.tar\Z")
"""The only file names the packs folder holds and the server serves."""

URL_PREFIX = "/packs/"
_CHUNK = 1024 * 1024


class PublishError(Exception):
    """Publishing failed; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Published:
    path: Path
    announcement: ContentAnnouncement
    removed: tuple[Path, ...]


def pack_file_name(pack_id: str, pack_version: int | str) -> str:
    return f"{pack_id}-{pack_version}.tar"


def pack_url(site: Site, name: str) -> str:
    return f"https://{site.broker_host}:{site.content_port}{URL_PREFIX}{name}"


def publish_pack(site: Site, pack_path: Path, *, timeout_s: float = 15.0, keep: int = KEEP_PACKS,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Published:
    """Store `pack_path` in the site and announce it. PublishError (one line) if it cannot be done."""
    pack_path = Path(pack_path)
    pack = _verified(pack_path)
    stored, size, digest = _store(site, pack_path, pack)
    at = now()
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # what the wire carries (milliseconds)
    announcement = ContentAnnouncement(pack.pack_id, str(pack.pack_version), digest, at,
                                       pack_url(site, stored.name), size)
    announce(site, announcement, timeout_s=timeout_s)
    return Published(stored, announcement, prune(site, keep=keep, keeping=stored))


def _verified(pack_path: Path) -> Pack:
    try:
        return verify_pack(pack_path)
    except ContentError as error:
        raise PublishError(f"{error.errors[0]}; build the pack again with `museum content build`") from None


def _store(site: Site, pack_path: Path, pack: Pack) -> tuple[Path, int, str]:
    folder = site.packs_dir
    target = folder / pack_file_name(pack.pack_id, pack.pack_version)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=".publish-", suffix=".partial", dir=folder)
    except OSError as error:
        raise PublishError(f"{folder}: cannot store the pack: {error.strerror or error}") from None
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, open(pack_path, "rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_name, 0o644)
        try:
            copied = verify_pack(temp_name)
        except ContentError:
            raise PublishError(f"{pack_path}: changed while it was being published; publish it again") from None
        if (copied.pack_id, copied.pack_version) != (pack.pack_id, pack.pack_version):
            raise PublishError(f"{pack_path}: changed while it was being published; publish it again")
        sha256 = digest.hexdigest()
        if target.exists() and file_sha256(target) != sha256:
            raise PublishError(f"{target}: pack {pack.pack_id} version {pack.pack_version} is already published "
                               f"with other content; raise pack_version in museum.json and build again")
        os.replace(temp_name, target)
        _fsync_dir(folder)
        return target, target.stat().st_size, sha256
    except OSError as error:
        raise PublishError(f"{folder}: cannot store the pack: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(site: Site, *, keep: int = KEEP_PACKS, keeping: Path | None = None) -> tuple[Path, ...]:
    """Remove all but the `keep` most recently published packs (never `keeping`); returns what was removed."""
    packs = sorted((path for path in site.packs_dir.iterdir() if PACK_NAME.match(path.name) and path.is_file()),
                   key=lambda path: path.stat().st_mtime_ns, reverse=True)
    kept = {keeping} if keeping is not None else set()
    for path in packs:
        if len(kept) >= max(keep, 1):
            break
        kept.add(path)
    removed = tuple(path for path in packs if path not in kept)
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return removed


def _connect(link: MqttLink, deadline: float) -> bool:
    """Connect once: an operator waiting at the command line wants the first failure, not a retry loop."""
    while not link.connected and time.monotonic() < deadline:
        link.poll(0.05)
        if link.last_error is not None or link.last_refusal is not None:
            break
    return link.connected


def announce(site: Site, announcement: ContentAnnouncement, *, timeout_s: float = 15.0) -> None:
    """Publish the retained announcement and wait for the broker's PUBACK."""
    created = ensure_publisher(site)
    try:
        config = ClientConfig.load(site.publisher_config)
    except (OSError, ValueError) as error:
        raise PublishError(str(error)) from None
    broker = config.broker
    endpoint = Endpoint(broker.host, broker.port, broker.ca_file if broker.tls else None)
    deadline = time.monotonic() + timeout_s
    while True:
        link = MqttLink(config.client_id, endpoint, Credentials(broker.username, broker.password))
        try:
            if _connect(link, deadline):
                if (link.publish(content_topic(site.site_id), encode_content(announcement), qos=1, retain=True)
                        and link.flush(max(deadline - time.monotonic(), 0.1))):
                    return
                reason = link.last_disconnect or "no acknowledgement from the broker"
            else:
                reason = link.last_refusal or link.last_error or "no answer"
        finally:
            link.close()
        # A site that just got its publisher account: the broker may not have re-read its passwd yet.
        if not (created and link.last_refusal is not None and time.monotonic() < deadline):
            break
        time.sleep(0.2)
    raise PublishError(f"{site.publisher_config}: cannot announce the pack on the broker at {endpoint} ({reason}); "
                       f"start it with `museum broker run --site {site.root}` and publish again (the pack is "
                       "stored)")


__all__ = ["KEEP_PACKS", "PACK_NAME", "URL_PREFIX", "PublishError", "Published", "announce", "pack_file_name",
           "pack_url", "prune", "publish_pack"]
