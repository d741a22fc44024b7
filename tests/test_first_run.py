"""What a first-time user hit following the README (issue 11, part B), and what a run says
when its server goes away: exit codes that mean this run, words people read, normalised
paths, the local models free of Cloudflare's per-minute limit, status that tells paid
neurons from rehearsals, log lines that never glue onto the progress bar, schedules that
warn even when only printed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from pipelines.budget import Ledger
from pipelines.catalog.models import ModelInfo
from pipelines.cli import main
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.ops.launch import TqdmProgress
from pipelines.ops.logs import configure_logging
from pipelines.ops.manifest import write_manifest
from pipelines.providers.base import Provider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.clock import Clock
from pipelines.run.report import RunReport
from pipelines.run.runner import RunContext, arun_job

SST2 = "@cf/huggingface/distilbert-sst-2-int8"
SMALL = "@cf/baai/bge-small-en-v1.5"


def write_job(folder: Path, texts: list[str | None], out: str = "../out/o.parquet") -> Path:
    (folder / "jobs").mkdir(exist_ok=True)
    pl.DataFrame(
        {"id": [str(i) for i in range(len(texts))], "text": texts},
        schema={"id": pl.Utf8, "text": pl.Utf8},
    ).write_csv(folder / "in.csv")
    job = folder / "jobs" / "job.yaml"
    job.write_text(
        f"""name: first
source: {{kind: csv, path: ../in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: {out}}}
"""
    )
    return job


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["run", "--no-progress", *args])


def test_exit_1_means_rows_failed_in_this_run(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, ["one", None, "three"])  # the empty row fails for good
    first = run_cli(str(job))
    assert first.exit_code == 1, first.output
    assert "first: done, some rows failed" in first.output
    assert "1 row failed" in first.output and "1 rows" not in first.output
    again = run_cli(str(job))  # nothing new: cron must not be alarmed every night
    assert again.exit_code == 0, again.output
    assert "first: done" in again.output
    assert "1 row failed in earlier runs" in again.output and "--retry-failed" in again.output


def test_users_never_see_internal_words_or_dotted_paths(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, ["one", None])
    result = run_cli(str(job))
    assert "failed_rows" not in result.output and "completed" not in result.output
    assert "/../" not in result.output
    assert str(tmp_path / "out" / "o.failures.parquet") in result.output


class Instant(Provider):
    """Answers sentiment at once; what matters is how long the run waited between calls."""

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        return [{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


@pytest.mark.parametrize("rate_limited", [True, False], ids=["cloudflare", "local"])
def test_local_models_are_not_held_to_cloudflares_per_minute_limit(
    tmp_path: Path, rate_limited: bool
) -> None:
    texts = [f"fine {i}" for i in range(600)]
    pl.DataFrame({"id": [str(i) for i in range(600)], "text": texts}).write_csv(tmp_path / "in.csv")
    (tmp_path / "job.yaml").write_text(
        f"""name: sentiment
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: classify, model: "{SST2}", input: text}}
output: {{path: out.parquet}}
"""
    )
    job = load_job(tmp_path / "job.yaml")
    clock = FakeTime()
    with Ledger(tmp_path / "ledger.sqlite3", account="local") as ledger:
        context = RunContext(
            provider=Instant(),
            budget=RunBudget(ledger),
            produced_by="local:vader",
            clock=Clock(monotonic=clock, sleep=clock.sleep),
            rate_limited=rate_limited,
        )
        report = asyncio.run(arun_job(job, context))
    assert report.rows_done == 600
    assert report.requests == 600  # classification: one text per request
    if rate_limited:  # 600 requests at distilbert's 3,000 a minute: about 12 s of pacing
        assert clock.slept > 10.0
    else:
        assert clock.slept == 0.0


def test_status_keeps_paid_neurons_apart_from_rehearsals(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, ["a"]))
    for n, paid in enumerate([True, False, False]):
        report = RunReport(job=job.name, run_id=f"r{n}", rows_done=1, neurons=2.0)
        write_manifest(job, report, started_at=_now(), ended_at=_now(), extra={"paid": paid})
    out = CliRunner().invoke(main, ["status", "--json", str(tmp_path / "jobs" / "job.yaml")])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)["jobs"]
    assert row["neurons_total"] == 6.0 and row["neurons_paid"] == 2.0
    table = CliRunner().invoke(main, ["status", str(tmp_path / "jobs" / "job.yaml")]).output
    assert "PAID TOTAL" in table and "REHEARSED" in table


@pytest.mark.parametrize(
    "manifest", ["[1, 2]", '{"last_run": "x"}', '{"history": {"a": 1}}', '{"totals": [1]}']
)
def test_status_on_a_manifest_of_the_wrong_shape_says_so(tmp_path: Path, manifest: str) -> None:
    job = write_job(tmp_path, ["a"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "o.manifest.json").write_text(manifest)
    out = CliRunner().invoke(main, ["status", str(job)])
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert "Traceback" not in out.output
    # refused as a whole, or understood as a manifest whose parts are not the right shape
    assert (
        "not a manifest this version understands" in out.output
        or "is not a pipelines manifest" in out.output
    )


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 11, 28, tzinfo=UTC)


def test_log_lines_never_glue_onto_the_progress_bar() -> None:
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    log = logging.getLogger("pipelines")
    bar = TqdmProgress("job", file=stream)
    try:
        bar.start(100)
        bar.update(10, 1.0)
        log.info("a line while the bar is drawn")
        bar.update(10, 2.0)
    finally:
        bar.close()
        logging.getLogger("pipelines").handlers.clear()
    screen = stream.getvalue()
    [line] = [piece for piece in re.split(r"[\r\n]", screen) if "a line while" in piece]
    # the line starts with its timestamp: nothing of the bar before it on the same row
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d pipelines: a line while", line), screen


def test_schedule_print_warns_like_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, ["a"])
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    out = CliRunner().invoke(main, ["schedule", "install", "--at", "02:00", "--print", str(job)])
    assert out.exit_code == 0, out.output
    assert "CLOUDFLARE_API_TOKEN_FILE" in out.output and "will stop with an error" in out.output


def test_a_server_that_goes_away_means_retried_transport_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a loopback port nobody listens on: every request is refused at connect
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", f"http://127.0.0.1:{port}/client/v4")
    job = write_job(tmp_path, ["one", "two"])
    (tmp_path / "jobs" / "job.yaml").write_text(
        (tmp_path / "jobs" / "job.yaml").read_text() + "limits: {max_attempts: 2}\n"
    )
    # a paid account on a ledger made today: say that nothing ran on it today yet
    assert CliRunner().invoke(main, ["budget", "--assume-unused"]).exit_code == 0
    result = run_cli(str(job))
    assert result.exit_code == 1, result.output
    failures = pl.read_parquet(tmp_path / "out" / "o.failures.parquet")
    assert set(failures["error"].to_list()) == {"TransportError"}
    assert "internal error" not in " ".join(failures["message"].to_list())
    assert set(failures["attempts"].to_list()) == {2} and all(failures["retryable"].to_list())
    # refused at connect: nothing can have been billed, so the ledger holds nothing
    with Ledger(account="acct") as ledger:
        assert ledger.today().committed == 0
