"""Health of the museum's beacons and visitor tags, from their Eddystone-TLM frames and from hearing them at all.

- `beacon.health`: the latest telemetry, at most once per `report_every_s` per beacon or tag (the first TLM heard
  is reported at once).
- `beacon.alert` `low_battery`: once when the battery drops below `low_battery_mv`; again only after it has
  recovered by `RECOVERY_MARGIN_MV` above it (a battery near the threshold swings with temperature and load, and
  staff want one alert, not one an hour).
- `beacon.alert` `not_heard`: a configured museum beacon not heard for `not_heard_s` (counted from the station's
  start for one never heard), then `heard_again` when it is back. Only while the station hears something at
  all: a deaf scanner is reported as `scanner.status`, and when it recovers every beacon gets a fresh
  `not_heard_s` to be heard again. Visitor tags get no `not_heard`: they spend the night in a drawer.

TLM frames carry no identity: the pipeline attributes them (by the sender's address hash) to the beacon or tag
whose UID/iBeacon frames came from the same address. Bounds: one state per configured beacon, and at most
`MAX_TAGS` tags (the least recently reported forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from hardware.beacons import EddystoneTLM
from hardware.settings import HealthSettings

RECOVERY_MARGIN_MV = 100
MAX_TAGS = 10_000


@dataclass(frozen=True, slots=True)
class Report:
    beacon_id: str
    telemetry: EddystoneTLM
    at: float


@dataclass(frozen=True, slots=True)
class Alert:
    beacon_id: str
    alert: str
    """low_battery, not_heard or heard_again."""
    detail: str
    at: float


Notice = Report | Alert


class _State:
    __slots__ = ("last_heard", "last_report", "low", "silent")

    def __init__(self) -> None:
        self.last_report = float("-inf")
        self.low = False
        self.last_heard: float | None = None
        self.silent = False


class HealthMonitor:
    def __init__(self, settings: HealthSettings, beacon_ids: tuple[str, ...],
                 on_notice: Callable[[Notice], None]) -> None:
        self._report_every = settings.report_every_s
        self._low_mv = settings.low_battery_mv
        self._not_heard = settings.not_heard_s
        self._on_notice = on_notice
        self._beacons = {beacon_id: _State() for beacon_id in beacon_ids}
        self._tags: OrderedDict[str, _State] = OrderedDict()
        self._deaf = False

    def heard(self, beacon_id: str, at: float) -> None:
        """Any frame of a configured museum beacon."""
        state = self._beacons[beacon_id]
        last = state.last_heard
        if last is None or at > last:
            state.last_heard = at
        if state.silent:
            state.silent = False
            since = f" after {_duration(at - last)}" if last is not None else ""
            self._on_notice(Alert(beacon_id, "heard_again", f"heard again{since}", at))

    def telemetry(self, beacon_id: str, tlm: EddystoneTLM, at: float, *, configured: bool) -> None:
        """A TLM frame attributed to a configured museum beacon (`configured`) or to a visitor tag."""
        state = self._beacons.get(beacon_id) if configured else self._tag(beacon_id)
        if state is None:
            return
        if at - state.last_report >= self._report_every:
            state.last_report = at
            self._on_notice(Report(beacon_id, tlm, at))
        battery = tlm.battery_mv
        if battery is None:
            return
        if not state.low and battery < self._low_mv:
            state.low = True
            self._on_notice(Alert(beacon_id, "low_battery", f"battery at {battery} mV, below the {self._low_mv} mV "
                                  "threshold: replace or recharge it", at))
        elif state.low and battery >= self._low_mv + RECOVERY_MARGIN_MV:
            state.low = False

    def tick(self, now: float, *, hearing: bool) -> None:
        """`not_heard` checks; `hearing`: whether the station's scanner hears anything at all lately."""
        if not hearing:
            self._deaf = True
            return
        fresh_start = self._deaf
        self._deaf = False
        for beacon_id, state in self._beacons.items():
            if state.last_heard is None or fresh_start:
                # The clock starts with the station (or restarts once the scanner hears again).
                state.last_heard = now if state.last_heard is None else max(state.last_heard, now)
                continue
            silence = now - state.last_heard
            if not state.silent and silence >= self._not_heard:
                state.silent = True
                self._on_notice(Alert(beacon_id, "not_heard", f"not heard for {_duration(silence)}: check that it "
                                      "is in place and its battery", now))

    def _tag(self, tag_id: str) -> _State:
        tags = self._tags
        state = tags.get(tag_id)
        if state is None:
            if len(tags) >= MAX_TAGS:
                tags.popitem(last=False)
            state = tags[tag_id] = _State()
        else:
            tags.move_to_end(tag_id)
        return state


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["MAX_TAGS", "RECOVERY_MARGIN_MV", "Alert", "HealthMonitor", "Notice", "Report"]
