"""`museum hub run` and `museum hub stats`: a thin shell over `broker.hub` and `broker.hub_store`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

import click

from broker.hub import Hub, HubSettings
from broker.hub_store import FUTURE_TOLERANCE_DAYS, PAST_TOLERANCE_DAYS, HubStore, QuarantineLimits
from broker.locks import AlreadyLocked, exclusive_lock
from broker.site import Site, certificate_warnings, load_site
from bus.config import ClientConfig


def _load_site(site_dir: Path) -> Site:
    try:
        return load_site(site_dir)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _load_config(path: Path) -> ClientConfig:
    try:
        return ClientConfig.load(path)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _hold_hub_lock(site: Site, held: contextlib.ExitStack) -> None:
    """Refuse a second hub for the site: two hubs on the one `hub` account take its session from each other
    (about twice a second) and both miss messages. The kernel drops the lock when the hub dies, however."""
    lock = site.hub_lock_file
    try:
        held.enter_context(exclusive_lock(lock, wait=False))
    except AlreadyLocked:
        try:
            holder = f" (pid {int(lock.read_text(encoding='ascii'))})"
        except (OSError, ValueError):
            holder = ""
        raise click.ClickException(f"a hub is already running for site {site.site_id!r}{holder}, holding {lock}; "
                                   "stop it first (one hub per site)") from None
    except OSError as error:
        raise click.ClickException(f"cannot take the hub's lock {lock}: {error}") from None
    with contextlib.suppress(OSError):
        lock.write_text(f"{os.getpid()}\n", encoding="ascii")


MIB = 1024 * 1024


def _storage_error(site: Site) -> str | None:
    """What the running hub last said about writing its database (its stats file): the database cannot say it."""
    try:
        figures = json.loads(site.hub_stats_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    error = figures.get("storage_error") if isinstance(figures, dict) else None
    return f"{error} (hub stats file, {figures.get('updated_at')})" if error else None


@click.group()
def hub() -> None:
    """The edge hub: stores every device's events and acknowledges them."""


VERBOSE_HELP = ("Also log at INFO level: the settings at start, every connection attempt and its outcome, "
                "retention purges. Without it: warnings and errors only (the broker unreachable and reached "
                "again, certificates about to expire, failures).")


@hub.command("run")
@click.option("--site", "site_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The site directory made by `museum site init`.")
@click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The hub database (default: <site>/hub/hub.sqlite).")
@click.option("--retention-days", type=click.FloatRange(min=1), default=90.0, show_default=True,
              help="Delete events this many days after they occurred, or after the hub received them if sooner.")
@click.option("--quarantine-retention-days", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Delete quarantined input this many days after it arrived.")
@click.option("--tag-link-max-hours", type=click.FloatRange(min=1), default=12.0, show_default=True,
              help="Forget which visit a lent tag belongs to this many hours after it was lent, if it was never "
                   "returned.")
@click.option("--past-tolerance-days", type=click.FloatRange(min=1), default=PAST_TOLERANCE_DAYS, show_default=True,
              help="Refuse (quarantine) an event whose occurred_at or event_id time is more than this many days "
                   "before the hub's clock.")
@click.option("--future-tolerance-days", type=click.FloatRange(min=0), default=FUTURE_TOLERANCE_DAYS,
              show_default=True, help="Refuse (quarantine) an event whose occurred_at or event_id time is more "
                                      "than this many days after the hub's clock.")
@click.option("--quarantine-device-mib", type=click.FloatRange(min=0), show_default=True,
              default=QuarantineLimits.device_bytes / MIB,
              help="Keep at most this much quarantined input per device; past it, count it only.")
@click.option("--quarantine-total-mib", type=click.FloatRange(min=0), show_default=True,
              default=QuarantineLimits.total_bytes / MIB,
              help="Keep at most this much quarantined input in all; past it, count it only.")
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
def run_command(site_dir: Path, db_path: Path | None, retention_days: float, quarantine_retention_days: float,
                tag_link_max_hours: float, past_tolerance_days: float, future_tolerance_days: float,
                quarantine_device_mib: float, quarantine_total_mib: float, verbose: bool) -> None:
    """Run the hub in the foreground until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    site = _load_site(site_dir)
    settings = HubSettings(_load_config(site.hub_config), db_path or site.hub_database, site.hub_stats_file,
                           retention_days=retention_days, quarantine_retention_days=quarantine_retention_days,
                           tag_link_max_hours=tag_link_max_hours,
                           certificate_warnings=lambda: certificate_warnings(site),
                           past_tolerance_days=past_tolerance_days, future_tolerance_days=future_tolerance_days,
                           quarantine_limits=QuarantineLimits(device_bytes=int(quarantine_device_mib * MIB),
                                                              total_bytes=int(quarantine_total_mib * MIB)),
                           screenshots_dir=site.screenshots_dir)
    with contextlib.ExitStack() as held:
        _hold_hub_lock(site, held)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            service = Hub(settings)
        except (OSError, sqlite3.Error) as error:
            raise click.ClickException(f"cannot open the hub database {settings.db_path}: {error}") from None
        click.echo(f"hub: site {site.site_id}, storing in {settings.db_path}", err=True)
        service.run(stop)


@hub.command("stats")
@click.option("--site", "site_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The site directory made by `museum site init`.")
@click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The hub database (default: <site>/hub/hub.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def stats_command(site_dir: Path, db_path: Path | None, as_json: bool) -> None:
    """Events stored per type, quarantined per reason, devices online; certificates about to expire."""
    site = _load_site(site_dir)
    path = db_path or site.hub_database
    if not path.is_file():
        raise click.ClickException(f"no hub database at {path}: has `museum hub run` been started?")
    try:
        store = HubStore(path)
        try:
            stats = store.stats()
        finally:
            store.close()
    except sqlite3.Error as error:
        raise click.ClickException(f"{path} cannot be read as a hub database ({error}); check --db") from None
    warnings = certificate_warnings(site)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    storage_error = _storage_error(site)
    if storage_error is not None:
        click.echo(f"Warning: the hub cannot store: {storage_error}", err=True)
    if as_json:
        click.echo(json.dumps({**asdict(stats), "certificate_warnings": warnings, "storage_error": storage_error},
                              indent=2))
        return
    click.echo(f"Events stored: {stats.events_total}")
    for name, count in stats.events_by_type.items():
        click.echo(f"  {name:<32} {count:>10}")
    click.echo(f"Quarantined: {stats.quarantined_total}")
    for code, count in stats.quarantined_by_code.items():
        click.echo(f"  {code:<32} {count:>10}")
    if stats.quarantine_not_stored_total:
        click.echo(f"Quarantined but not kept (over a quarantine bound): {stats.quarantine_not_stored_total}")
        for device_id, count in stats.quarantine_not_stored_by_device.items():
            click.echo(f"  {device_id or '(no device)':<32} {count:>10}")
    if stats.attention:
        click.echo(f"Needs attention: {len(stats.attention)}")
        for item in stats.attention:
            click.echo(f"  {item.device_id} {item.subject}: {item.state} since {item.since}: {item.detail}")
    click.echo(f"Devices online: {len(stats.devices_online)} of {stats.devices_known} known")
    for device_id in stats.devices_online:
        click.echo(f"  {device_id}")
    click.echo(f"Certificates: {len(warnings)} warning(s), above" if warnings else
               "Certificates: none about to expire")


COMMANDS: list[click.Command] = [hub]
