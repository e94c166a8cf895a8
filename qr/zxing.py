"""zxing-cpp, the default QR decoder (the only module that imports zxingcpp).

Only QR Code model 2 (what every QR generator makes) is searched for: each other format would cost time on every
frame and could only ever be a foreign code here.
"""

from __future__ import annotations

import zxingcpp

from qr.frames import Decoded, Frame

_FORMATS = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCodeModel2)


class ZxingDecoder:
    """`decode(frame)` never raises: a decoder failure is counted in `errors` and reads as "no code"."""

    name = "zxing"

    def __init__(self, *, try_downscale: bool = False, try_invert: bool = False) -> None:
        # The strategy (qr.decode) does its own downscaling, cheaper and with a known order; zxing's internal one
        # would repeat it on every frame. Light-on-dark codes are rare on paper and phones and cost a second pass.
        self.try_downscale = try_downscale
        self.try_invert = try_invert
        self.errors = 0
        self.last_error: str | None = None

    def decode(self, frame: Frame) -> list[Decoded]:
        try:
            view = memoryview(frame.gray).cast("B", (frame.height, frame.width))
            results = zxingcpp.read_barcodes(view, formats=_FORMATS, try_rotate=False,
                                             try_downscale=self.try_downscale, try_invert=self.try_invert)
            found = []
            for result in results:
                if not result.valid:
                    continue
                p = result.position
                corners = tuple((int(point.x), int(point.y))
                                for point in (p.top_left, p.top_right, p.bottom_right, p.bottom_left))
                found.append(Decoded(str(result.text), corners))
            return found
        except Exception as error:  # any failure of the native decoder is "nothing read", counted
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {str(error)[:80]}"
            return []


__all__ = ["ZxingDecoder"]
