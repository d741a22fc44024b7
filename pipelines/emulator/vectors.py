"""Deterministic embedding vectors by signed feature hashing.

Each lowercased word contributes its own feature and, at lower weight, its character
trigrams, so texts sharing words (or word stems) get a high cosine and unrelated texts a
cosine near zero. Hashes are ``zlib.crc32`` (stable across processes, unlike ``hash()``),
salted by model, pooling and seed, so ``cls`` vectors differ from ``mean`` ones as the
real models' do. The sparse hashed vectors are then turned by a fixed orthonormal transform
(random sign flips, then a discrete Hartley transform computed with numpy's FFT): cosines
are unchanged, but the vectors are dense like real embeddings, so response sizes (and what
a benchmark measures) are realistic, at O(n·d·log d) instead of a d x d matrix product.
The per-text work is a cached dict lookup per word; the rest is numpy.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")
_UNIGRAM_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.35
_MIX = np.uint64(0x9E3779B1)  # Knuth's multiplicative constant spreads crc bits over 32 bits
_MASK = np.uint64(0xFFFFFFFF)

Matrix = npt.NDArray[np.float32]


@lru_cache(maxsize=1 << 18)
def _features(word: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    padded = f"<{word}>"
    grams = [padded[i : i + 3] for i in range(len(padded) - 2)] if len(word) > 2 else []
    hashes = (zlib.crc32(word.encode()), *(zlib.crc32(b"#" + g.encode()) for g in grams))
    weights = (_UNIGRAM_WEIGHT, *([_TRIGRAM_WEIGHT] * len(grams)))
    return hashes, weights


@lru_cache(maxsize=8)
def _signs(dim: int) -> npt.NDArray[np.float64]:
    # PCG64 streams are stable across numpy versions and processes, so vectors are too.
    flips: npt.NDArray[np.float64] = np.random.default_rng(dim).choice([-1.0, 1.0], size=dim)
    return flips


def _spread(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """An orthonormal, dense-making transform of each row: sign flips, then Hartley."""
    n = matrix.shape[1]
    # For real input F[n-k] = conj(F[k]), so the Hartley transform Re F - Im F needs only
    # the half spectrum that rfft computes (several times faster than a full fft).
    half = np.fft.rfft(matrix * _signs(n), axis=1)
    out = np.empty_like(matrix)
    out[:, : half.shape[1]] = half.real - half.imag
    mirror = half[:, 1 : (n + 1) // 2]
    out[:, n - 1 : n // 2 : -1] = mirror.real + mirror.imag
    scaled: npt.NDArray[np.float64] = out / np.sqrt(n)
    return scaled


def salt_for(*parts: object) -> int:
    """A 32-bit salt from anything printable (model id, pooling, seed)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def words(text: str) -> list[str]:
    """The lowercased words of ``text`` (the text itself when it has none, e.g. "!!!")."""
    found = _WORD.findall(text.lower())
    return found or [text]


def embed(texts: Sequence[str], dim: int, salt: int) -> Matrix:
    """L2-normalised float32 vectors, one row per text."""
    n = len(texts)
    hashes: list[int] = []
    weights: list[float] = []
    rows: list[int] = []
    for i, text in enumerate(texts):
        start = len(hashes)
        for word in words(text):
            h, w = _features(word)
            hashes.extend(h)
            weights.extend(w)
        rows.extend([i] * (len(hashes) - start))
    if not hashes:
        return np.zeros((n, dim), dtype=np.float32)
    mixed = ((np.asarray(hashes, dtype=np.uint64) ^ np.uint64(salt)) * _MIX) & _MASK
    cols = (mixed % np.uint64(dim)).astype(np.int64)
    signs = 1.0 - 2.0 * ((mixed >> np.uint64(31)) & np.uint64(1)).astype(np.float64)
    flat = np.asarray(rows, dtype=np.int64) * dim + cols
    dense = np.bincount(flat, weights=np.asarray(weights) * signs, minlength=n * dim)
    matrix = dense.reshape(n, dim)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: Matrix = _spread(matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def cosine(a: Matrix, b: Matrix) -> npt.NDArray[np.float64]:
    """Cosine of each row of ``b`` with the single row ``a`` (rows are unit length)."""
    return (b.astype(np.float64) @ a.reshape(-1).astype(np.float64)).reshape(-1)
