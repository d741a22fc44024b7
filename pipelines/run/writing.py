"""The run's one writer: every result and failure goes through its queue into the output's
journals (fsync'ed), in the order it arrived.

A caller that must not go on before what it delivered is durable (the batch collector, before
it settles a payload's hold) awaits :meth:`ResultWriter.durable`. A writer that cannot write
(disk full, a folder gone read-only) stops the run and keeps draining its queue, so that no
worker ever blocks on it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import OutputError, PipelinesError
from pipelines.output.images import ImageWriter
from pipelines.output.store import OutputStore
from pipelines.output.subtitles import SubtitleWriter
from pipelines.run.report import RunReport
from pipelines.run.stopping import Stopped, Stopper
from pipelines.tasks.base import RowFailure

# What the writer takes: results, failures, a future to resolve once what came before is
# durable, and None at the end.
Written: TypeAlias = pa.Table | list[RowFailure] | asyncio.Future[None] | None


class Progress(Protocol):
    """Where the runner reports progress (tqdm in the CLI)."""

    def start(self, total: int | None) -> None: ...
    def update(self, rows: int, neurons: float) -> None: ...
    def refresh(self) -> None: ...


class ResultWriter:
    """Writes what the run's workers deliver; see the module docstring."""

    def __init__(
        self,
        store: OutputStore,
        subtitles: SubtitleWriter | None,
        report: RunReport,
        stopper: Stopper,
        progress: Progress | None,
        *,
        images: ImageWriter | None = None,
    ) -> None:
        self.store = store
        self.subtitles = subtitles
        self.images = images
        self.report = report
        self.stopper = stopper
        self.progress = progress
        self.queue: asyncio.Queue[Written] = asyncio.Queue(maxsize=256)
        self.failed = False  # a write failed: the journal was left as it was

    async def put(self, item: Written) -> None:
        await self.queue.put(item)

    async def durable(self) -> None:
        """Return once everything delivered so far is in the journal (raises
        :class:`Stopped` if it can no longer get there)."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.queue.put(written)
        await written

    async def run(self) -> None:
        """Write until ``None`` comes."""
        finished = False
        while not finished:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            finished = any(i is None for i in items)
            if not self.failed:
                self.failed = not await self._write_or_stop(items)
            for item in items:  # after the write: what they wait for is durable
                if isinstance(item, asyncio.Future):
                    if self.failed:
                        item.set_exception(Stopped())
                    else:
                        item.set_result(None)

    async def _write_or_stop(self, items: list[Written]) -> bool:
        """Write ``items``; False when that failed (the run is stopped)."""
        tables = [i for i in items if isinstance(i, pa.Table)]
        failures = [f for i in items if isinstance(i, list) for f in i]
        try:
            await self._write(tables, failures)
        except Exception as exc:  # disk full, a folder gone read-only, a bug
            # any exception: a writer that dies leaves the workers blocked on its full
            # queue, and the run hangs for good
            self.stopper.abort(
                exc
                if isinstance(exc, PipelinesError)
                else OutputError(
                    f"cannot write the results ({type(exc).__name__}: {exc}); "
                    "the rows written before are kept, re-run to resume"
                )
            )
            return False
        return True

    async def _write(self, tables: list[pa.Table], failures: list[RowFailure]) -> None:
        report = self.report
        if tables:
            merged = pa.concat_tables(tables, promote_options="permissive")
            if self.images is not None:  # first: a row marked done always has its file
                merged = await asyncio.to_thread(self.images.write, merged)
            if self.subtitles is not None:  # first: a row marked done always has its files
                await asyncio.to_thread(self.subtitles.write, merged)
            await asyncio.to_thread(self.store.write_results, merged)
            report.rows_done += merged.num_rows
            if "truncated" in merged.column_names:  # generate: cut off at max_tokens
                report.rows_truncated += int(pc.sum(merged.column("truncated")).as_py() or 0)
        if failures:
            if self.images is not None:  # an out-of-date image goes with its index row
                await asyncio.to_thread(self.images.forget, failures)
            await asyncio.to_thread(self.store.write_failures, failures)
            report.rows_failed += len(failures)
        if self.progress is not None and (tables or failures):
            rows = sum(t.num_rows for t in tables) + len(failures)
            self.progress.update(rows, report.neurons)
