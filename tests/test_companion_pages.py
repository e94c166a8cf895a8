"""The phone pages of the companion, on the real app under uvicorn with a real SQLite store holding the sample
museum's pack: the artwork page behind a work's QR code, "Save to my visit", the take-home page, its exports,
"Forget my visit", joining a kiosk's visit, languages, and what must never happen (a third-party URL, a token in a
log line, a page over 100 KB)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from browser import CHROMIUM, FLAGS, PHONE, need_chromium
from companion_server import CompanionServer

from companion_api import phone_routes, visit_routes
from companion_api.i18n import LANGUAGES, Pages, accepted_languages, load_translations, negotiate
from companion_api.model import SyncBatch, TakeHomeRow
from companion_api.phone_routes import VISIT_COOKIE, vtt_cues
from companion_api.settings import Settings
from companion_api.store import Store, open_store
from content.pack import file_sha256, verify_pack
from protocol.ids import new_visit_id, visit_id_for

T = TypeVar("T")
SITE = "demo"
WORK = "monet-impression-sunrise"  # image, audio in both languages, LSF video with captions
OTHER_WORK = "vermeer-milkmaid"
PLAIN_WORK = "klimt-the-kiss"  # an image only
PAGE_LIMIT = 100 * 1024
VISIT_DAYS = 395
ORIGIN_URL = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.IGNORECASE)
"""An absolute or protocol-relative URL (a host with a dot): the pages and scripts must have none."""


# --- the server ----------------------------------------------------------------------------------------------

def _settings(tmp: Path, **overrides: Any) -> Settings:
    # A burst large enough for every /v/ request of this module: the limit itself is security's test.
    return Settings(store_url=str(tmp / "companion.sqlite"), data_dir=tmp / "data", base_url="https://visit.example.org",
                    token_burst=10_000, **overrides)


def _store_with_pack(tmp: Path, pack_file: Path) -> Store:
    store = open_store(str(tmp / "companion.sqlite"))
    store.migrate()
    store.enroll_site(SITE)
    pack = verify_pack(pack_file)
    store.put_pack(SITE, file_sha256(pack_file), pack.pack_id, pack.pack_version, pack_file)
    return store


@pytest.fixture(scope="module")
def companion(tmp_path_factory: pytest.TempPathFactory, sample_pack_file: Path) -> Iterator[CompanionServer]:
    tmp = tmp_path_factory.mktemp("companion-pages")
    store = _store_with_pack(tmp, sample_pack_file)
    server = CompanionServer(_settings(tmp), store).start()
    try:
        yield server
    finally:
        server.stop()
        close = getattr(store, "close", None)
        if callable(close):
            close()


@pytest.fixture(scope="module")
def store(companion: CompanionServer) -> Store:
    return companion.app.state.store  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def views_written(request: pytest.FixtureRequest) -> Iterator[None]:
    """Page views are written in groups (`phone_events.ViewQueue`): what a test reads back from the store must
    include the views of the pages it opened, so reading flushes them first."""
    global _flush_views
    if "companion" in request.fixturenames:
        _flush_views = request.getfixturevalue("companion").app.state.views.flush
    yield
    _flush_views = None


_flush_views: Callable[[], None] | None = None


def phone(server: CompanionServer, language: str = "en") -> httpx.Client:
    """A phone: its own cookie jar, a browser's Accept-Language."""
    return httpx.Client(base_url=server.url, headers={"Accept-Language": language}, timeout=10.0)


def events_of(store: Store, **where: Any) -> list[dict[str, Any]]:
    """The phone events waiting to go down to the site, as wire objects, those matching `where`."""
    if _flush_views is not None:
        _flush_views()
    down = store.pending_down(SITE, events_after=0, erasures_after=0, limit=100_000)
    found = [json.loads(event.event) for event in down.events]
    return [event for event in found if all(event.get(key) == value for key, value in where.items())]


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no form token"
    return match.group(1)


def save(client: httpx.Client, artwork: str = WORK) -> httpx.Response:
    page = client.get(f"/a/{SITE}/{artwork}")
    assert page.status_code == 200
    return client.post(f"/a/{SITE}/{artwork}/save", data={"csrf_token": csrf_of(page.text)})


def new_visit(server: CompanionServer, *works: str) -> tuple[httpx.Client, str]:
    """A phone that saved `works`: the client and its visit token."""
    client = phone(server)
    for work in works:
        assert save(client, work).status_code == 303
    token = client.cookies.get(VISIT_COOKIE)
    assert token
    return client, token


class Outline(HTMLParser):
    """What the accessibility checks need of a page: tags, attributes, headings, landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h1 = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.h1 += tag == "h1"


def outline(page: str) -> Outline:
    parser = Outline()
    parser.feed(page)
    return parser


def assert_sound_page(page: str, language: str) -> None:
    """The structure every page shares: its language, one h1, landmarks, a skip link, no inline script or style,
    no URL of another origin, under 100 KB."""
    assert len(page.encode()) < PAGE_LIMIT
    parsed = outline(page)
    html_tag = next(attrs for tag, attrs in parsed.tags if tag == "html")
    assert html_tag.get("lang") == language
    assert parsed.h1 == 1
    names = [tag for tag, _ in parsed.tags]
    for landmark in ("header", "main", "footer", "nav"):
        assert landmark in names
    assert any(tag == "a" and attrs.get("href") == "#main" for tag, attrs in parsed.tags)
    assert any(tag == "main" and attrs.get("id") == "main" for tag, attrs in parsed.tags)
    for tag, attrs in parsed.tags:
        assert "style" not in attrs, f"a style attribute on <{tag}> (CSP style-src 'self')"
        assert not any(name.startswith("on") for name in attrs), f"an inline handler on <{tag}>"
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/"), "an inline or foreign script"
        if tag == "img":
            assert "alt" in attrs
    assert "<style" not in page
    assert ORIGIN_URL.findall(page) == [], "a URL of another origin"


# --- the artwork page ----------------------------------------------------------------------------------------

def test_artwork_page_shows_the_work_and_counts_the_view(companion: CompanionServer, store: Store) -> None:
    before = len(events_of(store, type="artwork.viewed", artwork_id=WORK, visit_id=None))
    with phone(companion) as client:
        response = client.get(f"/a/{SITE}/{WORK}")
    assert response.status_code == 200
    page = response.text
    assert_sound_page(page, "en")
    assert "<h1>Impression, Sunrise</h1>" in page
    assert "Claude Monet, 1872" in page
    image = next(attrs for tag, attrs in outline(page).tags if tag == "img")
    assert image["src"].startswith(f"/m/{SITE}/") and image["alt"]
    assert image.get("width") and image.get("height")
    assert re.search(r'<audio controls[^>]*>\s*<source src="/m/demo/[0-9a-f]{64}/media/monet-impression-sunrise'
                     r'\.en\.opus"', page)
    assert '<track kind="captions"' in page and 'srclang="fr"' in page
    assert "Impression, soleil levant. Le port du Havre" in page  # the transcript, from the captions' cues
    assert f'action="/a/{SITE}/{WORK}/save"' in page and 'name="csrf_token"' in page
    assert "museum_visit" in page and "13 months" in page  # the cookie, explained where the button is
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert VISIT_COOKIE not in response.headers.get("set-cookie", "")  # no visit before the visitor asks
    views = events_of(store, type="artwork.viewed", artwork_id=WORK, visit_id=None)
    assert len(views) == before + 1
    assert views[-1]["source"] == "qr" and views[-1]["language"] == "en" and views[-1]["device_id"] == "companion"


def test_artwork_page_in_french_and_without_optional_media(companion: CompanionServer) -> None:
    with phone(companion, "fr-FR,fr;q=0.9") as client:
        page = client.get(f"/a/{SITE}/{PLAIN_WORK}").text
    assert_sound_page(page, "fr")
    assert "Ajouter à ma visite" in page and "À propos du cookie" in page
    assert "<audio" not in page and "<video" not in page


def test_unknown_site_or_work_is_the_404_page(companion: CompanionServer) -> None:
    with phone(companion) as client:
        for path in (f"/a/{SITE}/no-such-work", f"/a/nowhere/{WORK}", f"/a/{SITE}/NOT_AN_ID",
                     f"/m/{SITE}/{'0' * 64}/media/x.png"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert_sound_page(response.text, "en")
            assert "Page not found" in response.text


def test_media_are_served_immutable_from_the_pack(companion: CompanionServer) -> None:
    with phone(companion) as client:
        page = client.get(f"/a/{SITE}/{WORK}").text
        sources = re.findall(r'(?:src)="(/m/[^"]+)"', page)
        assert {source.rsplit(".", 1)[-1] for source in sources} == {"png", "opus", "webm", "vtt"}
        for source in sources:
            response = client.get(source)
            assert response.status_code == 200, source
            assert "immutable" in response.headers["cache-control"]
        image = client.get(sources[0])
        assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
        ranged = client.get(sources[0], headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and ranged.content == b"\x89PNG\r\n\x1a\n"
        sha = sources[0].split("/")[3]
        for bad in (f"/m/{SITE}/{sha}/media/../museum.json", f"/m/{SITE}/{sha}/..%2Fmuseum.json",
                    f"/m/{SITE}/{sha}/museum.json", f"/m/{SITE}/not-a-sha/media/x.png"):
            assert client.get(bad).status_code == 404, bad


# --- saving ----------------------------------------------------------------------------------------------------

def test_save_needs_the_form_token(companion: CompanionServer, store: Store) -> None:
    before = len(events_of(store, type="artwork.collected"))
    with phone(companion) as client:
        client.get(f"/a/{SITE}/{WORK}")
        for data in ({}, {"csrf_token": "forged-" + "x" * 36}):
            refused = client.post(f"/a/{SITE}/{WORK}/save", data=data)
            assert refused.status_code == 403
            assert VISIT_COOKIE not in refused.headers.get("set-cookie", "")
            assert_sound_page(refused.text, "en")
        assert VISIT_COOKIE not in client.cookies
    with phone(companion) as other:  # a page of another browser: its token is not this one's cookie
        token = csrf_of(other.get(f"/a/{SITE}/{WORK}").text)
    with phone(companion) as client:
        client.get(f"/a/{SITE}/{WORK}")
        assert client.post(f"/a/{SITE}/{WORK}/save", data={"csrf_token": token}).status_code == 403
    assert len(events_of(store, type="artwork.collected")) == before


def test_save_sets_the_visit_cookie_and_records_the_work(companion: CompanionServer, store: Store) -> None:
    with phone(companion) as client:
        response = save(client)
        assert response.status_code == 303
        assert response.headers["location"] == f"/a/{SITE}/{WORK}?saved=1"
        cookie = next(line for line in response.headers.get_list("set-cookie") if line.startswith(VISIT_COOKIE))
        attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
        assert attributes["max-age"] == f"Max-Age={VISIT_DAYS * 86400}"
        assert attributes["path"] == "Path=/"
        assert attributes["samesite"].lower() == "samesite=lax"
        assert "httponly" in attributes and "secure" not in attributes  # plain HTTP here; see the HTTPS test
        token = client.cookies[VISIT_COOKIE]
        visit_id = visit_id_for(token)
        shown = client.get(response.headers["location"])
        assert "Saved to your visit." in shown.text and f'href="/v/{token}"' in shown.text
        assert_sound_page(shown.text, "en")
        collected = events_of(store, type="artwork.collected", visit_id=visit_id)
        assert [(e["artwork_id"], e["source"]) for e in collected] == [(WORK, "companion")]
        linked = events_of(store, type="visit.linked", visit_id=visit_id)
        assert [(e["channel"], e["artwork_id"]) for e in linked] == [("artwork_qr", WORK)]
        assert events_of(store, type="artwork.viewed", visit_id=visit_id) == []  # the page after saving
        # A second work goes to the same visit, and a page opened with the cookie is an "opened" work.
        assert save(client, OTHER_WORK).status_code == 303
        assert client.cookies[VISIT_COOKIE] == token
        views = events_of(store, type="artwork.viewed", visit_id=visit_id)
        assert [e["artwork_id"] for e in views] == [OTHER_WORK]
        page = client.get(f"/v/{token}")
    assert page.status_code == 200
    assert "Works you saved" in page.text and "Impression, Sunrise" in page.text and "The Milkmaid" in page.text
    assert token not in json.dumps(events_of(store))  # events carry the derivation only


def test_cookies_are_secure_over_https(tmp_path: Path, sample_pack_file: Path) -> None:
    store = _store_with_pack(tmp_path, sample_pack_file)
    try:
        # `https = true` (behind a TLS proxy): the client speaks plain HTTP to it, so it must be handed the Secure
        # cookies by hand, as a browser on HTTPS would send them.
        with CompanionServer(_settings(tmp_path, https=True), store) as server, phone(server) as client:
            page = client.get(f"/a/{SITE}/{WORK}")
            assert "strict-transport-security" in page.headers
            csrf_cookie = page.headers["set-cookie"]
            assert "Secure" in csrf_cookie
            response = client.post(f"/a/{SITE}/{WORK}/save", data={"csrf_token": csrf_of(page.text)},
                                   headers={"Cookie": csrf_cookie.split(";")[0]})
            assert response.status_code == 303
            cookie = next(line for line in response.headers.get_list("set-cookie") if line.startswith(VISIT_COOKIE))
            assert "Secure" in cookie and "HttpOnly" in cookie
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()


# --- the take-home page ----------------------------------------------------------------------------------------

def test_visit_page_lists_the_works_with_retention_and_links(companion: CompanionServer) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        client.get(f"/a/{SITE}/{PLAIN_WORK}")  # opened, not saved
        response = client.get(f"/v/{token}")
    assert response.status_code == 200
    page = response.text
    assert_sound_page(page, "en")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex"
    assert response.headers["referrer-policy"] == "no-referrer"
    saved, opened = page.index("Works you saved"), page.index("Works you opened")
    assert saved < page.index("Impression, Sunrise") < opened < page.index("The Kiss")
    assert page.count('<img src="/m/demo/') >= 2  # thumbnails
    assert "kept 13 months after your visit" in page
    for link in (f"/v/{token}/pdf", f"/v/{token}/export.json", f"/v/{token}/forget"):
        assert f'href="{link}"' in page
    assert "Keep exploring" in page
    assert "Add this visit" not in page and "Keep saving works on this phone" not in page  # it is the phone's own


def test_visit_page_in_french(companion: CompanionServer) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        page = client.get(f"/v/{token}", headers={"Accept-Language": "fr"}).text
    assert_sound_page(page, "fr")
    assert "Les œuvres que vous avez gardées" in page and "Impression, soleil levant" in page
    assert "conservée 13 mois" in page and "Oublier ma visite" in page


def test_json_export_holds_the_visit(companion: CompanionServer) -> None:
    client, token = new_visit(companion, WORK, OTHER_WORK)
    with closing(client):
        response = client.get(f"/v/{token}/export.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert document["visit_ids"] == [visit_id_for(token)]
    assert {(item["artwork_id"], item["kind"]) for item in document["items"]} >= {(WORK, "collected"),
                                                                                  (OTHER_WORK, "collected")}
    monet = next(item for item in document["items"] if item["artwork_id"] == WORK)
    assert monet["title"] == "Impression, Sunrise" and monet["artist"] == "Claude Monet"
    assert token not in response.text


def test_pdf_download(companion: CompanionServer) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        response = client.get(f"/v/{token}/pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")


# --- forgetting --------------------------------------------------------------------------------------------------

def test_forget_erases_the_visit_and_then_it_is_like_an_unknown_one(companion: CompanionServer,
                                                                   store: Store) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        confirm = client.get(f"/v/{token}/forget")
        assert confirm.status_code == 200
        assert_sound_page(confirm.text, "en")
        assert f'action="/v/{token}/forget"' in confirm.text
        assert client.post(f"/v/{token}/forget", data={}).status_code == 403  # no form token: nothing erased
        assert client.get(f"/v/{token}").status_code == 200
        erased = client.post(f"/v/{token}/forget", data={"csrf_token": csrf_of(confirm.text)})
        assert erased.status_code == 303 and erased.headers["location"] == "/v/forgotten"
        assert '"cache"' in erased.headers["clear-site-data"]
        assert VISIT_COOKIE not in client.cookies  # the phone forgets it too
        done = client.get(erased.headers["location"])
        assert done.status_code == 200
        assert "Your visit has been forgotten" in done.text
        assert_sound_page(done.text, "en")
        with phone(companion) as french:
            assert "Votre visite a été oubliée" in french.get("/v/forgotten?lang=fr").text
        assert store.is_erased(visit_id_for(token))
        forgotten = client.get(f"/v/{token}")
    with phone(companion) as stranger:
        unknown = stranger.get(f"/v/{new_visit_id()}")
        malformed = stranger.get("/v/short")
        forgotten_again = stranger.get(f"/v/{token}")
        others = [stranger.get(f"/v/{token}/{suffix}") for suffix in ("pdf", "export.json", "forget")]
        posted = stranger.post(f"/v/{new_visit_id()}/join", data={"csrf_token": "x"})
    assert forgotten.status_code == unknown.status_code == malformed.status_code == 404
    assert forgotten.text == unknown.text == malformed.text == forgotten_again.text
    assert {response.status_code for response in others} == {404}
    assert {response.text for response in others} == {unknown.text}
    assert posted.status_code == 403  # the form token is checked before anything is looked up
    assert dict(forgotten_again.headers).keys() == dict(unknown.headers).keys()


def test_a_phone_holding_a_forgotten_visit_starts_afresh(companion: CompanionServer, store: Store) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        store.forget(visit_id_for(token))  # forgotten elsewhere (on another phone, or on the site): the cookie stays
        anonymous = len(events_of(store, type="artwork.viewed", artwork_id=PLAIN_WORK, visit_id=None))
        assert client.get(f"/a/{SITE}/{PLAIN_WORK}").status_code == 200
        # The view still counts, without the forgotten visit (which the store refuses to hold again).
        assert len(events_of(store, type="artwork.viewed", artwork_id=PLAIN_WORK, visit_id=None)) == anonymous + 1
        assert save(client, PLAIN_WORK).status_code == 303
        fresh = client.cookies[VISIT_COOKIE]
        assert fresh != token
        page = client.get(f"/v/{fresh}").text
        assert "The Kiss" in page and "Impression, Sunrise" not in page
    with phone(companion) as other:
        gone = other.get(f"/v/{token}", headers={"Cookie": f"{VISIT_COOKIE}={token}"})
        assert gone.status_code == 404
        # The phone's own visit is gone: its cookie goes too.
        assert any(line.startswith(f'{VISIT_COOKIE}=""') and "Max-Age=0" in line
                   for line in gone.headers.get_list("set-cookie"))


def test_each_phone_gets_its_own_form_token_and_visit_link(companion: CompanionServer) -> None:
    first, first_token = new_visit(companion, WORK)
    second, second_token = new_visit(companion, WORK)
    with closing(first), closing(second), phone(companion) as third:
        pages = [client.get(f"/a/{SITE}/{OTHER_WORK}").text for client in (first, second, third)]
        assert f'href="/v/{first_token}"' in pages[0] and second_token not in pages[0]
        assert f'href="/v/{second_token}"' in pages[1] and first_token not in pages[1]
        assert "/v/" not in pages[2]
        tokens = [csrf_of(page) for page in pages]
        assert len(set(tokens)) == 3
        assert [client.cookies["museum_csrf"] for client in (first, second, third)] == tokens
        assert not any("\x00" in page for page in pages)


# --- joining a kiosk's visit -------------------------------------------------------------------------------------

def kiosk_visit(store: Store, day: str = "2026-11-25") -> str:
    """A visit begun at a kiosk, as the site's sync brings it: a work collected there and one lingered at (a
    beacon's dwell); its token, as the kiosk's "My visit" QR code holds it."""
    token = new_visit_id()
    visit_id = visit_id_for(token)
    store.ingest(SITE, SyncBatch(SITE, take_home=(TakeHomeRow(visit_id, OTHER_WORK, "collected", SITE, day),
                                                  TakeHomeRow(visit_id, PLAIN_WORK, "lingered", SITE, day, 150.0))))
    return token


def test_join_a_kiosk_visit_to_the_phone_s(companion: CompanionServer, store: Store) -> None:
    kiosk_token = kiosk_visit(store)
    client, phone_token = new_visit(companion, WORK)
    with closing(client):
        page = client.get(f"/v/{kiosk_token}").text
        assert "Your visit on November 25, 2026." in page
        assert page.index("Works you saved") < page.index("The Milkmaid") < page.index("Works you stopped at")
        assert "You stayed 2 min 30 s." in page
        assert "Add this visit to my phone's visit" in page
        assert "Impression, Sunrise" not in page
        joined = client.post(f"/v/{kiosk_token}/join", data={"csrf_token": csrf_of(page)})
        assert joined.status_code == 303
        assert client.cookies[VISIT_COOKIE] == kiosk_token
        both = client.get(joined.headers["location"]).text
        assert "Impression, Sunrise" in both and "The Milkmaid" in both and "The Kiss" in both
        assert "This phone now saves works to this visit." in both
        assert "Your visit from November 25, 2026 to" in both
        earlier = client.get(f"/v/{phone_token}").text
        assert "Impression, Sunrise" in earlier and "The Milkmaid" in earlier
        assert "Add this visit" not in earlier  # already one visit
        assert save(client, "cezanne-mont-sainte-victoire").status_code == 303  # now saved to the kiosk's visit
        after = client.get(f"/v/{kiosk_token}").text
        assert after.index("Works you saved") < after.index("Montagne Sainte-Victoire") < after.index("stopped at")
    kiosk_visit_id, phone_visit = visit_id_for(kiosk_token), visit_id_for(phone_token)
    joins = events_of(store, type="visit.joined", visit_id=kiosk_visit_id)
    assert [event["other_visit_id"] for event in joins] == [phone_visit]
    assert [e["channel"] for e in events_of(store, type="visit.linked", visit_id=kiosk_visit_id)] == \
        ["kiosk_qr", "artwork_qr"]


def test_keep_a_visit_on_a_phone_without_one(companion: CompanionServer, store: Store) -> None:
    token = kiosk_visit(store)
    with phone(companion) as client:
        page = client.get(f"/v/{token}").text
        assert "Keep saving works on this phone" in page
        response = client.post(f"/v/{token}/join", data={"csrf_token": csrf_of(page)})
        assert response.status_code == 303 and client.cookies[VISIT_COOKIE] == token
        assert save(client, WORK).status_code == 303
        assert "Impression, Sunrise" in client.get(f"/v/{token}").text
    assert events_of(store, type="visit.joined", visit_id=visit_id_for(token)) == []
    assert [e["channel"] for e in events_of(store, type="visit.linked", visit_id=visit_id_for(token))] == \
        ["kiosk_qr", "artwork_qr"]


# --- languages ---------------------------------------------------------------------------------------------------

def test_language_negotiation_order(companion: CompanionServer) -> None:
    path = f"/a/{SITE}/{PLAIN_WORK}"

    def language_of(client: httpx.Client, url: str, **headers: str) -> str:
        match = re.search(r'<html lang="([a-z]+)"', client.get(url, headers=headers).text)
        assert match
        return match.group(1)

    with phone(companion, "de-DE, en;q=0.8, fr;q=0.9") as client:
        assert language_of(client, path) == "fr"  # the best q-value the museum has
        assert language_of(client, path, **{"Accept-Language": "en-GB,en;q=0.9"}) == "en"
        assert language_of(client, path, **{"Accept-Language": "de"}) == "fr"  # the museum's first language
        assert language_of(client, f"{path}?lang=en") == "en"  # explicit beats the browser …
        assert client.cookies["lang"] == "en"
        assert language_of(client, path) == "en"  # … and is remembered
        assert language_of(client, f"{path}?lang=fr", **{"Accept-Language": "en"}) == "fr"
        assert language_of(client, path, **{"Accept-Language": "en"}) == "fr"  # the cookie beats the browser
        assert language_of(client, f"{path}?lang=xx") == "fr"  # not a language of ours: ignored
        page = client.get(path).text
        assert 'href="?lang=en" hreflang="en" lang="en"' in page  # the switch, on every page


def test_negotiate_and_accept_language_parsing() -> None:
    assert accepted_languages("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == ["fr-ch", "fr", "en", "de"]
    assert accepted_languages("en;q=0, fr") == ["fr"]
    assert accepted_languages("en;q=bad, fr;q=0.1") == ["fr"]
    assert accepted_languages("x" * 10_000) == []
    assert negotiate(None, None, "en-US", LANGUAGES) == "en"
    assert negotiate(None, "en", "fr", LANGUAGES) == "en"
    assert negotiate("fr", "en", "en", LANGUAGES) == "fr"
    assert negotiate("de", "xx", "es", LANGUAGES) == "fr"
    assert negotiate(None, None, None, ("en", "fr")) == "en"


def test_every_message_of_the_templates_is_translated() -> None:
    messages = Pages().template_messages()
    assert len(messages) > 30
    french = load_translations("fr")
    assert sorted(message for message in messages if french.gettext(message) == message) == []
    english = load_translations("en")
    assert all(english.gettext(message) == message for message in messages)  # English is the source


# --- what must never happen ---------------------------------------------------------------------------------------

def test_no_request_to_another_origin_on_any_page(companion: CompanionServer) -> None:
    client, token = new_visit(companion, WORK)
    with closing(client):
        pages = [client.get(path) for path in (f"/a/{SITE}/{WORK}", f"/v/{token}", f"/v/{token}/forget",
                                               f"/v/{new_visit_id()}", "/static/style.css", "/static/app.js",
                                               "/sw.js")]
    for response in pages:
        assert ORIGIN_URL.findall(response.text) == [], response.url
        assert len(response.content) < PAGE_LIMIT


def test_static_files_and_service_worker(companion: CompanionServer) -> None:
    with phone(companion) as client:
        page = client.get(f"/a/{SITE}/{WORK}").text
        for name in ("style.css", "app.js"):
            url = re.search(rf'"(/static/{re.escape(name)}\?v=[0-9a-f]+)"', page)
            assert url, name
            response = client.get(url.group(1))
            assert response.status_code == 200 and "max-age" in response.headers["cache-control"]
        assert '<script src="/static/app.js' in page and " defer>" in page
        worker = client.get("/sw.js")
        assert worker.status_code == 200
        assert worker.headers["content-type"].startswith("text/javascript")
        assert worker.headers["cache-control"] == "no-cache"
        assert "self.location.origin" in worker.text  # nothing of another origin
        assert "register(\"/sw.js\"" in client.get("/static/app.js").text


def test_every_visit_route_is_rate_limited() -> None:
    paths = {route.path for route in visit_routes.router.routes}  # type: ignore[attr-defined]
    assert paths == {"/v/{token}", "/v/{token}/pdf", "/v/{token}/export.json", "/v/{token}/forget",
                     "/v/{token}/join", "/v/forgotten"}
    assert [dependency.dependency.__name__ for dependency in visit_routes.router.dependencies] == \
        ["rate_limited_token"]  # type: ignore[union-attr]
    assert not any(route.path.startswith("/v/") for route in phone_routes.router.routes)  # type: ignore[attr-defined]


def test_tokens_never_reach_the_log(companion: CompanionServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, token = new_visit(companion, WORK)
    with closing(client):
        client.get(f"/v/{token}")
        client.get(f"/v/{token}/export.json")
        confirm = client.get(f"/v/{token}/forget").text
        client.post(f"/v/{token}/join", data={"csrf_token": csrf_of(confirm)})
        client.get(f"/v/{token}?lang=fr")
        client.get(f"/v/{new_visit_id()}x/pdf")
    # Everything the server side logged (this test's own HTTP client logs its requests and cookies at DEBUG).
    server_side = [record for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in server_side)
    assert token not in text
    assert "/v/[token]" in text  # the access log saw the requests, redacted


def test_captions_transcript_parsing(tmp_path: Path) -> None:
    captions = tmp_path / "c.vtt"
    captions.write_text("\ufeffWEBVTT - title\n\nNOTE a comment\nover two lines\n\n1\n00:00.000 --> 00:02.000\n"
                        "<v Narrator>Hello &amp; welcome</v>\n\n00:00:02.000 --> 00:00:04.000 align:start\n"
                        "two\nlines\n\n00:04.000 --> 00:05.000\n\n", "utf-8")
    assert vtt_cues(captions) == ("Hello & welcome", "two lines")
    assert vtt_cues(tmp_path / "missing.vtt") == ()



# --- offline -----------------------------------------------------------------------------------------------------

def until(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 30.0) -> T:
    """`read()` again until `done` says yes (the service worker writes its caches after answering)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not there after {timeout_s} s: {value!r}")
        time.sleep(0.05)


def test_service_worker_keeps_the_visit_and_works_readable_offline(companion: CompanionServer) -> None:
    """In headless Chromium: after a work is opened and saved and the visit page seen, both open with the network
    off (images included); "Forget my visit" leaves no copy of the visit in the phone's caches."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    cached = ("caches.keys().then(names => Promise.all(names.map(name => caches.open(name)"
              ".then(cache => cache.keys())))).then(lists => lists.flat().map(request => request.url))")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(viewport=PHONE, locale="en-GB")
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(f"{companion.url}/a/{SITE}/{WORK}")
            # Polled from here: wait_for_function evaluates its text in the page, which the pages' CSP forbids.
            until(lambda: page.evaluate("navigator.serviceWorker.controller !== null"), bool)
            page.click("form button[type=submit]")
            page.wait_for_url("**?saved=1")
            visit_path = page.get_attribute(".notice a", "href")
            assert visit_path is not None and visit_path.startswith("/v/")
            page.goto(companion.url + visit_path)
            urls = until(lambda: page.evaluate(cached), lambda urls: any(url.endswith(visit_path) for url in urls))
            assert all(url.startswith(companion.url) for url in urls)
            assert any("/m/demo/" in url and url.endswith(".png") for url in urls)

            context.set_offline(True)
            page.goto(companion.url + visit_path)
            assert page.locator("h1").inner_text() == "My visit"
            assert "Impression, Sunrise" in page.content()
            assert page.evaluate("Array.from(document.images).every(image => image.complete && image.naturalWidth)")
            page.goto(f"{companion.url}/a/{SITE}/{WORK}")
            assert page.locator("h1").inner_text() == "Impression, Sunrise"
            context.set_offline(False)

            page.goto(f"{companion.url}{visit_path}/forget")
            page.click("form button[type=submit]")
            page.wait_for_load_state()
            assert page.locator("h1").inner_text() == "Your visit has been forgotten"
            until(lambda: page.evaluate(cached), lambda urls: not any(visit_path in url for url in urls))
            assert errors == []
        finally:
            browser.close()
