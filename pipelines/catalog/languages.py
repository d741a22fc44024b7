"""The languages ``@cf/meta/m2m100-1.2b`` translates between: its 100 ISO 639 codes, their
English names, and the other spellings people write.

This is the one list: the job checks, the translate task and the emulator all read it, so
a code the model knows is accepted everywhere and a typo fails when the job is loaded,
before any neuron is spent. The codes are those of the model card (facebook/m2m100_1.2B,
"Languages covered"); Cloudflare's schema describes ISO codes while its examples send
English names ("french"), so both are accepted (facts §2.3).
"""

from __future__ import annotations

# code → English name, as the model card lists them.
LANGUAGES: dict[str, str] = {
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

LANGUAGE_CODES: tuple[str, ...] = tuple(LANGUAGES)

# Other names and codes people write for these languages: legacy ISO codes (iw, in, ji,
# jw), ISO 639-2/3 codes of the common ones, alternative English names and endonyms.
_ALIASES: dict[str, str] = {
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "nn": "no", "fil": "tl",
    "nso": "ns", "eng": "en", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de",
    "spa": "es", "ita": "it", "por": "pt", "rus": "ru", "zho": "zh", "chi": "zh",
    "jpn": "ja", "kor": "ko", "ara": "ar", "hin": "hi", "nld": "nl", "dut": "nl",
    "mandarin": "zh", "chinese (simplified)": "zh", "chinese (traditional)": "zh",
    "farsi": "fa", "filipino": "tl", "gaelic": "gd", "frisian": "fy", "flemish": "nl",
    "castilian": "es", "haitian": "ht", "ilocano": "ilo", "luganda": "lg",
    "sepedi": "ns", "pedi": "ns", "swazi": "ss", "setswana": "tn", "panjabi": "pa",
    "odia": "or", "sinhalese": "si", "moldovan": "ro",
    "norwegian bokmal": "no", "norwegian bokmål": "no", "bokmal": "no", "bokmål": "no",
    "bahasa": "id", "bahasa indonesia": "id", "bahasa melayu": "ms",
    "deutsch": "de", "français": "fr", "francais": "fr", "español": "es", "espanol": "es",
    "italiano": "it", "português": "pt", "portugues": "pt", "nederlands": "nl",
    "svenska": "sv", "dansk": "da", "suomi": "fi", "polski": "pl", "türkçe": "tr",
    "turkce": "tr", "русский": "ru", "українська": "uk", "日本語": "ja", "中文": "zh",
    "한국어": "ko", "العربية": "ar", "עברית": "he", "हिन्दी": "hi", "ελληνικά": "el",
}  # fmt: skip
_BY_NAME: dict[str, str] = {
    **{name: code for code, name in LANGUAGES.items()},
    **_ALIASES,
}


def normalize_language(value: str) -> str | None:
    """The code for ``value`` (a code like ``"fr"``, ``"FR"``, ``"pt-BR"``, ``"zh_Hans"`` or
    a name like ``"French"``), or ``None`` when m2m100 does not know the language."""
    text = " ".join(value.strip().lower().replace("_", "-").split())
    if text in LANGUAGES:
        return text
    if text in _BY_NAME:
        return _BY_NAME[text]
    # A region or script tag (pt-BR, zh-Hans, sr-Latn) narrows a language known as a whole.
    base, dash, _ = text.partition("-")
    if not dash:
        return None
    if base in LANGUAGES:
        return base
    return _BY_NAME.get(base) if len(base) <= 3 else None


def describe_languages() -> str:
    """The accepted codes as one line, for error messages."""
    return ", ".join(LANGUAGE_CODES) + " (or the English name)"
