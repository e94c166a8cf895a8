"""The sample museum is a real content pack: demonstration media for every work, generated deterministically."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from content.pack import build_pack, verify_pack
from content.sample import SAMPLE_MIN_ARTWORKS, SAMPLE_MIN_ROOMS, SAMPLE_MUSEUM_PATH
from content.sample_media import LSF_WORKS, generate, missing_tools
from content.source import validate_source

SAMPLE_DIR = SAMPLE_MUSEUM_PATH.parent
MAX_SAMPLE_PACK_BYTES = 5 * 1024 * 1024
"""The sample is checked into the repository and shipped with every demo: it must stay small."""


def test_the_sample_source_has_an_image_for_every_work_audio_and_lsf_videos() -> None:
    source = validate_source(SAMPLE_DIR)
    museum = source.museum
    assert len(museum.rooms) >= SAMPLE_MIN_ROOMS and len(museum.artworks) >= SAMPLE_MIN_ARTWORKS
    assert museum.languages == ("fr", "en")
    for artwork in museum.artworks:
        assert artwork.media.image is not None
        for lang in museum.languages:
            # The alt text must not pass a generated picture off as a reproduction of the work.
            assert {"fr": "démonstration", "en": "demonstration"}[lang] in artwork.media.image.alt[lang].lower()
            assert artwork.title[lang] in artwork.media.image.alt[lang]
    with_audio = [artwork for artwork in museum.artworks if dict(artwork.media.audio).keys() == {"fr", "en"}]
    assert len(with_audio) >= 5
    with_lsf = [artwork for artwork in museum.artworks if artwork.media.lsf is not None]
    assert len(with_lsf) >= 2
    assert all(artwork.lsf_video for artwork in with_lsf)
    for artwork in with_lsf:
        assert artwork.media.lsf is not None
        captions = (SAMPLE_DIR / artwork.media.lsf.captions).read_text("utf-8")
        assert captions.startswith("WEBVTT") and "-->" in captions


def test_the_sample_builds_into_a_verified_pack_of_at_most_5_mb(tmp_path: Path) -> None:
    built = build_pack(SAMPLE_DIR, tmp_path / "sample.pack")
    verified = verify_pack(tmp_path / "sample.pack")
    assert verified.files == built.files
    assert len(verified.files) == len(validate_source(SAMPLE_DIR).files)
    assert (tmp_path / "sample.pack").stat().st_size <= MAX_SAMPLE_PACK_BYTES


def _museum_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE_DIR, copy)
    return copy / "museum.json"


def test_the_generated_images_are_the_checked_in_ones(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    generate(SAMPLE_MUSEUM_PATH, images_only_into=images)
    generated = sorted(images.iterdir())
    assert len(generated) == len(validate_source(SAMPLE_DIR).museum.artworks)
    for path in generated:
        assert path.read_bytes() == (SAMPLE_DIR / "media" / path.name).read_bytes(), path.name


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} to regenerate audio and video "
                                                    "(apt-get install espeak-ng opus-tools ffmpeg)")
def test_regenerating_all_media_reproduces_the_checked_in_pack(tmp_path: Path) -> None:
    museum_path = _museum_copy(tmp_path)
    generate(museum_path)
    assert museum_path.read_bytes() == SAMPLE_MUSEUM_PATH.read_bytes()
    checked_in = sorted(path.name for path in (SAMPLE_DIR / "media").iterdir())
    assert sorted(path.name for path in (museum_path.parent / "media").iterdir()) == checked_in
    for name in checked_in:
        # What Python writes is compared byte for byte; what espeak-ng, opusenc and ffmpeg encode may differ between
        # their versions, so those files are checked as the pack's validation checks them (kind, signature).
        if not name.endswith((".opus", ".ogg", ".webm")):
            assert (museum_path.parent / "media" / name).read_bytes() == (SAMPLE_DIR / "media" / name).read_bytes(), \
                name
    assert validate_source(museum_path.parent) is not None
    assert all(f"{work}-lsf.webm" in checked_in for work in LSF_WORKS)
