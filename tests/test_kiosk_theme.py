"""The kiosk's look, checked without a window: contrast of every declared text/background pair, touch-target
size, every interface string in French and English, captions parsing. Pure modules only (no Kivy)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from kiosk import captions, texts, theme

KV_DIR = Path(__file__).resolve().parent.parent / "kiosk" / "screens"


@pytest.mark.parametrize("palette", [theme.NORMAL, theme.HIGH_CONTRAST], ids=lambda p: p.name)
def test_every_text_pair_meets_its_contrast_floor(palette: theme.Palette) -> None:
    colours = palette.colours()
    floor = theme.minimum_contrast(palette)
    low = {(fg, bg): round(theme.contrast_ratio(colours[fg], colours[bg]), 2) for fg, bg in theme.TEXT_PAIRS
           if theme.contrast_ratio(colours[fg], colours[bg]) < floor}
    assert not low, f"{palette.name}: below {floor}:1: {low}"


def test_the_floors_are_the_issues() -> None:
    assert theme.minimum_contrast(theme.NORMAL) == 4.5
    assert theme.minimum_contrast(theme.HIGH_CONTRAST) == 7.0


def test_contrast_formula_matches_wcag_reference_values() -> None:
    assert theme.contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert theme.contrast_ratio("#FFFFFF", "#FFFFFF") == pytest.approx(1.0)
    assert theme.contrast_ratio("#767676", "#FFFFFF") == pytest.approx(4.54, abs=0.01)  # the classic AA grey
    assert theme.contrast_ratio("#595959", "#FFFFFF") == pytest.approx(7.0, abs=0.01)
    with pytest.raises(ValueError):
        theme.hex_to_rgb("red")


def test_every_colour_the_kv_files_use_is_in_the_palettes() -> None:
    used = set()
    for kv in KV_DIR.glob("*.kv"):
        used |= set(re.findall(r"\.pal\['([a-z_]+)'\]", kv.read_text("utf-8")))
    assert used, "the kv files use no palette colour?"
    assert used <= set(theme.NORMAL.colours()), used - set(theme.NORMAL.colours())
    text_colours = {fg for fg, _ in theme.TEXT_PAIRS} | {bg for _, bg in theme.TEXT_PAIRS}
    decorative = {"border", "progress"}
    assert set(theme.NORMAL.colours()) == text_colours | decorative


def test_touch_targets_are_at_least_9_mm_on_the_10_inch_screen() -> None:
    assert theme.px_to_mm(theme.TOUCH_TARGET_PX) >= theme.MIN_TOUCH_MM
    assert theme.mm_to_px(9) == pytest.approx(53.5, abs=0.1)
    assert theme.TOUCH_TARGET_PX >= 64


def test_large_text_scales_every_size_by_1_4() -> None:
    assert theme.font_scale_for(frozenset({"large_text"})) == 1.4
    assert theme.font_scale_for(frozenset()) == 1.0
    large = theme.font_sizes(1.4)
    for name, size in theme.FONT_SIZES.items():
        assert large[name] == pytest.approx(size * 1.4, abs=0.05)
    assert min(theme.FONT_SIZES.values()) >= 18  # readable at arm's length on a 151 dpi panel


def test_every_ui_string_exists_in_french_and_english() -> None:
    for key, versions in texts.STRINGS.items():
        assert set(versions) == {"fr", "en"}, key
        assert all(version.strip() for version in versions.values()), key
        fields = {lang: set(re.findall(r"{(\w+)}", version)) for lang, version in versions.items()}
        assert fields["fr"] == fields["en"], f"{key}: the fields differ between languages"


def test_every_string_the_kv_files_use_exists() -> None:
    used = set()
    for kv in KV_DIR.glob("*.kv"):
        used |= set(re.findall(r"\.tr\['([a-z_]+)'\]", kv.read_text("utf-8")))
    assert used and used <= set(texts.STRINGS), used - set(texts.STRINGS)


def test_unknown_languages_get_english_chrome() -> None:
    assert texts.ui_language("fr") == "fr"
    assert texts.ui_language("fr-CA") == "fr"
    assert texts.ui_language("de") == "en"
    assert texts.text("touch_to_start", "de") == "Touch to start"
    assert texts.text("my_visit_button", "fr", count=3) == "Ma visite (3)"
    assert texts.language_name("de") == "Deutsch"
    assert texts.language_name("xx") == "XX"


def test_french_punctuation_never_starts_a_line() -> None:
    for key, versions in texts.STRINGS.items():
        assert not re.search(r" [?!:;»]", versions["fr"]), f"{key}: use a no-break space before ?!:;»"
        assert not re.search(r"« ", versions["fr"]), key


def test_the_kiosk_font_draws_every_ui_character() -> None:
    """Roboto (Kivy's default font) draws every character of the strings and language names: a missing glyph
    would show as an empty box on the kiosk."""
    from PIL import ImageFont

    spec = importlib.util.find_spec("kivy")  # locates Kivy's files without importing (and starting) Kivy
    assert spec is not None and spec.origin is not None
    font = ImageFont.truetype(str(Path(spec.origin).parent / "data" / "fonts" / "Roboto-Regular.ttf"), 40)

    def signature(char: str) -> tuple[tuple[int, int], bytes]:
        mask = font.getmask(char)
        return mask.size, bytes(mask)

    missing_glyph = signature("\ue000")  # a private-use code point: the font's "no glyph" box
    used = {c for versions in texts.STRINGS.values() for v in versions.values() for c in v}
    used |= {c for name in texts.LANGUAGE_NAMES.values() for c in name}
    boxes = sorted(c for c in used if not c.isspace() and signature(c) == missing_glyph)
    assert not boxes, f"Roboto cannot draw {boxes}"


VTT = """WEBVTT - demo

NOTE a comment
-->

1
00:00.000 --> 00:02.500 align:center
<v Guide>Bonjour &amp; <i>bienvenue</i></v>

00:00:02.500 --> 00:00:05.000
deux
lignes

00:00:04.000 --> 00:00:06.000
chevauche

bad --> cue
ignored

00:09.000 --> 00:08.000
backwards
"""


def test_captions_parse_webvtt_and_find_the_cue_at_a_time() -> None:
    cues = captions.parse_vtt(VTT)
    assert [c.text for c in cues] == ["Bonjour & bienvenue", "deux\nlignes", "chevauche"]
    assert cues[0].start == 0 and cues[0].end == 2.5
    assert captions.caption_at(cues, 1.0) == "Bonjour & bienvenue"
    assert captions.caption_at(cues, 2.5) == "deux\nlignes"
    assert captions.caption_at(cues, 4.5) == "deux\nlignes\nchevauche"
    assert captions.caption_at(cues, 7.0) == ""
    assert captions.parse_vtt("not a caption file") == ()


def test_captions_of_a_missing_or_huge_file_do_not_fail(tmp_path: Path) -> None:
    assert captions.load_vtt(tmp_path / "missing.vtt") == ()
    huge = tmp_path / "huge.vtt"
    huge.write_text("WEBVTT\n\n" + "".join(f"00:{i // 60 % 60:02d}:{i % 60:02d}.000 --> 00:{i // 60 % 60:02d}:"
                                            f"{i % 60:02d}.500\ncue {i}\n\n" for i in range(20000)), "utf-8")
    cues = captions.load_vtt(huge)
    assert 0 < len(cues) <= captions.MAX_CUES


def test_the_sample_captions_parse() -> None:
    sample = Path(__file__).resolve().parent.parent / "content" / "sample_museum" / "media"
    for vtt in sample.glob("*.vtt"):
        cues = captions.load_vtt(vtt)
        assert len(cues) >= 2, vtt.name
        assert captions.caption_at(cues, 0.1), vtt.name
