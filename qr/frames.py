"""Camera frames as 8-bit luminance, what a decoder found in one, and the conversions from the byte formats
cameras deliver (V4L2's GREY, YUYV and MJPEG). Pillow does the pixel work in C: a QR decoder wants luminance
only, so no conversion here ever builds a colour image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

Point = tuple[int, int]
Box = tuple[int, int, int, int]
"""(left, top, right, bottom), right and bottom excluded, as Pillow's crop takes it."""


class FrameError(ValueError):
    """Bytes that are not a frame of the announced format (a truncated buffer, a corrupt JPEG)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame: `width` × `height` luminance bytes, row after row, no padding."""

    width: int
    height: int
    gray: bytes

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise FrameError(f"a frame needs a positive size, got {self.width}×{self.height}")
        if len(self.gray) != self.width * self.height:
            raise FrameError(f"a {self.width}×{self.height} frame needs {self.width * self.height} bytes, "
                             f"got {len(self.gray)}")

    def image(self) -> Image.Image:
        """A Pillow view of the frame (no copy: Pillow reads `gray` in place)."""
        return Image.frombuffer("L", (self.width, self.height), self.gray, "raw", "L", 0, 1)

    @classmethod
    def from_image(cls, image: Image.Image) -> Frame:
        gray = image if image.mode == "L" else image.convert("L")
        return cls(gray.width, gray.height, gray.tobytes())


@dataclass(frozen=True, slots=True)
class Decoded:
    """One QR code found in a frame: its text and its four corners in the frame's pixels (the order the
    decoder gives; any rotation)."""

    text: str
    corners: tuple[Point, ...]

    @property
    def box(self) -> Box:
        xs = [x for x, _ in self.corners] or [0]
        ys = [y for _, y in self.corners] or [0]
        return min(xs), min(ys), max(xs) + 1, max(ys) + 1

    def mapped(self, scale: float, dx: int = 0, dy: int = 0) -> Decoded:
        """The same code in the coordinates of a frame this one was cut from (`dx`, `dy`) and shrunk from
        (`scale`: its pixels per pixel of this frame)."""
        return Decoded(self.text, tuple((round(x * scale) + dx, round(y * scale) + dy) for x, y in self.corners))


def downscale(frame: Frame, factor: int) -> Frame:
    """The frame shrunk by a whole `factor` (each output pixel the mean of factor × factor: a box filter, what a
    sensor's binning does, and the cheapest resampling Pillow has)."""
    if factor <= 1:
        return frame
    return Frame.from_image(frame.image().reduce(factor))


def upscale(frame: Frame, factor: int) -> Frame:
    """The frame enlarged by a whole `factor` (bilinear: a tiny code gets modules wide enough to sample)."""
    if factor <= 1:
        return frame
    size = (frame.width * factor, frame.height * factor)
    return Frame.from_image(frame.image().resize(size, Image.Resampling.BILINEAR))


def crop(frame: Frame, box: Box) -> Frame:
    """The part of the frame inside `box`, clamped to the frame (FrameError if nothing is left)."""
    left, top = max(0, box[0]), max(0, box[1])
    right, bottom = min(frame.width, box[2]), min(frame.height, box[3])
    if right <= left or bottom <= top:
        raise FrameError(f"crop box {box} is outside the {frame.width}×{frame.height} frame")
    if (left, top, right, bottom) == (0, 0, frame.width, frame.height):
        return frame
    return Frame.from_image(frame.image().crop((left, top, right, bottom)))


# --- what cameras deliver -----------------------------------------------------------------------------------

def from_grey(raw: bytes | memoryview, width: int, height: int, stride: int | None = None) -> Frame:
    """V4L2 GREY (8-bit luminance), rows `stride` bytes apart (at least `width`)."""
    stride = stride or width
    _need(raw, stride * (height - 1) + width, "GREY", width, height)
    if stride == width:
        return Frame(width, height, bytes(raw[:width * height]))
    view = memoryview(raw)
    return Frame(width, height, b"".join(view[row * stride:row * stride + width] for row in range(height)))


def from_yuyv(raw: bytes | memoryview, width: int, height: int, stride: int | None = None) -> Frame:
    """V4L2 YUYV (YUV 4:2:2, bytes Y0 U Y1 V): luminance is every other byte, so gray costs one strided copy."""
    stride = stride or 2 * width
    _need(raw, stride * (height - 1) + 2 * width, "YUYV", width, height)
    if stride == 2 * width:
        # A strided slice of bytes is a C loop (about 1 ms for 720p); bytes() of a strided memoryview copies
        # element by element, holding the GIL 5-10 times longer.
        return Frame(width, height, bytes(raw)[:2 * width * height:2])
    view = memoryview(raw)
    rows = b"".join(view[row * stride:row * stride + 2 * width] for row in range(height))  # padding dropped
    return Frame(width, height, rows[::2])


def from_yuv420(raw: bytes | memoryview, width: int, height: int, stride: int | None = None) -> Frame:
    """YUV 4:2:0 planar (I420, NV12: the Pi camera's usual formats): the luminance plane comes first."""
    return from_grey(raw, width, height, stride)


def from_mjpeg(raw: bytes | memoryview) -> Frame:
    """One Motion-JPEG frame. Pillow's draft mode decodes the luminance channel only (no colour conversion);
    webcams that leave the Huffman tables out (allowed by MJPEG) still decode: libjpeg-turbo supplies the
    standard ones."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format != "JPEG":
                raise FrameError(f"an MJPEG frame must be a JPEG image, got {image.format}")
            image.draft("L", image.size)
            return Frame.from_image(image.convert("L"))
    except FrameError:
        raise
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for truncated or corrupt data
        raise FrameError(f"corrupt MJPEG frame ({type(error).__name__}: {str(error)[:80]})") from None


def _need(raw: bytes | memoryview, size: int, fmt: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"a {fmt} frame needs a positive size, got {width}×{height}")
    if len(raw) < size:
        raise FrameError(f"a {width}×{height} {fmt} frame needs {size} bytes, got {len(raw)} (truncated?)")


__all__ = ["Box", "Decoded", "Frame", "FrameError", "Point", "crop", "downscale", "from_grey", "from_mjpeg",
           "from_yuv420", "from_yuyv", "upscale"]
