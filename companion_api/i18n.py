"""The phone pages' languages: the gettext catalogues, the visitor's language, and the page templates in it.

Babel and Jinja2 are imported here only. The `.po` files under `locales/` are read at startup with Babel and
turned into gettext catalogues in memory (no compiled `.mo` file to forget to rebuild). Each language has its
own Jinja2 environment with its catalogue installed, so a render never touches another request's language.
Messages are English source strings: a missing French translation shows the English text, never a key.
"""

from __future__ import annotations

import gettext
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

PACKAGE_DIR = Path(__file__).resolve().parent
LOCALES_DIR = PACKAGE_DIR / "locales"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

LANGUAGES = ("fr", "en")
"""The interface languages, in the order a page offers them; the first is the fallback when nothing else says."""
LANGUAGE_NAMES = {"fr": "Français", "en": "English"}
"""Each language named in itself, as a language switch shows it."""
LANG_COOKIE = "lang"
MAX_ACCEPT_LANGUAGE = 512
"""An Accept-Language header is parsed up to this length: a real one is a few dozen characters."""


def load_translations(language: str, locales_dir: Path = LOCALES_DIR) -> gettext.NullTranslations:
    """The catalogue of `language` from its `.po` file, compiled in memory; English needs none."""
    path = locales_dir / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def negotiate(query: str | None, cookie: str | None, accept_language: str | None,
              available: Sequence[str]) -> str:
    """The page's language: an explicit `?lang=` beats the `lang` cookie, which beats the browser's
    Accept-Language (by q-value, then order), which beats the first of `available` (the museum's first
    language the interface speaks)."""
    for explicit in (query, cookie):
        if explicit is not None and explicit in available:
            return explicit
    for language in accepted_languages(accept_language or ""):
        if language in available:
            return language
        primary = language.split("-", 1)[0]
        if primary in available:
            return primary
    return available[0]


def accepted_languages(header: str) -> list[str]:
    """The languages of an Accept-Language header, best first (q-values, then order); q=0 means "not this"."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        tag = pieces[0].lower()
        if not tag or tag == "*" or len(tag) > 35:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def interface_languages(content_languages: Iterable[str]) -> tuple[str, ...]:
    """The languages a museum's pages can be shown in: its own that the interface speaks, else all of ours."""
    both = tuple(language for language in content_languages if language in LANGUAGES)
    return both or LANGUAGES


@dataclass(frozen=True)
class LanguageLink:
    language: str
    label: str
    href: str
    current: bool


def language_links(current: str, available: Sequence[str]) -> list[LanguageLink]:
    """The language switch of a page: the same page with `?lang=` for each language. The links are relative (the
    page's own path), so a page holds no more of its URL than it must: the "not found" page is the same bytes
    whatever link led to it."""
    return [LanguageLink(language, LANGUAGE_NAMES.get(language, language), f"?lang={language}",
                         language == current) for language in available]


def format_day(day: str, language: str) -> str:
    """`2026-11-25` as the visitor reads a date: "25 novembre 2026", "November 25, 2026"."""
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        return day
    return format_date(parsed, format="long", locale=language)


class Pages:
    """The page templates, one Jinja2 environment per interface language."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR, locales_dir: Path = LOCALES_DIR,
                 static_dir: Path = STATIC_DIR) -> None:
        self.static_versions = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                                for path in sorted(static_dir.iterdir()) if path.is_file()}
        self.translations = {language: load_translations(language, locales_dir) for language in LANGUAGES}
        self._environments = {language: self._environment(templates_dir, language) for language in LANGUAGES}

    def _environment(self, templates_dir: Path, language: str) -> Environment:
        environment = Environment(loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(default=True),
                                  undefined=StrictUndefined, extensions=["jinja2.ext.i18n"], trim_blocks=True,
                                  lstrip_blocks=True, auto_reload=False)
        environment.install_gettext_translations(self.translations[language], newstyle=True)  # type: ignore[attr-defined]
        environment.globals["static"] = self.static_url
        environment.globals["lang"] = language
        environment.filters["day"] = lambda day: format_day(day, language)
        return environment

    def static_url(self, name: str) -> str:
        """A static file's URL, versioned by its content so that browsers may keep it as long as it is unchanged."""
        return f"/static/{name}?v={self.static_versions[name]}"

    def gettext(self, language: str, message: str) -> str:
        """One message in `language`, for text outside a template (a header, a PDF)."""
        return self.translations.get(language, self.translations[LANGUAGES[0]]).gettext(message)

    def template_messages(self) -> set[str]:
        """Every message the templates translate (what each `.po` file must hold)."""
        environment = self._environments[LANGUAGES[0]]
        messages: set[str] = set()
        for name in environment.list_templates(extensions=["html"]):
            source, _, _ = environment.loader.get_source(environment, name)  # type: ignore[union-attr]
            for _, _, message in environment.extract_translations(source):  # type: ignore[attr-defined]
                messages.add(message if isinstance(message, str) else message[0])
        return messages

    def render(self, template: str, language: str, context: Mapping[str, Any]) -> str:
        """A page in `language` (one of LANGUAGES)."""
        return self._environments[language].get_template(template).render(context)
