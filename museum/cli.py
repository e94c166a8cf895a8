"""`museum`: one command for every role. Each role package exports its click commands in `COMMANDS`; this
module only gathers them, so the logic stays in the libraries and the shell stays thin."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import click

ROLE_CLI_MODULES = ("broker.cli", "broker.hub_cli", "broker.sync_cli", "content.cli", "kiosk.cli", "hardware.cli",
                    "hardware.qr_cli", "companion_api.cli", "demo.cli", "protocol.cli")

OPTIONAL_MODULES = {
    "sqlite_utils": "hub",
    "cryptography": "hub",
    "kivy": "kiosk",
    "requests": "kiosk",
    "segno": "kiosk",
    "ffpyplayer": "kiosk",
    "bleak": "gateway",
    "zxingcpp": "qr",
    "pyzbar": "qr",
    "PIL": "qr",
    "fastapi": "api",
    "uvicorn": "api",
    "jinja2": "api",
    "babel": "api",
    "psycopg": "api",
    "python_multipart": "api",
    "orjson": "api",
}
"""Top-level module → the extra of pyproject.toml's [project.optional-dependencies] that installs it. Only these
may be missing: a role whose extra is not installed (a kiosk has no hub) has no commands on that machine."""

ROLE_DESCRIPTIONS = {
    "broker.cli": "site, device and broker commands",
    "broker.hub_cli": "hub commands",
    "broker.sync_cli": "sync commands",
    "content.cli": "content pack commands",
    "kiosk.cli": "kiosk commands",
    "hardware.cli": "BLE station commands",
    "hardware.qr_cli": "QR reader commands",
    "companion_api.cli": "companion service commands",
    "demo.cli": "demo and simulate commands",
    "protocol.cli": "docs commands",
}


@click.group()
@click.version_option(package_name="museum-platform")
def main() -> None:
    """Museum visitor-experience platform: site broker, edge hub, devices, demo."""


def register(group: click.Group, module_names: Iterable[str]) -> list[str]:
    """Add every role's commands to `group`; returns one note per role left out because an optional extra is
    not installed, which also goes in the group's help. Any other missing module is a bug and is raised."""
    notes = []
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            extra = OPTIONAL_MODULES.get((missing.name or "").split(".")[0])
            if extra is None:
                raise
            what = ROLE_DESCRIPTIONS.get(module_name, f"the commands of {module_name}")
            notes.append(f"{what} (pip install 'museum-platform[{extra}]', for {missing.name})")
            continue
        for command in module.COMMANDS:
            group.add_command(command)
    if notes:
        group.epilog = "Not installed here: " + "; ".join(notes) + "."
    return notes


register(main, ROLE_CLI_MODULES)
