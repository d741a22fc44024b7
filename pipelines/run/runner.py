"""The async runner: source → task → rate-limited workers → durable output.

One producer streams pending rows from the source (skipping every key already done) and
packs them into calls on a bounded queue, so memory stays flat whatever the input size.
N workers take calls and hand each to the :class:`~pipelines.run.sending.Sender` (budget,
rate limit, retries, error policy); one writer makes each result durable as it arrives. A
stop (Ctrl-C, the budget, an abort) ends the intake at once: calls not started stay pending,
requests in flight finish and are kept; a second Ctrl-C abandons those too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pipelines.catalog.models import ModelInfo
from pipelines.core.columns import KEY
from pipelines.core.errors import JobError, PipelinesError
from pipelines.core.memory import use_lean_allocators
from pipelines.job.models import job_model
from pipelines.job.spec import Job
from pipelines.output.batches import BatchBook
from pipelines.output.images import ImageWriter
from pipelines.output.store import OutputStore, fingerprint
from pipelines.output.subtitles import SubtitleWriter
from pipelines.providers.base import Provider
from pipelines.providers.retry import RetryPolicy
from pipelines.run.batch_context import BatchContext
from pipelines.run.batch_mode import BatchMode
from pipelines.run.budget_guard import AsyncBudget, Budget
from pipelines.run.cache import ResultCache, TaskCache
from pipelines.run.clock import REAL_CLOCK, Clock
from pipelines.run.pending import pending_calls, read_batch_rows
from pipelines.run.ratelimit import RateLimiter
from pipelines.run.report import RunReport, StopReason, budget_stop_message, plural
from pipelines.run.sending import Outcome, Sender, failures_of
from pipelines.run.settings import RunSettings
from pipelines.run.shared_limit import SharedRateLimiter
from pipelines.run.stopping import Stopped, Stopper
from pipelines.run.writing import Progress, ResultWriter
from pipelines.sources import open_source
from pipelines.sources.audio import load_media
from pipelines.sources.base import Source
from pipelines.tasks.base import Call, Requests
from pipelines.tasks.registry import make_task
from pipelines.tasks.task import Task

T = TypeVar("T")

# How often the progress display is refreshed while nothing arrives (a stalled ledger, a
# long backoff): the bar must keep moving its clock, never look hung.
HEARTBEAT_S = 0.5


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides the job: where requests go and what they may spend."""

    provider: Provider
    budget: Budget
    produced_by: str
    cache: ResultCache | None = None
    progress: Progress | None = None
    clock: Clock = REAL_CLOCK
    rate_limited: bool = True  # False: no model's per-minute limit (local models)
    # the shared ledger's database: the per-model limit is then shared by every machine
    shared_limits: str | None = None
    account: str = "default"


class Runner:
    """One run of one job. Use :func:`arun_job` unless you need the pieces."""

    def __init__(self, job: Job, context: RunContext, settings: RunSettings) -> None:
        self.job = job
        self.ctx = context
        self.settings = settings
        self.model: ModelInfo = job_model(job)
        self.task: Task = make_task(job, self.model, [c for c in job.output.keep if c != KEY])
        self.report = RunReport(job=job.name, run_id=_run_id())
        self.stopper = Stopper(context.clock)
        self.budget = AsyncBudget(context.budget)
        # a job's own limit always holds; the model's published one only where it applies
        default_rpm = self.model.rpm if context.rate_limited else math.inf
        rpm = job.limits.requests_per_minute or default_rpm
        limiter: RateLimiter | SharedRateLimiter
        if context.shared_limits and math.isfinite(rpm):
            limiter = SharedRateLimiter(
                context.shared_limits,
                context.account,
                self.model.id,
                rpm,
                sleep=self.stopper.pause,
            )
        else:
            limiter = RateLimiter(rpm, clock=context.clock.monotonic, sleep=self.stopper.pause)
        self.limiter = limiter
        policy = RetryPolicy(max_attempts=job.limits.max_attempts)
        self.sender = Sender(
            job_name=job.name,
            task=self.task,
            model=self.model,
            provider=context.provider,
            budget=self.budget,
            limiter=limiter,
            policy=policy,
            stopper=self.stopper,
            report=self.report,
        )
        self.store = OutputStore(
            job.output_path,
            fingerprint=fingerprint(job, context.produced_by),
            meta={
                "job": job.name,
                "model": self.model.id,
                "produced_by": context.produced_by,
                "task": job.task.kind,
            },
            sync=job.output.sync,
            images=job.images_path,
        )
        self.reuse = (
            TaskCache(context.cache, self.task, context.produced_by)
            if context.cache is not None and self.task.cacheable
            else None
        )
        self.images = ImageWriter.for_job(job)
        self.out = ResultWriter(
            self.store,
            SubtitleWriter.for_job(job),
            self.report,
            self.stopper,
            context.progress,
            images=self.images,
        )
        self.batch = self._batch_mode(limiter, policy)
        self._calls: asyncio.Queue[Call | None] = asyncio.Queue(maxsize=job.limits.concurrency * 2)
        self._per_row = [0.0, 0.0]  # neurons, rows answered (for the days-left figure)
        self._workers: list[asyncio.Task[None]] = []
        self._abandoned = False
        self.stopper.on_abandon = self._abandon

    def _batch_mode(
        self, limiter: RateLimiter | SharedRateLimiter, policy: RetryPolicy
    ) -> BatchMode:
        """The Batch API side: payloads earlier runs left in flight, and in batch mode the
        submitter (sharing the model's rate limiter with sync requests)."""
        job, context = self.job, self.ctx
        return BatchMode(
            BatchContext(
                job_name=job.name,
                task=self.task,
                model=self.model,
                provider=context.provider,
                budget=self.budget,
                limiter=limiter,
                policy=policy,
                stopper=self.stopper,
                report=self.report,
                book=BatchBook(self.store.work),
                clock=context.clock,
                fingerprint=self.store.fingerprint.digest,
                run_id=self.report.run_id,
                deliver=self._deliver,
                durable=self.out.durable,
            ),
            submitting=job.limits.mode == "batch",
            max_items=job.limits.batch_items,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> RunReport:
        started = time.monotonic()
        use_lean_allocators()  # memory flat over millions of rows (see core.memory)
        if self.batch.submitting and not self.ctx.provider.supports_batch:
            raise JobError(
                f"batch mode needs Cloudflare's Batch API, which provider "
                f"{self.ctx.provider.name} does not offer; use provider cloudflare (or "
                "emulator), or limits.mode: sync"
            )
        source = open_source(self.job)
        # a shard's share of the input is only known once it is read
        self.report.rows_total = source.count() if source.shard is None else None
        if self.images is not None:  # before --fresh removes anything
            self.images.claim()
        self.store.open(fresh=self.settings.fresh)
        if self.images is not None:
            self.images.open()
        try:
            await self.batch.recover(fresh=self.settings.fresh)
        except BaseException:
            self.budget.close()
            raise
        sample = next(iter(source.iter_batches([*self.task.keep], batch_rows=1)), None)
        self.store.begin(self.report.run_id, self.task.output_schema(sample))
        writer = asyncio.create_task(self.out.run())
        heartbeat = asyncio.create_task(self._heartbeat())
        self.batch.start()
        if self.batch.submitting:  # one worker packs every call into payloads
            self._workers = [asyncio.create_task(self.batch.worker(self._calls))]
        else:
            n = self.job.limits.concurrency
            self._workers = [asyncio.create_task(self._worker()) for _ in range(n)]
        produced = False
        try:
            produced = await self._produce(source)
        finally:
            await self._drain(writer)
            heartbeat.cancel()
            if isinstance(self.limiter, SharedRateLimiter):
                await self.limiter.aclose()
            self.budget.close()
            await self._finalize(produced)
            self.report.wall_s = time.monotonic() - started
        return self._finish()

    async def _drain(self, writer: asyncio.Task[None]) -> None:
        if not self._abandoned:
            for _ in self._workers:
                await self._calls.put(None)
        await asyncio.gather(*self._workers, return_exceptions=True)
        # the payloads in flight are collected (unless the run was interrupted); in sync
        # mode, what came back to be sent again goes as sync requests
        for call, _ in await self.batch.finish():
            if self.stopper.stopping or self._abandoned:
                break
            await self._guarded(call)
        await self.out.put(None)
        await writer

    async def _finalize(self, produced: bool) -> None:
        # a run that failed before writing anything leaves no (empty) output behind, and one
        # whose journal could not be written keeps the previous output as it is
        if self.out.failed:
            return
        if produced or self.store.has_journals() or self.store.path.exists():
            rows, failures = await asyncio.to_thread(self.store.finalize)
            self.report.output_rows, self.report.failures_total = rows, failures

    def _abandon(self) -> None:
        self._abandoned = True
        for worker in [*self._workers, *self.batch.tasks()]:
            worker.cancel()
        while not self._calls.empty():  # nobody takes calls any more: free the producer
            self._calls.get_nowait()

    def _finish(self) -> RunReport:
        r, stop = self.report, self.stopper
        r.batches_in_flight, r.rows_in_flight = self.batch.in_flight()
        cannot_fit = self.sender.cannot_fit + self._submitted_cannot_fit()
        if stop.reason is not None:
            r.stop_reason, r.error = stop.reason, stop.error
            r.message = stop.message
            if stop.reason.status == "budget":
                per_row = self._per_row[0] / self._per_row[1] if self._per_row[1] else 0.0
                per_day = self.budget.daily_neurons
                r.message = budget_stop_message(stop.reason, stop.message, r, per_row, per_day)
        elif cannot_fit:
            r.stop_reason = StopReason.CANNOT_FIT
            why = self.sender.cannot_fit_message or self._submitted_cannot_fit_message()
            r.message = f"{plural(cannot_fit, 'row')} can never fit: {why}"
        elif r.rows_failed:
            # exit 1 says rows failed in this run; older failures alone are only a note, so
            # a nightly re-run with nothing new does not alarm cron every night
            r.stop_reason = StopReason.ROWS_FAILED
            r.message = f"{plural(r.rows_failed, 'row')} failed; see {self.store.failures_path}"
        elif r.failures_total:
            r.message = (
                f"{plural(r.failures_total, 'row')} failed in earlier runs (see "
                f"{self.store.failures_path}); --retry-failed sends them again"
            )
        missing = r.rows_missing - r.rows_repaired
        if missing and self.images is not None:
            verb = "is" if missing == 1 else "are"
            note = (
                f"{plural(missing, 'image')} of the index {verb} missing from "
                f"{self.images.folder} (deleted or changed since made); --repair makes "
                f"{'it' if missing == 1 else 'them'} again"
            )
            r.message = f"{r.message}; {note}" if r.message else note
        if r.batches_in_flight:
            batches = f"{r.batches_in_flight:,} batch{'' if r.batches_in_flight == 1 else 'es'}"
            flying = (
                f"{batches} ({plural(r.rows_in_flight, 'row')}) still in flight on "
                "Cloudflare; the next run collects them"
            )
            r.message = f"{r.message}; {flying}" if r.message else flying
        return r

    def _submitted_cannot_fit(self) -> int:
        submitter = self.batch.submitter
        return submitter.cannot_fit if submitter is not None else 0

    def _submitted_cannot_fit_message(self) -> str:
        submitter = self.batch.submitter
        return submitter.cannot_fit_message if submitter is not None else ""

    async def _heartbeat(self) -> None:
        progress = self.ctx.progress
        if progress is None:
            return
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            progress.refresh()

    # -- producer ------------------------------------------------------------------------

    async def _produce(self, source: Source) -> bool:
        """Queue every pending call; True when the source was read to its end."""
        done = await asyncio.to_thread(
            self.store.done_keys,
            retry_failed=self.settings.retry_failed,
            repair=self.settings.repair,
            in_flight=self.batch.in_flight_keys(),
        )
        if self.ctx.progress is not None:
            total = self.report.rows_total
            self.ctx.progress.start(None if total is None else max(0, total - done.height))
        rows = read_batch_rows(self.task, self.job.limits.concurrency, self.settings.batch_rows)
        batches = pending_calls(source, self.task, done, batch_rows=rows, reuse=self.reuse)
        async for pending in _threaded(batches):
            self.report.rows_skipped += pending.rows_skipped
            self.report.rows_duplicate += pending.rows_duplicate
            self.report.rows_cached += pending.rows_cached
            self.report.rows_missing += pending.rows_missing
            self.report.rows_repaired += pending.rows_repaired
            if pending.failures:
                await self.out.put(pending.failures)
            for table in pending.cached:
                await self.out.put(table)
            for call in pending.calls:
                if self.stopper.stopping:
                    return False
                await self._calls.put(call)
                if self._abandoned:
                    self._calls.get_nowait()
                    return False
        return not self.stopper.stopping

    # -- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            call = await self._calls.get()
            if call is None:
                return
            if self.stopper.stopping:
                continue  # drain: rows stay pending for the next run
            await self._guarded(call)

    async def _guarded(self, call: Call) -> None:
        try:
            await self._process(call)
        except Stopped:
            return
        except PipelinesError as exc:  # e.g. the ledger cannot be used: stop the run
            self.stopper.abort(exc)  # (its rows stay pending)
        except Exception as exc:  # a bug must not silently lose rows: record them
            error = PipelinesError(f"internal error: {type(exc).__name__}: {exc}")
            await self.out.put(failures_of(call, error, retryable=True))

    async def _process(self, call: Call) -> None:
        todo = [call]
        while todo and not self.stopper.stopping:
            current = todo.pop()
            outcome = await self.sender.send(current, self._prepare)
            # what did not fit the budget, or the halves of a packed request with a bad row
            todo.extend(reversed(outcome.parts))
            await self._deliver(outcome)

    async def _prepare(self, call: Call) -> Requests:
        # audio is read (and a long recording cut into chunks) off the event loop
        refs = call.media()
        media = await asyncio.to_thread(load_media, self.job, refs) if refs else ()
        return self.task.requests(call, media)

    async def _deliver(self, outcome: Outcome) -> None:
        if outcome.failures:
            await self.out.put(outcome.failures)
        if outcome.table is None:
            return
        self._per_row[0] += outcome.spent
        self._per_row[1] += outcome.table.num_rows
        if self.reuse is not None and outcome.call is not None and outcome.per_item is not None:
            await asyncio.to_thread(self.reuse.store, outcome.call, outcome.per_item)
        await self.out.put(outcome.table)


async def _threaded(items: Iterator[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterator on a worker thread, one item at a time."""
    while True:
        item = await asyncio.to_thread(next, items, None)
        if item is None:
            return
        yield item


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


async def arun_job(job: Job, context: RunContext, settings: RunSettings | None = None) -> RunReport:
    """Run ``job`` once with ``context.provider``, spending at most what its budget grants."""
    runner = Runner(job, context, settings or RunSettings())
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, runner.stopper.signal)
            installed.append(sig)
    try:
        return await runner.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
