"""The sites' sync API of the companion (`POST /sync/v1/batch`, `PUT /sync/v1/pack`) against the real app under
uvicorn and a real store: who may call it, what it refuses and how (a 4xx with a JSON reason, never a 500),
idempotency, what goes back down, the content pack and the catalogue built from it."""

from __future__ import annotations

import gzip
import json
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from companion_server import CompanionServer
from companion_support import pg_database
from support import free_port, wait_until

from companion_api.model import JoinRow, TakeHomeRow
from companion_api.settings import Settings
from companion_api.store import open_store
from content.pack import build_pack, file_sha256
from content.sample import SAMPLE_MUSEUM_PATH
from protocol.codec import encode_event
from protocol.events import ArtworkViewed
from protocol.ids import new_visit_id, utc_now, visit_id_for

SITE = "demo"  # the sample museum's site
REPO = Path(__file__).resolve().parent.parent
PERIOD = "2026-11-25T17:00:00.000Z"
DAY = "2026-11-25"


# --- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The whole module runs on both engines (PostgreSQL: a fresh database, skipped with the reason when there is
    no server, failed under CI=true)."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("store") / "companion.sqlite")
    else:
        with pg_database() as url:
            yield url


@pytest.fixture(scope="module")
def pack_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pack") / "sample.pack"
    build_pack(SAMPLE_MUSEUM_PATH.parent, path)
    return path


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, store_url: str) -> Settings:
    data = tmp_path_factory.mktemp("companion")
    return Settings(store_url=store_url, data_dir=data, base_url="http://visit.example.org",
                    max_batch_bytes=256 * 1024, max_batch_json_bytes=2 * 1024 * 1024, max_pack_bytes=4 * 1024 * 1024,
                    sync_burst=100_000, sync_per_s=1000.0, content_recheck_s=0.0)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Any]:
    store = open_store(settings.store_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture(scope="module")
def server(settings: Settings, store: Any) -> Iterator[CompanionServer]:
    with CompanionServer(settings, store) as running:
        yield running


@pytest.fixture(scope="module")
def key(store: Any) -> str:
    return str(store.enroll_site(SITE))


@pytest.fixture(scope="module")
def client(server: CompanionServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


# --- helpers ---------------------------------------------------------------------------------------------------

def digest() -> str:
    return secrets.token_urlsafe(18)


def visit() -> str:
    return visit_id_for(new_visit_id())


def analytics_row(uid: str | None = None, visitor: str | None = None) -> list[Any]:
    return [uid or digest(), "artwork.viewed", 1, "kiosk-01", PERIOD, visitor,
            {"artwork_id": "durer-young-hare", "source": "kiosk"}]


def batch(**parts: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, "site_id": SITE, "analytics": [], "take_home": [], "joins": [], "erasures": [],
                            "events_after": 0, "erasures_after": 0, "pack": None}
    body.update(parts)
    return body


def post(client: httpx.Client, key: str | None, body: Any, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    data = raw if raw is not None else gzip.compress(json.dumps(body).encode(), compresslevel=1)
    sent = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    sent.update(headers or {})
    return client.post("/sync/v1/batch", content=data, headers=sent)


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and error
    for word in words:
        assert word in error, error
    return error


# --- authentication -----------------------------------------------------------------------------------------------

def test_refuses_a_request_without_a_valid_site_key(client: httpx.Client, key: str) -> None:
    refused(post(client, None, batch()), 401, "Authorization")
    assert post(client, None, batch()).headers["www-authenticate"] == "Bearer"
    refused(post(client, None, batch(), headers={"Authorization": f"Basic {key}"}), 401)
    refused(post(client, "demo." + secrets.token_urlsafe(32), batch()), 401, "enroll-site")
    refused(post(client, "x" * 10_000, batch()), 401)
    refused(post(client, "nowhere." + secrets.token_urlsafe(32), batch()), 401, "not enrolled")
    assert post(client, key, batch()).status_code == 200


def test_a_site_that_is_not_enrolled_is_refused_and_rotation_retires_the_old_key(client: httpx.Client,
                                                                                store: Any) -> None:
    old = store.enroll_site("rotating")
    assert post(client, old, batch(site_id="rotating")).status_code == 200
    new = store.enroll_site("rotating")
    refused(post(client, old, batch(site_id="rotating")), 401)
    assert post(client, new, batch(site_id="rotating")).status_code == 200


def test_a_batch_for_another_site_is_forbidden(client: httpx.Client, key: str, store: Any) -> None:
    store.enroll_site("other-site")
    refused(post(client, key, batch(site_id="other-site")), 403, "demo")
    before = store.analytics_count()
    refused(post(client, key, batch(site_id="other-site", analytics=[analytics_row()])), 403)
    assert store.analytics_count() == before


# --- bodies refused -----------------------------------------------------------------------------------------------

def test_wrong_content_type_or_encoding(client: httpx.Client, key: str) -> None:
    refused(post(client, key, batch(), headers={"Content-Type": "text/plain"}), 415, "application/json")
    refused(post(client, key, batch(), headers={"Content-Encoding": "br"}), 415, "gzip")
    plain = json.dumps(batch()).encode()
    assert post(client, key, None, raw=plain, headers={"Content-Encoding": "identity"}).status_code == 200


def test_oversized_bodies_are_refused_with_413(client: httpx.Client, key: str, settings: Settings) -> None:
    noise = random.Random(1).randbytes(settings.max_batch_bytes + 1)
    refused(post(client, key, None, raw=noise), 413, "limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while the body streams in
        for start in range(0, len(noise), 65536):
            yield noise[start:start + 65536]

    response = client.post("/sync/v1/batch", content=chunks(), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Encoding": "gzip"})
    refused(response, 413, "limit")


def test_a_gzip_bomb_stops_at_the_decompressed_cap(client: httpx.Client, key: str, settings: Settings) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()  # 64 MiB in ~64 KiB
    assert len(bomb) < settings.max_batch_bytes
    refused(post(client, key, None, raw=bomb), 413, "inflates")
    # An uncompressed body over the JSON cap is refused too (it is also over the compressed cap here).
    refused(post(client, key, None, raw=b" " * (settings.max_batch_bytes + 10), headers={"Content-Encoding": ""}),
            413)


def test_too_many_rows_is_413(client: httpx.Client, key: str) -> None:
    rows = [[visit(), "a", "opened", DAY, None] for _ in range(5001)]
    refused(post(client, key, batch(joins=[[r[0], r[0], DAY] for r in rows])), 413, "joins")


@pytest.mark.parametrize(("raw", "words"), [
    (b"not gzip at all", ("gzip",)),
    (gzip.compress(b'{"v": 1, "site_id": "demo"}')[:-12], ("cut short",)),
    (gzip.compress(b"{not json"), ("JSON",)),
    (gzip.compress(b"\xff\xfe{}"), ("UTF-8",)),
    (gzip.compress(b"[1, 2, 3]"), ("object",)),
    (gzip.compress(b'{"v": 2, "site_id": "demo"}'), ("version",)),
    (gzip.compress(b'{"v": 1, "site_id": "demo", "analytics": {}}'), ("analytics",)),
    (gzip.compress(b'{"v": 1, "site_id": "demo", "secret": 1}'), ("unknown",)),
    (gzip.compress(b'{"v": 1, "site_id": "demo", "events_after": -1}'), ("events_after",)),
    (gzip.compress(b'{"v": 1, "site_id": "demo", "x": NaN}'), ("number",)),
    (gzip.compress(b"{}") + b"trailing", ("after the end",)),
])
def test_malformed_bodies_are_400(client: httpx.Client, key: str, raw: bytes, words: tuple[str, ...]) -> None:
    refused(post(client, key, None, raw=raw), 400, *words)


@pytest.mark.parametrize(("part", "row", "words"), [
    ("take_home", ["not a visit id!", "durer-young-hare", "opened", DAY, None], ("take_home[1]", "visit_id")),
    ("take_home", [None, "durer-young-hare", "stolen", DAY, None], ("take_home[1]", "kind")),
    ("take_home", [None, "durer-young-hare", "opened", "25/11/2026", None], ("take_home[1]", "day")),
    ("take_home", [None, "durer-young-hare", "opened", DAY, -3], ("take_home[1]", "dwell_s")),
    ("joins", [None, "short", DAY], ("joins[1]", "other_visit_id")),
    ("analytics", ["short", "artwork.viewed", 1, "kiosk-01", PERIOD, None, {}], ("analytics[1]", "uid")),
    ("analytics", [None, "artwork.viewed", 1, "KIOSK 01", PERIOD, None, {}], ("analytics[1]", "device_id")),
    ("erasures", [None, "x"], ("erasures[1]", "visitor")),
])
def test_one_bad_row_refuses_the_whole_batch_with_422(client: httpx.Client, key: str, store: Any, part: str,
                                                      row: list[Any], words: tuple[str, ...]) -> None:
    row = [visit() if value is None and index == 0 and part != "analytics" else value
           for index, value in enumerate(row)]
    if part == "analytics" and row[0] is None:
        row[0] = digest()
    if part == "joins":
        row[0] = visit()
    good = {"take_home": [visit(), "durer-young-hare", "opened", DAY, None], "joins": [visit(), visit(), DAY],
            "analytics": analytics_row(), "erasures": [visit(), digest()]}[part]
    before = store.analytics_count()
    refused(post(client, key, batch(**{part: [good, row]}), ), 422, *words)
    assert store.analytics_count() == before


def test_no_input_makes_a_500(client: httpx.Client, key: str) -> None:
    rng = random.Random(9)
    bodies = [b"", b"{}", b"null", b"\x1f\x8b", gzip.compress(b""), gzip.compress(b"null"),
              gzip.compress(json.dumps(batch(analytics=[[1, 2, 3, 4, 5, 6, 7]])).encode()),
              gzip.compress(json.dumps(batch(take_home=[[visit(), "a", "opened", DAY, 1e308 * 10]])).encode()),
              gzip.compress(b'{"v": 1, "site_id": "demo", "pack": {"sha256": "0"}}'),
              gzip.compress(b"[" * 100_000), gzip.compress(b'"\\ud800"')]
    bodies += [rng.randbytes(rng.randrange(1, 3000)) for _ in range(20)]
    for body in bodies:
        for encoding in ("gzip", "identity"):
            response = post(client, key, None, raw=body, headers={"Content-Encoding": encoding})
            assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text)
            assert "error" in response.json()
    response = client.put("/sync/v1/pack", content=b"x", headers={"Authorization": f"Bearer {key}",
                                                                  "X-Pack-Sha256": "zz"})
    refused(response, 400, "X-Pack-Sha256")


# --- storing and what comes back ------------------------------------------------------------------------------

def test_the_same_batch_twice_is_stored_once(client: httpx.Client, key: str, store: Any) -> None:
    a, b = visit(), visit()
    body = batch(analytics=[analytics_row() for _ in range(50)],
                 take_home=[[a, "durer-young-hare", "collected", DAY, None], [a, "durer-young-hare", "lingered",
                                                                               DAY, 42.5]],
                 joins=[[a, b, DAY]])
    before = store.analytics_count()
    first = post(client, key, body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["stored"] == {"analytics": 50, "take_home": 2, "joins": 1, "erasures": 0}
    assert answer["duplicates"] == 0
    assert set(answer) >= {"stored", "duplicates", "erasures", "events", "pack_wanted", "more"}
    again = post(client, key, body).json()
    assert again["stored"] == {"analytics": 0, "take_home": 0, "joins": 0, "erasures": 0}
    assert again["duplicates"] == 53
    assert store.analytics_count() == before + 50
    view = store.visit(a)
    assert view is not None and {item.kind for item in view.items} == {"collected", "lingered"}
    assert b in view.visit_ids


def test_phone_events_and_erasures_go_down_until_acknowledged(client: httpx.Client, key: str, store: Any) -> None:
    head = post(client, key, batch()).json()
    events_after = max([0, *(e["seq"] for e in head["events"])])
    erasures_after = max([0, *(e["seq"] for e in head["erasures"])])
    phone_visit = visit()
    event = ArtworkViewed.create(site_id=SITE, device_id="companion", visit_id=phone_visit, occurred_at=utc_now(),
                                 artwork_id="durer-young-hare", source="qr", language="fr")
    wire = encode_event(event).decode()
    seq = store.record_phone_event(SITE, wire, phone_visit,
                                   take_home=TakeHomeRow(phone_visit, "durer-young-hare", "opened", SITE, DAY, None))
    answer = post(client, key, batch(events_after=events_after, erasures_after=erasures_after)).json()
    assert answer["events"] == [{"seq": seq, "event": json.loads(wire)}]
    assert answer["more"] is False

    gone = visit()
    post(client, key, batch(take_home=[[gone, "durer-young-hare", "collected", DAY, None]]))
    store.record_phone_event(SITE, wire, gone, join=JoinRow(gone, phone_visit, SITE, DAY))
    assert store.forget(gone) >= 1
    answer = post(client, key, batch(events_after=seq, erasures_after=erasures_after)).json()
    erased = {e["visit_id"] for e in answer["erasures"]}
    assert gone in erased
    assert all(e["seq"] > erasures_after for e in answer["erasures"])
    last = max(e["seq"] for e in answer["erasures"])
    # A record of the erased visit arriving late (from a device's outbox) is dropped, not stored again.
    late = post(client, key, batch(take_home=[[gone, "durer-young-hare", "opened", DAY, None]],
                                   events_after=max([seq, *(e["seq"] for e in answer["events"])]),
                                   erasures_after=last)).json()
    assert late["refused_erased"] == 1 and late["stored"]["take_home"] == 0
    assert late["erasures"] == [] and late["events"] == []
    assert store.visit(gone) is None


# --- the content pack -------------------------------------------------------------------------------------------

def put(client: httpx.Client, key: str, data: bytes, sha256: str) -> httpx.Response:
    return client.put("/sync/v1/pack", content=data, headers={
        "Authorization": f"Bearer {key}", "X-Pack-Sha256": sha256, "Content-Type": "application/x-tar"})


def test_pack_upload_is_checked_then_served(client: httpx.Client, key: str, store: Any, pack_file: Path,
                                            server: CompanionServer, settings: Settings) -> None:
    data = pack_file.read_bytes()
    sha = file_sha256(pack_file)
    ref = {"sha256": sha, "pack_id": "demo-museum", "pack_version": 1}
    assert post(client, key, batch(pack=ref)).json()["pack_wanted"] is True

    refused(put(client, "demo.nope", data, sha), 401)
    refused(put(client, key, data, "0" * 64), 400, "SHA-256")
    half = data[:len(data) // 2]
    refused(put(client, key, half, file_sha256_bytes(half)), 400, "not a valid content pack")
    refused(put(client, key, b"", file_sha256_bytes(b"")), 400)
    other = store.enroll_site("elsewhere")
    refused(put(client, other, data, sha), 400, "demo")
    assert store.pack_info("elsewhere") is None

    assert put(client, key, data, sha).status_code == 204
    assert put(client, key, data, sha).status_code == 204  # a retried upload
    assert store.pack_info(SITE).sha256 == sha
    assert post(client, key, batch(pack=ref)).json()["pack_wanted"] is False
    assert not any((settings.data_dir / "incoming").iterdir())  # no upload left behind

    catalog = server.app.state.catalog
    loaded = catalog.museum(SITE)
    assert loaded is not None and loaded.sha256 == sha and loaded.museum.site_id == SITE
    image = loaded.museum.artworks[0].media.image.file
    assert catalog.media_file(SITE, sha, image) == (loaded.root / image).resolve()
    for sneaky in ("../museum.json", "media/../museum.json", "/etc/passwd", "media/../../../../etc/passwd",
                   "media\\x.png", "media/", ""):
        assert catalog.media_file(SITE, sha, sneaky) is None, sneaky
    assert catalog.media_file(SITE, "f" * 64, image) is None
    assert catalog.media_file("../demo", sha, image) is None

    page = client.get(f"/a/{SITE}/{loaded.museum.artworks[0].artwork_id}")
    assert page.status_code == 200


def test_an_oversized_pack_is_413(client: httpx.Client, key: str, settings: Settings) -> None:
    response = client.put("/sync/v1/pack", content=b"\0" * (settings.max_pack_bytes + 1), headers={
        "Authorization": f"Bearer {key}", "X-Pack-Sha256": "a" * 64})
    refused(response, 413)


def test_a_replica_with_an_empty_cache_rebuilds_it(store: Any, settings: Settings, tmp_path: Path, key: str,
                                                   client: httpx.Client, pack_file: Path) -> None:
    from companion_api.content_cache import Catalog

    if store.pack_info(SITE) is None:
        assert put(client, key, pack_file.read_bytes(), file_sha256(pack_file)).status_code == 204
    fresh = Catalog(store, tmp_path / "cache", recheck_s=60.0)
    loaded = fresh.museum(SITE)
    assert loaded is not None and (loaded.root / "museum.json").is_file()
    assert fresh.museum("nowhere") is None and fresh.museum("../x") is None


def test_healthz(client: httpx.Client, store: Any) -> None:
    answer = client.get("/healthz").json()
    assert answer["ok"] is True and answer["store"] in ("sqlite", "postgresql") and answer["schema"] >= 1


def file_sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- failures, retention, the content cache's bounds ----------------------------------------------------------

def test_a_store_failure_is_a_503_the_client_retries(tmp_path: Path) -> None:
    settings = Settings(store_url=str(tmp_path / "broken.sqlite"), data_dir=tmp_path / "data",
                        base_url="http://visit.example.org")
    broken = open_store(settings.store_url)
    broken.migrate()
    key = broken.enroll_site(SITE)
    with CompanionServer(settings, broken) as server, httpx.Client(base_url=server.url) as http:
        with sqlite3.connect(settings.store_url) as raw:  # a fault at a known point: the table is gone
            raw.execute("DROP TABLE sites")
        response = post(http, key, batch())
        refused(response, 503, "retry")
        assert response.headers["retry-after"]
    broken.close()


def test_the_service_purges_expired_visits_in_the_background(settings: Settings, store: Any, key: str) -> None:
    old = visit()
    server = CompanionServer(replace(settings, purge_every_s=0.05), store)
    # The service's clock stands the day after the visit until the test moves it: the purges that run meanwhile
    # (every 0.05 s) must find nothing to delete, however the machine schedules them.
    server.app.state.clock = lambda: datetime(2020, 1, 2, tzinfo=UTC)
    with server, httpx.Client(base_url=server.url) as http:
        assert post(http, key, batch(take_home=[[old, "durer-young-hare", "collected", "2020-01-01", None]])
                    ).json()["stored"]["take_home"] == 1
        assert store.visit(old) is not None
        server.app.state.clock = lambda: datetime(2030, 1, 1, tzinfo=UTC)
        assert wait_until(lambda: store.visit(old) is None, 60), "the purge did not run"
        assert server.app.state.purges >= 1


def test_the_cache_keeps_two_versions_per_site(store: Any, tmp_path: Path) -> None:
    from companion_api.content_cache import Catalog

    catalog = Catalog(store, tmp_path / "cache", recheck_s=0.0)
    shas = []
    for version in (1, 2, 3):
        source = tmp_path / f"source-{version}"
        shutil.copytree(SAMPLE_MUSEUM_PATH.parent, source)
        museum = json.loads((source / "museum.json").read_text())
        museum["pack_version"] = version
        (source / "museum.json").write_text(json.dumps(museum))
        pack = build_pack(source, tmp_path / f"{version}.pack")
        sha = file_sha256(tmp_path / f"{version}.pack")
        store.put_pack("cached-site", sha, pack.pack_id, version, tmp_path / f"{version}.pack")
        loaded = catalog.museum("cached-site")
        assert loaded is not None and loaded.sha256 == sha and loaded.museum.pack_version == version
        shas.append(sha)
    kept = {path.name for path in (tmp_path / "cache" / "packs" / "cached-site").iterdir()}
    assert kept == set(shas[1:])  # the current one and the one before it
    shutil.rmtree(tmp_path / "cache")  # an operator empties the cache: it is rebuilt
    again = catalog.museum("cached-site")
    assert again is not None and again.root.is_dir()


# --- the commands -----------------------------------------------------------------------------------------------

def write_config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "companion.toml"
    path.write_text(f'store = "{store_url}"\nbase_url = "http://visit.example.org"\ndata_dir = "data"\n')
    return path


def test_enroll_site_and_purge_commands(tmp_path: Path, store_url: str) -> None:
    from click.testing import CliRunner

    from companion_api.cli import companion

    config = write_config(tmp_path, store_url)
    runner = CliRunner()
    result = runner.invoke(companion, ["enroll-site", "cli-site", "--config", str(config)])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("cli-site.") and "\n" not in key  # the key alone on stdout
    assert "sync/<target>.key" in result.stderr and "0600" in result.stderr
    with open_store(store_url) as check:
        assert check.site_for_key(key) == "cli-site"

    result = runner.invoke(companion, ["purge", "--config", str(config)])
    assert result.exit_code == 0 and "purged" in result.stdout, result.output

    for arguments, words in ((["enroll-site", "Not A Site", "--config", str(config)], "not a site id"),
                             (["purge", "--config", str(tmp_path / "missing.toml")], "does not exist"),
                             (["enroll-site", "x", "--config", str(tmp_path)], "directory")):
        result = runner.invoke(companion, arguments)
        assert result.exit_code == 1 and words in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    config.write_text('store = "/nonexistent/folder/c.sqlite"\nbase_url = "http://visit.example.org"\n')
    result = runner.invoke(companion, ["purge", "--config", str(config)])
    assert result.exit_code == 1 and "cannot open the store" in result.stderr, result.output


def test_the_run_command_serves_until_stopped(tmp_path: Path) -> None:
    config = write_config(tmp_path, str(tmp_path / "run.sqlite"))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from companion_api.cli import companion; companion()", "run", "--config",
         str(config), "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return process.poll() is None and False

        assert wait_until(lambda: healthy() or process.poll() is not None, 30) and process.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["store"] == "sqlite"
        token = new_visit_id()
        assert httpx.get(f"http://127.0.0.1:{port}/v/{token}").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down cleanly, then ends by the signal it caught, as a process that did not catch it would.
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    assert "GET /v/[token] 404" in output and token not in output
