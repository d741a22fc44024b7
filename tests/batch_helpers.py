"""Shared by the batch-mode tests: jobs, an in-process run on the emulator's fake clock, and
providers that wrap the real one to count, script or interrupt its Batch API calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.budget import Ledger
from pipelines.catalog.models import ModelInfo
from pipelines.emulator import FakeClock
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.providers.base import Provider, ProviderSettings
from pipelines.providers.cloudflare import CloudflareProvider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.clock import Clock
from pipelines.run.report import RunReport
from pipelines.run.runner import RunContext, Runner

BGE = "@cf/baai/bge-small-en-v1.5"
WORDS = "alpha beta gamma delta river mountain city market music garden ocean winter".split()


def text_of(i: int) -> str:
    return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 7)) + f" #{i}"


def write_job(folder: Path, rows: int, limits: str = "{mode: batch}", **extra: str) -> Path:
    """An embed job over ``rows`` rows of ``corpus.csv`` in ``folder``."""
    pl.DataFrame(
        {"doc_id": list(range(rows)), "text": [text_of(i) for i in range(rows)]}
    ).write_csv(folder / "corpus.csv")
    lines = "".join(f"{k}: {v}\n" for k, v in extra.items())
    job = folder / "job.yaml"
    job.write_text(
        f"""name: batchy
source: {{kind: csv, path: corpus.csv, key: doc_id}}
task: {{kind: embed, model: "{BGE}", input: text}}
output: {{path: out/result.parquet, keep: [doc_id]}}
limits: {limits}
{lines}"""
    )
    return job


class Watched(Provider):
    """The emulator's provider, counting Batch API calls; ``on_poll`` runs before each poll."""

    name = "cloudflare"
    supports_batch = True

    def __init__(self, inner: CloudflareProvider) -> None:
        self.inner = inner
        self.submits = 0
        self.polls = 0
        self.on_poll: Callable[[Watched], None] | None = None
        self.on_submit: Callable[[Watched, list[dict[str, Any]]], None] | None = None

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        return await self.inner.run(model, inputs)

    async def submit_batch(self, model: ModelInfo, requests: list[dict[str, Any]]) -> str:
        if self.on_submit is not None:
            self.on_submit(self, requests)
        self.submits += 1
        return await self.inner.submit_batch(model, requests)

    async def poll_batch(self, model: ModelInfo, request_id: str) -> dict[str, Any] | None:
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self)
        return await self.inner.poll_batch(model, request_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


def run_batch(
    job_path: Path,
    emu: RunningEmulator,
    clock: FakeClock,
    *,
    cap: float = 10_000,
    prepare: Callable[[Runner, Watched], None] | None = None,
    settings: Any = None,
) -> tuple[RunReport, Watched]:
    """One in-process run of ``job_path`` against ``emu``, on the emulator's fake clock (a
    wait of the run lets that much time pass for both)."""
    job = load_job(job_path)

    async def go() -> tuple[RunReport, Watched]:
        inner = CloudflareProvider(ProviderSettings(emu.base_url, "acct", "token"))
        provider = Watched(inner)
        ledger = Ledger(
            job_path.parent / "ledger.sqlite3", account="emu", daily_neurons=cap, day_fn=emu.day
        )
        try:
            context = RunContext(
                provider=provider,
                budget=RunBudget(ledger, getattr(settings, "max_neurons", None)),
                produced_by=f"emulator:{BGE}",
                clock=Clock(monotonic=clock.monotonic, sleep=clock.sleep),
            )
            from pipelines.run.settings import RunSettings

            runner = Runner(job, context, settings or RunSettings())
            if prepare is not None:
                prepare(runner, provider)
            return await runner.run(), provider
        finally:
            ledger.close()
            await provider.aclose()

    return asyncio.run(go())


def output_keys(folder: Path) -> list[int]:
    frame = pl.read_parquet(folder / "out/result.parquet")
    assert frame["_key"].n_unique() == frame.height
    return sorted(int(k) for k in frame["_key"])
