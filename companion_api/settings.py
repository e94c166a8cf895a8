"""The companion service's settings, from one TOML file an IT team can read (`museum companion run --config`):

    store = "companion.sqlite"            # a SQLite file, or "postgresql://companion@db.example.org/companion"
    data_dir = "data"                     # the unpacked content packs (a cache: any replica rebuilds it)
    base_url = "https://visit.example.org"
    device_id = "companion"               # the device_id of the events made on phones
    trust_proxy = false                   # true behind a reverse proxy that sets X-Forwarded-For / -Proto
    https = "auto"                        # "auto" (the request's scheme), true or false
    content_recheck_s = 5

    [retention]
    visit_days = 395                      # take-home visits, joins, phone events, tombstones (13 months)
    analytics_days = 760                  # anonymised analytics (25 months)
    purge_every_s = 3600

    [rate_limits]                         # per client: a bucket of `burst` requests refilled at `per_s`
    token_per_s = 1.0                     # /v/… (take-home pages)
    token_burst = 60
    sync_per_s = 10.0                     # /sync/… (site servers)
    sync_burst = 60
    clients = 10000                       # clients tracked at once (least recently seen forgotten first)

    [limits]
    batch_bytes = 16777216                # a sync batch as sent (gzip)
    batch_json_bytes = 134217728          # … and decompressed
    pack_bytes = 536870912                # a content pack upload
    concurrent_batches = 2                # batches parsed at once per process (memory)

Relative paths are relative to the file's folder. Every mistake is one line naming the file and the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bus.config import known_settings, number_setting, whole_number_setting
from protocol.fields import IDENTIFIER

MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_BATCH_JSON_BYTES = 128 * 1024 * 1024
MAX_PACK_BYTES = 512 * 1024 * 1024 + 16 * 1024 * 1024
"""A pack's media are at most 512 MiB; the tar headers and the manifest come on top."""


@dataclass(frozen=True)
class Settings:
    """What one companion process needs; tests build it directly, operators through `load_settings`."""

    store_url: str
    data_dir: Path
    base_url: str
    device_id: str = "companion"
    visit_days: int = 395
    analytics_days: int = 760
    purge_every_s: float = 3600.0
    trust_proxy: bool = False
    https: bool | None = None
    """None: HTTPS when the request came over TLS (or, with trust_proxy, X-Forwarded-Proto says https)."""
    content_recheck_s: float = 5.0
    token_per_s: float = 1.0
    token_burst: int = 60
    sync_per_s: float = 10.0
    sync_burst: int = 60
    rate_clients: int = 10_000
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_batch_json_bytes: int = MAX_BATCH_JSON_BYTES
    max_pack_bytes: int = MAX_PACK_BYTES
    concurrent_batches: int = 2

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


_TOP = ("store", "data_dir", "base_url", "device_id", "trust_proxy", "https", "content_recheck_s",
        "retention", "rate_limits", "limits")
_RETENTION = ("visit_days", "analytics_days", "purge_every_s")
_RATE_LIMITS = ("token_per_s", "token_burst", "sync_per_s", "sync_burst", "clients")
_LIMITS = ("batch_bytes", "batch_json_bytes", "pack_bytes", "concurrent_batches")


def load_settings(path: str | Path) -> Settings:
    """Read a companion configuration file; every error is a ValueError or OSError of one line naming it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: write it (see docs/companion.md, "
                                "\"Configuration reference\")") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, not a companion configuration file") from None
    except PermissionError:
        raise PermissionError(f"{path}: not readable by this user; fix its owner or mode") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML ({error}); correct the file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    where = str(path)
    known_settings(data, _TOP, where)
    here = path.parent.resolve()

    def resolve(value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else here / candidate

    retention = _table(data, "retention", _RETENTION, where)
    rates = _table(data, "rate_limits", _RATE_LIMITS, where)
    limits = _table(data, "limits", _LIMITS, where)
    data_dir = resolve(_text(data, "data_dir", where, default="data"))
    store = _text(data, "store", where, default=str(data_dir / "companion.sqlite"))
    if not store.startswith(("postgresql://", "postgres://")):
        store = str(resolve(store))
    device_id = _text(data, "device_id", where, default="companion")
    if IDENTIFIER.match(device_id) is None:
        raise ValueError(f"{where}: device_id {device_id!r} is not an identifier (lowercase letters, digits and "
                         "'-', at most 63); correct the setting")
    https = data.get("https", "auto")
    if https not in ("auto", True, False):
        raise ValueError(f"{where}: https must be \"auto\", true or false, got {https!r}; correct the setting")
    r_where, l_where, t_where = f"{where}: [retention]", f"{where}: [limits]", f"{where}: [rate_limits]"
    return Settings(
        store_url=store,
        data_dir=data_dir,
        base_url=_base_url(data, where),
        device_id=device_id,
        visit_days=whole_number_setting(retention, "visit_days", 395, (1, 3650), r_where, "a number of days"),
        analytics_days=whole_number_setting(retention, "analytics_days", 760, (1, 3650), r_where,
                                            "a number of days"),
        purge_every_s=number_setting(retention, "purge_every_s", 3600.0, (60.0, 86400.0), r_where),
        trust_proxy=_flag(data, "trust_proxy", where),
        https=None if https == "auto" else bool(https),
        content_recheck_s=number_setting(data, "content_recheck_s", 5.0, (0.0, 3600.0), where),
        token_per_s=number_setting(rates, "token_per_s", 1.0, (0.001, 1000.0), t_where, "requests per second"),
        token_burst=whole_number_setting(rates, "token_burst", 60, (1, 100_000), t_where),
        sync_per_s=number_setting(rates, "sync_per_s", 10.0, (0.001, 1000.0), t_where, "requests per second"),
        sync_burst=whole_number_setting(rates, "sync_burst", 60, (1, 100_000), t_where),
        rate_clients=whole_number_setting(rates, "clients", 10_000, (10, 10_000_000), t_where),
        max_batch_bytes=whole_number_setting(limits, "batch_bytes", MAX_BATCH_BYTES, (1024, MAX_BATCH_BYTES),
                                             l_where, "a number of bytes"),
        max_batch_json_bytes=whole_number_setting(limits, "batch_json_bytes", MAX_BATCH_JSON_BYTES,
                                                  (1024, MAX_BATCH_JSON_BYTES), l_where, "a number of bytes"),
        max_pack_bytes=whole_number_setting(limits, "pack_bytes", MAX_PACK_BYTES, (1024, MAX_PACK_BYTES),
                                            l_where, "a number of bytes"),
        concurrent_batches=whole_number_setting(limits, "concurrent_batches", 2, (1, 64), l_where),
    )


def _table(data: dict[str, Any], name: str, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {name} must be a table ([{name}] with settings under it); correct the file")
    known_settings(raw, keys, f"{where}: [{name}]")
    return raw


def _text(data: dict[str, Any], name: str, where: str, *, default: str | None = None) -> str:
    value = data.get(name, default)
    if value is None:
        raise ValueError(f"{where}: missing setting {name}; add it (see docs/companion.md)")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {name} must be a non-empty string, got {value!r}; correct the setting")
    return value


def _flag(data: dict[str, Any], name: str, where: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {name} must be true or false, got {value!r}; correct the setting")
    return value


def _base_url(data: dict[str, Any], where: str) -> str:
    value = _text(data, "base_url", where).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{where}: base_url must be the public address of the service, like "
                         f"https://visit.example.org (no path), got {value!r}; correct the setting")
    return value
