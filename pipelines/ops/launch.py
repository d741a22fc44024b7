"""Launching one run of one job: its lock, its provider binding, the ledger, the result
cache and a progress display; then its manifest and the log line that says how it ended.

This is what ``pipelines run`` does for each job (through :mod:`pipelines.ops.jobset`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO

from pipelines.budget import EffectiveBudget, Ledger, effective_budget
from pipelines.core.errors import JobError, PipelinesError
from pipelines.core.shard import part_of
from pipelines.job.models import job_model
from pipelines.job.modes import with_mode
from pipelines.job.spec import Job
from pipelines.ops.locks import JobLock
from pipelines.ops.manifest import write_manifest
from pipelines.providers.registry import Binding, choose, open_binding
from pipelines.providers.vectorize import VectorizeClient
from pipelines.run.budget_guard import RunBudget
from pipelines.run.cache import CACHE_FILE, ResultCache, open_cache
from pipelines.run.report import RunReport, StopReason
from pipelines.run.runner import RunContext, arun_job
from pipelines.run.settings import RunSettings
from pipelines.sources.remote import fetch_output, upload

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
    check_other_shards(job)
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
        await asyncio.to_thread(
            fetch_output, job
        )  # an s3:// output: its bucket checked before any neuron is spent
        async with open_binding(choice, job.limits.timeout_s) as binding:
            async with _vector_client(job, binding, model.dimensions) as vectors:
                started = datetime.now(UTC)
                report = await _run(job, settings, binding, budget)
                extra: dict[str, object] = {}
                if vectors is not None:
                    report, extra["vectorize"] = await _sink(job, vectors, report)
            _record(job, report, binding, started, model.budget_unit, extra)
        for url in await asyncio.to_thread(
            upload, job
        ):  # inside the lock: no other run's file goes up instead
            log.info("uploaded %s", url, extra={"job": job.name})
        return report


@asynccontextmanager
async def _vector_client(
    job: Job, binding: Binding, dimensions: int | None
) -> AsyncIterator[VectorizeClient | None]:
    """The job's Vectorize client, at the same API as the binding's model calls (so the
    emulator's vectors only ever go into the emulator's indexes), its index checked
    against the model before any neuron is spent; None when there is nothing to write."""
    from pipelines.output.vectorize import check_index
    from pipelines.providers.base import ProviderSettings

    spec = job.output.vectorize
    settings = getattr(binding.provider, "settings", None)
    if spec is None or not isinstance(settings, ProviderSettings):
        if spec is not None:
            log.warning(
                "vectorize: skipped: provider %s does not write into Vectorize (run the "
                "job on provider cloudflare)",
                binding.name,
                extra={"job": job.name},
            )
        yield None
        return
    client = VectorizeClient(settings, timeout_s=job.limits.timeout_s)
    try:
        if binding.name == "emulator" and binding.ledger_path is not None and dimensions:
            # a rehearsal's own throw-away emulator: its index is made for the run
            await client.create(spec.index, dimensions, "cosine")
        await check_index(job, client, dimensions)
        yield client
    finally:
        await client.aclose()


async def _sink(
    job: Job, client: VectorizeClient, report: RunReport
) -> tuple[RunReport, dict[str, object]]:
    """Upsert what the output holds and the index lacks (also after a run that stopped
    early: what is done is worth searching); the report, aborted when Vectorize failed, and
    the sink's figures for the manifest."""
    from pipelines.output.vectorize import sync_vectorize

    try:
        done = await sync_vectorize(job, client)
    except PipelinesError as exc:
        message = f"Vectorize: {exc.message}; the next run sends the rest"
        failed = replace(report, stop_reason=StopReason.ABORTED, message=message, error=exc)
        return failed, {"error": message}
    log.info(done.line(), extra={"job": job.name})
    for vid, message in done.failures:
        log.warning("vectorize: vector %s failed: %s", vid, message, extra={"job": job.name})
    if done.failed and report.stop_reason is StopReason.DONE:
        # a vector the index refused is a failed row, as a row the model refused is
        note = f"{done.failed:,} vectors refused by Vectorize (first: {done.failures[0][1]})"
        report = replace(report, stop_reason=StopReason.ROWS_FAILED, message=note)
    return report, done.as_dict()


async def _run(
    job: Job, settings: RunSettings, binding: Binding, budget: EffectiveBudget
) -> RunReport:
    """The run itself, with its ledger, cache and progress bar."""
    model = job_model(job)
    if binding.name == "local" and settings.inference:
        # --ray: inference on the cluster's pool of model-holding actors
        from pipelines.providers.local_ray import RayLocalProvider

        binding = replace(binding, provider=RayLocalProvider(settings.inference))
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
            shared_limits=ledger.url,
            account=binding.account,
        )
        return await arun_job(job, context, settings)


def check_other_shards(job: Job) -> None:
    """A shard run refuses an output folder that holds the parts of another shard count:
    the rows of both would be in the dataset (a row is in shard I of 4 and J of 8)."""
    if job.shard is None or not job.dataset_path.is_dir():
        return
    for path in sorted(job.dataset_path.glob("part-*-of-*.parquet")):
        other = part_of(path.name)
        if other is not None and other.count != job.shard.count:
            raise JobError(
                f"{job.dataset_path} holds {path.name}, a part of {other.count} shards, so "
                f"--shard {job.shard} would write some rows twice; run it as {other.count} "
                "shards, or move the folder away first"
            )


def _record(
    job: Job,
    report: RunReport,
    binding: Binding,
    started: datetime,
    unit: str,
    more: dict[str, object],
) -> None:
    extra: dict[str, object] = {"paid": binding.paid, **more}
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
