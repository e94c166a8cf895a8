"""The kiosk's look: two palettes (normal and high contrast), text sizes and touch-target sizes. Pure: no Kivy.

Every text/background pair the screens use is declared in `TEXT_PAIRS`, so the contrast test covers what is on
screen, not a sample. Ratios follow WCAG 2.x (relative luminance of sRGB colours): at least 4.5:1 in the normal
palette (AA for body text) and 7:1 in high contrast (AAA). Sizes are in pixels of the reference screen, a 10"
1280×800 touch panel (≈ 151 dpi), which is what a gallery kiosk uses; Kivy's density is 1 there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType

SCREEN_DPI = 151.0
"""A 10.1" 1280×800 panel: sqrt(1280² + 800²) / 10.1 ≈ 149.4; 151 is the figure the issue gives."""
MM_PER_INCH = 25.4
MIN_TOUCH_MM = 9.0
"""The smallest touch target the issue allows; a fingertip is 8–10 mm wide."""
TOUCH_TARGET_PX = 64
"""Every button is at least this wide and tall: 64 px = 10.8 mm at 151 dpi, above the 9 mm floor with margin."""
LARGE_TEXT_SCALE = 1.4
MIN_CONTRAST_NORMAL = 4.5
MIN_CONTRAST_HIGH = 7.0

FONT_SIZES = MappingProxyType({
    "small": 18,     # the take-home URL, progress times
    "body": 22,      # artwork text, explanations, card titles
    "button": 22,
    "heading": 30,   # room names, artwork titles on the detail screen
    "title": 40,     # screen titles
    "huge": 64,      # "Touch to start", the countdown
})
"""Text sizes in pixels at scale 1 (large-text mode multiplies them by LARGE_TEXT_SCALE)."""


def px_to_mm(px: float, dpi: float = SCREEN_DPI) -> float:
    return px / dpi * MM_PER_INCH


def mm_to_px(mm: float, dpi: float = SCREEN_DPI) -> float:
    return mm / MM_PER_INCH * dpi


@dataclass(frozen=True)
class Palette:
    """Colours as "#rrggbb"; the names are what the .kv files bind to (`root.look.pal['background']`: each
    screen's own look, kiosk/ui.py)."""

    name: str
    background: str          # screen background
    text: str                # main text on the background
    muted_text: str          # secondary text (artist, year, hints) on the background
    card: str                # artwork cards, panels
    card_text: str
    bar: str                 # top bar and accessibility bar
    bar_text: str
    button: str              # ordinary buttons
    button_text: str
    selected: str            # toggles that are on, the current language, the current room
    selected_text: str
    pressed: str             # any button while a finger is on it
    pressed_text: str
    attract: str             # the attract loop's background
    attract_text: str
    caption: str             # behind the LSF captions
    caption_text: str
    overlay: str             # the "Are you still there?" panel
    overlay_text: str
    border: str              # outlines of buttons and cards (decorative: no text on it)
    progress: str            # the filled part of the audio progress bar (decorative)

    def colours(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


NORMAL = Palette(
    name="normal",
    background="#F6F3EE", text="#1E1A16", muted_text="#57504A",
    card="#FFFFFF", card_text="#1E1A16",
    bar="#2B2622", bar_text="#FFFFFF",
    button="#2F4A5C", button_text="#FFFFFF",
    selected="#9A3A1C", selected_text="#FFFFFF",
    pressed="#17262F", pressed_text="#FFFFFF",
    attract="#14110F", attract_text="#FFFFFF",
    caption="#000000", caption_text="#FFFFFF",
    overlay="#FFFFFF", overlay_text="#1E1A16",
    border="#8A7F74", progress="#9A3A1C",
)

HIGH_CONTRAST = Palette(
    name="high_contrast",
    background="#000000", text="#FFFFFF", muted_text="#FFFF00",
    card="#000000", card_text="#FFFFFF",
    bar="#000000", bar_text="#FFFFFF",
    button="#000000", button_text="#FFFF00",
    selected="#FFFF00", selected_text="#000000",
    pressed="#FFFFFF", pressed_text="#000000",
    attract="#000000", attract_text="#FFFFFF",
    caption="#000000", caption_text="#FFFF00",
    overlay="#000000", overlay_text="#FFFFFF",
    border="#FFFF00", progress="#FFFF00",
)

TEXT_PAIRS: tuple[tuple[str, str], ...] = (
    ("text", "background"),
    ("muted_text", "background"),
    ("card_text", "card"),
    ("bar_text", "bar"),
    ("button_text", "button"),
    ("selected_text", "selected"),
    ("pressed_text", "pressed"),
    ("attract_text", "attract"),
    ("caption_text", "caption"),
    ("overlay_text", "overlay"),
)
"""(text colour, background colour) of every place text is drawn; the theme test checks each in each palette."""


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    if len(colour) != 7 or not colour.startswith("#"):
        raise ValueError(f"{colour!r} is not a #rrggbb colour")
    value = int(colour[1:], 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def rgba(colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """The colour as Kivy wants it: four floats from 0 to 1."""
    r, g, b = hex_to_rgb(colour)
    return r / 255, g / 255, b / 255, alpha


def relative_luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(channel) for channel in hex_to_rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG contrast ratio, from 1 (same colour) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def minimum_contrast(palette: Palette) -> float:
    return MIN_CONTRAST_HIGH if palette is HIGH_CONTRAST else MIN_CONTRAST_NORMAL


def palette_for(modes: frozenset[str] | set[str]) -> Palette:
    return HIGH_CONTRAST if "high_contrast" in modes else NORMAL


def font_scale_for(modes: frozenset[str] | set[str]) -> float:
    return LARGE_TEXT_SCALE if "large_text" in modes else 1.0


def font_sizes(scale: float) -> dict[str, float]:
    return {name: round(size * scale, 1) for name, size in FONT_SIZES.items()}


__all__ = [
    "FONT_SIZES", "HIGH_CONTRAST", "LARGE_TEXT_SCALE", "MIN_CONTRAST_HIGH", "MIN_CONTRAST_NORMAL", "MIN_TOUCH_MM",
    "NORMAL", "SCREEN_DPI", "TEXT_PAIRS", "TOUCH_TARGET_PX", "Palette", "contrast_ratio", "font_scale_for",
    "font_sizes", "hex_to_rgb", "minimum_contrast", "mm_to_px", "palette_for", "px_to_mm", "relative_luminance",
    "rgba",
]
