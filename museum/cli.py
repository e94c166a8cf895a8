"""`museum`: one command for every role. Each role package exports its click commands in `COMMANDS`; this
module only gathers them, so the logic stays in the libraries and the shell stays thin."""

from __future__ import annotations

import importlib

import click

ROLE_CLI_MODULES = ("broker.cli", "broker.hub_cli", "demo.cli", "protocol.cli")


@click.group()
@click.version_option(package_name="museum-platform")
def main() -> None:
    """Museum visitor-experience platform: site broker, edge hub, devices, demo."""


def _register() -> None:
    for module_name in ROLE_CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            # A role whose extra is not installed on this machine (a kiosk has no hub) simply has no commands.
            if missing.name and module_name.startswith(missing.name.split(".")[0]):
                continue
            if missing.name in ("sqlite_utils", "cryptography", "kivy", "bleak", "fastapi"):
                continue
            raise
        for command in module.COMMANDS:
            main.add_command(command)


_register()
