"""A small HTTP/1.1 load generator for the benchmarks: keep-alive connections on asyncio streams, each sending its
next GET as soon as the previous answer is read.

Much cheaper per request than a general client (requests, httpx), so the server, not the client, is what the
figures measure; the two endpoints compared in one run pay the same client cost, so their ratio stays fair."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    bytes_received: int

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class LoadError(RuntimeError):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    size = 0
    if length is not None:
        await reader.readexactly(length)
        size = length
    elif chunked:
        while True:
            chunk_size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(chunk_size + 2)
            size += chunk_size
            if chunk_size == 0:
                break
    else:
        raise LoadError("a response without Content-Length or chunked encoding cannot be kept alive")
    return status, size + len(head)


async def _connection(host: str, port: int, paths: Sequence[str], headers: str, count: int,
                      statuses: dict[int, int], received: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        requests = [f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode() for path in paths]
        for n in range(count):
            writer.write(requests[n % len(requests)])
            status, size = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
            received[0] += size
    finally:
        writer.close()
        await writer.wait_closed()


async def _run(host: str, port: int, paths: Sequence[str], total: int, connections: int,
               headers: Sequence[Mapping[str, str]]) -> LoadResult:
    statuses: dict[int, int] = {}
    received = [0]
    header_texts = ["".join(f"{name}: {value}\r\n" for name, value in each.items()) for each in headers]
    per_connection = [total // connections + (1 if n < total % connections else 0) for n in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, [*paths[n % len(paths):], *paths[:n % len(paths)]],
                                       header_texts[n % len(header_texts)], count, statuses, received)
                           for n, count in enumerate(per_connection) if count))
    return LoadResult(total, time.perf_counter() - started, statuses, received[0])


def load(host: str, port: int, paths: Sequence[str], *, total: int, connections: int = 8,
         headers: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None) -> LoadResult:
    """Send `total` GETs of `paths` (in turn) over `connections` keep-alive connections; how fast they came back.

    `headers`: sent with every request, or a list of them, one per connection in turn (phones with different
    cookies). Each connection starts at a different place in `paths`, so that they do not all ask for the same
    page at once."""
    if not paths:
        raise ValueError("no path to load")
    if headers is None:
        headers = [{}]
    elif isinstance(headers, Mapping):
        headers = [headers]
    elif not headers:
        raise ValueError("an empty list of headers")
    return asyncio.run(_run(host, port, list(paths), total, connections, list(headers)))
