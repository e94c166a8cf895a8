"""The sites' sync endpoints: `POST /sync/v1/batch` (anonymised records up, erasures and phone events down) and
`PUT /sync/v1/pack` (the site's current content pack), authenticated by the site key (`Authorization: Bearer
<site_id>.<secret>`, made by `museum companion enroll-site`; only its SHA-256 is stored).

Everything a client sends is bounded before it is held: the body while it streams in (compressed), the gzip
stream while it inflates (a gzip bomb stops at the cap), the JSON by `protocol.codec.loads_strict`, the rows by
`companion_api.model.parse_batch`. Every refusal is a 4xx with `{"error": "…"}` saying what to fix; a store that
cannot be reached is a 503 the client retries. A batch is idempotent (the store ignores what it already holds),
so a client that lost a response sends the same batch again safely.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from companion_api.deps import get_settings, get_store
from companion_api.model import BatchError, Down, IngestResult, SyncBatch, fast_json, parse_batch
from companion_api.security import rate_limited
from companion_api.settings import Settings
from companion_api.store import Store
from content.pack import verify_pack
from content.source import ContentError
from protocol.codec import dumps_text, loads_strict
from protocol.errors import ContractError

log = logging.getLogger("companion.sync")
router = APIRouter(tags=["sync"])

DOWN_LIMIT = 1000
"""Erasures, and phone events, sent back per response (`more` says when others wait)."""
MAX_KEY_LENGTH = 256
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_T = TypeVar("_T")


class Refused(Exception):
    """A request refused with `status` and a JSON `{"error": message}` body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


async def _off_loop(function: Callable[..., _T], *args: Any) -> _T:
    return await to_thread.run_sync(function, *args)


async def _store_call(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """A store call off the event loop; a store failure is a 503 (the client retries), never a 500."""
    try:
        return await to_thread.run_sync(lambda: function(*args, **kwargs))
    except Refused:
        raise
    except Exception as error:
        log.error("sync: the store failed (%s: %s)", type(error).__name__, str(error).splitlines()[0][:200]
                  if str(error) else "")
        raise Refused(503, "the companion store is unavailable; retry later", {"Retry-After": "5"}) from None


async def authenticate(request: Request, store: Store) -> str:
    """The site whose key the request carries; 401 (with the fix) when there is none or it is unknown."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Refused(401, "no site key: send Authorization: Bearer <site key> (made by `museum companion "
                      "enroll-site SITE` on the companion)", {"WWW-Authenticate": "Bearer"})
    if len(key) > MAX_KEY_LENGTH or not key.isascii():
        site = None
    else:
        site = await _store_call(store.site_for_key, key)
    if site is None:
        raise Refused(401, "unknown site key: the site is not enrolled here, or its key was replaced by a new "
                      "`museum companion enroll-site`; install the current key", {"WWW-Authenticate": "Bearer"})
    return site


async def read_body(request: Request, cap: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it passes `cap` bytes: never held whole beyond the cap."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise Refused(413, f"{what} of {int(declared)} bytes is over the {cap}-byte limit; send smaller batches")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise Refused(413, f"{what} is over the {cap}-byte limit; send smaller batches")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "the client went away before the end of the body") from None
    return b"".join(chunks)


def gunzip_capped(data: bytes, cap: int) -> bytes:
    """Inflate one gzip member, stopping with a 413 as soon as the output passes `cap` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out: list[bytes] = []
    size = 0
    pending = data
    try:
        while pending and not inflater.eof:
            piece = inflater.decompress(pending, 1024 * 1024)
            size += len(piece)
            if size > cap:
                raise Refused(413, f"the batch inflates to over {cap} bytes; send smaller batches")
            out.append(piece)
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise Refused(400, "the gzip stream is cut short")
    except zlib.error as error:
        raise Refused(400, f"the body is not valid gzip ({error})") from None
    if inflater.unused_data.strip(b"\x00"):
        raise Refused(400, "data after the end of the gzip stream")
    return b"".join(out)


def decode_batch(raw: bytes, cap: int) -> Any:
    """The batch's JSON, parsed by orjson (`model.fast_json`): strict like `loads_strict` (no NaN or Infinity, no
    lone surrogate, valid UTF-8, nothing after the value) but for duplicate keys, where the last wins (a row's
    fields are then checked like any other), and three times as fast, which is a third of the cost of a batch.
    What it refuses goes through `loads_strict` again, for that function's exact message."""
    if len(raw) > cap:
        raise Refused(413, f"the batch is larger than {cap} bytes once inflated")
    try:
        return fast_json(raw)
    except ValueError:
        pass
    try:
        return loads_strict(raw, limit=cap)
    except ContractError as error:
        status = 413 if error.code == "too_large" else 400
        raise Refused(status, f"the batch is not valid JSON: {error.detail}") from None
    except RecursionError:
        raise Refused(400, "the batch is not valid JSON: nested too deep") from None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _encoding(request: Request) -> str:
    return request.headers.get("content-encoding", "identity").strip().lower() or "identity"


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["v", "site_id"],
            "properties": {
                "v": {"type": "integer", "enum": [1]}, "site_id": {"type": "string"},
                "analytics": {"type": "array", "items": {"type": "array"}},
                "take_home": {"type": "array", "items": {"type": "array"}},
                "joins": {"type": "array", "items": {"type": "array"}},
                "erasures": {"type": "array", "items": {"type": "array"}},
                "events_after": {"type": "integer", "minimum": 0},
                "erasures_after": {"type": "integer", "minimum": 0},
                "pack": {"type": ["object", "null"]},
            }}}},
    },
}
_PACK_BODY = {
    "parameters": [{"name": "X-Pack-Sha256", "in": "header", "required": True, "description": "the pack's SHA-256",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
    "requestBody": {"required": True, "content": {
        kind: {"schema": {"type": "string", "format": "binary"}}
        for kind in ("application/x-tar", "application/octet-stream")}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    for status, why in ((400, "malformed body"), (401, "no or unknown site key"), (403, "another site's batch"),
                        (413, "too large"), (415, "wrong content type or encoding"), (422, "an invalid row"),
                        (429, "too many requests"), (503, "store unavailable: retry"))}


@router.post("/sync/v1/batch", dependencies=[Depends(rate_limited("sync"))], openapi_extra=_BATCH_BODY,
             responses=_ERRORS)
async def post_batch(request: Request, settings: Annotated[Settings, Depends(get_settings)],
                     store: Annotated[Store, Depends(get_store)]) -> Response:
    """Store a site's anonymised batch; answer with what goes back down to it."""
    try:
        site_id = await authenticate(request, store)
        if _content_type(request) != "application/json":
            raise Refused(415, "send the batch as Content-Type: application/json")
        encoding = _encoding(request)
        if encoding not in ("gzip", "identity"):
            raise Refused(415, f"Content-Encoding {encoding[:40]!r} is not supported; use gzip")
        body = await read_body(request, settings.max_batch_bytes, "the batch")
        async with request.app.state.batch_slots:
            raw = await _off_loop(gunzip_capped, body, settings.max_batch_json_bytes) if encoding == "gzip" else body
            del body
            if len(raw) > settings.max_batch_json_bytes:
                raise Refused(413, f"the batch is over the {settings.max_batch_json_bytes}-byte limit")
            obj = await _off_loop(decode_batch, raw, settings.max_batch_json_bytes)
            del raw
            claimed = obj.get("site_id") if isinstance(obj, dict) else None
            if isinstance(claimed, str) and claimed != site_id:
                raise Refused(403, f"this key is {site_id!r}'s; a batch of site {claimed[:64]!r} needs that "
                              "site's key")
            try:
                batch: SyncBatch = await _off_loop(parse_batch, obj)
            except BatchError as error:
                raise Refused(error.status, error.message) from None
            del obj
            if batch.site_id != site_id:
                raise Refused(403, f"this key is {site_id!r}'s; a batch of another site needs that site's key")
            result: IngestResult = await _store_call(store.ingest, site_id, batch)
            down: Down = await _store_call(store.pending_down, site_id, events_after=batch.events_after,
                                           erasures_after=batch.erasures_after, limit=DOWN_LIMIT)
        return Response(batch_response(result, down), media_type="application/json")
    except Refused as refused:
        return refused.response()


def batch_response(result: IngestResult, down: Down) -> bytes:
    """The response body. Phone events are stored as their wire JSON and go out as they are, unparsed."""
    head = dumps_text({"stored": result.stored(), "duplicates": result.duplicates,
                       "refused_erased": result.refused_erased,
                       "erasures": [{"seq": e.seq, "visit_id": e.visit_id} for e in down.erasures],
                       "pack_wanted": result.pack_wanted, "more": down.more})
    events = ",".join(f'{{"seq":{int(e.seq)},"event":{e.event}}}' for e in down.events)
    return (head[:-1] + f',"events":[{events}]}}').encode("utf-8")


@router.put("/sync/v1/pack", status_code=204, dependencies=[Depends(rate_limited("sync"))],
            openapi_extra=_PACK_BODY, responses=_ERRORS)
async def put_pack(request: Request, settings: Annotated[Settings, Depends(get_settings)],
                   store: Annotated[Store, Depends(get_store)]) -> Response:
    """Store the site's current content pack (a tar file as `museum content build` writes it)."""
    try:
        site_id = await authenticate(request, store)
        sha256 = request.headers.get("x-pack-sha256", "").strip().lower()
        if _SHA256.match(sha256) is None:
            raise Refused(400, "send the pack's SHA-256 (64 hex digits) in the X-Pack-Sha256 header")
        if _content_type(request) not in ("", "application/x-tar", "application/octet-stream"):
            raise Refused(415, "send the pack as Content-Type: application/x-tar")
        if _encoding(request) != "identity":
            raise Refused(415, "send the pack as it is: no Content-Encoding (its media are already compressed)")
        current = await _store_call(store.pack_info, site_id)
        if current is not None and current.sha256 == sha256:
            return Response(status_code=204)  # already here: a retried upload, or another replica's
        async with request.app.state.pack_slots:
            await _receive_pack(request, settings, store, site_id, sha256)
        return Response(status_code=204)
    except Refused as refused:
        return refused.response()


async def _receive_pack(request: Request, settings: Settings, store: Store, site_id: str, sha256: str) -> None:
    cap = settings.max_pack_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise Refused(413, f"a pack of {int(declared)} bytes is over the {cap}-byte limit")
    folder = settings.data_dir / "incoming"
    await _off_loop(lambda: folder.mkdir(parents=True, exist_ok=True))
    path = folder / f"{site_id}-{secrets.token_hex(8)}.pack"
    try:
        digest = hashlib.sha256()
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise Refused(413, f"the pack is over the {cap}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)
            except ClientDisconnect:
                raise Refused(400, "the client went away before the end of the pack") from None
        if size == 0:
            raise Refused(400, "the body is empty: send the pack file")
        if digest.hexdigest() != sha256:
            raise Refused(400, "the body's SHA-256 is not X-Pack-Sha256: the upload was damaged or the header is "
                          "wrong; send it again")
        try:
            pack = await _off_loop(verify_pack, path)
        except ContentError as error:
            first = error.errors[0] if error.errors else str(error)
            raise Refused(400, f"not a valid content pack: {_strip_path(first, path)}") from None
        if pack.museum.site_id != site_id:
            raise Refused(400, f"this pack is site {pack.museum.site_id!r}'s, the key is {site_id!r}'s")
        await _store_call(store.put_pack, site_id, sha256, pack.pack_id, pack.pack_version, path)
    except OSError as error:
        log.error("sync: cannot hold an uploaded pack (%s)", error.strerror or type(error).__name__)
        raise Refused(503, "the companion cannot store the pack now (disk); retry later",
                      {"Retry-After": "60"}) from None
    finally:
        await _off_loop(lambda: path.unlink(missing_ok=True))


def _strip_path(message: str, path: Path) -> str:
    """A refusal names the problem, not our temporary file."""
    return message.replace(f"{path}: ", "").replace(str(path), "the pack")

