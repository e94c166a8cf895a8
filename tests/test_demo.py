"""`museum demo` and `museum simulate`: the pacing of simulated devices, then the whole museum as processes."""

from __future__ import annotations

import dataclasses
import html
import io
import itertools
import json
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tomli_w
from harness import ROOT
from PIL import Image
from support import wait_until

from broker.hub_store import HubStore
from broker.site import Site, SiteLayout, enroll_device
from bus.config import ClientConfig
from content.sample import load_sample_museum
from demo import launcher as demo_module
from demo.dashboard import DeviceState, HubFigures, LiveView, dashboard_lines, read_hub_figures
from demo.launcher import (
    KIOSK_APP_ID,
    DemoError,
    kiosk_table,
    museum_hint,
    plan_devices,
    prepare_site_dir,
    start_problem,
)
from demo.simulated_device import (
    TAKE_HOME_KEPT,
    StopFlag,
    TakeHomeFile,
    due_after_s,
    paced,
    read_take_home_file,
    restamp,
    sleep_before,
)
from demo.simulation import kiosk_events
from kiosk.settings import KioskSettings
from protocol.canonical import event_record
from protocol.events import ArtworkCollected, ArtworkViewed, Event, KioskSessionEnded, OccupancyCounted
from protocol.fields import IDENTIFIER
from protocol.ids import event_id_at, event_id_time, parse_instant, visit_id_for

WALL = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
SIM = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
KIOSK_TYPES = {"kiosk.session_started", "kiosk.session_ended", "artwork.viewed", "artwork.collected",
               "visitor.language_changed", "visitor.accessibility_changed", "visit.linked", "device.status"}
GATEWAY_TYPES = {"proximity.entered", "proximity.left", "occupancy.counted", "scanner.status", "device.status"}
"""A gateway is a real station (on a simulated radio): it also reports its scanner's state."""
KIOSK_APP_TYPES = KIOSK_TYPES | {"content.pack_applied", "content.pack_refused"}
COMPANION_DEVICE = "companion"
"""The device_id of the events made on phones at the companion service, which the sync brings down to the hub."""
PHONE_TYPES = {"artwork.viewed", "artwork.collected", "visit.linked", "visit.joined"}
HUB_LINE = re.compile(r"^Hub: [\d.]+ events/s, (\d+) events stored$", re.MULTILINE)
DEVICES_LINE = re.compile(r"^Devices: (\d+) of (\d+) online", re.MULTILINE)
REFUSED_LINE = re.compile(r"^(\d+) messages? refused as malformed \(kept aside for diagnosis\)$", re.MULTILINE)
TAKE_HOME_LINE = re.compile(r"^A simulated visitor's take-home page: (http://127\.0\.0\.1:\d+/v/([A-Za-z0-9_-]{22}))$",
                            re.MULTILINE)
ARTWORK_LINE = re.compile(r"^The page the QR code next to .* opens on a phone: (http://127\.0\.0\.1:\d+/a/demo/([a-z0-9-]+))$",
                          re.MULTILINE)


# --- pacing, without processes ---------------------------------------------------------------------------

class FakeClock:
    """Real time as the pacer sees it: waiting advances it; `work_s` is what each emission costs."""

    def __init__(self, work_s: float = 0.0, stop_after_waits: int | None = None) -> None:
        self.t = 0.0
        self.waits: list[float] = []
        self.work_s = work_s
        self.stop_after_waits = stop_after_waits

    def elapsed(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.t += seconds
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits

    def now(self) -> datetime:
        instant = WALL + timedelta(seconds=self.t)
        self.t += self.work_s
        return instant


def views_at(*offsets_s: float) -> list[tuple[datetime, Event]]:
    events = [ArtworkViewed.create(site_id="demo", device_id="kiosk-01", occurred_at=SIM + timedelta(seconds=s),
                                   artwork_id="monet-impression-sunrise", source="kiosk", language="fr")
              for s in offsets_s]
    return [(event.occurred_at, event) for event in events]


def test_due_time_divides_simulated_gaps_by_the_speed() -> None:
    assert due_after_s(SIM, SIM + timedelta(seconds=90), 10) == 9.0
    assert due_after_s(SIM, SIM, 10) == 0.0
    assert due_after_s(SIM, SIM + timedelta(seconds=3), 0.5) == 6.0


def test_sleep_is_what_is_left_and_never_negative() -> None:
    assert sleep_before(5.0, 2.0) == 3.0
    assert sleep_before(5.0, 5.0) == 0.0
    assert sleep_before(5.0, 7.5) == 0.0


def test_schedule_becomes_sleeps_and_emission_instants() -> None:
    schedule = views_at(0, 10, 10, 25, 60)
    fake = FakeClock()
    out = list(paced(iter(schedule), SIM, 5, elapsed=fake.elapsed, wait=fake.wait, now=fake.now))
    assert fake.waits == [0, 2, 0, 3, 7]
    assert [event.occurred_at for event in out] == [WALL + timedelta(seconds=s) for s in (0, 2, 2, 5, 12)]


def test_restamped_events_keep_their_content_and_get_ids_of_their_emission() -> None:
    (_, original), = views_at(42)
    emitted = restamp(original, WALL)
    assert emitted.occurred_at == WALL
    assert emitted.event_id != original.event_id
    assert event_id_time(emitted.event_id) >= event_id_time(original.event_id)
    assert emitted.own_fields() == original.own_fields()
    assert (emitted.site_id, emitted.device_id, emitted.visit_id) == (original.site_id, original.device_id,
                                                                     original.visit_id)


def test_late_events_go_out_at_once_without_drift_accumulating() -> None:
    # Each emission costs 1.5 s of real time, more than the 1 s gaps: the pacer never sleeps a negative time,
    # and once the work is light again it is back on schedule instead of carrying the delay forward.
    schedule = views_at(0, 5, 10, 15, 100)
    fake = FakeClock(work_s=1.5)
    out = list(paced(iter(schedule), SIM, 5, elapsed=fake.elapsed, wait=fake.wait, now=fake.now))
    assert all(wait >= 0 for wait in fake.waits)
    assert fake.waits[:4] == [0, 0, 0, 0]
    assert out[-1].occurred_at == WALL + timedelta(seconds=20)


def test_a_stop_ends_the_stream_before_the_next_event() -> None:
    fake = FakeClock(stop_after_waits=3)
    out = list(paced(iter(views_at(0, 10, 20, 30)), SIM, 1, elapsed=fake.elapsed, wait=fake.wait, now=fake.now))
    assert len(out) == 2


@pytest.mark.parametrize("speed", [0, -1, float("inf"), 1e9, True])
def test_a_bad_speed_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        list(paced(iter(views_at(0)), SIM, speed, elapsed=lambda: 0.0, wait=lambda _s: False))


def test_a_real_kiosk_stream_is_compressed_and_never_in_the_future() -> None:
    museum = load_sample_museum()
    stream = kiosk_events(random.Random("2026:kiosk-01"), museum, "demo", "kiosk-01", "renaissance", SIM)
    planned: list[Event] = []

    def remember(items: Iterator[tuple[datetime, Event]]) -> Iterator[tuple[datetime, Event]]:
        for at, event in items:
            planned.append(event)
            yield at, event

    fake = FakeClock()
    out = []
    for event in paced(remember(stream), SIM, 20, elapsed=fake.elapsed, wait=fake.wait, now=fake.now):
        assert event.occurred_at <= WALL + timedelta(seconds=fake.t)
        out.append(event)
        if len(out) == 60:
            break
    for before, after in zip(planned, out, strict=True):
        simulated = (before.occurred_at - SIM).total_seconds()
        assert abs((after.occurred_at - WALL).total_seconds() - simulated / 20) <= 0.001
        assert after.own_fields() == before.own_fields()
    ended = [event for event in out if isinstance(event, KioskSessionEnded)]
    assert ended, "sixty events hold at least one whole session"
    # In-event durations stay in simulated time: the session's duration is its span before compression.
    assert all(event.duration_s > 5 for event in ended)


# --- figures and plan ------------------------------------------------------------------------------------

def test_the_plan_deals_kiosks_round_the_rooms_and_gives_each_room_a_gateway() -> None:
    museum = load_sample_museum()
    plan = plan_devices(museum, 6)
    simulated = [spec for spec in plan if spec.kind == "kiosk" and not spec.app]
    gateways = [spec for spec in plan if spec.kind == "gateway"]
    assert [spec.zone_id for spec in simulated] == [*museum.zone_ids, museum.zone_ids[0]]
    assert sorted(spec.zone_id for spec in gateways) == sorted(museum.zone_ids)
    # One real kiosk app, enrolled as a kiosk like the simulated ones, in the first room.
    assert [(spec.device_id, spec.kind, spec.zone_id) for spec in plan if spec.app] == [
        (KIOSK_APP_ID, "kiosk", museum.zone_ids[0])]
    assert not any(spec.app for spec in plan_devices(museum, 6, kiosk_app=False))
    ids = [spec.device_id for spec in plan]
    assert len(set(ids)) == len(ids)
    assert all(IDENTIFIER.match(device_id) for device_id in ids)


def test_the_real_kiosks_settings_are_valid_kiosk_settings(tmp_path: Path) -> None:
    spec = next(spec for spec in plan_devices(load_sample_museum(), 0) if spec.app)
    raw = {"site_id": "demo", "client_id": KIOSK_APP_ID, "kind": "kiosk",
           "broker": {"host": "127.0.0.1", "port": 1883, "username": KIOSK_APP_ID, "password": "x", "tls": False,
                      "discover": False},
           "kiosk": kiosk_table(spec, tmp_path / "state", "http://127.0.0.1:8123")}
    path = tmp_path / "kiosk-app.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    settings = KioskSettings.from_config(ClientConfig.load(path), path)
    assert (settings.home_room, settings.state_dir) == (spec.zone_id, tmp_path / "state")
    assert settings.companion_base_url == "http://127.0.0.1:8123"


def test_simulated_visitors_who_collect_keep_their_take_home_url_and_only_the_latest(tmp_path: Path) -> None:
    museum = load_sample_museum()
    path = tmp_path / "take-home.txt"
    collected: dict[str, str] = {}
    for number in range(2):  # two kiosks sharing the file, as in the demo
        keeper = TakeHomeFile(path, "http://127.0.0.1:8123")
        stream = kiosk_events(random.Random(number), museum, "demo", f"kiosk-0{number}", museum.zone_ids[number],
                              SIM, on_visitor=keeper.visitor)
        for _, event in itertools.islice(stream, 400):
            keeper.emitted(event)
            if isinstance(event, ArtworkCollected) and event.visit_id is not None:
                collected.setdefault(event.visit_id, event.artwork_id)
    assert len(collected) > TAKE_HOME_KEPT
    kept = read_take_home_file(path)
    assert len(kept) == TAKE_HOME_KEPT == len(path.read_text(encoding="ascii").splitlines())
    assert path.stat().st_mode & 0o777 == 0o600
    for url, artwork_id in kept:
        token = url.rsplit("/", 1)[1]
        assert url == f"http://127.0.0.1:8123/v/{token}"
        assert collected[visit_id_for(token)] == artwork_id, "one line per visit, with its first work collected"
    assert len({url for url, _ in kept}) == TAKE_HOME_KEPT
    with pytest.raises(ValueError, match="companion base URL"):
        TakeHomeFile(path, "ftp://example.org")


def test_a_kiosk_that_cannot_start_is_explained_by_its_error_lines() -> None:
    log = "\n".join([
        "2026-11-30 10:11:11,380 INFO kivy: Window: Provider: sdl2",
        "2026-11-30 10:11:11,385 CRITICAL kivy: Window: Unable to find any valuable Window provider.",
        "sdl2 - RuntimeError: b'bogus not available'",
        '  File "kivy/core/__init__.py", line 71, in core_select_lib',
        "2026-11-30 10:11:11,398 CRITICAL kivy: App: Unable to get a Window, abort.",
        "2026-11-30 10:11:11,496 ERROR kiosk.supervisor: kiosk app crashed (exited with status 1); starting it "
        "again in 1 s"])
    assert start_problem(log).split("\n") == [
        "2026-11-30 10:11:11,385 CRITICAL kivy: Window: Unable to find any valuable Window provider.",
        "sdl2 - RuntimeError: b'bogus not available'",
        "2026-11-30 10:11:11,398 CRITICAL kivy: App: Unable to get a Window, abort.",
        "2026-11-30 10:11:11,496 ERROR kiosk.supervisor: kiosk app crashed (exited with status 1); starting it "
        "again in 1 s"]
    assert start_problem("just\nthe last\nlines", limit=2) == "the last\nlines"
    assert start_problem("") == "(no output)"


ENROLLED = ["kiosk-01", "kiosk-02", "kiosk-03", "gateway-renaissance", "gateway-siecle-d-or", "gateway-realisme",
            "gateway-impressionnisme", "gateway-modernites"]


def busy_figures(**changes: object) -> HubFigures:
    figures = HubFigures(
        412, 38.25, 2, tuple(ENROLLED[:-2]), True, WALL,
        devices=(*(DeviceState(device_id, "online") for device_id in ENROLLED[:-2]),
                 DeviceState("gateway-impressionnisme", "offline")),
        top_viewed=(("botticelli-birth-of-venus", 42), ("monet-impression-sunrise", 30), ("vermeer-milkmaid", 17),
                    ("unknown-work", 3)),
        views_by_language=(("en", 55), ("fr", 37)),
        occupancy=(("renaissance", 12), ("impressionnisme", 75)),
        activity_since=WALL - timedelta(minutes=12))
    return dataclasses.replace(figures, **changes)  # type: ignore[arg-type]


def view_text(figures: HubFigures | None, width: int = 80, height: int | None = None, **kwargs: object) -> str:
    lines = dashboard_lines(load_sample_museum(), figures, elapsed_s=75, speed=20, enrolled=ENROLLED, width=width,
                            height=height, now=WALL + timedelta(seconds=1), **kwargs)  # type: ignore[arg-type]
    return "\n".join(lines)


@pytest.mark.parametrize("width", [80, 40])
@pytest.mark.parametrize("figures", [None, busy_figures(), busy_figures(connected=False, updated_at=WALL - timedelta(
    seconds=30), devices=tuple(DeviceState(device_id, "offline") for device_id in ENROLLED), devices_online=())])
def test_the_live_view_never_outgrows_the_terminal(width: int, figures: HubFigures | None) -> None:
    for height in (None, 30, 12):
        lines = view_text(figures, width, height).split("\n")
        assert all(len(line) <= width for line in lines), lines
        if height is not None:
            assert len(lines) < height


def test_the_live_view_shows_what_staff_watch() -> None:
    text = view_text(busy_figures())
    assert text.startswith("Demo Museum of Fine Arts | 0:01:15 elapsed, museum clock +0:25:00 (x20)")
    assert "Most viewed works, last 12 min" in text
    # Titles from the museum's content, most viewed first; a work the content does not know shows its id.
    assert re.search(r"42  The Birth of Venus - Sandro Botticelli\n +30  Impression, Sunrise - Claude Monet", text)
    assert "3  unknown-work" in text
    assert "Languages of the views: en 60% (55), fr 40% (37)" in text
    # Every room against its capacity, crowded rooms flagged; rooms without a count yet say so.
    assert re.search(r"The Renaissance in Italy ~ +12/40 +30%  ######", text)
    assert re.search(r"The Impressionists +75/60 +125%! ####################", text)
    assert re.search(r"Romanticism and Realism +no count yet", text)
    assert "Devices: 6 of 8 online, 1 not heard from yet; offline: gateway-impressionnisme" in text
    assert "Hub: 38.2 events/s, 412 events stored" in text
    assert "2 messages refused as malformed (kept aside for diagnosis)" in text
    assert "NOT connected" not in text and "old" not in text
    assert "Real kiosk" not in text
    # The real kiosk's own line, whatever the hub last heard of it.
    real = view_text(busy_figures(), real_kiosks=["kiosk-01", "gateway-impressionnisme", "gateway-modernites"])
    assert "Real kiosk kiosk-01: online (untouched: few events)" in real
    assert "Real kiosk gateway-impressionnisme: offline" in real
    assert "Real kiosk gateway-modernites: not heard from yet" in real


def test_the_live_view_says_when_the_hub_is_away_or_not_started() -> None:
    stale = view_text(busy_figures(connected=False, updated_at=WALL - timedelta(seconds=8)))
    assert "The hub is NOT connected to the broker" in stale
    assert "These figures are 9 s old" in stale
    assert "Waiting for the hub's first figures" in view_text(None)
    quiet = view_text(busy_figures(top_viewed=(), views_by_language=(), occupancy=(), quarantined_total=1))
    assert "no work viewed yet" in quiet and "Languages of the views: none yet" in quiet
    assert "1 message refused as malformed" in quiet
    full = view_text(busy_figures(storage_error="database or disk is full", refused_not_kept=40))
    assert "! The hub cannot store events (the devices keep them): database or disk is full" in full
    assert "2 messages refused as malformed (kept aside for diagnosis), 40 more only counted" in full


def test_a_short_terminal_shows_fewer_works_and_names_what_it_cuts() -> None:
    def works_shown(height: int) -> int:
        lines = view_text(busy_figures(), height=height).split("\n")
        return lines.index("Languages of the views: en 60% (55), fr 40% (37)") - 2

    assert works_shown(30) == 4  # all there are, up to five
    assert works_shown(21) == 3
    many_offline = busy_figures(devices=tuple(DeviceState(device_id, "offline") for device_id in ENROLLED),
                                devices_online=())
    line = next(line for line in view_text(many_offline, width=60).split("\n") if line.startswith("Devices"))
    assert line.startswith("Devices: 0 of 8 online; offline: kiosk-01") and line.endswith("more)"), line


class FakeTerminal:
    def __init__(self) -> None:
        self.written: list[str] = []
        self.encoding = "ascii"

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_on_a_terminal_the_block_is_redrawn_in_place() -> None:
    terminal = FakeTerminal()
    view = LiveView(terminal)  # type: ignore[arg-type]
    view.show(["one", "Dürer"])
    view.show(["three", "four", "five"])
    first, second = terminal.written
    assert first == "\rone\x1b[K\nD?rer\x1b[K\n\x1b[J"  # a title the terminal cannot encode does not stop it
    assert second.startswith("\x1b[2F") and second.endswith("five\x1b[K\n\x1b[J")


def test_hub_figures_are_read_from_the_stats_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    assert read_hub_figures(path) is None
    path.write_text('{"stored_total": 3', encoding="utf-8")
    assert read_hub_figures(path) is None
    basic = {"site_id": "demo", "updated_at": "2026-11-25T14:00:00.000Z", "connected": True, "stored_total": 3,
             "events_per_s": 1.5, "quarantined_total": 0, "devices_online": ["kiosk-01"]}
    path.write_text(json.dumps(basic), encoding="utf-8")
    assert read_hub_figures(path) == HubFigures(3, 1.5, 0, ("kiosk-01",), True, WALL)
    path.write_text(json.dumps({
        **basic, "devices": [{"device_id": "kiosk-01", "kind": "kiosk", "state": "online", "last_seen": "x"}],
        "activity_since": "2026-11-25T13:00:00.000Z",
        "top_viewed": [{"artwork_id": "vermeer-milkmaid", "views": 4}], "views_by_language": {"fr": 3, "en": 1},
        "occupancy": {"renaissance": {"count": 7, "at": "2026-11-25T13:59:00.000Z"}}}), encoding="utf-8")
    assert read_hub_figures(path) == HubFigures(
        3, 1.5, 0, ("kiosk-01",), True, WALL, devices=(DeviceState("kiosk-01", "online"),),
        top_viewed=(("vermeer-milkmaid", 4),), views_by_language=(("fr", 3), ("en", 1)),
        occupancy=(("renaissance", 7),), activity_since=WALL - timedelta(hours=1))


def test_the_hubs_recent_activity_reads_a_bounded_window(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite")
    try:
        three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
        old = dataclasses.replace(ArtworkViewed.create(
            site_id="demo", device_id="kiosk-01", artwork_id="vermeer-milkmaid", source="kiosk", language="fr",
            occurred_at=three_hours_ago), event_id=event_id_at(three_hours_ago))
        views = [ArtworkViewed.create(site_id="demo", device_id="kiosk-01", artwork_id=f"work-{i % 3}",
                                      source="kiosk", language="fr" if i % 4 else "en") for i in range(12)]
        counts = [OccupancyCounted.create(site_id="demo", device_id="gateway-01", zone_id=zone, count=count,
                                          window_s=60.0) for zone, count in (("hall", 4), ("hall", 9), ("cafe", 2))]
        store.commit_round([event_record(e) for e in [old, *views, *counts]], [], [], WALL)
        since = datetime.now(UTC) - timedelta(hours=1)
        everything = store.recent_activity(since, 1000)
        assert sum(n for *_, n in everything.views) == 12 and everything.events == 15  # the old view is not
        assert sorted((zone, count) for zone, count, _ in everything.occupancy) == [("cafe", 2), ("hall", 9)]
        newest = store.recent_activity(since, 5)
        assert newest.events == 5 and sum(n for *_, n in newest.views) == 2
        assert newest.oldest is not None and newest.oldest >= since
    finally:
        store.close()


def test_the_closing_hint_works_as_typed_without_the_venv_on_the_path() -> None:
    hint = museum_hint("hub", "stats", "--help")
    result = subprocess.run(hint, shell=True, capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, (hint, result.stderr)
    assert "stats" in result.stdout


def test_without_mosquitto_the_demo_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(demo_module, "MOSQUITTO_FALLBACK", tmp_path / "mosquitto")
    with pytest.raises(DemoError, match=r"Run `make demo`, which installs it, or `apt-get install mosquitto`"):
        demo_module.run_demo(duration=1, devices=[], speed=1, seed=1, site_dir=tmp_path / "site", stop=StopFlag(),
                             out=sys.stdout, register_cleanup=lambda _f: None)
    assert not (tmp_path / "site").exists()


def test_a_non_empty_site_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x", encoding="utf-8")
    with pytest.raises(DemoError, match="not an empty directory"):
        prepare_site_dir(tmp_path)
    assert prepare_site_dir(tmp_path / "new") == (tmp_path / "new", False)


# --- museum simulate ---------------------------------------------------------------------------------------

def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "museum", "simulate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, check=False)


def test_simulate_refuses_a_device_of_another_kind_or_an_unknown_room(site: Site) -> None:
    gateway = enroll_device(site, "gateway-01", "gateway")
    wrong_kind = simulate("kiosk", "--config", str(gateway), "--zone", "renaissance")
    assert wrong_kind.returncode != 0
    assert "gateway-01 is enrolled as a gateway, not a kiosk" in wrong_kind.stderr
    wrong_room = simulate("gateway", "--config", str(gateway), "--zone", "cafeteria")
    assert wrong_room.returncode != 0
    assert "zone 'cafeteria' is not a room of demo" in wrong_room.stderr


# --- the whole museum --------------------------------------------------------------------------------------

@pytest.fixture
def demo_site_dir(sites_base: Path) -> Path:
    # Under a 0711 directory, as the site fixtures do: Mosquitto drops privileges and must reach the site.
    parent = Path(tempfile.mkdtemp(dir=sites_base))
    os.chmod(parent, 0o711)
    return parent / "site"


def demo_command(site_dir: Path, *extra: str) -> list[str]:
    # Three simulated kiosks, five gateways and the real kiosk app.
    return [sys.executable, "-m", "museum", "demo", "--kiosks", "3", "--speed", "20", "--site-dir", str(site_dir),
            *extra]


def started_pids(site_dir: Path) -> dict[int, str]:
    lines = (site_dir / "demo" / "pids").read_text(encoding="ascii").splitlines()
    return {int(pid): name for pid, name in (line.split() for line in lines)}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = entry.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command:
                found.append(f"{entry.name}: {command}")
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; only its parent (gone, since the demo exited) would reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def assert_clean_shutdown(site_dir: Path, output: str) -> None:
    pids = started_pids(site_dir)
    assert {"broker", "hub", "packs", "companion", "sync", KIOSK_APP_ID, "kiosk-01", "kiosk-02", "kiosk-03"} <= set(
        pids.values())
    assert [name for pid, name in pids.items() if alive(pid)] == []
    assert processes_mentioning(str(site_dir)) == []
    assert "Had to kill" not in output
    assert "Events stored:" in output and "Quarantined: 0" in output


def stored(site_dir: Path) -> tuple[dict[str, set[str]], int, dict[str, str]]:
    """device → types of its stored events, quarantined rows, device → state."""
    with sqlite3.connect(SiteLayout(site_dir).hub_database) as db:
        by_device: dict[str, set[str]] = {}
        for device_id, kind in db.execute("SELECT DISTINCT device_id, type FROM events"):
            by_device.setdefault(device_id, set()).add(kind)
        quarantined = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        states = dict(db.execute("SELECT device_id, state FROM devices").fetchall())
    return by_device, quarantined, states


def assert_museum_stored(site_dir: Path, *, full: bool, kiosk_app: bool = True) -> None:
    """`kiosk_app`: whether the real kiosk ran; one that could not open its window may still have come online
    for a moment at each attempt (its events flow before its window opens), and then said goodbye too."""
    plan = plan_devices(load_sample_museum(), 3, kiosk_app=kiosk_app)
    by_device, quarantined, states = stored(site_dir)
    assert quarantined == 0
    assert by_device.pop(COMPANION_DEVICE, set()) <= PHONE_TYPES
    if not kiosk_app:
        assert states.pop(KIOSK_APP_ID, "offline") == "offline"
        assert by_device.pop(KIOSK_APP_ID, set()) <= KIOSK_APP_TYPES
    # Every device came online, and said goodbye before the hub stopped: the real kiosk too, on SIGTERM.
    assert states == {spec.device_id: "offline" for spec in plan}
    assert set(by_device) <= set(states) and by_device
    for spec in plan:
        allowed = KIOSK_APP_TYPES if spec.app else KIOSK_TYPES if spec.kind == "kiosk" else GATEWAY_TYPES
        assert by_device.get(spec.device_id, set()) <= allowed, spec.device_id
        if full:
            assert "device.status" in by_device[spec.device_id], spec.device_id
            if spec.kind == "gateway":
                assert "occupancy.counted" in by_device[spec.device_id], spec.device_id
            if spec.app:
                assert "content.pack_applied" in by_device[spec.device_id]
    if full:
        kiosk_types = set().union(*(by_device[s.device_id] for s in plan if s.kind == "kiosk" and not s.app))
        gateway_types = set().union(*(by_device[s.device_id] for s in plan if s.kind == "gateway"))
        assert {"kiosk.session_started", "artwork.viewed"} <= kiosk_types
        assert {"proximity.entered", "proximity.left", "occupancy.counted"} <= gateway_types


def interrupt(process: subprocess.Popen[str], lines: queue.Queue[str], seen: list[str]) -> str:
    """Ctrl-C the demo, as staff would, and return all it printed; kill it if it does not stop, and fail."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wait_for_line(lines, seen, lambda _line: False, 60)  # the rest of the output: returns at its end
    return "".join(seen)


def everything_stored(site_dir: Path) -> bool:
    """Whether the running demo's hub has stored every kind of event `assert_museum_stored(full=True)` checks."""
    try:
        by_device, _quarantined, _states = stored(site_dir)
    except sqlite3.Error:  # the hub has not created its database yet
        return False
    plan = plan_devices(load_sample_museum(), 3)
    for spec in plan:
        types = by_device.get(spec.device_id, set())
        if "device.status" not in types or (spec.kind == "gateway" and "occupancy.counted" not in types):
            return False
        if spec.app and "content.pack_applied" not in types:
            return False
    kiosk_types = set().union(*(by_device.get(s.device_id, set()) for s in plan if s.kind == "kiosk" and
                                not s.app))
    gateway_types = set().union(*(by_device.get(s.device_id, set()) for s in plan if s.kind == "gateway"))
    return {"kiosk.session_started", "artwork.viewed"} <= kiosk_types and {
        "proximity.entered", "proximity.left", "occupancy.counted"} <= gateway_types


def pack_applied_at(site_dir: Path) -> datetime:
    with sqlite3.connect(SiteLayout(site_dir).hub_database) as db:
        (occurred_at,), = db.execute("SELECT occurred_at FROM events WHERE device_id = ? AND type = ?",
                                     (KIOSK_APP_ID, "content.pack_applied")).fetchall()
    return parse_instant(occurred_at)


def screen_written_after(path: Path, instant: datetime) -> bytes | None:
    """The real kiosk's screenshot if it was written after `instant`. File times come from the same clock as
    the events' `occurred_at`, never ahead of the write (the kernel's coarse clock lags if anything), and
    `occurred_at` is cut to the millisecond: one a whole millisecond later was written after the instant."""
    try:
        written = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    if written < (instant.timestamp() + 0.001) * 1e9:
        return None
    return path.read_bytes()  # replaced whole by the kiosk (os.replace), so never half-written


def assert_shows_a_picture(png: bytes) -> None:
    """Not blank, and not the plain "content is on its way" screen (one colour covers ~98% of it): the attract
    loop, whose work's picture takes a good part of the screen."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 800)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) >= 16, f"only {len(colours)} colours: a blank frame?"
    assert max(count for count, _ in colours) < 0.9 * 1280 * 800, "one colour covers the screen: no picture"


def test_demo_runs_the_museum_and_leaves_nothing_behind(demo_site_dir: Path) -> None:
    # Stopped at a known point, not after a duration: once every device has been shown online, every kind of
    # event checked below is stored, the figures show a viewed work and the real kiosk has saved its screen
    # since it applied the pack (upper bounds only, generous for a slow machine), Ctrl-C, as staff would.
    process = subprocess.Popen(demo_command(demo_site_dir, "--duration", "600"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    museum = load_sample_museum()
    titles = {artwork.title["en"] for artwork in museum.artworks}
    screen = demo_site_dir / "demo" / "kiosk-screen.png"
    shot: list[bytes] = []

    def screen_since(instant: datetime) -> bool:
        png = screen_written_after(screen, instant)
        if png is not None:
            shot.append(png)
        return png is not None

    try:
        all_online = wait_for_line(lines, seen, lambda line: bool(
            (m := DEVICES_LINE.search(line)) and m[1] == m[2] == "9"), 120)
        assert all_online, "".join(seen)
        assert wait_until(lambda: everything_stored(demo_site_dir), 120), stored(demo_site_dir)
        # The hub refreshes its visitors' figures every few seconds: wait for a work among them.
        assert wait_for_line(lines, seen, lambda line: any(title in line for title in titles), 120), "".join(seen)
        applied_at = pack_applied_at(demo_site_dir)
        assert wait_until(lambda: screen_since(applied_at), 120), f"no screenshot since {applied_at} in {screen}"
        # A simulated visit's take-home page, printed once the companion shows it, and the page of a work it
        # collected: served by the demo's companion from what the sync brought, titles from the pack it sent.
        assert ARTWORK_LINE.search("".join(seen)) or wait_for_line(
            lines, seen, lambda line: bool(ARTWORK_LINE.search(line)), 120), "".join(seen)
        (take_home_url, token), = TAKE_HOME_LINE.findall("".join(seen))
        (artwork_url, artwork_id), = ARTWORK_LINE.findall("".join(seen))
        titles_of_work = [title for _, title in museum.artwork(artwork_id).title.texts]
        for url in (take_home_url, artwork_url):
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=30) as page:
                assert page.status == 200
                body = html.unescape(page.read().decode("utf-8"))
            assert any(title in body for title in titles_of_work), (url, body[:2000])
        # Opening the work's page counted as a view there (a phone event), which the sync brought down to the hub.
        assert wait_until(lambda: "artwork.viewed" in stored(demo_site_dir)[0].get(COMPANION_DEVICE, set()), 60)
    finally:
        output = interrupt(process, lines, seen)
    stored_figures = [int(match[1]) for match in HUB_LINE.finditer(output)]
    assert len(stored_figures) >= 2, output
    assert stored_figures[-1] > 0, output
    assert REFUSED_LINE.findall(output)[-1] == "0", output
    assert "Most viewed works" in output and any(title in output for title in titles), output
    assert f"Its screen is saved every 5 s to {screen}" in output
    assert f"Real kiosk {KIOSK_APP_ID}: online" in output
    assert_clean_shutdown(demo_site_dir, output)
    assert_museum_stored(demo_site_dir, full=True)
    assert_shows_a_picture(shot[0])
    assert_companion_fed(demo_site_dir, token, output)
    assert "The take-home page shown above stopped with the demo; `" in output

    # The real kiosk's file: enrolled like the others (plain loopback listener, no discovery), its [kiosk]
    # table added, and still readable by its owner only.
    config_path = SiteLayout(demo_site_dir).device_config(KIOSK_APP_ID)
    assert config_path.stat().st_mode & 0o777 == 0o600
    config = ClientConfig.load(config_path)
    assert (config.kind, config.broker.host, config.broker.tls, config.broker.discover) == (
        "kiosk", "127.0.0.1", False, False)
    assert f"broker on 127.0.0.1:{config.broker.port} (plain, loopback only)" in output
    kiosk_settings = KioskSettings.from_config(config, config_path)
    assert kiosk_settings.home_room == museum.zone_ids[0]
    assert take_home_url.startswith(f"{kiosk_settings.companion_base_url}/v/")  # its QR codes lead there too

    # The figures come from the hub's stats file, which holds what staff watch.
    stats = json.loads(SiteLayout(demo_site_dir).hub_stats_file.read_text(encoding="utf-8"))
    assert stats["top_viewed"] and {work["artwork_id"] for work in stats["top_viewed"]} <= {
        artwork.artwork_id for artwork in museum.artworks}
    assert stats["views_by_language"] and set(stats["views_by_language"]) <= set(museum.languages)
    assert sum(stats["views_by_language"].values()) == sum(work["views"] for work in stats["top_viewed"]) or len(
        stats["top_viewed"]) == 10
    assert set(stats["occupancy"]) == set(museum.zone_ids)
    assert all(isinstance(room["count"], int) for room in stats["occupancy"].values())
    plan = plan_devices(museum, 3)
    assert {(device["device_id"], device["state"]) for device in stats["devices"]} == {
        (spec.device_id, "offline") for spec in plan}


def assert_companion_fed(site_dir: Path, token: str, output: str) -> None:
    """The sync fed the demo's companion (analytics, the take-home visit, the pack), and the visit's token is
    nowhere but in the take-home file (bounded, 0600) and the demo's own output."""
    with sqlite3.connect(site_dir / "demo" / "companion" / "companion.sqlite") as db:
        analytics = db.execute("SELECT COUNT(*) FROM analytics WHERE site_id = 'demo'").fetchone()[0]
        visits = {visit for visit, in db.execute("SELECT visit_id FROM take_home")}
        packs = db.execute("SELECT pack_id FROM packs WHERE site_id = 'demo'").fetchall()
        text_rows = [str(row) for table in ("analytics", "take_home", "visit_joins", "phone_events", "erasures")
                     for row in db.execute(f"SELECT * FROM {table}")]
    assert analytics > 0 and packs == [("demo-museum",)]
    assert visit_id_for(token) in visits
    assert not [row for row in text_rows if token in row]
    kept = site_dir / "demo" / "take-home.txt"
    assert kept.stat().st_mode & 0o777 == 0o600 and len(kept.read_text("ascii").splitlines()) <= TAKE_HOME_KEPT
    assert output.count(token) == 1
    logs = [path for path in site_dir.rglob("*.log") if token in path.read_text("utf-8", errors="replace")]
    assert logs == []


def read_lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put("")


def wait_for_line(lines: queue.Queue[str], seen: list[str], condition: Callable[[str], bool],
                  timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if not line:
            return False
        seen.append(line)
        if condition(line):
            return True
    return False


def test_sigint_stops_a_running_demo_cleanly_and_it_runs_on_without_a_kiosk_that_cannot_start(
        demo_site_dir: Path) -> None:
    # A video driver SDL does not have: the kiosk app cannot open its window, as on a machine without a display
    # or EGL. The demo says why and runs the rest of the museum.
    env = {**os.environ, "SDL_VIDEODRIVER": "no-such-driver"}
    process = subprocess.Popen(demo_command(demo_site_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=ROOT, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        started = time.monotonic()
        # Running, with events already stored, then interrupted ~8 s after it was launched.
        storing = wait_for_line(lines, seen, lambda line: bool((m := HUB_LINE.search(line)) and int(m[1]) > 0), 120)
        assert storing, "".join(seen)
        time.sleep(max(0.0, 8 - (time.monotonic() - started)))
    finally:
        output = interrupt(process, lines, seen)
    assert "SIGINT received." in output
    assert f"The real kiosk {KIOSK_APP_ID} (`museum kiosk run`) could not start here, so the demo runs without " \
           "it:" in output
    assert "Unable to get a Window" in output, output  # Kivy's own words, from the kiosk's output
    assert f"Its whole output: {demo_site_dir / 'demo' / 'kiosk-app.log'}" in output
    assert "Running: broker, hub, pack server, companion service, sync, 3 simulated kiosks and 5 gateways in 5 " \
           "rooms (no real kiosk: see above)" in output
    # Left out of the figures: eight devices, none of them the real kiosk.
    assert "Real kiosk" not in output and {total for _, total in DEVICES_LINE.findall(output)} == {"8"}, output
    assert_clean_shutdown(demo_site_dir, output)
    assert_museum_stored(demo_site_dir, full=False, kiosk_app=False)
