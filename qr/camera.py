"""Cameras that deliver `Frame`s (the only module that talks to camera libraries and devices).

    camera = "picamera2"            # a Raspberry Pi camera module, through Picamera2 (libcamera)
    camera = "v4l2:/dev/video0"     # a USB webcam (any Video4Linux2 capture device), on any Linux

- `Picamera2Camera`: picamera2 is not on PyPI for this use: it comes with Raspberry Pi OS (apt
  `python3-picamera2`, with libcamera's Python bindings), so the device's virtual environment must be created
  with `python3 -m venv --system-site-packages` to see it. It is imported when the camera opens, never before.
  Frames are asked for in YUV420, whose first plane is the luminance: gray for free.
- `V4L2Camera`: Video4Linux2 through its ioctls and mmap'd buffers (fcntl, mmap, ctypes: no OpenCV, no ffmpeg).
  linuxpy (pure Python, pip) would do it, but it is GPL-3.0-or-later and this project is MIT: shipping it would
  put the whole reader under the GPL. The capture is small enough to own (`V4L2Device`, about 150 lines). It
  asks for YUYV (luminance is every other byte), then MJPEG (decoded to luminance only by Pillow), then GREY.
  `V4L2Camera` takes any object with `V4L2Device`'s methods: the tests give it a fake device that produces real
  YUYV and MJPEG buffers, which go through the same `convert` as a webcam's.
- `ImageFolderCamera`: PNG/PGM/JPEG files of a folder, in name order, for tests and demonstrations.

Errors: `CameraMissing` when a camera cannot be opened (one line naming the setting to change; the reader stops
at start-up with it), `CameraLost` when it fails while running (the reader retries with backoff, forever).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from qr.frames import Frame, FrameError, from_grey, from_mjpeg, from_yuv420, from_yuyv

log = logging.getLogger(__name__)

SETTING = "[qr_reader] camera"
"""How errors name the setting that chooses the camera."""


class CameraError(Exception):
    """A camera problem, in one line."""


class CameraMissing(CameraError):
    """The camera cannot be opened: not there, not a camera, not permitted, its library not installed."""


class CameraLost(CameraError):
    """The camera failed while running (unplugged, driver error): open it again later."""


class Camera(Protocol):
    """A source of frames. `open` raises CameraMissing; `read` returns the next frame, or None when none came
    within `timeout` seconds or one was unusable (counted in `bad_frames`), and raises CameraLost."""

    description: str
    bad_frames: int

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | None: ...

    def close(self) -> None: ...


def parse_camera(value: object) -> tuple[str, str | None]:
    """("picamera2", None) or ("v4l2", "/dev/videoN") from the setting's text; ValueError otherwise."""
    if value == "picamera2":
        return "picamera2", None
    if isinstance(value, str) and value.startswith("v4l2:") and value[5:].startswith("/"):
        return "v4l2", value[5:]
    raise ValueError(f'must be "picamera2" or "v4l2:/dev/videoN" (a webcam\'s device), got {value!r}')


def make_camera(value: str, width: int, height: int) -> Camera:
    kind, path = parse_camera(value)
    if kind == "picamera2":
        return Picamera2Camera(width, height)
    assert path is not None
    return V4L2Camera(path, width, height)


# --- conversion: what every V4L2 source delivers goes through here ------------------------------------------

@dataclass(frozen=True)
class CaptureFormat:
    """What a V4L2 device agreed to send: `fourcc` ("YUYV", "MJPG", "GREY"), size, and bytes per row."""

    fourcc: str
    width: int
    height: int
    stride: int


FOURCCS = ("YUYV", "MJPG", "GREY")
"""In order of preference: YUYV costs one strided copy, MJPEG a JPEG decode (luminance only)."""


def convert(raw: bytes | memoryview, fmt: CaptureFormat) -> Frame:
    """A frame from one buffer of `fmt`; FrameError for a truncated or corrupt one."""
    if fmt.fourcc == "YUYV":
        return from_yuyv(raw, fmt.width, fmt.height, fmt.stride)
    if fmt.fourcc == "MJPG":
        return from_mjpeg(raw)
    if fmt.fourcc == "GREY":
        return from_grey(raw, fmt.width, fmt.height, fmt.stride)
    raise FrameError(f"unsupported pixel format {fmt.fourcc}")


class CaptureDevice(Protocol):
    """A V4L2 capture device (`V4L2Device`, or a test's fake)."""

    def configure(self, width: int, height: int, fourccs: tuple[str, ...]) -> CaptureFormat: ...

    def start(self) -> None: ...

    def dequeue(self, timeout: float) -> bytes | None: ...

    def close(self) -> None: ...


class V4L2Camera:
    def __init__(self, path: str, width: int = 1280, height: int = 720, *, device_factory: Any = None) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.description = f"v4l2:{path}"
        self._factory = device_factory or V4L2Device
        self._device: CaptureDevice | None = None
        self.format: CaptureFormat | None = None
        self.bad_frames = 0
        self.last_bad: str | None = None

    def open(self) -> None:
        device: CaptureDevice = self._factory(self.path)
        try:
            self.format = device.configure(self.width, self.height, FOURCCS)
            device.start()
        except BaseException:
            device.close()
            raise
        self._device = device
        log.info("camera %s: %s %d×%d", self.path, self.format.fourcc, self.format.width, self.format.height)

    def read(self, timeout: float) -> Frame | None:
        if self._device is None or self.format is None:
            raise CameraLost(f"camera {self.path} is not open")
        raw = self._device.dequeue(timeout)
        if raw is None:
            return None
        try:
            return convert(raw, self.format)
        except FrameError as error:
            self.bad_frames += 1
            self.last_bad = str(error)
            return None

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.close()


# --- Video4Linux2, the kernel interface -----------------------------------------------------------------------

def fourcc_code(name: str) -> int:
    a, b, c, d = name.encode("ascii")
    return a | b << 8 | c << 16 | d << 24


def fourcc_name(code: int) -> str:
    return bytes((code >> shift) & 0xFF for shift in (0, 8, 16, 24)).decode("ascii", "replace")


class _Capability(ctypes.Structure):
    _fields_ = [("driver", ctypes.c_uint8 * 16), ("card", ctypes.c_uint8 * 32), ("bus_info", ctypes.c_uint8 * 32),
                ("version", ctypes.c_uint32), ("capabilities", ctypes.c_uint32), ("device_caps", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32 * 3)]


class _PixFormat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "width", "height", "pixelformat", "field", "bytesperline", "sizeimage", "colorspace", "priv", "flags",
        "ycbcr_enc", "quantization", "xfer_func")]


class _FormatUnion(ctypes.Union):
    # The kernel's union also holds struct v4l2_window, which has pointers: a pointer member gives the same
    # alignment (8 bytes on 64-bit), so the union starts where the kernel expects it.
    _fields_ = [("pix", _PixFormat), ("raw_data", ctypes.c_uint8 * 200), ("_align", ctypes.c_void_p)]


class _Format(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("fmt", _FormatUnion)]


class _RequestBuffers(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32), ("type", ctypes.c_uint32), ("memory", ctypes.c_uint32),
                ("capabilities", ctypes.c_uint32), ("flags", ctypes.c_uint8), ("reserved", ctypes.c_uint8 * 3)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timecode(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("frames", ctypes.c_uint8),
                ("seconds", ctypes.c_uint8), ("minutes", ctypes.c_uint8), ("hours", ctypes.c_uint8),
                ("userbits", ctypes.c_uint8 * 4)]


class _BufferM(ctypes.Union):
    _fields_ = [("offset", ctypes.c_uint32), ("userptr", ctypes.c_ulong), ("planes", ctypes.c_void_p),
                ("fd", ctypes.c_int32)]


class _Buffer(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("type", ctypes.c_uint32), ("bytesused", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("field", ctypes.c_uint32), ("timestamp", _Timeval),
                ("timecode", _Timecode), ("sequence", ctypes.c_uint32), ("memory", ctypes.c_uint32),
                ("m", _BufferM), ("length", ctypes.c_uint32), ("reserved2", ctypes.c_uint32),
                ("request_fd", ctypes.c_int32)]


def _ioc(direction: int, number: int, size: int) -> int:
    """The request number of ioctl `number` of type 'V' (asm-generic: 2 bits of direction, 14 of size)."""
    return direction << 30 | size << 16 | ord("V") << 8 | number


_READ, _WRITE = 2, 1
VIDIOC_QUERYCAP = _ioc(_READ, 0, ctypes.sizeof(_Capability))
VIDIOC_S_FMT = _ioc(_READ | _WRITE, 5, ctypes.sizeof(_Format))
VIDIOC_REQBUFS = _ioc(_READ | _WRITE, 8, ctypes.sizeof(_RequestBuffers))
VIDIOC_QUERYBUF = _ioc(_READ | _WRITE, 9, ctypes.sizeof(_Buffer))
VIDIOC_QBUF = _ioc(_READ | _WRITE, 15, ctypes.sizeof(_Buffer))
VIDIOC_DQBUF = _ioc(_READ | _WRITE, 17, ctypes.sizeof(_Buffer))
VIDIOC_STREAMON = _ioc(_WRITE, 18, ctypes.sizeof(ctypes.c_int))
VIDIOC_STREAMOFF = _ioc(_WRITE, 19, ctypes.sizeof(ctypes.c_int))

_BUF_TYPE_VIDEO_CAPTURE = 1
_MEMORY_MMAP = 1
_FIELD_ANY = 0
_CAP_VIDEO_CAPTURE = 0x00000001
_CAP_STREAMING = 0x04000000
_CAP_DEVICE_CAPS = 0x80000000
_BUF_FLAG_ERROR = 0x00000040
BUFFERS = 4
"""Kernel buffers: enough that the driver always has one to fill while we convert the last."""


class V4L2Device:
    """One V4L2 capture device, streaming into mmap'd kernel buffers."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except FileNotFoundError:
            raise CameraMissing(f"{path} does not exist: no webcam is connected there (see `ls /dev/video*`); "
                                f"connect one or change {SETTING}") from None
        except PermissionError:
            raise CameraMissing(f"{path}: permission denied; add this user to the video group "
                                f"(sudo usermod -aG video $USER) or change {SETTING}") from None
        except OSError as error:
            raise CameraMissing(f"{path} cannot be opened ({error.strerror}); check the webcam or change "
                                f"{SETTING}") from None
        self._buffers: list[mmap.mmap] = []
        self._streaming = False
        try:
            self._check_capture()
        except BaseException:
            os.close(self.fd)
            raise

    def _ioctl(self, request: int, argument: Any) -> None:
        fcntl.ioctl(self.fd, request, argument, True)

    def _check_capture(self) -> None:
        cap = _Capability()
        try:
            self._ioctl(VIDIOC_QUERYCAP, cap)
        except OSError:
            raise CameraMissing(f"{self.path} is not a Video4Linux2 device; change {SETTING} to a webcam's "
                                "/dev/videoN") from None
        caps = cap.device_caps if cap.capabilities & _CAP_DEVICE_CAPS else cap.capabilities
        if not caps & _CAP_VIDEO_CAPTURE:
            raise CameraMissing(f"{self.path} does not capture video (a webcam's second node is often metadata "
                                f"only: try the first, /dev/video0); change {SETTING}")
        if not caps & _CAP_STREAMING:
            raise CameraMissing(f"{self.path} cannot stream (no mmap buffers); change {SETTING}")

    def configure(self, width: int, height: int, fourccs: tuple[str, ...]) -> CaptureFormat:
        offered = []
        for name in fourccs:
            fmt = _Format()
            fmt.type = _BUF_TYPE_VIDEO_CAPTURE
            fmt.fmt.pix.width, fmt.fmt.pix.height = width, height
            fmt.fmt.pix.pixelformat = fourcc_code(name)
            fmt.fmt.pix.field = _FIELD_ANY
            try:
                self._ioctl(VIDIOC_S_FMT, fmt)
            except OSError as error:
                raise _lost_or_missing(self.path, error) from None
            got = fourcc_name(fmt.fmt.pix.pixelformat)
            if got == name:
                pix = fmt.fmt.pix
                return CaptureFormat(name, pix.width, pix.height, pix.bytesperline)
            offered.append(got)
        raise CameraMissing(f"{self.path} offers none of {', '.join(fourccs)} (it offers {', '.join(offered)}); "
                            f"use another webcam or change {SETTING}")

    def start(self) -> None:
        request = _RequestBuffers(count=BUFFERS, type=_BUF_TYPE_VIDEO_CAPTURE, memory=_MEMORY_MMAP)
        try:
            self._ioctl(VIDIOC_REQBUFS, request)
            for index in range(request.count):
                buffer = _Buffer(index=index, type=_BUF_TYPE_VIDEO_CAPTURE, memory=_MEMORY_MMAP)
                self._ioctl(VIDIOC_QUERYBUF, buffer)
                self._buffers.append(mmap.mmap(self.fd, buffer.length, mmap.MAP_SHARED,
                                               mmap.PROT_READ | mmap.PROT_WRITE, offset=buffer.m.offset))
                self._ioctl(VIDIOC_QBUF, buffer)
            self._ioctl(VIDIOC_STREAMON, ctypes.c_int(_BUF_TYPE_VIDEO_CAPTURE))
        except OSError as error:
            raise _lost_or_missing(self.path, error) from None
        if not self._buffers:
            raise CameraMissing(f"{self.path} gave no capture buffers; change {SETTING}")
        self._streaming = True

    def dequeue(self, timeout: float) -> bytes | None:
        """The next frame's bytes (a copy: the kernel buffer goes straight back to the driver), or None."""
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)  # an unplugged device reads as ready
            if not ready:
                return None
            buffer = _Buffer(type=_BUF_TYPE_VIDEO_CAPTURE, memory=_MEMORY_MMAP)
            try:
                self._ioctl(VIDIOC_DQBUF, buffer)
            except BlockingIOError:
                return None
            try:
                if buffer.flags & _BUF_FLAG_ERROR:
                    return None
                return bytes(memoryview(self._buffers[buffer.index])[:buffer.bytesused])
            finally:
                self._ioctl(VIDIOC_QBUF, buffer)
        except InterruptedError:
            return None
        except (OSError, ValueError) as error:  # ValueError: select on a descriptor the kernel closed
            raise CameraLost(f"camera {self.path} failed: {error}") from None

    def close(self) -> None:
        if self._streaming:
            with contextlib.suppress(OSError):  # unplugged: the kernel has stopped it already
                self._ioctl(VIDIOC_STREAMOFF, ctypes.c_int(_BUF_TYPE_VIDEO_CAPTURE))
            self._streaming = False
        for buffer in self._buffers:
            buffer.close()
        self._buffers.clear()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _lost_or_missing(path: str, error: OSError) -> CameraError:
    if error.errno in (errno.ENODEV, errno.EIO, errno.ENXIO):
        return CameraLost(f"camera {path} went away: {error.strerror}")
    if error.errno == errno.EBUSY:
        return CameraLost(f"camera {path} is busy (another program uses it?)")
    return CameraMissing(f"{path} refused the capture settings ({error.strerror}); change {SETTING}")


# --- the Raspberry Pi camera ----------------------------------------------------------------------------------

class Picamera2Camera:
    def __init__(self, width: int = 1280, height: int = 720) -> None:
        self.width = width
        self.height = height
        self.description = "picamera2"
        self.bad_frames = 0
        self._camera: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]  # Raspberry Pi OS only
        except ImportError:
            raise CameraMissing("picamera2 is not installed: on Raspberry Pi OS, `sudo apt install python3-picamera2` "
                                "and create the virtual environment with --system-site-packages; elsewhere "
                                f'set {SETTING} = "v4l2:/dev/video0"') from None
        try:
            if not Picamera2.global_camera_info():
                raise CameraMissing(f"no camera module is connected to this Raspberry Pi; connect one (and check "
                                    f'its ribbon cable) or set {SETTING} = "v4l2:/dev/video0"')
            camera = Picamera2()
            configuration = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "YUV420"}, buffer_count=4)
            camera.configure(configuration)
            camera.start()
        except CameraError:
            raise
        except Exception as error:  # libcamera's errors have no common type
            raise CameraLost(f"the Raspberry Pi camera did not start ({type(error).__name__}: "
                             f"{str(error)[:120]})") from None
        self._camera = camera

    def read(self, timeout: float) -> Frame | None:
        if self._camera is None:
            raise CameraLost("the Raspberry Pi camera is not open")
        try:
            array = self._camera.capture_array("main", wait=timeout)
        except TimeoutError:
            return None
        except Exception as error:
            raise CameraLost(f"the Raspberry Pi camera failed ({type(error).__name__}: {str(error)[:120]})") from None
        try:
            # YUV420 comes as (height × 3/2) rows of `stride` bytes: the luminance plane is the first `height`.
            return from_yuv420(array.tobytes(), self.width, self.height, int(array.shape[1]))
        except FrameError:
            self.bad_frames += 1
            return None

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
                camera.close()
            except Exception:  # closing a failed camera must not fail
                log.debug("closing the Raspberry Pi camera failed", exc_info=True)


# --- images from a folder -------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".pgm", ".pnm", ".jpg", ".jpeg")


class ImageFolderCamera:
    """The images of `folder` (PNG, PGM, JPEG), in name order, one per `1/fps` seconds; then nothing."""

    def __init__(self, folder: Path, fps: float = 10.0, *, loop: bool = False) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.loop = loop
        self.description = f"images from {self.folder}"
        self.bad_frames = 0
        self.delivered = 0
        self._files: Iterator[Path] = iter(())
        self._next_at = 0.0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise CameraMissing(f"{self.folder} is not a folder of images; give one holding PNG or PGM files")
        files = self._list()
        if not files:
            raise CameraMissing(f"{self.folder} holds no PNG, PGM or JPEG image")
        self._files = iter(files)

    def _list(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def read(self, timeout: float) -> Frame | None:
        wait = self._next_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            if wait > timeout:
                return None
        path = next(self._files, None)
        if path is None and self.loop:
            self._files = iter(self._list())
            path = next(self._files, None)
        if path is None:
            time.sleep(timeout)  # nothing more to show: behave like a camera that sees nothing
            return None
        self._next_at = time.monotonic() + (1.0 / self.fps if self.fps > 0 else 0.0)
        try:
            with Image.open(path) as image:
                frame = Frame.from_image(image)
        except FileNotFoundError:
            raise CameraLost(f"{path} disappeared") from None
        except (OSError, ValueError, SyntaxError) as error:
            self.bad_frames += 1
            log.warning("skipping %s: not an image Pillow reads (%s)", path.name, str(error)[:80])
            return None
        self.delivered += 1
        return frame

    def close(self) -> None:
        self._files = iter(())


__all__ = ["FOURCCS", "SETTING", "Camera", "CameraError", "CameraLost", "CameraMissing", "CaptureDevice",
           "CaptureFormat", "ImageFolderCamera", "Picamera2Camera", "V4L2Camera", "V4L2Device", "convert",
           "fourcc_code", "fourcc_name", "make_camera", "parse_camera"]
