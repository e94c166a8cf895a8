"""Sending a device a command and waiting for its answer: the library behind `museum device command`.

    send_command(site, "kiosk-01", "set-language", {"language": "en"}, timeout_s=30) -> CommandReply

1. The command goes out with the site's **operator** account (`operator.toml`), allowed to write the devices'
   commands topics and nothing else. Not the hub's account: the broker makes the username the client id
   (`use_username_as_clientid`), so connecting as `hub`, whatever client id we asked for, would take the running
   hub's session over. One connection at a time per site (`operator.lock`) for the same reason, between two
   operators; each holds it only for connect, publish and PUBACK.
2. QoS 1, not retained. A device with a session at the broker (one that has connected once) gets it even if it
   is offline now: the broker queues it in the device's persistent session and delivers it when the device
   reconnects, minutes or days later. A device that never connected has no session, and the command is dropped.
3. The device answers with a `command.result` event, which reaches the hub like every event; this waits for it in
   the hub's database (a read-only connection), not on the broker: the answer is there once the hub has it,
   whenever this starts looking; the operator account needs no right to read devices' events (which carry visit
   ids); and the connection to the broker is not held while waiting. For `screenshot`, it also waits for the PNG
   file the hub writes (`SiteLayout.screenshot_file`).

Every failure is a `CommandError` with a one-line message for the operator.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from broker.hub_store import (
    PAST_TOLERANCE_DAYS,
    StoredCommandResult,
    device_row,
    find_command_result,
    open_reader,
)
from broker.locks import exclusive_lock
from broker.site import Site, enrolled_devices, ensure_operator
from bus.config import ClientConfig
from bus.mqtt import Credentials, Endpoint, MqttLink
from protocol.codec import decode_command, encode_command
from protocol.errors import ContractError
from protocol.fields import IDENTIFIER
from protocol.ids import format_instant, parse_instant, utc_now
from protocol.messages import ArgValue, Command
from protocol.topics import commands_topic

SCREENSHOT = "screenshot"
POLL_INTERVAL_S = 0.2
CONNECT_TIMEOUT_S = 10.0
RECENT_WINDOW = timedelta(days=1)
"""The result is looked for among the events the device created from a day before the command on (a range of the
primary key, cheap to read every poll): a device clock up to a day behind the hub's still finds it. Before giving
up, the whole window the hub accepts (`PAST_TOLERANCE_DAYS`) is searched once."""
HUB_STATS_STALE_S = 15.0
"""A hub stats file older than this means the hub is not running (it rewrites it every second)."""


class CommandError(Exception):
    """The command could not be sent, or no answer came; the message is one line for the operator.
    `command_id` is set once the command was sent (it may still be answered later)."""

    def __init__(self, message: str, *, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


@dataclass(frozen=True)
class CommandReply:
    """The device's answer (its `command.result`), and for `screenshot` the file the hub wrote."""

    command_id: str
    device_id: str
    name: str
    ok: bool
    detail: str
    screenshot: Path | None = None


def parse_args(pairs: list[str] | tuple[str, ...]) -> dict[str, ArgValue]:
    """`KEY=VALUE` words as command arguments: `true`/`false` become booleans, whole numbers ints, other numbers
    floats, anything else stays text. ValueError (one line) for a word without `=`, or a key given twice."""
    args: dict[str, ArgValue] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {pair!r} is not KEY=VALUE")
        if key in args:
            raise ValueError(f"argument {key!r} is given twice")
        args[key] = parse_value(text)
    return args


def parse_value(text: str) -> ArgValue:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def send_command(site: Site, device_id: str, name: str, args: Mapping[str, ArgValue] | None = None, *,
                 timeout_s: float, poll_interval_s: float = POLL_INTERVAL_S) -> CommandReply:
    """Send `name` with `args` to `device_id` and wait up to `timeout_s` for its answer (and screenshot)."""
    deadline = time.monotonic() + timeout_s
    command = _command(site, device_id, name, dict(args or {}))
    database = site.hub_database
    if not database.is_file():
        raise CommandError(f"no hub database at {database}: the answer is stored by the hub; start it with "
                           f"`museum hub run --site {site.root}`")
    _publish(site, device_id, command, deadline)
    return _wait_for_reply(site, device_id, command, deadline, timeout_s, poll_interval_s)


def _command(site: Site, device_id: str, name: str, args: dict[str, ArgValue]) -> Command:
    try:
        devices = enrolled_devices(site)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    if device_id not in devices:
        known = ", ".join(sorted(devices)) or "none yet"
        raise CommandError(f"device {device_id!r} is not enrolled at site {site.site_id!r} (enrolled: {known})")
    if not isinstance(name, str) or IDENTIFIER.match(name) is None:
        raise CommandError(f"command name {name!r} is not an identifier (lowercase letters, digits and '-')")
    command = Command(str(uuid.uuid4()), name, utc_now(), args)
    try:
        decode_command(encode_command(command))  # what the device will accept, refused here rather than there
    except (ContractError, TypeError, ValueError) as error:
        raise CommandError(f"invalid command arguments: {error}") from None
    return command


def _publish(site: Site, device_id: str, command: Command, deadline: float) -> None:
    try:
        changed = ensure_operator(site)
        config = ClientConfig.load(site.operator_config)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    broker = config.broker
    endpoint = Endpoint(broker.host, broker.port, broker.ca_file if broker.tls else None)
    connect_deadline = min(deadline, time.monotonic() + CONNECT_TIMEOUT_S)
    topic, payload = commands_topic(site.site_id, device_id), encode_command(command)
    try:
        with exclusive_lock(site.operator_lock_file):
            while True:
                reason = _publish_once(config, endpoint, topic, payload, connect_deadline)
                if reason is None:
                    return
                # A site that just got its operator account: the broker may not have re-read its passwd yet.
                if not (changed and reason.startswith("refused") and time.monotonic() < connect_deadline):
                    break
                time.sleep(0.2)
    except OSError as error:
        raise CommandError(f"cannot take {site.operator_lock_file}: {error}") from None
    raise CommandError(f"cannot send the command through the broker at {endpoint} ({reason}); is it running? "
                       f"(`museum broker run --site {site.root}`)")


def _publish_once(config: ClientConfig, endpoint: Endpoint, topic: str, payload: bytes, deadline: float) -> str | None:
    """Connect, publish at QoS 1 and wait for the PUBACK; None when done, else why not."""
    broker = config.broker
    link = MqttLink(config.client_id, endpoint, Credentials(broker.username, broker.password))
    try:
        # One attempt: an operator at the command line wants the first failure, not a retry loop.
        while not link.connected and time.monotonic() < deadline:
            link.poll(0.05)
            if link.last_error is not None or link.last_refusal is not None:
                break
        if not link.connected:
            if link.last_refusal is not None:
                return f"refused: {link.last_refusal}"
            return link.last_error or "no answer"
        if link.publish(topic, payload, qos=1, retain=False) and link.flush(max(deadline - time.monotonic(), 1.0)):
            return None
        return link.last_disconnect or "no acknowledgement from the broker"
    finally:
        link.close()


def _wait_for_reply(site: Site, device_id: str, command: Command, deadline: float, timeout_s: float,
                    poll_interval_s: float) -> CommandReply:
    screenshot = site.screenshot_file(device_id, command.command_id)
    result: StoredCommandResult | None = None
    try:
        conn = open_reader(site.hub_database)
    except sqlite3.Error as error:
        raise CommandError(f"cannot read the hub database {site.hub_database}: {error}") from None
    try:
        while True:
            if result is None:
                result = _find(conn, device_id, command, command.issued_at - RECENT_WINDOW)
            if result is not None and (command.name != SCREENSHOT or not result.ok or screenshot.exists()):
                return _reply(result, command, screenshot)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(poll_interval_s, max(deadline - time.monotonic(), 0.0)))
        if result is None:
            result = _find(conn, device_id, command, command.issued_at - timedelta(days=PAST_TOLERANCE_DAYS))
        if result is not None and command.name == SCREENSHOT and result.ok and not screenshot.exists():
            raise CommandError(f"{device_id} answered {command.name} ok ({result.detail}) but its screenshot did "
                               f"not reach the hub within {timeout_s:g} s; a refused one is counted by "
                               f"`museum hub stats --site {site.root}` (quarantine)", command_id=command.command_id)
        if result is not None:
            return _reply(result, command, screenshot)
        raise CommandError(_no_answer(site, conn, device_id, command, timeout_s), command_id=command.command_id)
    finally:
        conn.close()


def _find(conn: sqlite3.Connection, device_id: str, command: Command,
          created_after: datetime) -> StoredCommandResult | None:
    try:
        return find_command_result(conn, device_id, command.command_id, created_after=created_after)
    except sqlite3.OperationalError:  # the hub has not created its tables yet, or holds a lock for a moment
        return None


def _reply(result: StoredCommandResult, command: Command, screenshot: Path) -> CommandReply:
    taken = screenshot if command.name == SCREENSHOT and result.ok and screenshot.exists() else None
    return CommandReply(command.command_id, result.device_id, result.command, result.ok, result.detail, taken)


def _no_answer(site: Site, conn: sqlite3.Connection, device_id: str, command: Command, timeout_s: float) -> str:
    """Why there is probably no answer, from what the hub knows, and what became of the command."""
    head = f"no answer from {device_id} to {command.name} (command {command.command_id}) within {timeout_s:g} s"
    hub_down = _hub_not_running(site)
    if hub_down is not None:
        return (f"{head}: {hub_down}; the device's answer is stored by the hub, start it with "
                f"`museum hub run --site {site.root}`")
    try:
        row = device_row(conn, device_id)
    except sqlite3.Error:
        row = None
    if row is None or row.get("state") is None:
        return (f"{head}: the hub has never seen {device_id} connected; a device that never connected has no "
                "session at the broker, so the command is dropped: start the device and send it again")
    if row["state"] == "offline":
        return (f"{head}: the device is offline (since {row.get('state_since')}); the broker keeps the command "
                "for it and the device will run it when it reconnects (its answer is then stored by the hub)")
    return (f"{head}, though the hub sees it online (last seen {row.get('last_seen')}): it may be busy or its "
            "link may be down; it may still answer later")


def _hub_not_running(site: Site) -> str | None:
    try:
        figures: Any = json.loads(site.hub_stats_file.read_text(encoding="utf-8"))
        updated = parse_instant(figures["updated_at"])
    except FileNotFoundError:
        return f"the hub has no stats file ({site.hub_stats_file}), so it does not seem to be running"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = (utc_now() - updated).total_seconds()
    if age > HUB_STATS_STALE_S:
        return f"the hub does not seem to be running (its stats file was last written at {format_instant(updated)})"
    if figures.get("connected") is False:
        return "the hub is running but not connected to the broker"
    return None


__all__ = ["CommandError", "CommandReply", "parse_args", "parse_value", "send_command"]
