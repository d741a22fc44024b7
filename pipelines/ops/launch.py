"""Wiring one job to a provider, the neuron ledger and a progress display, then running it.

This is what ``pipelines run`` calls: it picks the provider (Cloudflare, the in-process
emulator, or local models), opens the shared ledger for the account, enforces a per-run
``--max-neurons`` on top of the daily cap, and with ``wait`` sleeps until the 00:00 UTC
reset whenever the budget stops the run, then carries on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.budget import Ledger, effective_budget
from pipelines.core.errors import BudgetExhausted, JobError, PipelinesError
from pipelines.core.urls import is_loopback
from pipelines.job.spec import Job
from pipelines.ops.locks import JobLock
from pipelines.ops.manifest import write_manifest
from pipelines.providers.base import Provider, ProviderSettings
from pipelines.run.cache import CACHE_FILE, open_cache
from pipelines.run.report import RunReport
from pipelines.run.runner import Budget, RunOptions, arun_job

log = logging.getLogger("pipelines")


@dataclass
class RunBudget:
    """The ledger plus this run's own ``--max-neurons`` ceiling."""

    ledger: Ledger
    max_neurons: float | None = None
    spent: float = 0.0
    held: float = 0.0

    @property
    def daily_neurons(self) -> float:
        """What a day gives this account's jobs (the cap less the reserve)."""
        return self.ledger.daily_neurons - self.ledger.reserve_neurons

    def _room(self) -> float:
        if self.max_neurons is None:
            return float("inf")
        return self.max_neurons - self.spent - self.held

    def reserve(self, job: str, model: str, neurons: float) -> Any:
        if neurons > self._room():
            raise BudgetExhausted(
                f"--max-neurons reached ({self.spent:,.2f} / {self.max_neurons:,} neurons this "
                "run); re-run to continue"
            )
        r = self.ledger.reserve(job, model, neurons)
        self.held += neurons
        return r

    def commit(self, r: Any, actual_neurons: float) -> None:
        self.ledger.commit(r, actual_neurons)
        self.held -= r.neurons
        self.spent += actual_neurons

    def release(self, r: Any) -> None:
        self.ledger.release(r)
        self.held -= r.neurons

    def available(self) -> float:
        return max(0.0, min(self.ledger.available(), self._room()))

    def mark_exhausted(self, note: str = "") -> None:
        self.ledger.mark_exhausted(note)


def emulator_day_fn(base_url: str, client: httpx.Client) -> Callable[[], str] | None:
    """When ``base_url`` is a local emulator, the ledger follows its emulated day."""
    if not is_loopback(base_url):
        return None
    parts = urlsplit(base_url)
    stats = f"{parts.scheme}://{parts.netloc}/__emulator/stats"
    try:
        first = client.get(stats)
        first.raise_for_status()
        seen: dict[str, Any] = {"day": str(first.json()["day"]), "at": time.monotonic()}
    except (httpx.HTTPError, ValueError, KeyError):
        return None

    def day() -> str:
        # the ledger asks on every reservation; the emulated day moves only on advance-day
        if time.monotonic() - seen["at"] > 0.5:
            seen.update(day=str(client.get(stats).json()["day"]), at=time.monotonic())
        return str(seen["day"])

    return day


@dataclass
class Session:
    """A provider and the ledger settings that go with it."""

    provider: Provider
    account: str
    day_fn: Callable[[], str] | None = None
    ledger_path: Path | None = None  # None: the shared ledger in the state folder
    produced_by: str | None = None  # overrides the provider's own answer (rehearsals)


def choose_provider(
    job: Job, name: str | None, base_url: str | None
) -> tuple[str, ProviderSettings]:
    """Which provider runs the job (``auto`` resolved) and the Cloudflare settings."""
    chosen = name or job.provider
    settings = ProviderSettings.from_env(base_url or job.base_url)  # checks the URL
    if chosen == "auto":
        chosen = "cloudflare" if settings.account_id and settings.token else "local"
    return chosen, settings


def results_label(job: Job, name: str | None, base_url: str | None) -> str:
    """Who computes the results: keeps made-up (emulator) or local answers apart from real
    ones, in the output's fingerprint and in the result cache. No network."""
    chosen, settings = choose_provider(job, name, base_url)
    if chosen == "emulator" or (chosen == "cloudflare" and is_loopback(settings.base_url)):
        return f"emulator:{job.task.model}"
    if chosen == "local":
        from pipelines.catalog.models import get_model
        from pipelines.providers.local import LocalProvider

        try:
            return LocalProvider().produced_by(get_model(job.task.model))
        except PipelinesError:  # no offline model for this task: plan still works
            return f"local:{job.task.model}"
    return job.task.model


@asynccontextmanager
async def open_provider(job: Job, name: str | None, base_url: str | None) -> AsyncIterator[Session]:
    """The provider a run uses, with its ledger account and day."""
    from pipelines.providers.cloudflare import CloudflareProvider

    chosen, settings = choose_provider(job, name, base_url)
    if name is None and job.provider == "auto":
        if chosen == "local":
            print(
                "notice: CLOUDFLARE_ACCOUNT_ID/CLOUDFLARE_API_TOKEN not set; using the local "
                "provider (use --provider emulator to rehearse against the emulator)",
                file=sys.stderr,
            )
    timeout = job.limits.timeout_s
    if chosen == "emulator":
        from pipelines.emulator import EmulatorConfig, running_emulator

        with running_emulator(EmulatorConfig()) as emu, tempfile.TemporaryDirectory() as tmp:
            rehearsal = ProviderSettings(emu.base_url, "emulator", "emulator")
            async with CloudflareProvider(rehearsal, timeout_s=timeout) as provider:
                # a rehearsal spends the emulator's neurons, never the account's
                yield Session(
                    provider,
                    "emulator",
                    ledger_path=Path(tmp) / "ledger.sqlite3",
                    produced_by=f"emulator:{job.task.model}",
                )
        return
    if chosen == "local":
        try:
            from pipelines.providers.local import LocalProvider
        except ImportError:
            raise JobError(
                "no Cloudflare credentials and no local provider: set CLOUDFLARE_ACCOUNT_ID "
                "and CLOUDFLARE_API_TOKEN, or rehearse with --provider emulator"
            ) from None
        async with LocalProvider() as local:
            yield Session(local, "local")
        return
    async with CloudflareProvider(settings, timeout_s=timeout) as provider:
        with httpx.Client(timeout=5.0) as day_client:
            day_fn = await asyncio.to_thread(emulator_day_fn, settings.base_url, day_client)
            label = results_label(job, chosen, base_url)
            yield Session(provider, settings.account_id or "default", day_fn, produced_by=label)


class TqdmProgress:
    """A tqdm bar: rows/s and neurons used."""

    def __init__(self, name: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=name, unit="rows", dynamic_ncols=True)

    def start(self, total: int | None) -> None:
        self.bar.reset(total=total)

    def update(self, rows: int, neurons: float) -> None:
        self.bar.update(rows)
        self.bar.set_postfix_str(f"{neurons:,.1f} neurons", refresh=False)

    def close(self) -> None:
        self.bar.close()


async def arun_once(
    job: Job,
    *,
    provider: str | None = None,
    base_url: str | None = None,
    options: RunOptions | None = None,
    max_neurons: int | None = None,
    progress: bool = False,
    use_cache: bool = True,
) -> RunReport:
    """One run of ``job``: take its lock, run, write its manifest and log the outcome."""
    settings = effective_budget(job.budget, max_neurons)
    with JobLock.for_job(job) as lock:
        if lock.notice:
            log.warning(lock.notice, extra={"job": job.name})
        async with open_provider(job, provider, base_url) as session:
            ledger = Ledger(
                session.ledger_path,
                account=session.account,
                daily_neurons=settings.daily_neurons,
                reserve=settings.reserve,
                day_fn=session.day_fn,
            )
            budget: Budget = RunBudget(ledger, settings.max_neurons)
            # a rehearsal keeps its own cache next to its own ledger
            cache_path = session.ledger_path.with_name(CACHE_FILE) if session.ledger_path else None
            cache = open_cache(cache_path) if use_cache else None  # optional: may warn
            bar = TqdmProgress(job.name) if progress else None
            started = datetime.now(UTC)
            name = "emulator" if session.account == "emulator" else session.provider.name
            log.info("run started (%s)", name, extra={"job": job.name})
            try:
                report = await arun_job(
                    job,
                    session.provider,
                    budget,
                    options=options,
                    progress=bar,
                    produced_by=session.produced_by,
                    cache=cache,
                )
            finally:
                if bar is not None:
                    bar.close()
                ledger.close()
                if cache is not None:
                    cache.close()
            try:
                write_manifest(
                    job, report, started_at=started, ended_at=datetime.now(UTC), provider=name
                )
            except PipelinesError as exc:  # e.g. the disk that stopped the run is still full
                log.warning("no manifest written: %s", exc.message, extra={"job": job.name})
            log.info(
                "%s (rows done %d, failed %d, requests %d, neurons %.1f)%s",
                report.status,
                report.rows_done,
                report.rows_failed,
                report.requests,
                report.neurons,
                f": {report.message}" if report.message else "",
                extra={"job": job.name, "run_id": report.run_id},
            )
            return report
