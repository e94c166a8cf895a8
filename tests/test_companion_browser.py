"""The companion's pages in a real headless Chromium at a phone's size (390×844), in French and in English, as a
visitor goes through them: the page behind a work's QR code, "Save to my visit", the take-home page, "Forget my
visit" and its confirmation. Each page is audited with axe-core for WCAG 2.2 A/AA (no violation allowed), makes
no request to another origin, logs no console or CSP error, and is photographed.

Screenshots go to a temporary folder, or to $COMPANION_SCREENSHOTS_DIR when set (how docs/screenshots/companion
is made)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import axe_violations, phone_browser
from companion_server import CompanionServer

from companion_api.settings import Settings
from companion_api.store import open_store
from content.pack import file_sha256, verify_pack

SITE = "demo"
WORK = "monet-impression-sunrise"  # image, audio description, LSF video with captions


@pytest.fixture(scope="module")
def companion(tmp_path_factory: pytest.TempPathFactory, sample_pack_file: Path) -> Iterator[CompanionServer]:
    tmp = tmp_path_factory.mktemp("companion-browser")
    store = open_store(str(tmp / "companion.sqlite"))
    store.migrate()
    store.enroll_site(SITE)
    pack = verify_pack(sample_pack_file)
    store.put_pack(SITE, file_sha256(sample_pack_file), pack.pack_id, pack.pack_version, sample_pack_file)
    settings = Settings(store_url=str(tmp / "companion.sqlite"), data_dir=tmp / "data",
                        base_url="https://visit.example.org")
    server = CompanionServer(settings, store).start()
    try:
        yield server
    finally:
        server.stop()
        store.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("COMPANION_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("companion-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PageWatch:
    """Every request a page makes and every console error it logs (a CSP refusal is one)."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


def check_page(page: Any, watch: PageWatch, origin: str, shot: Path) -> None:
    assert axe_violations(page) == [], f"WCAG 2.2 AA violations on {page.url}"
    assert [url for url in watch.requests if not url.startswith(origin)] == []
    assert watch.errors == []
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 5_000  # a rendered page, not a blank one


@pytest.mark.parametrize("language", ["fr", "en"])
def test_a_visit_from_a_work_s_qr_code_to_forgetting_it(companion: CompanionServer, shots: Path, tmp_path: Path,
                                                          language: str) -> None:
    title = {"fr": "Impression, soleil levant", "en": "Impression, Sunrise"}[language]
    with phone_browser(tmp_path) as context:
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(f"{companion.url}/a/{SITE}/{WORK}?lang={language}")
        assert page.locator("html").get_attribute("lang") == language
        assert title in page.locator("h1").inner_text()
        check_page(page, watch, companion.url, shots / f"artwork-{language}.png")

        page.click(f"form[action='/a/{SITE}/{WORK}/save'] button[type=submit]")
        page.wait_for_load_state()
        page.click("a[href^='/v/']")
        page.wait_for_url("**/v/*")
        assert title in page.locator("main").inner_text()
        check_page(page, watch, companion.url, shots / f"visit-{language}.png")

        page.click("a[href$='/forget']")
        page.wait_for_url("**/forget")
        check_page(page, watch, companion.url, shots / f"forget-{language}.png")
        page.click("form[action$='/forget'] button[type=submit]")
        page.wait_for_url("**/v/forgotten*")
        check_page(page, watch, companion.url, shots / f"forgotten-{language}.png")
        assert not [c for c in context.cookies() if c["name"] == "museum_visit" and c["value"]]
