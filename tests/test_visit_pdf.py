"""The visit PDF: a valid file (checked by a small reader written here, and by poppler's pdftotext when installed),
French text as written, lines that fit, pages that flow."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from companion_api.pdf import (
    BODY_SIZE,
    BOLD,
    BULLET_INDENT,
    MARGIN,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    encode_text,
    text_width,
    visit_pdf,
    wrap,
)

FRENCH = "Élément à l’œil : « Œuvre » — déjà vu, ça coûte 3 € … naïf, Noël, garçon, façade, être, où"
FOOTER = "Musée des Beaux-Arts de Démo · gardé 13 mois"
Sections = Sequence[tuple[str, Sequence[str]]]


# --- a small PDF reader, enough to check what visit_pdf writes ------------------------------------------------

@dataclass(frozen=True)
class Line:
    font: str
    size: float
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Parsed:
    title: str
    catalog: bytes
    pages: list[list[Line]]

    def page_texts(self) -> list[list[str]]:
        return [[line.text for line in page] for page in self.pages]

    def body_lines(self) -> list[Line]:
        """Every line but the footers and bullets, in reading order."""
        return [line for page in self.pages for line in page if line.size >= BODY_SIZE and line.text != "•"]


_LITERAL = rb"\((?:\\.|[^\\)])*\)"
_SHOW = re.compile(rb"BT ([\d.]+) g /(F\d) ([\d.]+) Tf ([\d.]+) ([\d.]+) Td (" + _LITERAL + rb") Tj ET")
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")", b"\\": b"\\"}


def unescape(literal: bytes) -> bytes:
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        if body[i:i + 1] != b"\\":
            out.append(body[i])
            i += 1
            continue
        octal = re.match(rb"[0-7]{1,3}", body[i + 1:i + 4])
        if octal:
            out.append(int(octal.group(), 8))
            i += 1 + len(octal.group())
        else:
            out += _ESCAPES[body[i + 1:i + 2]]
            i += 2
    return bytes(out)


def parse_pdf(data: bytes) -> Parsed:
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF\n")
    startxref = re.search(rb"startxref\n(\d+)\n%%EOF\n\Z", data)
    assert startxref is not None
    xref_at = int(startxref.group(1))
    header = re.match(rb"xref\n0 (\d+)\n", data[xref_at:])
    assert header is not None
    count = int(header.group(1))
    table = data[xref_at + header.end():xref_at + header.end() + 20 * count]
    entries = [table[i * 20:(i + 1) * 20] for i in range(count)]
    assert entries[0] == b"0000000000 65535 f \n"
    objects: dict[int, bytes] = {}
    for number, entry in enumerate(entries[1:], start=1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry), entry
        offset = int(entry[:10])
        assert data[offset:].startswith(b"%d 0 obj\n" % number), f"xref entry {number} points elsewhere"
        end = data.index(b"\nendobj\n", offset)
        objects[number] = data[offset + len(b"%d 0 obj\n" % number):end]
    trailer = data[xref_at + header.end() + 20 * count:]
    assert trailer.startswith(b"trailer\n<< ")
    assert re.search(rb"/Size %d " % count, trailer)

    def ref(body: bytes, key: bytes) -> int:
        found = re.search(rb"/" + key + rb" (\d+) 0 R", body)
        assert found is not None, (key, body[:200])
        return int(found.group(1))

    catalog = objects[ref(trailer, b"Root")]
    info = objects[ref(trailer, b"Info")]
    title_hex = re.search(rb"/Title <([0-9A-F]+)>", info)
    assert title_hex is not None and title_hex.group(1).startswith(b"FEFF")
    title = bytes.fromhex(title_hex.group(1)[4:].decode()).decode("utf-16-be")
    pages_node = objects[ref(catalog, b"Pages")]
    kids = [int(n) for n in re.findall(rb"(\d+) 0 R", re.search(rb"/Kids \[([^\]]*)\]", pages_node).group(1))]  # type: ignore[union-attr]
    assert re.search(rb"/Count %d\b" % len(kids), pages_node)
    pages = []
    for kid in kids:
        page = objects[kid]
        assert b"/Type /Page " in page and b"/MediaBox [0 0 595.28 841.89]" in page
        stream_object = objects[ref(page, b"Contents")]
        length = int(re.search(rb"/Length (\d+)", stream_object).group(1))  # type: ignore[union-attr]
        raw = stream_object[stream_object.index(b"stream\n") + 7:]
        assert raw[length:] == b"\nendstream"
        content = zlib.decompress(raw[:length])
        lines = []
        for statement in content.splitlines():
            shown = _SHOW.fullmatch(statement)
            assert shown is not None, statement
            _, font, size, x, y, literal = shown.groups()
            lines.append(Line(font.decode(), float(size), float(x), float(y), unescape(literal).decode("cp1252")))
        pages.append(lines)
    return Parsed(title, catalog, pages)


def items_of(parsed: Parsed) -> list[str]:
    """The items back, each as its lines joined by spaces (a bullet starts an item)."""
    items: list[str] = []
    for page in parsed.pages:
        for index, line in enumerate(page):
            if line.text == "•":
                items.append(page[index - 1].text)
            elif line.x == MARGIN + BULLET_INDENT and (index + 1 >= len(page) or page[index + 1].text != "•"):
                items[-1] += " " + line.text
    return items


# --- the tests -------------------------------------------------------------------------------------------------

DOCUMENTS = {
    "empty": ("Ma visite", []),
    "one-item": ("My visit", [("Collected", ["The Milkmaid — Johannes Vermeer"])]),
    "empty-section": ("Ma visite", [("Rien encore", []), ("Ensuite", ["Une œuvre"])]),
    "multiline-item": ("Ma visite", [("Œuvres", ["La Laitière\nJohannes Vermeer, c. 1658\n\nConservée à Amsterdam."])]),
    "long-words": ("T" * 120, [("H" * 200, ["x" * 700, "a " * 400])]),
    "two-hundred": ("Ma visite", [("Œuvres", [f"Œuvre {i} " + "très belle " * (i % 17) for i in range(200)])]),
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_the_file_is_well_formed(name: str) -> None:
    title, sections = DOCUMENTS[name]
    data = visit_pdf(title, sections, footer=FOOTER)
    parsed = parse_pdf(data)
    assert parsed.title == title
    assert parsed.pages and all(page for page in parsed.pages)
    for number, page in enumerate(parsed.pages, start=1):
        footers = [line.text for line in page if line.y == MARGIN]
        assert footers == [FOOTER, f"{number} / {len(parsed.pages)}"]
        for line in page:
            right = line.x + text_width(encode_text(line.text), line.font, line.size)
            assert MARGIN <= line.x < right <= PAGE_WIDTH - MARGIN + 0.01, line
            assert MARGIN <= line.y <= PAGE_HEIGHT - MARGIN - line.size, line
    assert visit_pdf(title, sections, footer=FOOTER) == data  # no date, no randomness


def test_french_text_comes_back_exactly_as_written() -> None:
    parsed = parse_pdf(visit_pdf(f"Ma visite au musée — {FRENCH}", [("Œuvres à revoir", [FRENCH])],
                                 footer=FOOTER, language="fr"))
    assert parsed.title == f"Ma visite au musée — {FRENCH}"
    assert items_of(parsed) == [FRENCH]
    assert parsed.page_texts()[0][-2] == FOOTER
    assert b"/Lang <FEFF00660072>" in parsed.catalog


@pytest.mark.parametrize(("written", "shown"), [
    pytest.param("Regardez son œil\u202f: «\u202fAD\u202f»", "Regardez son œil\u00a0: «\u00a0AD\u00a0»",
                 id="narrow-no-break-space"),
    pytest.param("Cafe\u0301 et Noe\u0308l", "Café et Noël", id="combining-accents-composed"),
    pytest.param("Łódź, 北斎, 😀 and ≠", "?ód?, ??, ? and ?", id="outside-winansi"),
    pytest.param("tab\there, bell\x07", "tab here, bell?", id="control-characters"),
    pytest.param("a (b) \\c) ((", "a (b) \\c) ((", id="parentheses-and-backslash"),
    pytest.param("zero\u200bwidth, non\u2011breaking", "zerowidth, non-breaking", id="invisible-and-hyphen"),
])
def test_characters_outside_winansi(written: str, shown: str) -> None:
    assert items_of(parse_pdf(visit_pdf("t", [("s", [written])], footer="f"))) == [shown]


def test_lines_are_wrapped_at_spaces_to_fit_the_text_column() -> None:
    words = [f"mot{i}" for i in range(120)]
    paragraph = " ".join(words)
    parsed = parse_pdf(visit_pdf("t", [("s", [paragraph, "x" * 500])], footer="f"))
    body = [line for line in parsed.body_lines() if line.x == MARGIN + BULLET_INDENT]
    column = PAGE_WIDTH - 2 * MARGIN - BULLET_INDENT
    assert len(body) > 3
    for line in body:
        assert text_width(encode_text(line.text), REGULAR, BODY_SIZE) <= column
    wrapped = [line.text for line in body if line.text.startswith("mot")]
    assert " ".join(wrapped) == paragraph  # cut only between words, none lost
    # Each line is full: the next word would not have fitted.
    for line, following in itertools.pairwise(wrapped):
        assert text_width(encode_text(f"{line} {following.split()[0]}"), REGULAR, BODY_SIZE) > column
    long_word = [line.text for line in body if line.text.startswith("x")]
    assert "".join(long_word) == "x" * 500 and len(long_word) >= 3


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("", 100, [b""]),
    ("un deux", 1000, [b"un deux"]),
    ("aaaa bbbb", text_width(b"aaaa", REGULAR, 10), [b"aaaa", b"bbbb"]),
    ("à 22\u00a0h", text_width(b"\xe0 22", REGULAR, 10), [b"\xe0", b"22\xa0h"]),  # a no-break space holds on
    ("  un   deux  ", 1000, [b"un deux"]),
    ("W", 1, [b"W"]),  # narrower than one character: still one per line, never a loop
])
def test_wrap(text: str, width: float, expected: list[bytes]) -> None:
    assert wrap(encode_text(text), REGULAR, 10, width) == expected


def test_bold_is_measured_wider_than_regular() -> None:
    sample = encode_text("Œuvres collectionnées")
    assert text_width(sample, BOLD, 12) > text_width(sample, REGULAR, 12) > 0


def test_two_hundred_items_flow_over_pages_in_order() -> None:
    title, sections = DOCUMENTS["two-hundred"]
    parsed = parse_pdf(visit_pdf(title, sections, footer=FOOTER))
    assert len(parsed.pages) >= 4
    assert items_of(parsed) == [" ".join(item.split()) for item in sections[0][1]]
    assert parsed.page_texts()[0][0] == "Ma visite"
    # Pages are filled: each but the last ends near the bottom margin.
    for page in parsed.pages[:-1]:
        lowest = min(line.y for line in page if line.y > MARGIN)
        assert lowest < MARGIN + 80


def test_a_heading_never_ends_a_page_alone() -> None:
    # From 30 to 50 one-line items, the second heading comes at every height of the first page's foot once.
    for count in range(30, 50):
        sections = [("Œuvres", [f"Œuvre {i}" for i in range(count)]), ("Suggestions", ["Une suggestion"])]
        parsed = parse_pdf(visit_pdf("Ma visite", sections, footer=FOOTER))
        assert len(parsed.pages) in (1, 2)
        for page in parsed.pages:
            last = [line for line in page if line.y > MARGIN][-1]
            assert last.font == REGULAR, f"{count} items: the heading {last.text!r} ends a page alone"
        assert [line.text for line in parsed.pages[-1] if line.font == BOLD][-1:] == ["Suggestions"]


# --- an independent reader ---------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler's pdftotext is not installed "
                                                             "(apt-get install poppler-utils)")
def test_poppler_reads_the_text_the_accents_and_the_pages(tmp_path: Path) -> None:
    title, sections = DOCUMENTS["two-hundred"]
    sections = [("Œuvres à revoir", [FRENCH]), *sections]
    path = tmp_path / "visit.pdf"
    path.write_bytes(visit_pdf(title, sections, footer=FOOTER, language="fr"))
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=60,
                            check=True)
    assert result.stderr == b""  # poppler reports syntax errors and a broken xref on stderr
    text = result.stdout.decode("utf-8")
    pages = text.split("\f")[:-1]
    assert len(pages) == len(parse_pdf(path.read_bytes()).pages)
    flat = " ".join(text.split())
    assert "Œuvres à revoir" in flat and " ".join(FRENCH.split()) in flat
    # poppler may or may not see the narrow spaces around the slash of "n / N".
    total = len(pages)
    assert re.search(rf"\b1 ?/ ?{total}\b", pages[0]) and re.search(rf"\b{total} ?/ ?{total}\b", pages[-1])
    assert all(f"Œuvre {i} " in flat for i in range(200))
    if shutil.which("pdfinfo") is not None:
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, timeout=60, check=True)
        assert info.stderr == b""
        assert f"Title:           {title}" in info.stdout.decode("utf-8")
        assert f"Pages:           {len(pages)}" in info.stdout.decode("utf-8")
