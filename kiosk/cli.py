"""`museum kiosk run`: the kiosk from an enrolled device's configuration file. A thin shell over kiosk.runtime
(events, packs, commands), kiosk.ui (the Kivy app) and kiosk.supervisor (restart after a crash)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

from bus.config import ClientConfig
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from kiosk.supervisor import EXIT_CONFIG, supervise

log = logging.getLogger("kiosk")

_STARTED = time.monotonic()
"""When this process began running our code: the reference of the first-frame line in the log."""


@click.group()
def kiosk() -> None:
    """The kiosk: the touch-screen app visitors use in a gallery."""


@kiosk.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="The device's file from `museum device enroll` (with its [kiosk] settings).")
@click.option("--windowed", is_flag=True,
              help="A normal window instead of kiosk mode (fullscreen, no cursor, no way out): for staff and "
                   "development.")
@click.option("--screenshots", "screenshot_file", type=click.Path(path_type=Path), default=None,
              help="Also write the screen to this PNG file every --screenshot-every seconds (an offscreen kiosk).")
@click.option("--screenshot-every", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between two writes of --screenshots.")
@click.option("--no-supervise", is_flag=True,
              help="Run the app in this process and do not start it again if it crashes.")
def run(config_path: Path, windowed: bool, screenshot_file: Path | None, screenshot_every: float,
        no_supervise: bool) -> None:
    """Run a kiosk. It shows its last good content pack at once (or "content is on its way"), then keeps
    its events, packs and commands flowing with the site whenever the site can be reached. Unless
    --no-supervise, the app runs as a child process that is started again if it crashes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if no_supervise or os.environ.get("MUSEUM_KIOSK_SUPERVISED") == "1":
        code = run_app(config_path, windowed=windowed, screenshot_file=screenshot_file,
                       screenshot_every=screenshot_every)
        raise SystemExit(1 if code == EXIT_CONFIG else code)
    problem = _check_config(config_path)
    if problem is not None:
        click.echo(f"error: {problem}", err=True)
        raise SystemExit(1)
    child = [sys.executable, "-m", "museum", "kiosk", "run", "--config", str(config_path), "--no-supervise",
             "--screenshot-every", f"{screenshot_every:g}"]
    if windowed:
        child.append("--windowed")
    if screenshot_file is not None:
        child += ["--screenshots", str(screenshot_file)]
    # The child exits 1 for a configuration error (it explained it on stderr): with --no-supervise it maps
    # EXIT_CONFIG to 1 for people; under the supervisor it keeps EXIT_CONFIG so the supervisor does not loop.
    raise SystemExit(supervise(child))


def _check_config(config_path: Path) -> str | None:
    try:
        KioskSettings.from_config(ClientConfig.load(config_path), config_path)
    except (OSError, ValueError) as error:
        return str(error)
    return None


def run_app(config_path: Path, *, windowed: bool = False, screenshot_file: Path | None = None,
            screenshot_every: float = 5.0) -> int:
    """The kiosk app in this process until it stops; its exit status (EXIT_CONFIG for an operator mistake)."""
    try:
        config = ClientConfig.load(config_path)
        settings = KioskSettings.from_config(config, config_path)
    except (OSError, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_CONFIG
    from kiosk import ui  # Kivy sets itself up when imported: only now that the kiosk will really run

    kiosk_mode = not windowed
    ui.prepare_kivy(settings.state_dir, fullscreen=settings.fullscreen and kiosk_mode, kiosk_mode=kiosk_mode)

    def first_frame(screen: str) -> None:
        log.info("first frame on screen %s, %.3f s after start", screen, time.monotonic() - _STARTED)

    app: ui.KioskApp | None = None

    def capture() -> bytes:
        if app is None:
            raise RuntimeError("the kiosk app is not running yet")
        return app.capture_png()

    try:
        runtime = KioskRuntime(config, settings, ui_call=ui.ui_call, capture_png=capture)
    except ValueError as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_CONFIG
    app = ui.KioskApp(runtime.controller, kiosk_mode=kiosk_mode, on_first_frame=first_frame)
    runtime.on_exit_requested = lambda _code: app.stop()

    def stop_app(_signum: int, _frame: FrameType | None) -> None:
        ui.ui_call(app.stop)

    signal.signal(signal.SIGTERM, stop_app)
    signal.signal(signal.SIGINT, stop_app)
    if screenshot_file is not None:
        ui.ui_call(lambda: app.write_screenshots(screenshot_file, screenshot_every))
    runtime.start()
    try:
        app.run()
    finally:
        runtime.stop()
    return runtime.exit_code or 0


COMMANDS = [kiosk]
