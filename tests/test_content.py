"""Content folders and packs: validation naming the exact place, build → verify → unpack, tampered packs refused.

The media written here are tiny but real for images, audio and captions (a PNG made with zlib, a WAV made with
`wave`, a WebVTT text); the MP4 is only a file with an MP4 signature, because the validator checks container
signatures, not that a video plays."""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import wave
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from content.cli import content as content_cli
from content.media import MAX_FILE_BYTES, kind_problem
from content.pack import MANIFEST_FILE, build_pack, manifest_dict, unpack_pack, verify_pack
from content.sample import SAMPLE_MUSEUM_PATH, load_sample_museum
from content.source import ContentError, validate_source


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)
    return buffer.getvalue()


VTT = b"WEBVTT\n\n00:00.000 --> 00:02.000\nBonjour\n"
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64

MEDIA = {"media/hare.png": png_bytes(), "media/hare.fr.wav": wav_bytes(), "media/hare.en.wav": wav_bytes(),
         "media/hare-lsf.mp4": FAKE_MP4, "media/hare-lsf.vtt": VTT}
HARE = "durer-young-hare"


def sample_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE_MUSEUM_PATH.read_text("utf-8"))
    for artwork in data["artworks"]:
        # Only the hare's media are written by write_source; the sample's own media stay out of these folders.
        artwork.pop("media", None)
    hare = next(a for a in data["artworks"] if a["artwork_id"] == HARE)
    hare["media"] = {"image": {"file": "media/hare.png", "alt": {"fr": "Un lièvre assis", "en": "A sitting hare"}},
                     "audio": {"fr": "media/hare.fr.wav", "en": "media/hare.en.wav"},
                     "lsf": {"video": "media/hare-lsf.mp4", "captions": "media/hare-lsf.vtt"}}
    return data


def write_source(root: Path, data: dict[str, Any] | None = None, media: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "museum.json").write_text(json.dumps(data or sample_data(), ensure_ascii=False), "utf-8")
    for path, raw in (MEDIA if media is None else media).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(raw)
    return root


def hare_media(data: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = next(a for a in data["artworks"] if a["artwork_id"] == HARE)["media"]
    return media


# --- the model --------------------------------------------------------------------------------------------

def test_the_sample_museum_is_a_content_source_with_media() -> None:
    museum = load_sample_museum()
    assert (museum.pack_id, museum.pack_version) == ("demo-museum", 1)
    source = validate_source(SAMPLE_MUSEUM_PATH.parent)
    assert source.files[0].path == "museum.json" and len(source.files) > len(museum.artworks)


def test_a_valid_source_lists_each_media_file_once(tmp_path: Path) -> None:
    source = validate_source(write_source(tmp_path / "src"))
    assert [file.path for file in source.files] == ["museum.json", *MEDIA]
    hare = source.museum.artwork(HARE)
    assert hare.media.image is not None and hare.media.image.alt["en"] == "A sitting hare"
    assert dict(hare.media.audio) == {"fr": "media/hare.fr.wav", "en": "media/hare.en.wav"}


# --- invalid sources: each names its exact place ----------------------------------------------------------

def _media_set(key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def mutate(data: dict[str, Any], root: Path) -> None:
        hare_media(data)[key] = value
    return mutate


def _remove_file(path: str) -> Callable[[dict[str, Any], Path], None]:
    def mutate(data: dict[str, Any], root: Path) -> None:
        (root / path).unlink()
    return mutate


def _replace_file(path: str, raw: bytes) -> Callable[[dict[str, Any], Path], None]:
    def mutate(data: dict[str, Any], root: Path) -> None:
        (root / path).write_bytes(raw)
    return mutate


def _symlink_out(data: dict[str, Any], root: Path) -> None:
    outside = root.parent / "secret.png"
    outside.write_bytes(png_bytes())
    (root / "media/hare.png").unlink()
    (root / "media/hare.png").symlink_to(outside)


def _too_big(data: dict[str, Any], root: Path) -> None:
    with open(root / "media/hare.fr.wav", "r+b") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used


PLACE = r"artworks\[1\] \(durer-young-hare\): media"
BAD_SOURCES = [
    pytest.param(_remove_file("media/hare.en.wav"), rf"{PLACE}\.audio\.en: file not found", id="audio-missing"),
    pytest.param(_replace_file("media/hare.png", b"GIF89a not a png"),
                 rf"{PLACE}\.image\.file: the content is not a PNG file", id="image-not-png"),
    pytest.param(_replace_file("media/hare-lsf.vtt", b"1\n00:00 --> 00:01\nhi\n"),
                 rf"{PLACE}\.lsf\.captions: a WebVTT captions file must start with 'WEBVTT'", id="vtt-header"),
    pytest.param(_media_set("lsf", {"video": "media/hare-lsf.avi", "captions": "media/hare-lsf.vtt"}),
                 rf"{PLACE}\.lsf\.video: a video file must end in \.mp4, \.webm", id="video-extension"),
    pytest.param(_media_set("audio", {"fr": "media/hare.png"}),
                 rf"{PLACE}\.audio\.fr: an? audio file must end in", id="audio-is-image"),
    pytest.param(_media_set("audio", {"de": "media/hare.fr.wav"}),
                 rf"{PLACE}\.audio has unknown field\(s\) de", id="audio-language"),
    pytest.param(_media_set("image", {"file": "media/hare.png", "alt": {"fr": "Un lièvre"}}),
                 rf"{PLACE}\.image\.alt has no 'en' version", id="alt-missing-language"),
    pytest.param(_media_set("image", {"file": "media/../museum.json", "alt": {"fr": "a", "en": "a"}}),
                 rf"{PLACE}\.image\.file: 'media/\.\./museum\.json' must be a plain relative path", id="dotdot"),
    pytest.param(_media_set("image", {"file": "/etc/passwd.png", "alt": {"fr": "a", "en": "a"}}),
                 rf"{PLACE}\.image\.file: '/etc/passwd\.png' must be a plain relative path", id="absolute"),
    pytest.param(_media_set("image", {"file": "hare.png", "alt": {"fr": "a", "en": "a"}}),
                 rf"{PLACE}\.image\.file: 'hare\.png' must lie in the media/ folder", id="outside-media"),
    pytest.param(_symlink_out, rf"{PLACE}\.image\.file: media/hare\.png leads outside the content folder",
                 id="symlink-out"),
    pytest.param(_too_big, rf"{PLACE}\.audio\.fr: media/hare\.fr\.wav is {MAX_FILE_BYTES + 1} bytes, at most",
                 id="too-big"),
    pytest.param(_media_set("video", "x.mp4"), rf"{PLACE} has unknown field\(s\) video", id="unknown-media"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_SOURCES)
def test_bad_sources_name_the_exact_place(tmp_path: Path, mutate: Callable[[dict[str, Any], Path], None],
                                          message: str) -> None:
    data = sample_data()
    root = write_source(tmp_path / "src", data)
    mutate(data, root)
    (root / "museum.json").write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    with pytest.raises(ContentError) as caught:
        validate_source(root)
    assert len(caught.value.errors) == 1, caught.value.errors
    assert caught.value.errors[0].startswith(("artworks[1] (durer-young-hare): ", "museum.json: artworks[1]"))
    assert re.search(message, caught.value.errors[0]), caught.value.errors[0]
    assert not (tmp_path / "out.pack").exists()
    with pytest.raises(ContentError):
        build_pack(root, tmp_path / "out.pack")
    assert list(tmp_path.glob("*.pack*")) == [], "a refused build leaves no file behind"


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    root = write_source(tmp_path / "src", media={})
    with pytest.raises(ContentError) as caught:
        validate_source(root)
    assert [line.rsplit(": ", 1)[0] for line in caught.value.errors] == [
        f"artworks[1] ({HARE}): media.{place}"
        for place in ("image.file", "audio.fr", "audio.en", "lsf.video", "lsf.captions")]


def test_signatures_are_what_is_checked_of_media_content() -> None:
    assert kind_problem("video", "media/a.mp4", FAKE_MP4[:16]) is None
    assert kind_problem("audio", "media/a.wav", wav_bytes()[:16]) is None
    assert kind_problem("image", "media/a.PNG", png_bytes()[:16]) is None
    assert kind_problem("image", "media/a", png_bytes()[:16]) is not None


# --- packs ------------------------------------------------------------------------------------------------

@pytest.fixture
def pack_path(tmp_path: Path) -> Path:
    out = tmp_path / "demo.pack"
    build_pack(write_source(tmp_path / "src"), out)
    return out


def test_build_verify_unpack_round_trip(tmp_path: Path, pack_path: Path) -> None:
    pack = verify_pack(pack_path)
    source = validate_source(tmp_path / "src")
    assert pack.museum == source.museum
    with tarfile.open(pack_path) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(MANIFEST_FILE).read())  # type: ignore[union-attr]
    assert names == [MANIFEST_FILE, "museum.json", *MEDIA]
    assert manifest == manifest_dict(pack)
    assert set(manifest) == {"format", "pack_id", "pack_version", "languages", "created_at", "files"}
    unpacked = unpack_pack(pack_path, tmp_path / "current")
    assert unpacked == pack
    for path, raw in MEDIA.items():
        assert (tmp_path / "current" / path).read_bytes() == raw
    assert (tmp_path / "current/museum.json").read_bytes() == (tmp_path / "src/museum.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "demo.pack", "src"], "no staging left"


def _rewrite(pack_path: Path, change: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> None:
    with tarfile.open(pack_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]
    change(members)
    with tarfile.open(pack_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, raw in members:
            tar.addfile(member, io.BytesIO(raw) if member.isreg() else None)


def _flip_byte(pack_path: Path) -> None:
    raw = bytearray(pack_path.read_bytes())
    offset = raw.index(VTT) + 8  # inside the captions' content, not a header
    raw[offset] ^= 0x01
    pack_path.write_bytes(bytes(raw))


def _extra_file(pack_path: Path) -> None:
    _rewrite(pack_path, lambda members: members.append((_info("media/extra.png", 4), b"\x89PNG")))


def _dotdot(pack_path: Path) -> None:
    _rewrite(pack_path, lambda members: members.append((_info("../evil.txt", 4), b"evil")))


def _absolute(pack_path: Path) -> None:
    _rewrite(pack_path, lambda members: members.append((_info("/tmp/evil.txt", 4), b"evil")))


def _symlink(pack_path: Path) -> None:
    link = tarfile.TarInfo("media/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _rewrite(pack_path, lambda members: members.append((link, b"")))


def _duplicate(pack_path: Path) -> None:
    _rewrite(pack_path, lambda members: members.append(members[-1]))


def _truncate(pack_path: Path) -> None:
    raw = pack_path.read_bytes()
    pack_path.write_bytes(raw[:raw.index(FAKE_MP4) + 20])


def _bomb(pack_path: Path) -> None:
    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        manifest = json.loads(members[0][1])
        manifest["files"][-1]["size"] = 10**12
        raw = json.dumps(manifest).encode()
        members[0] = (_info(MANIFEST_FILE, len(raw)), raw)
    _rewrite(pack_path, change)


def _manifest_not_first(pack_path: Path) -> None:
    _rewrite(pack_path, lambda members: members.append(members.pop(0)))


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


TAMPERED = [
    pytest.param(_flip_byte, r"member 'media/hare-lsf\.vtt': SHA-256 does not match", id="changed-byte"),
    pytest.param(_extra_file, r"member 'media/extra\.png': not listed in manifest\.json", id="extra-file"),
    pytest.param(_dotdot, r"member '\.\./evil\.txt': unsafe path", id="dotdot"),
    pytest.param(_absolute, r"member '/tmp/evil\.txt': unsafe path", id="absolute"),
    pytest.param(_symlink, r"member 'media/link\.png': not a regular file", id="symlink"),
    pytest.param(_duplicate, r"member 'media/hare-lsf\.vtt': appears twice", id="duplicate"),
    pytest.param(_truncate, r"damaged or truncated archive", id="truncated"),
    pytest.param(_bomb, r"files\[5\] \(media/hare-lsf\.vtt\): size must be from 1 to \d+ bytes", id="bomb"),
    pytest.param(_manifest_not_first, r"the first member must be manifest\.json", id="manifest-not-first"),
]


@pytest.mark.parametrize(("tamper", "reason"), TAMPERED)
def test_tampered_packs_are_refused_with_a_reason(tmp_path: Path, pack_path: Path,
                                                  tamper: Callable[[Path], None], reason: str) -> None:
    verify_pack(pack_path)  # the untouched pack is fine, so the refusal below is the tampering's doing
    tamper(pack_path)
    with pytest.raises(ContentError, match=reason):
        verify_pack(pack_path)
    with pytest.raises(ContentError, match=reason):
        unpack_pack(pack_path, tmp_path / "current")
    assert not (tmp_path / "current").exists()
    assert not list(tmp_path.glob(".current*")), "the staging folder is removed"
    assert not (tmp_path.parent / "evil.txt").exists()


def test_unpack_never_writes_into_an_existing_folder(tmp_path: Path, pack_path: Path) -> None:
    (tmp_path / "current").mkdir()
    with pytest.raises(ContentError, match="already exists"):
        unpack_pack(pack_path, tmp_path / "current")


# --- the command ------------------------------------------------------------------------------------------

def test_cli_build_prints_one_line_on_success(tmp_path: Path) -> None:
    root = write_source(tmp_path / "src")
    result = CliRunner().invoke(content_cli, ["build", str(root), str(tmp_path / "out.pack")])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert "pack demo-museum version 1, 6 files" in result.output
    verify_pack(tmp_path / "out.pack")


def test_cli_build_prints_one_line_per_error_and_exits_1(tmp_path: Path) -> None:
    root = write_source(tmp_path / "src", media={})
    result = CliRunner().invoke(content_cli, ["build", str(root), str(tmp_path / "out.pack")])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 5 and all(f"artworks[1] ({HARE}): media." in line for line in lines), lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.pack").exists()


def test_cli_build_bad_json_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "museum.json").write_text("{", "utf-8")
    result = CliRunner().invoke(content_cli, ["build", str(root), str(tmp_path / "out.pack")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{root}: museum.json: not valid JSON: Expecting property name enclosed "
                                          "in double quotes at line 1 column 2"]
