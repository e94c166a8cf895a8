"""Record and replay a station's adverts as JSON Lines: one advert per line, one JSON object, e.g.

    {"at":1767000000.123,"address":"AA:BB:CC:DD:EE:FF","rssi":-61,"mfr":{"76":"0215…"},"svc":{"0000feaa-…":"00e7…"}}

Keys: `at` UNIX seconds (rounded to the millisecond), `address`, `rssi` (dBm), `mfr` {decimal company id: hex of
the bytes after the id}, `svc` {128-bit service UUID, lowercase: hex data}, `uuids` [service UUIDs], `tx` (TX
power level, dBm), `name` (local name). `mfr`, `svc`, `uuids`, `tx` and `name` are left out when empty or null.

A recording holds Bluetooth addresses, which stay on the site (docs/privacy.md): it is written with mode 0600 and is
bounded by `max_bytes`. Reading never raises on what is inside a file: each bad line comes out as a
`RecordingError` with its line number, and reading goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hardware.advert import Advert

__all__ = [
    "MAX_LINE_BYTES",
    "RecordingError",
    "RecordingWriter",
    "advert_from_json",
    "advert_to_json",
    "read_recording",
    "replay",
]

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024
"""A real advert's line is under 1 KiB (31 + 31 bytes of data, 251 with extended advertising); longer lines are
rejected without being held in memory whole."""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_ADDRESS_MAX = 64
_NAME_MAX = 248  # the longest local name Bluetooth allows
_DATA_MAX = 512


@dataclass(frozen=True, slots=True)
class RecordingError:
    """A line of a recording that could not be read; the reading went on after it."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


# ---------------------------------------------------------------------------------------------------------------
# Format


def advert_to_json(advert: Advert) -> str:
    record: dict[str, Any] = {"at": round(advert.at, 3), "address": advert.address, "rssi": advert.rssi}
    if advert.manufacturer_data:
        record["mfr"] = {str(company): data.hex() for company, data in advert.manufacturer_data}
    if advert.service_data:
        record["svc"] = {uuid: data.hex() for uuid, data in advert.service_data}
    if advert.service_uuids:
        record["uuids"] = list(advert.service_uuids)
    if advert.tx_power is not None:
        record["tx"] = advert.tx_power
    if advert.local_name is not None:
        record["name"] = advert.local_name
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class _Bad(ValueError):
    pass


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{key!r} must be a whole number from {low} to {high}, not {value!r}"[:200])
    return value


def _hex(value: Any, key: str) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * _DATA_MAX:
        raise _Bad(f"{key!r} values must be hex strings of at most {_DATA_MAX} bytes")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _Bad(f"{key!r} has a value that is not hex: {value[:40]!r}") from None


def _str(value: Any, key: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _Bad(f"{key!r} must be a non-empty string of at most {limit} characters")
    return value


def advert_from_json(text: str) -> Advert:
    """One line → Advert; raises ValueError with a short reason."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Bad(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise _Bad("not a JSON object")
    unknown = set(record) - {"at", "address", "rssi", "mfr", "svc", "uuids", "tx", "name"}
    if unknown:
        raise _Bad(f"unknown keys {sorted(unknown)[:5]}")
    for key in ("at", "address", "rssi"):
        if key not in record:
            raise _Bad(f"{key!r} is missing")
    at = record["at"]
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at < 0:
        raise _Bad(f"'at' must be UNIX seconds, not {at!r}"[:200])
    mfr = record.get("mfr", {})
    svc = record.get("svc", {})
    uuids = record.get("uuids", [])
    if not isinstance(mfr, dict) or not isinstance(svc, dict) or not isinstance(uuids, list) or len(uuids) > 64:
        raise _Bad("'mfr' and 'svc' must be objects, 'uuids' a list of at most 64")
    manufacturer: list[tuple[int, bytes]] = []
    for key, value in mfr.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 5):
            raise _Bad(f"'mfr' keys must be decimal company ids, not {key[:20]!r}")
        manufacturer.append((_int(int(key), "mfr", 0, 0xFFFF), _hex(value, "mfr")))
    service = [(_str(key, "svc", 64).lower(), _hex(value, "svc")) for key, value in svc.items()]
    tx = record.get("tx")
    name = record.get("name")
    return Advert(
        at=float(at),
        address=_str(record["address"], "address", _ADDRESS_MAX),
        rssi=_int(record["rssi"], "rssi", -128, 127),
        manufacturer_data=tuple(sorted(manufacturer)),
        service_data=tuple(sorted(service)),
        service_uuids=tuple(_str(uuid, "uuids", 64).lower() for uuid in uuids),
        tx_power=None if tx is None else _int(tx, "tx", -128, 127),
        local_name=None if name is None else _str(name, "name", _NAME_MAX),
    )


# ---------------------------------------------------------------------------------------------------------------
# Writing


class RecordingWriter:
    """Appends adverts to `path` (created with mode 0600) until it holds `max_bytes`; then, or when the disk
    refuses, recording stops with one logged message (`stopped` says why) and `write` returns False. It never
    raises on a write, so a full disk cannot stop a station."""

    def __init__(self, path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.written = 0
        self.stopped: str | None = None
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot open for recording ({exc.strerror}); check the path and that its "
                             "folder exists and is writable") from None
        os.fchmod(fd, 0o600)  # an older file with wider permissions is narrowed: it holds addresses
        # Unbuffered: a True from write() means the OS has the line, so a full disk loses no accepted advert
        # (one write call per advert, to the page cache: no fsync, no extra SD card wear).
        self._file: BinaryIO | None = os.fdopen(fd, "ab", buffering=0)
        self.size = os.fstat(fd).st_size
        if self.size >= max_bytes:
            self._stop(f"recording not started: {self.path} already holds {self.size} bytes, the limit is "
                       f"{max_bytes}; record to a new file")

    def write(self, advert: Advert) -> bool:
        if self._file is None:
            return False
        line = (advert_to_json(advert) + "\n").encode()
        if self.size + len(line) > self.max_bytes:
            self._stop(f"recording stopped: {self.path} reached its limit of {self.max_bytes} bytes; record to a new "
                       "file to go on")
            return False
        try:
            done = self._file.write(line)
        except OSError as exc:
            self._stop(f"recording stopped: cannot write {self.path} ({exc.strerror})")
            return False
        if done != len(line):  # the disk filled up mid-line: the reader reports that last line as cut off
            self.size += done or 0
            self._stop(f"recording stopped: cannot write {self.path} (the disk is full)")
            return False
        self.size += len(line)
        self.written += 1
        return True

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._stop(f"recording stopped: cannot write {self.path} ({exc.strerror})")

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                log.warning("closing %s: %s", self.path, exc.strerror)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _stop(self, message: str) -> None:
        self.stopped = message
        log.warning("%s", message)
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # the message above already says why writing failed
                file.close()


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_recording(path: Path | str) -> Iterator[Advert | RecordingError]:
    """Every line of a recording in order, as an Advert or a RecordingError (bad JSON, bad field, an overlong line,
    a last line cut off mid-write). Raises ValueError (one line) only when the file cannot be opened."""
    path = Path(path)
    try:
        file = path.open("rb")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the recording ({exc.strerror}); check the path") from None
    with file:
        number = 0
        while True:
            raw = file.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest_of_line(file)
                yield RecordingError(number, f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            complete = raw.endswith(b"\n")
            text = raw.strip()
            if not text:
                continue
            try:
                yield advert_from_json(text.decode("utf-8"))
            except UnicodeDecodeError:
                yield RecordingError(number, "not UTF-8 text")
            except ValueError as exc:
                if not complete:
                    yield RecordingError(number, f"last line cut off (the recording was interrupted mid-write): {exc}")
                else:
                    yield RecordingError(number, str(exc))


def _skip_rest_of_line(file: BinaryIO) -> None:
    while True:
        chunk = file.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


# ---------------------------------------------------------------------------------------------------------------
# Replaying


async def replay(
    adverts: Iterable[Advert],
    *,
    speed: float | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Advert]:
    """Yield `adverts` paced by their `at`: `speed` 1.0 is real time, 10.0 ten times faster, None as fast as
    possible. Pacing is measured from the first advert, so slow consumers do not add up drift; adverts out of
    time order are yielded at once."""
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"replay speed must be a positive number (or None for as fast as possible), not {speed!r}")
    first_at: float | None = None
    started = 0.0
    for advert in adverts:
        if speed is not None:
            if first_at is None:
                first_at, started = advert.at, clock()
            due = (advert.at - first_at) / speed - (clock() - started)
            if due > 0:
                await sleep(due)
        yield advert
