"""The runner with a scripted provider: batch isolation, rate-limit slow-down, budget
shrinking at the end of the day, abort on authentication failure and transient give-up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.budget import Ledger
from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import count_tokens
from pipelines.core.errors import AuthenticationFailed, InvalidInput, RateLimited, ServerError
from pipelines.job.load import load_job
from pipelines.providers.base import Provider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.clock import Clock
from pipelines.run.report import RunReport
from pipelines.run.runner import RunContext, arun_job


class Scripted(Provider):
    """Embeds every text as a constant vector, failing the texts it is told to."""

    def __init__(self, bad: set[str] | None = None, rate_limit_first: int = 0) -> None:
        self.bad = bad or set()
        self.calls: list[list[str]] = []
        self.rate_limit_first = rate_limit_first
        self.fail_all: Exception | None = None

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        texts = inputs["text"]
        self.calls.append(list(texts))
        if self.fail_all is not None:
            raise self.fail_all
        if self.rate_limit_first > 0:
            self.rate_limit_first -= 1
            raise RateLimited("slow down", status=429, code=3021, retry_after=2)
        if self.bad & set(texts):
            raise InvalidInput("AiError: Bad input", status=400, code=5006)
        dim = model.dimensions or 0
        return {"shape": [len(texts), dim], "data": [[0.5] * dim for _ in texts]}


def make_job(tmp: Path, n: int, extra: str = "") -> Path:
    pl.DataFrame(
        {"doc_id": list(range(n)), "text": [f"text number {i}" for i in range(n)]}
    ).write_csv(tmp / "in.csv")
    job = tmp / "job.yaml"
    job.write_text(
        f"""name: unit
source: {{kind: csv, path: in.csv, key: doc_id}}
task: {{kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}}
output: {{path: out.parquet, keep: [doc_id]}}
{extra}
"""
    )
    return job


class FakeTime:
    """A clock that only moves when somebody sleeps: no real waiting in these tests."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


def run(
    job_path: Path,
    provider: Provider,
    cap: float = 10_000,
    max_neurons: float | None = None,
    clock: FakeTime | None = None,
) -> RunReport:
    job = load_job(job_path)
    clock = clock or FakeTime()
    ledger = Ledger(job_path.parent / "ledger.sqlite3", account="t", daily_neurons=cap)
    try:
        context = RunContext(
            provider=provider,
            budget=RunBudget(ledger, max_neurons),
            produced_by=job.task.model,
            clock=Clock(monotonic=clock, sleep=clock.sleep),
        )
        return asyncio.run(arun_job(job, context))
    finally:
        ledger.close()


def test_one_bad_text_in_a_packed_request_fails_alone(tmp_path: Path) -> None:
    provider = Scripted(bad={"text number 37"})
    report = run(make_job(tmp_path, 100), provider)
    assert report.status == "failed_rows"
    assert report.rows_done == 99 and report.rows_failed == 1
    failures = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert failures["_key"].to_list() == ["37"]
    assert failures["code"].to_list() == [5006]
    # bisection: log2(100) ≈ 7 levels, far fewer than one request per row
    assert len(provider.calls) < 20


def test_a_3021_is_retried_and_slows_the_shared_limiter(tmp_path: Path) -> None:
    provider = Scripted(rate_limit_first=2)
    clock = FakeTime()
    report = run(make_job(tmp_path, 50), provider, clock=clock)
    assert report.status == "completed" and report.rows_done == 50
    assert report.requests == 3  # two 429s, then the request goes through
    assert clock.slept >= 4  # Retry-After: 2 honoured twice


def test_authentication_failure_aborts_without_failing_rows(tmp_path: Path) -> None:
    provider = Scripted()
    provider.fail_all = AuthenticationFailed("bad token", status=401, code=10000)
    report = run(make_job(tmp_path, 500, "limits: {batch_size: 10, concurrency: 2}"), provider)
    assert report.status == "aborted" and report.exit_code == 2
    assert len(provider.calls) <= 2  # every worker stops at once
    assert not (tmp_path / "out.failures.parquet").exists()


def test_transient_errors_that_outlast_the_retries_are_retried_next_run(tmp_path: Path) -> None:
    provider = Scripted()
    provider.fail_all = ServerError("503", status=503)
    job = make_job(tmp_path, 5, "limits: {max_attempts: 2}")
    report = run(job, provider)
    assert report.rows_failed == 5 and len(provider.calls) == 2
    healthy = Scripted()
    report = run(job, healthy)
    assert report.status == "completed" and report.rows_done == 5
    assert not pl.read_parquet(tmp_path / "out.failures.parquet").height


def test_the_last_request_of_the_day_is_shrunk_to_fit(tmp_path: Path) -> None:
    job = make_job(tmp_path, 300)
    tokens = [count_tokens("bert-uncased", f"text number {i}") for i in range(300)]
    cap = (sum(tokens[:150]) + 0.5) * 1841 / 1_000_000  # room for exactly 150 texts
    provider = Scripted()
    report = run(job, provider, cap=cap)
    assert report.status == "budget" and report.exit_code == 3
    assert report.rows_done == 150  # 100 + a request shrunk to the 50 that fit
    assert [len(c) for c in provider.calls] == [100, 50]
    assert "rows left" in report.message


def test_max_neurons_is_a_ceiling_for_the_run(tmp_path: Path) -> None:
    provider = Scripted()
    report = run(make_job(tmp_path, 300), provider, max_neurons=0.5)
    assert report.status == "budget"
    assert report.neurons <= 0.5


@pytest.mark.parametrize("dupes", [3])
def test_identical_texts_are_sent_once(tmp_path: Path, dupes: int) -> None:
    pl.DataFrame({"doc_id": list(range(dupes)), "text": ["same text"] * dupes}).write_csv(
        tmp_path / "in.csv"
    )
    job = make_job(tmp_path, 0)
    pl.DataFrame({"doc_id": list(range(dupes)), "text": ["same text"] * dupes}).write_csv(
        tmp_path / "in.csv"
    )
    provider = Scripted()
    report = run(job, provider)
    assert report.rows_done == dupes
    assert provider.calls == [["same text"]]
