"""`museum content serve`: the site's published content packs over HTTPS, with the site's certificate.

Read-only and narrow on purpose: GET and HEAD of `/packs/<pack_id>-<version>.tar`, nothing else (no listing, no
other file of the site: a path that is not exactly such a name is a 404 before the disk is touched). Single
`Range` requests are answered with 206 so a kiosk resumes a cut download. The TLS handshake happens in the
connection's own thread, with every read and write bounded by a timeout, and the connections served at once are
bounded: a client that connects and says nothing holds one slot for at most the timeout and blocks nobody.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import socketserver
import ssl
import stat
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from broker.packs import PACK_NAME, URL_PREFIX

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
TIMEOUT_S = 20.0
"""Longest wait for one read or write of a connection (handshake, request line, each chunk sent)."""

_CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.ASCII)


class PackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, packs_dir: Path, certfile: Path, keyfile: Path, host: str = "0.0.0.0", port: int = 8443, *,
                 max_connections: int = MAX_CONNECTIONS, timeout_s: float = TIMEOUT_S) -> None:
        self.packs_dir = Path(packs_dir)
        self.timeout_s = timeout_s
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(str(certfile), str(keyfile))
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self.active = 0
        self.turned_away = 0
        self.served = 0
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _PackHandler)

    def server_bind(self) -> None:
        # HTTPServer's own would look the address up in DNS (getfqdn), which can hang a site without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Full: the newcomer is closed at once rather than queued behind clients that may never finish.
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.turned_away += 1
            self.shutdown_request(request)
            return
        with self._lock:
            self.active += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.active -= 1
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.timeout_s)
        try:
            secure = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as error:  # a timeout is an OSError too
            log.debug("TLS handshake failed: %s", error)
            return
        try:
            self.RequestHandlerClass(secure, client_address, self)  # type: ignore[arg-type]
        except OSError as error:
            log.debug("connection ended: %s", error)
        finally:
            secure.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error while serving a pack request")


class _PackHandler(BaseHTTPRequestHandler):
    server: PackServer
    server_version = "museum-packs"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        # Visitors' devices are not to be traced: no addresses in the log, only what was asked and answered.
        log.debug("%s", format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        super().send_error(code, message, explain)

    def _serve(self, body: bool) -> None:
        self.close_connection = True
        name = self.path[len(URL_PREFIX):] if self.path.startswith(URL_PREFIX) else ""
        # Exactly a pack name: no '/', '%', '..', query or anything else can reach the file system.
        if PACK_NAME.match(name) is None:
            self._plain(HTTPStatus.NOT_FOUND, body)
            return
        try:
            fd = os.open(self.server.packs_dir / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self._plain(HTTPStatus.NOT_FOUND, body)
            return
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                self._plain(HTTPStatus.NOT_FOUND, body)
                return
            self._send_file(handle, info.st_size, f'"{info.st_size:x}-{info.st_mtime_ns:x}"', body)

    def _send_file(self, handle: Any, size: int, etag: str, body: bool) -> None:
        wanted = _byte_range(self.headers.get("Range"), size)
        if self.headers.get("If-Range") not in (None, etag):
            wanted = None  # the file changed since the client's first part: send it whole
        if isinstance(wanted, str):  # unsatisfiable
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self._common_headers(etag)
            self.end_headers()
            return
        start, end = (0, size - 1) if wanted is None else wanted
        if wanted is None:
            self.send_response(HTTPStatus.OK)
        else:
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        self._common_headers(etag)
        self.end_headers()
        if not body or size == 0:
            return
        handle.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break  # cut short under us; the client sees a short body and resumes
            self.wfile.write(chunk)
            remaining -= len(chunk)
        with self.server._lock:
            self.server.served += 1

    def _common_headers(self, etag: str) -> None:
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Connection", "close")

    def _plain(self, status: HTTPStatus, body: bool) -> None:
        text = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(text)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one range of a `Range: bytes=…` header as (first, last), "unsatisfiable", or None to send the whole
    file (no header, a header this server does not honour such as several ranges, or a malformed one)."""
    match = None if header is None else _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        if last_text == "":
            return None
        length = min(int(last_text), size)
        return (size - length, size - 1) if length else "unsatisfiable"
    first = int(first_text)
    last = size - 1 if last_text == "" else int(last_text)
    if first >= size:
        return "unsatisfiable"
    if last < first:
        return None
    return first, min(last, size - 1)


__all__ = ["MAX_CONNECTIONS", "TIMEOUT_S", "PackServer"]
