"""The output's on-disk key index and the streamed merge (issue 11): the index leaves no
file behind, a key's latest outcome wins, repeated keys are found within and across
batches, and the merge writes bounded row groups (memory does not grow with the output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.columns import KEY, ROW_HASH
from pipelines.output.identity import Fingerprint
from pipelines.output.index import OutputIndex, State
from pipelines.output.merge import CHUNK_ROWS, ROW_GROUP_BYTES, WHOLE_ROW_GROUP_BYTES, read_chunks
from pipelines.output.store import OutputStore


def test_the_index_writes_nothing_next_to_the_output(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out.parquet", fingerprint=Fingerprint({"job": "f"}), meta={})
    store.open(fresh=False)
    before = sorted(tmp_path.rglob("*"))
    index = store.done_keys(retry_failed=False)
    index.add_outcomes(0, [0, 1], ["a", "b"], ["h1", "h2"], [State.RESULT, State.RESULT])
    assert index.height == 2
    assert sorted(tmp_path.rglob("*")) == before  # a full output disk is not made fuller
    index.close()


def test_the_latest_outcome_of_a_key_wins() -> None:
    index = OutputIndex()
    index.add_outcomes(0, [0, 1, 2], ["a", "b", "c"], [None] * 3, [State.RESULT] * 3)
    index.add_outcomes(1, [0], ["b"], ["new"], [State.FAILED])  # b failed later
    index.add_outcomes(2, [0, 1], ["c", "d"], ["x", "y"], [State.RESULT] * 2)  # c again, d new
    kept, _ = index.winners(0, 0, ["a", "b", "c"], failures=False, sync=False)
    assert kept.tolist() == [0]  # b and c were replaced
    kept, _ = index.winners(1, 0, ["b"], failures=True, sync=False)
    assert kept.tolist() == [0]
    kept, _ = index.winners(2, 0, ["c", "d"], failures=False, sync=False)
    assert kept.tolist() == [0, 1]
    assert index.failure_count() == 1
    index.close()


def test_repeated_keys_are_found_within_and_across_batches() -> None:
    index = OutputIndex()
    first = index.observe(pl.Series(["a", "b", "a"]), pl.Series(["1", "2", "3"]))
    assert first["first"].to_list() == [True, True, False]
    second = index.observe(pl.Series(["c", "b"]), pl.Series(["4", "5"]))
    assert second["first"].to_list() == [True, False]
    assert second["state"].to_list() == [None, None]
    index.close()


def test_the_merge_writes_bounded_row_groups(tmp_path: Path) -> None:
    rows, dim = 12_000, 384  # ~18 MB of vectors: more than one row group's worth
    schema = pa.schema(
        [
            pa.field(KEY, pa.string()),
            pa.field(ROW_HASH, pa.string()),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
        ]
    )
    store = OutputStore(tmp_path / "out.parquet", fingerprint=Fingerprint({"job": "f"}), meta={})
    store.open(fresh=False)
    store.begin("run1", schema)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 500):
        values = pa.array(rng.random(500 * dim, dtype=np.float32))
        store.write_results(
            pa.table(
                {
                    KEY: [str(i) for i in range(start, start + 500)],
                    ROW_HASH: ["h"] * 500,
                    "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
                },
                schema=schema,
            )
        )
    assert store.finalize() == (rows, 0)
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert meta.num_rows == rows
    assert meta.num_row_groups > 1
    for i in range(meta.num_row_groups):
        assert meta.row_group(i).total_byte_size <= 2 * ROW_GROUP_BYTES


def test_large_row_groups_of_older_outputs_are_read_in_chunks(tmp_path: Path) -> None:
    rows, dim = 12_000, 384  # one ~18 MB row group, as older versions wrote (65,536 rows)
    values = pa.array(np.arange(rows * dim, dtype=np.float32))
    table = pa.table(
        {
            KEY: [str(i) for i in range(rows)],
            "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
        }
    )
    path = tmp_path / "old.parquet"
    pq.write_table(table, path, row_group_size=rows)
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size > WHOLE_ROW_GROUP_BYTES
    chunks = list(read_chunks(path))
    assert max(c.num_rows for c in chunks) <= 2 * CHUNK_ROWS
    assert pa.concat_tables(chunks).column(KEY).to_pylist() == [str(i) for i in range(rows)]


def test_temporary_files_a_kill_left_are_swept_manifest_included(tmp_path: Path) -> None:
    # a kill -9 while the manifest was being replaced left its temporary file beside it
    stale = [
        tmp_path / ".out.manifest.json.tmp-1ee255cd",
        tmp_path / ".out.parquet.tmp-00aa11bb",
        tmp_path / ".out.failures.parquet.tmp-deadbeef",
    ]
    for path in stale:
        path.write_bytes(b"half")
    mine = tmp_path / "notes.tmp-12345678"  # not a name pipelines makes: left alone
    mine.write_bytes(b"mine")
    store = OutputStore(tmp_path / "out.parquet", fingerprint=Fingerprint({"job": "f"}), meta={})
    store.open(fresh=False)
    assert not any(p.exists() for p in stale) and mine.exists()
