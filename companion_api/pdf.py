"""A visit as a small PDF: a title, sections of short texts, a footer on every page. Pure and dependency-free.

PDF 1.4 with the standard Helvetica and Helvetica-Bold fonts (every reader has them, nothing is embedded) in
WinAnsiEncoding, so French and most Western European text renders as written; a character outside it becomes
'?'. Lines are wrapped with the fonts' Adobe metrics and flow onto as many A4 pages as needed; the footer carries
"page / pages". The same input gives the same bytes (no creation date, an ID derived from the content).
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

PAGE_WIDTH = 595.28
PAGE_HEIGHT = 841.89
"""A4 in PostScript points."""
MARGIN = 56.69
"""20 mm on every side."""
FOOTER_SIZE = 8.0
TITLE_SIZE = 18.0
HEADING_SIZE = 13.0
BODY_SIZE = 10.5
LEADING = 1.3
"""Line height as a multiple of the font size."""
BULLET_INDENT = 12.0
ITEM_GAP = 4.0
SECTION_GAP = 12.0

REGULAR = "F1"
BOLD = "F2"
_FONT_NAMES = {REGULAR: "Helvetica", BOLD: "Helvetica-Bold"}
REPLACEMENT = "?"
_BULLET = "\u2022"

# Advance widths (1/1000 em) of the bytes 32..255 in WinAnsiEncoding, from Adobe's Helvetica and Helvetica-Bold
# metrics (AFM); 0 where WinAnsi has no character. Only used to wrap lines: readers bring the fonts themselves.
_REGULAR_WIDTHS = """
278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556 556 556 556 278 278 584
584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 556 833 722 778 667 778 722 667 611 722 667 944 667 667
611 278 278 278 469 556 333 556 556 500 556 556 278 556 556 222 222 500 222 833 556 556 556 556 333 500 278 556 500
722 500 500 500 334 260 334 584 0 556 0 222 556 333 1000 556 556 333 1000 667 333 1000 0 611 0 0 222 222 333 333 350
556 1000 333 1000 500 333 944 0 500 667 278 333 556 556 556 556 260 556 333 737 370 556 584 333 737 333 400 584 333
333 333 556 537 278 333 333 365 556 834 834 834 611 667 667 667 667 667 667 1000 722 667 667 667 667 278 278 278 278
722 722 778 778 778 778 778 584 778 722 722 722 722 667 667 611 556 556 556 556 556 556 889 500 556 556 556 556 278
278 278 278 556 556 556 556 556 556 556 584 611 556 556 556 556 500 556 500
"""
_BOLD_WIDTHS = """
278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556 556 556 556 333 333 584
584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 611 833 722 778 667 778 722 667 611 722 667 944 667 667
611 333 278 333 584 556 333 556 611 556 611 556 333 611 611 278 278 556 278 889 611 611 611 611 389 556 333 611 556
778 556 556 500 389 280 389 584 0 556 0 278 556 500 1000 556 556 333 1000 667 333 1000 0 611 0 0 278 278 500 500 350
556 1000 333 1000 556 333 944 0 500 667 278 333 556 556 556 556 280 556 333 737 370 556 584 333 737 333 400 584 333
333 333 611 556 278 333 333 365 556 834 834 834 611 722 722 722 722 722 722 1000 722 667 667 667 667 278 278 278 278
722 722 778 778 778 778 778 584 778 722 722 722 722 667 667 611 556 556 556 556 556 556 889 556 556 556 556 556 278
278 278 278 611 611 611 611 611 611 611 584 611 611 611 611 611 556 611 556
"""


def _widths(table: str) -> tuple[int, ...]:
    values = tuple(int(value) for value in table.split())
    assert len(values) == 224, len(values)
    return (0,) * 32 + values


_WIDTHS = {REGULAR: _widths(_REGULAR_WIDTHS), BOLD: _widths(_BOLD_WIDTHS)}

# Spaces and hyphens WinAnsi lacks, mapped to the nearest it has rather than '?': French typography puts a
# narrow no-break space before ':' and inside « ».
_SUBSTITUTES = {"\u202f": "\u00a0", "\u2007": "\u00a0", "\u2060": "", "\u200b": "", "\u200c": "", "\u200d": "",
                "\ufeff": "", "\u2010": "-", "\u2011": "-", "\t": " "}
_SUBSTITUTES.update({chr(code): " " for code in range(0x2000, 0x200b) if chr(code) not in _SUBSTITUTES})
_SUBSTITUTES["\u205f"] = " "


def encode_text(text: str) -> bytes:
    """`text` in WinAnsiEncoding: composed first (e + combining acute is é), typographic spaces mapped to spaces,
    any other character it lacks (and control characters) replaced by '?'."""
    result = bytearray()
    for char in unicodedata.normalize("NFC", text):
        char = _SUBSTITUTES.get(char, char)
        if not char:
            continue
        if char < " " or char == "\x7f":
            result += REPLACEMENT.encode()
            continue
        try:
            result += char.encode("cp1252")
        except UnicodeEncodeError:
            result += REPLACEMENT.encode()
    return bytes(result)


def text_width(encoded: bytes, font: str, size: float) -> float:
    """The width in points of WinAnsi bytes set in `font` (REGULAR or BOLD) at `size`."""
    widths = _WIDTHS[font]
    return sum(widths[byte] for byte in encoded) * size / 1000


def wrap(encoded: bytes, font: str, size: float, width: float) -> list[bytes]:
    """Lines of at most `width` points, broken at spaces (never at a no-break space; runs of spaces count as one);
    a word longer than a line is cut where the line is full. An empty text is one empty line."""
    limit = width * 1000 / size
    widths = _WIDTHS[font]
    space = widths[0x20]
    lines: list[bytes] = []
    current = b""
    current_width = 0
    for word in encoded.split(b" "):
        if not word:
            continue
        word_width = sum(widths[byte] for byte in word)
        if current and current_width + space + word_width <= limit:
            current += b" " + word
            current_width += space + word_width
            continue
        if current:
            lines.append(current)
        current, current_width = b"", 0
        while word_width > limit:
            cut, cut_width = 0, 0
            while cut < len(word) and cut_width + widths[word[cut]] <= limit:
                cut_width += widths[word[cut]]
                cut += 1
            cut = max(cut, 1)
            lines.append(word[:cut])
            word = word[cut:]
            word_width = sum(widths[byte] for byte in word)
        current, current_width = word, word_width
    if current or not lines:
        lines.append(current)
    return lines


@dataclass(frozen=True)
class _Line:
    font: str
    size: float
    x: float
    y: float
    text: bytes
    gray: float = 0.0


def visit_pdf(title: str, sections: Sequence[tuple[str, Sequence[str]]], *, footer: str,
              language: str | None = None) -> bytes:
    """A PDF document: `title` on top of the first page (and as the document's title), then each section's heading
    and its items, one paragraph each (a "\\n" inside an item starts a new line), bulleted; `footer` and "page /
    pages" at the bottom of every page. `language` (such as "fr") is declared for screen readers."""
    pages = _layout(title, sections)
    total = len(pages)
    streams = []
    for number, lines in enumerate(pages, start=1):
        lines = lines + _footer(footer, number, total)
        streams.append(_content_stream(lines))
    return _document(title, language, streams)


# --- layout ----------------------------------------------------------------------------------------------------

def _layout(title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> list[list[_Line]]:
    text_width_available = PAGE_WIDTH - 2 * MARGIN
    top = PAGE_HEIGHT - MARGIN
    bottom = MARGIN + FOOTER_SIZE * LEADING * 2  # room for the footer and a gap above it
    pages: list[list[_Line]] = [[]]
    y = top

    def room_for(height: float) -> bool:
        return y - height >= bottom

    def new_page() -> None:
        nonlocal y
        pages.append([])
        y = top

    def put(font: str, size: float, x: float, text: bytes, gray: float = 0.0) -> None:
        nonlocal y
        if not room_for(size * LEADING):
            new_page()
        y -= size * LEADING
        pages[-1].append(_Line(font, size, x, y + (LEADING - 1) * size, text, gray))

    if title.strip():
        for line in wrap(encode_text(title), BOLD, TITLE_SIZE, text_width_available):
            put(BOLD, TITLE_SIZE, MARGIN, line)
    for index, (heading, items) in enumerate(sections):
        if index or title.strip():
            y -= SECTION_GAP
        heading_lines = wrap(encode_text(heading), BOLD, HEADING_SIZE, text_width_available) if heading else []
        # A heading never ends a page alone: it moves on with the first line of its first item.
        needed = len(heading_lines) * HEADING_SIZE * LEADING + (BODY_SIZE * LEADING if items else 0)
        if pages[-1] and not room_for(needed):
            new_page()
        for line in heading_lines:
            put(BOLD, HEADING_SIZE, MARGIN, line)
        for item in items:
            y -= ITEM_GAP
            for paragraph_index, paragraph in enumerate(item.split("\n")):
                lines = wrap(encode_text(paragraph), REGULAR, BODY_SIZE, text_width_available - BULLET_INDENT)
                for line_index, line in enumerate(lines):
                    put(REGULAR, BODY_SIZE, MARGIN + BULLET_INDENT, line)
                    if paragraph_index == 0 and line_index == 0:
                        last = pages[-1][-1]
                        pages[-1].append(_Line(REGULAR, BODY_SIZE, MARGIN, last.y, encode_text(_BULLET)))
    return pages


def _footer(footer: str, number: int, total: int) -> list[_Line]:
    y = MARGIN
    counter = encode_text(f"{number} / {total}")
    counter_width = text_width(counter, REGULAR, FOOTER_SIZE)
    available = PAGE_WIDTH - 2 * MARGIN - counter_width - 12
    text = encode_text(footer.replace("\n", " "))
    if text_width(text, REGULAR, FOOTER_SIZE) > available:
        ellipsis = encode_text("\u2026")
        while text and text_width(text + ellipsis, REGULAR, FOOTER_SIZE) > available:
            text = text[:-1]
        text = text.rstrip() + ellipsis
    return [_Line(REGULAR, FOOTER_SIZE, MARGIN, y, text, 0.3),
            _Line(REGULAR, FOOTER_SIZE, PAGE_WIDTH - MARGIN - counter_width, y, counter, 0.3)]


# --- serialisation ---------------------------------------------------------------------------------------------

def _literal(encoded: bytes) -> bytes:
    """A PDF literal string; bytes outside printable ASCII as octal escapes, so the stream stays 7-bit."""
    out = bytearray(b"(")
    for byte in encoded:
        if byte in b"()\\":
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7f:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    return bytes(out + b")")


def _number(value: float) -> bytes:
    return (b"%.2f" % value).rstrip(b"0").rstrip(b".")


def _content_stream(lines: Sequence[_Line]) -> bytes:
    parts = []
    for line in lines:
        if not line.text:
            continue
        parts.append(b"BT %s g /%s %s Tf %s %s Td %s Tj ET" % (
            _number(line.gray), line.font.encode(), _number(line.size), _number(line.x), _number(line.y),
            _literal(line.text)))
    return b"\n".join(parts) + b"\n"


def _text_string(text: str) -> bytes:
    """A PDF text string (document information) in UTF-16BE with its byte order mark: any character survives."""
    return b"<" + (b"\xfe\xff" + text.encode("utf-16-be")).hex().upper().encode() + b">"


def _document(title: str, language: str | None, streams: Sequence[bytes]) -> bytes:
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the pages are numbered
    pages = add(b"")
    fonts = {key: add(b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % name.encode())
             for key, name in _FONT_NAMES.items()}
    resources = b"<< /Font << %s >> >>" % b" ".join(b"/%s %d 0 R" % (key.encode(), number)
                                                  for key, number in fonts.items())
    kids = []
    for stream in streams:
        compressed = zlib.compress(stream, 9)
        content = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(compressed), compressed))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources %s /Contents %d 0 R >>" % (
            pages, _number(PAGE_WIDTH), _number(PAGE_HEIGHT), resources, content)))
    objects[pages - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids), len(kids))
    lang = b" /Lang %s" % _text_string(language) if language else b""
    objects[catalog - 1] = (b"<< /Type /Catalog /Pages %d 0 R /ViewerPreferences << /DisplayDocTitle true >>%s >>"
                            % (pages, lang))
    info = add(b"<< /Title %s /Producer (museum companion) >>" % _text_string(title))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    document_id = hashlib.sha256(bytes(out)).hexdigest()[:32].encode()
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, catalog, info, document_id, document_id, xref)
    return bytes(out)
