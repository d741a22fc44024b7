"""Batch mode end to end through the CLI against the emulator: a run, its summary and plan,
`--mode batch` and its refusals, `status` while batches are in flight, a run killed right
after its payload's id was recorded and the run that collects it, the three families that
take the Batch API, a sync run collecting what a batch run left, the job lock and Ctrl-C
during a long batch, and `--wait` over several emulated nights."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from batch_helpers import BGE, write_job
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.crashpoints import CRASH_AT
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_jobs
from pipelines.ops.jobset import arun_jobs
from pipelines.run.settings import RunSettings

REPO = Path(__file__).resolve().parents[1]
TOKEN = "batch-token-0123456789-secret"

pytestmark = pytest.mark.emulator(batch_delay_s=0, rpm_scale=100, daily_neurons=1e6, token=TOKEN)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows_of(folder: Path) -> pl.DataFrame:
    frame = pl.read_parquet(folder / "out/result.parquet")
    assert frame["_key"].n_unique() == frame.height
    return frame


def no_token_anywhere(*roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


def test_a_batch_job_runs_plans_and_reports(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 3_000, "{mode: batch, batch_items: 8}")
    plan = json.loads(cli("plan", "--json", str(job)).stdout)
    assert plan["mode"] == "batch" and plan["requests"] == 30 and plan["payloads"] == 4
    result = cli("run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert "batches submitted 4, collected 4" in result.stdout
    assert rows_of(tmp_path).height == 3_000
    stats = emu.stats()["models"][BGE]
    assert stats["items"] == 3_000
    again = cli("run", "--no-progress", str(job))  # nothing left: nothing submitted
    assert again.returncode == 0 and "batches submitted" not in again.stdout
    assert emu.stats()["models"][BGE]["items"] == 3_000
    no_token_anywhere(tmp_path, Path(env["PIPELINES_STATE_DIR"]))


def test_mode_batch_from_the_command_line_and_its_refusals(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 200, "{}")  # a sync job
    plan = cli("plan", "--mode", "batch", str(job))
    assert "batch      1 payloads of at most 500 requests" in plan.stdout, plan.stderr
    result = cli("run", "--no-progress", "--mode", "batch", str(job))
    assert result.returncode == 0 and "batches submitted 1" in result.stdout, result.stderr
    # a model without the Batch API: one error line naming those that have it
    other = tmp_path / "qwen.yaml"
    other.write_text(
        job.read_text()
        .replace(BGE, "@cf/qwen/qwen3-embedding-0.6b")
        .replace("name: batchy", "name: qwen")
    )
    for args in (["run", "--no-progress"], ["plan"]):
        refused = cli(*args, "--mode", "batch", str(other))
        assert refused.returncode == 2, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in refused.stderr
        assert "does not take Cloudflare's Batch API" in errors[0] and BGE in errors[0]
    local = cli("run", "--no-progress", "--mode", "batch", "--provider", "local", str(job))
    assert local.returncode == 2 and "provider local has no Batch API" in local.stderr
    # provider auto without credentials is the local provider: refused before it starts
    bare = {k: v for k, v in env.items() if not k.startswith("CLOUDFLARE_")}
    auto = cli("run", "--no-progress", "--mode", "batch", str(job), env=bare)
    assert auto.returncode == 2 and "provider local has no Batch API" in auto.stderr


def test_status_shows_batches_in_flight_and_the_next_run_collects_them(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 1_000, "{mode: batch, batch_items: 4}")
    killed = cli("run", "--no-progress", str(job), env={**env, CRASH_AT: "batch-recorded:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (entry,) = json.loads(cli("status", "--json", str(job)).stdout)["jobs"]
    assert entry["rows_in_flight"] == 800 and len(entry["batches"]) == 2
    assert all(b["request_id"] and b["requests"] == 4 for b in entry["batches"])
    assert all(b["neurons_held"] > 0 for b in entry["batches"])
    text = cli("status", str(job)).stdout
    assert "batchy: 2 batches in flight, 800 rows" in text
    assert "s ago, 4 requests, 400 rows" in text
    budget = cli("budget", "--json", "--account", f"emulator@{emu.base_url.split('/')[2]}")
    assert budget.returncode == 0
    result = cli("run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert "batches submitted 1, collected 3" in result.stdout  # the 2 left, and the rest
    assert rows_of(tmp_path).height == 1_000
    assert emu.stats()["models"][BGE]["items"] == 1_000  # not one row paid twice
    assert json.loads(cli("status", "--json", str(job)).stdout)["jobs"][0]["batches"] == []


def sample_job(tmp: Path, name: str, **task: Any) -> Path:
    raw: dict[str, Any] = yaml.safe_load((REPO / "jobs" / f"{name}.yaml").read_text())
    raw["source"]["path"] = str(REPO / "sample_data" / Path(raw["source"]["path"]).name)
    raw["output"]["path"] = str(tmp / "out" / "result.parquet")
    raw["task"].update(task)
    raw["limits"] = {"mode": "batch", "batch_items": 50}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("review_insights", {"model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}),
        ("review_insights", {"model": "@cf/qwen/qwen3-30b-a3b-fp8"}),
        ("translate_titles", {}),
    ],
    ids=["llama-3.3", "qwen3", "m2m100"],
)
def test_generate_and_translate_run_on_the_batch_api(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str], name: str, task: dict[str, Any]
) -> None:
    job = sample_job(tmp_path, name, **task)
    result = cli("run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert "batches submitted" in result.stdout
    frame = rows_of(tmp_path)
    assert frame.height == 300
    if name == "review_insights":
        assert set(frame["sentiment"].drop_nulls()) <= {"positive", "negative", "mixed"}
        assert frame["summary"].null_count() == 0
    else:
        assert frame["translated_text"].str.starts_with("[fr]").all()


def test_a_sync_run_collects_what_a_batch_run_left_in_flight(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 500, "{mode: batch, batch_items: 2}")
    killed = cli("run", "--no-progress", str(job), env={**env, CRASH_AT: "batch-recorded"})
    assert killed.returncode == -signal.SIGKILL
    result = cli("run", "--no-progress", "--mode", "sync", str(job))
    assert result.returncode == 0, result.stderr
    assert "collected 1" in result.stdout and "batches submitted" not in result.stdout
    assert rows_of(tmp_path).height == 500
    assert emu.stats()["models"][BGE]["items"] == 500


@pytest.mark.emulator(batch_delay_s=3600, rpm_scale=100, daily_neurons=1e6, token=TOKEN)
def test_the_lock_holds_while_a_batch_runs_and_ctrl_c_ends_the_wait(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 300, "{mode: batch}")
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        book = tmp_path / "out/.result.parquet.pipelines/batches.sqlite3"
        deadline = time.monotonic() + 60
        while not (book.exists() and emu.stats()["requests_total"] >= 1):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = CliRunner().invoke(main, ["run", "--no-progress", str(job)])
        assert second.exit_code == 2 and "already running" in second.output
        first.send_signal(signal.SIGTERM)  # the poller is waiting out an hour's batch
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130, err
    assert "1 batch (300 rows) still in flight" in err
    assert book.exists()


@pytest.mark.emulator(batch_delay_s=0, rpm_scale=100, daily_neurons=3.0, token=TOKEN)
def test_wait_sleeps_through_the_nights_until_a_batch_job_is_done(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(
        tmp_path,
        3_000,
        "{mode: batch, batch_items: 2}",
        budget="{daily_neurons: 3}",
    )
    nights = 0

    async def next_night(_: float) -> None:
        nonlocal nights
        nights += 1
        emu.advance_day()

    settings = RunSettings(wait=True)
    (report,) = asyncio.run(arun_jobs(load_jobs([job]), settings, sleep=next_night))
    assert report.status == "completed", report.message
    assert nights >= 2
    assert rows_of(tmp_path).height == 3_000
    history = json.loads((tmp_path / "out/result.manifest.json").read_text())["history"]
    assert history[0]["status"] == "budget" and history[-1]["status"] == "completed"


def test_a_provider_without_the_batch_api_leaves_batches_in_flight_alone(
    tmp_path: Path, emu: RunningEmulator, env: dict[str, str]
) -> None:
    job = write_job(tmp_path, 500, "{mode: batch, batch_items: 2}")
    killed = cli("run", "--no-progress", str(job), env={**env, CRASH_AT: "batch-recorded"})
    assert killed.returncode == -signal.SIGKILL
    other = cli("run", "--no-progress", "--mode", "sync", "--provider", "openai", str(job))
    assert other.returncode == 0, other.stderr
    assert "provider openai cannot collect" in other.stderr
    assert "1 batch (200 rows) still in flight" in other.stderr
    assert rows_of(tmp_path).height == 300  # the rows in flight were not sent again
    result = cli("run", "--no-progress", str(job))
    assert result.returncode == 0 and "collected 1" in result.stdout, result.stderr
    assert rows_of(tmp_path).height == 500
    assert emu.stats()["models"][BGE]["items"] == 500
