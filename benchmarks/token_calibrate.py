"""Fit the token estimators' weights (``pipelines/catalog/data/tokenizers.json``) on the
corpus's exact counts; run through ``python3 benchmarks/token_accuracy.py --calibrate``.

1. A non-negative least-squares fit of the features (:mod:`pipelines.catalog.estimate`)
   to the exact counts, each text weighted by 1 / its count (relative errors).
2. Lean high: a script whose mean error is below +1 % gets the weights of its own
   characters raised until it is not; the features every script shares (Latin letters,
   digits, punctuation, word starts) are raised for the Latin-script groups, but never so
   far that English goes over +4.5 %.
3. m2m100 (no tokenizer to fit against): XLM-R's weights for Latin text, raised until
   every published m2m100 encoding is met; other scripts get the old bound of one token
   per 3 UTF-8 bytes of each character (no exact counts exist for them).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from pipelines.catalog.estimate import FEATURES, features

SHARED = ("latin", "latin_ext", "digit", "punct", "other", "words", "known")
OWN = {
    "cyrillic": ("cyrillic",), "greek": ("greek",), "arabic": ("arabic",),
    "hebrew": ("hebrew",), "devanagari": ("indic",), "bengali": ("indic",),
    "thai": ("thai",), "han": ("han", "cjk_punct"), "japanese": ("kana",),
    "hangul": ("hangul",),
}  # fmt: skip
LATIN_GROUPS = ("english", "latin", "latin-vietnamese", "mixed")
TARGET, ENGLISH_CAP = 0.01, 0.045
# UTF-8 bytes of a character of each class, for m2m100's bound on unmeasured scripts
BYTES = {
    "cyrillic": 2, "greek": 2, "arabic": 2, "hebrew": 2, "indic": 3, "thai": 3,
    "hangul": 3, "kana": 3, "han": 3, "cjk_punct": 3, "other": 4,
}  # fmt: skip


def _means(w: np.ndarray, x: np.ndarray, ref: np.ndarray, specials: int, scripts: list[str]):
    est = np.array([specials + max(0, math.ceil(v - 1e-9)) for v in x @ w])
    errors: dict[str, list[float]] = {}
    for script, e, r in zip(scripts, est, ref, strict=True):
        errors.setdefault(script, []).append(e / r - 1)
    return {k: statistics.fmean(v) for k, v in errors.items()}


def fit(texts: list[dict[str, Any]], kind: str, specials: int) -> dict[str, float]:
    chosen = [t for t in texts if kind in t["reference"]]
    x = np.array([features(t["text"]) for t in chosen], float)
    ref = np.array([t["reference"][kind] for t in chosen], float)
    scripts = [t["script"] for t in chosen]
    y = ref - specials
    scale = 1 / np.maximum(y, 1)
    w, _ = nnls(x * scale[:, None], y * scale)
    idx = {name: i for i, name in enumerate(FEATURES)}
    for _ in range(30):
        means = _means(w, x, ref, specials, scripts)
        for script, names in OWN.items():
            if script in means and means[script] < TARGET:
                for name in names:
                    w[idx[name]] *= 1 + (TARGET - means[script]) / 2
        low = min(means[s] for s in LATIN_GROUPS if s in means)
        if low < TARGET and means["english"] < ENGLISH_CAP:
            step = min(TARGET - low, ENGLISH_CAP - means["english"]) / 2
            for name in SHARED:
                w[idx[name]] *= 1 + step
    return {name: round(float(w[idx[name]]), 4) for name in FEATURES if w[idx[name]] > 0}


def m2m100(texts: list[dict[str, Any]], xlmr: dict[str, float], specials: int) -> dict[str, float]:
    published = [t for t in texts if "m2m100" in t["reference"]]
    weights = {name: xlmr.get(name, 0.0) for name in SHARED}
    for step in range(200):
        factor = 1 + step / 100
        trial = {k: v * factor for k, v in weights.items()}
        w = np.array([trial.get(name, 0.0) for name in FEATURES])
        ok = all(
            specials + math.ceil(float(np.dot(w, features(t["text"]))) - 1e-9)
            >= 0.97 * t["reference"]["m2m100"]
            for t in published
        )
        if ok:
            break
    bound = {name: round(n / 3, 4) for name, n in BYTES.items()}
    return {**{k: round(v, 4) for k, v in trial.items()}, **bound}


def calibrate(texts: list[dict[str, Any]], facts_path: Path) -> None:
    facts = json.loads(facts_path.read_text(encoding="utf-8"))
    entries = facts["tokenizers"]
    for kind in ("xlm-roberta", "qwen3", "llama3", "o200k-harmony", "tekken"):
        entries[kind]["estimate"] = fit(texts, kind, entries[kind]["specials"])
    entries["m2m100"]["estimate"] = m2m100(
        texts, entries["xlm-roberta"]["estimate"], entries["m2m100"]["specials"]
    )
    facts_path.write_text(json.dumps(facts, ensure_ascii=False, indent=1) + "\n", "utf-8")
    for kind in ("xlm-roberta", "qwen3", "llama3", "o200k-harmony", "tekken", "m2m100"):
        print(kind, entries[kind]["estimate"])
