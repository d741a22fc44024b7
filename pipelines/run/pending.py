"""The pending work of a job, batch by batch: one generator that ``run`` sends and ``plan``
counts, so the plan's requests and neurons are exactly what the run will ask for.

Each source batch is hashed (what decides each row's result: the columns the task reads),
looked up in the output's index of keys (:class:`~pipelines.output.index.OutputIndex`, on
disk) and loses the rows already done with the same content and the rows whose key came
earlier in the input. What is left becomes calls (packed by the task) and up-front failures
(empty, too long, bad options, a repeated key), and, with the result cache, loses the items
it already has an answer for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.core.columns import KEY, ROW_HASH
from pipelines.output.index import OutputIndex, State
from pipelines.output.merge import DUPLICATE_KEY
from pipelines.run.cache import TaskCache
from pipelines.sources.base import Source
from pipelines.sources.keys import derived_keys
from pipelines.tasks.base import Call, RowFailure
from pipelines.tasks.task import Task


@dataclass
class PendingBatch:
    """What one source batch asks for."""

    rows_read: int = 0
    rows_skipped: int = 0  # already done (in the output, or failed for good), unchanged
    rows_new: int = 0  # keys with no outcome yet
    rows_changed: int = 0  # keys done before, with other content now
    rows_duplicate: int = 0  # rows whose key came earlier in the input (not processed)
    rows_missing: int = 0  # image rows done whose file is gone (made again with --repair)
    rows_repaired: int = 0  # ... of which are made again now (--repair)
    rows_in_flight: int = 0  # in a Batch API payload not collected yet (not sent again)
    calls: list[Call] = field(default_factory=list)
    failures: list[RowFailure] = field(default_factory=list)
    cached: list[pa.Table] = field(default_factory=list)  # rows answered by the cache
    rows_cached: int = 0
    saved: Usage = field(default_factory=Usage)  # what the cache hits would have consumed

    @property
    def rows_pending(self) -> int:
        """Rows the run answers or fails: sent, answered by the cache, or refused."""
        return sum(c.rows.height for c in self.calls) + self.rows_cached + len(self.failures)


def read_batch_rows(task: Task, concurrency: int, most: int) -> int:
    """Source rows read at once: about what the workers can have in flight (a 20,000-row
    batch of one-text calls costs ~100 MB of call objects and delays the first request)."""
    in_flight = concurrency * task.batch_size * 8
    return min(most, max(2_000, in_flight))


def pending_calls(
    source: Source,
    task: Task,
    done: OutputIndex,
    *,
    batch_rows: int,
    reuse: TaskCache | None = None,
    serve_cached: bool = True,
) -> Iterator[PendingBatch]:
    """Pending calls batch by batch. With ``serve_cached`` the cache's answers come back as
    output rows (``run``); without, hits are only counted and the cache is not touched
    (``plan``). Once the source is read to its end, ``done`` knows every key of the input
    (``output.sync`` and ``plan``'s removed rows need that)."""
    columns = task.read_columns()
    for batch in source.iter_batches(columns, batch_rows=batch_rows, unique=False):
        pending = PendingBatch(rows_read=batch.height)
        batch, duplicates = _select(batch, columns, task, done, pending)
        pending.failures = _duplicate_failures(source, duplicates)
        if batch.height:
            calls, failures = task.prepare(batch)
            pending.calls = calls
            pending.failures += _with_hashes(failures, batch)
        if reuse is not None and pending.calls:
            _use_cache(pending, reuse, serve_cached)
        yield pending
    done.input_read()


def _select(
    batch: pl.DataFrame, columns: list[str], task: Task, done: OutputIndex, pending: PendingBatch
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows of ``batch`` to process (with their hash), and the repeated keys."""
    hashes, _ = derived_keys(batch, columns)
    batch = batch.with_columns(hashes.alias(ROW_HASH))
    seen = done.observe(batch.get_column(KEY), batch.get_column(ROW_HASH))
    state, same = pl.col("state"), pl.col("same")
    keep_failed = ~pl.lit(done.retry_failed)
    truncate_off = ~pl.lit(bool(task.job.task.truncate))
    # an image row whose file is gone: done as it is, unless --repair makes it again
    broken = (state == int(State.RESULT)) & same & pl.col("missing")
    unchanged = (
        ((state == int(State.RESULT)) & same & ~(broken & pl.lit(done.repair)))
        | ((state == int(State.FAILED)) & same & keep_failed)
        | ((state == int(State.TOO_LONG)) & same & keep_failed & truncate_off)
    ).fill_null(False)
    # a row in a payload in flight waits for it (its answer, or its failure, comes back);
    # changed meanwhile, it is sent again by the run after that one
    flight = pl.col("first") & pl.col("flight")
    flags = seen.select(
        pl.col("first"),
        (pl.col("first") & (unchanged | pl.col("flight"))).alias("skip"),
        flight.alias("flight"),
        (pl.col("first") & ~pl.col("flight") & state.is_null()).alias("new"),
        (pl.col("first") & ~pl.col("flight") & state.is_not_null() & ~same).alias("changed"),
        (~pl.col("first") & ~pl.col("recorded")).alias("record"),
        (pl.col("first") & broken).fill_null(False).alias("broken"),
    )
    counts = flags.select(pl.all().sum()).row(0, named=True)
    pending.rows_in_flight = counts["flight"]
    pending.rows_skipped = counts["skip"] - counts["flight"]
    pending.rows_new = counts["new"]
    pending.rows_changed = counts["changed"]
    pending.rows_missing = counts["broken"]
    pending.rows_repaired = counts["broken"] if done.repair else 0
    pending.rows_duplicate = batch.height - counts["first"]
    repeated = batch.filter(~flags.get_column("first"))
    if repeated.height:
        done.mark_repeated(repeated.get_column(KEY).unique().to_list())
    duplicates = batch.filter(flags.get_column("record")).unique(KEY, keep="first")
    todo = batch.filter(flags.get_column("first") & ~flags.get_column("skip"))
    return todo, duplicates


def _duplicate_failures(source: Source, duplicates: pl.DataFrame) -> list[RowFailure]:
    """One DuplicateKey record per repeated key (not yet recorded). Only a key column can
    repeat with other content: a derived key repeats for identical rows, whose answer is
    the first one's, so nothing is lost and nothing is recorded."""
    column = source.job.source.key
    if column is None or not duplicates.height:
        return []
    return [
        RowFailure(
            key,
            DUPLICATE_KEY,
            f"the key {key!r} (source.key {column!r}) is in the input more than once; its "
            "first row is processed and the others are not: make the keys unique",
            row_hash=row_hash,
        )
        for key, row_hash in duplicates.select(KEY, ROW_HASH).iter_rows()
    ]


def _with_hashes(failures: list[RowFailure], batch: pl.DataFrame) -> list[RowFailure]:
    """Up-front failures with the content they are about (a fixed row is tried again)."""
    if not failures:
        return failures
    hash_of = dict(batch.select(KEY, ROW_HASH).iter_rows())
    return [dataclasses.replace(f, row_hash=hash_of.get(f.key)) for f in failures]


def _use_cache(pending: PendingBatch, reuse: TaskCache, serve: bool) -> None:
    if serve:
        pending.cached, pending.calls = reuse.lookup(pending.calls)
        pending.rows_cached = sum(t.num_rows for t in pending.cached)
        return
    hits, pending.calls, pending.saved = reuse.count_hits(pending.calls)
    pending.rows_cached = hits


def sum_usage(calls: list[Call]) -> Usage:
    """The expected usage of ``calls`` together."""
    total = Usage()
    for call in calls:
        total = total + call.estimate.expected
    return total
