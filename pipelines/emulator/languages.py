"""The languages m2m100 translates between, by ISO 639 code and English name.

Cloudflare's schema describes ISO codes ("en", "es") while its examples send names
("english", "french"), so the emulator accepts both (facts §2.3).
"""

from __future__ import annotations

from pipelines.emulator.envelope import bad_input

# m2m100's 100 languages (facebook/m2m100_1.2B model card).
M2M100_LANGUAGES: dict[str, str] = {
    "af": "afrikaans", "am": "amharic", "ar": "arabic", "ast": "asturian",
    "az": "azerbaijani", "ba": "bashkir", "be": "belarusian", "bg": "bulgarian",
    "bn": "bengali", "br": "breton", "bs": "bosnian", "ca": "catalan",
    "ceb": "cebuano", "cs": "czech", "cy": "welsh", "da": "danish", "de": "german",
    "el": "greek", "en": "english", "es": "spanish", "et": "estonian", "fa": "persian",
    "ff": "fulah", "fi": "finnish", "fr": "french", "fy": "western frisian",
    "ga": "irish", "gd": "scottish gaelic", "gl": "galician", "gu": "gujarati",
    "ha": "hausa", "he": "hebrew", "hi": "hindi", "hr": "croatian",
    "ht": "haitian creole", "hu": "hungarian", "hy": "armenian", "id": "indonesian",
    "ig": "igbo", "ilo": "iloko", "is": "icelandic", "it": "italian", "ja": "japanese",
    "jv": "javanese", "ka": "georgian", "kk": "kazakh", "km": "khmer", "kn": "kannada",
    "ko": "korean", "lb": "luxembourgish", "lg": "ganda", "ln": "lingala", "lo": "lao",
    "lt": "lithuanian", "lv": "latvian", "mg": "malagasy", "mk": "macedonian",
    "ml": "malayalam", "mn": "mongolian", "mr": "marathi", "ms": "malay",
    "my": "burmese", "ne": "nepali", "nl": "dutch", "no": "norwegian",
    "ns": "northern sotho", "oc": "occitan", "or": "oriya", "pa": "punjabi",
    "pl": "polish", "ps": "pashto", "pt": "portuguese", "ro": "romanian",
    "ru": "russian", "sd": "sindhi", "si": "sinhala", "sk": "slovak", "sl": "slovenian",
    "so": "somali", "sq": "albanian", "sr": "serbian", "ss": "swati", "su": "sundanese",
    "sv": "swedish", "sw": "swahili", "ta": "tamil", "th": "thai", "tl": "tagalog",
    "tn": "tswana", "tr": "turkish", "uk": "ukrainian", "ur": "urdu", "uz": "uzbek",
    "vi": "vietnamese", "wo": "wolof", "xh": "xhosa", "yi": "yiddish", "yo": "yoruba",
    "zh": "chinese", "zu": "zulu",
}  # fmt: skip

_BY_NAME = {name: code for code, name in M2M100_LANGUAGES.items()}
_ALIASES = {"farsi": "fa", "mandarin": "zh", "filipino": "tl", "gaelic": "gd", "nb": "no"}


def language_code(value: str, field: str) -> str:
    """The ISO code for a code ("fr", "pt-BR") or a name ("French"); 400 / 5006 otherwise."""
    key = value.strip().lower().replace("_", "-")
    if key in M2M100_LANGUAGES:
        return key
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key in _ALIASES:
        return _ALIASES[key]
    base = key.split("-", 1)[0]
    if base in M2M100_LANGUAGES:
        return base
    raise bad_input(f"Error: unsupported language {value!r} at '/{field}'")
