"""The upstream sync: the hub's events, anonymised, to each companion service ("target"), and back down what their
replies bring (erasures, phone events). `museum sync run` runs it beside the hub on the site server.

Per target, in turn: raise the horizon if it lags (`sync_store.raise_horizon`: the sync reads events in
event_id order up to it, and the hub records the few it stores below it as late rows), read the events after the
target's cursors (`broker.sync_store`), turn each into what may leave the site (`broker.upstream_policy`; a type
the policy does not know stops the target: nothing is guessed, nothing skipped), add the tombstones the target
has not acknowledged, POST the batch (gzip JSON, the site key as bearer token), then apply the reply and advance
the cursors in one transaction. The batch is acknowledged only by that
commit: a crash, a timeout or a 500 before it means the same events go again, and the target, idempotent on
every row, stores them once. A full batch, or a reply saying `more`, is followed at once by the next; otherwise
the target is polled again after `interval_s` (an empty batch still brings down what waits for the site). The
horizon trails the clock by `horizon_slack_s` (120 s by default), so an event goes up about that long after it
was created (`run_once`, and `museum sync run --once`, take everything created up to now).

Failures: connection errors, timeouts, 5xx and 429 are retried with exponential backoff (1 s doubling to 5 min,
full jitter; a Retry-After is honoured). 401/403 (the key), 400/413/422 (a batch the target refuses) and other
4xx stop that target with one line saying what to fix; its batch stays where it was, so nothing is lost, and
`museum sync status` says why it stopped.

While one batch is in flight, the next is read and encoded in a worker thread (the policy's HMACs are the main
cost, and the target works meanwhile). A prepared batch is thrown away when an erasure was applied since it was
read, so no event of an erased visit leaves after its erasure.

Files (beside the site, see `SyncPaths`): `sync.toml` (the targets), `sync/pseudonym.key` (the key of the visit
pseudonyms and uids: made at the first run, 0600, never sent; losing it breaks the continuity of the figures
upstream, so it belongs in the site's backups), `sync/status.json` (each target's last success and error, for
`museum sync status`), `sync/sync.lock` (one sync per site).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sqlite3
import stat
import sys
import threading
import time
import tomllib
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

from broker import sync_store
from broker.hub_store import open_reader
from broker.packs import PACK_NAME
from broker.sync_store import HORIZON_SLACK_S, Cursor, DownResult, TargetState
from broker.upstream_policy import TakeHomeItem, new_pseudonym_key, upstream_records, visit_pseudonym
from bus.config import known_settings, number_setting, whole_number_setting
from bus.https import HttpFailure, HttpReply, HttpSession
from content.pack import file_sha256
from protocol.fields import IDENTIFIER
from protocol.ids import format_instant, utc_now

log = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 5_000
"""At most this many events per batch: each gives at most one analytics row and one take-home row or join, so a
batch stays within every row limit of the wire (joins: 5,000)."""
MAX_TOMBSTONES = 5_000
"""Erasures per batch (the wire's limit)."""
GZIP_LEVEL = 1
"""The JSON of a batch shrinks about tenfold even at level 1; higher levels cost more time than they save."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
MAX_RETRY_AFTER_S = 3600.0
PACK_RETRY_S = 600.0
"""After a failed pack upload, wait this long before trying again (the target keeps asking for it)."""
TOMBSTONE_PURGE_INTERVAL_S = 3600.0
"""How often old tombstones and the late rows every target has read are deleted."""
PROGRESS_MIN_BATCHES = 2
"""A progress line is shown when more than this many batches wait."""
PROGRESS_EVERY_S = 0.5

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --- configuration ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncPaths:
    """Where the sync's files live in a site directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "sync.toml"

    @property
    def folder(self) -> Path:
        return self.root / "sync"

    @property
    def pseudonym_key(self) -> Path:
        return self.folder / "pseudonym.key"

    @property
    def status_file(self) -> Path:
        return self.folder / "status.json"

    @property
    def lock_file(self) -> Path:
        return self.folder / "sync.lock"


@dataclass(frozen=True)
class TargetConfig:
    name: str
    url: str
    """The companion service's base URL (the sync adds /sync/v1/batch and /sync/v1/pack)."""
    key_file: Path
    """Holds the site key this companion gave (default: sync/<name>.key beside sync.toml, i.e. in the site)."""
    ca_file: Path | None = None
    """Trust only this CA (the site CA for a companion on the site server); None: the system's trust store."""
    timeout_s: float = 30.0
    batch_size: int = MAX_BATCH_EVENTS
    interval_s: float = 10.0

    @property
    def batch_url(self) -> str:
        return self.url.rstrip("/") + "/sync/v1/batch"

    @property
    def pack_url(self) -> str:
        return self.url.rstrip("/") + "/sync/v1/pack"


@dataclass(frozen=True)
class SyncConfig:
    path: Path
    targets: tuple[TargetConfig, ...]
    tombstone_days: float = 395.0
    """How long the site keeps an erased visit's tombstone (refusing its events): the companion's visit retention
    (13 months), far beyond the 30 days a device keeps an unsent event."""
    horizon_slack_s: float = HORIZON_SLACK_S
    """How far behind the clock the horizon stays: events go up that long after their creation at the earliest.
    Shorter sends sooner; an event reaching the hub later than this after its creation costs the hub a late row
    (one small row, written in the commit that stores it), so a slack shorter than the devices' delivery delays
    only adds writes. `run_once` uses 0."""


_TARGET_KEYS = ("name", "url", "key_file", "ca_file", "timeout_s", "batch_size", "interval_s")
EXAMPLE_CONFIG = """\
# museum sync: where the site's events go, anonymised (docs/privacy.md). Paths are relative to this file.
# horizon_slack_s = 120   # events go up about this long after their creation (docs/hub.md, "The upstream sync")
[[targets]]
name = "upstream"
url = "https://companion.example.org"
# key_file = "sync/upstream.key"   # the default: the key `museum companion enroll-site SITE` printed, mode 0600
# ca_file = "tls/ca.crt"            # only for a companion with the site's own certificate
# timeout_s = 30, batch_size = 5000 (events, at most), interval_s = 10 (seconds between polls when idle)
"""


def load_config(path: Path) -> SyncConfig:
    """Read `sync.toml`; ValueError, one line naming the file and the fix, for any mistake."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; write it with one [[targets]] table per companion service "
                         "(see docs/privacy.md, `museum sync run --help`)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as TOML ({error}); correct the file") from None
    known_settings(raw, ("targets", "tombstone_days", "horizon_slack_s"), str(path))
    tombstone_days = number_setting(raw, "tombstone_days", 395.0, (40.0, 3650.0), f"{path}:", "a number of days")
    slack = number_setting(raw, "horizon_slack_s", HORIZON_SLACK_S, (0.0, 86_400.0), f"{path}:")
    tables = raw.get("targets")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: needs at least one [[targets]] table (name, url); add one")
    targets: list[TargetConfig] = []
    for number, table in enumerate(tables, start=1):
        where = f"{path}: [[targets]] #{number}"
        known_settings(table, _TARGET_KEYS, where)
        name = table.get("name")
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            raise ValueError(f"{where} name must be lower-case letters, digits and '-' (like \"upstream\"), "
                             f"got {name!r}")
        if any(target.name == name for target in targets):
            raise ValueError(f"{where} name {name!r} is used twice; give each target its own name")
        where = f"{path}: target {name!r}"
        url = table.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"{where} url must be the companion's base URL, like https://companion.example.org, "
                             f"got {url!r}")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError(f"{where} url {url} is plain HTTP to another machine: the site key would cross the "
                             "network in clear; use https://")
        paths: dict[str, Path | None] = {}
        for key in ("key_file", "ca_file"):
            value = table.get(key, f"sync/{name}.key" if key == "key_file" else None)
            if value is None:
                paths[key] = None
            elif not isinstance(value, str) or not value:
                raise ValueError(f"{where} {key} must be a file path, got {value!r}")
            else:
                paths[key] = (path.parent / value).absolute()
        key_file = paths["key_file"]
        assert key_file is not None
        targets.append(TargetConfig(
            name, url.rstrip("/"), key_file, paths["ca_file"],
            number_setting(table, "timeout_s", 30.0, (0.05, 600.0), where),
            whole_number_setting(table, "batch_size", MAX_BATCH_EVENTS, (1, MAX_BATCH_EVENTS), where,
                                 "a number of events"),
            number_setting(table, "interval_s", 10.0, (0.1, 86_400.0), where)))
    return SyncConfig(path, tuple(targets), tombstone_days, slack)


def read_site_key(target: TargetConfig, site_id: str) -> str:
    """The target's site key from its key file; ValueError, one line, if it is missing, readable by others, or
    not a key of this site."""
    path = target.key_file
    enroll = (f"run `museum companion enroll-site {site_id}` where the companion runs and put the key it prints in "
              f"{path}")
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (target {target.name!r}); {enroll} (mode 0600)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({error}); {enroll} (mode 0600)") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ValueError(f"{path}: holds the site key but others may read it (mode {stat.S_IMODE(mode):o}); "
                         f"run chmod 600 {path}")
    prefix, dot, secret = text.partition(".")
    if not dot or not secret or any(c.isspace() for c in text):
        raise ValueError(f"{path}: is not a site key (<site_id>.<secret>); {enroll}")
    if prefix != site_id:
        raise ValueError(f"{path}: holds a key of site {prefix!r}, this site is {site_id!r}; {enroll}")
    return text


def pseudonym_key(path: Path) -> bytes:
    """The site's pseudonym key, made (0600) at the first call. ValueError if the file is not such a key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (new_pseudonym_key().hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: is not a pseudonym key ({error}); restore it from the site's backup (a new one "
                         "would give every visit new pseudonyms upstream)") from None
    if len(key) < 16:
        raise ValueError(f"{path}: a pseudonym key of {len(key)} bytes is too short; restore it from the site's backup")
    return key


# --- the current pack -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackRef:
    path: Path
    sha256: str
    pack_id: str
    pack_version: int

    def wire(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "pack_id": self.pack_id, "pack_version": self.pack_version}


class CurrentPack:
    """The newest pack in the site's packs folder (by publication time, as `broker.packs.prune` orders them);
    its SHA-256 is computed again only when the file changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cached: tuple[tuple[str, int, int], PackRef] | None = None

    def get(self) -> PackRef | None:
        try:
            candidates = [(entry.stat().st_mtime_ns, entry) for entry in self.folder.iterdir()
                          if PACK_NAME.match(entry.name) and entry.is_file()]
        except OSError:
            return None
        if not candidates:
            return None
        mtime, newest = max(candidates)
        try:
            signature = (newest.name, newest.stat().st_size, mtime)
            if self._cached is None or self._cached[0] != signature:
                pack_id, version = newest.name[:-len(".tar")].rsplit("-", 1)
                self._cached = (signature, PackRef(newest, file_sha256(newest), pack_id, int(version)))
        except OSError:
            return None
        return self._cached[1]


# --- batches ----------------------------------------------------------------------------------------------------

class PolicyGap(Exception):
    """An event the upstream policy does not know how to send: this build must be updated, nothing is guessed."""


@dataclass
class Prepared:
    """One batch, read and encoded up to what only the previous reply decides (`finish`)."""

    start: Cursor
    tombstones_from: int
    generation: int
    cursor: Cursor
    events: int
    tombstones_sent: int
    erasures: int
    full: bool
    """More is waiting: as many events or tombstones as a batch takes."""
    _compressor: Any
    _head: bytes
    body: bytes | None = None

    def finish(self, events_after: int, erasures_after: int, pack: PackRef | None) -> bytes:
        """The whole gzip body (made once: a retry sends the same bytes)."""
        if self.body is None:
            tail = (f',"events_after":{events_after},"erasures_after":{erasures_after},"pack":'
                    f'{_ENCODER.encode(pack.wire() if pack else None)}}}')
            self.body = self._head + self._compressor.compress(tail.encode()) + self._compressor.flush()
            self._compressor = None
        return self.body


def prepare_batch(conn: sqlite3.Connection, site_id: str, key: bytes, start: Cursor, tombstones_from: int,
                  batch_size: int, generation: int = 0) -> Prepared:
    """Read the events after `start` and the tombstones after `tombstones_from`, apply the policy and encode
    them. PolicyGap for an event type or field the policy does not name."""
    batch = sync_store.read_batch(conn, start, batch_size)
    tombstones = sync_store.tombstones_after(conn, tombstones_from, MAX_TOMBSTONES)
    analytics: list[list[Any]] = []
    take_home: list[list[Any]] = []
    joins: list[list[Any]] = []
    add_analytics, add_take_home, add_join = analytics.append, take_home.append, joins.append
    item_type = TakeHomeItem
    for record in batch.records:
        try:
            row, item = upstream_records(record, key)
        except KeyError as error:
            raise PolicyGap(f"event {record.event_id} of type {record.type}: {str(error).strip(chr(39))}; the "
                            "upstream policy (broker/upstream_policy.py) of this build does not say how to send "
                            "it: update the site's software") from None
        if row is not None:
            add_analytics([row.uid, row.type, row.schema_version, row.device_id, row.period, row.visitor,
                           row.fields])
        if item is not None:
            if type(item) is item_type:
                add_take_home([item.visit_id, item.artwork_id, item.kind, item.day, item.dwell_s])
            else:
                add_join([item.visit_id, item.other_visit_id, item.day])  # type: ignore[union-attr]
    erasures = [[tombstone.visit_id, visit_pseudonym(tombstone.visit_id, key)] for tombstone in tombstones]
    head = (f'{{"v":1,"site_id":{_ENCODER.encode(site_id)},"analytics":{_ENCODER.encode(analytics)},'
            f'"take_home":{_ENCODER.encode(take_home)},"joins":{_ENCODER.encode(joins)},'
            f'"erasures":{_ENCODER.encode(erasures)}')
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return Prepared(start, tombstones_from, generation, batch.cursor, len(batch.records),
                    tombstones[-1].seq if tombstones else tombstones_from, len(tombstones),
                    batch.more or len(tombstones) >= MAX_TOMBSTONES, compressor, compressor.compress(head.encode()))


# --- replies ----------------------------------------------------------------------------------------------------

class ReplyError(Exception):
    """A 200 whose body is not the wire's reply."""


@dataclass(frozen=True)
class Reply:
    erasures: list[tuple[int, str]]
    events: list[tuple[int, object]]
    pack_wanted: bool
    more: bool
    stored: dict[str, int]
    duplicates: int


def _seq(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReplyError(f"{what} seq must be a positive whole number, got {str(value)[:40]!r}")
    return value


def parse_reply(body: bytes) -> Reply:
    """The reply to a batch; ReplyError if it is not one. Each erasure's visit id and each event are checked
    later, one by one (an invalid one is skipped and counted, `sync_store.apply_down`)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise ReplyError(f"not JSON: {str(error)[:120]}") from None
    if not isinstance(obj, dict):
        raise ReplyError("not a JSON object")
    erasures_raw, events_raw = obj.get("erasures", []), obj.get("events", [])
    if not isinstance(erasures_raw, list) or not isinstance(events_raw, list):
        raise ReplyError("erasures and events must be lists")
    erasures: list[tuple[int, str]] = []
    for item in erasures_raw:
        if not isinstance(item, dict) or not isinstance(item.get("visit_id"), str):
            raise ReplyError("each erasure must be an object with seq and visit_id")
        erasures.append((_seq(item.get("seq"), "an erasure's"), item["visit_id"]))
    events: list[tuple[int, object]] = []
    for item in events_raw:
        if not isinstance(item, dict) or "event" not in item:
            raise ReplyError("each event must be an object with seq and event")
        events.append((_seq(item.get("seq"), "an event's"), item["event"]))
    stored = obj.get("stored", {})
    duplicates = obj.get("duplicates", 0)
    return Reply(erasures, events, obj.get("pack_wanted") is True, obj.get("more") is True,
                 {k: v for k, v in stored.items() if isinstance(v, int)} if isinstance(stored, dict) else {},
                 duplicates if isinstance(duplicates, int) else 0)


def _error_text(reply: HttpReply) -> str:
    """What the target said about a refusal: its JSON `error`, or the start of its body."""
    with contextlib.suppress(ValueError, AttributeError, RecursionError):
        error = json.loads(reply.body).get("error")
        if isinstance(error, str):
            return error[:300]
    text = reply.body[:200].decode("utf-8", "replace").strip()
    return text or "(no detail)"


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A Retry-After header in seconds (either form), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    return None


# --- the loop ---------------------------------------------------------------------------------------------------

class Clock(Protocol):
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def now(self) -> datetime: ...


class RealClock:
    """Sleeps end early when `stop` is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))

    def now(self) -> datetime:
        return utc_now()


@dataclass
class TargetStatus:
    """What `museum sync status` shows of a target besides the database's cursors."""

    last_success: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    stopped: str | None = None
    """Why the target stopped (a key refused, a batch refused, an event the policy does not know): until the fix
    and a restart of `museum sync run`."""
    events_sent: int = 0
    failures: int = 0


@dataclass
class _Target:
    config: TargetConfig
    key: str
    http: HttpSession
    status: TargetStatus = field(default_factory=TargetStatus)
    failures: int = 0
    due: float = 0.0
    current: Prepared | None = None
    """The batch being sent: a retry sends it again as it is."""
    prefetch: Future[Prepared] | None = None
    """The batch after it, being read ahead."""
    pack_retry_at: float = 0.0
    pack_refused: str | None = None
    """The sha256 of a pack the target refused (400): not sent again by this process."""
    progress: Progress | None = None


class Progress:
    """One line, rewritten in place: events sent of the backlog, rate, time left."""

    def __init__(self, name: str, total: int, out: TextIO, clock: Clock) -> None:
        self.name, self.total, self.out, self.clock = name, total, out, clock
        self.sent = 0
        self.started = clock.monotonic()
        self._shown = float("-inf")

    def advance(self, events: int) -> None:
        self.sent += events
        now = self.clock.monotonic()
        if now - self._shown >= PROGRESS_EVERY_S or self.sent >= self.total:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.sent / elapsed
        left = max(self.total - self.sent, 0)
        eta = left / rate if rate > 0 else math.inf
        eta_text = "--:--" if math.isinf(eta) else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        share = min(self.sent / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(share * 20)
        self.out.write(f"\r{self.name}: [{bar:<20}] {self.sent:,}/{self.total:,} events  {rate:,.0f}/s  "
                       f"ETA {eta_text} ")
        self.out.flush()

    def done(self) -> None:
        self._draw(self.clock.monotonic())
        self.out.write("\n")
        self.out.flush()


@dataclass(frozen=True)
class OnceResult:
    """`Syncer.run_once`, per target: events sent, and why it did not finish (None: drained)."""

    sent: dict[str, int]
    problems: dict[str, str]


class Syncer:
    """The sync of one site to its targets. One thread drives it (`run` or `run_once`); a worker thread reads
    and encodes the next batch meanwhile, with its own read-only connection."""

    def __init__(self, db_path: Path, site_id: str, config: SyncConfig, pseudonym: bytes, *,
                 packs_dir: Path | None = None, status_file: Path | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, progress: TextIO | None = None,
                 after_post: Callable[[str], None] | None = None) -> None:
        """`progress`: where to draw the progress line (None: none). `after_post(target)`: called after a
        reply was received and before it is applied (for tests: a crash at that point). ValueError for a key
        file that is missing or wrong."""
        self.site_id = site_id
        self.config = config
        self.pseudonym = pseudonym
        self.clock: Clock = clock or RealClock()
        self.rng = rng or random.Random()
        self.progress_out = progress
        self.after_post = after_post
        self.status_file = status_file
        self.pack = CurrentPack(packs_dir) if packs_dir is not None else None
        self.targets = [_Target(target, read_site_key(target, site_id), HttpSession()) for target in config.targets]
        self.conn = sync_store.open_hub_db(db_path)
        self._reader = open_reader(db_path, check_same_thread=False)  # used by the worker thread only
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-prepare")
        self._generation = 0
        """Counts the replies that erased something: a batch prepared before one is read again."""
        self.read_ahead_used = 0
        """Batches sent as the worker had read them ahead (the others were read when their turn came)."""
        self._next_tombstone_purge = 0.0
        self._slack_s = config.horizon_slack_s
        """How far behind the clock the horizon is raised: `horizon_slack_s`, or 0 while `run_once` drains."""

    def close(self) -> None:
        for target in self.targets:
            if target.prefetch is not None:
                target.prefetch.cancel()
            target.http.close()
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._reader.close()
        self.conn.close()

    def __enter__(self) -> Syncer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- driving ------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Sync until `stop` is set; returns 0, or 1 once every target has stopped (each said why)."""
        while not stop.is_set():
            self._purge_tombstones()
            active = [target for target in self.targets if target.status.stopped is None]
            if not active:
                log.error("sync: every target has stopped; see `museum sync status`")
                return 1
            target = min(active, key=lambda t: t.due)
            wait = target.due - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(wait)
                continue
            self._step(target)
        return 0

    def run_once(self, *, max_failures: int = 5) -> OnceResult:
        """Drain every target once: send until nothing waits, retrying each failure after its backoff, at
        most `max_failures` times in a row per target. Everything created up to now is sent: the horizon goes
        up to now (an event created before and stored after costs the hub a late row, and goes next time)."""
        self._purge_tombstones()
        problems: dict[str, str] = {}
        self._slack_s = 0.0
        try:
            return self._run_once(max_failures, problems)
        finally:
            self._slack_s = self.config.horizon_slack_s

    def _run_once(self, max_failures: int, problems: dict[str, str]) -> OnceResult:
        # Again while a pass erased something: the erasures one target brought go on to the others.
        for _ in range(3):
            generation = self._generation
            for target in self.targets:
                problem = self._drain(target, max_failures)
                if problem is not None:
                    problems[target.config.name] = problem
                else:
                    problems.pop(target.config.name, None)
            if self._generation == generation:
                break
        return OnceResult({target.config.name: target.status.events_sent for target in self.targets}, problems)

    def _drain(self, target: _Target, max_failures: int) -> str | None:
        target.due = 0.0
        target.failures = 0
        while True:
            if target.status.stopped is not None:
                return target.status.stopped
            if target.failures >= max_failures:
                return f"gave up after {target.failures} failures in a row: {target.status.last_error}"
            wait = target.due - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(wait)
            if not self._step(target):
                return target.status.stopped

    # --- one exchange ---------------------------------------------------------------------------------------------

    def _step(self, target: _Target) -> bool:
        """One batch to `target` and its reply applied. Returns whether to go again at once (more waits, or a
        failure to retry); sets `target.due`."""
        config = target.config
        try:
            sync_store.raise_horizon(self.conn, self.clock.now(), slack_s=self._slack_s)
            state = sync_store.target_state(self.conn, config.name)
            if target.progress is None and self.progress_out is not None and target.status.events_sent == 0:
                waiting = sync_store.backlog(self.conn, state.cursor)
                if waiting > PROGRESS_MIN_BATCHES * config.batch_size:
                    target.progress = Progress(config.name, waiting, self.progress_out, self.clock)
            prepared = self._prepared(target, state)
        except PolicyGap as gap:
            self._stop(target, f"sync to {config.name} stopped at {gap}")
            return False
        except sqlite3.Error as error:  # the hub's database busy past the timeout, or failing: later
            return self._retry(target, f"cannot read the hub database: {error}", None)
        pack = self.pack.get() if self.pack is not None else None
        body = prepared.finish(state.events_after, state.erasures_after, pack)
        if prepared.full and target.prefetch is None:  # read the next one while this one travels
            target.prefetch = self._worker.submit(self._prepare_with_reader, prepared.cursor,
                                                  prepared.tombstones_sent, config.batch_size, self._generation)
        try:
            reply = target.http.post_json_gzip(config.batch_url, body, {"Authorization": f"Bearer {target.key}"},
                                               config.timeout_s, config.ca_file)
        except HttpFailure as failure:
            if not failure.retryable:
                hint = (f"; check ca_file of target {config.name!r} in {self.config.path}" if failure.kind == "tls"
                        else f"; check url of target {config.name!r} in {self.config.path}")
                self._stop(target, f"sync to {config.name} stopped: {failure.reason}{hint}")
                return False
            return self._retry(target, failure.reason, None)
        if reply.status != 200:
            return self._refused(target, reply)
        try:
            answer = parse_reply(reply.body)
        except ReplyError as error:
            return self._retry(target, f"{config.batch_url} answered 200 with a reply that is not the sync's "
                                       f"({error}); is url right, and the companion up to date?", None)
        if self.after_post is not None:
            self.after_post(config.name)
        result = self._apply(target, state, prepared, answer)
        if result is None:
            return self._retry(target, f"cannot write the hub database: {target.status.last_error}", None)
        self._succeeded(target, prepared, answer, result)
        if answer.pack_wanted and pack is not None:
            self._put_pack(target, pack)
        # Again at once while anything new came down: the next batch acknowledges it (the companion may then let
        # it go), forwards the new tombstones and sends the phone events up. Only new seqs count, so a target
        # that keeps sending the same items cannot keep the loop spinning.
        progressed = any(seq > state.events_after for seq, _ in answer.events) or any(
            seq > state.erasures_after for seq, _ in answer.erasures)
        again = prepared.full or progressed
        target.current = None
        if not again:
            target.prefetch = None
            if target.progress is not None:
                target.progress.done()
                target.progress = None
        target.due = self.clock.monotonic() + (0.0 if again else config.interval_s)
        return again

    def _prepare_with_reader(self, start: Cursor, tombstones_from: int, batch_size: int,
                             generation: int) -> Prepared:
        return prepare_batch(self._reader, self.site_id, self.pseudonym, start, tombstones_from, batch_size,
                             generation)

    def _prepared(self, target: _Target, state: TargetState) -> Prepared:
        """The batch that starts at the target's cursors: the one being retried, or the one read ahead, if it
        still is that batch (no erasure applied since it was read), else read now."""

        def fits(prepared: Prepared) -> bool:
            return (prepared.start == state.cursor and prepared.tombstones_from == state.tombstones_sent
                    and prepared.generation == self._generation)

        if target.current is not None and fits(target.current):
            return target.current
        target.current = None
        ahead, target.prefetch = target.prefetch, None
        if ahead is not None:
            try:
                prepared = ahead.result()
            except PolicyGap:
                raise
            except (sqlite3.Error, OSError) as error:  # a read that failed in the worker is made again here
                log.info("sync: the batch read ahead failed (%s); reading it again", error)
            else:
                if fits(prepared):
                    self.read_ahead_used += 1
                    target.current = prepared
                    return prepared
        target.current = prepare_batch(self.conn, self.site_id, self.pseudonym, state.cursor, state.tombstones_sent,
                                       target.config.batch_size, self._generation)
        return target.current

    def _apply(self, target: _Target, state: TargetState, prepared: Prepared, answer: Reply) -> DownResult | None:
        events_after = max([state.events_after, *(seq for seq, _ in answer.events)])
        erasures_after = max([state.erasures_after, *(seq for seq, _ in answer.erasures)])
        try:
            result = sync_store.apply_down(
                self.conn, target.config.name, erasures=[visit for _, visit in answer.erasures],
                events=[event for _, event in answer.events], cursor=prepared.cursor,
                tombstones_sent=prepared.tombstones_sent, events_after=events_after, erasures_after=erasures_after,
                now=self.clock.now(), site_id=self.site_id)
        except sqlite3.Error as error:
            target.status.last_error = f"{error} (hub database)"
            return None
        if result.visits_erased:
            self._generation += 1
            log.info("sync: %d visit(s) erased at %s's request: %d events and %d tag links deleted",
                     result.visits_erased, target.config.name, result.events_deleted, result.links_deleted)
        if result.invalid:
            log.warning("sync: %d item(s) from %s refused as invalid, skipped: %s", result.invalid,
                        target.config.name, "; ".join(result.reasons))
        if result.refused_erased:
            log.info("sync: %d phone event(s) from %s refused: their visit is erased", result.refused_erased,
                     target.config.name)
        return result

    def _succeeded(self, target: _Target, prepared: Prepared, answer: Reply, result: DownResult) -> None:
        status = target.status
        if target.failures:
            log.warning("sync: %s reached again after %d failure(s)", target.config.name, target.failures)
        target.failures = 0
        status.failures = 0
        status.events_sent += prepared.events
        status.last_success = format_instant(self.clock.now())
        if target.progress is not None:
            target.progress.advance(prepared.events)
        self._write_status()

    def _retry(self, target: _Target, reason: str, retry_after: float | None) -> bool:
        """Back off: full jitter over 1 s doubling to 5 min, at least `retry_after`."""
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(target.failures, 30))
        delay = self.rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        target.failures += 1
        status = target.status
        status.failures = target.failures
        status.last_error = reason
        status.last_error_at = format_instant(self.clock.now())
        # Said once when an outage begins, then quietly until it ends (`_succeeded`).
        (log.warning if target.failures == 1 else log.info)(
            "sync: %s: %s; trying again in %.1f s%s", target.config.name, reason, delay,
            "" if target.failures == 1 else f" (failure {target.failures} in a row)")
        target.due = self.clock.monotonic() + delay
        self._write_status()
        return True

    def _stop(self, target: _Target, line: str) -> None:
        target.status.stopped = line
        target.status.last_error = line
        target.status.last_error_at = format_instant(self.clock.now())
        target.prefetch = target.current = None
        if target.progress is not None:
            target.progress.done()
            target.progress = None
        log.error("%s", line)
        self._write_status()

    def _refused(self, target: _Target, reply: HttpReply) -> bool:
        config = target.config
        status, said = reply.status, _error_text(reply)
        where = f"sync to {config.name} ({config.batch_url})"
        if status >= 500 or status in (408, 429):
            return self._retry(target, f"{where}: HTTP {status}: {said}",
                               retry_after_s(reply.headers.get("Retry-After"), self.clock.now()))
        if status == 401:
            line = (f"{where} stopped: HTTP 401, the companion does not know the site key in {config.key_file} "
                    f"(never enrolled, or enrolled again since): run `museum companion enroll-site {self.site_id}` "
                    f"where the companion runs, put the key it prints in {config.key_file} (mode 0600), and "
                    "restart `museum sync run`")
        elif status == 403:
            line = (f"{where} stopped: HTTP 403, the key in {config.key_file} is not site {self.site_id!r}'s "
                    f"({said}): put this site's key there (`museum companion enroll-site {self.site_id}`) and "
                    "restart `museum sync run`")
        elif status in (400, 413, 422):
            line = (f"{where} stopped: HTTP {status}, the companion refuses this batch: {said}. The site and the "
                    "companion disagree on the wire (update the older of the two); nothing was skipped: the batch "
                    "goes again at the next `museum sync run`")
        elif 300 <= status < 400:
            line = (f"{where} stopped: HTTP {status}, redirected to {reply.headers.get('Location', '?')}: put the "
                    f"final address as url of target {config.name!r} in {self.config.path}")
        else:
            line = (f"{where} stopped: HTTP {status}: {said}; check url of target {config.name!r} in "
                    f"{self.config.path}")
        self._stop(target, line)
        return False

    def _put_pack(self, target: _Target, pack: PackRef) -> None:
        config = target.config
        now = self.clock.monotonic()
        if target.pack_refused == pack.sha256 or now < target.pack_retry_at:
            return
        try:
            reply = target.http.put_file(config.pack_url, pack.path, {"Authorization": f"Bearer {target.key}",
                                                                     "X-Pack-Sha256": pack.sha256},
                                         max(config.timeout_s, 60.0), config.ca_file)
        except (HttpFailure, OSError) as error:
            target.pack_retry_at = now + PACK_RETRY_S
            log.warning("sync: cannot send the pack %s to %s (%s); trying again in %.0f s", pack.path.name,
                        config.name, getattr(error, "reason", error), PACK_RETRY_S)
            return
        if reply.status in (200, 201, 204):
            log.info("sync: pack %s sent to %s", pack.path.name, config.name)
        elif 400 <= reply.status < 500 and reply.status not in (408, 429):
            target.pack_refused = pack.sha256
            log.error("sync: %s refused the pack %s (HTTP %d: %s); not sent again until a new pack is published",
                      config.name, pack.path, reply.status, _error_text(reply))
        else:
            target.pack_retry_at = now + PACK_RETRY_S
            log.warning("sync: %s answered HTTP %d to the pack %s; trying again in %.0f s", config.name,
                        reply.status, pack.path.name, PACK_RETRY_S)

    def _purge_tombstones(self) -> None:
        """Old tombstones, and the late rows every target has read: hourly (both are small)."""
        now = self.clock.monotonic()
        if now < self._next_tombstone_purge:
            return
        self._next_tombstone_purge = now + TOMBSTONE_PURGE_INTERVAL_S
        try:
            sync_store.purge_tombstones(self.conn, self.clock.now(), days=self.config.tombstone_days)
            sync_store.purge_late(self.conn)
        except sqlite3.Error as error:
            log.warning("sync: could not purge old tombstones and late rows (%s); trying again in an hour", error)

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        figures = {target.config.name: target.status.__dict__ for target in self.targets}
        temporary = self.status_file.with_name(self.status_file.name + ".tmp")
        try:
            temporary.write_text(json.dumps(figures, indent=1), encoding="utf-8")
            os.replace(temporary, self.status_file)
        except OSError as error:  # a full disk: the sync goes on, the status is stale
            log.debug("sync: cannot write %s: %s", self.status_file, error)


def read_status(path: Path) -> dict[str, TargetStatus]:
    """What `Syncer` last wrote to its status file (empty if none)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    known = set(TargetStatus.__dataclass_fields__)
    return {name: TargetStatus(**{k: v for k, v in values.items() if k in known})
            for name, values in raw.items() if isinstance(values, dict)}


def progress_stream(force: bool | None) -> TextIO | None:
    """Where `museum sync run` draws its progress line: stdout when it is a terminal, or when forced."""
    if force is False:
        return None
    return sys.stdout if force or sys.stdout.isatty() else None


__all__ = ["EXAMPLE_CONFIG", "MAX_BATCH_EVENTS", "Clock", "CurrentPack", "OnceResult", "PackRef", "PolicyGap",
           "Prepared", "RealClock", "Reply", "ReplyError", "SyncConfig", "SyncPaths", "Syncer", "TargetConfig",
           "TargetStatus", "load_config", "parse_reply", "prepare_batch", "progress_stream", "pseudonym_key",
           "read_site_key", "read_status", "retry_after_s"]
