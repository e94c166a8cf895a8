"""Publishing content packs (`museum content publish`) and serving them (`museum content serve`).

Real things: a real Mosquitto receives the retained announcement, a raw device MQTT client reads it back, and the
HTTPS pack server runs on 127.0.0.1 with the site's certificate, fetched by `http.client` trusting the site CA."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import socket
import ssl
import tarfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from harness import device_config
from support import free_port, wait_until
from test_content import write_source

from broker import passwords
from broker.pack_server import PackServer
from broker.packs import pack_file_name, publish_pack
from broker.site import Site, acl_text
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink
from content.pack import build_pack, verify_pack
from museum.cli import main
from protocol.codec import decode_content
from protocol.messages import ContentAnnouncement
from protocol.topics import content_topic


def build(tmp_path: Path, version: int = 3, name: str = "pack.tar", now: datetime | None = None) -> Path:
    source = tmp_path / f"source-{version}"
    write_source(source)
    museum = source / "museum.json"
    museum.write_text(museum.read_text("utf-8").replace('"pack_version": 1', f'"pack_version": {version}'), "utf-8")
    pack = build_pack(source, tmp_path / name, now=now)
    assert pack.pack_version == version
    return tmp_path / name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output.strip().splitlines()


def receive_announcement(site: Site) -> ContentAnnouncement:
    """What a device sees on subscribing: the retained announcement, through its own credentials."""
    config = device_config(site, "kiosk-01")
    broker = config.broker
    link = MqttLink("kiosk-01", Endpoint(broker.host, broker.port), Credentials(broker.username, broker.password),
                    subscriptions=[(content_topic(site.site_id), 1)])
    received: list[bytes] = []
    try:
        assert link.wait_connected(60)
        assert wait_until(lambda: received.extend(m.payload for m in link.poll(0.1) if m.retained) or received, 60)
    finally:
        link.close()
    return decode_content(received[0])


# --- publishing -------------------------------------------------------------------------------------------

def test_publish_stores_the_pack_and_announces_where_to_fetch_it(make_site, make_broker, tmp_path) -> None:
    site = make_site(content_port=free_port())
    make_broker(site)
    pack = build(tmp_path)

    code, lines = run("content", "publish", str(pack), "--site", str(site.root))

    assert code == 0, lines
    stored = site.packs_dir / pack_file_name(_pack_id(pack), 3)
    assert stored.read_bytes() == pack.read_bytes()
    announcement = receive_announcement(site)
    assert announcement.url == f"https://{site.broker_host}:{site.content_port}/packs/{stored.name}"
    assert (announcement.sha256, announcement.size) == (sha256(pack), pack.stat().st_size)
    assert announcement.pack_version == "3"


def _pack_id(pack: Path) -> str:
    return verify_pack(pack).pack_id


def test_publish_does_not_take_over_the_hubs_session(make_site, make_broker, tmp_path) -> None:
    """The broker's client id is the username: publishing as the hub would disconnect the running hub."""
    site = make_site()
    make_broker(site)
    hub_lost: list[str] = []
    hub = ClientConfig.load(site.hub_config).broker
    link = MqttLink("hub", Endpoint(hub.host, hub.port), Credentials(hub.username, hub.password),
                    on_disconnected=hub_lost.append)
    try:
        assert link.wait_connected(60)
        publish_pack(site, build(tmp_path))
        link.poll(0.2)  # a takeover would have closed this connection before the announcement was acknowledged
        assert link.connected and hub_lost == []
    finally:
        link.close()


def test_a_bad_pack_is_refused_in_one_line_and_nothing_is_stored(site, tmp_path) -> None:
    pack = build(tmp_path)
    raw = bytearray(pack.read_bytes())
    with tarfile.open(pack) as tar:
        last = tar.getmembers()[-1]
    raw[last.offset_data] ^= 0xFF  # inside the last media member, wherever the archive's padding falls
    pack.write_bytes(bytes(raw))

    code, lines = run("content", "publish", str(pack), "--site", str(site.root))

    assert code == 1
    assert len(lines) == 1 and str(pack) in lines[0] and "museum content build" in lines[0], lines
    assert not site.packs_dir.exists() or list(site.packs_dir.iterdir()) == []


def test_publish_with_the_broker_down_says_so_in_one_line(site, tmp_path) -> None:
    code, lines = run("content", "publish", str(build(tmp_path)), "--site", str(site.root), "--timeout", "5")

    assert code == 1
    assert len(lines) == 1 and "museum broker run" in lines[0] and str(site.publisher_config) in lines[0], lines


def test_the_same_version_with_other_content_is_refused(site, broker, tmp_path) -> None:
    first = build(tmp_path / "a")
    publish_pack(site, first)
    other = build(tmp_path / "b", now=datetime(2020, 1, 1, tzinfo=UTC))  # the same name, other bytes
    assert sha256(other) != sha256(first)

    code, lines = run("content", "publish", str(other), "--site", str(site.root))

    assert code == 1 and len(lines) == 1 and "raise pack_version" in lines[0], lines
    assert publish_pack(site, first).announcement.sha256 == sha256(first)  # the same pack again: announced again


def test_only_the_newest_packs_are_kept(site, broker, tmp_path) -> None:
    names = []
    for version in range(1, 6):
        published = publish_pack(site, build(tmp_path, version, f"pack-{version}.tar"), keep=3)
        names.append(published.path.name)
    assert sorted(path.name for path in site.packs_dir.iterdir()) == sorted(names[-3:])


def test_a_site_made_before_the_publisher_account_gets_it_on_first_publish(make_site, make_broker,
                                                                             tmp_path) -> None:
    site = make_site()
    site.publisher_config.unlink()
    entries = passwords.read_password_file(site.password_file)
    passwords.write_password_file(site.password_file, {k: v for k, v in entries.items() if k != "publisher"})
    make_broker(site)

    published = publish_pack(site, build(tmp_path))  # creates the account, reloads the broker, then announces

    assert site.publisher_config.exists()
    assert receive_announcement(site) == published.announcement


def test_the_publisher_may_only_announce_content() -> None:
    acl = acl_text("s", []).split("user publisher\n", 1)[1].split("\n\n", 1)[0].strip().splitlines()
    assert acl == [f"topic readwrite {content_topic('s')}"]


# --- serving ----------------------------------------------------------------------------------------------

Served = tuple[PackServer, Path, ssl.SSLContext]


@pytest.fixture
def make_server(site: Site, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Factory: a pack server on 127.0.0.1 serving one stored pack; stopped at teardown."""
    pack = build(tmp_path)
    site.packs_dir.mkdir(parents=True)
    target = site.packs_dir / pack_file_name(_pack_id(pack), 3)
    shutil.copyfile(pack, target)
    started: list[tuple[PackServer, threading.Thread]] = []

    def make(max_connections: int = 4, timeout_s: float = 60.0) -> Served:
        server = PackServer(site.packs_dir, site.server_cert, site.server_key, "127.0.0.1", 0,
                            max_connections=max_connections, timeout_s=timeout_s)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server, target, ssl.create_default_context(cafile=str(site.ca_file))

    yield make
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(30)


@pytest.fixture
def served(make_server: Callable[..., Served]) -> Served:
    return make_server()


def request(served: tuple[PackServer, Path, ssl.SSLContext], path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    server, _, context = served
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=60)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_a_full_get_matches_the_announced_digest(site, broker, served) -> None:
    _, target, _ = served
    announcement = publish_pack(site, target)  # republishing the stored file: the same bytes, announced
    url = urlsplit(announcement.announcement.url)

    status, headers, body = request(served, url.path)

    assert status == 200
    assert hashlib.sha256(body).hexdigest() == announcement.announcement.sha256
    assert int(headers["content-length"]) == announcement.announcement.size == len(body)
    assert headers["accept-ranges"] == "bytes"


def test_a_range_request_resumes_from_the_middle(served) -> None:
    _, target, _ = served
    whole = target.read_bytes()
    middle = len(whole) // 2

    status, headers, body = request(served, f"/packs/{target.name}", headers={"Range": f"bytes={middle}-"})

    assert status == 206
    assert headers["content-range"] == f"bytes {middle}-{len(whole) - 1}/{len(whole)}"
    assert int(headers["content-length"]) == len(body) == len(whole) - middle
    assert whole[:middle] + body == whole
    status, _, body = request(served, f"/packs/{target.name}", headers={"Range": "bytes=10-19"})
    assert (status, body) == (206, whole[10:20])
    status, _, body = request(served, f"/packs/{target.name}", headers={"Range": "bytes=-5"})
    assert (status, body) == (206, whole[-5:])


def test_a_range_past_the_end_is_416(served) -> None:
    _, target, _ = served
    size = target.stat().st_size

    status, headers, body = request(served, f"/packs/{target.name}", headers={"Range": f"bytes={size}-"})

    assert (status, body) == (416, b"")
    assert headers["content-range"] == f"bytes */{size}"


def test_head_gives_the_size_without_the_body(served) -> None:
    _, target, _ = served
    status, headers, body = request(served, f"/packs/{target.name}", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) == target.stat().st_size


@pytest.mark.parametrize("path", ["/../site.toml", "/packs/../site.toml", "/packs/..%2fsite.toml",
                                  "/packs/%2e%2e/site.toml", "/packs/%2e%2e%2f%2e%2e%2fsite.toml", "/site.toml",
                                  "/packs/", "/packs", "/", "/packs/.publish-x.partial", "//etc/passwd",
                                  "/packs/..\\site.toml", "/tls/server.key"])
def test_nothing_but_a_pack_is_served(served, path: str) -> None:
    status, _, body = request(served, path)
    assert status == 404 and b"[" not in body and b"site_id" not in body


def test_other_methods_are_refused(served) -> None:
    _, target, _ = served
    status, _, _ = request(served, f"/packs/{target.name}", method="PUT")
    assert status == 501


def test_a_client_that_says_nothing_blocks_nobody(served) -> None:
    server, target, _ = served
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        assert wait_until(lambda: server.active == 1, 60)  # accepted, stuck before its TLS handshake

        status, _, body = request(served, f"/packs/{target.name}")

        assert status == 200 and body == target.read_bytes()
        assert server.active >= 1, "served only once the silent client was gone"
    finally:
        silent.close()


def test_a_silent_client_is_dropped_after_the_timeout(make_server) -> None:
    server, _, _ = make_server(timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as silent:
        assert silent.recv(1) == b""  # the server closed it; without a timeout this recv would wait 60 s and fail
    assert wait_until(lambda: server.active == 0, 60)


def test_connections_beyond_the_bound_are_turned_away(served) -> None:
    server, target, _ = served
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(4)]
    try:
        assert wait_until(lambda: server.active == 4, 60)
        with pytest.raises((ssl.SSLError, OSError)):
            request(served, f"/packs/{target.name}")
        assert server.turned_away >= 1
    finally:
        for sock in silent:
            sock.close()
    assert wait_until(lambda: server.active == 0, 60)
    assert request(served, f"/packs/{target.name}")[0] == 200


def test_serve_with_the_port_taken_says_so_in_one_line(site) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, lines = run("content", "serve", "--site", str(site.root), "--bind", "127.0.0.1", "--port",
                          str(taken.getsockname()[1]))
    assert code == 1 and len(lines) == 1 and "--port" in lines[0], lines

