"""Security of the web app: response headers, CSRF protection of forms, per-client rate limits.

Headers (every response): a CSP that allows nothing but this origin and no inline script or style, no MIME
sniffing, no framing, `Referrer-Policy: no-referrer` (a take-home URL is a capability: it must never reach another
site in a Referer), HSTS when the request came over HTTPS. Under `/v/` also `Cache-Control: no-store` (no shared
cache or back/forward cache keeps a visit) and `X-Robots-Tag: noindex`.

CSRF: double-submit. `csrf_token(request)` is put in a hidden field of every form and in the cookie `museum_csrf`
(HttpOnly, SameSite=Strict, Secure on HTTPS); `check_csrf` wants both equal, and an Origin (or Referer) naming this
host when the browser sends one. With our no-referrer policy browsers send `Origin: null` on our own forms, which
is accepted: the strict cookie a cross-site page can neither read nor send is what protects them.

Rate limits: token buckets per client and per bucket ("token" for `/v/…`, "sync" for `/sync/…`), in memory, at
most `rate_clients` clients (the least recently seen forgotten first). The client is its address (an IPv6 client
by its /64, which one host can fill), or with `trust_proxy` the first address of X-Forwarded-For. Addresses stay
in this process's memory and are never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from companion_api.deps import Clock, get_clock, get_settings
from companion_api.settings import Settings

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"
CSRF_COOKIE = "museum_csrf"
CSRF_FIELD = "csrf_token"
CSRF_REFUSED = ("This form has expired or was sent from another site, so nothing was changed. "
                "Go back, reload the page and try again.")
_CSRF_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
_SCOPE_KEY = "museum.security"

_COMMON_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]
_REPLACED = {name for name, _ in _COMMON_HEADERS}


@dataclass
class _RequestSecurity:
    """Per request, shared through the ASGI scope: what `csrf_token` asks the middleware to set."""

    https: bool
    new_csrf: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_https(scope: Scope, settings: Settings) -> bool:
    """Whether the visitor's connection is HTTPS: the setting when forced, else the request's scheme, or behind
    a trusted proxy its X-Forwarded-Proto."""
    if settings.https is not None:
        return settings.https
    if scope.get("scheme") in ("https", "wss"):
        return True
    if settings.trust_proxy:
        proto = Headers(scope=scope).get("x-forwarded-proto", "")
        return proto.split(",")[0].strip().lower() == "https"
    return False


class SecurityHeadersMiddleware:
    """Pure ASGI: adds the headers above to every HTTP response and the CSRF cookie when one was issued."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _RequestSecurity(https=is_https(scope, self.settings))
        scope[_SCOPE_KEY] = state
        if state.https and scope.get("scheme") == "http":
            # Behind a TLS proxy: the routes' `request.url` (and their Secure cookies) see the visitor's scheme.
            scope["scheme"] = "https"
        capability = scope.get("path", "").startswith("/v/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                headers.extend(_COMMON_HEADERS)
                if capability:
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"cache-control", b"x-robots-tag")]
                    headers += [(b"cache-control", b"no-store"), (b"x-robots-tag", b"noindex")]
                if state.https:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                if state.new_csrf is not None:
                    headers.append((b"set-cookie", _csrf_cookie(state.new_csrf, state.https).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def _csrf_cookie(token: str, https: bool) -> str:
    # No Max-Age: a session cookie, renewed by the next page; Path=/ so every form of the site shares it.
    return f"{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if https else "")


def request_is_https(request: Request) -> bool:
    """Whether this request came over HTTPS (for the routes' own cookies: Secure only then)."""
    state = request.scope.get(_SCOPE_KEY)
    if isinstance(state, _RequestSecurity):
        return state.https
    return is_https(request.scope, request.app.state.settings)


# --- CSRF -----------------------------------------------------------------------------------------------------

def csrf_token(request: Request) -> str:
    """The token to put in a form's hidden field `csrf_token`: the visitor's cookie, or a new one that the
    middleware sets on this response."""
    state = request.scope.get(_SCOPE_KEY)
    if isinstance(state, _RequestSecurity) and state.new_csrf is not None:
        return state.new_csrf
    current = request.cookies.get(CSRF_COOKIE, "")
    if _CSRF_TOKEN.match(current):
        return current
    token = secrets.token_urlsafe(32)
    if isinstance(state, _RequestSecurity):
        state.new_csrf = token
    return token


def check_csrf(request: Request, form_token: str | None) -> None:
    """Refuse (HTTP 403, with a message a visitor understands) a form whose token is not the cookie's, or that
    a browser says came from another origin."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if (not isinstance(form_token, str) or not _CSRF_TOKEN.match(cookie)
            or not hmac.compare_digest(cookie.encode(), form_token.encode("utf-8", "replace"))):
        raise HTTPException(403, detail=CSRF_REFUSED)
    origin = request.headers.get("origin")
    # The Referer only when there is no Origin: our own no-referrer policy withholds it from our forms.
    source = origin if origin is not None and origin != "null" else request.headers.get("referer")
    if source is not None and source != "null" and _host_of(source) not in _own_hosts(request):
        raise HTTPException(403, detail=CSRF_REFUSED)


def _host_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if port is None or port == default else f"{host}:{port}"


def _normal_host(netloc: str) -> str | None:
    return _host_of(f"http://{netloc}") if netloc else None


def _own_hosts(request: Request) -> set[str | None]:
    settings: Settings = request.app.state.settings
    hosts = {_host_of(settings.base_url), _normal_host(request.headers.get("host", ""))}
    if settings.trust_proxy:
        forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        hosts.add(_normal_host(forwarded))
    hosts.discard(None)
    # Host names compare without the port of the other scheme: behind a TLS proxy the app sees http://host:80.
    hosts |= {h.rsplit(":", 1)[0] for h in hosts if h and ":" in h and not h.endswith("]")}
    return hosts


# --- rate limits ----------------------------------------------------------------------------------------------

@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per (bucket, client); bounded memory (LRU). Thread-safe."""

    def __init__(self, rates: dict[str, tuple[float, int]], max_clients: int) -> None:
        self._rates = rates
        self._max = max_clients
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls({"token": (settings.token_per_s, settings.token_burst),
                    "sync": (settings.sync_per_s, settings.sync_burst)}, settings.rate_clients)

    def take(self, bucket: str, client: str, now: float) -> float:
        """Take one token; 0 when allowed, else the seconds until one is available."""
        per_s, burst = self._rates[bucket]
        key = (bucket, client)
        with self._lock:
            state = self._buckets.get(key)
            if state is None:
                state = _Bucket(float(burst), now)
                self._buckets[key] = state
                while len(self._buckets) > self._max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                # A clock stepping back refills nothing rather than draining the bucket.
                state.tokens = min(float(burst), state.tokens + max(0.0, now - state.at) * per_s)
                state.at = max(state.at, now)
            if state.tokens >= 1.0:
                state.tokens -= 1.0
                return 0.0
            return (1.0 - state.tokens) / per_s

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(request: Request, settings: Settings) -> str:
    """Who the limit counts against: the client's address, an IPv6 one by its /64."""
    address = request.client.host if request.client is not None else ""
    if settings.trust_proxy:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            address = forwarded
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def rate_limited(bucket: str) -> Callable[..., Awaitable[None]]:
    """A dependency refusing (429 with Retry-After) a client that has emptied its `bucket` ("token", "sync")."""
    if bucket not in ("token", "sync"):
        raise ValueError(f"unknown rate-limit bucket {bucket!r}")

    async def limit(request: Request, settings: Annotated[Settings, Depends(get_settings)],
                    clock: Annotated[Clock, Depends(get_clock)]) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        wait = limiter.take(bucket, client_key(request, settings), clock().timestamp())
        if wait > 0:
            raise HTTPException(429, detail="too many requests; wait and try again",
                                headers={"Retry-After": str(max(1, math.ceil(wait)))})

    limit.__name__ = f"rate_limited_{bucket}"
    return limit
