"""A device the broker refuses (a wrong password) says so at ERROR level, once per reason, counts it in its stats
and retries slowly; a real Mosquitto does the refusing."""

from __future__ import annotations

import logging
import re

import pytest
from harness import device_config
from support import wait_until

from bus.backoff import Backoff
from bus.device import DeviceClient
from protocol.events import ArtworkViewed


def _errors(caplog: pytest.LogCaptureFixture, device_id: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.levelno >= logging.ERROR and device_id in record.getMessage()]


def test_a_refused_device_logs_one_error_per_reason_and_counts_every_refusal(site, broker, caplog):
    caplog.set_level(logging.WARNING)  # the default level: no -v
    config = device_config(site, "kiosk-locked").with_broker(password="not-the-password")
    # Quick retries, to see several refusals in a moment; the default pace is the next test's.
    client = DeviceClient(config, refusal_backoff=Backoff(base_s=0.1, cap_s=0.2))
    client.record(ArtworkViewed, artwork_id="work-1", source="kiosk", language="fr")
    client.start()
    try:
        assert wait_until(lambda: client.stats().refusals >= 3, 30), client.stats()
        stats = client.stats()
        assert not stats.connected and stats.pending == 1 and stats.disconnects == 0
        assert stats.last_refusal is not None and re.search(r"authori|password", stats.last_refusal, re.I)
        errors = _errors(caplog, "kiosk-locked")
        assert len(errors) == 1, errors
        assert stats.last_refusal in errors[0]
        assert "configuration file" in errors[0] and "museum device enroll" in errors[0]
    finally:
        client.stop()


def test_a_refused_device_waits_a_minute_or_more_before_trying_again(site, broker, caplog):
    caplog.set_level(logging.WARNING)
    config = device_config(site, "kiosk-locked-out").with_broker(password="not-the-password")
    client = DeviceClient(config)
    client.start()
    try:
        assert wait_until(lambda: client.stats().refusals >= 1, 30), client.stats()
        assert wait_until(lambda: _errors(caplog, "kiosk-locked-out"), 30)
        retry = re.search(r"next attempt in (\d+) s", _errors(caplog, "kiosk-locked-out")[0])
        assert retry is not None and int(retry.group(1)) >= 60, _errors(caplog, "kiosk-locked-out")
    finally:
        client.stop()

