"""Sending one call: reserve its neurons, make its requests with retries, settle the ledger,
and decide what an error means by its scope alone.

Accounting rule: a request that may have reached the server is counted as spent. An answer
counts at what it consumed; a failure whose fate the client cannot know (a timeout after the
request went out, a dropped connection, a 5xx, a garbled answer) counts at its estimate, and
the retry that follows is reserved anew, so the cap holds even when the server billed a
request the client gave up on. Refusals that say nothing ran (4xx, 429) count nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, assert_never

from pipelines.catalog.models import ModelInfo
from pipelines.core.columns import KEY
from pipelines.core.errors import (
    BudgetExhausted,
    BudgetStop,
    JsonModeUnmet,
    PipelinesError,
    ProviderError,
    RateLimited,
    Scope,
    TransportError,
)
from pipelines.providers.base import Provider
from pipelines.providers.retry import RetryPolicy
from pipelines.run.budget_guard import AsyncBudget
from pipelines.run.ratelimit import RateLimiter
from pipelines.run.report import RunReport, StopReason
from pipelines.run.shared_limit import SharedRateLimiter
from pipelines.run.stopping import Stopped, Stopper
from pipelines.tasks.base import Call, Estimate, Requests, RowFailure
from pipelines.tasks.task import Task

log = logging.getLogger("pipelines")

# Turns a call into its requests (loading its audio first, off the event loop).
Prepare = Callable[[Call], Awaitable[Requests]]

# Waits at least this long are said in the log, so a quiet run is never a mystery.
ANNOUNCE_WAIT_S = 5.0


@dataclass
class Outcome:
    """What sending one call gave: output rows, failures, or smaller calls to try instead."""

    call: Call | None = None  # the call that was sent (a packed call may have been cut)
    table: Any = None  # pa.Table of output rows
    per_item: dict[str, Any] | None = None  # result columns per distinct item (for the cache)
    failures: list[RowFailure] = field(default_factory=list)
    parts: list[Call] = field(default_factory=list)
    spent: float = 0.0  # neurons the call's requests consumed


@dataclass
class _Ledger:
    """The reservations one call holds, and what its requests have spent so far."""

    held: list[Any] = field(default_factory=list)
    unknown_fate: int = 0  # failed requests that may have been billed


class Sender:
    """Sends calls of one job's task to one provider within the budget."""

    def __init__(
        self,
        *,
        job_name: str,
        task: Task,
        model: ModelInfo,
        provider: Provider,
        budget: AsyncBudget,
        limiter: RateLimiter | SharedRateLimiter,
        policy: RetryPolicy,
        stopper: Stopper,
        report: RunReport,
    ) -> None:
        self.job_name = job_name
        self.task = task
        self.model = model
        self.provider = provider
        self.budget = budget
        self.limiter = limiter
        self.policy = policy
        self.stopper = stopper
        self.report = report
        self.cannot_fit = 0  # rows failed because one request is bigger than any budget
        self._reserving = asyncio.Lock()
        self.cannot_fit_message = ""

    def reservation(self, estimate: Estimate) -> float:
        """Neurons to hold for a request with this estimate (its worst case)."""
        return self.task.neurons(estimate.worst)

    # -- budget ----------------------------------------------------------------------

    async def _fit(self, call: Call) -> tuple[Call, Call | None]:
        """Shrink a packed call to what the budget still allows (the day's last requests)."""
        if call.size == 1:
            return call, None
        available = await self.budget.available()
        if self.reservation(call.estimate) <= available:
            return call, None
        for k in range(call.size - 1, 0, -1):
            if self.reservation(self.task.estimate(call.items[:k])) <= available:
                parts = self.task.split(call, k)
                return parts if parts is not None else (call, None)
        return call, None  # not even one item fits: reserve() says why

    async def _reserve_fitted(self, call: Call) -> tuple[Call, Call | None, Any]:
        """Fit ``call`` to the budget and reserve it, with no other worker in between (else
        two workers could both size their calls to the same remaining neurons)."""
        async with self._reserving:
            current, rest = await self._fit(call)
            return current, rest, await self._reserve(current)

    async def _reserve(self, call: Call) -> Any:
        try:
            return await self.budget.reserve(
                self.job_name, self.model.id, self.reservation(call.estimate)
            )
        except BudgetExhausted as exc:
            if exc.reason is BudgetStop.CANNOT_FIT:
                raise _CannotFit(exc) from exc
            self.stopper.stop(StopReason.of_budget(exc.reason), exc.message)
            raise Stopped from exc

    async def _settle(
        self, call: Call, ledger: _Ledger, requests: Requests | None, results: list[Any]
    ) -> float:
        """Commit what was spent on the first reservation, release the others."""
        spent = 0.0
        if requests is not None and results:
            spent = self.task.neurons(self.task.usage(requests, results))
        per_request = self.reservation(call.estimate) / max(1, self.task.requests_needed(call))
        spent += ledger.unknown_fate * per_request
        first, *rest = ledger.held
        # an answered request is recorded even at 0 neurons (an unpriced beta image model):
        # the ledger counts its requests, and only a refusal gives the reservation back
        answered = requests is not None and bool(results)
        if spent > 0 or answered:
            await self.budget.commit(first, spent)
        else:
            await self.budget.release(first)
        for r in rest:
            await self.budget.release(r)
        self.report.neurons += spent
        return spent

    # -- requests --------------------------------------------------------------------

    async def _request(self, call: Call, inputs: dict[str, Any], ledger: _Ledger) -> Any:
        """One request, tried until it succeeds, fails for good or the run stops."""
        attempt = 0
        while True:
            await self.limiter.acquire()
            self.stopper.check_send()  # after Ctrl-C or an abort, no new request goes out
            attempt += 1
            self.report.requests += 1
            try:
                result = await self.provider.run(self.model, inputs)
            except asyncio.CancelledError:
                ledger.unknown_fate += 1  # abandoned in flight: it may still be billed
                raise
            except ProviderError as exc:
                exc.attempts = attempt
                if exc.scope is not Scope.TRANSIENT or attempt >= self.policy.max_attempts:
                    if exc.maybe_billed:
                        ledger.unknown_fate += 1
                    raise
                await self._before_retry(call, exc, attempt, ledger)
                continue
            self.limiter.reward()
            return result

    async def _answer(
        self, call: Call, requests: Requests, index: int, body: dict[str, Any], ledger: _Ledger
    ) -> Any:
        """One request's answer. For a family that retries invalid answers (a generation
        that breaks its output schema), a bad answer is asked again up to the policy's
        attempts; it was billed, so it counts at its worst case and the retry is reserved
        anew."""
        tries = 0
        while True:
            result = await self._request(call, body, ledger)
            if not self.task.retries_invalid:
                return result
            tries += 1
            try:
                self.task.check_answer(requests, index, result)
            except TransportError as exc:
                ledger.unknown_fate += 1
                if tries >= self.policy.max_attempts:
                    exc.attempts = tries
                    raise
                self.report.answers_retried += 1
                ledger.held.append(await self._reserve(call))
                continue
            return result

    async def _before_retry(
        self, call: Call, exc: ProviderError, attempt: int, ledger: _Ledger
    ) -> None:
        if isinstance(exc, RateLimited):
            self.limiter.penalize(exc.retry_after)
        if isinstance(exc, JsonModeUnmet):
            self.report.answers_retried += 1
        if exc.maybe_billed:
            ledger.unknown_fate += 1
            ledger.held.append(await self._reserve(call))  # the retry is paid for again
        wait = self.policy.delay(attempt, exc)
        if wait >= ANNOUNCE_WAIT_S:
            log.info(
                "waiting %.0f s before retrying %s: %s", wait, self.model.id, type(exc).__name__
            )
        await self.stopper.pause(wait)

    # -- one call --------------------------------------------------------------------

    async def send(self, call: Call, prepare: Prepare) -> Outcome:
        """Send as much of ``call`` as the budget allows (the rest comes back in ``parts``);
        ``prepare`` turns a call into its requests (off the event loop)."""
        try:
            call, rest, held = await self._reserve_fitted(call)
        except _CannotFit as exc:
            halves = self.task.split(call, call.size // 2)
            if halves is not None:  # too big for any day as one request: as two, maybe not
                return Outcome(parts=list(halves))
            return self._cannot_fit(call, exc.error)
        outcome = await self._send_reserved(call, prepare, _Ledger(held=[held]))
        if rest is not None:
            outcome.parts.append(rest)
        return outcome

    async def _send_reserved(self, call: Call, prepare: Prepare, ledger: _Ledger) -> Outcome:
        requests: Requests | None = None
        results: list[Any] = []
        try:
            requests = await prepare(call)
            for index, body in enumerate(requests.bodies):
                results.append(await self._answer(call, requests, index, dict(body), ledger))
            per_item = self.task.parse(requests, results)
        except (ProviderError, _CannotFit) as exc:
            await self._settle(call, ledger, requests, results)
            if isinstance(exc, ProviderError):
                return await self._on_error(call, exc)
            return self._cannot_fit(call, exc.error)
        except BaseException:
            await self._settle(call, ledger, requests, results)
            raise
        try:
            spent = await self._settle(call, ledger, requests, results)
        except PipelinesError as exc:
            # the ledger cannot record it (deleted, read-only): stop the run, but keep the
            # answer, which was paid for and must not be paid again
            self.stopper.abort(exc)
            spent = self.task.neurons(self.task.usage(requests, results))
        table = self.task.output_table(call, per_item)
        return Outcome(call=call, table=table, per_item=per_item, spent=spent)

    async def _on_error(self, call: Call, exc: ProviderError) -> Outcome:
        """The error policy: one decision, by the error's scope."""
        match exc.scope:
            case Scope.DAY:
                await self.budget.mark_exhausted(exc.message)
                self.stopper.stop(
                    StopReason.DAY_CAP,
                    f"Cloudflare says the daily neuron allocation is used up ({exc.message})",
                )
                raise Stopped from exc
            case Scope.RUN:
                self.stopper.abort(exc)
                raise Stopped from exc
            case Scope.ROW:
                halves = self.task.split(call, call.size // 2)
                if halves is not None:  # a packed request with a bad row: isolate it
                    return Outcome(parts=list(halves))
                return Outcome(failures=failures_of(call, exc, retryable=False))
            case Scope.TRANSIENT:
                return Outcome(failures=failures_of(call, exc, retryable=True))
            case _:  # pragma: no cover - every scope is handled above
                assert_never(exc.scope)

    def _cannot_fit(self, call: Call, error: BudgetExhausted) -> Outcome:
        # Not the budget of today only: no day (or run) is big enough for this request. The
        # rows fail (retried on a later run, when the cap may be higher) and the rest go on.
        self.cannot_fit += call.rows.height
        self.cannot_fit_message = error.message
        rows = failures_of(call, error, retryable=True)
        return Outcome(failures=rows)


class _CannotFit(Exception):
    def __init__(self, error: BudgetExhausted) -> None:
        super().__init__(error.message)
        self.error = error


def failures_of(call: Call, exc: PipelinesError, *, retryable: bool) -> list[RowFailure]:
    """One failure row per row of ``call``."""
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    attempts = getattr(exc, "attempts", 0)
    name = "CannotFit" if isinstance(exc, BudgetExhausted) else type(exc).__name__
    keys = call.rows.get_column(KEY).to_list()
    hashes = call.row_hashes()
    return [
        RowFailure(k, name, exc.message, code, status, attempts, retryable, h)
        for k, h in zip(keys, hashes, strict=True)
    ]
