"""Fetching one content pack over HTTPS from the site server (through `bus.https`).

The download goes to `<dest>.part` and becomes `dest` only once its size and SHA-256 are those announced, so
`dest` is always a whole pack or absent. A cut download resumes where it stopped (`Range` with `If-Range`, the
ETag of the first answer kept beside the part); the announced size bounds what is ever written, and every
connect and read has a timeout, so neither a lying nor a silent server can fill the disk or hold the kiosk.
TLS is verified against the site CA only, host name included (the site certificate names the broker hosts,
127.0.0.1 and localhost).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from bus.https import HttpFailure, StreamReply, stream_get
from content.pack import file_sha256

CHUNK = 256 * 1024


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    resumed_from: int
    """Bytes already on disk that the server agreed to continue from (0: fetched from the start)."""


class DownloadError(Exception):
    """A download that did not give the announced pack. `retryable`: worth another attempt later (network,
    timeout, server busy, damaged bytes); not retryable: the server or the announcement itself is wrong."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _etag_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.etag")


def download(url: str, dest: str | Path, *, ca_file: str | Path, expected_size: int, expected_sha256: str,
             timeout_s: float = 20.0, chunk: int = CHUNK) -> DownloadResult:
    """Fetch `url` into `dest`, resuming `dest.part`; DownloadError says why not."""
    dest = Path(dest)
    if expected_size <= 0:
        raise DownloadError(f"{url}: announced size {expected_size} is not a pack size", retryable=False)
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if have >= expected_size:
        return _finish(url, dest, expected_size, expected_sha256, resumed_from=have)
    headers: dict[str, str] = {}
    if have:
        # Without a remembered ETag the part is still resumed: the final SHA-256 check catches a splice.
        headers["Range"] = f"bytes={have}-"
        etag = _read_etag(dest)
        if etag:
            headers["If-Range"] = etag
    try:
        with stream_get(url, headers, timeout_s, ca_file) as response:
            if response.status == 416:
                # Our part is at least as long as the file: only its hash can tell whether it is the pack.
                return _finish(url, dest, expected_size, expected_sha256, resumed_from=have)
            start = _start_offset(url, response, have if headers else 0, expected_size)
            _write_body(url, response, part, start, expected_size, chunk)
    except HttpFailure as failure:
        if failure.kind == "tls":
            raise DownloadError(f"{url}: TLS verification against the site CA failed: {failure.detail}",
                                retryable=False) from None
        # connect/read timeout, refused, cut connection
        raise DownloadError(failure.reason, retryable=failure.retryable) from None
    except OSError as error:  # the kiosk's own disk
        raise DownloadError(f"{part}: cannot write: {error}", retryable=True) from None
    return _finish(url, dest, expected_size, expected_sha256, resumed_from=start)


def _start_offset(url: str, response: StreamReply, asked_from: int, expected_size: int) -> int:
    """Where this response's body goes in the part file, after checking it fits the announcement."""
    status = response.status
    if status == 206 and asked_from:
        content_range = response.headers.get("Content-Range", "")
        if content_range != f"bytes {asked_from}-{expected_size - 1}/{expected_size}":
            raise DownloadError(f"{url}: answered range {content_range!r}, asked from {asked_from} of "
                                f"{expected_size} bytes", retryable=True)
        return asked_from
    if status == 200:  # whole file: a new download, or the file changed since our part (If-Range)
        length = response.headers.get("Content-Length")
        if length is not None and length != str(expected_size):
            raise DownloadError(f"{url}: the server has {length} bytes, the announcement says {expected_size}",
                                retryable=False)
        return 0
    retryable = status >= 500 or status in (408, 429)
    raise DownloadError(f"{url}: HTTP {status}", retryable=retryable)


def _write_body(url: str, response: StreamReply, part: Path, start: int, expected_size: int,
                chunk: int) -> None:
    etag = response.headers.get("ETag")
    if start == 0:
        _forget_part(part.with_name(part.name[:-len(".part")]))
    if etag:
        _etag_path(part.with_name(part.name[:-len(".part")])).write_text(etag, "utf-8")
    written = start
    with open(part, "r+b" if start else "wb") as out:
        out.seek(start)
        out.truncate()
        for data in response.chunks(chunk):
            if written + len(data) > expected_size:
                raise DownloadError(f"{url}: the server sent more than the announced {expected_size} bytes",
                                    retryable=False)
            out.write(data)
            written += len(data)
        out.flush()
        os.fsync(out.fileno())
    if written != expected_size:
        raise DownloadError(f"{url}: connection ended after {written} of {expected_size} bytes", retryable=True)


def _finish(url: str, dest: Path, expected_size: int, expected_sha256: str, *, resumed_from: int) -> DownloadResult:
    part = part_path(dest)
    size = part.stat().st_size
    digest = file_sha256(part) if size == expected_size else ""
    if digest != expected_sha256:
        # Keeping these bytes would make every later attempt resume into the same wrong file. TLS protects the
        # bytes in transit, so a whole file fetched at once that does not match is the wrong file: only a part
        # resumed from earlier bytes (perhaps of another file) is worth fetching again from the start.
        _forget_part(dest)
        raise DownloadError(f"{url}: got {size} bytes with SHA-256 {digest or '-'}, announced {expected_size} "
                            f"bytes with SHA-256 {expected_sha256}", retryable=resumed_from > 0)
    os.replace(part, dest)
    with contextlib.suppress(FileNotFoundError):
        _etag_path(dest).unlink()
    return DownloadResult(dest, size, digest, resumed_from)


def _forget_part(dest: Path) -> None:
    for path in (part_path(dest), _etag_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_etag(dest: Path) -> str | None:
    try:
        text = _etag_path(dest).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if 0 < len(text) <= 200 and text.isprintable() else None


__all__ = ["CHUNK", "DownloadError", "DownloadResult", "download", "part_path"]
