"""The seam between the routes and what they use: each is a FastAPI dependency reading what `create_app` put on
`app.state`, so a test overrides any of them with `app.dependency_overrides[get_clock] = lambda: fixed`.

They are `async def` though they never await: FastAPI runs a plain `def` dependency in its thread pool, and four
thread hops per page cost more than the page itself (bench.companion's artwork_page_ratio)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, Request

from companion_api.content_cache import Catalog
from companion_api.settings import Settings

if TYPE_CHECKING:
    from companion_api.phone_events import ViewQueue
    from companion_api.store import Store

__all__ = ["CatalogDep", "Clock", "ClockDep", "SettingsDep", "StoreDep", "ViewsDep", "get_catalog", "get_clock",
           "get_settings", "get_store", "get_views"]

Clock = Callable[[], datetime]
"""Now, timezone-aware UTC."""


async def get_settings(request: Request) -> Settings:
    """The service's settings."""
    return cast(Settings, request.app.state.settings)


async def get_store(request: Request) -> Store:
    """The companion store (SQLite or PostgreSQL), shared by every request of the process."""
    return cast("Store", request.app.state.store)


async def get_clock(request: Request) -> Clock:
    """The clock the routes, the rate limits and the purge read (UTC); tests replace it to make time stand still."""
    return cast(Clock, request.app.state.clock)


async def get_catalog(request: Request) -> Catalog:
    """The museums of the sites, from their current content packs."""
    return cast(Catalog, request.app.state.catalog)


async def get_views(request: Request) -> ViewQueue:
    """The page views waiting to be written together (`phone_events.ViewQueue`)."""
    return cast("ViewQueue", request.app.state.views)


# The dependencies as annotations, for the routes' signatures.
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated["Store", Depends(get_store)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
ClockDep = Annotated[Clock, Depends(get_clock)]
ViewsDep = Annotated["ViewQueue", Depends(get_views)]
