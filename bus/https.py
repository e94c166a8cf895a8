"""HTTP(S) requests: the only module that imports `requests`. Everything else sees `HttpReply`, `StreamReply` and
`HttpFailure`, plain types of ours.

Every request has a timeout on connecting and on each read, never follows a redirect (a key or a pack must not
travel to another host than the one configured), and verifies TLS: against `ca_file` when given (the site CA),
else against the system's trust store. What the network or the peer does wrong becomes one `HttpFailure` saying
whether another attempt may succeed; an HTTP status, even 500, is a reply, for the caller to judge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests

FailureKind = Literal["network", "tls", "invalid", "too_large"]

MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The most a reply body read whole may hold: a peer cannot fill our memory."""
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: Mapping[str, str]
    """Case-insensitive on look-up, as HTTP header names are."""


class HttpFailure(Exception):
    """No usable reply. `retryable`: the network or a timeout, worth another attempt later; not retryable: TLS
    verification failed, the URL is malformed, the reply was too large."""

    def __init__(self, reason: str, *, retryable: bool, kind: FailureKind = "network", detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        """One line: the URL and what went wrong."""
        self.retryable = retryable
        self.kind = kind
        self.detail = detail or reason
        """What went wrong, without the URL."""


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


def _failure(url: str, error: requests.exceptions.RequestException) -> HttpFailure:
    detail = _short(error)
    if isinstance(error, requests.exceptions.SSLError):
        return HttpFailure(f"{url}: TLS verification failed: {detail}", retryable=False, kind="tls", detail=detail)
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema | requests.exceptions.InvalidHeader):
        return HttpFailure(f"{url}: {type(error).__name__}: {detail}", retryable=False, kind="invalid",
                           detail=detail)
    # Refused, reset, cut mid-reply, timed out connecting or reading: the peer may be back later.
    return HttpFailure(f"{url}: {type(error).__name__}: {detail}", retryable=True, detail=detail)


def _verify(ca_file: str | Path | None) -> str | bool:
    return str(ca_file) if ca_file is not None else True


def _read_whole(url: str, response: requests.Response, limit: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpFailure(f"{url}: a reply of {declared} bytes, over the {limit}-byte limit", retryable=False,
                          kind="too_large")
    parts: list[bytes] = []
    size = 0
    for data in response.iter_content(chunk_size=_READ_CHUNK):
        size += len(data)
        if size > limit:
            raise HttpFailure(f"{url}: a reply over the {limit}-byte limit", retryable=False, kind="too_large")
        parts.append(data)
    return b"".join(parts)


class HttpSession:
    """Connections kept open between requests to the same server (one TCP and TLS handshake for a whole drain).
    For one thread at a time."""

    def __init__(self) -> None:
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, url: str, *, data: Any, headers: Mapping[str, str], timeout_s: float,
              ca_file: str | Path | None, max_reply_bytes: int) -> HttpReply:
        try:
            with self._session.request(method, url, data=data, headers=dict(headers), timeout=(timeout_s, timeout_s),
                                       verify=_verify(ca_file), allow_redirects=False, stream=True) as response:
                body = _read_whole(url, response, max_reply_bytes)
                return HttpReply(response.status_code, body, response.headers)
        except requests.exceptions.RequestException as error:
            raise _failure(url, error) from None

    def post_json_gzip(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                       ca_file: str | Path | None = None, *, max_reply_bytes: int = MAX_REPLY_BYTES) -> HttpReply:
        """POST a body that is already gzipped JSON (the headers say so); the whole reply."""
        sent = {"Content-Type": "application/json", "Content-Encoding": "gzip", **headers}
        return self._send("POST", url, data=body, headers=sent, timeout_s=timeout_s, ca_file=ca_file,
                          max_reply_bytes=max_reply_bytes)

    def put_file(self, url: str, path: str | Path, headers: Mapping[str, str], timeout_s: float,
                 ca_file: str | Path | None = None, *, max_reply_bytes: int = 1024 * 1024) -> HttpReply:
        """PUT a file, streamed from disk (never read whole into memory). OSError if the file cannot be read."""
        with open(path, "rb") as body:
            size = Path(path).stat().st_size
            sent = {"Content-Type": "application/octet-stream", "Content-Length": str(size), **headers}
            return self._send("PUT", url, data=body, headers=sent, timeout_s=timeout_s, ca_file=ca_file,
                              max_reply_bytes=max_reply_bytes)

    @contextlib.contextmanager
    def stream_get(self, url: str, headers: Mapping[str, str], timeout_s: float,
                   ca_file: str | Path | None = None) -> Iterator[StreamReply]:
        """GET whose body is read piece by piece (`StreamReply.chunks`), for files too large for memory."""
        try:
            with self._session.get(url, headers=dict(headers), stream=True, timeout=(timeout_s, timeout_s),
                                   verify=_verify(ca_file), allow_redirects=False) as response:
                yield StreamReply(url, response.status_code, response.headers, response)
        except requests.exceptions.RequestException as error:
            raise _failure(url, error) from None


class StreamReply:
    """A reply whose body has not been read yet."""

    def __init__(self, url: str, status: int, headers: Mapping[str, str], response: requests.Response) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self._response = response

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body, at most `size` bytes at a time; HttpFailure if the connection fails or times out on the way."""
        try:
            yield from self._response.iter_content(chunk_size=size)
        except requests.exceptions.RequestException as error:
            raise _failure(self.url, error) from None


def post_json_gzip(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                   ca_file: str | Path | None = None) -> HttpReply:
    """One POST on a connection of its own (`HttpSession.post_json_gzip` to keep connections between requests)."""
    with HttpSession() as session:
        return session.post_json_gzip(url, body, headers, timeout_s, ca_file)


def put_file(url: str, path: str | Path, headers: Mapping[str, str], timeout_s: float,
             ca_file: str | Path | None = None) -> HttpReply:
    """One PUT of a file on a connection of its own."""
    with HttpSession() as session:
        return session.put_file(url, path, headers, timeout_s, ca_file)


@contextlib.contextmanager
def stream_get(url: str, headers: Mapping[str, str], timeout_s: float,
               ca_file: str | Path | None = None) -> Iterator[StreamReply]:
    """One streamed GET on a connection of its own."""
    with HttpSession() as session, session.stream_get(url, headers, timeout_s, ca_file) as reply:
        yield reply


__all__ = ["MAX_REPLY_BYTES", "HttpFailure", "HttpReply", "HttpSession", "StreamReply", "post_json_gzip",
           "put_file", "stream_get"]
