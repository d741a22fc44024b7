"""``plan``: what a job still has to do and what it will cost, without any network.

It streams the pending rows through the same task packing and token counting the runner
uses, so the estimate is the figure the runner will reserve before each request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.budget import Ledger, effective_budget, resolve_account
from pipelines.catalog.metering import Usage
from pipelines.catalog.models import get_model
from pipelines.core.columns import KEY
from pipelines.job.spec import Job
from pipelines.output.store import OutputStore, fingerprint
from pipelines.run.cache import ResultCache, TaskCache
from pipelines.sources import open_source
from pipelines.tasks.registry import make_task


@dataclass
class Plan:
    """The estimate for one job."""

    job: str
    model: str
    rows_total: int
    rows_done: int
    rows_failed: int
    rows_pending: int
    rows_unsendable: int
    rows_cached: int
    neurons_saved_by_cache: float
    requests: int
    input_tokens: int
    output_tokens: int
    audio_minutes: float
    neurons: float
    daily_neurons: int
    available_today: float
    days_at_cap: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_job(
    job: Job,
    *,
    retry_failed: bool = False,
    max_neurons: int | None = None,
    use_cache: bool = True,
    produced_by: str | None = None,
) -> Plan:
    """Count rows and estimate requests and neurons for ``job``."""
    model = get_model(job.task.model)
    task = make_task(job, model, [c for c in job.output.keep if c != KEY])
    source = open_source(job)
    store = OutputStore(job.output_path, fingerprint=fingerprint(job), meta={})
    done = store.done_keys(retry_failed=retry_failed)
    failed = store.failures().height
    columns = task.read_columns()
    total = pending = unsendable = requests = cached = 0
    usage = Usage()
    saved = Usage()
    cache = ResultCache() if use_cache and task.cacheable else None
    reuse = TaskCache(cache, task, produced_by or model.id) if cache is not None else None
    for batch in source.iter_batches(columns):
        total += batch.height
        if done.height:
            batch = batch.join(done, on=KEY, how="anti")
        if batch.height == 0:
            continue
        pending += batch.height
        calls, failures = task.prepare(batch)
        unsendable += len(failures)
        if reuse is not None and calls:
            hits, calls, spared = reuse.count_hits(calls)
            cached += hits
            saved = saved + spared
        requests += sum(task.requests_needed(c) for c in calls)
        for call in calls:
            usage = usage + call.usage
    if cache is not None:
        cache.close()
    budget = effective_budget(job.budget, max_neurons)
    with Ledger(
        account=resolve_account(), daily_neurons=budget.daily_neurons, reserve=budget.reserve
    ) as ledger:
        available = ledger.available()
    neurons = task.neurons(usage)
    per_day = budget.daily_neurons - budget.reserve
    return Plan(
        job=job.name,
        model=model.id,
        rows_total=total,
        rows_done=total - pending,
        rows_failed=failed,
        rows_pending=pending,
        rows_unsendable=unsendable,
        rows_cached=cached,
        neurons_saved_by_cache=task.neurons(saved),
        requests=requests,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        audio_minutes=usage.audio_seconds / 60.0,
        neurons=neurons,
        daily_neurons=budget.daily_neurons,
        available_today=available,
        days_at_cap=round(neurons / per_day, 2) if per_day > 0 else math.inf,
    )
