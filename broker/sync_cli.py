"""`museum sync run` and `museum sync status`: a thin shell over `broker.upstream_sync` and `broker.sync_store`."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import click

from broker import sync_store
from broker.hub_store import open_reader
from broker.locks import AlreadyLocked, exclusive_lock
from broker.site import Site, load_site
from broker.upstream_sync import (
    EXAMPLE_CONFIG,
    RealClock,
    SyncConfig,
    Syncer,
    SyncPaths,
    load_config,
    progress_stream,
    pseudonym_key,
    read_status,
)
from protocol.ids import event_id_time, format_instant


def _site_and_config(site_dir: Path, config_path: Path | None) -> tuple[Site, SyncPaths, SyncConfig]:
    """The site, its sync's files, and its sync.toml (or the file given); one clear line when either is wrong."""
    site = _load_site(site_dir)
    paths = SyncPaths(site.root)
    try:
        return site, paths, load_config(config_path or paths.config_file)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def _load_site(site_dir: Path) -> Site:
    try:
        return load_site(site_dir)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.group()
def sync() -> None:
    """The upstream sync: the hub's events, anonymised, to the companion services; erasures and phone events
    back to the hub."""


SITE_OPTION = click.option("--site", "site_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
                           help="The site directory made by `museum site init`.")
CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                             help="The sync's targets (default: <site>/sync.toml).")
DB_OPTION = click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False),
                         help="The hub database (default: <site>/hub/hub.sqlite).")


@sync.command("run", epilog="A sync.toml to start from:\n\n\b\n" + EXAMPLE_CONFIG)
@SITE_OPTION
@CONFIG_OPTION
@DB_OPTION
@click.option("--once", is_flag=True, help="Send everything that waits, apply the replies, and exit (status 1 if a "
                                          "target could not finish).")
@click.option("--max-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="With --once: give a target up after this many failures in a row (each retried after its "
                   "backoff).")
@click.option("--progress/--no-progress", default=None,
              help="Draw a progress line while a large backlog drains (default: when stdout is a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Also log at INFO level: erasures applied, packs sent, every "
                                                    "retry.")
def run_command(site_dir: Path, config_path: Path | None, db_path: Path | None, once: bool, max_failures: int,
                progress: bool | None, verbose: bool) -> None:
    """Sync the site with its targets until SIGTERM or Ctrl-C (or once, with --once)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    site, paths, config = _site_and_config(site_dir, config_path)
    try:
        paths.folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        raise click.ClickException(f"cannot make {paths.folder}: {error}") from None
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(paths.lock_file, wait=False))
        except AlreadyLocked:
            raise click.ClickException(f"a sync is already running for site {site.site_id!r} (it holds "
                                       f"{paths.lock_file}); one sync per site") from None
        try:
            key = pseudonym_key(paths.pseudonym_key)
        except (OSError, ValueError) as error:
            raise click.ClickException(str(error)) from None
        stop = threading.Event()
        if not once:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        database = db_path or site.hub_database
        try:
            syncer = Syncer(database, site.site_id, config, key, packs_dir=site.packs_dir,
                            status_file=paths.status_file, clock=RealClock(stop), progress=progress_stream(progress))
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        except (OSError, sqlite3.Error) as error:
            raise click.ClickException(f"cannot open the hub database {database}: {error}") from None
        with syncer:
            if once:
                result = syncer.run_once(max_failures=max_failures)
                for name, sent in result.sent.items():
                    click.echo(f"sync: {name}: {sent:,} events sent")
                if result.problems:
                    for name, problem in result.problems.items():
                        if not problem.startswith("sync to"):  # a stop was logged as it happened, once is enough
                            click.echo(f"sync: {name}: {problem}", err=True)
                    sys.exit(1)
                return
            click.echo(f"sync: site {site.site_id}, {len(config.targets)} target(s): "
                       f"{', '.join(t.name for t in config.targets)}", err=True)
            sys.exit(syncer.run(stop))


@sync.command("status")
@SITE_OPTION
@CONFIG_OPTION
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status_command(site_dir: Path, config_path: Path | None, db_path: Path | None, as_json: bool) -> None:
    """Per target: events waiting to be sent, the last success, the last error, and why it stopped if it did;
    how far the sync may read (its horizon: recent events wait until it passes them)."""
    site, paths, config = _site_and_config(site_dir, config_path)
    database = db_path or site.hub_database
    if not database.is_file():
        raise click.ClickException(f"no hub database at {database}: has `museum hub run` been started?")
    statuses = read_status(paths.status_file)
    report: dict[str, Any] = {"site_id": site.site_id, "targets": {}}
    try:
        conn = open_reader(database)
        try:
            for target in config.targets:
                state = sync_store.target_state(conn, target.name)
                status = statuses.get(target.name)
                report["targets"][target.name] = {
                    "url": target.url, "backlog": sync_store.backlog(conn, state.cursor),
                    "last_success": state.updated_at, **({} if status is None else {
                        "last_error": status.last_error, "last_error_at": status.last_error_at,
                        "stopped": status.stopped})}
            report["erased_visits"] = conn.execute("SELECT COUNT(*) FROM erased_visits").fetchone()[0]
            horizon = sync_store.horizon(conn)
            report["horizon"] = None if horizon is None else format_instant(event_id_time(horizon))
            report["horizon_slack_s"] = config.horizon_slack_s
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise click.ClickException(f"{database} cannot be read as a hub database with the sync's tables ({error}); "
                                   "check --db, or run `museum sync run` (or the hub) once to add them") from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for name, figures in report["targets"].items():
        click.echo(f"{name} ({figures['url']})")
        click.echo(f"  backlog:      {figures['backlog']:,} events")
        click.echo(f"  last success: {figures['last_success'] or 'never'}")
        if figures.get("last_error"):
            click.echo(f"  last error:   {figures['last_error']} ({figures['last_error_at']})")
        if figures.get("stopped"):
            click.echo("  STOPPED: the target waits for the fix above, then a restart of `museum sync run`")
    click.echo(f"Erased visits (tombstones kept): {report['erased_visits']}")
    click.echo(f"Horizon: events created up to {report['horizon'] or '(none yet: the sync has not read)'} are "
               f"readable; it trails the clock by {config.horizon_slack_s:g} s while `museum sync run` runs")


COMMANDS: list[click.Command] = [sync]

__all__ = ["COMMANDS", "sync"]
