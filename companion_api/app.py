"""The companion web app: `create_app(settings, store)` assembles the routers (phone pages, take-home visits, the
sites' sync, health), the security and access-log middleware, the error pages and the hourly retention purge.

The app keeps nothing of its own between requests beyond caches (content packs unpacked on disk, rate-limit
buckets in memory), so any number of replicas can run behind a load balancer on one PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from companion_api import health_routes, phone_routes, sync_routes, visit_routes
from companion_api.access_log import AccessLogMiddleware, configure_logging, install_log_redaction, redact
from companion_api.content_cache import Catalog, remove_stale
from companion_api.phone_events import ViewQueue
from companion_api.security import RateLimiter, SecurityHeadersMiddleware
from companion_api.settings import Settings, load_settings
from companion_api.store import Store, open_store

log = logging.getLogger("companion")

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
CONFIG_ENVIRONMENT = "MUSEUM_COMPANION_CONFIG"
"""The configuration file a worker process reads (`museum companion run --workers N` starts fresh processes)."""
FIRST_PURGE_AFTER_S = 300.0
"""The first retention purge waits this long after startup (a restart loop must not mean a purge loop)."""
_API_PREFIXES = ("/sync/", "/healthz", "/openapi.json")


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The app. Without `store`, it opens `settings.store_url`, migrates it at startup and closes it at shutdown;
    a given store is the caller's (already migrated)."""
    install_log_redaction()
    owns_store = store is None
    if store is None:
        store = open_store(settings.store_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owns_store:
            await to_thread.run_sync(app.state.store.migrate)
        await to_thread.run_sync(_remove_stale_uploads, settings)
        purging = asyncio.create_task(_purge_loop(app), name="companion-purge")
        try:
            yield
        finally:
            purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purging
            await to_thread.run_sync(app.state.views.close)
            close = getattr(app.state.store, "close", None)
            if owns_store and callable(close):
                await to_thread.run_sync(close)

    app = FastAPI(title="Museum companion", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Phone pages, take-home visits and the sites' sync.")
    # The interactive docs load scripts from a CDN: no third-party request, ever, from this service.
    app.state.settings = settings
    app.state.store = store
    app.state.clock = utc_now
    app.state.catalog = Catalog(store, settings.cache_dir, recheck_s=settings.content_recheck_s)
    app.state.views = ViewQueue(store)
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    app.state.batch_slots = asyncio.Semaphore(settings.concurrent_batches)
    app.state.pack_slots = asyncio.Semaphore(1)
    app.state.purges = 0

    for router in (phone_routes.router, visit_routes.router, sync_routes.router, health_routes.router):
        app.include_router(router)
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/sw.js" not in paths:
        app.add_api_route("/sw.js", service_worker, methods=["GET"], include_in_schema=False)
    if not any(isinstance(path, str) and path.startswith("/static/") for path in paths):
        app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # The last added is the outermost: the security headers wrap even the access log's own 500.
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)
    return app


def _remove_stale_uploads(settings: Settings) -> None:
    """Pack uploads left by a process killed mid-upload (the sync sends the pack again)."""
    with contextlib.suppress(OSError):
        remove_stale(list((settings.data_dir / "incoming").iterdir()))


def app_from_environment() -> FastAPI:
    """The app of a worker process started by uvicorn (`--workers N`): its configuration file is named by
    MUSEUM_COMPANION_CONFIG."""
    configure_logging()  # a fresh process: the parent's logging set-up did not come with it
    return create_app(load_settings(os.environ[CONFIG_ENVIRONMENT]))


def service_worker() -> Response:
    """The service worker, at the root so that its scope is the whole site; always revalidated."""
    path = STATIC_DIR / "sw.js"
    if not path.is_file():
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


# --- retention ------------------------------------------------------------------------------------------------

def purge_once(store: Store, settings: Settings, now: datetime) -> Any:
    """Delete what retention says has expired (the same as `museum companion purge`)."""
    return store.purge(now, visit_days=settings.visit_days, analytics_days=settings.analytics_days)


async def _purge_loop(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    delay = min(FIRST_PURGE_AFTER_S, settings.purge_every_s)
    while True:
        await asyncio.sleep(delay)
        delay = settings.purge_every_s
        clock: Callable[[], datetime] = app.state.clock
        try:
            result = await to_thread.run_sync(purge_once, app.state.store, settings, clock())
        except Exception as error:  # the store is away: the next round tries again
            log.warning("retention purge failed (%s); trying again in %.0f s", type(error).__name__, delay)
            continue
        app.state.purges += 1
        log.info("retention purge: %s", result)


# --- error answers --------------------------------------------------------------------------------------------

def _is_api(request: Request) -> bool:
    return request.url.path.startswith(_API_PREFIXES)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    detail = str(error.detail) if error.detail is not None else "error"
    if _is_api(request):
        return JSONResponse({"error": detail}, status_code=error.status_code, headers=headers)
    if error.status_code == 404:
        response: Response = phone_routes.not_found(request)
    else:
        response = _error_page(request, error.status_code, detail)
    response.headers.update(headers)
    return response


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                         for e in error.errors()[:5])
    if _is_api(request):
        return JSONResponse({"error": f"invalid request ({redact(problems)[:500]})"}, status_code=422)
    return _error_page(request, 400, "This address or form was not understood.")


def _error_page(request: Request, status: int, message: str) -> Response:
    """A visitor-facing error: the phone pages' own when they provide one, else a minimal page."""
    renderer = getattr(phone_routes, "error_page", None)
    if callable(renderer):
        rendered = renderer(request, status, message)
        if isinstance(rendered, Response):
            return rendered
    body = (f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width, initial-scale=1\"><title>{status}</title>"
            f"<main><h1>{status}</h1><p>{html.escape(message)}</p></main></html>")
    return Response(body, status_code=status, media_type="text/html; charset=utf-8")
