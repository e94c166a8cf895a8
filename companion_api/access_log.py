"""The access log, with visit tokens redacted: a take-home URL `/v/<token>` is a capability (whoever has it opens
the visit), so no log line may hold one. Ours replaces uvicorn's: method, path (and query) with `/v/<token>`
written `/v/[token]`, status, duration. Never the client's address (an IP is personal data, and not needed to run
the service). Unhandled errors are caught here too and logged redacted, so neither uvicorn nor Starlette prints a
traceback holding the URL; and a redacting filter sits on uvicorn's own loggers for what they write themselves.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("companion.access")
errors = logging.getLogger("companion.error")

_TOKEN_IN_PATH = re.compile(r"(/v/)[^/?#&\s\"']+", re.IGNORECASE)
_TOKEN_ESCAPED = re.compile(r"(%2Fv%2F)(?:[A-Za-z0-9_.~+-]|%(?!2F)[0-9A-F]{2})+", re.IGNORECASE)
_TOKEN_PARAM = re.compile(r"(\btoken=)[^&\s\"']+", re.IGNORECASE)
REDACTED = "[token]"


def redact(text: str) -> str:
    """`text` with every visit token replaced by `[token]`: in a path or URL (`/v/<token>`), URL-encoded inside a
    query string (`%2Fv%2F<token>`) and as a `token=` parameter."""
    if "/v/" in text or "/V/" in text:
        text = _TOKEN_IN_PATH.sub(r"\1" + REDACTED, text)
    if "%2" in text:
        text = _TOKEN_ESCAPED.sub(r"\1" + REDACTED, text)
    if "oken=" in text or "OKEN=" in text:
        text = _TOKEN_PARAM.sub(r"\1" + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and the traceback text) with `redact`, for loggers we do not write ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call of someone else's: keep the bare format string
            message = str(record.msg)
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTERED = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "fastapi", "starlette",
             "companion", "companion.access", "companion.error")


def install_log_redaction() -> None:
    """Put the redacting filter on uvicorn's, Starlette's and our loggers (idempotent). A filter on a logger
    only sees what is logged on that very logger, hence the list."""
    for name in _FILTERED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging() -> None:
    """Log INFO and above to stderr, redacted (for `museum companion run` and each of its worker processes)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    install_log_redaction()
    # On the handlers too: a handler's filter sees every record that reaches it, from any logger.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class AccessLogMiddleware:
    """Outermost ASGI middleware of the app: one redacted line per request, and a redacted line (never a 500
    with a traceback naming the URL) for any exception a route lets through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            errors.error("unhandled %s on %s %s:\n%s", type(error).__name__, scope.get("method", "?"),
                         redact(_target(scope)), redact("".join(traceback.format_exception(error)).rstrip("\n")))
            if status == 0:
                status = 500
                await _send_500(send)
        finally:
            log.info("%s %s %d %.1fms", scope.get("method", "?"), redact(_target(scope)), status,
                     (time.perf_counter() - started) * 1000)


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path")
    # The path as sent (still percent-encoded), so a token cannot hide behind a decoded space or slash.
    path = raw.decode("latin-1") if isinstance(raw, bytes) else scope.get("root_path", "") + scope.get("path", "")
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _send_500(send: Send) -> None:
    body = b'{"error": "internal error; it has been logged"}'
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    try:
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception:  # the client is gone: nothing to tell it
        return
