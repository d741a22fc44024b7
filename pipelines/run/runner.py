"""The async runner: source → task → rate-limited workers → durable output.

One producer streams pending rows from the source (skipping every key already done) and
packs them into calls on a bounded queue, so memory stays flat whatever the input size.
N workers take calls, reserve neurons, wait for a rate-limiter slot and call the provider,
retrying only transient errors; one writer makes each result durable as it arrives. A bad
row inside a packed request is isolated by splitting the request, a 3021 slows everybody
down, the daily cap (ours or Cloudflare's) stops the run cleanly and resumably, and an
authentication failure aborts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from pipelines.catalog.models import ModelInfo, get_model
from pipelines.core.columns import KEY
from pipelines.core.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    DailyNeuronsExhausted,
    InvalidInput,
    PaidPlanRequired,
    PipelinesError,
    RateLimited,
    TransientError,
    UnknownModel,
)
from pipelines.job.spec import Job
from pipelines.output.store import OutputStore, fingerprint
from pipelines.output.subtitles import SubtitleWriter
from pipelines.providers.base import Provider
from pipelines.providers.retry import RetryPolicy, with_retries
from pipelines.run.cache import ResultCache, TaskCache
from pipelines.run.ratelimit import RateLimiter
from pipelines.run.report import RunReport, Status, budget_stop_message
from pipelines.sources import open_source
from pipelines.sources.audio import load_media
from pipelines.tasks.base import Call, Estimate, Requests, RowFailure
from pipelines.tasks.registry import make_task
from pipelines.tasks.task import Task


class Budget(Protocol):
    """What the runner needs from the neuron ledger."""

    def reserve(self, job: str, model: str, neurons: float) -> Any: ...
    def commit(self, r: Any, actual_neurons: float) -> None: ...
    def release(self, r: Any) -> None: ...
    def available(self) -> float: ...
    def mark_exhausted(self, note: str = "") -> None: ...


class Progress(Protocol):
    """Where the runner reports progress (tqdm in the CLI)."""

    def start(self, total: int | None) -> None: ...
    def update(self, rows: int, neurons: float) -> None: ...


@dataclass
class RunOptions:
    """Per-run switches from the command line."""

    fresh: bool = False
    retry_failed: bool = False
    batch_rows: int = 20_000


class _Stop(Exception):
    """Internal: a worker saw a reason to stop taking new work."""


class Runner:
    """One run of one job. Use :func:`arun_job` unless you need the pieces."""

    def __init__(
        self,
        job: Job,
        provider: Provider,
        budget: Budget,
        *,
        options: RunOptions | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        produced_by: str | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.job = job
        self.provider = provider
        self.budget = budget
        self.options = options or RunOptions()
        self.progress = progress
        self.sleep = sleep
        self.model: ModelInfo = get_model(job.task.model)
        keep = [c for c in job.output.keep if c != KEY]
        self.task: Task = make_task(job, self.model, keep)
        rpm = job.limits.requests_per_minute or self.model.rpm
        self.limiter = RateLimiter(rpm, clock=clock, sleep=sleep)
        self.policy = RetryPolicy(max_attempts=job.limits.max_attempts)
        self.report = RunReport(job=job.name, run_id=_run_id())
        self.produced_by = produced_by or provider.produced_by(self.model)
        self.store = OutputStore(
            job.output_path,
            fingerprint=fingerprint(job, self.produced_by),
            meta={
                "job": job.name,
                "model": self.model.id,
                "produced_by": self.produced_by,
                "task": job.task.kind,
            },
        )
        self.reuse = (
            TaskCache(cache, self.task, self.produced_by)
            if cache is not None and self.task.cacheable
            else None
        )
        self.subtitles = SubtitleWriter.for_job(job)
        self._stop: Status | None = None
        self._write_failed = False
        self._stop_message = ""
        self._abort: PipelinesError | None = None
        self._calls: asyncio.Queue[Call | None] = asyncio.Queue(maxsize=job.limits.concurrency * 2)
        self._out: asyncio.Queue[pa.Table | list[RowFailure] | None] = asyncio.Queue(maxsize=256)
        self._neurons_per_row: list[float] = [0.0, 0.0]  # neurons, rows (for the days-left figure)

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self, status: Status, message: str = "") -> None:
        """Stop taking new work; in-flight requests finish and are kept."""
        if self._stop is None or status == "aborted":
            self._stop = status
            self._stop_message = message or self._stop_message

    async def run(self) -> RunReport:
        started = time.monotonic()
        source = open_source(self.job)
        self.report.rows_total = source.count()
        self.store.open(fresh=self.options.fresh)
        done = self.store.done_keys(retry_failed=self.options.retry_failed)
        sample = next(iter(source.iter_batches([*self.task.keep], batch_rows=1)), None)
        schema = self.task.output_schema(sample)
        if self.progress is not None:
            total = self.report.rows_total
            self.progress.start(None if total is None else max(0, total - done.height))
        self.store.begin(self.report.run_id, schema)
        writer = asyncio.create_task(self._writer())
        workers = [asyncio.create_task(self._worker()) for _ in range(self.job.limits.concurrency)]
        produced = False
        try:
            await self._produce(source, done)
            produced = True
        finally:
            for _ in workers:
                await self._calls.put(None)
            await asyncio.gather(*workers, return_exceptions=True)
            await self._out.put(None)
            await writer
            # a run that failed before writing anything leaves no (empty) output behind, and
            # one whose journal could not be written keeps the previous output as it is
            writable = not self._write_failed
            if writable and (produced or self.store.has_journals() or self.store.path.exists()):
                self.report.output_rows, self.report.failures_total = await asyncio.to_thread(
                    self.store.finalize
                )
            self.report.wall_s = time.monotonic() - started
        return self._finish()

    def _finish(self) -> RunReport:
        r = self.report
        if self._abort is not None:
            r.status, r.error, r.message = "aborted", self._abort, self._abort.message
        elif self._stop == "budget":
            r.status, r.message = "budget", self._budget_message()
        elif self._stop == "interrupted":
            r.status, r.message = "interrupted", self._stop_message
        elif r.failures_total:
            r.status = "failed_rows"
            r.message = f"{r.failures_total} rows failed; see {self.store.failures_path}"
        return r

    def _budget_message(self) -> str:
        per_day = float(getattr(self.budget, "daily_neurons", self.job.budget.daily_neurons))
        return budget_stop_message(self._stop_message, self.report, self._neurons_per_row, per_day)

    # -- producer ------------------------------------------------------------------------

    async def _produce(self, source: Any, done: pl.DataFrame) -> None:
        columns = self.task.read_columns()
        # read about what the workers can have in flight: a 20,000-row batch of one-text
        # calls costs ~100 MB of call objects and delays the first request
        in_flight = self.job.limits.concurrency * self.task.batch_size * 8
        batch_rows = min(self.options.batch_rows, max(2_000, in_flight))
        batches = iter(source.iter_batches(columns, batch_rows=batch_rows))
        while self._stop is None:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                return
            if done.height:
                before = batch.height
                batch = batch.join(done, on=KEY, how="anti")
                self.report.rows_skipped += before - batch.height
            if batch.height == 0:
                continue
            calls, failures = await asyncio.to_thread(self.task.prepare, batch)
            if failures:
                await self._out.put(failures)
            if self.reuse is not None and calls:
                served, calls = await asyncio.to_thread(self.reuse.lookup, calls)
                for table in served:
                    self.report.rows_cached += table.num_rows
                    await self._out.put(table)
            for call in calls:
                if self._stop is not None:
                    return
                await self._calls.put(call)

    # -- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            call = await self._calls.get()
            if call is None:
                return
            if self._stop is not None:
                continue  # drain: rows stay pending for the next run
            try:
                await self._process(call)
            except _Stop:
                continue
            except Exception as exc:  # a bug must not silently lose rows: record them
                error = PipelinesError(f"internal error: {type(exc).__name__}: {exc}")
                await self._fail(call, error, 0, retryable=True)

    async def _process(self, call: Call) -> None:
        todo = [call]
        while todo and self._stop is None:
            current, rest = self._fit_budget(todo.pop())
            if rest is not None:
                todo.append(rest)
            parts = await self._send(current)
            if parts:  # a packed request with a bad row: isolate it
                todo.extend(reversed(parts))

    def _fit_budget(self, call: Call) -> tuple[Call, Call | None]:
        """Shrink a packed call to what the budget still allows (the day's last requests)."""
        if call.size == 1:
            return call, None
        available = self.budget.available()
        if self._reservation(call.estimate) <= available:
            return call, None
        for k in range(call.size - 1, 0, -1):
            if self._reservation(self.task.estimate(call.items[:k])) <= available:
                parts = self.task.split(call, k)
                return parts if parts is not None else (call, None)
        return call, None  # not even one item fits: reserve() says why

    def _reservation(self, estimate: Estimate) -> float:
        return self.task.neurons(estimate.worst)

    async def _send(self, call: Call) -> list[Call] | None:
        estimate = self._reservation(call.estimate)
        try:
            reservation = self.budget.reserve(self.job.name, self.model.id, estimate)
        except BudgetExhausted as exc:
            self.stop("budget", exc.message)
            raise _Stop from exc
        attempts = 0
        results: list[Any] = []
        requests: Requests | None = None

        async def request(inputs: dict[str, Any]) -> Any:
            async def attempt() -> Any:
                nonlocal attempts
                await self.limiter.acquire()
                attempts += 1
                self.report.requests += 1
                try:
                    result = await self.provider.run(self.model, inputs)
                except RateLimited as exc:
                    self.limiter.penalize(exc.retry_after)
                    raise
                self.limiter.reward()
                return result

            return await with_retries(attempt, self.policy, sleep=self.sleep)

        def billed() -> float:
            # requests that went through were billed even if a later part failed
            if requests is None or not results:
                return 0.0
            return self.task.neurons(self.task.usage(requests, results))

        def settle() -> None:
            spent = billed()
            if spent > 0:
                self.budget.commit(reservation, spent)
                self.report.neurons += spent
            else:
                self.budget.release(reservation)

        try:
            # most calls are one request; a long recording is several (one per chunk)
            refs = call.media()
            media = await asyncio.to_thread(load_media, self.job, refs) if refs else ()
            requests = self.task.requests(call, media)
            for body in requests.bodies:
                results.append(await request(dict(body)))
            per_item = self.task.parse(requests, results)
        except DailyNeuronsExhausted as exc:
            settle()
            self.budget.mark_exhausted(exc.message)
            self.stop(
                "budget", f"Cloudflare says the daily neuron allocation is used up ({exc.message})"
            )
            raise _Stop from exc
        except (AuthenticationFailed, PaidPlanRequired, UnknownModel) as exc:
            settle()
            self._abort = exc
            self.stop("aborted", exc.message)
            raise _Stop from exc
        except InvalidInput as exc:
            settle()
            halves = self.task.split(call, call.size // 2)
            if halves is not None:
                return list(halves)
            await self._fail(call, exc, attempts, retryable=False)
            return None
        except TransientError as exc:
            settle()
            await self._fail(call, exc, attempts, retryable=True)
            return None
        spent = billed()
        self.budget.commit(reservation, spent)
        self.report.neurons += spent
        self._neurons_per_row[0] += spent
        self._neurons_per_row[1] += call.rows.height
        if self.reuse is not None:
            await asyncio.to_thread(self.reuse.store, call, per_item)
        await self._out.put(self.task.output_table(call, per_item))
        return None

    async def _fail(
        self, call: Call, exc: PipelinesError, attempts: int, *, retryable: bool
    ) -> None:
        status = getattr(exc, "status", None)
        code = getattr(exc, "code", None)
        rows = [
            RowFailure(k, type(exc).__name__, exc.message, code, status, attempts, retryable)
            for k in call.rows.get_column(KEY).to_list()
        ]
        await self._out.put(rows)

    # -- writer --------------------------------------------------------------------------

    async def _writer(self) -> None:
        finished = False
        broken = False
        while not finished:
            items = [await self._out.get()]
            while not self._out.empty():
                items.append(self._out.get_nowait())
            finished = any(i is None for i in items)
            if broken:
                continue  # keep draining so no worker blocks on a full queue
            tables = [i for i in items if isinstance(i, pa.Table)]
            failures = [f for i in items if isinstance(i, list) for f in i]
            try:
                await self._write(tables, failures)
            except PipelinesError as exc:  # disk full, folder gone read-only
                broken = self._write_failed = True
                self._abort = exc
                self.stop("aborted", exc.message)

    async def _write(self, tables: list[pa.Table], failures: list[RowFailure]) -> None:
        if tables:
            merged = pa.concat_tables(tables, promote_options="permissive")
            if self.subtitles is not None:  # first: a done row always has its files
                await asyncio.to_thread(self.subtitles.write, merged)
            await asyncio.to_thread(self.store.write_results, merged)
            self.report.rows_done += merged.num_rows
        if failures:
            await asyncio.to_thread(self.store.write_failures, failures)
            self.report.rows_failed += len(failures)
        if self.progress is not None and (tables or failures):
            rows = sum(t.num_rows for t in tables) + len(failures)
            self.progress.update(rows, self.report.neurons)


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


async def arun_job(
    job: Job,
    provider: Provider,
    budget: Budget,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    produced_by: str | None = None,
    cache: ResultCache | None = None,
) -> RunReport:
    """Run ``job`` once with ``provider``, spending at most what ``budget`` grants."""
    runner = Runner(
        job,
        provider,
        budget,
        options=options,
        progress=progress,
        sleep=sleep,
        clock=clock,
        produced_by=produced_by,
        cache=cache,
    )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                sig, runner.stop, "interrupted", "interrupted; re-run to resume"
            )
            installed.append(sig)
    try:
        return await runner.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
