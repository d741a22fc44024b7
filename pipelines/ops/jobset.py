"""Several jobs under one daily cap: priority order, and ``--wait`` across the nights.

``pipelines run jobs/`` runs every job of a folder, higher ``priority`` first, all drawing
on the account's ledger. When the day's neurons run out, the jobs that could not finish
are taken up again after the 00:00 UTC reset (with ``wait``), in the same order, until
every job is done or stopped for another reason. Whether a job waits is decided by its
report's stop reason, never by its message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from pipelines.budget import seconds_until_reset
from pipelines.core.errors import PipelinesError
from pipelines.job.spec import Job
from pipelines.ops.launch import arun_once
from pipelines.ops.signals import until_signal
from pipelines.run.report import RunReport, StopReason
from pipelines.run.settings import RunSettings

log = logging.getLogger("pipelines")

Sleep = Callable[[float], Awaitable[None]]


def overall_exit_code(reports: list[RunReport]) -> int:
    """One exit code for many jobs: interrupted, then errors, budget, failed rows, success."""
    codes = {r.exit_code for r in reports}
    for code in (130, 2, 3, 1):
        if code in codes:
            return code
    return 0


async def _one(job: Job, settings: RunSettings, raise_errors: bool) -> RunReport:
    try:
        return await arun_once(job, settings)
    except PipelinesError as exc:
        if raise_errors:
            raise
        log.error("%s", exc.message, extra={"job": job.name})
        return RunReport(
            job=job.name,
            run_id="",
            stop_reason=StopReason.ABORTED,
            message=exc.message,
            error=exc,
        )


async def arun_jobs(
    jobs: list[Job],
    settings: RunSettings | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
    raise_errors: bool = False,
) -> list[RunReport]:
    """Run ``jobs`` in priority order; the last report of each job, in the same order."""
    settings = settings or RunSettings()
    ordered = sorted(jobs, key=lambda j: (-j.priority, j.name))
    latest: dict[str, RunReport] = {}
    pending = ordered
    while True:
        for job in pending:
            latest[job.name] = await _one(job, settings, raise_errors)
            if latest[job.name].stop_reason is StopReason.INTERRUPTED:
                return [latest[j.name] for j in ordered if j.name in latest]
        unfinished = [j for j in pending if latest[j.name].stop_reason.resumes_after_reset]
        if not (settings.wait and unfinished):
            return [latest[j.name] for j in ordered if j.name in latest]
        if not await _wait_for_reset(len(unfinished), sleep):
            for job in unfinished:
                latest[job.name].stop_reason = StopReason.INTERRUPTED
            return [latest[j.name] for j in ordered if j.name in latest]
        # --fresh applies to the first pass only: later passes resume
        settings = replace(settings, fresh=False)
        pending = unfinished


async def _wait_for_reset(jobs: int, sleep: Sleep) -> bool:
    """Sleep until just after 00:00 UTC; False when Ctrl-C or SIGTERM ended the wait."""
    pause = seconds_until_reset() + 5
    log.info(
        "daily neuron cap reached; %d job(s) resume after the reset, waiting %.1f h",
        jobs,
        pause / 3600,
    )
    return await until_signal(sleep(pause))


async def arun(
    job: Job, settings: RunSettings | None = None, *, sleep: Sleep = asyncio.sleep
) -> RunReport:
    """Run ``job`` end to end; with ``settings.wait``, sleep through budget stops until done."""
    reports = await arun_jobs([job], settings, sleep=sleep, raise_errors=True)
    return reports[0]


def run_job(job: Job, settings: RunSettings | None = None) -> RunReport:
    """Synchronous :func:`arun` (for scripts and notebooks without an event loop)."""
    return asyncio.run(arun(job, settings))
