"""The kiosk's content packs: fetched from the real HTTPS pack server with the site's CA, verified, installed.

Real things: packs built by `content.pack.build_pack`, served by `broker.pack_server.PackServer` on 127.0.0.1
with a site's certificate, fetched by `kiosk.pack_download` (requests), unpacked into a real folder. Faults are
made at known points: a `.part` cut at a known byte, a wrong hash in the announcement, a server that accepts and
never answers, a byte flipped in a known member."""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import free_port
from test_content import _flip_byte
from test_content_publish import build, sha256

from broker.pack_server import PackServer
from broker.packs import pack_file_name
from broker.site import Site
from bus.backoff import Backoff
from content.pack import verify_pack
from kiosk.pack_download import DownloadError, download, part_path
from kiosk.pack_store import PackRefused, PackStore
from kiosk.pack_updates import PackUpdater
from protocol.events import ContentPackApplied
from protocol.messages import ContentAnnouncement

Announce = Callable[..., ContentAnnouncement]


@pytest.fixture
def packs(tmp_path: Path) -> Callable[[int], Path]:
    """Factory: the pack of the test museum at a version, built once per version."""
    built: dict[int, Path] = {}

    def pack(version: int) -> Path:
        if version not in built:
            built[version] = build(tmp_path / f"built-{version}", version)
        return built[version]

    (tmp_path / "kiosk").mkdir()
    return pack


@pytest.fixture
def served(site: Site, packs: Callable[[int], Path]) -> Iterator[Announce]:
    """A pack server on 127.0.0.1 for `site`; yields `announce(version, host=..., **changes)`, which publishes
    that version's pack in the site's packs folder and returns the announcement a kiosk would receive."""
    site.packs_dir.mkdir(parents=True)
    server = PackServer(site.packs_dir, site.server_cert, site.server_key, "127.0.0.1", 0, timeout_s=60.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def announce(version: int, host: str = "localhost", **changes: object) -> ContentAnnouncement:
        pack = packs(version)
        name = pack_file_name(verify_pack(pack).pack_id, version)
        shutil.copyfile(pack, site.packs_dir / name)
        fields: dict[str, object] = {
            "pack_id": verify_pack(pack).pack_id, "pack_version": str(version), "sha256": sha256(pack),
            "announced_at": datetime.now(UTC), "url": f"https://{host}:{server.port}/packs/{name}",
            "size": pack.stat().st_size}
        fields.update(changes)
        return ContentAnnouncement(**fields)  # type: ignore[arg-type]

    yield announce
    server.shutdown()
    server.server_close()
    thread.join(30)


def updater(store: PackStore, site: Site, waits: list[float] | None = None, **kwargs: object) -> PackUpdater:
    """An updater whose pauses between attempts are recorded, not slept: the retries happen at once."""
    recorded = [] if waits is None else waits
    return PackUpdater(store, ca_file=site.ca_file, backoff=Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(7)),
                       wait=lambda delay: recorded.append(delay) is not None, **kwargs)  # type: ignore[arg-type]


# --- downloading ------------------------------------------------------------------------------------------

def test_an_announced_pack_is_downloaded_verified_and_installed(site, served, tmp_path) -> None:
    announcement = served(3)
    store = PackStore(tmp_path / "kiosk" / "packs")

    outcome = updater(store, site).process(announcement)

    assert (outcome.status, outcome.reason, outcome.attempts) == ("applied", "", 1)
    current = store.current()
    assert current is not None and (current.pack_id, current.pack_version) == (announcement.pack_id, 3)
    assert outcome.installed == current
    fields = outcome.applied_fields()
    assert fields == {"pack_id": announcement.pack_id, "pack_version": "3", "items": len(current.museum.artworks)}
    assert set(fields) <= ContentPackApplied.field_names
    assert list(store.downloads.iterdir()) == [], "the downloaded tar is removed once installed"
    assert updater(store, site).process(announcement).status == "current", "the same pack is not fetched again"


def test_a_cut_download_resumes_from_its_part(site, served, tmp_path) -> None:
    announcement = served(3, host="127.0.0.1")
    pack = site.packs_dir / Path(announcement.url).name
    dest = tmp_path / "kiosk" / "pack.tar"
    cut = pack.stat().st_size // 3
    part_path(dest).write_bytes(pack.read_bytes()[:cut])

    result = download(announcement.url, dest, ca_file=site.ca_file, expected_size=announcement.size,
                      expected_sha256=announcement.sha256, timeout_s=60, chunk=4096)

    assert result.resumed_from == cut
    assert (result.size, result.sha256) == (announcement.size, announcement.sha256)
    assert dest.read_bytes() == pack.read_bytes()
    assert not part_path(dest).exists()


def test_a_part_of_a_file_since_replaced_is_fetched_again_whole(site, served, tmp_path) -> None:
    announcement = served(3)
    pack = site.packs_dir / Path(announcement.url).name
    dest = tmp_path / "kiosk" / "pack.tar"
    part_path(dest).write_bytes(b"x" * 1000)  # bytes of another file, which had another ETag
    dest.with_name(dest.name + ".part.etag").write_text('"1-2"', "utf-8")

    result = download(announcement.url, dest, ca_file=site.ca_file, expected_size=announcement.size,
                      expected_sha256=announcement.sha256, timeout_s=60)

    assert result.resumed_from == 0, "If-Range did not match: the server sent it whole (200)"
    assert dest.read_bytes() == pack.read_bytes()


def test_a_wrong_hash_is_refused_and_nothing_is_installed(site, served, tmp_path) -> None:
    announcement = served(3, sha256="0" * 64)
    store = PackStore(tmp_path / "kiosk" / "packs")

    outcome = updater(store, site).process(announcement)

    assert outcome.status == "refused" and outcome.attempts == 1, outcome
    assert "SHA-256" in outcome.reason
    assert store.current() is None
    assert list(store.downloads.iterdir()) == [], "the wrong bytes are not kept to resume from"


def test_a_server_of_another_site_is_not_trusted(site, make_site, served, tmp_path) -> None:
    announcement = served(3)
    other = make_site(site_id="other-site")

    with pytest.raises(DownloadError) as raised:
        download(announcement.url, tmp_path / "pack.tar", ca_file=other.ca_file, expected_size=announcement.size,
                 expected_sha256=announcement.sha256, timeout_s=60)

    assert "TLS" in raised.value.reason and not raised.value.retryable
    assert not (tmp_path / "pack.tar").exists()


def test_a_server_that_never_answers_is_given_up_on(site, tmp_path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    try:
        with pytest.raises(DownloadError) as raised:
            download(f"https://127.0.0.1:{listener.getsockname()[1]}/packs/demo-3.tar", tmp_path / "pack.tar",
                     ca_file=site.ca_file, expected_size=1000, expected_sha256="0" * 64, timeout_s=0.5)
        assert raised.value.retryable
        accepting.join(30)
        assert held, "the client did connect: it was the silence it gave up on"
    finally:
        for connection in held:
            connection.close()
        listener.close()


def test_an_unreachable_server_is_retried_with_backoff_then_reported(site, tmp_path) -> None:
    announcement = ContentAnnouncement("demo", "3", "0" * 64, datetime.now(UTC),
                                       f"https://127.0.0.1:{free_port()}/packs/demo-3.tar", 1000)
    store = PackStore(tmp_path / "packs")
    waits: list[float] = []

    outcome = updater(store, site, waits, max_attempts=4, timeout_s=5).process(announcement)

    assert (outcome.status, outcome.attempts) == ("failed", 4)
    assert len(waits) == 3 and waits == sorted(waits), "growing pauses between the attempts"
    assert store.current() is None


def test_announcements_are_only_queued_and_the_latest_wins(site, tmp_path) -> None:
    store = PackStore(tmp_path / "packs")
    pack_updater = updater(store, site)
    first, second = (ContentAnnouncement("demo", str(v), "0" * 64, datetime.now(UTC),
                                         f"https://127.0.0.1:1/packs/demo-{v}.tar", 1000) for v in (3, 4))
    assert pack_updater.take() is None

    pack_updater.offer(first)
    pack_updater.offer(second)

    assert pack_updater.take() == second
    assert pack_updater.take() is None
    assert list(store.downloads.iterdir()) == [], "offering fetched nothing"


# --- the store --------------------------------------------------------------------------------------------

def test_no_pack_yet_means_no_current_pack(tmp_path) -> None:
    assert PackStore(tmp_path / "packs").current() is None


def test_installing_switches_current_atomically_and_keeps_the_previous_pack(packs, tmp_path) -> None:
    store = PackStore(tmp_path / "packs", keep_old=1)
    first = store.install(packs(3))
    assert store.current() == first

    second = store.install(packs(4))

    current = store.current()
    assert current is not None and current.pack_version == 4 and current == second
    link = store.root / "current"
    assert link.is_symlink() and os.readlink(link) == second.path.name, "a relative link, renamed into place"
    assert first.path.is_dir(), "the previous pack is kept"
    assert store.installed() == [second.path, first.path]

    third = store.install(packs(5))

    assert store.installed() == [third.path, second.path], "at most keep_old old packs"
    assert not first.path.exists()
    assert sorted(p.name for p in store.root.iterdir() if p.name.startswith(".")) == [], "no staging left"


def test_a_corrupted_pack_is_refused_with_its_reason_and_current_is_unchanged(packs, tmp_path) -> None:
    store = PackStore(tmp_path / "packs")
    shown = store.install(packs(3))
    corrupted = tmp_path / "corrupted.tar"
    shutil.copyfile(packs(4), corrupted)
    _flip_byte(corrupted)

    with pytest.raises(PackRefused) as refused:
        store.install(corrupted)

    assert "SHA-256 does not match the manifest" in refused.value.reason
    assert store.current() == shown
    assert store.installed() == [shown.path], "nothing of the refused pack is left"
    assert sorted(p.name for p in store.root.iterdir()) == sorted(["current", "downloads", shown.path.name])


def test_a_pack_other_than_the_one_announced_is_refused(packs, tmp_path) -> None:
    store = PackStore(tmp_path / "packs")

    with pytest.raises(PackRefused) as refused:
        store.install(packs(3), expected_version="4")

    assert "announced as" in refused.value.reason
    assert store.current() is None and store.installed() == []


IO_LIBRARIES = {"paho": ["bench/paho_baseline.py", "bus/mqtt.py"], "zeroconf": ["bus/discovery.py"],
                "requests": ["bus/https.py"], "kivy": ["kiosk/ui.py"],
                "segno": ["kiosk/take_home.py", "qr/synthetic.py"], "ffpyplayer": [],
                "bleak": ["hardware/ble.py", "tests/test_ble_scanning.py"],
                "dbus_fast": ["hardware/ble.py", "tests/test_ble_scanning.py"],
                "pyzbar": ["qr/zbar.py"], "zxingcpp": ["qr/zxing.py"], "picamera2": ["qr/camera.py"], "linuxpy": [],
                "psycopg": ["companion_api/pg.py"]}
"""Each third-party I/O library and the one module of ours that imports it (ffpyplayer: only through Kivy's
video and audio providers; picamera2: only inside `qr/camera.py`'s Picamera2Camera, imported when that camera
opens). Tests, the benchmark and the demo go through those modules too, with three exceptions on purpose: the bus
benchmark's baseline measures raw paho itself; the BLE scanning tests check the facade's conversion of bleak's own
objects and run a pretend bluetoothd as a D-Bus service with dbus_fast; segno draws the QR codes of the generated
camera frames (`qr/synthetic.py`) besides the kiosk's take-home code."""


def test_each_io_library_is_imported_by_one_module() -> None:
    root = Path(__file__).resolve().parent.parent
    importing: dict[str, set[str]] = {name: set() for name in IO_LIBRARIES}
    folders = [d for d in root.iterdir() if (d / "__init__.py").exists()] + [root / "tests"]
    for path in sorted(p for folder in folders for p in folder.rglob("*.py")):
        for line in path.read_text("utf-8").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in importing:
                importing[words[1].split(".")[0]].add(str(path.relative_to(root)))
    assert {name: sorted(paths) for name, paths in importing.items()} == IO_LIBRARIES
