"""Why a run stops is data: each provider error's scope decides what the runner does, each
budget refusal carries its reason, and ``--wait`` waits only for the daily cap. Every
scenario runs twice, the second time with every message of the package reworded, and must
behave the same: no decision may read a message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.budget import Ledger
from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import (
    AuthenticationFailed,
    DailyNeuronsExhausted,
    InvalidInput,
    PaidPlanRequired,
    PipelinesError,
    Scope,
    UnknownModel,
)
from pipelines.job.load import load_job
from pipelines.ops.jobset import arun_jobs
from pipelines.providers import registry
from pipelines.providers.base import Provider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.report import StopReason
from pipelines.run.runner import RunContext, arun_job
from pipelines.run.settings import RunSettings

SMALL = "@cf/baai/bge-small-en-v1.5"  # 1,841 neurons per M tokens


@pytest.fixture(params=["as written", "reworded"])
def wording(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "reworded":
        original = PipelinesError.__init__

        def reworded(self: PipelinesError, message: str, *args: Any, **kwargs: Any) -> None:
            original(self, f"[reworded] {message[::-1].upper()}", *args, **kwargs)

        monkeypatch.setattr(PipelinesError, "__init__", reworded)
    yield str(request.param)


class Scripted(Provider):
    """Embeds every text, or raises what it is told to (for the first ``times`` calls)."""

    def __init__(self, error: Exception | None = None, bad: str | None = None) -> None:
        self.error = error
        self.bad = bad
        self.requests = 0

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        self.requests += 1
        texts = inputs["text"]
        if self.error is not None:
            raise self.error
        if self.bad is not None and self.bad in texts:
            raise InvalidInput("AiError: Bad input", status=400, code=5006)
        dim = model.dimensions or 0
        return {"shape": [len(texts), dim], "data": [[0.5] * dim for _ in texts]}


def make_job(tmp: Path, rows: int = 300, extra: str = "") -> Path:
    pl.DataFrame(
        {"id": [str(i) for i in range(rows)], "text": [f"text number {i}" for i in range(rows)]}
    ).write_csv(tmp / "in.csv")
    path = tmp / "job.yaml"
    path.write_text(
        f"""name: stops
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: out.parquet}}
{extra}
"""
    )
    return path


def run(path: Path, provider: Provider, *, cap: float = 10_000, most: float | None = None) -> Any:
    job = load_job(path)
    with Ledger(path.parent / "ledger.sqlite3", account="t", daily_neurons=cap) as ledger:
        context = RunContext(
            provider=provider, budget=RunBudget(ledger, most), produced_by=job.task.model
        )
        report = asyncio.run(arun_job(job, context))
        return report, ledger.today()


def test_the_daily_cap_stops_with_day_cap_and_resumes_after_reset(
    tmp_path: Path, wording: str
) -> None:
    report, today = run(make_job(tmp_path), Scripted(), cap=1.0)
    assert report.stop_reason is StopReason.DAY_CAP and report.exit_code == 3
    assert report.stop_reason.resumes_after_reset
    assert 0 < report.rows_done < 300 and not today.marked
    if wording == "as written":  # the note says when it resumes, once (it used to nest)
        assert report.message.count("00:00 UTC") == 1, report.message


def test_max_neurons_stops_with_run_cap_which_no_wait_cures(tmp_path: Path, wording: str) -> None:
    report, _ = run(make_job(tmp_path), Scripted(), most=1.0)
    assert report.stop_reason is StopReason.RUN_CAP and report.exit_code == 3
    assert not report.stop_reason.resumes_after_reset


def test_a_request_bigger_than_a_whole_run_fails_its_rows_and_the_rest_go_on(
    tmp_path: Path, wording: str
) -> None:
    long_text = " ".join(["word"] * 400)
    pl.DataFrame({"id": ["big", "a", "b"], "text": [long_text, "short", "tiny"]}).write_csv(
        tmp_path / "in.csv"
    )
    path = tmp_path / "job.yaml"
    path.write_text(make_job(tmp_path, 0).read_text())
    pl.DataFrame({"id": ["big", "a", "b"], "text": [long_text, "short", "tiny"]}).write_csv(
        tmp_path / "in.csv"
    )
    report, _ = run(path, Scripted(), most=0.02)  # one short text fits, the long one never
    assert report.stop_reason is StopReason.CANNOT_FIT and report.exit_code == 3
    assert not report.stop_reason.resumes_after_reset
    failures = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert failures["_key"].to_list() == ["big"]
    assert failures["error"].to_list() == ["CannotFit"] and failures["retryable"].to_list() == [
        True
    ]
    assert sorted(pl.read_parquet(tmp_path / "out.parquet")["_key"].to_list()) == ["a", "b"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DailyNeuronsExhausted("used up", status=429, code=3036), StopReason.DAY_CAP),
        (AuthenticationFailed("bad token", status=401, code=10000), StopReason.ABORTED),
        (PaidPlanRequired("paid", status=403, code=5035), StopReason.ABORTED),
        (UnknownModel("no such model", status=400, code=5007), StopReason.ABORTED),
    ],
    ids=["day", "auth", "paid", "model"],
)
def test_each_scope_decides_the_stop(
    tmp_path: Path, wording: str, error: Exception, reason: StopReason
) -> None:
    if wording == "reworded":  # made before the patch: make it again, reworded
        error = type(error)(str(error), status=error.status, code=error.code)  # type: ignore[attr-defined]
    provider = Scripted(error=error)
    report, today = run(make_job(tmp_path, extra="limits: {concurrency: 2}"), provider)
    assert report.stop_reason is reason
    assert provider.requests <= 2  # every worker stops at once
    assert today.marked is (reason is StopReason.DAY_CAP)
    assert report.rows_failed == 0


def test_a_row_scope_error_fails_only_that_row(tmp_path: Path, wording: str) -> None:
    report, _ = run(make_job(tmp_path), Scripted(bad="text number 37"))
    assert report.stop_reason is StopReason.ROWS_FAILED and report.exit_code == 1
    assert report.rows_done == 299 and report.rows_failed == 1


def test_every_provider_error_class_declares_its_scope() -> None:
    from pipelines.core import errors

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.ProviderError)
    ]
    assert {c.scope for c in classes} == set(Scope)
    assert errors.InvalidInput.scope is Scope.ROW
    assert errors.RateLimited.scope is Scope.TRANSIENT


@asynccontextmanager
async def _scripted_binding(
    choice: registry.ProviderChoice, timeout_s: float
) -> AsyncIterator[registry.Binding]:
    yield registry.Binding("scripted", Scripted(), "acct", False, lambda m: f"scripted:{m.id}")


@pytest.mark.parametrize("flag", ["day", "run"])
def test_wait_sleeps_for_the_daily_cap_only(
    tmp_path: Path, wording: str, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.FACTORIES, "scripted", _scripted_binding)
    budget = "budget: {daily_neurons: 1}" if flag == "day" else "budget: {max_neurons: 1}"
    job = load_job(make_job(tmp_path, rows=30_000, extra=budget))
    nights: list[float] = []

    async def night(seconds: float) -> None:
        nights.append(seconds)
        raise _Done  # one night is enough to see the decision

    settings = RunSettings(provider="scripted", wait=True)
    if flag == "day":
        with pytest.raises(_Done):
            asyncio.run(arun_jobs([job], settings, sleep=night))
        assert len(nights) == 1
    else:
        (report,) = asyncio.run(arun_jobs([job], settings, sleep=night))
        assert report.stop_reason is StopReason.RUN_CAP and nights == []


class _Done(Exception):
    pass
