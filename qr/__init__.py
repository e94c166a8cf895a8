"""Reading QR codes from a camera: frames, decoders, the multi-scale strategy, what a code means, and the
synthetic frames the tests and the benchmark use.

A shared library: the entrance reader (hardware.qr_station) uses it now, the kiosk later. It imports nothing of
kiosk, broker or hardware. Each third-party I/O library is imported in one module only: pyzbar in qr.zbar,
zxing-cpp in qr.zxing, the camera libraries in qr.camera (segno, to draw test codes, in qr.synthetic).
"""
