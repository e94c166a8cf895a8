"""What a QR text means (qr.codes.classify), the agreement of its tag parser with hardware.tags', and the entrance
pairing of visits with lent tags, decided on a given clock."""

from __future__ import annotations

import pytest

from protocol.ids import new_visit_id, visit_id_for
from qr.codes import (
    MAX_SHOWN,
    EntrancePairing,
    ForeignCode,
    Link,
    Return,
    TagCode,
    VisitCode,
    classify,
    shown,
    tag_qr_text,
)

SITE = "demo"
TOKEN = "AbCdEfGhIjKlMnOpQrStUv"  # 22 URL-safe characters, as protocol.ids.new_visit_id makes
TAG = "t-00000000002a"


# --- classify ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"https://visit.example.org/v/{TOKEN}",
    f"https://visit.example.org/v/{TOKEN}/",
    f"http://localhost:8000/v/{TOKEN}",
    f"https://museum.example.org/companion/fr/v/{TOKEN}",
    f"https://visit.example.org/v/{TOKEN}_-{TOKEN}",
])
def test_visit_urls_are_visit_codes(text: str) -> None:
    code = classify(text, SITE)
    assert isinstance(code, VisitCode)
    assert code.token == text.rstrip("/").rsplit("/", 1)[1]
    assert code.visit_id == visit_id_for(code.token)


def test_a_fresh_visit_token_is_read_back() -> None:
    token = new_visit_id()
    code = classify(f"https://visit.example.org/v/{token}", SITE)
    assert code == VisitCode(token)


def test_a_visit_code_never_shows_its_token() -> None:
    code = classify(f"https://visit.example.org/v/{TOKEN}", SITE)
    assert TOKEN not in repr(code) and TOKEN not in str(code)


@pytest.mark.parametrize("text, reason", [
    ("https://visit.example.org/v/short", "not a visit token"),
    (f"https://visit.example.org/v/{TOKEN}?utm=1", "not a museum code"),
    (f"https://visit.example.org/v/{TOKEN}#x", "not a museum code"),
    (f"ftp://visit.example.org/v/{TOKEN}", "not a museum code"),
    ("https://visit.example.org/w/some-page", "not a museum code"),
    (f"https://user@evil.example/v/{TOKEN}", "not a museum code"),
    (f"https://visit.example.org/v/{TOKEN}/more", "not a museum code"),
    (f"https://visit.example.org/v/{'A' * 21}", "not a visit token"),
    (f"https://visit.example.org/v/{TOKEN}+", "not a visit token"),
    ("WIFI:S:Museum-Guest;T:WPA;P:secret;;", "not a museum code"),
    ("", "not a museum code"),
    (f"MUSEUM-TAG:other-site:{TAG}", "a tag of another site (other-site)"),
    (f"MUSEUM-TAG:{SITE}:not-a-tag", "malformed tag code"),
    (f"MUSEUM-TAG:{SITE}:t-2a", "malformed tag code"),
    (f"MUSEUM-TAG:{SITE}:{TAG}:extra", "malformed tag code"),
    (f"MUSEUM-TAG:{SITE}", "malformed tag code"),
])
def test_everything_else_is_foreign(text: str, reason: str) -> None:
    code = classify(text, SITE)
    assert isinstance(code, ForeignCode)
    assert code.reason == reason
    assert TOKEN not in code.text  # a mistyped capability is not echoed either


@pytest.mark.parametrize("text", [
    f"MUSEUM-TAG:{SITE}:{TAG}", f"museum-tag:{SITE}:{TAG}", f"MUSEUM-TAG:DEMO:{TAG.upper()}",
    f"  MUSEUM-TAG:{SITE}:{TAG}\n", f"MUSEUM-TAG:{SITE}:t-0102abcd",
])
def test_tag_codes_of_this_site(text: str) -> None:
    code = classify(text, SITE)
    assert isinstance(code, TagCode)
    assert code.site_id == SITE and code.tag_id == text.strip().lower().rsplit(":", 1)[1]


def test_a_foreign_text_is_cut_for_the_logs() -> None:
    text = "https://www.example.com/" + "x" * 5000
    code = classify(text, SITE)
    assert isinstance(code, ForeignCode)
    assert len(code.text) <= MAX_SHOWN and code.text.endswith("…")
    assert len(shown("é" * 500)) <= MAX_SHOWN and len(shown("\n" * 79)) <= MAX_SHOWN
    assert shown("x" * MAX_SHOWN) == "x" * MAX_SHOWN
    assert shown("line\nbreak\x1b[31m") == "line\\nbreak\\x1b[31m"


def test_a_printed_tag_code_reads_back() -> None:
    assert classify(tag_qr_text(SITE, TAG), SITE) == TagCode(SITE, TAG)


# --- the entrance pairing ----------------------------------------------------------------------------------

VISIT = VisitCode(TOKEN)
OTHER_VISIT = VisitCode("ZyXwVuTsRqPoNmLkJiHgFe")
TAG_CODE = TagCode(SITE, TAG)
OTHER_TAG = TagCode(SITE, "t-0000000000ff")
VID, OTHER_VID = VISIT.visit_id, OTHER_VISIT.visit_id

# (what was shown at which second, then ticks) → outcomes, with a 60 s window.
PAIRING = [
    pytest.param([(0, VISIT), (10, TAG_CODE)], [Link(VID, TAG, 10)], id="visit then tag"),
    pytest.param([(0, TAG_CODE), (59.9, VISIT)], [Link(VID, TAG, 59.9)], id="tag then visit, just in time"),
    pytest.param([(0, TAG_CODE), (60, VISIT)], [Return(TAG, 0)], id="tag then visit, too late"),
    pytest.param([(0, VISIT), (61, "tick")], [Link(VID, None, 0)], id="visit alone"),
    pytest.param([(0, TAG_CODE), (61, "tick")], [Return(TAG, 0)], id="tag alone: returned"),
    pytest.param([(0, TAG_CODE), (59, "tick")], [], id="a tag still waiting"),
    pytest.param([(0, VISIT), (5, OTHER_VISIT), (6, TAG_CODE)], [Link(VID, None, 0), Link(OTHER_VID, TAG, 6)],
                 id="a second visit ends the first's wait"),
    pytest.param([(0, TAG_CODE), (5, OTHER_TAG), (6, VISIT)], [Return(TAG, 0), Link(VID, OTHER_TAG.tag_id, 6)],
                 id="a second tag: the first was returned"),
    pytest.param([(0, VISIT), (30, VISIT), (70, "tick")], [Link(VID, None, 0)],
                 id="the same visit again changes nothing"),
    pytest.param([(0, TAG_CODE), (30, TAG_CODE), (40, VISIT)], [Link(VID, TAG, 40)],
                 id="the same tag again changes nothing"),
    pytest.param([(0, VISIT), (1, TAG_CODE), (2, OTHER_TAG), (100, "tick")],
                 [Link(VID, TAG, 1), Return(OTHER_TAG.tag_id, 2)], id="a pair, then a tag alone"),
    pytest.param([(0, VISIT), (1, TAG_CODE), (20, TAG_CODE), (30, VISIT), (100, "tick")],
                 [Link(VID, TAG, 1)], id="the pair just made, shown again while handed over"),
    pytest.param([(0, VISIT), (1, TAG_CODE), (61, TAG_CODE), (200, "tick")],
                 [Link(VID, TAG, 1), Return(TAG, 61)], id="the lent tag shown after the window is a return"),
    pytest.param([(0, VISIT), (1, TAG_CODE), (2, OTHER_TAG), (3, OTHER_VISIT)],
                 [Link(VID, TAG, 1), Link(OTHER_VID, OTHER_TAG.tag_id, 3)], id="the next visitor at once"),
    pytest.param([(0, VISIT), (100, TAG_CODE), (200, "tick")], [Link(VID, None, 0), Return(TAG, 100)],
                 id="far apart: two lone codes"),
]


@pytest.mark.parametrize("script, expected", PAIRING)
def test_pairing(script: list[tuple[float, object]], expected: list[object]) -> None:
    pairing = EntrancePairing(60.0)
    outcomes: list[object] = []
    for at, what in script:
        if what == "tick":
            outcomes += pairing.tick(at)
        else:
            assert isinstance(what, VisitCode | TagCode)
            outcomes += pairing.feed(what, at)
    assert outcomes == expected


def test_a_stopping_reader_records_the_code_that_waits() -> None:
    pairing = EntrancePairing(60.0)
    assert pairing.feed(VISIT, 0) == []
    assert pairing.waiting == "visit"
    assert pairing.flush() == [Link(VID, None, 0)]
    assert pairing.waiting is None and pairing.flush() == []
    pairing.feed(TAG_CODE, 5)
    assert pairing.flush() == [Return(TAG, 5)]


def test_the_pairing_holds_no_token() -> None:
    pairing = EntrancePairing(60.0)
    pairing.feed(VISIT, 0)
    assert TOKEN not in repr(vars(pairing)) and TOKEN not in repr(pairing._pending)


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pair_window_s"):
        EntrancePairing(0)
