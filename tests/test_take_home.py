"""The take-home link: the URL scheme, its one-way visit id, and a QR code a phone reads from 1 m.

The QR is decoded for real with ZBar (qr.zbar) from an image drawn from the matrix, as the UI draws it."""

from __future__ import annotations

import pytest
from PIL import Image

from kiosk.take_home import MIN_MODULE_MM, QUIET_ZONE, module_px, qr_matrix, qr_side_px, take_home_url
from protocol.ids import VISIT_ID, new_visit_id, visit_id_for
from qr.frames import Frame
from qr.zbar import ZbarDecoder

TOKEN = "AAAAAAAAAAAAAAAAAAAAAA"


# --- the visit id ------------------------------------------------------------------------------------------

def test_the_visit_id_is_the_documented_one_way_derivation() -> None:
    # base64url(SHA-256(b"museum-visit-v1\x00" + token)), unpadded: the companion service computes the same.
    assert visit_id_for(TOKEN) == "j8Q_Rgx3HY4D8YvqB1u271gWZ0coEbcgxoyVm1NPaBQ"


def test_visit_ids_are_valid_stable_and_distinct() -> None:
    tokens = [new_visit_id() for _ in range(200)]
    ids = [visit_id_for(token) for token in tokens]
    assert all(VISIT_ID.match(visit_id) and len(visit_id) == 43 for visit_id in ids)
    assert len(set(ids)) == len(tokens)
    assert [visit_id_for(token) for token in tokens] == ids
    assert not any(token in visit_id for token, visit_id in zip(tokens, ids, strict=True))


@pytest.mark.parametrize("token", ["", None, 42])
def test_a_missing_token_has_no_visit_id(token) -> None:
    with pytest.raises(ValueError):
        visit_id_for(token)


# --- the URL -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "url"), [
    ("https://visit.example.org", f"https://visit.example.org/v/{TOKEN}"),
    ("https://visit.example.org/", f"https://visit.example.org/v/{TOKEN}"),
    ("https://example.org/museum/", f"https://example.org/museum/v/{TOKEN}"),
    ("http://localhost:8000", f"http://localhost:8000/v/{TOKEN}"),
])
def test_the_take_home_url_is_the_base_then_v_then_the_token(base, url) -> None:
    assert take_home_url(base, TOKEN) == url


@pytest.mark.parametrize("base", ["visit.example.org", "ftp://visit.example.org", "https://", "https://x.org/?a=1",
                                  "https://x.org/#top", "", None])
def test_a_bad_base_url_is_refused(base) -> None:
    with pytest.raises(ValueError, match="companion base URL"):
        take_home_url(base, TOKEN)


@pytest.mark.parametrize("token", ["short", "has space in it 1234567890", "a/b" * 10, ""])
def test_a_bad_token_is_refused(token) -> None:
    with pytest.raises(ValueError, match="token"):
        take_home_url("https://visit.example.org", token)


# --- the QR code -------------------------------------------------------------------------------------------

def draw(matrix: list[list[bool]], scale: int) -> Image.Image:
    side = len(matrix)
    image = Image.new("L", (side, side), 255)
    image.putdata([0 if dark else 255 for row in matrix for dark in row])
    return image.resize((side * scale, side * scale), Image.NEAREST)


@pytest.mark.parametrize("base", ["https://visit.example.org", "https://musee-des-beaux-arts.example.fr/visites"])
def test_the_qr_code_decodes_to_the_url(base) -> None:
    url = take_home_url(base, new_visit_id())

    matrix = qr_matrix(url)

    side = len(matrix)
    assert all(len(row) == side for row in matrix), "square"
    assert not any(matrix[0]) and not any(row[0] for row in matrix), "with its quiet zone"
    assert not any(any(row[:QUIET_ZONE]) or any(row[-QUIET_ZONE:]) for row in matrix)
    decoded = ZbarDecoder().decode(Frame.from_image(draw(matrix, module_px()).convert("L")))
    assert [code.text for code in decoded] == [url]


def test_a_take_home_qr_is_drawn_large_enough_for_a_phone_at_one_metre() -> None:
    url = take_home_url("https://visit.example.org", new_visit_id())
    modules = len(qr_matrix(url))
    dpi = 151  # the 10" 1280×800 kiosk screen

    side = qr_side_px(modules, dpi)

    assert side % modules == 0, "whole pixels per module: every module edge stays sharp"
    assert side / modules * 25.4 / dpi >= MIN_MODULE_MM
    assert side <= 800 - 200, "and it still fits on the screen beside the list of works"


@pytest.mark.parametrize("dpi", [96, 151, 220, 320])
def test_modules_are_at_least_the_minimum_size_at_any_density(dpi) -> None:
    assert module_px(dpi) * 25.4 / dpi >= MIN_MODULE_MM
    assert (module_px(dpi) - 1) * 25.4 / dpi < MIN_MODULE_MM, "and no larger than needed"


@pytest.mark.parametrize(("modules", "dpi"), [(0, 151), (41, 0)])
def test_nonsense_sizes_are_refused(modules, dpi) -> None:
    with pytest.raises(ValueError):
        qr_side_px(modules, dpi)
