"""The take-home page of a visit (`/v/{token}`), its PDF and JSON export, "Forget my visit", and joining a kiosk's
visit to the phone's.

The token in the URL is the capability; only its derivation (`protocol.ids.visit_id_for`) is looked up. Every
path that finds nothing (unknown, expired, forgotten, malformed) runs the same steps and answers with the same
404 page, so the answer tells nothing about which tokens exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from companion_api.content_cache import Catalog, LoadedMuseum
from companion_api.deps import (
    CatalogDep,
    ClockDep,
    SettingsDep,
    StoreDep,
)
from companion_api.i18n import LANGUAGES, format_day, interface_languages
from companion_api.model import TakeHomeRow, VisitView
from companion_api.pdf import visit_pdf
from companion_api.phone_events import ViewQueue, record_join
from companion_api.phone_routes import (
    PAGE_RESPONSES,
    ImageView,
    artwork_context,
    clear_visit_cookie,
    cookie_token,
    months,
    museum_name,
    not_found,
    page_language,
    pages,
    render,
    set_visit_cookie,
)
from companion_api.security import check_csrf, rate_limited
from companion_api.store import Store
from companion_api.suggestions import keep_exploring
from content.model import Museum
from protocol.ids import is_visit_id, visit_id_for

router = APIRouter(dependencies=[Depends(rate_limited("token"))], responses=PAGE_RESPONSES)

KINDS = ("collected", "lingered", "opened")
"""The groups of the page, in order; a work shows once, in the first group it belongs to."""
EXPORT_FORMAT = "museum-visit-export"
FORGOTTEN_PATH = "/v/forgotten"


@dataclass(frozen=True)
class Visit:
    """A visit the token opens: its derivation, the stored view (items of it and of the visits joined to it)."""

    token: str
    visit_id: str
    view: VisitView


@dataclass(frozen=True)
class WorkEntry:
    site_id: str
    artwork_id: str
    kinds: tuple[str, ...]
    dwell_s: float | None
    day: str
    work: Mapping[str, Any] | None
    """The work as the artwork page shows it; None when the site's current pack no longer has it."""


def open_visit(store: Store, token: str, views: ViewQueue | None = None) -> Visit | None:
    """The visit of `token`, or None. A malformed token is derived and looked up like any other (it finds
    nothing), so that every miss costs the same. The page views still queued are written first: a work opened
    a moment ago is on the visit's page."""
    if views is not None:
        views.flush()
    valid = is_visit_id(token)
    visit_id = visit_id_for(token if valid else "malformed:" + token[:64])
    view = store.visit(visit_id)
    if view is None or not valid or not view.items:
        return None
    return Visit(token, visit_id, view)


def primary_site(visit: Visit) -> str:
    """The site the visit's own works were seen at (a joined visit's, when it has none of its own)."""
    own = [item for item in visit.view.items if item.visit_id == visit.visit_id]
    return str((own or visit.view.items)[0].site_id)


def work_entries(visit: Visit, catalog: Catalog, language: str) -> list[WorkEntry]:
    """One entry per work, with every way the visit met it and the longest stay, in the order first met."""
    grouped: dict[tuple[str, str], list[TakeHomeRow]] = {}
    for item in sorted(visit.view.items, key=lambda row: row.day):
        if item.kind not in KINDS:
            continue  # a kind this page does not know yet (the store checks them): shown nowhere rather than wrong
        grouped.setdefault((item.site_id, item.artwork_id), []).append(item)
    entries: list[WorkEntry] = []
    museums: dict[str, LoadedMuseum | None] = {}
    for (site_id, artwork_id), rows in grouped.items():
        if site_id not in museums:
            museums[site_id] = catalog.museum(site_id)
        loaded = museums[site_id]
        work = None
        if loaded is not None:
            try:
                artwork = loaded.museum.artwork(artwork_id)
            except KeyError:
                artwork = None
            if artwork is not None:
                work = artwork_context(loaded, catalog, artwork, language, transcript=False)
        dwells = [row.dwell_s for row in rows if row.dwell_s is not None]
        entries.append(WorkEntry(site_id, artwork_id, tuple(sorted({row.kind for row in rows}, key=KINDS.index)),
                                 max(dwells) if dwells else None, min(row.day for row in rows), work))
    return entries


def groups(entries: Sequence[WorkEntry]) -> list[tuple[str, list[WorkEntry]]]:
    return [(kind, [entry for entry in entries if entry.kinds[0] == kind]) for kind in KINDS
            if any(entry.kinds[0] == kind for entry in entries)]


def dwell_text(seconds: float | None) -> str | None:
    """A stay as people say it: "45 s", "2 min 30 s", "12 min"."""
    if seconds is None:
        return None
    total = max(0, round(seconds))
    minutes, rest = divmod(total, 60)
    if minutes == 0:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def expiry_day(visit: Visit, visit_days: int) -> date:
    """The day the visit's records are erased at the latest: its last day plus the retention."""
    last = max(date.fromisoformat(item.day) for item in visit.view.items)
    return last + timedelta(days=visit_days)


def _site_museum(catalog: Catalog, site_id: str) -> Museum | None:
    loaded = catalog.museum(site_id)
    return loaded.museum if loaded is not None else None


def _language(request: Request, museum: Museum | None) -> tuple[str, tuple[str, ...]]:
    available = interface_languages(museum.languages if museum is not None else LANGUAGES)
    return page_language(request, available), available


# --- routes ----------------------------------------------------------------------------------------------------



@router.get(FORGOTTEN_PATH, response_class=HTMLResponse)
def forgotten(request: Request) -> Response:
    """"Your visit has been forgotten": where "Forget my visit" ends. (Not a token: too short to be one, and
    declared before `/v/{token}` so that it is found first.)"""
    language, available = _language(request, None)
    return render(request, "forgotten.html", language, available, {})


@router.get("/v/{token}", response_class=HTMLResponse)
def visit_page(request: Request, token: str, settings: SettingsDep, store: StoreDep,
               catalog: CatalogDep, clock: ClockDep) -> Response:
    """The take-home page: the works of the visit (and of the visits joined to it), and what to see next."""
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    site_id = primary_site(visit)
    loaded = catalog.museum(site_id)
    museum = loaded.museum if loaded is not None else None
    language, available = _language(request, museum)
    entries = work_entries(visit, catalog, language)
    days = sorted({entry.day for entry in entries})
    phone = cookie_token(request)
    phone_visit = visit_id_for(phone) if phone is not None else None
    if phone_visit is not None and store.is_erased(phone_visit):
        phone, phone_visit = None, None
    offer = None
    if phone_visit is None:
        offer = "keep"
    elif phone_visit not in visit.view.visit_ids:
        offer = "join"
    context = {
        "token": token,
        "groups": groups(entries),
        "dwell_text": dwell_text,
        "first_day": days[0],
        "last_day": days[-1],
        "suggestions": suggestion_views(loaded, catalog, visit.view.items, language, clock().date()),
        "offer": offer,
        "visit_months": months(settings.visit_days),
        "expires_on": expiry_day(visit, settings.visit_days).isoformat(),
        "joined": len(visit.view.visit_ids) > 1,
        "joined_now": request.query_params.get("joined") == "1",
    }
    return render(request, "visit.html", language, available, context, museum_name=museum_name(museum, language))


@router.get("/v/{token}/export.json")
def export_json(request: Request, token: str, settings: SettingsDep, store: StoreDep, catalog: CatalogDep,
                clock: ClockDep) -> Response:
    """Everything stored about the visit, as a JSON file the visitor keeps (data portability)."""
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    museum = _site_museum(catalog, primary_site(visit))
    language, _ = _language(request, museum)
    document = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "exported_at": clock().isoformat(timespec="seconds"),
        "language": language,
        "museum": museum_name(museum, language),
        "visit_ids": sorted(visit.view.visit_ids),
        "kept_until": expiry_day(visit, settings.visit_days).isoformat(),
        "items": [{"visit_id": item.visit_id, "site_id": item.site_id, "artwork_id": item.artwork_id,
                   "kind": item.kind, "day": item.day, "dwell_s": item.dwell_s,
                   **_work_fields(catalog, item.site_id, item.artwork_id, language)}
                  for item in sorted(visit.view.items, key=lambda row: (row.day, row.artwork_id, row.kind))],
    }
    body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": 'attachment; filename="my-visit.json"'})


@router.get("/v/{token}/pdf")
def export_pdf(request: Request, token: str, settings: SettingsDep, store: StoreDep, catalog: CatalogDep,
               clock: ClockDep) -> Response:
    """The take-home page as a PDF to keep or print."""
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    loaded = catalog.museum(primary_site(visit))
    language, _ = _language(request, loaded.museum if loaded is not None else None)
    body = pdf_document(visit, loaded, catalog, language, settings.visit_days, clock().date())
    return Response(body, media_type="application/pdf",
                    headers={"Content-Disposition": 'attachment; filename="my-visit.pdf"'})


@router.get("/v/{token}/forget", response_class=HTMLResponse)
def forget_confirm(request: Request, token: str, store: StoreDep, catalog: CatalogDep) -> Response:
    """"Forget my visit", the confirmation step: what will be erased, and the button that does it."""
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    museum = _site_museum(catalog, primary_site(visit))
    language, available = _language(request, museum)
    context = {"token": token, "joined": len(visit.view.visit_ids) > 1}
    return render(request, "forget.html", language, available, context, museum_name=museum_name(museum, language))


@router.post("/v/{token}/forget")
def forget(request: Request, token: str, store: StoreDep, csrf_token: Annotated[str, Form()] = "") -> Response:
    """Erase the visit and every visit joined to it, here and (through the sync) on the museum's site; then on to
    the confirmation (a page of its own, so that reloading it or switching its language sends nothing again)."""
    check_csrf(request, csrf_token)
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    store.forget(visit.visit_id)
    response = RedirectResponse(FORGOTTEN_PATH, status_code=303)
    phone = cookie_token(request)
    if phone is not None and visit_id_for(phone) in visit.view.visit_ids:
        clear_visit_cookie(response, request)
    # The browser's copies go too: its HTTP cache and the service worker's (sw.js also drops them itself).
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    return response


@router.post("/v/{token}/join")
def join(request: Request, token: str, settings: SettingsDep, store: StoreDep, clock: ClockDep,
         csrf_token: Annotated[str, Form()] = "") -> Response:
    """Keep this visit on the phone: the phone's cookie now holds it, and the phone's earlier visit, if any, is
    joined to it so that either page shows the works of both."""
    check_csrf(request, csrf_token)
    visit = open_visit(store, token, request.app.state.views)
    if visit is None:
        return _not_found(request, token)
    phone = cookie_token(request)
    other = visit_id_for(phone) if phone is not None else None
    if other is not None and (other in visit.view.visit_ids or store.is_erased(other)):
        other = None  # already one visit, or a forgotten one: nothing to join
    record_join(store, device_id=settings.device_id, site_id=primary_site(visit), visit_id=visit.visit_id,
                other_visit_id=other, now=clock())
    response = RedirectResponse(f"/v/{token}?joined=1", status_code=303)
    set_visit_cookie(response, request, token, settings.visit_days)
    return response


# --- helpers ---------------------------------------------------------------------------------------------------

def _not_found(request: Request, token: str) -> Response:
    response = not_found(request)
    if cookie_token(request) == token:
        clear_visit_cookie(response, request)  # the phone's own visit is gone: start afresh at the next save
    return response


def _work_fields(catalog: Catalog, site_id: str, artwork_id: str, language: str) -> dict[str, Any]:
    loaded = catalog.museum(site_id)
    if loaded is None:
        return {}
    try:
        artwork = loaded.museum.artwork(artwork_id)
    except KeyError:
        return {}
    content_language = language if language in loaded.museum.languages else loaded.museum.languages[0]
    return {"title": artwork.title[content_language], "artist": artwork.artist, "year": artwork.year}


@dataclass(frozen=True)
class SuggestionView:
    kind: str
    title: str
    text: str
    reason: str
    url: str | None
    image: ImageView | None


def suggestion_views(loaded: LoadedMuseum | None, catalog: Catalog, items: Sequence[TakeHomeRow], language: str,
                     today: date) -> list[SuggestionView]:
    """"Keep exploring" (`companion_api.suggestions`) for the visit's museum, with links and thumbnails."""
    if loaded is None:
        return []
    own = [item for item in items if item.site_id == loaded.site_id]
    views: list[SuggestionView] = []
    for suggestion in keep_exploring(loaded.museum, own, language, today=today):
        url = image = None
        if suggestion.artwork_id is not None:
            try:
                artwork = loaded.museum.artwork(suggestion.artwork_id)
            except KeyError:
                artwork = None
            if artwork is not None:
                shown = artwork_context(loaded, catalog, artwork, language, transcript=False)
                url, image = f"{shown['url']}?via=visit", shown["image"]
        views.append(SuggestionView(suggestion.kind, suggestion.title, suggestion.text, suggestion.reason, url,
                                    image))
    return views


GROUP_TITLES = {"collected": "Works you saved", "lingered": "Works you stopped at", "opened": "Works you opened"}
"""The group headings (the same messages as the page's)."""


def pdf_document(visit: Visit, loaded: LoadedMuseum | None, catalog: Catalog, language: str, visit_days: int,
                 today: date) -> bytes:
    """The take-home page as a PDF: the same groups, stays and suggestions, in the same language. The page's
    link is left out: a PDF gets forwarded, and the link would open (and let anyone forget) the visit."""
    texts = pages()

    def _(message: str, **values: Any) -> str:
        translated = texts.gettext(language, message)
        return translated % values if values else translated

    museum = loaded.museum if loaded is not None else None
    name = museum_name(museum, language)
    entries = work_entries(visit, catalog, language)
    sections: list[tuple[str, list[str]]] = []
    for kind, members in groups(entries):
        items = []
        for entry in members:
            work = entry.work
            line = f"{work['title']} — {work['artist']}, {work['year']}" if work else _("A work no longer shown")
            if entry.dwell_s is not None:
                line += "\n" + _("You stayed %(time)s.", time=dwell_text(entry.dwell_s))
            items.append(line)
        sections.append((_(GROUP_TITLES[kind]), items))
    suggestions = suggestion_views(loaded, catalog, visit.view.items, language, today)
    if suggestions:
        sections.append((_("Keep exploring"), [f"{s.title}\n{s.reason}\n{s.text}" for s in suggestions]))
    sections.append((_("Your data"), [
        _("This page is kept %(months)s months after your visit, until %(day)s at the latest, then erased. "
          "Only people who hold its link can open it.", months=months(visit_days),
          day=format_day(expiry_day(visit, visit_days).isoformat(), language))]))
    days = sorted(entry.day for entry in entries)
    when = (_("Your visit on %(day)s.", day=format_day(days[0], language)) if days[0] == days[-1] else
            _("Your visit from %(first)s to %(last)s.", first=format_day(days[0], language),
              last=format_day(days[-1], language)))
    title = f"{_('My visit')} · {name}" if name else _("My visit")
    return visit_pdf(title, sections, footer=f"{name} · {when}" if name else when, language=language)

