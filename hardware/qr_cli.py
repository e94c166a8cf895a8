"""`museum qr-reader run`: the entrance QR reader from an enrolled device's configuration file. A thin shell over
hardware.qr_station."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from bus.config import ClientConfig
from hardware.qr_station import QrReaderRuntime, QrReaderSettings
from qr.camera import CameraError, ImageFolderCamera
from qr.decode import DecoderUnavailable

EXIT_OPERATOR = 2
"""Exit status for a mistake an operator must correct (configuration, camera, decoder)."""
DRAIN_S = 5.0
"""On stop, how long the reader waits for its last events to reach the hub (the rest go at the next start)."""


@click.group("qr-reader")
def qr_reader() -> None:
    """The entrance QR reader: lends visitor tags to visits and takes them back."""


@qr_reader.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The device's file from `museum device enroll --kind qr_reader` (with its [qr_reader] table).")
@click.option("--frames", "frames_dir", type=click.Path(path_type=Path), default=None,
              help="Read the PNG/PGM/JPEG images of this folder, in name order, instead of the camera (tests and "
                   "demonstrations); the reader keeps running after the last one, until stopped.")
@click.option("--fps", type=click.FloatRange(min=0.1, max=100.0), default=10.0, show_default=True,
              help="With --frames: images per second.")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def run(config_path: Path, frames_dir: Path | None, fps: float, verbose: bool) -> None:
    """Run the reader until stopped (SIGTERM or Ctrl-C). A camera that fails is opened again for ever; events
    wait in the outbox while the site cannot be reached."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ClientConfig.load(config_path)
        if config.kind != "qr_reader":
            raise ValueError(f"{config_path}: kind is {config.kind!r}, not 'qr_reader': this file belongs to "
                             "another device; enroll the reader with `museum device enroll NAME --kind qr_reader`")
        settings = QrReaderSettings.from_config(config, config_path)
        camera = ImageFolderCamera(frames_dir, fps) if frames_dir is not None else None
        runtime = QrReaderRuntime(config, settings, camera=camera)
        runtime.open_camera()
    except (OSError, ValueError, CameraError, DecoderUnavailable) as error:
        where = "" if str(config_path) in str(error) or frames_dir is not None else f"{config_path}: "
        click.echo(f"error: {where}{error}", err=True)
        raise SystemExit(EXIT_OPERATOR) from None

    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runtime.run(stop, drain_s=DRAIN_S)
    click.echo(f"{config.client_id}: stopped; {runtime.station.summary()}")


COMMANDS = [qr_reader]
