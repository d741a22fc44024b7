"""Language codes that translation jobs accept, and English names that map to them.

The list is what ``@cf/meta/m2m100-1.2b`` is documented to translate well between; codes
are checked when a job is loaded so a typo fails before any neuron is spent.
"""

from __future__ import annotations

LANGUAGES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "ja": "japanese",
    "ko": "korean",
    "pt": "portuguese",
    "ru": "russian",
    "nl": "dutch",
    "sv": "swedish",
    "no": "norwegian",
    "da": "danish",
    "fi": "finnish",
    "pl": "polish",
    "tr": "turkish",
    "ar": "arabic",
    "he": "hebrew",
    "id": "indonesian",
    "th": "thai",
    "vi": "vietnamese",
    "hi": "hindi",
    "ms": "malay",
    "el": "greek",
    "cs": "czech",
    "sk": "slovak",
    "ro": "romanian",
    "hu": "hungarian",
    "bg": "bulgarian",
    "hr": "croatian",
    "sr": "serbian",
    "uk": "ukrainian",
}

LANGUAGE_CODES: tuple[str, ...] = tuple(LANGUAGES)

# Names people write instead of codes; the canonical English names are added below.
_ALIASES: dict[str, str] = {
    "mandarin": "zh",
    "chinese (simplified)": "zh",
    "norwegian bokmal": "no",
    "norwegian bokmål": "no",
    "bokmal": "no",
    "nb": "no",
    "iw": "he",
    "in": "id",
    "bahasa": "id",
    "bahasa indonesia": "id",
    "bahasa melayu": "ms",
    "deutsch": "de",
    "français": "fr",
    "francais": "fr",
    "español": "es",
    "espanol": "es",
    "castilian": "es",
    "italiano": "it",
    "português": "pt",
    "portugues": "pt",
    "nederlands": "nl",
    "flemish": "nl",
    "svenska": "sv",
    "dansk": "da",
    "suomi": "fi",
    "polski": "pl",
    "türkçe": "tr",
    "turkce": "tr",
    "русский": "ru",
    "日本語": "ja",
    "中文": "zh",
    "한국어": "ko",
}
_BY_NAME: dict[str, str] = {
    **{name: code for code, name in LANGUAGES.items()},
    **_ALIASES,
}


def normalize_language(value: str) -> str | None:
    """The code for ``value`` (a code like ``"fr"``, ``"FR"``, ``"fr-CA"`` or a name like
    ``"French"``), or ``None`` when it is not a supported language."""
    text = value.strip().lower().replace("_", "-")
    if text in LANGUAGES:
        return text
    if text in _BY_NAME:
        return _BY_NAME[text]
    # A region tag (pt-BR, zh-Hans) narrows a language we support as a whole.
    base = text.split("-", 1)[0]
    return base if base in LANGUAGES and "-" in text else None


def describe_languages() -> str:
    """The supported codes as one line, for error messages."""
    return ", ".join(LANGUAGE_CODES)
