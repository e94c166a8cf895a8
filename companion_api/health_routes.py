"""`GET /healthz`: whether this replica can serve, for a load balancer or a monitoring probe. It says which
store it runs on and its schema version, and answers 503 when the store cannot be reached."""

from __future__ import annotations

import logging
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from companion_api.deps import get_store
from companion_api.store import Store

log = logging.getLogger("companion.health")
router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "the store cannot be reached"}})
async def healthz(store: Annotated[Store, Depends(get_store)]) -> JSONResponse:
    """{"ok": true, "store": "sqlite" | "postgresql", "schema": N}."""
    try:
        schema = await to_thread.run_sync(store.schema_version)
    except Exception as error:
        log.warning("health: the store cannot be reached (%s)", type(error).__name__)
        return JSONResponse({"ok": False, "store": store.dialect, "error": "the store cannot be reached"},
                            status_code=503, headers={"Cache-Control": "no-store"})
    return JSONResponse({"ok": True, "store": store.dialect, "schema": schema}, headers={"Cache-Control": "no-store"})
