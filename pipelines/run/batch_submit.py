"""Submitting Batch API payloads: fit the budget, record the intent, hold the worst case,
submit at the model's rate, record the request id the moment it comes back.

Each step is durable before the next (see :mod:`pipelines.output.batches`), so a ``kill -9``
anywhere leaves at most one payload whose fate is unknown: the one between its submission
and the write of its id. Errors are decided by their scope, as in sync mode
(:meth:`pipelines.run.sending.Sender._on_error`): a refused payload with a bad request is
split until the bad row fails alone, a 3036 stops the submissions for the day, credentials
or an unknown model abort, and what failed for now is tried again up to
``limits.max_attempts``, each try that may have reached Cloudflare counted as spent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import assert_never

from pipelines.core.crashpoints import crash_point
from pipelines.core.errors import (
    BudgetExhausted,
    BudgetStop,
    InvalidInput,
    ProviderError,
    RateLimited,
    Scope,
)
from pipelines.output.batches import BookedBatch, Slot
from pipelines.run.batch_collect import Collector
from pipelines.run.batch_context import BatchContext
from pipelines.run.batch_payload import Entry, PayloadBuffer, entry_for, reference, too_big
from pipelines.run.report import StopReason
from pipelines.run.stopping import Stopped
from pipelines.tasks.base import Call

log = logging.getLogger("pipelines")


class Submitter:
    """Packs calls into payloads and submits them; the collector takes them from there."""

    def __init__(self, ctx: BatchContext, collector: Collector, max_items: int) -> None:
        self.ctx = ctx
        self.collector = collector
        self.buffer = PayloadBuffer(max_items)
        self.cannot_fit = 0  # rows whose one request costs more than any day allows
        self.cannot_fit_message = ""

    async def add(self, call: Call, attempts: int = 0) -> None:
        """Buffer ``call``; a full payload is submitted."""
        ctx = self.ctx
        if ctx.stopper.stopping:
            return  # its rows stay pending for the next run
        entry = entry_for(ctx.task, ctx.model, call, attempts)
        if too_big(entry):
            await self._refuse_too_big(entry)
            return
        if not self.buffer.fits(entry):
            await self.flush()
        self.buffer.add(entry)
        if self.buffer.full:
            await self.flush()

    async def flush(self) -> None:
        """Submit everything buffered: one payload, or several when the budget cuts it or
        Cloudflare refuses it for a bad request (each half is then a payload of its own)."""
        groups = deque([self.buffer.take()])
        while groups and not self.ctx.stopper.stopping:
            group = groups.popleft()
            if not group:
                continue
            now, rest = await self._fit(group)
            if rest:
                groups.appendleft(rest)
            groups.extendleft(reversed(await self._send(now)))

    # -- the budget ------------------------------------------------------------------------

    async def _fit(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
        """The longest head of ``entries`` that today's budget allows (at least one entry:
        the ledger then says why even that one cannot go)."""
        available = await self.ctx.budget.available()
        total, k = 0.0, 0
        for entry in entries:
            total += self.ctx.reservation(entry.call.estimate)
            if total > available + 1e-9:
                break
            k += 1
        k = max(k, 1)
        return entries[:k], entries[k:]

    def _halves(self, entry: Entry) -> list[list[Entry]] | None:
        """``entry``'s call as two (a payload of its own each), or None for one item."""
        halves = self.ctx.task.split(entry.call, entry.call.size // 2)
        if halves is None:
            return None
        return [[entry_for(self.ctx.task, self.ctx.model, c, entry.attempts)] for c in halves]

    async def _cannot_fit(self, entry: Entry, error: BudgetExhausted) -> list[list[Entry]]:
        """One request bigger than any day: as two, maybe not; alone, its rows fail."""
        halves = self._halves(entry)
        if halves is not None:
            return halves
        self.cannot_fit += entry.call.rows.height
        self.cannot_fit_message = error.message
        await self.ctx.fail(entry.call, error, retryable=True)
        return []

    # -- one payload -----------------------------------------------------------------------

    def _book(self, batch_id: str, entries: list[Entry]) -> tuple[BookedBatch, list[Slot]]:
        ctx, slots, first = self.ctx, [], 0
        for entry in entries:
            slots.append(Slot(entry.call, first, len(entry.bodies), entry.attempts))
            first += len(entry.bodies)
        batch = BookedBatch(
            id=batch_id,
            fingerprint=ctx.fingerprint,
            model=ctx.model.id,
            hold=f"batch:{batch_id}",
            neurons=sum(ctx.reservation(e.call.estimate) for e in entries),
            items=first,
            rows=sum(e.call.rows.height for e in entries),
            created=time.time(),
            run_id=ctx.run_id,
        )
        return batch, slots

    async def _send(self, entries: list[Entry]) -> list[list[Entry]]:
        """Submit one payload; the payloads to send instead (the halves of a refused one)."""
        ctx = self.ctx
        batch, slots = self._book(uuid.uuid4().hex, entries)
        await asyncio.to_thread(ctx.book.intend, batch, slots)
        crash_point("batch-intended")
        try:
            await ctx.budget.hold(batch.hold, ctx.job_name, ctx.model.id, batch.neurons)
        except BudgetExhausted as exc:
            await asyncio.to_thread(ctx.book.forget, batch.id)
            if exc.reason is BudgetStop.CANNOT_FIT and len(entries) == 1:
                return await self._cannot_fit(entries[0], exc)
            ctx.stopper.stop(StopReason.of_budget(exc.reason), exc.message)
            return []
        crash_point("batch-held")
        items = [
            {**body, "external_reference": reference(batch.id, slot.first + i)}
            for slot, entry in zip(slots, entries, strict=True)
            for i, body in enumerate(entry.bodies)
        ]
        try:
            request_id, batch = await self._submit(batch, items)
        except Stopped:
            await self._drop(batch, None)
            return []
        except ProviderError as exc:
            return await self._on_error(batch, entries, exc)
        crash_point("batch-submitted")  # Cloudflare has it; its id is not recorded yet
        await asyncio.to_thread(ctx.book.submitted, batch.id, request_id, time.time())
        crash_point("batch-recorded")
        ctx.report.batches_submitted += 1
        log.info(
            "submitted a batch of %d requests (%d rows) to %s: %s",
            batch.items,
            batch.rows,
            ctx.model.id,
            request_id,
            extra={"job": ctx.job_name},
        )
        self.collector.track(batch, request_id, slots)
        return []

    async def _submit(
        self, batch: BookedBatch, items: list[dict[str, object]]
    ) -> tuple[str, BookedBatch]:
        """The payload's request id, tried until it works, fails for good or the run stops.
        A try that may have reached Cloudflare counts as spent, and the next is held anew."""
        ctx, attempt = self.ctx, 0
        while True:
            await ctx.limiter.acquire()
            ctx.stopper.check_send()
            attempt += 1
            ctx.report.requests += 1
            try:
                request_id = await ctx.provider.submit_batch(ctx.model, list(items))
            except ProviderError as exc:
                exc.attempts = attempt
                if exc.scope is not Scope.TRANSIENT or attempt >= ctx.policy.max_attempts:
                    raise
                if isinstance(exc, RateLimited):
                    ctx.limiter.penalize(exc.retry_after)
                if exc.maybe_billed:
                    batch = await self._hold_again(batch, attempt)
                await ctx.stopper.pause(ctx.policy.delay(attempt, exc))
                continue
            ctx.limiter.reward()
            return request_id, batch

    async def _hold_again(self, batch: BookedBatch, attempt: int) -> BookedBatch:
        """The try that failed may be queued on Cloudflare: its hold is spent, and the next
        try gets a hold of its own (recorded in the book first)."""
        ctx = self.ctx
        again = replace(batch, hold=f"batch:{batch.id}.{attempt}")
        try:
            await ctx.budget.hold(again.hold, ctx.job_name, ctx.model.id, again.neurons)
        except BudgetExhausted as exc:
            await ctx.budget.settle_hold(batch.hold, batch.neurons)
            await asyncio.to_thread(ctx.book.forget, batch.id)
            ctx.stopper.stop(StopReason.of_budget(exc.reason), exc.message)
            raise Stopped from exc
        await asyncio.to_thread(ctx.book.rehold, batch.id, again.hold)
        if await ctx.budget.settle_hold(batch.hold, batch.neurons):
            ctx.report.neurons += batch.neurons
        return again

    async def _drop(self, batch: BookedBatch, spent: float | None) -> None:
        """The payload is not in flight: settle its hold (``None``: never billed) and
        forget it; its rows are pending again."""
        if await self.ctx.budget.settle_hold(batch.hold, spent) and spent:
            self.ctx.report.neurons += spent
        await asyncio.to_thread(self.ctx.book.forget, batch.id)

    async def _on_error(
        self, batch: BookedBatch, entries: list[Entry], exc: ProviderError
    ) -> list[list[Entry]]:
        """The error policy of a submission, by the error's scope alone."""
        ctx = self.ctx
        await self._drop(batch, batch.neurons if exc.maybe_billed else None)
        match exc.scope:
            case Scope.DAY:
                await ctx.budget.mark_exhausted(exc.message)
                ctx.stopper.stop(
                    StopReason.DAY_CAP,
                    f"Cloudflare says the daily neuron allocation is used up ({exc.message})",
                )
                return []
            case Scope.RUN:
                ctx.stopper.abort(exc)
                return []
            case Scope.ROW:  # a bad request refuses the payload: isolate it
                if len(entries) > 1:
                    half = len(entries) // 2
                    return [entries[:half], entries[half:]]
                halves = self._halves(entries[0])
                if halves is not None:
                    return halves
                await ctx.fail(entries[0].call, exc, retryable=False)
                return []
            case Scope.TRANSIENT:
                for entry in entries:
                    await ctx.fail(entry.call, exc, retryable=True)
                return []
            case _:  # pragma: no cover - every scope is handled above
                assert_never(exc.scope)

    async def _refuse_too_big(self, entry: Entry) -> None:
        error = InvalidInput(
            f"the requests of these rows take {entry.size / 1e6:.1f} MB, more than a Batch "
            "API payload may hold (10 MB); shorten the input or run the job in sync mode",
            model=self.ctx.model.id,
        )
        await self.ctx.fail(entry.call, error, retryable=False)
