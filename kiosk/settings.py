"""A kiosk's own settings: the `[kiosk]` table of the device's configuration file (`museum device enroll`).

    [kiosk]
    home_room = "impressionnisme"                  # the room shown first; default: the pack's first room
    companion_base_url = "https://visit.example.org"   # take-home links are {companion_base_url}/v/{token}
    idle_timeout_s = 90                            # seconds without a touch before "Are you still there?"
    countdown_s = 10                               # how long that question waits before the visit ends
    default_language = "fr"                        # the language each visit starts in (if the pack has it)
    state_dir = "kiosk-state"                      # relative to the configuration file's folder
    packs_dir = "kiosk-state/packs"                # default: state_dir/packs
    fullscreen = true                              # false only for development on a desktop
    camera = "none"                                # "picamera2" or "v4l2:/dev/video0": read visitors' QR codes
    qr_decoder = "zxing"                           # "zxing" or "zbar" (qr.decode.DECODERS)

Every value is checked when the kiosk starts: a mistake is one line naming the file, the setting and the fix,
not a kiosk that misbehaves in a gallery weeks later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bus.config import ClientConfig, number_setting, settings_table
from protocol.fields import IDENTIFIER, LANGUAGE

IDLE_TIMEOUT_RANGE = (15.0, 3600.0)
"""Below 15 s a visitor reading a text is interrupted; above an hour the next visitor finds someone else's visit."""
COUNTDOWN_RANGE = (3.0, 120.0)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_KEYS = ("home_room", "companion_base_url", "idle_timeout_s", "countdown_s", "default_language", "state_dir",
         "packs_dir", "fullscreen", "camera", "qr_decoder")
NO_CAMERA = "none"
CAMERA_HELP = 'set camera to "none", "picamera2" (a Raspberry Pi camera) or "v4l2:/dev/video0" (a USB camera)'



@dataclass(frozen=True)
class KioskSettings:
    config_path: Path
    """The file these came from, named in every error about them."""
    state_dir: Path
    packs_dir: Path
    home_room: str | None = None
    companion_base_url: str = "https://visit.example.org"
    idle_timeout_s: float = 90.0
    countdown_s: float = 10.0
    default_language: str = "fr"
    fullscreen: bool = True
    camera: str = NO_CAMERA
    """"none" (no QR reading: no scanner thread, no decoder imported), "picamera2" or "v4l2:<device path>"."""
    qr_decoder: str | None = None
    """The QR decoder (qr.decode.DECODERS); None only with no camera and no decoder named (qr.decode, and Pillow
    with it, are then never imported)."""

    @classmethod
    def from_config(cls, config: ClientConfig, config_path: Path) -> KioskSettings:
        """The `[kiosk]` table of `config` (read from `config_path`); ValueError, one line, for a bad value."""
        config_path = Path(config_path)
        raw = settings_table(config, config_path, "kiosk", _KEYS)
        where = f"{config_path}: [kiosk]"
        here = config_path.parent.resolve()

        def folder(name: str, default: Path) -> Path:
            value = raw.get(name)
            if value is None:
                return default
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where} {name} must be a folder path, got {value!r}; correct the setting")
            path = Path(value).expanduser()
            return path if path.is_absolute() else here / path

        state_dir = folder("state_dir", here / "kiosk-state")
        packs_dir = folder("packs_dir", state_dir / "packs")

        home_room = raw.get("home_room")
        if home_room is not None and (not isinstance(home_room, str) or IDENTIFIER.match(home_room) is None):
            raise ValueError(f"{where} home_room must be a room's zone_id (lowercase letters, digits and '-'), got "
                             f"{home_room!r}; correct it or remove it to start in the pack's first room")

        url = raw.get("companion_base_url", cls.companion_base_url)
        problem = _url_problem(url)
        if problem:
            raise ValueError(f"{where} companion_base_url {problem}, got {url!r}; set it to the companion "
                             "service's address, like https://visit.example.org")

        idle = number_setting(raw, "idle_timeout_s", cls.idle_timeout_s, IDLE_TIMEOUT_RANGE, where)
        countdown = number_setting(raw, "countdown_s", cls.countdown_s, COUNTDOWN_RANGE, where)

        language = raw.get("default_language", cls.default_language)
        if not isinstance(language, str) or LANGUAGE.match(language) is None:
            raise ValueError(f"{where} default_language must be a language code like \"fr\" or \"en\", got "
                             f"{language!r}; correct the setting")

        fullscreen = raw.get("fullscreen", cls.fullscreen)
        if not isinstance(fullscreen, bool):
            raise ValueError(f"{where} fullscreen must be true or false, got {fullscreen!r}; correct the setting")

        camera = raw.get("camera", cls.camera)
        problem = _camera_problem(camera)
        if problem:
            raise ValueError(f"{where} camera {problem}, got {camera!r}; {CAMERA_HELP}")

        decoder = raw.get("qr_decoder")
        if camera != NO_CAMERA or decoder is not None:
            from qr.decode import DECODERS, DEFAULT_DECODER  # no decoder library: those load when the scanner starts

            decoder = DEFAULT_DECODER if decoder is None else decoder
            if decoder not in DECODERS:
                raise ValueError(f"{where} qr_decoder must be one of {', '.join(DECODERS)}, got {decoder!r}; "
                                 f"correct the setting or remove it to use {DEFAULT_DECODER}")

        return cls(config_path=config_path, state_dir=state_dir, packs_dir=packs_dir, home_room=home_room,
                   companion_base_url=url.rstrip("/"), idle_timeout_s=idle, countdown_s=countdown,
                   default_language=language, fullscreen=fullscreen, camera=camera, qr_decoder=decoder)


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return "must be text"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.query or parts.fragment:
        return "must have no ?query or #fragment"
    if url != url.strip():
        return "must have no surrounding spaces"
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        # The URL carries the visit's capability: in clear, anyone on the visitor's network could read it.
        return "must use https:// (plain http:// is only allowed for localhost, in development)"
    return None


def _camera_problem(camera: Any) -> str | None:
    if not isinstance(camera, str):
        return "must be text"
    if camera in (NO_CAMERA, "picamera2"):
        return None
    kind, _, device = camera.partition(":")
    if kind != "v4l2":
        return "is not a camera this kiosk knows"
    if not device.startswith("/") or device != device.strip() or len(device) < 2:
        return "must name the device file after v4l2:, like v4l2:/dev/video0"
    # Whether the device exists is not checked here: a camera plugged in later is picked up by the scanner.
    return None


__all__ = ["COUNTDOWN_RANGE", "IDLE_TIMEOUT_RANGE", "NO_CAMERA", "KioskSettings"]
