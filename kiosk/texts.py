"""Every string of the kiosk's own interface ("chrome"), in French and English. Pure: no Kivy.

The museum's content (room names, titles, texts) comes from the pack in every pack language; the chrome exists in
`UI_LANGUAGES` only. A pack language the chrome does not have (say "de") shows its content in German and the
chrome in English, the language most visitors share (`ui_language`). French typography: a narrow no-break space
before "?", ":" and inside « », so a line never starts with the punctuation.
"""

from __future__ import annotations

from types import MappingProxyType

UI_LANGUAGES = ("fr", "en")
FALLBACK_LANGUAGE = "en"
NNBSP = "\u202f"  # narrow no-break space, French typography
NBSP = "\u00a0"

STRINGS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType({
    key: MappingProxyType(value) for key, value in {
        "no_content_title": {"fr": "Le contenu arrive", "en": "Content is on its way"},
        "no_content_body": {"fr": "Cette borne attend ses contenus. Merci de votre patience.",
                            "en": "This kiosk is waiting for its content. Thank you for your patience."},
        "touch_to_start": {"fr": "Touchez pour commencer", "en": "Touch to start"},
        "rooms": {"fr": "Les salles", "en": "Rooms"},
        "works_count": {"fr": "{count} œuvre(s)", "en": "{count} work(s)"},
        "previous": {"fr": "Précédent", "en": "Previous"},
        "next": {"fr": "Suivant", "en": "Next"},
        "page": {"fr": "Page {page} sur {pages}", "en": "Page {page} of {pages}"},
        "my_visit_button": {"fr": "Ma visite ({count})", "en": "My visit ({count})"},
        "end_visit": {"fr": "Terminer ma visite", "en": "End my visit"},
        "large_text": {"fr": "Texte agrandi", "en": "Large text"},
        "high_contrast": {"fr": "Contraste élevé", "en": "High contrast"},
        "sign_language": {"fr": "Langue des signes (LSF)", "en": "Sign language (LSF)"},
        "audio_description": {"fr": "Audiodescription", "en": "Audio description"},
        "back": {"fr": "Retour", "en": "Back"},
        "take_home": {"fr": "Emporter chez moi", "en": "Take it home"},
        "collected": {"fr": "Dans ma visite", "en": "In my visit"},
        "enlarge_hint": {"fr": "Touchez l’image pour l’agrandir", "en": "Touch the picture to enlarge it"},
        "close": {"fr": "Fermer", "en": "Close"},
        "audio_play": {"fr": "Écouter", "en": "Listen"},
        "audio_pause": {"fr": "Pause", "en": "Pause"},
        "audio_resume": {"fr": "Reprendre", "en": "Resume"},
        "audio_title": {"fr": "Audiodescription", "en": "Audio description"},
        "audio_none": {"fr": "Pas d’audiodescription pour cette œuvre",
                       "en": "No audio description for this work"},
        "audio_failed": {"fr": "L’audiodescription ne peut pas être lue", "en": "The audio description cannot play"},
        "lsf_show": {"fr": "Voir en LSF", "en": "Watch in LSF"},
        "lsf_hide": {"fr": "Masquer la vidéo LSF", "en": "Hide the LSF video"},
        "lsf_none": {"fr": "Pas de vidéo LSF pour cette œuvre", "en": "No LSF video for this work"},
        "image_alt": {"fr": f"Description de l’image{NNBSP}: {{alt}}", "en": "Picture description: {alt}"},
        "my_visit_title": {"fr": "Ma visite", "en": "My visit"},
        "my_visit_empty": {"fr": f"Touchez «{NNBSP}Emporter chez moi{NNBSP}» sur une œuvre pour la retrouver ici.",
                           "en": "Touch “Take it home” on a work to find it here."},
        "qr_explain": {"fr": "Scannez ce code avec votre téléphone pour retrouver ces œuvres chez vous. Le lien est "
                             "personnel, ne le partagez pas. Il disparaît de cette borne à la fin de votre visite.",
                       "en": "Scan this code with your phone to find these works at home. The link is personal: "
                             "do not share it. It disappears from this kiosk when your visit ends."},
        "qr_none": {"fr": "Le code apparaîtra ici dès que vous aurez emporté une œuvre.",
                    "en": "The code appears here once you have taken a work home."},
        "still_there_title": {"fr": f"Êtes-vous toujours là{NNBSP}?", "en": "Are you still there?"},
        "still_there_body": {"fr": "Votre visite se termine dans {seconds} s.",
                             "en": "Your visit ends in {seconds} s."},
        "still_here": {"fr": "Je suis toujours là", "en": "I’m still here"},
        "qr_visit_found": {"fr": f"Visite retrouvée{NNBSP}! Les œuvres que vous emportez s’ajoutent à votre page "
                                 "de visite.",
                           "en": "Visit found! The works you take home are added to your visit page."},
        "qr_tag_linked": {"fr": f"Badge associé à votre visite{NNBSP}: les œuvres devant lesquelles vous vous "
                                "arrêtez seront sur votre page de visite.",
                          "en": "Tag linked to your visit: the works you stop at will be on your visit page."},
        "qr_not_ours": {"fr": "Ce code n’est pas un code du musée.", "en": "This is not one of the museum’s codes."},
    }.items()
})

LANGUAGE_NAMES = MappingProxyType({
    "fr": "Français", "en": "English", "de": "Deutsch", "es": "Español", "it": "Italiano", "nl": "Nederlands",
    "pt": "Português", "ca": "Català", "br": "Brezhoneg", "oc": "Occitan", "eu": "Euskara", "ru": "Русский",
    "pl": "Polski", "el": "Ελληνικά", "sv": "Svenska", "da": "Dansk",
})
"""Each language's name in itself, for the language buttons (a visitor looks for their own language's name).
Scripts the kiosk's font (Roboto) covers only: a name it cannot draw would show as empty boxes."""


def ui_language(language: str) -> str:
    """The chrome language for a content language: itself when the chrome has it, fr for fr-CA, else English."""
    if language in UI_LANGUAGES:
        return language
    base = language.split("-", 1)[0]
    return base if base in UI_LANGUAGES else FALLBACK_LANGUAGE


def text(key: str, language: str, **values: object) -> str:
    """One chrome string in the language's chrome language, with `{name}` fields filled from `values`."""
    template = STRINGS[key][ui_language(language)]
    return template.format(**values) if values else template


def strings_for(language: str) -> dict[str, str]:
    """Every chrome string, unformatted (fields such as {count} left in), for the kv bindings."""
    chrome = ui_language(language)
    return {key: versions[chrome] for key, versions in STRINGS.items()}


def language_name(language: str) -> str:
    """A language button's label: the language's own name, or the tag in capitals when we do not know it."""
    return LANGUAGE_NAMES.get(language) or LANGUAGE_NAMES.get(language.split("-", 1)[0]) or language.upper()


def bilingual(key: str) -> tuple[str, str]:
    """(French, English) of a string, for the screens shown before anyone has chosen a language."""
    return STRINGS[key]["fr"], STRINGS[key]["en"]


__all__ = ["FALLBACK_LANGUAGE", "LANGUAGE_NAMES", "STRINGS", "UI_LANGUAGES", "bilingual", "language_name",
           "strings_for", "text", "ui_language"]
