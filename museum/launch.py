"""The `museum` console script's entry point.

`museum kiosk …` loads the kiosk's commands alone: a kiosk runs two processes for months (the supervisor and
the app), and gathering every role's commands (`museum.cli`) would cost each of them about 15 MB and 0.1 s at
start on a Pi, for commands a kiosk never runs. Everything else goes through `museum.cli`, which also explains a
missing extra.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "kiosk":
        try:
            from kiosk.cli import kiosk
        except ModuleNotFoundError:
            pass  # the kiosk extra is not installed: museum.cli says so
        else:
            kiosk(args=sys.argv[2:], prog_name="museum kiosk")
            return
    from museum.cli import main as every_command

    every_command()
