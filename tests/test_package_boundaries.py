"""The package boundaries of docs/architecture.md, checked on the code: the contract imports nothing of ours, the
shared libraries only the contract, and no role imports another role (only orchestrators may: museum, demo,
bench, tests)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"protocol", "bus", "content", "qr", "broker", "kiosk", "hardware", "companion_api", "demo", "museum",
        "bench"}
ALLOWED = {
    "protocol": set(),
    "bus": {"protocol"},
    "content": {"protocol"},
    "qr": {"protocol"},
    "broker": {"protocol", "bus", "content"},
    "kiosk": {"protocol", "bus", "content", "qr"},
    "hardware": {"protocol", "bus", "qr"},
    "companion_api": {"protocol", "content", "bus"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each of our packages `package` imports, with the files that do."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in OURS and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_layer_may(package: str) -> None:
    forbidden = {name: files for name, files in imported_packages(package).items() if name not in ALLOWED[package]}
    assert forbidden == {}, f"{package} imports {sorted(forbidden)}: see docs/architecture.md#package-boundaries"
