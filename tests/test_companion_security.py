"""The companion's web security against the real app under uvicorn: response headers on every kind of route,
CSRF refusals, per-client rate limits (time stands still: the clock is injected), the access log without any
visit token or client address, and the settings file's one-line errors."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from companion_server import CompanionServer

from companion_api.deps import get_clock
from companion_api.security import CSP, CSRF_COOKIE, RateLimiter
from companion_api.settings import Settings, load_settings
from companion_api.store import open_store
from content.pack import build_pack, file_sha256
from content.sample import SAMPLE_MUSEUM_PATH
from protocol.ids import new_visit_id

SITE = "demo"


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("store") / "companion.sqlite")


@pytest.fixture(scope="module")
def base_settings(tmp_path_factory: pytest.TempPathFactory, store_url: str) -> Settings:
    return Settings(store_url=store_url, data_dir=tmp_path_factory.mktemp("companion"),
                    base_url="https://visit.example.org", content_recheck_s=0.0)


@pytest.fixture(scope="module")
def store(base_settings: Settings) -> Iterator[Any]:
    store = open_store(base_settings.store_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture(scope="module")
def artwork(store: Any, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample pack, stored for the site as the sync stores it: the artwork pages have something to show."""
    path = tmp_path_factory.mktemp("pack") / "sample.pack"
    pack = build_pack(SAMPLE_MUSEUM_PATH.parent, path)
    store.put_pack(SITE, file_sha256(path), pack.pack_id, pack.pack_version, path)
    return pack.museum.artworks[0].artwork_id


@pytest.fixture(scope="module")
def server(base_settings: Settings, store: Any, artwork: str) -> Iterator[CompanionServer]:
    with CompanionServer(base_settings, store) as running:
        yield running


@pytest.fixture
def client(server: CompanionServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0, follow_redirects=False) as http:
        yield http


def routes(artwork: str) -> dict[str, tuple[str, str]]:
    token = new_visit_id()
    return {"artwork page": ("GET", f"/a/{SITE}/{artwork}"), "unknown work": ("GET", f"/a/{SITE}/no-such-work"),
            "visit page": ("GET", f"/v/{token}"), "visit pdf": ("GET", f"/v/{token}/pdf"),
            "visit export": ("GET", f"/v/{token}/export.json"), "forget": ("GET", f"/v/{token}/forget"),
            "health": ("GET", "/healthz"), "sync": ("POST", "/sync/v1/batch"), "pack": ("PUT", "/sync/v1/pack"),
            "service worker": ("GET", "/sw.js"), "not found": ("GET", "/nothing-here"),
            "openapi": ("GET", "/openapi.json")}


# --- headers -------------------------------------------------------------------------------------------------------

def test_security_headers_on_every_route(client: httpx.Client, artwork: str) -> None:
    for name, (method, path) in routes(artwork).items():
        response = client.request(method, path)
        assert response.status_code < 500, (name, response.status_code)
        headers = response.headers
        assert headers["content-security-policy"] == CSP, name
        assert headers["referrer-policy"] == "no-referrer", name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY", name
        assert "strict-transport-security" not in headers, name  # plain HTTP here
        assert "server" not in headers, name
        if path.startswith("/v/"):
            assert headers["cache-control"] == "no-store", name
            assert headers["x-robots-tag"] == "noindex", name
        else:
            assert headers.get("cache-control") != "no-store" or path.startswith(("/sync/", "/healthz")), name
    worker = client.get("/sw.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["cache-control"] == "no-cache"
    assert client.get("/docs").status_code == 404  # the Swagger page would load a CDN's scripts


def test_errors_are_json_on_the_api_and_pages_elsewhere(client: httpx.Client) -> None:
    api = client.get("/sync/v1/nothing")
    assert api.status_code in (404, 405) and "error" in api.json()
    assert client.get("/sync/v1/batch").json()["error"]  # wrong method: 405, still JSON
    page = client.get("/nothing-here")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_hsts_only_over_https(base_settings: Settings, store: Any, artwork: str) -> None:
    cases = [(replace(base_settings, https=True), {}, True),
             (replace(base_settings, trust_proxy=True), {"X-Forwarded-Proto": "https"}, True),
             (replace(base_settings, trust_proxy=True), {"X-Forwarded-Proto": "http"}, False),
             (base_settings, {"X-Forwarded-Proto": "https"}, False)]  # an untrusted header changes nothing
    for settings, headers, hsts in cases:
        with CompanionServer(settings, store) as server, httpx.Client(base_url=server.url) as http:
            response = http.get(f"/a/{SITE}/{artwork}", headers=headers)
            assert response.status_code == 200
            assert (response.headers.get("strict-transport-security") == "max-age=31536000") is hsts, headers
            cookie = response.headers["set-cookie"]
            assert cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert ("Secure" in cookie) is hsts


# --- CSRF ----------------------------------------------------------------------------------------------------------

def test_forms_without_the_matching_token_or_from_elsewhere_are_refused(client: httpx.Client, artwork: str) -> None:
    page = client.get(f"/a/{SITE}/{artwork}")
    token = page.cookies[CSRF_COOKIE]
    assert f'value="{token}"' in page.text  # the hidden field of the save form
    save = f"/a/{SITE}/{artwork}/save"
    cookies = {CSRF_COOKIE: token}

    def send(data: dict[str, str], *, jar: dict[str, str] | None = None, **headers: str) -> httpx.Response:
        with httpx.Client(base_url=str(client.base_url), cookies=jar or {}, headers={"Accept-Language": "en"}) as fresh:
            return fresh.post(save, data=data, headers=headers)

    for response in (send({}), send({"csrf_token": token}), send({}, jar=cookies),
                     send({"csrf_token": "x" * 43}, jar=cookies),
                     send({"csrf_token": token}, jar=cookies, origin="https://evil.example"),
                     send({"csrf_token": token}, jar=cookies, referer="https://evil.example/page")):
        assert response.status_code == 403
        assert "reload the page" in response.text
        assert "museum_visit" not in response.headers.get("set-cookie", "")
    # Our own pages' forms: `Origin: null` (the no-referrer policy), our origin, or no Origin at all.
    for headers in ({"origin": "null"}, {"origin": "https://visit.example.org"}, {}):
        response = send({"csrf_token": token}, jar=cookies, **headers)
        assert response.status_code == 303, (headers, response.status_code)
        assert "museum_visit=" in response.headers["set-cookie"]


# --- rate limits ---------------------------------------------------------------------------------------------------

def test_token_and_sync_endpoints_are_rate_limited_per_client(base_settings: Settings, store: Any) -> None:
    settings = replace(base_settings, token_burst=3, token_per_s=0.5, sync_burst=2, sync_per_s=1.0,
                       trust_proxy=True)
    now = [datetime(2026, 11, 25, 17, 0, tzinfo=UTC)]
    server = CompanionServer(settings, store)
    server.app.dependency_overrides[get_clock] = lambda: lambda: now[0]
    with server, httpx.Client(base_url=server.url) as http:
        token = new_visit_id()
        answers = [http.get(f"/v/{token}").status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]  # unknown visit: 404, until the bucket is empty
        limited = http.get(f"/v/{token}/export.json")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert limited.headers["cache-control"] == "no-store"
        # Another client (behind the trusted proxy) has its own bucket; the phone pages are not limited.
        assert http.get(f"/v/{token}", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404
        assert http.get("/healthz").status_code == 200
        now[0] += timedelta(seconds=2)
        assert http.get(f"/v/{token}").status_code == 404
        assert http.get(f"/v/{token}").status_code == 429

        sync = [http.post("/sync/v1/batch", content=b"{}").status_code for _ in range(3)]
        assert sync == [401, 401, 429]
        refused = http.post("/sync/v1/batch", content=b"{}")
        assert refused.json() == {"error": refused.json()["error"]} and refused.headers["retry-after"] == "1"


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter({"token": (1.0, 2)}, max_clients=10)
    for client in range(1000):
        assert limiter.take("token", f"10.0.{client // 256}.{client % 256}", 0.0) == 0.0
    assert len(limiter) == 10
    assert limiter.take("token", "10.0.3.231", 0.0) == 0.0  # recent: still known, one token left
    assert limiter.take("token", "10.0.3.231", 0.0) == 1.0
    assert limiter.take("token", "10.0.3.231", -50.0) == 1.0  # a clock stepping back refills nothing


# --- the access log ------------------------------------------------------------------------------------------------

def test_the_log_never_holds_a_visit_token_nor_a_client_address(base_settings: Settings, store: Any, artwork: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    token = new_visit_id()
    server = CompanionServer(base_settings, store)

    @server.app.get("/boom/{anything:path}")
    def boom(anything: str) -> None:
        raise RuntimeError(f"failed on /v/{token} for /{anything}")

    caplog.set_level(logging.DEBUG)
    with server, httpx.Client(base_url=server.url) as http:
        http.get(f"/v/{token}")
        http.get(f"/v/{token}/pdf?again=/v/{token}")
        http.get(f"/a/{SITE}/{artwork}?next=%2Fv%2F{token}%2Fjoin", headers={"Referer": f"https://x/v/{token}"})
        http.post(f"/v/{token}/forget", data={"csrf_token": "nope"})
        assert http.get(f"/boom/v/{token}").status_code == 500
    server_side = [record for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{record.getMessage()}\n{record.exc_text or ''}" for record in server_side)
    lines = [record.getMessage() for record in caplog.records if record.name == "companion.access"]
    assert any(line.startswith("GET /v/[token] 404 ") for line in lines), lines
    assert any("/v/[token]/pdf?again=/v/[token] " in line for line in lines), lines
    assert any("next=%2Fv%2F[token]%2Fjoin" in line for line in lines), lines
    assert any(line.startswith("GET /boom/v/[token] 500") for line in lines), lines
    assert any("RuntimeError" in record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR)
    assert token not in text
    assert "127.0.0.1" not in "\n".join(lines)


def test_sync_log_lines_hold_no_key(base_settings: Settings, store: Any, caplog: pytest.LogCaptureFixture) -> None:
    key = store.enroll_site("logged")
    caplog.set_level(logging.DEBUG)
    with CompanionServer(base_settings, store) as server, httpx.Client(base_url=server.url) as http:
        body = gzip.compress(json.dumps({"v": 1, "site_id": "logged"}).encode())
        response = http.post("/sync/v1/batch", content=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert response.status_code == 200
    assert key.split(".", 1)[1] not in "\n".join(record.getMessage() for record in caplog.records)


# --- the settings file ---------------------------------------------------------------------------------------------

def test_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "companion.toml"
    path.write_text('base_url = "https://visit.example.org/"\nstore = "c.sqlite"\n[retention]\nvisit_days = 30\n'
                    '[rate_limits]\ntoken_burst = 5\n')
    settings = load_settings(path)
    assert settings.base_url == "https://visit.example.org" and settings.visit_days == 30
    assert settings.store_url == str(tmp_path / "c.sqlite") and settings.data_dir == tmp_path / "data"
    assert settings.token_burst == 5 and settings.analytics_days == 760 and settings.https is None

    def error(text: str) -> str:
        path.write_text(text)
        with pytest.raises((ValueError, OSError)) as caught:
            load_settings(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message
        return message

    assert "base_url" in error('store = "x"\n')
    assert "no path" in error('base_url = "https://visit.example.org/app"\n')
    assert "visit_days" in error('base_url = "https://v.example"\n[retention]\nvisit_days = 0\n')
    assert "unknown setting" in error('base_url = "https://v.example"\nbase_ulr = 1\n')
    assert "TOML" in error('base_url = "https://v.example\n')
    assert "https" in error('base_url = "https://v.example"\nhttps = "yes"\n')
    assert "table" in error('base_url = "https://v.example"\nlimits = 3\n')
    path.unlink()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(path)
