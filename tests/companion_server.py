"""The real companion app under uvicorn, in a background thread, on a free port of 127.0.0.1, for any test:

    with CompanionServer(settings, store) as server:          # or server = CompanionServer(...).start()
        httpx.get(f"{server.url}/healthz")
        server.app.dependency_overrides[get_clock] = ...     # the app object, for the seams of deps.py

The listening socket is bound before uvicorn starts (no race for the port), `start` returns once /healthz
answers 200, and `stop` lets uvicorn finish its lifespan (purge task cancelled, store left to the caller when
the caller gave one).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from companion_api.app import create_app
from companion_api.settings import Settings

START_TIMEOUT_S = 20.0


class CompanionServer:
    def __init__(self, settings: Settings, store: Any = None, *, app: Any = None) -> None:
        self.settings = settings
        self.app = app if app is not None else create_app(settings, store)
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
        # every keep-alive request waits 40 ms for a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_config=None, access_log=False, proxy_headers=False,
                                server_header=False, lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"companion-{self.port}", daemon=True)
        self._failure: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as error:  # reported by start()
            self._failure = error

    def start(self) -> CompanionServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._failure is not None or not self._thread.is_alive():
                    raise RuntimeError(f"the companion server did not start: {self._failure!r}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the companion server did not answer /healthz within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._socket.close()
        if self._thread.is_alive():
            raise RuntimeError("the companion server did not stop within 15 s")

    def __enter__(self) -> CompanionServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
