"""What a decoded QR text means at the museum, and the entrance reader's pairing of visits with lent tags.

Pure: no I/O, time is always given.

- A **visit QR** is a take-home URL `http(s)://<host>[/<path>]/v/<token>` (kiosk.take_home), `token` matching
  protocol.ids.VISIT_ID. The token is the visit's capability: it is turned into `visit_id_for(token)` at once,
  and nothing here prints it.
- A **tag QR** is `MUSEUM-TAG:<site_id>:<tag_id>` (`site_id` an identifier; `tag_id` "t-" and 12 or 8 hex
  digits, e.g. `MUSEUM-TAG:demo:t-00000000002a`; `tag_qr_text` writes it, `parse_tag_text` reads it).
- Anything else, and a tag of another site, is a **foreign code**: counted, shown in logs cut to 80 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from protocol.fields import IDENTIFIER
from protocol.ids import VISIT_ID, visit_id_for

TAG_PREFIX = "MUSEUM-TAG:"
MAX_SHOWN = 80
"""Characters of a foreign text that may appear in a log or an error."""
MAX_TEXT = 4096
"""Longer texts are foreign without a closer look (a QR code holds at most 2,953 bytes anyway)."""

TAG_ID = re.compile(r"^t-(?:[0-9a-f]{8}|[0-9a-f]{12})\Z")
"""A tag's id: "t-" and an Eddystone instance (12 hex digits) or an iBeacon major and minor (8)."""
MAX_TAG_TEXT = 200
_VISIT_LIKE = "<a URL with /v/, not shown>"
_VISIT_URL = re.compile(r"^https?://[^/?#\s@]+(?:/[^?#\s]*)?/v/([^/?#\s]+)/?\Z")


@dataclass(frozen=True, slots=True)
class VisitCode:
    """A visit's take-home QR. `repr` never shows the token."""

    token: str = field(repr=False)

    @property
    def visit_id(self) -> str:
        return visit_id_for(self.token)


@dataclass(frozen=True, slots=True)
class TagCode:
    site_id: str
    tag_id: str


@dataclass(frozen=True, slots=True)
class ForeignCode:
    """A code that is not ours (or another site's tag). `text` is cut to MAX_SHOWN characters."""

    text: str
    reason: str


Code = VisitCode | TagCode | ForeignCode


def shown(text: str) -> str:
    """`text` safe to log: at most MAX_SHOWN characters, control characters escaped."""
    escaped = text[:MAX_SHOWN].encode("unicode_escape").decode("ascii")
    if len(text) <= MAX_SHOWN and len(escaped) <= MAX_SHOWN:
        return escaped
    return escaped[:MAX_SHOWN - 1] + "…"


def tag_qr_text(site_id: str, tag_id: str) -> str:
    """The text of the QR code printed on a tag."""
    if IDENTIFIER.match(site_id) is None or TAG_ID.match(tag_id) is None:
        raise ValueError(f"not a site id and tag id: {site_id!r}, {tag_id!r}")
    return f"{TAG_PREFIX}{site_id}:{tag_id}"


def parse_tag_text(text: str) -> tuple[str, str] | None:
    """(site_id, tag_id) from a tag QR's text, or None when it is not one: surrounding spaces ignored, upper case
    accepted and lowered (an encoder may upper-case everything for QR's compact alphanumeric mode; ids are lower
    case by definition)."""
    if len(text) > MAX_TAG_TEXT:
        return None
    text = text.strip()
    if text[:len(TAG_PREFIX)].upper() != TAG_PREFIX:
        return None
    parts = text[len(TAG_PREFIX):].lower().split(":")
    if len(parts) != 2:
        return None
    site_id, tag_id = parts
    if IDENTIFIER.match(site_id) is None or TAG_ID.match(tag_id) is None:
        return None
    return site_id, tag_id


def classify(text: str, site_id: str) -> Code:
    """What a decoded text is for the site `site_id`."""
    if len(text) > MAX_TEXT:
        return ForeignCode(shown(text), "too long")
    url = _VISIT_URL.match(text)
    if url is not None:
        token = url.group(1)
        # Not protocol.fields.matches: its cache of good values would keep the capability in memory.
        if VISIT_ID.match(token) is not None:
            return VisitCode(token)
        # Neither the token nor anything derived from it is shown: it may be a mistyped capability.
        return ForeignCode(_VISIT_LIKE, "not a visit token")
    tag = parse_tag_text(text)
    if tag is not None:
        if tag[0] != site_id:
            return ForeignCode(shown(text), f"a tag of another site ({tag[0]})")
        return TagCode(*tag)
    if text.strip()[:len(TAG_PREFIX)].upper() == TAG_PREFIX:
        return ForeignCode(shown(text), "malformed tag code")
    if "/v/" in text:  # a visit link of some other form may still carry a capability: not shown
        return ForeignCode(_VISIT_LIKE, "not a museum code")
    return ForeignCode(shown(text), "not a museum code")


# --- the entrance: lending and returning tags ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Link:
    """Emit visit.linked (channel entrance_qr) for `visit_id`, with `tag_id` when a tag was paired with it."""

    visit_id: str
    tag_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Return:
    """Emit tag.returned for `tag_id`: it was shown alone."""

    tag_id: str
    at: float


Outcome = Link | Return


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: Literal["visit", "tag"]
    value: str  # a visit_id (never the token) or a tag_id
    at: float


class EntrancePairing:
    """The entrance desk, one visitor at a time: a visit QR and a tag QR shown within `pair_window_s` of each
    other (either order) lend the tag to the visit; a tag shown alone is being returned; a visit shown alone is
    linked to the entrance without a tag. A code waits at most `pair_window_s` for its partner; a second code of
    the same kind (another visit, another tag) ends the wait of the first at once. The same code again while it
    waits, or either code of the pair just made within `pair_window_s` of it (the tag being handed over), changes
    nothing. Holds one waiting code and the last pair: memory stays constant whatever is shown.

    Outcomes carry the time the deciding code was shown (a lone code: when it was shown, not when its wait
    ended)."""

    def __init__(self, pair_window_s: float = 60.0) -> None:
        if pair_window_s <= 0:
            raise ValueError(f"pair_window_s must be positive, got {pair_window_s}")
        self.pair_window_s = pair_window_s
        self._pending: _Pending | None = None
        self._paired: tuple[tuple[str, str], float] | None = None  # the last pair made, and when

    @property
    def waiting(self) -> str | None:
        """"visit" or "tag" while a code waits for its partner."""
        return self._pending.kind if self._pending else None

    def feed(self, code: VisitCode | TagCode, now: float) -> list[Outcome]:
        outcomes = self.tick(now)
        kind: Literal["visit", "tag"] = "visit" if isinstance(code, VisitCode) else "tag"
        value = code.visit_id if isinstance(code, VisitCode) else code.tag_id
        recent = self._paired
        if recent is not None and value in recent[0] and now - recent[1] < self.pair_window_s:
            return outcomes  # the pair just made, still being handed over: not a new showing
        pending = self._pending
        if pending is None:
            self._pending = _Pending(kind, value, now)
        elif pending.kind == kind:
            if pending.value != value:
                outcomes.append(_alone(pending))
                self._pending = _Pending(kind, value, now)
        else:
            self._pending = None
            visit_id, tag_id = (value, pending.value) if kind == "visit" else (pending.value, value)
            self._paired = ((visit_id, tag_id), now)
            outcomes.append(Link(visit_id, tag_id, now))
        return outcomes

    def tick(self, now: float) -> list[Outcome]:
        """The lone code whose wait has ended, if any."""
        pending = self._pending
        if pending is not None and now - pending.at >= self.pair_window_s:
            self._pending = None
            return [_alone(pending)]
        return []

    def flush(self) -> list[Outcome]:
        """Ends the wait now (the reader is stopping): a code shown must not be lost."""
        pending, self._pending = self._pending, None
        return [_alone(pending)] if pending else []


def _alone(pending: _Pending) -> Outcome:
    if pending.kind == "visit":
        return Link(pending.value, None, pending.at)
    return Return(pending.value, pending.at)


__all__ = [
    "MAX_SHOWN",
    "TAG_PREFIX",
    "Code",
    "EntrancePairing",
    "ForeignCode",
    "Link",
    "Outcome",
    "Return",
    "TagCode",
    "VisitCode",
    "classify",
    "parse_tag_text",
    "shown",
    "tag_qr_text",
]
