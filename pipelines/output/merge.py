"""The files that hold outcomes, read as events for the index, and merged at the end of a
run, streamed: chunk by chunk in, row group by row group out.

A run's output and failures file are rewritten from the previous file and the journals.
Each chunk of each file is matched against the index (:mod:`pipelines.output.index`), which
says which of its rows are their key's latest outcome; only those are kept. The writer holds
one row group at a time, at most :data:`ROW_GROUP_BYTES` (a 384-float embedding row is
1.6 kB, so a row count alone would not bound it), so memory does not depend on the size of
the output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.columns import KEY, ROW_HASH
from pipelines.output.index import OutputIndex, State
from pipelines.output.journal import read_journal

ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 8 * 2**20
CHUNK_ROWS = 2_048  # rows matched against the index at once
WHOLE_ROW_GROUP_BYTES = 2 * ROW_GROUP_BYTES  # read at once; larger ones are streamed

# Failure codes the index treats apart (codes, never messages).
DUPLICATE_KEY = "DuplicateKey"  # a repeated key in the input, not an outcome of the key
TOO_LONG = "InputTooLong"  # pending again once task.truncate is on


def _batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".arrow":
        for batch in read_journal(path):
            yield (
                batch
                if columns is None
                else batch.select([c for c in columns if c in batch.schema.names])
            )
        return
    parquet = pq.ParquetFile(path)
    if columns is not None:
        columns = [c for c in columns if c in parquet.schema_arrow.names]
    for i in range(parquet.metadata.num_row_groups):
        # One row group at a time, each with a reader of its own: one reader over the whole
        # file keeps ~0.5 MB per row group it went through (outside Arrow's pool), which
        # grows with the output. A row group of an older version (65,536 rows) is streamed.
        if parquet.metadata.row_group(i).total_byte_size <= WHOLE_ROW_GROUP_BYTES:
            group = parquet.read_row_group(i, columns=columns, use_threads=False)
            yield from group.to_batches(max_chunksize=CHUNK_ROWS)
        else:
            yield from parquet.iter_batches(CHUNK_ROWS, row_groups=[i], columns=columns)


def read_chunks(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A Parquet file or a journal, in order, as tables of about :data:`CHUNK_ROWS` rows
    (a journal holds many small batches: one per write)."""
    held: list[pa.RecordBatch] = []
    rows = 0
    for batch in _batches(path, columns):
        held.append(batch)
        rows += batch.num_rows
        if rows >= CHUNK_ROWS:
            yield pa.Table.from_batches(held)
            held, rows = [], 0
    if held:
        yield pa.Table.from_batches(held)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order and types; a column an older
    version did not write (``_hash``) is null."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def add_events(index: OutputIndex, src: int, path: Path, *, failures: bool) -> None:
    """Record every row of ``path`` (a results or a failures file) as an event of ``src``."""
    columns = [KEY, ROW_HASH, "error", "retryable"] if failures else [KEY, ROW_HASH]
    start = 0
    for chunk in read_chunks(path, columns):
        n = chunk.num_rows
        keys = [str(k) for k in chunk.column(KEY).to_pylist()]
        names = chunk.column_names
        hashes = chunk.column(ROW_HASH).to_pylist() if ROW_HASH in names else [None] * n
        positions = range(start, start + n)
        start += n
        if not failures:
            index.add_outcomes(src, positions, keys, hashes, [State.RESULT] * n)
            continue
        errors = chunk.column("error").to_pylist()
        retryable = chunk.column("retryable").to_pylist()
        dup = [e == DUPLICATE_KEY for e in errors]
        index.add_duplicates(
            src,
            [p for p, d in zip(positions, dup, strict=True) if d],
            [k for k, d in zip(keys, dup, strict=True) if d],
        )
        outcome = [i for i in range(n) if not dup[i]]
        index.add_outcomes(
            src,
            [positions[i] for i in outcome],
            [keys[i] for i in outcome],
            [hashes[i] for i in outcome],
            [_failure_state(errors[i], retryable[i]) for i in outcome],
        )


def _failure_state(error: str | None, retryable: bool | None) -> State:
    if retryable:
        return State.RETRY
    return State.TOO_LONG if error == TOO_LONG else State.FAILED


class _RowGroups:
    """A Parquet writer that holds at most one row group in memory."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.held: list[pa.Table] = []
        self.bytes = 0
        self.rows = 0
        self.written = 0

    def add(self, table: pa.Table) -> None:
        self.held.append(table)
        self.bytes += table.nbytes
        self.rows += table.num_rows
        if self.bytes >= ROW_GROUP_BYTES or self.rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.held:
            self.writer.write_table(pa.concat_tables(self.held))
            self.written += self.rows
        self.held, self.bytes, self.rows = [], 0, 0


def write_merged(
    index: OutputIndex,
    sources: list[tuple[int, Path]],
    schema: pa.Schema,
    target: Path,
    *,
    failures: bool,
    sync: bool,
) -> int:
    """Write the latest outcome of every key found in ``sources`` (oldest first) to
    ``target`` with ``schema``; the rows written."""
    plain = schema.remove_metadata()
    dictionary = [f.name for f in schema if _repeats(f)]
    with pq.ParquetWriter(target, schema, compression="zstd", use_dictionary=dictionary) as writer:
        groups = _RowGroups(writer)
        for src, path in sources:
            start = 0
            for chunk in read_chunks(path):
                chunk = conform(chunk, plain)
                keys = [str(k) for k in chunk.column(KEY).to_pylist()]
                kept, hashes = index.winners(src, start, keys, failures=failures, sync=sync)
                start += chunk.num_rows
                if len(kept):
                    groups.add(_with_hashes(chunk.take(pa.array(kept)), hashes))
        groups.flush()
    return groups.written


def _repeats(field: pa.Field) -> bool:
    """Whether a column's values repeat enough for dictionary encoding. Keys and hashes
    are unique, and vectors are lists of distinct floats: their dictionaries only cost
    memory (about 40 MB while a file is written) before the writer gives up on them."""
    return (
        field.name not in (KEY, ROW_HASH)
        and not pa.types.is_list(field.type)
        and not (pa.types.is_fixed_size_list(field.type) or pa.types.is_large_list(field.type))
    )


def _with_hashes(table: pa.Table, hashes: list[str | None]) -> pa.Table:
    """Rows written before hashes were kept learn their key's hash from this input."""
    if ROW_HASH not in table.column_names:
        return table
    at = table.column_names.index(ROW_HASH)
    column = table.column(at)
    if column.null_count == 0:
        return table
    filled = pc.coalesce(column, pa.chunked_array([pa.array(hashes, pa.string())]))
    return table.set_column(at, table.field(at), filled.cast(table.field(at).type))
