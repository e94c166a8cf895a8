"""`museum gateway run|record|replay`: a BLE station from an enrolled device's configuration file. A thin shell
over hardware.runtime (the station), hardware.scanning (the radio) and hardware.recording (JSONL)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from bus.config import ClientConfig
from hardware.advert import Advert
from hardware.ble import FakeRadio
from hardware.recording import RecordingError, RecordingWriter, read_recording, replay
from hardware.runtime import GatewayRuntime
from hardware.scan_supervisor import ScanStatus
from hardware.scanning import ScanLoop
from hardware.settings import StationSettings

log = logging.getLogger("gateway")

REPLAY_AHEAD = 5_000
"""Adverts a replay hands the pretend radio ahead of the station."""
RUN_DRAIN_S = 5.0
"""On SIGTERM, how long a station gives its last events (the visits it ends) to reach the site; systemd waits 90 s."""
REPLAY_DRAIN_S = 60.0
"""How long a replay waits, once played, for its events to reach the site."""
RECORD_QUEUE = 20_000
BAD_LINES_LISTED = 10

CONFIG = click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
                      help="The device's file from `museum device enroll --kind gateway` (with its [gateway] table).")


def _load(config_path: Path) -> tuple[ClientConfig, StationSettings]:
    try:
        config = ClientConfig.load(config_path)
        if config.kind != "gateway":
            raise ValueError(f"{config_path}: kind is {config.kind!r}, not 'gateway': this file belongs to another "
                             "device; enroll this station with `museum device enroll NAME --kind gateway --site SITE`")
        return config, StationSettings.from_config(config, config_path)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _runtime(config: ClientConfig, settings: StationSettings, radio: FakeRadio | None,
             verbose: bool) -> GatewayRuntime:
    try:
        return GatewayRuntime(config, settings, radio=radio, on_event=_log_event if verbose else None)
    except ValueError as error:  # the outbox cannot be opened
        raise click.ClickException(str(error)) from None


def _outcome(runtime: GatewayRuntime) -> str:
    waiting = runtime.device.outbox.pending
    text = f"{runtime.stats.events} events recorded"
    if waiting:
        text += f", {waiting} waiting in the outbox (sent when the station next runs and reaches the site)"
    if runtime.stats.adverts_dropped:
        text += f"; {runtime.stats.adverts_dropped} adverts dropped while the station fell behind"
    return text


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
def gateway() -> None:
    """A BLE station beside the works: tags near works, room counts, beacon health."""


@gateway.command("run")
@CONFIG
@click.option("-v", "--verbose", is_flag=True, help="Log every event the station records.")
def run(config_path: Path, verbose: bool) -> None:
    """Run a station until stopped (SIGTERM or Ctrl-C). Bluetooth faults are retried for ever and reported to
    staff as `scanner.status` events; events wait in the outbox while the site cannot be reached."""
    _logging(verbose)
    config, settings = _load(config_path)
    runtime = _runtime(config, settings, None, verbose)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await runtime.run(stop, drain_s=RUN_DRAIN_S)

    asyncio.run(main())
    click.echo(f"{config.client_id}: stopped; {_outcome(runtime)}")


@gateway.command("record")
@CONFIG
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The JSONL file to append to (created 0600: it holds Bluetooth addresses).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds to record (default: until Ctrl-C).")
@click.option("--max-mb", type=click.FloatRange(0.001), default=256.0, show_default=True,
              help="Stop writing when the file reaches this size.")
def record(config_path: Path, out_path: Path, duration: float | None, max_mb: float) -> None:
    """Record every advert the station's adapter hears (time, address, RSSI, raw manufacturer and service
    data) for calibration and tests; `museum gateway replay` plays it back. The file holds the addresses of
    every phone nearby: keep it on the station, delete it when done."""
    _logging(False)
    config, settings = _load(config_path)
    try:
        writer = RecordingWriter(out_path, max_bytes=int(max_mb * 1024 * 1024))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    outcome = asyncio.run(_record(settings, writer, duration))
    text = f"{config.client_id}: {outcome.written} adverts recorded in {out_path}"
    if writer.stopped is not None:
        text += f"; {writer.stopped}"
    elif outcome.written == 0 and outcome.scanner is not None and outcome.scanner.state != "scanning":
        text += f"; the scanner never ran: {outcome.scanner.reason}"
    if outcome.dropped:
        text += f"; {outcome.dropped} adverts dropped (the disk could not keep up)"
    click.echo(text)


@dataclass
class _Recorded:
    written: int = 0
    dropped: int = 0
    scanner: ScanStatus | None = None


async def _record(settings: StationSettings, writer: RecordingWriter, duration: float | None) -> _Recorded:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    queue: asyncio.Queue[Advert] = asyncio.Queue(maxsize=RECORD_QUEUE)
    outcome = _Recorded()

    def heard(advert: Advert) -> None:
        try:
            queue.put_nowait(advert)
        except asyncio.QueueFull:
            outcome.dropped += 1

    def status(state: str, reason: str, attempts: int) -> None:
        level = logging.INFO if state == "scanning" else logging.WARNING
        log.log(level, "scanner %s on %s: %s", state, settings.adapter, reason)

    loop = ScanLoop(settings.adapter, settings.scan_mode, heard, status, silence_s=settings.silence_s)
    scanning = asyncio.create_task(loop.run(stop))
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                advert = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                continue
            if not writer.write(advert):
                break  # the size bound, or the disk: the writer has said why
            outcome.written += 1
    finally:
        stop.set()
        await scanning
        writer.close()
    outcome.scanner = loop.status
    return outcome


@gateway.command("replay")
@click.argument("recording", type=click.Path(path_type=Path))
@CONFIG
@click.option("--speed", type=click.FloatRange(0, min_open=True), default=None,
              help="Play back this many times faster than recorded (default: as fast as the station takes them).")
@click.option("-v", "--verbose", is_flag=True, help="Log every event the station records.")
def replay_command(recording: Path, config_path: Path, speed: float | None, verbose: bool) -> None:
    """Play a recording through the unchanged station code (bleak's scanner on a pretend adapter), as if the
    station heard it again: its events go to the site like a live station's."""
    _logging(verbose)
    config, settings = _load(config_path)
    try:
        lines = read_recording(recording)
        first = next(lines, None)
    except ValueError as error:
        raise click.ClickException(f"{error} (a file written by `museum gateway record --out`)") from None
    radio = FakeRadio(keep_time=True)
    runtime = _runtime(config, settings, radio, verbose)
    played = 0
    bad: list[int] = []

    def adverts() -> Iterator[Advert]:
        nonlocal played
        for item in itertools.chain([] if first is None else [first], lines):
            if isinstance(item, RecordingError):
                bad.append(item.line)
                log.warning("%s: %s (skipped)", recording, item)
            else:
                played += 1
                yield item

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        station = asyncio.create_task(runtime.run(stop, drain_s=REPLAY_DRAIN_S))
        async for advert in replay(adverts(), speed=speed):
            while radio.pending >= REPLAY_AHEAD and not stop.is_set():
                await asyncio.sleep(0.01)  # as fast as the station takes them, not faster: the radio is bounded
            if stop.is_set():
                break
            radio.put(advert)
        radio.end()
        await station

    asyncio.run(main())
    skipped = ""
    if bad:
        listed = ", ".join(map(str, bad[:BAD_LINES_LISTED])) + (", …" if len(bad) > BAD_LINES_LISTED else "")
        skipped = f"; {len(bad)} bad lines skipped (lines {listed})"
    click.echo(f"{config.client_id}: replayed {played} adverts from {recording}{skipped}; {_outcome(runtime)}")


def _log_event(event: object) -> None:
    log.info("%s", event)


replay_command.name = "replay"
COMMANDS: list[click.Command] = [gateway]
