"""Token counts that neurons are billed by.

bge-*-en-v1.5 and distilbert-sst-2 use lowercased BERT WordPiece; we ship its 30,522-line
vocabulary and count exactly with ``tokenizers`` (special tokens [CLS]/[SEP] included, the
conservative reading of an undocumented detail). For models whose tokenizer we cannot ship
(bge-m3, qwen3-embedding, m2m100, bge-reranker) we use a documented conservative estimate:
``ceil(utf8_bytes / 3) + 2`` — English SentencePiece/BPE averages about 4 bytes a token and
CJK about 3, so this over-counts rather than under-counts. The emulator bills with the same
functions, so an estimate and a bill agree unless the real service counts differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from importlib import resources

from tokenizers import BertWordPieceTokenizer

from pipelines.catalog.models import ModelInfo, TokenizerKind

_SPECIAL_TOKENS = 2  # [CLS] ... [SEP], or <s> ... </s>


@cache
def _bert() -> BertWordPieceTokenizer:
    vocab = resources.files("pipelines.catalog").joinpath("data", "bert-uncased-vocab.txt")
    with resources.as_file(vocab) as path:
        return BertWordPieceTokenizer(str(path), lowercase=True)


def estimate_tokens(text: str) -> int:
    """The conservative estimate used where no exact tokenizer ships."""
    return math.ceil(len(text.encode("utf-8")) / 3) + _SPECIAL_TOKENS


def count_tokens_many(kind: TokenizerKind, texts: Sequence[str]) -> list[int]:
    """Token counts for many texts at once (the batch path is much faster)."""
    if not texts:
        return []
    if kind == "bert-uncased":
        return [len(enc.ids) for enc in _bert().encode_batch(list(texts))]
    if kind == "estimate":
        return [estimate_tokens(t) for t in texts]
    return [0 for _ in texts]


def count_tokens(kind: TokenizerKind, text: str) -> int:
    """Token count for one text."""
    return count_tokens_many(kind, [text])[0]


def model_tokens(model: ModelInfo, texts: Sequence[str]) -> list[int]:
    """Token counts for ``texts`` with ``model``'s tokenizer."""
    return count_tokens_many(model.tokenizer, texts)


def truncate_to_tokens(kind: TokenizerKind, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` (special tokens included)."""
    if count_tokens(kind, text) <= max_tokens:
        return text
    if kind == "bert-uncased":
        enc = _bert().encode(text)
        # offsets index the original text; keep the first max_tokens-2 real tokens
        keep = enc.offsets[1 : max_tokens - 1]
        return text[: keep[-1][1]] if keep else ""
    budget = max(0, (max_tokens - _SPECIAL_TOKENS) * 3)
    return text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
