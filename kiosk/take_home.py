"""The take-home link of a visit and its QR code (segno is imported here only).

The URL is `{companion_base_url}/v/{token}`: the token is the capability (128 random bits from
`protocol.ids.new_visit_id`), shown only in this QR code and kept only in the kiosk's memory; every store keeps
`protocol.ids.visit_id_for(token)` instead (docs/privacy.md).
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

import segno

from protocol.ids import is_visit_id

QUIET_ZONE = 4
"""Modules of light border around the code, as the QR standard requires for a reliable read."""

MIN_MODULE_MM = 2.0
"""The smallest module side that a phone reads from 1 m. Scanner apps decode the camera's preview stream,
about 1920 px wide, not the full photo; at 1 m a phone's main camera (about 65° across) sees about 1.3 m, so
about 1.5 preview pixels per millimetre. Decoders want 3 pixels or more per module to cope with focus and hand
shake: 3 / 1.5 = 2 mm. (The printers' "distance / 10" rule gives a 10 cm code, the same order: a 41-module code
of 2 mm modules is 8.2 cm wide.) A backlit screen has no ink spread, so this is a floor with some margin."""

DEFAULT_SCREEN_DPI = 151
"""A 10.1" 1280×800 panel, the kiosk's screen."""


def take_home_url(base: str, token: str) -> str:
    """The visit's page: `{base}/v/{token}`. ValueError for a base that is not an http(s) URL without query
    or fragment, or a token that is not a visit token."""
    if not isinstance(base, str):
        raise ValueError("the companion base URL must be text")
    base = base.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"the companion base URL must look like https://visit.example.org, got {base!r}")
    if not is_visit_id(token):
        raise ValueError("a take-home token is 22 or more URL-safe characters (protocol.ids.new_visit_id)")
    return f"{base}/v/{token}"


def qr_matrix(url: str) -> list[list[bool]]:
    """The QR code of `url` as rows of modules (True = dark), quiet zone included: square, to be drawn with
    whole pixels per module (see `qr_side_px`). Error correction M: the screen has no smudges to recover from, and
    a smaller code means larger modules in the same space."""
    code = segno.make(url, error="m", boost_error=False, micro=False)
    return [[bool(module) for module in row] for row in code.matrix_iter(scale=1, border=QUIET_ZONE)]


def module_px(screen_dpi: float = DEFAULT_SCREEN_DPI) -> int:
    """Whole screen pixels per module for modules of at least MIN_MODULE_MM: whole pixels keep every module
    edge sharp (a scaled QR blurs the edges a decoder looks for)."""
    if screen_dpi <= 0:
        raise ValueError(f"screen_dpi must be positive, got {screen_dpi}")
    return max(1, math.ceil(MIN_MODULE_MM * screen_dpi / 25.4))


def qr_side_px(modules: int, screen_dpi: float = DEFAULT_SCREEN_DPI) -> int:
    """The side in pixels to draw a code of `modules` modules (quiet zone included, `len(qr_matrix(url))`)
    so that a phone reads it from 1 m: 41 modules on the 151 dpi kiosk screen → 41 × 12 = 492 px."""
    if modules <= 0:
        raise ValueError(f"modules must be positive, got {modules}")
    return modules * module_px(screen_dpi)


__all__ = ["DEFAULT_SCREEN_DPI", "MIN_MODULE_MM", "QUIET_ZONE", "module_px", "qr_matrix", "qr_side_px",
           "take_home_url"]
