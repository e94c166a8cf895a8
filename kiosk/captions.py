"""WebVTT captions for the LSF videos: parse a .vtt file into cues, find the text to show at a time. Pure.

The kiosk draws captions itself, under the video, in its own font and palette (high contrast included), rather
than relying on a video provider's subtitle support. Only what a caption needs is kept: cue times and text; cue
settings (position, alignment), STYLE and REGION blocks are ignored, and tags (`<i>`, `<c.yellow>`, `<v Name>`)
are stripped. A file from a pack has been verified, but a broken one must still not take the kiosk down: bad cues
are skipped, and the size is bounded.
"""

from __future__ import annotations

import bisect
import html
import re
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 512 * 1024
"""A caption file for a few minutes of video is a few KB; anything bigger is read only this far."""
MAX_CUES = 5000

_TIMESTAMP = r"(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_TIMING = re.compile(rf"^\s*{_TIMESTAMP}\s+-->\s+{_TIMESTAMP}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def parse_vtt(text: str) -> tuple[Cue, ...]:
    """The cues of a WebVTT document, sorted by start time; () when it is not WebVTT."""
    text = text.lstrip("\ufeff")
    if not text.startswith("WEBVTT"):
        return ()
    cues: list[Cue] = []
    for block in re.split(r"\r?\n\s*\r?\n|\r\s*\r", text):
        lines = block.splitlines()
        timing_index = next((i for i, line in enumerate(lines[:2]) if "-->" in line), None)
        if timing_index is None:
            continue  # the header, NOTE, STYLE and REGION blocks
        match = _TIMING.match(lines[timing_index])
        if match is None:
            continue
        start = _seconds(*match.group(1, 2, 3, 4))
        end = _seconds(*match.group(5, 6, 7, 8))
        body = "\n".join(html.unescape(_TAG.sub("", line)).strip() for line in lines[timing_index + 1:]).strip()
        if end <= start or not body:
            continue
        cues.append(Cue(start, end, body))
        if len(cues) >= MAX_CUES:
            break
    cues.sort(key=lambda cue: (cue.start, cue.end))
    return tuple(cues)


def load_vtt(path: str | Path) -> tuple[Cue, ...]:
    """The cues of a .vtt file; () when it cannot be read (the video then plays without captions)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES)
    except OSError:
        return ()
    return parse_vtt(raw.decode("utf-8", errors="replace"))


def caption_at(cues: tuple[Cue, ...], seconds: float) -> str:
    """The text of every cue showing at `seconds` (overlapping cues stacked), or ""."""
    last = bisect.bisect_right([cue.start for cue in cues], seconds)
    return "\n".join(cue.text for cue in cues[:last] if cue.end > seconds)


__all__ = ["Cue", "caption_at", "load_vtt", "parse_vtt"]
