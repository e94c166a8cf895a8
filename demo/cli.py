"""`museum demo` and `museum simulate …`: a thin shell over `demo.launcher` and `demo.simulated_device`."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bus.config import ClientConfig
from content.model import Museum, load_museum
from content.sample import load_sample_museum
from demo.launcher import DEFAULT_KIOSKS, DEFAULT_SEED, DEFAULT_SPEED, DemoError, plan_devices, run_demo
from demo.simulated_device import (
    MAX_SPEED,
    TAKE_HOME_KEPT,
    SimulatedKind,
    Simulation,
    StopFlag,
    TakeHomeFile,
    check_config,
    run_device,
    run_station,
    station_settings,
)
from demo.simulation import VISITORS_PER_HOUR

Command = TypeVar("Command", bound=Callable[..., Any])
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SPEED = click.FloatRange(0, MAX_SPEED, min_open=True)


@click.command()
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds to run once everything has started (default: until Ctrl-C).")
@click.option("--kiosks", type=click.IntRange(0, 99), default=DEFAULT_KIOSKS, show_default=True,
              help="Simulated kiosks, dealt round the rooms, besides the one real kiosk app; every room also "
                   "gets one BLE station (gateway).")
@click.option("--speed", type=SPEED, default=DEFAULT_SPEED, show_default=True,
              help="The simulated kiosks' museum time runs this many times faster than real time; the BLE "
                   "stations run in real time and hear this many times as many visitors.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Seed of the simulated visitors: the same seed gives the same visits.")
@click.option("--site-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Create the demo site here (new or empty directory) instead of in a temporary one.")
def demo(duration: float | None, kiosks: int, speed: float, seed: int, site_dir: Path | None) -> None:
    """The whole museum on this machine: broker, hub, pack server, one real kiosk app (a window, or offscreen
    with its screen saved every 5 s), simulated kiosks, and in each room a real BLE station on a simulated radio,
    with live figures."""
    stop = StopFlag()
    stop.install(*STOP_SIGNALS)
    try:
        status = run_demo(duration=duration, devices=plan_devices(load_sample_museum(), kiosks), speed=speed,
                          seed=seed, site_dir=site_dir, stop=stop, out=sys.stdout, register_cleanup=atexit.register)
    except DemoError as error:
        raise click.ClickException(str(error)) from None
    sys.exit(status)


@click.group()
def simulate() -> None:
    """One simulated device, publishing simulated visitors' events to a site like a real one."""


def _simulation_options(speed_help: str) -> Callable[[Command], Command]:
    return lambda command: _with_simulation_options(command, speed_help)


def _with_simulation_options(command: Command, speed_help: str) -> Command:
    options = [
        click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                     required=True, help="The device's configuration, as written by `museum device enroll`."),
        click.option("--zone", "zone_id", required=True, help="The room the device is in (a zone_id)."),
        click.option("--speed", type=SPEED, default=1.0, show_default=True, help=speed_help),
        click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
                     help="With the device id, seeds the visitors: the same seed gives the same visits."),
        click.option("--museum", "museum_path", type=click.Path(path_type=Path, dir_okay=False),
                     default=None, help="The museum file (default: the sample museum)."),
        click.option("-v", "--verbose", is_flag=True, help="Log every event emitted."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@simulate.command("kiosk")
@_simulation_options("Museum time runs this many times faster than real time.")
@click.option("--take-home-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Demo only: append the take-home URL of each visit that collects a work to this file (the last "
                   f"{TAKE_HOME_KEPT}, mode 0600), as a visitor keeping the QR code. Needs --companion-url.")
@click.option("--companion-url", default=None, help="The companion service's base URL of those take-home URLs.")
def simulate_kiosk(config_path: Path, zone_id: str, speed: float, seed: int, museum_path: Path | None,
                   verbose: bool, take_home_file: Path | None, companion_url: str | None) -> None:
    """A kiosk: visitors' sessions, one after the other."""
    if (take_home_file is None) != (companion_url is None):
        raise click.UsageError("--take-home-file and --companion-url go together: give both or neither")
    take_home = None
    if take_home_file is not None and companion_url is not None:
        try:
            take_home = TakeHomeFile(take_home_file, companion_url)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--companion-url") from None
    _simulate("kiosk", config_path, zone_id, speed, seed, museum_path, verbose, VISITORS_PER_HOUR,
              take_home=take_home)


@simulate.command("gateway")
@_simulation_options("This many times as many visitors walk in (the station itself runs in real time).")
@click.option("--visitors-per-hour", type=click.FloatRange(0, min_open=True), default=VISITORS_PER_HOUR,
              show_default=True, help="Visitors walking into the room, on average, before --speed.")
def simulate_gateway(config_path: Path, zone_id: str, speed: float, seed: int, museum_path: Path | None,
                     verbose: bool, visitors_per_hour: float) -> None:
    """A room's BLE station: the real station code (`museum gateway run`) on a simulated radio, hearing visitors'
    phones and lent tags; it reports tags stopping at the work it stands beside and the room's occupancy. Its
    settings are the file's [gateway] table, or the demo's when the file has none."""
    _simulate("gateway", config_path, zone_id, speed, seed, museum_path, verbose, visitors_per_hour)


def _simulate(kind: SimulatedKind, config_path: Path, zone_id: str, speed: float, seed: int,
              museum_path: Path | None, verbose: bool, visitors_per_hour: float, *,
              take_home: TakeHomeFile | None = None) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Installed first, so a stop requested while the device is still starting is not lost.
    stop = StopFlag()
    stop.install(*STOP_SIGNALS)
    try:
        museum: Museum = load_museum(museum_path) if museum_path is not None else load_sample_museum()
        config = ClientConfig.load(config_path)
        simulation = Simulation(kind, zone_id, museum, speed=speed, seed=seed, visitors_per_hour=visitors_per_hour)
        check_config(config, simulation)
        settings = station_settings(config, config_path, simulation) if kind == "gateway" else None
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    log = logging.getLogger("demo.simulate")
    on_event = (lambda event: log.info("%s %s", event.type, event.event_id)) if verbose else None
    if settings is None:
        click.echo(f"{config.client_id}: simulated kiosk in {zone_id!r} of site {config.site_id!r}, "
                   f"museum time x{speed:g}, seed {seed}")
        emitted = run_device(config, simulation, stop, on_event=on_event, take_home=take_home)
        click.echo(f"{config.client_id}: stopped ({stop.signal_name or 'end'}) after {emitted} simulated events")
        return
    watched = ", ".join(watch.artwork_id for watch in settings.artworks) or "no work"
    click.echo(f"{config.client_id}: BLE station in {zone_id!r} of site {config.site_id!r} watching {watched}, on a "
               f"simulated radio in real time, {visitors_per_hour * speed:g} visitors per hour, seed {seed}")
    try:
        recorded = run_station(config, settings, simulation, stop, on_event=on_event)
    except ValueError as error:  # the station could not open its outbox: GatewayRuntime says which and why
        raise click.ClickException(str(error)) from None
    click.echo(f"{config.client_id}: stopped ({stop.signal_name or 'end'}) after {recorded} events recorded")


COMMANDS: list[click.Command] = [demo, simulate]
