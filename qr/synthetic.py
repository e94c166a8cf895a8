"""Synthetic camera frames for the tests and the benchmark: QR codes as an entrance camera sees them.

The hard set: 1280×720 luminance scenes (shapes, stripes and checker patches on a textured background, uneven
light) each holding one QR code 90–320 px wide (quiet zone included), rotated 0–90°, placed anywhere, some
blurred, with Gaussian noise of σ 0–30 over the whole frame. Payloads: visit URLs, tag QRs and foreign texts.
Everything is deterministic for a seed: only `random.Random(seed)` draws, and Pillow does the pixel work (its own
noise generator cannot be seeded, so noise is built from seeded random bytes).

Codes are drawn by segno (imported here only within qr/), an encoder independent of both decoders under test.
"""

from __future__ import annotations

import base64
import io
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import segno
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from qr.camera import CameraLost, CaptureFormat
from qr.frames import Frame

WIDTH, HEIGHT = 1280, 720
HARD_SET_SIZE = 160
SIDE_RANGE = (90, 320)
ANGLE_RANGE = (0.0, 90.0)
SIGMA_RANGE = (0.0, 30.0)
BLUR_SHARE = 0.4
"""The share of frames blurred (a code held still but out of focus, or moving)."""
BASE_URL = "https://visit.example.org"
SITE_ID = "demo"

Kind = Literal["visit", "tag", "foreign"]

_FOREIGN = ("https://www.example.com/expo/{n}?utm_source=poster", "WIFI:S:Museum-Guest;T:WPA;P:{n};;",
            "BEGIN:VCARD\nVERSION:3.0\nN:Doe;Jane\nTEL:+33 1 {n}\nEND:VCARD", "Ticket #{n} - Adult - valid today",
            "https://visit.example.org/artworks/{n}", "MUSEUM-TAG:other-site:t-{n:012x}", "http://{n}.example.net/")


@dataclass(frozen=True)
class Sample:
    """A synthetic frame and what it holds."""

    frame: Frame
    text: str
    kind: Kind
    side_px: int
    angle: float
    sigma: float
    blur: float
    center: tuple[int, int]


def visit_token(rng: random.Random) -> str:
    """A take-home token like protocol.ids.new_visit_id's (22 base64url characters), from `rng`."""
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode("ascii")


def tag_id(rng: random.Random) -> str:
    return "t-" + rng.randbytes(6).hex()


def visit_url(token: str, base: str = BASE_URL) -> str:
    return f"{base}/v/{token}"


def tag_text(tag: str, site_id: str = SITE_ID) -> str:
    return f"MUSEUM-TAG:{site_id}:{tag}"


def payload(rng: random.Random, kind: Kind | None = None) -> tuple[Kind, str]:
    """A text to encode: a visit URL (45 %), a tag QR (35 %) or a foreign text (20 %) unless `kind` is given."""
    if kind is None:
        draw = rng.random()
        kind = "visit" if draw < 0.45 else "tag" if draw < 0.8 else "foreign"
    if kind == "visit":
        return kind, visit_url(visit_token(rng))
    if kind == "tag":
        return kind, tag_text(tag_id(rng))
    return kind, rng.choice(_FOREIGN).format(n=rng.randrange(1, 10**9))


def code_image(text: str, side: int, *, dark: int = 30, light: int = 220) -> Image.Image:
    """The QR code of `text`, quiet zone included, `side` pixels wide, area-sampled (as a sensor's pixels
    average the light over them), modules `dark` on `light`. Error correction M, as the kiosk draws its codes."""
    code = segno.make(text, error="m", boost_error=False, micro=False)
    rows = [bytes(0 if module else 255 for module in row) for row in code.matrix_iter(scale=1, border=4)]
    modules = Image.frombytes("L", (len(rows), len(rows)), b"".join(rows))
    big = modules.resize((len(rows) * 8, len(rows) * 8), Image.Resampling.NEAREST)
    sampled = big.resize((side, side), Image.Resampling.BOX)
    return sampled.point([dark + (light - dark) * value // 255 for value in range(256)])


def scene(rng: random.Random, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """A cluttered background: shapes, text-like stripes, checker patches (finder-pattern look-alikes for a
    detector) and a light gradient."""
    image = Image.new("L", (width, height), rng.randrange(70, 190))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(40, 80)):
        x, y = rng.randrange(-100, width), rng.randrange(-100, height)
        w, h = rng.randrange(10, 300), rng.randrange(10, 200)
        shade = rng.randrange(0, 256)
        shape = rng.random()
        if shape < 0.4:
            draw.rectangle((x, y, x + w, y + h), fill=shade)
        elif shape < 0.7:
            draw.ellipse((x, y, x + w, y + h), fill=shade)
        elif shape < 0.9:
            draw.line((x, y, x + w, y + h), fill=shade, width=rng.randrange(1, 8))
        else:  # a line of "text": short dark bars
            for k in range(rng.randrange(5, 30)):
                bar = rng.randrange(3, 9)
                draw.rectangle((x + k * 10, y, x + k * 10 + bar, y + 12), fill=rng.randrange(0, 80))
    for _ in range(rng.randrange(2, 6)):
        x, y, cell = rng.randrange(0, width - 80), rng.randrange(0, height - 80), rng.randrange(3, 10)
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    draw.rectangle((x + i * cell, y + j * cell, x + (i + 1) * cell - 1, y + (j + 1) * cell - 1),
                                   fill=20)
    return image


def _lighting(rng: random.Random, image: Image.Image) -> Image.Image:
    """Uneven light: the frame multiplied by a gradient from `low` to full, in a random direction."""
    low = rng.randrange(140, 230)
    gradient = Image.linear_gradient("L").rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR, expand=False,
                                                  fillcolor=255).resize(image.size, Image.Resampling.BILINEAR)
    gradient = gradient.point([low + (255 - low) * value // 255 for value in range(256)])
    return ImageChops.multiply(image, gradient)


def _noise(rng: random.Random, image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian-like noise of standard deviation `sigma` added to `image`: the mean of four uniform random byte
    images is nearly normal (σ ≈ 36.9 around 127.5), then scaled to `sigma` by a lookup table."""
    if sigma <= 0:
        return image
    size = image.size
    count = size[0] * size[1]
    planes = [Image.frombytes("L", size, rng.randbytes(count)) for _ in range(4)]
    mean = ImageChops.add(ImageChops.add(planes[0], planes[1], scale=2.0),
                          ImageChops.add(planes[2], planes[3], scale=2.0), scale=2.0)
    factor = sigma / 36.95
    scaled = mean.point([max(0, min(255, round(128 + (value - 127.5) * factor))) for value in range(256)])
    return ImageChops.add(image, scaled, scale=1.0, offset=-128)


def render(text: str, *, seed: int, side: int, angle: float, sigma: float, blur: float = 0.0,
           center: tuple[int, int] | None = None, width: int = WIDTH, height: int = HEIGHT,
           kind: Kind = "foreign") -> Sample:
    """One frame holding the code of `text` as described; `center` None: a random place where it fits."""
    rng = random.Random(seed)
    image = scene(rng, width, height)
    dark, light = rng.randrange(5, 70), rng.randrange(170, 250)
    code = code_image(text, side, dark=dark, light=light)
    rotated = code.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    mask = Image.new("L", code.size, 255).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    if center is None:
        half_w, half_h = rotated.width // 2 + 1, rotated.height // 2 + 1
        center = (rng.randrange(half_w, max(half_w + 1, width - half_w)),
                  rng.randrange(half_h, max(half_h + 1, height - half_h)))
    image.paste(rotated, (center[0] - rotated.width // 2, center[1] - rotated.height // 2), mask)
    image = _lighting(rng, image)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    image = _noise(rng, image, sigma)
    return Sample(Frame.from_image(image), text, kind, side, angle, sigma, blur, center)


def empty_frame(seed: int, width: int = WIDTH, height: int = HEIGHT, sigma: float = 10.0) -> Frame:
    """A scene with no code in it."""
    rng = random.Random(seed)
    return Frame.from_image(_noise(rng, _lighting(rng, scene(rng, width, height)), sigma))


def sample(seed: int, kind: Kind | None = None, *, width: int = WIDTH, height: int = HEIGHT) -> Sample:
    """One frame of the hard set's distribution, for `seed`."""
    rng = random.Random(seed)
    kind, text = payload(rng, kind)
    side = rng.randrange(SIDE_RANGE[0], SIDE_RANGE[1] + 1)
    angle = rng.uniform(*ANGLE_RANGE)
    sigma = rng.uniform(*SIGMA_RANGE)
    # Blur in proportion to the module: a radius past about a third of a module smears modules together, and no
    # decoder (nor a phone) reads that; a camera in focus at the reading distance never produces it.
    module_px = side / modules_across(text)
    blur = rng.uniform(0.3, 0.35 * module_px) if rng.random() < BLUR_SHARE else 0.0
    return render(text, seed=rng.randrange(2**32), side=side, angle=angle, sigma=sigma, blur=blur, width=width,
                  height=height, kind=kind)


def hard_set(count: int = HARD_SET_SIZE, seed: int = 0) -> list[Sample]:
    """The hard frame set: `count` samples, the same for the same `seed`."""
    return [sample(seed * 1_000_003 + index) for index in range(count)]


def modules_across(text: str) -> int:
    """Modules across the code of `text`, quiet zone included (how fine a given side makes them)."""
    return int(segno.make(text, error="m", boost_error=False, micro=False).symbol_size(scale=1, border=4)[0])


def rotated_side(side: int, angle: float) -> int:
    """The width of the bounding box of a `side`-pixel square rotated by `angle` degrees."""
    radians = math.radians(angle)
    return math.ceil(side * (abs(math.cos(radians)) + abs(math.sin(radians))))


# --- what a webcam would send -------------------------------------------------------------------------------

def to_yuyv(frame: Frame, stride: int | None = None) -> bytes:
    """The frame as V4L2 YUYV (Y0 U Y1 V), chroma neutral, rows `stride` bytes apart (padding bytes 0)."""
    row = 2 * frame.width
    packed = bytearray(row * frame.height)
    packed[0::2] = frame.gray
    packed[1::2] = b"\x80" * (frame.width * frame.height)
    stride = stride or row
    if stride == row:
        return bytes(packed)
    pad = bytes(stride - row)
    return b"".join(bytes(packed[r * row:(r + 1) * row]) + pad for r in range(frame.height))


def to_mjpeg(frame: Frame, quality: int = 85, *, strip_huffman: bool = False) -> bytes:
    """The frame as one Motion-JPEG frame: colour JPEG, 4:2:2 chroma, as UVC webcams send; `strip_huffman`
    leaves the Huffman tables out, as many of them do."""
    out = io.BytesIO()
    frame.image().convert("RGB").save(out, "JPEG", quality=quality, subsampling=1)
    data = out.getvalue()
    if not strip_huffman:
        return data
    kept, index = bytearray(data[:2]), 2
    while index < len(data):
        marker = data[index + 1]
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            kept += data[index:]
            break
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if marker != 0xC4:  # DHT
            kept += data[index:index + 2 + length]
        index += 2 + length
    return bytes(kept)


class SyntheticV4L2Device:
    """Stands in for qr.camera.V4L2Device where there is no webcam: it sends `frames` (then, with `repeat`,
    sends them again) as real `fourcc` buffers ("YUYV", "MJPG" or "GREY"), which qr.camera.V4L2Camera converts
    with the same code as a webcam's. `lost_at`: the number of buffers after which it fails as an unplugged
    webcam does (CameraLost); `corrupt_at`: buffer numbers sent truncated."""

    def __init__(self, frames: Sequence[Frame], fourcc: str = "YUYV", *, repeat: bool = False,
                 lost_at: int | None = None, corrupt_at: Sequence[int] = (), stride_pad: int = 0,
                 on_buffer: Callable[[int], None] | None = None) -> None:
        if not frames:
            raise ValueError("a synthetic device needs frames")
        self.frames = list(frames)
        self.fourcc = fourcc
        self.repeat = repeat
        self.lost_at = lost_at
        self.corrupt_at = set(corrupt_at)
        self.stride_pad = stride_pad
        self.on_buffer = on_buffer
        self.sent = 0
        self.started = False
        self.closed = False

    def configure(self, width: int, height: int, fourccs: tuple[str, ...]) -> CaptureFormat:
        first = self.frames[0]
        if self.fourcc not in fourccs:
            raise ValueError(f"{self.fourcc} not asked for")
        per_pixel = {"YUYV": 2, "GREY": 1}.get(self.fourcc, 0)
        stride = first.width * per_pixel + (self.stride_pad if per_pixel else 0)
        return CaptureFormat(self.fourcc, first.width, first.height, stride)

    def start(self) -> None:
        self.started = True

    def dequeue(self, timeout: float) -> bytes | None:
        if self.lost_at is not None and self.sent >= self.lost_at:
            raise CameraLost("camera /dev/video-synthetic went away: No such device")
        if self.sent >= len(self.frames) and not self.repeat:
            time.sleep(timeout)  # as a webcam seeing nothing new: the caller's loop must not spin
            return None
        frame = self.frames[self.sent % len(self.frames)]
        number = self.sent
        self.sent += 1
        if self.fourcc == "YUYV":
            raw = to_yuyv(frame, 2 * frame.width + self.stride_pad)
        elif self.fourcc == "MJPG":
            raw = to_mjpeg(frame, strip_huffman=number % 2 == 1)
        else:
            raw = to_grey(frame, frame.width + self.stride_pad)
        if number in self.corrupt_at:
            raw = raw[:len(raw) // 3]
        if self.on_buffer is not None:
            self.on_buffer(number)
        return raw

    def close(self) -> None:
        self.closed = True


def to_grey(frame: Frame, stride: int | None = None) -> bytes:
    stride = stride or frame.width
    if stride == frame.width:
        return frame.gray
    pad = bytes(stride - frame.width)
    return b"".join(frame.gray[r * frame.width:(r + 1) * frame.width] + pad for r in range(frame.height))


__all__ = ["BASE_URL", "HARD_SET_SIZE", "HEIGHT", "SITE_ID", "WIDTH", "Sample", "SyntheticV4L2Device", "code_image",
           "empty_frame", "hard_set", "modules_across", "payload", "render", "rotated_side", "sample", "scene",
           "tag_id", "tag_text", "to_grey", "to_mjpeg", "to_yuyv", "visit_token", "visit_url"]
