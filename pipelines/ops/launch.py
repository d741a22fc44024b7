"""Launching one run of one job: its lock, its provider binding, the ledger, the result
cache and a progress display; then its manifest and the log line that says how it ended.

This is what ``pipelines run`` does for each job (through :mod:`pipelines.ops.jobset`).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import IO

from pipelines.budget import Ledger, effective_budget
from pipelines.core.errors import PipelinesError
from pipelines.job.models import job_model
from pipelines.job.modes import with_mode
from pipelines.job.spec import Job
from pipelines.ops.locks import JobLock
from pipelines.ops.manifest import write_manifest
from pipelines.providers.registry import Binding, choose, open_binding
from pipelines.run.budget_guard import RunBudget
from pipelines.run.cache import CACHE_FILE, ResultCache, open_cache
from pipelines.run.report import RunReport
from pipelines.run.runner import RunContext, arun_job
from pipelines.run.settings import RunSettings

log = logging.getLogger("pipelines")


class TqdmProgress:
    """A tqdm bar: rows/s and neurons used."""

    def __init__(self, name: str, file: IO[str] | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=name, unit="rows", dynamic_ncols=True, file=file)

    def start(self, total: int | None) -> None:
        self.bar.reset(total=total)

    def update(self, rows: int, neurons: float) -> None:
        self.bar.update(rows)
        self.bar.set_postfix_str(f"{neurons:,.1f} neurons", refresh=False)

    def refresh(self) -> None:
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _cache_for(binding: Binding, settings: RunSettings) -> ResultCache | None:
    if not settings.use_cache:
        return None
    # a rehearsal keeps its own cache next to its own ledger
    path = binding.ledger_path.with_name(CACHE_FILE) if binding.ledger_path else None
    return open_cache(path)


async def arun_once(job: Job, settings: RunSettings) -> RunReport:
    """One run of ``job``: take its lock, run, write its manifest and log the outcome."""
    budget = effective_budget(job.budget, settings.max_neurons)
    model = job_model(job)
    choice = choose(job.provider, settings.provider, settings.base_url or job.base_url, model)
    # checked against the provider auto resolved to, before any binding is opened
    job = with_mode(job, model, settings.mode, choice.name)
    with JobLock.for_job(job) as lock:
        if lock.notice:
            log.warning(lock.notice, extra={"job": job.name})
        if choice.fallback_notice and settings.provider is None:
            log.warning("notice: %s", choice.fallback_notice, extra={"job": job.name})
        async with open_binding(choice, job.limits.timeout_s) as binding:
            ledger = Ledger(
                binding.ledger_path,
                account=binding.account,
                daily_neurons=budget.daily_neurons,
                reserve=budget.reserve,
                day_fn=binding.day,
                unit=model.budget_unit,
            )
            with ExitStack() as stack:
                stack.callback(ledger.close)
                if binding.paid:  # a ledger made today would not know what today spent
                    ledger.require_known_usage()
                cache = _cache_for(binding, settings)
                if cache is not None:
                    stack.callback(cache.close)
                log.info("run started (%s)", binding.name, extra={"job": job.name})
                # after the first log line: a bar drawn before it would get the line glued on
                bar = TqdmProgress(job.name) if settings.progress else None
                if bar is not None:
                    stack.callback(bar.close)
                context = RunContext(
                    provider=binding.provider,
                    budget=RunBudget(ledger, budget.max_neurons),
                    produced_by=binding.produced_by(model),
                    cache=cache,
                    progress=bar,
                    rate_limited=binding.rate_limited,
                )
                started = datetime.now(UTC)
                report = await arun_job(job, context, settings)
            _record(job, report, binding, started, model.budget_unit)
            return report


def _record(job: Job, report: RunReport, binding: Binding, started: datetime, unit: str) -> None:
    extra: dict[str, object] = {"paid": binding.paid}
    if unit != "neurons":  # a model outside the catalog: its "neurons" are tokens or requests
        extra["unit"] = unit
    try:
        write_manifest(
            job,
            report,
            started_at=started,
            ended_at=datetime.now(UTC),
            provider=binding.name,
            extra=extra,
        )
    except PipelinesError as exc:  # e.g. the disk that stopped the run is still full
        log.warning("no manifest written: %s", exc.message, extra={"job": job.name})
    log.info(
        "%s (rows done %d, failed %d, requests %d, neurons %.1f)%s",
        report.stop_reason.words,
        report.rows_done,
        report.rows_failed,
        report.requests,
        report.neurons,
        f": {report.message}" if report.message else "",
        extra={"job": job.name, "run_id": report.run_id},
    )
