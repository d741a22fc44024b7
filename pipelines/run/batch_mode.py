"""The Batch API side of a run: payloads earlier runs left in flight, and, in batch mode, the
worker that submits every pending call in payloads and sends again what came back failed.

A run in batch mode reads the pending rows as a sync run does, packs their calls into
payloads (:mod:`pipelines.run.batch_submit`) and polls them until every answer is kept
(:mod:`pipelines.run.batch_collect`); a stop (the budget, a 3036) ends the submissions but
the payloads in flight are still collected, and Ctrl-C leaves them to the next run. A run in
sync mode collects what a batch run left in flight (its rows are not sent again meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from pipelines.run.batch_collect import Collector
from pipelines.run.batch_context import BatchContext
from pipelines.run.batch_submit import Submitter
from pipelines.tasks.base import Call

log = logging.getLogger("pipelines")


class BatchMode:
    """Payloads in flight for one run, and its submitter in batch mode."""

    def __init__(self, ctx: BatchContext, *, submitting: bool, max_items: int) -> None:
        self.ctx = ctx
        self.collector = Collector(ctx)
        self.submitter = Submitter(ctx, self.collector, max_items) if submitting else None
        self._task: asyncio.Task[None] | None = None

    @property
    def submitting(self) -> bool:
        return self.submitter is not None

    async def recover(self, *, fresh: bool) -> None:
        """Take up the payloads earlier runs left in the book: poll the submitted ones;
        settle at their worst case (they may have run) and drop the ones whose submission
        was never recorded (their rows are sent again), those made for another model or
        params, and with ``--fresh`` every one."""
        ctx = self.ctx
        for batch in await asyncio.to_thread(ctx.book.batches):
            mine = batch.fingerprint == ctx.fingerprint and batch.model == ctx.model.id
            if fresh or not mine or batch.request_id is None:
                # a hold never taken (a crash before it) counts nothing: nothing was sent
                counted = await ctx.budget.settle_hold(batch.hold, batch.neurons)
                await asyncio.to_thread(ctx.book.forget, batch.id)
                if counted:
                    ctx.report.neurons += batch.neurons
                if batch.request_id is None and not fresh and mine and counted:
                    log.warning(
                        "a batch of %d rows may have been submitted by a run that ended "
                        "before recording it; counted as spent, its rows are sent again",
                        batch.rows,
                        extra={"job": ctx.job_name},
                    )
                continue
            slots = await asyncio.to_thread(ctx.book.slots, batch.id)
            self.collector.track(batch, batch.request_id, slots)
        if fresh:
            await asyncio.to_thread(ctx.book.remove)
        if n := len(self.collector.flights):
            log.info(
                "%d batch%s in flight from earlier runs: collecting",
                n,
                "" if n == 1 else "es",
                extra={"job": ctx.job_name},
            )

    def in_flight_keys(self) -> Iterator[list[str]]:
        """The keys of the rows in flight (not sent again), a chunk at a time."""
        return self.ctx.book.keys()

    def start(self) -> None:
        """Start polling (in batch mode, or when earlier runs left payloads in flight)."""
        ctx = self.ctx
        if self.collector.flights and not ctx.provider.supports_batch:
            # their rows stay out of this run's work until a provider that can poll them
            log.warning(
                "%d rows are in Batch API payloads in flight, which provider %s cannot "
                "collect; a run on provider cloudflare collects them",
                sum(f.batch.rows for f in self.collector.flights.values()),
                ctx.provider.name,
                extra={"job": ctx.job_name},
            )
        elif self.submitting or self.collector.flights:
            self._task = asyncio.create_task(self.collector.run())
        if not self.submitting:
            self.collector.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def worker(self, calls: asyncio.Queue[Call | None]) -> None:
        """Batch mode's one worker: every pending call into payloads, then what comes back
        to be sent again, until every payload is collected or the run stops."""
        assert self.submitter is not None
        stopper = self.ctx.stopper
        while (call := await calls.get()) is not None:
            if not stopper.stopping:
                await self.submitter.add(call)
        try:
            await self.submitter.flush()
            while not stopper.stopping:
                if self.ctx.again:
                    again, self.ctx.again = self.ctx.again, []
                    for call, attempts in again:
                        await self.submitter.add(call, attempts)
                    await self.submitter.flush()
                    continue
                if not self.collector.flights or self._collector_ended():
                    break
                await self._until_collected()
        finally:
            self.collector.close()

    def _collector_ended(self) -> bool:
        return self._task is None or self._task.done()

    async def _until_collected(self) -> None:
        """Wait until a payload is collected, or nothing may go out any more."""
        collected = self.collector.collected
        collected.clear()
        waits = {
            asyncio.ensure_future(collected.wait()),
            asyncio.ensure_future(self.ctx.stopper.until_hard()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def finish(self) -> list[tuple[Call, int]]:
        """Wait for the collector; what must still be sent (sync mode sends it itself)."""
        self.collector.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        again, self.ctx.again = self.ctx.again, []
        if not self.collector.flights and self.ctx.book.exists():
            # every payload is kept: no empty book left behind in the work folder
            await asyncio.to_thread(self._remove_if_empty)
        self.ctx.book.close()
        return again

    def _remove_if_empty(self) -> None:
        if not self.ctx.book.batches():
            self.ctx.book.remove()

    def in_flight(self) -> tuple[int, int]:
        """Payloads still in flight, and their rows (what the next run collects)."""
        flights = self.collector.flights.values()
        return len(flights), sum(f.batch.rows for f in flights)
