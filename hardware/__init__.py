"""The site's hardware devices: BLE stations next to the works (device kind `gateway`) and the camera QR reader
at the entrance (kind `qr_reader`). See docs/hardware.md."""
