"""The `museum` console script's entry point.

`museum kiosk …`, `museum gateway …` and `museum qr-reader …` load their own role's commands alone: a device runs
them for months, and gathering every role's commands (`museum.cli`) would cost each process about 15 MB and 0.1 s
at start on a Pi, for commands a device never runs. Everything else goes through `museum.cli`, which also explains
a missing extra.
"""

from __future__ import annotations

import importlib
import sys

DEVICE_COMMANDS = {"kiosk": ("kiosk.cli", "kiosk"), "gateway": ("hardware.cli", "gateway"),
                   "qr-reader": ("hardware.qr_cli", "qr_reader")}
"""The first word → (module, click group) of the commands a device runs on its own."""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in DEVICE_COMMANDS:
        module_name, group_name = DEVICE_COMMANDS[sys.argv[1]]
        try:
            group = getattr(importlib.import_module(module_name), group_name)
        except ModuleNotFoundError:
            pass  # the role's extra is not installed: museum.cli says so
        else:
            group(args=sys.argv[2:], prog_name=f"museum {sys.argv[1]}")
            return
    from museum.cli import main as every_command

    every_command()
