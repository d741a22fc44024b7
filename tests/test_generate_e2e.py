"""Text generation end to end, through the CLI against the emulator: the sample job, typed
JSON columns, answers that break the schema asked again, answers cut off at max_tokens,
a paid-only model on a free account, and a job of about three days that fills each day
without going over the cap or provoking a 3036."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from pipelines.emulator.server import RunningEmulator

REPO = Path(__file__).resolve().parents[1]
LLAMA = "@cf/meta/llama-3.1-8b-instruct-fp8"
BIG = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


def cli(emu: RunningEmulator, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "generate-proof",
        "CLOUDFLARE_API_TOKEN": "generate-token-0123456789",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def sample_job(tmp: Path, **task: Any) -> Path:
    raw: dict[str, Any] = yaml.safe_load((REPO / "jobs" / "review_insights.yaml").read_text())
    raw["source"]["path"] = str(REPO / "sample_data" / "reviews.parquet")
    raw["output"]["path"] = str(tmp / "out" / "insights.parquet")
    raw["task"].update(task)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.emulator(rpm_scale=100)
def test_the_sample_job_writes_typed_columns_once_per_row(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = sample_job(tmp_path)
    plan = json.loads(cli(emu, tmp_path, "plan", "--json", str(job)).stdout)
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    out = pl.read_parquet(tmp_path / "out" / "insights.parquet")
    assert out.height == 300 and out["review_id"].n_unique() == 300
    assert out.schema["sentiment"] == pl.String and out.schema["topics"] == pl.List(pl.String)
    assert set(out["sentiment"].drop_nulls()) <= {"positive", "negative", "mixed"}
    assert out["summary"].null_count() == 0
    assert (out["prompt_tokens"] > 0).all() and (out["completion_tokens"] <= 200).all()
    billed = emu.stats()["neurons_today"]
    assert plan["neurons_floor"] <= billed <= plan["neurons_ceiling"]
    again = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert again.returncode == 0 and emu.stats()["neurons_today"] == billed  # nothing re-paid


@pytest.mark.emulator(rpm_scale=100, json_failure_rate=0.3)
def test_answers_that_break_json_mode_are_asked_again(tmp_path: Path, emu: RunningEmulator) -> None:
    job = sample_job(tmp_path)
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert "answers asked again" in result.stderr or "answers asked again" in result.stdout
    out = pl.read_parquet(tmp_path / "out" / "insights.parquet")
    assert out.height == 300 and out["summary"].null_count() == 0


@pytest.mark.emulator(rpm_scale=100)
def test_answers_cut_off_at_max_tokens_are_marked_and_counted(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = sample_job(tmp_path, output_schema=None, params={"max_tokens": 5, "seed": 1})
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    out = pl.read_parquet(tmp_path / "out" / "insights.parquet")
    assert "response" in out.columns and out["truncated"].sum() > 0
    assert (out["completion_tokens"] <= 5).all()
    cut = int(out["truncated"].sum())
    assert f"cut off at max_tokens {cut:,}" in result.stderr + result.stdout


@pytest.mark.emulator(rpm_scale=100)
def test_json_cut_off_at_max_tokens_fails_its_row_once(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = sample_job(tmp_path, params={"max_tokens": 4, "seed": 1})
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 1, result.stderr
    failures = pl.read_parquet(tmp_path / "out" / "insights.failures.parquet")
    assert failures.height > 0
    assert failures["message"].str.contains("max_tokens").all()
    assert emu.stats()["requests_total"] <= 300  # none asked again: it would be cut again


@pytest.mark.emulator(rpm_scale=100)
def test_a_paid_only_model_on_a_free_account_stops_before_spending(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = sample_job(tmp_path, model="@cf/moonshotai/kimi-k2.6", output_schema=None)
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 2, result.stderr
    assert "Workers Paid" in result.stderr and "5035" in result.stderr
    assert emu.stats()["neurons_today"] == 0
    assert not (tmp_path / "out" / "insights.parquet").exists()


def many_reviews(path: Path, rows: int) -> None:
    words = "lamp kettle blender chair desk fan heater toaster mixer vacuum".split()
    pl.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(rows)],
            "text": [
                f"The {words[i % 10]} number {i} works {'well' * (1 + i % 3)}." for i in range(rows)
            ],
            "stars": [1 + i % 5 for i in range(rows)],
        }
    ).write_parquet(path)


@pytest.mark.slow
@pytest.mark.emulator(daily_neurons=1_000, rpm_scale=100)
def test_three_days_of_generation_fill_each_day_under_the_cap(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    data = tmp_path / "many.parquet"
    many_reviews(data, 320)
    raw: dict[str, Any] = {
        "name": "three-days",
        "source": {"kind": "parquet", "path": str(data), "key": "review_id"},
        "task": {
            "kind": "generate",
            "model": BIG,
            "prompt": "Summarise: {{ text }}",
            "params": {"max_tokens": 48, "seed": 3},
        },
        "output": {"path": str(tmp_path / "out" / "days.parquet")},
        "limits": {"concurrency": 8},
        "budget": {"daily_neurons": 1_000},
    }
    job = tmp_path / "days.yaml"
    job.write_text(yaml.safe_dump(raw))
    billed = []
    for _day in range(6):
        result = cli(emu, tmp_path, "run", "--no-progress", str(job))
        stats = emu.stats()
        billed.append(stats["neurons_today"])
        assert "3036" not in stats["error_codes"], stats["error_codes"]
        assert stats["neurons_today"] <= 1_000
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.stderr
        assert "resumes after 00:00 UTC" in result.stderr
        assert stats["neurons_today"] >= 970, billed  # the day used to the brim
        emu.advance_day()
    print("billed per day:", billed)
    assert len(billed) >= 3, billed  # it needed about three days
    out = pl.read_parquet(tmp_path / "out" / "days.parquet")
    assert out.height == 320 and out["_key"].n_unique() == 320


@pytest.mark.emulator(rpm_scale=100)
def test_a_row_whose_worst_case_never_fits_a_day_fails_with_that_reason(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    # llama-3.3's output costs 204,805 neurons per M tokens: 2,000 tokens are ~410 neurons
    job = sample_job(
        tmp_path, model=BIG, output_schema=None, params={"max_tokens": 2_000, "seed": 1}
    )
    raw = yaml.safe_load(job.read_text())
    raw["budget"] = {"daily_neurons": 300}
    job.write_text(yaml.safe_dump(raw))
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 3, result.stderr
    assert "never fit" in result.stderr or "can never" in result.stderr, result.stderr
    assert emu.stats()["neurons_today"] == 0
    failures = pl.read_parquet(tmp_path / "out" / "insights.failures.parquet")
    assert failures.height == 300 and set(failures["error"]) == {"CannotFit"}
