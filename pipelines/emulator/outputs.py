"""Deterministic outputs of the text models, shaped as their published output schemas say.

Every output is a pure function of the input, the model and the seed; :func:`infer` also
returns what the request consumed, counted with the same token functions the budget
estimator uses (``pipelines.catalog.tokens``), so an estimate and a bill agree.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo, schema_properties
from pipelines.catalog.tokens import model_tokens
from pipelines.emulator import speech
from pipelines.emulator.envelope import bad_input
from pipelines.emulator.inputs import ModelInput
from pipelines.emulator.languages import language_code
from pipelines.emulator.vectors import cosine, embed, salt_for, words


@dataclass(frozen=True)
class Outcome:
    """A model's answer and what it consumed."""

    result: Any
    usage: Usage
    items: int


def infer(model: ModelInfo, inp: ModelInput, seed: int) -> Outcome:
    """Run ``model`` on a validated input."""
    if model.task == "transcribe":
        result = speech.transcribe(model, inp, seed)
        return Outcome(result, Usage(audio_seconds=inp.audio_seconds), 1)
    p = inp.payload
    if model.task == "embed":
        if model.id == "@cf/baai/bge-m3" and "contexts" in p:
            return _bge_m3_contexts(model, p, seed)
        if "queries" in p or "documents" in p or model.id.startswith("@cf/qwen/"):
            return _qwen(model, p, seed)
        texts = _as_list(p["text"])
        pooling = str(p.get("pooling", "mean"))
        out = _embed_result(model, texts, seed, pooling, "data")
        return Outcome(out, Usage(_billed_tokens(model, texts, p)), len(texts))
    if model.task == "classify":
        return _classify(model, str(p["text"]), seed)
    if model.task == "rerank":
        return _rerank(model, p, seed)
    if model.task == "translate":
        return _translate(model, p, seed)
    raise bad_input(f"Error: model {model.id} has no emulated task {model.task!r}")


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _billed_tokens(model: ModelInfo, texts: Sequence[str], payload: dict[str, Any]) -> int:
    counts = model_tokens(model, texts)
    limit = model.max_input_tokens
    if limit is None:
        return sum(counts)
    if payload.get("truncate_inputs") is True:
        return sum(min(c, limit) for c in counts)
    for i, count in enumerate(counts):
        if count > limit:
            # Whether Cloudflare truncates or refuses is undocumented; refusing is the safe
            # reading (bge-m3's own schema says it errors unless truncate_inputs is set).
            raise bad_input(
                f"Error: input {i} has {count} tokens, over the model's limit of {limit}"
            )
    return sum(counts)


def _pooling_for(model: ModelInfo, requested: str) -> str:
    # bge-m3 takes no pooling parameter but reports one; it pools on [CLS].
    return "cls" if model.id == "@cf/baai/bge-m3" else requested


def _embed_result(
    model: ModelInfo, texts: list[str], seed: int, pooling: str, key: str
) -> dict[str, Any]:
    dim = model.dimensions or 768
    pooling = _pooling_for(model, pooling)
    vectors = embed(texts, dim, salt_for(model.id, pooling, seed))
    out: dict[str, Any] = {"shape": [len(texts), dim], key: vectors}
    if "pooling" in schema_properties(model.output_schema):
        out["pooling"] = pooling
    return out


def _bge_m3_contexts(model: ModelInfo, p: dict[str, Any], seed: int) -> Outcome:
    contexts = [str(c.get("text", "")) for c in p["contexts"]]
    if not contexts or any(not c for c in contexts):
        raise bad_input("Error: every context needs a non-empty 'text'")
    query = p.get("query")
    texts = contexts if query is None else [str(query), *contexts]
    tokens = _billed_tokens(model, texts, p)
    if query is None:
        return Outcome(
            _embed_result(model, contexts, seed, "cls", "response"), Usage(tokens), len(contexts)
        )
    dim = model.dimensions or 1024
    vectors = embed(texts, dim, salt_for(model.id, "cls", seed))
    scores = cosine(vectors[0], vectors[1:])
    ranked = sorted(range(len(contexts)), key=lambda i: (-scores[i], i))
    response = [{"id": i, "score": round(float(scores[i]), 6) + 0.0} for i in ranked]
    return Outcome({"response": response}, Usage(tokens), len(contexts))


def _qwen(model: ModelInfo, p: dict[str, Any], seed: int) -> Outcome:
    texts: list[str] = []
    for key in ("queries", "documents", "text"):  # the output lists queries first
        if key in p:
            texts.extend(_as_list(p[key]))
    if not texts:
        raise bad_input("Error: one of 'queries', 'documents' or 'text' is required at '/'")
    tokens = _billed_tokens(model, texts, p)
    dim = model.dimensions or 1024
    vectors = embed(texts, dim, salt_for(model.id, "last", seed))
    return Outcome({"data": vectors, "shape": [len(texts), dim]}, Usage(tokens), len(texts))


_POSITIVE = frozenset(
    "good great excellent amazing wonderful love loved loves lovely fantastic best happy "
    "awesome brilliant enjoy enjoyed enjoyable perfect nice like liked likes beautiful "
    "superb delightful pleasant recommend recommended favorite favourite fun glad "
    "outstanding impressive positive success successful incredible remarkable charming "
    "helpful friendly fast easy clean comfortable satisfied thanks thank exceptional "
    "fabulous terrific splendid joy pleased better win".split()
)
_NEGATIVE = frozenset(
    "bad terrible awful horrible hate hated hates worst poor boring disappointing "
    "disappointed disappointment sad angry ugly broken useless waste wasted annoying "
    "mediocre dislike disliked failed fail fails failure wrong slow rude dirty painful "
    "negative problem problems worse nasty pathetic dreadful unhappy refund bug bugs "
    "crash crashes crashed ridiculous unacceptable lousy horrid lose lost avoid".split()
)
_NEGATORS = frozenset("not no never nothing neither nor hardly without".split())
_SENTIMENT_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def sentiment_score(text: str) -> float:
    """P(POSITIVE) from a small lexicon with negation; never exactly 0.5."""
    score = 0.0
    flip_left = 0
    for word in _SENTIMENT_WORD.findall(text.lower()):
        if word in _NEGATORS or word.endswith("n't"):
            flip_left = 3
            continue
        polarity = (word in _POSITIVE) - (word in _NEGATIVE)
        if polarity and flip_left:
            polarity, flip_left = -polarity, 0  # a negator flips only the next opinion
        score += polarity
        flip_left = max(0, flip_left - 1)
    if score == 0:
        # Neutral text still gets a decisive-looking but stable label.
        tilt = (zlib.crc32(text.encode()) % 1000) / 1000.0 - 0.5
        return 0.5 + 0.1 * tilt + (0.001 if tilt >= 0 else -0.001)
    return min(0.9995, max(0.0005, 1.0 / (1.0 + math.exp(-1.8 * score))))


def _classify(model: ModelInfo, text: str, seed: int) -> Outcome:
    tokens = _billed_tokens(model, [text], {})
    s = round(sentiment_score(text), 6)
    labels = [{"label": "POSITIVE", "score": s}, {"label": "NEGATIVE", "score": round(1 - s, 6)}]
    labels.sort(key=lambda d: -float(d["score"]))  # type: ignore[arg-type]
    return Outcome(labels, Usage(tokens), 1)


def _rerank(model: ModelInfo, p: dict[str, Any], seed: int) -> Outcome:
    query = str(p["query"])
    contexts = [str(c.get("text", "")) for c in p["contexts"]]
    if not contexts or any(not c for c in contexts):
        raise bad_input("Error: every context needs a non-empty 'text' at '/contexts'")
    tokens = _billed_tokens(model, [query, *contexts], {})
    q = set(words(query))
    scores = []
    for text in contexts:
        c = set(words(text))
        overlap = len(q & c) / max(1, len(q))
        # a sigmoid keeps scores in (0, 1) like the real cross-encoder's probabilities
        scores.append(1.0 / (1.0 + math.exp(-8.0 * (overlap - 0.4))))
    ranked = sorted(range(len(contexts)), key=lambda i: (-scores[i], i))
    top_k = p.get("top_k")
    if isinstance(top_k, int):
        ranked = ranked[:top_k]
    response = [{"id": i, "score": round(scores[i], 6)} for i in ranked]
    return Outcome({"response": response}, Usage(tokens), len(contexts))


_TOKEN = re.compile(r"(\w+)")
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"


def _pseudo_word(word: str, target: str, seed: int) -> str:
    if word.isdigit():
        return word
    h = zlib.crc32(f"{target}:{seed}:{word.lower()}".encode())
    length = max(2, len(word) + (h % 3) - 1)
    letters = []
    for i in range(length):
        h = (h * 1103515245 + 12345) & 0x7FFFFFFF
        pool = _CONSONANTS if i % 2 == 0 else _VOWELS
        letters.append(pool[h % len(pool)])
    out = "".join(letters)
    return out.capitalize() if word[:1].isupper() else out


def translate_text(text: str, target: str, seed: int) -> str:
    """The emulated translation: a target marker plus a stable word-by-word transform."""
    parts = _TOKEN.split(text)
    body = "".join(_pseudo_word(t, target, seed) if i % 2 else t for i, t in enumerate(parts))
    return f"[{target}] {body}"


def _translate(model: ModelInfo, p: dict[str, Any], seed: int) -> Outcome:
    text = str(p["text"])
    target = language_code(str(p["target_lang"]), "target_lang")
    language_code(str(p.get("source_lang", "en")), "source_lang")
    input_tokens = _billed_tokens(model, [text], {})
    translated = text if not text.strip() else translate_text(text, target, seed)
    output_tokens = sum(model_tokens(model, [translated]))
    return Outcome({"translated_text": translated}, Usage(input_tokens, output_tokens), 1)
