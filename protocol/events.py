"""The event types: every touchpoint in the museum, as one versioned, frozen dataclass each.

An event object is valid by construction: `__post_init__` checks every field against its spec, so code that
holds an `Event` never has to wonder. The wire form (see `protocol.codec`) is one flat JSON object with the
common fields, `type`, `schema_version` and the type's own fields.

Adding a field or changing a meaning means a new `schema_version` for that type; a receiver that does not know
a version refuses it rather than guessing.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from protocol import fields as f
from protocol.errors import ContractError
from protocol.fields import IDENTIFIER, Spec, matches
from protocol.ids import UUID7, VISIT_ID, is_event_id, new_event_id, truncate_ms, utc_now

VisitPolicy = Literal["optional", "required", "forbidden"]
COMMON_FIELDS = ("event_id", "type", "schema_version", "site_id", "device_id", "occurred_at", "visit_id")

E = TypeVar("E", bound="Event")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Common to every event.

    - `event_id`: UUIDv7, globally unique and time-ordered; the key that makes delivery idempotent.
    - `site_id`, `device_id`: where it happened; `device_id` must match the topic it was published on.
    - `occurred_at`: when it happened, UTC, millisecond precision.
    - `visit_id`: optional pseudonymous visit token (128 random bits), never derived from a person.
    """

    type: ClassVar[str]
    schema_version: ClassVar[int]
    visit_policy: ClassVar[VisitPolicy] = "optional"
    specs: ClassVar[tuple[tuple[str, Spec], ...]] = ()
    fast_checks: ClassVar[tuple[tuple[str, Callable[[Any], bool]], ...]] = ()
    field_names: ClassVar[frozenset[str]] = frozenset()
    optional_names: ClassVar[frozenset[str]] = frozenset()

    event_id: str
    site_id: str
    device_id: str
    occurred_at: datetime
    visit_id: str | None = None

    def __post_init__(self) -> None:
        if not self.fast_valid(self.__dict__):
            self._validate()

    @classmethod
    def fast_valid(cls, values: dict[str, Any]) -> bool:
        """True only if `values` (every field, `occurred_at` already a UTC datetime in whole milliseconds) is
        valid. False means "look closer": `_validate` then finds the precise error, or normalises and accepts."""
        for name, test in cls.fast_checks:  # noqa: SIM110 - a plain loop beats all() over a generator here
            if not test(values[name]):
                return False
        return True

    def _validate(self) -> None:
        """The authority on validity and the source of every error message (slower than `fast_valid`)."""
        if not is_event_id(self.event_id):
            raise ContractError("invalid_field", f"event_id must be a UUIDv7, got {str(self.event_id)[:80]!r}")
        eid = self.event_id
        for name in ("site_id", "device_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not matches(IDENTIFIER, value):
                raise ContractError("invalid_field", f"{name} must be an identifier (lowercase letters, digits and "
                                    f"'-', at most 63), got {str(value)[:80]!r}", event_id=eid)
        at = self.occurred_at
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise ContractError("invalid_field", "occurred_at must be a timezone-aware datetime", event_id=eid)
        if at.tzinfo is not UTC or at.microsecond % 1000:
            object.__setattr__(self, "occurred_at", truncate_ms(at.astimezone(UTC)))
        visit = self.visit_id
        policy = self.visit_policy
        if visit is None:
            if policy == "required":
                raise ContractError("invalid_field", f"{self.type} requires a visit_id", event_id=eid)
        elif policy == "forbidden":
            raise ContractError("invalid_field", f"{self.type} carries no visit_id: it counts people, "
                                "it does not identify them", event_id=eid)
        elif not isinstance(visit, str) or not matches(VISIT_ID, visit):
            raise ContractError("invalid_field", "visit_id must be a random URL-safe token of at least 22 "
                                "characters (128 bits)", event_id=eid)
        for name, spec in self.specs:
            try:
                spec.check(name, getattr(self, name))
            except ContractError as error:
                error.event_id = eid
                raise

    @classmethod
    def create(cls: builtins.type[E], *, site_id: str, device_id: str, visit_id: str | None = None,
               occurred_at: datetime | None = None, **own_fields: Any) -> E:
        """A new event happening now (or at `occurred_at`), with a fresh `event_id`."""
        values = {"event_id": new_event_id(), "site_id": site_id, "device_id": device_id,
                  "occurred_at": occurred_at or utc_now(), "visit_id": visit_id, **own_fields}
        if len(values) < len(cls.field_names):
            values.update(dict.fromkeys(cls.optional_names - values.keys()))  # optional fields left out
        if values.keys() == cls.field_names and cls.fast_valid(values):
            return cls.from_valid(values)
        return cls(**values)  # the dataclass fills defaults, and refuses or normalises with a precise error

    @classmethod
    def from_valid(cls: builtins.type[E], values: dict[str, Any]) -> E:
        """An event from values `fast_valid` has accepted, without the dataclass `__init__`, which would only
        check them all again (a kiosk emits, and a hub decodes, thousands a second)."""
        event: E = object.__new__(cls)
        event.__dict__.update(values)
        return event

    def own_fields(self) -> dict[str, Any]:
        """The type's own fields, without the common ones."""
        return {name: getattr(self, name) for name, _ in self.specs}


def _is_wire_instant(value: Any) -> bool:
    return type(value) is datetime and value.tzinfo is UTC and value.microsecond % 1000 == 0


def _common_fast_checks(visit: VisitPolicy) -> tuple[tuple[str, Callable[[Any], bool]], ...]:
    def identifier(v: Any) -> bool:
        return type(v) is str and matches(IDENTIFIER, v)

    def visit_token(v: Any) -> bool:
        return type(v) is str and matches(VISIT_ID, v)

    visit_check: Callable[[Any], bool]
    if visit == "required":
        visit_check = visit_token
    elif visit == "forbidden":
        visit_check = lambda v: v is None  # noqa: E731
    else:
        visit_check = lambda v: v is None or visit_token(v)  # noqa: E731
    return (("event_id", lambda v: type(v) is str and UUID7.match(v) is not None), ("site_id", identifier),
            ("device_id", identifier), ("occurred_at", _is_wire_instant), ("visit_id", visit_check))


EVENT_TYPES: dict[str, type[Event]] = {}


def event_type(name: str, *, version: int = 1, visit: VisitPolicy = "optional"):
    """Register an event class under its wire `type` name and current schema version."""

    def register(cls: type[E]) -> type[E]:
        if name in EVENT_TYPES:
            raise AssertionError(f"event type {name} registered twice")
        if not cls.__doc__ or cls.__doc__.startswith(cls.__name__ + "("):
            raise AssertionError(f"event type {name} needs a docstring: it becomes the reference")
        cls.type = name
        cls.schema_version = version
        cls.visit_policy = visit
        base = {field.name for field in dataclasses.fields(Event)}
        cls.specs = tuple((fld.name, fld.metadata["spec"]) for fld in dataclasses.fields(cls)
                          if fld.name not in base)
        cls.fast_checks = _common_fast_checks(visit) + tuple((name, spec.fast_check()) for name, spec in cls.specs)
        cls.field_names = frozenset(field.name for field in dataclasses.fields(cls))
        cls.optional_names = frozenset(name for name, spec in cls.specs if spec.optional)
        EVENT_TYPES[name] = cls
        return cls

    return register


# --- Kiosk sessions ---------------------------------------------------------------------------------------

@event_type("kiosk.session_started")
@dataclass(frozen=True, kw_only=True)
class KioskSessionStarted(Event):
    """A visitor started using a kiosk (first touch after the attract screen)."""

    session_id: str = f.uuid("This kiosk session; repeated on the session's other events.")
    language: str = f.language("Language the session starts in.")


@event_type("kiosk.session_ended")
@dataclass(frozen=True, kw_only=True)
class KioskSessionEnded(Event):
    """A kiosk session ended: the visitor left it, it timed out, or the kiosk shut down."""

    session_id: str = f.uuid("The session that ended.")
    duration_s: float = f.seconds("How long the session lasted.")
    reason: str = f.choice("Why it ended.", "visitor", "timeout", "shutdown")


# --- Artworks ---------------------------------------------------------------------------------------------

SOURCES = ("kiosk", "qr", "companion", "proximity")


@event_type("artwork.viewed")
@dataclass(frozen=True, kw_only=True)
class ArtworkViewed(Event):
    """A visitor opened an artwork's page: on a kiosk, by scanning its QR code, or in the companion app."""

    artwork_id: str = f.identifier("The artwork, as in the content pack.")
    source: str = f.choice("Where the page was opened.", *SOURCES)
    language: str = f.language("Language the page was shown in.")
    session_id: str | None = f.uuid("Kiosk session, when viewed on a kiosk.", optional=True)


@event_type("artwork.collected", visit="required")
@dataclass(frozen=True, kw_only=True)
class ArtworkCollected(Event):
    """A visitor chose "take it home": the artwork will be on their personal visit page."""

    artwork_id: str = f.identifier("The artwork collected.")
    source: str = f.choice("Where it was collected.", *SOURCES)


# --- Visitor preferences ----------------------------------------------------------------------------------

@event_type("visitor.language_changed")
@dataclass(frozen=True, kw_only=True)
class LanguageChanged(Event):
    """The visitor switched the interface language."""

    from_language: str = f.language("Language before the change.")
    to_language: str = f.language("Language after the change.")


ACCESSIBILITY_MODES = ("large_text", "high_contrast", "sign_language", "audio_description", "easy_read")


@event_type("visitor.accessibility_changed")
@dataclass(frozen=True, kw_only=True)
class AccessibilityModeChanged(Event):
    """The visitor turned an accessibility mode on or off (large text, high contrast, LSF video …)."""

    mode: str = f.choice("The mode.", *ACCESSIBILITY_MODES)
    enabled: bool = f.flag("Whether the mode is now on.")


TAG_ID_DESCRIPTION = ("The visitor tag, as the BLE station or QR reader saw it (see docs/hardware.md). The hub "
                      "resolves it to the tag's visit and removes it before storing: it never leaves the site.")


@event_type("visit.linked", version=2, visit="required")
@dataclass(frozen=True, kw_only=True)
class VisitLinked(Event):
    """A visit was tied to something scanned: a visitor's phone scanned a QR code next to a work or at a kiosk, a
    kiosk or the entrance reader was shown a visit's QR code, or a lent visitor tag was linked to the visit."""

    channel: str = f.choice("What was scanned.", "kiosk_qr", "artwork_qr", "entrance_qr")
    artwork_id: str | None = f.identifier("The artwork, for a QR code next to a work.", optional=True)
    tag_id: str | None = f.identifier("A visitor tag now lent to this visit. " + TAG_ID_DESCRIPTION, optional=True)


@event_type("visit.joined", visit="required")
@dataclass(frozen=True, kw_only=True)
class VisitJoined(Event):
    """Two visits became one: a visitor's phone, holding a visit of its own, opened the take-home page of a
    visit begun at a kiosk (its "My visit" QR code) and joined them. The take-home page of either then shows the
    works of both. `visit_id` is the visit the phone joined; `other_visit_id` the phone's earlier visit."""

    other_visit_id: str = f.visit("The phone's earlier visit, now part of this one.")


@event_type("tag.returned")
@dataclass(frozen=True, kw_only=True)
class TagReturned(Event):
    """A lent visitor tag came back (its QR code was scanned alone at the entrance reader): the visit it was
    linked to ends, and the site forgets which visit the tag belonged to. The hub sets `visit_id` to that visit
    and removes `tag_id` before storing."""

    tag_id: str | None = f.identifier(TAG_ID_DESCRIPTION, optional=True)


# --- Presence near works ----------------------------------------------------------------------------------

@event_type("proximity.entered", version=2)
@dataclass(frozen=True, kw_only=True)
class ProximityEntered(Event):
    """A visitor's tag came within range of an artwork watched by a BLE station. Without `visit_id` (a tag lent
    to no visit) it still counts in the figures."""

    artwork_id: str = f.identifier("The artwork the station watches.")
    zone_id: str = f.identifier("The zone (room) the artwork is in.")
    tag_id: str | None = f.identifier(TAG_ID_DESCRIPTION, optional=True)


@event_type("proximity.left", version=2)
@dataclass(frozen=True, kw_only=True)
class ProximityLeft(Event):
    """A visitor's tag left an artwork's range; `dwell_s` is how long it stayed."""

    artwork_id: str = f.identifier("The artwork the station watches.")
    zone_id: str = f.identifier("The zone (room) the artwork is in.")
    dwell_s: float = f.seconds("Time spent in range.", maximum=24 * 3600)
    tag_id: str | None = f.identifier(TAG_ID_DESCRIPTION, optional=True)


@event_type("occupancy.counted", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class OccupancyCounted(Event):
    """How many people a zone held over a window: a number only, never an identifier."""

    zone_id: str = f.identifier("The zone counted.")
    count: int = f.count("People counted.", maximum=100_000)
    window_s: float = f.seconds("Length of the counting window.", maximum=24 * 3600)


# --- Beacons and stations ---------------------------------------------------------------------------------

@event_type("beacon.health", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class BeaconHealth(Event):
    """The latest telemetry (Eddystone-TLM) of a museum beacon or visitor tag, reported by a BLE station that
    hears it, at most once per beacon per reporting period."""

    beacon_id: str = f.identifier("The beacon's name in the station's configuration, or a tag's id.")
    battery_mv: int | None = f.count("Battery voltage in millivolts (absent: the beacon does not say).",
                                     maximum=10_000, optional=True)
    temperature_c: float | None = f.number("Beacon temperature in °C (absent: the beacon does not say).",
                                           minimum=-128, maximum=128, optional=True)
    uptime_s: float | None = f.seconds("Time since the beacon's last power-on or reboot.",
                                       maximum=20 * 365 * 24 * 3600, optional=True)
    adverts: int | None = f.count("Advertising frames the beacon has sent since power-on.",
                                  maximum=2**32 - 1, optional=True)


BEACON_ALERTS = ("low_battery", "not_heard", "heard_again")


@event_type("beacon.alert", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class BeaconAlert(Event):
    """Something staff must act on about a museum beacon or visitor tag: its battery is low, or no station has
    heard it for too long (and `heard_again` once it is back)."""

    beacon_id: str = f.identifier("The beacon's name in the station's configuration, or a tag's id.")
    alert: str = f.choice("What happened.", *BEACON_ALERTS)
    detail: str = f.text("What was measured, for staff.", max_length=300)


SCANNER_STATES = ("scanning", "recovering", "failing")


@event_type("scanner.status", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class ScannerStatus(Event):
    """A BLE station's scanner changed state: `scanning` (healthy), `recovering` (retrying after a fault) or
    `failing` (still retrying after many attempts: staff should look). The station keeps running in every state."""

    state: str = f.choice("The scanner's state now.", *SCANNER_STATES)
    adapter: str = f.text("The Bluetooth adapter (hci0 …).", max_length=40)
    reason: str = f.text("Why, for staff: the fault and what the station does about it.", max_length=500)
    attempts: int = f.count("Recovery attempts since the scanner last worked (0 when scanning).")


# --- Devices ----------------------------------------------------------------------------------------------

DEVICE_KINDS = ("kiosk", "gateway", "qr_reader")


@event_type("device.status", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class DeviceStatus(Event):
    """A device's heartbeat: what it runs and how its outbox is doing."""

    kind: str = f.choice("What the device is.", *DEVICE_KINDS)
    software_version: str = f.version("The museum software version it runs.")
    uptime_s: float = f.seconds("Seconds since the device process started.", maximum=10 * 365 * 24 * 3600)
    outbox_pending: int = f.count("Events waiting in the outbox for the hub's acknowledgement.")
    outbox_dropped: int = f.count("Events the outbox ever had to drop under its bounds (should stay 0).")


@event_type("content.pack_applied", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class ContentPackApplied(Event):
    """A device installed a content pack announced by the hub."""

    pack_id: str = f.identifier("The content pack.")
    pack_version: str = f.version("Its version.")
    items: int = f.count("Number of artworks in the pack.")


@event_type("content.pack_refused", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class ContentPackRefused(Event):
    """A device refused a content pack announced by the hub (failed download verification or validation); it
    keeps showing its last good pack."""

    pack_id: str = f.identifier("The content pack refused.")
    pack_version: str = f.version("Its version.")
    reason: str = f.text("Why it was refused, for staff.", max_length=500)


@event_type("command.result", visit="forbidden")
@dataclass(frozen=True, kw_only=True)
class CommandResult(Event):
    """What a device did with a command it received on its commands topic."""

    command_id: str = f.uuid("The command answered.")
    command: str = f.identifier("The command's name.")
    ok: bool = f.flag("Whether it succeeded.")
    detail: str = f.text("What happened, for staff.", max_length=500)
