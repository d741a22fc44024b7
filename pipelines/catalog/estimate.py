"""Calibrated token estimates, for tokenizers that cannot run here.

A text is described by a few counts: characters of each script class (Latin, Cyrillic,
Han, ...), word starts, and ASCII words that are whole words of the BERT vocabulary we
already ship (common words are one token in every multilingual vocabulary, while rarer
words split into pieces). The estimate is a weighted sum of those counts, rounded up, plus
the tokenizer's special tokens. The weights of each tokenizer live in
``data/tokenizers.json``; ``benchmarks/token_accuracy.py --calibrate`` fits them on the
multilingual corpus in ``benchmarks/data/token_corpus.json`` against exact counts and then
raises them until no script is under-counted (an under-count risks the daily cap, an
over-count only stops a run early), and the same benchmark reports the error per script.

Counting is a handful of regular-expression scans per text: no Python loop over
characters, so a 100-text request stays cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Script classes by Unicode block. A character in none of them (emoji, symbols, scripts
# not listed) counts as "other".
_CLASSES: dict[str, str] = {
    "latin": "A-Za-z",
    "latin_ext": "\u00c0-\u024f\u1e00-\u1eff",
    "digit": "0-9",
    "punct": "!-/:-@\\[-`{-~",
    "cyrillic": "\u0400-\u052f",
    "greek": "\u0370-\u03ff\u1f00-\u1fff",
    "arabic": "\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff",
    "hebrew": "\u0590-\u05ff",
    "indic": "\u0900-\u0dff",
    "thai": "\u0e00-\u0eff",
    "hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "kana": "\u3040-\u30ff\u31f0-\u31ff",
    "han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff",
    "cjk_punct": "\u3000-\u303f\uff00-\uffef",
}
FEATURES: tuple[str, ...] = (*_CLASSES, "other", "words", "known")

_CLASS_RX = tuple(re.compile(f"[{chars}]") for chars in _CLASSES.values())
_OTHER_RX = re.compile(f"[^\\s{''.join(_CLASSES.values())}]")
_WORD_START_RX = re.compile(r"(?<!\S)\S")
# An ASCII letter run that is a whole word: not glued to another letter (é, ß, ...).
_ASCII_WORD_RX = re.compile(r"(?<![^\W\d_])[A-Za-z]+(?![^\W\d_])")
_LATIN, _WORDS, _KNOWN = 0, FEATURES.index("words"), FEATURES.index("known")


@cache
def known_words() -> frozenset[str]:
    """Whole alphabetic words of the uncased BERT vocabulary (package data)."""
    vocab = resources.files("pipelines.catalog").joinpath("data", "bert-uncased-vocab.txt")
    words = vocab.read_text(encoding="utf-8").split()
    return frozenset(w for w in words if w.isascii() and w.isalpha())


def features(text: str) -> tuple[int, ...]:
    """The counts :data:`FEATURES` names, for ``text``."""
    counts = [len(rx.findall(text)) for rx in _CLASS_RX]
    counts.append(len(_OTHER_RX.findall(text)))
    counts.append(len(_WORD_START_RX.findall(text)))
    known = known_words()
    hits = [w for w in _ASCII_WORD_RX.findall(text) if w.lower() in known]
    # a known word counts once as a whole, not as letters and a word start
    counts[_LATIN] -= sum(len(w) for w in hits)
    counts[_WORDS] = max(0, counts[_WORDS] - len(hits))
    counts.append(len(hits))
    return tuple(counts)


@dataclass(frozen=True)
class Estimator:
    """Weights per feature, and the special tokens every encoding adds."""

    weights: tuple[float, ...]
    specials: int

    @classmethod
    def from_mapping(cls, weights: Mapping[str, float], specials: int) -> Estimator:
        """From ``{"latin": 0.15, ...}``; a feature left out weighs nothing."""
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown estimate features: {sorted(unknown)}")
        return cls(tuple(float(weights.get(name, 0.0)) for name in FEATURES), specials)

    def count(self, text: str) -> int:
        """The estimated token count of ``text``, special tokens included."""
        raw = sum(w * n for w, n in zip(self.weights, features(text), strict=True))
        # a tiny epsilon keeps float noise from pushing an exact integer up by one
        return self.specials + max(0, math.ceil(raw - 1e-9))
