"""`museum docs …`: documentation generated from the contract."""

from __future__ import annotations

from pathlib import Path

import click

from protocol.reference import render_event_reference


@click.group()
def docs() -> None:
    """Documentation generated from the contract."""


@docs.command("events")
@click.option("--check", is_flag=True, help="Only compare: exit 1 when the file differs from the contract.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/events.md"),
              show_default=True, help="Where the event reference lives.")
def events(check: bool, output: Path) -> None:
    """Write the event reference (docs/events.md) from the contract."""
    # Bytes, not text mode: the page must match byte for byte whatever the platform's newline convention.
    page = render_event_reference().encode("utf-8")
    if check:
        try:
            current = output.read_bytes()
        except FileNotFoundError:
            raise click.ClickException(f"{output} does not exist: run `museum docs events`") from None
        if current != page:
            raise click.ClickException(f"{output} differs from the contract: run `museum docs events`")
        click.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(page)
    click.echo(f"wrote {output}")


COMMANDS = [docs]
