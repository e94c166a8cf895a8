"""`museum site …`, `museum device …`, `museum broker …`, `museum content publish|serve`: the site's broker and
pack server, from the command line."""

from __future__ import annotations

import signal
import ssl
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from broker.mosquitto import LOG_KEEP, LOG_MAX_BYTES, MosquittoError, MosquittoProcess, log_tail, running_pid
from broker.packs import PublishError, publish_pack
from broker.site import (
    DEFAULT_CONTENT_PORT,
    Site,
    certificate_warnings,
    enroll_device,
    init_site,
    load_site,
    refresh_acl,
    renew_server_certificate,
)
from content.cli import content
from protocol.events import DEVICE_KINDS

# Not `exists=True`: click would answer a wrong directory with a usage screen; load_site says, in one line, what
# is wrong with it and what to do.
SITE_DIR = click.Path(path_type=Path)


def _load(directory: Path) -> Site:
    try:
        return load_site(directory)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.group()
def site() -> None:
    """The site directory: broker configuration, TLS material and credentials."""


@site.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--site-id", required=True, help="The site's identifier, as in every topic (e.g. louvre-lens).")
@click.option("--tls-port", type=click.IntRange(1, 65535), default=8883, show_default=True,
              help="Port of the broker's TLS listener, the one devices use.")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address the TLS listener binds to.")
@click.option("--hostname", "hostnames", multiple=True,
              help="Extra name or address of the broker for its certificate; the first is what devices use.")
@click.option("--plain-loopback-port", type=click.IntRange(1, 65535), default=None,
              help="Also listen without TLS on 127.0.0.1 (demo and tests only).")
@click.option("--content-port", type=click.IntRange(1, 65535), default=DEFAULT_CONTENT_PORT, show_default=True,
              help="Port of `museum content serve`, the HTTPS pack server devices fetch content from.")
def init(directory: Path, site_id: str, tls_port: int, bind: str, hostnames: tuple[str, ...],
         plain_loopback_port: int | None, content_port: int) -> None:
    """Create a new site in DIRECTORY (which must not exist or be empty)."""
    try:
        created = init_site(directory, site_id, tls_port=tls_port, bind=bind,
                            plain_loopback_port=plain_loopback_port, hostnames=hostnames,
                            content_port=content_port)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Created site {created.site_id!r} in {created.root}")
    click.echo(f"  broker: TLS on {created.bind}:{created.tls_port}, devices will use {created.broker_host}")
    if created.plain_loopback_port is not None:
        click.echo(f"  plain loopback listener on 127.0.0.1:{created.plain_loopback_port} (demo/tests only)")
    click.echo(f"  site CA: {created.ca_file}")
    click.echo(f"  hub client configuration: {created.hub_config}")
    click.echo(f"Next: museum device enroll NAME --kind KIND --site {created.root}; "
               f"museum broker run --site {created.root}")


@site.command("renew-certificate")
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
def renew_certificate(site_dir: Path) -> None:
    """Issue the broker a new certificate from the site CA; devices keep trusting the same CA."""
    loaded = _load(site_dir)
    try:
        expiry = renew_server_certificate(loaded)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot renew the broker's certificate: {error}") from None
    click.echo(f"Renewed {loaded.server_cert}: valid until {expiry:%Y-%m-%d %H:%M} UTC, signed by the site CA "
               f"{loaded.ca_file}.")
    if running_pid(loaded) is not None:
        click.echo("The running broker has reloaded it: new connections get the new certificate.")
    else:
        click.echo("The broker is not running; it will use the new certificate when started.")
    for warning in certificate_warnings(loaded):
        click.echo(f"Warning: {warning}", err=True)


@click.group()
def device() -> None:
    """The devices of a site: kiosks, BLE gateways, QR readers."""


@device.command("enroll")
@click.argument("name")
@click.option("--kind", type=click.Choice(DEVICE_KINDS), required=True, help="What the device is.")
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
def enroll(name: str, kind: str, site_dir: Path) -> None:
    """Give device NAME its credentials and ACL, and write the configuration to copy onto it."""
    loaded = _load(site_dir)
    try:
        path = enroll_device(loaded, name, kind)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Enrolled {kind} {name!r} at site {loaded.site_id!r}.")
    click.echo(f"Its configuration, with its password (keep it 0600): {path}")
    if loaded.plain_loopback_port is not None:
        click.echo(f"This is a demo/test site: the configuration points at 127.0.0.1:{loaded.plain_loopback_port}, "
                   "for a device process on this machine.")
    else:
        click.echo("Copy it to the device, with the site CA its ca_file names, for example:")
        click.echo(f"  scp {path} {name}:/etc/museum/device.toml")
        click.echo(f"  scp {loaded.ca_file} {name}:/etc/museum/ca.crt   "
                   "# then set ca_file = \"ca.crt\" (relative to the configuration)")
    if running_pid(loaded) is not None:
        click.echo("The running broker has reloaded its passwords and ACL: the device can connect now.")
    else:
        click.echo("The broker is not running; the device can connect once it is started.")


@device.command("command")
@click.argument("name")
@click.argument("command_name", metavar="COMMAND")
@click.argument("arguments", metavar="[KEY=VALUE]...", nargs=-1)
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.5, 3600), default=30.0, show_default=True,
              help="Seconds to wait for the device's answer (and, for screenshot, its picture).")
def command(name: str, command_name: str, arguments: tuple[str, ...], site_dir: Path, timeout_s: float) -> None:
    """Send device NAME the command COMMAND (reload-content, restart, set-language language=en,
    set-idle-timeout seconds=120, screenshot, ping …) and print its answer. Values are read as true/false,
    numbers, or text. Exit status 1 if it failed or did not answer in time."""
    # Here, not at the top: it reads the hub's database (sqlite-utils, the hub extra), which the other site,
    # device and broker commands do without.
    from broker.commands import CommandError, parse_args, send_command

    loaded = _load(site_dir)
    try:
        args = parse_args(arguments)
        reply = send_command(loaded, name, command_name, args, timeout_s=timeout_s)
    except (CommandError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'ok' if reply.ok else 'failed'}: {reply.detail}")
    if reply.screenshot is not None:
        click.echo(f"screenshot: {reply.screenshot}")
    if not reply.ok:
        raise SystemExit(1)


@click.group()
def broker() -> None:
    """The site's Mosquitto broker."""


@broker.command("run")
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
@click.option("--advertise/--no-advertise", default=True, show_default=True,
              help="Announce the broker over mDNS (_mqtt._tcp) so devices find it.")
@click.option("--interface", "interfaces", multiple=True, help="Address to advertise on (default: all).")
def run(site_dir: Path, advertise: bool, interfaces: tuple[str, ...]) -> None:
    """Run Mosquitto in the foreground until SIGTERM or Ctrl-C, then stop it cleanly; rotate its log."""
    loaded = _load(site_dir)
    try:
        if refresh_acl(loaded):  # a site made by an older version: its ACL lacks this version's rules
            click.echo(f"Updated {loaded.acl_file} to this version's access rules.")
    except OSError as error:
        raise click.ClickException(f"cannot update {loaded.acl_file}: {error}") from None
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # Installed before Mosquitto starts, so a stop requested during start-up still ends in a clean stop.
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        process = MosquittoProcess.start(loaded)
    except (OSError, MosquittoError) as error:
        _restore(previous)
        raise click.ClickException(str(error)) from None
    advertisement = None
    rotation_failed = False
    try:
        process.wait_ready(15.0)
        # A service manager's reload (SIGHUP to us) reaches Mosquitto, which re-reads passwd and ACL.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda _n, _f: process.reload())
        click.echo(f"Mosquitto for site {loaded.site_id!r} is running (pid {process.pid}), TLS on "
                   f"{loaded.bind}:{loaded.tls_port}; log: {loaded.log_file}")
        if advertise:
            from bus.discovery import DiscoveryError, advertise_broker  # keeps zeroconf out of other commands

            try:
                advertisement = advertise_broker(loaded.site_id, loaded.tls_port, tls=True,
                                                 interfaces=list(interfaces) or None)
            except DiscoveryError as error:
                raise click.ClickException(f"cannot advertise the broker: {error}") from None
            click.echo(f"Advertised as _mqtt._tcp for site {loaded.site_id!r}.")
        while not stop.wait(0.5):
            if not process.alive:
                raise click.ClickException(f"Mosquitto exited unexpectedly; the end of {loaded.log_file}:\n"
                                           f"{log_tail(loaded)}")
            try:
                process.rotate_log_if_needed(LOG_MAX_BYTES, LOG_KEEP)
                rotation_failed = False
            except OSError as error:
                # A full disk must not take the broker down with it: said once, then tried again every turn.
                if not rotation_failed:
                    click.echo(f"cannot rotate {loaded.log_file}: {error}", err=True)
                rotation_failed = True
    except MosquittoError as error:
        raise click.ClickException(str(error)) from None
    finally:
        if advertisement is not None:
            advertisement.close()
        process.stop()
        _restore(previous)
    click.echo("Mosquitto stopped.")


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


# Publishing and serving belong to the site server, so they live here, in the `museum content` group that
# content.cli (the building side, which every machine has) defines.
@content.command("publish")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.5, 300), default=15.0, show_default=True,
              help="Seconds to wait for the broker to confirm the announcement.")
def publish(pack: Path, site_dir: Path, timeout_s: float) -> None:
    """Verify PACK, store it in the site's packs folder and announce it (retained) to every device."""
    loaded = _load(site_dir)
    try:
        published = publish_pack(loaded, pack, timeout_s=timeout_s)
    except PublishError as error:
        raise click.ClickException(str(error)) from None
    announcement = published.announcement
    click.echo(f"Published pack {announcement.pack_id} version {announcement.pack_version} "
               f"({announcement.size} bytes, sha256 {announcement.sha256[:12]}…) as {published.path}")
    click.echo(f"  announced on the broker; devices fetch {announcement.url}")
    for old in published.removed:
        click.echo(f"  removed the older pack {old.name}")


@content.command("serve")
@click.option("--site", "site_dir", type=SITE_DIR, required=True, help="The site directory.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: content_port of site.toml, 8443).")
@click.option("--bind", default=None, help="Address to listen on (default: the broker's, bind of site.toml).")
def serve(site_dir: Path, port: int | None, bind: str | None) -> None:
    """Serve the site's published packs over HTTPS until SIGTERM or Ctrl-C."""
    from broker.pack_server import PackServer

    loaded = _load(site_dir)
    host, port = bind or loaded.bind, port or loaded.content_port
    try:
        loaded.packs_dir.mkdir(parents=True, exist_ok=True)
        server = PackServer(loaded.packs_dir, loaded.server_cert, loaded.server_key, host, port)
    except (OSError, ssl.SSLError) as error:
        raise click.ClickException(f"cannot serve packs on {host}:{port} with {loaded.server_cert}: "
                                   f"{getattr(error, 'strerror', None) or error}; free the port or pick another "
                                   "with --port (and content_port in site.toml)") from None
    thread = threading.Thread(target=server.serve_forever, name="pack-server", daemon=True)
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda _n, _f: stop.set()) for number in (signal.SIGTERM,
                                                                                      signal.SIGINT)}
    thread.start()
    click.echo(f"Serving the packs of {loaded.packs_dir} on https://{host}:{server.port}/packs/ "
               f"(devices use https://{loaded.broker_host}:{loaded.content_port}/packs/)")
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        _restore(previous)
    click.echo("Pack server stopped.")


COMMANDS: list[click.Command] = [site, device, broker]
