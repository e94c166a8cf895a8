"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright (no browser download),
with axe-core (the copy the axe-playwright-python package ships) injected to audit WCAG 2.2 A/AA.

The flags keep Chromium off the network: this machine's closed network refuses its background connections."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "companion"


def axe_script() -> Path:
    import axe_playwright_python

    return Path(axe_playwright_python.__file__).parent / "axe.min.js"


def need_chromium() -> None:
    """Skip with the reason when Chromium is absent, except in CI, where `make test` installs it."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed (make test installs Debian's chromium package)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def phone_browser(tmp_path: Path) -> Iterator[Any]:
    """A Playwright browser context the size of a phone (390×844). CSP is bypassed only so that the test can
    inject axe-core; the pages' own scripts are checked against their CSP by `console_errors`."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(viewport=PHONE, device_scale_factor=1, bypass_csp=True,
                                          locale="en-GB", service_workers="block")
            yield context
            context.close()
        finally:
            browser.close()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 A/AA violations of the page as loaded: id, impact, and the offending nodes."""
    page.add_script_tag(path=str(axe_script()))
    result = page.evaluate("async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           WCAG_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["html"][:200] for n in v["nodes"][:5]]} for v in result["violations"]]
