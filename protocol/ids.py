"""Identifiers and instants used on the wire.

`event_id` is a UUIDv7: 48 bits of Unix milliseconds then random bits, so ids sort by creation time and are
globally unique without coordination. Within one millisecond a process increments a counter held in the
random part, so the ids one process creates are strictly increasing: a device's order survives storage.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import secrets
import threading
import time
from datetime import UTC, datetime

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
VISIT_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}\Z")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")

_lock = threading.Lock()
_last_ms = 0
_last_counter = 0


def new_event_id() -> str:
    """A new UUIDv7, strictly greater than the previous one made by this process."""
    global _last_ms, _last_counter
    # Ids must be unique, not secret: the module's generator (seeded from os.urandom, and reseeded in a forked
    # child) is a tenth of the cost of a getrandom syscall per event. Visit tokens, which are secrets, use secrets.
    entropy = random.getrandbits(80)
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            # 42 of the 74 random bits start at a random point; the counter counts up from there.
            _last_counter = (entropy >> 39) & ((1 << 41) - 1)
        else:
            ms = _last_ms
            _last_counter += 1
        counter = _last_counter
    return _uuid7(ms, (counter >> 30) & 0xFFF, ((counter & 0x3FFFFFFF) << 32) | (entropy & 0xFFFFFFFF))


def event_id_at(instant: datetime) -> str:
    """A random UUIDv7 for a given instant: for importing past events and for tests (no ordering promise)."""
    rand = random.getrandbits(74)
    return _uuid7(int(instant.timestamp() * 1000), rand >> 62, rand & ((1 << 62) - 1))


def _uuid7(ms: int, rand_a: int, rand_b: int) -> str:
    """The canonical text of a UUIDv7: 48 bits of milliseconds, version 7, 12 bits, variant 0b10, 62 bits."""
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id_floor(instant: datetime) -> str:
    """The smallest UUIDv7 of `instant`'s millisecond: every id created before it sorts below, as text."""
    h = f"{int(instant.timestamp() * 1000):012x}"
    return f"{h[:8]}-{h[8:]}-7000-8000-000000000000"


def is_event_id(value: object) -> bool:
    return isinstance(value, str) and UUID7.match(value) is not None


def event_id_time(event_id: str) -> datetime:
    """The creation instant encoded in a UUIDv7."""
    ms = int(event_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(ms / 1000, UTC)


def new_visit_id() -> str:
    """A pseudonymous visit token: 128 random bits, URL-safe, never derived from a person."""
    return secrets.token_urlsafe(16)


_VISIT_ID_CONTEXT = b"museum-visit-v1\x00"


def visit_id_for(token: str) -> str:
    """The `visit_id` stored for a take-home token: base64url(SHA-256("museum-visit-v1" NUL token)), unpadded.

    The token (`new_visit_id()`) is a capability: whoever holds it opens the visitor's page at
    `{companion_base_url}/v/{token}`. It lives only in the kiosk's memory during the session and in the QR code.
    Every event, outbox, hub and upstream store keeps this derivation instead, which cannot be turned back into
    the token (SHA-256 is one-way and the token has 128 random bits, too many to guess), so a reader of any store
    cannot build the URL. The companion service computes the same derivation from the URL it is given to find
    the visit's events. The context prefix keeps these hashes apart from any other use of SHA-256 on the token;
    changing it (v2) would orphan every stored visit. The result is 43 characters and matches VISIT_ID.
    """
    if not isinstance(token, str) or not token:
        raise ValueError("a visit token must be a non-empty string")
    digest = hashlib.sha256(_VISIT_ID_CONTEXT + token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_visit_id(value: object) -> bool:
    return isinstance(value, str) and VISIT_ID.match(value) is not None


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond precision the wire carries."""
    return datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, UTC)


def truncate_ms(instant: datetime) -> datetime:
    return instant.replace(microsecond=instant.microsecond - instant.microsecond % 1000)


def format_instant(instant: datetime) -> str:
    """`2026-11-25T17:00:00.123Z`: the only instant format on the wire."""
    if instant.tzinfo is None:
        raise ValueError("an instant on the wire must be timezone-aware (UTC)")
    utc = instant if instant.tzinfo is UTC else instant.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_instant(text: str) -> datetime:
    """Parse the wire format; anything else (offsets, other precisions) raises ValueError."""
    if not isinstance(text, str) or _INSTANT.match(text) is None:
        raise ValueError(f"expected an instant like 2026-11-25T17:00:00.123Z, got {str(text)[:80]!r}")
    return datetime.fromisoformat(text[:-1] + "+00:00")
