"""The pending work of a job, batch by batch: one generator that ``run`` sends and ``plan``
counts, so the plan's requests and neurons are exactly what the run will ask for.

Each source batch loses the rows already done, becomes calls (packed by the task) and
up-front failures (empty, too long, bad options), and, with the result cache, loses the
items it already has an answer for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.core.columns import KEY
from pipelines.run.cache import TaskCache
from pipelines.sources.base import Source
from pipelines.tasks.base import Call, RowFailure
from pipelines.tasks.task import Task


@dataclass
class PendingBatch:
    """What one source batch asks for."""

    rows_read: int = 0
    rows_skipped: int = 0  # already done (in the output, or failed for good)
    calls: list[Call] = field(default_factory=list)
    failures: list[RowFailure] = field(default_factory=list)
    cached: list[pa.Table] = field(default_factory=list)  # rows answered by the cache
    rows_cached: int = 0
    saved: Usage = field(default_factory=Usage)  # what the cache hits would have consumed


def read_batch_rows(task: Task, concurrency: int, most: int) -> int:
    """Source rows read at once: about what the workers can have in flight (a 20,000-row
    batch of one-text calls costs ~100 MB of call objects and delays the first request)."""
    in_flight = concurrency * task.batch_size * 8
    return min(most, max(2_000, in_flight))


def pending_calls(
    source: Source,
    task: Task,
    done: pl.DataFrame,
    *,
    batch_rows: int,
    reuse: TaskCache | None = None,
    serve_cached: bool = True,
) -> Iterator[PendingBatch]:
    """Pending calls batch by batch. With ``serve_cached`` the cache's answers come back as
    output rows (``run``); without, hits are only counted and the cache is not touched
    (``plan``)."""
    columns = task.read_columns()
    for batch in source.iter_batches(columns, batch_rows=batch_rows):
        pending = PendingBatch(rows_read=batch.height)
        if done.height:
            before = batch.height
            batch = batch.join(done, on=KEY, how="anti")
            pending.rows_skipped = before - batch.height
        if batch.height:
            pending.calls, pending.failures = task.prepare(batch)
        if reuse is not None and pending.calls:
            _use_cache(pending, reuse, serve_cached)
        yield pending


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
