"""Collecting Batch API payloads: poll each one with a back-off from seconds to minutes
(honouring Retry-After), match its responses to their calls by reference or id, keep the
answers, settle its hold with what it really used, then forget it.

The order is what makes a ``kill -9`` harmless: the answers and failures are durable in the
run's journal before the hold is settled, and the hold is settled before the payload leaves
the book. A crash in between collects the payload again on the next run: its rows are
written again (the output keeps one row per key) and the settled hold counts nothing twice.

What an item's error means is decided by its scope, as in sync mode: a bad request inside a
packed call is split until the bad row fails alone, what failed for now goes into a later
payload (up to ``limits.max_attempts`` payloads, then its rows fail as retryable), a 3036
stops the submissions for the day and leaves the rows pending, and credentials or an
unknown model abort. A payload Cloudflare no longer knows counts as spent (it may have run)
and its calls go into a later payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, assert_never

from pipelines.core.crashpoints import crash_point
from pipelines.core.errors import (
    PipelinesError,
    ProviderError,
    RateLimited,
    Scope,
    TransportError,
)
from pipelines.output.batches import BookedBatch, Slot
from pipelines.providers.batch_wire import BatchAnswer, read_answer
from pipelines.providers.wire import transport_error
from pipelines.run.batch_context import BatchContext
from pipelines.run.batch_payload import reference
from pipelines.run.report import StopReason
from pipelines.run.sending import Outcome
from pipelines.run.stopping import Stopped

log = logging.getLogger("pipelines")

# Polls of one payload: at once, then every 2, 4, 8 ... seconds, at most every 5 minutes.
FIRST_WAIT_S = 2.0
MAX_WAIT_S = 300.0


@dataclass
class Flight:
    """A submitted payload being polled."""

    batch: BookedBatch
    request_id: str
    slots: list[Slot]
    due: float  # the run clock's time of the next poll
    wait: float = FIRST_WAIT_S  # the next wait while it is still queued or running


class Collector:
    """Polls every payload in flight until its answers are kept."""

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        self.flights: dict[str, Flight] = {}
        self.closing = False  # nothing more will be submitted
        self.collected = asyncio.Event()  # set each time a payload leaves the flights
        self._exhausted_noted = False

    def track(self, batch: BookedBatch, request_id: str, slots: list[Slot]) -> None:
        """Poll ``batch`` from now on (a first poll at once)."""
        due = self.ctx.clock.monotonic()
        self.flights[batch.id] = Flight(batch, request_id, slots, due)
        self.ctx.changed.set()

    def close(self) -> None:
        """No payload will be added: :meth:`run` ends once every one is collected."""
        self.closing = True
        self.ctx.changed.set()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until every payload is collected (and :meth:`close` was called), or until
        Ctrl-C or an abort: then what is in flight stays in the book for the next run."""
        try:
            await self._loop()
        except Stopped:
            pass
        except PipelinesError as exc:  # e.g. the ledger or the book cannot be written
            self.ctx.stopper.abort(exc)
        except Exception as exc:  # a bug: stop, and leave what is in flight to the next run
            log.exception("batch collector failed", extra={"job": self.ctx.job_name})
            error = PipelinesError(f"internal error: {type(exc).__name__}: {exc}")
            self.ctx.stopper.abort(error)
        finally:
            self.collected.set()

    async def _loop(self) -> None:
        stopper = self.ctx.stopper
        while not stopper.hard:
            if not self.flights:
                if self.closing:
                    return
                await self._nap(None)
                continue
            flight = min(self.flights.values(), key=lambda f: f.due)
            wait = flight.due - self.ctx.clock.monotonic()
            if wait > 0:
                await self._nap(wait)
                continue
            await self._poll(flight)

    async def _nap(self, seconds: float | None) -> None:
        """Sleep ``seconds`` on the run's clock (None: until something changes), or less if
        a payload is added or the run is stopped."""
        self.ctx.changed.clear()
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self.ctx.changed.wait())}
        if seconds is not None:
            waits.add(asyncio.ensure_future(self.ctx.stopper.pause(seconds)))
        else:
            waits.add(asyncio.ensure_future(self.ctx.stopper.until_hard()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Stopped):
                    await task
        self.ctx.stopper.check_send()

    async def _poll(self, flight: Flight) -> None:
        ctx = self.ctx
        await ctx.limiter.acquire()
        ctx.stopper.check_send()
        ctx.report.requests += 1
        try:
            answer = await ctx.provider.poll_batch(ctx.model, flight.request_id)
        except ProviderError as exc:
            await self._on_poll_error(flight, exc)
            return
        now = ctx.clock.monotonic()
        if answer is None:
            flight.due, flight.wait = now + flight.wait, min(MAX_WAIT_S, flight.wait * 2)
            return
        await self._collect(flight, answer)

    async def _on_poll_error(self, flight: Flight, exc: ProviderError) -> None:
        ctx = self.ctx
        match exc.scope:
            case Scope.TRANSIENT | Scope.DAY:
                if isinstance(exc, RateLimited):
                    ctx.limiter.penalize(exc.retry_after)
                if exc.scope is Scope.DAY:  # no new payload today; this one is still ours
                    await self._day_is_over(exc)
                wait = max(flight.wait, exc.retry_after or 0.0)
                flight.due = ctx.clock.monotonic() + min(wait, MAX_WAIT_S)
                flight.wait = min(MAX_WAIT_S, flight.wait * 2)
                if wait >= 5:
                    log.info(
                        "polling batch %s again in %.0f s: %s",
                        flight.request_id,
                        wait,
                        exc.message,
                        extra={"job": ctx.job_name},
                    )
            case Scope.ROW:  # Cloudflare does not know it (any more)
                await self._lost(flight, exc)
            case Scope.RUN:
                ctx.stopper.abort(exc)
                raise Stopped from exc
            case _:  # pragma: no cover - every scope is handled above
                assert_never(exc.scope)

    # -- a finished payload ----------------------------------------------------------------

    async def _collect(self, flight: Flight, raw: dict[str, Any]) -> None:
        ctx = self.ctx
        refs = [reference(flight.batch.id, i) for i in range(flight.batch.items)]
        # a finished payload can hold tens of thousands of answers: read them off the loop
        answer = await asyncio.to_thread(read_answer, raw, refs, ctx.model.id)
        if answer.unmatched:
            log.warning(
                "batch %s: %d responses named no request of it (ignored)",
                flight.request_id,
                answer.unmatched,
                extra={"job": ctx.job_name},
            )
        kept = await asyncio.to_thread(lambda: [self._read(s, answer) for s in flight.slots])
        spent = 0.0
        for slot, (outcome, error) in zip(flight.slots, kept, strict=True):
            if outcome is not None:
                await ctx.deliver(outcome)
                spent += outcome.spent
            elif error is not None:
                await self._on_item_error(slot, error)
                # an item that may have run without an answer counts at its worst case
                spent += ctx.reservation(slot.call.estimate) if error.maybe_billed else 0.0
        await ctx.durable()  # the answers are in the journal before anything is settled
        crash_point("batch-written")
        billed = _billed(ctx, answer)
        actual = spent if billed is None else billed
        # False: settled by a run that died before forgetting the payload (counted then)
        if await ctx.budget.settle_hold(flight.batch.hold, actual):
            ctx.report.neurons += actual
        crash_point("batch-settled")
        await self._forget(flight)
        ctx.report.batches_collected += 1

    def _read(self, slot: Slot, answer: BatchAnswer) -> tuple[Outcome | None, ProviderError | None]:
        """One call's output rows (with what its answers say they used), or its error."""
        task, model = self.ctx.task, self.ctx.model
        items = [answer.items.get(i) for i in range(slot.first, slot.first + slot.bodies)]
        error = next((a.error for a in items if a is not None and a.error is not None), None)
        if error is None and any(a is None for a in items):
            error = transport_error("the finished batch has no response for it", model=model.id)
        if error is not None:
            return None, error
        requests = task.requests(slot.call)
        results = [a.result for a in items if a is not None]
        try:
            per_item = task.parse(requests, results)
        except TransportError as exc:
            return None, exc
        spent = task.neurons(task.usage(requests, results))
        table = task.output_table(slot.call, per_item)
        return Outcome(slot.call, table, per_item, spent=spent), None

    async def _on_item_error(self, slot: Slot, exc: ProviderError) -> None:
        """The error policy of one item, by the error's scope alone (as in sync mode)."""
        ctx, call = self.ctx, slot.call
        exc.attempts = slot.attempts + 1
        match exc.scope:
            case Scope.DAY:
                await self._day_is_over(exc)  # its rows stay pending
            case Scope.RUN:
                ctx.stopper.abort(exc)
            case Scope.ROW:
                halves = ctx.task.split(call, call.size // 2)
                if halves is None:
                    await ctx.fail(call, exc, retryable=False)
                else:  # a packed request with a bad row: isolate it in later payloads
                    for half in halves:
                        ctx.send_again(half, slot.attempts)
            case Scope.TRANSIENT:
                if slot.attempts + 1 < ctx.policy.max_attempts:
                    ctx.send_again(call, slot.attempts + 1)
                else:
                    await ctx.fail(call, exc, retryable=True)
            case _:  # pragma: no cover - every scope is handled above
                assert_never(exc.scope)

    async def _day_is_over(self, exc: ProviderError) -> None:
        ctx = self.ctx
        if not self._exhausted_noted:
            self._exhausted_noted = True
            await ctx.budget.mark_exhausted(exc.message)
        ctx.stopper.stop(
            StopReason.DAY_CAP,
            f"Cloudflare says the daily neuron allocation is used up ({exc.message})",
        )

    async def _lost(self, flight: Flight, exc: ProviderError) -> None:
        """Cloudflare no longer knows the payload: it may have run (its hold counts as
        spent), and its calls go into a later payload."""
        ctx = self.ctx
        log.warning(
            "batch %s is unknown to Cloudflare (%s); its %d rows are sent again",
            flight.request_id,
            exc.message,
            flight.batch.rows,
            extra={"job": ctx.job_name},
        )
        if await ctx.budget.settle_hold(flight.batch.hold, flight.batch.neurons):
            ctx.report.neurons += flight.batch.neurons
        await self._forget(flight)
        for slot in flight.slots:
            await self._on_item_error(slot, transport_error(exc.message, model=ctx.model.id))

    async def _forget(self, flight: Flight) -> None:
        await asyncio.to_thread(self.ctx.book.forget, flight.batch.id)
        self.flights.pop(flight.batch.id, None)
        self.collected.set()


def _billed(ctx: BatchContext, answer: BatchAnswer) -> float | None:
    """What the batch's own ``usage`` says it cost, for token-priced models (a speech
    model's minutes are not tokens); None when the answer carried none."""
    model = ctx.model
    if answer.usage is None or model.neurons_per_audio_minute or model.neurons_per_request:
        return None
    return ctx.task.neurons(answer.usage)
