"""Generate the sample museum's demonstration media: `python -m content.sample_media`.

There is no network and no right to reproduce photographs here, so every medium is an honest stand-in:
- an image for every work, an abstract composition drawn in pure Python (colours from the work id, the title's
  initials as blocks), whose alt text says it is a demonstration image standing in for the work;
- audio descriptions for AUDIO_WORKS, synthesised offline from the work's text with espeak-ng, Opus-encoded;
- for LSF_WORKS a short video that is a format demonstration (an animated figure, no sign language) with FR
  WebVTT captions transcribing the start of the work's text.

Images need only the standard library; audio needs espeak-ng and opusenc, video ffmpeg (Debian: espeak-ng,
opus-tools, ffmpeg). The output is checked in, so nothing at runtime needs those tools. Output is byte-for-byte
the same on each run (given the same tool versions), and museum.json keeps its hand-written layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from content.sample import SAMPLE_MUSEUM_PATH

WIDTH, HEIGHT = 480, 360
AUDIO_WORKS = ("botticelli-birth-of-venus", "rembrandt-night-watch", "vermeer-milkmaid",
               "monet-impression-sunrise", "van-gogh-starry-night", "hokusai-great-wave")
LSF_WORKS = ("vermeer-milkmaid", "monet-impression-sunrise")
VOICES = {"fr": "fr-fr", "en": "en-gb"}
OPUS_BITRATE_KBPS = "16"
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 12
VIDEO_SECONDS = 10
CUE_SECONDS = 2.5
_STOP_WORDS = {"the", "of", "a", "an", "and", "in", "at", "on", "off", "with", "her", "his", "to"}

# 5×7 capitals: enough for the title initials and the video's "DEMO LSF" card.
_FONT = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01111 10000 10000 10000 10000 10000 01111", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01111 10000 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "11111 00100 00100 00100 00100 00100 11111", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 11001 10101 10011 10001 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}

Color = tuple[int, int, int]


# --- PNG ----------------------------------------------------------------------------------------------------

def png_bytes(width: int, height: int, palette: Sequence[Color], rows: Sequence[bytes]) -> bytes:
    """An 8-bit palette PNG: flat colours compress to a few KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", b"".join(bytes(color) for color in palette))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


class Canvas:
    """Palette-indexed pixels with the few shapes the compositions use."""

    def __init__(self, width: int, height: int, background: int = 0) -> None:
        self.width, self.height = width, height
        self.pixels = [bytearray([background]) * width for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: int) -> None:
        for y in range(max(0, y0), min(self.height, y1)):
            row = self.pixels[y]
            for x in range(max(0, x0), min(self.width, x1)):
                row[x] = color

    def disc(self, cx: int, cy: int, radius: int, color: int) -> None:
        for y in range(max(0, cy - radius), min(self.height, cy + radius + 1)):
            for x in range(max(0, cx - radius), min(self.width, cx + radius + 1)):
                if (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius:
                    self.pixels[y][x] = color

    def text(self, text: str, x: int, y: int, cell: int, color: int) -> None:
        for offset, letter in enumerate(text):
            for row, bits in enumerate(_FONT[letter].split()):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        px, py = x + (offset * 6 + col) * cell, y + row * cell
                        self.rect(px, py, px + cell, py + cell, color)

    def rows(self) -> list[bytes]:
        return [bytes(row) for row in self.pixels]


def text_width(text: str, cell: int) -> int:
    return (len(text) * 6 - 1) * cell


# --- images -------------------------------------------------------------------------------------------------

def initials(title: str) -> str:
    """Up to three capitals from the title's main words, accents removed: "The Birth of Venus" -> "BV"."""
    plain = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = [word for word in re.findall(r"[A-Za-z]+", plain) if word.lower() not in _STOP_WORDS]
    return "".join(word[0].upper() for word in words)[:3] or "X"


def _palette(artwork_id: str) -> list[Color]:
    """Five calm colours from the work id: a hue family with light sky, mid and dark bands, a sun and ink."""
    digest = hashlib.sha256(artwork_id.encode()).digest()

    def tone(i: int, low: int, high: int) -> Color:
        return tuple(low + digest[i + k] * (high - low) // 255 for k in range(3))  # type: ignore[return-value]
    return [tone(0, 150, 235), tone(3, 90, 180), tone(6, 40, 120), tone(9, 200, 255), tone(12, 10, 50)]


def artwork_image(artwork_id: str, title_en: str) -> bytes:
    digest = hashlib.sha256(artwork_id.encode()).digest()
    canvas = Canvas(WIDTH, HEIGHT, background=0)
    horizon = HEIGHT // 2 + digest[15] % 80 - 20
    canvas.disc(60 + digest[16] * (WIDTH - 120) // 255, horizon - 40 - digest[17] % 60, 30 + digest[18] % 40, 3)
    canvas.rect(0, horizon, WIDTH, HEIGHT, 1)
    canvas.rect(0, horizon + (HEIGHT - horizon) // 2, WIDTH, HEIGHT, 2)
    letters = initials(title_en)
    cell = 12
    canvas.text(letters, (WIDTH - text_width(letters, cell)) // 2, HEIGHT - 7 * cell - 24, cell, 4)
    return png_bytes(WIDTH, HEIGHT, _palette(artwork_id), canvas.rows())


def image_alt(title: dict[str, str], artist: str, letters: str) -> dict[str, str]:
    return {
        "fr": f"Image de démonstration générée, qui tient lieu de « {title['fr']} » de {artist} : "
              f"une composition abstraite de bandes de couleur, un disque clair et les initiales {letters}.",
        "en": f"Generated demonstration image standing in for “{title['en']}” by {artist}: an abstract "
              f"composition of colour bands, a pale disc and the initials {letters}.",
    }


def write_images(museum: dict[str, Any], media_dir: Path) -> None:
    for artwork in museum["artworks"]:
        (media_dir / f"{artwork['artwork_id']}.png").write_bytes(
            artwork_image(artwork["artwork_id"], artwork["title"]["en"]))


# --- audio --------------------------------------------------------------------------------------------------

def spoken_text(artwork: dict[str, Any], language: str) -> str:
    return f"{artwork['title'][language]}. {artwork['artist']}, {artwork['year']}. {artwork['text'][language]}"


def write_audio(artwork: dict[str, Any], language: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as temp:
        wav = Path(temp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[language], "-s", "150", "-w", str(wav),
                        spoken_text(artwork, language)], check=True, capture_output=True)
        # A fixed serial number: opusenc otherwise picks a random one and the file changes on every run.
        subprocess.run(["opusenc", "--quiet", "--serial", "1", "--bitrate", OPUS_BITRATE_KBPS, "--downmix-mono",
                        "--comp", "10", "--title", artwork["title"][language],
                        "--comment", "DESCRIPTION=Synthesised with espeak-ng from the museum text",
                        str(wav), str(out)], check=True, capture_output=True)


# --- LSF demonstration video --------------------------------------------------------------------------------

def _video_frame(index: int) -> bytes:
    """One RGB frame: a card "DEMO LSF" and a simple figure whose hands move, so the player visibly plays."""
    import math
    width, height = VIDEO_SIZE
    canvas = Canvas(width, height, background=0)
    canvas.disc(width // 2, 70, 22, 1)
    canvas.rect(width // 2 - 26, 96, width // 2 + 26, 170, 1)
    phase = 2 * math.pi * index / VIDEO_FPS
    for side in (-1, 1):
        hx = width // 2 + side * (50 + int(18 * math.sin(phase + side)))
        hy = 120 + int(22 * math.cos(phase * 0.5 + side))
        canvas.disc(hx, hy, 10, 2)
    label = "DEMO LSF"
    canvas.text(label, (width - text_width(label, 4)) // 2, 190, 4, 3)
    colors = [(24, 32, 48), (120, 140, 170), (240, 200, 150), (250, 250, 250)]
    return b"".join(b"".join(bytes(colors[p]) for p in row) for row in canvas.rows())


def write_video(out: Path) -> None:
    frames = b"".join(_video_frame(i) for i in range(VIDEO_FPS * VIDEO_SECONDS))
    width, height = VIDEO_SIZE
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{width}x{height}", "-r", str(VIDEO_FPS), "-i", "-", "-c:v", "libvpx", "-b:v", "60k",
                    "-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                    str(out)], input=frames, check=True, capture_output=True)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"00:{millis // 60000:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def captions(artwork: dict[str, Any]) -> str:
    """FR cues of a few words: a notice, then the title and the start of the text, as much as fits the video."""
    words = f"{artwork['title']['fr']}. {artwork['text']['fr']}".split()
    cues = ["[Démonstration du format : cette vidéo ne contient pas de langue des signes]"]
    while words and (len(cues) + 1) * CUE_SECONDS <= VIDEO_SECONDS:
        cues.append(" ".join(words[:7]))
        words = words[7:]
    if words:
        cues[-1] += " …"
    lines = ["WEBVTT", ""]
    for index, cue in enumerate(cues):
        lines += [f"{_timestamp(index * CUE_SECONDS)} --> {_timestamp((index + 1) * CUE_SECONDS)}", cue, ""]
    return "\n".join(lines)


# --- museum.json --------------------------------------------------------------------------------------------

def media_entries(artwork: dict[str, Any]) -> dict[str, Any]:
    artwork_id = artwork["artwork_id"]
    media: dict[str, Any] = {"image": {"file": f"media/{artwork_id}.png",
                                       "alt": image_alt(artwork["title"], artwork["artist"],
                                                        initials(artwork["title"]["en"]))}}
    if artwork_id in AUDIO_WORKS:
        media["audio"] = {lang: f"media/{artwork_id}.{lang}.opus" for lang in ("fr", "en")}
    if artwork_id in LSF_WORKS:
        media["lsf"] = {"video": f"media/{artwork_id}-lsf.webm", "captions": f"media/{artwork_id}-lsf.vtt"}
    return media


def dump_json(value: Any, indent: int = 0) -> str:
    """The layout curators use: an object or list on one line when it fits in 120 columns, else one item a line."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, dict | list) or (len(flat) + indent <= 120 and not _has_long_object(value, indent)):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        items = [pad + dump_json(item, indent + 2) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(key, ensure_ascii=False)}: {dump_json(item, indent + 2)}"
             for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def _has_long_object(value: Any, indent: int) -> bool:
    # Rooms, artworks and the museum's own name are one field a line even when short, as in the hand-written file.
    return isinstance(value, dict) and ("zone_id" in value or "artwork_id" in value or indent == 2)


# --- entry point --------------------------------------------------------------------------------------------

def generate(museum_path: Path, *, images_only_into: Path | None = None) -> None:
    museum = json.loads(museum_path.read_text("utf-8"))
    if images_only_into is not None:
        write_images(museum, images_only_into)
        return
    media_dir = museum_path.parent / "media"
    media_dir.mkdir(exist_ok=True)
    write_images(museum, media_dir)
    for artwork in museum["artworks"]:
        if artwork["artwork_id"] in AUDIO_WORKS:
            for lang in ("fr", "en"):
                write_audio(artwork, lang, media_dir / f"{artwork['artwork_id']}.{lang}.opus")
        if artwork["artwork_id"] in LSF_WORKS:
            write_video(media_dir / f"{artwork['artwork_id']}-lsf.webm")
            (media_dir / f"{artwork['artwork_id']}-lsf.vtt").write_text(captions(artwork), "utf-8")
        artwork["media"] = media_entries(artwork)
    museum_path.write_text(dump_json(museum) + "\n", "utf-8")


def missing_tools() -> list[str]:
    return [tool for tool in ("espeak-ng", "opusenc", "ffmpeg") if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m content.sample_media", description=__doc__.splitlines()[0])
    parser.add_argument("--images-only-into", type=Path, help="write only the images, into this folder")
    args = parser.parse_args(argv)
    if args.images_only_into is None and missing_tools():
        print(f"content.sample_media: {', '.join(missing_tools())} not found: "
              f"apt-get install espeak-ng opus-tools ffmpeg", file=sys.stderr)
        return 1
    generate(SAMPLE_MUSEUM_PATH, images_only_into=args.images_only_into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
