"""Running the real pieces in tests: the hub in a thread or as a process, devices enrolled on a site."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from support import wait_until

from broker.hub import Hub, HubSettings
from broker.site import Site, enroll_device
from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient

ROOT = Path(__file__).resolve().parent.parent


def device_config(site: Site, device_id: str, kind: str = "kiosk", *, tls: bool = False) -> ClientConfig:
    """Enroll a device and return its configuration, pointed at the plain loopback listener (or TLS)."""
    config = ClientConfig.load(enroll_device(site, device_id, kind))
    if tls:
        return config.with_broker(host="127.0.0.1", port=site.tls_port, tls=True, ca_file=site.ca_file,
                                  discover=False)
    return config.with_broker(discover=False)


def start_device(site: Site, device_id: str, tuning: DeliveryTuning | None = None, *, kind: str = "kiosk",
                 **kwargs: object) -> DeviceClient:
    client = DeviceClient(device_config(site, device_id, kind), tuning=tuning, **kwargs)  # type: ignore[arg-type]
    client.start()
    return client


def hub_db(site: Site) -> Path:
    return site.hub_database


def stored_ids(site: Site, device_id: str | None = None) -> set[str]:
    """Event ids in the hub's database, read through a connection of our own (WAL lets us read while it writes)."""
    path = hub_db(site)
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        try:
            if device_id is None:
                return {row[0] for row in db.execute("SELECT event_id FROM events")}
            return {row[0] for row in db.execute("SELECT event_id FROM events WHERE device_id = ?", (device_id,))}
        except sqlite3.OperationalError:  # the hub has not created its tables yet
            return set()


def devices(site: Site) -> dict[str, dict[str, object]]:
    with sqlite3.connect(hub_db(site)) as db:
        db.row_factory = sqlite3.Row
        return {row["device_id"]: dict(row) for row in db.execute("SELECT * FROM devices")}


def stored_types(site: Site, device_id: str) -> list[str]:
    with sqlite3.connect(hub_db(site)) as db:
        return [row[0] for row in db.execute("SELECT type FROM events WHERE device_id = ? ORDER BY event_id",
                                             (device_id,))]


def quarantine(site: Site) -> list[dict[str, object]]:
    with sqlite3.connect(hub_db(site)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM quarantine ORDER BY id")]


class HubThread:
    """The hub, in this process."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.stop_event = threading.Event()
        settings = HubSettings(ClientConfig.load(site.hub_config), site.hub_database, site.hub_stats_file,
                               screenshots_dir=site.screenshots_dir)
        self.hub = Hub(settings)
        self.thread = threading.Thread(target=self.hub.run, args=(self.stop_event,), daemon=True)

    def __enter__(self) -> HubThread:
        self.thread.start()
        # A known point: from the broker's SUBACK on, every device's events reach the hub's session. Before it, a
        # fresh site's broker has no session for the hub, and drops what devices publish (they resend only after
        # ack_timeout_s, which some tests set out of reach).
        if not wait_until(lambda: self.hub.link.subscribed, 60):
            self.__exit__()
            raise AssertionError("the hub never subscribed")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.thread.join(10)


class HubProcess:
    """The hub as its own process (`museum hub run`), so tests can SIGKILL or SIGSTOP it."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HubProcess:
        log = open(self.site.hub_data_dir.parent / "hub-process.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen([sys.executable, "-m", "museum", "hub", "run", "--site", str(self.site.root),
                                         "--verbose"], stdout=log, stderr=log, cwd=ROOT)
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
