"""What the hub writes to its device registry per round: only what changed, and `last_seen` at most once a minute
per device (bench/writes.py measures the bytes; this checks the semantics stay right)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.hub import _RegistryWrites
from broker.hub_store import DeviceSeen

SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EVERY = _RegistryWrites.LAST_SEEN_EVERY_S


def committed(registry: _RegistryWrites, sightings: list[DeviceSeen], now: float) -> list[DeviceSeen]:
    needed = registry.needed(sightings, now)
    registry.written(needed, now)
    return needed


def test_an_unchanged_device_is_written_at_most_once_a_minute() -> None:
    registry = _RegistryWrites()
    assert committed(registry, [DeviceSeen("kiosk-1")], 0.0) == [DeviceSeen("kiosk-1")]
    assert committed(registry, [DeviceSeen("kiosk-1")], 1.0) == []
    assert committed(registry, [DeviceSeen("kiosk-1")], EVERY - 0.1) == []
    assert committed(registry, [DeviceSeen("kiosk-1")], EVERY) == [DeviceSeen("kiosk-1")]


def test_a_change_of_state_kind_or_version_is_written_at_once() -> None:
    registry = _RegistryWrites()
    online = DeviceSeen("kiosk-1", "kiosk", "1.0.0", "online", SINCE)
    committed(registry, [online], 0.0)
    assert committed(registry, [DeviceSeen("kiosk-1", "kiosk", "1.0.0")], 1.0) == []
    offline = DeviceSeen("kiosk-1", state="offline", state_since=SINCE.replace(minute=5))
    assert committed(registry, [offline], 2.0) == [offline]
    upgraded = DeviceSeen("kiosk-1", "kiosk", "1.1.0")
    assert committed(registry, [upgraded], 3.0) == [upgraded]
    assert committed(registry, [DeviceSeen("kiosk-2")], 3.0) == [DeviceSeen("kiosk-2")]


def test_a_sighting_whose_commit_failed_is_written_again() -> None:
    registry = _RegistryWrites()
    assert registry.needed([DeviceSeen("kiosk-1")], 0.0)  # the commit failed: `written` was not called
    assert registry.needed([DeviceSeen("kiosk-1")], 1.0) == [DeviceSeen("kiosk-1")]


def test_a_replayed_status_does_not_count_as_a_sign_of_life() -> None:
    registry = _RegistryWrites()
    replayed = DeviceSeen("kiosk-1", "kiosk", "1.0.0", "offline", SINCE, replayed=True)
    assert committed(registry, [replayed], 0.0) == [replayed]  # first learnt from the replay
    assert committed(registry, [replayed], 1.0) == []
    # The first live message writes last_seen, though the row was written a moment ago.
    assert committed(registry, [DeviceSeen("kiosk-1")], 2.0) == [DeviceSeen("kiosk-1")]
