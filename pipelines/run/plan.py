"""``plan``: what a job still has to do and what it will cost, without any network.

It streams the pending rows through the same task packing and token counting the runner
uses, so the estimate is the figure the runner will reserve before each request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.budget import Ledger, effective_budget, resolve_account
from pipelines.catalog.metering import Usage
from pipelines.core.columns import KEY
from pipelines.job.models import job_model
from pipelines.job.spec import Job
from pipelines.output.batches import BatchBook
from pipelines.output.store import OutputStore, fingerprint
from pipelines.run.batch_payload import Entry, count_payloads, entry_for
from pipelines.run.cache import TaskCache, open_cache
from pipelines.run.pending import PendingBatch, pending_calls, read_batch_rows, sum_usage
from pipelines.run.settings import RunSettings
from pipelines.sources import open_source
from pipelines.tasks.registry import make_task
from pipelines.tasks.task import Task


@dataclass
class Plan:
    """The estimate for one job."""

    job: str
    model: str
    rows_total: int
    rows_done: int
    rows_failed: int
    rows_pending: int
    rows_new: int  # keys with no outcome yet
    rows_changed: int  # keys done before whose content changed: processed again
    rows_removed: int  # output rows whose key is no longer in the input
    rows_duplicate: int  # rows whose key came earlier in the input: not processed
    rows_unsendable: int
    rows_cached: int
    neurons_saved_by_cache: float
    requests: int
    input_tokens: int
    output_tokens: int
    audio_minutes: float
    neurons: float  # the expected figure
    neurons_floor: float  # input only (generate: as if every answer were empty)
    neurons_ceiling: float  # the worst case the budget holds (generate: every max_tokens)
    mean_output_tokens: float | None  # generate: of the rows already done (None: none yet)
    output_varies: bool  # generate: the price depends on answers' lengths (a range)
    daily_neurons: int
    available_today: float
    days_at_cap: float
    # what "neurons" count: Cloudflare's, or a model outside the catalog's tokens or requests
    unit: str = "neurons"
    # image jobs: rows done whose file is gone (pending with --repair, counted either way)
    rows_missing: int = 0
    neurons_per_image: float | None = None  # image jobs: tiles and steps at the model's price
    tiles_per_image: int | None = None
    steps_per_image: int | None = None
    # image jobs: images a day within the daily cap (less the reserve), and within the
    # model's requests per minute; None: not an image job
    images_per_day: int | None = None
    mode: str = "sync"  # limits.mode (or --mode)
    payloads: int = 0  # batch mode: Batch API payloads the pending requests make
    rows_in_flight: int = 0  # in payloads submitted by earlier runs, not collected yet
    batches_in_flight: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_job(
    job: Job,
    settings: RunSettings | None = None,
    *,
    produced_by: str | None = None,
    account: str | None = None,
) -> Plan:
    """Count rows and estimate requests and neurons for ``job`` (no network).

    ``produced_by`` says whose cached answers count (see :func:`results_label`); the
    default is Cloudflare's model itself. ``account`` is the ledger account whose day is
    read (default: the Cloudflare account of the environment)."""
    settings = settings or RunSettings()
    model = job_model(job)
    task = make_task(job, model, [c for c in job.output.keep if c != KEY])
    task.expect_output(mean_output_tokens(job.output_path) if task.varies_output else None)
    source = open_source(job)
    store = OutputStore(
        job.output_path, fingerprint=fingerprint(job), meta={}, images=job.images_path
    )
    book = BatchBook(store.work, read_only=True)
    # a payload whose submission was never recorded is sent again by the next run
    in_flight = book.keys(submitted_only=True)
    done = store.done_keys(
        retry_failed=settings.retry_failed, repair=settings.repair, in_flight=in_flight
    )
    cache = open_cache() if settings.use_cache and task.cacheable else None
    reuse = TaskCache(cache, task, produced_by or model.id) if cache is not None else None
    try:
        submitted = [b for b in book.batches() if b.request_id is not None]
        tally = _Tally(rows_failed=done.failure_count(), batches=len(submitted))
        rows = read_batch_rows(task, job.limits.concurrency, settings.batch_rows)
        for pending in pending_calls(
            source, task, done, batch_rows=rows, reuse=reuse, serve_cached=False
        ):
            tally.add(pending, task)
            if job.limits.mode == "batch":
                tally.entries.extend(entry_for(task, task.model, c) for c in pending.calls)
        tally.removed = done.removed_count()
    finally:
        done.close()
        book.close()
        if cache is not None:
            cache.close()
    return _plan(job, task, tally, settings, account)


def mean_output_tokens(output: Path) -> float | None:
    """The mean ``completion_tokens`` of the rows in ``output`` (None: no rows, no file)."""
    try:
        schema = pq.read_schema(output)
        if "completion_tokens" not in schema.names:
            return None
        column = pq.read_table(output, columns=["completion_tokens"]).column(0)
    except (OSError, pa.ArrowException):
        return None  # no output yet, or one the run will refuse: no figure either way
    mean = pc.mean(column).as_py()
    return float(mean) if mean is not None else None


@dataclass
class _Tally:
    rows_failed: int
    total: int = 0
    skipped: int = 0
    pending: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    duplicate: int = 0
    missing: int = 0
    unsendable: int = 0
    requests: int = 0
    cached: int = 0
    usage: Usage = field(default_factory=Usage)
    worst: Usage = field(default_factory=Usage)
    saved: Usage = field(default_factory=Usage)
    batches: int = 0  # in flight
    in_flight: int = 0
    entries: list[Entry] = field(default_factory=list)  # batch mode: the calls, for payloads

    def add(self, pending: PendingBatch, task: Task) -> None:
        self.total += pending.rows_read
        self.in_flight += pending.rows_in_flight
        self.skipped += pending.rows_skipped
        self.pending += pending.rows_pending
        self.new += pending.rows_new
        self.changed += pending.rows_changed
        self.duplicate += pending.rows_duplicate
        self.missing += pending.rows_missing
        self.unsendable += len(pending.failures)
        self.cached += pending.rows_cached
        self.saved = self.saved + pending.saved
        self.requests += sum(task.requests_needed(c) for c in pending.calls)
        self.usage = self.usage + sum_usage(pending.calls)
        for call in pending.calls:
            self.worst = self.worst + call.estimate.worst


def _plan(job: Job, task: Task, tally: _Tally, settings: RunSettings, account: str | None) -> Plan:
    budget = effective_budget(job.budget, settings.max_neurons)
    with Ledger(
        account=account or resolve_account(),
        daily_neurons=budget.daily_neurons,
        reserve=budget.reserve,
    ) as ledger:
        available = ledger.available()
    neurons = task.neurons(tally.usage)
    per_day = budget.daily_neurons - budget.reserve
    return Plan(
        job=job.name,
        model=task.model.id,
        rows_total=tally.total,
        rows_done=tally.skipped,
        rows_failed=tally.rows_failed,
        rows_pending=tally.pending,
        rows_new=tally.new,
        rows_changed=tally.changed,
        rows_removed=tally.removed,
        rows_duplicate=tally.duplicate,
        rows_unsendable=tally.unsendable,
        rows_cached=tally.cached,
        neurons_saved_by_cache=task.neurons(tally.saved),
        requests=tally.requests,
        input_tokens=tally.usage.input_tokens,
        output_tokens=tally.usage.output_tokens,
        audio_minutes=tally.usage.audio_seconds / 60.0,
        neurons=neurons,
        neurons_floor=task.neurons(
            Usage(input_tokens=tally.usage.input_tokens, requests=tally.usage.requests)
        ),
        neurons_ceiling=task.neurons(tally.worst),
        mean_output_tokens=task.expected_output,
        output_varies=task.varies_output,
        daily_neurons=budget.daily_neurons,
        available_today=available,
        days_at_cap=_days(task, neurons, per_day, tally.requests),
        unit=task.model.budget_unit,
        rows_missing=tally.missing,
        **_per_image(task, per_day),
        mode=job.limits.mode,
        payloads=count_payloads(tally.entries, job.limits.batch_items),
        rows_in_flight=tally.in_flight,
        batches_in_flight=tally.batches,
    )


def _days(task: Task, neurons: float, per_day: float, requests: int) -> float:
    """Days the pending work needs at the daily cap; an image job's also at its model's
    requests a minute (what limits a beta model, which costs no neurons)."""
    days = round(neurons / per_day, 2) if per_day > 0 else math.inf
    if task.per_image is not None:
        days = max(days, round(requests / (task.model.rpm * 24 * 60), 2))
    return days


def _per_image(task: Task, per_day: float) -> dict[str, Any]:
    """An image job's price per image and images a day (empty for other jobs)."""
    usage = task.per_image
    if usage is None:
        return {}
    each = task.neurons(usage)
    by_requests = task.model.rpm * 24 * 60  # the model's per-minute limit, all day long
    by_neurons = math.floor(per_day / each + 1e-9) if each > 0 else by_requests
    return {
        "neurons_per_image": each,
        "tiles_per_image": usage.tiles,
        "steps_per_image": usage.steps,
        "images_per_day": max(0, min(by_neurons, by_requests)),
    }
