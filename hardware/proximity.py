"""Which visitor tags are at which watched artwork: per (tag, artwork), a small state machine on the tag's smoothed
distance, and the room-level rule shared with the other stations.

- Enter: the distance comes within `enter_m` and stays within `leave_m` for `min_dwell_s` (walk-bys do not count);
  the visit starts when it first came that near. Leave: the distance exceeds `leave_m` (more than `enter_m`:
  hysteresis, so noise at the boundary does not flap), or the tag is not heard for `leave_after_s` (checked by
  `tick`; the visit then ends when it was last heard, so dwell is not inflated by the timeout).
- Rooms: when a station of ANOTHER zone reports the same tag nearer (its sightings, fresher than `peer_ttl_s`), the
  tag is in that room, not ours: no enter, and a tag inside leaves once a peer is clearly nearer (by
  `ROOM_MARGIN`, so a tag in a doorway does not flip between rooms). Stations of the same zone never suppress.
  A peer's view only arrives every `interval_s`, so `min_dwell_s` should be longer than that.

Bounds: at most `max_tags` tags (the least recently heard is forgotten first, leaving its artworks), a tag not
heard for `leave_after_s` is forgotten, at most `MAX_PEERS` peers (the stalest dropped) of at most
`MAX_SIGHTINGS` tags each, and a visit longer than `MAX_DWELL_S` is ended (a tag forgotten on a bench).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from hardware.settings import StationSettings
from hardware.smoothing import RssiKalman
from protocol.messages import MAX_SIGHTINGS, Sightings

MAX_PEERS = 64
"""Stations whose sightings are kept: far more than a museum has; beyond, the stalest peer is dropped."""
ROOM_MARGIN = 0.8
"""A tag already inside leaves for another room only when that room's station is nearer than 0.8× our distance."""
MAX_DWELL_S = 6 * 3600.0
MAX_REPORTED_M = 999.0
"""Sightings carry 0–1000 m; a far tag is just far."""
SIGHTING_CHANGE_M = 0.25
SIGHTING_CHANGE_RATIO = 0.1
"""A tag's distance has changed "meaningfully" when it moved by more than 0.25 m and 10 %: less is noise."""

_OUT, _PENDING, _IN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Entered:
    tag_id: str
    artwork_id: str
    zone_id: str
    at: float


@dataclass(frozen=True, slots=True)
class Left:
    tag_id: str
    artwork_id: str
    zone_id: str
    at: float
    dwell_s: float
    reason: str
    """range, timeout, room (a nearer station of another zone), evicted, too_long or stopped."""


Transition = Entered | Left


class _Watch:
    """One tag at one artwork."""

    __slots__ = ("since", "state")

    def __init__(self) -> None:
        self.state = _OUT
        self.since = 0.0


class _Tag:
    __slots__ = ("distance", "filter", "last_heard", "watches")

    def __init__(self, rssi: float, at: float, watches: int) -> None:
        self.filter = RssiKalman(rssi, at)
        self.last_heard = at
        self.distance = 0.0
        self.watches = [_Watch() for _ in range(watches)]


class _Peer:
    __slots__ = ("expires", "tags", "zone_id")

    def __init__(self, zone_id: str, expires: float, tags: dict[str, float]) -> None:
        self.zone_id = zone_id
        self.expires = expires
        self.tags = tags


@dataclass
class ProximityCounters:
    tags_evicted: int = 0
    enters_suppressed: int = 0
    """Samples of a tag near a work here while a station of another zone was nearer (so no visit began)."""
    peers_stale: int = 0
    peers_dropped: int = 0


class ProximityTracker:
    def __init__(self, settings: StationSettings, on_change: Callable[[Transition], None]) -> None:
        self._artworks = tuple((a.artwork_id, a.zone_id, a.enter_m, a.leave_m) for a in settings.artworks)
        self._ten_n = 10.0 * settings.path_loss_exponent
        self._leave_after = settings.proximity.leave_after_s
        self._min_dwell = settings.proximity.min_dwell_s
        self._max_tags = settings.proximity.max_tags
        self._interval = settings.sightings.interval_s
        self._ttl = settings.sightings.peer_ttl_s
        self._on_change = on_change
        self._tags: OrderedDict[str, _Tag] = OrderedDict()
        """Least recently heard first."""
        self._peers: dict[str, _Peer] = {}
        self._sent: dict[str, float] = {}
        self._sent_at = float("-inf")
        self.counters = ProximityCounters()

    @property
    def tracked(self) -> int:
        return len(self._tags)

    def sample(self, tag_id: str, rssi: float, power_1m: float, at: float) -> None:
        """One advert of a tag: its RSSI and calibrated power at 1 m, heard at `at`."""
        tags = self._tags
        tag = tags.get(tag_id)
        if tag is None:
            if len(tags) >= self._max_tags:
                self._evict()
            tag = tags[tag_id] = _Tag(rssi, at, len(self._artworks))
            level = float(rssi)
        else:
            tags.move_to_end(tag_id)
            level = tag.filter.update(rssi, at)
            if at > tag.last_heard:
                tag.last_heard = at
        distance = tag.distance = 10.0 ** ((power_1m - level) / self._ten_n)
        for (artwork_id, zone_id, enter_m, leave_m), watch in zip(self._artworks, tag.watches, strict=True):
            state = watch.state
            if state == _OUT:
                if distance <= enter_m:
                    if self._peers and self._nearer_elsewhere(tag_id, zone_id, distance, at):
                        # In another room: the visit here starts only once no station there is nearer.
                        self.counters.enters_suppressed += 1
                        continue
                    watch.state, watch.since = _PENDING, at
                    if self._min_dwell <= 0:
                        self._confirm(tag_id, artwork_id, zone_id, watch, distance, at)
            elif state == _PENDING:
                if distance > leave_m:
                    watch.state = _OUT
                elif at - watch.since >= self._min_dwell:
                    self._confirm(tag_id, artwork_id, zone_id, watch, distance, at)
            elif distance > leave_m:
                self._leave(tag_id, artwork_id, zone_id, watch, at, "range")

    def tick(self, now: float) -> None:
        """Timeouts, overlong visits and the room rule for tags inside; forgets silent tags and stale peers."""
        peers = self._peers
        for device_id in [d for d, p in peers.items() if p.expires < now]:
            del peers[device_id]
        gone: list[str] = []
        for tag_id, tag in self._tags.items():
            timed_out = now - tag.last_heard > self._leave_after
            if timed_out:
                gone.append(tag_id)
            for (artwork_id, zone_id, _, _), watch in zip(self._artworks, tag.watches, strict=True):
                if watch.state == _IN:
                    if timed_out:
                        self._leave(tag_id, artwork_id, zone_id, watch, tag.last_heard, "timeout")
                    elif now - watch.since > MAX_DWELL_S:
                        self._leave(tag_id, artwork_id, zone_id, watch, now, "too_long")
                    elif peers and self._nearer_elsewhere(tag_id, zone_id, tag.distance * ROOM_MARGIN, now):
                        self._leave(tag_id, artwork_id, zone_id, watch, now, "room")
        for tag_id in gone:
            del self._tags[tag_id]

    def peer(self, sightings: Sightings, now: float) -> None:
        """Another station's latest view; a tag inside here that it sees clearly nearer, from another zone,
        leaves at once."""
        at = sightings.at.timestamp()
        if at < now - self._ttl:
            self.counters.peers_stale += 1
            return
        peers = self._peers
        if sightings.device_id not in peers and len(peers) >= MAX_PEERS:
            stalest = min(peers, key=lambda device_id: peers[device_id].expires)
            del peers[stalest]
            self.counters.peers_dropped += 1
        # A peer whose clock runs ahead must not keep its view alive longer than the TTL from now.
        tags = dict(sightings.tags[:MAX_SIGHTINGS])
        peers[sightings.device_id] = _Peer(sightings.zone_id, min(at, now) + self._ttl, tags)
        for tag_id, theirs in tags.items():
            tag = self._tags.get(tag_id)
            if tag is None or theirs >= tag.distance * ROOM_MARGIN:
                continue
            for (artwork_id, zone_id, _, _), watch in zip(self._artworks, tag.watches, strict=True):
                if watch.state == _IN and zone_id != sightings.zone_id:
                    self._leave(tag_id, artwork_id, zone_id, watch, now, "room")

    def changed_view(self, now: float) -> tuple[tuple[str, float], ...] | None:
        """This station's smoothed distance to each tag heard within `peer_ttl_s`, when it changed meaningfully
        since the last view returned (at most every `interval_s`; resent unchanged every half TTL while not empty,
        so that peers never see it expire while the tags are still here)."""
        if now - self._sent_at < self._interval:
            return None
        horizon = now - self._ttl
        view = {tag_id: min(round(tag.distance, 2), MAX_REPORTED_M)
                for tag_id, tag in self._tags.items() if tag.last_heard >= horizon}
        if len(view) > MAX_SIGHTINGS:
            view = dict(sorted(view.items(), key=lambda item: item[1])[:MAX_SIGHTINGS])
        sent = self._sent
        changed = view.keys() != sent.keys() or any(
            abs(distance - sent[tag_id]) > max(SIGHTING_CHANGE_M, SIGHTING_CHANGE_RATIO * sent[tag_id])
            for tag_id, distance in view.items())
        if not changed and not (view and now - self._sent_at >= self._ttl / 2):
            return None
        self._sent, self._sent_at = view, now
        return tuple(sorted(view.items()))

    def close(self, now: float) -> None:
        """End every visit in progress (the station stops)."""
        for tag_id, tag in self._tags.items():
            for (artwork_id, zone_id, _, _), watch in zip(self._artworks, tag.watches, strict=True):
                if watch.state == _IN:
                    self._leave(tag_id, artwork_id, zone_id, watch, min(now, tag.last_heard), "stopped")
                watch.state = _OUT
        self._tags.clear()

    # --- transitions --------------------------------------------------------------------------------------

    def _confirm(self, tag_id: str, artwork_id: str, zone_id: str, watch: _Watch, distance: float,
                 at: float) -> None:
        if self._peers and self._nearer_elsewhere(tag_id, zone_id, distance, at):
            # Not in our room: start over, so the dwell counts again from when the peer stops winning.
            watch.state = _OUT
            self.counters.enters_suppressed += 1
            return
        watch.state = _IN
        self._on_change(Entered(tag_id, artwork_id, zone_id, watch.since))

    def _leave(self, tag_id: str, artwork_id: str, zone_id: str, watch: _Watch, at: float, reason: str) -> None:
        watch.state = _OUT
        at = max(at, watch.since)
        self._on_change(Left(tag_id, artwork_id, zone_id, at, at - watch.since, reason))

    def _nearer_elsewhere(self, tag_id: str, zone_id: str, distance: float, now: float) -> bool:
        for peer in self._peers.values():
            if peer.zone_id != zone_id and peer.expires >= now:
                theirs = peer.tags.get(tag_id)
                if theirs is not None and theirs < distance:
                    return True
        return False

    def _evict(self) -> None:
        tag_id, tag = self._tags.popitem(last=False)
        self.counters.tags_evicted += 1
        for (artwork_id, zone_id, _, _), watch in zip(self._artworks, tag.watches, strict=True):
            if watch.state == _IN:
                self._leave(tag_id, artwork_id, zone_id, watch, tag.last_heard, "evicted")


__all__ = ["MAX_DWELL_S", "MAX_PEERS", "ROOM_MARGIN", "Entered", "Left", "ProximityCounters", "ProximityTracker",
           "Transition"]
