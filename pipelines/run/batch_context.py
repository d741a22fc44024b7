"""What the Batch API side of a run shares: the job's task and model, the provider, the
budget, the rate limiter, the stopper, the report, the batch book and where outcomes go.

The submitter (:mod:`pipelines.run.batch_submit`) and the collector
(:mod:`pipelines.run.batch_collect`) each take one :class:`BatchContext`; the runner builds
it once (:mod:`pipelines.run.batch_mode`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import PipelinesError
from pipelines.output.batches import BatchBook
from pipelines.providers.base import Provider
from pipelines.providers.retry import RetryPolicy
from pipelines.run.budget_guard import AsyncBudget
from pipelines.run.clock import Clock
from pipelines.run.ratelimit import RateLimiter
from pipelines.run.report import RunReport
from pipelines.run.sending import Outcome, failures_of
from pipelines.run.shared_limit import SharedRateLimiter
from pipelines.run.stopping import Stopper
from pipelines.tasks.base import Call, Estimate
from pipelines.tasks.task import Task

# Where outcomes go: delivered to the run's writer, and a wait until what was delivered is
# durable (in the journal, fsync'ed).
Deliver = Callable[[Outcome], Awaitable[None]]
Durable = Callable[[], Awaitable[None]]


@dataclass
class BatchContext:
    """Everything the submitter and the collector share (see the module docstring)."""

    job_name: str
    task: Task
    model: ModelInfo
    provider: Provider
    budget: AsyncBudget
    limiter: RateLimiter | SharedRateLimiter
    policy: RetryPolicy
    stopper: Stopper
    report: RunReport
    book: BatchBook
    clock: Clock
    fingerprint: str
    run_id: str
    deliver: Deliver
    durable: Durable
    # calls to send again (a bad row's halves, items that failed for now), with the number of
    # payloads that carried them already; the runner takes them
    again: list[tuple[Call, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def reservation(self, estimate: Estimate) -> float:
        """Neurons held for a request with ``estimate``: its worst case, as in sync mode."""
        return self.task.neurons(estimate.worst)

    async def fail(self, call: Call, exc: PipelinesError, *, retryable: bool) -> None:
        """``call``'s rows fail with ``exc`` (delivered; durable with the next batch)."""
        await self.deliver(Outcome(failures=failures_of(call, exc, retryable=retryable)))

    def send_again(self, call: Call, attempts: int) -> None:
        """Queue ``call`` for a later payload (if the run still submits)."""
        self.again.append((call, attempts))
        self.changed.set()
