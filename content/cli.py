"""`museum content …`: build content packs. A thin click shell over content.pack."""

from __future__ import annotations

from pathlib import Path

import click

from content.pack import build_pack
from content.source import ContentError


@click.group()
def content() -> None:
    """Content packs: the rooms, works, texts and media kiosks show."""


@content.command("build")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def build(src: Path, out: Path) -> None:
    """Validate the content folder SRC (museum.json and media/) and write its pack to OUT."""
    try:
        pack = build_pack(src, out)
    except ContentError as error:
        for line in error.errors:
            click.echo(f"{src}: {line}", err=True)
        raise SystemExit(1) from None
    except OSError as error:
        click.echo(f"{out}: cannot write the pack: {error.strerror or error}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{out}: pack {pack.pack_id} version {pack.pack_version}, {len(pack.files)} files, "
               f"{out.stat().st_size} bytes")


COMMANDS = [content]
