"""The hub's memory under a flood of maximum-size invalid messages, beside its own idle size in the same run.

    python -m bench.flood

Two device accounts each publish `MESSAGES` messages just under the contract's limit (`MAX_MESSAGE_BYTES`), none
of them JSON, as fast as the broker takes them, to a real hub process (`museum hub run`). The hub's peak resident
size comes from the kernel (`VmHWM` in /proc/<pid>/status), so no sample can miss it; the figure after the burst
is `VmRSS` once the hub has acknowledged each account's last, valid, event (it handles one account's messages in
order, so by then the whole flood went through it). `bench.bus` prints the peak as `hub_rss_peak_mb`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import bus  # bench.bus imports this module too: its names are read when called
from broker.mosquitto import MosquittoProcess
from broker.site import Site
from bus.mqtt import Credentials, Endpoint, MqttLink
from protocol.codec import MAX_MESSAGE_BYTES, decode_ack, encode_event
from protocol.events import ArtworkViewed
from protocol.topics import acks_topic, events_topic

ACCOUNTS = 2
MESSAGES = 300
TARGET_PEAK_MB = 120.0
WINDOW = 20
"""Messages each account has in flight before it waits for the broker's PUBACKs."""
RESEND_S = 5.0
"""How long the flood's last valid event waits for its ack before it is sent again."""


@dataclass(frozen=True)
class Flood:
    idle_mb: float
    peak_mb: float
    after_mb: float
    seconds: float
    messages: int
    handled: int
    """Flood messages the hub read (quarantined, kept or only counted); the broker drops the rest when its queue
    for the hub is full (`max_queued_bytes`), as it would for a real flood."""


def memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for process {pid}")




def _link(site: Site, device_id: str) -> MqttLink:
    config = bus.device(site, device_id)
    assert site.plain_loopback_port is not None
    link = MqttLink(device_id, Endpoint("127.0.0.1", site.plain_loopback_port),
                    Credentials(config.broker.username, config.broker.password),
                    subscriptions=[(acks_topic(site.site_id, device_id), 1)])
    if not link.wait_connected(10):
        raise RuntimeError(f"{device_id} could not connect: {link.last_refusal or link.last_error}")
    return link


def flood(site: Site, messages: int = MESSAGES) -> Flood:
    """Flood a hub process started here; the site's broker must be running."""
    hub = bus.start_hub(site)
    try:
        time.sleep(1.0)  # let the interpreter settle: the idle figure is the baseline
        idle = memory_mb(hub.pid, "VmRSS")
        links = {f"flood-{n}": _link(site, f"flood-{n}") for n in range(ACCOUNTS)}
        garbage = b"<" + b"\x01" * (MAX_MESSAGE_BYTES - 64)
        started = time.monotonic()
        for sent in range(0, messages, WINDOW):
            for device_id, link in links.items():
                for _ in range(min(WINDOW, messages - sent)):
                    if not link.publish(events_topic(site.site_id, device_id), garbage, qos=1):
                        raise RuntimeError(f"{device_id} lost its connection")
            for link in links.values():
                if not link.flush(30):
                    raise RuntimeError("the broker did not acknowledge the flood")
        last = {device_id: ArtworkViewed.create(site_id=site.site_id, device_id=device_id, artwork_id="work-1",
                                                source="kiosk", language="fr") for device_id in links}
        waiting = set(links)
        deadline = time.monotonic() + 120
        resend_at = 0.0
        while waiting and time.monotonic() < deadline:
            if time.monotonic() >= resend_at:
                # As a device does: a PUBACK is not delivery. Once the hub's queue at the broker is over its bounds
                # (a slow or loaded machine), the broker drops what comes next, this event included.
                resend_at = time.monotonic() + RESEND_S
                for device_id in waiting:
                    links[device_id].publish(events_topic(site.site_id, device_id), encode_event(last[device_id]),
                                             qos=1)
            for device_id in list(waiting):
                for message in links[device_id].poll(0.05):
                    if last[device_id].event_id in decode_ack(message.payload).committed:
                        waiting.discard(device_id)
        if waiting:
            raise RuntimeError(f"the hub never acknowledged {sorted(waiting)}")
        seconds = time.monotonic() - started
        for link in links.values():
            link.close()
        time.sleep(1.5)  # the hub's next idle poll gives the burst's memory back; its stats file is rewritten
        figures = json.loads(site.hub_stats_file.read_text())
        handled = figures["quarantined_total"] + figures["quarantine_not_stored"]
        return Flood(idle, memory_mb(hub.pid, "VmHWM"), memory_mb(hub.pid, "VmRSS"), seconds, messages * ACCOUNTS,
                     handled)
    finally:
        bus.stop_hub(hub)


def run() -> Flood:
    """A flood against a site, broker and hub of its own, removed afterwards."""
    site = bus.make_site()
    broker = MosquittoProcess.start(site)
    try:
        broker.wait_ready(10)
        return flood(site)
    finally:
        broker.stop()
        shutil.rmtree(site.root.parent, ignore_errors=True)


def measure(figures: dict[str, Any]) -> tuple[str, str, str, str]:
    """For `bench.bus`: adds `hub_rss_peak_mb` to its figures and returns its table row."""
    result = run()
    figures["hub_rss_peak_mb"] = round(result.peak_mb, 1)
    return (f"hub RSS peak, {result.messages} invalid {MAX_MESSAGE_BYTES // 1024} KiB messages (idle: "
            f"{result.idle_mb:.0f} MB)", f"{result.peak_mb:.1f} MB", f"{result.peak_mb / result.idle_mb:.2f}× idle",
            f"≤ {TARGET_PEAK_MB:g} MB")


def main() -> None:
    result = run()
    print(f"hub RSS idle {result.idle_mb:.1f} MB, peak {result.peak_mb:.1f} MB "
          f"({result.peak_mb / result.idle_mb:.2f}× idle, target ≤ {TARGET_PEAK_MB:g} MB), after the burst "
          f"{result.after_mb:.1f} MB; {result.messages} messages of {MAX_MESSAGE_BYTES // 1024} KiB "
          f"in {result.seconds:.1f} s, {result.handled} of them read by the hub")
    print(json.dumps({"hub_rss_idle_mb": round(result.idle_mb, 1), "hub_rss_peak_mb": round(result.peak_mb, 1),
                      "hub_rss_after_mb": round(result.after_mb, 1)}))


if __name__ == "__main__":
    main()
