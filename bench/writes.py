"""Storage wear: how many bytes the hub and one device make the kernel write per event, at a steady kiosk-like
rate, measured as a new user would see it.

    python -m bench.writes [--seconds 30] [--rate 20]

A real broker, the hub as its own process (`museum hub run`, as bench.bus starts it) and one device in a process
of its own, so that each process's `write_bytes` in /proc/<pid>/io is its own: the bytes of page cache it
dirtied, which is what reaches the SD card or disk (every 4 KiB page dirtied anew counts whole, however few
bytes changed in it). After a warm-up, the device emits `rate` events a second for `seconds`, waits until the
hub has acknowledged all of them and it has deleted them; the two counters' growth over that window, divided by
the events, are `device_bytes_per_event` and `hub_bytes_per_event`.

The baseline, measured in the same run and directory: one plain SQLite commit (WAL, default page size and
synchronous setting) of one such event as a row, which is what storing it the obvious way costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import bus  # bench.bus imports this module too: its names are read when called
from broker.mosquitto import MosquittoProcess
from broker.site import Site
from bus.config import ClientConfig
from bus.device import ACK_FLUSH_S, DeviceClient
from protocol.codec import encode_event
from protocol.events import ArtworkViewed

TARGETS = {"device_bytes_per_event": 2048, "hub_bytes_per_event": 4096}
RATE = 20
WARMUP_S = 5.0
BASELINE_COMMITS = 200


@dataclass(frozen=True)
class Wear:
    rate: int
    events: int
    device_bytes_per_event: float
    hub_bytes_per_event: float
    baseline_bytes_per_commit: float


def write_bytes(pid: int | str) -> int:
    """What the process has dirtied in the page cache so far (Linux only)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


def _emit_steadily(client: DeviceClient, rate: int, count: int) -> None:
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(count):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.record(ArtworkViewed, artwork_id=f"work-{i % 26}", source="kiosk", language="fr")


def _settle(client: DeviceClient) -> None:
    """Until every event is acknowledged and the acknowledged rows are deleted, as a kiosk left alone would."""
    if not client.wait_drained(60):
        raise RuntimeError(f"device did not drain: {client.stats()}")
    time.sleep(ACK_FLUSH_S + 1.0)


def device_process(config_path: Path, rate: int, seconds: float) -> None:
    """The device side, in its own process. Talks to `measure` line by line: READY, then DONE <events>."""
    client = DeviceClient(ClientConfig.load(config_path).with_broker(discover=False))
    client.start()
    try:
        _emit_steadily(client, rate, int(rate * WARMUP_S))
        _settle(client)
        print("READY", flush=True)
        sys.stdin.readline()
        count = int(rate * seconds)
        _emit_steadily(client, rate, count)
        _settle(client)
        print(f"DONE {count}", flush=True)
        sys.stdin.readline()
    finally:
        client.stop()


def baseline(directory: Path) -> float:
    """Bytes one plain SQLite WAL commit of one event row writes, here and now."""
    path = directory / "baseline.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE events (event_id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
        event = ArtworkViewed.create(site_id="bench", device_id="baseline", artwork_id="work-1", source="kiosk",
                                     language="fr")
        payload = encode_event(event).decode()
        db.execute("INSERT INTO events VALUES (?, ?)", (event.event_id, payload))
        before = write_bytes("self")
        for i in range(BASELINE_COMMITS):
            db.execute("INSERT INTO events VALUES (?, ?)", (f"{event.event_id}-{i}", payload))
        return (write_bytes("self") - before) / BASELINE_COMMITS
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def measure(site: Site, *, seconds: float = 30.0, rate: int = RATE) -> Wear:
    """With the site's broker running and no hub: start a hub and a device, measure, stop both."""
    bus.device(site, "steady-kiosk")  # enrolled, if it was not
    config = site.device_config("steady-kiosk")
    hub = bus.start_hub(site)
    try:
        child = subprocess.Popen([sys.executable, "-m", "bench.writes", "--device-config", str(config),
                                  "--rate", str(rate), "--seconds", str(seconds)],
                                 cwd=bus.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdin is not None and child.stdout is not None
        try:
            if child.stdout.readline().strip() != "READY":
                raise RuntimeError("the steady device did not start")
            hub_before, device_before = write_bytes(hub.pid), write_bytes(child.pid)
            child.stdin.write("go\n")
            child.stdin.flush()
            done = child.stdout.readline().split()
            if done[:1] != ["DONE"]:
                raise RuntimeError("the steady device did not finish")
            hub_after, device_after = write_bytes(hub.pid), write_bytes(child.pid)
            events = int(done[1])
            child.stdin.write("stop\n")
            child.stdin.flush()
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        bus.stop_hub(hub)
    return Wear(rate, events, (device_after - device_before) / events, (hub_after - hub_before) / events,
                baseline(site.root))


def rows(wear: Wear) -> list[tuple[str, str, str, str]]:
    """Rows for bench.bus's table: (measure, figure, ratio, target)."""
    base = wear.baseline_bytes_per_commit
    return [("plain SQLite WAL commit of one event row (baseline)", f"{base:,.0f} B", "", ""),
            (f"device writes per event at a steady {wear.rate}/s", f"{wear.device_bytes_per_event:,.0f} B",
             f"{wear.device_bytes_per_event / base:.2f}× baseline", f"≤ {TARGETS['device_bytes_per_event']:,}"),
            (f"hub writes per event at a steady {wear.rate}/s", f"{wear.hub_bytes_per_event:,.0f} B",
             f"{wear.hub_bytes_per_event / base:.2f}× baseline", f"≤ {TARGETS['hub_bytes_per_event']:,}")]


def figures(wear: Wear) -> dict[str, float]:
    return {"device_bytes_per_event": round(wear.device_bytes_per_event),
            "hub_bytes_per_event": round(wear.hub_bytes_per_event),
            "write_baseline_bytes_per_commit": round(wear.baseline_bytes_per_commit)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured window")
    parser.add_argument("--rate", type=int, default=RATE, help="events a second")
    parser.add_argument("--device-config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device_config is not None:
        device_process(args.device_config, args.rate, args.seconds)
        return
    site = bus.make_site()
    broker = MosquittoProcess.start(site)
    try:
        broker.wait_ready(10)
        wear = measure(site, seconds=args.seconds, rate=args.rate)
    finally:
        broker.stop()
        shutil.rmtree(site.root.parent, ignore_errors=True)
    for name, figure, ratio, target in rows(wear):
        print(f"{name:<62} {figure:>14} {ratio:>16} {target:>10}")
    print(json.dumps(figures(wear)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
