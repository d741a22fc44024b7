"""Several jobs under one daily cap: priority order, and ``--wait`` across the nights.

``pipelines run jobs/`` runs every job of a folder, higher ``priority`` first, all drawing
on the account's ledger. When the day's neurons run out, the jobs that could not finish
are taken up again after the 00:00 UTC reset (with ``wait``), in the same order, until
every job is done or stopped for another reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from pipelines.budget import seconds_until_reset
from pipelines.core.errors import PipelinesError
from pipelines.job.spec import Job
from pipelines.ops.launch import arun_once
from pipelines.run.report import RunReport
from pipelines.run.runner import RunOptions

log = logging.getLogger("pipelines")


def _per_run_cap(report: RunReport) -> bool:
    return "--max-neurons" in report.message


def overall_exit_code(reports: list[RunReport]) -> int:
    """One exit code for many jobs: interrupted, then errors, budget, failed rows, success."""
    codes = {r.exit_code for r in reports}
    for code in (130, 2, 3, 1):
        if code in codes:
            return code
    return 0


async def arun_jobs(
    jobs: list[Job],
    *,
    provider: str | None = None,
    base_url: str | None = None,
    options: RunOptions | None = None,
    max_neurons: int | None = None,
    wait: bool = False,
    progress: bool = False,
    use_cache: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    raise_errors: bool = False,
) -> list[RunReport]:
    """Run ``jobs`` in priority order; the last report of each job, in the same order."""
    ordered = sorted(jobs, key=lambda j: (-j.priority, j.name))
    latest: dict[str, RunReport] = {}
    pending = ordered
    opts = options or RunOptions()
    while True:
        for job in pending:
            try:
                latest[job.name] = await arun_once(
                    job,
                    provider=provider,
                    base_url=base_url,
                    options=opts,
                    max_neurons=max_neurons,
                    progress=progress,
                    use_cache=use_cache,
                )
            except PipelinesError as exc:
                if raise_errors:
                    raise
                log.error("%s", exc.message, extra={"job": job.name})
                latest[job.name] = RunReport(
                    job=job.name, run_id="", status="aborted", message=exc.message, error=exc
                )
            if latest[job.name].status == "interrupted":
                return [latest[j.name] for j in ordered if j.name in latest]
        unfinished = [
            j
            for j in pending
            if latest[j.name].status == "budget" and not _per_run_cap(latest[j.name])
        ]
        if not (wait and unfinished):
            return [latest[j.name] for j in ordered if j.name in latest]
        pause = seconds_until_reset() + 5
        log.info(
            "daily neuron cap reached; %d job(s) resume after the reset, waiting %.1f h",
            len(unfinished),
            pause / 3600,
        )
        await sleep(pause)
        # --fresh applies to the first pass only: later passes resume
        opts = replace(opts, fresh=False)
        pending = unfinished


async def arun(
    job: Job,
    *,
    provider: str | None = None,
    base_url: str | None = None,
    options: RunOptions | None = None,
    max_neurons: int | None = None,
    wait: bool = False,
    progress: bool = False,
    use_cache: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunReport:
    """Run ``job`` end to end; with ``wait``, sleep through budget stops until it is done."""
    reports = await arun_jobs(
        [job],
        provider=provider,
        base_url=base_url,
        options=options,
        max_neurons=max_neurons,
        wait=wait,
        progress=progress,
        use_cache=use_cache,
        sleep=sleep,
        raise_errors=True,
    )
    return reports[0]


def run_job(job: Job, **kwargs: Any) -> RunReport:
    """Synchronous :func:`arun` (for scripts and notebooks without an event loop)."""
    return asyncio.run(arun(job, **kwargs))
