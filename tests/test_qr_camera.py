"""Cameras (qr.camera) on a machine without one: real byte formats through the real conversion code.

- `V4L2Camera` over `qr.synthetic.SyntheticV4L2Device`: YUYV, MJPEG (with and without Huffman tables) and GREY
  buffers made from generated frames, padded rows included, converted as a webcam's are.
- `V4L2Device` itself against a pretend kernel: its ioctls answered on the real ctypes structures, its buffers
  real mmap'd memory (a file standing in for the driver's), so the request sequence, format negotiation, buffer
  recycling and the unplugged-device error are all exercised; the structures' sizes and request numbers are
  checked against the kernel's published values.
- `Picamera2Camera` with picamera2 absent, and with a pretend picamera2 module that hands out YUV420 arrays laid
  out as picamera2 lays them out (height × 3/2 rows of `stride` bytes).
- `ImageFolderCamera` on PNG and PGM files.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from qr import camera as cam
from qr import synthetic
from qr.camera import (
    CameraLost,
    CameraMissing,
    CaptureFormat,
    ImageFolderCamera,
    Picamera2Camera,
    V4L2Camera,
    V4L2Device,
    fourcc_code,
    fourcc_name,
    make_camera,
    parse_camera,
)
from qr.decode import Strategy, make_decoder
from qr.frames import Frame, FrameError, from_grey, from_mjpeg, from_yuyv

TEXT = "MUSEUM-TAG:demo:t-00000000002a"


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [synthetic.render(TEXT, seed=n, side=180 + 20 * n, angle=15 * n, sigma=6).frame for n in range(3)]


def mean_difference(a: Frame, b: Frame) -> float:
    return sum(abs(x - y) for x, y in zip(a.gray, b.gray, strict=True)) / len(a.gray)


# --- conversions -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fourcc, pad", [("YUYV", 0), ("YUYV", 64), ("GREY", 0), ("GREY", 32), ("MJPG", 0)])
def test_webcam_buffers_become_the_frames_they_were_made_from(frames: list[Frame], fourcc: str, pad: int) -> None:
    device = synthetic.SyntheticV4L2Device(frames, fourcc, stride_pad=pad)
    camera = V4L2Camera("/dev/video-synthetic", device_factory=lambda _path: device)
    camera.open()
    assert camera.format is not None and camera.format.fourcc == fourcc
    strategy = Strategy(make_decoder("zxing"))
    for original in frames:
        frame = camera.read(1.0)
        assert frame is not None and (frame.width, frame.height) == (1280, 720)
        if fourcc == "MJPG":  # lossy, every other one without Huffman tables
            assert mean_difference(frame, original) < 4
        else:
            assert frame == original
        assert any(d.text == TEXT for d in strategy.read(frame))
    assert camera.read(0.01) is None  # nothing more: no frame, no error
    assert camera.bad_frames == 0
    camera.close()
    assert device.closed


def test_a_corrupt_buffer_is_counted_and_skipped(frames: list[Frame]) -> None:
    for fourcc in ("YUYV", "MJPG"):
        device = synthetic.SyntheticV4L2Device(frames, fourcc, corrupt_at=[1])
        camera = V4L2Camera("/dev/video-synthetic", device_factory=lambda _path, d=device: d)
        camera.open()
        assert camera.read(1.0) is not None
        assert camera.read(1.0) is None
        assert camera.bad_frames == 1 and camera.last_bad
        assert camera.read(1.0) is not None


def test_an_unplugged_webcam_is_lost_at_the_known_frame(frames: list[Frame]) -> None:
    device = synthetic.SyntheticV4L2Device(frames, "YUYV", lost_at=2)
    camera = V4L2Camera("/dev/video-synthetic", device_factory=lambda _path: device)
    camera.open()
    assert camera.read(1.0) is not None and camera.read(1.0) is not None
    with pytest.raises(CameraLost, match="went away"):
        camera.read(1.0)
    camera.close()
    with pytest.raises(CameraLost):
        camera.read(1.0)


@pytest.mark.parametrize("convert, raw", [
    (lambda raw: from_yuyv(raw, 4, 2), b"\x00" * 15),
    (lambda raw: from_yuyv(raw, 4, 2, 10), b"\x00" * 17),
    (lambda raw: from_grey(raw, 4, 2), b"\x00" * 7),
    (lambda raw: from_yuyv(raw, 0, 2), b""),
    (from_mjpeg, b"\xff\xd8\xff\xe0 truncated"),
    (from_mjpeg, b"not an image at all"),
    (from_mjpeg, synthetic.to_yuyv(Frame(2, 2, b"abcd"))),
])
def test_bad_buffers_are_frame_errors(convert: Any, raw: bytes) -> None:
    with pytest.raises(FrameError):
        convert(raw)


def test_a_png_is_not_an_mjpeg_frame() -> None:
    import io

    out = io.BytesIO()
    Frame(8, 8, bytes(64)).image().save(out, "PNG")
    with pytest.raises(FrameError, match="must be a JPEG"):
        from_mjpeg(out.getvalue())


# --- the V4L2 interface ----------------------------------------------------------------------------------------

@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="the published values are those of 64-bit Linux")
def test_structures_and_requests_match_the_kernel() -> None:
    # linux/videodev2.h on x86_64 and arm64 (Raspberry Pi OS 64-bit).
    assert ctypes.sizeof(cam._Capability) == 104
    assert ctypes.sizeof(cam._Format) == 208 and cam._Format.fmt.offset == 8
    assert ctypes.sizeof(cam._RequestBuffers) == 20
    assert ctypes.sizeof(cam._Buffer) == 88 and cam._Buffer.m.offset == 64 and cam._Buffer.length.offset == 72
    assert (cam.VIDIOC_QUERYCAP, cam.VIDIOC_S_FMT, cam.VIDIOC_REQBUFS, cam.VIDIOC_QUERYBUF, cam.VIDIOC_QBUF,
            cam.VIDIOC_DQBUF, cam.VIDIOC_STREAMON, cam.VIDIOC_STREAMOFF) == (
        0x80685600, 0xC0D05605, 0xC0145608, 0xC0585609, 0xC058560F, 0xC0585611, 0x40045612, 0x40045613)
    assert fourcc_code("YUYV") == 0x56595559 and fourcc_name(0x47504A4D) == "MJPG"


class PretendKernel(V4L2Device):
    """A V4L2Device whose ioctls a pretend driver answers, on a regular file whose pages stand in for the driver's
    buffers (the device's mmap calls are real). It offers `offered` formats at the frames' size and serves
    `frames` as YUYV, MJPEG or GREY; after `lost_after` buffers it answers ENODEV, as for an unplugged webcam."""

    def __init__(self, path: str, frames: list[Frame], offered: tuple[str, ...] = ("YUYV",),
                 lost_after: int | None = None, capture: bool = True) -> None:
        self.frames, self.offered, self.lost_after, self.capture = frames, offered, lost_after, capture
        self.queued: list[int] = []
        self.requests: list[str] = []
        self.served = 0
        self.format: CaptureFormat | None = None
        self.size = 0
        super().__init__(path)

    def _ioctl(self, request: int, argument: Any) -> None:
        names = {cam.VIDIOC_QUERYCAP: "QUERYCAP", cam.VIDIOC_S_FMT: "S_FMT", cam.VIDIOC_REQBUFS: "REQBUFS",
                 cam.VIDIOC_QUERYBUF: "QUERYBUF", cam.VIDIOC_QBUF: "QBUF", cam.VIDIOC_DQBUF: "DQBUF",
                 cam.VIDIOC_STREAMON: "STREAMON", cam.VIDIOC_STREAMOFF: "STREAMOFF"}
        name = names[request]
        self.requests.append(name)
        frame = self.frames[0]
        if name == "QUERYCAP":
            argument.capabilities = cam._CAP_DEVICE_CAPS | cam._CAP_STREAMING | cam._CAP_VIDEO_CAPTURE
            argument.device_caps = cam._CAP_STREAMING | (cam._CAP_VIDEO_CAPTURE if self.capture else 0)
        elif name == "S_FMT":
            assert argument.type == cam._BUF_TYPE_VIDEO_CAPTURE
            pix = argument.fmt.pix
            asked = fourcc_name(pix.pixelformat)
            got = asked if asked in self.offered else self.offered[0]  # drivers substitute what they have
            per_pixel = {"YUYV": 2, "GREY": 1}.get(got, 0)
            pix.pixelformat, pix.width, pix.height = fourcc_code(got), frame.width, frame.height
            pix.bytesperline = frame.width * per_pixel  # 0 for a compressed format
            pix.sizeimage = pix.bytesperline * frame.height or frame.width * frame.height  # room for a JPEG
            self.size = pix.sizeimage
            self.format = CaptureFormat(got, frame.width, frame.height, pix.bytesperline)
        elif name == "REQBUFS":
            assert argument.memory == cam._MEMORY_MMAP and argument.count == cam.BUFFERS
            argument.count = 3  # drivers may give fewer than asked
        elif name == "QUERYBUF":
            span = -(-self.size // mmap.PAGESIZE) * mmap.PAGESIZE
            argument.length, argument.m.offset = self.size, argument.index * span
            os.ftruncate(self.fd, 3 * span)
        elif name == "QBUF":
            assert argument.index not in self.queued
            self.queued.append(argument.index)
        elif name == "DQBUF":
            if self.lost_after is not None and self.served >= self.lost_after:
                raise OSError(errno.ENODEV, "No such device")
            index = self.queued.pop(0)
            assert self.format is not None
            source = self.frames[self.served % len(self.frames)]
            raw = {"YUYV": synthetic.to_yuyv, "MJPG": synthetic.to_mjpeg, "GREY": synthetic.to_grey}[
                self.format.fourcc](source)
            span = -(-self.size // mmap.PAGESIZE) * mmap.PAGESIZE
            os.pwrite(self.fd, raw, index * span)
            argument.index, argument.bytesused = index, len(raw)
            self.served += 1


@pytest.fixture
def device_file(tmp_path: Path) -> str:
    path = tmp_path / "video0"
    path.write_bytes(b"")
    return str(path)


def test_v4l2_capture_through_mmap_buffers(frames: list[Frame], device_file: str) -> None:
    kernels: list[PretendKernel] = []

    def factory(path: str) -> PretendKernel:
        kernels.append(PretendKernel(path, frames, offered=("YUYV", "MJPG")))
        return kernels[-1]

    camera = V4L2Camera(device_file, device_factory=factory)
    camera.open()
    kernel = kernels[0]
    assert camera.format == CaptureFormat("YUYV", 1280, 720, 2560)
    assert kernel.requests == ["QUERYCAP", "S_FMT", "REQBUFS"] + ["QUERYBUF", "QBUF"] * 3 + ["STREAMON"]
    for n in range(7):  # more frames than buffers: each goes back to the driver once read
        assert camera.read(1.0) == frames[n % len(frames)]
    assert sorted(kernel.queued) == [0, 1, 2]
    camera.close()
    assert kernel.requests[-1] == "STREAMOFF"
    with pytest.raises(OSError):
        os.fstat(kernel.fd)  # closed


def test_v4l2_falls_back_to_mjpeg(frames: list[Frame], device_file: str) -> None:
    kernel = PretendKernel(device_file, frames, offered=("MJPG",))
    camera = V4L2Camera(device_file, device_factory=lambda _path: kernel)
    camera.open()
    assert camera.format is not None and camera.format.fourcc == "MJPG"
    assert kernel.requests[:3] == ["QUERYCAP", "S_FMT", "S_FMT"]  # YUYV asked first, then MJPEG
    for original in frames:
        frame = camera.read(1.0)
        assert frame is not None and mean_difference(frame, original) < 4
    camera.close()


def test_v4l2_unplugged_mid_stream_is_lost(frames: list[Frame], device_file: str) -> None:
    camera = V4L2Camera(device_file, device_factory=lambda path: PretendKernel(path, frames, lost_after=2))
    camera.open()
    assert camera.read(1.0) is not None and camera.read(1.0) is not None
    with pytest.raises(CameraLost, match="No such device"):
        camera.read(1.0)
    camera.close()


def test_v4l2_devices_that_cannot_serve(frames: list[Frame], device_file: str) -> None:
    with pytest.raises(CameraMissing, match=r"offers none of YUYV, MJPG, GREY \(it offers H264"):
        V4L2Camera(device_file, device_factory=lambda p: PretendKernel(p, frames, offered=("H264",))).open()
    with pytest.raises(CameraMissing, match="metadata only: try the first, /dev/video0"):
        PretendKernel(device_file, frames, capture=False)


@pytest.mark.parametrize("path, message", [
    ("/dev/video-none", r"/dev/video-none does not exist: no webcam is connected there .*change \[qr_reader\] camera"),
    ("/dev/null", r"/dev/null is not a Video4Linux2 device; change \[qr_reader\] camera"),
])
def test_a_missing_webcam_is_one_line_naming_the_setting(path: str, message: str) -> None:
    with pytest.raises(CameraMissing, match=message) as caught:
        V4L2Camera(path).open()
    assert "\n" not in str(caught.value)


def test_a_regular_file_is_not_a_webcam(device_file: str) -> None:
    with pytest.raises(CameraMissing, match="is not a Video4Linux2 device"):
        V4L2Device(device_file)


# --- the Raspberry Pi camera -----------------------------------------------------------------------------------

def test_picamera2_absent_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraMissing) as caught:
        Picamera2Camera().open()
    message = str(caught.value)
    assert "python3-picamera2" in message and "--system-site-packages" in message
    assert '[qr_reader] camera = "v4l2:/dev/video0"' in message and "\n" not in message


class YUV420Array:
    """What picamera2's capture_array("main") returns for YUV420, without numpy: (height × 3/2) rows of `stride`
    bytes (luminance rows, then the chroma planes)."""

    def __init__(self, frame: Frame, stride: int) -> None:
        rows = [frame.gray[r * frame.width:(r + 1) * frame.width] + b"\x11" * (stride - frame.width)
                for r in range(frame.height)]
        chroma = b"\x80" * (stride * frame.height // 2)
        self._data = b"".join(rows) + chroma
        self.shape = (frame.height * 3 // 2, stride)

    def tobytes(self) -> bytes:
        return self._data


def pretend_picamera2(frames: list[Frame], cameras: int = 1, fail_after: int | None = None) -> types.ModuleType:
    module = types.ModuleType("picamera2")

    class Picamera2:
        @staticmethod
        def global_camera_info() -> list[dict[str, Any]]:
            return [{"Model": "imx708"}] * cameras

        def __init__(self) -> None:
            self.served = 0
            self.running = False

        def create_video_configuration(self, main: dict[str, Any], buffer_count: int) -> dict[str, Any]:
            assert main["format"] == "YUV420" and buffer_count >= 2
            return {"main": main}

        def configure(self, configuration: dict[str, Any]) -> None:
            self.size = configuration["main"]["size"]

        def start(self) -> None:
            self.running = True

        def capture_array(self, name: str, wait: float | None = None) -> YUV420Array:
            assert name == "main" and self.running
            if fail_after is not None and self.served >= fail_after:
                raise RuntimeError("Camera frontend has timed out!")
            frame = frames[self.served % len(frames)]
            self.served += 1
            return YUV420Array(frame, stride=frame.width + 64)

        def stop(self) -> None:
            self.running = False

        def close(self) -> None:
            pass

    module.Picamera2 = Picamera2  # type: ignore[attr-defined]
    return module


def test_picamera2_frames_are_the_luminance_plane(frames: list[Frame], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", pretend_picamera2(frames, fail_after=2))
    camera = Picamera2Camera(1280, 720)
    camera.open()
    assert camera.read(1.0) == frames[0] and camera.read(1.0) == frames[1]
    with pytest.raises(CameraLost, match="timed out"):
        camera.read(1.0)
    camera.close()


def test_a_pi_without_a_camera_module(frames: list[Frame], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", pretend_picamera2(frames, cameras=0))
    with pytest.raises(CameraMissing, match="no camera module is connected"):
        Picamera2Camera().open()


# --- settings and folders --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("picamera2", ("picamera2", None)),
                                             ("v4l2:/dev/video0", ("v4l2", "/dev/video0"))])
def test_camera_settings(value: str, expected: tuple[str, str | None]) -> None:
    assert parse_camera(value) == expected
    assert isinstance(make_camera(value, 640, 480), Picamera2Camera if expected[0] == "picamera2" else V4L2Camera)


@pytest.mark.parametrize("value", ["webcam", "v4l2:", "v4l2:video0", "/dev/video0", 0, None, "PICAMERA2"])
def test_bad_camera_settings(value: object) -> None:
    with pytest.raises(ValueError, match='must be "picamera2" or "v4l2:/dev/videoN"'):
        parse_camera(value)


def test_a_folder_of_images(frames: list[Frame], tmp_path: Path) -> None:
    frames[0].image().save(tmp_path / "01.png")
    frames[1].image().save(tmp_path / "02.pgm")
    (tmp_path / "03.png").write_bytes(b"not a png")
    frames[2].image().save(tmp_path / "04.PNG")
    (tmp_path / "notes.txt").write_text("ignored")
    camera = ImageFolderCamera(tmp_path, fps=0)
    camera.open()
    got = [camera.read(0.01) for _ in range(5)]
    assert got == [frames[0], frames[1], None, frames[2], None]
    assert camera.bad_frames == 1 and camera.delivered == 3


def test_folders_that_hold_no_images(tmp_path: Path) -> None:
    with pytest.raises(CameraMissing, match="is not a folder of images"):
        ImageFolderCamera(tmp_path / "nowhere").open()
    with pytest.raises(CameraMissing, match="holds no PNG, PGM or JPEG image"):
        ImageFolderCamera(tmp_path).open()
