"""What a media file may be: its extension and first bytes per kind, and the size limits. Pure functions.

Only the container signature is checked (PNG/JPEG/WebP, Ogg/MP3/WAV, MP4/WebM, WebVTT's header): enough to catch
a file saved under the wrong name or a text where a picture belongs, not a decoder's proof that it plays."""

from __future__ import annotations

MAX_FILE_BYTES = 64 * 1024 * 1024
"""One media file: a few minutes of LSF video at kiosk resolution fits; a raw camera file does not."""
MAX_PACK_BYTES = 512 * 1024 * 1024
"""A whole pack, so that a kiosk's SD card holds the current pack, the last good one and a download."""
MAX_MUSEUM_JSON_BYTES = 4 * 1024 * 1024
MAX_FILES = 4096
HEAD_BYTES = 16
"""How many leading bytes `kind_problem` needs."""

EXTENSIONS = {
    "image": (".png", ".jpg", ".jpeg", ".webp"),
    "audio": (".ogg", ".opus", ".mp3", ".wav"),
    "video": (".mp4", ".webm"),
    "captions": (".vtt",),
}


def _signature_ok(extension: str, head: bytes) -> bool:
    if extension == ".png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if extension in (".jpg", ".jpeg"):
        return head.startswith(b"\xff\xd8\xff")
    if extension == ".webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if extension in (".ogg", ".opus"):
        return head.startswith(b"OggS")
    if extension == ".mp3":
        return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    if extension == ".wav":
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    if extension == ".mp4":
        return head[4:8] == b"ftyp"
    if extension == ".webm":
        return head.startswith(b"\x1a\x45\xdf\xa3")
    if extension == ".vtt":
        return head.removeprefix(b"\xef\xbb\xbf").startswith(b"WEBVTT")
    return False


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def extension_problem(kind: str, path: str) -> str | None:
    """Why a file of this kind may not have this name, or None."""
    allowed = EXTENSIONS[kind]
    if _extension(path) not in allowed:
        return f"a{'n' if kind[0] in 'aeiou' else ''} {kind} file must end in {', '.join(allowed)}"
    return None


def kind_problem(kind: str, path: str, head: bytes) -> str | None:
    """Why a file of this kind, name and first HEAD_BYTES bytes is not acceptable, or None."""
    problem = extension_problem(kind, path)
    if problem is not None:
        return problem
    extension = _extension(path)
    if not _signature_ok(extension, head):
        if kind == "captions":
            return "a WebVTT captions file must start with 'WEBVTT'"
        return f"the content is not a {extension[1:].upper()} file (its first bytes do not match)"
    return None
