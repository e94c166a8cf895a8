"""Field specifications: what a field of an event may hold.

A spec checks one value and describes itself for the generated event reference. Specs are attached to
dataclass fields through `metadata`, so the dataclass stays the single definition of an event type.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.errors import ContractError
from protocol.ids import VISIT_ID

IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
KIND = re.compile(r"^[a-z][a-z_]{0,30}\Z")
LANGUAGE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?\Z")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,39}\Z")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


_KNOWN_GOOD_LIMIT = 4096
_known_good: dict[re.Pattern[str], set[str]] = {}


def matches(pattern: re.Pattern[str], value: str) -> bool:
    """`pattern.match(value)`, remembering the values that passed.

    A hub validates the same site, device, artwork and visit ids thousands of times a second; a set lookup is
    several times cheaper than running the expression again. Bounded, so hostile input cannot grow it."""
    known = _known_good.get(pattern)
    if known is None:
        known = _known_good[pattern] = set()
    if value in known:
        return True
    if pattern.match(value) is None:
        return False
    if len(known) >= _KNOWN_GOOD_LIMIT:
        known.clear()
    known.add(value)
    return True


def _number(value: float) -> str:
    return f"{int(value):,}".replace(",", " ") if float(value).is_integer() else f"{value}"


@dataclass(frozen=True)
class Spec:
    kind: str
    description: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 0
    pattern: re.Pattern[str] | None = None

    def check(self, name: str, value: Any) -> None:
        if value is None:
            if self.optional:
                return
            raise ContractError("invalid_field", f"{name} is required and may not be null")
        kind = self.kind
        if kind in ("text", "identifier", "language", "version", "choice", "uuid", "visit"):
            if not isinstance(value, str):
                raise ContractError("invalid_field", f"{name} must be a string, got {type(value).__name__}")
            if kind == "choice":
                if value not in self.choices:
                    raise ContractError("invalid_field",
                                        f"{name} must be one of {', '.join(self.choices)}; got {value[:80]!r}")
            elif self.pattern is not None and not matches(self.pattern, value):
                raise ContractError("invalid_field",
                                    f"{name} must be {self.describe_type()}; got {value[:80]!r}")
            elif kind == "text" and len(value) > self.max_length:
                raise ContractError("invalid_field", f"{name} is longer than {self.max_length} characters")
        elif kind == "flag":
            if not isinstance(value, bool):
                raise ContractError("invalid_field", f"{name} must be true or false, got {type(value).__name__}")
        elif kind in ("count", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ContractError("invalid_field", f"{name} must be a number, got {type(value).__name__}")
            if kind == "count" and not isinstance(value, int):
                raise ContractError("invalid_field", f"{name} must be a whole number, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ContractError("invalid_field", f"{name} must be finite")
            if self.minimum is not None and value < self.minimum:
                raise ContractError("invalid_field",
                                    f"{name} must be at least {_number(self.minimum)}, got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise ContractError("invalid_field",
                                    f"{name} must be at most {_number(self.maximum)}, got {value!r}")
        else:  # pragma: no cover - a programming error in this package
            raise AssertionError(f"unknown spec kind {kind}")

    def fast_check(self) -> Callable[[Any], bool]:
        """A predicate that accepts only values `check` accepts, as cheaply as possible. It may refuse values
        `check` would accept (a str subclass, say): callers then fall back to `check`, which stays the one
        authority and the one source of error messages."""
        kind = self.kind
        test: Callable[[Any], bool]
        if kind == "choice":
            choices = frozenset(self.choices)
            test = lambda v: type(v) is str and v in choices  # noqa: E731
        elif kind == "text":
            longest = self.max_length
            test = lambda v: type(v) is str and len(v) <= longest  # noqa: E731
        elif kind == "flag":
            test = lambda v: type(v) is bool  # noqa: E731
        elif kind in ("count", "number"):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if kind == "count":
                test = lambda v: type(v) is int and low <= v <= high  # noqa: E731
            else:
                test = lambda v: (type(v) is int or (type(v) is float and math.isfinite(v))) and low <= v <= high  # noqa: E731
        else:
            pattern = self.pattern
            assert pattern is not None
            test = lambda v: type(v) is str and matches(pattern, v)  # noqa: E731
        if self.optional:
            return lambda v: v is None or test(v)
        return test

    def describe_type(self) -> str:
        match self.kind:
            case "identifier":
                return "an identifier (lowercase letters, digits and '-', at most 63)"
            case "language":
                return "a language tag such as fr, en or fr-CA"
            case "version":
                return "a version string such as 1.4.2"
            case "uuid":
                return "a UUID"
            case "visit":
                return "a visit id (URL-safe, 22 to 64 characters)"
            case "choice":
                return "one of " + ", ".join(f"`{c}`" for c in self.choices)
            case "text":
                return f"text of at most {self.max_length} characters"
            case "flag":
                return "true or false"
            case "count" | "number":
                word = "whole number" if self.kind == "count" else "number"
                bounds = []
                if self.minimum is not None:
                    bounds.append(f"≥ {_number(self.minimum)}")
                if self.maximum is not None:
                    bounds.append(f"≤ {_number(self.maximum)}")
                return f"a {word}" + (f" ({', '.join(bounds)})" if bounds else "")
        return self.kind  # pragma: no cover


def _field(spec: Spec) -> Any:
    if spec.optional:
        return dataclasses.field(default=None, metadata={"spec": spec})
    return dataclasses.field(metadata={"spec": spec})


def identifier(description: str, *, optional: bool = False) -> Any:
    return _field(Spec("identifier", description, optional, pattern=IDENTIFIER))


def visit(description: str, *, optional: bool = False) -> Any:
    """Another visit's id (the same form as `visit_id`: the derivation of a visit token, `protocol.ids`)."""
    return _field(Spec("visit", description, optional, pattern=VISIT_ID))


def language(description: str, *, optional: bool = False) -> Any:
    return _field(Spec("language", description, optional, pattern=LANGUAGE))


def version(description: str) -> Any:
    return _field(Spec("version", description, pattern=VERSION))


def uuid(description: str, *, optional: bool = False) -> Any:
    return _field(Spec("uuid", description, optional, pattern=UUID))


def choice(description: str, *choices: str) -> Any:
    return _field(Spec("choice", description, choices=choices))


def text(description: str, *, max_length: int = 200) -> Any:
    return _field(Spec("text", description, max_length=max_length))


def flag(description: str) -> Any:
    return _field(Spec("flag", description))


def count(description: str, *, minimum: int = 0, maximum: int = 1_000_000_000, optional: bool = False) -> Any:
    return _field(Spec("count", description, optional, minimum=minimum, maximum=maximum))


def seconds(description: str, *, maximum: float = 7 * 24 * 3600, optional: bool = False) -> Any:
    return _field(Spec("number", description, optional, minimum=0, maximum=maximum))


def number(description: str, *, minimum: float, maximum: float, optional: bool = False) -> Any:
    return _field(Spec("number", description, optional, minimum=minimum, maximum=maximum))
