"""The page a phone opens from the QR code next to a work (`/a/{site}/{artwork}`), "Save to my visit", the
pack's media (`/m/...`) and the pages' own static files. Pages are rendered on the server and work without
JavaScript; the only script registers the service worker that keeps them readable offline.

The phone's one strictly necessary cookie, `museum_visit`, holds its visit token (a capability: whoever holds it
opens `/v/{token}`); it is set only when the visitor saves a work or keeps a visit, and every event and record
carries `protocol.ids.visit_id_for(token)` instead of the token.
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from companion_api.content_cache import Catalog, LoadedMuseum
from companion_api.deps import CatalogDep, ClockDep, SettingsDep, StoreDep, ViewsDep
from companion_api.i18n import LANG_COOKIE, LANGUAGES, STATIC_DIR, Pages, interface_languages, language_links, negotiate
from companion_api.phone_events import record_save, record_view
from companion_api.security import check_csrf, csrf_token, request_is_https
from content.model import Artwork, Museum
from protocol.fields import IDENTIFIER
from protocol.ids import is_visit_id, new_visit_id, visit_id_for

_HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}
PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "after a form: back to the page it came from"},
    403: {"description": "a form without its token, or from another site", "content": _HTML},
    404: {"description": "no such page (for a visit: unknown, expired or forgotten alike)", "content": _HTML},
    429: {"description": "too many requests from this client: wait and retry", "content": _HTML},
    503: {"description": "the store cannot be reached: retry", "content": _HTML},
}
"""What every page may answer besides its 200, as the OpenAPI schema declares it (tests/test_companion_openapi.py
checks each answer against it)."""

router = APIRouter(responses=PAGE_RESPONSES)

VISIT_COOKIE = "museum_visit"
LANG_COOKIE_DAYS = 395
"""The language choice is kept as long as a visit (settings.visit_days by default): a preference, not a trace."""
MEDIA_CACHE = "public, max-age=31536000, immutable"
"""Media URLs carry the pack's SHA-256: a given URL's bytes never change."""
STATIC_CACHE = "public, max-age=86400"
STATIC_FILES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".ogg": "audio/ogg", ".opus": "audio/ogg; codecs=opus", ".mp3": "audio/mpeg", ".wav": "audio/wav",
               ".mp4": "video/mp4", ".webm": "video/webm", ".vtt": "text/vtt; charset=utf-8"}
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
MAX_CAPTIONS_BYTES = 256 * 1024
"""A transcript is read from the captions file up to this size: minutes of speech are a few kilobytes."""


@cache
def pages() -> Pages:
    """The templates and catalogues, loaded once per process."""
    return Pages()


# --- the phone's cookies and language --------------------------------------------------------------------------

def cookie_token(request: Request) -> str | None:
    """The visit token the phone's cookie holds, when it holds a well-formed one."""
    value = request.cookies.get(VISIT_COOKIE)
    return value if is_visit_id(value) else None


def set_visit_cookie(response: Response, request: Request, token: str, visit_days: int) -> None:
    """The strictly necessary cookie: first-party, unreadable by scripts, sent on top-level navigations from
    elsewhere (a scanned QR code) but not on cross-site subrequests, HTTPS-only when served over HTTPS."""
    response.set_cookie(VISIT_COOKIE, token, max_age=visit_days * 86400, path="/", httponly=True, samesite="lax",
                        secure=request_is_https(request))


def clear_visit_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(VISIT_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=request_is_https(request))


def page_language(request: Request, available: tuple[str, ...]) -> str:
    """`?lang=`, else the `lang` cookie, else Accept-Language, else the first of `available`."""
    return negotiate(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                     request.headers.get("accept-language"), available)


def render(request: Request, template: str, language: str, available: tuple[str, ...],
           context: Mapping[str, Any], *, status_code: int = 200, museum_name: str | None = None) -> HTMLResponse:
    """A page in `language`, with its language switch and form token; an explicit `?lang=` is remembered."""
    # `csrf()` is called by the pages that have a form only: a page without one sets no cookie.
    full = {"languages": language_links(language, available),
            "csrf": lambda: csrf_token(request), "museum_name": museum_name, **context}
    return page_response(request, pages().render(template, language, full), language, status_code)


def page_response(request: Request, page: str, language: str, status_code: int = 200) -> HTMLResponse:
    """A rendered page; an explicit `?lang=` choice is remembered in the `lang` cookie."""
    response = HTMLResponse(page, status_code=status_code)
    chosen = request.query_params.get("lang")
    if chosen in LANGUAGES and chosen == language and request.cookies.get(LANG_COOKIE) != chosen:
        response.set_cookie(LANG_COOKIE, chosen, max_age=LANG_COOKIE_DAYS * 86400, path="/", httponly=True,
                            samesite="lax", secure=request_is_https(request))
    return response


def not_found(request: Request, museum: Museum | None = None) -> HTMLResponse:
    """The one "page not found" page: for an unknown work, and for any visit link that opens nothing (unknown,
    expired, forgotten or malformed), so that the answer says nothing about which."""
    available = interface_languages(museum.languages if museum is not None else LANGUAGES)
    language = page_language(request, available)
    name = museum.name.get(language) if museum is not None else None
    return render(request, "not_found.html", language, available, {}, status_code=404, museum_name=name)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """Any other refusal a visitor can meet (an expired form, too many requests, an address not understood), in
    the pages' layout and language; the message is the app's, in English, under a translated heading."""
    available = LANGUAGES
    language = page_language(request, available)
    return render(request, "error.html", language, available, {"status": status, "message": message},
                  status_code=status)


# --- content helpers -------------------------------------------------------------------------------------------

def media_url(site_id: str, pack_sha256: str, path: str) -> str:
    """A pack file's URL: keyed by the pack's hash, so it can be cached for good."""
    return f"/m/{site_id}/{pack_sha256}/{path}"


def paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n|\n", text) if part.strip()]


@dataclass(frozen=True)
class ImageView:
    src: str
    alt: str
    width: int | None
    height: int | None


@lru_cache(maxsize=1024)
def png_size(path: Path) -> tuple[int, int] | None:
    """A PNG's width and height from its header, so the page reserves the image's room before it loads."""
    try:
        with path.open("rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


_VTT_TIMING = re.compile(r"^\s*(\d+:)?\d{2}:\d{2}\.\d{3}\s+-->")
_VTT_TAG = re.compile(r"<[^>]*>")


@lru_cache(maxsize=256)
def vtt_cues(path: Path) -> tuple[str, ...]:
    """The text of a WebVTT file's cues, one paragraph each: the LSF video's transcript."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CAPTIONS_BYTES)
    except OSError:
        return ()
    blocks = re.split(r"\r?\n\s*\r?\n", raw.decode("utf-8", "replace").removeprefix("\ufeff"))
    cues: list[str] = []
    for block in blocks:
        lines = block.strip().splitlines()
        timing = next((i for i, line in enumerate(lines) if _VTT_TIMING.match(line)), None)
        if timing is None:
            continue  # the header, a NOTE, a STYLE or REGION block
        text = " ".join(html.unescape(_VTT_TAG.sub("", line)).strip() for line in lines[timing + 1:])
        if text.strip():
            cues.append(text.strip())
    return tuple(cues)


def artwork_context(loaded: LoadedMuseum, catalog: Catalog, artwork: Artwork, language: str, *,
                    transcript: bool = True) -> Mapping[str, Any]:
    """What the artwork page (and, without the transcript, the take-home page) shows of a work, in `language`
    when the pack has it, else in the pack's first language. Made once per pack, work and language (a pack
    never changes under its hash); read-only."""
    key = (loaded.site_id, loaded.sha256, artwork.artwork_id, language, transcript)
    with _contexts_lock:
        found = _contexts.get(key)
    if found is None:
        found = MappingProxyType(_artwork_context(loaded, catalog, artwork, language, transcript))
        with _contexts_lock:
            _contexts[key] = found
            while len(_contexts) > MAX_CONTEXTS:
                _contexts.popitem(last=False)
    return found


MAX_CONTEXTS = 4096
_contexts: OrderedDict[tuple[str, str, str, str, bool], Mapping[str, Any]] = OrderedDict()
_contexts_lock = threading.Lock()


def _artwork_context(loaded: LoadedMuseum, catalog: Catalog, artwork: Artwork, language: str,
                     transcript: bool) -> dict[str, Any]:
    museum = loaded.museum
    content_language = language if language in museum.languages else museum.languages[0]
    site, sha = loaded.site_id, loaded.sha256
    image = None
    if artwork.media.image is not None:
        size = _media_png_size(catalog, site, sha, artwork.media.image.file)
        image = ImageView(media_url(site, sha, artwork.media.image.file),
                          artwork.media.image.alt.get(content_language) or "",
                          size[0] if size else None, size[1] if size else None)
    audio = dict(artwork.media.audio).get(content_language)
    lsf = artwork.media.lsf
    cues: tuple[str, ...] = ()
    if lsf is not None and transcript:
        captions_path = catalog.media_file(site, sha, lsf.captions)
        cues = vtt_cues(captions_path) if captions_path is not None else ()
    period, technique = artwork.period, artwork.technique
    return {
        "site_id": site,
        "artwork_id": artwork.artwork_id,
        "url": f"/a/{site}/{artwork.artwork_id}",
        "title": artwork.title[content_language],
        "artist": artwork.artist,
        "year": artwork.year,
        "period": period.get(content_language) if period is not None else None,
        "technique": technique.get(content_language) if technique is not None else None,
        "text": tuple(paragraphs(artwork.text[content_language])),
        "image": image,
        "audio": media_url(site, sha, audio) if audio else None,
        "audio_type": _media_type(audio) if audio else None,
        "video": media_url(site, sha, lsf.video) if lsf is not None else None,
        "video_type": _media_type(lsf.video) if lsf is not None else None,
        "captions": media_url(site, sha, lsf.captions) if lsf is not None else None,
        "captions_language": museum.languages[0],
        "transcript": cues,
        "content_language": content_language,
    }


def _media_type(path: str) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def _media_png_size(catalog: Any, site: str, sha: str, path: str) -> tuple[int, int] | None:
    if not path.lower().endswith(".png"):
        return None
    found = catalog.media_file(site, sha, path)
    return png_size(found) if found is not None else None


def find_artwork(catalog: Catalog, site: str, artwork_id: str) -> tuple[LoadedMuseum | None, Artwork | None]:
    """The site's loaded museum (or None) and the work (or None); malformed names find nothing."""
    loaded = catalog.museum(site) if IDENTIFIER.match(site) else None
    if loaded is None or not IDENTIFIER.match(artwork_id):
        return loaded, None
    try:
        return loaded, loaded.museum.artwork(artwork_id)
    except KeyError:
        return loaded, None


def museum_name(museum: Museum | None, language: str) -> str | None:
    """The museum's name in `language`, else in its first language."""
    if museum is None:
        return None
    return museum.name.get(language) or museum.name[museum.languages[0]]


# --- routes ----------------------------------------------------------------------------------------------------



@router.get("/a/{site}/{artwork}", response_class=HTMLResponse)
def artwork_page(request: Request, site: str, artwork: str, settings: SettingsDep, views: ViewsDep,
                 catalog: CatalogDep, clock: ClockDep, saved: str | None = None, via: str | None = None) -> Response:
    """The work's page: what the QR code next to it opens (`?via=visit`: opened from the take-home page)."""
    loaded, work = find_artwork(catalog, site, artwork)
    if loaded is None or work is None:
        return not_found(request, loaded.museum if loaded is not None else None)
    museum = loaded.museum
    available = interface_languages(museum.languages)
    language = page_language(request, available)
    token = cookie_token(request)
    just_saved = saved == "1" and token is not None
    if not just_saved:  # the page shown after "Save" is the same look at the work, not a new one
        record_view(views, device_id=settings.device_id, site_id=loaded.site_id, artwork_id=work.artwork_id,
                    language=language, visit_id=visit_id_for(token) if token is not None else None,
                    source="companion" if via == "visit" else "qr", now=clock())
    key = (loaded.site_id, loaded.sha256, work.artwork_id, language, just_saved, token is not None,
           settings.visit_days)
    page = _artwork_pages.get(key)
    if page is None:
        context = {**artwork_context(loaded, catalog, work, language), "languages": language_links(language, available),
                   "csrf": lambda: _CSRF_SLOT, "museum_name": museum_name(museum, language),
                   "visit_url": _VISIT_SLOT if token is not None else None, "saved": just_saved,
                   "visit_months": months(settings.visit_days)}
        page = _artwork_pages.put(key, pages().render("artwork.html", language, context))
    page = page.replace(_CSRF_SLOT, csrf_token(request))
    if token is not None:
        page = page.replace(_VISIT_SLOT, f"/v/{token}")
    return page_response(request, page, language)


class PageCache:
    """Rendered pages, at most `size` (the least recently used go first); thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pages: OrderedDict[Hashable, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> str | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, page: str) -> str:
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)
        return page


_artwork_pages = PageCache(2048)
"""A work's page is the same for every phone but for its form token and visit link: it is rendered once per
pack, work, language and state, with these slots filled in per request (a page opened from a QR code is the
service's busiest answer). The pack's hash in the key retires the pages of a replaced pack."""
_CSRF_SLOT = "\x00csrf\x00"
_VISIT_SLOT = "\x00visit\x00"


@router.post("/a/{site}/{artwork}/save")
def save_artwork(request: Request, site: str, artwork: str, settings: SettingsDep, store: StoreDep,
                 catalog: CatalogDep, clock: ClockDep, csrf_token: Annotated[str, Form()] = "") -> Response:
    """"Save to my visit": a new visit (and its cookie) when the phone has none, then back to the work's page."""
    check_csrf(request, csrf_token)
    loaded, work = find_artwork(catalog, site, artwork)
    if loaded is None or work is None:
        return not_found(request, loaded.museum if loaded is not None else None)
    token = cookie_token(request)
    if token is None or store.is_erased(visit_id_for(token)):
        token = new_visit_id()
    record_save(store, device_id=settings.device_id, site_id=loaded.site_id, artwork_id=work.artwork_id,
                visit_id=visit_id_for(token), now=clock())
    response = RedirectResponse(f"/a/{loaded.site_id}/{work.artwork_id}?saved=1", status_code=303)
    set_visit_cookie(response, request, token, settings.visit_days)
    return response


@router.get("/m/{site}/{sha256}/{path:path}", include_in_schema=False)
def media(request: Request, site: str, sha256: str, path: str, catalog: CatalogDep) -> Response:
    """A file of a site's pack, by the pack's hash: immutable, so browsers and the service worker keep it."""
    found = None
    if IDENTIFIER.match(site) and SHA256.match(sha256):
        found = catalog.media_file(site, sha256, path)
    if found is None:
        return not_found(request)
    media_type = MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
    return FileResponse(found, media_type=media_type, headers={"Cache-Control": MEDIA_CACHE})


@router.get("/static/{name}", include_in_schema=False)
def static_file(request: Request, name: str) -> Response:
    """The pages' stylesheet and script (their URLs carry a content hash)."""
    if name not in STATIC_FILES:
        return not_found(request)
    return Response(_static_bytes(name), media_type=STATIC_FILES[name], headers={"Cache-Control": STATIC_CACHE})


@router.get("/sw.js", include_in_schema=False)
def service_worker() -> Response:
    """The service worker, served from the root so that its scope covers /a/ and /v/; always revalidated, so a
    new version replaces the old one at the next visit."""
    return Response(_static_bytes("sw.js"), media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "no-cache"})


@cache
def _static_bytes(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def months(days: int) -> int:
    """A retention in days as whole months, the way the page states it (395 days: 13 months)."""
    return max(1, round(days / 30.4375))

