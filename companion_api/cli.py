"""`museum companion …`: run the companion service, enroll a site, purge expired records. A thin click shell over
`companion_api.app`, `companion_api.settings` and the store; every operator mistake is one line."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from companion_api.settings import Settings, load_settings
from protocol.fields import IDENTIFIER

DEFAULT_CONFIG = Path("companion.toml")
config_option = click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
                             show_default=True, help="The companion's configuration file (docs/companion.md).")


@click.group()
def companion() -> None:
    """The companion service: phone pages, take-home visits, the sites' sync."""


def _settings(path: Path) -> Settings:
    try:
        return load_settings(path)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _open(settings: Settings) -> Any:
    from companion_api.store import open_store

    try:
        store = open_store(settings.store_url)
        store.migrate()
    except Exception as error:
        raise click.ClickException(f"cannot open the store {_shown(settings.store_url)}: {_line(error)}; check "
                                   "`store` in the configuration and that the database is reachable") from None
    return store


@companion.command("run")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (each with its own rate-limit buckets).")
def run(config_path: Path, host: str, port: int, workers: int) -> None:
    """Serve the phone pages, the take-home pages and the sync API (plain HTTP: put TLS in front)."""
    import uvicorn

    from companion_api.access_log import configure_logging
    from companion_api.app import CONFIG_ENVIRONMENT, create_app

    settings = _settings(config_path)
    configure_logging()
    options: dict[str, Any] = {"host": host, "port": port, "log_config": None, "access_log": False,
                               "proxy_headers": False, "server_header": False, "lifespan": "on"}
    # Our access log replaces uvicorn's (tokens redacted, no client address); proxy headers are read by the app
    # itself, only when the configuration trusts the proxy.
    if workers == 1:
        _open(settings).close()  # a wrong store URL is one line here, not a traceback in the server
        uvicorn.run(create_app(settings), **options)
    else:
        _open(settings).close()
        os.environ[CONFIG_ENVIRONMENT] = str(config_path.resolve())
        uvicorn.run("companion_api.app:app_from_environment", factory=True, workers=workers, **options)


@companion.command("enroll-site")
@click.argument("site")
@config_option
def enroll_site(site: str, config_path: Path) -> None:
    """Make the site key of SITE (a new one replaces the old) and print it once."""
    if IDENTIFIER.match(site) is None:
        raise click.ClickException(f"{site!r} is not a site id (lowercase letters, digits and '-', at most 63); "
                                   "give the site_id of the site's configuration")
    settings = _settings(config_path)
    store = _open(settings)
    try:
        key = store.enroll_site(site)
    except Exception as error:
        raise click.ClickException(f"cannot enroll {site}: {_line(error)}") from None
    finally:
        store.close()
    # The key alone on stdout, so it can go straight into the file on the site server:
    #   museum companion enroll-site demo | ssh site 'umask 077; cat > /srv/museum/demo/sync/upstream.key'
    click.echo(key)
    click.echo(f"\nThat is the site key of {site}, shown once: the companion keeps only its hash. Install it on "
               "the site server as <site dir>/sync/<target>.key, mode 0600, owned by the user that runs "
               "`museum sync run`:\n\n"
               "    (umask 077 && cat > <site dir>/sync/<target>.key)    # paste the key, then Ctrl-D\n\n"
               "<target> is this companion's name in the site's sync configuration (for example `upstream`, or "
               "`local` for the companion on the site server). Enrolling the site again makes a new key, and this "
               "one stops working.", err=True)


@companion.command("purge")
@config_option
def purge(config_path: Path) -> None:
    """Delete the visits and analytics older than the retention (what the service does every hour)."""
    from companion_api.app import purge_once

    settings = _settings(config_path)
    store = _open(settings)
    try:
        result = purge_once(store, settings, datetime.now(UTC))
    except Exception as error:
        raise click.ClickException(f"purge failed: {_line(error)}") from None
    finally:
        store.close()
    counts = ", ".join(f"{name} {value}" for name, value in dataclasses.asdict(result).items())
    click.echo(f"purged (visits older than {settings.visit_days} days, analytics older than "
               f"{settings.analytics_days} days): {counts}")


def _line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _shown(url: str) -> str:
    """A store URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return url


COMMANDS = [companion]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(companion())
