"""The configuration file of one MQTT client of a site: a device (kiosk, gateway, QR reader) or the hub.

`museum site init` writes the hub's, `museum device enroll` a device's. It is TOML, readable by staff:

    site_id = "demo"
    client_id = "kiosk-01"        # also the MQTT username and the device segment of its topics
    kind = "kiosk"

    [broker]
    host = "museum-hub.local"     # used when zeroconf finds nothing
    port = 8883
    tls = true
    ca_file = "ca.crt"            # the site CA; relative paths are relative to this file
    discover = true               # look for _mqtt._tcp with site=<site_id> first
    username = "kiosk-01"
    password = "…"

    [outbox]
    path = "outbox.sqlite"
    max_events = 2000000
    max_age_days = 30

The file holds a secret, so it is written with mode 0600.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from protocol.fields import IDENTIFIER


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    username: str
    password: str
    tls: bool = True
    ca_file: Path | None = None
    discover: bool = True


@dataclass(frozen=True)
class OutboxSettings:
    path: Path
    max_events: int = 2_000_000
    max_age_days: float = 30.0


@dataclass(frozen=True)
class ClientConfig:
    site_id: str
    client_id: str
    kind: str
    broker: BrokerSettings
    outbox: OutboxSettings | None = None
    heartbeat_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("site_id", "client_id"):
            if IDENTIFIER.match(getattr(self, name)) is None:
                raise ValueError(f"{name} {getattr(self, name)!r} is not an identifier "
                                 "(lowercase letters, digits and '-', at most 63)")

    def with_broker(self, **changes: Any) -> ClientConfig:
        return replace(self, broker=replace(self.broker, **changes))

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        """Read a configuration; every error (OSError or ValueError) is one line that names the file."""
        path = Path(path)
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} does not exist: give the configuration written by `museum site "
                                    "init` (the hub's) or `museum device enroll` (a device's)") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{path} is a directory, not a client configuration file") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML ({error}); correct the file") from None
        here = path.parent.resolve()

        def resolve(value: str | None) -> Path | None:
            if value is None:
                return None
            candidate = Path(value)
            return candidate if candidate.is_absolute() else here / candidate

        try:
            b = data["broker"]
            broker = BrokerSettings(host=b["host"], port=int(b["port"]), username=b["username"],
                                    password=b["password"], tls=bool(b.get("tls", True)),
                                    ca_file=resolve(b.get("ca_file")), discover=bool(b.get("discover", True)))
            outbox = None
            if "outbox" in data:
                o = data["outbox"]
                outbox_path = resolve(o["path"])
                assert outbox_path is not None
                outbox = OutboxSettings(outbox_path, int(o.get("max_events", 2_000_000)),
                                        float(o.get("max_age_days", 30.0)))
            known = {"site_id", "client_id", "kind", "broker", "outbox", "heartbeat_s"}
            return cls(site_id=data["site_id"], client_id=data["client_id"], kind=data["kind"], broker=broker,
                       outbox=outbox, heartbeat_s=float(data.get("heartbeat_s", 60.0)),
                       extra={k: v for k, v in data.items() if k not in known})
        except KeyError as missing:
            raise ValueError(f"{path}: missing setting {missing}; add it (see the file written by "
                             "`museum device enroll`)") from None
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}; correct the setting") from None

    def to_toml(self) -> str:
        broker: dict[str, Any] = {"host": self.broker.host, "port": self.broker.port, "tls": self.broker.tls,
                                  "discover": self.broker.discover, "username": self.broker.username,
                                  "password": self.broker.password}
        if self.broker.ca_file is not None:
            broker["ca_file"] = str(self.broker.ca_file)
        data: dict[str, Any] = {"site_id": self.site_id, "client_id": self.client_id, "kind": self.kind,
                                "heartbeat_s": self.heartbeat_s, **self.extra, "broker": broker}
        if self.outbox is not None:
            data["outbox"] = {"path": str(self.outbox.path), "max_events": self.outbox.max_events,
                              "max_age_days": self.outbox.max_age_days}
        return tomli_w.dumps(data)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed over, so the secret is never readable through an older, wider mode.
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.to_toml())
        os.replace(temporary, path)


# --- a device's own settings table ----------------------------------------------------------------------------
# Each device program reads one table of its file ([kiosk], [gateway], [qr_reader]); these check it the same way,
# so every mistake is one line naming the file, the setting and the fix.

def settings_table(config: ClientConfig, config_path: Path, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The `[name]` table of a device's file (empty when absent); ValueError for a non-table or an unknown key."""
    raw = config.extra.get(name, {})
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: {name} must be a table ([{name}] with settings under it); correct the file")
    known_settings(raw, keys, f"{config_path}: [{name}]")
    return raw


def known_settings(raw: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ValueError(f"{where} has unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(keys)}")


def number_setting(raw: dict[str, Any], name: str, default: float, bounds: tuple[float, float], where: str,
                   unit: str = "a number of seconds") -> float:
    value = raw.get(name, default)
    low, high = bounds
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not low <= value <= high):
        raise ValueError(f"{where} {name} must be {unit} from {low:g} to {high:g}, got {value!r}; "
                         "correct the setting")
    return float(value)


def whole_number_setting(raw: dict[str, Any], name: str, default: int, bounds: tuple[int, int], where: str,
                         unit: str = "a whole number") -> int:
    value = raw.get(name, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where} {name} must be {unit} from {low} to {high}, got {value!r}; correct the setting")
    return value
