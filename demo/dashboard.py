"""The demo's live view: what museum staff would watch, from the hub's stats file, fitted to the terminal.

    Demo Museum of Fine Arts | 0:01:15 elapsed, museum clock +0:25:00 (x20)
    Most viewed works, last 1 min
        42  The Birth of Venus - Sandro Botticelli
        …
    Languages of the views: en 61% (120), fr 39% (77)
    Rooms: visitors counted now / capacity
      The Impressionists            12/60   20%  ####................
      …
    Devices: 7 of 8 online; offline: kiosk-03
    Real kiosk kiosk-app: online (untouched: few events)
    Hub: 38.2 events/s, 1012 events stored
    0 messages refused as malformed (kept aside for diagnosis)

`dashboard_lines` is a pure function of the figures, the museum and the size of the terminal; `LiveView` only
writes its lines: redrawn in place on a terminal, appended (a block per update) to a log or a pipe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from content.model import Museum
from protocol.ids import parse_instant

STALE_FIGURES_S = 3.0
UI_LANGUAGE = "en"
"""The demo speaks English; titles and room names are shown in it when the museum has it."""
MIN_WIDTH = 20
TALL_ENOUGH_FOR_FIVE = 22
"""Below this many terminal rows the block shows the three most viewed works instead of five."""


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    state: str | None


@dataclass(frozen=True)
class HubFigures:
    """The hub's stats file (`Site.hub_stats_file`), rewritten by the hub every second; see docs/hub.md."""

    stored_total: int
    events_per_s: float
    quarantined_total: int
    devices_online: tuple[str, ...]
    connected: bool
    updated_at: datetime
    devices: tuple[DeviceState, ...] = ()
    top_viewed: tuple[tuple[str, int], ...] = ()
    views_by_language: tuple[tuple[str, int], ...] = ()
    occupancy: tuple[tuple[str, int], ...] = ()
    activity_since: datetime | None = None
    refused_not_kept: int = 0
    storage_error: str | None = None


def read_hub_figures(path: Path) -> HubFigures | None:
    """The figures, or None while the hub has not written any (the file is replaced whole, never half-written)."""
    try:
        return parse_hub_figures(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def parse_hub_figures(data: dict[str, Any]) -> HubFigures:
    since = data.get("activity_since")
    return HubFigures(
        int(data["stored_total"]), float(data["events_per_s"]), int(data["quarantined_total"]),
        tuple(data["devices_online"]), bool(data["connected"]), parse_instant(data["updated_at"]),
        devices=tuple(DeviceState(str(d["device_id"]), d.get("state")) for d in data.get("devices", ())),
        top_viewed=tuple((str(w["artwork_id"]), int(w["views"])) for w in data.get("top_viewed", ())),
        views_by_language=tuple((str(lang), int(n)) for lang, n in data.get("views_by_language", {}).items()),
        occupancy=tuple((str(zone), int(o["count"])) for zone, o in data.get("occupancy", {}).items()),
        activity_since=parse_instant(since) if since else None,
        refused_not_kept=int(data.get("quarantine_not_stored", 0)), storage_error=data.get("storage_error"))


# --- formatting, without I/O -----------------------------------------------------------------------------

def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, the cut shown by a final '~'."""
    return text if len(text) <= width else text[:max(0, width - 1)] + "~"


def span(seconds: float) -> str:
    """A duration as staff would say it: 40 s, 12 min, 1 h."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 3570:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def names_within(label: str, names: Sequence[str], width: int) -> str:
    """`label` then as many names as fit in `width`, and how many more there are."""
    text = label
    for shown, name in enumerate(names):
        rest = len(names) - shown - 1
        more = f" (+{rest} more)" if rest else ""
        candidate = f"{text}{', ' if shown else ''}{name}"
        if len(candidate + more) > width:
            return fit(f"{text} (+{len(names) - shown} more)", width)
        text = candidate
    return text


def _local(museum: Museum, texts: Any) -> str:
    return texts.get(UI_LANGUAGE) or texts[museum.languages[0]]


def work_label(museum: Museum, artwork_id: str) -> str:
    try:
        artwork = museum.artwork(artwork_id)
    except KeyError:
        return artwork_id  # a work the museum file does not know: its id is still worth showing
    return f"{_local(museum, artwork.title)} - {artwork.artist}"


def room_line(name: str, count: int | None, capacity: int, width: int) -> str:
    name_width = max(8, min(30, width // 3))
    label = f"  {fit(name, name_width):<{name_width}}"
    if count is None:
        return fit(f"{label} no count yet", width)
    share = count / capacity
    figure = f"{label} {count:>3}/{capacity:<3} {round(share * 100):>3}%{'!' if count > capacity else ' '}"
    bar_width = min(20, width - len(figure) - 1)
    if bar_width >= 5:
        filled = min(bar_width, round(share * bar_width))
        figure += " " + "#" * filled + "." * (bar_width - filled)
    return fit(figure, width)


def dashboard_lines(museum: Museum, figures: HubFigures | None, *, elapsed_s: float, speed: float,
                    enrolled: Sequence[str], width: int = 80, height: int | None = None,
                    now: datetime | None = None, real_kiosks: Sequence[str] = ()) -> list[str]:
    """The live view as lines of at most `width` characters, and at most `height - 1` of them when given (the
    last row stays free for the cursor). `real_kiosks`: those of `enrolled` that run the kiosk app itself."""
    width = max(MIN_WIDTH, width)
    lines = [f"{_local(museum, museum.name)} | {clock(elapsed_s)} elapsed, museum clock "
             f"+{clock(elapsed_s * speed)} (x{speed:g})"]
    if figures is None:
        lines.append("Waiting for the hub's first figures...")
        return _cut(lines, width, height)
    now = now or datetime.now(UTC)
    age = (now - figures.updated_at).total_seconds()
    if not figures.connected:
        lines.append("! The hub is NOT connected to the broker: nothing new is being stored.")
    if age > STALE_FIGURES_S:
        lines.append(f"! These figures are {age:.0f} s old: the hub is stuck or stopped.")
    if figures.storage_error:
        lines.append(f"! The hub cannot store events (the devices keep them): {figures.storage_error}")

    since = f", last {span((figures.updated_at - figures.activity_since).total_seconds())}" \
        if figures.activity_since else ""
    lines.append(f"Most viewed works{since}")
    top = 5 if height is None or height >= TALL_ENOUGH_FOR_FIVE else 3
    for artwork_id, views in figures.top_viewed[:top]:
        lines.append(f"  {views:>5}  {work_label(museum, artwork_id)}")
    if not figures.top_viewed:
        lines.append("  no work viewed yet")

    total_views = sum(views for _, views in figures.views_by_language)
    languages = ", ".join(f"{language} {round(100 * views / total_views)}% ({views})"
                          for language, views in figures.views_by_language) if total_views else "none yet"
    lines.append(f"Languages of the views: {languages}")

    lines.append("Rooms: visitors counted now / capacity")
    counts = dict(figures.occupancy)
    for room in museum.rooms:
        lines.append(room_line(_local(museum, room.name), counts.get(room.zone_id), room.capacity, width))

    lines.append(_devices_line(figures, enrolled, width))
    states = {device.device_id: device.state for device in figures.devices}
    for device_id in real_kiosks:
        state = "online" if device_id in figures.devices_online else states.get(device_id) or "not heard from yet"
        lines.append(f"Real kiosk {device_id}: {state} (untouched: few events)")
    lines.append(f"Hub: {figures.events_per_s:.1f} events/s, {figures.stored_total} events stored")
    refused = figures.quarantined_total
    line = f"{refused} message{'' if refused == 1 else 's'} refused as malformed (kept aside for diagnosis)"
    if figures.refused_not_kept:
        line += f", {figures.refused_not_kept} more only counted"
    lines.append(line)
    return _cut(lines, width, height)


def _devices_line(figures: HubFigures, enrolled: Sequence[str], width: int) -> str:
    states = {device.device_id: device.state for device in figures.devices}
    online = [device_id for device_id in enrolled if device_id in figures.devices_online]
    offline = [device_id for device_id in enrolled if device_id in states and device_id not in online]
    unseen = [device_id for device_id in enrolled if device_id not in states and device_id not in online]
    line = f"Devices: {len(online)} of {len(enrolled)} online"
    if unseen:
        line += f", {len(unseen)} not heard from yet"
    if offline:
        return names_within(f"{line}; offline: ", offline, width)
    return fit(line, width)


def _cut(lines: list[str], width: int, height: int | None) -> list[str]:
    if height is not None:
        lines = lines[:max(1, height - 1)]
    return [fit(line, width) for line in lines]


# --- the terminal ----------------------------------------------------------------------------------------

class LiveView:
    """A block of lines redrawn in place on a terminal; appended, a block per update, anywhere else."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._encoding = getattr(out, "encoding", None) or "utf-8"

    def show(self, lines: Sequence[str]) -> None:
        # A title the terminal's encoding cannot show must not stop the demo.
        text = "\n".join(lines).encode(self._encoding, "replace").decode(self._encoding)
        if self.tty:
            # Back to the block's first line, each line cleared to its end, and whatever was below cleared too.
            up = f"\x1b[{self._drawn}F" if self._drawn else "\r"
            self.out.write(up + "\x1b[K\n".join(text.split("\n")) + "\x1b[K\n\x1b[J")
            self._drawn = len(lines)
        else:
            self.out.write(text + "\n\n")
        self.out.flush()

    def finish(self) -> None:
        self._drawn = 0
