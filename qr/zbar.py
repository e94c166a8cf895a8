"""ZBar through pyzbar, the alternative QR decoder (the only module that imports pyzbar; it needs the system
library, apt `libzbar0`)."""

from __future__ import annotations

from pyzbar import pyzbar  # type: ignore[import-untyped]  # no type information

from qr.frames import Decoded, Frame

_SYMBOLS = [pyzbar.ZBarSymbol.QRCODE]


class ZbarDecoder:
    """`decode(frame)` never raises: a decoder failure is counted in `errors` and reads as "no code"."""

    name = "zbar"

    def __init__(self) -> None:
        self.errors = 0
        self.last_error: str | None = None

    def decode(self, frame: Frame) -> list[Decoded]:
        try:
            results = pyzbar.decode((frame.gray, frame.width, frame.height), symbols=_SYMBOLS)
            found = []
            for result in results:
                if result.type != "QRCODE":
                    continue
                text = result.data.decode("utf-8", errors="replace")
                found.append(Decoded(text, tuple((int(p.x), int(p.y)) for p in result.polygon)))
            return found
        except Exception as error:  # any failure of the native decoder is "nothing read", counted
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {str(error)[:80]}"
            return []


__all__ = ["ZbarDecoder"]
