"""Finding QR codes in a frame, fast when it is easy and thorough when it is not, and saying each text once.

The strategy, stage by stage, stopping at the first that reads anything:

1. the frame shrunk by `downscale` (2: a quarter of the pixels, and the 2×2 mean halves the sensor noise):
   most codes, in about a millisecond;
2. the full frame: codes too small for stage 1;
3. the shrunk frame smoothed (a 3×3 low-pass): large codes under heavy noise or blur;
4. candidate regions (`candidate_regions`: where edges are densest, which a QR code's modules make them), each
   cropped and smoothed, read as it is and then enlarged ×2: small, rotated, noisy codes whose modules are two or
   three pixels wide.

On the hard set of bench/qr.py (this machine: 2 cores, Debian 12) zxing-cpp reads 81 % of the frames alone
(3.8 ms median) and 100 % within this strategy (1.7 ms median; 98.8 % over eight other seeds of the set); pyzbar
reads 36 % alone (55 ms) and 99 % within it (16 ms): zxing-cpp is the default decoder. A frame without any code
runs every stage: about 25 ms here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import ImageFilter

from qr.frames import Box, Decoded, Frame, FrameError, crop, downscale, upscale

log = logging.getLogger(__name__)

DECODERS = ("zxing", "zbar")
DEFAULT_DECODER = "zxing"


class Decoder(Protocol):
    """qr.zxing.ZxingDecoder, qr.zbar.ZbarDecoder: `decode` never raises; failures are counted in `errors`."""

    name: str
    errors: int
    last_error: str | None

    def decode(self, frame: Frame) -> list[Decoded]: ...


class DecoderUnavailable(RuntimeError):
    """The decoder chosen is not installed on this machine (one line: what to install or which to choose)."""


def make_decoder(name: str) -> Decoder:
    """The decoder called `name` ("zxing" or "zbar"); its library is imported only now."""
    if name == "zxing":
        try:
            from qr.zxing import ZxingDecoder
        except ImportError:
            raise DecoderUnavailable("the zxing decoder needs zxing-cpp: pip install zxing-cpp") from None
        return ZxingDecoder()
    if name == "zbar":
        try:
            from qr.zbar import ZbarDecoder
        except ImportError as error:  # pyzbar itself, or the system library it loads
            raise DecoderUnavailable(f"the zbar decoder needs pyzbar and the system library libzbar0 "
                                     f"(pip install pyzbar; apt install libzbar0): {error}") from None
        return ZbarDecoder()
    raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")


@dataclass
class StrategyStats:
    frames: int = 0
    frames_read: int = 0
    """Frames in which at least one code was read."""
    by_stage: Counter[str] = field(default_factory=Counter)
    """Frames read, by the stage that read them: "downscaled", "full", "smoothed", "candidate"."""
    failures: int = 0
    """Frames the strategy could not process at all (a fault of ours or of Pillow; counted, never raised)."""


class Strategy:
    """`read(frame)` → every code found, in the frame's coordinates, each text once. Never raises."""

    def __init__(self, decoder: Decoder, *, downscale: int = 2, candidates: int = 3, crop_px: int = 360,
                 min_side_for_downscale: int = 480) -> None:
        self.decoder = decoder
        self.downscale = downscale
        self.candidates = candidates
        self.crop_px = crop_px
        self.min_side_for_downscale = min_side_for_downscale
        self.stats = StrategyStats()

    def read(self, frame: Frame) -> list[Decoded]:
        self.stats.frames += 1
        try:
            found, stage = self._read(frame)
        except Exception:  # a frame that breaks us is counted and skipped, never the end of the loop
            self.stats.failures += 1
            log.exception("QR strategy failed on a %d×%d frame", frame.width, frame.height)
            return []
        if found:
            self.stats.frames_read += 1
            self.stats.by_stage[stage] += 1
        return found

    def _read(self, frame: Frame) -> tuple[list[Decoded], str]:
        factor = self.downscale
        small: Frame | None = None
        if factor > 1 and min(frame.width, frame.height) >= self.min_side_for_downscale:
            small = downscale(frame, factor)
            found = self.decoder.decode(small)
            if found:
                return _unique(d.mapped(factor) for d in found), "downscaled"
        found = self.decoder.decode(frame)
        if found:
            return _unique(found), "full"
        if small is not None:
            found = self.decoder.decode(_smooth(small))
            if found:
                return _unique(d.mapped(factor) for d in found), "smoothed"
        for box in candidate_regions(frame, self.candidates, self.crop_px):
            try:
                part = _smooth(crop(frame, box))
            except FrameError:
                continue
            found = [d.mapped(1, box[0], box[1]) for d in self.decoder.decode(part)]
            if not found:
                found = [d.mapped(0.5, box[0], box[1]) for d in self.decoder.decode(upscale(part, 2))]
            if found:
                return _unique(found), "candidate"
        return [], ""


def _smooth(frame: Frame) -> Frame:
    """A 3×3 low-pass: sensor noise down by about half, modules two pixels wide and more kept."""
    return Frame.from_image(frame.image().filter(ImageFilter.SMOOTH))


def _unique(found: Iterable[Decoded]) -> list[Decoded]:
    seen: dict[str, Decoded] = {}
    for decoded in found:
        seen.setdefault(decoded.text, decoded)
    return list(seen.values())


CELL_PX = 32
"""The candidate map's cell: 4× downscaled pixels (noise averaged away) in blocks of 8."""


def candidate_regions(frame: Frame, count: int, side: int) -> list[Box]:
    """Up to `count` boxes of `side` pixels (clamped to the frame) centred where the frame has the densest
    edges, best first, at least 4 cells apart: a QR code's modules make more edges per area than almost anything
    else in a scene. Cost: about a millisecond for 1280×720."""
    if count <= 0 or frame.width < CELL_PX * 2 or frame.height < CELL_PX * 2:
        return []
    edges = frame.image().reduce(4).filter(ImageFilter.FIND_EDGES)
    density = edges.reduce(CELL_PX // 4).filter(ImageFilter.BoxBlur(1))
    width = density.width
    values = density.tobytes()
    picks: list[tuple[int, int]] = []
    for index in sorted(range(len(values)), key=values.__getitem__, reverse=True):
        x, y = index % width, index // width
        if all(abs(x - px) > 3 or abs(y - py) > 3 for px, py in picks):
            picks.append((x, y))
            if len(picks) == count:
                break
    boxes: list[Box] = []
    for x, y in picks:
        cx, cy = int((x + 0.5) * CELL_PX), int((y + 0.5) * CELL_PX)
        left = min(max(0, cx - side // 2), max(0, frame.width - side))
        top = min(max(0, cy - side // 2), max(0, frame.height - side))
        box = (left, top, min(frame.width, left + side), min(frame.height, top + side))
        if box not in boxes:  # two peaks near a corner clamp to the same box
            boxes.append(box)
    return boxes


class Debouncer:
    """Says a text once while it stays in view: the same text within `repeat_s` of its last sighting is a
    repeat. Time is given, never read. Holds a digest of each text (never the text: a visit URL carries the
    visit's capability) for `repeat_s` at most, and at most `max_texts` of them (the oldest forgotten first)."""

    def __init__(self, repeat_s: float = 3.0, max_texts: int = 1024) -> None:
        if repeat_s < 0:
            raise ValueError(f"repeat_s must be 0 or more, got {repeat_s}")
        self.repeat_s = repeat_s
        self.max_texts = max_texts
        self._last: OrderedDict[bytes, float] = OrderedDict()
        self.repeats = 0

    def admit(self, text: str, now: float) -> bool:
        """True when `text` is new (or back after `repeat_s` out of sight); every sighting restarts its wait."""
        self._forget(now)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        last = self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.max_texts:
            self._last.popitem(last=False)
        if last is not None and now - last < self.repeat_s:
            self.repeats += 1
            return False
        return True

    def _forget(self, now: float) -> None:
        while self._last:
            key, seen = next(iter(self._last.items()))
            if now - seen < self.repeat_s:
                break
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


__all__ = ["DECODERS", "DEFAULT_DECODER", "Debouncer", "Decoder", "DecoderUnavailable", "Strategy",
           "StrategyStats", "candidate_regions", "make_decoder"]
