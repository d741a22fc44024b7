"""Row keys: stable across reads, processes and library versions; duplicates dropped."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.job.load import load_job
from pipelines.sources import KEY, open_source
from pipelines.sources.keys import SeenKeys, canonical_text, derived_keys

JOB = """\
name: keys
source: {kind: parquet, path: data.parquet}
task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}
output: {path: out.parquet, keep: [n, x]}
"""

READ_KEYS = """\
import json, sys
from pipelines.job.load import load_job
from pipelines.sources import open_source
source = open_source(load_job(sys.argv[1]))
keys = [k for b in source.iter_batches(["text"], 1000) for k in b["_key"].to_list()]
print(json.dumps(keys))
"""


def _dataset(tmp_path: Path) -> Path:
    n = 5_000
    table = pa.table(
        {
            "text": [None if i % 97 == 0 else f"text {i % 4000} ✓" for i in range(n)],
            "n": pa.array([i % 4000 for i in range(n)], pa.int32()),
            "x": [float(i % 4000) / 3 for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=1_234)
    job = tmp_path / "job.yaml"
    job.write_text(JOB, encoding="utf-8")
    return job


def _keys(job: Path) -> list[str]:
    source = open_source(load_job(job))
    return [k for b in source.iter_batches(["text"], 1000) for k in b[KEY].to_list()]


def test_derived_keys_are_stable_across_reads_and_processes(tmp_path: Path) -> None:
    job = _dataset(tmp_path)
    first = _keys(job)
    assert first == _keys(job)
    out = subprocess.run(
        [sys.executable, "-c", READ_KEYS, str(job)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == first
    assert all(len(k) == 32 for k in first)


def test_identical_rows_are_one_row(tmp_path: Path) -> None:
    job = _dataset(tmp_path)
    source = open_source(load_job(job))
    rows = sum(b.height for b in source.iter_batches(["text", "n"], 700))
    # Rows i and i + 4000 are identical in every needed column (text, n, x).
    assert source.duplicate_keys == 5_000 - rows
    assert rows == 4_000 + sum(
        1 for i in range(4000, 5000) if (i % 97 == 0) != (i % 4000 % 97 == 0)
    )


def test_key_encoding_is_pinned() -> None:
    # The documented encoding, spelled out by hand: a library upgrade must not change it.
    frame = pl.DataFrame({"t": ["héllo", None], "n": [12, -3], "f": [0.5, None]})
    keys, _ = derived_keys(frame, ["t", "n", "f"])
    half_bits = int(np.array([0.5]).view(np.uint64)[0])
    expected = [
        f"6:héllo|2:12|{len(str(half_bits))}:{half_bits}",
        "~|2:-3|~",
    ]
    assert keys.to_list() == [
        hashlib.blake2b(e.encode(), digest_size=16).hexdigest() for e in expected
    ]


def test_canonical_text_of_types() -> None:
    assert canonical_text(pl.Series([True, None])).to_list() == ["true", None]
    assert canonical_text(pl.Series([b"\x01\xff"])).to_list() == ["01ff"]
    nested = canonical_text(pl.Series([[1, 2], None]))
    assert nested.to_list() == ["[1, 2]", None]


def test_seen_keys_keeps_first_occurrences() -> None:
    rng = np.random.default_rng(1)
    seen = SeenKeys()
    values = rng.integers(0, 3_000, size=20_000)
    fresh_total = 0
    for chunk in np.array_split(values, 37):
        # Few distinct first words, so the equal-first-word path is exercised too.
        digests = np.stack([chunk % 7, chunk], axis=1).astype(np.uint64)
        fresh_total += int(seen.first_seen(digests).sum())
    assert fresh_total == len(set(values.tolist()))
