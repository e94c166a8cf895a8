"""`museum hub run` and `museum hub stats`: a thin shell over `broker.hub` and `broker.hub_store`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import asdict
from pathlib import Path

import click

from broker.hub import Hub, HubSettings
from broker.hub_store import HubStore
from broker.site import load_site
from bus.config import ClientConfig


@click.group()
def hub() -> None:
    """The edge hub: stores every device's events and acknowledges them."""


@hub.command("run")
@click.option("--site", "site_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The site directory made by `museum site init`.")
@click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The hub database (default: <site>/hub/hub.sqlite).")
@click.option("--retention-days", type=click.FloatRange(min=1), default=90.0, show_default=True,
              help="Delete events this many days after they occurred.")
@click.option("--quarantine-retention-days", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Delete quarantined input this many days after it arrived.")
@click.option("-v", "--verbose", is_flag=True, help="Log connections and resends.")
def run_command(site_dir: Path, db_path: Path | None, retention_days: float, quarantine_retention_days: float,
                verbose: bool) -> None:
    """Run the hub in the foreground until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    site = load_site(site_dir)
    settings = HubSettings(ClientConfig.load(site.hub_config), db_path or site.hub_database, site.hub_stats_file,
                           retention_days=retention_days, quarantine_retention_days=quarantine_retention_days)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service = Hub(settings)
    click.echo(f"hub: site {site.site_id}, storing in {settings.db_path}", err=True)
    service.run(stop)


@hub.command("stats")
@click.option("--site", "site_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The site directory made by `museum site init`.")
@click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The hub database (default: <site>/hub/hub.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def stats_command(site_dir: Path, db_path: Path | None, as_json: bool) -> None:
    """Events stored per type, quarantined per reason, devices online."""
    site = load_site(site_dir)
    path = db_path or site.hub_database
    if not path.exists():
        raise click.ClickException(f"no hub database at {path}: has `museum hub run` been started?")
    store = HubStore(path)
    try:
        stats = store.stats()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(asdict(stats), indent=2))
        return
    click.echo(f"Events stored: {stats.events_total}")
    for name, count in stats.events_by_type.items():
        click.echo(f"  {name:<32} {count:>10}")
    click.echo(f"Quarantined: {stats.quarantined_total}")
    for code, count in stats.quarantined_by_code.items():
        click.echo(f"  {code:<32} {count:>10}")
    click.echo(f"Devices online: {len(stats.devices_online)} of {stats.devices_known} known")
    for device_id in stats.devices_online:
        click.echo(f"  {device_id}")


COMMANDS: list[click.Command] = [hub]
