"""Row keys: the identity of an input row across runs, processes and library versions.

A derived key is the BLAKE2b-128 hex digest of a canonical encoding of the row's values in
the job's needed columns, in that order: each value as ``<utf-8 byte length>:<text>`` (``~``
for null), joined by ``|``. Numbers are encoded exactly (integers as decimal digits, floats
by their IEEE-754 bits) so no float formatting choice of a library can change a key.
Polars' own hash is not used: it is not stable across versions.

A given key (``source.key``) is the column's value *as text* (:func:`key_text`): the text a
person would write for it, the same in every file and run, so that ``4`` read from a CSV, an
int64 or a string column is one key. Floats are the shortest text that reads back as the
same number at the column's precision (Python's ``repr``: ``4.0``, ``0.1``, ``1e+20``);
dates, times and timestamps are ISO 8601 (``2024-01-31``, ``2024-01-31T12:00:00.500``:
fractions of a second in 3, 6 or 9 digits, as needed; the offset when the column has a
time zone); decimals keep their scale (``4.50``); booleans are ``true``/``false``; bytes
must be UTF-8 text. Lists, structs and durations cannot be keys (:func:`key_type_problem`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

DIGEST_BYTES = 16


def _json_text(series: pl.Series) -> pl.Series:
    # Nested values are rare in key columns; a slow but exact per-value path is fine.
    values = [
        None if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
        for v in series.to_list()
    ]
    return pl.Series(series.name, values, dtype=pl.Utf8)


def canonical_text(series: pl.Series) -> pl.Series:
    """``series`` as text that is exact and independent of library formatting choices."""
    dtype = series.dtype
    if dtype == pl.Utf8:
        return series
    if dtype in (pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum) or dtype.is_integer():
        return series.cast(pl.Utf8)
    if dtype.is_float():
        bits = series.cast(pl.Float64).fill_null(0.0).to_numpy().view(np.uint64)
        text = pl.Series(series.name, bits).cast(pl.Utf8)
        return pl.select(pl.when(series.is_null()).then(None).otherwise(text)).to_series()
    if dtype.is_temporal():
        return series.to_physical().cast(pl.Utf8)
    if dtype == pl.Binary:
        return series.bin.encode("hex")
    if dtype == pl.Null:
        return series.cast(pl.Utf8)
    if isinstance(dtype, pl.Decimal):
        return series.cast(pl.Utf8)
    return _json_text(series)


def _digests(payload: pl.Series) -> np.ndarray:
    blake = hashlib.blake2b
    raw = b"".join(
        blake(item, digest_size=DIGEST_BYTES).digest() for item in payload.cast(pl.Binary).to_list()
    )
    # Two 64-bit words per digest: numeric sorts and searches are far faster than bytes.
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)


def digests_to_hex(digests: np.ndarray) -> pl.Series:
    """Digests (``n x 2`` words) as 32-character lowercase hex strings (vectorised)."""
    arr = pa.Array.from_buffers(
        pa.binary(DIGEST_BYTES), len(digests), [None, pa.py_buffer(digests.tobytes())]
    )
    series = pl.Series("_key", pl.from_arrow(arr))
    return series.bin.encode("hex")


def derived_keys(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[pl.Series, np.ndarray]:
    """Content keys for each row of ``frame`` over ``columns``: (hex strings, digests)."""
    canon = pl.DataFrame([canonical_text(frame[c]).alias(f"c{i}") for i, c in enumerate(columns)])
    parts = [
        pl.when(pl.col(name).is_null())
        .then(pl.lit("~"))
        .otherwise(pl.col(name).str.len_bytes().cast(pl.Utf8) + pl.lit(":") + pl.col(name))
        for name in canon.columns
    ]
    if not parts:
        return derived_keys(pl.DataFrame({"c": [""] * frame.height}), ["c"])
    payload = canon.select(pl.concat_str(parts, separator="|").alias("p")).to_series()
    digests = _digests(payload)
    return digests_to_hex(digests), digests


def key_type_problem(dtype: pa.DataType) -> str | None:
    """Why a column of this (Arrow) type cannot be a key column, or ``None`` if it can."""
    types = pa.types
    if types.is_dictionary(dtype):
        return key_type_problem(dtype.value_type)
    scalar = (
        types.is_integer(dtype)
        or types.is_floating(dtype)
        or types.is_boolean(dtype)
        or types.is_decimal(dtype)
        or types.is_date(dtype)
        or types.is_time(dtype)
        or types.is_timestamp(dtype)
        or types.is_string(dtype)
        or types.is_large_string(dtype)
        or types.is_string_view(dtype)
        or types.is_binary(dtype)
        or types.is_large_binary(dtype)
        or types.is_binary_view(dtype)
        or types.is_null(dtype)
    )
    if scalar and not types.is_float16(dtype):
        return None
    return (
        f"is {dtype}, which has no text form to be a row's key; name a column of text, "
        "numbers, dates or times in source.key, or drop source.key to derive keys from "
        "the content"
    )


def _utf8(values: list[Any]) -> list[str | None]:
    out: list[str | None] = []
    for value in values:
        try:
            out.append(None if value is None else bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            out.append(None)  # the caller reports the row
    return out


def _float_text(series: pl.Series) -> pl.Series:
    # numpy's str() is the shortest round-trip text at the value's own precision (a
    # float32 0.1 is "0.1", not 0.10000000149011612), with Python's repr rules
    values = series.to_numpy()
    nulls = series.is_null().to_list()
    texts = [None if null else str(v) for v, null in zip(values, nulls, strict=True)]
    return pl.Series(series.name, texts, dtype=pl.Utf8)


def key_text(series: pl.Series) -> pl.Series:
    """A key column's values as text (see the module's docstring); nulls stay null, and so
    do bytes that are not UTF-8. Types :func:`key_type_problem` refuses raise TypeError."""
    dtype = series.dtype
    if dtype == pl.Utf8:
        return series
    if dtype.is_integer() or dtype in (pl.Boolean, pl.Categorical, pl.Null):
        return series.cast(pl.Utf8)
    if isinstance(dtype, pl.Enum | pl.Decimal):
        return series.cast(pl.Utf8)
    if dtype.is_float():
        return _float_text(series)
    if dtype == pl.Date:
        return series.dt.to_string("%Y-%m-%d")
    if dtype == pl.Time:
        return series.dt.to_string("%H:%M:%S%.f")
    if isinstance(dtype, pl.Datetime):
        zone = "%:z" if dtype.time_zone else ""
        return series.dt.to_string("%Y-%m-%dT%H:%M:%S%.f" + zone)
    if dtype == pl.Binary:
        return pl.Series(series.name, _utf8(series.to_list()), dtype=pl.Utf8)
    raise TypeError(f"a {dtype} column cannot be a key column")


def given_keys(key: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Keys from a key column (no nulls): (the values as text, their digests)."""
    text = key_text(key)
    return text.alias("_key"), _digests(text.fill_null(""))


class SeenKeys:
    """Remembers digests already emitted, in sorted runs merged like an LSM tree.

    Sixteen bytes per distinct row (160 MB for 10 million rows) whatever the row width;
    lookups are binary searches over a logarithmic number of runs.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    @staticmethod
    def _merge(low: tuple[np.ndarray, np.ndarray], top: tuple[np.ndarray, np.ndarray]) -> Any:
        hi, lo = np.concatenate([low[0], top[0]]), np.concatenate([low[1], top[1]])
        # Stable sort is timsort here: two sorted runs merge in linear time. Only the first
        # word is ordered; lookups scan the (rare) equal first words.
        order = np.argsort(hi, kind="stable")
        return hi[order], lo[order]

    @staticmethod
    def _found(run: tuple[np.ndarray, np.ndarray], hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        run_hi, run_lo = run
        left = np.searchsorted(run_hi, hi, "left")
        span = np.searchsorted(run_hi, hi, "right") - left
        hit = np.zeros(len(hi), dtype=bool)
        one = span == 1
        hit[one] = run_lo[left[one]] == lo[one]
        for i in np.flatnonzero(span > 1):  # equal first words: astronomically rare
            hit[i] = bool((run_lo[left[i] : left[i] + span[i]] == lo[i]).any())
        return hit

    def first_seen(self, digests: np.ndarray) -> np.ndarray:
        """A mask of the digests (``n x 2`` words) seen neither earlier in this batch nor
        in earlier batches; those become seen."""
        hi, lo = digests[:, 0], digests[:, 1]
        n = len(hi)
        order = np.lexsort((lo, hi))  # stable: the first of equal digests sorts first
        hs, ls = hi[order], lo[order]
        fresh_sorted = np.ones(n, dtype=bool)
        fresh_sorted[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
        # Sorted queries keep numpy's binary searches cache-friendly.
        for run in self._runs:
            fresh_sorted &= ~self._found(run, hs, ls)
        if fresh_sorted.any():
            self._runs.append((hs[fresh_sorted], ls[fresh_sorted]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= len(self._runs[-1][0]):
            top = self._runs.pop()
            self._runs.append(self._merge(self._runs.pop(), top))
        fresh = np.empty(n, dtype=bool)
        fresh[order] = fresh_sorted
        return fresh
